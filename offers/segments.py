"""Segmentation: pure functions of (subscriber facts, parameters) -> decision with reasons.

The models follow the operators' precision-marketing practice (fixtures/demo/segments.yaml
cites the sources):

- customer value: a 100-point weighted score; each feature gives ``weight x min(fact / full, 1)``
  points (``invert``: ``weight x (1 - min(fact / full, 1))``, for late payments, complaints),
  and the score maps to grades A1, A2, B1, B2, C, D by minimum thresholds;
- data-usage class: ``data_usage_ratio`` against upper bounds: A far below the allowance
  (suggest a smaller plan), B within, C near / slightly over the limit, D far over (upgrade);
- "four-high" flags (high tariff/roaming, high data, high silence, high ARPU), each on a monthly
  and a daily window: ``fact >= min``;
- channel preference: per channel (phone, SMS, web, hall) ``sum(weight x min(fact / full, 1))``
  over its factors (a negative weight lowers it); the highest score wins, ties in channel order.

Every decision carries its reasons, e.g. ``"value 83.5 >= 80 -> A2"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from offers import schema
from offers.models import CHANNELS, Subscriber


@dataclass(frozen=True)
class Feature:
    fact: str
    weight: float
    full: float
    invert: bool = False

    def points(self, facts: Mapping[str, Any]) -> float:
        share = float(facts[self.fact]) / self.full
        share = 0.0 if share < 0.0 else 1.0 if share > 1.0 else share
        return self.weight * (1.0 - share if self.invert else share)


@dataclass(frozen=True)
class Threshold:
    fact: str
    min: float


@dataclass(frozen=True)
class SegmentParams:
    brands: Mapping[str, str]  # key -> display name
    value_features: tuple[Feature, ...]
    grades: tuple[tuple[str, float], ...]  # (grade, minimum score), highest first; the last minimum is 0
    usage_fact: str
    usage_classes: tuple[tuple[str, float | None], ...]  # (class, upper bound exclusive); the last has None
    four_high: Mapping[str, Mapping[str, Threshold]]  # flag -> window ("month"/"day") -> threshold
    channel_factors: Mapping[str, tuple[Feature, ...]]
    budget_share: float = 0.5  # shelf: an add-on up to this share of the monthly ARPU is comfortable
    trigger_boost: float = 1.5  # shelf: fit multiplier when an offer's trigger condition holds


@dataclass(frozen=True)
class Decision:
    value: Any
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Segments:
    value_score: float
    value_grade: str
    usage_class: str
    flags: Mapping[str, bool]  # high_tariff ... high_arpu_day
    channel_pref: str
    channel_scores: Mapping[str, float]
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        """The cached columns of ``subscribers`` these segments set."""
        return {"value_score": self.value_score, "value_grade": self.value_grade,
                "usage_class": self.usage_class, **self.flags, "channel_pref": self.channel_pref,
                **{f"pref_{ch}": score for ch, score in self.channel_scores.items()}}


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _grade(score: float, params: SegmentParams) -> tuple[str, float]:
    for name, minimum in params.grades:
        if score >= minimum:
            return name, minimum
    return params.grades[-1]


def _usage_class(x: float, params: SegmentParams) -> tuple[str, float, float | None]:
    low = 0.0
    for name, below in params.usage_classes:
        if below is None or x < below:
            return name, low, below
        low = below
    raise ValueError("usage classes must end with an unbounded class")


def _flag_name(kind: str, window: str) -> str:
    return f"high_{kind}" + ("_day" if window == "day" else "")


def _channel_scores(facts: Mapping[str, Any], params: SegmentParams) -> tuple[str, dict[str, float]]:
    scores = {ch: round(sum(f.points(facts) for f in params.channel_factors.get(ch, ())), 1) for ch in CHANNELS}
    best = CHANNELS[0]
    for ch in CHANNELS[1:]:
        if scores[ch] > scores[best]:
            best = ch
    return best, scores


def value(facts: Mapping[str, Any], params: SegmentParams) -> Decision:
    """Customer value: ``Decision((score, grade), reasons)``."""
    parts = [(f, f.points(facts)) for f in params.value_features]
    score = round(sum(p for _, p in parts), 1)
    grade, low = _grade(score, params)
    reasons = [f"value {score} >= {_num(low)} -> {grade}"]
    reasons += [f"{f.fact} {_num(float(facts[f.fact]))}/{_num(f.full)}{' (inverted)' if f.invert else ''}"
                f" x {_num(f.weight)} = {p:.1f}" for f, p in parts]
    return Decision((score, grade), tuple(reasons))


def usage(facts: Mapping[str, Any], params: SegmentParams) -> Decision:
    """Data-usage class A/B/C/D from the usage ratio against the class bounds."""
    x = float(facts[params.usage_fact])
    name, low, below = _usage_class(x, params)
    upper = f"{_num(below)})" if below is not None else "inf)"
    return Decision(name, (f"{params.usage_fact} {x:.2f} in [{_num(low)}, {upper} -> {name}",))


def four_high(facts: Mapping[str, Any], params: SegmentParams) -> Decision:
    """The eight four-high flags (``high_<kind>`` monthly, ``high_<kind>_day`` daily)."""
    flags: dict[str, bool] = {}
    reasons = []
    for kind, windows in params.four_high.items():
        for window, th in windows.items():
            name = _flag_name(kind, window)
            x = float(facts[th.fact])
            flags[name] = x >= th.min
            reasons.append(f"{name}: {th.fact} {_num(x)} {'>=' if flags[name] else '<'} {_num(th.min)}"
                           f" ({window})")
    return Decision(flags, tuple(reasons))


def channel(facts: Mapping[str, Any], params: SegmentParams) -> Decision:
    """Channel preference: ``Decision((channel, {channel: score}), reasons)``."""
    best, scores = _channel_scores(facts, params)
    others = ", ".join(f"{ch} {scores[ch]}" for ch in CHANNELS if ch != best)
    return Decision((best, scores), (f"channel {best} {scores[best]} is highest ({others}) -> {best}",))


def segment(facts: Mapping[str, Any], params: SegmentParams) -> Segments:
    """Every segment of one subscriber, with reasons per segment."""
    v, u, h, c = value(facts, params), usage(facts, params), four_high(facts, params), channel(facts, params)
    return Segments(value_score=v.value[0], value_grade=v.value[1], usage_class=u.value, flags=h.value,
                    channel_pref=c.value[0], channel_scores=c.value[1],
                    reasons={"value": v.reasons, "usage": u.reasons, "four_high": h.reasons, "channel": c.reasons})


def segment_columns(facts: Mapping[str, Any], params: SegmentParams) -> dict[str, Any]:
    """The cached columns only, without reasons: the bulk path (same helpers as :func:`segment`)."""
    score = round(sum(f.points(facts) for f in params.value_features), 1)
    out: dict[str, Any] = {"value_score": score, "value_grade": _grade(score, params)[0],
                           "usage_class": _usage_class(float(facts[params.usage_fact]), params)[0]}
    for kind, windows in params.four_high.items():
        for window, th in windows.items():
            out[_flag_name(kind, window)] = float(facts[th.fact]) >= th.min
    out["channel_pref"], scores = _channel_scores(facts, params)
    for ch, score in scores.items():
        out[f"pref_{ch}"] = score
    return out


def segment_row(row: Any, params: SegmentParams) -> Segments:
    """Segments of a subscriber row; the derived facts come from :func:`offers.schema.facts`."""
    return segment(schema.facts(row), params)


CHUNK = 20000
_READ = [c for c in Subscriber.__table__.columns if not c.key.startswith(("pref_", "high_"))
         and c.key not in ("value_score", "value_grade", "usage_class", "channel_pref", "segmented_at",
                           "name", "email", "timezone")]


def segment_all(session: Session, params: SegmentParams, progress: Callable[[int], None] | None = None,
                now: float | None = None) -> int:
    """Recompute and store the cached segment columns of every subscriber; returns how many.

    Reads in primary-key pages and writes each page with one executemany UPDATE, in the
    caller's transaction. ``progress(n)`` is called after each page with the running total.
    """
    table = Subscriber.__table__
    conn = session.connection()
    stmt = (update(table).where(table.c.msisdn == bindparam("k_msisdn"))
            .values({k: bindparam(k) for k in _columns_template(params)}))
    done = 0
    last = ""
    while True:
        rows = conn.execute(select(*_READ).where(table.c.msisdn > last).order_by(table.c.msisdn)
                            .limit(CHUNK)).all()
        if not rows:
            return done
        batch = []
        keys = [c.key for c in _READ]
        for row in rows:
            cols = segment_columns(schema.facts(dict(zip(keys, row, strict=True))), params)
            cols["k_msisdn"] = row.msisdn
            cols["segmented_at"] = now
            batch.append(cols)
        conn.execute(stmt, batch)
        done += len(rows)
        last = rows[-1].msisdn
        if progress is not None:
            progress(done)


def _columns_template(params: SegmentParams) -> list[str]:
    flags = [_flag_name(kind, w) for kind, ws in params.four_high.items() for w in ws]
    return ["value_score", "value_grade", "usage_class", *flags, "channel_pref",
            *(f"pref_{ch}" for ch in CHANNELS), "segmented_at"]
