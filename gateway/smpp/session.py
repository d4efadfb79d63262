"""SMPP 3.4 session state machine, sans-IO (h11 style).

The transport feeds received bytes to ``receive_data`` and gets application events back;
it writes whatever ``data_to_send`` returns; it calls ``tick`` when the clock reaches
``next_deadline`` (calling early is harmless). The session answers enquire_link, unbind,
illegal and undecodable PDUs, and message PDUs whose fields break a rule of
``checks.TABLE``, itself; everything needing policy (bind credentials, routing,
throttling) is reported as an event and answered by the application through
``accept_bind`` / ``reject_bind`` / ``respond``.

Frames are processed in arrival order and answered in that order. A request pipelined
behind a bind (the ESME did not wait for bind_resp) is held, undecoded, while the bind is
pending: ``accept_bind`` / ``reject_bind`` queue the bind_resp first, then process what
was held and return the events it caused, so the request meets the state the bind
decided (bound, or still OPEN). At most ``max_held`` octets are held; a peer sending more
before its bind is answered is disconnected. enquire_link is answered in every state.

States::

    OPEN ──bind──▶ BIND_PENDING ──accepted──▶ BOUND_TX | BOUND_RX | BOUND_TRX
      ▲                 │ rejected                   │ we send unbind, or the peer does
      └─────────────────┘                            ▼
                                                  UNBOUND ──unbind answered──▶ CLOSED
    any state ── timer fires, framing lost ──▶ CLOSED

A peer's unbind is answered once the application has answered the requests that came
before it (respond() then returns the ConnectionShouldClose), or when the response timer
runs out; requests arriving after it are refused with ESME_RINVBNDSTS.

``CLOSED`` means "the transport should drop the connection" (a ConnectionShouldClose
event says why); the adapter writes the remaining ``data_to_send()`` first, then closes,
then calls ``connection_lost()`` to learn which requests never got an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from .checks import first_failure
from .constants import ESME, INTERFACE_VERSION, RESPONSE_BIT, SMSC, CommandId, Tag
from .constants import CommandStatus as S
from .errors import (
    AlreadyBound,
    DuplicateSequence,
    FieldCheckFailed,
    IllegalSend,
    InvalidBindStatus,
    InvalidCommandId,
    LocalProtocolError,
    SMPPError,
    TooManyPending,
    WindowFull,
)
from .pdu import DEFAULT_MAX_PDU_SIZE, PDU, Framer, command_spec, decode, encode

__all__ = [
    "DEFAULT_MAX_HELD",
    "DEFAULT_TIMERS",
    "ESME",
    "LEGAL",
    "SMSC",
    "BindRequested",
    "ConnectionShouldClose",
    "Event",
    "ProtocolViolation",
    "RequestAborted",
    "RequestReceived",
    "ResponseReceived",
    "ResponseTimeout",
    "Session",
    "State",
    "Timers",
    "Unbound",
]



class State(Enum):
    OPEN = "open"
    BIND_PENDING = "bind_pending"  # server: bind awaiting accept/reject; client: bind sent
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBOUND = "unbound"  # we sent unbind and wait for unbind_resp
    CLOSED = "closed"

    # Members are singletons compared by identity: hash them in C (Enum's own __hash__ is Python code,
    # and the state is looked up in a frozenset several times per PDU).
    __hash__ = object.__hash__


_OPEN = frozenset({State.OPEN})
_TX = frozenset({State.BOUND_TX, State.BOUND_TRX})
_RX = frozenset({State.BOUND_RX, State.BOUND_TRX})
_BOUND = _TX | _RX
_UNBINDABLE = _BOUND | {State.UNBOUND}  # an unbind crossing ours is still answered ESME_ROK
_ALIVE = frozenset(State) - {State.CLOSED}  # enquire_link: a link check, legal before a bind too

# Who may send which request in which state (SMPP 3.4 section 2.3, Table 2-1).
# A (sender, command) pair missing here is never legal: it is answered ESME_RINVCMDID.
# A present pair whose states exclude the current one is answered ESME_RALYBND for a
# bind while bound or binding, ESME_RINVBNDSTS otherwise. Responses need no rows: one is
# legal exactly when it answers an outstanding request (same sequence number).
LEGAL: Mapping[tuple[str, str], frozenset[State]] = MappingProxyType({
    # sender  command                  states in which the sender may issue it
    (ESME, "bind_transmitter"):   _OPEN,
    (ESME, "bind_receiver"):      _OPEN,
    (ESME, "bind_transceiver"):   _OPEN,
    (SMSC, "outbind"):            _OPEN,
    (ESME, "submit_sm"):          _TX,
    (ESME, "submit_multi"):       _TX,
    (ESME, "data_sm"):            _TX,
    (ESME, "query_sm"):           _TX,
    (ESME, "cancel_sm"):          _TX,
    (ESME, "replace_sm"):         _TX,
    (SMSC, "data_sm"):            _RX,
    (SMSC, "deliver_sm"):         _RX,
    (SMSC, "alert_notification"): _RX,
    (ESME, "enquire_link"):       _ALIVE,
    (SMSC, "enquire_link"):       _ALIVE,
    (ESME, "unbind"):             _UNBINDABLE,
    (SMSC, "unbind"):             _UNBINDABLE,
})  # fmt: skip

_BIND_RESULT = {
    "bind_transmitter": State.BOUND_TX,
    "bind_receiver": State.BOUND_RX,
    "bind_transceiver": State.BOUND_TRX,
}
_BIND_COMMAND = {"tx": "bind_transmitter", "rx": "bind_receiver", "trx": "bind_transceiver"}
_KIND = {State.BOUND_TX: "tx", State.BOUND_RX: "rx", State.BOUND_TRX: "trx"}
_BUSY_FOR_BIND = _BOUND | {State.BIND_PENDING}
# Link maintenance must work even when the application has filled the window.
_WINDOW_EXEMPT = frozenset({"enquire_link", "unbind"})
_MAX_SEQUENCE = 0x7FFFFFFF
DEFAULT_MAX_HELD = 256 * 1024


def _state_error(command: str, state: State) -> type[SMPPError]:
    """The error for a legal command sent in the wrong state."""
    return AlreadyBound if command in _BIND_RESULT and state in _BUSY_FOR_BIND else InvalidBindStatus


@dataclass(frozen=True, slots=True)
class Timers:
    """Seconds; zero or less disables a timer."""

    session_init: float = 30.0  # connected but not bound: close
    enquire_link: float = 30.0  # nothing received while bound: send enquire_link
    inactivity: float = 300.0  # nothing received while bound: unbind and close
    response: float = 30.0  # request unanswered: ResponseTimeout, frees its window slot


DEFAULT_TIMERS = Timers()


# --- events ----------------------------------------------------------------------------------


class Event:
    """Base of everything receive_data, tick and connection_lost return."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class BindRequested(Event):
    """Server role: answer with accept_bind(pdu, system_id=...) or reject_bind(pdu, status)."""

    pdu: PDU


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A legal request; answer with respond(pdu, status, **params) unless it is
    outbind or alert_notification, which have no response."""

    pdu: PDU


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    response: PDU  # the _resp, or generic_nack
    request: PDU


@dataclass(frozen=True, slots=True)
class ResponseTimeout(Event):
    request: PDU


@dataclass(frozen=True, slots=True)
class RequestAborted(Event):
    """The connection went away before this request was answered."""

    request: PDU


@dataclass(frozen=True, slots=True)
class Unbound(Event):
    by_peer: bool


@dataclass(frozen=True, slots=True)
class ConnectionShouldClose(Event):
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The peer broke the protocol; `status` is what we answered with (none is sent for an
    unexpected response, which is only reported)."""

    status: int
    detail: str


@dataclass(slots=True)
class _Outstanding:
    request: PDU
    deadline: float
    internal: bool  # sent by the session itself (keep-alive, inactivity unbind)
    windowed: bool  # counts against the application's window


# --- the session -----------------------------------------------------------------------------


class Session:
    def __init__(
        self,
        role: str,
        now: Callable[[], float],
        timers: Timers = DEFAULT_TIMERS,
        window: int = 10,
        *,
        max_pending_in: int = 1000,
        max_pdu_size: int = DEFAULT_MAX_PDU_SIZE,
        max_held: int = DEFAULT_MAX_HELD,
    ) -> None:
        if role not in (ESME, SMSC):
            raise ValueError(f"role must be {ESME!r} (ESME) or {SMSC!r} (SMSC), got {role!r}")
        self.role = role
        self.peer_role = SMSC if role == ESME else ESME
        self.timers = timers
        self.window = window
        self.max_pending_in = max_pending_in
        self.max_held = max_held  # octets received while a bind is pending, held until it is decided
        self.peer_system_id: str | None = None  # server role: system_id of the accepted bind
        self._now = now
        self._framer = Framer(max_pdu_size)
        self._state = State.OPEN
        self._out: list[bytes] = []
        self._outstanding: dict[int, _Outstanding] = {}
        self._windowed = 0
        self._pending_in: dict[int, PDU] = {}
        self._pending_bind: PDU | None = None
        # The peer's unbind is answered only after the requests it sent before it.
        self._peer_unbind: PDU | None = None
        self._unbind_deadline = float("inf")
        self._ping_seq: int | None = None
        self._next_seq = 1
        self._opened_at = self._last_rx = now()

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def bound_kind(self) -> str | None:
        """'tx', 'rx' or 'trx' while bound, else None."""
        return _KIND.get(self._state)

    @property
    def can_receive_mt(self) -> bool:
        """The ESME side of this session accepts deliver_sm (bound RX or TRX)."""
        return self._state in _RX

    def can_send(self, command: str) -> bool:
        """Whether send_request(command) would be accepted right now."""
        allowed = LEGAL.get((self.role, command))
        if allowed is None or self._state not in allowed:
            return False
        return command in _WINDOW_EXEMPT or self._windowed < self.window

    def window_available(self) -> int:
        return max(0, self.window - self._windowed)

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Consume bytes from the peer; returns the application events they caused."""
        if self._state is State.CLOSED or not data:
            return []
        self._last_rx = self._now()
        self._framer.feed(data)
        events: list[Event] = []
        self._process_frames(events)
        if self._pending_bind is not None and self._framer.buffered > self.max_held:
            self._close(f"more than {self.max_held} octets sent before the bind was answered", events)
        return events

    def _process_frames(self, events: list[Event]) -> None:
        """Handle buffered frames in arrival order; frames behind a pending bind wait for its decision."""
        while self._state is not State.CLOSED and self._pending_bind is None:
            try:
                frame = self._framer.next_frame()
            except SMPPError as exc:
                self._answer_error(exc, events)
                break
            if frame is None:
                break
            try:
                pdu = decode(frame)
                if pdu.command_id & RESPONSE_BIT:
                    self._on_response(pdu, events)
                else:
                    self._on_request(pdu, events)
            except SMPPError as exc:
                self._answer_error(exc, events)

    def _on_request(self, pdu: PDU, events: list[Event]) -> None:
        name = pdu.command
        allowed = LEGAL.get((self.peer_role, name))
        if allowed is None:
            raise InvalidCommandId(
                f"{name} is never sent by an {'ESME' if self.peer_role == ESME else 'SMSC'}",
                command_id=pdu.command_id,
                sequence_number=pdu.sequence_number,
            )
        if self._state not in allowed:
            raise _state_error(name, self._state)(
                f"{name} not allowed in state {self._state.name}",
                command_id=pdu.command_id,
                sequence_number=pdu.sequence_number,
            )
        if name == "enquire_link":
            self._queue(pdu.response())
        elif name == "unbind":
            events.append(Unbound(by_peer=True))
            self._peer_unbind = pdu
            self._state = State.UNBOUND
            self._unbind_deadline = self._deadline(self.timers.response)
            if not self._pending_in:
                self._finish_peer_unbind(pdu, events)
        elif name in _BIND_RESULT:
            self._pending_bind = pdu
            self._state = State.BIND_PENDING
            events.append(BindRequested(pdu))
        elif name in ("outbind", "alert_notification"):
            events.append(RequestReceived(pdu))
        else:
            self._check_fields(pdu)
            self._admit(pdu)
            events.append(RequestReceived(pdu))

    def _check_fields(self, pdu: PDU) -> None:
        """Refuse a message PDU whose fields break SMPP 3.4 (checks.TABLE) before the application sees it."""
        failed = first_failure(self.peer_role, pdu)
        if failed is not None:
            raise FieldCheckFailed(
                f"{pdu.command} {failed.field}: must be {failed.rule}",
                command_status=failed.status,
                command_id=pdu.command_id,
                sequence_number=pdu.sequence_number,
            )

    def _admit(self, pdu: PDU) -> None:
        """Track a request the application must answer, bounding how many may wait."""
        seq = pdu.sequence_number
        if seq in self._pending_in:
            raise DuplicateSequence(
                f"sequence number {seq} is already in use by an unanswered request",
                command_id=pdu.command_id,
                sequence_number=seq,
            )
        if len(self._pending_in) >= self.max_pending_in:
            raise TooManyPending(
                f"more than {self.max_pending_in} requests awaiting responses",
                command_id=pdu.command_id,
                sequence_number=seq,
            )
        self._pending_in[seq] = pdu

    def _on_response(self, pdu: PDU, events: list[Event]) -> None:
        entry = self._outstanding.get(pdu.sequence_number)
        if entry is None or pdu.command_id not in (
            entry.request.command_id | RESPONSE_BIT,
            CommandId.generic_nack,
        ):
            events.append(
                ProtocolViolation(S.ESME_RINVCMDID, f"{pdu.command} {pdu.sequence_number} answers no request")
            )
            return
        del self._outstanding[pdu.sequence_number]
        if entry.windowed:
            self._windowed -= 1
        request = entry.request
        name = request.command
        if name in _BIND_RESULT:
            ok = pdu.command_status == S.ESME_ROK and pdu.command_id != CommandId.generic_nack
            self._state = _BIND_RESULT[name] if ok else State.OPEN
        if pdu.sequence_number == self._ping_seq:
            self._ping_seq = None
        if not entry.internal:
            events.append(ResponseReceived(pdu, request))
        if name == "unbind":
            events.append(Unbound(by_peer=False))
            self._close("unbind completed", events)

    def _answer_error(self, exc: SMPPError, events: list[Event]) -> None:
        """The one place a protocol error becomes bytes on the wire."""
        events.append(ProtocolViolation(exc.command_status, exc.detail))
        seq = exc.sequence_number or 0
        try:
            response_name = command_spec(exc.command_id).response_name if exc.command_id is not None else None
        except KeyError:
            response_name = None
        if response_name and not exc.fatal:
            self._queue(PDU.make(response_name, seq, command_status=exc.command_status))
        else:
            self._queue(PDU(CommandId.generic_nack, seq, exc.command_status))
        if exc.fatal:
            self._close(exc.detail, events)

    # -- answering the peer -----------------------------------------------------------------

    def accept_bind(
        self, pdu: PDU, system_id: str = "", *, tlvs: Mapping[int, Any] | None = None
    ) -> list[Event]:
        """Server role: accept the bind reported by BindRequested.

        Returns the events of the requests held behind the bind, now processed as bound.
        """
        events: list[Event] = []
        if self._state is State.CLOSED:
            return events
        self._take_pending_bind(pdu)
        answer = {Tag.sc_interface_version: INTERFACE_VERSION, **(tlvs or {})}
        self._queue(pdu.response(S.ESME_ROK, system_id=system_id, tlvs=answer))
        self._state = _BIND_RESULT[pdu.command]
        self.peer_system_id = pdu.params["system_id"]
        self._process_frames(events)
        return events

    def reject_bind(self, pdu: PDU, status: int) -> list[Event]:
        """Server role: refuse the bind (e.g. ESME_RINVPASWD, ESME_RBINDFAIL); the peer may retry.

        Returns the events of the requests held behind the bind, now processed as not bound.
        """
        if not status:
            raise LocalProtocolError("reject_bind needs a non-zero command_status")
        events: list[Event] = []
        if self._state is State.CLOSED:
            return events
        self._take_pending_bind(pdu)
        self._queue(pdu.response(status))
        self._state = State.OPEN
        self._process_frames(events)
        return events

    def _take_pending_bind(self, pdu: PDU) -> None:
        pending = self._pending_bind
        if pending is None or pending.sequence_number != pdu.sequence_number:
            raise LocalProtocolError(f"{pdu.command} {pdu.sequence_number} is not the pending bind")
        self._pending_bind = None

    def respond(
        self, pdu: PDU, status: int = 0, *, tlvs: Mapping[int, Any] | None = None, **params: Any
    ) -> list[Event]:
        """Answer a request reported by RequestReceived. A no-op once the session is closed.

        Returns [ConnectionShouldClose] when this was the last answer a pending unbind from
        the peer waited for (its unbind_resp is then queued too), else [].
        """
        events: list[Event] = []
        if self._state is State.CLOSED:
            return events
        if self._pending_in.get(pdu.sequence_number) is None:
            raise LocalProtocolError(f"{pdu.command} {pdu.sequence_number} is not awaiting a response")
        data = encode(pdu.response(status, tlvs=tlvs, **params))
        del self._pending_in[pdu.sequence_number]
        self._out.append(data)
        if self._peer_unbind is not None and not self._pending_in:
            self._finish_peer_unbind(self._peer_unbind, events)
        return events

    def _finish_peer_unbind(self, unbind: PDU, events: list[Event]) -> None:
        self._queue(unbind.response())
        self._peer_unbind = None
        self._close("unbound by peer", events)

    # -- sending requests -------------------------------------------------------------------

    def send_request(self, command: str, *, tlvs: Mapping[int, Any] | None = None, **params: Any) -> PDU:
        """Queue a request; returns it with its assigned sequence number.

        Raises IllegalSend if this role may not send it in this state, WindowFull when
        `window` requests await responses, EncodeError for unencodable params.
        """
        return self._send(command, params, tlvs, internal=False)

    def bind(
        self,
        kind: str,
        system_id: str,
        password: str,
        *,
        system_type: str = "",
        addr_ton: int = 0,
        addr_npi: int = 0,
        address_range: str = "",
    ) -> PDU:
        """Client role: bind as 'tx', 'rx' or 'trx'; the answer arrives as ResponseReceived."""
        if kind not in _BIND_COMMAND:
            raise LocalProtocolError(f"bind kind must be one of {sorted(_BIND_COMMAND)}, got {kind!r}")
        params = {
            "system_id": system_id,
            "password": password,
            "system_type": system_type,
            "interface_version": INTERFACE_VERSION,
            "addr_ton": addr_ton,
            "addr_npi": addr_npi,
            "address_range": address_range,
        }
        return self._send(_BIND_COMMAND[kind], params, None, internal=False)

    def unbind(self) -> PDU:
        return self._send("unbind", {}, None, internal=False)

    def _send(
        self, command: str, params: Mapping[str, Any], tlvs: Mapping[int, Any] | None, internal: bool
    ) -> PDU:
        allowed = LEGAL.get((self.role, command))
        if allowed is None:
            raise IllegalSend(f"the {self.role} role never sends {command}", S.ESME_RINVCMDID)
        if self._state not in allowed:
            error = _state_error(command, self._state)
            raise IllegalSend(f"{command} not allowed in state {self._state.name}", error.status)
        windowed = not internal and command not in _WINDOW_EXEMPT
        if windowed and self._windowed >= self.window:
            raise WindowFull(f"{self._windowed} requests await responses (window {self.window})")
        pdu = PDU.make(command, self._take_sequence(), tlvs=tlvs, **params)
        self._out.append(encode(pdu))
        deadline = self._deadline(self.timers.response)
        self._outstanding[pdu.sequence_number] = _Outstanding(pdu, deadline, internal, windowed)
        self._windowed += windowed
        if command in _BIND_RESULT:
            self._state = State.BIND_PENDING
        elif command == "unbind":
            self._state = State.UNBOUND
        return pdu

    def _deadline(self, seconds: float) -> float:
        return self._now() + seconds if seconds > 0 else float("inf")

    def _take_sequence(self) -> int:
        seq = self._next_seq
        self._next_seq = seq + 1 if seq < _MAX_SEQUENCE else 1
        return seq

    def _queue(self, pdu: PDU) -> None:
        self._out.append(encode(pdu))

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the peer."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # -- timers -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When tick() next has work to do, on the `now` clock; None when nothing is due."""
        if self._state is State.CLOSED:
            return None
        timers = self.timers
        deadlines = []
        if self._state in (State.OPEN, State.BIND_PENDING) and timers.session_init > 0:
            deadlines.append(self._opened_at + timers.session_init)
        if self._outstanding:
            # Deadlines are appended in time order, so the oldest request expires first.
            deadlines.append(next(iter(self._outstanding.values())).deadline)
        if self._peer_unbind is not None:
            deadlines.append(self._unbind_deadline)
        if self._state in _BOUND:
            if timers.inactivity > 0:
                deadlines.append(self._last_rx + timers.inactivity)
            if timers.enquire_link > 0 and self._ping_seq is None:
                deadlines.append(self._last_rx + timers.enquire_link)
        deadline = min(deadlines, default=None)
        return None if deadline == float("inf") else deadline

    def tick(self) -> list[Event]:
        """Fire every timer that is due at now()."""
        events: list[Event] = []
        if self._state is State.CLOSED:
            return events
        now = self._now()
        timers = self.timers
        if (
            self._state in (State.OPEN, State.BIND_PENDING)
            and timers.session_init > 0
            and now >= self._opened_at + timers.session_init
        ):
            self._close(f"no bind within {timers.session_init:g} s of connecting", events)
            return events
        self._expire_requests(now, events)
        if self._peer_unbind is not None and now >= self._unbind_deadline:
            self._finish_peer_unbind(self._peer_unbind, events)
        if self._state in _BOUND:
            idle = now - self._last_rx
            if timers.inactivity > 0 and idle >= timers.inactivity:
                self._send("unbind", {}, None, internal=True)
                self._close(f"nothing received for {timers.inactivity:g} s", events)
            elif timers.enquire_link > 0 and idle >= timers.enquire_link and self._ping_seq is None:
                self._ping_seq = self._send("enquire_link", {}, None, internal=True).sequence_number
        return events

    def _expire_requests(self, now: float, events: list[Event]) -> None:
        while self._outstanding and self._state is not State.CLOSED:
            seq, entry = next(iter(self._outstanding.items()))
            if entry.deadline > now:
                return
            del self._outstanding[seq]
            self._windowed -= entry.windowed
            name = entry.request.command
            if not entry.internal:
                events.append(ResponseTimeout(entry.request))
            if entry.internal or name == "unbind":  # a dead link: keep-alive or unbind unanswered
                self._close(f"{name} unanswered for {self.timers.response:g} s", events)
            elif name in _BIND_RESULT:
                self._state = State.OPEN

    def connection_lost(self) -> list[Event]:
        """The transport closed; returns RequestAborted for every unanswered request we sent."""
        self._state = State.CLOSED
        aborted: list[Event] = [
            RequestAborted(e.request) for e in self._outstanding.values() if not e.internal
        ]
        self._outstanding.clear()
        self._pending_in.clear()
        self._peer_unbind = None
        self._out.clear()
        self._windowed = 0
        self._ping_seq = None
        return aborted

    def _close(self, reason: str, events: list[Event]) -> None:
        self._state = State.CLOSED
        events.append(ConnectionShouldClose(reason))
