"""/metrics and the dashboard read no whole table on the reactor thread: the outbox counts and the
reports run in the thread pool, and every query left on the reactor thread is an index search."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, insert, text
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.app import Gateway
from gateway.http import dashboard
from gateway.metrics import GatewayMetrics, refresh_from_db
from notifier.models import MessageLog, OutboxMessage
from tests.harness import ROOT

T0 = 1_790_000_000.0


class OtherThreadPool:
    """Runs each call on a thread of its own and waits for it (deterministic, but off the caller's thread)."""

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):  # noqa: N802 - Twisted's name
        box = []

        def run():
            try:
                box.append((True, f(*args, **kwargs)))
            except BaseException:
                box.append((False, Failure()))

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        on_result(*box[0])


class ThreadedClock(Clock):
    def getThreadPool(self):  # noqa: N802 - Twisted's name
        return OtherThreadPool()

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802 - Twisted's name
        f(*args, **kwargs)


@pytest.fixture
def gateway(tmp_path):
    clock = ThreadedClock()
    clock.advance(T0)
    gw = Gateway(clock, f"sqlite:///{tmp_path / 'gateway.db'}")
    gw.load_fixtures_dir(str(ROOT / "fixtures" / "demo"))
    outbox_rows = [gw.outbox.values(kind="reply", source="10086", dest=f"138{i:08d}", text="x") for i in range(300)]
    for i, row in enumerate(outbox_rows):
        row["state"] = ("delivered", "queued", "failed")[i % 3]
    log_rows = [{"direction": "MO" if i % 2 else "MT", "channel": "sms", "source": "13800000001", "dest": "10086",
                 "text": "200", "message_id": f"m{i}", "at": T0 - 3600 + i * 10} for i in range(300)]
    with gw.db() as session, session.begin():
        session.execute(insert(OutboxMessage.__table__), outbox_rows)
        session.execute(insert(MessageLog.__table__), log_rows)
        session.execute(text("ANALYZE"))
    yield gw
    gw.engine.dispose()


def _statements(gateway):
    seen: list[tuple[bool, str, object]] = []
    main = threading.get_ident()

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((threading.get_ident() == main, statement, parameters))

    event.listen(gateway.engine, "before_cursor_execute", record)
    return seen


def _plan(gateway, statement: str, parameters) -> str:
    with gateway.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return " | ".join(row[-1] for row in rows)


def test_metrics_and_the_first_dashboard_ticks_scan_nothing_on_the_reactor_thread(gateway):
    seen = _statements(gateway)
    metrics = GatewayMetrics()
    refresh_from_db(metrics, gateway)
    source = dashboard.StatsSource(gateway)
    first = source.current()
    gateway.reactor.advance(1)
    source.current()
    rendered = metrics.render().decode()
    assert 'gateway_outbox_depth{state="queued"} 100.0' in rendered, "the counts from the thread pool"
    assert first["outbox"]["delivered"] == 100 and first["sms"]["in_total"] == 150
    on_reactor = [(s, p) for main, s, p in seen if main and s.lstrip().upper().startswith("SELECT")]
    in_pool = [s for main, s, _ in seen if not main]
    assert any("GROUP BY outbox.state" in s for s in in_pool), "the outbox count by state runs in the pool"
    assert on_reactor, "the per-minute SMS rates are read on the reactor thread"
    for statement, parameters in on_reactor:
        plan = _plan(gateway, statement, parameters)
        scans = [step for step in plan.split(" | ") if step.startswith("SCAN")]
        assert not scans, f"{statement!r} scans: {plan}"


def test_the_live_states_are_counted_at_every_refresh_the_final_ones_every_five_minutes(gateway):
    from gateway.metrics import FINAL_COUNT_S, outbox_figures

    seen = _statements(gateway)
    figures = outbox_figures(gateway)
    assert figures.get() is not None  # the pool here runs at once
    assert (figures.value.depth["queued"], figures.value.depth["delivered"]) == (100, 100)
    with gateway.db() as session, session.begin():
        session.execute(text("UPDATE outbox SET state = 'delivered' WHERE state = 'queued'"))
    gateway.reactor.advance(10)
    figures.get()
    assert (figures.value.depth["queued"], figures.value.depth["delivered"]) == (0, 100), "totals wait"
    counts = [s for _, s, p in seen if "GROUP BY outbox.state" in s]
    assert len(counts) == 3, "live, final, then live only"
    gateway.reactor.advance(FINAL_COUNT_S)
    figures.get()
    assert (figures.value.depth["queued"], figures.value.depth["delivered"]) == (0, 200)
    # each count walks the state index over its own states only
    for statement in counts:
        parameters = next(p for _, s, p in seen if s == statement)
        plan = _plan(gateway, statement, parameters)
        assert "ix_outbox_due" in plan and not [x for x in plan.split(" | ") if x.startswith("SCAN outbox ")], plan
