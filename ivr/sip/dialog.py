"""One call's dialog on the gateway (UAS) side, and the message bodies an IVR call carries.

``Call`` holds what the gateway must remember between datagrams (RFC 3261 12.1.1, 12.2):
tags, CSeq counters, the caller's address and Contact, and the 2xx it keeps resending
until the ACK comes (13.3.1.4: T1, 2*T1 ... capped at T2, give up after 64*T1).

States::

    EARLY      INVITE received, no final response yet (``invite`` is its server transaction)
    ANSWERED   200 OK sent, resending it until the ACK
    CONFIRMED  ACK received

``ended`` is set once the application or the caller has ended the call while the dialog
still has to finish something (the gateway may not send BYE before the ACK, RFC 3261 15).

Bodies: ``parse_dtmf`` reads SIP INFO DTMF (``application/dtmf-relay`` "Signal=5" lines,
``application/dtmf`` "5" or "Signal=5"); ``sdp_answer`` answers an SDP offer with one
inactive audio stream, since the IVR sends no media but real phones want an answer.
"""

from __future__ import annotations

from typing import Any

from ivr.sip.message import Request, parse_name_addr, split_commas
from ivr.sip.transaction import RESEND, TIMEOUT, ServerTxn, TimerValues

__all__ = ["Call", "EARLY", "ANSWERED", "CONFIRMED", "DTMF_TYPES", "parse_dtmf", "sdp_answer"]

EARLY, ANSWERED, CONFIRMED = "early", "answered", "confirmed"
DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
_SIGNALS = frozenset("0123456789*#ABCD")
_EVENT_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}  # RFC 4733 numbering


class Call:
    """Per-call state, kept small: a few strings, two counters and the 2xx bytes."""

    __slots__ = ("call_id", "addr", "local_tag", "remote_tag", "local_party", "remote_party",
                 "remote_target", "route_set", "remote_cseq", "local_cseq", "invite_cseq", "state",
                 "invite", "ok", "ok_interval", "ok_give_up", "timer", "ended", "bye_headers")

    def __init__(self, request: Request, invite: ServerTxn, addr: Any, local_tag: str) -> None:
        self.call_id = request.call_id
        self.addr = addr
        self.local_tag = local_tag
        self.remote_tag = request.from_.tag
        self.local_party = request.get("to") or ""  # our URI as the caller wrote it, no tag yet
        self.remote_party = request.get("from") or ""  # carries the caller's tag
        contact = request.get("contact")
        self.remote_target = (_contact_uri(contact) if contact else "") or request.from_.uri
        self.route_set = list(request.get_all("record-route"))
        self.remote_cseq = self.invite_cseq = request.cseq[0]
        self.local_cseq = 0
        self.state = EARLY
        self.invite: ServerTxn | None = invite
        self.ok: bytes | None = None
        self.ok_interval = 0.0
        self.ok_give_up = 0.0
        self.timer: list[Any] | None = None  # the 2xx resend timer
        self.ended = False
        self.bye_headers: list[tuple[str, str]] = []

    def matches(self, request: Request) -> bool:
        """Does an in-dialog request belong to this dialog (tags, RFC 3261 12.2.2)?"""
        return request.from_.tag == self.remote_tag and request.to.tag == self.local_tag

    def start_ok(self, data: bytes, now: float, times: TimerValues) -> None:
        self.state, self.ok = ANSWERED, data
        self.ok_interval, self.ok_give_up = times.t1, now + times.t64

    def on_ok_timer(self, now: float, times: TimerValues) -> str:
        """2xx timer fired: RESEND ``ok`` again, or TIMEOUT (no ACK for 64*T1)."""
        if now >= self.ok_give_up:
            return TIMEOUT
        self.ok_interval = min(2 * self.ok_interval, times.t2)
        return RESEND

    def acked(self) -> None:
        self.state, self.ok = CONFIRMED, None

    def request(self, method: str, via: str, contact: str, headers: list[tuple[str, str]]) -> Request:
        """The next in-dialog request from the gateway (RFC 3261 12.2.1.1)."""
        self.local_cseq += 1
        request = Request(method, self.remote_target, [
            ("Via", via), ("Max-Forwards", "70"),
            ("From", f"{self.local_party};tag={self.local_tag}"), ("To", self.remote_party),
            ("Call-ID", self.call_id), ("CSeq", f"{self.local_cseq} {method}"),
        ])
        for route in self.route_set:  # Record-Route order is the UAS's route order
            request.add("Route", route)
        request.add("Contact", contact)
        for name, value in headers:
            request.add(name, value)
        return request


def _contact_uri(value: str) -> str:
    contacts = split_commas(value)
    return parse_name_addr(contacts[0]).uri if contacts else ""


def parse_dtmf(content_type: str, body: bytes) -> tuple[str, int | None] | None:
    """(digit, duration_ms or None) from an INFO body, or None if it is not DTMF we read."""
    if content_type not in DTMF_TYPES:
        return None
    text = body.decode("ascii", "replace").strip()
    fields = {}
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq:
            fields[name.strip().lower()] = value.strip()
    if content_type == "application/dtmf" and not fields:
        fields["signal"] = text
    signal = fields.get("signal", "")
    signal = _EVENT_CODES.get(signal, signal.upper())
    if signal not in _SIGNALS:
        return None
    duration = fields.get("duration", "")
    return signal, int(duration) if duration.isascii() and duration.isdigit() else None


def sdp_answer(offer: bytes, host: str, session_id: int) -> bytes | None:
    """An SDP answer (RFC 3264) keeping the first audio stream, inactive; others rejected.

    None when the offer has no usable m= line (the 200 then goes without a body).
    """
    lines = offer.decode("ascii", "replace").splitlines()
    media = [line[2:].split() for line in lines if line.startswith("m=")]
    if not media or any(len(m) < 4 for m in media):
        return None
    family = "IP6" if ":" in host else "IP4"
    out = ["v=0", f"o=ivr {session_id} {session_id} IN {family} {host}", "s=ivr",
           f"c=IN {family} {host}", "t=0 0"]
    accepted = False
    for kind, _port, proto, fmt, *_ in media:
        if kind == "audio" and not accepted:
            accepted = True
            out.append(f"m=audio 9 {proto} {fmt}")
            out.extend(line for line in lines if line.startswith(f"a=rtpmap:{fmt} "))
            out.append("a=inactive")
        else:
            out.append(f"m={kind} 0 {proto} {fmt}")
    return ("\r\n".join(out) + "\r\n").encode("ascii", "replace")
