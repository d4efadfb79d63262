"""SQLite's WAL checkpoints, done in a thread instead of in the reactor's commits.

In WAL mode SQLite copies the log back into the database file (a checkpoint) from
inside the commit that takes the log past ``wal_autocheckpoint`` pages: with the
default of 1,000 pages that was a commit every few seconds on the reactor thread
copying 4 MB and syncing the file, and it was the tail of the acknowledgements
(plain submit_sm at ~20,000/s: ack p99 7 ms with it, 3 ms without).

Every ``sqlite.checkpoint_ms`` this service runs a PASSIVE checkpoint on its own
connection in the reactor's thread pool (SQLite releases the GIL while it copies:
the second core does it). A passive checkpoint never waits for readers or the
writer, so under constant writes it rarely reaches the end of the log, and only a
checkpoint that does lets the next commit start the log again from its beginning.
So the commits keep an automatic checkpoint too, at 4x the default
(``core.db.AUTOCHECKPOINT_PAGES``): by then the thread has copied nearly everything,
the inline one finishes the rest and the log restarts; the log stays bounded.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from gateway.offthread import in_thread_of

__all__ = ["Checkpointer"]

log = Logger(namespace="gateway.checkpoint")

class Checkpointer(service.Service):
    def __init__(self, gateway: Any):
        self.gateway = gateway
        self._loop: task.LoopingCall | None = None
        self._running: Any = None
        self._conn: sqlite3.Connection | None = None
        self.stats = {"checkpoints": 0, "frames_copied": 0, "busy": 0}

    def startService(self) -> None:
        super().startService()
        every = float(self.gateway.settings["sqlite.checkpoint_ms"]) / 1000.0
        path = self.gateway.engine.url.database
        if every <= 0 or not path or path == ":memory:":
            return
        self._path = path
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.gateway.reactor
        self._loop.start(every, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        running, self._running = self._running, None
        if running is not None:
            running.addBoth(lambda _: self._close())
            return running
        self._close()
        return None

    def tick(self) -> Any:
        if self._running is not None:
            return self._running
        d = in_thread_of(self.gateway.reactor)(self.checkpoint)
        d.addErrback(lambda f: log.failure("WAL checkpoint failed", f))
        d.addBoth(self._done)
        self._running = d
        return d

    def _done(self, _result: Any) -> None:
        self._running = None

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, frames in the log, frames copied)."""
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=0")
        busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.stats["checkpoints"] += 1
        self.stats["busy"] += busy
        self.stats["frames_copied"] = copied
        return busy, frames, copied

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
