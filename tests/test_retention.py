"""Retention: the daily job deletes finished outbox rows and message-log rows older than the
``retention.*`` knobs, in bounded batches, never a queued or unsent row; query_sm is an index lookup."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select, text
from twisted.internet import defer

from core import db
from core.settings import Settings
from gateway.scheduler import RETENTION_JOB, CampaignScheduler
from notifier.models import MessageLog, OutboxMessage
from notifier.outbox import DAY, Outbox, apply_retention, purge_outbox
from tests.test_notifier_campaigns import campaign_yaml, make_book
from tests.test_scheduler import Reactor

NOW = 1_790_000_000.0
OLD = NOW - 40 * DAY
RECENT = NOW - 2 * DAY


@pytest.fixture
def factory(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/r.db")
    db.migrate(engine)
    yield db.session_factory(engine)
    engine.dispose()


def _row(outbox: Outbox, name: str, state: str, at: float) -> OutboxMessage:
    values = outbox.values(kind="reply", source="10086", dest="13800000001", text=name, message_id=name)
    values.update(state=state, created_at=at, next_attempt_at=at)
    if state in ("delivered", "failed", "expired"):
        values["done_at"] = at + 5
    if state in ("sent", "delivered"):
        values["sent_at"] = at + 1
    return OutboxMessage(**values)


def _fill(factory) -> None:
    outbox = Outbox(lambda: NOW, Settings())
    with db.transaction(factory) as session:
        for state in ("delivered", "failed", "expired", "sent", "queued", "sending"):
            session.add(_row(outbox, f"old-{state}", state, OLD))
        for state in ("delivered", "sent", "queued"):
            session.add(_row(outbox, f"new-{state}", state, RECENT))
        for i, at in enumerate((OLD, OLD + 1, RECENT)):
            session.add(MessageLog(direction="MO", channel="sms", source="13800000001", dest="10086", text="200",
                                   message_id=f"mo{i}", at=at))


def _left(factory) -> tuple[set[str], set[str]]:
    with factory() as session:
        return (set(session.scalars(select(OutboxMessage.message_id))),
                set(session.scalars(select(MessageLog.message_id))))


def _scheduler(factory, settings: Settings) -> CampaignScheduler:
    return CampaignScheduler(Reactor(), factory, Outbox(lambda: NOW, settings), lambda: make_book(campaign_yaml("c1")), settings,
                             now=lambda: NOW, in_thread=lambda f: defer.maybeDeferred(f))


def test_old_finished_rows_go_queued_and_recent_rows_stay_and_the_counts_are_logged(factory, caplog):
    _fill(factory)
    sched = _scheduler(factory, Settings())
    with caplog.at_level(logging.INFO, logger="gateway.scheduler"):
        counts = sched.retention()
    assert counts == {"outbox": 4, "message_log": 2}
    outbox, log = _left(factory)
    assert outbox == {"old-queued", "old-sending", "new-delivered", "new-sent", "new-queued"}
    assert log == {"mo2"}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention:")]
    assert "deleted 4 outbox rows" in line and "2 message_log rows" in line and "30.0 days" in line


def test_the_knobs_set_the_age(factory):
    _fill(factory)
    counts = apply_retention(factory, NOW, Settings({"retention.outbox_days": 1, "retention.message_log_days": 50}))
    assert counts == {"outbox": 6, "message_log": 0}, "4 old and the recent delivered and sent rows"
    assert _left(factory)[0] == {"old-queued", "old-sending", "new-queued"}


def test_rows_go_in_bounded_batches(factory):
    _fill(factory)
    with factory() as session, session.begin():
        assert purge_outbox(session, NOW - 30 * DAY, batch=3) == 3
    assert apply_retention(factory, NOW, Settings(), batch=1) == {"outbox": 1, "message_log": 2}


def test_the_daily_job_is_scheduled_on_the_leader(factory):
    sched = _scheduler(factory, Settings({"retention.hour": 4}))
    sched.start()
    try:
        assert RETENTION_JOB in sched.job_ids()
        job = sched.scheduler.get_job(RETENTION_JOB)
        assert "hour='4'" in str(job.trigger)
    finally:
        sched.stop()


def _plan(factory, sql: str, **params) -> str:
    with factory() as session:
        return " | ".join(row[-1] for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}"), params))


def test_query_sm_by_message_id_is_an_index_lookup(factory):
    outbox_plan = _plan(factory, "SELECT * FROM outbox WHERE message_id = :m", m="x")
    log_plan = _plan(factory, "SELECT id FROM message_log WHERE message_id = :m", m="x")
    assert "USING INDEX" in outbox_plan and "SCAN" not in outbox_plan, outbox_plan
    assert "ix_message_log_message_id" in log_plan and "SCAN" not in log_plan, log_plan
