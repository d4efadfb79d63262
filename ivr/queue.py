"""The agent queue: one discrete-event model used live by the IVR and in batch by `simulate`.

Live (the IVR)::

    q = AgentQueue([Agent("a1", {"vip"}), Agent("a2")], aht_s=180, now=reactor.seconds,
                   rng=random.Random(seed))
    q.offer(call_id, priority=2, skill="vip")  -> [AgentPickedUp(...)] if an agent is free
    q.abandon(call_id)        the caller hung up while waiting (counts as abandoned)
    q.release(call_id)        the caller hung up while talking: the agent takes the next call
    q.advance()               run what is due at now(): AgentPickedUp, CallHandled, ...
    q.next_deadline()         when advance() must run next (absolute clock time) or None
    q.waiting, q.expected_wait_s(priority), q.state(call_id), q.summary()

Every call returns the events that happened up to now() in time order:

    AgentPickedUp(call_id, agent_id, wait_s, handle_s)  an agent answers; talk lasts handle_s
    CallHandled(call_id, agent_id)                      handle_s is over (gateway sends BYE)
    CallAbandoned(call_id, wait_s)                      the caller's patience (offer's
                                                        patience_s) ran out while waiting

Handling times are exponential with mean ``aht_s``, drawn from the injected ``rng`` when an
agent picks up. Waiting calls are served by priority (higher first: VIP / high value grade),
then first come first served. A call may need a skill; an agent serves calls needing no
skill or one of its skills. Agents work shifts ``[on_s, off_s)`` on the queue's clock; an
agent whose shift ends mid-call finishes it first.

Batch: ``simulate(calls_per_hour, aht_s, agents, hours, patience_s=None, seed=0,
answer_within_s=20)`` offers Poisson arrivals to the same class on a simulated clock and
returns the JSON of ``run_gateway.py simulate queue``::

    {"p_wait", "asa_s", "service_level", "abandon_rate", "occupancy", "calls"}

p_wait: share of offered calls that waited at all; asa_s: mean wait of answered calls;
service_level: calls answered within answer_within_s over all offered calls; abandon_rate:
abandoned over offered; occupancy: agent talk time over agent time on shift during the
simulated hours; calls: calls offered. Calls still queued when the hours end are played out
(answered or abandoned) but no new ones arrive. The same seed gives the same output.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

__all__ = ["Agent", "AgentQueue", "AgentPickedUp", "CallHandled", "CallAbandoned", "QueueFull",
           "QueueEvent", "simulate"]

_FINISH, _PATIENCE, _SHIFT_ON, _SHIFT_OFF = 0, 1, 2, 3
_WAITING, _TALKING = "waiting", "talking"
_OFF, _IDLE, _BUSY = 0, 1, 2
_ANY = ""  # skill key of calls any agent may take


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str
    skills: frozenset[str] = frozenset()
    on_s: float = -math.inf
    off_s: float = math.inf

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", frozenset(self.skills))


@dataclass(frozen=True, slots=True)
class AgentPickedUp:
    call_id: Hashable
    agent_id: str
    wait_s: float
    handle_s: float


@dataclass(frozen=True, slots=True)
class CallHandled:
    call_id: Hashable
    agent_id: str


@dataclass(frozen=True, slots=True)
class CallAbandoned:
    call_id: Hashable
    wait_s: float


QueueEvent = AgentPickedUp | CallHandled | CallAbandoned


class QueueFull(Exception):
    """``max_waiting`` calls are already waiting; the IVR should divert this caller."""


class _Call:
    __slots__ = ("call_id", "priority", "skill", "arrived", "state", "agent", "started", "timer")

    def __init__(self, call_id: Hashable, priority: int, skill: str, arrived: float) -> None:
        self.call_id, self.priority, self.skill, self.arrived = call_id, priority, skill, arrived
        self.state = _WAITING
        self.agent: _AgentState | None = None
        self.started = 0.0
        self.timer: list | None = None


class _AgentState:
    __slots__ = ("spec", "state", "call", "idle_token", "leaving")

    def __init__(self, spec: Agent) -> None:
        self.spec, self.state, self.call, self.idle_token, self.leaving = spec, _OFF, None, 0, False


class AgentQueue:
    """Agents, waiting calls and an event heap on an injected clock. See the module doc."""

    def __init__(self, agents: Iterable[Agent] | int, aht_s: float, *, now: Callable[[], float],
                 rng: random.Random, answer_within_s: float = 20.0, max_waiting: int | None = None) -> None:
        if aht_s <= 0:
            raise ValueError("aht_s must be positive")
        specs = [Agent(str(n + 1)) for n in range(agents)] if isinstance(agents, int) else list(agents)
        self._now, self._rng, self._rate = now, rng, 1.0 / aht_s
        self.aht_s, self.answer_within_s, self.max_waiting = aht_s, answer_within_s, max_waiting
        self._t = self._start = now()
        self._heap: list[list] = []
        self._seq = 0
        self._calls: dict[Hashable, _Call] = {}
        self._waiting: dict[str, list] = {}  # skill -> heap of (-priority, seq, call)
        self._by_priority: Counter[int] = Counter()
        self._idle: dict[str, list] = {}  # skill -> heap of (token, agent): longest idle first
        self._agents = [_AgentState(spec) for spec in specs]
        self._on_shift = 0
        self.stats: Counter[str] = Counter()
        self._busy_s = 0.0
        self._wait_answered_s = 0.0
        self._out: list[QueueEvent] = []
        for agent in self._agents:
            if agent.spec.on_s <= self._t < agent.spec.off_s:
                self._shift_on(agent)
            elif agent.spec.on_s > self._t:
                self._push(agent.spec.on_s, _SHIFT_ON, agent)
            if agent.spec.off_s < math.inf and agent.spec.off_s > self._t:
                self._push(agent.spec.off_s, _SHIFT_OFF, agent)

    # ----------------------------------------------------------------- public
    @property
    def waiting(self) -> int:
        return sum(self._by_priority.values())

    @property
    def agents_on_shift(self) -> int:
        return self._on_shift

    def state(self, call_id: Hashable) -> str | None:
        """"waiting", "talking" or None (unknown or finished)."""
        call = self._calls.get(call_id)
        return call.state if call is not None else None

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][3] is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def advance(self) -> list[QueueEvent]:
        out = self._out = []
        self._run(self._now())
        return out

    def offer(self, call_id: Hashable, priority: int = 0, skill: str | None = None,
              patience_s: float | None = None) -> list[QueueEvent]:
        """Queue a call; ``patience_s`` makes it abandon by itself after that long waiting."""
        out = self._out = []
        self._run(self._now())
        if call_id in self._calls:
            raise ValueError(f"call {call_id!r} is already queued")
        if self.max_waiting is not None and self.waiting >= self.max_waiting:
            raise QueueFull(f"{self.waiting} calls waiting")
        call = _Call(call_id, priority, skill or _ANY, self._t)
        self._calls[call_id] = call
        self.stats["offered"] += 1
        agent = self._pop_idle(call.skill)
        if agent is not None:
            self._serve(call, agent)
            return out
        self._by_priority[priority] += 1
        self._seq += 1
        heapq.heappush(self._waiting.setdefault(call.skill, []), (-priority, self._seq, call))
        if patience_s is not None:
            call.timer = self._push(self._t + patience_s, _PATIENCE, call)
        return out

    def abandon(self, call_id: Hashable) -> list[QueueEvent]:
        """The caller left while waiting; a call not waiting is left alone."""
        out = self._out = []
        self._run(self._now())
        call = self._calls.get(call_id)
        if call is not None and call.state == _WAITING:
            self._give_up(call)
        return out

    def release(self, call_id: Hashable) -> list[QueueEvent]:
        """The caller hung up while talking: the agent is free at once."""
        out = self._out = []
        self._run(self._now())
        call = self._calls.get(call_id)
        if call is not None and call.state == _TALKING:
            self._cancel(call.timer)
            self._finish(call)
        return out

    def expected_wait_s(self, priority: int = 0, skill: str | None = None) -> float:
        """Rough wait for a new call: 0 with a free agent, else (calls ahead + 1) * AHT / agents."""
        if self._has_idle(skill or _ANY):
            return 0.0
        if self._on_shift == 0:
            return math.inf
        ahead = sum(n for p, n in self._by_priority.items() if p >= priority)
        return (ahead + 1) * self.aht_s / self._on_shift

    def busy_seconds(self) -> float:
        """Agent talk time so far, including the calls in progress."""
        ongoing = sum(self._t - a.call.started for a in self._agents if a.call is not None)
        return self._busy_s + ongoing

    def agent_seconds(self) -> float:
        """Agent time on shift between the queue's start and now."""
        start, now = self._start, self._t
        return sum(max(0.0, min(a.spec.off_s, now) - max(a.spec.on_s, start)) for a in self._agents)

    def summary(self) -> dict[str, float]:
        """The ``simulate queue`` figures for everything offered so far."""
        s = self.stats
        offered, answered = s["offered"], s["answered"]
        available = self.agent_seconds()
        return {
            "p_wait": s["waited"] / offered if offered else 0.0,
            "asa_s": self._wait_answered_s / answered if answered else 0.0,
            "service_level": s["answered_within"] / offered if offered else 0.0,
            "abandon_rate": s["abandoned"] / offered if offered else 0.0,
            "occupancy": self.busy_seconds() / available if available else 0.0,
            "calls": offered,
        }

    # ----------------------------------------------------------------- event loop
    def _push(self, when: float, kind: int, obj: object) -> list:
        self._seq += 1
        entry = [when, self._seq, kind, obj]
        heapq.heappush(self._heap, entry)
        return entry

    @staticmethod
    def _cancel(entry: list | None) -> None:
        if entry is not None:
            entry[3] = None

    def _run(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, kind, obj = heapq.heappop(heap)
            if obj is None:
                continue
            self._t = when
            if kind == _FINISH:
                self._finish(obj)
            elif kind == _PATIENCE:
                self._give_up(obj, timed_out=True)
            elif kind == _SHIFT_ON:
                self._shift_on(obj)
            else:
                self._shift_off(obj)
        self._t = max(self._t, until)

    # ----------------------------------------------------------------- calls
    def _serve(self, call: _Call, agent: _AgentState) -> None:
        wait = self._t - call.arrived
        stats = self.stats
        stats["answered"] += 1
        self._wait_answered_s += wait
        if wait > 0:
            stats["waited"] += 1
        if wait <= self.answer_within_s:
            stats["answered_within"] += 1
        handle = self._rng.expovariate(self._rate)
        call.state, call.agent, call.started = _TALKING, agent, self._t
        agent.state, agent.call = _BUSY, call
        call.timer = self._push(self._t + handle, _FINISH, call)
        self._out.append(AgentPickedUp(call.call_id, agent.spec.agent_id, wait, handle))

    def _finish(self, call: _Call) -> None:
        agent = call.agent
        self._busy_s += self._t - call.started
        del self._calls[call.call_id]
        call.state, agent.call = None, None
        self._out.append(CallHandled(call.call_id, agent.spec.agent_id))
        if agent.leaving:
            agent.state, agent.leaving = _OFF, False
            self._on_shift -= 1
        else:
            self._free(agent)

    def _give_up(self, call: _Call, timed_out: bool = False) -> None:
        """The call leaves the line (its heap entry is skipped lazily later)."""
        wait = self._t - call.arrived
        self._cancel(call.timer)
        del self._calls[call.call_id]
        call.state = None
        self._by_priority[call.priority] -= 1
        self.stats["abandoned"] += 1
        if wait > 0:
            self.stats["waited"] += 1
        if timed_out:
            self._out.append(CallAbandoned(call.call_id, wait))

    def _next_waiting(self, agent: _AgentState) -> _Call | None:
        best_heap = None
        for skill in (_ANY, *agent.spec.skills):
            heap = self._waiting.get(skill)
            while heap and heap[0][2].state != _WAITING:
                heapq.heappop(heap)
            if heap and (best_heap is None or heap[0][:2] < best_heap[0][:2]):
                best_heap = heap
        if best_heap is None:
            return None
        call = heapq.heappop(best_heap)[2]
        self._by_priority[call.priority] -= 1
        self._cancel(call.timer)
        return call

    # ----------------------------------------------------------------- agents
    def _free(self, agent: _AgentState) -> None:
        call = self._next_waiting(agent)
        if call is not None:
            self._serve(call, agent)
            return
        agent.state = _IDLE
        self._seq += 1
        agent.idle_token = self._seq
        for skill in (_ANY, *agent.spec.skills):
            heapq.heappush(self._idle.setdefault(skill, []), (self._seq, agent))

    def _clean_idle(self, skill: str) -> list | None:
        heap = self._idle.get(skill)
        while heap and (heap[0][1].state != _IDLE or heap[0][1].idle_token != heap[0][0]):
            heapq.heappop(heap)
        return heap

    def _has_idle(self, skill: str) -> bool:
        return bool(self._clean_idle(skill))

    def _pop_idle(self, skill: str) -> _AgentState | None:
        heap = self._clean_idle(skill)
        return heapq.heappop(heap)[1] if heap else None

    def _shift_on(self, agent: _AgentState) -> None:
        if agent.state == _OFF:
            self._on_shift += 1
            self._free(agent)
        agent.leaving = False

    def _shift_off(self, agent: _AgentState) -> None:
        if agent.state == _BUSY:
            agent.leaving = True  # finishes the call in hand first
        elif agent.state == _IDLE:
            agent.state = _OFF
            self._on_shift -= 1


class _SimClock:
    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(calls_per_hour: float, aht_s: float, agents: int, hours: float, patience_s: float | None = None,
             seed: int = 0, answer_within_s: float = 20.0) -> dict[str, float]:
    """Run the queue on Poisson arrivals for ``hours``; see the module doc for the figures."""
    if calls_per_hour <= 0 or hours <= 0 or agents < 0:
        raise ValueError("calls_per_hour and hours must be positive, agents not negative")
    rng = random.Random(seed)
    clock = _SimClock()
    queue = AgentQueue(agents, aht_s, now=clock, rng=rng, answer_within_s=answer_within_s)
    end, rate = hours * 3600.0, calls_per_hour / 3600.0
    impatience = 1.0 / patience_s if patience_s else 0.0
    t, n = rng.expovariate(rate), 0
    while t < end:
        clock.t = t
        queue.offer(n, patience_s=rng.expovariate(impatience) if impatience else None)
        n += 1
        t += rng.expovariate(rate)
    clock.t = end
    queue.advance()
    occupancy = queue.summary()["occupancy"]
    clock.t = math.inf  # play out the calls still queued at the end
    queue.advance()
    result = queue.summary()
    return {
        "p_wait": round(result["p_wait"], 4),
        "asa_s": round(result["asa_s"], 2),
        "service_level": round(result["service_level"], 4),
        "abandon_rate": round(result["abandon_rate"], 4),
        "occupancy": round(occupancy, 4),
        "calls": result["calls"],
    }
