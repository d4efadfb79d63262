"""SIP transactions over UDP (RFC 3261 section 17, with RFC 6026's Accepted state), sans-IO.

A transaction here is a pure record: it never sends and never owns a timer. Its methods say
what happened and set ``wake``, the clock time at which the owner must call
``on_timer(now)``; the owner (``SipCore``) keeps one timer per transaction in a
``Timers`` heap and puts the datagrams on the wire.

Server transaction states, read top to bottom (``on_timer`` results in brackets)::

    INVITE      PROCEEDING --1xx--> PROCEEDING           request retransmit: resend last 1xx
                PROCEEDING --2xx--> ACCEPTED             retransmit: resend the 2xx; [done] after 64*T1 (Timer L)
                PROCEEDING --3xx-6xx--> COMPLETED        retransmit: resend final; [resend] Timer G T1,2T1..T2;
                                                         [done] Timer H 64*T1 without ACK
                COMPLETED  --ACK--> CONFIRMED            ACKs absorbed; [done] Timer I = T4
                PROCEEDING --nothing for answer_timeout--> [expire]  (the TU never answered)
    non-INVITE  TRYING     --final--> COMPLETED          retransmit: resend final; [done] Timer J = 64*T1
                TRYING     --nothing for 64*T1--> [expire]  (the client has given up by then)

The 2xx to an INVITE is made reliable by the dialog, not the transaction (RFC 3261 13.3.1.4):
see ``ivr.sip.dialog.Call``.

Client transaction (non-INVITE only: our INFO and BYE): the request is resent at T1, 2*T1 ...
up to T2 (Timer E; at T2 once a 1xx came), and given up after 64*T1 (Timer F). A final
response ends it; later copies of that response are dropped as strays.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TimerValues", "Timers", "ServerTxn", "ClientTxn", "PROCEEDING", "TRYING", "COMPLETED",
           "CONFIRMED", "ACCEPTED", "RESEND", "DONE", "EXPIRE", "TIMEOUT"]

# states
TRYING, PROCEEDING, COMPLETED, CONFIRMED, ACCEPTED = "trying", "proceeding", "completed", "confirmed", "accepted"
# on_timer results
RESEND, DONE, EXPIRE, TIMEOUT = "resend", "done", "expire", "timeout"


@dataclass(frozen=True, slots=True)
class TimerValues:
    """RFC 3261 timer bases in seconds (17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    answer_timeout: float = 180.0  # how long an INVITE may wait for the application

    @property
    def t64(self) -> float:
        return 64 * self.t1


class Timers:
    """A min-heap of one-shot timers with O(1) cancel (cancelled entries are skipped lazily)."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._seq = 0
        self._dead = 0

    def schedule(self, when: float, callback: Callable[[Any], None], arg: Any) -> list[Any]:
        """Call ``callback(arg)`` from ``fire_due`` once the clock reaches ``when``."""
        self._seq += 1
        entry = [when, self._seq, callback, arg]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: list[Any] | None) -> None:
        if entry is None or entry[2] is None:
            return
        entry[2] = entry[3] = None
        self._dead += 1
        if self._dead > 1024 and self._dead * 2 > len(self._heap):
            # Rebuild so cancelled 2xx/answer timers cannot pile up under load.
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> None:
        """Run every callback due at ``now`` in deadline order."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback, arg = entry[2], entry[3]
            if callback is None:
                self._dead -= 1
                continue
            entry[2] = entry[3] = None  # fired: a later cancel() is a no-op
            callback(arg)


class ServerTxn:
    """One server transaction; ``request`` is kept only until the final response is sent."""

    __slots__ = ("key", "invite", "addr", "call_id", "cseq", "state", "request", "response",
                 "status", "times", "interval", "give_up", "wake", "timer")

    def __init__(self, key: tuple, request: Any, addr: Any, now: float, times: TimerValues) -> None:
        self.key = key
        self.invite = request.method == "INVITE"
        self.addr = addr
        self.call_id = request.call_id
        self.cseq = request.cseq[0]
        self.request = request
        self.response: bytes | None = None
        self.status = 0
        self.times = times
        self.state = PROCEEDING if self.invite else TRYING
        self.interval = times.t1
        self.give_up = now + (times.answer_timeout if self.invite else times.t64)
        self.wake: float | None = self.give_up
        self.timer: list[Any] | None = None

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.status >= 200

    def retransmission(self) -> bytes | None:
        """What to send back for a retransmitted request (None: absorb it)."""
        return None if self.state in (TRYING, CONFIRMED) else self.response

    def provisional(self, data: bytes, status: int) -> None:
        if self.state == PROCEEDING and not self.answered:
            self.response, self.status = data, status

    def final(self, data: bytes, status: int, now: float) -> None:
        """Record the final response and move on; the caller sends ``data`` once."""
        self.response, self.status, self.request = data, status, None
        t = self.times
        if not self.invite:
            self.state, self.wake = COMPLETED, now + t.t64  # Timer J
        elif status < 300:
            self.state, self.wake = ACCEPTED, now + t.t64  # RFC 6026 Timer L
        else:
            self.state, self.interval, self.give_up = COMPLETED, t.t1, now + t.t64
            self.wake = now + t.t1  # Timer G; Timer H is give_up

    def ack(self, now: float) -> bool:
        """An ACK for a non-2xx final; True when it was the first (state changed)."""
        if self.state != COMPLETED or not self.invite:
            return False
        self.state, self.wake = CONFIRMED, now + self.times.t4  # Timer I
        return True

    def on_timer(self, now: float) -> str:
        """The ``wake`` time has come: RESEND ``response``, DONE (forget me) or EXPIRE."""
        if not self.answered:
            return EXPIRE
        if self.state == COMPLETED and self.invite:
            if now >= self.give_up:
                return DONE  # Timer H: the ACK never came
            self.interval = min(2 * self.interval, self.times.t2)
            self.wake = min(now + self.interval, self.give_up)
            return RESEND
        return DONE


class ClientTxn:
    """A non-INVITE client transaction for a request the gateway sends (INFO, BYE)."""

    __slots__ = ("branch", "call_id", "method", "data", "addr", "interval", "give_up", "wake",
                 "times", "timer")

    def __init__(self, branch: str, call_id: str, method: str, data: bytes, addr: Any, now: float,
                 times: TimerValues) -> None:
        self.branch, self.call_id, self.method = branch, call_id, method
        self.data, self.addr, self.times = data, addr, times
        self.interval = times.t1
        self.give_up = now + times.t64
        self.wake = now + times.t1
        self.timer: list[Any] | None = None

    def on_response(self, status: int) -> bool:
        """True when ``status`` is final and the transaction is over."""
        if status >= 200:
            return True
        self.interval = self.times.t2  # Proceeding: from the next Timer E on, resend every T2
        return False

    def on_timer(self, now: float) -> str:
        """RESEND ``data`` (Timer E) or TIMEOUT (Timer F)."""
        if now >= self.give_up:
            return TIMEOUT
        self.interval = min(2 * self.interval, self.times.t2)
        self.wake = min(now + self.interval, self.give_up)
        return RESEND
