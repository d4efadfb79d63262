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


_ARENAS = """
import ctypes, sys, threading
from gateway import memtrim
print(memtrim.limit_arenas(int(sys.argv[1])), flush=True)
hold = []
together = threading.Barrier(4)
def grab():  # four threads alive at once (an exited thread's arena goes to the next thread)
    together.wait()
    hold.append([bytearray(3000) for _ in range(200)])  # over 512 bytes: glibc, from this thread's arena
    together.wait()
threads = [threading.Thread(target=grab) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(most: int, env: dict[str, str] | None = None) -> tuple[str, int]:
    import os
    import subprocess
    import sys

    from tests.harness import ROOT

    full = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", _ARENAS, str(most)], cwd=ROOT, env={**full, **(env or {})},
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip(), done.stderr.count("Arena ")


@glibc
def test_arena_max_keeps_every_thread_on_the_arenas_asked():
    assert _arenas(0) == ("False", 5), "glibc's own: the main arena and one per thread"
    assert _arenas(1) == ("True", 1)
    assert _arenas(2) == ("True", 2)


@glibc
def test_malloc_arena_max_in_the_environment_wins():
    assert _arenas(1, {"MALLOC_ARENA_MAX": "3"}) == ("False", 3)


def test_the_shipped_default_is_one_arena():
    assert Settings()["malloc.arena_max"] == 1
