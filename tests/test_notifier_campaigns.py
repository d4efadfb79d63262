"""Campaign fixtures, planning, consolidation, staggering, idempotent materialising, reports, self-pause.

On SQLite and PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

import notifier.campaign_models  # noqa: F401 - registers the tables
from core import db
from core.fixtures import parse_set, read_dir
from core.settings import Settings
from notifier import campaign_sections, campaigns, reports
from notifier.campaign_models import Alert, CampaignState, ContactLog
from notifier.consolidate import Item, sms_digest, sms_size
from notifier.models import OutboxMessage
from notifier.outbox import Outbox
from offers import schema
from offers.models import Subscriber, Subscription
from offers.rules import compile_condition

CST = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 11, 24, 10, 0, tzinfo=CST).timestamp()  # a Tuesday

POLICY = textwrap.dedent("""\
    timezone: Asia/Shanghai
    caps: {day: 1, week: 3, month: 6}
    daily_capacity: 1000
    digest: {header: "【中国移动】您的专属优惠:", max_parts: 3}
    hotline: {agents: 10, calls_per_agent_hour: 10, target_utilisation: 0.8, baseline_calls_per_hour: 0,
              callback_share: 0.01}
""")


def campaign_yaml(cid: str, *, target: str = "high_data", offers: str = "[LL10]", priority: int = 50,
                  hour: int = 10, kind: str = "marketing", text: str = "{{ offer_name }}优惠,回复{{ order }}办理。",
                  window: str = "09:00-20:00", extra: str = "") -> str:
    return textwrap.dedent(f"""\
      - id: {cid}
        name: {cid}
        kind: {kind}
        target: '{target}'
        offers: {offers}
        priority: {priority}
        schedule: {{cron: {{hour: {hour}, minute: 0}}}}
        window: "{window}"
        templates:
          sms: '{text}'
    """) + extra


def make_book(*campaign_texts: str, policy_text: str = POLICY) -> campaign_sections.CampaignBook:
    files = {"contact_policy.yaml": policy_text,
             "campaigns.yaml": "campaigns:\n" + textwrap.indent("".join(campaign_texts), "  ")}
    parsed, problems = parse_set(files, campaign_sections.SECTIONS)
    assert not problems, [str(p) for p in problems]
    return campaign_sections.build_book(parsed)


@pytest.fixture
def factory(db_url):
    engine = db.make_engine(db_url)
    db.import_models()
    db.Base.metadata.create_all(engine)
    yield db.session_factory(engine)
    engine.dispose()


def add_subscribers(factory, n: int, **columns) -> list[str]:
    numbers = [f"1380000{i:04d}" for i in range(1, n + 1)]
    with db.transaction(factory) as session:
        for msisdn in numbers:
            session.add(Subscriber(msisdn=msisdn, brand="gotone", **{"high_data": True, **columns}))
    return numbers


def outbox_count(factory) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage))


# --- fixtures ---------------------------------------------------------------------------------------


def test_demo_fixtures_parse_with_previews() -> None:
    from notifier import core_sections
    from offers import sections as offer_sections

    sections = [*core_sections.SECTIONS, *offer_sections.SECTIONS, *campaign_sections.SECTIONS]
    files = {k: v for k, v in read_dir(ROOT / "fixtures" / "demo").items()
             if k.split(".")[0] in {s.filename.split(".")[0] for s in sections}}
    parsed, problems = parse_set(files, sections)
    assert not problems, [str(p) for p in problems]
    book = campaign_sections.build_book(parsed)
    assert {"care-roaming", "care-data-day", "care-high-arpu", "care-silent"} <= set(book.campaigns)
    for campaign in book.campaigns.values():
        if campaign.channel == "sms":
            assert 1 <= campaign.preview["parts"] <= book.policy.max_parts
            if campaign.kind == "marketing":
                assert campaign.preview["text"].endswith("回复TD退订")


@pytest.mark.parametrize(("snippet", "reason", "line"), [
    (campaign_yaml("a", target="hihg_data"), "unknown attribute 'hihg_data'", 5),
    (campaign_yaml("a", target="brand > 3"), "rule type error", 5),
    (campaign_yaml("a", text="{{ nope }}"), "unknown template variable(s) nope", 11),
    (campaign_yaml("a", text="{{ offer_name }}" + "很长的文字" * 50), "SMS too long", 11),
    (campaign_yaml("a", window="20:00-09:00"), "window must end after it starts", 9),
    (campaign_yaml("a", kind="spam"), "kind must be one of", 4),
    (campaign_yaml("a").replace("hour: 10", "hour: 25"), "bad schedule", 8),
])
def test_campaign_problems_have_file_line_reason(snippet: str, reason: str, line: int) -> None:
    files = {"campaigns.yaml": "campaigns:\n" + textwrap.indent(snippet, "  ")}
    _, problems = parse_set(files, campaign_sections.SECTIONS)
    assert problems, reason
    assert problems[0].file == "campaigns.yaml" and reason in problems[0].reason
    assert problems[0].line == line, str(problems[0])


def test_policy_problems() -> None:
    files = {"contact_policy.yaml": "caps: {day: -1}\nhotline: {agents: 1}\n"}
    _, problems = parse_set(files, campaign_sections.SECTIONS)
    reasons = " | ".join(p.reason for p in problems)
    assert "missing required field 'calls_per_agent_hour'" in reasons


@settings(max_examples=200, deadline=None)
@given(ratio=st.floats(0, 3), grade=st.sampled_from(["A1", "B2", "C", "D"]), vip=st.booleans(),
       age=st.integers(10, 90), brand=st.sampled_from(["gotone", "mzone", "easyown"]))
def test_fast_predicate_agrees_with_rule_engine(ratio, grade, vip, age, brand) -> None:
    row = {"msisdn": "1", "brand": brand, "data_used_mb": ratio * 1000, "data_allowance_mb": 1000.0,
           "value_grade": grade, "vip": vip, "age": age}
    for text in ('data_usage_ratio >= 0.8 and value_grade in ["A1", "B2"]', "not vip or age < 30",
                 'brand == "mzone" and -age < -20', '"zone" in brand or data_usage_ratio * 2 > 3'):
        condition, problems = compile_condition(text, "t", 1)
        assert not problems
        fast = campaign_sections.fast_predicate(condition)
        assert fast(campaign_sections.LazyFacts(row)) == condition.matches(schema.facts(row)), text


# --- consolidation ----------------------------------------------------------------------------------


def test_five_promos_become_one_digest_within_the_part_limit() -> None:
    items = [Item(f"c{i}", 10 * i, "marketing", f"O{i}", f"优惠{i}:流量包,回复KTO{i}办理", f"h{i}") for i in range(5)]
    digest = sms_digest(items, header="【中国移动】:", opt_out="回复TD退订", max_parts=3)
    assert [i.campaign_id for i in digest.items] == ["c4", "c3", "c2", "c1", "c0"]
    assert digest.text.startswith("【中国移动】:\n1.优惠4") and digest.text.endswith("回复TD退订")
    assert sms_size(digest.text).parts == digest.parts <= 3
    tight = sms_digest(items, header="【中国移动】:", opt_out="回复TD退订", max_parts=1)
    assert len(tight.items) + len(tight.left_out) == 5 and tight.parts == 1 and tight.left_out


def test_sms_size_matches_gsm_and_ucs2_limits() -> None:
    assert sms_size("a" * 160).parts == 1 and sms_size("a" * 161).parts == 2
    assert sms_size("汉" * 70).parts == 1 and sms_size("汉" * 71).parts == 2 and sms_size("汉" * 135).parts == 3


def test_plan_consolidates_campaigns_due_the_same_day(factory) -> None:
    book = make_book(*(campaign_yaml(f"c{i}", offers=f"[O{i}]", priority=10 * i, hour=10 + i) for i in range(5)))
    add_subscribers(factory, 3)
    with factory() as session:
        plan = campaigns.plan(session, book, "c0", AT, Settings())
    assert plan.messages == 3 and plan.items_before == 15
    assert set(plan.partners) == {"c1", "c2", "c3", "c4"}
    assert [i.campaign_id for i in plan.deliveries[0].items] == ["c4", "c3", "c2", "c1", "c0"]
    assert plan.as_dict()["consolidated"] == {"partners": ["c1", "c2", "c3", "c4"], "items_before": 15,
                                              "messages_after": 3, "merged": 12, "left_out_for_later": 0}


def test_partner_run_later_counts_already_sent_not_resent(factory) -> None:
    book = make_book(campaign_yaml("early", offers="[A]", hour=10), campaign_yaml("late", offers="[B]", hour=15))
    add_subscribers(factory, 2)
    outbox = Outbox(lambda: AT, Settings())
    with db.transaction(factory) as session:
        campaigns.materialise(session, outbox, campaigns.plan(session, book, "early", AT, Settings()))
    with factory() as session:
        later = campaigns.plan(session, book, "late", AT + 5 * 3600, Settings())
    assert later.already_sent == 2 and later.messages == 0
    assert outbox_count(factory) == 2


# --- policy inside a plan ------------------------------------------------------------------------------


def test_plan_counts_every_exclusion_by_reason(factory) -> None:
    book = make_book(campaign_yaml("m", offers="[LL10, LL20]"))
    add_subscribers(factory, 6)
    with db.transaction(factory) as session:
        session.get(Subscriber, "13800000001").opted_out = True
        session.get(Subscriber, "13800000002").consent_marketing = False
        session.get(Subscriber, "13800000003").complaints = 2
        session.get(Subscriber, "13800000004").high_data = False
        for code in ("LL10", "LL20"):
            session.add(Subscription(msisdn="13800000005", offer_code=code, started_at=AT - 100))
    with factory() as session:
        plan = campaigns.plan(session, book, "m", AT, Settings())
    assert plan.targeted == 5 and plan.messages == 1
    assert plan.excluded == {"no_consent": 1, "opted_out": 1, "complained": 1, "subscribed": 1}
    assert plan.deliveries[0].text.endswith("回复TD退订")


def test_plan_capacity_edge(factory) -> None:
    book = make_book(campaign_yaml("m"), policy_text=POLICY.replace("daily_capacity: 1000", "daily_capacity: 3"))
    add_subscribers(factory, 5)
    with factory() as session:
        plan = campaigns.plan(session, book, "m", AT, Settings())
    assert plan.messages == 3 and plan.excluded == {"capacity": 2}


def test_quiet_hours_hold_messages_in_the_subscribers_zone(factory) -> None:
    book = make_book(campaign_yaml("m"))
    add_subscribers(factory, 1, timezone="America/New_York")
    with factory() as session:
        plan = campaigns.plan(session, book, "m", AT, Settings())
    held = plan.deliveries[0].not_before
    assert plan.held_quiet == 1
    assert datetime.fromtimestamp(held, ZoneInfo("America/New_York")).strftime("%H:%M") == "08:00"


def test_settings_quiet_hours_knobs_apply(factory) -> None:
    book = make_book(campaign_yaml("m"))
    add_subscribers(factory, 1)
    knobs = Settings({"campaign.quiet_start": "09:00", "campaign.quiet_end": "11:00"})
    with factory() as session:
        plan = campaigns.plan(session, book, "m", AT, knobs)
    assert plan.deliveries[0].not_before == AT + 3600


# --- staggering ------------------------------------------------------------------------------------------


def test_spread_is_even_over_the_window_when_the_rate_allows() -> None:
    times = campaigns.spread(10, 1000.0, 2000.0, 100.0, (0, 86399), "Asia/Shanghai")
    gaps = {round(b - a, 6) for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {100.0} and times[0] == 1000.0 and times[-1] < 2000.0


def test_spread_at_the_rate_spills_into_the_next_days_window() -> None:
    day = datetime(2026, 11, 24, tzinfo=CST).timestamp()
    start, end = day + 9 * 3600, day + 9 * 3600 + 10
    times = campaigns.spread(15, start, end, 1.0, (9 * 3600, 9 * 3600 + 10), "Asia/Shanghai")
    assert times[:10] == [start + i for i in range(10)]
    assert times[10] == start + 86400 and times[14] == start + 86400 + 4


def test_plan_staggers_at_the_hotline_rate(factory) -> None:
    book = make_book(campaign_yaml("m", window="10:00-10:01"))
    add_subscribers(factory, 30)
    with factory() as session:
        plan = campaigns.plan(session, book, "m", AT, Settings())
    # 10 agents x 10 calls/h x 0.8 = 80 calls/h; 1% call back -> 8000 msg/h = 2.22 msg/s
    assert plan.rate.per_s == pytest.approx(8000 / 3600)
    gaps = [b.not_before - a.not_before for a, b in zip(plan.deliveries, plan.deliveries[1:], strict=False)]
    assert max(gaps) == pytest.approx(min(gaps)) == pytest.approx(2.0)  # 60 s window / 30 messages
    assert plan.as_dict()["expected_duration_s"] > 0


# --- materialising -----------------------------------------------------------------------------------------


def test_materialise_is_idempotent_after_a_crash(factory) -> None:
    book = make_book(campaign_yaml("m"))
    add_subscribers(factory, 20)
    outbox = Outbox(lambda: AT, Settings())
    with factory() as session:  # the process dies before its commit
        campaigns.materialise(session, outbox, campaigns.plan(session, book, "m", AT, Settings()))
        session.rollback()
    assert outbox_count(factory) == 0
    with db.transaction(factory) as session:
        first = campaigns.plan(session, book, "m", AT, Settings())
        assert campaigns.materialise(session, outbox, first)["created"] == 20
    with db.transaction(factory) as session:  # re-planned after a restart: nothing new
        again = campaigns.plan(session, book, "m", AT, Settings())
        assert again.already_sent == 20 and again.messages == 0
        assert campaigns.materialise(session, outbox, again)["created"] == 0
        assert campaigns.materialise(session, outbox, first) == {"created": 0, "existing": 20, "contacts": 0}
    with factory() as session:
        assert outbox_count(factory) == 20
        assert session.scalar(select(func.count()).select_from(ContactLog)) == 20
        row = session.scalars(select(OutboxMessage)).first()
        assert row.kind == "campaign" and row.account == "tester" and row.channel == "smpp"
        assert row.idempotency_key.startswith("cmp:m:2026-11-24:sms:")


def test_next_day_caps_and_90_day_rule_apply_to_materialised_contacts(factory) -> None:
    book = make_book(campaign_yaml("m", offers="[LL10]"))
    add_subscribers(factory, 1)
    outbox = Outbox(lambda: AT, Settings())
    with db.transaction(factory) as session:
        campaigns.materialise(session, outbox, campaigns.plan(session, book, "m", AT, Settings()))
    with factory() as session:
        tomorrow = campaigns.plan(session, book, "m", AT + 86400, Settings())
    assert tomorrow.excluded == {"recent_offer": 1}


def test_email_campaign_goes_to_the_email_channel(factory) -> None:
    email = textwrap.dedent("""\
      - id: mail
        name: mail
        kind: marketing
        channel: email
        target: 'high_data'
        offers: [LL10]
        schedule: {cron: {hour: 10}}
        templates:
          email: {subject: '{{ offer_name }}', body: '您好,{{ offer_name }}'}
    """)
    book = make_book(email)
    add_subscribers(factory, 2)
    with db.transaction(factory) as session:
        session.get(Subscriber, "13800000001").email = "a@example.cn"
    with db.transaction(factory) as session:
        plan = campaigns.plan(session, book, "mail", AT, Settings())
        assert plan.excluded == {"no_email": 1}
        campaigns.materialise(session, Outbox(lambda: AT, Settings()), plan)
    with factory() as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert (row.channel, row.dest, row.extra) == ("email", "a@example.cn", {"subject": "LL10"})
    assert "退订" in row.text


# --- reports and the early warning ----------------------------------------------------------------------------


def test_report_counts_delivery_and_conversion(factory) -> None:
    book = make_book(campaign_yaml("m", offers="[LL10]"))
    add_subscribers(factory, 4)
    outbox = Outbox(lambda: AT, Settings())
    with db.transaction(factory) as session:
        campaigns.materialise(session, outbox, campaigns.plan(session, book, "m", AT, Settings()))
    with db.transaction(factory) as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.dest)).all()
        outbox.mark_sent(session, [r.message_id for r in rows])
        outbox.mark_delivered(session, [r.message_id for r in rows[:3]])
        outbox.mark_delivered(session, [rows[3].message_id], ok=False, error="UNDELIV")
        contacted = session.scalars(select(ContactLog).where(ContactLog.msisdn == rows[0].dest)).one().at
        session.add(Subscription(msisdn=rows[0].dest, offer_code="LL10", started_at=contacted + 3600))
        session.add(Subscription(msisdn=rows[1].dest, offer_code="LL10", started_at=contacted + 8 * 86400))
    with factory() as session:
        report = reports.campaign_report(session, "m", AT)
    item = report["campaigns"][0]
    assert (item["recipients"], item["sent"], item["delivered"], item["failed"], item["converted"]) == (4, 4, 3, 1, 1)
    assert item["delivery_rate"] == 0.75 and item["success_rate"] == 0.25
    assert reports.csv_rows(report)[0][0] == "campaign" and reports.csv_rows(report)[1][0] == "m"


def test_campaign_pauses_itself_on_the_complaint_threshold(factory) -> None:
    thresholds = "  thresholds: {complaint_rate: 0.1, opt_out_rate: 0.5, min_sent: 10}\n"
    book = make_book(campaign_yaml("m", extra=thresholds))
    numbers = add_subscribers(factory, 10)
    outbox = Outbox(lambda: AT, Settings())
    with db.transaction(factory) as session:
        campaigns.materialise(session, outbox, campaigns.plan(session, book, "m", AT, Settings()))
    later = AT + 9 * 3600
    with db.transaction(factory) as session:
        assert reports.check_thresholds(session, book, later) == []  # no complaint yet
        reports.record_complaint(session, numbers[0], later, text="营销短信太多")
    with db.transaction(factory) as session:
        alerts = reports.check_thresholds(session, book, later)
        assert len(alerts) == 1 and "complaint rate 10.00% >= threshold 10.00%" in alerts[0].message
    with factory() as session:
        assert session.get(CampaignState, "m").state == "paused"
        assert session.scalar(select(func.count()).select_from(Alert)) == 1
        states = set(session.scalars(select(OutboxMessage.state)))
        plan = campaigns.plan(session, book, "m", later, Settings())
    assert states == {"failed"}  # queued messages cancelled
    assert plan.status == "paused"
    with pytest.raises(campaigns.CampaignError, match="paused"):
        campaigns.materialise(session, outbox, plan)


def test_opt_out_attributed_and_counted(factory) -> None:
    book = make_book(campaign_yaml("m"))
    numbers = add_subscribers(factory, 2)
    with db.transaction(factory) as session:
        campaigns.materialise(session, Outbox(lambda: AT, Settings()),
                              campaigns.plan(session, book, "m", AT, Settings()))
    with db.transaction(factory) as session:
        event = reports.record_opt_out(session, numbers[1], AT + 86400)
        assert event.campaign_id == "m"
    with factory() as session:
        item = reports.campaign_report(session, "m", AT)["campaigns"][0]
    assert item["opt_outs"] == 1 and item["opt_out_rate"] == 0.5


def test_piggyback_line_carries_one_offer_and_the_opt_out(factory) -> None:
    book = make_book(campaign_yaml("low", offers="[A]", priority=1), campaign_yaml("high", offers="[B]", priority=9))
    add_subscribers(factory, 1)
    with db.transaction(factory) as session:
        line = campaigns.piggyback_line(session, "13800000001", AT, book)
        assert line == "B优惠,回复KTB办理。回复TD退订"
    with db.transaction(factory) as session:  # the same offer is not piggy-backed again within 90 days
        assert campaigns.piggyback_line(session, "13800000001", AT + 60, book) == "A优惠,回复KTA办理。回复TD退订"
        assert campaigns.piggyback_line(session, "13800099999", AT, book) is None


# --- the CLI entry point --------------------------------------------------------------------------------


def test_plan_command_json_and_table(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    engine = db.make_engine(url)
    db.migrate(engine)
    factory = db.session_factory(engine)
    add_subscribers(factory, 3, data_used_mb=900.0, data_allowance_mb=1000.0, usage_class="C",
                    high_data=False)
    engine.dispose()
    fixtures = tmp_path / "fx"
    fixtures.mkdir()
    for name, text in read_dir(ROOT / "fixtures" / "demo").items():
        (fixtures / name).parent.mkdir(parents=True, exist_ok=True)
        (fixtures / name).write_text(text, encoding="utf-8")
    code, out = campaigns.plan_command(url, str(fixtures), "data-boost", "2026-11-24T10:00:00+08:00", True)
    assert code == 0, out
    data = json.loads(out)
    assert data["recipients"] == 3 and data["rate"]["per_s"] > 0
    code, text = campaigns.plan_command(url, str(fixtures), "data-boost", "2026-11-24T10:00:00", False)
    assert code == 0 and "excluded by reason" in text
    code, text = campaigns.plan_command(url, str(fixtures), "nope", "2026-11-24T10:00:00", False)
    assert code == 2 and "unknown campaign 'nope'" in text


def test_materialise_batched_commits_each_batch_once(factory) -> None:
    from notifier.campaign_models import CampaignRun

    book = make_book(campaign_yaml("m"))
    add_subscribers(factory, 5)
    outbox = Outbox(lambda: AT, Settings())
    with factory() as session:
        plan = campaigns.plan(session, book, "m", AT, Settings())
    assert campaigns.materialise_batched(factory, outbox, plan, batch=2)["created"] == 5
    assert campaigns.materialise_batched(factory, outbox, plan, batch=2)["existing"] == 5
    with factory() as session:
        run = session.scalars(select(CampaignRun)).one()
    assert (run.state, run.messages, run.targeted) == ("done", 5, 5)


def test_campaign_summaries_for_the_api(factory) -> None:
    book = make_book(campaign_yaml("m", hour=15))
    with factory() as session:
        (item,) = campaigns.campaign_summaries(session, book, AT)
    assert item["state"] == "active" and item["next_run"] == "2026-11-24T15:00:00+08:00"
    assert item["window"] == ["09:00", "20:00"] and item["preview"]["parts"] == 1
