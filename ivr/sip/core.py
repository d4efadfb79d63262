"""SipCore: the IVR's SIP user agent server (UAS), sans-IO (no sockets, no Twisted).

The transport adapter feeds datagrams in and puts the returned ``SendDatagram`` actions on
the wire; the IVR application reacts to the returned events and calls back in::

    core = SipCore(reactor.seconds, local_host="127.0.0.1", local_port=5060)
    actions = core.receive(datagram, addr)   # -> [SendDatagram | IncomingCall | Dtmf | ...]
    actions = core.tick()                    # run timers due at now(); call at next_deadline()
    core.next_deadline() -> float | None     # when tick() must run next (absolute clock time)

Events (frozen dataclasses) the application gets:

    IncomingCall(call_id, uri_user, from_user, addr)  INVITE: answer with ring/answer/reject
    Dtmf(call_id, digit, duration_ms, txn)            INFO key: answer with reply(event, ...)
    CallAcked(call_id)                                the caller ACKed our 200 OK
    CallEnded(call_id, by)                            exactly once per IncomingCall; ``by`` is
        "caller" (BYE), "cancel" (CANCEL), "timeout" (no ACK for 64*T1, the app never
        answered, or our INFO got no answer), "lost" (our INFO got 481/408),
        "rejected" (the app called reject) or "gateway" (the app called hangup)

With ``info_events=True`` (the callee simulator; the IVR keeps it off) two more:

    InfoReceived(call_id, headers, txn)   an INFO without a body (a prompt in its X-* headers):
                                          answer with reply(event, ...)
    InfoAnswered(call_id, status, headers)  the final response to our INFO, its X-* headers

Calls the application makes; each returns the actions to perform, and a call that already
ended (a race with the caller's BYE or CANCEL) simply returns ``[]``:

    ring(call_id)                         180 Ringing
    answer(call_id, headers)              200 OK (+SDP answer if offered), resent until ACK
    reject(call_id, status, headers=None) 3xx-6xx, e.g. 404 for an unknown service number
    reply(dtmf_event, status=200, headers=None)  the response to that INFO (new prompt)
    send_info(call_id, headers, body=b"", content_type=None)
                                          gateway INFO in the dialog (Timer E/F client txn)
    hangup(call_id, headers=None)         BYE (held back until the ACK, RFC 3261 15);
                                          before the answer it is a 480

``headers`` are a mapping or (name, value) pairs, e.g. ``{"X-IVR-Prompt": text,
"X-IVR-State": "menu"}``; values are UTF-8 text and line breaks are escaped with
``message.encode_header_text`` (``decode_header_text`` reverses it).

Standard behaviour handled here: 100 Trying, retransmitted requests answered with the same
bytes (same To tag), OPTIONS 200 with Allow, CANCEL (200, then 487 for the INVITE), BYE,
481 for unknown dialogs, 500 for out-of-order CSeq, 400 with a Warning for a request with a
usable Via but missing Call-ID/CSeq/From/To, 405 with Allow, 420 for Require, 503 beyond
``max_calls``; junk without a usable Via is dropped and counted in ``counters``.

Responses go back to the address the request came from and in-dialog requests to the
address the INVITE came from (symmetric signalling, as sipp and NATed phones expect); the
Request-URI of those is still the caller's Contact.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivr.sip.dialog import ANSWERED, CONFIRMED, EARLY, Call, parse_dtmf, sdp_answer
from ivr.sip.message import (
    Request,
    Response,
    SIPParseError,
    decode_header_text,
    encode_header_text,
    make_response,
    parse,
    uri_user,
)
from ivr.sip.transaction import DONE, EXPIRE, RESEND, ClientTxn, ServerTxn, Timers, TimerValues

__all__ = ["SipCore", "SendDatagram", "IncomingCall", "Dtmf", "CallAcked", "CallEnded", "InfoReceived",
           "InfoAnswered", "Action", "app_headers", "x_headers", "ALLOW"]

log = logging.getLogger(__name__)

DEFAULT_TIMES = TimerValues()
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"
MAGIC_COOKIE = "z9hG4bK"
_SCHEMES = ("sip", "sips", "tel")
# Headers the core writes itself; an application value would corrupt the dialog.
_RESERVED = frozenset({"via", "from", "to", "call-id", "cseq", "content-length", "contact",
                       "record-route", "route", "max-forwards", "i", "f", "t", "v", "l", "m"})


@dataclass(frozen=True, slots=True)
class SendDatagram:
    data: bytes
    addr: Any


@dataclass(frozen=True, slots=True)
class IncomingCall:
    call_id: str
    uri_user: str  # the number dialled, e.g. "10086"
    from_user: str  # the caller, e.g. "13800000001"
    addr: Any


@dataclass(frozen=True, slots=True)
class Dtmf:
    call_id: str
    digit: str  # one of 0-9 * # A-D
    duration_ms: int | None
    txn: ServerTxn = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CallAcked:
    call_id: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    by: str


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """A non-DTMF INFO (only with ``info_events=True``): answer it with ``reply(event, ...)``."""

    call_id: str
    headers: tuple[tuple[str, str], ...]  # X-* headers, decoded
    txn: ServerTxn = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class InfoAnswered:
    """The final response to our INFO (only with ``info_events=True``)."""

    call_id: str
    status: int
    headers: tuple[tuple[str, str], ...]  # X-* headers, decoded


Action = SendDatagram | IncomingCall | Dtmf | CallAcked | CallEnded | InfoReceived | InfoAnswered
Headers = Mapping[str, str] | Iterable[tuple[str, str]] | None


def app_headers(headers: Headers) -> list[tuple[str, str]]:
    """Application headers checked (no header the core writes itself) and their values encoded."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for name, value in items:
        if name.lower() in _RESERVED or not name.replace("-", "").isalnum() or not name.isascii():
            raise ValueError(f"header name {name!r} cannot be set by the application")
        out.append((name, encode_header_text(str(value))))
    return out


def x_headers(msg: Request | Response) -> tuple[tuple[str, str], ...]:
    """The ``X-*`` headers of a message, values decoded (``decode_header_text``)."""
    return tuple((name, decode_header_text(value)) for name, value in msg.header_items()
                 if name.lower().startswith("x-"))


class SipCore:
    """The UAS state machine for every call of one listening address. See the module doc."""

    def __init__(self, now: Callable[[], float], *, local_host: str, local_port: int,
                 max_calls: int = 10_000, max_transactions: int = 200_000,
                 times: TimerValues = DEFAULT_TIMES, send_trying: bool = True, info_events: bool = False) -> None:
        self._now = now
        self.local_host = local_host
        host = f"[{local_host}]" if ":" in local_host and not local_host.startswith("[") else local_host
        self._sent_by = f"{host}:{local_port}"
        self._contact = f"<sip:ivr@{self._sent_by}>"
        self._max_calls = max_calls
        self._max_txns = max_transactions
        self._times = times
        self._send_trying = send_trying
        self._info_events = info_events
        self._calls: dict[str, Call] = {}
        self._txns: dict[tuple, ServerTxn] = {}
        # INVITE transactions by (Call-ID, CSeq): ACK/CANCEL from UAs that change the branch.
        self._invites: dict[tuple[str, int], ServerTxn] = {}
        self._clients: dict[str, ClientTxn] = {}
        self._timers = Timers()
        self._out: list[Action] = []
        self._token_prefix = secrets.token_hex(4)
        self._tokens = itertools.count(1)
        self.counters: Counter[str] = Counter()
        self._handlers = {"INVITE": self._on_invite, "BYE": self._on_bye, "INFO": self._on_info,
                          "OPTIONS": self._on_options, "CANCEL": self._on_cancel}

    # ----------------------------------------------------------------- driving
    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def tick(self) -> list[Action]:
        out = self._begin()
        self._timers.fire_due(self._now())
        return out

    def receive(self, datagram: bytes, addr: Any) -> list[Action]:
        out = self._begin()
        self.counters["datagrams"] += 1
        try:
            self._receive(datagram, addr)
        except Exception:  # one bad datagram must never take the other calls down
            self.counters["internal_errors"] += 1
            log.exception("SIP datagram from %s not handled", addr)
        return out

    # ----------------------------------------------------------------- application calls
    def ring(self, call_id: str) -> list[Action]:
        out = self._begin()
        call = self._calls.get(call_id)
        if call is not None and call.state == EARLY and not call.ended:
            self._respond(call.invite, 180, self._dialog_headers(call), call.local_tag)
        return out

    def answer(self, call_id: str, headers: Headers = None) -> list[Action]:
        out = self._begin()
        call = self._calls.get(call_id)
        if call is None or call.state != EARLY or call.ended:
            return out
        txn = call.invite
        offer = txn.request.body if txn.request.content_type == "application/sdp" else b""
        body = (sdp_answer(offer, self.local_host, next(self._tokens)) if offer else None) or b""
        extra = [*self._dialog_headers(call), ("Allow", ALLOW), *app_headers(headers)]
        self._respond(txn, 200, extra, call.local_tag, body, "application/sdp")
        call.invite = None
        now = self._now()
        call.start_ok(txn.response, now, self._times)
        call.timer = self._timers.schedule(now + self._times.t1, self._on_ok_timer, call)
        return out

    def reject(self, call_id: str, status: int, headers: Headers = None) -> list[Action]:
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, not {status}")
        return self._refuse(call_id, status, app_headers(headers), "rejected")

    def reply(self, event: Dtmf, status: int = 200, headers: Headers = None) -> list[Action]:
        if not 200 <= status <= 699:
            raise ValueError(f"an INFO needs a final status, not {status}")
        out = self._begin()
        txn = event.txn
        if not txn.answered and self._txns.get(txn.key) is txn:
            self._respond(txn, status, app_headers(headers))
        return out

    def send_info(self, call_id: str, headers: Headers, body: bytes = b"",
                  content_type: str | None = None) -> list[Action]:
        out = self._begin()
        call = self._calls.get(call_id)
        if call is not None and call.state != EARLY and not call.ended:
            self._client_request(call, "INFO", app_headers(headers), body, content_type)
        return out

    def hangup(self, call_id: str, headers: Headers = None) -> list[Action]:
        call = self._calls.get(call_id)
        if call is not None and call.state == EARLY:
            return self._refuse(call_id, 480, app_headers(headers), "gateway")
        out = self._begin()
        if call is None or call.ended:
            return out
        call.ended, call.bye_headers = True, app_headers(headers)
        self._emit(CallEnded(call_id, "gateway"))
        if call.state == CONFIRMED:
            self._bye(call)
        return out

    # ----------------------------------------------------------------- plumbing
    def _begin(self) -> list[Action]:
        self._out = []
        return self._out

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _send(self, data: bytes, addr: Any) -> None:
        self._out.append(SendDatagram(data, addr))

    def _token(self) -> str:
        return f"{self._token_prefix}{next(self._tokens):x}"

    def _dialog_headers(self, call: Call) -> list[tuple[str, str]]:
        return [("Contact", self._contact), *(("Record-Route", r) for r in call.route_set)]

    @staticmethod
    def _key(request: Request, method: str) -> tuple:
        """Transaction key (RFC 3261 17.2.3); ``method`` is INVITE for an ACK or CANCEL lookup."""
        via = request.top_via
        if via.branch.startswith(MAGIC_COOKIE):
            return (via.branch, via.sent_by, method)
        return (request.call_id, request.cseq[0], method, request.from_.tag, request.vias[0])

    def _new_txn(self, request: Request, key: tuple, addr: Any) -> ServerTxn:
        txn = ServerTxn(key, request, addr, self._now(), self._times)
        self._txns[key] = txn
        self._arm(txn)
        return txn

    def _arm(self, txn: ServerTxn) -> None:
        entry = txn.timer
        if entry is not None and entry[2] is not None and entry[0] == txn.wake:
            return
        self._timers.cancel(entry)
        txn.timer = self._timers.schedule(txn.wake, self._on_server_timer, txn)

    def _forget(self, txn: ServerTxn) -> None:
        self._timers.cancel(txn.timer)
        txn.timer = None
        if self._txns.get(txn.key) is txn:
            del self._txns[txn.key]
        if self._invites.get((txn.call_id, txn.cseq)) is txn:
            del self._invites[(txn.call_id, txn.cseq)]

    def _respond(self, txn: ServerTxn, status: int, headers: list[tuple[str, str]] = (),
                 to_tag: str | None = None, body: bytes = b"", content_type: str | None = None) -> None:
        if status != 100 and to_tag is None:
            to_tag = self._token()  # RFC 3261 8.2.6.2: every non-100 response gets a To tag
        data = make_response(txn.request, status, to_tag=to_tag, headers=headers, body=body,
                             content_type=content_type).to_bytes()
        if status < 200:
            txn.provisional(data, status)
        else:
            txn.final(data, status, self._now())
            self._arm(txn)
        self._send(data, txn.addr)

    def _answer_new(self, request: Request, key: tuple, addr: Any, status: int,
                    headers: list[tuple[str, str]] = ()) -> None:
        """A new request answered at once with a final response."""
        self._respond(self._new_txn(request, key, addr), status, headers)

    def _dialog(self, request: Request) -> Call | None:
        call = self._calls.get(request.call_id)
        return call if call is not None and call.matches(request) else None

    def _drop_call(self, call: Call) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        self._timers.cancel(call.timer)
        call.timer = None

    def _end_early(self, call: Call, status: int, headers: list[tuple[str, str]], by: str) -> None:
        """Answer a still unanswered INVITE with a final error and end its call."""
        self._respond(call.invite, status, headers, call.local_tag)
        self._drop_call(call)
        self._emit(CallEnded(call.call_id, by))

    def _refuse(self, call_id: str, status: int, headers: list[tuple[str, str]], by: str) -> list[Action]:
        out = self._begin()
        call = self._calls.get(call_id)
        if call is not None and call.state == EARLY and not call.ended:
            self._end_early(call, status, headers, by)
        return out

    # ----------------------------------------------------------------- incoming
    def _receive(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n\t "):
            self.counters["keepalives"] += 1  # RFC 5626 CRLF keep-alive
            return
        try:
            msg = parse(datagram)
        except SIPParseError as err:
            self._bad_datagram(err, addr)
            return
        if isinstance(msg, Response):
            self._on_response(msg)
        else:
            self._on_request(msg, addr)

    def _bad_datagram(self, err: SIPParseError, addr: Any) -> None:
        request = err.partial
        if not err.answerable or request.method == "ACK":  # an ACK is never answered
            self.counters["junk_dropped"] += 1
            return
        self.counters["bad_requests"] += 1
        text = encode_header_text(err.reason).replace('"', "'")
        warning = ("Warning", f'399 {self._sent_by} "{text}"')
        data = make_response(request, err.status, to_tag=self._token(), headers=[warning]).to_bytes()
        self._send(data, addr)

    def _on_request(self, request: Request, addr: Any) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        key = self._key(request, method)
        txn = self._txns.get(key)
        if txn is not None:
            self.counters["retransmissions"] += 1
            data = txn.retransmission()
            if data is not None:
                self._send(data, addr)
            return
        if len(self._txns) >= self._max_txns:
            self.counters["overload"] += 1
            data = make_response(request, 503, to_tag=self._token(), headers=[("Retry-After", "5")])
            self._send(data.to_bytes(), addr)
            return
        handler = self._handlers.get(method)
        if handler is None:
            self._answer_new(request, key, addr, 405, [("Allow", ALLOW)])
        elif request.get("require") and method != "CANCEL":
            self._answer_new(request, key, addr, 420, [("Unsupported", request.get("require"))])
        else:
            handler(request, key, addr)

    def _on_invite(self, request: Request, key: tuple, addr: Any) -> None:
        if request.to.tag:  # re-INVITE: we keep the session as it is (no media to renegotiate)
            self._answer_new(request, key, addr, 488 if self._dialog(request) else 481)
            return
        if request.call_id in self._calls:
            self._answer_new(request, key, addr, 482)
            return
        if request.uri.split(":", 1)[0].strip().lower() not in _SCHEMES:
            self._answer_new(request, key, addr, 416)
            return
        if len(self._calls) >= self._max_calls:
            self.counters["calls_refused"] += 1
            self._answer_new(request, key, addr, 503, [("Retry-After", "5")])
            return
        txn = self._new_txn(request, key, addr)
        call = Call(request, txn, addr, self._token())
        self._calls[call.call_id] = call
        self._invites[(call.call_id, call.invite_cseq)] = txn
        self.counters["calls"] += 1
        if self._send_trying:
            self._respond(txn, 100)
        self._emit(IncomingCall(call.call_id, uri_user(request.uri), uri_user(request.from_.uri), addr))

    def _on_ack(self, request: Request) -> None:
        txn = self._txns.get(self._key(request, "INVITE")) or self._invites.get(
            (request.call_id, request.cseq[0]))
        if txn is not None and txn.invite and txn.status >= 300:  # ACK of a non-2xx final
            if not txn.ack(self._now()):
                self.counters["retransmissions"] += 1
            self._arm(txn)
            return
        call = self._calls.get(request.call_id)
        if (call is None or call.state != ANSWERED or request.to.tag != call.local_tag
                or request.cseq[0] != call.invite_cseq):
            self.counters["acks_ignored"] += 1  # a late copy, or an ACK for nothing we know
            return
        self._timers.cancel(call.timer)
        call.timer = None
        call.acked()
        if call.ended:
            self._bye(call)
        else:
            self._emit(CallAcked(call.call_id))

    def _on_bye(self, request: Request, key: tuple, addr: Any) -> None:
        call = self._dialog(request)
        if call is None:
            self._answer_new(request, key, addr, 481)
            return
        self._answer_new(request, key, addr, 200)
        if call.state == EARLY:  # RFC 3261 15.1.2: BYE on an early dialog ends the INVITE too
            self._respond(call.invite, 487, to_tag=call.local_tag)
        self._drop_call(call)
        if not call.ended:
            self._emit(CallEnded(call.call_id, "caller"))

    def _on_info(self, request: Request, key: tuple, addr: Any) -> None:
        call = self._dialog(request)
        if call is None or call.ended:
            self._answer_new(request, key, addr, 481)
            return
        cseq = request.cseq[0]
        if cseq <= call.remote_cseq:  # RFC 3261 12.2.2: out of order
            self._answer_new(request, key, addr, 500, [("Retry-After", "1")])
            return
        call.remote_cseq = cseq
        if not request.body.strip():
            if self._info_events:
                self._emit(InfoReceived(call.call_id, x_headers(request), self._new_txn(request, key, addr)))
            else:
                self._answer_new(request, key, addr, 200)
            return
        dtmf = parse_dtmf(request.content_type, request.body)
        if dtmf is None:
            self._answer_new(request, key, addr, 415, [("Accept", "application/dtmf-relay, application/dtmf")])
            return
        txn = self._new_txn(request, key, addr)
        self._emit(Dtmf(call.call_id, dtmf[0], dtmf[1], txn))

    def _on_options(self, request: Request, key: tuple, addr: Any) -> None:
        self._answer_new(request, key, addr, 200, [("Allow", ALLOW), ("Accept", ACCEPT)])

    def _on_cancel(self, request: Request, key: tuple, addr: Any) -> None:
        invite = self._txns.get(self._key(request, "INVITE")) or self._invites.get(
            (request.call_id, request.cseq[0]))
        if invite is None or not invite.invite:
            self._answer_new(request, key, addr, 481)
            return
        call = self._calls.get(request.call_id)
        live = call is not None and call.invite is invite
        tag = call.local_tag if call is not None else None  # the INVITE responses' To tag (9.2)
        self._respond(self._new_txn(request, key, addr), 200, to_tag=tag)
        if live and not invite.answered:
            self._respond(invite, 487, to_tag=tag)
            self._drop_call(call)
            self._emit(CallEnded(call.call_id, "cancel"))

    def _on_response(self, response: Response) -> None:
        via = response.top_via
        txn = self._clients.get(via.branch) if via is not None else None
        if txn is None:
            self.counters["stray_responses"] += 1
            return
        if not txn.on_response(response.status):
            return
        del self._clients[txn.branch]
        self._timers.cancel(txn.timer)
        if txn.method == "INFO" and response.status in (408, 481):  # RFC 3261 12.2.1.2
            self._lose(txn.call_id, "lost")
        elif txn.method == "INFO" and self._info_events:
            self._emit(InfoAnswered(txn.call_id, response.status, x_headers(response)))

    # ----------------------------------------------------------------- outgoing requests
    def _client_request(self, call: Call, method: str, headers: list[tuple[str, str]], body: bytes = b"",
                        content_type: str | None = None) -> None:
        branch = f"{MAGIC_COOKIE}{self._token()}"
        via = f"SIP/2.0/UDP {self._sent_by};branch={branch};rport"
        request = call.request(method, via, self._contact, headers)
        if body:
            request.body = body
            request.set("content-type", content_type or "application/octet-stream")
        data = request.to_bytes()
        txn = ClientTxn(branch, call.call_id, method, data, call.addr, self._now(), self._times)
        self._clients[branch] = txn
        txn.timer = self._timers.schedule(txn.wake, self._on_client_timer, txn)
        self._send(data, call.addr)

    def _bye(self, call: Call) -> None:
        self._drop_call(call)
        self._client_request(call, "BYE", call.bye_headers)

    def _lose(self, call_id: str, by: str) -> None:
        call = self._calls.get(call_id)
        if call is not None and not call.ended:
            self._drop_call(call)
            self._emit(CallEnded(call_id, by))

    # ----------------------------------------------------------------- timers
    def _on_server_timer(self, txn: ServerTxn) -> None:
        txn.timer = None
        result = txn.on_timer(self._now())
        if result == RESEND:
            self._send(txn.response, txn.addr)
            self._arm(txn)
        elif result == EXPIRE and txn.invite:
            call = self._calls.get(txn.call_id)
            if call is not None and call.invite is txn:
                self._end_early(call, 480, [], "timeout")  # the application never answered
            else:
                self._forget(txn)
        elif result in (EXPIRE, DONE):
            self._forget(txn)

    def _on_ok_timer(self, call: Call) -> None:
        call.timer = None
        if self._calls.get(call.call_id) is not call or call.ok is None:
            return
        now = self._now()
        if call.on_ok_timer(now, self._times) == RESEND:
            self._send(call.ok, call.addr)
            call.timer = self._timers.schedule(min(now + call.ok_interval, call.ok_give_up),
                                               self._on_ok_timer, call)
            return
        call.ok = None
        ended = call.ended
        self._bye(call)  # RFC 3261 13.3.1.4: no ACK for 64*T1 -> end the session with a BYE
        if not ended:
            self._emit(CallEnded(call.call_id, "timeout"))

    def _on_client_timer(self, txn: ClientTxn) -> None:
        txn.timer = None
        if txn.on_timer(self._now()) == RESEND:
            self._send(txn.data, txn.addr)
            txn.timer = self._timers.schedule(txn.wake, self._on_client_timer, txn)
            return
        self._clients.pop(txn.branch, None)
        if txn.method == "INFO":
            self._lose(txn.call_id, "timeout")
