"""A hidden profiling switch for benchmarks: ``GATEWAY_PROFILE=FILE`` in the gateway's environment.

With it set, SIGUSR1 starts cProfile in the gateway process and SIGUSR2 stops
it and writes the statistics to FILE (``pstats`` format, CPU seconds), so a benchmark
profiles exactly the load it drives, not the start-up. Without it nothing
is installed and the signals keep their default meaning.
"""

from __future__ import annotations

import cProfile
import os
import signal
import time
from typing import Any

ENV = "GATEWAY_PROFILE"


MEMORY_ENV = "GATEWAY_MEMORY"


def install_memory_from_env(reactor: Any) -> bool:
    """``GATEWAY_MEMORY=FILE``: trace allocations from now on; SIGUSR1 takes a baseline snapshot and
    SIGUSR2 writes to FILE the 40 source lines whose live memory grew most since it (a leak hunt)."""
    import tracemalloc

    path = os.environ.get(MEMORY_ENV)
    if not path:
        return False
    tracemalloc.start(6)
    baseline: list[Any] = []

    def mark() -> None:
        baseline[:] = [tracemalloc.take_snapshot()]

    def report() -> None:
        now = tracemalloc.take_snapshot()
        with open(path + ".part", "w") as out:
            for stat in (now.compare_to(baseline[0], "lineno")[:25] if baseline else []):
                out.write(f"{stat}\n")
            for stat in (now.compare_to(baseline[0], "traceback")[:8] if baseline else []):
                out.write(f"{stat}\n" + "\n".join("    " + line for line in stat.traceback.format()) + "\n")
        os.replace(path + ".part", path)

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(mark))
    signal.signal(signal.SIGUSR2, lambda *_: reactor.callFromThread(report))
    return True


def install_from_env(reactor: Any) -> bool:
    """Install the SIGUSR1/SIGUSR2 handlers when ``GATEWAY_PROFILE`` names a file; True if installed."""
    if install_memory_from_env(reactor):
        return True
    path = os.environ.get(ENV)
    if not path:
        return False
    profiler = cProfile.Profile(time.process_time)  # CPU time: a busy shared machine does not blur it

    def stop() -> None:
        profiler.disable()
        profiler.dump_stats(path + ".part")
        os.replace(path + ".part", path)  # a reader never sees half a file

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(profiler.enable))
    signal.signal(signal.SIGUSR2, lambda *_: reactor.callFromThread(stop))
    return True
