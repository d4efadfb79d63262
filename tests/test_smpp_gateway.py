"""The first slice end to end: smpplib binds to the real gateway, texts 10086, gets the real replies."""

from __future__ import annotations

import json
import re
import socket
import struct
import urllib.request
import warnings

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions

from gateway.sim_client import SimulatorClient, reassemble

pytestmark = pytest.mark.integration

SUB = "13800000001"


def _client(gateway, **kw) -> SimulatorClient:
    client = SimulatorClient("127.0.0.1", gateway.ports["smpp"], "tester", "test1234", wait=10, **kw)
    client.connect()
    return client


def _shelf_api(gateway, msisdn: str) -> dict:
    with urllib.request.urlopen(gateway.url(f"/api/subscribers/{msisdn}/shelf")) as resp:
        return json.load(resp)


def test_200_returns_the_subscribers_real_shelf(gateway):
    client = _client(gateway)
    try:
        replies = [r for r in client.command(SUB, "10086", "200") if r["kind"] == "reply"]
    finally:
        client.close()
    assert len(replies) == 1
    reply = replies[0]
    assert reply["from"] == "10086" and reply["to"] == SUB
    assert 1 <= reply["parts"] <= 3
    shelf = _shelf_api(gateway, SUB)
    assert shelf["offers"], "the demo subscriber should have offers"
    positions = [reply["text"].find(offer["code"]) for offer in shelf["offers"]]
    assert all(p >= 0 for p in positions), (reply["text"], shelf)
    assert positions == sorted(positions), "the SMS lists the offers in the API's order"


def test_order_confirm_list_cancel_conversation(gateway):
    sub = "13800000002"
    client = _client(gateway)
    try:
        shelf = _shelf_api(gateway, sub)["offers"]
        code = shelf[0]["code"]
        prompt = client.command(sub, "10086", f"KT{code}")[0]["text"]
        assert "Y" in prompt
        confirmed = client.command(sub, "10086", "Y")[0]["text"]
        again = client.command(sub, "10086", "Y")[0]["text"]
        listing = client.command(sub, "10086", "0000")[0]["text"]
        assert f"QX{code}" in listing.upper().replace(" ", "")
        assert listing.upper().count(f"QX{code}") == 1, "a second Y must not subscribe twice"
        cancelled = client.command(sub, "10086", f"QX{code}")[0]["text"]
        after = client.command(sub, "10086", "0000")[0]["text"]
    finally:
        client.close()
    assert confirmed and again and cancelled
    assert f"QX{code}" not in after.upper()


def test_balance_is_two_decimals_and_matches_api(gateway):
    client = _client(gateway)
    try:
        text = client.command(SUB, "10086", "CXYE")[0]["text"]
    finally:
        client.close()
    with urllib.request.urlopen(gateway.url(f"/api/subscribers/{SUB}")) as resp:
        balance = json.load(resp)["balance"]
    assert f"{balance:.2f}" in re.findall(r"\d+\.\d{2}", text)


def test_unknown_text_gets_help_and_fullwidth_keyword_works(gateway):
    client = _client(gateway)
    try:
        help_text = client.command(SUB, "10086", "what is this")[0]["text"]
        fullwidth = client.command(SUB, "10086", "ｃｘｙｅ")[0]["text"]
    finally:
        client.close()
    assert "200" in help_text
    assert re.search(r"\d+\.\d{2}", fullwidth)


def test_delivery_receipt_matches_submit_message_id(gateway):
    client = _client(gateway)
    try:
        replies = client.command(SUB, "10086", "CXYE", receipt=True)
    finally:
        client.close()
    receipts = [r for r in replies if r["kind"] == "receipt"]
    assert len(receipts) == 1
    assert "stat:DELIVRD" in receipts[0]["text"]
    assert receipts[0]["receipted_message_id"] in client.sent_ids


def test_long_mo_reassembled_in_any_order(gateway):
    from gateway.smpp.text import split_message

    client = _client(gateway)
    try:
        text = "CXYE" + " " * 400  # a command padded past one SMS: three parts
        parts = split_message(text, ref=77)
        assert len(parts) >= 3
        start = len(client.received)
        for part in reversed(parts):
            client.client.send_message(source_addr_ton=1, source_addr_npi=1, source_addr=SUB, dest_addr_ton=0,
                                       dest_addr_npi=1, destination_addr="10086", short_message=part.short_message,
                                       data_coding=part.data_coding, esm_class=part.esm_class)
        replies = [r for r in client.collect(SUB, since=start) if r["kind"] == "reply"]
    finally:
        client.close()
    assert len(replies) == 1 and re.search(r"\d+\.\d{2}", replies[0]["text"])


def test_replies_wait_in_outbox_until_a_receiver_binds(gateway):
    tx = _client(gateway, bind="transmitter")
    try:
        tx.submit(SUB, "10086", "CXYE")
        tx.client._socket.settimeout(5)
        tx.client.read_once()  # submit_sm_resp
    finally:
        tx.close()
    rx = _client(gateway, bind="receiver")
    try:
        replies = [r for r in rx.collect(SUB) if r["kind"] == "reply"]
    finally:
        rx.close()
    assert replies and re.search(r"\d+\.\d{2}", replies[0]["text"])


def test_wrong_password_and_too_many_binds(gateway):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = smpplib.client.Client("127.0.0.1", gateway.ports["smpp"], timeout=10, allow_unknown_opt_params=True)
    bad.connect()
    with pytest.raises(smpplib.exceptions.PDUError) as info:
        bad.bind_transceiver(system_id="tester", password="nope")
    assert info.value.args[1] == smpplib.consts.SMPP_ESME_RINVPASWD
    bad.disconnect()
    clients = [_client(gateway) for _ in range(4)]
    try:
        with pytest.raises(Exception) as info:
            _client(gateway)
        assert "0x0D" in str(info.value).upper() or "13" in str(info.value)
    finally:
        for c in clients:
            c.close()


def test_garbage_gets_generic_nack_and_gateway_keeps_serving(gateway):
    sock = socket.create_connection(("127.0.0.1", gateway.ports["smpp"]), timeout=10)
    try:
        sock.sendall(struct.pack(">IIII", 16, 0x7777, 0, 9))
        header = sock.recv(16)
        length, command_id, status, seq = struct.unpack(">IIII", header)
        assert command_id == 0x80000000 and status == 0x03 and seq == 9
    finally:
        sock.close()
    client = _client(gateway)
    try:
        assert client.command(SUB, "10086", "CXYE")
    finally:
        client.close()


def test_reassemble_helper_orders_parts():
    class P:
        command = "deliver_sm"

        def __init__(self, sm, esm=0x40):
            self.short_message, self.esm_class, self.data_coding = sm, esm, 0
            self.source_addr, self.destination_addr = b"10086", b"1"

    parts = [P(bytes((5, 0, 3, 9, 2, 2)) + b"world"), P(bytes((5, 0, 3, 9, 2, 1)) + b"hello ")]
    assert reassemble(parts, "1")[0]["text"] == "hello world"
