"""Segmentation at every threshold, bulk segmentation, templates' sandbox, population reproducibility."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import session_factory
from core.templates import TemplateRenderError, compile_template, render
from offers import population, schema, segments
from offers.models import Subscriber
from offers.segments import Feature, SegmentParams, Threshold
from tests.test_offers_support import demo_catalog, make_test_engine

# score = arpu_avg exactly, so grades can be probed at their boundaries
PARAMS = SegmentParams(
    brands={"mzone": "动感地带"},
    value_features=(Feature("arpu_avg", 100, 100),),
    grades=(("A1", 90), ("A2", 80), ("B1", 65), ("B2", 50), ("C", 30), ("D", 0)),
    usage_fact="data_usage_ratio",
    usage_classes=(("A", 0.3), ("B", 0.9), ("C", 1.2), ("D", None)),
    four_high={
        "tariff": {"month": Threshold("roaming_fee_month", 100), "day": Threshold("roaming_fee_day", 30)},
        "data": {"month": Threshold("data_used_mb", 30720), "day": Threshold("data_day_mb", 2048)},
        "silence": {"month": Threshold("days_silent", 30), "day": Threshold("days_silent", 7)},
        "arpu": {"month": Threshold("arpu_avg", 300), "day": Threshold("spend_day", 30)},
    },
    channel_factors={"phone": (Feature("phone_response_rate", 10, 1),), "sms": (Feature("sms_response_rate", 10, 1),),
                     "web": (Feature("web_response_rate", 10, 1),), "hall": (Feature("hall_response_rate", 10, 1),)},
)


def f(**raw):
    return schema.facts(raw)


@pytest.mark.parametrize("score,grade", [
    (100, "A1"), (90, "A1"), (89.9, "A2"), (80, "A2"), (79.9, "B1"), (65, "B1"), (64.9, "B2"),
    (50, "B2"), (49.9, "C"), (30, "C"), (29.9, "D"), (0, "D"),
])
def test_value_grade_boundaries(score, grade):
    decision = segments.value(f(arpu_avg=score), PARAMS)
    assert decision.value == (score, grade)
    assert decision.reasons[0].startswith(f"value {float(score)} >= ")
    assert decision.reasons[0].endswith(f"-> {grade}")


def test_value_reason_text_and_caps():
    assert segments.value(f(arpu_avg=83.5), PARAMS).reasons[0] == "value 83.5 >= 80 -> A2"
    assert segments.value(f(arpu_avg=500), PARAMS).value[0] == 100  # capped at full
    inverted = SegmentParams(**{**PARAMS.__dict__, "value_features": (Feature("late_payments", 100, 4, True),)})
    assert segments.value(f(late_payments=1), inverted).value[0] == 75


@pytest.mark.parametrize("used,cls", [
    (0, "A"), (299, "A"), (300, "B"), (899, "B"), (900, "C"), (1199, "C"), (1200, "D"), (99999, "D"),
])
def test_usage_class_boundaries(used, cls):
    decision = segments.usage(f(data_used_mb=used, data_allowance_mb=1000), PARAMS)
    assert decision.value == cls
    assert decision.reasons[0].endswith(f"-> {cls}")


def test_usage_without_allowance():
    assert segments.usage(f(data_used_mb=0, data_allowance_mb=0), PARAMS).value == "A"
    assert segments.usage(f(data_used_mb=5, data_allowance_mb=0), PARAMS).value == "D"


@pytest.mark.parametrize("flag,raw", [
    ("high_tariff", {"roaming_fee_month": 100}), ("high_tariff_day", {"roaming_fee_day": 30}),
    ("high_data", {"data_used_mb": 30720}), ("high_data_day", {"data_day_mb": 2048}),
    ("high_silence", {"days_silent": 30}), ("high_silence_day", {"days_silent": 7}),
    ("high_arpu", {"arpu_avg": 300}), ("high_arpu_day", {"spend_day": 30}),
])
def test_four_high_flags_at_threshold(flag, raw):
    at = segments.four_high(f(**raw), PARAMS)
    assert at.value[flag] is True
    assert any(r.startswith(f"{flag}: ") and ">=" in r for r in at.reasons)
    below = segments.four_high(f(**{k: v - 0.01 for k, v in raw.items()}), PARAMS)
    assert below.value[flag] is False


@pytest.mark.parametrize("ch", ["phone", "sms", "web", "hall"])
def test_channel_preference(ch):
    decision = segments.channel(f(**{f"{ch}_contacted": 4, f"{ch}_answered": 4, f"{ch}_responded": 2}), PARAMS)
    assert decision.value[0] == ch
    assert decision.reasons[0].endswith(f"-> {ch}")


def test_channel_tie_goes_to_channel_order():
    assert segments.channel(f(), PARAMS).value[0] == "phone"


def test_columns_fast_path_agrees_with_reasoned_path():
    import random

    rnd = random.Random(5)
    params = demo_catalog().params
    for i in range(500):
        facts = schema.facts(population.subscriber(rnd, str(i)))
        assert segments.segment_columns(facts, params) == segments.segment(facts, params).columns()


def test_population_is_reproducible_and_segment_all_matches(db_url):
    engine, drop = make_test_engine(db_url)
    try:
        params = demo_catalog().params
        assert population.generate(engine, 300, seed=3, params=params, now=1.0) == 300
        with session_factory(engine)() as s:
            first = [schema.facts(r) for r in s.scalars(select(Subscriber).order_by(Subscriber.msisdn))]
        seen = []
        assert population.generate(engine, 300, seed=3, params=params, now=1.0, progress=seen.append) == 300
        assert seen == [300]
        with session_factory(engine)() as s, s.begin():
            again = [schema.facts(r) for r in s.scalars(select(Subscriber).order_by(Subscriber.msisdn))]
            assert again == first and first[0]["msisdn"] == "13900000000"
            s.execute(Subscriber.__table__.update().values(value_grade="X", usage_class="X"))
            assert segments.segment_all(s, params, now=2.0) == 300
        with session_factory(engine)() as s:
            assert [schema.facts(r) for r in s.scalars(select(Subscriber).order_by(Subscriber.msisdn))] == first
    finally:
        drop()


def test_template_sandbox_and_bounds():
    template, problems = compile_template("{{ x.__class__.__mro__ }}", ["x"], "r.yaml", 3)
    assert not problems
    with pytest.raises(TemplateRenderError):
        render(template, x=1)
    template, _ = compile_template("{% for i in range(10**6) %}x{% endfor %}", [], "r.yaml", 3)
    with pytest.raises(TemplateRenderError):
        render(template)
    template, _ = compile_template("{% for i in range(999) %}{{ 'x' * 50 }}{% endfor %}", [], "r.yaml", 3)
    with pytest.raises(TemplateRenderError):
        render(template)
    template, _ = compile_template("{{ missing }}", ["missing"], "r.yaml", 3)
    with pytest.raises(TemplateRenderError):
        render(template)
    _, problems = compile_template("{{ a }} {{ b }}", ["a"], "r.yaml", 7)
    assert [str(p) for p in problems] == ["r.yaml:7: unknown template variable(s) b; allowed: a"]
    html, _ = compile_template("<b>{{ a }}</b>", ["a"], "m.yaml", 1, html=True)
    assert render(html, a="<i>") == "<b>&lt;i&gt;</b>"
    sms, _ = compile_template("{{ a }} {{ p|price }} {{ y|yuan }}", ["a", "p", "y"], "m.yaml", 1)
    assert render(sms, a="<i>", p=10.0, y=58.3) == "<i> 10 58.30"
