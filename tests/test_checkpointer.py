"""WAL checkpoints in a thread (gateway/checkpointer.py): what one copies, and when the service runs."""

from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine
from twisted.internet import task

from core.settings import Settings
from gateway.checkpointer import Checkpointer, WalTally


class _Gateway:
    def __init__(self, url: str, **overrides):
        self.engine = create_engine(url)
        self.settings = Settings().with_overrides(overrides)
        self.reactor = task.Clock()


def _wal_with_frames(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the commits copy nothing: the log only grows
    conn.execute("CREATE TABLE t (x TEXT)")
    for i in range(200):
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 500 + str(i),))
    return conn  # kept open: closing the last connection would checkpoint the log itself


def test_a_passive_checkpoint_copies_the_whole_log_when_nobody_writes(tmp_path):
    path = tmp_path / "g.db"
    writer = _wal_with_frames(path)
    try:
        svc = Checkpointer(_Gateway(f"sqlite:///{path}"))
        svc._path = str(path)
        svc.tally = tally = WalTally()
        busy, frames, copied = svc.checkpoint()
        assert busy == 0 and frames > 0 and copied == frames
        assert (tally.checkpoints, tally.busy, tally.frames) == (1, 0, frames)
        assert 0 < tally.seconds == tally.max_seconds
        svc._close()
    finally:
        writer.close()


def test_the_service_runs_only_when_asked(tmp_path):
    off = Checkpointer(_Gateway(f"sqlite:///{tmp_path / 'a.db'}", **{"sqlite.checkpoint_ms": 0}))
    off.startService()
    assert off._loop is None
    off.stopService()
    memory = Checkpointer(_Gateway("sqlite:///:memory:"))
    memory.startService()
    assert memory._loop is None
    memory.stopService()
    on = Checkpointer(_Gateway(f"sqlite:///{tmp_path / 'b.db'}", **{"sqlite.checkpoint_ms": 250}))
    on._running = object()  # one already running: the tick waits for it instead of starting a second
    on.startService()
    assert on._loop is not None and on._loop.running
    assert on.tick() is on._running
    on._running = None
    on.stopService()
    assert not on._loop.running


def test_the_checkpoints_are_on_metrics():
    from prometheus_client import CollectorRegistry, generate_latest

    tally = WalTally()
    tally.add(0, 3500, 0.004)
    tally.add(1, 120, 0.002)
    registry = CollectorRegistry()
    registry.register(tally)
    text = generate_latest(registry).decode()
    for line in ("gateway_sqlite_checkpoints_total 2.0", "gateway_sqlite_checkpoint_busy_total 1.0",
                 "gateway_sqlite_checkpoint_seconds_total 0.006", "gateway_sqlite_checkpoint_max_seconds 0.004",
                 "gateway_sqlite_wal_frames 120.0"):
        assert line in text, line


def test_the_thread_checkpoints_often_and_the_commits_only_as_a_backstop():
    from core.db import AUTOCHECKPOINT_PAGES

    assert Settings()["sqlite.checkpoint_ms"] == 50.0
    assert AUTOCHECKPOINT_PAGES == 16000
