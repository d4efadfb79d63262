"""A receipt that arrives after the gateway restarted still finishes its outbox row.

The SMSC ids of parts sent upstream are kept in the database (``upstream_parts``): first the
store itself (multi-part outcomes, ids in the other base, expiry), then the same in process with a
client dropped as if it crashed, then end to end: ``serve --upstream`` against the SMSC simulator
(``simulate smsc --receipt-delay``), SIGKILL while the receipt is pending, restart on the same
database, and the row becomes ``delivered``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from core.db import import_models, make_engine, migrate, session_factory
from gateway import upstream_parts as store
from gateway.smsc_sim import SMSCSimulator
from gateway.upstream import UpstreamClient
from gateway.upstream_parts import Outcome, SentPart
from notifier.models import UpstreamPart
from tests.harness import ROOT, start_gateway
from tests.test_upstream import _enqueue, _reactor, _states, spin


@pytest.fixture
def db(tmp_path):
    import_models()
    engine = make_engine(f"sqlite:///{tmp_path / 'parts.db'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def test_a_multipart_message_finishes_when_its_last_part_is_receipted(db):
    with db() as session, session.begin():
        store.record_sent(session, [SentPart(f"00{100 + i}", "m1", i, 3, 1000.0) for i in range(3)])
        store.record_outcome(session, "m1", 0, Outcome(True, "DELIVRD"))
    with db() as session, session.begin():
        done, unmatched = store.apply_receipts(session, {"101": Outcome(True, "DELIVRD")})
        assert done == {} and unmatched == []
    with db() as session, session.begin():
        done, unmatched = store.apply_receipts(session, {"102": Outcome(False, "UNDELIV"), "999": Outcome(True, "")})
    assert done == {"m1": Outcome(False, "UNDELIV")}, "one undelivered part fails the message"
    assert unmatched == ["999"]
    with db() as session:
        assert session.query(UpstreamPart).count() == 0, "a finished message's parts are forgotten"


def test_a_receipt_in_the_other_base_finds_its_part_and_an_exact_match_wins(db):
    with db() as session, session.begin():
        store.record_sent(session, [SentPart("F4241", "hex", 0, 1, 1000.0), SentPart("1000001", "dec", 0, 1, 1000.0)])
    with db() as session, session.begin():
        done, _ = store.apply_receipts(session, {"000001000001": Outcome(True, "DELIVRD")})
    assert set(done) == {"dec"}, "the decimal id written with leading zeros is an exact match"
    with db() as session, session.begin():
        done, _ = store.apply_receipts(session, {"1000001": Outcome(True, "DELIVRD")})
    assert set(done) == {"hex"}, "decimal 1000001 is hex F4241"


def test_parts_expire_with_their_receipt_window(db):
    with db() as session, session.begin():
        store.record_sent(session, [SentPart(str(i), f"m{i}", 0, 1, 100.0 + i) for i in range(5)])
    with db() as session, session.begin():
        assert store.expire(session, now=102.0, batch=2) == 2
        assert store.expire(session, now=102.0, batch=2) == 1
        assert store.expire(session, now=102.0) == 0
        assert session.query(UpstreamPart).count() == 2


@pytest.mark.integration
def test_receipts_after_a_client_crash_are_matched_from_the_database(tmp_path):
    from twisted.internet import reactor

    from gateway.app import Gateway

    gw = Gateway(reactor, f"sqlite:///{tmp_path / 'up.db'}", {"smpp.response": 0.3, "smpp.enquire_link": 5})
    gw.load_fixtures_dir(str(ROOT / "fixtures" / "demo"))
    sim = SMSCSimulator(_reactor(), id_format="mixed", receipt_delay=1.0)
    listening = sim.listen(0)
    port = listening.getHost().port
    ids = _enqueue(gw, "13800000009", 6)  # every third one is several parts
    first = UpstreamClient(gw, "127.0.0.1", port, "gateway", "secret1", initial_delay=0.05, max_delay=0.5)
    first.startService()
    second = None
    try:
        spin(lambda: set(_states(gw, ids).values()) == {"sent"})
        _crash(first)
        second = UpstreamClient(gw, "127.0.0.1", port, "gateway", "secret1", initial_delay=0.05, max_delay=0.5)
        second.startService()
        spin(lambda: set(_states(gw, ids).values()) == {"delivered"})
    finally:
        for client in (first, second):
            if client is not None and client.running:
                client.stopService()
        listening.stopListening()
        for conn in list(sim.connections):
            conn.transport.loseConnection()
        reactor.iterate(0.01)
    assert second.stats["delivered_rows"] == len(ids) and first.stats["delivered_rows"] == 0
    assert sim.stats["receipts"] == len(sim.accepted), "one receipt per part"
    with gw.db() as session:
        assert session.query(UpstreamPart).count() == 0


def _crash(client: UpstreamClient) -> None:
    """Stop a client the way a killed process stops: no unbind, no give-back, memory gone."""
    from twisted.internet import reactor

    client.running = False
    for factory in client.factories:
        factory.stopTrying()
    for call in (client._pump_call, client._poll_call, client._record_call):
        if call is not None and call.active():
            call.cancel()
    for link in list(client.links):
        link.transport.abortConnection()
    reactor.iterate(0.01)


# --- end to end: serve --upstream, SIGKILL, restart ----------------------------------------------------------

def _start_smsc(tmp_path, receipt_delay: float) -> tuple[subprocess.Popen, int]:
    mo = tmp_path / "mo.csv"
    mo.write_text("13800000001,10086,CXYE\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_gateway.py"), "simulate", "smsc", "--port", "0",
                             "--receipt-delay", str(receipt_delay), "--mo-csv", str(mo), "--mo-rate", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "the SMSC simulator printed no port"
    return proc, json.loads(os.read(proc.stdout.fileno(), 65536).splitlines()[0])["smsc"]


def _upstream_rows(db_path) -> list[tuple[str, str]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT message_id, state FROM outbox WHERE channel = 'upstream'").fetchall()


def _wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s")


@pytest.mark.integration
def test_sigkill_before_the_receipt_then_restart_the_row_is_delivered(tmp_path):
    smsc, port = _start_smsc(tmp_path, receipt_delay=6.0)
    gw = gw2 = None
    try:
        args = ("--population", "0", "--upstream", f"127.0.0.1:{port}")
        gw = start_gateway(tmp_path, *args)
        db_path = tmp_path / "gateway.db"
        [(message_id, _)] = _wait_for(lambda: [r for r in _upstream_rows(db_path) if r[1] == "sent"], 20,
                                      "the reply to the SMSC's MO acknowledged upstream")
        gw.stop(signal.SIGKILL)
        assert _upstream_rows(db_path) == [(message_id, "sent")], "killed before the receipt came"
        gw2 = start_gateway(tmp_path, *args)
        _wait_for(lambda: _upstream_rows(db_path) == [(message_id, "delivered")], 30,
                  "the receipt that came after the restart delivered the row")
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM upstream_parts").fetchone() == (0,)
    finally:
        for running in (gw, gw2):
            if running is not None:
                running.stop()
        smsc.send_signal(signal.SIGTERM)
        smsc.wait(10)
