"""Everything ``serve`` runs beside the SMPP server: HTTP ops API, campaign scheduler, IVR, USSD, SMTP."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.logger import Logger

log = Logger(namespace="gateway.wiring")


class ListeningService(service.Service):
    """A listener started by a callable; exposes the chosen port for the ready line."""

    def __init__(self, start):
        self._start = start
        self.port = None

    def startService(self) -> None:
        super().startService()
        self.port = self._start()

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None

    def port_number(self) -> int:
        return self.port.getHost().port


class SchedulerService(service.Service):
    """The campaign scheduler (one leader per database), reloaded with the fixtures."""

    def __init__(self, gateway):
        from gateway.scheduler import CampaignScheduler

        self.gateway = gateway
        # On SQLite a worker group's scheduler runs in worker 0; PostgreSQL elects one by advisory lock.
        self.scheduler = CampaignScheduler(gateway.reactor, gateway.db, gateway.outbox,
                                           lambda: gateway.snapshot.extras["campaigns"], gateway.live_settings,
                                           local_leader=gateway.worker in (None, 0))
        gateway.reload_listeners.append(lambda _snapshot: self.scheduler.reload() if self.running else None)

    def startService(self) -> None:
        super().startService()
        self.scheduler.start()

    def stopService(self):
        super().stopService()
        self.scheduler.stop()


def build_surfaces(gateway, args, reactor, top: service.MultiService, smpp) -> dict[str, Any]:
    """Mount every other surface; returns ``{name: port source}`` for the ready line."""
    ports: dict[str, Any] = {}
    scheduler = SchedulerService(gateway)
    scheduler.setServiceParent(top)
    from gateway.learning_service import LearningService

    LearningService(gateway).setServiceParent(top)
    from gateway.gcstats import GcService

    GcService(gateway).setServiceParent(top)
    from gateway.memtrim import MemoryTrimmer

    MemoryTrimmer(gateway).setServiceParent(top)
    if gateway.engine.dialect.name == "sqlite":
        from gateway.checkpointer import Checkpointer

        Checkpointer(gateway).setServiceParent(top)
    from gateway.stats import StatsProvider, instrument

    metrics = instrument(gateway, smpp)
    stats = StatsProvider(gateway, smpp)
    gateway.stats = stats
    extra = {"stats": stats.snapshot, "scheduler": scheduler.scheduler, "pipeline": smpp.pipeline,
             "metrics": metrics}
    gateway.surfaces = extra
    from ivr.server import build_ivr

    ivr_service = build_ivr(gateway, args, reactor, top, smpp.deliverer.wake_table)
    stats.add("queue", lambda: ivr_service.live_stats().get("queue"))
    if gateway.worker in (None, 0):  # one dialer per group, or every worker would call the same targets
        from ivr.dialer_service import DialerService

        dialer = DialerService(gateway, poke=smpp.deliverer.wake_table, host=args.host)
        dialer.setServiceParent(top)
        extra["dialer"] = dialer
        stats.add("outbound", dialer.live_stats)
    ports["sip"] = ivr_service
    ports["http"] = _http(gateway, args, reactor, top, extra)
    ports.update(_ussd_and_upstream(gateway, args, reactor, top, smpp))
    ports.update(_smtp(gateway, args, reactor, top, smpp))
    return ports


def _http(gateway, args, reactor, top, extra):
    from gateway.http import make_site

    site = make_site(gateway, extra, reactor)
    site.displayTracebacks = False
    listener = ListeningService(lambda: gateway.listen_tcp(args.http_port, site, args.host))
    listener.setServiceParent(top)
    return listener


# --- USSD, upstream SMSC client, SMTP (gateway/ussd.py, gateway/upstream.py, gateway/email.py) ------------

def _ussd_and_upstream(gateway, args, reactor, top, smpp) -> dict[str, Any]:
    """USSD menus on the SMPP server; with ``--upstream`` the ESME client to the operator SMSC."""
    from gateway.upstream import upstream_service
    from gateway.ussd import install_ussd

    install_ussd(gateway, smpp)
    if gateway.worker not in (None, 0):  # one ESME session to the operator per group: worker 0 holds it
        return {}
    try:
        client = upstream_service(gateway, args)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if client is not None:
        client.setServiceParent(top)
        gateway.upstream = client
    return {}


def _smtp(gateway, args, reactor, top, smpp) -> dict[str, Any]:
    """SMTP in (``smtp_in``), the outbox email sender and, with ``--smtp-sink``, the sink."""
    from gateway.email import email_services

    return email_services(gateway, args, top)
