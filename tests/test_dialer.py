"""The sans-IO dialer on a fake clock: attempts and back-off inside the window, pacing, agents and
abandoned calls, the outbound IVR keys, and never a call to an excluded number (seeded population)."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from core import db
from core.fixtures import load_set, parse_set, read_dir
from gateway.sections import all_sections
from ivr.dialer import Cancel, Dial, Dialer, Hangup, OptOut, Order, Prompt, Record, Refused
from ivr.dialer_project import agents_for, allowed_fn, dial_config
from ivr.dialer_sim import CalleeModel, CalleeNetwork, SimClock, run
from ivr.sip.uac import Answered, DtmfReceived, Failed, HungUp
from notifier import policy
from notifier.project_models import DoNotCall
from notifier.projects_plan import Target, WeekCalls, decide, plan, voice_histories
from offers.models import Refusal, Subscriber, Subscription
from offers.population import generate

ROOT = Path(__file__).resolve().parent.parent
CST = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 12, 2, tzinfo=CST).timestamp()
TZ = "Asia/Shanghai"


@pytest.fixture(scope="module")
def parsed():
    result, problems = parse_set(read_dir(ROOT / "fixtures" / "demo"), all_sections())
    assert problems == []
    return result


def targets(n: int, offer: str = "LL20", start: float = DAY + 10 * 3600) -> list[Target]:
    return [Target(f"1390000{i:04d}", offer, "C", TZ, False, 1.0, start) for i in range(n)]


def make(parsed, project_id: str, population: list[Target], clock: SimClock, agents: int | None = None,
         all_day: bool = False, week: WeekCalls | None = None, **overrides):
    book = parsed["notifier.projects"]
    project = book.get(project_id)
    start, end = (-math.inf, math.inf) if all_day else (DAY + project.window[0], DAY + project.window[1])
    config = dial_config(project, agents_for(project, start, end, agents), **overrides)
    return Dialer(config, population, now=clock, rng=random.Random(5), allowed=allowed_fn(project, book, TZ),
                  week=week), project


def kinds(commands, kind):
    return [c for c in commands if isinstance(c, kind)]


def test_busy_number_is_retried_after_the_back_off_up_to_the_attempt_limit(parsed):
    clock = SimClock(DAY + 10 * 3600)
    dialer, project = make(parsed, "data-alert-call", targets(1), clock, agents=1, pacing="progressive")
    dial_times, records = [], []
    while len(records) < project.attempts:
        clock.t = max(clock.t, dialer.next_deadline())
        for command in dialer.advance():
            if isinstance(command, Dial):
                dial_times.append(clock.t)
                clock.t += 1
                records += kinds(dialer.on_event(Failed(command.call_id, 486, "Busy Here")), Record)
    assert [r.outcome for r in records] == ["busy"] * 3 and [r.attempt for r in records] == [1, 2, 3]
    assert dial_times[1] - dial_times[0] == pytest.approx(1 + 1800)
    assert dial_times[2] - dial_times[1] == pytest.approx(1 + 7200)
    assert dialer.done and dialer.active_calls == 0


def _dial_until(dialer, clock, until: float, status: int) -> list[float]:
    """Answer every dial with ``status``; the times of the dials."""
    times = []
    while (deadline := dialer.next_deadline()) is not None and deadline <= until:
        clock.t = max(clock.t, deadline)
        for command in dialer.advance():
            if isinstance(command, Dial):
                times.append(clock.t)
                clock.t += 1
                dialer.on_event(Failed(command.call_id, status, "x"))
    return times


def test_calls_per_week_count_busy_and_unanswered_attempts_not_network_failures(parsed):
    """At most 2 calls a week as the subscriber counts them: two busy attempts use up the week (the
    third waits until the first leaves it); attempts that failed in the network do not count."""
    clock = SimClock(DAY + 10 * 3600)
    week = WeekCalls(2)
    busy, _ = make(parsed, "data-alert-call", targets(1), clock, agents=1, pacing="progressive", week=week,
                   all_day=True)
    assert _dial_until(busy, clock, DAY + 20 * 3600, 486) == [DAY + 10 * 3600, pytest.approx(DAY + 10 * 3600 + 1801)]
    assert busy.next_deadline() == pytest.approx(DAY + 10 * 3600 + 7 * 86400)  # a week after the first call
    assert _dial_until(busy, clock, DAY + 10 * 3600 + 7 * 86400, 486)[0] == pytest.approx(DAY + 10 * 3600 + 7 * 86400)

    clock = SimClock(DAY + 10 * 3600)
    failing, project = make(parsed, "data-alert-call", targets(1), clock, agents=1, pacing="progressive",
                            week=WeekCalls(2))
    assert len(_dial_until(failing, clock, DAY + 20 * 3600, 503)) == project.attempts == 3
    assert failing.done


def test_calls_per_week_start_from_the_plans_history_and_are_shared_by_projects(parsed):
    clock = SimClock(DAY + 10 * 3600)
    week = WeekCalls(2)
    called_yesterday = [dataclasses.replace(t, week_calls=(DAY - 86400 + 15 * 3600,)) for t in targets(1)]
    first, _ = make(parsed, "data-alert-call", called_yesterday, clock, agents=1, pacing="progressive", week=week)
    assert len(_dial_until(first, clock, DAY + 20 * 3600, 480)) == 1  # one call left this week
    assert first.next_deadline() == pytest.approx(DAY - 86400 + 15 * 3600 + 7 * 86400)
    other, _ = make(parsed, "upgrade-5g-call", targets(1), SimClock(DAY + 11 * 3600), agents=1, week=week)
    assert kinds(other.advance(), Dial) == []  # the same number, another project: the week is used up
    assert WeekCalls(0).free_at("13900000000", DAY) is None


def test_retry_past_the_window_waits_for_the_next_days_window_and_ring_timeout_cancels(parsed):
    clock = SimClock(DAY + 19 * 3600 + 50 * 60)  # 19:50, the window ends at 20:00
    dialer, project = make(parsed, "data-alert-call", targets(1, start=clock.t), clock, agents=1,
                           pacing="progressive", all_day=True)
    dial = kinds(dialer.advance(), Dial)[0]
    clock.t = dialer.next_deadline()
    assert clock.t == pytest.approx(DAY + 19 * 3600 + 50 * 60 + project.pacing.ring_timeout_s)
    out = dialer.advance()
    assert kinds(out, Cancel) == [Cancel(dial.call_id)] and kinds(out, Record)[0].outcome == "no_answer"
    retry_at = dialer.next_deadline()
    assert retry_at == pytest.approx(DAY + 86400 + 9 * 3600)  # 20:20 is past the window: 09:00 next day
    assert dialer.on_event(Answered(dial.call_id)) == []  # a late answer of a cancelled call changes nothing


def test_progressive_never_rings_more_than_the_idle_agents(parsed):
    clock = SimClock(DAY + 10 * 3600)
    dialer, _ = make(parsed, "upgrade-5g-call", targets(200), clock, agents=4)
    network = CalleeNetwork(CalleeModel(), random.Random(1), clock)
    peak = [0]

    def watch(command) -> None:
        idle = dialer.queue.agents_on_shift - dialer._talking - dialer._waiting
        peak[0] = max(peak[0], dialer._ringing - idle)
    records = run(dialer, network, clock, DAY + 12 * 3600, watch)
    assert records and peak[0] <= 0
    assert dialer.summary()["abandoned"] == 0


def test_answered_call_without_a_free_agent_for_2s_is_abandoned(parsed):
    clock = SimClock(DAY + 10 * 3600)
    dialer, _ = make(parsed, "data-alert-call", targets(10), clock, agents=3, pacing="predictive")
    dials = kinds(dialer.advance(), Dial)
    assert len(dials) == 4  # predictive: more calls ringing than agents free
    clock.t += 5
    for dial in dials[:3]:
        assert not kinds(dialer.on_event(Answered(dial.call_id)), Record)  # each takes an agent
    late = dials[3]
    assert not kinds(dialer.on_event(Answered(late.call_id)), Record)
    clock.t += 1.9
    assert not kinds(dialer.advance(), Record)
    clock.t += 0.2
    out = dialer.advance()
    assert kinds(out, Hangup) == [Hangup(late.call_id)] and kinds(out, Record)[0].outcome == "abandoned"
    assert dialer.summary()["abandoned"] == 1


def test_outbound_ivr_keys(parsed):
    """1 orders, 2 plays the offer again (three hearings at most), 3 refuses the product, 9 opts out;
    a hang-up after the offer is no refusal."""
    clock = SimClock(DAY + 11 * 3600)
    dialer, project = make(parsed, "video-ivr", targets(5, "SPHY", clock.t), clock)
    dials = kinds(dialer.advance(), Dial)
    assert len(dials) == 5 and all(d.offer == "SPHY" for d in dials)
    prompts = [kinds(dialer.on_event(Answered(d.call_id)), Prompt)[0] for d in dials]
    assert prompts[0].text == project.prompt and prompts[0].state == "menu"
    assert "按3" in project.prompt
    out = dialer.on_event(DtmfReceived(dials[0].call_id, "1"))
    assert kinds(out, Order) == [Order(dials[0].call_id, dials[0].msisdn, "SPHY")]
    assert kinds(out, Record)[0].outcome == "accepted"
    assert kinds(dialer.on_event(DtmfReceived(dials[1].call_id, "2")), Prompt)[0].text == project.prompt
    out = dialer.on_event(DtmfReceived(dials[1].call_id, "9"))
    assert kinds(out, OptOut) == [OptOut(dials[1].call_id, dials[1].msisdn)]
    out = dialer.on_event(HungUp(dials[2].call_id, True))
    assert kinds(out, Record)[0].outcome == "hungup" and not kinds(out, Order) and not kinds(out, Refused)
    assert kinds(dialer.on_event(DtmfReceived(dials[3].call_id, "2")), Prompt)  # hear it again, then not interested
    assert not dialer.on_event(DtmfReceived(dials[3].call_id, "7"))  # not a key of this menu: ignored
    out = dialer.on_event(DtmfReceived(dials[3].call_id, "3"))
    assert kinds(out, Refused) == [Refused(dials[3].call_id, dials[3].msisdn, "SPHY")]
    assert kinds(out, Record)[0].outcome == "refused" and kinds(out, Hangup) and not kinds(out, Order)
    for _ in range(2):  # the third hearing is the last: a 2 after it ends the call without an order
        assert kinds(dialer.on_event(DtmfReceived(dials[4].call_id, "2")), Prompt)
    out = dialer.on_event(DtmfReceived(dials[4].call_id, "2"))
    assert kinds(out, Record)[0].outcome == "hungup" and not kinds(out, Refused) and not kinds(out, Prompt)
    assert dialer.summary()["outcomes"] == {"accepted": 1, "hungup": 2, "opted_out": 1, "refused": 1}


def test_predictive_keeps_abandons_under_the_ceiling_and_agents_busy(parsed):
    clock = SimClock(DAY + 9 * 3600)
    dialer, project = make(parsed, "data-alert-call", targets(6000, start=clock.t), clock, agents=20)
    network = CalleeNetwork(CalleeModel(answer_rate=0.45), random.Random(2), clock)
    run(dialer, network, clock, DAY + 12 * 3600)
    summary = dialer.summary()
    assert summary["answered"] > 1000
    assert summary["abandon_rate"] <= project.pacing.abandon_ceiling
    assert summary["occupancy"] >= 0.8
    buckets = summary["over_time"]
    assert len(buckets) == 12 and all(0.5 < b["occupancy"] <= 1.0 for b in buckets[1:])
    assert dialer.summary()["over_time"] == buckets  # reading the figures does not change them


def test_the_dialer_never_calls_an_excluded_number(parsed, tmp_path):
    """A seeded population with opt-outs, do-not-call numbers, refusals and subscriptions: every number
    the dialer dials passes the voice policy, and no excluded or SMS-preferring number is dialled."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate(engine)
    factory = db.session_factory(engine)
    at = DAY + 10 * 3600
    parsed = dict(parsed)
    with db.transaction(factory) as session:
        load_set(session, parsed, all_sections(), at)
        generate(session, 3000, seed=42, now=at)
    rng = random.Random(42)
    with db.transaction(factory) as session:
        numbers = list(session.scalars(select(Subscriber.msisdn)))
        listed = set(session.scalars(select(DoNotCall.msisdn)))
        for msisdn in rng.sample([n for n in numbers if n not in listed], 300):
            session.add(DoNotCall(msisdn=msisdn, added_at=at, source="test"))
        for msisdn in rng.sample(numbers, 300):
            session.add(Refusal(msisdn=msisdn, offer_code=rng.choice(["LL20", "LL30", "LL10"]),
                                at=at - rng.uniform(0, 120) * 86400, source="test"))
        for msisdn in rng.sample(numbers, 150):
            session.add(Subscription(msisdn=msisdn, offer_code="LL20", started_at=at - 86400, channel="sms"))
    book, params = parsed["notifier.projects"], parsed["notifier.contact_policy"]
    project = book.get("data-alert-call")
    with factory() as session:
        result = plan(session, book, project.id, at, params)
        rows = {r.msisdn: r for r in session.execute(select(Subscriber.__table__))}
        histories = voice_histories(session.connection(), min(numbers), max(numbers), project, at, book, params)
    assert sum(result.excluded.values()) > 300 and result.sms_instead
    clock = SimClock(at)
    dialer, _ = make(parsed, project.id, result.targets, clock, agents=30)
    network = CalleeNetwork(CalleeModel(), random.Random(7), clock)
    run(dialer, network, clock, at + 10 * 3600)
    dialled = set(network.dialled)
    assert dialled == {t.msisdn for t in result.targets}
    from notifier.campaign_sections import LazyFacts
    from notifier.projects_plan import EMPTY

    for msisdn in dialled:
        decision = decide(LazyFacts(rows[msisdn]._mapping), histories.get(msisdn, EMPTY), project, book, params, at)
        assert decision.ok, (msisdn, decision)
    excluded = {m for m in numbers if not decide(LazyFacts(rows[m]._mapping), histories.get(m, EMPTY), project, book,
                                                 params, at).ok}
    assert not dialled & excluded
    assert isinstance(params, policy.PolicyParams)
    engine.dispose()
