"""Progress for long work: a rich progress bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOG_EVERY_S = 5.0


@contextmanager
def progress_reporter(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yields ``report(done)``; ``done`` is the running count of items finished."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        # on stderr, like the log lines: stdout may be the command's output (campaign plan --all > file)
        with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=False, console=Console(stderr=True), redirect_stdout=False) as bar:
            task = bar.add_task(label, total=total)
            yield lambda done: bar.update(task, completed=done)
        return
    start = last = time.monotonic()

    def report(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= LOG_EVERY_S or (total and done >= total):
            last = now
            of = f"/{total}" if total else ""
            print(f"{label}: {done}{of} ({done / max(now - start, 1e-9):.0f}/s)", file=sys.stderr, flush=True)

    yield report
