"""Shelf ranking and every exclusion reason, on hand-made catalogs and facts (no database)."""

from __future__ import annotations

from offers import schema
from offers.catalog import CatalogOffer, OffersCatalog
from offers.rules import compile_condition
from offers.shelf import DAY, build_shelf, score
from tests.test_offers_support import NOW, demo_catalog


def cond(text: str):
    condition, problems = compile_condition(text, "t.yaml", 1)
    assert not problems, problems
    return condition


def offer(code, priority=50.0, price=10.0, eligibility="true", trigger=None, group=None, channels=("sms",),
          start=None, end=None, fit=None):
    return CatalogOffer(code=code, name=f"offer {code}", price=price, type="data", validity_days=30,
                        exclusive_group=group, eligibility=cond(eligibility),
                        trigger=cond(trigger) if trigger else None, priority=priority,
                        channels=frozenset(channels), start_at=start, end_at=end, confirm_text="ok",
                        fit=fit or {})


def catalog(*offers):
    demo = demo_catalog()
    return OffersCatalog.build(list(offers), demo.params, demo.keywords, demo.replies)


def facts(**changes):
    base = {"msisdn": "1", "brand": "mzone", "arpu_avg": 100.0, "usage_class": "C", "value_grade": "B1",
            "data_used_mb": 900.0, "data_allowance_mb": 1000.0}
    return schema.facts({**base, **changes})


def reasons(shelf):
    return {d.code: d.reasons for d in shelf.decisions}


def test_every_exclusion_reason():
    cat = catalog(
        offer("OLD", end=NOW - 1), offer("NEW", start=NOW + 1), offer("HALL", channels=("hall",)),
        offer("HAVE"), offer("SAME", group="g"), offer("REF"), offer("OLDREF"),
        offer("NOPE", eligibility='brand == "gotone"'), offer("OK"),
    )
    shelf = build_shelf(facts(), cat, {"HAVE": "g"}, {"REF": NOW - 5 * DAY, "OLDREF": NOW - 100 * DAY},
                        NOW, top_k=5, refusal_days=90)
    why = reasons(shelf)
    assert why["OLD"] == ("out of date (ended)",)
    assert why["NEW"] == ("out of date (not started)",)
    assert why["HALL"][0].startswith("not sold on channel sms")
    assert why["HAVE"] == ("already subscribed",)
    assert why["SAME"] == ("excluded by active subscription HAVE (group g)",)
    assert why["REF"] == ("refused 5 days ago (kept off for 90 days)",)
    assert why["NOPE"] == ('not eligible: brand == "gotone" is false',)
    assert shelf.codes() == ["OK", "OLDREF"] or shelf.codes() == ["OLDREF", "OK"]
    assert [d.code for d in shelf.decisions] == [o.code for o in cat.offers]  # every offer explained


def test_in_date_boundaries():
    cat = catalog(offer("A", start=NOW, end=NOW + 10))
    assert build_shelf(facts(), cat, set(), {}, NOW, 5).codes() == ["A"]
    assert build_shelf(facts(), cat, set(), {}, NOW + 10, 5).codes() == []


def test_refusal_window_boundary():
    cat = catalog(offer("A"))
    assert build_shelf(facts(), cat, set(), {"A": NOW - 90 * DAY + 1}, NOW, 5, refusal_days=90).codes() == []
    assert build_shelf(facts(), cat, set(), {"A": NOW - 90 * DAY}, NOW, 5, refusal_days=90).codes() == ["A"]


def test_ranking_priority_fit_trigger_value_and_top_k():
    cat = catalog(
        offer("P40", priority=40), offer("P60", priority=60),
        offer("FIT", priority=40, fit={"usage_class": {"C": 2.0}}),  # 80
        offer("TRIG", priority=40, trigger="data_usage_ratio >= 0.9"),  # 40 x 1.5 = 60, ties P60 on score
        offer("DEAR", priority=100, price=200),  # value 0.5 + 0.5 x 50/200 = 0.625 -> 62.5
        offer("TIE", priority=60),
    )
    shelf = build_shelf(facts(), cat, set(), {}, NOW, top_k=4)
    assert shelf.codes() == ["FIT", "DEAR", "P60", "TIE"]  # 80, 62.5, 60 (priority 60, code order) ...
    why = reasons(shelf)
    assert why["TRIG"][-1] == "rank 5, beyond top 4"
    assert "trigger met: data_usage_ratio >= 0.9 x1.5" in why["TRIG"]
    assert "score 100 x 1 x 0.625 = 62.5" in why["DEAR"]
    assert [i.rank for i in shelf.offers] == [1, 2, 3, 4]
    assert shelf.offers[0].order == "KTFIT"


def test_value_factor_for_free_and_affordable_offers():
    params = demo_catalog().params
    assert score(offer("F", price=0), facts(arpu_avg=0.0), params) == 50
    assert score(offer("C", price=10), facts(arpu_avg=100.0), params) == 50
    assert score(offer("D", price=100), facts(arpu_avg=100.0), params) == 50 * 0.75


def test_active_codes_as_a_set_looks_groups_up_in_the_catalog():
    cat = catalog(offer("A", group="g"), offer("B", group="g"), offer("C"))
    shelf = build_shelf(facts(), cat, {"A"}, {}, NOW, 5)
    assert shelf.codes() == ["C"]
    assert reasons(shelf)["B"] == ("excluded by active subscription A (group g)",)


def test_the_sms_path_without_reasons_shows_the_same_offers():
    cat = catalog(
        offer("OLD", end=NOW - 1), offer("HALL", channels=("hall",)), offer("HAVE"), offer("SAME", group="g"),
        offer("REF"), offer("NO", eligibility="arpu_avg > 1000"), offer("A", priority=90), offer("B", price=500),
        offer("C", trigger="data_usage_ratio >= 0.9"), offer("D", fit={"usage_class": {"C": 2.0}}), offer("E"))
    args = (facts(), cat, {"HAVE": "g"}, {"REF": NOW - DAY}, NOW, 4)
    fast, full = build_shelf(*args, explain=False), build_shelf(*args)
    assert fast.offers == full.offers and len(fast.offers) == 4
    assert fast.decisions == () and len(full.decisions) == len(cat.offers)
