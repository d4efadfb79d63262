"""SQLite WAL checkpoints leave the reactor thread: the serving engine's commits never checkpoint, a
thread of the Checkpointer does (gateway/checkpoint.py)."""

from __future__ import annotations

from sqlalchemy import text

from core.db import make_engine
from gateway.checkpoint import Checkpointer, sqlite_file


def _write(engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"))
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 1500} for _ in range(n)])


def test_commits_leave_checkpoints_to_the_checkpointer(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    _write(engine, 10)  # a pooled connection from before the service starts
    cp = Checkpointer(engine, every_s=3600.0)  # the thread never wakes by itself in this test
    cp.startService()
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        _write(engine, 5000)  # about 2,000 pages: past the 1,000 at which a commit would checkpoint
        with cp.connect() as conn:
            busy, frames, done = cp.checkpoint(conn)
            assert busy == 0 and frames > 1000 and done == frames  # the log was left whole for us
    finally:
        cp.stopService()
    engine.dispose()  # stopped: new connections checkpoint inline again
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000


def test_nothing_to_do_on_memory_or_postgres(tmp_path):
    assert sqlite_file(make_engine("sqlite://")) is None
    assert sqlite_file(make_engine(f"sqlite:///{tmp_path / 'x.db'}")) == str(tmp_path / "x.db")
    cp = Checkpointer(make_engine("sqlite://"))
    cp.startService()
    assert cp._thread is None
    cp.stopService()
