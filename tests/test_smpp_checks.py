"""Field checks (gateway.smpp.checks.TABLE) through the session: every row refused with its own status,
nothing reaching the application, fed whole and byte by byte."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.smpp.checks import TABLE, first_failure
from gateway.smpp.constants import ESME, SMSC, CommandStatus
from gateway.smpp.pdu import PDU, decode, encode
from gateway.smpp.session import ProtocolViolation, RequestReceived, Session, State

S = CommandStatus

# A valid request per (sender, command); each row's mutation below breaks exactly that row.
VALID = {
    (ESME, "submit_sm"): dict(source_addr_ton=1, source_addr_npi=1, source_addr="13800000001", dest_addr_ton=0,
                              dest_addr_npi=1, destination_addr="10086", short_message=b"200"),
    (ESME, "submit_multi"): dict(source_addr="13800000001", dest_address=[{"destination_addr": "10086"}],
                                 short_message=b"200"),
    (ESME, "data_sm"): dict(source_addr="13800000001", destination_addr="10086", message_payload=b"200"),
    (SMSC, "deliver_sm"): dict(source_addr="13800000001", destination_addr="10086", short_message=b"200"),
    (SMSC, "data_sm"): dict(source_addr="13800000001", destination_addr="10086", message_payload=b"200"),
}


def _text(command: str, data: bytes) -> dict:
    return {"message_payload" if command == "data_sm" else "short_message": data}


def _multi(**entry) -> dict:
    return {"dest_address": [{"destination_addr": "10086", **entry}]}


# (field, rule) of a row -> the params that break it, given the command.
BREAK = {
    ("source_addr_ton", "a TON of 5.2.5"): lambda c: {"source_addr_ton": 7},
    ("source_addr_npi", "an NPI of 5.2.6"): lambda c: {"source_addr_npi": 2},
    ("dest_addr_ton", "a TON of 5.2.5"): lambda c: {"dest_addr_ton": 7},
    ("dest_addr_npi", "an NPI of 5.2.6"): lambda c: {"dest_addr_npi": 5},
    ("destination_addr", "not empty"): lambda c: {"destination_addr": ""},
    ("dest_address.dest_addr_ton", "a TON of 5.2.5"): lambda c: _multi(dest_addr_ton=9),
    ("dest_address.dest_addr_npi", "an NPI of 5.2.6"): lambda c: _multi(dest_addr_npi=2),
    ("dest_address.destination_addr", "not empty"): lambda c: _multi(destination_addr=""),
    ("dest_address.dl_name", "not empty"): lambda c: {"dest_address": [{"dest_flag": 2, "dl_name": ""}]},
    ("esm_class", "message type default, delivery ack or user ack"): lambda c: {"esm_class": 0x04},
    ("esm_class", "messaging mode not transaction"): lambda c: {"esm_class": 0x02},
    ("esm_class", "a message type of 5.2.12 for SMSC -> ESME"): lambda c: {"esm_class": 0x0C},
    ("priority_flag", "0-3 (5.2.14)"): lambda c: {"priority_flag": 4},
    ("schedule_delivery_time", "empty or a time of 7.1.1"): lambda c: {"schedule_delivery_time": "261301120000000+"},
    ("validity_period", "empty or a time of 7.1.1"): lambda c: {"validity_period": "261201120000004X"},
    ("schedule_delivery_time", "empty: unused in deliver_sm (4.6.1)"):
        lambda c: {"schedule_delivery_time": "261201120000000+"},
    ("validity_period", "empty: unused in deliver_sm (4.6.1)"): lambda c: {"validity_period": "000001000000000R"},
    ("registered_delivery", "receipt 0-2, reserved bits 7-5 clear"): lambda c: {"registered_delivery": 0x03},
    ("replace_if_present_flag", "0 or 1 (5.2.18)"): lambda c: {"replace_if_present_flag": 2},
    ("replace_if_present_flag", "0: unused in deliver_sm (4.6.1)"): lambda c: {"replace_if_present_flag": 1},
    ("data_coding", "defined and decodable (5.2.19)"): lambda c: {"data_coding": 0x0B},
    ("esm_class, short_message", "with UDHI, the UDH length within the user data"):
        lambda c: {"esm_class": 0x40, **_text(c, b"\x05\x00\x03")},
    ("short_message, message_payload", "not both"): lambda c: {"short_message": b"a", "message_payload": b"b"},
    ("data_coding, short_message", "UCS2 user data of whole characters (even length)"):
        lambda c: {"data_coding": 0x08, **_text(c, b"\x00a\x00")},
}

ROWS = [(key, check) for key, checks in TABLE.items() for check in checks]


def test_every_row_has_a_breaking_example_and_a_wire_status():
    assert {(c.field, c.rule) for _, c in ROWS} == set(BREAK)
    assert all(c.status in set(CommandStatus) and c.status != S.ESME_ROK for _, c in ROWS)
    assert set(TABLE) == set(VALID)


def bound_receiver(sender: str) -> Session:
    """A session bound TRX that receives requests from ``sender``."""
    clock = Clock()
    if sender == ESME:
        session = Session(SMSC, clock.seconds)
        [requested] = session.receive_data(encode(PDU.make("bind_transceiver", 1, system_id="tester")))
        session.accept_bind(requested.pdu)
    else:
        session = Session(ESME, clock.seconds)
        bind = session.bind("trx", "gateway", "secret")
        session.receive_data(encode(bind.response(system_id="smsc")))
    session.data_to_send()
    assert session.state is State.BOUND_TRX
    return session


def feed(session: Session, data: bytes, byte_by_byte: bool) -> list:
    if not byte_by_byte:
        return session.receive_data(data)
    return [event for i in range(len(data)) for event in session.receive_data(data[i : i + 1])]


@pytest.mark.parametrize("key", list(VALID), ids=lambda k: f"{k[0]}-{k[1]}")
def test_valid_requests_pass_every_check(key):
    sender, command = key
    pdu = PDU.make(command, 5, **VALID[key])
    assert first_failure(sender, pdu) is None
    [event] = bound_receiver(sender).receive_data(encode(pdu))
    assert isinstance(event, RequestReceived)


@pytest.mark.parametrize("byte_by_byte", [False, True])
@pytest.mark.parametrize("key, check", ROWS, ids=[f"{k[1]}-{k[0]}:{c.field}:{c.rule}" for k, c in ROWS])
def test_a_broken_field_is_refused_with_its_status(key, check, byte_by_byte):
    sender, command = key
    params = {**VALID[key], **BREAK[(check.field, check.rule)](command)}
    if command == "data_sm":
        params.pop("short_message", None)
    pdu = PDU.make(command, 9, **params)
    assert first_failure(sender, pdu) == check
    session = bound_receiver(sender)
    events = feed(session, encode(pdu), byte_by_byte)
    assert [(type(e), e.status) for e in events] == [(ProtocolViolation, check.status)], "never reaches the app"
    [answer] = [decode(frame) for frame in split(session.data_to_send())]
    assert (answer.command, answer.command_status, answer.sequence_number) == (f"{command}_resp", check.status, 9)
    assert session.state is State.BOUND_TRX, "a refused request leaves the session as it was"


def split(data: bytes) -> list[bytes]:
    frames = []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(data[:length])
        data = data[length:]
    return frames


def test_sm_length_past_the_body_is_refused_by_the_decoder():
    frame = bytearray(encode(PDU.make("submit_sm", 4, **VALID[(ESME, "submit_sm")])))
    frame[-4] = 200  # sm_length claims 200 octets; 3 follow
    session = bound_receiver(ESME)
    [violation] = session.receive_data(bytes(frame))
    assert violation.status == S.ESME_RINVMSGLEN
    [answer] = [decode(f) for f in split(session.data_to_send())]
    assert (answer.command, answer.command_status) == ("submit_sm_resp", S.ESME_RINVMSGLEN)


@pytest.mark.parametrize("value", ["", "261201120000000+", "261231235959948-", "000001000000000R"])
def test_valid_times_pass(value):
    pdu = PDU.make("submit_sm", 1, **VALID[(ESME, "submit_sm")], schedule_delivery_time=value, validity_period=value)
    assert first_failure(ESME, pdu) is None


@pytest.mark.parametrize("data_coding, data", [(0x0F, b"*200#"), (0x18, b"\x00a"), (0x08, b"\x05\x00\x03\x01\x02\x01\x00a")])
def test_gsm_dcs_values_and_ucs2_after_a_udh_pass(data_coding, data):
    esm = 0x40 if data[0] == 5 else 0
    pdu = PDU.make("submit_sm", 1, **{**VALID[(ESME, "submit_sm")], "data_coding": data_coding, "esm_class": esm,
                                      "short_message": data})
    assert first_failure(ESME, pdu) is None
