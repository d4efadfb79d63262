"""The in-memory "200" cache: hits read nothing, and every event that changes a shelf invalidates it.

Real SQLite, the real demo catalog, the clock passed in by hand (no sleeps).
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from sqlalchemy import text

from core.db import session_factory
from core.settings import Settings
from offers.population import generate
from offers.router import Inbound, Router, mark_changed, record_refusal, subscribers_rewritten
from offers.shelf import DAY
from offers.shelf_cache import ShelfCache
from tests.test_offers_support import NOW, demo_catalog, load_demo, make_test_engine

USER = "13800000001"


@pytest.fixture
def factory(tmp_path):
    engine, drop = make_test_engine(f"sqlite:///{tmp_path / 'offers.db'}")
    load_demo(engine)
    yield session_factory(engine)
    drop()


class Phone:
    def __init__(self, factory, router, msisdn=USER):
        self.factory, self.router, self.msisdn, self.now = factory, router, msisdn, NOW

    def send(self, body: str, after: float = 1.0):
        self.now += after
        with self.factory() as session, session.begin():
            return self.router.handle(session, Inbound("sms", self.msisdn, "10086", body), self.now)


@pytest.fixture
def setup(factory):
    catalog = {"now": demo_catalog()}
    router = Router(lambda: catalog["now"], Settings())
    return Phone(factory, router), router, catalog


def _forget_subscriber_behind_the_cache(factory, msisdn: str = USER) -> None:
    """Delete the row without telling anybody: a 200 answered after this came from memory."""
    with factory() as session, session.begin():
        session.execute(text("DELETE FROM subscriptions WHERE msisdn = :m"), {"m": msisdn})
        session.execute(text("DELETE FROM subscribers WHERE msisdn = :m"), {"m": msisdn})


def test_steady_state_200_reads_nothing(setup, factory):
    phone, router, _ = setup
    first = phone.send("200")
    _forget_subscriber_behind_the_cache(factory)
    second = phone.send("200")
    assert second.text == first.text and second.details == first.details
    assert router.shelf_cache.stats["hits"] == 1


def _shelf_exposures(factory, msisdn: str = USER) -> list[tuple]:
    with factory() as session:
        return [tuple(row) for row in session.execute(text(
            "SELECT at, offer_code, rank, channel, context, segment, arm FROM exposures "
            "WHERE msisdn = :m AND context = 'shelf' ORDER BY at, rank"), {"m": msisdn})]


def test_a_cached_200_records_its_shelf_exposures(setup, factory):
    """The learning shelf counts every showing: a "200" served from memory writes the same exposures."""
    phone, router, _ = setup
    phone.send("200")
    first = _shelf_exposures(factory)
    phone.send("200")
    assert router.shelf_cache.stats["hits"] == 1
    rows = _shelf_exposures(factory)
    second = [row for row in rows if row[0] == phone.now]
    assert first and len(rows) == 2 * len(first)
    assert [row[1:] for row in second] == [row[1:] for row in first]


def test_confirmed_order_leaves_the_next_shelf(setup):
    phone, router, _ = setup
    code = phone.send("200").details["offers"][0]
    phone.send(f"KT{code}")
    assert phone.send("Y").action == "subscribed"
    assert code not in phone.send("200").details["offers"]


def test_cancel_brings_the_offer_back(setup):
    phone, _, _ = setup
    code = phone.send("200").details["offers"][0]
    phone.send(f"KT{code}")
    phone.send("Y")
    assert code not in phone.send("200").details["offers"]
    assert phone.send(f"QX{code}").action == "cancelled"
    assert code in phone.send("200").details["offers"]


@pytest.mark.parametrize("command", ["TD", "KTYX"])
def test_opt_out_and_opt_in_invalidate(setup, command):
    phone, router, _ = setup
    phone.send("200")
    assert USER in router.shelf_cache._entries
    phone.send(command)
    assert USER not in router.shelf_cache._entries


def test_refusal_by_sms_and_by_another_domain(setup, factory):
    phone, router, _ = setup
    shelf = phone.send("200").details["offers"]
    phone.send(f"BX{shelf[0]}")
    assert shelf[0] not in phone.send("200").details["offers"]
    with factory() as session, session.begin():  # e.g. a campaign answer, outside the router
        record_refusal(session, USER, shelf[1], phone.now, source="campaign")
    assert shelf[1] not in phone.send("200").details["offers"]


def test_refusal_window_end_expires_the_entry(setup):
    phone, router, _ = setup
    code = phone.send("200").details["offers"][0]
    phone.send(f"BX{code}")
    assert code not in phone.send("200").details["offers"]
    phone.now += 90 * DAY  # shelf.refusal_days later, with no event at all
    assert code in phone.send("200").details["offers"]


def test_new_catalog_empties_the_cache(setup):
    phone, router, catalog = setup
    first = phone.send("200")
    code = first.details["offers"][0]
    old = catalog["now"]
    catalog["now"] = dataclasses.replace(old, offers=tuple(o for o in old.offers if o.code != code))
    assert code not in phone.send("200").details["offers"]


def test_population_rewrite_empties_the_cache(setup, factory):
    phone, router, _ = setup
    phone.send("200")
    with factory() as session, session.begin():
        generate(session, 3, 1, now=phone.now)
    assert len(router.shelf_cache) == 0
    phone.send("200")
    subscribers_rewritten()
    assert len(router.shelf_cache) == 0


def test_listeners_hear_committed_changes_only(setup, factory):
    _, router, _ = setup
    heard: list[str] = []
    router.subscriber_changed_listeners.append(heard.append)
    with factory() as session, session.begin():
        mark_changed(session, "13800000002")
        assert heard == []  # not before the commit
    assert heard == ["13800000002"]
    with factory() as session:
        session.begin()
        mark_changed(session, "13800000003")
        session.rollback()
    assert heard == ["13800000002"]


def test_lru_bound_and_catalog_boundaries():
    catalog = demo_catalog()
    cache = ShelfCache(size=2)
    for n in range(3):
        cache.put(str(n), catalog, NOW, ("A",), "text")
    assert len(cache) == 2 and cache.get("0", catalog, NOW) is None
    assert cache.get("2", catalog, NOW).text == "text"
    boundaries = [t for o in catalog.offers for t in (o.start_at, o.end_at) if t and t > NOW]
    entry = cache.get("2", catalog, NOW)
    assert entry.valid_until == min(boundaries, default=float("inf"))  # an offer starts or ends then
    cache.put("4", catalog, NOW, ("A",), "text", refused_until=NOW + 5)
    assert cache.get("4", catalog, NOW + 4) is not None and cache.get("4", catalog, NOW + 5) is None
    assert cache.get("2", object(), NOW) is None  # another catalog snapshot


@pytest.mark.integration
def test_over_smpp_an_order_leaves_the_cached_shelf(gateway):
    from gateway.sim_client import SimulatorClient

    sub = "13800000007"
    client = SimulatorClient("127.0.0.1", gateway.ports["smpp"], "tester", "test1234", wait=10)
    client.connect()
    try:
        def shelf_text() -> str:
            return next(r["text"] for r in client.command(sub, "10086", "200") if r["kind"] == "reply")

        first = shelf_text()
        assert shelf_text() == first  # the second one came from the cache
        code = re.search(r"回KT(\w+)", first).group(1)
        client.command(sub, "10086", f"KT{code}")
        assert "QX" in client.command(sub, "10086", "Y")[0]["text"]
        after = shelf_text()
    finally:
        client.close()
    assert f"KT{code}" not in after


def test_a_new_learned_snapshot_reranks_from_memory(setup, factory):
    """The periodic learned refresh must not send every subscriber back to the database: the cached
    inputs are ranked again under the new snapshot, exactly as a router without a cache ranks them."""
    import random

    from offers import learning
    from offers.shelf import load_inputs

    phone, router, catalog = setup
    offers = catalog["now"].offers
    with factory() as session:
        segment = learning.segment_key(load_inputs(session, USER, NOW, 90)[0])
    phone.send("200")
    rng = random.Random(7)
    orders = set()
    for version in range(1, 9):
        counts = {(o.code, segment): (n, rng.randint(0, n)) for o in offers for n in [rng.randint(0, 3000)]}
        snapshot = learning.build_snapshot(counts, offers, {segment}, Settings({
            "learning.holdout_share": 0.0, "learning.cap": 20.0, "learning.floor": 0.05, "learning.weight": 2.0}),
            version=version)
        router.learned = snapshot
        cached = phone.send("200")
        cold = Router(lambda: catalog["now"], Settings())  # no cache: reads and ranks afresh
        cold.learned = snapshot
        with factory() as session, session.begin():
            fresh = cold.handle(session, Inbound("sms", USER, "10086", "200"), phone.now)
        assert (cached.text, cached.details) == (fresh.text, fresh.details)
        assert router.shelf_cache._entries[USER].learned is snapshot
        orders.add(tuple(cached.details["offers"]))
    stats = router.shelf_cache.stats
    assert (stats["misses"], stats["hits"], stats["reranks"]) == (1, 8, 8)  # one read, then memory only
    assert len(orders) > 1  # the snapshots did reorder the shelf


def test_a_rerank_rewrites_the_entry_in_place():
    """Every learned refresh reranks every cached shelf on its next hit; the entry is rewritten in place
    with shared texts, codes and shown items, so a steady "200" leaves no new long-lived object for the
    garbage collector to walk before its freeze."""
    cache, catalog = ShelfCache(), dataclasses.make_dataclass("Catalog", ["offers"])(offers=())
    exposure = (((1, "A"), (2, "B")), "gotone:A", "learned")
    first = cache.put("13800000001", catalog, NOW, ("A", "B"), "shelf A B", exposure=exposure, learned="v1")
    valid_until = first.valid_until
    kept = cache.rerank(first, ("A", "B"), "shelf A B", exposure, "v2")
    assert kept is first and kept.learned == "v2"
    swapped = (((1, "B"), (2, "A")), "gotone:A", "learned")
    moved = cache.rerank(first, ("B", "A"), "shelf " + "B A", tuple(swapped), "v3")
    assert moved is first and (moved.codes, moved.text, moved.exposure, moved.learned, moved.valid_until) == (
        ("B", "A"), "shelf B A", swapped, "v3", valid_until)
    assert cache.get("13800000001", catalog, NOW) is first
    other = cache.put("13800000002", catalog, NOW, ("B", "A"), "shelf B" + " A", exposure=swapped, learned="v3")
    assert other.text is first.text and other.codes is first.codes and other.exposure is first.exposure, \
        "equal texts, codes and shown items are one object"
    assert cache.stats["reranks"] == 2
