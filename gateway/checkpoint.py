"""SQLite WAL checkpoints off the reactor thread.

In WAL mode SQLite copies the log back into the database file (a checkpoint, with an fsync) inside
whichever commit pushes the log past 1,000 pages: on the gateway that is the reactor thread, which
then stalls every session for the copy. This service turns those automatic checkpoints off for the
serving engine's connections and runs a PASSIVE checkpoint from a thread of its own every
:data:`EVERY_S` instead: the log stays short, no commit pays for the copy, and readers and writers are
never blocked (a passive checkpoint copies what no reader still needs and gives up when another
process's checkpoint is running). PostgreSQL and in-memory SQLite: nothing to do.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

from sqlalchemy import event
from twisted.application import service

log = logging.getLogger(__name__)

EVERY_S = 0.25
JOURNAL_LIMIT = 64 * 1024 * 1024  # a log that grew past this is truncated back after a checkpoint


def sqlite_file(engine: Any) -> str | None:
    """The database file of a SQLite engine, or None."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


class Checkpointer(service.Service):
    def __init__(self, engine: Any, every_s: float = EVERY_S):
        self.engine, self.every_s = engine, every_s
        self.path = sqlite_file(engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    def startService(self) -> None:
        super().startService()
        if self.path is None:
            return
        event.listen(self.engine, "connect", _no_autocheckpoint)
        self.engine.dispose()  # connections made before (migrations, fixtures) would still checkpoint inline
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stopService(self):
        super().stopService()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.path is not None and event.contains(self.engine, "connect", _no_autocheckpoint):
            event.remove(self.engine, "connect", _no_autocheckpoint)

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int, int] | None:
        """One passive checkpoint: ``(busy, log frames, frames checkpointed)``, None when another
        process's checkpoint holds the lock."""
        try:
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.OperationalError as exc:  # another process is checkpointing: next time
            log.debug("checkpoint skipped: %s", exc)
            return None
        self.checkpoints += 1
        return busy, frames, done

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT}")
        return conn

    def _run(self) -> None:
        conn = self.connect()
        try:
            while not self._stop.wait(self.every_s):
                self.checkpoint(conn)
            self.checkpoint(conn)
        except sqlite3.Error:
            log.exception("SQLite checkpoint thread stopped; commits checkpoint inline again")
            event.remove(self.engine, "connect", _no_autocheckpoint)
            self.engine.dispose()
        finally:
            conn.close()


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
