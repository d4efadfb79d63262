"""Every exception the SMPP core raises, in one tree.

::

    Exception
    ├── SMPPError                    the peer sent something wrong; carries the wire status
    │   ├── InvalidCommandLength     0x02 command_length < 16 or > max PDU size (fatal)
    │   ├── TruncatedPDU             0x02 frame ends before a mandatory parameter
    │   ├── InvalidCommandId         0x03 unknown command_id, or a command the sender may never send
    │   ├── InvalidBindStatus        0x04 command not allowed in the session's bind state
    │   ├── AlreadyBound             0x05 bind while bound (or while a bind is pending)
    │   ├── InvalidMessageLength     0x01 sm_length runs past the frame or over 254
    │   ├── InvalidParameter         field-specific status: a C-string too long or unterminated
    │   │                            (RINVSYSID, RINVPASWD, RINVSRCADR, RINVDSTADR, ... else RINVPARLEN)
    │   ├── InvalidNumberOfDests     0x33 submit_multi number_of_dests 0 or > 254
    │   ├── InvalidDestFlag          0x40 submit_multi dest_flag neither 1 nor 2
    │   ├── InvalidTLVStream         0xC0 TLV header or value runs past the end of the PDU
    │   ├── InvalidTLVLength         0xC2 known TLV with the wrong length for its type
    │   ├── FieldCheckFailed         a field fails its check in checks.TABLE: that row's status
    │   ├── DuplicateSequence        0x08 a request reuses the sequence number of one still unanswered
    │   └── TooManyPending           0x58 the peer has more unanswered requests than we accept
    └── LocalProtocolError           our own side misused the API (no wire status)
        ├── WindowFull               send_request with `window` requests already outstanding
        ├── IllegalSend              this role may not send that command in this state
        └── EncodeError              a parameter cannot be encoded (too long, out of range)

``SMPPError.command_id`` and ``.sequence_number`` are filled in by the decoder from the
PDU header when it got that far, so the session answers every error in one place: with the
command's ``_resp`` when the command is known and has one, else with ``generic_nack``.
``fatal`` is true when the byte stream can no longer be split into frames: the session
answers with generic_nack and asks for the connection to be closed.
"""

from .constants import CommandStatus

__all__ = [
    "AlreadyBound",
    "DuplicateSequence",
    "EncodeError",
    "FieldCheckFailed",
    "IllegalSend",
    "InvalidBindStatus",
    "InvalidCommandId",
    "InvalidCommandLength",
    "InvalidDestFlag",
    "InvalidMessageLength",
    "InvalidNumberOfDests",
    "InvalidParameter",
    "InvalidTLVLength",
    "InvalidTLVStream",
    "LocalProtocolError",
    "SMPPError",
    "TooManyPending",
    "TruncatedPDU",
    "WindowFull",
]


class SMPPError(Exception):
    """A protocol error by the peer, mapped to the command_status to answer it with."""

    status: int = CommandStatus.ESME_RSYSERR
    fatal: bool = False

    def __init__(
        self,
        detail: str,
        *,
        command_status: int | None = None,
        command_id: int | None = None,
        sequence_number: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.command_status = self.status if command_status is None else command_status
        self.command_id = command_id
        self.sequence_number = sequence_number


class InvalidCommandLength(SMPPError):
    """command_length outside 16..max_pdu_size: framing is lost, drop the connection."""

    status = CommandStatus.ESME_RINVCMDLEN
    fatal = True


class TruncatedPDU(SMPPError):
    status = CommandStatus.ESME_RINVCMDLEN


class InvalidCommandId(SMPPError):
    status = CommandStatus.ESME_RINVCMDID


class InvalidBindStatus(SMPPError):
    status = CommandStatus.ESME_RINVBNDSTS


class AlreadyBound(SMPPError):
    status = CommandStatus.ESME_RALYBND


class InvalidMessageLength(SMPPError):
    status = CommandStatus.ESME_RINVMSGLEN


class InvalidParameter(SMPPError):
    """A mandatory parameter is malformed; command_status is the field's own status."""

    status = CommandStatus.ESME_RINVPARLEN


class InvalidNumberOfDests(SMPPError):
    status = CommandStatus.ESME_RINVNUMDESTS


class InvalidDestFlag(SMPPError):
    status = CommandStatus.ESME_RINVDESTFLAG


class InvalidTLVStream(SMPPError):
    status = CommandStatus.ESME_RINVOPTPARSTREAM


class InvalidTLVLength(SMPPError):
    status = CommandStatus.ESME_RINVPARLEN


class FieldCheckFailed(SMPPError):
    """A decoded request breaks a rule of its fields (gateway.smpp.checks); command_status is the rule's."""


class DuplicateSequence(SMPPError):
    status = CommandStatus.ESME_RSYSERR


class TooManyPending(SMPPError):
    status = CommandStatus.ESME_RTHROTTLED


class LocalProtocolError(Exception):
    """The application asked the session or codec for something SMPP does not allow."""


class WindowFull(LocalProtocolError):
    """`window` requests are awaiting responses; wait for one (see Session.window_available)."""


class IllegalSend(LocalProtocolError):
    """This role may not send this command in the current state (same table as for receiving)."""

    def __init__(self, detail: str, command_status: int) -> None:
        super().__init__(detail)
        self.command_status = command_status


class EncodeError(LocalProtocolError):
    """A parameter value does not fit its SMPP type."""
