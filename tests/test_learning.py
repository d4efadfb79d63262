"""The learned term: bounded by the business rules, a stable holdout, durable shared state, the market."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.db import session_factory
from core.settings import Settings
from offers import exposures, learning
from offers.router import Inbound, Router
from offers.shelf import build_shelf, candidates, fit_items, load_inputs, rank, reply_vars
from offers.shelf_cache import pack, unpack
from tests.harness import ROOT
from tests.test_offers_support import NOW, demo_catalog, load_demo, make_test_engine

CATALOG = demo_catalog()
SEGMENTS = learning.all_segments(CATALOG.params)
PEOPLE = [str(13800000000 + n) for n in range(1, 101)]


@pytest.fixture(scope="module")
def demo_facts(tmp_path_factory):
    """Facts, active subscriptions and refusals of the 100 demo subscribers."""
    engine, drop = make_test_engine(f"sqlite:///{tmp_path_factory.mktemp('facts') / 'facts.db'}")
    load_demo(engine)
    with session_factory(engine)() as session:
        people = {m: load_inputs(session, m, NOW, 90) for m in PEOPLE}
    drop()
    return people


@pytest.fixture
def factory(db_url):
    engine, drop = make_test_engine(db_url)
    load_demo(engine)
    yield session_factory(engine)
    drop()


def _snapshot(counts, **knobs) -> learning.LearnedSnapshot:
    return learning.build_snapshot(counts, CATALOG.offers, SEGMENTS, Settings({"learning.holdout_share": 0.0,
                                                                               **knobs}))


def _shelves(inputs, snapshot, msisdn):
    facts, active, refused = inputs
    fixed = build_shelf(facts, CATALOG, active, refused, NOW, len(CATALOG.offers))
    _, term = learning.assign(snapshot, facts, msisdn, explain=True)
    learned = build_shelf(facts, CATALOG, active, refused, NOW, len(CATALOG.offers), learned=term)
    return fixed, learned


def _check_bounds(fixed, learned, floor: float, cap: float) -> None:
    before = {d.code: d for d in fixed.decisions}
    for d in learned.decisions:
        was = before[d.code]
        assert d.included == was.included, f"{d.code}: the learned term changed who is eligible"
        if not d.included:
            assert d.reasons == was.reasons  # the same exclusion, nothing learned about it
        else:
            assert floor * was.score - 0.002 <= d.score <= cap * was.score + 0.002


def test_learned_term_never_lifts_an_ineligible_offer(demo_facts):
    facts, active, refused = demo_facts["13800000001"]
    fixed = build_shelf(facts, CATALOG, active, refused, NOW, len(CATALOG.offers))
    out = {d.code for d in fixed.decisions if not d.included}
    assert {"LL50", "LL618"} <= out  # not eligible, ended
    seg = learning.segment_key(facts)
    # every excluded offer converts perfectly, every eligible one never: the strongest pull there is
    counts = {(o.code, seg): (5000, 5000 if o.code in out else 0) for o in CATALOG.offers}
    snapshot = _snapshot(counts, **{"learning.cap": 100.0, "learning.floor": 0.01})
    fixed, learned = _shelves(demo_facts["13800000001"], snapshot, "13800000001")
    _check_bounds(fixed, learned, 0.01, 100.0)
    assert not out & set(learned.codes())
    reasons = {d.code: d.reasons for d in learned.decisions}
    assert any(r.startswith("learned x") and "0 confirmed of 5000 shown" in r for r in reasons[learned.codes()[0]])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(person=st.sampled_from(PEOPLE), data=st.data(),
       floor=st.floats(0.01, 1.0), cap=st.floats(1.0, 50.0))
def test_learned_shelf_keeps_every_business_rule(demo_facts, person, data, floor, cap):
    seg = learning.segment_key(demo_facts[person][0])
    counts = {(o.code, seg): (n, data.draw(st.integers(0, n)))
              for o in CATALOG.offers for n in [data.draw(st.integers(0, 3000))]}
    snapshot = _snapshot(counts, **{"learning.floor": floor, "learning.cap": cap, "learning.weight": 2.0})
    fixed, learned = _shelves(demo_facts[person], snapshot, person)
    _check_bounds(fixed, learned, floor, cap)


def test_without_evidence_or_weight_the_learned_shelf_is_the_fixed_one(demo_facts):
    strong_prior = _snapshot({}, **{"learning.prior_strength": 1e6})
    assert all(abs(f - 1) < 0.05 for e in strong_prior.arms.values() for f in e.factors)
    off = _snapshot({(o.code, s): (1000, 500) for o in CATALOG.offers for s in SEGMENTS}, **{"learning.weight": 0.0})
    for person in PEOPLE:
        fixed, learned = _shelves(demo_facts[person], off, person)
        assert learned.codes() == fixed.codes()


def test_holdout_is_stable_per_subscriber_and_has_the_configured_share():
    numbers = [str(13900000000 + i) for i in range(20000)]
    first = [learning.in_holdout(m, 7, 0.2) for m in numbers]
    assert [learning.in_holdout(m, 7, 0.2) for m in numbers] == first
    assert 0.19 <= sum(first) / len(first) <= 0.21
    assert [learning.in_holdout(m, 8, 0.2) for m in numbers] != first  # the seed reshuffles
    # a wider share keeps everyone the narrower one held out
    assert all(learning.in_holdout(m, 7, 0.3) for m, held in zip(numbers, first, strict=True) if held)
    # another process (another hash seed) puts the same numbers in the holdout
    code = ("import json, sys; from offers.learning import in_holdout; "
            "print(json.dumps([in_holdout(str(13900000000 + i), 7, 0.2) for i in range(2000)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert json.loads(out.stdout) == first[:2000]


def test_holdout_subscribers_get_the_fixed_shelf(demo_facts):
    counts = {(o.code, s): (1000, 900 if o.priority < 50 else 0) for o in CATALOG.offers for s in SEGMENTS}
    snapshot = learning.build_snapshot(counts, CATALOG.offers, SEGMENTS, Settings({"learning.holdout_share": 0.5}))
    arms = {}
    for person in PEOPLE:
        arm, term = learning.assign(snapshot, demo_facts[person][0], person)
        arms[person] = arm
        assert (term is None) == (arm == "fixed") == learning.in_holdout(person, 1, 0.5)
    assert set(arms.values()) == {"learned", "fixed"}


def _shelf_and_order(factory, router, msisdn: str, now: float) -> None:
    with factory() as session, session.begin():
        codes = router.handle(session, Inbound("sms", msisdn, "10086", "200"), now).details["offers"]
    with factory() as session, session.begin():
        router.handle(session, Inbound("sms", msisdn, "10086", f"KT{codes[0]}"), now + 1)
    with factory() as session, session.begin():
        router.handle(session, Inbound("sms", msisdn, "10086", "Y"), now + 2)


def test_learned_state_is_durable_frozen_and_reset_by_ops(factory):
    settings_ = Settings({"learning.holdout_share": 0.0})
    router = Router(demo_catalog, settings_)
    _shelf_and_order(factory, router, "13800000001", NOW)
    with factory() as session:  # refresh runs its own transactions
        snap = learning.refresh(session, CATALOG, settings_, NOW + 10)
    shown = sum(e.exposures for e in snap.arms.values())
    assert shown >= 3 and sum(e.conversions for e in snap.arms.values()) == 1
    with factory() as session, session.begin():  # another process reads the same state without folding
        assert learning.load(session, CATALOG, settings_, NOW + 11).summary()["exposures"] == shown
        learning.set_frozen(session, True, NOW + 12)
    _shelf_and_order(factory, router, "13800000003", NOW + 20)
    with factory() as session:
        frozen = learning.refresh(session, CATALOG, settings_, NOW + 30)
    assert frozen.frozen and frozen.summary()["exposures"] == shown  # nothing folded while frozen
    with factory() as session, session.begin():
        learning.set_frozen(session, False, NOW + 31)
    with factory() as session:
        assert learning.refresh(session, CATALOG, settings_, NOW + 32).summary()["exposures"] > shown
    with factory() as session, session.begin():
        learning.reset(session, NOW + 40)
    with factory() as session:
        after = learning.refresh(session, CATALOG, settings_, NOW + 50)
    assert after.summary()["exposures"] == 0 and after.reset_at == NOW + 40  # events before the reset don't count
    with factory() as session:
        assert session.query(exposures.Exposure).count() >= shown  # the events stay for the reports


def _market(*args: str) -> dict:
    out = subprocess.run([sys.executable, "run_gateway.py", "simulate", "market", "--days", "3", "--population",
                          "300", "--json", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_simulate_market_json_shape_and_determinism(tmp_path):
    png = tmp_path / "market.png"
    first = _market("--seed", "5", "--png", str(png))
    assert first["seed"] == 5 and [d["day"] for d in first["days"]] == [1, 2, 3]
    for day in first["days"]:
        assert {"day", "learned_conversion", "fixed_conversion", "regret"} <= set(day)
        assert 0 <= day["learned_conversion"] <= 1 and 0 <= day["fixed_conversion"] <= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _market("--seed", "5") == first
    assert _market("--seed", "6")["days"] != first["days"]


def test_shelf_exposures_commit_with_the_reply_and_vanish_with_a_rollback(factory):
    router = Router(demo_catalog, Settings())
    with factory() as session, session.begin():
        codes = router.handle(session, Inbound("ussd", "13800000005", "*200#", "200"), NOW).details["offers"]
    with pytest.raises(RuntimeError), factory() as session, session.begin():
        router.handle(session, Inbound("sms", "13800000005", "10086", "200"), NOW + 1)
        raise RuntimeError("the batch failed before its commit")
    with factory() as session:
        rows = session.query(exposures.Exposure).order_by(exposures.Exposure.rank).all()
    assert [(r.offer_code, r.rank, r.channel, r.context, r.at) for r in rows] == [
        (code, rank, "ussd", "shelf", NOW) for rank, code in enumerate(codes, 1)]
    assert {r.arm for r in rows} == {"fixed"} and {r.segment for r in rows} == {"mzone:B"}


def test_an_outbound_call_offer_is_an_exposure_its_order_and_refusal_link_to(factory):
    from notifier import projects_calls

    router = Router(demo_catalog, Settings())
    with factory() as session, session.begin():
        projects_calls.order(session, router, None, None, "data-call", "c1", "13800000001", "LL30", NOW)
    with factory() as session, session.begin():
        router.handle(session, Inbound("sms", "13800000001", "10086", "Y"), NOW + 60)
    with factory() as session, session.begin():
        projects_calls.refuse(session, "13800000003", "LL20", NOW, "data-call")
    with factory() as session:
        calls = {e.msisdn: e for e in session.query(exposures.Exposure).filter_by(channel="call")}
        ordered = exposures.chain(session, calls["13800000001"].id)
        refused = exposures.chain(session, calls["13800000003"].id)
    assert ordered["exposure"]["context"] == "call:data-call"
    assert [(o["kind"], o["channel"]) for o in ordered["outcomes"]] == [("ordered", "ivr"), ("confirmed", "sms")]
    assert [(o["kind"], o["suppresses"]) for o in refused["outcomes"]] == [("refused", True)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(person=st.sampled_from(PEOPLE), data=st.data())
def test_rank_of_cached_candidates_is_the_shelf_built_afresh(demo_facts, person, data):
    """The shelf cache ranks a subscriber's cached candidates again under each new snapshot: the
    result must be the order build_shelf gives with the same term, for any evidence."""
    facts, active, refused = demo_facts[person]
    seg = learning.segment_key(facts)
    counts = {(o.code, seg): (n, data.draw(st.integers(0, n)))
              for o in CATALOG.offers for n in [data.draw(st.integers(0, 3000))]}
    snapshot = _snapshot(counts, **{"learning.cap": 10.0, "learning.floor": 0.1})
    _, term = learning.assign(snapshot, facts, person)
    built = build_shelf(facts, CATALOG, active, refused, NOW, 5, learned=term, explain=False)
    cands = candidates(facts, CATALOG, active, refused, NOW)
    assert rank(cands, 5, term) == built.offers
    assert rank(cands, 5, None) == build_shelf(facts, CATALOG, active, refused, NOW, 5, explain=False).offers
    assert rank(unpack(CATALOG, pack(CATALOG, cands)), 5, term) == built.offers  # as the cache keeps them


def test_equal_shelves_share_one_text(demo_facts):
    """Equal shelves fit to the same text object, rendered once (the cache holds a few distinct texts, not a
    copy per subscriber: fewer objects for the garbage collector)."""
    person = PEOPLE[0]
    facts, active, refused = demo_facts[person]
    base = reply_vars(facts, CATALOG, facts.get("name", ""))
    first = fit_items(CATALOG, rank(candidates(facts, CATALOG, active, refused, NOW), 5), base)
    second = fit_items(CATALOG, rank(candidates(facts, CATALOG, active, refused, NOW), 5), base)
    assert first == second and first[0] is second[0]


def test_incremental_fold_equals_a_recount_of_the_window(factory):
    """Each fold adds only the events since the last one (learned_counts by hour), yet the arms always
    equal a recount of the whole window straight from the events."""
    settings_ = Settings({"learning.holdout_share": 0.0, "learning.refresh_s": 10.0})
    router = Router(demo_catalog, settings_)
    recount = ("SELECT e.offer_code, e.segment, COUNT(*), COUNT(c.exposure_id) FROM exposures e LEFT JOIN "
               "(SELECT DISTINCT exposure_id FROM outcomes WHERE kind = 'confirmed') c ON c.exposure_id = e.id "
               "WHERE e.context = 'shelf' AND e.segment IS NOT NULL AND e.at < :hi GROUP BY 1, 2")
    people = ["13800000001", "13800000002", "13800000003", "13800000004"]
    folds = 0
    for step in range(8):
        at = NOW + step * 1800.0  # across several hour buckets
        _shelf_and_order(factory, router, people[step % len(people)], at)
        with factory() as session:
            learning.refresh(session, CATALOG, settings_, at + 60)
            folds += 1
        with factory() as session:
            want = {(c, s): (n, w) for c, s, n, w in session.execute(text(recount), {"hi": at + 60 - learning.FOLD_LAG_S})}
            got = {(a.offer_code, a.segment): (a.exposures, a.conversions)
                   for a in session.query(learning.LearnedArm)}
            ctl = session.get(learning.LearningControl, 1)
            assert got == want and ctl.folded_until == at + 60 - learning.FOLD_LAG_S
            assert session.query(learning.LearnedCount).count() >= len(got)
    assert folds == 8


def test_a_savepoint_rolled_back_takes_back_only_its_own_buffered_rows(factory):
    """Exposures and last shelves are buffered until the commit: a savepoint that fails (an IVR job, an
    idempotent enqueue) must not drop what the transaction buffered before it."""
    from offers import fastsql
    from offers.shelf import ShelfItem

    items = exposures.shown((ShelfItem(1, "LL30", "n", 30.0, "KTLL30"),))
    with factory() as session, session.begin():
        exposures.record_shelf(session, "13800000001", "sms", items, NOW, "GT:mid", "fixed")
        fastsql.remember_shelf(session, "13800000001", ["LL30"], NOW)
        with pytest.raises(ValueError), session.begin_nested():
            exposures.record_shelf(session, "13800000002", "sms", items, NOW, "GT:mid", "fixed")
            fastsql.remember_shelf(session, "13800000002", ["LL30"], NOW)
            raise ValueError("the job failed")
        exposures.record_shelf(session, "13800000003", "sms", items, NOW, "GT:mid", "fixed")
    with factory() as session:
        shown = {m for (m,) in session.execute(text("SELECT msisdn FROM exposures WHERE at = :t"), {"t": NOW})}
        views = {m for (m,) in session.execute(text("SELECT msisdn FROM shelf_views WHERE at = :t"), {"t": NOW})}
    assert shown == {"13800000001", "13800000003"} and views == {"13800000001"}


def test_hot_path_cursor_belongs_to_the_connection_not_to_a_session(factory):
    """fastsql's cursor belongs to the pooled connection: a session dropped in a cycle and collected later,
    by whichever thread, frees no cursor. A cursor per session was freed that way, and freeing a sqlite3
    cursor resets the prepared statement it last ran, which the connection's statement cache had lent to
    the next transaction meanwhile (sqlite3.InterfaceError mid-executemany, seen in the soak)."""
    import gc

    from offers import fastsql

    insert = "INSERT INTO shelf_views (msisdn, codes, at) VALUES (?, ?, ?)"
    first = factory()
    with first.begin():
        fastsql.executemany(first, insert, [("13899990001", "[]", NOW)])
        used, connection = fastsql._cursor(first)[0], first.connection().connection.dbapi_connection
    first.close()
    del first
    gc.collect()
    with factory() as second, second.begin():
        if second.connection().connection.dbapi_connection is connection:  # the pool's last one back (LIFO)
            assert fastsql._cursor(second)[0] is used
        fastsql.executemany(second, insert, [("13899990002", "[]", NOW)])
    with factory() as session:
        found = session.execute(text("SELECT count(*) FROM shelf_views WHERE msisdn LIKE '1389999000%'")).scalar()
    assert found == 2


def test_two_folds_racing_add_the_events_once(factory, monkeypatch):
    """Another process folds the same interval while this one is counting: the compare-and-set on
    folded_until lets only the first add the events, and the counting held no write lock (the other
    process could commit in the middle of it)."""
    from offers import fastsql

    settings_ = Settings({"learning.holdout_share": 0.0})
    _shelf_and_order(factory, Router(demo_catalog, settings_), "13800000001", NOW)
    real_rows, raced = fastsql.rows, []

    def rows_then_the_other_process_folds(session, statement, params):
        found = real_rows(session, statement, params)
        if statement is learning._NEW_CONVERSIONS and not raced:
            raced.append(True)
            with factory() as other:
                assert learning.fold(other, NOW + 30, settings_) > 0
        return found

    monkeypatch.setattr(fastsql, "rows", rows_then_the_other_process_folds)
    with factory() as session:
        assert learning.fold(session, NOW + 30, settings_) == 0  # lost the claim: added nothing
    with factory() as session:
        arms = {(a.offer_code, a.segment): (a.exposures, a.conversions) for a in session.query(learning.LearnedArm)}
        shown = session.execute(text("SELECT COUNT(*) FROM exposures WHERE context = 'shelf'")).scalar()
    assert raced and sum(n for n, _ in arms.values()) == shown and sum(w for _, w in arms.values()) == 1
