"""The garbage collector's pauses counted, its freezes and sweeps on the injected clock (gateway/gcstats.py),
and the shelf cache's shared / untracked objects that keep those pauses short."""

from __future__ import annotations

import gc
from dataclasses import astuple

import pytest
from twisted.internet import task

from core.gcsafe import KeptDict
from core.settings import Settings
from gateway.gcstats import TALLY, GcService, GcTally
from gateway.metrics import GatewayMetrics
from offers import exposures
from offers.shelf import ShelfItem, fit_items
from offers.shelf_cache import ShelfCache, pack, unpack
from tests.test_offers_support import demo_catalog


class _Gateway:
    def __init__(self, **overrides):
        self.settings = Settings().with_overrides(overrides)
        self.reactor = task.Clock()


@pytest.fixture
def service():
    started: list[GcService] = []

    def start(**overrides) -> GcService:
        svc = GcService(_Gateway(**overrides))
        svc.startService()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        if svc.running:
            svc.stopService()
    gc.unfreeze()


def test_tally_counts_each_collection_by_generation():
    tally = GcTally()
    tally.install()
    try:
        before = list(tally.count)
        gc.collect(0)
        gc.collect(2)
        assert tally.count[0] >= before[0] + 1 and tally.count[2] >= before[2] + 1
        assert tally.seconds[2] > 0 and tally.max_seconds[2] > 0
        names = {family.name for family in tally.collect()}
        assert {"gateway_gc_pauses", "gateway_gc_pause_seconds", "gateway_gc_pause_max_seconds",
                "gateway_gc_frozen_objects", "gateway_gc_swept_objects"} <= names
    finally:
        gc.callbacks.remove(tally._callback)


def test_metrics_page_shows_the_collector():
    page = GatewayMetrics().render().decode()
    for name in ("gateway_gc_pauses_total{generation=\"2\"}", "gateway_gc_pause_seconds_total",
                 "gateway_gc_pause_max_seconds", "gateway_gc_frozen_objects", "gateway_gc_swept_objects_total"):
        assert name in page


def test_freezes_at_start_and_every_period(service):
    freezes = TALLY.freezes
    svc = service(**{"gc.freeze_s": 2.0, "gc.sweep_s": 0})
    assert TALLY.freezes == freezes + 1 and gc.get_freeze_count() > 0
    svc.gateway.reactor.advance(2.0)
    svc.gateway.reactor.advance(2.0)
    assert TALLY.freezes == freezes + 3
    svc.stopService()
    assert gc.get_freeze_count() == 0  # a stopped gateway hands its objects back to the collector


def test_sweep_finds_the_cycles_that_died_frozen(service):
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    svc = service(**{"gc.freeze_s": 60.0, "gc.sweep_s": 600.0})
    assert gc.is_tracked(a)
    swept = TALLY.swept_objects
    del a, b  # a garbage cycle, frozen: the young collections never see it
    gc.collect()
    svc.gateway.reactor.advance(600.0)
    assert TALLY.swept_objects >= swept + 2
    assert gc.get_freeze_count() > 0  # frozen again after the sweep


def test_no_freeze_means_no_sweep(service):
    sweeps, freezes = TALLY.sweeps, TALLY.freezes
    svc = service(**{"gc.freeze_s": 0, "gc.sweep_s": 10.0})
    svc.gateway.reactor.advance(100.0)
    assert (TALLY.sweeps, TALLY.freezes) == (sweeps, freezes)
    assert gc.get_freeze_count() == 0


def test_bad_settings_are_refused():
    with pytest.raises(Exception, match="gc.freeze_s"):
        Settings().with_overrides({"gc.freeze_s": -1})


class _Offer:
    def __init__(self, code):
        self.code = code


class _Catalog:
    def __init__(self, offers):
        self.offers = tuple(offers)
        self.memo: dict = {}


def test_packed_candidates_hold_no_objects_and_unpack_to_the_same_offers():
    catalog = _Catalog(_Offer(c) for c in "ABCDE")
    cands = ((0.7, catalog.offers[3]), (0.2, catalog.offers[0]))
    packed = pack(catalog, cands)
    assert packed == ((0.7, 3), (0.2, 0))
    assert unpack(catalog, packed) == cands
    gc.collect()
    gc.collect()  # inner tuples are untracked by the first pass, the outer one by the next
    assert not gc.is_tracked(packed)  # floats and ints only: the collector stops walking it


def test_cache_entries_share_equal_shown_items():
    cache = ShelfCache()
    catalog = _Catalog([])
    shown = lambda: exposures.shown((ShelfItem(1, "A", "a", 1.0, "KT A"), ShelfItem(2, "B", "b", 2.0, "KT B")))  # noqa: E731
    one = cache.put("1", catalog, 0.0, ("A", "B"), "text", exposure=(shown(), "seg", "arm"))
    two = cache.put("2", catalog, 0.0, ("A", "B"), "text", exposure=(shown(), "seg", "arm"))
    assert one.exposure is two.exposure and one.codes is two.codes and one.text is two.text
    other = cache.put("3", catalog, 0.0, ("A", "B"), "text", exposure=(shown(), "seg2", "arm"))
    assert other.exposure[0][0] is one.exposure[0][0]  # items shared even where the exposure differs
    # what an entry keeps besides itself is ints and strings in plain tuples: after the collections that
    # see them the collector no longer tracks them, so a re-ranked shelf adds one walked object, not ten
    fresh = cache.put("4", catalog, 0.0, ("C",), "text 4", exposure=(exposures.shown(
        (ShelfItem(1, "C", "c", 3.0, "KT C"),)), "seg3", "arm"))
    gc.collect()
    gc.collect()
    assert not any(gc.is_tracked(x) for x in (fresh.exposure, fresh.exposure[0], fresh.exposure[0][0], fresh.codes))


def _young(obj) -> bool:
    return any(o is obj for g in (0, 1) for o in gc.get_objects(generation=g))


@pytest.mark.parametrize("kind", [dict, KeptDict])
def test_a_memo_of_plain_values_comes_back_young_unless_it_is_kept(kind):
    """A plain dict of strings and tuples is untracked by a full collection, then tracked again as a young
    object by its next new entry, and each young collection walks all of it. A KeptDict is frozen once
    and stays out of the young generations (core/gcsafe.py)."""
    memo = kind((str(i), (str(i), i)) for i in range(1000))
    gc.collect()
    gc.collect()  # the first pass untracks the tuples, the second the plain dict
    gc.freeze()
    try:
        assert gc.is_tracked(memo) is (kind is KeptDict)
        memo[tuple(["new", 1])] = tuple(["text", 2])  # a fresh tuple is tracked until its first collection
        assert _young(memo) is (kind is dict)
        assert gc.is_tracked(memo)
    finally:
        gc.unfreeze()


def test_the_shelf_memo_keeps_no_object_the_collector_walks_twice():
    """fit_items memoises (codes, parts, variables) -> (text, items kept): strings and numbers only, so a
    new entry is walked once, while young, and never again (the items come from the caller's ranking)."""
    catalog = demo_catalog()
    items = tuple(ShelfItem(i, o.code, o.name, o.price, o.order) for i, o in enumerate(catalog.offers[:3], 1))
    base = {"msisdn": "13800000001", "name": "", "brand_name": "动感地带"}
    text, shown = fit_items(catalog, items, base)
    again, shown_again = fit_items(catalog, tuple(ShelfItem(*astuple(i)) for i in items), base)
    assert again is text and [i.code for i in shown_again] == [i.code for i in shown]
    memo = next(v for k, v in catalog.memo.items() if isinstance(k, tuple) and k[0] == "shelf")
    assert isinstance(memo, KeptDict)
    gc.collect()
    gc.collect()
    assert memo and not any(gc.is_tracked(k) or gc.is_tracked(v) for k, v in memo.items())
