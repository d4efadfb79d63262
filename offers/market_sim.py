"""A seeded market that uses the shelf day by day: does the learned ranking beat the fixed one?

Synthetic subscribers (offers/population.py) each carry a hidden true propensity per offer: a
segment affinity (brand x usage class, drawn once per seed, unknown to the ranking), times the
price fit (``min(1, 0.4 x ARPU / price)``), times the usage fit of data offers (their data usage
ratio), times a personal factor. Every day each subscriber sends "200" with probability
``VISIT``; the shelf they get comes from the gateway's own ranking code:

- eligibility and the fixed score are :func:`offers.shelf.build_shelf` itself, run on each of a
  few thousand subscriber profiles (every subscriber is one profile plus a personal factor), with
  active subscriptions and exclusive groups applied per subscriber as the shelf does;
- the learned term is :func:`offers.learning.build_snapshot` (Beta posteriors, Thompson draws,
  floor and cap) and the draw a subscriber gets is :func:`offers.learning.assign`'s;
- the holdout is :func:`offers.learning.in_holdout` on the subscriber's number.

A visitor reads the shelf top down and orders offer r with probability ``propensity x POSITION[r]``
(the first one wins), confirms with a probability that grows with the price fit, and may cancel
within a week. The learned state is refreshed ``refreshes`` times a simulated day from the
exposures and confirmations so far, as the gateway's periodic refresh does.

Per day: ``learned_conversion`` and ``fixed_conversion`` are expected confirmed orders per shelf
shown, from the hidden propensities of the shelves actually shown (the same quantity as the
realised rate, without its sampling noise; the realised rates are printed beside them), and
``regret`` is the best fixed ranking's expected conversion minus the learned one's, over the
learned arm's visitors: the best fixed ranking orders each segment's eligible offers by their
true mean conversion in that segment.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from offers import learning, schema, segments
from offers.catalog import OffersCatalog
from offers.population import FIRST, subscriber
from offers.shelf import build_shelf

VISIT = 0.5
POSITION = np.array([1.0, 0.8, 0.65, 0.55, 0.47, 0.41, 0.37, 0.33, 0.3, 0.28])
BASE_RATE = 0.012
MAX_PROFILES = 2000
START = 1795406400.0  # 2026-11-23 12:00 +08:00, when every demo offer that is on sale is in date


@dataclass(frozen=True)
class Market:
    """The static part: profiles' eligibility and fixed scores, subscribers, hidden truth."""

    catalog: OffersCatalog
    segments: list[str]
    base: np.ndarray  # profiles x offers: the fixed score (0 when not eligible)
    eligible: np.ndarray  # profiles x offers
    profile: np.ndarray  # subscriber -> profile
    seg: np.ndarray  # subscriber -> segment index
    holdout: np.ndarray  # subscriber -> bool
    draw: np.ndarray  # subscriber -> Thompson draw index (as learning.assign picks it)
    propensity: np.ndarray  # subscribers x offers: chance to order when shown at rank 1
    confirm: np.ndarray  # subscribers x offers: chance to confirm an order
    group: np.ndarray  # offer -> exclusive group index (-1: none)
    tiebreak: np.ndarray  # offers: position in the shelf's tie order (-priority, code)


def _profiles(catalog: OffersCatalog, n: int, rnd: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        row = subscriber(rnd, str(FIRST + i))
        row.update(segments.segment_columns(schema.facts(row), catalog.params))
        facts = schema.facts(row)
        facts.update({k: row[k] for k in ("value_grade", "usage_class") if k in row})
        out.append(facts)
    return out


def _fixed_scores(catalog: OffersCatalog, facts: list[dict[str, Any]], top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Eligibility and the fixed score of every profile x offer, from build_shelf itself."""
    index = {o.code: j for j, o in enumerate(catalog.offers)}
    base = np.zeros((len(facts), len(index)))
    for i, f in enumerate(facts):
        shelf = build_shelf(f, catalog, set(), {}, START, len(index))
        for d in shelf.decisions:
            if d.score is not None:
                base[i, index[d.code]] = d.score
    return base, base > 0


def _truth(catalog: OffersCatalog, facts: list[dict[str, Any]], seg_of_profile: np.ndarray, n_seg: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per profile x offer: the propensity before the personal factor, and the confirm chance."""
    affinity = rng.lognormal(0.0, 0.9, (n_seg, len(catalog.offers)))
    price = np.array([o.price for o in catalog.offers])
    data = np.array([o.type == "data" for o in catalog.offers])
    arpu = np.array([float(f.get("arpu_avg", 0.0)) for f in facts])
    ratio = np.array([float(f.get("data_usage_ratio", 0.0)) for f in facts])
    fit = np.where(price > 0, np.minimum(1.0, 0.4 * arpu[:, None] / np.maximum(price, 0.01)), 1.0)
    usage = np.where(data, np.clip(ratio, 0.3, 1.5)[:, None], 1.0)
    p = BASE_RATE * affinity[seg_of_profile] * fit * usage
    return p, 0.65 + 0.3 * fit


def build_market(catalog: OffersCatalog, population: int, seed: int, settings: Mapping[str, Any],
                 holdout_share: float) -> Market:
    rnd, rng = random.Random(seed), np.random.default_rng(seed)
    facts = _profiles(catalog, min(population, MAX_PROFILES), rnd)
    segs = learning.all_segments(catalog.params)
    seg_index = {s: i for i, s in enumerate(segs)}
    seg_of_profile = np.array([seg_index[learning.segment_key(f)] for f in facts])
    base, eligible = _fixed_scores(catalog, facts, int(settings["shelf.top_k"]))
    p_profile, confirm_profile = _truth(catalog, facts, seg_of_profile, len(segs), rng)
    profile = rng.integers(0, len(facts), population)
    personal = rng.lognormal(-0.045, 0.3, (population, 1))
    numbers = [str(FIRST + i) for i in range(population)]
    seed_h = int(settings["learning.seed"])
    groups = sorted({o.exclusive_group for o in catalog.offers if o.exclusive_group})
    order = sorted(range(len(catalog.offers)), key=lambda j: (-catalog.offers[j].priority, catalog.offers[j].code))
    tiebreak = np.empty(len(order), dtype=int)
    tiebreak[order] = np.arange(len(order))
    return Market(
        catalog=catalog, segments=segs, base=base, eligible=eligible, profile=profile,
        seg=seg_of_profile[profile],
        holdout=np.array([learning.in_holdout(m, seed_h, holdout_share) for m in numbers]),
        draw=np.array([zlib.crc32(m.encode()) % learning.DRAWS for m in numbers]),
        propensity=np.minimum(p_profile[profile] * personal, 0.9), confirm=confirm_profile[profile],
        group=np.array([groups.index(o.exclusive_group) if o.exclusive_group else -1 for o in catalog.offers]),
        tiebreak=tiebreak)


@dataclass
class _State:
    active: np.ndarray  # subscribers x offers
    cancel_day: np.ndarray  # subscribers x offers: day the subscription ends (0: none)
    exposures: np.ndarray  # offers x segments
    conversions: np.ndarray


def _factors(market: Market, state: _State, settings: Mapping[str, Any], version: int) -> np.ndarray:
    """offers x segments x draws: the learned factors of a snapshot built by the gateway's code."""
    codes = [o.code for o in market.catalog.offers]
    counts = {(codes[o], market.segments[s]): (int(state.exposures[o, s]), int(state.conversions[o, s]))
              for o in range(len(codes)) for s in range(len(market.segments)) if state.exposures[o, s]}
    snap = learning.build_snapshot(counts, market.catalog.offers, market.segments, settings, version=version)
    return np.array([[snap.arms[(c, s)].factors for s in market.segments] for c in codes])


def _open(market: Market, state: _State, who: np.ndarray) -> np.ndarray:
    """Eligible and not excluded by an active subscription (same offer or same exclusive group)."""
    ok = market.eligible[market.profile[who]] & ~state.active[who]
    for g in range(market.group.max() + 1):
        members = market.group == g
        taken = state.active[who][:, members].any(axis=1)
        ok[np.ix_(taken, members)] = False
    return ok


def _rank(scores: np.ndarray, ok: np.ndarray, tiebreak: np.ndarray, k: int) -> np.ndarray:
    """Top k offers per row by (score desc, priority desc, code), -1 where fewer are open."""
    keyed = np.where(ok, np.round(scores, 3), -1.0)
    order = np.lexsort((np.broadcast_to(tiebreak, keyed.shape), -keyed), axis=-1)[:, :k]
    return np.where(np.take_along_axis(keyed, order, axis=1) >= 0, order, -1)


def _expected(shown: np.ndarray, q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per visitor: chance the shelf yields a confirmed order (first order wins)."""
    valid = shown >= 0
    qs = np.where(valid, np.take_along_axis(q, np.maximum(shown, 0), axis=1) * POSITION[:shown.shape[1]], 0.0)
    cs = np.where(valid, np.take_along_axis(c, np.maximum(shown, 0), axis=1), 0.0)
    before = np.cumprod(np.hstack([np.ones((len(q), 1)), 1.0 - qs[:, :-1]]), axis=1)
    return (before * qs * cs).sum(axis=1)


def _visit(market: Market, state: _State, who: np.ndarray, factors: np.ndarray, oracle: np.ndarray, k: int,
           day: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ok = _open(market, state, who)
    fixed = market.base[market.profile[who]]
    learned_arm = ~market.holdout[who]
    learned = fixed * factors[:, market.seg[who], market.draw[who]].T
    shown = _rank(np.where(learned_arm[:, None], learned, fixed), ok, market.tiebreak, k)
    best = _rank(oracle[market.seg[who]], ok, market.tiebreak, k)
    q, c = market.propensity[who], market.confirm[who]
    flat = shown[shown >= 0]
    segs = np.broadcast_to(market.seg[who][:, None], shown.shape)[shown >= 0]
    np.add.at(state.exposures, (flat, segs), 1)
    converted = _act(market, state, who, shown, q, c, day, rng)
    return {"arm": learned_arm, "expected": _expected(shown, q, c), "best": _expected(best, q, c),
            "converted": converted}


def _act(market: Market, state: _State, who: np.ndarray, shown: np.ndarray, q: np.ndarray, c: np.ndarray,
         day: int, rng: np.random.Generator) -> np.ndarray:
    """Orders (first hit top down), confirmations and scheduled cancels; returns who converted."""
    valid = shown >= 0
    hit = valid & (rng.random(shown.shape) < np.where(
        valid, np.take_along_axis(q, np.maximum(shown, 0), axis=1) * POSITION[:shown.shape[1]], 0.0))
    ordered = hit.any(axis=1)
    pick = np.where(ordered, shown[np.arange(len(who)), hit.argmax(axis=1)], -1)
    chance = np.where(ordered, c[np.arange(len(who)), np.maximum(pick, 0)], 0.0)
    confirmed = ordered & (rng.random(len(who)) < chance)
    rows, offers = who[confirmed], pick[confirmed]
    state.active[rows, offers] = True
    np.add.at(state.conversions, (offers, market.seg[rows]), 1)
    leaves = rng.random(len(rows)) < 0.25 * (1.0 - chance[confirmed]) / 0.35
    state.cancel_day[rows[leaves], offers[leaves]] = day + rng.integers(1, 8, leaves.sum())
    return confirmed


def _oracle(market: Market) -> np.ndarray:
    """segments x offers: the true mean conversion at rank 1 in each segment (the best fixed ranking)."""
    value = market.propensity * market.confirm
    out = np.zeros((len(market.segments), value.shape[1]))
    for s in range(len(market.segments)):
        members = market.seg == s
        if members.any():
            out[s] = value[members].mean(axis=0)
    return out + 1e-9


def simulate(catalog: OffersCatalog, settings: Mapping[str, Any], *, days: int, population: int, seed: int,
             holdout_share: float = 0.5, refreshes: int = 4,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the market; returns ``{"days": [...], "seed", "population", "elapsed_s", ...}``."""
    started = time.perf_counter()
    market = build_market(catalog, population, seed, settings, holdout_share)
    n_off, n_seg = len(catalog.offers), len(market.segments)
    state = _State(np.zeros((population, n_off), bool), np.zeros((population, n_off), np.int32),
                   np.zeros((n_off, n_seg)), np.zeros((n_off, n_seg)))
    rng = np.random.default_rng([seed, 1])
    oracle, k = _oracle(market), int(settings["shelf.top_k"])
    out = []
    for day in range(1, days + 1):
        ending = state.cancel_day == day
        state.active[ending], state.cancel_day[ending] = False, 0
        visitors = np.flatnonzero(rng.random(population) < VISIT)
        parts = [_visit(market, state, who, _factors(market, state, settings, day * refreshes + i), oracle, k,
                        day, rng)
                 for i, who in enumerate(np.array_split(rng.permutation(visitors), refreshes))]
        out.append(_day_row(day, parts))
        if progress is not None:
            progress(out[-1])
    return {"days": out, "seed": seed, "population": population, "holdout_share": holdout_share,
            "elapsed_s": round(time.perf_counter() - started, 2)}


def _day_row(day: int, parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    arm = np.concatenate([p["arm"] for p in parts])
    expected = np.concatenate([p["expected"] for p in parts])
    best = np.concatenate([p["best"] for p in parts])
    converted = np.concatenate([p["converted"] for p in parts])

    def mean(values: np.ndarray, mask: np.ndarray) -> float:
        return round(float(values[mask].mean()), 5) if mask.any() else 0.0

    return {"day": day, "learned_conversion": mean(expected, arm), "fixed_conversion": mean(expected, ~arm),
            "regret": round(mean(best, arm) - mean(expected, arm), 5),
            "learned_realized": mean(converted.astype(float), arm),
            "fixed_realized": mean(converted.astype(float), ~arm),
            "learned_visits": int(arm.sum()), "fixed_visits": int((~arm).sum())}
