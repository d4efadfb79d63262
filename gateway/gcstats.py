"""Python's garbage collector, seen and tamed: pauses counted per generation, long-lived objects frozen.

Every "200" of a new subscriber leaves objects behind that live for a long
time (its cached shelf), so the collector's oldest generation grows with the
shelf cache, and each of Python's own full collections walks every tracked
object of the process. With 100k cached shelves that stopped the reactor up to
a second at a time (bench_smpp, 1M subscribers: 14-19 full collections per
run, 3.7-5 s in all), and those pauses were the tail of the reply latency.

- :data:`TALLY` counts the pauses of this process (one ``gc.callbacks`` hook per
  process, exposed as ``gateway_gc_pauses`` / ``gateway_gc_pause_seconds`` /
  ``gateway_gc_pause_max_seconds`` by generation on ``/metrics``), so ops see
  what the collector costs instead of guessing.
- :class:`GcService` collects, once at start and then every ``gc.freeze_s``
  seconds, what is not frozen yet (the objects made since the last time: two
  seconds' worth), and moves the survivors into the permanent generation
  (``gc.freeze``, which only splices lists). Start-up state, the catalog and
  the cached shelves are then never walked again (longest pause 49 ms in the
  same benchmark, 1.1 s in all). Frozen objects are still freed by reference
  counting as usual (a cache entry dropped or replaced is freed at once); only
  garbage *cycles* among them wait for the sweep every ``gc.sweep_s`` seconds
  (unfreeze, one full collection, freeze again), which logs what it found and
  how long the reactor stood still: 125-260 objects per 30 s (SQLAlchemy sessions
  that happened to be open at a freeze) in the benchmark, swept every 30 s to count them.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

__all__ = ["TALLY", "GcService", "GcTally", "sweep"]

log = Logger(namespace="gateway.gc")


class GcTally:
    """Collections and their pause time by generation, for this process."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.max_seconds = [0.0, 0.0, 0.0]
        self.freezes = 0
        self.sweeps = 0
        self.swept_objects = 0  # unreachable objects the sweeps found, in all
        self.sweep_seconds = 0.0
        self._started = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info.get("generation", 0)
        pause = time.perf_counter() - self._started
        self.count[gen] += 1
        self.seconds[gen] += pause
        if pause > self.max_seconds[gen]:
            self.max_seconds[gen] = pause

    def collect(self) -> list[Any]:
        count = CounterMetricFamily("gateway_gc_pauses", "garbage collections of this process, by generation",
                                    labels=["generation"])
        seconds = CounterMetricFamily("gateway_gc_pause_seconds", "time the reactor stood still in garbage "
                                      "collections, by generation", labels=["generation"])
        longest = GaugeMetricFamily("gateway_gc_pause_max_seconds", "longest garbage collection so far, by "
                                    "generation", labels=["generation"])
        for gen in range(3):
            count.add_metric([str(gen)], self.count[gen])
            seconds.add_metric([str(gen)], self.seconds[gen])
            longest.add_metric([str(gen)], self.max_seconds[gen])
        frozen = GaugeMetricFamily("gateway_gc_frozen_objects", "objects in the permanent generation "
                                   "(gc.freeze: not walked by collections)", value=gc.get_freeze_count())
        swept = CounterMetricFamily("gateway_gc_swept_objects", "unreachable objects found by the full sweeps "
                                    "(gc.sweep_s): the garbage cycles that waited among the frozen objects",
                                    value=self.swept_objects)
        sweeps = CounterMetricFamily("gateway_gc_sweep_seconds", "time the full sweeps stood the reactor still",
                                     value=self.sweep_seconds)
        return [count, seconds, longest, frozen, swept, sweeps]


TALLY = GcTally()


def sweep() -> tuple[int, float]:
    """A full collection of everything, the frozen objects included, then a new freeze: (objects
    found unreachable, pause in seconds)."""
    started = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    pause = time.perf_counter() - started
    TALLY.freezes += 1
    TALLY.sweeps += 1
    TALLY.swept_objects += found
    TALLY.sweep_seconds += pause
    return found, pause


class GcService(service.Service):
    """Freeze every ``gc.freeze_s`` seconds (and once at start), sweep every ``gc.sweep_s``."""

    def __init__(self, gateway: Any):
        self.gateway = gateway
        self._loops: list[task.LoopingCall] = []

    def startService(self) -> None:
        super().startService()
        TALLY.install()
        settings = self.gateway.settings
        freeze_s = float(settings["gc.freeze_s"])
        sweep_s = float(settings["gc.sweep_s"]) if freeze_s > 0 else 0.0  # nothing frozen: nothing to sweep
        for every, call, now in ((freeze_s, self.freeze, True), (sweep_s, self.sweep, False)):
            if every > 0:
                loop = task.LoopingCall(call)
                loop.clock = self.gateway.reactor
                loop.start(every, now=now)
                self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        if gc.get_freeze_count():
            gc.unfreeze()  # what stays of the process is the collector's again

    @staticmethod
    def freeze() -> None:
        gc.collect()  # walks only what is not frozen yet: the garbage goes first, only what is alive is frozen
        gc.freeze()
        TALLY.freezes += 1

    @staticmethod
    def sweep() -> None:
        found, pause = sweep()
        log.info("garbage collector: full sweep found {found} unreachable objects in {ms:.0f} ms; "
                 "{frozen} objects frozen again", found=found, ms=pause * 1000, frozen=gc.get_freeze_count())
