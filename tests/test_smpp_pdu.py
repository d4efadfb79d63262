"""SMPP 3.4 codec: round trips, public vectors, framing, malformed input, smpplib interop."""

import random
import struct

import pytest
import smpplib.client
import smpplib.smpp
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smpp.constants import CommandId, CommandStatus, MessageState, Tag
from gateway.smpp.errors import EncodeError, InvalidCommandLength, SMPPError
from gateway.smpp.pdu import PDU, Framer, command_spec, decode, encode

S = CommandStatus

# One richly filled sample per command, requests and responses alike.
SAMPLES: dict[str, dict] = {
    "generic_nack": {},
    "bind_transmitter": dict(
        system_id="tester",
        password="test1234",
        system_type="VMA",
        interface_version=0x34,
        addr_ton=1,
        addr_npi=1,
        address_range="^1380",
    ),
    "bind_transmitter_resp": dict(system_id="gateway", sc_interface_version=0x34),
    "bind_receiver": dict(system_id="a" * 15, password="p" * 8, address_range="x" * 40),
    "bind_receiver_resp": dict(system_id="gateway"),
    "bind_transceiver": dict(system_id="tester", password="test1234", interface_version=0x34),
    "bind_transceiver_resp": dict(system_id="gw", sc_interface_version=0x34),
    "outbind": dict(system_id="smsc", password="secret"),
    "unbind": {},
    "unbind_resp": {},
    "enquire_link": {},
    "enquire_link_resp": {},
    "submit_sm": dict(
        service_type="USSD",
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="13800000001",
        dest_addr_ton=0,
        dest_addr_npi=1,
        destination_addr="*200#",
        esm_class=0x40,
        protocol_id=0,
        priority_flag=1,
        schedule_delivery_time="",
        validity_period="000001000000000R",
        registered_delivery=1,
        data_coding=8,
        short_message=bytes(range(140)),
        ussd_service_op=1,
        its_session_info=0x2A01,
        sar_msg_ref_num=0xBEEF,
        sar_total_segments=3,
        sar_segment_seqnum=2,
        user_message_reference=7,
        source_port=9200,
        destination_port=2948,
    ),
    "submit_sm_resp": dict(message_id="4f0a-77"),
    "submit_multi": dict(
        source_addr="10086",
        dest_address=[
            {"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "13800000001"},
            {"dest_flag": 2, "dl_name": "vip-list"},
            {"dest_flag": 1, "dest_addr_ton": 0, "dest_addr_npi": 0, "destination_addr": "13800000002"},
        ],
        short_message=b"",
        message_payload=b"x" * 600,
        registered_delivery=1,
    ),
    "submit_multi_resp": dict(
        message_id="m-9",
        unsuccess_sme=[
            {
                "dest_addr_ton": 1,
                "dest_addr_npi": 1,
                "destination_addr": "13800000002",
                "error_status_code": S.ESME_RINVDSTADR,
            }
        ],
    ),
    "deliver_sm": dict(
        source_addr="13800000001",
        destination_addr="10086",
        esm_class=0x04,
        short_message=b"id:abc sub:001 dlvrd:001 submit date:2410021200 done date:2410021200 stat:DELIVRD err:000",
        receipted_message_id="abc",
        message_state=MessageState.DELIVERED,
        network_error_code=b"\x03\x00\x00",
    ),
    "deliver_sm_resp": dict(message_id=""),
    "data_sm": dict(
        source_addr="1" * 64,
        destination_addr="2" * 64,
        esm_class=0,
        registered_delivery=0,
        data_coding=0,
        message_payload=b"data",
        qos_time_to_live=3600,
        alert_on_message_delivery=b"",
    ),
    "data_sm_resp": dict(
        message_id="d1",
        delivery_failure_reason=1,
        additional_status_info_text="handset full",
        dpf_result=0,
    ),
    "query_sm": dict(message_id="abc", source_addr_ton=1, source_addr_npi=1, source_addr="10086"),
    "query_sm_resp": dict(
        message_id="abc", final_date="241002120000000+", message_state=MessageState.DELIVERED, error_code=0
    ),
    "cancel_sm": dict(service_type="", message_id="abc", source_addr="10086", destination_addr="13800000001"),
    "cancel_sm_resp": {},
    "replace_sm": dict(
        message_id="abc",
        source_addr="10086",
        schedule_delivery_time="241002120000000+",
        validity_period="",
        registered_delivery=0,
        sm_default_msg_id=0,
        short_message=b"new text",
    ),
    "replace_sm_resp": {},
    "alert_notification": dict(
        source_addr="13800000001", esme_addr_ton=1, esme_addr_npi=1, esme_addr="gw", ms_availability_status=0
    ),
}


def frame(command_id: int, body: bytes, seq: int = 7, status: int = 0) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def test_every_command_has_a_sample():
    assert set(SAMPLES) == {c.name for c in CommandId}


@pytest.mark.parametrize("command", sorted(SAMPLES))
def test_round_trip(command):
    pdu = PDU.make(command, 0x7FFFFFFF, **SAMPLES[command])
    data = encode(pdu)
    assert struct.unpack(">I", data[:4])[0] == len(data)
    back = decode(data)
    assert back == pdu
    assert back.command == command
    assert encode(back) == data


@pytest.mark.parametrize("command", sorted(c.name for c in CommandId if c.name.endswith("_resp")))
def test_error_responses_have_no_body_and_decode(command):
    pdu = PDU.make(command, 3, command_status=S.ESME_RSYSERR)
    data = encode(pdu)
    assert len(data) == 16
    assert decode(data) == pdu
    assert decode(data).params == {}


def test_request_defaults_and_response_helpers():
    request = PDU.make("submit_sm", 42, short_message=b"hi", ussd_service_op=1)
    assert request.params["source_addr"] == "" and request.params["esm_class"] == 0
    assert request.tlvs == {Tag.ussd_service_op: 1}
    assert request.message == b"hi"
    response = request.response(message_id="m1")
    assert (response.command, response.sequence_number, response.params) == (
        "submit_sm_resp",
        42,
        {"message_id": "m1"},
    )
    throttled = request.response(S.ESME_RTHROTTLED)
    assert encode(throttled) == frame(CommandId.submit_sm_resp, b"", 42, S.ESME_RTHROTTLED)
    assert PDU.make("submit_sm", 1, message_payload=b"long").message == b"long"


def test_response_of_a_responseless_command_is_refused():
    with pytest.raises(EncodeError):
        PDU.make("outbind", 1).response()
    with pytest.raises(EncodeError):
        PDU.make("submit_sm_resp", 1).response()


@pytest.mark.parametrize(
    "command, params",
    [
        ("bind_transmitter", {"system_id": "x" * 16}),
        ("bind_transmitter", {"password": "123456789"}),
        ("submit_sm", {"short_message": b"x" * 255}),
        ("submit_sm", {"esm_class": 256}),
        ("submit_sm", {"validity_period": "short"}),
        ("submit_sm", {"source_addr": "a\0b"}),
        ("submit_sm", {"sar_msg_ref_num": 70000}),
        ("submit_sm", {"receipted_message_id": 5}),
        ("submit_sm", {"no_such_param": 1}),
        ("submit_multi", {"dest_address": []}),
        ("no_such_command", {}),
    ],
)
def test_encode_errors(command, params):
    with pytest.raises(EncodeError):
        encode(PDU.make(command, 1, **params))


def test_missing_request_param_is_an_encode_error():
    with pytest.raises(EncodeError, match="missing parameter"):
        encode(PDU(CommandId.submit_sm, 1, 0, {"service_type": ""}))


# --- public vectors ------------------------------------------------------------------------

# Wikipedia "SMPP" article: a 60-octet submit_sm.
WIKIPEDIA_SUBMIT_SM = (
    "00 00 00 3C 00 00 00 04 00 00 00 00 00 00 00 05 00 02 08 35 35 35 00 01 01 "
    "35 35 35 35 35 35 35 35 35 00 00 00 00 00 00 00 00 00 00 0F 48 65 6C 6C 6F "
    "20 77 69 6B 69 70 65 64 69 61"
)
# OpenMarket SMPP docs: submit_sm with a relative validity period and a receipt request.
OPENMARKET_SUBMIT_SM = (
    "0000006b00000004000000000005c4a34f4d56340003013830333632000101383132333435303031303030000000"
    "00003138303130353132303030303030342b0001000000255265706c792059657320746f206f707420696e206f72"
    "204e6f20746f206f7074206f75742e"
)
# cloudhopper-smpp PduDecoderTest vectors.
CH_BIND_TRANSMITTER = "0000002500000002000000000003995f747769747465720074776974746572000034000000"
CH_BIND_TRANSCEIVER = "00000023000000090000000000039951414c4c5f545700414c4c5f5457000034010200"
CH_BIND_TRANSCEIVER_RESP_TLV = "0000001d800000090000000000039943536d7363204757000210000134"
CH_BIND_TRANSCEIVER_RESP_FAILED = "00000015800000090000000e00004db3534d534300"
CH_SUBMIT_SM_RESP = "0000001c80000004000000000a342ee1393432353834333135393400"
CH_SUBMIT_SM_RESP_NO_BODY = "0000001080000004000000000a342ee1"
CH_ENQUIRE_LINK = "0000001000000015000000000a342ee7"
CH_DELIVER_SM = (
    "000000400000000500000000000000030002013837363534333231000409343034303400000000000000000000"
    "084024232125262F3A000E0001010006000101"
)
CH_DELIVERY_RECEIPT = (
    "000000BA00000005000000000000000200010134343935313336313932300001013430343034000400000000000000"
    "006E69643A30303539313133393738207375623A30303120646C7672643A303031207375626D697420646174653A31"
    "30303231303137333020646F6E6520646174653A3130303231303137333120737461743A44454C49565244206572"
    "723A30303020746578743A4024232125262F3A000E0001010006000101001E000833383630316661000427000102"
)
# smpplib tests/test_command.py: a receipt whose text sits in message_payload, and one with
# vendor-specific TLVs 0x1403 / 0x1402 that SMPP 3.4 says to ignore (we keep them raw).
SMPPLIB_DELIVER_SM = (
    b"\x00\x00\x00\xcb\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x00"
    b"\x01\x0131600000000\x00\x05\x00XXX YYYY\x00\x04\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x0e\x00\x01\x01\x00\x06\x00\x01\x01\x00\x1e\x00"
    b"\t1d305b4c\x00\x04'\x00\x01\x02\x04$\x00rid:0489708364 sub:001"
    b" dlvrd:001 submit date:1810151907 done date:1810151907 stat:DELIVRD"
    b" err:000 text:\x04\x1f\x04@\x048\x042\x045\x04B\x04&\x00\x01\x01"
)
SMPPLIB_VENDOR_TLVS = (
    b"\x00\x00\x00\xa8\x00\x00\x00\x05\x00\x00\x00\x00/p\xc6"
    b"\x9a\x00\x00\x0022549909028\x00\x01\x00\x00\x04\x00\x00"
    b"\x00\x00\x00\x00\x00\x00iid:795920026 sub:001 dlvrd:001 "
    b"submit date:200319131913 done date:200319131913 stat:DELIVRD err:000 text:"
    b"\x14\x03\x00\x07(null)\x00\x14\x02\x00\x04612\x00"
)


def hex_frame(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_vector_wikipedia_submit_sm():
    data = hex_frame(WIKIPEDIA_SUBMIT_SM)
    pdu = decode(data)
    assert (pdu.command, pdu.sequence_number) == ("submit_sm", 5)
    assert pdu.params["source_addr_ton"] == 2 and pdu.params["source_addr_npi"] == 8
    assert pdu.params["source_addr"] == "555" and pdu.params["destination_addr"] == "555555555"
    assert pdu.params["short_message"] == b"Hello wikipedia"
    assert encode(pdu) == data


def test_vector_openmarket_submit_sm():
    data = hex_frame(OPENMARKET_SUBMIT_SM)
    pdu = decode(data)
    assert pdu.params["service_type"] == "OMV4"
    assert pdu.params["destination_addr"] == "812345001000"
    assert pdu.params["validity_period"] == "180105120000004+"
    assert pdu.params["registered_delivery"] == 1
    assert pdu.message == b"Reply Yes to opt in or No to opt out."
    assert encode(pdu) == data


def test_vector_cloudhopper_binds():
    tx = decode(hex_frame(CH_BIND_TRANSMITTER))
    assert tx.command == "bind_transmitter" and tx.sequence_number == 235871
    assert tx.params == {
        "system_id": "twitter",
        "password": "twitter",
        "system_type": "",
        "interface_version": 0x34,
        "addr_ton": 0,
        "addr_npi": 0,
        "address_range": "",
    }
    trx = decode(hex_frame(CH_BIND_TRANSCEIVER))
    assert (trx.params["system_id"], trx.params["addr_ton"], trx.params["addr_npi"]) == ("ALL_TW", 1, 2)
    resp = decode(hex_frame(CH_BIND_TRANSCEIVER_RESP_TLV))
    assert resp.params == {"system_id": "Smsc GW"} and resp.tlvs == {Tag.sc_interface_version: 0x34}
    failed = decode(hex_frame(CH_BIND_TRANSCEIVER_RESP_FAILED))
    assert failed.command_status == S.ESME_RINVPASWD and failed.params == {"system_id": "SMSC"}
    for vector in (CH_BIND_TRANSMITTER, CH_BIND_TRANSCEIVER, CH_BIND_TRANSCEIVER_RESP_TLV):
        assert encode(decode(hex_frame(vector))) == hex_frame(vector)


def test_vector_cloudhopper_responses_and_enquire_link():
    assert decode(hex_frame(CH_SUBMIT_SM_RESP)).params == {"message_id": "94258431594"}
    empty = decode(hex_frame(CH_SUBMIT_SM_RESP_NO_BODY))
    assert empty.command == "submit_sm_resp" and empty.params == {}
    assert encode(empty) == hex_frame(CH_SUBMIT_SM_RESP_NO_BODY)
    link = decode(hex_frame(CH_ENQUIRE_LINK))
    assert (link.command, link.sequence_number) == ("enquire_link", 171192039)


def test_vector_cloudhopper_deliver_sm_and_receipt():
    pdu = decode(hex_frame(CH_DELIVER_SM))
    assert pdu.params["source_addr"] == "87654321" and pdu.params["destination_addr"] == "40404"
    assert pdu.params["short_message"] == bytes.fromhex("4024232125262f3a")
    assert pdu.tlvs == {Tag.source_network_type: 1, Tag.dest_network_type: 1}
    receipt = decode(hex_frame(CH_DELIVERY_RECEIPT))
    assert receipt.params["esm_class"] == 0x04
    assert receipt.params["short_message"].startswith(b"id:0059113978 sub:001")
    assert receipt.tlvs[Tag.receipted_message_id] == "38601fa"
    assert receipt.tlvs[Tag.message_state] == MessageState.DELIVERED
    assert encode(receipt) == hex_frame(CH_DELIVERY_RECEIPT)


def test_vector_smpplib_receipts():
    pdu = decode(SMPPLIB_DELIVER_SM)
    assert pdu.params["source_addr"] == "31600000000"
    assert pdu.tlvs[Tag.receipted_message_id] == "1d305b4c"
    assert pdu.tlvs[Tag.message_state] == MessageState.DELIVERED
    assert pdu.message.startswith(b"id:0489708364 sub:001")
    assert encode(pdu) == SMPPLIB_DELIVER_SM
    vendor = decode(SMPPLIB_VENDOR_TLVS)
    assert vendor.tlvs == {0x1403: b"(null)\x00", 0x1402: b"612\x00"}
    assert encode(vendor) == SMPPLIB_VENDOR_TLVS


# --- framing -------------------------------------------------------------------------------

STREAM_PDUS = [
    PDU.make("bind_transceiver", 1, **SAMPLES["bind_transceiver"]),
    PDU.make("submit_sm", 2, **SAMPLES["submit_sm"]),
    PDU.make("enquire_link", 3),
    PDU.make("submit_multi", 4, **SAMPLES["submit_multi"]),
    PDU.make("unbind", 5),
]
STREAM = b"".join(encode(p) for p in STREAM_PDUS)


def drain(framer: Framer) -> list[bytes]:
    frames = []
    while (f := framer.next_frame()) is not None:
        frames.append(f)
    return frames


def test_framer_byte_by_byte():
    framer = Framer()
    frames = []
    for i in range(len(STREAM)):
        framer.feed(STREAM[i : i + 1])
        frames += drain(framer)
    assert [decode(f) for f in frames] == STREAM_PDUS
    assert framer.buffered == 0


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=40))
def test_framer_random_chunks(cuts):
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    framer = Framer()
    frames = []
    for chunk in chunks:
        framer.feed(chunk)
        frames += drain(framer)
    assert [decode(f) for f in frames] == STREAM_PDUS


@pytest.mark.parametrize("length", [0, 4, 15, 65537, 0xFFFFFFFF])
def test_framer_rejects_bad_command_length(length):
    framer = Framer(max_pdu_size=65536)
    framer.feed(struct.pack(">IIII", length, CommandId.enquire_link, 0, 9))
    with pytest.raises(InvalidCommandLength) as info:
        framer.next_frame()
    assert info.value.command_status == S.ESME_RINVCMDLEN and info.value.fatal
    assert info.value.sequence_number == 9


def test_framer_max_size_is_configurable():
    big = encode(PDU.make("submit_sm", 1, message_payload=b"x" * 2000))
    framer = Framer(max_pdu_size=1024)
    framer.feed(big)
    with pytest.raises(InvalidCommandLength):
        framer.next_frame()
    framer = Framer(max_pdu_size=4096)
    framer.feed(big)
    assert framer.next_frame() == big


# --- malformed input -----------------------------------------------------------------------


def bind_body(system_id=b"tester\0", password=b"pw\0", system_type=b"\0", address_range=b"\0") -> bytes:
    return system_id + password + system_type + b"\x34\x00\x00" + address_range


def submit_body(
    service_type=b"\0",
    source=b"10086\0",
    dest=b"13800000001\0",
    schedule=b"\0",
    validity=b"\0",
    message=b"\x02hi",
    tail=b"",
) -> bytes:
    return (
        service_type
        + b"\x01\x01"
        + source
        + b"\x01\x01"
        + dest
        + b"\x00\x00\x00"
        + schedule
        + validity
        + b"\x00\x00\x00\x00"
        + message
        + tail
    )


def test_helpers_build_valid_frames():
    assert decode(frame(CommandId.bind_transmitter, bind_body())).params["system_id"] == "tester"
    assert decode(frame(CommandId.submit_sm, submit_body())).message == b"hi"


MALFORMED = [
    ("unknown command id", frame(0x00000110, b""), S.ESME_RINVCMDID),
    ("unknown response id", frame(0x80000110, b""), S.ESME_RINVCMDID),
    ("length field disagrees", frame(CommandId.enquire_link, b"")[:-1] + b"\x00\x00", S.ESME_RINVCMDLEN),
    ("bind without body", frame(CommandId.bind_transmitter, b""), S.ESME_RINVCMDLEN),
    ("bind cut after password", frame(CommandId.bind_transmitter, b"tester\0pw\0"), S.ESME_RINVCMDLEN),
    ("system_id too long", frame(CommandId.bind_transmitter, bind_body(system_id=b"x" * 16 + b"\0")), S.ESME_RINVSYSID),
    ("system_id unterminated", frame(CommandId.bind_transceiver, b"tester"), S.ESME_RINVSYSID),
    ("password too long", frame(CommandId.bind_receiver, bind_body(password=b"123456789\0")), S.ESME_RINVPASWD),
    ("system_type too long", frame(CommandId.bind_receiver, bind_body(system_type=b"t" * 13 + b"\0")), S.ESME_RINVSYSTYP),
    ("address_range too long", frame(CommandId.bind_receiver, bind_body(address_range=b"1" * 41 + b"\0")), S.ESME_RINVPARLEN),
    ("outbind password too long", frame(CommandId.outbind, b"smsc\0" + b"p" * 9 + b"\0"), S.ESME_RINVPASWD),
    ("service_type too long", frame(CommandId.submit_sm, submit_body(service_type=b"SERVICE\0")), S.ESME_RINVSERTYP),
    ("source_addr too long", frame(CommandId.submit_sm, submit_body(source=b"1" * 21 + b"\0")), S.ESME_RINVSRCADR),
    ("destination_addr too long", frame(CommandId.deliver_sm, submit_body(dest=b"1" * 21 + b"\0")), S.ESME_RINVDSTADR),
    ("schedule not 16 chars", frame(CommandId.submit_sm, submit_body(schedule=b"2410\0")), S.ESME_RINVSCHED),
    ("validity not 16 chars", frame(CommandId.submit_sm, submit_body(validity=b"1" * 17 + b"\0")), S.ESME_RINVEXPIRY),
    ("sm_length past the end", frame(CommandId.submit_sm, submit_body(message=b"\x05hi")), S.ESME_RINVMSGLEN),
    ("sm_length 255", frame(CommandId.submit_sm, submit_body(message=b"\xff" + b"x" * 255)), S.ESME_RINVMSGLEN),
    ("message_id too long", frame(CommandId.query_sm, b"m" * 65 + b"\0\x01\x01x\0"), S.ESME_RINVMSGID),
    ("TLV header cut", frame(CommandId.submit_sm, submit_body(tail=b"\x02\x0c\x00")), S.ESME_RINVOPTPARSTREAM),
    ("TLV value past the end", frame(CommandId.submit_sm, submit_body(tail=b"\x04\x24\x00\x09abc")), S.ESME_RINVOPTPARSTREAM),
    ("TLV integer wrong length", frame(CommandId.submit_sm, submit_body(tail=b"\x02\x0c\x00\x01\x05")), S.ESME_RINVPARLEN),
    ("ussd_service_op two octets", frame(CommandId.submit_sm, submit_body(tail=b"\x05\x01\x00\x02\x00\x01")), S.ESME_RINVPARLEN),
    ("TLV garbage on enquire_link", frame(CommandId.enquire_link, b"\x01"), S.ESME_RINVOPTPARSTREAM),
    ("submit_sm_resp unterminated", frame(CommandId.submit_sm_resp, b"abc"), S.ESME_RINVMSGID),
    ("no destinations", frame(CommandId.submit_multi, b"\0\x01\x01src\0\x00"), S.ESME_RINVNUMDESTS),
    ("255 destinations", frame(CommandId.submit_multi, b"\0\x01\x01src\0\xff"), S.ESME_RINVNUMDESTS),
    ("bad dest_flag", frame(CommandId.submit_multi, b"\0\x01\x01src\0\x01\x03"), S.ESME_RINVDESTFLAG),
    ("dl_name too long", frame(CommandId.submit_multi, b"\0\x01\x01src\0\x01\x02" + b"d" * 21 + b"\0"), S.ESME_RINVDLNAME),
    ("multi dest address too long", frame(CommandId.submit_multi, b"\0\x01\x01src\0\x01\x01\x01\x01" + b"1" * 21 + b"\0"), S.ESME_RINVDSTADR),
    ("multi cut in destinations", frame(CommandId.submit_multi, b"\0\x01\x01src\0\x02\x02list\0"), S.ESME_RINVCMDLEN),
    ("unsuccess_sme cut", frame(CommandId.submit_multi_resp, b"m\0\x01\x01\x01addr\0\x00\x00"), S.ESME_RINVCMDLEN),
]  # fmt: skip


@pytest.mark.parametrize("case, data, status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_maps_to_status(case, data, status):
    with pytest.raises(SMPPError) as info:
        decode(data)
    error = info.value
    assert error.command_status == status, error.detail
    if len(data) >= 16 and struct.unpack(">I", data[:4])[0] == len(data):
        assert error.command_id == struct.unpack(">I", data[4:8])[0]
        assert error.sequence_number == 7


def test_error_response_with_garbage_body_keeps_its_status():
    pdu = decode(frame(CommandId.bind_transmitter_resp, b"no terminator", status=S.ESME_RBINDFAIL))
    assert pdu.command == "bind_transmitter_resp" and pdu.command_status == S.ESME_RBINDFAIL
    assert pdu.params == {} and pdu.tlvs == {}


def test_tlv_cstring_without_nul_and_duplicate_tags():
    tail = b"\x00\x1e\x00\x03abc" + b"\x02\x0c\x00\x02\x00\x01" + b"\x02\x0c\x00\x02\x00\x02"
    pdu = decode(frame(CommandId.deliver_sm, submit_body(tail=tail)))
    assert pdu.tlvs == {Tag.receipted_message_id: "abc", Tag.sar_msg_ref_num: 2}


@settings(max_examples=400)
@given(st.binary(max_size=80), st.sampled_from([int(c) for c in CommandId] + [0x110, 0x80000110]))
def test_decode_raises_only_smpp_errors(body, command_id):
    try:
        pdu = decode(frame(command_id, body))
    except SMPPError as error:
        assert 0 < error.command_status <= 0xFF
    else:
        assert command_spec(pdu.command_id).command_id == command_id


addresses = st.text(alphabet="0123456789+*#", max_size=20)


@settings(max_examples=200)
@given(
    source=addresses,
    dest=addresses,
    message=st.binary(max_size=254),
    esm_class=st.integers(0, 255),
    ref=st.integers(0, 0xFFFF),
    seq=st.integers(1, 0x7FFFFFFF),
)
def test_submit_sm_round_trip_property(source, dest, message, esm_class, ref, seq):
    pdu = PDU.make(
        "submit_sm",
        seq,
        source_addr=source,
        destination_addr=dest,
        esm_class=esm_class,
        short_message=message,
        sar_msg_ref_num=ref,
    )
    assert decode(encode(pdu)) == pdu


def test_random_garbage_stream_never_escapes_the_error_tree():
    rng = random.Random(7)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(16, 60)))
        data = struct.pack(">I", len(data)) + data[4:]
        try:
            decode(data)
        except SMPPError:
            pass


# --- smpplib 2.2.4 interop -----------------------------------------------------------------


def smpplib_client() -> smpplib.client.Client:
    return smpplib.client.Client("127.0.0.1", 2775, allow_unknown_opt_params=True)  # never connects


def test_smpplib_encoded_pdus_decode_with_our_codec():
    bind = smpplib.smpp.make_pdu(
        "bind_transceiver", client=smpplib_client(), sequence=1, system_id="tester", password="test1234"
    )
    ours = decode(bind.generate())
    assert ours.command == "bind_transceiver" and ours.sequence_number == 1
    assert ours.params["system_id"] == "tester" and ours.params["password"] == "test1234"
    assert ours.params["interface_version"] == 0x34

    submit = smpplib.smpp.make_pdu(
        "submit_sm",
        client=smpplib_client(),
        sequence=2,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="13800000001",
        dest_addr_ton=0,
        dest_addr_npi=1,
        destination_addr="10086",
        short_message=b"200",
        data_coding=0,
        esm_class=0,
        registered_delivery=1,
        sar_msg_ref_num=17,
        sar_total_segments=2,
        sar_segment_seqnum=1,
    )
    ours = decode(submit.generate())
    assert ours.command == "submit_sm"
    assert (ours.params["source_addr"], ours.params["destination_addr"]) == ("13800000001", "10086")
    assert ours.message == b"200" and ours.params["registered_delivery"] == 1
    assert ours.tlvs == {Tag.sar_msg_ref_num: 17, Tag.sar_total_segments: 2, Tag.sar_segment_seqnum: 1}


def test_our_encoded_pdus_decode_with_smpplib():
    client = smpplib_client()
    bind = smpplib.smpp.parse_pdu(
        encode(PDU.make("bind_transceiver", 9, **SAMPLES["bind_transceiver"])), client=client
    )
    assert bind.command == "bind_transceiver" and bind.sequence == 9
    assert (bind.system_id, bind.password, bind.interface_version) == (b"tester", b"test1234", 0x34)

    submit = smpplib.smpp.parse_pdu(encode(PDU.make("submit_sm", 10, **SAMPLES["submit_sm"])), client=client)
    assert submit.command == "submit_sm" and submit.sequence == 10
    assert submit.source_addr == b"13800000001" and submit.destination_addr == b"*200#"
    assert submit.short_message == bytes(range(140))
    assert (submit.ussd_service_op, submit.its_session_info, submit.sar_msg_ref_num) == (1, 0x2A01, 0xBEEF)

    resp = smpplib.smpp.parse_pdu(
        encode(PDU.make("bind_transceiver_resp", 9, system_id="gateway", sc_interface_version=0x34)),
        client=client,
    )
    assert resp.command == "bind_transceiver_resp" and resp.system_id == b"gateway"
    assert resp.sc_interface_version == 0x34

    deliver = smpplib.smpp.parse_pdu(
        encode(PDU.make("deliver_sm", 11, **SAMPLES["deliver_sm"])), client=client
    )
    assert deliver.receipted_message_id == b"abc" and deliver.message_state == MessageState.DELIVERED
    assert deliver.short_message.startswith(b"id:abc")

    refused = smpplib.smpp.parse_pdu(
        encode(PDU.make("submit_sm_resp", 10, command_status=0x58)), client=client
    )
    assert refused.command == "submit_sm_resp" and refused.status == 0x58
