"""gateway/memtrim.py: glibc's free pages handed back every malloc.trim_s, counted on /metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import task

from core.settings import Settings
from gateway import memtrim
from gateway.memtrim import MemoryTrimmer, TrimTally

glibc = pytest.mark.skipif(memtrim._TRIM is None, reason="needs glibc's malloc_trim (an external library)")


class _Gateway:
    def __init__(self, **overrides):
        self.settings = Settings().with_overrides(overrides)
        self.reactor = task.Clock()  # no thread pool: the trim runs at once


@glibc
def test_a_trim_gives_back_what_threads_freed():
    import threading

    def churn():  # a thread's own arena, filled and freed, as the pool's jobs do
        blocks = [bytearray(4096) for _ in range(20000)]
        del blocks[::2]
        blocks.clear()

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    tally = TrimTally()
    released = tally.trim()
    assert released is not None and released >= 0
    assert tally.trims == 1 and tally.released == released and tally.seconds > 0


@glibc
def test_the_service_trims_every_trim_s_and_counts_it():
    gateway = _Gateway(**{"malloc.trim_s": 60})
    svc = MemoryTrimmer(gateway)
    svc.tally = tally = TrimTally()
    svc.startService()
    assert tally.trims == 0, "not at start: every 60 s"
    gateway.reactor.advance(60)
    gateway.reactor.advance(60)
    assert tally.trims == 2
    svc.stopService()
    gateway.reactor.advance(600)
    assert tally.trims == 2


def test_off_when_asked():
    gateway = _Gateway(**{"malloc.trim_s": 0})
    svc = MemoryTrimmer(gateway)
    svc.startService()
    assert svc._loop is None
    svc.stopService()


def test_the_trims_are_on_metrics():
    tally = TrimTally()
    tally.trims, tally.released, tally.seconds = 3, 40960, 0.012
    registry = CollectorRegistry()
    registry.register(tally)
    text = generate_latest(registry).decode()
    for line in ("gateway_malloc_trims_total 3.0", "gateway_malloc_trim_released_bytes_total 40960.0",
                 "gateway_malloc_trim_seconds_total 0.012"):
        assert line in text, line
