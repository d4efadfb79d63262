"""Outbound call projects: fixtures (file:line problems), the lifecycle table, the voice policy, the plan
and its CLI, QA scoring, and the call writes (order through the KT path, opt-out, refusal)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from core import db
from core.fixtures import load_set, parse_set, read_dir
from gateway.sections import all_sections
from notifier import policy
from notifier.project_models import DoNotCall, ProjectCall, ProjectState, ProjectTransition
from notifier.projects import ProjectBook
from notifier.projects_lifecycle import DIALLING, TransitionError, next_step, transition
from notifier.projects_plan import VoiceHistory, decide, plan
from notifier.projects_qa import Conversation, converse, score
from offers.models import Refusal, Subscriber
from offers.sections import build_catalog

ROOT = Path(__file__).resolve().parent.parent
CST = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 12, 2, 10, 0, tzinfo=CST).timestamp()


def demo_files() -> dict[str, str]:
    return read_dir(ROOT / "fixtures" / "demo")


def parsed_with(projects_yaml: str | None = None) -> tuple[dict, list]:
    files = demo_files()
    if projects_yaml is not None:
        files["projects.yaml"] = projects_yaml
    return parse_set(files, all_sections())


def project_text(**changes) -> str:
    doc = yaml.safe_load(demo_files()["projects.yaml"])
    doc["projects"][0].update(changes)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


# --- fixtures ---------------------------------------------------------------------------------------


def test_demo_projects_load():
    parsed, problems = parsed_with()
    assert problems == []
    book: ProjectBook = parsed["notifier.projects"]
    assert set(book.projects) == {"data-alert-call", "upgrade-5g-call", "video-ivr"}
    p = book.get("data-alert-call")
    assert p.channel == "agent" and p.pacing.mode == "predictive" and p.pacing.abandon_ceiling == 0.03
    assert p.step_ids() == ("greet", "need", "pitch", "close", "farewell")
    assert p.script[2].objections[0].text == "太贵了"
    assert p.backoff(1) == 1800 and p.backoff(2) == 7200 and p.backoff(5) == 7200
    assert book.voice.calls_per_week == 2 and "13800000042" in book.do_not_call


@pytest.mark.parametrize("changes, line_key, reason", [
    ({"target": "brand > 3"}, "target", "rule type error"),
    ({"target": "bogus_attr == 1"}, "target", "unknown attribute 'bogus_attr'"),
    ({"offers": ["NOPE"]}, "offers", "unknown offer 'NOPE'"),
    ({"channel": "fax"}, "channel", "channel must be one of agent, ivr"),
    ({"window": "20:00-09:00"}, "window", "window must end after it starts"),
    ({"window": "9-5"}, "window", "expected HH:MM-HH:MM"),
    ({"attempts": 0}, "attempts", "attempts must be 1..10"),
    ({"pacing": {"mode": "psychic"}}, "pacing", "mode must be one of progressive, predictive"),
    ({"pacing": {"mode": "predictive", "abandon_ceiling": 0.5}}, "pacing", "abandon_ceiling"),
    ({"trial": {"share": 0.1, "count": 5}}, "trial", "exactly one of share"),
    ({"trial": {"share": 1.5}}, "trial", "share must be in (0, 1]"),
    ({"script": []}, "script", "at least one step"),
    ({"qa": {"sample": 0.1, "rules": [{"id": "x", "points": 5, "reached": "nowhere"}]}}, "qa",
     "unknown script step 'nowhere'"),
    ({"qa": {"sample": 0.1, "rules": [{"id": "x", "points": 5}]}}, "qa", "exactly one of"),
    ({"sms_campaign": "no-such"}, "sms_campaign", "unknown campaign 'no-such'"),
    ({"backoff_s": 5}, "backoff_s", "back-off must be seconds"),
    ({"speed": 3}, "speed", "unknown field 'speed'"),
])
def test_bad_project_fails_at_load_with_file_line_reason(changes, line_key, reason):
    text = project_text(**changes)
    _, problems = parsed_with(text)
    mine = [p for p in problems if p.file == "projects.yaml"]
    assert mine, problems
    assert any(reason in p.reason for p in mine), [str(p) for p in mine]
    lines = text.splitlines()
    first = mine[0]
    assert first.line is not None and first.line > 0
    # the problem points at the project's line or below it (the field's own line when it exists)
    assert f"{line_key}:" in lines[first.line - 1] or first.line >= next(
        i for i, t in enumerate(lines, 1) if t.strip().startswith("- id: data-alert-call")), str(first)
    assert str(first).startswith(f"projects.yaml:{first.line}: ")


def test_ivr_project_needs_a_prompt_and_duplicate_ids_are_problems():
    doc = yaml.safe_load(demo_files()["projects.yaml"])
    doc["projects"][2].pop("prompt")
    doc["projects"].append(dict(doc["projects"][0]))
    _, problems = parsed_with(yaml.safe_dump(doc, allow_unicode=True))
    reasons = [p.reason for p in problems]
    assert any("needs a prompt" in r for r in reasons)
    assert any("duplicate project id 'data-alert-call'" in r for r in reasons)


def test_bad_do_not_call_number_and_quiet_hours():
    doc = yaml.safe_load(demo_files()["projects.yaml"])
    doc["do_not_call"].append(138)
    doc["voice_policy"]["quiet_hours"] = "late"
    _, problems = parsed_with(yaml.safe_dump(doc, allow_unicode=True))
    assert any(p.path == "do_not_call[2]" for p in problems)
    assert any(p.path == "voice_policy.quiet_hours" for p in problems)


# --- lifecycle --------------------------------------------------------------------------------------


def test_lifecycle_table():
    assert next_step("approve", "draft", None, None).state == "approved"
    assert next_step("start", "approved", None, None).state == "trial"
    assert next_step("go", "trial", None, None).state == "rollout"
    paused = next_step("pause", "rollout", None, None)
    assert paused.state == "paused" and paused.stage == "rollout"
    assert next_step("start", "paused", "rollout", None).state == "rollout"
    assert next_step("start", "paused", "trial", None).state == "trial"
    assert next_step("close", "trial", None, None).state == "closed"
    for action, state in (("start", "draft"), ("go", "approved"), ("start", "rejected"), ("approve", "closed"),
                          ("go", "draft"), ("close", "closed")):
        with pytest.raises(TransitionError):
            next_step(action, state, None, None)
    with pytest.raises(TransitionError, match="needs a reason"):
        next_step("reject", "draft", None, "  ")
    assert set(DIALLING) == {"trial", "rollout"}


@pytest.fixture
def demo_db(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 't.db'}")
    db.migrate(engine)
    factory = db.session_factory(engine)
    parsed, problems = parse_set(demo_files(), all_sections())
    assert problems == []
    with db.transaction(factory) as session:
        load_set(session, parsed, all_sections(), AT)
    yield factory, parsed
    engine.dispose()


def test_transitions_are_recorded_with_who_and_when(demo_db):
    factory, _ = demo_db
    with db.transaction(factory) as session:
        assert session.get(ProjectState, "data-alert-call").state == "draft"
        transition(session, "data-alert-call", "reject", "alice", AT, "script lacks the price")
    with db.transaction(factory) as session:
        row = session.get(ProjectState, "data-alert-call")
        assert (row.state, row.reason, row.changed_by) == ("rejected", "script lacks the price", "alice")
        with pytest.raises(TransitionError):
            transition(session, "data-alert-call", "start", "alice", AT + 1)
        transition(session, "upgrade-5g-call", "approve", "bob", AT + 2)
        transition(session, "upgrade-5g-call", "start", "bob", AT + 3)
    with factory() as session:
        steps = [(t.action, t.from_state, t.to_state, t.who, t.at) for t in
                 session.scalars(select(ProjectTransition).order_by(ProjectTransition.id))]
    assert steps == [("reject", "draft", "rejected", "alice", AT), ("approve", "draft", "approved", "bob", AT + 2),
                     ("start", "approved", "trial", "bob", AT + 3)]


# --- voice policy and plan --------------------------------------------------------------------------


def test_decide_voice_rules_in_order(demo_db):
    _, parsed = demo_db
    book = parsed["notifier.projects"]
    project = book.get("data-alert-call")
    params = policy.PolicyParams()
    facts = {"consent_marketing": True, "opted_out": False, "complaints": 0, "channel_pref": "phone"}
    ok = decide(facts, VoiceHistory(), project, book, params, AT)
    assert ok.ok and ok.offer == "LL20"
    assert decide({**facts, "opted_out": True}, VoiceHistory(), project, book, params, AT).code == "opted_out"
    assert decide(facts, VoiceHistory(dnc=True), project, book, params, AT).code == "do_not_call"
    refused = VoiceHistory(refusals=(("LL20", AT - 89 * 86400),))
    assert decide(facts, refused, project, book, params, AT).offer == "LL30"
    all_refused = VoiceHistory(refusals=tuple((c, AT - 10 * 86400) for c in project.offers))
    assert decide(facts, all_refused, project, book, params, AT).code == "refused_recently"
    old = VoiceHistory(refusals=tuple((c, AT - 90 * 86400) for c in project.offers))
    assert decide(facts, old, project, book, params, AT).ok  # 90 days later it may be offered again
    week = VoiceHistory(week_calls=(AT - 86400, AT - 2 * 86400))
    assert decide(facts, week, project, book, params, AT).code == "calls_week"
    assert decide(facts, VoiceHistory(week_calls=(AT - 8 * 86400,) * 5), project, book, params, AT).ok
    assert decide({**facts, "channel_pref": "sms"}, VoiceHistory(), project, book, params, AT).code == "prefers_sms"
    assert decide(facts, VoiceHistory(done=True), project, book, params, AT).code == "already_called"


def test_plan_counts_reasons_sms_instead_and_a_stable_trial(demo_db):
    factory, parsed = demo_db
    book = parsed["notifier.projects"]
    params = parsed["notifier.contact_policy"]
    catalog = build_catalog(parsed)
    with db.transaction(factory) as session:
        session.add(Refusal(msisdn="13800000009", offer_code="LL20", at=AT - 86400, source="sms"))
    with factory() as session:
        first = plan(session, book, "data-alert-call", AT, params, catalog=catalog)
        again = plan(session, book, "data-alert-call", AT, params, catalog=catalog)
        subscribers = {s.msisdn: s for s in session.scalars(select(Subscriber))}
    called = {t.msisdn for t in first.targets}
    assert first.targeted == len(called) + len(first.sms_instead) + sum(first.excluded.values())
    assert "13800000042" not in called and first.excluded.get("do_not_call") == 1
    for msisdn in called:
        s = subscribers[msisdn]
        assert s.consent_marketing and not s.opted_out and s.channel_pref != "sms"
    assert all(subscribers[m].channel_pref == "sms" for m in first.sms_instead)
    assert next(t.offer for t in first.targets if t.msisdn == "13800000009") == "LL30"
    assert [t.msisdn for t in first.trial] == [t.msisdn for t in again.trial] and first.trial
    data = first.as_dict()
    assert data["sms_instead"]["campaign"] == "data-boost" and data["call"] == len(called)


def _call(msisdn: str, outcome: str, at: float, project_id: str = "upgrade-5g-call", answered: bool = False,
          ) -> ProjectCall:
    return ProjectCall(project_id=project_id, call_id=f"{msisdn}-{outcome}-{at}", msisdn=msisdn, stage="trial",
                       attempt=1, segment="C", offer_code="TCSD", started_at=at,
                       answered_at=at + 5 if answered else None, ended_at=at + 30, outcome=outcome)


def test_calls_per_week_count_every_call_that_reached_the_phone(demo_db):
    """Busy and unanswered calls count like answered ones (the subscriber's phone rang, or was engaged);
    a call that failed in the network does not; calls older than 7 days do not."""
    factory, parsed = demo_db
    book, params = parsed["notifier.projects"], parsed["notifier.contact_policy"]
    with factory() as session:
        before = {t.msisdn: t for t in plan(session, book, "data-alert-call", AT, params).targets}
    busy, unanswered, failed, old = sorted(before)[:4]
    with db.transaction(factory) as session:
        session.add_all([_call(busy, "busy", AT - 3600), _call(busy, "busy", AT - 86400),
                         _call(unanswered, "no_answer", AT - 2 * 86400),
                         _call(unanswered, "hungup", AT - 600, answered=True),
                         _call(failed, "failed", AT - 3600), _call(failed, "failed", AT - 7200),
                         _call(failed, "no_answer", AT - 3 * 86400),
                         _call(old, "busy", AT - 8 * 86400), _call(old, "refused", AT - 9 * 86400, answered=True)])
    with factory() as session:
        after = plan(session, book, "data-alert-call", AT, params)
    called = {t.msisdn: t for t in after.targets}
    assert busy not in called and unanswered not in called
    assert called[failed].week_calls == (AT - 3 * 86400,)  # the dialer keeps to the limit from there
    assert old in called and called[old].week_calls == ()
    assert after.excluded["calls_week"] == 2 and len(before) - len(called) == 2
    why = [s["why"] for s in after.excluded_sample if s["reason"] == "calls_week"]
    assert why and "2 marketing call(s) in 7 days (answered, busy or unanswered), limit 2" in why


def test_a_pressed_3_keeps_the_product_off_calls_and_the_shelf_for_90_days(demo_db):
    """The outbound IVR's 'not interested' is a refusal like an SMS one: the voice policy's refusal
    window and the shelf's refusal exclusion both apply to it."""
    from notifier.projects_calls import refuse
    from offers.shelf import shelf_for

    factory, parsed = demo_db
    book, params = parsed["notifier.projects"], parsed["notifier.contact_policy"]
    catalog = build_catalog(parsed)
    with factory() as session:
        targets = plan(session, book, "video-ivr", AT, params).targets
        msisdn = next(t.msisdn for t in targets if any(
            d.code == "SPHY" and d.rank for d in shelf_for(session, catalog, t.msisdn, AT, explain=True)[1].decisions))
    with db.transaction(factory) as session:
        refuse(session, msisdn, "SPHY", AT, "video-ivr")
    with factory() as session:
        result = plan(session, book, "video-ivr", AT + 3600, params)
        shelf = shelf_for(session, catalog, msisdn, AT + 3600, explain=True)[1]
        later = plan(session, book, "video-ivr", AT + 91 * 86400, params)
    assert msisdn not in {t.msisdn for t in result.targets} and result.excluded["refused_recently"] >= 1
    sphy = next(d for d in shelf.decisions if d.code == "SPHY")
    assert sphy.rank is None and "refused" in sphy.reasons[0]
    assert msisdn in {t.msisdn for t in later.targets}


def test_plan_holds_quiet_hours_in_the_subscribers_time_zone(demo_db):
    factory, parsed = demo_db
    with db.transaction(factory) as session:
        session.get(Subscriber, "13800000009").timezone = "Asia/Urumqi"  # 2 h behind Beijing: 07:00 there
    with factory() as session:
        result = plan(session, parsed["notifier.projects"], "data-alert-call",
                      datetime(2026, 12, 2, 9, 0, tzinfo=CST).timestamp(), parsed["notifier.contact_policy"])
    held = next(t for t in result.targets if t.msisdn == "13800000009")
    assert datetime.fromtimestamp(held.not_before, ZoneInfo("Asia/Urumqi")).hour == 9
    assert result.held_quiet >= 1


def test_plan_cli_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    loaded = subprocess.run([sys.executable, str(ROOT / "run_gateway.py"), "load-fixtures", str(ROOT / "fixtures" / "demo"),
                             "--db", url], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert loaded.returncode == 0, loaded.stderr
    out = subprocess.run([sys.executable, str(ROOT / "run_gateway.py"), "project", "plan", "video-ivr", "--at",
                          "2026-12-02T10:00:00+08:00", "--db", url, "--json"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["project"] == "video-ivr" and data["state"] == "draft" and data["in_window"]
    assert data["call"] + data["sms_instead"]["count"] + data["excluded_total"] == data["targeted"]
    assert data["sms_instead"]["campaign"] == "video-vip"
    assert set(data["excluded"]) <= {"no_consent", "opted_out", "do_not_call", "complained", "subscribed",
                                     "refused_recently", "already_called", "calls_week"}
    bad = subprocess.run([sys.executable, str(ROOT / "run_gateway.py"), "project", "plan", "nope", "--at",
                          "2026-12-02T10:00:00+08:00", "--db", url], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert bad.returncode == 2 and "unknown project 'nope'" in bad.stderr


# --- QA and writes ----------------------------------------------------------------------------------


def test_qa_scoring_and_script_walk():
    parsed, _ = parsed_with()
    project = parsed["notifier.projects"].get("data-alert-call")
    full = {"steps": project.step_ids(), "duration_s": 120, "unanswered": (), "offer_named": True}
    assert score(project, full) == (100.0, [])
    poor = {"steps": ("greet", "pitch"), "duration_s": 400, "unanswered": ("太贵了",), "offer_named": False}
    value, failed = score(project, poor)
    assert failed == ["need", "offer_named", "objections", "farewell", "concise"] and value == 20.0
    import random

    rng = random.Random(3)
    talks = [converse(project, 1.0, "tm1", rng) for _ in range(500)]
    assert all(isinstance(t, Conversation) and t.steps[0] == "greet" for t in talks)
    assert {t.outcome for t in talks} >= {"accepted", "refused"}


def test_call_writes_order_through_the_kt_path_opt_out_and_refusal(demo_db):
    from core.settings import Settings
    from notifier.models import OutboxMessage
    from notifier.outbox import Outbox
    from notifier.projects_calls import opt_out, order, refuse, store_record
    from offers.router import Router

    factory, parsed = demo_db
    catalog = build_catalog(parsed)
    router = Router(lambda: catalog, Settings({}))
    outbox = Outbox(lambda: AT, Settings({}))
    with db.transaction(factory) as session:
        assert order(session, router, outbox, "tester", "video-ivr", "c1", "13800000005", "SPHY", AT)
        assert order(session, router, outbox, "tester", "video-ivr", "c1", "13800000005", "SPHY", AT)
        opt_out(session, "13800000006", AT, "call:video-ivr")
        opt_out(session, "13800000006", AT, "call:video-ivr")
        refuse(session, "13800000007", "SPHY", AT, "video-ivr")
    with factory() as session:
        sms = session.scalars(select(OutboxMessage).where(OutboxMessage.dest == "13800000005")).all()
        assert len(sms) == 1 and "Y" in sms[0].text  # the second-confirmation prompt, once per call
        assert session.get(DoNotCall, "13800000006").source == "call:video-ivr"
        assert session.scalar(select(Refusal.source).where(Refusal.msisdn == "13800000007")) == "call:video-ivr"
    from ivr.dialer import Record

    project = parsed["notifier.projects"].get("data-alert-call")
    record = Record("qa-call", "13800000009", 1, "C", "LL20", AT, AT + 5, AT + 100, "accepted", "tm1",
                    project.step_ids(), ("太贵了",), (), True, True)
    with db.transaction(factory) as session:
        for n in range(40):
            store_record(session, project, dataclasses.replace(record, call_id=f"qa-{n}"), "trial")
    with factory() as session:
        rows = session.scalars(select(ProjectCall)).all()
    sampled = [r for r in rows if r.qa_sampled]
    assert 0 < len(sampled) < 40 and all(r.qa_score == 100.0 for r in sampled)
