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


def install_from_env(reactor: Any) -> bool:
    """Install the SIGUSR1/SIGUSR2 handlers when ``GATEWAY_PROFILE`` names a file; True if installed."""
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
