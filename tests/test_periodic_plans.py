"""The periodic jobs never read the tables the "200" traffic grows in full.

Every five minutes the scheduler's leader checks the campaigns' complaint and opt-out rates (the
campaign report), and every ``learning.refresh_s`` each process folds the new shelf events. The outbox,
the message log and the exposures grow by thousands of rows a second under load; a job that scans one
of them costs more each minute, and on a two-core machine its thread takes the core the load needs
(an hour's soak measured the campaign report at 0.6 s on 1.2M outbox rows, and growing). The gateway
never runs ANALYZE, so SQLite plans from the schema alone: the plans of an empty database are the
production plans.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, text

from core import db
from core.settings import Settings
from notifier import reports
from offers import learning

NOW = 1_790_000_000.0
GROWING = ("outbox", "message_log", "exposures", "outcomes")


@pytest.fixture
def engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/p.db")
    db.migrate(engine)
    yield engine
    engine.dispose()


def _statements(engine, work) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with db.session_factory(engine)() as session:
            work(session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def _full_scans(engine, statements) -> list[str]:
    found = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters or ()).all()
            for row in plan:
                detail = row[-1]
                # "SCAN outbox" is a full read; "SCAN outbox USING ... INDEX" is a full read of an index
                if any(detail.startswith(f"SCAN {table}") or detail.startswith(f"SCAN {table[0]} ")
                       for table in GROWING):
                    found.append(f"{detail}  <-  {' '.join(statement.split())[:160]}")
    return found


def test_the_campaign_check_reads_no_growing_table_in_full(engine):
    statements = _statements(engine, lambda session: reports.campaign_report(session, None, NOW))
    assert statements, "the report ran no query"
    assert _full_scans(engine, statements) == []


def test_the_learning_fold_reads_only_its_window(engine):
    def fold(session):
        with engine.begin() as conn:
            conn.execute(text("UPDATE learning_control SET folded_until = :t"), {"t": NOW - 60})
        learning.fold(session, NOW, Settings())

    statements = _statements(engine, fold)
    assert statements, "the fold ran no query"
    assert _full_scans(engine, statements) == []
