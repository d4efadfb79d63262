"""Sans-IO SMPP 3.4: PDU codec, framing, session state machine and rate limiting.

No sockets and no Twisted here; transports adapt these objects (see session.Session).
Exceptions are documented in one place: gateway.smpp.errors.
"""

from .constants import (
    INTERFACE_VERSION,
    CommandId,
    CommandStatus,
    DataCoding,
    EsmClass,
    MessageState,
    RegisteredDelivery,
    Tag,
    UssdServiceOp,
)
from .errors import EncodeError, LocalProtocolError, SMPPError, WindowFull
from .pdu import PDU, Framer, decode, encode
from .ratelimit import TokenBucket
from .session import (
    ESME,
    SMSC,
    BindRequested,
    ConnectionShouldClose,
    Event,
    ProtocolViolation,
    RequestAborted,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    Session,
    State,
    Timers,
    Unbound,
)

__all__ = [
    "ESME",
    "INTERFACE_VERSION",
    "PDU",
    "SMSC",
    "BindRequested",
    "CommandId",
    "CommandStatus",
    "ConnectionShouldClose",
    "DataCoding",
    "EncodeError",
    "EsmClass",
    "Event",
    "Framer",
    "LocalProtocolError",
    "MessageState",
    "ProtocolViolation",
    "RegisteredDelivery",
    "RequestAborted",
    "RequestReceived",
    "ResponseReceived",
    "ResponseTimeout",
    "SMPPError",
    "Session",
    "State",
    "Tag",
    "Timers",
    "TokenBucket",
    "Unbound",
    "UssdServiceOp",
    "WindowFull",
    "decode",
    "encode",
]
