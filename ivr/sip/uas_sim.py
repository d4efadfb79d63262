"""The callee simulator's SIP side: subscribers' phones as a sans-IO UAS (``SipCore`` + decisions).

``CalleeApp`` has the application interface ``ivr.server.SipProtocol`` drives (``receive``,
``tick``, ``next_deadline``), so the IVR's UDP adapter carries it unchanged::

    core = SipCore(now, local_host="127.0.0.1", local_port=5080, info_events=True)
    app = CalleeApp(core, now, facts_for=lookup, offer_for=catalog.offer, params=catalog.params,
                    hour_of=local_hour, seed=1)
    app.receive(datagram, addr) -> [SendDatagram];  app.tick();  app.next_deadline()
    app.summary() -> {"calls": ..., "answered": ..., "accepted": ..., ...}

Per INVITE to ``sip:<msisdn>@...``: ``ivr.callees.pickup`` decides busy (486 at once), no answer
(180, then ringing until the caller's CANCEL) or answer (180, 200 OK after ``ring_s``). On an
answered call, an offer prompt (an INFO, or the 200 to our own INFO, carrying ``X-Offer-Code``
and ``X-IVR-Prompt``) is answered after a think time by ``ivr.callees.offer_reply``: DTMF 1
(accept), 3 (refuse: not interested), 9 (opt out) as INFO application/dtmf-relay, or a BYE; now
and then 2 first (hear it again), deciding on the repeated prompt. A prompt without an offer code
is acknowledged and nothing else; after ``max_prompts`` prompts the callee hangs up.

Every call draws from its own ``random.Random(f"{seed}:{msisdn}:{n}")`` (n: that number's call
count), so a seed replays the same behaviour whatever order calls arrive in. ``time_scale``
multiplies ring and think times (0 for load tests).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from ivr.callees import ANSWER, BUSY, DEFAULT_KNOBS, CalleeKnobs, offer_reply, pickup
from ivr.sip.core import (
    CallAcked,
    CallEnded,
    Dtmf,
    IncomingCall,
    InfoAnswered,
    InfoReceived,
    SendDatagram,
    SipCore,
)
from offers.catalog import CatalogOffer
from offers.segments import SegmentParams

__all__ = ["CalleeApp"]

OFFER_HEADER, PROMPT_HEADER = "x-offer-code", "x-ivr-prompt"
# CallEnded.by (the UAS core's words) -> the summary's words, from the phone's side
_ENDED = {"caller": "ended_by_gateway", "cancel": "cancelled", "gateway": "hung_up_by_callee",
          "rejected": "rejected", "timeout": "timed_out", "lost": "lost"}


class _Call:
    __slots__ = ("call_id", "msisdn", "facts", "rng", "prompts", "answered")

    def __init__(self, call_id: str, msisdn: str, facts: Mapping[str, Any] | None, rng: random.Random) -> None:
        self.call_id, self.msisdn, self.facts, self.rng = call_id, msisdn, facts, rng
        self.prompts = 0
        self.answered = False


class CalleeApp:
    """Subscribers' phones behind one UDP address (see the module doc)."""

    def __init__(self, core: SipCore, now: Callable[[], float], *,
                 facts_for: Callable[[str], Mapping[str, Any] | None],
                 offer_for: Callable[[str], CatalogOffer | None], params: SegmentParams | None,
                 hour_of: Callable[[float], int], seed: int = 0, time_scale: float = 1.0,
                 knobs: CalleeKnobs = DEFAULT_KNOBS, max_prompts: int = 3) -> None:
        self.core, self._now = core, now
        self._facts_for, self._offer_for, self._params = facts_for, offer_for, params
        self._hour_of, self._seed, self._scale = hour_of, seed, time_scale
        self._knobs, self._max_prompts = knobs, max_prompts
        self._calls: dict[str, _Call] = {}
        self._per_number: Counter[str] = Counter()
        self._timers: list[tuple[float, int, Callable[[], None], _Call]] = []
        self._seq = itertools.count()
        self._out: list[SendDatagram] = []
        self.counts: Counter[str] = Counter()
        self._handlers = {IncomingCall: self._on_incoming, CallAcked: self._on_acked, CallEnded: self._on_ended,
                          InfoReceived: self._on_info, InfoAnswered: self._on_info_answered, Dtmf: self._on_dtmf}

    # ----------------------------------------------------------------- driving
    def receive(self, datagram: bytes, addr: Any) -> list[SendDatagram]:
        self._out = []
        self._run(self.core.receive(datagram, addr))
        return self._out

    def tick(self) -> list[SendDatagram]:
        self._out = []
        self._run(self.core.tick())
        now = self._now()
        while self._timers and self._timers[0][0] <= now:
            _, _, action, call = heapq.heappop(self._timers)
            if self._calls.get(call.call_id) is call:
                action()
        return self._out

    def next_deadline(self) -> float | None:
        times = [t for t in (self.core.next_deadline(), self._timers[0][0] if self._timers else None)
                 if t is not None]
        return min(times) if times else None

    def summary(self) -> dict[str, Any]:
        return {"calls": self.counts["calls"], **{k: v for k, v in sorted(self.counts.items()) if k != "calls"},
                "live": len(self._calls)}

    # ----------------------------------------------------------------- plumbing
    def _run(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, SendDatagram):
                self._out.append(action)
            else:
                self._handlers[type(action)](action)

    def _later(self, delay: float, call: _Call, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self._now() + delay * self._scale, next(self._seq), action, call))

    def _hour(self) -> int:
        return self._hour_of(self._now())

    # ----------------------------------------------------------------- events
    def _on_incoming(self, event: IncomingCall) -> None:
        msisdn = event.uri_user
        self._per_number[msisdn] += 1
        rng = random.Random(f"{self._seed}:{msisdn}:{self._per_number[msisdn]}")
        call = _Call(event.call_id, msisdn, self._facts_for(msisdn), rng)
        self._calls[call.call_id] = call
        self.counts["calls"] += 1
        decision = pickup(call.facts, self._hour(), rng, self._knobs)
        self.counts[decision.outcome] += 1
        if decision.outcome == BUSY:
            self._run(self.core.reject(call.call_id, 486))
            return
        self._run(self.core.ring(call.call_id))
        if decision.outcome == ANSWER:
            self._later(decision.ring_s, call, lambda: self._answer(call))

    def _answer(self, call: _Call) -> None:
        call.answered = True
        self._run(self.core.answer(call.call_id))

    def _on_acked(self, event: CallAcked) -> None:
        self.counts["acked"] += 1

    def _on_ended(self, event: CallEnded) -> None:
        call = self._calls.pop(event.call_id, None)
        if call is not None:
            self.counts[_ENDED.get(event.by, event.by)] += 1

    def _on_info(self, event: InfoReceived) -> None:
        self._run(self.core.reply(event, 200))
        self._prompted(event.call_id, dict((k.lower(), v) for k, v in event.headers))

    def _on_info_answered(self, event: InfoAnswered) -> None:
        if event.status < 300:
            self._prompted(event.call_id, dict((k.lower(), v) for k, v in event.headers))

    def _on_dtmf(self, event: Dtmf) -> None:
        self._run(self.core.reply(event, 200))

    def _prompted(self, call_id: str, headers: Mapping[str, str]) -> None:
        call = self._calls.get(call_id)
        if call is None or PROMPT_HEADER not in headers:
            return
        self.counts["prompts"] += 1
        call.prompts += 1
        if call.prompts > self._max_prompts:
            self._later(0.0, call, lambda: self._hang_up(call))
            return
        code = headers.get(OFFER_HEADER)
        if not code:
            return
        reply = offer_reply(call.facts, self._offer_for(code), self._hour(), call.rng, self._params, self._knobs,
                            heard=call.prompts)
        self.counts[reply.action] += 1
        think = call.rng.uniform(*self._knobs.think_s)
        if reply.digit is None:
            self._later(think, call, lambda: self._hang_up(call))
        else:
            self._later(think, call, lambda: self._press(call, reply.digit))

    def _press(self, call: _Call, digit: str) -> None:
        body = f"Signal={digit}\r\nDuration=160\r\n".encode()
        self._run(self.core.send_info(call.call_id, None, body, "application/dtmf-relay"))

    def _hang_up(self, call: _Call) -> None:
        self._run(self.core.hangup(call.call_id))
