"""Fixture files of the offers domain: the demo set parses clean, broken files say file:line: reason."""

from __future__ import annotations

from sqlalchemy import func, select

from core.db import session_factory
from core.fixtures import load_set
from offers.models import Offer, Refusal, Subscriber, Subscription
from offers.sections import SECTIONS
from tests.test_offers_support import NOW, demo_files, load_demo, make_test_engine, parse_demo


def problems_of(**changes: str) -> list[str]:
    _, problems = parse_demo(**changes)
    return [str(p) for p in problems]


def test_demo_set_parses_without_problems():
    parsed, problems = parse_demo()
    assert problems == []
    assert len(parsed["offers.offers"]) >= 30
    assert [s["msisdn"] for s in parsed["offers.subscribers"]] == [f"138000{n:05d}" for n in range(1, 101)]


def _replace_line(name: str, old: str, new: str) -> tuple[str, int]:
    text = demo_files()[name]
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    return text.replace(old, new, 1), line


def test_unknown_attribute_in_rule_reports_its_line():
    text, line = _replace_line("offers.yaml", "eligibility: 'usage_class != \"A\"'", "eligibility: 'usage_klass != \"A\"'")
    found = problems_of(**{"offers.yaml": text})
    assert len(found) == 1
    assert found[0].startswith(f"offers.yaml:{line}: offers[0].eligibility: unknown attribute 'usage_klass'")
    assert "did you mean usage_class" in found[0]


def test_type_error_in_rule_reports_its_line():
    text, line = _replace_line("offers.yaml", "trigger: 'data_usage_ratio >= 0.8'", "trigger: 'brand >= 0.8'")
    found = problems_of(**{"offers.yaml": text})
    assert found and found[0].startswith(f"offers.yaml:{line}: offers[0].trigger: rule type error")


def test_cross_type_equality_is_a_type_error():
    text, line = _replace_line("offers.yaml", "eligibility: 'family_size >= 2'", "eligibility: 'family_size == \"2\"'")
    found = problems_of(**{"offers.yaml": text})
    assert len(found) == 1 and f"offers.yaml:{line}:" in found[0] and "compares FLOAT with STRING" in found[0]


def test_syntax_error_and_non_boolean_rule():
    text, line = _replace_line("offers.yaml", "eligibility: 'has_broadband'", "eligibility: 'has_broadband and'")
    assert f"offers.yaml:{line}:" in problems_of(**{"offers.yaml": text})[0]
    text, line = _replace_line("offers.yaml", "eligibility: 'has_broadband'", "eligibility: 'arpu_avg * 2'")
    assert "must be true/false" in problems_of(**{"offers.yaml": text})[0]


def test_offer_field_problems():
    text, line = _replace_line("offers.yaml", "    price: 10\n", "    price: ten\n")
    assert problems_of(**{"offers.yaml": text})[0].startswith(f"offers.yaml:{line}: offers[0].price: expected int or float")
    text, line = _replace_line("offers.yaml", "    type: data\n", "    type: datum\n")
    assert problems_of(**{"offers.yaml": text})[0].startswith(f"offers.yaml:{line}:")
    text, line = _replace_line("offers.yaml", "  - code: LL20\n", "  - code: LL10\n")
    assert any(p.startswith(f"offers.yaml:{line}:") and "duplicate offer code" in p
               for p in problems_of(**{"offers.yaml": text}))
    text, line = _replace_line("offers.yaml", "fit: {usage_class: {C: 1.4", "fit: {usage_class: {X: 1.4")
    assert any("unknown usage_class 'X'" in p for p in problems_of(**{"offers.yaml": text}))


def test_yaml_syntax_error_has_line():
    text = demo_files()["keywords.yaml"] + "  broken: [unclosed\n"
    found = problems_of(**{"keywords.yaml": text})
    assert found and found[0].startswith("keywords.yaml:") and "invalid YAML" in found[0]


def test_template_unknown_variable_reports_line():
    text, line = _replace_line("replies.yaml", "  balance: |", "  balance: |\n    {{ balanse }}")
    found = problems_of(**{"replies.yaml": text})
    assert len(found) == 1
    assert found[0].startswith(f"replies.yaml:{line}: replies.balance: unknown template variable(s) balanse")


def test_missing_reply_and_duplicate_keyword():
    text, _ = _replace_line("replies.yaml", "  refuse_done: |", "  refuse_donee: |")
    found = problems_of(**{"replies.yaml": text})
    assert any("missing reply 'refuse_done'" in p for p in found)
    assert any("unknown reply" in p for p in found)
    text, line = _replace_line("keywords.yaml", '"CXYE", ', '"CXYE", "200", ')
    found = problems_of(**{"keywords.yaml": text})
    assert found == [f"keywords.yaml:{line}: actions.balance.keywords[1]: '200' is already a keyword of 'shelf'"]


def test_segments_problems():
    text, line = _replace_line("segments.yaml", "{fact: arpu_avg, weight: 35, full: 300}",
                               "{fact: arpu_avg, weight: 30, full: 300}")
    assert any("add up to 100" in p for p in problems_of(**{"segments.yaml": text}))
    text, line = _replace_line("segments.yaml", "{fact: days_silent, min: 7}", "{fact: days_quiet, min: 7}")
    found = problems_of(**{"segments.yaml": text})
    assert found[0].startswith(f"segments.yaml:{line}: four_high.silence.day.fact: unknown input fact 'days_quiet'")
    text, line = _replace_line("segments.yaml", "{grade: B1, min: 65}", "{grade: B1, min: 85}")
    assert any(p.startswith(f"segments.yaml:{line}:") and "falling" in p for p in problems_of(**{"segments.yaml": text}))


def test_subscriber_problems():
    text, line = _replace_line("subscribers.yaml", 'msisdn: "13800000002"', "msisdn: 13800000002")
    found = problems_of(**{"subscribers.yaml": text})
    assert found[0].startswith(f"subscribers.yaml:{line}: subscribers[1].msisdn: expected str")
    text, line = _replace_line("subscribers.yaml", 'brand: "mzone", age: 21',
                               'brand: "unicom", age: 21')
    assert any("unknown brand" in p for p in problems_of(**{"subscribers.yaml": text}))
    text, line = _replace_line("subscribers.yaml", 'subscriptions: ["LL30", "QQW"]', 'subscriptions: ["LL31"]')
    assert any(p.startswith(f"subscribers.yaml:{line}:") and "unknown offer code 'LL31'" in p
               for p in problems_of(**{"subscribers.yaml": text}))


def test_load_counts_and_reload_keeps_opt_out(db_url):
    engine, drop = make_test_engine(db_url)
    try:
        load_demo(engine)
        factory = session_factory(engine)
        with factory() as s, s.begin():
            assert s.scalar(select(func.count()).select_from(Subscriber)) == 100
            assert s.scalar(select(func.count()).select_from(Offer)) == len(parse_demo()[0]["offers.offers"])
            assert s.get(Subscriber, "13800000001").usage_class == "C"
            assert s.scalar(select(func.count()).select_from(Refusal).where(Refusal.msisdn == "13800000019")) == 2
            s.get(Subscriber, "13800000001").opted_out = True
        load_demo(engine)  # a reload: the subscriber's own opt-out wins, history is not doubled
        with factory() as s, s.begin():
            assert s.get(Subscriber, "13800000001").opted_out is True
            assert s.scalar(select(func.count()).select_from(Subscription)
                            .where(Subscription.msisdn == "13800000018")) == 2
            assert s.scalar(select(func.count()).select_from(Refusal).where(Refusal.msisdn == "13800000019")) == 2
        parsed, _ = parse_demo()
        parsed["offers.offers"] = parsed["offers.offers"][1:]
        with factory() as s, s.begin():
            counts = load_set(s, parsed, SECTIONS, NOW)
            assert counts["offers.subscribers"] == 100
            assert s.get(Offer, "LL10").retired is True
    finally:
        drop()
