"""The campaign scheduler: jobs from the fixture, run_now / pause / resume / reload, leadership."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from twisted.internet import defer, task

import notifier.campaign_models  # noqa: F401 - registers the tables
from core import db
from core.settings import Settings
from gateway.scheduler import CHECK_JOB, RETENTION_JOB, CampaignScheduler
from notifier import reports
from notifier.campaign_models import CampaignState
from notifier.models import OutboxMessage
from notifier.outbox import Outbox
from offers.models import Subscriber
from tests.test_notifier_campaigns import AT, campaign_yaml, make_book


class Reactor(task.Clock):
    """task.Clock plus the one thread hop APScheduler's TwistedScheduler makes."""

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802 - Twisted's name
        f(*args, **kwargs)


def make_factory(url: str):
    engine = db.make_engine(url)
    db.import_models()
    db.Base.metadata.drop_all(engine)
    db.Base.metadata.create_all(engine)
    return db.session_factory(engine)


@pytest.fixture
def factory(tmp_path):
    factory = make_factory(f"sqlite:///{tmp_path}/s.db")
    with db.transaction(factory) as session:
        for i in range(1, 6):
            session.add(Subscriber(msisdn=f"1380000000{i}", brand="gotone", high_data=True))
    return factory


def make_scheduler(factory, book_ref: list, reactor=None) -> CampaignScheduler:
    reactor = reactor or Reactor()
    return CampaignScheduler(reactor, factory, Outbox(lambda: AT, Settings()), lambda: book_ref[0], Settings(),
                             now=lambda: AT, in_thread=lambda f: defer.maybeDeferred(f))


def result_of(d: defer.Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "deferred did not fire"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_jobs_come_from_the_fixture_and_reload_rebuilds_them(factory) -> None:
    book = [make_book(campaign_yaml("c1"), campaign_yaml("c2", hour=14))]
    sched = make_scheduler(factory, book)
    sched.start()
    try:
        assert sched.is_leader
        assert sched.job_ids() == sorted([CHECK_JOB, RETENTION_JOB, "c1", "c2"])
        book[0] = make_book(campaign_yaml("c1"), campaign_yaml("c3", hour=16))
        sched.reload()
        assert sched.job_ids() == sorted([CHECK_JOB, RETENTION_JOB, "c1", "c3"])
    finally:
        sched.stop()
    assert not sched.is_leader and sched.job_ids() == []


def test_run_now_plans_and_materialises_once(factory) -> None:
    sched = make_scheduler(factory, [make_book(campaign_yaml("c1"))])
    first = result_of(sched.run_now("c1"))
    assert first["status"] == "ready" and first["created"] == 5
    again = result_of(sched.run_now("c1"))
    assert again["already_sent"] == 5 and again["created"] == 0
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 5
    with pytest.raises(KeyError, match="unknown campaign 'nope'"):
        sched.run_now("nope")


def test_pause_and_resume(factory) -> None:
    sched = make_scheduler(factory, [make_book(campaign_yaml("c1"))])
    sched.start()
    try:
        sched.pause("c1")
        assert sched.scheduler.get_job("c1").next_run_time is None
        assert result_of(sched.run_now("c1"))["status"] == "paused"
        with factory() as session:
            assert session.get(CampaignState, "c1").state == "paused"
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        sched.resume("c1")
        assert sched.scheduler.get_job("c1").next_run_time is not None
        assert result_of(sched.run_now("c1"))["created"] == 5
    finally:
        sched.stop()


def test_early_warning_job_pauses_the_campaign_job(factory) -> None:
    thresholds = "  thresholds: {complaint_rate: 0.2, min_sent: 5}\n"
    sched = make_scheduler(factory, [make_book(campaign_yaml("c1", extra=thresholds))])
    sched.start()
    try:
        result_of(sched.run_now("c1"))
        with db.transaction(factory) as session:
            reports.record_complaint(session, "13800000001", AT + 3600, campaign_id="c1")
            reports.record_complaint(session, "13800000002", AT + 3600, campaign_id="c1")
        sched._check()
        assert sched.scheduler.get_job("c1").next_run_time is None
    finally:
        sched.stop()


@pytest.mark.postgres
def test_only_one_leader_and_takeover_on_postgres(pg_url) -> None:
    factory = make_factory(pg_url)
    book = [make_book(campaign_yaml("c1"))]
    reactor = Reactor()
    first, second = make_scheduler(factory, book, reactor), make_scheduler(factory, book, reactor)
    first.start()
    second.start()
    try:
        assert first.is_leader and not second.is_leader
        first.stop()  # the leader goes away, its connection and lock with it ...
        deadline = time.monotonic() + 10
        while not second.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)  # ... once the server's backend has exited (its own time, not the fake clock's)
            reactor.advance(second.retry_s)
        assert second.is_leader
    finally:
        first.stop()
        second.stop()

