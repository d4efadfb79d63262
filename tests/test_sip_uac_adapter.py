"""ivr.outbound_sip on task.Clock with a fake UDP transport: write order, timers, handler isolation."""

from __future__ import annotations

from twisted.internet import task

from ivr.outbound_sip import OutboundSipProtocol
from ivr.sip.message import make_response, parse
from ivr.sip.uac import Answered, Failed, HungUp, Ringing, TimedOut, Trying

CALLEE = ("127.0.0.1", 5080)


class Host:
    port = 5070


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def write(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> Host:
        return Host()


def started(clock: task.Clock, **options) -> tuple[OutboundSipProtocol, FakeTransport]:
    protocol = OutboundSipProtocol(clock, "127.0.0.1", **options)
    transport = FakeTransport()
    protocol.transport = transport
    protocol.startProtocol()
    return protocol, transport


def methods(transport: FakeTransport) -> list[str]:
    out = [parse(data) for data, _ in transport.sent]
    transport.sent.clear()
    return [getattr(m, "method", None) or str(m.status) for m in out]


def test_answer_prompt_written_after_the_ack():
    clock = task.Clock()
    protocol, transport = started(clock)
    events = []
    handles = {}

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, Answered):
            handles["call"].send_prompt("按1订购", "offer")

    handles["call"] = protocol.place_call("127.0.0.1", 5080, "13800000001", "10086", {"X-Project": "P1"}, on_event)
    invite = parse(transport.sent[0][0])
    assert methods(transport) == ["INVITE"] and handles["call"].state == "calling"
    for status in (100, 180, 200):
        response = make_response(invite, status, to_tag="t1", headers=[("Contact", "<sip:x@127.0.0.1:5080>")])
        protocol.datagramReceived(response.to_bytes(), CALLEE)
    assert methods(transport) == ["ACK", "INFO"]  # the handler's prompt never overtakes the ACK
    call_id = handles["call"].call_id
    assert events == [Trying(call_id), Ringing(call_id, 180), Answered(call_id, ())]
    handles["call"].hangup()
    assert methods(transport) == ["BYE"] and events[-1] == HungUp(call_id, by_remote=False)
    handles["call"].hangup()
    assert transport.sent == []


def test_timers_run_on_the_reactor_clock_and_handler_errors_are_contained():
    clock = task.Clock()
    protocol, transport = started(clock, ring_timeout=5.0)
    seen = []

    def broken(event) -> None:
        seen.append(event)
        raise RuntimeError("handler bug")

    first = protocol.place_call("127.0.0.1", 5080, "1", "10086", None, broken)
    second = protocol.place_call("127.0.0.1", 5080, "2", "10086", None, seen.append)
    invites = [parse(data) for data, _ in transport.sent]
    transport.sent.clear()
    clock.advance(0.5)
    assert methods(transport) == ["INVITE", "INVITE"]  # Timer A
    protocol.datagramReceived(make_response(invites[0], 486, to_tag="b").to_bytes(), CALLEE)
    assert methods(transport) == ["ACK"] and seen == [Failed(first.call_id, 486, "Busy Here")]
    protocol.datagramReceived(make_response(invites[1], 180, to_tag="r").to_bytes(), CALLEE)
    clock.advance(4.5)
    assert seen[-1] == TimedOut(second.call_id, "ring") and methods(transport) == ["CANCEL"]
    clock.advance(64)
    assert protocol.endpoint.live_calls == 0 and first.state == "ended"
