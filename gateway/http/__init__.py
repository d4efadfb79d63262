"""HTTP ops API, Prometheus metrics and the live dashboard of the gateway.

``make_resource(gateway, extra)`` is what the service mounts; ``make_site`` wraps it in a
twisted.web Site whose requests stop storing a body past the largest limit.

``extra`` keys (all optional): ``stats`` (``Callable[[], dict]``, see gateway/http/dashboard.py),
``scheduler`` (gateway.scheduler.CampaignScheduler), ``pipeline`` (gateway.pipeline.MOPipeline,
so HTTP MO share the group commit), ``metrics`` (gateway.metrics.GatewayMetrics; default
``gateway.metrics``, else a new one), ``fits`` (``(text, parts) -> bool``; default the SMPP encoder's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.web import server
from twisted.web.resource import IResource

from gateway.http.routes import FIXTURE_BODY

__all__ = ["BoundedRequest", "make_resource", "make_site"]


def make_resource(gateway: Any, extra: Mapping[str, Any] | None = None) -> IResource:
    from gateway.http.api import OpsApi

    return OpsApi(gateway, extra).app.resource()


class BoundedRequest(server.Request):
    """Keeps at most FIXTURE_BODY bytes of a body (chunked bodies have no Content-Length to refuse early);
    the API answers 413 when ``body_too_large`` is set."""

    body_too_large = False
    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > FIXTURE_BODY:
            self.body_too_large = True
            return
        super().handleContentChunk(data)


def make_site(gateway: Any, extra: Mapping[str, Any] | None = None, reactor: Any = None) -> server.Site:
    site = server.Site(make_resource(gateway, extra), requestFactory=BoundedRequest,
                       reactor=reactor or gateway.reactor)
    site.displayTracebacks = False
    return site
