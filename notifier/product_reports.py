"""Every product's results across channels, from the exposure and outcome events (offers/exposures.py).

Per product, per product x segment x channel, and per product x ranking arm (learned vs the fixed
holdout), over the exposures of the window. The channel is where the offer was shown: ``sms`` and
``ussd`` (the shelf), ``campaign_sms`` and ``campaign_email``, ``call``.

- ``exposures``: times the offer was put in front of someone (a shelf line, a campaign message, a call);
- ``ordered`` / ``confirmed`` / ``not_confirmed``: exposures that led to a KT, to its Y, or to a KT
  whose confirm window passed without a Y;
- ``cancelled_7d`` / ``cancelled_30d``: confirmed, then cancelled within 7 / 30 days;
- ``refused`` (``refused_suppressing``: the refusal keeps it off the shelf), ``complaints``, ``opt_outs``;
- rates with 95 % Wilson intervals: ``conversion`` = confirmed / exposures, ``confirmation_rate``
  = confirmed / ordered, ``retention_7d`` = (confirmed - cancelled_7d) / confirmed,
  ``complaint_rate`` = complaints / exposures;
- ``revenue``: confirmed x the offer's list price (yuan).

An exposure counts once per outcome kind, however many times it happened. "What changed this
week" compares the last 7 days with the 7 before them, per product.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.settings import KNOBS

DAY = 86400.0
WEEK = 7 * DAY
Z95 = 1.959964
COUNTS = ("exposures", "ordered", "confirmed", "not_confirmed", "cancelled_7d", "cancelled_30d", "refused",
          "refused_suppressing", "complaints", "opt_outs")
RATES = {"conversion": ("confirmed", "exposures"), "confirmation_rate": ("confirmed", "ordered"),
         "retention_7d": ("retained_7d", "confirmed"), "complaint_rate": ("complaints", "exposures")}
_CELLS = text("""
WITH o AS (
  SELECT exposure_id,
    MAX(CASE WHEN kind = 'ordered' THEN 1 ELSE 0 END) AS ordered,
    MAX(CASE WHEN kind = 'ordered' THEN at END) AS ordered_at,
    MAX(CASE WHEN kind = 'confirmed' THEN 1 ELSE 0 END) AS confirmed,
    MAX(CASE WHEN kind = 'cancelled' AND after_s <= :d7 THEN 1 ELSE 0 END) AS c7,
    MAX(CASE WHEN kind = 'cancelled' AND after_s <= :d30 THEN 1 ELSE 0 END) AS c30,
    MAX(CASE WHEN kind = 'refused' THEN 1 ELSE 0 END) AS refused,
    MAX(CASE WHEN kind = 'refused' AND suppresses THEN 1 ELSE 0 END) AS refused_sup,
    MAX(CASE WHEN kind = 'complaint' THEN 1 ELSE 0 END) AS complaint,
    MAX(CASE WHEN kind = 'opt_out' THEN 1 ELSE 0 END) AS opt_out
  FROM outcomes WHERE exposure_id IS NOT NULL AND at >= :lo GROUP BY exposure_id)
SELECT e.offer_code, COALESCE(e.segment, s.brand || ':' || s.usage_class, '?') AS seg,
  CASE WHEN e.context LIKE 'campaign:%' THEN 'campaign_' || e.channel ELSE e.channel END AS ch,
  COALESCE(e.arm, '-') AS arm,
  CASE WHEN e.at >= :week THEN 'this' WHEN e.at >= :last THEN 'last' ELSE '' END AS period,
  CASE WHEN e.at >= :since THEN 1 ELSE 0 END AS in_window,
  COUNT(*), SUM(COALESCE(o.ordered, 0)), SUM(COALESCE(o.confirmed, 0)),
  SUM(CASE WHEN o.ordered = 1 AND o.confirmed = 0 AND o.ordered_at < :expired THEN 1 ELSE 0 END),
  SUM(COALESCE(o.c7, 0)), SUM(COALESCE(o.c30, 0)), SUM(COALESCE(o.refused, 0)), SUM(COALESCE(o.refused_sup, 0)),
  SUM(COALESCE(o.complaint, 0)), SUM(COALESCE(o.opt_out, 0))
FROM exposures e LEFT JOIN o ON o.exposure_id = e.id LEFT JOIN subscribers s ON s.msisdn = e.msisdn
WHERE e.at >= :lo AND e.at <= :now
GROUP BY e.offer_code, seg, ch, arm, period, in_window
""")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials (None when n is 0)."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 5), round(min(1.0, centre + half), 5)


def figures(counts: Mapping[str, int], price: float) -> dict[str, Any]:
    """Counts plus rates with their 95 % intervals and revenue at list price."""
    out: dict[str, Any] = {k: int(counts.get(k, 0)) for k in COUNTS}
    out["retained_7d"] = out["confirmed"] - out["cancelled_7d"]
    for name, (num, den) in RATES.items():
        n = out[den]
        out[name] = round(out[num] / n, 5) if n else None
        out[f"{name}_ci"] = wilson(out[num], n)
    out["revenue"] = round(out["confirmed"] * price, 2)
    return out


def _cells(session: Session, now: float, since: float, confirm_window_s: float) -> list[tuple]:
    lo = min(since, now - 2 * WEEK)
    params = {"d7": 7 * DAY, "d30": 30 * DAY, "lo": lo, "week": now - WEEK, "last": now - 2 * WEEK,
              "since": since, "expired": now - confirm_window_s, "now": now}
    return [tuple(r) for r in session.execute(_CELLS, params)]


def _add(into: dict[Any, dict[str, int]], key: Any, values: Iterable[int]) -> None:
    bucket = into.setdefault(key, dict.fromkeys(COUNTS, 0))
    for name, v in zip(COUNTS, values, strict=True):
        bucket[name] += int(v or 0)


def _offers(session: Session) -> dict[str, tuple[str, float]]:
    return {code: (name, float(price)) for code, name, price in
            session.execute(text("SELECT code, name, price FROM offers"))}


def product_report(session: Session, now: float, since: float | None = None,
                   confirm_window_s: float = KNOBS["router.confirm_window_s"].default) -> dict[str, Any]:
    """The products report (module docstring), JSON-ready; ``since`` defaults to 7 days back."""
    since = now - WEEK if since is None else since
    offers = _offers(session)
    product, detail, arms, by_arm, weeks = {}, {}, {}, {}, {}
    for code, seg, channel, arm, period, in_window, *values in _cells(session, now, since, confirm_window_s):
        if period:
            _add(weeks, (code, period), values)
        if not in_window:
            continue
        _add(product, code, values)
        _add(detail, (code, seg, channel), values)
        if arm != "-":
            _add(arms, arm, values)
            _add(by_arm, (code, arm), values)

    def price(code: str) -> float:
        return offers.get(code, (code, 0.0))[1]

    def row(code: str, counts: Mapping[str, int], **keys: str) -> dict[str, Any]:
        return {"product": code, "name": offers.get(code, (code, 0.0))[0], **keys, **figures(counts, price(code))}

    return {
        "since": since, "now": now,
        "items": [row(c, product[c]) for c in sorted(product)],
        "by_segment_channel": [row(c, v, segment=s, channel=ch) for (c, s, ch), v in sorted(detail.items())],
        "learned_vs_fixed": {
            "total": {arm: figures(arms[arm], 0.0) | {"revenue": _revenue(by_arm, arm, price)} for arm in sorted(arms)},
            "items": [row(c, v, arm=a) for (c, a), v in sorted(by_arm.items())]},
        "this_week": _changes(weeks, row),
    }


def _revenue(by_arm: Mapping[tuple[str, str], Mapping[str, int]], arm: str, price: Any) -> float:
    return round(sum(v["confirmed"] * price(c) for (c, a), v in by_arm.items() if a == arm), 2)


def _changes(weeks: Mapping[tuple[str, str], Mapping[str, int]], row: Any) -> list[dict[str, Any]]:
    """Per product: this week's and last week's figures and the change of each."""
    out = []
    empty = dict.fromkeys(COUNTS, 0)
    for code in sorted({c for c, _ in weeks}):
        this = row(code, weeks.get((code, "this"), empty))
        last = row(code, weeks.get((code, "last"), empty))
        delta = {}
        for key in ("exposures", "confirmed", "revenue", *RATES):
            a, b = this[key], last[key]
            delta[key] = None if a is None or b is None else round(a - b, 5)
        out.append({"product": code, "name": this["name"], "this_week": _short(this), "last_week": _short(last),
                    "change": delta})
    return out


def _short(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("exposures", "ordered", "confirmed", "cancelled_7d", "complaints", "revenue",
                                *RATES)}


CSV_COLUMNS = ("level", "product", "name", "segment", "channel", "arm", *COUNTS, "retained_7d",
               *(c for r in RATES for c in (r, f"{r}_lo", f"{r}_hi")), "revenue")


def product_csv(report: Mapping[str, Any]) -> str:
    """The report as CSV: one row per product, per product x segment x channel and per product x arm."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    levels = (("product", report["items"]), ("segment_channel", report["by_segment_channel"]),
              ("arm", report["learned_vs_fixed"]["items"]))
    for level, rows in levels:
        for item in rows:
            flat = {"level": level, **item}
            for rate in RATES:
                ci = item.get(f"{rate}_ci") or (None, None)
                flat[f"{rate}_lo"], flat[f"{rate}_hi"] = ci
            writer.writerow(["" if flat.get(c) is None else flat.get(c) for c in CSV_COLUMNS])
    return out.getvalue()
