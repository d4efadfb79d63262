"""The outbound dialer of a call project: a sans-IO state machine on an injected clock.

::

    d = Dialer(config, targets, now=clock, rng=random.Random(seed), allowed=when_allowed)
    d.advance()             -> commands due at now(): Dial, Cancel (ring timeout), Hangup, Prompt, ...
    d.on_event(Answered(call_id)) -> commands
    d.next_deadline()       when advance() must run next (absolute clock time), or None
    d.done                  every target finished (answered, or out of attempts)

Events in are the SIP UAC's (:mod:`ivr.sip.uac`), with the dialer's call id: ``Answered``,
``Failed`` (486/600 busy, 480/408/487 no answer, others failed), ``TimedOut`` (ring: no answer;
before the answer otherwise failed; after it, the call is over), ``DtmfReceived``, ``HungUp``
(the callee's BYE; our own hang-up is already recorded); ``Trying`` and ``Ringing`` change nothing.

Commands out: :class:`Dial`, :class:`Cancel`, :class:`Hangup`, :class:`Prompt` (outbound IVR),
:class:`Order` (press 1, or an agent's accepted outcome), :class:`OptOut` (press 9 / asked an
agent), :class:`Refused` (press 3, "not interested", or the agent's refused outcome), and
:class:`Record` (one per attempt, the call record).

Outbound IVR keys (:data:`IVR_KEYS`): 1 orders, 2 plays the offer again (at most ``max_hearings``
times in all; a 2 after that ends the call without an order), 3 refuses the product, 9 opts out of
calls. Any other key is ignored; no key within ``ivr_timeout_s``, or the callee's hang-up, ends the
call as ``hungup`` (no refusal is recorded).

Attempts: a number that is busy, not answered within the ring timeout, or failed is dialled
again after the project's back-off, up to its attempt limit, only when ``allowed(target, t)``
says so (the calling window and the callee's quiet hours: it returns the first allowed time).
With ``week`` (a :class:`notifier.projects_plan.WeekCalls`, shared by every project's dialer) a
number is dialled only while its calls that reached the phone in the rolling week (answered, busy,
unanswered; the plan's history and this dialer's) stay under the voice policy's calls per week;
a redial over it waits until the oldest such call leaves the week.

Agents are the IVR's :class:`~ivr.queue.AgentQueue` (skills, shifts, handling times). An answered
call is offered to it with a patience of ``abandon_after_s``: no free agent by then and the
call is abandoned (the callee hears silence and the dialer hangs up). Pacing:

- progressive: a call is placed only for an idle agent not yet covered by a ringing call;
- predictive: calls are placed for the agents idle now and those expected to free up while
  the new calls ring (busy x ring time / AHT): as many ringing calls as bring that many answers
  at the observed answer rate with a safety margin of ``z`` standard deviations (binomial), ``z``
  following the abandoned-call rate: above 60% of the ceiling it grows, below 30% it shrinks.
- an IVR project keeps ``lines`` calls up at once.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ivr.queue import Agent, AgentPickedUp, AgentQueue, CallAbandoned, CallHandled
from ivr.sip.uac import Answered, DtmfReceived, Failed, HungUp, TimedOut, UacEvent

__all__ = ["IVR_KEYS", "Cancel", "Dial", "DialConfig", "Dialer", "Hangup", "OptOut", "Order", "Prompt", "Record",
           "Refused"]


def _calls_for(available: float, rate: float, z: float) -> float:
    """Calls to have ringing so that the answers they bring (binomial, ``rate`` each) exceed the
    ``available`` agents only ``z`` standard deviations out: N*p + z*sqrt(N*p*(1-p)) = available."""
    b = z * math.sqrt(rate * (1.0 - rate))
    x = (-b + math.sqrt(b * b + 4.0 * rate * available)) / (2.0 * rate)
    return max(x, 0.0) ** 2


# --- commands out --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Dial:
    call_id: str
    msisdn: str
    attempt: int
    offer: str


@dataclass(frozen=True, slots=True)
class Cancel:
    call_id: str


@dataclass(frozen=True, slots=True)
class Hangup:
    call_id: str


@dataclass(frozen=True, slots=True)
class Prompt:
    call_id: str
    text: str
    state: str  # the X-IVR-State it is sent with: menu


@dataclass(frozen=True, slots=True)
class Order:
    call_id: str
    msisdn: str
    offer: str


@dataclass(frozen=True, slots=True)
class OptOut:
    call_id: str
    msisdn: str


@dataclass(frozen=True, slots=True)
class Refused:
    call_id: str
    msisdn: str
    offer: str


@dataclass(frozen=True, slots=True)
class Record:
    """One attempt, as the project_calls row and the QA call record."""

    call_id: str
    msisdn: str
    attempt: int
    segment: str
    offer: str
    started_at: float
    answered_at: float | None
    ended_at: float
    outcome: str  # busy, no_answer, failed, abandoned, accepted, refused, opted_out, hungup
    agent: str | None = None
    steps: tuple[str, ...] = ()
    objections: tuple[str, ...] = ()
    unanswered: tuple[str, ...] = ()
    offer_named: bool = False
    trial: bool = False


Command = Dial | Cancel | Hangup | Prompt | Order | OptOut | Refused | Record
RETRY = {"busy", "no_answer", "failed"}
# the outbound IVR's keys -> the outcome that ends the call; "2" (hear it again) is handled before
IVR_KEYS = {"1": "accepted", "3": "refused", "9": "opted_out", "2": "hungup"}


@dataclass(frozen=True)
class DialConfig:
    project_id: str
    channel: str  # agent | ivr
    pacing: str  # progressive | predictive
    attempts: int
    backoff: Callable[[int], float]
    ring_timeout_s: float = 25.0
    abandon_after_s: float = 2.0
    abandon_ceiling: float = 0.03
    lines: int = 30
    agents: tuple[Agent, ...] = ()
    aht_s: float = 180.0
    prompt: str = ""
    ivr_timeout_s: float = 20.0
    max_hearings: int = 3  # the offer is played at most this many times in one call
    expected_answer_rate: float = 0.45
    converse: Callable[[Any, str, random.Random], Any] | None = None  # (target, agent id, rng) -> Conversation
    bucket_s: float = 900.0  # width of the figures-over-time buckets


@dataclass(slots=True)
class _Number:
    target: Any  # notifier.projects_plan.Target (msisdn, offer, segment, tz, trial, fit, not_before, ...)
    attempts: int = 0  # made so far, by this project (earlier runs included)


@dataclass(slots=True)
class _Call:
    call_id: str
    number: _Number
    started: float
    answered: float | None = None
    timer: list | None = None
    agent: str | None = None
    conversation: Any = None
    prompts: int = 0
    ended: bool = False
    hung_up: bool = False  # the callee hung up while talking to an agent


@dataclass
class Bucket:
    dialled: int = 0
    answered: int = 0
    abandoned: int = 0
    accepted: int = 0


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    buckets: dict[int, Bucket] = field(default_factory=dict)
    occupancy: dict[int, list[float]] = field(default_factory=dict)  # bucket -> [busy s, agent s]


_TIMER_RING, _TIMER_RETRY, _TIMER_IVR = 0, 1, 2


class Dialer:
    def __init__(self, config: DialConfig, targets: Iterable[Any], *, now: Callable[[], float], rng: random.Random,
                 allowed: Callable[[Any, float], float | None], week: Any = None) -> None:
        self.config, self._now, self._rng, self._allowed, self._week = config, now, rng, allowed, week
        self._heap: list[list] = []
        self._seq = 0
        self._ready: deque[_Number] = deque()
        self._calls: dict[str, _Call] = {}
        self._ringing = 0
        self._waiting = 0
        self._talking = 0
        self._open_numbers = 0
        self._out: list[Command] = []
        self.stats = Stats()
        self._z = 1.0  # safety margin of the predictive dialer, in standard deviations of the answers
        self._abandon_ewma = 0.0  # abandoned share of answered calls, about the last 50
        self._answers = [0, 0]  # answered, finished attempts (answer-rate estimate)
        self.queue = AgentQueue(list(config.agents), config.aht_s, now=now, rng=rng) \
            if config.channel == "agent" else None
        self._bucket_start = now()
        # share of busy agents expected to free up while a new call rings (exponential handling times)
        self._free_soon = 1.0 - math.exp(-config.ring_timeout_s * 0.4 / config.aht_s)
        self._busy_mark = (now(), 0.0, 0.0)
        for target in targets:
            self._open_numbers += 1
            if week is not None:
                week.seed(target.msisdn, getattr(target, "week_calls", ()))
            self._schedule_number(_Number(target, getattr(target, "attempts_made", 0)), target.not_before)

    # ----------------------------------------------------------------- public
    @property
    def done(self) -> bool:
        return self._open_numbers == 0

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][3] is None:
            heapq.heappop(heap)
        own = heap[0][0] if heap else None
        queue = self.queue.next_deadline() if self.queue is not None else None
        # numbers become ready only from the timer heap, and every advance / event paces: nothing
        # waits for a line between calls
        return min((t for t in (own, queue) if t is not None), default=None)

    def advance(self) -> list[Command]:
        out = self._out = []
        self._run_timers()
        self._run_queue()
        self._pace()
        return out

    def on_event(self, event: UacEvent) -> list[Command]:
        out = self._out = []
        self._run_timers()
        self._run_queue()
        call = self._calls.get(event.call_id)
        if call is not None and not call.ended:
            self._handle(call, event)
        self._pace()
        return out

    def summary(self) -> dict[str, Any]:
        """Counts, the abandoned-call rate, agent occupancy, and both per time bucket."""
        c = self.stats.counts
        answered = c["answered"]
        occupancy = None
        if self.queue is not None:
            seconds = self.queue.agent_seconds()
            occupancy = self.queue.busy_seconds() / seconds if seconds else 0.0
        self._mark_occupancy()
        return {
            "dialled": c["dialled"], "answered": answered, "abandoned": c["abandoned"],
            "abandon_rate": c["abandoned"] / answered if answered else 0.0,
            "occupancy": occupancy, "outcomes": {k[8:]: v for k, v in sorted(c.items()) if k.startswith("outcome:")},
            "over_time": [{"t": self._bucket_start + k * self.config.bucket_s, "dialled": b.dialled,
                           "answered": b.answered, "abandoned": b.abandoned, "accepted": b.accepted,
                           "abandon_rate": round(b.abandoned / b.answered, 4) if b.answered else 0.0,
                           "occupancy": _share(self.stats.occupancy.get(k)) if self.queue is not None else None}
                          for k, b in sorted(self.stats.buckets.items())],
        }

    # ----------------------------------------------------------------- timers
    def _push(self, when: float, kind: int, obj: Any) -> list:
        self._seq += 1
        entry = [when, self._seq, kind, obj]
        heapq.heappush(self._heap, entry)
        return entry

    def _schedule_number(self, number: _Number, at: float | None) -> None:
        when = None if at is None else self._allowed(number.target, max(at, self._now()))
        if when is None:
            self._open_numbers -= 1  # no allowed time left (the window is over): it stays for another day
            return
        self._push(when, _TIMER_RETRY, number)

    def _run_timers(self) -> None:
        now, heap = self._now(), self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, obj = heapq.heappop(heap)
            if obj is None:
                continue
            if kind == _TIMER_RETRY:
                self._ready.append(obj)
            elif kind == _TIMER_RING:
                self._cancel_ringing(obj)
            else:
                self._ivr_timeout(obj)

    def _run_queue(self) -> None:
        due = self.queue.next_deadline() if self.queue is not None else None
        if due is None or due > self._now():
            return
        for event in self.queue.advance():
            self._queue_event(event)

    # ----------------------------------------------------------------- pacing
    def _can_dial(self) -> int:
        cfg = self.config
        if cfg.channel == "ivr":
            return cfg.lines - len(self._calls)
        idle = self.queue.agents_on_shift - self._talking - self._waiting
        if cfg.pacing == "progressive":
            return idle - self._ringing
        # answered over finished attempts, from the project's expected rate until there is evidence;
        # busy signals finish first, so early evidence is never trusted below half the expected rate
        prior = 100
        rate = (self._answers[0] + prior * cfg.expected_answer_rate) / (self._answers[1] + prior)
        rate = max(rate, cfg.expected_answer_rate * 0.5)
        available = max(idle + self._talking * self._free_soon, 0.0)
        return int(_calls_for(available, rate, self._z)) - self._ringing

    def _pace(self) -> None:
        n = self._can_dial()
        while n > 0 and self._ready:
            number = self._ready.popleft()
            if self._may_dial_now(number):
                self._dial(number)
                n -= 1

    def _may_dial_now(self, number: _Number) -> bool:
        """Whether a ready number may be dialled now, else it is scheduled again (or dropped): the
        window may have closed while it waited for a line, and its week may be used up."""
        now = self._now()
        at = self._allowed(number.target, now)
        if at is not None and self._week is not None:
            free = self._week.free_at(number.target.msisdn, now)
            at = None if free is None else max(at, free)
        if at == now:
            return True
        self._schedule_number(number, at)
        return False

    def _dial(self, number: _Number) -> None:
        number.attempts += 1
        t = self._now()
        call_id = f"{self.config.project_id}-{number.target.msisdn}-{number.attempts}-{self._seq}"
        call = _Call(call_id, number, t)
        call.timer = self._push(t + self.config.ring_timeout_s, _TIMER_RING, call)
        self._calls[call_id] = call
        self._ringing += 1
        if self._week is not None:
            self._week.dialled(number.target.msisdn, t)
        self.stats.counts["dialled"] += 1
        self._bucket(t).dialled += 1
        self._out.append(Dial(call_id, number.target.msisdn, number.attempts, number.target.offer))

    def _adapt(self, abandoned: bool) -> None:
        self._abandon_ewma += 0.02 * (abandoned - self._abandon_ewma)
        if self.config.pacing != "predictive":
            return
        ceiling = self.config.abandon_ceiling
        if self._abandon_ewma > ceiling * 0.6:
            self._z = min(4.0, self._z + 0.05)
        elif self._abandon_ewma < ceiling * 0.3:
            self._z = max(-1.0, self._z - 0.005)

    # ----------------------------------------------------------------- call events
    def _handle(self, call: _Call, event: UacEvent) -> None:
        if isinstance(event, Answered) and call.answered is None:
            self._answered(call)
        elif isinstance(event, Failed) and call.answered is None:
            status = event.status
            self._finish(call, "busy" if status in (486, 600) else "no_answer" if status in (408, 480, 487)
                         else "failed")
        elif isinstance(event, TimedOut) and call.answered is None:
            self._finish(call, "no_answer" if event.phase == "ring" else "failed")
        elif isinstance(event, DtmfReceived) and call.answered is not None and self.config.channel == "ivr":
            self._key(call, event.digit)
        elif isinstance(event, (HungUp, TimedOut)):
            self._hung_up(call)

    def _answered(self, call: _Call) -> None:
        now = self._now()
        call.answered = now
        self._ringing -= 1
        self._answers[0] += 1
        self._answers[1] += 1
        self._cancel_timer(call)
        self.stats.counts["answered"] += 1
        self._bucket(now).answered += 1
        if self.queue is None:
            self._prompt(call)
            return
        self._waiting += 1
        for event in self.queue.offer(call.call_id, patience_s=self.config.abandon_after_s):
            self._queue_event(event)

    def _queue_event(self, event: Any) -> None:
        call = self._calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, AgentPickedUp):
            self._waiting -= 1
            self._talking += 1
            call.agent = event.agent_id
            converse = self.config.converse
            call.conversation = converse(call.number.target, event.agent_id, self._rng) if converse else None
            self._adapt(False)
        elif isinstance(event, CallAbandoned):
            self._waiting -= 1
            self.stats.counts["abandoned"] += 1
            self._bucket(self._now()).abandoned += 1
            self._adapt(True)
            self._out.append(Hangup(call.call_id))
            self._finish(call, "abandoned")
        elif isinstance(event, CallHandled):
            self._talking -= 1
            if call.hung_up:
                self._finish(call, "hungup")
                return
            self._out.append(Hangup(call.call_id))
            conv = call.conversation
            self._finish(call, conv.outcome if conv is not None else "refused")

    def _hung_up(self, call: _Call) -> None:
        if call.answered is None:
            self._finish(call, "no_answer")
            return
        if self.queue is not None:
            state = self.queue.state(call.call_id)
            if state == "waiting":
                self._waiting -= 1
                self.queue.abandon(call.call_id)
                self.stats.counts["abandoned"] += 1
                self._bucket(self._now()).abandoned += 1
                self._adapt(True)
                self._finish(call, "abandoned")
                return
            if state == "talking":
                call.hung_up = True
                for event in self.queue.release(call.call_id):  # CallHandled frees the agent and ends the call
                    self._queue_event(event)
                return
        self._finish(call, "hungup")

    def _cancel_ringing(self, call: _Call) -> None:
        if call.ended or call.answered is not None:
            return
        self._out.append(Cancel(call.call_id))
        self._finish(call, "no_answer")

    # ----------------------------------------------------------------- outbound IVR
    def _prompt(self, call: _Call) -> None:
        call.prompts += 1
        self._out.append(Prompt(call.call_id, self.config.prompt, "menu"))
        self._cancel_timer(call)
        call.timer = self._push(self._now() + self.config.ivr_timeout_s, _TIMER_IVR, call)

    def _key(self, call: _Call, digit: str) -> None:
        if digit == "2" and call.prompts < self.config.max_hearings:
            self._prompt(call)
            return
        outcome = IVR_KEYS.get(digit)
        if outcome is None:
            return
        self._out.append(Hangup(call.call_id))
        self._finish(call, outcome)

    def _ivr_timeout(self, call: _Call) -> None:
        if call.ended:
            return
        self._out.append(Hangup(call.call_id))
        self._finish(call, "hungup")

    # ----------------------------------------------------------------- the end of an attempt
    def _cancel_timer(self, call: _Call) -> None:
        if call.timer is not None:
            call.timer[3] = None
            call.timer = None

    def _finish(self, call: _Call, outcome: str) -> None:
        now = self._now()
        call.ended = True
        self._cancel_timer(call)
        self._calls.pop(call.call_id, None)
        if call.answered is None:
            self._ringing -= 1
            self._answers[1] += 1
        number, target = call.number, call.number.target
        if self._week is not None:
            self._week.ended(target.msisdn, call.started, outcome)
        self.stats.counts[f"outcome:{outcome}"] += 1
        conv = call.conversation
        self._out.append(Record(
            call.call_id, target.msisdn, number.attempts, target.segment, target.offer, call.started, call.answered,
            now, outcome, call.agent, conv.steps if conv else (), conv.objections if conv else (),
            conv.unanswered if conv else (), conv.offer_named if conv else False, target.trial))
        if outcome == "accepted":
            self._bucket(now).accepted += 1
            self._out.append(Order(call.call_id, target.msisdn, target.offer))
        elif outcome == "opted_out":
            self._out.append(OptOut(call.call_id, target.msisdn))
        elif outcome == "refused":
            self._out.append(Refused(call.call_id, target.msisdn, target.offer))
        if outcome in RETRY and number.attempts < self.config.attempts:
            self._schedule_number(number, now + self.config.backoff(number.attempts))
        else:
            self._open_numbers -= 1

    # ----------------------------------------------------------------- figures over time
    def _bucket(self, t: float) -> Bucket:
        key = int((t - self._bucket_start) // self.config.bucket_s)
        bucket = self.stats.buckets.get(key)
        if bucket is None:
            self._mark_occupancy()
            bucket = self.stats.buckets[key] = Bucket()
        return bucket

    def _mark_occupancy(self) -> None:
        """Add the busy and available agent-seconds since the last mark to the bucket the mark fell in."""
        if self.queue is None:
            return
        t0, busy0, avail0 = self._busy_mark
        busy, avail = self.queue.busy_seconds(), self.queue.agent_seconds()
        if avail > avail0:
            key = int((t0 - self._bucket_start) // self.config.bucket_s)
            sums = self.stats.occupancy.setdefault(key, [0.0, 0.0])
            sums[0] += busy - busy0
            sums[1] += avail - avail0
        self._busy_mark = (self._now(), busy, avail)


def _share(sums: list[float] | None) -> float:
    return round(sums[0] / sums[1], 4) if sums and sums[1] else 0.0
