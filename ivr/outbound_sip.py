"""Outbound SIP calls on a Twisted UDP port: a thin adapter around :class:`ivr.sip.uac.UacEndpoint`.

    protocol = listen_outbound(reactor, host="127.0.0.1", port=0, ring_timeout=30.0)
    call = protocol.place_call("127.0.0.1", 5080, "13800000001", "10086",
                               {"X-Offer-Code": "LL30"}, on_event)
    # on_event(event) gets Trying, Ringing, Answered, DtmfReceived, then one of
    # Failed / HungUp / TimedOut (see ivr.sip.uac); the handle then does nothing more.
    call.send_prompt("Press 1 to order", "offer")
    call.hangup()       # BYE, or CANCEL before the answer
    call.cancel()       # CANCEL an unanswered call

The datagrams a call produces are written before its events are handed out, so a handler
that answers an event (a prompt on Answered) never overtakes the ACK. One ``callLater`` is
kept for the endpoint's next deadline. Retrying a failed call is the dialer's business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ivr.server import MAX_DATAGRAM, SipProtocol
from ivr.sip.core import SendDatagram
from ivr.sip.transaction import TimerValues
from ivr.sip.uac import TERMINAL, UacEndpoint, UacEvent

__all__ = ["OutboundCall", "OutboundSipProtocol", "listen_outbound"]

log = logging.getLogger(__name__)

EventHandler = Callable[[UacEvent], None]


class OutboundCall:
    """The handle of one placed call; every method is a no-op once the call has ended."""

    def __init__(self, protocol: OutboundSipProtocol, call_id: str) -> None:
        self._protocol, self.call_id = protocol, call_id

    @property
    def state(self) -> str:
        """calling, proceeding, confirmed or ended (see ivr.sip.uac.UacCall)."""
        call = self._protocol.endpoint.call(self.call_id)
        return call.state if call is not None else "ended"

    def send_prompt(self, text: str, state: str | None = None, headers: dict[str, str] | None = None) -> None:
        self._protocol.run(lambda ep: ep.send_prompt(self.call_id, text, state, headers))

    def hangup(self) -> None:
        self._protocol.run(lambda ep: ep.hangup(self.call_id))

    def cancel(self) -> None:
        self._protocol.run(lambda ep: ep.cancel(self.call_id))


class OutboundSipProtocol(SipProtocol):
    """UDP transport, timer and event dispatch for a ``UacEndpoint`` built on the bound port."""

    def __init__(self, reactor: Any, host: str = "127.0.0.1", *, ring_timeout: float = 30.0,
                 times: TimerValues | None = None, max_calls: int = 50_000) -> None:
        super().__init__(reactor, make_app=None, host=host)
        self._options = {"ring_timeout": ring_timeout, "max_calls": max_calls}
        if times is not None:
            self._options["times"] = times
        self.endpoint: UacEndpoint | None = None
        self._handlers: dict[str, EventHandler] = {}

    def startProtocol(self) -> None:
        self._grow_buffers()
        port = self.transport.getHost().port
        self.endpoint = UacEndpoint(self.reactor.seconds, local_host=self._host, local_port=port,
                                    **self._options)
        self.app = self.endpoint  # the inherited timer keeps to app.next_deadline()

    def port_number(self) -> int:
        return self.transport.getHost().port

    def place_call(self, target_host: str, target_port: int, callee_number: str, caller_number: str,
                   headers: dict[str, str] | None, on_event: EventHandler, *,
                   ring_timeout: float | None = None) -> OutboundCall:
        """INVITE ``sip:callee@target_host:target_port`` (an IP address); events go to ``on_event``.

        Raises ``ivr.sip.uac.TooManyCalls`` when the endpoint is full, ValueError for a header
        the application may not set.
        """
        call = self.endpoint.place_call((target_host, target_port), callee_number, caller_number, headers,
                                        ring_timeout=ring_timeout)
        self._handlers[call.call_id] = on_event
        self._flush([])
        return OutboundCall(self, call.call_id)

    def run(self, action: Callable[[UacEndpoint], list[UacEvent]]) -> None:
        """Call into the endpoint from outside a datagram or timer (a handle's methods)."""
        self._flush(action(self.endpoint))

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) <= MAX_DATAGRAM:
            self._flush(self.endpoint.receive_datagram(data, addr))

    def _tick(self) -> None:
        self._timer = None
        self._flush(self.endpoint.tick())

    def _flush(self, events: list[UacEvent]) -> None:
        self._send([SendDatagram(data, addr) for data, addr in self.endpoint.datagrams_to_send()])
        for event in events:
            handler = self._handlers.get(event.call_id)
            if isinstance(event, TERMINAL):
                self._handlers.pop(event.call_id, None)
            if handler is None:
                continue
            try:
                handler(event)
            except Exception:  # a handler's bug must not stop the other calls' events
                log.exception("outbound call handler failed on %r", event)


def listen_outbound(reactor: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> OutboundSipProtocol:
    """Bind a UDP port (0 = a free one) for outbound calls; ``options`` go to the protocol."""
    protocol = OutboundSipProtocol(reactor, host, **options)
    reactor.listenUDP(port, protocol, interface=host)
    return protocol

