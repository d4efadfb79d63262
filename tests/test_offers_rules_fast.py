"""The compiled fast path of conditions agrees with rule-engine on every demo offer and subscriber."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixtures import parse_set, read_dir
from gateway.sections import all_sections
from offers import schema
from offers.rules import compile_condition
from tests.harness import ROOT


def test_fast_path_agrees_with_rule_engine_on_demo_data():
    parsed, problems = parse_set(read_dir(ROOT / "fixtures" / "demo"), all_sections())
    assert not problems
    offers = parsed["offers.offers"]
    people = [schema.facts(dict(p)) if not isinstance(p, dict) else p for p in parsed["offers.subscribers"]]
    checked = 0
    for offer in offers:
        for condition in (offer.eligibility, offer.trigger):
            if condition is None or condition.fast is None:
                continue
            for person in people:
                facts = schema.facts(person) if "arpu_avg" not in person else person
                assert condition.matches(facts) == bool(condition.rule.matches(facts)), (condition.text, facts)
                checked += 1
    assert checked > 100


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1000, allow_nan=False), st.sampled_from(["gotone", "mzone", "easyown"]))
def test_fast_path_agrees_on_random_facts(arpu, brand):
    cond, problems = compile_condition("arpu_avg >= 50 and brand in ['gotone', 'mzone'] or not roaming",
                                       "t.yaml", 1)
    assert not problems and cond.fast is not None
    facts = {name: None for name in schema.SCHEMA}
    facts.update(arpu_avg=arpu, brand=brand, roaming=False)
    assert cond.matches(facts) == bool(cond.rule.matches(facts))
