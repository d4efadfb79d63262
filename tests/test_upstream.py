"""The upstream SMSC client: receipt matching (sans-IO), then against every fault class of the SMSC
simulator over loopback: nothing lost, nothing duplicated, counted by message id."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from gateway.smpp.pdu import PDU
from gateway.smsc_sim import BEHAVIOURS, FAULTS, MAGIC, SMSCSimulator
from gateway.upstream import MESSAGE_REF_TAG, ReceiptInfo, ReceiptMatcher, UpstreamClient, receipt_of
from notifier.models import OutboxMessage
from tests.harness import ROOT

DEMO = ROOT / "fixtures" / "demo"
OK = ReceiptInfo("DELIVRD", True)


# --- receipt matching ------------------------------------------------------------------------------------

@pytest.mark.parametrize("response_id, receipt_id", [
    ("1A2B", "1a2b"), ("00001A2B", "1A2B"), ("1A2B", "6699"), ("6699", "1A2B"), ("6699", "0000006699"),
    ("12345", "12345"), ("abc-77", "ABC-77"),
])
def test_receipt_matches_its_response_in_any_format(response_id, receipt_id):
    matcher = ReceiptMatcher()
    matcher.sent(response_id, ("m1", 0))
    assert matcher.receipt(receipt_id, OK) == ("m1", 0)
    assert matcher.receipt(receipt_id, OK) is None  # one receipt per part


def test_receipt_before_its_response_is_kept_until_the_response():
    matcher = ReceiptMatcher()
    assert matcher.receipt("0000000026", OK) is None
    assert matcher.sent("1A", ("m1", 0)) == OK


def test_exact_match_wins_over_the_other_base():
    matcher = ReceiptMatcher()
    matcher.sent("10", ("decimal ten", 0))  # also reads as hex 16
    matcher.sent("16", ("decimal sixteen", 0))
    assert matcher.receipt("16", OK) == ("decimal sixteen", 0)
    assert matcher.receipt("10", OK) == ("decimal ten", 0)


def test_matcher_is_bounded():
    matcher = ReceiptMatcher(max_entries=10, max_early=5)
    for i in range(100):
        matcher.sent(str(i), ("m", i))
        matcher.receipt(f"x{i}", OK)
    assert len(matcher) == 10 and len(matcher._early) == 5


def test_receipt_of_reads_tlvs_or_text():
    text = b"id:0000000042 sub:001 dlvrd:000 submit date:2601010000 done date:2601010000 stat:UNDELIV err:001 text:"
    pdu = PDU.make("deliver_sm", 1, esm_class=4, short_message=text)
    assert receipt_of(pdu) == ("0000000042", ReceiptInfo("UNDELIV", False))
    pdu = PDU.make("deliver_sm", 1, esm_class=4, receipted_message_id="7F", message_state=2)
    assert receipt_of(pdu) == ("7F", ReceiptInfo("DELIVRD", True))


# --- against the simulator ----------------------------------------------------------------------------------

def spin(pred, timeout: float = 20.0) -> None:
    """Run the global reactor until ``pred()`` holds (loopback sockets need a real reactor)."""
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        reactor.iterate(0.002)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    from twisted.internet import reactor

    from gateway.app import Gateway

    gateway = Gateway(reactor, f"sqlite:///{tmp_path_factory.mktemp('up') / 'up.db'}",
                      {"smpp.response": 0.3, "smpp.enquire_link": 5})
    gateway.load_fixtures_dir(str(DEMO))
    return gateway


def _enqueue(gateway, dest: str, count: int) -> list[str]:
    long_text = "流量包优惠提醒:" + "您本月的流量即将用完,回复KT办理加油包。" * 8  # several parts
    ids = []
    with gateway.db() as session, session.begin():
        for i in range(count):
            row = gateway.outbox.enqueue(session, kind="reply", source="10086", dest=dest,
                                         text=long_text if i % 3 == 0 else f"reply {i}", account="gateway",
                                         channel="upstream")
            ids.append(row.message_id)
    return ids


def _states(gateway, ids: list[str]) -> dict[str, str]:
    with gateway.db() as session:
        rows = session.execute(select(OutboxMessage.message_id, OutboxMessage.state)
                               .where(OutboxMessage.message_id.in_(ids))).all()
    return dict(rows)


def _run(gateway, sim: SMSCSimulator, dest: str, count: int = 12):
    from twisted.internet import reactor

    listening = sim.listen(0)
    client = UpstreamClient(gateway, "127.0.0.1", listening.getHost().port, "gateway", "secret1",
                            initial_delay=0.05, max_delay=0.5, throttle_max_s=0.2)
    ids = _enqueue(gateway, dest, count)
    client.startService()
    try:
        spin(lambda: set(_states(gateway, ids).values()) <= {"delivered", "failed"})
    finally:
        client.stopService()
        listening.stopListening()
        for conn in list(sim.connections):
            conn.transport.loseConnection()
        reactor.iterate(0.01)
    return ids, client


def _assert_exactly_once(sim: SMSCSimulator, ids: list[str], client: UpstreamClient) -> None:
    by_id: dict[bytes, int] = {}
    for ref, _part in sim.accepted:
        by_id[ref] = by_id.get(ref, 0) + 1
    assert set(by_id) == {i.encode() for i in ids}, "every message reached the SMSC"
    parts = sum(by_id.values())
    assert sim.stats["receipts"] == parts, "one receipt per part, never two"
    assert len(sim.accepted) == parts


@pytest.mark.integration
@pytest.mark.parametrize("flag", sorted(FAULTS))
def test_nothing_lost_nothing_duplicated_under_each_fault_flag(gw, flag):
    sim = SMSCSimulator(_reactor(), faults=[flag], id_format="mixed", slow_s=0.05)
    ids, client = _run(gw, sim, "13800000009")
    _assert_exactly_once(sim, ids, client)
    expected = "failed" if flag == "undelivered" else "delivered"
    assert set(_states(gw, ids).values()) == {expected}
    if flag in ("throttle", "queue_full"):
        assert client.stats["throttled"] >= len(ids)
    if flag in ("no_response", "unbind_on_submit"):
        assert sim.stats["duplicates"] > 0, "the fault made the client resend"


COUNTED_FAULTS = ("throttle", "queue_full", "no_response", "unbind_on_submit")


@pytest.mark.integration
@pytest.mark.parametrize("number", sorted(MAGIC))
def test_magic_destination_numbers_select_the_fault(gw, number):
    sim = SMSCSimulator(_reactor(), id_format="hex", slow_s=0.05)
    ids, client = _run(gw, sim, number, count=4)
    _assert_exactly_once(sim, ids, client)
    flag = MAGIC[number].flag
    assert set(_states(gw, ids).values()) == {"failed" if flag == "undelivered" else "delivered"}
    if flag in COUNTED_FAULTS:  # the others leave no count: their effect is the rows' state above
        assert sim.stats[flag] > 0


@pytest.mark.integration
def test_mo_from_the_smsc_is_routed_and_answered_upstream(gw):
    sim = SMSCSimulator(_reactor())
    listening = sim.listen(0)
    client = UpstreamClient(gw, "127.0.0.1", listening.getHost().port, "gateway", "secret1", initial_delay=0.05)
    client.startService()
    try:
        spin(lambda: client.links)
        assert sim.inject_mo("13800000001", "10086", "CXYE")
        spin(lambda: any(s.dest == "13800000001" for s in sim.accepted.values()))
    finally:
        client.stopService()
        listening.stopListening()
        _reactor().iterate(0.01)
    assert sim.stats["mo_acked"] == 1


@pytest.mark.integration
def test_pair_bind_uses_a_transmitter_and_a_receiver(gw):
    sim = SMSCSimulator(_reactor())
    listening = sim.listen(0)
    client = UpstreamClient(gw, "127.0.0.1", listening.getHost().port, "gateway", "secret1", bind="pair",
                            initial_delay=0.05)
    ids = _enqueue(gw, "13800000010", 3)
    client.startService()
    try:
        spin(lambda: set(_states(gw, ids).values()) == {"delivered"})
        assert sorted(lk.kind for lk in client.links) == ["rx", "tx"]
    finally:
        client.stopService()
        listening.stopListening()
        _reactor().iterate(0.01)


def test_every_behaviour_has_a_flag_and_the_ref_tag_is_vendor_range():
    assert {cls.flag for cls in BEHAVIOURS} == set(FAULTS)
    assert 0x1400 <= MESSAGE_REF_TAG <= 0x3FFF


def _reactor():
    from twisted.internet import reactor

    return reactor
