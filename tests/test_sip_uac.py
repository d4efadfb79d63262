"""ivr.sip.uac.UacEndpoint against a hand-written callee, one datagram at a time, on a fake clock."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.message import Request, Response, decode_header_text, make_response, parse
from ivr.sip.transaction import TimerValues
from ivr.sip.uac import (
    CALLING,
    CONFIRMED,
    ENDED,
    PROCEEDING,
    Answered,
    DtmfReceived,
    Failed,
    HungUp,
    Ringing,
    TimedOut,
    TooManyCalls,
    Trying,
    UacEndpoint,
)

CALLEE = ("127.0.0.1", 5080)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Callee:
    """The far phone: answers what the endpoint sent, with its own tag and Contact."""

    def __init__(self, ep: UacEndpoint) -> None:
        self.ep, self.tag, self.invite, self.cseq = ep, "callee-tag-1", None, 0

    def sent(self) -> list[Request | Response]:
        out = []
        for data, addr in self.ep.datagrams_to_send():
            assert addr == CALLEE
            out.append(parse(data))
        return out

    def take_invite(self) -> Request:
        (invite,) = self.sent()
        assert invite.method == "INVITE"
        self.invite = invite
        return invite

    def respond(self, status: int, request: Request | None = None, headers=()) -> list:
        request = request or self.invite
        contact = [("Contact", "<sip:13800000001@127.0.0.1:5080>")] if status < 300 else []
        response = make_response(request, status, to_tag=self.tag, headers=[*contact, *headers])
        return self.ep.receive_datagram(response.to_bytes(), CALLEE)

    def request(self, method: str, body: bytes = b"", ctype: str = "", cseq: int | None = None) -> list:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        lines = [f"{method} sip:gateway@127.0.0.1:5070 SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-callee-{method}-{cseq}",
                 f"From: {self.invite.get('to')};tag={self.tag}", f"To: {self.invite.get('from')}",
                 f"Call-ID: {self.invite.call_id}", f"CSeq: {cseq} {method}", "Max-Forwards: 70"]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        return self.ep.receive_datagram(data, CALLEE)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def ep(clock):
    return UacEndpoint(clock, local_host="127.0.0.1", local_port=5070, ring_timeout=20.0)


def dial(ep: UacEndpoint, **kw) -> tuple[str, Callee]:
    call = ep.place_call(CALLEE, "13800000001", "10086", {"X-Offer-Code": "LL30"}, **kw)
    callee = Callee(ep)
    invite = callee.take_invite()
    assert invite.call_id == call.call_id and invite.uri == "sip:13800000001@127.0.0.1:5080"
    assert invite.get("x-offer-code") == "LL30" and invite.from_.tag and not invite.to.tag
    return call.call_id, callee


def answer(ep: UacEndpoint) -> tuple[str, Callee]:
    call_id, callee = dial(ep)
    assert callee.respond(100) == [Trying(call_id)]
    assert callee.respond(180) == [Ringing(call_id, 180)]
    events = callee.respond(200, headers=[("X-IVR-State", "greeting")])
    assert events == [Answered(call_id, (("X-IVR-State", "greeting"),))]
    (ack,) = callee.sent()
    assert ack.method == "ACK" and ack.uri == "sip:13800000001@127.0.0.1:5080"
    assert ack.to.tag == callee.tag and ack.cseq == (1, "ACK")
    assert ack.top_via.branch != callee.invite.top_via.branch  # a 2xx ACK is its own transaction
    assert ep.call(call_id).state == CONFIRMED
    return call_id, callee


def test_answered_call_prompt_dtmf_and_remote_bye(ep):
    call_id, callee = answer(ep)
    assert ep.send_prompt(call_id, "Press 1 to order\nor 2", "offer", {"X-Offer-Code": "LL30"}) == []
    (info,) = callee.sent()
    assert info.method == "INFO" and info.to.tag == callee.tag and info.cseq == (2, "INFO")
    assert decode_header_text(info.get("x-ivr-prompt")) == "Press 1 to order\nor 2"
    assert info.get("x-ivr-state") == "offer" and info.get("x-offer-code") == "LL30"
    assert callee.respond(200, info) == []
    assert callee.request("INFO", b"Signal=1\r\nDuration=160\r\n", "application/dtmf-relay") == [
        DtmfReceived(call_id, "1", 160)]
    (ok,) = callee.sent()
    assert ok.status == 200 and ok.cseq == (1, "INFO")
    assert callee.request("INFO", b"9", "application/dtmf") == [DtmfReceived(call_id, "9", None)]
    callee.sent()
    assert callee.request("BYE") == [HungUp(call_id, by_remote=True)]
    (bye_ok,) = callee.sent()
    assert bye_ok.status == 200
    assert callee.request("BYE", cseq=3) == []  # retransmission: same bytes, no second event
    (again,) = callee.sent()
    assert again.to_bytes() == bye_ok.to_bytes()


def test_our_hangup_sends_bye(ep):
    call_id, callee = answer(ep)
    assert ep.hangup(call_id) == [HungUp(call_id, by_remote=False)]
    (bye,) = callee.sent()
    assert bye.method == "BYE" and bye.cseq == (2, "BYE") and bye.to.tag == callee.tag
    assert callee.respond(200, bye) == []
    assert ep.hangup(call_id) == [] and ep.send_prompt(call_id, "late") == []
    assert callee.sent() == []


@pytest.mark.parametrize("status", [486, 480, 408, 503, 603])
def test_final_failure_is_acked_in_the_invite_transaction(ep, status):
    call_id, callee = dial(ep)
    callee.respond(180)
    events = callee.respond(status)
    assert [type(e) for e in events] == [Failed] and events[0].status == status
    (ack,) = callee.sent()
    assert ack.method == "ACK" and ack.top_via.branch == callee.invite.top_via.branch
    assert ack.to.tag == callee.tag and ack.uri == callee.invite.uri
    assert callee.respond(status) == []  # retransmitted final: re-ACKed, no event
    assert [m.method for m in callee.sent()] == ["ACK"]
    assert ep.call(call_id).state == ENDED


def test_ring_timeout_cancels_then_487(ep, clock):
    call_id, callee = dial(ep)
    callee.respond(180)
    clock.t += 20.0
    assert ep.tick() == [TimedOut(call_id, "ring")]
    (cancel,) = callee.sent()
    assert cancel.method == "CANCEL" and cancel.top_via.branch == callee.invite.top_via.branch
    assert cancel.cseq == (1, "CANCEL") and not cancel.to.tag
    assert callee.respond(200, cancel) == []
    assert callee.respond(487) == []  # the timeout was the call's end
    assert [m.method for m in callee.sent()] == ["ACK"]


def test_app_cancel_ends_with_487_failed(ep):
    call_id, callee = dial(ep)
    callee.respond(183)
    assert ep.cancel(call_id) == []
    (cancel,) = callee.sent()
    callee.respond(200, cancel)
    assert callee.respond(487) == [Failed(call_id, 487, "Request Terminated")]


def test_cancel_held_until_a_provisional(ep):
    call_id, callee = dial(ep)
    ep.cancel(call_id)
    assert callee.sent() == []  # RFC 3261 9.1: no CANCEL before a provisional response
    callee.respond(100)
    assert [m.method for m in callee.sent()] == ["CANCEL"]


def test_200_crossing_cancel_is_acked_and_byed(ep, clock):
    call_id, callee = dial(ep)
    callee.respond(180)
    clock.t += 20.0
    assert ep.tick() == [TimedOut(call_id, "ring")]
    callee.sent()
    assert callee.respond(200) == []
    assert [m.method for m in callee.sent()] == ["ACK", "BYE"]


def test_invite_retransmitted_on_timer_a_then_timer_b(ep, clock):
    call_id, callee = dial(ep, ring_timeout=60.0)
    resends = []
    start = clock.t
    while clock.t - start < 40:
        clock.t = ep.next_deadline()
        events = ep.tick()
        for msg in callee.sent():
            assert msg.method == "INVITE" and msg.to_bytes() == callee.invite.to_bytes()
            resends.append(clock.t - start)
        if events:
            break
    assert resends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert events == [TimedOut(call_id, "no_response")] and clock.t - start == 32.0


def test_provisional_stops_retransmission(ep, clock):
    call_id, callee = dial(ep)
    callee.respond(100)
    assert ep.call(call_id).state == PROCEEDING
    clock.t += 10
    assert ep.tick() == [] and callee.sent() == []


def test_200_retransmission_reacked_with_same_bytes(ep):
    call_id, callee = answer(ep)
    first = ep.call(call_id).ack
    assert callee.respond(200) == []
    (ack,) = callee.sent()
    assert ack.to_bytes() == first


def test_info_without_answer_times_out_the_call(ep, clock):
    call_id, callee = answer(ep)
    ep.send_prompt(call_id, "hello")
    callee.sent()
    events = []
    while not events:
        clock.t = ep.next_deadline()
        events = ep.tick()
    assert events == [TimedOut(call_id, "dialog")] and clock.t == pytest.approx(1032.0)
    assert "BYE" in [m.method for m in callee.sent()]


def test_info_481_means_the_callee_is_gone(ep):
    call_id, callee = answer(ep)
    ep.send_prompt(call_id, "hello")
    (info,) = callee.sent()
    assert callee.respond(481, info) == [HungUp(call_id, by_remote=True)]


def test_lingering_call_forgotten_after_timer_d(ep, clock):
    call_id, callee = dial(ep)
    callee.respond(486)
    clock.t += 31
    ep.tick()
    assert ep.call(call_id) is not None
    clock.t += 1
    ep.tick()
    assert ep.call(call_id) is None and ep.next_deadline() is None


def test_in_dialog_odd_requests(ep):
    call_id, callee = answer(ep)
    callee.request("INFO", b"<xml/>", "application/xml")
    callee.request("INVITE")
    callee.request("OPTIONS")
    callee.request("MESSAGE")
    callee.request("INFO", cseq=2)  # out of order
    assert [m.status for m in callee.sent()] == [415, 488, 200, 405, 500]
    bogus = callee.invite.to_bytes().replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"7 BYE")
    ep.receive_datagram(bogus, CALLEE)  # our own tags backwards: not a dialog we know
    assert [m.status for m in callee.sent()] == [481]
    assert ep.receive_datagram(b"\x00garbage", CALLEE) == [] and callee.sent() == []


def test_many_calls_multiplexed_by_call_id(ep):
    first, callee1 = dial(ep)
    second, callee2 = dial(ep)
    assert first != second
    assert callee2.respond(486) == [Failed(second, 486, "Busy Here")]
    assert callee1.respond(180) == [Ringing(first, 180)]
    assert ep.call(first).state == PROCEEDING and ep.live_calls == 1


def test_max_calls(clock):
    ep = UacEndpoint(clock, local_host="127.0.0.1", local_port=5070, max_calls=1)
    ep.place_call(CALLEE, "1", "2")
    with pytest.raises(TooManyCalls):
        ep.place_call(CALLEE, "1", "2")
    with pytest.raises(ValueError):
        UacEndpoint(clock, local_host="127.0.0.1", local_port=5070).place_call(CALLEE, "1", "2", {"Via": "x"})


def test_small_t1_scales_the_timers(clock):
    ep = UacEndpoint(clock, local_host="127.0.0.1", local_port=5070, times=TimerValues(t1=0.05))
    call = ep.place_call(CALLEE, "1", "2")
    assert call.state == CALLING
    clock.t += 3.2
    ep.tick()
    assert ep.call(call.call_id).state == ENDED


def test_every_prefix_of_a_response_is_harmless(ep):
    call_id, callee = dial(ep)
    whole = make_response(callee.invite, 180, to_tag=callee.tag).to_bytes()
    for end in range(len(whole)):  # a truncated datagram: dropped or read as far as it goes, never a crash
        for event in ep.receive_datagram(whole[:end], CALLEE):
            assert event == Ringing(call_id, 180)
    assert ep.counters["internal_errors"] == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_junk_never_raises_nor_emits(data):
    ep = UacEndpoint(FakeClock(), local_host="127.0.0.1", local_port=5070)
    ep.place_call(CALLEE, "1", "2")
    ep.datagrams_to_send()
    assert ep.receive_datagram(data, CALLEE) == []
    assert ep.counters["internal_errors"] == 0
