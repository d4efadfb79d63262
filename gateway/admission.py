"""Admission at the door: refuse a command whose reply could not go out within ``smpp.max_reply_delay_ms``.

A command to a service number costs a reply. When more are accepted than the
gateway can route and deliver, the surplus waits in memory and every reply
behind it is late; an ESME's window alone does not stop that, because a
submit_sm is acknowledged (after its reply is committed) long before the reply
leaves. So each such submit_sm is admitted only while

- the replies already waiting are fresh: the oldest of them (an MO not yet routed, or a reply
  row waiting for window room) has waited less than ``smpp.max_reply_delay_ms``, and
- the backlog is less than what drains in twice that time at the measured drain rate (replies
  completed per second over windows of :data:`SAMPLE_S` in which there was a backlog, so an idle
  gateway says nothing about its capacity; the factor two lets the estimate grow to the true
  capacity), which keeps a steep burst from being admitted while the oldest ages;

otherwise it is refused at once with ESME_RMSGQFUL: nothing is queued, and the ESME retries later
or elsewhere. Under any overload a reply waits about the bound, never seconds.

A backlog under :data:`MIN_BACKLOG` (one ESME's 4 binds x window 10) is always
admitted, so a burst into an idle gateway is never refused. The account
throttle (accounts.yaml ``rate``, ESME_RTHROTTLED) applies before this.

Pure state driven by callables and an injected clock: no Twisted, no sockets.
"""

from __future__ import annotations

from collections.abc import Callable

MIN_BACKLOG = 40
SAMPLE_S = 0.1
SMOOTHING = 0.5


class ReplyAdmission:
    def __init__(self, now: Callable[[], float], max_delay_s: Callable[[], float], backlog: Callable[[], int],
                 oldest_wait_s: Callable[[], float], completed: Callable[[], int]):
        """``backlog()``: replies accepted and not yet out; ``oldest_wait_s()``: how long the oldest
        of them has waited to be routed or sent; ``completed()``: a running count of replies out (or
        given up); ``max_delay_s()``: the bound (a live setting)."""
        self.now = now
        self.max_delay_s = max_delay_s
        self.backlog = backlog
        self.oldest_wait_s = oldest_wait_s
        self.completed = completed
        self.rate = 0.0  # replies/s drained while busy
        self._sample_at, self._sample_done, self._busy = now(), completed(), False
        self.refused = 0

    def _measure(self, backlog: int) -> None:
        now = self.now()
        self._busy = self._busy or backlog > 0
        elapsed = now - self._sample_at
        if elapsed < SAMPLE_S:
            return
        done = self.completed()
        if self._busy:
            self.rate = SMOOTHING * self.rate + (1 - SMOOTHING) * (done - self._sample_done) / elapsed
        self._sample_at, self._sample_done, self._busy = now, done, backlog > 0

    def limit(self) -> int:
        """The backlog beyond which nothing more is admitted."""
        return max(MIN_BACKLOG, int(2 * self.rate * self.max_delay_s()))

    def admit(self) -> bool:
        """True: accept this command; False: refuse it now (the caller answers ESME_RMSGQFUL)."""
        backlog = self.backlog()
        self._measure(backlog)
        if backlog < MIN_BACKLOG or (backlog < self.limit() and self.oldest_wait_s() < self.max_delay_s()):
            return True
        self.refused += 1
        return False
