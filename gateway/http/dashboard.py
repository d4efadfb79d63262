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
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from notifier.models import MessageLog
from notifier.outbox import Outbox

log = Logger(namespace="gateway.http.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
WINDOW_MIN = 30
SCAN_LIMIT = 20_000  # message_log rows read per tick at most
SLOW_EVERY_S = 5.0  # reports heavier than a count are recomputed this often
MAX_STREAMS = 64
DASHBOARD_DAYS = 1  # survey and busy-hour figures cover the last day


class SmsRates:
    """SMS in/out per minute from ``message_log``, read incrementally by primary key (bounded per tick)."""

    def __init__(self) -> None:
        self.last_id: int | None = None
        self.totals = {"MO": 0, "MT": 0}
        self.buckets: dict[tuple[str, int], int] = {}

    def update(self, session: Any, now: float) -> None:
        since = now - WINDOW_MIN * 60
        if self.last_id is None:
            for direction, count in session.execute(select(MessageLog.direction, func.count())
                                                    .group_by(MessageLog.direction)):
                self.totals[direction] = count
            start = session.scalar(select(func.min(MessageLog.id)).where(MessageLog.at >= since))
            self.last_id = (start - 1) if start is not None else (session.scalar(select(func.max(MessageLog.id))) or 0)
            count_totals = False
        else:
            count_totals = True
        rows = session.execute(select(MessageLog.id, MessageLog.direction, MessageLog.at)
                               .where(MessageLog.id > self.last_id).order_by(MessageLog.id).limit(SCAN_LIMIT)).all()
        for row_id, direction, at in rows:
            self.last_id = row_id
            if count_totals:
                self.totals[direction] = self.totals.get(direction, 0) + 1
            if at >= since:
                key = (direction, int(at // 60))
                self.buckets[key] = self.buckets.get(key, 0) + 1
        oldest = int(since // 60)
        self.buckets = {k: v for k, v in self.buckets.items() if k[1] > oldest}

    def as_dict(self, now: float) -> dict[str, Any]:
        minute = int(now // 60)
        minutes = range(minute - WINDOW_MIN + 1, minute + 1)
        return {"in_total": self.totals.get("MO", 0), "out_total": self.totals.get("MT", 0),
                "in_per_min": [self.buckets.get(("MO", m), 0) for m in minutes],
                "out_per_min": [self.buckets.get(("MT", m), 0) for m in minutes]}


def _campaign_rows(report: Mapping[str, Any], names: Mapping[str, str]) -> list[dict[str, Any]]:
    keys = ("state", "targeted", "sent", "delivered", "queued", "failed", "excluded", "excluded_total")
    return [{"id": c["campaign"], "name": names.get(c["campaign"], c["campaign"]), **{k: c.get(k) for k in keys}}
            for c in report.get("campaigns", [])[:20]]


# dashboard key -> (module, function) of the domain report it shows; missing modules are skipped
SLOW_SOURCES = {"campaigns": ("notifier.reports", "campaign_report"),
                "survey": ("notifier.surveys", "survey_report"),
                "busy_hour": ("ivr.reports", "busy_hour_report"),
                "queue": ("ivr.reports", "ivr_report")}
QUEUE_FIGURES = ("service_level", "asa_s", "answered", "abandoned")


def _slow_stats(gateway: Any, now: float) -> dict[str, Any]:
    """Campaign progress, survey and busy-hour numbers from the domain reports, each on its own."""
    out: dict[str, Any] = {}
    for key, (module, name) in SLOW_SOURCES.items():
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
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
            log.failure("dashboard: {module}.{name} failed; that card stays empty", module=module, name=name)
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


class ProductsCard:
    """The products card, recomputed at most once a minute in a thread when the reactor has one."""

    def __init__(self, gateway: Any):
        self.gateway = gateway
        self.value: dict[str, Any] | None = None
        self._at = float("-inf")
        self._busy = False

    def current(self, now: float) -> dict[str, Any] | None:
        if not self._busy and now - self._at >= PRODUCTS_EVERY_S:
            self._at, self._busy = now, True
            reactor = self.gateway.reactor
            if hasattr(reactor, "callInThread"):
                reactor.callInThread(lambda: reactor.callFromThread(self._store, self._compute(now)))
            else:
                self._store(self._compute(now))
        return self.value

    def _compute(self, now: float) -> dict[str, Any] | None:
        try:
            from notifier.product_reports import product_report

            with self.gateway.db() as session:
                return product_card(product_report(session, now, now - 7 * 86400.0))
        except Exception:
            log.failure("dashboard: the products card failed; it stays as it was")
            return self.value

    def _store(self, value: dict[str, Any] | None) -> None:
        self.value, self._busy = value, False


class StatsSource:
    """Computes the stats dict; the database part at most once a second, the reports every 5 s."""

    def __init__(self, gateway: Any, provider: Callable[[], Mapping[str, Any]] | None = None):
        self.gateway = gateway
        self.provider = provider
        self.rates = SmsRates()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._slow: tuple[float, dict[str, Any]] = (float("-inf"), {})
        self.products = ProductsCard(gateway)

    def current(self) -> dict[str, Any]:
        now = self.gateway.now()
        if self._cached is not None and now - self._cached[0] < 1.0:
            return self._cached[1]
        stats = self._from_db(now)
        if now - self._slow[0] >= SLOW_EVERY_S:
            self._slow = (now, _slow_stats(self.gateway, now))
        stats = merge(stats, self._slow[1])
        products = self.products.current(now)
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
        with gw.db() as session:
            outbox: dict[str, Any] = dict(Outbox.depth_by_state(session))
            outbox["oldest_queued_age_s"] = round(Outbox.oldest_queued_age(session, now), 1)
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
