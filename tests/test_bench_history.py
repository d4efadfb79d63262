"""bench/history.py: the aged database the soak's question is asked on, with the gateway's own keys."""

from __future__ import annotations

import sqlite3
import time

from bench.history import age
from core.db import make_engine, migrate
from notifier.outbox import new_message_id
from offers.population import FIRST


def test_history_writes_what_a_200_leaves_behind(tmp_path):
    path = tmp_path / "aged.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    now = time.time()
    age(path, 1000, 100, now=now)
    db = sqlite3.connect(path)
    count = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    assert count("SELECT COUNT(*) FROM message_log WHERE direction = 'MO'") == 1000
    assert count("SELECT COUNT(*) FROM message_log WHERE direction = 'MT'") == 1000
    assert count("SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND kind = 'reply'") == 1000
    assert count("SELECT COUNT(*) FROM exposures WHERE context = 'shelf'") == 5000
    # every subscriber is one of the active ones; every row is in the past
    low, high = db.execute("SELECT MIN(CAST(dest AS INTEGER)), MAX(CAST(dest AS INTEGER)) FROM outbox").fetchone()
    assert FIRST <= low and high < FIRST + 100
    assert count("SELECT MAX(at) FROM exposures") < now - 59
    # message ids as the gateway's: 24 hex digits, older than any new one
    ids = [row[0] for row in db.execute("SELECT message_id FROM outbox")]
    assert all(len(i) == 24 for i in ids) and max(ids) < new_message_id()
    assert len(set(ids)) == 1000
    # the learning refresh of a gateway started on the copy folds only what is new
    assert count("SELECT SUM(exposures) FROM learned_counts") == 5000
    assert count("SELECT folded_until FROM learning_control WHERE id = 1") == now - 60


def test_bench_writes_writes_the_rows_of_a_200_and_measures_them(tmp_path):
    from bench.bench_writes import connect, run_variant

    path = tmp_path / "writes.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    db = connect(path)
    figures = run_variant(db, path, 100, 25, 50, [1])
    count = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    assert count("SELECT COUNT(*) FROM message_log WHERE direction = 'MO'") == 100
    assert count("SELECT COUNT(*) FROM message_log WHERE direction = 'MT'") == 100
    assert count("SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND kind = 'reply'") == 100
    assert count("SELECT COUNT(*) FROM exposures WHERE context = 'shelf'") == 500
    assert figures["cpu_us_per_200"] > 0 and figures["wal_kb_per_200"] > 0
    db.close()
