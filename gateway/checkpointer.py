"""SQLite's WAL checkpoints, done in a thread instead of in the reactor's commits.

In WAL mode SQLite copies the log back into the database file (a checkpoint) from
inside the commit that takes the log past ``wal_autocheckpoint`` pages, and a
checkpoint first syncs the log to disk: every megabyte the commits wrote since
the last sync. On the reactor thread that was the tail of everything: plain
submit_sm at ~20,000/s had ack p99 7 ms with SQLite's default of 1,000 pages,
3 ms without; and once the tables had grown (``bench_smpp --history``: an hour
of "200"s, whose per-subscriber index entries land on a new page each), 1.2 %
of the reactor's commits took 20-158 ms where the others take 0.14, and the
"200" p99 went from 24 to 60-66 ms.

Every ``sqlite.checkpoint_ms`` (50) this service runs a PASSIVE checkpoint on
its own connection in the reactor's thread pool (SQLite releases the GIL while
it copies and syncs: the second core and the disk do it). A passive checkpoint
never waits for readers or the writer. Run that often, each one syncs 50 ms of
log, and often enough it reaches the end of the log between two commits, which
lets the next commit start the log again from its beginning: the log stays
around 3,500 pages without the commits checkpointing. They still do at
``core.db.AUTOCHECKPOINT_PAGES`` (16,000 pages, 64 MB), the backstop that keeps
the log bounded if the thread falls behind. Measured on the aged database: the
commits over 20 ms went from 170 to 10 per run, and the "200" p99 back to 22-27
ms, what it is on a new database.

``/metrics`` shows what the thread does: ``gateway_sqlite_checkpoints_total``,
``gateway_sqlite_checkpoint_seconds_total`` (and the longest),
``gateway_sqlite_wal_frames`` (the log's length at the last checkpoint) and
``gateway_sqlite_checkpoint_busy_total``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from gateway.offthread import EveryInThread

__all__ = ["WAL", "Checkpointer", "WalTally"]


class WalTally:
    """The thread's checkpoints in this process, for ``/metrics``."""

    def __init__(self) -> None:
        self.checkpoints = 0
        self.busy = 0  # checkpoints a writer or reader kept from finishing
        self.seconds = 0.0
        self.max_seconds = 0.0
        self.frames = 0  # the log's length (pages) at the last checkpoint

    def add(self, busy: int, frames: int, seconds: float) -> None:
        self.checkpoints += 1
        self.busy += busy
        self.seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)
        self.frames = frames

    def collect(self) -> list[Any]:
        return [
            CounterMetricFamily("gateway_sqlite_checkpoints", "WAL checkpoints run by the checkpoint thread",
                                value=self.checkpoints),
            CounterMetricFamily("gateway_sqlite_checkpoint_busy", "checkpoints a writer or a reader kept from "
                                "finishing", value=self.busy),
            CounterMetricFamily("gateway_sqlite_checkpoint_seconds", "time the checkpoint thread spent copying "
                                "the log and syncing", value=self.seconds),
            GaugeMetricFamily("gateway_sqlite_checkpoint_max_seconds", "longest checkpoint so far",
                              value=self.max_seconds),
            GaugeMetricFamily("gateway_sqlite_wal_frames", "pages in the WAL at the last checkpoint (the log "
                              "restarts from its beginning once a checkpoint reaches its end)", value=self.frames),
        ]


WAL = WalTally()


class Checkpointer(EveryInThread):
    what = "WAL checkpoint"

    def __init__(self, gateway: Any):
        super().__init__(gateway)
        self._conn: sqlite3.Connection | None = None
        self.tally = WAL

    def every_s(self) -> float:
        path = self.gateway.engine.url.database
        if not path or path == ":memory:":
            return 0.0
        self._path = path
        return float(self.gateway.settings["sqlite.checkpoint_ms"]) / 1000.0

    def job(self) -> tuple[int, int, int]:
        return self.checkpoint()

    def stopService(self) -> Any:
        running = super().stopService()
        if running is not None:
            running.addBoth(lambda _: self._close())
            return running
        self._close()
        return None

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, frames in the log, frames copied)."""
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=0")
        started = time.perf_counter()
        busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.tally.add(busy, frames, time.perf_counter() - started)
        return busy, frames, copied

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
