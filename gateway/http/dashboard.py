"""The live dashboard's numbers: one stats dict, computed once a second and pushed to every SSE client.

The stats dict (``GET /api/stats``, and each ``event: stats`` of ``GET /api/events``).
Every key is optional; the page shows "—" for what is missing.

- ``at``: server clock (s); ``uptime_s``; ``fixtures_version``
- ``queue``: ``{"waiting", "agents", "agents_busy", "service_level" (0-1 or null), "asa_s",
  "answered", "abandoned", "busy" (bool: waiting >= threshold), "threshold", "calls_in_ivr"}``
- ``sms``: ``{"in_total", "out_total", "in_per_min": [30 ints, oldest first, the last is the
  current minute], "out_per_min": [...]}``
- ``outbox``: ``{"queued", "sending", "sent", "delivered", "failed", "expired", "oldest_queued_age_s"}``
- ``busy_hour``: ``{"sent", "diverted", "by_reason": {"over_threshold", "abandon"}}``
- ``survey``: ``{"responses", "mean", "satisfaction" (0-1, share of 4 and 5), "histogram": {"1".."5"}}``
- ``campaigns``: ``[{"id", "name", "state", "targeted", "sent", "delivered", "queued", "failed",
  "excluded": {reason: n}, "excluded_total"}]``
- ``binds``: ``{"upstream": {"configured": bool, "state": "bound"|"connecting"|"down"|"off", "peer"},
  "esme": [{"account", "bind_type", "count"}]}``
- ``outbound``: ``{project_id: {"project", "stage", "live_calls", "window": {"start", "end"},
  "waiting_until" (ISO time of the next dial while no call is up, else null), "dialled", "answered",
  "abandoned", "abandon_rate", "occupancy", "outcomes": {outcome: n}, "over_time": [the last 8 quarter hours]}}``
  for every project dialling now (``ivr.dialer_service``)
- ``pipeline``: the MO pipeline counters (``mo``, ``replies``, ``errors``, ``batches``)
- ``products``: the last 7 days per product (:mod:`notifier.product_reports`), refreshed once a
  minute off the reactor thread: ``{"items": [{"product", "name", "exposures", "conversion",
  "conversion_ci", "confirmation_rate", "retention_7d", "complaint_rate", "revenue",
  "conversion_change"}], "arms": {"learned"|"fixed": {"exposures", "conversion", "conversion_ci",
  "revenue"}}}``

``extra["stats"]`` (a ``Callable[[], dict]`` the service passes to ``make_resource``) supplies
what only the running transports know (queue, binds, ...). What the database can say
(outbox, SMS per minute, campaign progress, survey and busy-hour reports) is computed here as
a fallback; a provider's dict is merged over it key by key.

Nothing on the reactor thread reads a whole table: the outbox counts and the reports are computed
in the thread pool (:mod:`gateway.offthread`; a tick shows the last ones), and SMS per minute reads
only the newest ``message_log`` rows by primary key (the totals before them are counted once, in the
thread pool).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.metrics import outbox_figures
from gateway.offthread import Cached, InThread, in_thread_of
from ivr.reports import busy_hour_report, ivr_report
from notifier.models import MessageLog
from notifier.reports import campaign_report
from notifier.surveys import survey_report

log = Logger(namespace="gateway.http.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
WINDOW_MIN = 30
SCAN_LIMIT = 20_000  # message_log rows read per tick at most
START_SCAN = 200_000  # the first tick looks this many rows back at most for the window's start
SLOW_EVERY_S = 5.0  # reports heavier than a count are recomputed this often
MAX_STREAMS = 64
DASHBOARD_DAYS = 1  # survey and busy-hour figures cover the last day


class SmsRates:
    """SMS in/out per minute from ``message_log``, read incrementally by primary key (bounded per tick).

    The first update finds where the window starts by walking back from the newest row (at most
    ``START_SCAN`` rows); the rows before it are counted once, off the reactor thread, for the totals.
    """

    def __init__(self, factory: Callable[[], Any], in_thread: InThread, now: Callable[[], float]) -> None:
        self.factory, self.in_thread, self.now = factory, in_thread, now
        self.last_id: int | None = None
        self.seen = {"MO": 0, "MT": 0}  # rows after the window start
        self.before: Cached[dict[str, int]] | None = None  # rows up to the window start
        self.buckets: dict[tuple[str, int], int] = {}

    def update(self, session: Any, now: float) -> None:
        since = now - WINDOW_MIN * 60
        if self.last_id is None:
            self.last_id = _window_start(session, since)
            self.before = Cached(lambda start=self.last_id: self._counts_upto(start), self.now, self.in_thread,
                                 float("inf"), what="message_log totals")
            self.before.get()
        rows = session.execute(select(MessageLog.id, MessageLog.direction, MessageLog.at)
                               .where(MessageLog.id > self.last_id).order_by(MessageLog.id).limit(SCAN_LIMIT)).all()
        for row_id, direction, at in rows:
            self.last_id = row_id
            self.seen[direction] = self.seen.get(direction, 0) + 1
            if at >= since:
                key = (direction, int(at // 60))
                self.buckets[key] = self.buckets.get(key, 0) + 1
        oldest = int(since // 60)
        self.buckets = {k: v for k, v in self.buckets.items() if k[1] > oldest}

    def _counts_upto(self, last_id: int) -> dict[str, int]:
        with self.factory() as session:
            return dict(session.execute(select(MessageLog.direction, func.count()).where(MessageLog.id <= last_id)
                                        .group_by(MessageLog.direction)).all())

    def totals(self) -> dict[str, int]:
        before = (self.before.value if self.before is not None else None) or {}
        return {d: before.get(d, 0) + self.seen.get(d, 0) for d in ("MO", "MT")}

    def as_dict(self, now: float) -> dict[str, Any]:
        minute = int(now // 60)
        minutes = range(minute - WINDOW_MIN + 1, minute + 1)
        totals = self.totals()
        return {"in_total": totals["MO"], "out_total": totals["MT"],
                "in_per_min": [self.buckets.get(("MO", m), 0) for m in minutes],
                "out_per_min": [self.buckets.get(("MT", m), 0) for m in minutes]}


def _window_start(session: Any, since: float) -> int:
    """The id just before the window's first row: walk back from the newest row (bounded)."""
    newest = session.scalar(select(func.max(MessageLog.id))) or 0
    floor = max(0, newest - START_SCAN)
    older = session.scalar(select(MessageLog.id).where(MessageLog.id > floor, MessageLog.at < since)
                           .order_by(MessageLog.id.desc()).limit(1))
    return older if older is not None else floor


def _campaign_rows(report: Mapping[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    keys = ("state", "targeted", "sent", "delivered", "queued", "failed", "excluded", "excluded_total")
    return [{"id": c["campaign"], "name": names.get(c["campaign"], c["campaign"]), **{k: c.get(k) for k in keys}}
            for c in report.get("campaigns", [])[:20]]


# dashboard key -> the domain report it shows
SLOW_SOURCES = {"campaigns": campaign_report, "survey": survey_report, "busy_hour": busy_hour_report,
                "queue": ivr_report}
QUEUE_FIGURES = ("service_level", "asa_s", "answered", "abandoned")


def _slow_stats(gateway: Any, now: float) -> dict[str, Any]:
    """Campaign progress, survey and busy-hour numbers from the domain reports, each on its own."""
    out: dict[str, Any] = {}
    for key, fn in SLOW_SOURCES.items():
        try:
            with gateway.db() as session:
                if key == "campaigns":
                    out[key] = _campaign_rows(fn(session, None, now), _campaign_names(gateway))
                elif key == "queue":  # the day's figures; waiting and agents come live from the provider
                    queue = fn(session, now=now, since=now - DASHBOARD_DAYS * 86400.0).get("queue") or {}
                    out[key] = {k: queue.get(k) for k in QUEUE_FIGURES}
                else:
                    report = dict(fn(session, now=now, since=now - DASHBOARD_DAYS * 86400.0))
                    report.pop("items", None)  # the figures, not every response
                    out[key] = report
        except Exception:
            log.failure("dashboard: the {key} report failed; that card stays empty", key=key)
    return out


def _campaign_names(gateway: Any) -> dict[str, str]:
    snapshot = gateway.snapshot
    campaigns = (snapshot.parsed.get("notifier.campaigns") if snapshot is not None else None) or {}
    return {cid: getattr(c, "name", cid) for cid, c in campaigns.items()} if isinstance(campaigns, Mapping) else {}


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """The provider's values over ours: dicts merge one level deep, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


PRODUCTS_EVERY_S = 60.0
PRODUCT_ROWS = 8
PRODUCT_KEYS = ("product", "name", "exposures", "conversion", "conversion_ci", "confirmation_rate", "retention_7d",
                "complaint_rate", "revenue")


def product_card(report: Mapping[str, Any]) -> dict[str, Any]:
    """The dashboard's products card from the products report: the most shown products and both arms."""
    change = {w["product"]: w["change"]["conversion"] for w in report.get("this_week", [])}
    top = sorted(report.get("items", []), key=lambda i: (-i["exposures"], i["product"]))[:PRODUCT_ROWS]
    arms = report.get("learned_vs_fixed", {}).get("total", {})
    return {"items": [{**{k: i[k] for k in PRODUCT_KEYS}, "conversion_change": change.get(i["product"])}
                      for i in top],
            "arms": {arm: {k: a[k] for k in ("exposures", "conversion", "conversion_ci", "revenue")}
                     for arm, a in arms.items()}}


def _products_card(gateway: Any) -> dict[str, Any] | None:
    from notifier.product_reports import product_report

    now = gateway.now()
    with gateway.db() as session:
        return product_card(product_report(session, now, now - 7 * 86400.0))


class StatsSource:
    """Computes the stats dict; the database part at most once a second, the reports every 5 s."""

    def __init__(self, gateway: Any, provider: Callable[[], Mapping[str, Any]] | None = None):
        self.gateway = gateway
        self.provider = provider
        in_thread = in_thread_of(gateway.reactor)
        self.rates = SmsRates(lambda: gateway.db(), in_thread, gateway.now)
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._slow = Cached(lambda: _slow_stats(gateway, gateway.now()), gateway.now, in_thread, SLOW_EVERY_S,
                            what="dashboard reports")
        self.products = Cached(lambda: _products_card(gateway), gateway.now, in_thread, PRODUCTS_EVERY_S,
                               what="the products card")

    def current(self) -> dict[str, Any]:
        now = self.gateway.now()
        if self._cached is not None and now - self._cached[0] < 1.0:
            return self._cached[1]
        stats = merge(self._from_db(now), self._slow.get() or {})
        products = self.products.get()
        if products is not None:
            stats["products"] = products
        if self.provider is not None:
            stats = merge(stats, self._safe(self.provider, "stats provider"))
        self._cached = (now, stats)
        return stats

    def _safe(self, fn: Callable[[], Mapping[str, Any]], what: str) -> Mapping[str, Any]:
        try:
            return fn() or {}
        except Exception:
            log.failure("dashboard {what} failed; showing the rest", what=what)
            return {}

    def _from_db(self, now: float) -> dict[str, Any]:
        gw = self.gateway
        figures = outbox_figures(gw).get()
        outbox: dict[str, Any] = {}
        if figures is not None:
            outbox = {**figures.depth, "oldest_queued_age_s": round(figures.oldest_queued_age(now), 1)}
        with gw.db() as session:
            self.rates.update(session, now)
        snapshot = gw.snapshot
        started = getattr(gw, "started_at", now)
        return {"at": now, "uptime_s": round(max(0.0, now - started), 1),
                "fixtures_version": snapshot.version if snapshot is not None else None,
                "outbox": outbox, "sms": self.rates.as_dict(now)}


class StatsHub:
    """Server-sent events: one LoopingCall on the gateway's reactor, running only while a client listens."""

    def __init__(self, clock: Any, source: Callable[[], Mapping[str, Any]], interval: float = 1.0):
        self.source = source
        self.interval = interval
        self.clients: set[Any] = set()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = clock
        self._seq = 0

    def add(self, request: Any) -> None:
        self.clients.add(request)
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def remove(self, request: Any) -> None:
        self.clients.discard(request)
        if not self.clients and self._loop.running:
            self._loop.stop()

    def event(self, stats: Mapping[str, Any]) -> bytes:
        self._seq += 1
        data = json.dumps(stats, ensure_ascii=False, separators=(",", ":"))
        return f"id: {self._seq}\nevent: stats\ndata: {data}\n\n".encode()

    def tick(self) -> None:
        if not self.clients:
            return
        try:
            payload = self.event(self.source())
        except Exception:
            log.failure("stats for the dashboard failed; retrying next tick")
            return
        for request in list(self.clients):
            try:
                request.write(payload)
            except RuntimeError:  # finished under us: the client went away
                self.remove(request)


def page() -> bytes:
    return (STATIC / "index.html").read_bytes()
