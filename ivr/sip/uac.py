"""The gateway as a SIP user agent client (UAC) for outbound calls, sans-IO (RFC 3261 subset, UDP).

``UacEndpoint`` multiplexes many outbound calls (one ``UacCall`` each) by Call-ID on one local
address. It never touches a socket or a clock of its own: the adapter feeds datagrams in, puts
the queued datagrams on the wire and calls ``tick()`` at ``next_deadline()``::

    ep = UacEndpoint(reactor.seconds, local_host="127.0.0.1", local_port=5070, ring_timeout=30.0)
    call = ep.place_call(("127.0.0.1", 5080), callee="13800000001", caller="10086",
                         headers={"X-Project": "P1"})          # -> UacCall (call.call_id)
    events = ep.receive_datagram(data, addr)   # -> [UacEvent]
    events = ep.tick()                         # timers due at now()
    ep.datagrams_to_send() -> [(bytes, addr)]  # drain after every call into the endpoint
    ep.next_deadline() -> float | None         # absolute clock time of the next tick()
    ep.send_prompt(call_id, text, state=None, headers=None)   # in-dialog INFO, X-IVR-Prompt
    ep.hangup(call_id)                         # BYE once answered; CANCEL before
    ep.cancel(call_id)                         # CANCEL an unanswered call (-> Failed 487)

Every method that can produce events returns them (``place_call`` produces none). Events
(frozen dataclasses, each with ``call_id``):

    Trying(call_id)                  first 100 Trying
    Ringing(call_id, status)         first 180/183
    Answered(call_id, headers)       200 OK, ACK sent, dialog up; ``headers``: the callee's
                                     X-* headers, decoded (``decode_header_text``)
    DtmfReceived(call_id, digit, duration_ms)   callee's INFO (dtmf-relay or dtmf), answered 200
    Failed(call_id, status, reason)  a 3xx-6xx final: 486 busy, 480 unavailable, 408, 487
                                     after ``cancel()``, anything else
    HungUp(call_id, by_remote)       the call ended after the answer: the callee's BYE
                                     (by_remote=True; also a 481/408 to our INFO) or our
                                     ``hangup()`` (by_remote=False, emitted at once)
    TimedOut(call_id, phase)         "ring": the ring timeout passed (emitted at once, CANCEL
                                     sent or held until a provisional, RFC 3261 9.1);
                                     "no_response": nothing at all came back (Timer B, 64*T1);
                                     "cancel": no final response 64*T1 after our CANCEL;
                                     "dialog": our in-dialog INFO got no answer (Timer F)

Every placed call gets exactly one of Failed, HungUp, TimedOut, and nothing after it; a 200
that crosses our CANCEL (or arrives after Timer B) is ACKed and ended with a BYE silently.

Protocol details kept here: INVITE resent at T1, 2*T1, 4*T1 ... while no response came
(Timer A) and given up after 64*T1 (Timer B); ACK for a non-2xx final in the INVITE's
transaction (same branch, To from the response), ACK for a 2xx as its own request to the
Contact with the Record-Route set; retransmitted finals and 200s re-ACKed with the same bytes
while the call lingers (Timer D, 32 s); CANCEL only after a provisional; in-dialog INFO, BYE and
CANCEL as non-INVITE client transactions (Timer E/F, ``transaction.ClientTxn``); callee's BYE
and INFO answered (retransmissions with the same bytes, out-of-order CSeq 500, unknown
dialog 481, re-INVITE 488, OPTIONS 200, other methods 405).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.sip.core import ALLOW, DEFAULT_TIMES, MAGIC_COOKIE, Headers, app_headers, x_headers
from ivr.sip.dialog import parse_dtmf
from ivr.sip.message import (
    Request,
    Response,
    SIPParseError,
    encode_header_text,
    make_response,
    parse,
    parse_name_addr,
    split_commas,
)
from ivr.sip.transaction import RESEND, ClientTxn, Timers, TimerValues

__all__ = ["UacEndpoint", "UacCall", "UacEvent", "Trying", "Ringing", "Answered", "Failed",
           "DtmfReceived", "HungUp", "TimedOut", "TooManyCalls", "CALLING", "PROCEEDING",
           "CONFIRMED", "ENDED", "TERMINAL"]

log = logging.getLogger(__name__)

# UacCall.state
CALLING, PROCEEDING, CONFIRMED, ENDED = "calling", "proceeding", "confirmed", "ended"
TIMER_D = 32.0  # RFC 3261 17.1.1.2: at least 32 s over UDP
_KEEP_RESPONSES = 8  # answered in-dialog requests remembered for their retransmissions


@dataclass(frozen=True, slots=True)
class Trying:
    call_id: str


@dataclass(frozen=True, slots=True)
class Ringing:
    call_id: str
    status: int


@dataclass(frozen=True, slots=True)
class Answered:
    call_id: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    call_id: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    call_id: str
    digit: str
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HungUp:
    call_id: str
    by_remote: bool


@dataclass(frozen=True, slots=True)
class TimedOut:
    call_id: str
    phase: str


UacEvent = Trying | Ringing | Answered | Failed | DtmfReceived | HungUp | TimedOut
TERMINAL = (Failed, HungUp, TimedOut)


class TooManyCalls(RuntimeError):
    """``place_call`` beyond ``max_calls`` live calls; the dialer should try later."""


class UacCall:
    """One outbound call: its INVITE transaction, then its dialog. Read-only for the application.

    ``state`` is CALLING (INVITE sent, nothing back), PROCEEDING (a 1xx came), CONFIRMED (200
    ACKed) or ENDED (kept for ``linger`` seconds to re-ACK retransmitted finals). ``done`` says
    the terminal event has been emitted. ``started_at``/``answered_at`` are clock times.
    """

    __slots__ = ("call_id", "addr", "invite", "invite_data", "branch", "local_party", "remote_party",
                 "remote_tag", "remote_target", "route_set", "local_cseq", "remote_cseq", "state",
                 "done", "cancel", "ack", "interval", "timers", "responses", "tried", "rang",
                 "started_at", "answered_at")

    def __init__(self, call_id: str, addr: Any, invite: Request, branch: str, now: float,
                 interval: float) -> None:
        self.call_id, self.addr, self.invite, self.branch = call_id, addr, invite, branch
        self.invite_data = invite.to_bytes()
        self.local_party = invite.get("from") or ""
        self.remote_party = invite.get("to") or ""  # gets the callee's tag with the answer
        self.remote_tag = ""
        self.remote_target = invite.uri
        self.route_set: list[str] = []
        self.local_cseq = 1
        self.remote_cseq = 0
        self.state = CALLING
        self.done = False
        self.cancel: str | None = None  # why a CANCEL is wanted: "app" or "ring"
        self.ack: bytes | None = None  # resent for every retransmitted final response
        self.interval = interval  # Timer A
        self.timers: dict[str, list[Any]] = {}
        self.responses: dict[tuple[int, str], bytes] = {}
        self.tried = self.rang = False
        self.started_at = now
        self.answered_at: float | None = None

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def matches(self, request: Request) -> bool:
        """An in-dialog request from the callee (RFC 3261 12.2.2: tags swapped)."""
        local_tag = parse_name_addr(self.local_party).tag
        return bool(self.remote_tag) and request.from_.tag == self.remote_tag and request.to.tag == local_tag

    def remember(self, key: tuple[int, str], data: bytes) -> None:
        if len(self.responses) >= _KEEP_RESPONSES:
            self.responses.pop(next(iter(self.responses)))
        self.responses[key] = data


def _hostport(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _contact_uri(msg: Response) -> str:
    contacts = split_commas(msg.get("contact") or "")
    return parse_name_addr(contacts[0]).uri if contacts else ""


class UacEndpoint:
    """Outbound calls from one local address (see the module doc for the API and events)."""

    def __init__(self, now: Callable[[], float], *, local_host: str, local_port: int,
                 times: TimerValues = DEFAULT_TIMES, ring_timeout: float = 30.0,
                 max_calls: int = 50_000) -> None:
        self._now = now
        self._times = times
        self.ring_timeout = ring_timeout
        self._max_calls = max_calls
        host = f"[{local_host}]" if ":" in local_host and not local_host.startswith("[") else local_host
        self._host = host
        self._sent_by = f"{host}:{local_port}"
        self._contact = f"<sip:gateway@{self._sent_by}>"
        self._linger = max(TIMER_D, times.t64)
        self._calls: dict[str, UacCall] = {}
        self._live = 0
        self._clients: dict[tuple[str, str], ClientTxn] = {}
        self._timers = Timers()
        self._events: list[UacEvent] = []
        self._wire: list[tuple[bytes, Any]] = []
        self._prefix = secrets.token_hex(4)
        self._tokens = itertools.count(1)
        self.counters: Counter[str] = Counter()
        self._fire = {"A": self._timer_a, "B": self._timer_b, "ring": self._ring_timeout,
                      "cancel": self._cancel_timeout, "linger": self._forget}

    # ----------------------------------------------------------------- driving
    @property
    def live_calls(self) -> int:
        """Calls not yet ended (lingering ones excluded)."""
        return self._live

    def call(self, call_id: str) -> UacCall | None:
        return self._calls.get(call_id)

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out, self._wire = self._wire, []
        return out

    def tick(self) -> list[UacEvent]:
        self._timers.fire_due(self._now())
        return self._take()

    def receive_datagram(self, data: bytes, addr: Any) -> list[UacEvent]:
        self.counters["datagrams"] += 1
        try:
            self._receive(data, addr)
        except Exception:  # one bad datagram must never take the other calls down
            self.counters["internal_errors"] += 1
            log.exception("SIP datagram from %s not handled", addr)
        return self._take()

    # ----------------------------------------------------------------- application calls
    def place_call(self, addr: Any, callee: str, caller: str, headers: Headers = None, *,
                   ring_timeout: float | None = None, call_id: str | None = None) -> UacCall:
        """Send an INVITE for ``sip:callee@addr`` from ``caller``; raise TooManyCalls when full."""
        if len(self._calls) >= self._max_calls:
            raise TooManyCalls(f"{len(self._calls)} calls live or lingering (max_calls={self._max_calls})")
        extra = app_headers(headers)
        call_id = call_id or f"{self._token()}@{self._host}"
        if call_id in self._calls:
            raise ValueError(f"Call-ID {call_id!r} is already in use")
        branch = f"{MAGIC_COOKIE}{self._token()}"
        target = f"sip:{callee}@{_hostport(addr)}"
        invite = Request("INVITE", target, [
            ("Via", self._via(branch)), ("Max-Forwards", "70"),
            ("From", f"<sip:{caller}@{self._sent_by}>;tag={self._token()}"), ("To", f"<{target}>"),
            ("Call-ID", call_id), ("CSeq", "1 INVITE"), ("Contact", self._contact), ("Allow", ALLOW),
            *extra])
        now = self._now()
        call = UacCall(call_id, addr, invite, branch, now, self._times.t1)
        self._calls[call_id] = call
        self._live += 1
        self.counters["calls"] += 1
        self._arm(call, "A", now + self._times.t1)
        self._arm(call, "B", now + self._times.t64)
        self._arm(call, "ring", now + (self.ring_timeout if ring_timeout is None else ring_timeout))
        self._send(call.invite_data, addr)
        return call

    def send_prompt(self, call_id: str, text: str, state: str | None = None,
                    headers: Headers = None) -> list[UacEvent]:
        """INFO in the dialog carrying ``X-IVR-Prompt`` (and ``X-IVR-State``); no-op once ended."""
        call = self._calls.get(call_id)
        if call is not None and call.state == CONFIRMED and not call.done:
            extra = [("X-IVR-Prompt", encode_header_text(text))]
            if state is not None:
                extra.append(("X-IVR-State", encode_header_text(state)))
            self._in_dialog(call, "INFO", extra + app_headers(headers))
        return self._take()

    def hangup(self, call_id: str) -> list[UacEvent]:
        """BYE an answered call (HungUp(by_remote=False) at once); CANCEL one not answered yet."""
        call = self._calls.get(call_id)
        if call is None or call.done:
            return self._take()
        if call.state != CONFIRMED:
            return self.cancel(call_id)
        self._in_dialog(call, "BYE", [])
        self._finish(call, HungUp(call_id, by_remote=False))
        self._end(call)
        return self._take()

    def cancel(self, call_id: str) -> list[UacEvent]:
        """CANCEL a call not answered yet; its end is the callee's 487 (Failed) or TimedOut."""
        call = self._calls.get(call_id)
        if call is not None and not call.done and call.state in (CALLING, PROCEEDING):
            self._want_cancel(call, "app")
        return self._take()

    # ----------------------------------------------------------------- plumbing
    def _take(self) -> list[UacEvent]:
        out, self._events = self._events, []
        return out

    def _token(self) -> str:
        return f"{self._prefix}{next(self._tokens):x}"

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {self._sent_by};branch={branch};rport"

    def _send(self, data: bytes, addr: Any) -> None:
        self._wire.append((data, addr))

    def _finish(self, call: UacCall, event: UacEvent) -> None:
        if not call.done:
            call.done = True
            self._events.append(event)

    def _arm(self, call: UacCall, kind: str, when: float) -> None:
        self._timers.cancel(call.timers.get(kind))
        call.timers[kind] = self._timers.schedule(when, self._fire[kind], call)

    def _disarm(self, call: UacCall, *kinds: str) -> None:
        for kind in kinds:
            self._timers.cancel(call.timers.pop(kind, None))

    def _end(self, call: UacCall) -> None:
        """No more INVITE timers; keep the call ``linger`` seconds to re-ACK and answer strays."""
        if call.state != ENDED:
            self._live -= 1
        call.state = ENDED
        self._disarm(call, "A", "B", "ring", "cancel")
        self._arm(call, "linger", self._now() + self._linger)

    def _forget(self, call: UacCall) -> None:
        self._disarm(call, *list(call.timers))
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]

    def _want_cancel(self, call: UacCall, why: str) -> None:
        if call.cancel is not None:
            return
        call.cancel = why
        self._arm(call, "cancel", self._now() + self._times.t64)  # RFC 3261 9.1: give up after 64*T1
        if call.state == PROCEEDING:
            self._send_cancel(call)

    def _send_cancel(self, call: UacCall) -> None:
        invite = call.invite
        request = Request("CANCEL", invite.uri, [
            ("Via", invite.vias[0]), ("Max-Forwards", "70"), ("From", call.local_party),
            ("To", invite.get("to") or ""), ("Call-ID", call.call_id), ("CSeq", "1 CANCEL")])
        self._client(call, call.branch, "CANCEL", request.to_bytes())

    def _client(self, call: UacCall, branch: str, method: str, data: bytes) -> None:
        txn = ClientTxn(branch, call.call_id, method, data, call.addr, self._now(), self._times)
        self._clients[(branch, method)] = txn
        txn.timer = self._timers.schedule(txn.wake, self._client_timer, txn)
        self._send(data, call.addr)

    def _in_dialog(self, call: UacCall, method: str, headers: list[tuple[str, str]]) -> None:
        """A request in the established dialog (RFC 3261 12.2.1.1)."""
        call.local_cseq += 1
        branch = f"{MAGIC_COOKIE}{self._token()}"
        request = self._dialog_request(call, method, branch, call.local_cseq)
        request.add("Contact", self._contact)
        for name, value in headers:
            request.add(name, value)
        self._client(call, branch, method, request.to_bytes())

    def _dialog_request(self, call: UacCall, method: str, branch: str, cseq: int) -> Request:
        request = Request(method, call.remote_target, [
            ("Via", self._via(branch)), ("Max-Forwards", "70"), ("From", call.local_party),
            ("To", call.remote_party), ("Call-ID", call.call_id), ("CSeq", f"{cseq} {method}")])
        for route in call.route_set:
            request.add("Route", route)
        return request

    # ----------------------------------------------------------------- incoming
    def _receive(self, data: bytes, addr: Any) -> None:
        if not data.strip(b"\r\n\t "):
            self.counters["keepalives"] += 1
            return
        try:
            msg = parse(data)
        except SIPParseError as err:
            self._bad_datagram(err, addr)
            return
        if isinstance(msg, Response):
            self._on_response(msg)
        else:
            self._on_request(msg, addr)

    def _bad_datagram(self, err: SIPParseError, addr: Any) -> None:
        request = err.partial
        if not err.answerable or request.method == "ACK":
            self.counters["junk_dropped"] += 1
            return
        self.counters["bad_requests"] += 1
        response = make_response(request, err.status, to_tag=self._token(),
                                 headers=[("Warning", f'399 gateway "{err.reason}"')])
        self._send(response.to_bytes(), addr)

    def _on_response(self, response: Response) -> None:
        via, cseq = response.top_via, response.cseq
        if via is None or cseq is None:
            self.counters["junk_dropped"] += 1
            return
        if cseq[1] == "INVITE":
            call = self._calls.get(response.call_id)
            if call is None or call.branch != via.branch:
                self.counters["stray_responses"] += 1
                return
            self._invite_response(call, response)
            return
        txn = self._clients.get((via.branch, cseq[1]))
        if txn is None:
            self.counters["stray_responses"] += 1
            return
        if txn.on_response(response.status):
            del self._clients[(txn.branch, txn.method)]
            self._timers.cancel(txn.timer)
            self._client_done(txn, response.status)

    def _invite_response(self, call: UacCall, response: Response) -> None:
        status = response.status
        if status < 200:
            self._provisional(call, status)
        elif status < 300:
            self._success(call, response)
        else:
            self._failure(call, response)

    def _provisional(self, call: UacCall, status: int) -> None:
        if call.state == CALLING:
            call.state = PROCEEDING
            self._disarm(call, "A", "B")  # Proceeding: no more INVITE resends, no Timer B
            if call.cancel is not None:
                self._send_cancel(call)
        if call.done or call.state != PROCEEDING:
            return
        if status == 100 and not call.tried:
            call.tried = True
            self._events.append(Trying(call.call_id))
        elif status > 100 and not call.rang:
            call.rang = True
            self._events.append(Ringing(call.call_id, status))

    def _success(self, call: UacCall, response: Response) -> None:
        if call.ack is not None:
            self.counters["retransmissions"] += 1
            if response.to.tag == call.remote_tag:
                self._send(call.ack, call.addr)  # the callee missed our ACK
            return
        call.remote_tag = response.to.tag
        call.remote_party = response.get("to") or call.remote_party
        call.remote_target = _contact_uri(response) or call.remote_target
        call.route_set = list(reversed(response.get_all("record-route")))
        call.ack = self._dialog_request(call, "ACK", f"{MAGIC_COOKIE}{self._token()}", 1).to_bytes()
        self._send(call.ack, call.addr)
        call.answered_at = self._now()
        if call.done or call.cancel is not None:  # crossed our CANCEL, or came after we gave up
            self.counters["answered_after_cancel"] += 1
            self._in_dialog(call, "BYE", [])
            self._finish(call, HungUp(call.call_id, by_remote=False))
            self._end(call)
            return
        call.state = CONFIRMED
        self._disarm(call, "A", "B", "ring", "cancel")
        self._events.append(Answered(call.call_id, x_headers(response)))

    def _failure(self, call: UacCall, response: Response) -> None:
        if call.ack is not None:
            self.counters["retransmissions"] += 1
            self._send(call.ack, call.addr)
            return
        invite = call.invite
        ack = Request("ACK", invite.uri, [  # RFC 3261 17.1.1.3: same branch, To of the response
            ("Via", invite.vias[0]), ("Max-Forwards", "70"), ("From", call.local_party),
            ("To", response.get("to") or ""), ("Call-ID", call.call_id), ("CSeq", "1 ACK")])
        call.ack = ack.to_bytes()
        self._send(call.ack, call.addr)
        self._finish(call, Failed(call.call_id, response.status, response.reason))
        self._end(call)

    def _client_done(self, txn: ClientTxn, status: int) -> None:
        call = self._calls.get(txn.call_id)
        if call is None or txn.method != "INFO" or status not in (408, 481):
            return
        self._finish(call, HungUp(call.call_id, by_remote=True))  # RFC 3261 12.2.1.2: dialog gone
        self._end(call)

    # ----------------------------------------------------------------- callee's requests
    def _on_request(self, request: Request, addr: Any) -> None:
        method = request.method
        if method == "ACK":
            return  # only our 488 to a re-INVITE is ever ACKed; nothing to do
        call = self._calls.get(request.call_id)
        if call is None or not call.matches(request):
            self._answer_stray(request, addr)
            return
        key = request.cseq
        data = call.responses.get(key)
        if data is not None:
            self.counters["retransmissions"] += 1
            self._send(data, addr)
            return
        if key[0] <= call.remote_cseq:
            self._reply(call, request, addr, 500, [("Retry-After", "1")])
            return
        call.remote_cseq = key[0]
        handler = {"BYE": self._on_bye, "INFO": self._on_info}.get(method)
        if handler is not None:
            handler(call, request, addr)
        elif method == "INVITE":
            self._reply(call, request, addr, 488)  # no media to renegotiate
        elif method == "OPTIONS":
            self._reply(call, request, addr, 200, [("Allow", ALLOW)])
        else:
            self._reply(call, request, addr, 405, [("Allow", ALLOW)])

    def _answer_stray(self, request: Request, addr: Any) -> None:
        self.counters["stray_requests"] += 1
        if request.method == "OPTIONS":
            response = make_response(request, 200, to_tag=self._token(), headers=[("Allow", ALLOW)])
        else:
            response = make_response(request, 481, to_tag=self._token())
        self._send(response.to_bytes(), addr)

    def _reply(self, call: UacCall, request: Request, addr: Any, status: int,
               headers: list[tuple[str, str]] = ()) -> None:
        data = make_response(request, status, headers=headers).to_bytes()
        call.remember(request.cseq, data)
        self._send(data, addr)

    def _on_bye(self, call: UacCall, request: Request, addr: Any) -> None:
        self._reply(call, request, addr, 200)
        if call.state == CONFIRMED:
            self._finish(call, HungUp(call.call_id, by_remote=True))
            self._end(call)

    def _on_info(self, call: UacCall, request: Request, addr: Any) -> None:
        if call.state != CONFIRMED or call.done:
            self._reply(call, request, addr, 481)
            return
        if not request.body.strip():
            self._reply(call, request, addr, 200)
            return
        dtmf = parse_dtmf(request.content_type, request.body)
        if dtmf is None:
            self._reply(call, request, addr, 415, [("Accept", "application/dtmf-relay, application/dtmf")])
            return
        self._reply(call, request, addr, 200)
        self._events.append(DtmfReceived(call.call_id, dtmf[0], dtmf[1]))

    # ----------------------------------------------------------------- timers
    def _timer_a(self, call: UacCall) -> None:
        call.timers.pop("A", None)
        if call.state != CALLING:
            return
        self.counters["invite_resends"] += 1
        self._send(call.invite_data, call.addr)
        call.interval *= 2  # Timer A doubles without the T2 cap (RFC 3261 17.1.1.2)
        self._arm(call, "A", self._now() + call.interval)

    def _timer_b(self, call: UacCall) -> None:
        call.timers.pop("B", None)
        if call.state == CALLING:
            self._finish(call, TimedOut(call.call_id, "no_response"))
            self._end(call)

    def _ring_timeout(self, call: UacCall) -> None:
        call.timers.pop("ring", None)
        if call.state in (CALLING, PROCEEDING) and not call.done:
            self._finish(call, TimedOut(call.call_id, "ring"))
            self._want_cancel(call, "ring")

    def _cancel_timeout(self, call: UacCall) -> None:
        call.timers.pop("cancel", None)
        if call.state in (CALLING, PROCEEDING):
            self._finish(call, TimedOut(call.call_id, "cancel"))
            self._end(call)

    def _client_timer(self, txn: ClientTxn) -> None:
        txn.timer = None
        if txn.on_timer(self._now()) == RESEND:
            self._send(txn.data, txn.addr)
            txn.timer = self._timers.schedule(txn.wake, self._client_timer, txn)
            return
        self._clients.pop((txn.branch, txn.method), None)
        call = self._calls.get(txn.call_id)
        if txn.method == "INFO" and call is not None and not call.done:
            self._finish(call, TimedOut(call.call_id, "dialog"))
            self._in_dialog(call, "BYE", [])
            self._end(call)
        self.counters[f"{txn.method.lower()}_timeouts"] += 1
