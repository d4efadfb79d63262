"""The dialer service (ivr.dialer_service) on task.Clock against a fake call port: no sockets, no threads.

Only a started project dials, and only its stage's targets; a busy number is redialled after the
back-off (not before), within the calling window; the IVR's keys write a refusal and an order;
pause and close hang up the live calls and stop dialling."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select
from twisted.internet import defer, task

from core.fixtures import read_dir
from gateway.app import Gateway
from ivr.dialer_service import DialerService
from ivr.sip.uac import Answered, DtmfReceived, Failed, HungUp
from notifier import policy
from notifier.models import OutboxMessage
from notifier.project_models import ProjectCall
from notifier.projects_lifecycle import transition
from notifier.projects_plan import iter_stage, plan
from offers.models import Refusal

ROOT = Path(__file__).resolve().parent.parent
CST = ZoneInfo("Asia/Shanghai")
TEN_AM = datetime(2026, 12, 2, 10, 0, tzinfo=CST).timestamp()
PROJECT = "svc-ivr"
PROMPT = "咪咕视频会员每月15元。订购请按1,再听一遍请按2,不感兴趣请按3,今后不再接到此类来电请按9。"


class FakeCall:
    """A placed call's handle: what the service did to it; ``event`` plays the UAC's report."""

    def __init__(self, msisdn: str, headers: dict, on_event) -> None:
        self.msisdn, self.headers, self.on_event = msisdn, dict(headers), on_event
        self.prompts: list[tuple[str, str | None, dict]] = []
        self.hung_up = False  # by the service
        self.ended = False  # by the callee (the test)
        self.at: datetime | None = None  # when it was placed, local time

    def send_prompt(self, text: str, state: str | None = None, headers: dict | None = None) -> None:
        self.prompts.append((text, state, dict(headers or {})))

    def hangup(self) -> None:
        self.hung_up = True

    def event(self, event) -> None:
        self.on_event(event)


class FakeCallPort:
    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.calls: list[FakeCall] = []
        self.addresses: set[tuple[str, int]] = set()

    def place_call(self, host: str, port: int, callee: str, caller: str, headers: dict, on_event, *,
                   ring_timeout: float | None = None) -> FakeCall:
        self.addresses.add((host, port))
        call = FakeCall(callee, headers, on_event)
        call.at = datetime.fromtimestamp(self.clock.seconds(), CST)
        self.calls.append(call)
        return call

    def live(self) -> list[FakeCall]:
        return [c for c in self.calls if not c.hung_up and not c.ended]


def fixture_files() -> dict[str, str]:
    files = read_dir(ROOT / "fixtures" / "demo")
    doc = yaml.safe_load(files["projects.yaml"])
    doc["voice_policy"]["calls_per_week"] = 5  # this test is about attempts, not the weekly limit
    doc["projects"].append({
        "id": PROJECT, "name": "服务测试外呼", "target": 'brand == "mzone"', "offers": ["SPHY"], "channel": "ivr",
        "window": "09:00-20:00", "attempts": 3, "backoff_s": [600, 1200], "pacing": {"mode": "progressive", "lines": 2},
        "trial": {"count": 8, "seed": 3}, "prompt": PROMPT, "script": [{"step": "prompt", "text": "播放产品介绍"}]})
    files["projects.yaml"] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    return files


@pytest.fixture()
def rig(tmp_path):
    clock = task.Clock()
    clock.advance(TEN_AM)
    gw = Gateway(clock, f"sqlite:///{tmp_path / 'gw.db'}")
    gw.apply_fixtures(fixture_files(), "test")
    port = FakeCallPort(clock)
    svc = DialerService(gw, port=port, in_thread=lambda fn, *args: defer.maybeDeferred(fn, *args))
    svc.startService()
    yield gw, clock, port, svc
    svc.stopService()
    gw.engine.dispose()


def step(gw, action: str) -> None:
    with gw.db() as session, session.begin():
        transition(session, PROJECT, action, "ops", gw.now())


def trial_batch(gw) -> set[str]:
    params = gw.snapshot.parsed.get("notifier.contact_policy") or policy.PolicyParams()
    with gw.db() as session:
        result = plan(session, gw.snapshot.extras["projects"], PROJECT, gw.now(), params)
    return {t.msisdn for t in iter_stage(result, "trial")}


def test_only_a_started_project_dials_its_trial_targets_and_stops_on_pause_and_close(rig):
    gw, clock, port, svc = rig
    clock.advance(60)
    assert port.calls == [] and svc.runs == {}  # a draft never dials
    step(gw, "approve")
    svc.sync()
    clock.advance(60)
    assert port.calls == []  # approved, not started
    batch = trial_batch(gw)
    assert len(batch) >= 4
    step(gw, "start")
    svc.sync()
    assert svc.runs[PROJECT].stage == "trial"
    assert len(port.calls) == 2 and {c.msisdn for c in port.calls} <= batch  # two lines
    assert port.addresses == {("127.0.0.1", int(gw.settings["outbound.callee_port"]))}
    assert all(c.headers == {"X-Project": PROJECT, "X-Offer-Code": "SPHY"} for c in port.calls)

    busy, refuses = port.calls
    busy.event(Failed("x", 486, "Busy Here"))
    busy_at = clock.seconds()
    assert len(port.calls) == 3 and port.calls[2].msisdn != busy.msisdn  # the freed line dials on at once
    refuses.event(Answered("x", ()))
    assert refuses.prompts == [(PROMPT, "menu", {"X-Offer-Code": "SPHY"})]
    refuses.event(DtmfReceived("x", "2"))
    assert len(refuses.prompts) == 2  # hear it again
    refuses.event(DtmfReceived("x", "3"))
    assert refuses.hung_up
    orders = port.calls[3]
    orders.event(Answered("x", ()))
    orders.event(DtmfReceived("x", "1"))
    clock.advance(0)  # the writes of this reactor turn
    with gw.db() as session:
        refusal = session.scalars(select(Refusal).where(Refusal.msisdn == refuses.msisdn,
                                                        Refusal.source != "fixture")).one()
        outcomes = dict(session.execute(select(ProjectCall.msisdn, ProjectCall.outcome)).all())
        confirmation = session.scalars(select(OutboxMessage).where(OutboxMessage.dest == orders.msisdn)).one()
    assert (refusal.offer_code, refusal.source) == ("SPHY", f"call:{PROJECT}")
    assert outcomes == {busy.msisdn: "busy", refuses.msisdn: "refused", orders.msisdn: "accepted"}
    assert "Y" in confirmation.text

    for _ in range(len(batch)):  # the rest of the batch answers and hangs up: done with them
        for call in port.live():
            call.event(Answered("x", ()))
            call.event(HungUp("x", True))
            call.ended = True
    assert port.live() == []
    dialled = len(port.calls)
    assert {c.msisdn for c in port.calls} == batch
    clock.advance(busy_at + 599 - clock.seconds())
    assert len(port.calls) == dialled  # the back-off is 600 s
    clock.advance(1)
    retry = port.calls[-1]
    assert len(port.calls) == dialled + 1 and retry.msisdn == busy.msisdn  # attempt 2, on time

    step(gw, "pause")
    svc.sync()
    assert PROJECT not in svc.runs and retry.hung_up
    clock.advance(3 * 3600)
    assert len(port.calls) == dialled + 1  # paused: nothing dials, not even a retry

    step(gw, "start")  # back to the trial: planned again, it calls only what is left of the same batch
    svc.sync()
    again = port.calls[dialled + 1:]
    assert [c.msisdn for c in again] == [busy.msisdn]
    step(gw, "close")
    svc.sync()
    assert PROJECT not in svc.runs and again[0].hung_up
    clock.advance(86400)
    assert len(port.calls) == dialled + 2


def local(t: float) -> datetime:
    return datetime.fromtimestamp(t, CST)


def fail_live_calls(port: FakeCallPort, status: int) -> None:
    for call in port.live():
        call.event(Failed("x", status, "x"))
        call.ended = True


def test_retries_keep_their_back_off_and_stay_inside_the_calling_window(rig):
    gw, clock, port, svc = rig
    clock.advance(datetime(2026, 12, 2, 19, 45, tzinfo=CST).timestamp() - clock.seconds())
    step(gw, "approve")
    step(gw, "start")
    svc.sync()
    first = [c.msisdn for c in port.calls]
    for _ in range(20):  # every call of the batch is unanswered (480) then busy (486)
        fail_live_calls(port, 480)
    assert port.live() == [] and len(port.calls) >= 4
    clock.advance(599)
    assert [c.at for c in port.calls if c.msisdn == first[0]] == [local(clock.seconds() - 599)]
    clock.advance(1)
    assert len([c for c in port.calls if c.msisdn == first[0]]) == 2  # redialled 600 s later, 19:55
    fail_live_calls(port, 486)  # the next back-off, 1200 s, ends after 20:00
    clock.pump([30.0] * int((datetime(2026, 12, 2, 20, 0, tzinfo=CST).timestamp() - clock.seconds()) // 30))
    evening = len(port.calls)  # the lines the ring timeouts freed dialled on until 20:00
    clock.pump([30.0] * int((datetime(2026, 12, 3, 8, 59, tzinfo=CST).timestamp() - clock.seconds()) // 30))
    assert len(port.calls) == evening  # nothing from 20:00 to 09:00
    clock.pump([30.0] * 4)
    assert len(port.calls) > evening  # the next day's window: the day's run, planned again, dials on
    clock.pump([30.0] * 6 * 60)  # to 12:00, nobody answers
    assert all(9 <= c.at.hour < 20 for c in port.calls), [c.at for c in port.calls]
    per_number = Counter(c.msisdn for c in port.calls)
    assert max(per_number.values()) == 3  # the attempts count over both days


def test_a_run_waits_for_its_window_and_is_planned_again_when_its_definition_changes(rig):
    gw, clock, port, svc = rig
    clock.advance(datetime(2026, 12, 3, 8, 0, tzinfo=CST).timestamp() - clock.seconds())
    step(gw, "approve")
    step(gw, "start")
    svc.sync()
    live = svc.live_stats()[PROJECT]
    assert port.calls == [] and live["waiting_until"] == "2026-12-03T09:00:00+08:00"
    assert live["window"] == {"start": "2026-12-03T09:00:00+08:00", "end": "2026-12-03T20:00:00+08:00"}
    clock.pump([60.0] * 61)
    assert port.live() and svc.live_stats()[PROJECT]["waiting_until"] is None
    run, calls = svc.runs[PROJECT], list(port.live())
    gw.apply_fixtures(gw_files_with_prompt(PROMPT + "(新)"), "test")
    svc.sync()  # the prompt changed: the run stops (its calls hung up) and is planned again
    assert all(c.hung_up for c in calls)
    assert svc.runs[PROJECT] is not run and svc.runs[PROJECT].project.prompt == PROMPT + "(新)"


def gw_files_with_prompt(prompt: str) -> dict[str, str]:
    files = fixture_files()
    doc = yaml.safe_load(files["projects.yaml"])
    doc["projects"][-1]["prompt"] = prompt
    files["projects.yaml"] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    return files
