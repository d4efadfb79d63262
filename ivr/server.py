"""The SIP-lite IVR on a Twisted UDP port: a thin adapter around :class:`ivr.flows.IvrApp`.

Every datagram goes to the application; the datagrams it returns go on the wire; one
``callLater`` is kept for the application's next deadline (SIP timers, the agent queue, menu
timers) and rescheduled after every call into it.

``build_ivr(gateway, args, reactor, top, deliverer_poke)`` is what ``serve`` mounts: it
registers the survey prompt with the command router and returns a service (child of ``top``)
whose ``port_number()`` is the UDP port for the ready line (key ``"sip"``).
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.protocol import DatagramProtocol

from core.templates import render
from ivr.effects import GatewayEffects
from ivr.flows import IvrApp
from ivr.sections import IvrConfig
from ivr.sip import SipCore
from notifier import surveys

__all__ = ["SipProtocol", "IvrService", "build_ivr", "survey_texts"]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535
SOCKET_BUFFER = 4 * 1024 * 1024


class SipProtocol(DatagramProtocol):
    """Feeds datagrams to the IVR application built for the bound address."""

    def __init__(self, reactor: Any, make_app: Callable[[SipCore], IvrApp], host: str, **core_options: Any) -> None:
        self.reactor, self._make_app, self._host = reactor, make_app, host
        self._core_options = core_options  # extra SipCore arguments (the callee simulator's info_events)
        self.app: IvrApp | None = None
        self._timer = None

    def startProtocol(self) -> None:
        self._grow_buffers()
        port = self.transport.getHost().port
        self.app = self._make_app(SipCore(self.reactor.seconds, local_host=self._host, local_port=port,
                                          **self._core_options))

    def _grow_buffers(self) -> None:
        """Room for bursts: a short reactor stall should queue datagrams, not drop them."""
        handle = getattr(self.transport, "getHandle", None)
        if handle is None:
            return
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                handle().setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError as exc:  # the kernel keeps its own cap (net.core.rmem_max); not fatal
                log.info("SIP socket buffer not raised: %s", exc)

    def stopProtocol(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) > MAX_DATAGRAM:
            return
        self._send(self.app.receive(data, addr))

    def _tick(self) -> None:
        self._timer = None
        self._send(self.app.tick())

    def _send(self, datagrams: list) -> None:
        for out in datagrams:
            try:
                self.transport.write(out.data, out.addr)
            except OSError as exc:  # a full socket buffer or an unreachable peer: SIP timers resend
                log.warning("SIP datagram to %s not sent: %s", out.addr, exc)
        self._reschedule()

    def _reschedule(self) -> None:
        when = self.app.next_deadline()
        timer = self._timer
        if when is None:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        delay = max(0.0, when - self.reactor.seconds())
        if timer is not None and timer.active():
            if abs(timer.getTime() - when) > 1e-6:
                timer.reset(delay)
            return
        self._timer = self.reactor.callLater(delay, self._tick)


class IvrService(service.Service):
    """Listens on UDP once started; ``port_number()`` for the ready line."""

    def __init__(self, reactor: Any, protocol: SipProtocol, host: str, port: int, effects: GatewayEffects) -> None:
        self.reactor, self.protocol, self.host, self.port, self.effects = reactor, protocol, host, port, effects
        self.listening = None

    def startService(self) -> None:
        super().startService()
        self.listening = self.effects.gw.listen_udp(self.port, self.protocol, self.host)

    def stopService(self):
        super().stopService()
        self.effects.flush()  # the calls' records and SMS still waiting for their batch
        if self.listening is not None:
            return self.listening.stopListening()
        return None

    def port_number(self) -> int:
        return self.listening.getHost().port

    def live_stats(self) -> dict[str, Any]:
        """``{"queue": {...}}`` for the dashboard's stats provider (see gateway/http/dashboard.py)."""
        app = self.protocol.app
        return {"queue": app.status()} if app is not None else {}


def ivr_config(gateway: Any) -> IvrConfig | None:
    snapshot = gateway.snapshot
    return snapshot.extras.get("ivr") if snapshot is not None else None


def survey_texts(config: IvrConfig | None) -> surveys.SurveyTexts | None:
    """The survey prompt's reply texts from the IVR fixtures."""
    if config is None:
        return None
    setup = config.setup
    return surveys.SurveyTexts(setup.sms_source, lambda score: render(setup.survey_thanks, score=score),
                               lambda: render(setup.survey_invalid))


def build_ivr(gateway: Any, args: Any, reactor: Any, top: service.MultiService,
              deliverer_poke: Callable[[], None], config: Callable[[], IvrConfig | None] | None = None) -> IvrService:
    """Mount the IVR: UDP ``args.host:args.sip_port``; survey replies through ``gateway.router``."""
    config = config or (lambda: ivr_config(gateway))
    effects = GatewayEffects(gateway, config, deliverer_poke)
    surveys.register(gateway.router, lambda: survey_texts(config()))

    def make_app(core: SipCore) -> IvrApp:
        return IvrApp(core, reactor.seconds, config=config, settings=gateway.live_settings, effects=effects,
                      rng=random.Random(int(gateway.settings["ivr.seed"])))

    protocol = SipProtocol(reactor, make_app, args.host)
    ivr = IvrService(reactor, protocol, args.host, args.sip_port, effects)
    ivr.setServiceParent(top)
    return ivr
