"""ivr.sip.core.SipCore driven like sipp's uac would drive it, on a fake clock."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.core import CallAcked, CallEnded, Dtmf, IncomingCall, SendDatagram, SipCore
from ivr.sip.message import Request, Response, decode_header_text, parse

CALLER = ("127.0.0.1", 5061)
SDP = b"v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Uac:
    """A caller speaking like sipp: one Call-ID, From tag, fresh branch per transaction."""

    def __init__(self, call_id: str = "1-4242@127.0.0.1", user: str = "10086") -> None:
        self.call_id, self.user, self.tag, self.to_tag = call_id, user, "4242SIPpTag001", ""
        self.cseq, self.branches = 0, 0

    def request(self, method: str, *, cseq: int | None = None, branch: str | None = None,
                body: bytes = b"", ctype: str = "", extra: str = "", to_tag: str | None = None) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        if branch is None:
            self.branches += 1
            branch = f"z9hG4bK-{self.call_id}-{self.branches}"
        tag = self.to_tag if to_tag is None else to_tag
        lines = [
            f"{method} sip:{self.user}@127.0.0.1:5060 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}",
            f"From: sipp <sip:13800000001@127.0.0.1:5061>;tag={self.tag}",
            f"To: <sip:{self.user}@127.0.0.1:5060>" + (f";tag={tag}" if tag else ""),
            f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
            "Contact: sip:sipp@127.0.0.1:5061", "Max-Forwards: 70",
        ]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        if extra:
            lines.append(extra)
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def invite(self) -> bytes:
        return self.request("INVITE", body=SDP, ctype="application/sdp")

    def ack(self, cseq: int = 1, branch: str | None = None) -> bytes:
        return self.request("ACK", cseq=cseq, branch=branch)

    def info(self, body: bytes = b"Signal=5\r\nDuration=160\r\n", ctype: str = "application/dtmf-relay") -> bytes:
        return self.request("INFO", body=body, ctype=ctype)


def sent(actions) -> list:
    return [parse(a.data) for a in actions if isinstance(a, SendDatagram)]


def events(actions) -> list:
    return [a for a in actions if not isinstance(a, SendDatagram)]


def statuses(actions) -> list[int]:
    return [m.status for m in sent(actions) if isinstance(m, Response)]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def core(clock):
    return SipCore(clock, local_host="127.0.0.1", local_port=5060)


def run_until(core, clock, t: float) -> list:
    """Advance the fake clock to ``t`` firing every timer on the way, like callLater would."""
    actions = []
    while (deadline := core.next_deadline()) is not None and deadline <= t:
        clock.t = max(clock.t, deadline)
        actions += core.tick()
    clock.t = t
    return actions


def start_call(core, uac: Uac) -> list:
    actions = core.receive(uac.invite(), CALLER)
    assert statuses(actions) == [100]
    assert events(actions) == [IncomingCall(uac.call_id, uac.user, "13800000001", CALLER)]
    return actions


def answered_call(core, clock, uac: Uac) -> Response:
    start_call(core, uac)
    ok = sent(core.answer(uac.call_id, {"X-IVR-Prompt": "Welcome", "X-IVR-State": "menu"}))[0]
    uac.to_tag = ok.to.tag
    assert events(core.receive(uac.ack(), CALLER)) == [CallAcked(uac.call_id)]
    return ok


def test_full_call_invite_ring_answer_ack_dtmf_bye(core, clock):
    uac = Uac()
    start_call(core, uac)
    ringing = sent(core.ring(uac.call_id))[0]
    assert ringing.status == 180 and ringing.to.tag and ringing.get("Contact") == "<sip:ivr@127.0.0.1:5060>"
    ok = sent(core.answer(uac.call_id, {"X-IVR-Prompt": "欢迎\n1 余额", "X-IVR-State": "menu"}))[0]
    assert ok.status == 200 and ok.to.tag == ringing.to.tag
    assert decode_header_text(ok.get("X-IVR-Prompt")) == "欢迎\n1 余额" and ok.get("X-IVR-State") == "menu"
    assert ok.content_type == "application/sdp" and b"a=inactive" in ok.body and "INFO" in ok.get("Allow")
    uac.to_tag = ok.to.tag
    assert events(core.receive(uac.ack(), CALLER)) == [CallAcked(uac.call_id)]

    (key,) = events(core.receive(uac.info(), CALLER))
    assert isinstance(key, Dtmf) and (key.call_id, key.digit, key.duration_ms) == (uac.call_id, "5", 160)
    answer = sent(core.reply(key, 200, {"X-IVR-Prompt": "Balance 12.30", "X-IVR-State": "menu"}))[0]
    assert answer.status == 200 and answer.cseq == (2, "INFO") and answer.get("X-IVR-Prompt") == "Balance 12.30"

    bye = core.receive(uac.request("BYE"), CALLER)
    assert statuses(bye) == [200] and events(bye) == [CallEnded(uac.call_id, "caller")]
    assert core.active_calls == 0
    run_until(core, clock, clock.t + 40)
    assert core.next_deadline() is None  # every transaction and timer is gone


def test_invite_retransmissions_get_the_same_response_and_tag(core, clock):
    uac = Uac()
    invite = uac.invite()
    first = core.receive(invite, CALLER)
    assert statuses(first) == [100]
    assert core.receive(invite, CALLER)[0].data == first[0].data
    ringing = core.ring(uac.call_id)
    assert core.receive(invite, CALLER) == ringing
    ok = core.answer(uac.call_id)
    again = core.receive(invite, CALLER)
    assert again == ok and events(again) == []
    assert core.counters["retransmissions"] == 3 and core.counters["calls"] == 1


def test_200_resent_with_doubling_interval_until_ack(core, clock):
    uac = Uac()
    start_call(core, uac)
    ok = core.answer(uac.call_id)[0].data
    times = []
    for _ in range(6):
        clock.t = core.next_deadline()
        resent = core.tick()
        assert [a.data for a in resent] == [ok]
        times.append(clock.t - 1000.0)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]  # T1, 2T1, 4T1, then capped at T2
    uac.to_tag = parse(ok).to.tag
    assert events(core.receive(uac.ack(), CALLER)) == [CallAcked(uac.call_id)]
    assert run_until(core, clock, clock.t + 60) == []
    assert core.receive(uac.ack(), CALLER) == []  # a late ACK copy is ignored


def test_no_ack_ends_the_call_with_bye_after_64_t1(core, clock):
    uac = Uac()
    start_call(core, uac)
    core.answer(uac.call_id)
    actions = run_until(core, clock, 1000.0 + 32.0)
    assert CallEnded(uac.call_id, "timeout") in events(actions)
    byes = [m for m in sent(actions) if isinstance(m, Request)]
    assert [m.method for m in byes] == ["BYE"] and byes[0].uri == "sip:sipp@127.0.0.1:5061"
    assert core.active_calls == 0


def test_cancel_gets_200_then_487_and_timer_g_until_ack(core, clock):
    uac = Uac()
    start_call(core, uac)
    core.ring(uac.call_id)
    actions = core.receive(uac.request("CANCEL", cseq=1, branch="z9hG4bK-1-4242@127.0.0.1-1"), CALLER)
    responses = sent(actions)
    assert [(r.status, r.cseq[1]) for r in responses] == [(200, "CANCEL"), (487, "INVITE")]
    assert responses[0].to.tag == responses[1].to.tag
    assert events(actions) == [CallEnded(uac.call_id, "cancel")]
    clock.t += 0.5
    assert statuses(core.tick()) == [487]  # Timer G
    ack = core.receive(uac.ack(branch="z9hG4bK-1-4242@127.0.0.1-1"), CALLER)
    assert ack == []
    assert statuses(run_until(core, clock, clock.t + 40)) == []
    assert core.next_deadline() is None


def test_cancel_after_answer_and_unknown_cancel(core, clock):
    uac = Uac()
    start_call(core, uac)
    core.answer(uac.call_id)
    actions = core.receive(uac.request("CANCEL", cseq=1, branch="z9hG4bK-1-4242@127.0.0.1-1"), CALLER)
    assert statuses(actions) == [200] and events(actions) == []
    assert statuses(core.receive(Uac("other").request("CANCEL", cseq=1), CALLER)) == [481]


def test_reject_404_timer_g_then_h(core, clock):
    uac = Uac(user="99999")
    start_call(core, uac)
    actions = core.reject(uac.call_id, 404)
    assert statuses(actions) == [404] and events(actions) == [CallEnded(uac.call_id, "rejected")]
    resent = run_until(core, clock, 1000.0 + 40)
    assert statuses(resent) == [404] * 10  # 0.5 1.5 3.5 7.5 11.5 15.5 19.5 23.5 27.5 31.5, then Timer H
    assert core.next_deadline() is None
    with pytest.raises(ValueError):
        core.reject("x", 200)


def test_non_2xx_ack_with_a_new_branch_still_stops_timer_g(core, clock):
    uac = Uac(user="99999")
    start_call(core, uac)
    uac.to_tag = sent(core.reject(uac.call_id, 404))[0].to.tag
    core.receive(uac.ack(branch="z9hG4bK-another"), CALLER)
    assert statuses(run_until(core, clock, clock.t + 40)) == []


def test_bye_retransmission_same_200_within_timer_j_then_481(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    bye = uac.request("BYE")
    first = core.receive(bye, CALLER)
    clock.t += 31
    assert core.receive(bye, CALLER)[0].data == first[0].data
    run_until(core, clock, clock.t + 2)
    assert statuses(core.receive(bye, CALLER)) == [481]


def test_info_retransmission_absorbed_while_pending_then_same_200(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    info = uac.info()
    (key,) = events(core.receive(info, CALLER))
    assert core.receive(info, CALLER) == []
    answer = core.reply(key, 200, {"X-IVR-Prompt": "p"})
    assert core.receive(info, CALLER) == answer
    assert core.reply(key, 200) == []  # answered once only


@pytest.mark.parametrize("ctype,body,digit", [
    ("application/dtmf-relay", b"Signal=#\r\nDuration=100\r\n", "#"),
    ("application/dtmf-relay", b"Signal= 11\r\n", "#"),
    ("application/dtmf", b"7", "7"),
    ("application/dtmf", b"Signal=0\r\n", "0"),
    ("Application/DTMF-Relay; charset=x", b"signal=*", "*"),
])
def test_dtmf_body_forms(core, clock, ctype, body, digit):
    uac = Uac()
    answered_call(core, clock, uac)
    (key,) = events(core.receive(uac.info(body, ctype), CALLER))
    assert key.digit == digit


def test_info_edge_cases(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    assert statuses(core.receive(uac.info(b"hello", "text/plain"), CALLER)) == [415]
    assert statuses(core.receive(uac.info(b"", ""), CALLER)) == [200]
    assert statuses(core.receive(uac.request("INFO", cseq=1, body=b"1", ctype="application/dtmf"), CALLER)) == [500]
    assert statuses(core.receive(uac.info(b"Signal=X", "application/dtmf-relay"), CALLER)) == [415]


def test_unknown_dialogs_get_481(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    assert statuses(core.receive(uac.request("BYE", to_tag="wrong"), CALLER)) == [481]
    stranger = Uac("nobody")
    stranger.to_tag = "x"
    assert statuses(core.receive(stranger.request("BYE"), CALLER)) == [481]
    assert statuses(core.receive(stranger.info(), CALLER)) == [481]
    assert core.active_calls == 1


def test_missing_call_id_gets_400_with_warning(core):
    data = Uac().invite().replace(b"Call-ID: 1-4242@127.0.0.1\r\n", b"")
    (resp,) = sent(core.receive(data, CALLER))
    assert resp.status == 400 and "Missing Call-ID" in resp.get("Warning")
    assert resp.get("Warning").startswith("399 127.0.0.1:5060 ") and resp.to.tag
    data = Uac().invite().replace(b"CSeq: 1 INVITE", b"CSeq: one")
    assert statuses(core.receive(data, CALLER)) == [400]


def test_unsupported_method_405_and_options_200(core):
    uac = Uac()
    (resp,) = sent(core.receive(uac.request("REGISTER"), CALLER))
    assert resp.status == 405 and "INVITE" in resp.get("Allow")
    (resp,) = sent(core.receive(uac.request("OPTIONS"), CALLER))
    assert resp.status == 200 and "INFO" in resp.get("Allow")
    assert statuses(core.receive(uac.request("OPTIONS", extra="Require: 100rel"), CALLER)) == [420]


def test_junk_dropped_and_other_calls_undisturbed(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    for junk in (b"\x00\x01garbage", b"INVITE nonsense", b"SIP/2.0 200 OK\r\n\r\n", b"\r\n\r\n",
                 b"OPTIONS sip:x SIP/2.0\r\nCall-ID: z\r\n\r\n"):
        assert core.receive(junk, CALLER) == []
    assert core.counters["junk_dropped"] == 3 and core.counters["internal_errors"] == 0
    (key,) = events(core.receive(uac.info(), CALLER))
    assert statuses(core.reply(key)) == [200]


def test_max_calls_gives_503(clock):
    core = SipCore(clock, local_host="127.0.0.1", local_port=5060, max_calls=2)
    for n in range(2):
        start_call(core, Uac(f"c{n}"))
    assert statuses(core.receive(Uac("c3").invite(), CALLER)) == [503]
    looped = Uac("c0")
    looped.branches = 5
    assert statuses(core.receive(looped.invite(), CALLER)) == [482]  # same Call-ID, new branch


def test_gateway_info_retransmitted_until_answered(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    (info,) = sent(core.send_info(uac.call_id, {"X-IVR-State": "agent", "X-IVR-Prompt": "Agent 7"}))
    assert info.method == "INFO" and info.get("X-IVR-State") == "agent" and info.cseq == (1, "INFO")
    assert info.to.tag == uac.tag and info.from_.tag == uac.to_tag and info.uri == "sip:sipp@127.0.0.1:5061"
    clock.t += 0.5
    assert [m.method for m in sent(core.tick())] == ["INFO"]  # Timer E
    ok = f"SIP/2.0 200 OK\r\nVia: {info.get('Via')}\r\nCall-ID: {uac.call_id}\r\nCSeq: 1 INFO\r\n\r\n"
    assert core.receive(ok.encode(), CALLER) == []
    assert run_until(core, clock, clock.t + 40) == []
    assert core.active_calls == 1


def test_gateway_info_timer_f_ends_call(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    core.send_info(uac.call_id, {"X-IVR-State": "survey"})
    actions = run_until(core, clock, clock.t + 33)
    assert [m.method for m in sent(actions)] == ["INFO"] * 10
    assert events(actions) == [CallEnded(uac.call_id, "timeout")]


def test_gateway_info_481_ends_call(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    (info,) = sent(core.send_info(uac.call_id, {"X-IVR-State": "agent"}))
    resp = f"SIP/2.0 481 No\r\nVia: {info.get('Via')}\r\nCall-ID: {uac.call_id}\r\nCSeq: 1 INFO\r\n\r\n"
    assert events(core.receive(resp.encode(), CALLER)) == [CallEnded(uac.call_id, "lost")]


def test_hangup_sends_bye_and_retransmits_until_200(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    actions = core.hangup(uac.call_id, {"X-IVR-State": "bye", "X-IVR-Prompt": "Goodbye"})
    assert events(actions) == [CallEnded(uac.call_id, "gateway")]
    (bye,) = sent(actions)
    assert bye.method == "BYE" and bye.get("X-IVR-State") == "bye"
    clock.t += 0.5
    assert [m.method for m in sent(core.tick())] == ["BYE"]
    ok = f"SIP/2.0 200 OK\r\nVia: {bye.get('Via')}\r\nCall-ID: {uac.call_id}\r\nCSeq: 1 BYE\r\n\r\n"
    core.receive(ok.encode(), CALLER)
    assert run_until(core, clock, clock.t + 40) == []
    assert core.hangup(uac.call_id) == []


def test_hangup_before_ack_waits_for_the_ack(core, clock):
    uac = Uac(user="1008611")
    start_call(core, uac)
    uac.to_tag = sent(core.answer(uac.call_id, {"X-IVR-Prompt": "Balance follows by SMS"}))[0].to.tag
    actions = core.hangup(uac.call_id)
    assert sent(actions) == [] and events(actions) == [CallEnded(uac.call_id, "gateway")]
    (bye,) = sent(core.receive(uac.ack(), CALLER))
    assert bye.method == "BYE"


def test_hangup_before_answer_is_480_and_app_silence_times_out(core, clock):
    uac = Uac()
    start_call(core, uac)
    assert statuses(core.hangup(uac.call_id)) == [480]
    late = Uac("late")
    start_call(core, late)
    actions = run_until(core, clock, clock.t + 181)
    assert statuses(actions)[0] == 480 and CallEnded("late", "timeout") in events(actions)


def test_bye_during_early_dialog_ends_invite_with_487(core, clock):
    uac = Uac()
    start_call(core, uac)
    uac.to_tag = sent(core.ring(uac.call_id))[0].to.tag
    actions = core.receive(uac.request("BYE"), CALLER)
    assert sorted(statuses(actions)) == [200, 487]
    assert events(actions) == [CallEnded(uac.call_id, "caller")]


def test_reinvite_gets_488_and_call_survives(core, clock):
    uac = Uac()
    answered_call(core, clock, uac)
    assert statuses(core.receive(uac.invite(), CALLER)) == [488]
    assert core.active_calls == 1


def test_application_cannot_set_dialog_headers(core, clock):
    uac = Uac()
    start_call(core, uac)
    with pytest.raises(ValueError):
        core.answer(uac.call_id, {"Call-ID": "x"})
    with pytest.raises(ValueError):
        core.answer(uac.call_id, {"X-Bad\r\nInjected": "x"})


def test_many_concurrent_calls_interleaved(core, clock):
    rng = random.Random(7)
    uacs = [Uac(f"call-{n}") for n in range(200)]
    for uac in uacs:
        start_call(core, uac)
    rng.shuffle(uacs)
    for uac in uacs:
        uac.to_tag = sent(core.answer(uac.call_id))[0].to.tag
        core.receive(uac.ack(), CALLER)
    ended = [events(core.receive(uac.request("BYE"), CALLER)) for uac in uacs]
    assert all(e == [CallEnded(u.call_id, "caller")] for e, u in zip(ended, uacs, strict=True))
    run_until(core, clock, clock.t + 40)
    assert core.active_calls == 0 and core.next_deadline() is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=4), st.sampled_from(["INVITE", "INFO", "BYE", "ACK"]))
def test_mutated_datagrams_never_break_the_core(pos, junk, method):
    clock = FakeClock()
    core = SipCore(clock, local_host="127.0.0.1", local_port=5060)
    good = Uac("good")
    answered_call(core, clock, good)
    bad = Uac("bad")
    bad.to_tag = good.to_tag
    data = bad.invite() if method == "INVITE" else bad.request(method, body=b"Signal=1", ctype="application/dtmf")
    core.receive(data[:pos] + junk + data[pos + 1:], CALLER)
    assert core.counters["internal_errors"] == 0
    (key,) = events(core.receive(good.info(), CALLER))
    assert statuses(core.reply(key)) == [200]
    run_until(core, clock, clock.t + 200)
    assert core.counters["internal_errors"] == 0
