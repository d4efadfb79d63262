"""A shelf that learns: a Thompson-sampled term in the rank score, from the exposure and outcome events.

For each offer x segment (``brand:usage_class``) the conversion rate (confirmed / shown on a shelf)
has a Beta posterior: the prior's mean comes from the fixture's priority
(``learning.prior_rate x priority / 50``, so a priority-50 offer starts at the prior rate) and its
weight is ``learning.prior_strength`` pseudo-exposures; the evidence is the shelf exposures since
the last reset within ``learning.window_days``. The learned factor of one draw ``theta`` is

    lift = theta / prior_mean
    factor = clip((lift / segment_lift) ** learning.weight, learning.floor, learning.cap)

where ``segment_lift`` is the mean posterior lift of every offer in that segment: the factor says
how much better (or worse) than its priority promised an offer does compared with the others in
the segment, so a prior rate set too high or too low shifts nothing. Without evidence every
factor is about 1 and the shelf is the fixed one. The score becomes ``priority x fit x value x factor``. Bounds that keep the business rules:

- the term is applied only to offers that passed every exclusion (date, channel, subscribed,
  exclusive group, refusal, eligibility): it reorders the eligible, never lets anything else in;
- ``learning.floor`` is a priority floor: no offer falls below that share of its fixed score, and
  ``learning.cap`` bounds how far evidence can lift one.

A share of subscribers (``learning.holdout_share``, chosen by a seeded hash of the number, stable
across processes and restarts) keeps the fixed ranking: the products report shows both arms.

The hot path reads an immutable :class:`LearnedSnapshot` (a dict lookup and a multiply per offer):
each refresh draws ``DRAWS`` Thompson samples per arm, and successive shelves take successive draws.
The durable state is the ``learned_arms`` table (counts per offer x segment) plus one
``learning_control`` row (frozen, reset time), shared by every process on the database; each
process folds the events into the table (unless frozen) and reloads it every ``learning.refresh_s``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Boolean, Float, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base
from core.settings import KNOBS
from offers import fastsql

DRAWS = 64
PRIORITY_REF = 50.0
DAY = 86400.0


class LearnedArm(Base):
    """Evidence of one offer x segment: shelf exposures and confirmed conversions in the window."""

    __tablename__ = "learned_arms"

    offer_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    exposures: Mapped[int] = mapped_column(Integer, default=0)
    conversions: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


class LearnedCount(Base):
    """Evidence of one offer x segment in one hour (by the exposure's time): the fold adds each new
    interval's events here, and ``learned_arms`` is the sum of the hours in the window."""

    __tablename__ = "learned_counts"

    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)  # hours since the epoch
    offer_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    segment: Mapped[str] = mapped_column(String(40), primary_key=True)
    exposures: Mapped[int] = mapped_column(Integer, default=0)
    conversions: Mapped[int] = mapped_column(Integer, default=0)


class LearningControl(Base):
    """Ops' switches (one row, id 1): frozen state, the time of the last reset, and how far the
    events are folded into ``learned_counts``."""

    __tablename__ = "learning_control"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frozen: Mapped[bool] = mapped_column(Boolean, default=False)
    reset_at: Mapped[float] = mapped_column(Float, default=0.0)
    changed_at: Mapped[float] = mapped_column(Float, default=0.0)
    changed_by: Mapped[str] = mapped_column(String(64), default="")
    folded_until: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


# --- the pure parts, shared by the gateway and the market simulator --------------------------------

def segment_key(facts: Mapping[str, Any]) -> str:
    return f"{facts.get('brand', '')}:{facts.get('usage_class', '')}"


def holdout_fraction(msisdn: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, msisdn): the subscriber is in the holdout below the share.

    Not memoised: one hash is 1.5 us. An ``lru_cache`` of 65,536 entries cost far more on the hot path.
    Its dict holds only (msisdn, seed) keys and the cache's own links, so each full collection stops
    tracking it, and the next miss (100k subscribers, 65,536 entries: every few "200"s) tracks it again
    as a young object. The young collections it then went through and the next freeze walked its 131,072
    references again, about three times every two seconds: 1 ms a walk in a quiet process, more in the
    gateway's heap (found by a census of the young generations at each freeze, gateway/gcstats.py)."""
    digest = hashlib.blake2b(f"{seed}:{msisdn}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def in_holdout(msisdn: str, seed: int, share: float) -> bool:
    return share > 0 and holdout_fraction(msisdn, seed) < share


def knob(settings: Mapping[str, Any] | None, key: str) -> Any:
    return (settings or {}).get(key, KNOBS[key].default)


def prior(priority: Any, settings: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """``(alpha, beta)`` of the prior; ``priority`` may be a number or a numpy array."""
    mean = np.clip(knob(settings, "learning.prior_rate") * np.asarray(priority, dtype=float) / PRIORITY_REF,
                   0.001, 0.5)
    strength = knob(settings, "learning.prior_strength")
    return mean * strength, (1.0 - mean) * strength


def factors(theta: Any, prior_mean: Any, segment_lift: Any, settings: Mapping[str, Any] | None) -> np.ndarray:
    """The learned factor of Thompson draws ``theta`` (arrays broadcast), bounded by floor and cap."""
    ratio = np.asarray(theta, dtype=float) / np.asarray(prior_mean, dtype=float) / segment_lift
    return np.clip(ratio ** knob(settings, "learning.weight"), knob(settings, "learning.floor"),
                   knob(settings, "learning.cap"))


# --- the snapshot the hot path reads -------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    exposures: int
    conversions: int
    alpha: float
    beta: float
    prior_mean: float
    draws: tuple[float, ...]  # Thompson samples of the conversion rate
    factors: tuple[float, ...]  # their learned factors

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def as_dict(self, i: int) -> dict[str, Any]:
        return {"exposures": self.exposures, "conversions": self.conversions,
                "prior_mean": round(self.prior_mean, 5), "posterior_mean": round(self.mean, 5),
                "alpha": round(self.alpha, 3), "beta": round(self.beta, 3),
                "draw": round(self.draws[i], 5), "factor": round(self.factors[i], 4)}


@dataclass(frozen=True)
class LearnedSnapshot:
    arms: Mapping[tuple[str, str], Evidence]
    enabled: bool = True
    frozen: bool = False
    reset_at: float = 0.0
    refreshed_at: float = 0.0
    holdout_share: float = 0.0
    seed: int = 1
    version: int = 0

    def summary(self) -> dict[str, Any]:
        shown = sum(e.exposures for e in self.arms.values())
        won = sum(e.conversions for e in self.arms.values())
        return {"enabled": self.enabled, "frozen": self.frozen, "reset_at": self.reset_at,
                "refreshed_at": self.refreshed_at, "holdout_share": self.holdout_share, "seed": self.seed,
                "version": self.version, "arms": len(self.arms), "exposures": shown, "conversions": won}


def build_snapshot(counts: Mapping[tuple[str, str], tuple[int, int]], offers: Iterable[Any],
                   segments: Iterable[str], settings: Mapping[str, Any] | None, *, frozen: bool = False,
                   reset_at: float = 0.0, now: float = 0.0, version: int = 0) -> LearnedSnapshot:
    """Posteriors and Thompson draws for every offer x segment (counts: ``(code, segment) -> (n, wins)``)."""
    seed = int(knob(settings, "learning.seed"))
    rng = np.random.default_rng([seed, version])
    offers = list(offers)
    a0, b0 = prior([o.priority for o in offers], settings)
    mean0 = a0 / (a0 + b0)
    arms = {}
    for seg in segments:
        n, wins = np.array([counts.get((o.code, seg), (0, 0)) for o in offers], dtype=float).reshape(-1, 2).T
        alpha, beta = a0 + wins, b0 + np.maximum(n - wins, 0)
        lift = float(np.mean(alpha / (alpha + beta) / mean0))
        draws = rng.beta(alpha[:, None], beta[:, None], (len(offers), DRAWS))
        table = factors(draws, mean0[:, None], lift, settings)
        for j, offer in enumerate(offers):
            arms[(offer.code, seg)] = Evidence(int(n[j]), int(wins[j]), float(alpha[j]), float(beta[j]),
                                               float(mean0[j]), tuple(draws[j].tolist()), tuple(table[j].tolist()))
    return LearnedSnapshot(arms, bool(knob(settings, "learning.enabled")), frozen, reset_at, now,
                           float(knob(settings, "learning.holdout_share")), seed, version)


EMPTY = LearnedSnapshot({}, enabled=False)


@dataclass(frozen=True)
class LearnedTerm:
    """The learned term for one shelf: one subscriber's segment and one joint Thompson draw."""

    snapshot: LearnedSnapshot
    segment: str
    draw: int
    explain: bool = False

    def apply(self, offer: Any, total: float, reasons: list[str]) -> tuple[float, list[str]]:
        evidence = self.snapshot.arms.get((offer.code, self.segment))
        if evidence is None:
            return total, reasons
        f = evidence.factors[self.draw]
        if self.explain:
            reasons.append(f"learned x{f:.3g} (segment {self.segment}: {evidence.conversions} confirmed of "
                           f"{evidence.exposures} shown; posterior {evidence.mean:.2%}, prior {evidence.prior_mean:.2%} "
                           f"from priority {offer.priority:g}; draw {evidence.draws[self.draw]:.2%})")
        return round(total * f, 3), reasons

    def evidence(self, code: str) -> dict[str, Any] | None:
        found = self.snapshot.arms.get((code, self.segment))
        return None if found is None else found.as_dict(self.draw)


def assign(snapshot: LearnedSnapshot, facts: Mapping[str, Any], msisdn: str, *,
           explain: bool = False) -> tuple[str, LearnedTerm | None]:
    """``(arm, term)``: ``("fixed", None)`` for the holdout or when learning is off.

    The subscriber's draw is fixed by the number within one snapshot, so the 200 SMS and
    ``GET .../shelf`` show the same order; each refresh draws afresh.
    """
    return assign_segment(snapshot, segment_key(facts), msisdn, explain=explain)


def assign_segment(snapshot: LearnedSnapshot, segment: str, msisdn: str, *,
                   explain: bool = False) -> tuple[str, LearnedTerm | None]:
    """:func:`assign` given the subscriber's segment key (the shelf cache keeps that, not the facts)."""
    if not snapshot.enabled or in_holdout(msisdn, snapshot.seed, snapshot.holdout_share):
        return "fixed", None
    draw = zlib.crc32(msisdn.encode()) % DRAWS
    return "learned", LearnedTerm(snapshot, segment, draw, explain)


# --- durable state ---------------------------------------------------------------------------------

def control(session: Session) -> LearningControl:
    """The one control row, created on first use (two processes may race to: neither fails)."""
    row = session.get(LearningControl, 1)
    if row is None:
        fastsql.execute(session, "INSERT INTO learning_control (id, frozen, reset_at, changed_at, changed_by) "
                                 "VALUES (1, ?, 0.0, 0.0, '') ON CONFLICT (id) DO NOTHING", (False,))
        row = session.get(LearningControl, 1)
    return row


BUCKET_S = 3600  # learned_counts granularity: the window's edge moves by the hour
FOLD_LAG_S = 5.0  # events are folded once they are this old (a batch commits well within it)
_NEW_EXPOSURES = ("SELECT CAST(at / 3600 AS INTEGER), offer_code, segment, COUNT(*) FROM exposures "
                  "WHERE context = 'shelf' AND segment IS NOT NULL AND at >= ? AND at < ? GROUP BY 1, 2, 3")
# a conversion counts once per exposure (its first confirmation), in the hour of the exposure it converts
_NEW_CONVERSIONS = ("SELECT CAST(e.at / 3600 AS INTEGER), e.offer_code, e.segment, COUNT(DISTINCT e.id) "
                    "FROM outcomes o JOIN exposures e ON e.id = o.exposure_id "
                    "WHERE o.kind = 'confirmed' AND o.at >= ? AND o.at < ? AND e.context = 'shelf' "
                    "AND e.segment IS NOT NULL AND e.at >= ? AND NOT EXISTS (SELECT 1 FROM outcomes p "
                    "WHERE p.exposure_id = o.exposure_id AND p.kind = 'confirmed' AND p.at < ?) GROUP BY 1, 2, 3")
_ADD = ("INSERT INTO learned_counts (bucket, offer_code, segment, exposures, conversions) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (bucket, offer_code, segment) DO UPDATE SET "
        "exposures = learned_counts.exposures + excluded.exposures, "
        "conversions = learned_counts.conversions + excluded.conversions")
_SUM = ("INSERT INTO learned_arms (offer_code, segment, exposures, conversions, updated_at) "
        "SELECT offer_code, segment, SUM(exposures), SUM(conversions), ? FROM learned_counts WHERE bucket >= ? "
        "GROUP BY offer_code, segment")


def fold(session: Session, now: float, settings: Mapping[str, Any] | None) -> int:
    """Add the events since the last fold to ``learned_counts`` and sum the window into
    ``learned_arms``: the work is that of the new events, not of the whole window. Nothing changes while
    ops have frozen learning (the events wait and are folded after). Returns the arms written (0 when
    frozen, or when another process folded first).

    Runs its own transactions (``session`` must not be in one): the counting reads in one, then a short
    write claims the interval (compare-and-set on ``folded_until``, so two processes never add the same
    events) and stores the sums. The database's write lock is never held while the events are counted:
    on SQLite that lock is every commit's, the MO pipeline's included."""
    ctl = control(session)
    frozen, folded, reset_at = ctl.frozen, ctl.folded_until, ctl.reset_at
    session.commit()
    if frozen:
        return 0
    since = max(reset_at, now - knob(settings, "learning.window_days") * DAY)
    lo, hi = max(folded, since), max(folded, now - FOLD_LAG_S)
    added: dict[tuple[int, str, str], list[int]] = {}
    if hi > lo:
        for bucket, code, seg, n in fastsql.rows(session, _NEW_EXPOSURES, (lo, hi))[1]:
            added.setdefault((int(bucket), code, seg), [0, 0])[0] += int(n)
        for bucket, code, seg, n in fastsql.rows(session, _NEW_CONVERSIONS, (lo, hi, since, lo))[1]:
            added.setdefault((int(bucket), code, seg), [0, 0])[1] += int(n)
    session.rollback()  # end the read: the write below starts a transaction of its own
    claimed = fastsql.execute(session, "UPDATE learning_control SET folded_until = ? "
                                       "WHERE id = 1 AND folded_until = ? AND frozen = ?", (hi, folded, False))
    if not claimed:
        session.rollback()
        return 0
    fastsql.executemany(session, _ADD, [(*key, n, wins) for key, (n, wins) in added.items()])
    first = int(since // BUCKET_S)
    session.execute(delete(LearnedCount).where(LearnedCount.bucket < first))
    session.execute(delete(LearnedArm))
    fastsql.execute(session, _SUM, (now, first))
    arms = session.scalar(select(func.count()).select_from(LearnedArm)) or 0
    session.commit()
    return arms


def load(session: Session, catalog: Any, settings: Mapping[str, Any] | None, now: float,
         version: int = 0) -> LearnedSnapshot:
    """The snapshot from the durable table (every offer of the catalog x every brand and usage class)."""
    ctl = control(session)
    counts = {(c, s): (n, w) for c, s, n, w in session.execute(
        select(LearnedArm.offer_code, LearnedArm.segment, LearnedArm.exposures, LearnedArm.conversions))}
    return build_snapshot(counts, catalog.offers, all_segments(catalog.params), settings, frozen=ctl.frozen,
                          reset_at=ctl.reset_at, now=now, version=version)


def all_segments(params: Any) -> list[str]:
    return [f"{brand}:{cls}" for brand in params.brands for cls, _ in params.usage_classes]


def refresh(session: Session, catalog: Any, settings: Mapping[str, Any] | None, now: float,
            version: int = 0) -> LearnedSnapshot:
    """Fold the events (unless frozen, or another process folded them less than half a refresh ago)
    and load the snapshot: one periodic job per process. Runs its own transactions (see :func:`fold`)."""
    if now - control(session).folded_until >= knob(settings, "learning.refresh_s") / 2 + FOLD_LAG_S:
        fold(session, now, settings)
    snapshot = load(session, catalog, settings, now, version)
    session.commit()
    return snapshot


def set_frozen(session: Session, frozen: bool, now: float, who: str = "ops") -> dict[str, Any]:
    ctl = control(session)
    ctl.frozen, ctl.changed_at, ctl.changed_by = frozen, now, who[:64]
    return {"frozen": frozen, "reset_at": ctl.reset_at, "changed_at": now}


def reset(session: Session, now: float, who: str = "ops") -> dict[str, Any]:
    """Forget the evidence: the posteriors start again from the priors (events stay for the reports)."""
    ctl = control(session)
    dropped = session.execute(delete(LearnedArm)).rowcount
    session.execute(delete(LearnedCount))
    ctl.reset_at, ctl.changed_at, ctl.changed_by, ctl.folded_until = now, now, who[:64], now
    return {"reset_at": now, "arms_dropped": dropped, "frozen": ctl.frozen}


def learning_report(snapshot: LearnedSnapshot, facts: Mapping[str, Any], msisdn: str, catalog: Any) -> dict[str, Any]:
    """For ``explain``: the subscriber's arm and segment, and per offer the evidence and the factor used."""
    arm, term = assign(snapshot, facts, msisdn)
    out: dict[str, Any] = {"arm": arm, "segment": segment_key(facts), **snapshot.summary()}
    if term is None:
        out["why"] = ("learning is off (learning.enabled)" if not snapshot.enabled else
                      f"in the holdout (share {snapshot.holdout_share:g}, seed {snapshot.seed}): fixed ranking")
        return out
    out["draw"] = term.draw
    out["evidence"] = {o.code: term.evidence(o.code) for o in catalog.offers}
    return out
