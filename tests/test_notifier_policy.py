"""The contact policy at every boundary: pure functions, a plain float clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from notifier import policy
from notifier.policy import DAY, Ask, Contact, History, PolicyParams

CST = ZoneInfo("Asia/Shanghai")
PARAMS = PolicyParams(cap_day=1, cap_week=2, cap_month=4, refusal_limit=3, daily_capacity=100)
FACTS = {"consent_marketing": True, "opted_out": False, "complaints": 0.0}


def at(text: str, tz: ZoneInfo = CST) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


NOW = at("2026-10-10T10:00:00")


def contact(when: float, *, campaign: str = "c1", offer: str | None = "LL10", key: str | None = None,
            kind: str = "marketing", channel: str = "sms", content: str = "h") -> Contact:
    return Contact(when, campaign, offer, channel, kind, content, key or f"k{when}")


ASK = Ask("c2", "marketing", "sms", ("LL20",))


# --- quiet hours ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("local", "quiet"), [
    ("2026-10-10T20:59:59", False), ("2026-10-10T21:00:00", True), ("2026-10-11T07:59:59", True),
    ("2026-10-11T08:00:00", False), ("2026-10-11T00:00:00", True), ("2026-10-10T12:00:00", False),
])
def test_quiet_hours_edges(local: str, quiet: bool) -> None:
    assert policy.in_quiet(at(local), "Asia/Shanghai", 21 * 3600, 8 * 3600) is quiet


def test_quiet_hours_hold_to_the_window_start_not_dropped() -> None:
    start, end = 21 * 3600, 8 * 3600
    assert policy.quiet_hold(at("2026-10-10T21:00:00"), "Asia/Shanghai", start, end) == at("2026-10-11T08:00:00")
    assert policy.quiet_hold(at("2026-10-11T03:30:00"), "Asia/Shanghai", start, end) == at("2026-10-11T08:00:00")
    assert policy.quiet_hold(at("2026-10-11T08:00:00"), "Asia/Shanghai", start, end) == at("2026-10-11T08:00:00")


def test_quiet_hours_in_the_subscribers_time_zone() -> None:
    london = ZoneInfo("Europe/London")
    t = at("2026-10-10T13:00:00")  # 06:00 in London (BST): quiet there, not in Beijing
    assert not policy.in_quiet(t, "Asia/Shanghai", 21 * 3600, 8 * 3600)
    assert policy.quiet_hold(t, "Europe/London", 21 * 3600, 8 * 3600) == at("2026-10-10T08:00:00", london)


def test_quiet_hours_not_wrapping_midnight_and_disabled() -> None:
    assert policy.in_quiet(at("2026-10-10T12:30:00"), "Asia/Shanghai", 12 * 3600, 14 * 3600)
    assert not policy.in_quiet(at("2026-10-10T14:00:00"), "Asia/Shanghai", 12 * 3600, 14 * 3600)
    assert not policy.in_quiet(at("2026-10-10T23:00:00"), "Asia/Shanghai", 0, 0)


# --- caps -------------------------------------------------------------------------------------------


def test_day_cap_at_exactly_n_and_window_edge() -> None:
    assert policy.caps(History(), PARAMS, NOW).ok
    inside = History((contact(NOW - DAY + 1),))
    assert policy.caps(inside, PARAMS, NOW).code == "cap_day"
    edge = History((contact(NOW - DAY),))  # exactly one day old: outside the rolling day
    assert policy.caps(edge, PARAMS, NOW).ok


def test_week_and_month_caps_at_exactly_n() -> None:
    week = History(tuple(contact(NOW - d * DAY) for d in (2, 3)))
    assert policy.caps(week, PARAMS, NOW).code == "cap_week"
    assert policy.caps(History((contact(NOW - 2 * DAY),)), PARAMS, NOW).ok
    month = History(tuple(contact(NOW - d * DAY) for d in (8, 9, 20, 29)))
    decision = policy.caps(month, PARAMS, NOW)
    assert decision.code == "cap_month" and "4 marketing SMS in the last 30 day(s), cap 4" in decision.reason
    assert policy.caps(History(month.contacts[:3]), PARAMS, NOW).ok


def test_a_digest_counts_once_and_care_or_email_do_not_count() -> None:
    same_digest = History((contact(NOW - 3 * DAY, key="d", campaign="a"), contact(NOW - 3 * DAY, key="d", campaign="b")))
    assert policy.caps(same_digest, PARAMS, NOW).ok
    others = History((contact(NOW - 3600, kind="care"), contact(NOW - 3600, channel="email")))
    assert policy.caps(others, PARAMS, NOW).ok


def test_capacity_edge() -> None:
    assert policy.capacity(99, PARAMS).ok
    assert policy.capacity(100, PARAMS).code == "capacity"


# --- offers, refusals, consent ------------------------------------------------------------------------


def test_same_offer_90_day_window_edge() -> None:
    edge = History((contact(NOW - 90 * DAY, offer="LL20"),))
    assert policy.offer_block("LL20", ASK, edge, PARAMS, NOW).ok
    inside = History((contact(NOW - 90 * DAY + 1, offer="LL20"),))
    decision = policy.offer_block("LL20", ASK, inside, PARAMS, NOW)
    assert decision.code == "recent_offer"
    assert str(decision) == "excluded: contacted 2026-07-12 about LL20, window 90 days"


def test_same_offer_rule_is_for_marketing_only() -> None:
    inside = History((contact(NOW - DAY, offer="LL20"),))
    care = Ask("care", "care", "sms", ("LL20",))
    assert policy.offer_block("LL20", care, inside, PARAMS, NOW).ok


def test_refusal_count_edge() -> None:
    two = History(refusals=(("A", NOW - DAY), ("B", NOW - 2 * DAY)))
    assert policy.refusals(two, PARAMS, NOW).ok
    three = History(refusals=(*two.refusals, ("C", NOW - 3 * DAY)))
    assert policy.refusals(three, PARAMS, NOW).code == "refusals"
    old = History(refusals=(*two.refusals, ("C", NOW - 180 * DAY)))  # exactly at the window edge: outside
    assert policy.refusals(old, PARAMS, NOW).ok


def test_refused_offer_is_not_offered_again_within_the_window() -> None:
    history = History(refusals=(("LL20", NOW - 10 * DAY),))
    assert policy.offer_block("LL20", ASK, history, PARAMS, NOW).code == "recent_offer"


def test_subscribed_offer_skipped_and_next_offer_chosen() -> None:
    ask = Ask("c", "marketing", "sms", ("LL20", "LL30"))
    history = History(subscribed=frozenset({"LL20"}))
    assert policy.choose_offer(ask, history, PARAMS, NOW).offer == "LL30"
    both = History(subscribed=frozenset({"LL20", "LL30"}))
    assert policy.choose_offer(ask, both, PARAMS, NOW).code == "subscribed"


def test_consent_opt_out_and_complaints() -> None:
    assert policy.consent({**FACTS, "opted_out": True}).code == "opted_out"
    assert policy.consent({**FACTS, "consent_marketing": False}).code == "no_consent"
    assert policy.complaints({**FACTS, "complaints": 1.0}, History(), PARAMS, NOW).code == "complained"
    recent = History(complaints=(NOW - 364 * DAY,))
    assert policy.complaints(FACTS, recent, PARAMS, NOW).code == "complained"
    assert policy.complaints(FACTS, History(complaints=(NOW - 365 * DAY,)), PARAMS, NOW).ok


def test_same_content_and_cooldown() -> None:
    history = History((contact(NOW - 100 * DAY, campaign="c2", content="abc"),))
    assert policy.same_content("abc", history, PARAMS).code == "same_content"
    assert policy.same_content("xyz", history, PARAMS).ok
    ask = Ask("c2", "care", "sms", (), repeat_after_days=7)
    assert policy.cooldown(ask, History((contact(NOW - 7 * DAY + 1, campaign="c2"),)), PARAMS, NOW).code == "cooldown"
    assert policy.cooldown(ask, History((contact(NOW - 7 * DAY, campaign="c2"),)), PARAMS, NOW).ok


def test_decide_runs_the_rules_in_order_and_explains() -> None:
    assert policy.decide(FACTS, History(), ASK, PARAMS, NOW).offer == "LL20"
    opted = policy.decide({**FACTS, "opted_out": True}, History(subscribed=frozenset({"LL20"})), ASK, PARAMS, NOW)
    assert opted.code == "opted_out"
    capped = policy.decide(FACTS, History((contact(NOW - 3600, offer="X"),)), ASK, PARAMS, NOW)
    assert capped.code == "cap_day"
    assert policy.decide(FACTS, History(), ASK, PARAMS, NOW, used_today=100).code == "capacity"
    email = Ask("m", "marketing", "email", ())
    assert policy.decide(FACTS, History(), email, PARAMS, NOW).code == "no_email"
    assert policy.decide(FACTS, History(), email, PARAMS, NOW, email="a@b.cn").ok


def test_count_reasons_in_check_order() -> None:
    decisions = [policy.Decision(False, "cap_day"), policy.OK, policy.Decision(False, "opted_out"),
                 policy.Decision(False, "cap_day")]
    assert list(policy.count_reasons(decisions).items()) == [("opted_out", 1), ("cap_day", 2)]


# --- hotline-derived rate ------------------------------------------------------------------------------


def test_hotline_rate_derivation_floor_and_cap() -> None:
    hotline = policy.Hotline(agents=120, calls_per_agent_hour=10, target_utilisation=0.85,
                             baseline_calls_per_hour=800, callback_share=0.005)
    rate = policy.hotline_rate(hotline, 2000)
    assert rate.per_s == pytest.approx(220 / 0.005 / 3600)
    assert "220 spare calls/h" in rate.explanation
    busy = policy.hotline_rate(policy.Hotline(agents=10, baseline_calls_per_hour=1000), 2000)
    assert busy.per_s == 1.0 and "floor" in busy.explanation
    assert policy.hotline_rate(hotline, 5.0).per_s == 5.0
