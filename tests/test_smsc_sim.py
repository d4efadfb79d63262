"""The fake operator SMSC, driven in memory (iosim + a fake clock) by a bare sans-IO ESME session."""

from __future__ import annotations

import pytest
from twisted.internet import protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim

from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.constants import Tag
from gateway.smpp.session import ESME, RequestReceived, ResponseReceived, Session, Unbound
from gateway.smsc_sim import MAGIC, SMSCProtocol, SMSCSimulator
from gateway.upstream import MESSAGE_REF_TAG, receipt_of


class Esme(protocol.Protocol):
    """Binds TRX, answers deliver_sm, records every event in order."""

    def __init__(self, clock, system_id: str = "esme", password: str = "pw"):
        self.session = Session(ESME, clock.seconds)
        self.credentials = (system_id, password)
        self.events: list = []

    def connectionMade(self) -> None:
        self.session.bind("trx", *self.credentials)
        self.transport.write(self.session.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        for event in self.session.receive_data(data):
            self.events.append(event)
            if isinstance(event, RequestReceived):
                self.session.respond(event.pdu, 0, message_id="")
        out = self.session.data_to_send()
        if out:
            self.transport.write(out)

    def submit(self, dest: str, ref: bytes = b"m1", text: bytes = b"hello") -> int:
        pdu = self.session.send_request("submit_sm", source_addr="10086", destination_addr=dest,
                                        registered_delivery=1, short_message=text, tlvs={MESSAGE_REF_TAG: ref})
        self.transport.write(self.session.data_to_send())
        return pdu.sequence_number

    def responses(self) -> list:
        return [e.response for e in self.events if isinstance(e, ResponseReceived)
                and e.request.command == "submit_sm"]

    def delivered(self) -> list:
        return [e.pdu for e in self.events if isinstance(e, RequestReceived) and e.pdu.command == "deliver_sm"]


def _connect(sim: SMSCSimulator, clock, **kw):
    server = SMSCProtocol(sim)
    client = Esme(clock, **kw)
    pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), clock=clock)
    pump.flush()
    return client, pump


@pytest.fixture
def clock():
    return MemoryReactorClock()


def test_happy_submit_gets_an_id_and_one_receipt(clock):
    sim = SMSCSimulator(clock)
    esme, pump = _connect(sim, clock)
    esme.submit("13800000001")
    pump.flush()
    [resp] = esme.responses()
    assert resp.command_status == 0
    [receipt] = esme.delivered()
    smsc_id, info = receipt_of(receipt)
    assert smsc_id == resp.params["message_id"] and info.ok
    assert receipt.params["esm_class"] == 0x04


def test_a_resend_is_a_duplicate_with_the_same_id_and_no_second_receipt(clock):
    sim = SMSCSimulator(clock)
    esme, pump = _connect(sim, clock)
    esme.submit("13800000001", ref=b"same")
    esme.submit("13800000001", ref=b"same")
    pump.flush()
    first, second = esme.responses()
    assert first.params["message_id"] == second.params["message_id"]
    assert sim.stats["duplicates"] == 1 and len(esme.delivered()) == 1


@pytest.mark.parametrize("flag, status", [("throttle", S.ESME_RTHROTTLED), ("queue_full", S.ESME_RMSGQFUL)])
def test_backpressure_faults_hit_the_first_attempt_only(clock, flag, status):
    sim = SMSCSimulator(clock, faults=[flag])
    esme, pump = _connect(sim, clock)
    esme.submit("13800000001")
    pump.flush()
    esme.submit("13800000001")
    pump.flush()
    assert [r.command_status for r in esme.responses()] == [status, 0]
    assert sim.stats["accepted"] == 1


def test_no_response_then_the_resend_is_answered(clock):
    sim = SMSCSimulator(clock)
    esme, pump = _connect(sim, clock)
    esme.submit(MAGIC_BY_FLAG["no_response"])
    pump.flush()
    assert esme.responses() == []
    esme.submit(MAGIC_BY_FLAG["no_response"])
    pump.flush()
    assert [r.command_status for r in esme.responses()] == [0] and sim.stats["duplicates"] == 1


def test_unbind_on_submit(clock):
    sim = SMSCSimulator(clock)
    esme, pump = _connect(sim, clock)
    esme.submit(MAGIC_BY_FLAG["unbind_on_submit"])
    pump.flush()
    assert any(isinstance(e, Unbound) and e.by_peer for e in esme.events)
    assert esme.responses() == [] and sim.stats["accepted"] == 1


def test_receipt_before_response_and_mixed_id_formats(clock):
    sim = SMSCSimulator(clock, id_format="mixed")
    esme, pump = _connect(sim, clock)
    esme.submit(MAGIC_BY_FLAG["receipt_first"])
    pump.flush()
    kinds = [type(e).__name__ for e in esme.events if isinstance(e, (RequestReceived, ResponseReceived))]
    assert kinds[-2:] == ["RequestReceived", "ResponseReceived"]
    response_id = esme.responses()[0].params["message_id"]
    receipt_id, _ = receipt_of(esme.delivered()[0])
    assert receipt_id.startswith("0") and int(receipt_id) == int(response_id, 16)


def test_undelivered_receipt(clock):
    sim = SMSCSimulator(clock)
    esme, pump = _connect(sim, clock)
    esme.submit(MAGIC_BY_FLAG["undelivered"])
    pump.flush()
    _, info = receipt_of(esme.delivered()[0])
    assert not info.ok and info.stat == "UNDELIV"
    assert esme.delivered()[0].tlvs[Tag.message_state] == 5


def test_slow_responses_and_receipt_delay(clock):
    sim = SMSCSimulator(clock, slow_s=2.0, receipt_delay=5.0)
    esme, pump = _connect(sim, clock)
    esme.submit(MAGIC_BY_FLAG["slow"])
    pump.flush()
    assert esme.responses() == []
    clock.advance(2.0)
    pump.flush()
    assert len(esme.responses()) == 1 and esme.delivered() == []
    clock.advance(5.0)
    pump.flush()
    assert len(esme.delivered()) == 1


def test_mo_injection_reaches_a_bound_receiver_and_is_acknowledged(clock):
    sim = SMSCSimulator(clock)
    assert not sim.inject_mo("13800000001", "10086", "200")  # nobody bound yet
    esme, pump = _connect(sim, clock)
    assert sim.inject_mo("13800000001", "10086", "长" * 100)  # two parts
    pump.flush()
    assert len(esme.delivered()) == 2 and sim.stats["mo_acked"] == 2


def test_mo_rate_injects_on_the_clock(clock):
    sim = SMSCSimulator(clock)
    esme, pump = _connect(sim, clock)
    sim.run_mo_rate(10.0)
    for _ in range(10):
        clock.advance(0.1)
        pump.flush()
    assert 9 <= len(esme.delivered()) <= 11


def test_bind_credentials_when_configured(clock):
    sim = SMSCSimulator(clock, system_id="op", password="secret")
    esme, pump = _connect(sim, clock, system_id="op", password="wrong")
    [refused] = [e for e in esme.events if isinstance(e, ResponseReceived)]
    assert refused.response.command_status == S.ESME_RINVPASWD
    ok, pump = _connect(sim, clock, system_id="op", password="secret")
    assert ok.session.bound_kind == "trx"


def test_unknown_fault_is_refused(clock):
    with pytest.raises(ValueError, match="unknown fault"):
        SMSCSimulator(clock, faults=["explode"])


MAGIC_BY_FLAG = {cls.flag: number for number, cls in MAGIC.items()}
