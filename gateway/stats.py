"""Live numbers only the running transports know, for the dashboard and /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.metrics import GatewayMetrics, child_cache, outbox_figures


class StatsProvider:
    """Collects per-surface stats callables; ``snapshot()`` merges them into the dashboard's dict."""

    def __init__(self, gateway: Any, smpp: Any):
        self.gateway = gateway
        self.smpp = smpp
        self.sources: dict[str, Callable[[], Any]] = {}

    def add(self, key: str, source: Callable[[], Any]) -> None:
        self.sources[key] = source

    def _upstream(self) -> dict[str, Any]:
        client = getattr(self.gateway, "upstream", None)
        if client is None:
            return {"configured": False, "state": "off", "peer": None}
        bound = any(link.bound for link in client.links)
        metrics = getattr(self.gateway, "metrics", None)
        if metrics is not None:
            metrics.upstream_bound.set(1 if bound else 0)
        return {"configured": True, "state": "bound" if bound else "connecting",
                "peer": f"{client.host}:{client.port}"}

    def snapshot(self) -> dict[str, Any]:
        registry = self.smpp.registry
        metrics = getattr(self.gateway, "metrics", None)
        if metrics is not None:
            metrics.binds.clear()
            for account, kinds in registry.summary().items():
                for kind, count in kinds.items():
                    metrics.binds.labels(account=account, bind_type=kind).set(count)
        esme = [{"account": account, "bind_type": kind, "count": count}
                for account, kinds in registry.summary().items() for kind, count in kinds.items()]
        out: dict[str, Any] = {
            "binds": {"esme": esme, "upstream": self._upstream()},
            "pipeline": dict(self.smpp.pipeline.stats),
            "delivery": dict(self.smpp.deliverer.stats),
            "fixtures_version": self.gateway.snapshot.version if self.gateway.snapshot else None,
        }
        upstream = getattr(self.gateway, "upstream", None)
        if upstream is not None:
            out["upstream"] = dict(upstream.stats)
        for key, source in self.sources.items():
            value = source()
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            elif value is not None:
                out[key] = value
        return out


def instrument(gateway: Any, smpp: Any) -> GatewayMetrics:
    """Create the gateway's metrics and hook the SMPP server's counters into them."""
    metrics = GatewayMetrics()
    gateway.metrics = metrics
    outbox_figures(gateway).get()  # the first count starts now, so the first scrape has it
    errors = metrics.errors.labels(component="smpp")
    sms_in, latency = child_cache(metrics.sms_in), child_cache(metrics.router_latency)
    smpp.pdu_counter = metrics.pdus.count
    smpp.error_counter = lambda status: errors.inc()
    smpp.pipeline.routed_listeners.append(lambda item, reply: sms_in(item.inbound.channel).inc())
    smpp.pipeline.route_observer = lambda channel, seconds: latency(channel).observe(seconds)
    smpp.deliverer.sent_listeners.append(lambda n: metrics.sms_out.labels(channel="smpp").inc(n))
    return metrics
