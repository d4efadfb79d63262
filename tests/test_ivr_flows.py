"""ivr.flows.IvrApp on a task.Clock, driven by SIP datagrams (no sockets), with the demo gateway's
database and outbox: menus, 1008611, the agent queue, busy-hour guidance SMS and surveys."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from ivr.models import BusyHourSms, Call, Survey
from notifier.models import OutboxMessage
from offers.models import Subscriber
from offers.router import Inbound
from tests.test_ivr_support import NIGHT, T0, Caller, IvrWorld, prompt, requests, state

MZONE, GOTONE, EASYOWN = "13800000001", "13800000002", "13800000006"


def outbox(world: IvrWorld, kind: str | None = None) -> list[OutboxMessage]:
    world.flush()
    with world.session() as s:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        return [r for r in s.scalars(query) if kind is None or r.kind == kind]


def rows(world: IvrWorld, model) -> list:
    world.flush()
    with world.session() as s:
        return list(s.scalars(select(model).order_by(model.id)))


def balance_of(world: IvrWorld, msisdn: str) -> float:
    with world.session() as s:
        return s.get(Subscriber, msisdn).balance


@pytest.fixture
def world(tmp_path):
    return IvrWorld(tmp_path)


def test_menu_walk_balance_submenu_and_hangup(world):
    caller = Caller(world, MZONE)
    ok = caller.call()
    assert state(ok) == "menu" and "Welcome" in prompt(ok) and "欢迎" in prompt(ok)
    data = caller.key("3")
    assert state(data) == "menu" and "Data:" in prompt(data)
    back = caller.key("*")
    assert "Welcome" in prompt(back)
    said = caller.key("1")
    amount = re.search(r"Your balance is (\d+\.\d{2}) yuan", prompt(said)).group(1)
    assert float(amount) == pytest.approx(balance_of(world, MZONE), abs=0.005)
    bad = caller.key("7")
    assert state(bad) == "menu" and "not valid" in prompt(bad)
    bye = caller.key("9")
    assert state(bye) == "bye" and "Goodbye" in prompt(bye)
    sent = requests(caller.last, "BYE")
    assert sent and state(sent[0]) == "bye"
    caller.answer(sent[0])
    [call] = rows(world, Call)
    assert (call.caller, call.service, call.brand, call.outcome, call.ended_by) == \
        (MZONE, "10086", "mzone", "self_service", "gateway")


def test_brand_picks_its_start_menu(world):
    ok = Caller(world, GOTONE).call()
    assert "全球通" in prompt(ok) and "account manager" in prompt(ok)


def test_unknown_number_is_404_with_a_prompt(world):
    response = Caller(world, MZONE, number="12345").invite()
    assert response.status == 404 and state(response) == "bye" and "12345" in prompt(response)
    [call] = rows(world, Call)
    assert call.outcome == "not_found"


def test_1008611_answers_hangs_up_and_sends_the_balance(world):
    caller = Caller(world, EASYOWN, number="1008611")
    ok = caller.invite()
    assert ok.status == 200 and state(ok) == "bye" and "SMS" in prompt(ok)
    bye = requests(caller.ack(), "BYE")
    assert bye and state(bye[0]) == "bye"
    [sms] = outbox(world)
    amount = re.search(r"(\d+\.\d{2})元", sms.text).group(1)
    assert amount == f"{balance_of(world, EASYOWN):.2f}"
    assert (sms.source, sms.dest, sms.account, sms.channel) == ("10086", EASYOWN, "tester", "smpp")
    assert world.pokes >= 1
    assert rows(world, Call)[0].outcome == "balance"


def test_shelf_by_sms_goes_through_the_router(world):
    caller = Caller(world, MZONE)
    caller.call()
    said = caller.key("2")
    assert "SMS" in prompt(said) and state(said) == "menu"
    [sms] = outbox(world)
    assert sms.kind == "reply" and sms.dest == MZONE and "KT" in sms.text


def test_silence_ends_the_call_after_the_no_input_limit(world):
    caller = Caller(world, MZONE)
    caller.call()
    assert world.advance(25) == []  # two silences: no state change, nothing on the wire
    out = world.advance(10)
    bye = requests(out, "BYE")[0]  # resent until answered (Timer E)
    assert "did not get a key" in prompt(bye) and "Goodbye" in prompt(bye)


def test_invalid_keys_past_the_limit_say_goodbye(world):
    caller = Caller(world, MZONE)
    caller.call()
    for _ in range(3):
        assert state(caller.key("7")) == "menu"
    last = caller.key("7")
    assert state(last) == "bye" and requests(caller.last, "BYE")


def _queue_world(tmp_path, start: float = T0, **knobs) -> IvrWorld:
    base = {"ivr.agents": 1, "ivr.queue_busy_threshold": 1, "ivr.agent_aht_s": 60, "ivr.patience_s": 10_000}
    return IvrWorld(tmp_path, start=start, **{**base, **knobs})


def test_busy_queue_sends_brand_guidance_once_a_day(tmp_path):
    world = _queue_world(tmp_path)
    first, second, third = Caller(world, "13800000003"), Caller(world, MZONE), Caller(world, GOTONE)
    for c in (first, second, third):
        c.call()
    talking = first.key("0")
    assert state(talking) == "agent" and "Agent 1001" in prompt(talking)
    waiting = second.key("0")
    # busy hours, but 60 s expected wait is under the 180 s threshold and nobody waits yet: not busy
    assert state(waiting) == "queue" and "0 caller(s) ahead" in prompt(waiting)
    busy = third.key("0")
    assert state(busy) == "queue" and "busy" in prompt(busy)
    [sms] = outbox(world)
    assert (sms.dest, sms.source, sms.account) == (GOTONE, "10086", "tester")
    assert "全球通" in sms.text and "*200#" in sms.text and "APP" in sms.text
    third.bye()  # abandons: the same caller gets no second SMS today
    second.bye()  # abandons too: its own guidance SMS (reason abandon)
    decisions = {r.msisdn: (r.reason, r.sampled) for r in rows(world, BusyHourSms)}
    assert decisions == {GOTONE: ("over_threshold", True), MZONE: ("abandon", True)}
    texts = {r.dest: r.text for r in outbox(world)}
    assert "动感地带" in texts[MZONE] and "流量包" in texts[MZONE]
    calls = {c.caller: c for c in rows(world, Call)}
    assert calls[GOTONE].outcome == "abandoned" and calls[GOTONE].busy
    assert calls[MZONE].outcome == "abandoned" and not calls[MZONE].busy
    again = Caller(world, GOTONE)
    again.call()
    again.key("0")
    again.bye()
    assert len(outbox(world)) == 2


def test_holdout_is_recorded_without_sms(tmp_path):
    world = _queue_world(tmp_path, **{"ivr.busy_sms_ratio": 0.0, "ivr.queue_busy_threshold": 0})
    caller = Caller(world, "13800000004")
    caller.call()
    Caller(world, "13800000005").call()
    assert state(caller.key("0")) == "agent"  # a free agent: never busy
    other = Caller(world, "13800000007")
    other.call()
    assert "busy" in prompt(other.key("0"))
    [row] = rows(world, BusyHourSms)
    assert (row.msisdn, row.sampled, row.sent_at) == ("13800000007", False, None)
    assert outbox(world) == []


def test_agent_picks_up_with_an_info_then_hangs_up_and_sends_the_survey(tmp_path):
    world = _queue_world(tmp_path)
    first, second = Caller(world, EASYOWN), Caller(world, MZONE)
    first.call()
    second.call()
    first.key("0")
    second.key("0")
    out = world.advance(3600)
    infos = [m for m in requests(out, "INFO") if state(m) == "agent"]
    assert len(infos) == 1 and "Agent 1001" in prompt(infos[0])
    byes = requests(out, "BYE")
    assert len(byes) == 2 and all(state(b) == "bye" for b in byes)
    surveys = rows(world, Survey)
    assert {s.msisdn for s in surveys} == {EASYOWN, MZONE}
    assert all(s.agent == "1001" and s.queue == "general" and s.mode == "sms" for s in surveys)
    sms = outbox(world, "survey")
    assert len(sms) == 2 and "1001" in sms[0].text and "1-5" in sms[0].text
    with world.session() as s, s.begin():
        reply = world.gw.router.handle(s, Inbound("sms", MZONE, "10086", "5"), world.clock.seconds())
    assert reply.action == "survey" and "5分" in reply.text
    with world.session() as s, s.begin():
        again = world.gw.router.handle(s, Inbound("sms", MZONE, "10086", "4"), world.clock.seconds())
    assert again.action != "survey"  # answered already: the digit is not a score any more
    scored = [s for s in rows(world, Survey) if s.score is not None]
    assert [(s.msisdn, s.score) for s in scored] == [(MZONE, 5)]
    calls = rows(world, Call)
    assert {c.outcome for c in calls} == {"handled"}


def test_survey_expires(tmp_path):
    world = _queue_world(tmp_path)
    caller = Caller(world, MZONE)
    caller.call()
    caller.key("0")
    world.advance(3600)
    assert len(rows(world, Survey)) == 1
    world.clock.advance(86400 + 1)
    with world.session() as s, s.begin():
        reply = world.gw.router.handle(s, Inbound("sms", MZONE, "10086", "5"), world.clock.seconds())
    assert reply.action != "survey"


def test_survey_not_sent_below_the_minimum_or_sample(tmp_path):
    world = _queue_world(tmp_path, **{"survey.sample_rate": 0.0})
    caller = Caller(world, MZONE)
    caller.call()
    caller.key("0")
    world.advance(3600)
    assert rows(world, Survey) == []
    world2 = _queue_world(tmp_path / "b", **{"survey.min_call_s": 30})
    quick = Caller(world2, MZONE)
    quick.call()
    quick.key("0")
    world2.advance(1)
    quick.bye()
    assert rows(world2, Survey) == []


def test_ivr_survey_mode_keeps_the_caller_on(tmp_path):
    world = _queue_world(tmp_path, **{"survey.mode": "ivr"})
    caller = Caller(world, MZONE)
    caller.call()
    caller.key("0")
    out = []
    while not any(state(m) == "survey" for m in out):
        out += world.advance(1)
    [info] = [m for m in requests(out, "INFO") if state(m) == "survey"]
    assert "press 1 to 5" in prompt(info) and not requests(out, "BYE")
    done = caller.key("4")
    assert state(done) == "bye" and "(4)" in prompt(done) and requests(caller.last, "BYE")
    [survey] = rows(world, Survey)
    assert (survey.mode, survey.score, survey.agent) == ("ivr", 4, "1001")
    assert outbox(world, "survey") == []


def test_menu_survey_option_rates_the_last_call(tmp_path):
    world = _queue_world(tmp_path)
    caller = Caller(world, MZONE)
    caller.call()
    caller.key("0")
    world.advance(3600)
    first_call = rows(world, Survey)[0].call_id
    again = Caller(world, MZONE)
    again.call()
    rating = again.key("8")
    assert state(rating) == "survey"
    assert state(again.key("9")) == "survey"  # not a score
    assert state(again.key("3")) == "bye"
    [survey] = rows(world, Survey)
    assert (survey.call_id, survey.score) == (first_call, 3)
    nothing = Caller(world, GOTONE)
    nothing.call()
    assert "no recent agent call" in prompt(nothing.key("8")) or state(nothing.last[-1]) == "menu"


def test_patience_runs_out_gateway_hangs_up(tmp_path):
    world = _queue_world(tmp_path, start=NIGHT, **{"ivr.patience_s": 5, "ivr.agent_aht_s": 80_000})
    first, second = Caller(world, "13800000003"), Caller(world, MZONE)
    first.call()
    second.call()
    first.key("0")
    second.key("0")
    out = world.advance(600)
    byes = requests(out, "BYE")
    assert byes and "Sorry for the wait" in prompt(byes[0])
    [row] = rows(world, BusyHourSms)
    assert (row.msisdn, row.reason) == (MZONE, "abandon")
    outcomes = {c.caller: c.outcome for c in rows(world, Call)}
    assert outcomes[MZONE] == "abandoned"


def test_vip_is_served_first(tmp_path):
    world = _queue_world(tmp_path, **{"ivr.queue_busy_threshold": 100})
    talking, plain, vip = Caller(world, "13800000003"), Caller(world, MZONE), Caller(world, GOTONE)
    for c in (talking, plain, vip):
        c.call()
    talking.key("0")
    plain.key("0")
    vip.key("0")  # gotone's start menu sends 0 to the vip queue, priority by brand
    talking.bye()
    [info] = requests(talking.last, "INFO")
    assert info.call_id == vip.call_id and state(info) == "agent"
    assert world.app.queue.state(vip.call_id) == "talking"
    assert world.app.queue.state(plain.call_id) == "waiting"


def test_status_for_the_dashboard(tmp_path):
    world = _queue_world(tmp_path, **{"ivr.queue_busy_threshold": 1})
    talking, waiting, browsing = Caller(world, EASYOWN), Caller(world, MZONE), Caller(world, "13800000007")
    for c in (talking, waiting, browsing):
        c.call()
    talking.key("0")
    waiting.key("0")
    assert world.app.status() == {"waiting": 1, "agents": 1, "agents_busy": 1, "busy": True, "threshold": 1,
                                  "calls_in_ivr": 1}


def test_ring_before_answer(tmp_path):
    world = IvrWorld(tmp_path, **{"ivr.ring_ms": 1500})
    caller = Caller(world, MZONE)
    caller._send(caller.request("INVITE"))
    assert [m.status for m in caller.last] == [100, 180]
    assert world.advance(1.0) == []
    [ok] = world.advance(0.6)
    assert ok.status == 200 and state(ok) == "menu"


def test_a_failing_effect_still_answers_the_key(world, monkeypatch):
    caller = Caller(world, MZONE)
    caller.call()

    def broken(_msisdn):
        raise RuntimeError("database gone")

    monkeypatch.setattr(world.fx, "balance", broken)
    assert caller.key("1").status == 500
    assert state(caller.key("3")) == "menu"  # the call goes on
