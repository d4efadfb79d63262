"""SMPP 3.4 strictness against the real gateway over raw sockets: pipelining behind a bind, field checks
that store nothing (submit_sm, data_sm, submit_multi; deliver_sm_resp on the upstream link), long-MO parts
kept across a SIGKILL, and the start-up lines."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.smpp.constants import CommandStatus
from gateway.smpp.pdu import PDU, decode, encode
from gateway.smpp.session import SMSC, BindRequested, RequestReceived, ResponseReceived, Session, Timers
from gateway.smpp.text import split_message
from tests.harness import start_gateway
from tests.raw_esme import RawESME

pytestmark = pytest.mark.integration

S = CommandStatus
SUB = "13800000077"


def read_pdus(sock: socket.socket, count: int, timeout: float = 10.0) -> list[PDU]:
    """Read until ``count`` PDUs other than deliver_sm came (replies of earlier tests may be delivered to
    any bind of the account); returns those, in order."""
    sock.settimeout(timeout)
    data, pdus = b"", []
    while len(pdus) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 4 and len(data) >= int.from_bytes(data[:4], "big"):
            length = int.from_bytes(data[:4], "big")
            pdu = decode(data[:length])
            data = data[length:]
            if pdu.command != "deliver_sm":
                pdus.append(pdu)
    return pdus


def rows_for(db: Path, msisdn: str) -> tuple[int, int]:
    """(message_log rows from, outbox rows to) one subscriber."""
    with sqlite3.connect(str(db)) as conn:
        logged = conn.execute("SELECT count(*) FROM message_log WHERE source = ?", (msisdn,)).fetchone()[0]
        queued = conn.execute("SELECT count(*) FROM outbox WHERE dest = ?", (msisdn,)).fetchone()[0]
    return logged, queued


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


BIND = encode(PDU.make("bind_transceiver", 1, system_id="tester", password="test1234"))


def test_submit_sm_in_the_same_write_as_the_bind_is_answered_after_it(gateway):
    submit = PDU.make("submit_sm", 2, source_addr=SUB, destination_addr="10086", short_message=b"CXYE")
    with socket.create_connection(("127.0.0.1", gateway.ports["smpp"]), timeout=10) as sock:
        sock.sendall(BIND + encode(submit))  # one write: one TCP segment on loopback
        bind_resp, submit_resp = read_pdus(sock, 2)
    assert (bind_resp.command, bind_resp.command_status) == ("bind_transceiver_resp", S.ESME_ROK)
    assert (submit_resp.command, submit_resp.command_status) == ("submit_sm_resp", S.ESME_ROK)
    assert submit_resp.params["message_id"]


def test_submit_sm_behind_a_refused_bind_is_refused_after_it(gateway):
    bad_bind = encode(PDU.make("bind_transceiver", 1, system_id="tester", password="wrong"))
    submit = PDU.make("submit_sm", 2, source_addr=SUB, destination_addr="10086", short_message=b"CXYE")
    with socket.create_connection(("127.0.0.1", gateway.ports["smpp"]), timeout=10) as sock:
        sock.sendall(bad_bind + encode(submit) + BIND)  # and a retry, all in one write
        answers = read_pdus(sock, 3)
    assert [(p.command, p.command_status) for p in answers] == [
        ("bind_transceiver_resp", S.ESME_RINVPASWD),
        ("submit_sm_resp", S.ESME_RINVBNDSTS),
        ("bind_transceiver_resp", S.ESME_ROK),
    ]


def test_enquire_link_before_a_bind_is_answered(gateway):
    with socket.create_connection(("127.0.0.1", gateway.ports["smpp"]), timeout=10) as sock:
        sock.sendall(encode(PDU.make("enquire_link", 7)))
        [answer] = read_pdus(sock, 1)
    assert (answer.command, answer.command_status, answer.sequence_number) == ("enquire_link_resp", 0, 7)


# One refused example per PDU type the gateway receives from ESMEs; the unit tests cover every row.
REFUSED = [
    ("submit_sm", dict(source_addr=SUB, destination_addr="", short_message=b"CXYE"), S.ESME_RINVDSTADR),
    ("submit_sm", dict(source_addr=SUB, destination_addr="10086", short_message=b"CX", message_payload=b"YE"),
     S.ESME_RINVOPTPARAMVAL),
    ("data_sm", dict(source_addr=SUB, dest_addr_ton=9, destination_addr="10086", message_payload=b"CXYE"),
     S.ESME_RINVDSTTON),
    ("submit_multi", dict(source_addr=SUB, dest_address=[{"destination_addr": "10086"}], data_coding=8,
                          short_message=b"\x00C\x00"), S.ESME_RINVMSGLEN),
]


@pytest.mark.parametrize("command, params, status", REFUSED, ids=[f"{c}-{s.name}" for c, _, s in REFUSED])
def test_a_refused_pdu_gets_its_status_and_stores_nothing(gateway, command, params, status):
    db = gateway.workdir / "gateway.db"
    before = rows_for(db, SUB)
    with socket.create_connection(("127.0.0.1", gateway.ports["smpp"]), timeout=10) as sock:
        sock.sendall(BIND + encode(PDU.make(command, 2, **params)))
        _, answer = read_pdus(sock, 2)
        assert (answer.command, answer.command_status) == (f"{command}_resp", status)
        valid = PDU.make("submit_sm", 3, source_addr=SUB, destination_addr="10086", short_message=b"CXYE")
        sock.sendall(encode(valid))  # the same session still works, and its MO is stored (the count is live)
        [ok] = read_pdus(sock, 1)
    assert ok.command_status == 0
    assert rows_for(db, SUB)[0] == before[0] + 1, "only the valid MO was logged"
    assert wait_for(lambda: rows_for(db, SUB)[1] == before[1] + 1), "only the valid MO's reply was queued"


class RawSMSC:
    """A one-connection SMSC on a raw socket, for the gateway's upstream client to bind to."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.session = Session(SMSC, time.monotonic, Timers(session_init=0, enquire_link=0, inactivity=0))
        self.sock: socket.socket | None = None

    def accept_bind(self) -> None:
        self.listener.settimeout(60)
        self.sock, _ = self.listener.accept()
        [requested] = self.events(lambda events: events)
        assert isinstance(requested, BindRequested)
        self.session.accept_bind(requested.pdu, system_id="rawsmsc")
        self.sock.sendall(self.session.data_to_send())

    def events(self, until: Callable[[list], list], timeout: float = 20.0) -> list:
        got: list = []
        deadline = time.monotonic() + timeout
        while not until(got) and time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            got += self.session.receive_data(self.sock.recv(65536))
            for event in got:
                if isinstance(event, RequestReceived) and event.pdu.command == "submit_sm":
                    self.session.respond(event.pdu, message_id="u1")  # the reply going out upstream
            out = self.session.data_to_send()
            if out:
                self.sock.sendall(out)
        return until(got)

    def deliver(self, **params) -> int:
        pdu = self.session.send_request("deliver_sm", **params)
        self.sock.sendall(self.session.data_to_send())

        def answer(events: list) -> list:
            return [e.response.command_status for e in events
                    if isinstance(e, ResponseReceived) and e.request.sequence_number == pdu.sequence_number]
        [status] = self.events(answer)
        return status

    def close(self) -> None:
        for sock in (self.sock, self.listener):
            if sock is not None:
                sock.close()


def test_a_refused_deliver_sm_gets_its_status_in_deliver_sm_resp_and_stores_nothing(tmp_path):
    smsc = RawSMSC()
    gw = start_gateway(tmp_path, "--population", "0", "--upstream", f"127.0.0.1:{smsc.port}")
    try:
        smsc.accept_bind()
        db = tmp_path / "gateway.db"
        mo = dict(source_addr=SUB, destination_addr="10086", short_message=b"CXYE")
        assert smsc.deliver(**{**mo, "destination_addr": ""}) == S.ESME_RINVDSTADR
        assert smsc.deliver(**{**mo, "esm_class": 0x0C}) == S.ESME_RINVESMCLASS
        assert smsc.deliver(**{**mo, "validity_period": "000001000000000R"}) == S.ESME_RINVEXPIRY
        assert rows_for(db, SUB) == (0, 0)
        assert smsc.deliver(**mo) == S.ESME_ROK
        assert rows_for(db, SUB)[0] == 1, "the valid MO was logged"
    finally:
        smsc.close()
        gw.stop()


def _send_part(esme: RawESME, part) -> int:
    pdu = esme.session.send_request("submit_sm", source_addr_ton=1, source_addr_npi=1, source_addr=SUB,
                                    dest_addr_ton=0, dest_addr_npi=1, destination_addr="10086",
                                    esm_class=part.esm_class, data_coding=part.data_coding,
                                    short_message=part.short_message)
    esme._flush()
    deadline = time.monotonic() + 10
    while pdu.sequence_number not in esme.out.acked and time.monotonic() < deadline:
        esme.pump(0.1)
    return pdu.sequence_number


def test_a_part_acknowledged_before_a_sigkill_completes_its_message_after_the_restart(tmp_path):
    parts = split_message("CXYE" + " " * 200, ref=41)
    assert len(parts) == 2
    gw = start_gateway(tmp_path, "--population", "0")
    esme = RawESME("127.0.0.1", gw.ports["smpp"])
    try:
        first = _send_part(esme, parts[0])
        assert first in esme.out.acked, esme.out.errors
    finally:
        gw.stop(signal.SIGKILL)
        esme.sock.close()

    gw2 = start_gateway(tmp_path, "--population", "0")
    esme2 = RawESME("127.0.0.1", gw2.ports["smpp"])
    try:
        second = _send_part(esme2, parts[1])
        whole_id = esme2.out.acked[second]

        def replies() -> list[dict]:
            return [r for r in esme2.out.replies if r["to"] == SUB and r["esm_class"] & 0x04 == 0]
        deadline = time.monotonic() + 15
        while not replies() and time.monotonic() < deadline:
            esme2.pump(0.1)
        end = time.monotonic() + 1.0  # a little longer: nothing else (no second reply, no resend request)
        while time.monotonic() < end:
            esme2.pump(0.1)
    finally:
        esme2.close()
        gw2.stop()
    assert {r["mo"] for r in replies()} == {whole_id}, replies()
    assert len({r["id"] for r in replies()}) == 1, "exactly one reply message to the whole text"
    with sqlite3.connect(str(tmp_path / "gateway.db")) as conn:
        assert conn.execute("SELECT count(*) FROM pending_parts").fetchone()[0] == 0


def test_start_up_lists_each_service_and_keeps_library_chatter_at_debug(gateway):
    log = gateway.log_text()
    for line in ("SMPP 3.4 server", "SIP-lite IVR", "HTTP ops API", "SMTP in", "ready: "):
        assert line in log
    for chatter in ("Running upgrade", "Context impl", "Will assume", "setup plugin", "Adding job tentatively"):
        assert chatter not in log
    assert log.index("SMPP 3.4 server") < log.index("ready: ")
