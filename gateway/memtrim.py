"""Memory the C allocator holds but nobody uses, given back to the system every ``malloc.trim_s``.

Python's objects live in its own arenas, but everything bigger than 512 bytes and
everything SQLite allocates (its page caches, statements, query results) comes
from glibc's ``malloc``, and glibc gives every thread that allocates an arena of its
own. The thread pool's jobs (the learned refresh, the checkpoints, the outbox
counts) allocate a lot for a moment and free it, and glibc keeps the freed pages:
it returns memory to the system only from the top of a heap. During the one-hour
soak (542 -> 598 MB), glibc, asked with ``malloc_stats()`` after 40 minutes, held
256 MB of which 66 MB were in use: five thread arenas of 25-43 MB each with under
1 MB in use. With the trim a 30-minute soak gave back about 19 MB a minute; what
the pool's jobs hold at a given moment still swings the resident size by ~50 MB.

So the gateway also keeps every thread on one arena (``malloc.arena_max`` = 1,
set with glibc's ``mallopt`` before the thread pool starts; 0 leaves glibc's
eight per core, and ``MALLOC_ARENA_MAX`` in the environment wins): what one job
frees, the next job or the reactor reuses. In a 12-minute soak at 1,728 "200"/s
the resident size settled at 447-478 MB (no thread arena; main heap 76-106 MB),
where with glibc's own arenas it was 508-553 MB in the same phase; in an hour
the median of each ten minutes stayed at 461-472 MB (anonymous part +0.5 %, where
glibc's own arenas grew 542 -> 598 MB); bench_smpp showed no difference in
throughput beyond run-to-run noise.

:class:`MemoryTrimmer` calls glibc's ``malloc_trim(0)`` in the thread pool every
``malloc.trim_s`` seconds (60; 0: never), which hands every free page of every arena
back to the system (``madvise``), without moving anything that is in use. It is
counted on ``/metrics``: ``gateway_malloc_trims_total``,
``gateway_malloc_trim_released_bytes_total`` (resident memory before minus after)
and ``gateway_malloc_trim_seconds_total``. Where the C library is not glibc there
is nothing to call and the service says so once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily
from twisted.logger import Logger

from gateway.offthread import EveryInThread

__all__ = ["TRIMS", "MemoryTrimmer", "TrimTally", "configure_allocator", "limit_arenas", "malloc_trim", "resident_bytes"]

log = Logger(namespace="gateway.memory")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _libc(name: str, argtypes: list[Any]) -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return fn


_TRIM = _libc("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _libc("mallopt", [ctypes.c_int, ctypes.c_int]) if _TRIM is not None else None
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_arenas(most: int) -> bool | None:
    """At most ``most`` glibc arenas for this process's threads (0: glibc's own, eight per core).

    Call it before the thread pool starts: a thread keeps the arena it first allocated from. Where
    ``MALLOC_ARENA_MAX`` is in the environment, that is the operator's word and this does nothing.
    True when set, False when not asked or left to the environment, None without glibc.
    """
    if most <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    if _MALLOPT is None:
        return None
    return bool(_MALLOPT(_M_ARENA_MAX, most))


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def malloc_trim() -> bool | None:
    """Give the allocator's free pages back; True when some were, None without glibc."""
    return None if _TRIM is None else bool(_TRIM(0))


def configure_allocator(settings: Any) -> None:
    """The process's allocator as ``malloc.arena_max`` asks, said once in the log."""
    most = int(settings["malloc.arena_max"])
    done = limit_arenas(most)
    if done:
        log.info("glibc malloc: at most {most} arena(s) for all threads (malloc.arena_max)", most=most)
    elif done is None:
        log.info("malloc.arena_max is set but this C library has no mallopt: left as it is")
    elif most > 0:
        log.info("glibc malloc: MALLOC_ARENA_MAX={env} from the environment, not malloc.arena_max",
                 env=os.environ.get("MALLOC_ARENA_MAX"))


class TrimTally:
    def __init__(self) -> None:
        self.trims = 0
        self.released = 0  # bytes: resident memory before a trim minus after it
        self.seconds = 0.0

    def trim(self) -> int | None:
        """One trim, counted; returns the resident bytes it released (None without glibc)."""
        before, started = resident_bytes(), time.perf_counter()
        if malloc_trim() is None:
            return None
        released = max(0, before - resident_bytes())
        self.trims += 1
        self.released += released
        self.seconds += time.perf_counter() - started
        return released

    def collect(self) -> list[Any]:
        return [
            CounterMetricFamily("gateway_malloc_trims", "malloc_trim calls (free allocator pages handed back)",
                                value=self.trims),
            CounterMetricFamily("gateway_malloc_trim_released_bytes", "resident memory the trims gave back",
                                value=self.released),
            CounterMetricFamily("gateway_malloc_trim_seconds", "time spent trimming, in the thread pool",
                                value=self.seconds),
        ]


TRIMS = TrimTally()


class MemoryTrimmer(EveryInThread):
    what = "malloc_trim"

    def __init__(self, gateway: Any):
        super().__init__(gateway)
        self.tally = TRIMS

    def every_s(self) -> float:
        every = float(self.gateway.settings["malloc.trim_s"])
        if every > 0 and _TRIM is None:
            log.info("malloc.trim_s is set but this C library has no malloc_trim: nothing to trim")
            return 0.0
        return every

    def job(self) -> int | None:
        return self.tally.trim()
