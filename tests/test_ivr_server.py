"""ivr.server.SipProtocol: the UDP adapter on a task.Clock with a fake transport (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.flows import IvrApp
from ivr.server import SipProtocol
from ivr.sip import parse
from tests.test_ivr_support import CALLER_ADDR, Caller, IvrWorld


@dataclass
class Host:
    port: int


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def write(self, data: bytes, addr) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> Host:  # noqa: N802 - Twisted's interface
        return Host(5060)


def test_adapter_answers_and_runs_the_timers_on_the_reactor(tmp_path):
    world = IvrWorld(tmp_path)

    def make_app(core) -> IvrApp:
        return IvrApp(core, world.clock.seconds, config=lambda: world.config, settings=world.gw.live_settings,
                      effects=world.fx)

    proto = SipProtocol(world.clock, make_app, "127.0.0.1")
    proto.transport = FakeTransport()
    proto.startProtocol()
    caller = Caller(world, "13800000001")
    proto.datagramReceived(caller.request("INVITE"), CALLER_ADDR)
    statuses = [parse(d).status for d, _ in proto.transport.sent]
    assert statuses == [100, 200]
    assert len(world.clock.getDelayedCalls()) >= 1  # one timer for the app, the flush of the effects aside
    world.clock.advance(0.5)  # no ACK yet: the 200 goes again (Timer G-like resend of the 2xx)
    assert [parse(d).status for d, _ in proto.transport.sent][-1] == 200
    assert all(addr == CALLER_ADDR for _, addr in proto.transport.sent)
    proto.datagramReceived(b"\x00junk without a Via", CALLER_ADDR)  # dropped, nothing breaks
    proto.stopProtocol()
