"""Everything ``serve`` runs beside the SMPP server: HTTP ops API, SIP-lite IVR, SMTP, scheduler."""

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


def build_surfaces(gateway, args, reactor, top: service.MultiService, smpp) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    pass
    return ports


def _http(gateway, args, reactor, top, smpp):
    from twisted.web import server

    from gateway.http import make_resource

    resource = make_resource(gateway, {"smpp": smpp})
    site = server.Site(resource)
    site.displayTracebacks = False
    listener = ListeningService(lambda: reactor.listenTCP(args.http_port, site, interface=args.host))
    listener.setServiceParent(top)
    return listener
