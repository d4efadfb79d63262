"""Simulated callees for the dialer on a simulated clock: no sockets, the same dialer core.

:class:`CalleeNetwork` turns the dialer's commands into the events a SIP UAC would report:
a callee answers after a few seconds of ringing with a probability that depends on the segment
and the hour, is busy (486), or lets it ring until the dialer cancels. In an outbound IVR call it
presses 1 with a propensity scaled by the offer's fit, 2 (hear it again) now and then, 3 (not
interested) often, 9 rarely, else hangs up (the keys of ``ivr.dialer.IVR_KEYS``).
:func:`run` drives a dialer and the network together until ``until`` (the bench and the tests).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ivr.dialer import Cancel, Dial, Dialer, Hangup, Prompt, Record
from ivr.sip.uac import Answered, DtmfReceived, Failed, HungUp, Ringing

SEGMENT_ANSWER = {"A1": 0.8, "A2": 0.85, "B1": 0.95, "B2": 1.0, "C": 1.05, "D": 1.1}
EVENING = range(18, 21)


class SimClock:
    __slots__ = ("t",)

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class CalleeModel:
    answer_rate: float = 0.45
    busy_rate: float = 0.08
    ring_s: tuple[float, float] = (3.0, 18.0)
    accept_rate: float = 0.08
    tz: str = "Asia/Shanghai"

    def p_answer(self, segment: str, t: float) -> float:
        hour = datetime.fromtimestamp(t, ZoneInfo(self.tz)).hour
        return min(0.95, self.answer_rate * SEGMENT_ANSWER.get(segment, 1.0) * (1.15 if hour in EVENING else 1.0))


@dataclass
class CalleeNetwork:
    model: CalleeModel
    rng: random.Random
    clock: SimClock
    targets: dict[str, Any] = field(default_factory=dict)  # msisdn -> Target (for fit and segment)
    _heap: list = field(default_factory=list)
    _seq: int = 0
    _live: dict[str, str] = field(default_factory=dict)  # call_id -> msisdn, while the call exists
    dialled: list[str] = field(default_factory=list)

    def _at(self, delay: float, event: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.clock.t + delay, self._seq, event))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self) -> list[Any]:
        out = []
        while self._heap and self._heap[0][0] <= self.clock.t:
            event = heapq.heappop(self._heap)[2]
            if event.call_id in self._live:
                out.append(event)
        return out

    def handle(self, command: Any) -> None:
        if isinstance(command, Dial):
            self._dial(command)
        elif isinstance(command, (Cancel, Hangup)):
            self._live.pop(command.call_id, None)
        elif isinstance(command, Prompt) and command.state == "menu":
            self._menu(command.call_id)

    def _dial(self, dial: Dial) -> None:
        self.dialled.append(dial.msisdn)
        self._live[dial.call_id] = dial.msisdn
        target = self.targets.get(dial.msisdn)
        segment = target.segment if target is not None else ""
        draw = self.rng.random()
        if draw < self.model.busy_rate:
            self._at(self.rng.uniform(0.5, 2.0), Failed(dial.call_id, 486, "Busy Here"))
            return
        self._at(0.2, Ringing(dial.call_id, 180))
        if draw < self.model.busy_rate + self.model.p_answer(segment, self.clock.t):
            self._at(self.rng.uniform(*self.model.ring_s), Answered(dial.call_id))

    def _menu(self, call_id: str) -> None:
        target = self.targets.get(self._live.get(call_id, ""))
        fit = target.fit if target is not None else 1.0
        draw = self.rng.random()
        p1 = self.model.accept_rate * fit / 0.8
        if draw < p1:
            self._at(4.0, DtmfReceived(call_id, "1"))
        elif draw < p1 + 0.02:
            self._at(4.0, DtmfReceived(call_id, "9"))
        elif draw < p1 + 0.06:
            self._at(4.0, DtmfReceived(call_id, "2"))
        elif draw < p1 + 0.36:
            self._at(4.0, DtmfReceived(call_id, "3"))
        else:
            self._at(self.rng.uniform(2.0, 8.0), HungUp(call_id, True))


def run(dialer: Dialer, network: CalleeNetwork, clock: SimClock, until: float,
        on_command: Callable[[Any], None] | None = None) -> list[Record]:
    """Drive ``dialer`` and ``network`` on ``clock`` until ``until`` or nothing is left; the call records."""
    records: list[Record] = []

    def apply(commands: list[Any]) -> None:
        for command in commands:
            network.handle(command)
            if isinstance(command, Record):
                records.append(command)
            if on_command is not None:
                on_command(command)

    while True:
        times = [t for t in (dialer.next_deadline(), network.next_time()) if t is not None]
        if not times or min(times) > until:
            break
        clock.t = max(clock.t, min(times))
        apply(dialer.advance())
        for event in network.due():
            apply(dialer.on_event(event))
    clock.t = max(clock.t, until)
    return records
