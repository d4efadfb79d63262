"""Busy-hour, IVR and survey reports from rows (data in, data out), plus the once-a-day sampler."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from core.db import Base, import_models, make_engine
from ivr.effects import sampled
from ivr.models import BusyHourSms, Call, Survey
from ivr.reports import busy_hour_report, ivr_report
from notifier.models import MessageLog
from notifier.surveys import survey_report

T = 1_795_000_000.0
DAY = 86400.0


@pytest.fixture
def session(tmp_path):
    import_models()
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s


def _busy(msisdn: str, sampled_: bool, reason: str = "over_threshold", at: float = T) -> BusyHourSms:
    return BusyHourSms(msisdn=msisdn, day="2026-11-18", call_id=f"c-{msisdn}", brand="mzone", reason=reason,
                       sampled=sampled_, decided_at=at, sent_at=at if sampled_ else None)


def _mo(msisdn: str, at: float, channel: str = "sms", dest: str = "10086") -> MessageLog:
    return MessageLog(direction="MO", channel=channel, source=msisdn, dest=dest, text="200", at=at)


def _call(caller: str, *, started: float, queued: float | None = None, agent: float | None = None,
          outcome: str = "handled", queue: str | None = "general", agent_id: str | None = "1001",
          busy: bool = False) -> Call:
    return Call(call_id=f"{caller}-{started}", caller=caller, service="10086", brand="mzone", started_at=started,
                answered_at=started, queued_at=queued, agent_at=agent, ended_at=(agent or started) + 60,
                agent=agent_id if agent else None, queue=queue if queued else None, busy=busy, outcome=outcome,
                ended_by="caller")


def test_busy_hour_report_counts_diversion_holdout_and_answer_rates(session):
    session.add_all([
        _busy("1", True), _busy("2", True, "abandon"), _busy("3", True), _busy("4", False), _busy("5", False),
        _mo("1", T + 600),                      # SMS'd, then texted 200: diverted, no agent after
        _mo("2", T + 300, channel="ussd", dest="*200#"),  # diverted by USSD, but also reached an agent
        _call("2", started=T + 900, queued=T + 910, agent=T + 1000),
        _mo("3", T + 2 * DAY),                  # too late: not diverted
        _mo("4", T + 60, dest="13900000000"),   # an MT-like text elsewhere: not self-service
        _call("5", started=T + 100, queued=T + 110, agent=T + 200),  # holdout served by an agent
    ])
    session.commit()
    report = busy_hour_report(session, T + 3 * DAY)
    assert report["sent"] == 3 and report["holdout"] == 2
    assert report["by_reason"] == {"over_threshold": 2, "abandon": 1}
    assert report["diverted"] == 2 and report["diverted_holdout"] == 0
    assert report["agent_calls_avoided"] == 1
    assert report["answer_rate_with"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["answer_rate_without"] == 0.5


def test_busy_hour_report_empty(session):
    report = busy_hour_report(session, T)
    assert report["sent"] == 0 and report["answer_rate_with"] is None and report["diverted"] == 0


def test_ivr_report_service_level_and_asa(session):
    session.add_all([
        _call("a", started=T, queued=T + 5, agent=T + 10),
        _call("b", started=T, queued=T + 5, agent=T + 65, agent_id="1002"),
        _call("c", started=T, queued=T + 5, outcome="abandoned", busy=True),
        _call("d", started=T, outcome="self_service"),
        _call("e", started=T, outcome="balance", queue=None),
    ])
    session.commit()
    report = ivr_report(session, T + 100)
    assert report["calls"] == 5
    assert report["by_outcome"]["handled"] == 2 and report["by_outcome"]["balance"] == 1
    queue = report["queue"]
    assert (queue["offered"], queue["answered"], queue["abandoned"], queue["busy"]) == (3, 2, 1, 1)
    assert queue["service_level"] == pytest.approx(1 / 3, abs=1e-4)
    assert queue["asa_s"] == 32.5
    assert report["by_agent"] == {"1001": 1, "1002": 1}
    assert report["by_queue"]["general"]["offered"] == 3


def test_survey_report_histogram_satisfaction_and_groups(session):
    rows = [("1001", "general", 5), ("1001", "general", 4), ("1002", "vip", 2), ("1002", "vip", None)]
    for i, (agent, queue, score) in enumerate(rows):
        session.add(Survey(call_id=f"c{i}", msisdn=f"1380000000{i}", agent=agent, queue=queue, mode="sms",
                           sent_at=T, expires_at=T + DAY, score=score, answered_at=T + 60 if score else None))
    session.commit()
    report = survey_report(session, T + 2 * DAY)
    assert report["responses"] == 3 and report["histogram"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}
    assert report["mean"] == pytest.approx(3.67, abs=0.01)
    assert report["satisfaction"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["expired"] == 1 and report["sent"] == 4
    assert report["by_agent"]["1001"] == {"responses": 2, "mean": 4.5, "satisfaction": 1.0}
    assert report["by_queue"]["vip"]["satisfaction"] == 0.0
    assert list(report["by_day"]) == ["2026-11-18"]
    assert {i["score"] for i in report["items"]} == {5, 4, 2}
    assert set(report["items"][0]) >= {"msisdn", "score", "call_id", "at"}


def test_sampler_is_stable_per_caller_and_day_and_close_to_the_ratio():
    assert sampled("13800000001", "2026-11-18", 1, 0.3) == sampled("13800000001", "2026-11-18", 1, 0.3)
    hits = sum(sampled(f"138{n:08d}", "2026-11-18", 1, 0.3) for n in range(20000))
    assert 0.28 < hits / 20000 < 0.32
    assert not any(sampled(f"138{n:08d}", "d", 1, 0.0) for n in range(1000))
    assert all(sampled(f"138{n:08d}", "d", 1, 1.0) for n in range(1000))
