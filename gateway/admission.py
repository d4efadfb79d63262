"""Admission at the door: refuse a command whose reply could not go out within ``smpp.max_reply_delay_ms``.

A command to a service number costs a reply. When more are accepted than the
gateway can route and deliver, the surplus would wait in memory and every
reply behind it would be late (an ESME's window alone does not stop that: it
is acknowledged long before its reply leaves). So each such submit_sm is
admitted only while the predicted delay of its reply, ``backlog / drain
rate``, is under the bound; otherwise it is refused at once with
ESME_RMSGQFUL and nothing is queued. The ESME retries later, or elsewhere.

- backlog: replies accepted and not yet completed (MOs waiting to be routed, reply rows waiting
  for window room, rows on the wire waiting for their deliver_sm_resp), read from a callable;
- drain rate: replies completed per second, measured over windows of :data:`SAMPLE_S` while
  there was a backlog (an idle gateway says nothing about its capacity), smoothed, never below
  :data:`MIN_RATE`;
- the refusal goes to whichever account's submit_sm meets the full queue: an account that floods
  meets it most, and the account throttle (accounts.yaml ``rate``) still applies before this.

Pure state driven by an injected clock: no Twisted, no sockets.
"""

from __future__ import annotations

from collections.abc import Callable

SAMPLE_S = 0.2
MIN_RATE = 200.0  # replies/s assumed before anything was measured, and the floor of the estimate
MIN_BACKLOG = 40  # always admitted: one ESME's worth of windows (4 binds x 10)
SMOOTHING = 0.5


class ReplyAdmission:
    def __init__(self, now: Callable[[], float], max_delay_s: Callable[[], float],
                 backlog: Callable[[], int], completed: Callable[[], int]):
        """``backlog()``: replies accepted and not yet out; ``completed()``: a running count of
        replies out (or given up); ``max_delay_s()``: the bound (a live setting)."""
        self.now = now
        self.max_delay_s = max_delay_s
        self.backlog = backlog
        self.completed = completed
        self.rate = MIN_RATE
        self._sample_at = now()
        self._sample_done = completed()
        self._sample_busy = False
        self.refused = 0

    def _measure(self, backlog: int) -> None:
        now = self.now()
        elapsed = now - self._sample_at
        if elapsed < SAMPLE_S:
            self._sample_busy = self._sample_busy or backlog > 0
            return
        done = self.completed()
        if self._sample_busy or backlog > 0:
            measured = (done - self._sample_done) / elapsed
            self.rate = max(MIN_RATE, SMOOTHING * self.rate + (1 - SMOOTHING) * measured)
        self._sample_at, self._sample_done, self._sample_busy = now, done, backlog > 0

    def limit(self) -> int:
        """The backlog at which the predicted delay reaches the bound."""
        return max(MIN_BACKLOG, int(self.rate * self.max_delay_s()))

    def admit(self) -> bool:
        """True: accept this command; False: refuse it now (the caller answers ESME_RMSGQFUL)."""
        backlog = self.backlog()
        self._measure(backlog)
        if backlog < self.limit():
            return True
        self.refused += 1
        return False
