"""Every Prometheus metric of the gateway (names start with ``gateway_``), in one registry per gateway.

Transports and domain adapters increment these objects; gauges that mirror
the database (outbox depth, oldest queued age) are set on each scrape by
:func:`refresh_from_db` from :func:`outbox_figures`, counted in the thread pool, never on the reactor
thread: the live states every 5 s, the final ones (every row kept) every ``FINAL_COUNT_S``. One :class:`GatewayMetrics` owns its own
``CollectorRegistry`` so tests can run several gateways in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily

from gateway.checkpointer import WAL
from gateway.gcstats import TALLY
from gateway.memtrim import TRIMS
from gateway.offthread import Cached, in_thread_of
from notifier.models import FINAL_STATES, LIVE_STATES, OUTBOX_STATES
from notifier.outbox import Outbox

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics", "OutboxFigures", "PduTally", "child_cache", "outbox_figures",
           "refresh_from_db"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PduTally:
    """``gateway_smpp_pdus``: SMPP PDUs counted in plain ints on the reactor thread, exposed at scrape time.

    A prometheus ``Counter`` child takes a lock on every ``inc``; a PDU counter runs several times per
    "200" round trip, so the hot path adds to a dict and this collector turns it into samples.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int, str], int] = {}

    def count(self, command: str, direction: str, status: int = 0) -> None:
        key = (command, status, direction)
        self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily("gateway_smpp_pdus", "SMPP PDUs by command, command_status and direction "
                                     "(in/out)", labels=["command", "status", "direction"])
        for (command, status, direction), n in list(self.counts.items()):
            family.add_metric([command, f"0x{status:02X}", direction], n)
        return [family]


class GatewayMetrics:
    """The metric objects; label names are part of the contract with whoever increments them."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.pdus = PduTally()
        r.register(self.pdus)
        TALLY.install()
        r.register(TALLY)
        r.register(WAL)
        r.register(TRIMS)
        self.binds = Gauge("gateway_smpp_binds", "SMPP sessions bound now, by account and bind type (tx/rx/trx)",
                           ["account", "bind_type"], registry=r)
        self.bind_attempts = Counter("gateway_smpp_bind_attempts", "bind requests by account, type and result "
                                     "(ok or the error name)", ["account", "bind_type", "result"], registry=r)
        self.upstream_bound = Gauge("gateway_upstream_bound", "1 while the upstream SMSC bind is up", registry=r)
        self.outbox_depth = Gauge("gateway_outbox_depth", "outbox rows by state", ["state"], registry=r)
        self.outbox_oldest_age = Gauge("gateway_outbox_oldest_queued_age_seconds",
                                       "age of the oldest queued outbox row", registry=r)
        self.router_latency = Histogram("gateway_router_latency_seconds", "time to route one MO to its reply",
                                        ["channel"], buckets=LATENCY_BUCKETS, registry=r)
        self.sip_calls = Counter("gateway_sip_calls", "SIP-lite calls ended, by outcome "
                                 "(completed, abandoned, cancelled, rejected, timeout)", ["outcome"], registry=r)
        self.queue_length = Gauge("gateway_ivr_queue_length", "calls waiting for an agent", registry=r)
        self.agents_busy = Gauge("gateway_ivr_agents_busy", "simulated agents on a call", registry=r)
        self.busy_sms = Counter("gateway_busy_hour_sms", "busy-hour guidance SMS sent, by reason "
                                "(over_threshold, abandon)", ["reason"], registry=r)
        self.survey_responses = Counter("gateway_survey_responses", "survey scores received", ["score"], registry=r)
        self.campaign_sends = Counter("gateway_campaign_sends", "campaign messages by campaign and result "
                                      "(queued, excluded, sent, failed)", ["campaign", "result"], registry=r)
        self.errors = Counter("gateway_errors", "errors by component (smpp, sip, router, outbox, http, ...)",
                              ["component"], registry=r)
        self.sms_in = Counter("gateway_sms_in", "MO messages accepted, by channel", ["channel"], registry=r)
        self.sms_out = Counter("gateway_sms_out", "MT messages handed to a wire, by channel", ["channel"], registry=r)
        self.http_requests = Counter("gateway_http_requests", "HTTP ops API requests by method, route and status",
                                     ["method", "route", "status"], registry=r)
        self.fixture_version = Gauge("gateway_fixture_version", "version of the fixture snapshot served",
                                     registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def child_cache(metric: Any) -> Callable[..., Any]:
    """``child(*label_values)``: the labelled child of ``metric``, looked up once per label set.

    ``metric.labels(...)`` validates and locks on every call; the hot path (a counter per PDU)
    keeps the children it has seen in a plain dict instead.
    """
    children: dict[tuple, Any] = {}

    def child(*values: Any) -> Any:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


@dataclass(frozen=True)
class OutboxFigures:
    depth: dict[str, int]  # rows by state
    oldest_queued_at: float | None

    def oldest_queued_age(self, now: float) -> float:
        return max(0.0, now - self.oldest_queued_at) if self.oldest_queued_at is not None else 0.0


# The final states (delivered, failed, expired) are every row retention keeps: counting them walks the
# whole state index (6.6M rows after an hour at 1,848 "200"/s: about a second of a core). They change
# slowly as totals, so they are counted every 5 minutes; the live states, a few rows, at every refresh.
FINAL_COUNT_S = 300.0


def _count_outbox(gateway: Any) -> OutboxFigures:
    now = gateway.now()
    with gateway.db() as session:
        live = Outbox.depth_by_state(session, LIVE_STATES)
        finals = getattr(gateway, "outbox_final_counts", None)
        if finals is None or now - finals[0] >= FINAL_COUNT_S:
            finals = gateway.outbox_final_counts = (now, Outbox.depth_by_state(session, FINAL_STATES))
        return OutboxFigures({**live, **finals[1]}, Outbox.oldest_queued_at(session))


def outbox_figures(gateway: Any, max_age_s: float = 5.0) -> Cached[OutboxFigures]:
    """The gateway's cached outbox counts (one per gateway, shared by /metrics and the dashboard)."""
    cached = getattr(gateway, "outbox_figures", None)
    if cached is None:
        cached = Cached(lambda: _count_outbox(gateway), gateway.now, in_thread_of(gateway.reactor), max_age_s,
                        what="outbox figures")
        gateway.outbox_figures = cached
    return cached


def refresh_from_db(metrics: GatewayMetrics, gateway: Any) -> None:
    """Set the gauges that mirror the database from the last counts (they appear once the first count,
    started when the gateway starts, is in)."""
    figures = outbox_figures(gateway).get()
    if figures is not None:
        for state in OUTBOX_STATES:
            metrics.outbox_depth.labels(state=state).set(figures.depth.get(state, 0))
        metrics.outbox_oldest_age.set(figures.oldest_queued_age(gateway.now()))
    snapshot = getattr(gateway, "snapshot", None)
    if snapshot is not None:
        metrics.fixture_version.set(snapshot.version)
    live = getattr(gateway, "stats", None)
    if live is not None:  # the transports' live numbers (queue, binds) at scrape time
        queue = live.snapshot().get("queue") or {}
        if queue.get("waiting") is not None:
            metrics.queue_length.set(queue["waiting"])
        if queue.get("agents_busy") is not None:
            metrics.agents_busy.set(queue["agents_busy"])
