"""SIGKILL under MO load: after a restart every acknowledged MO has exactly one reply (by message id)."""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import pytest

from tests.harness import start_gateway
from tests.raw_esme import RawESME

pytestmark = pytest.mark.integration

MESSAGES = 600
KILL_AFTER = 200
RATE = 300


def _drive_until(esme: RawESME, sent: list[int], target: int) -> None:
    i = len(sent)
    start = time.monotonic()
    deadline = start + 60
    while len(esme.out.acked) < target and time.monotonic() < deadline:
        # stay under the demo account's 500 msg/s so nothing is throttled
        while i < MESSAGES and esme.window_free() > 0 and i < (time.monotonic() - start) * RATE:
            sent.append(esme.submit(f"138000{1 + i % 100:05d}", "10086", "CXYE"))
            i += 1
        if not esme.pump(0.05):
            return


def test_sigkill_under_mo_load_loses_and_duplicates_nothing(tmp_path):
    gw = start_gateway(tmp_path, "--population", "0")
    esme = RawESME("127.0.0.1", gw.ports["smpp"])
    sent: list[int] = []
    try:
        _drive_until(esme, sent, KILL_AFTER)
        gw.stop(signal.SIGKILL)
        while esme.pump(0.2):  # whatever was in flight when the process died
            pass
    finally:
        esme.sock.close()
    acked_before = {esme.out.acked[s] for s in esme.out.acked}
    assert len(acked_before) >= KILL_AFTER, esme.out.errors

    gw2 = start_gateway(tmp_path, "--population", "0")
    esme2 = RawESME("127.0.0.1", gw2.ports["smpp"])
    try:
        replies_by_mo: dict[str, set[str]] = defaultdict(set)
        for reply in esme.out.replies:
            replies_by_mo[reply["mo"]].add(reply["id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for reply in esme2.out.replies:
                replies_by_mo[reply["mo"]].add(reply["id"])
            if all(replies_by_mo.get(mo) for mo in acked_before):
                break
            esme2.pump(0.2)
    finally:
        esme2.close()
        gw2.stop()
    missing = [mo for mo in acked_before if not replies_by_mo.get(mo)]
    doubled = {mo: ids for mo, ids in replies_by_mo.items() if len(ids) > 1}
    assert not missing, f"{len(missing)} acknowledged MO never got a reply"
    assert not doubled, f"MO answered by more than one reply message: {list(doubled.items())[:3]}"


def test_sigkill_in_the_middle_of_a_campaign_sends_each_message_once(tmp_path):
    import sqlite3
    from datetime import timedelta

    from tests.test_campaign_e2e import _post, local_time_clear_of_midnight

    local = local_time_clear_of_midnight()
    quiet_off = ("--set", "campaign.quiet_start=00:00", "--set", "campaign.quiet_end=00:00")
    gw = start_gateway(tmp_path, "--population", "0", *quiet_off)
    window = f"{local:%H:%M}-{local + timedelta(minutes=2):%H:%M}"  # >= 60 s left whatever the second
    campaign = {"id": "crash-care", "name": "crash", "kind": "care", "target": "tenure_months >= 0",
                "offers": ["LL10"], "priority": 99, "schedule": {"date": "2099-01-01T00:00:00+08:00"},
                "window": window, "templates": {"sms": "{{ offer_name }} 回复{{ order }}办理"}}
    assert _post(gw, "/api/campaigns", campaign)[0] == 201
    rx = RawESME("127.0.0.1", gw.ports["smpp"], kind="rx")
    assert _post(gw, "/api/campaigns/crash-care/run")[0] in (200, 202)
    deadline = time.monotonic() + 60
    while len(rx.out.replies) < 10 and time.monotonic() < deadline:
        rx.pump(0.1)
    gw.stop(signal.SIGKILL)
    received = list(rx.out.replies)
    rx.sock.close()
    assert len(received) >= 10, "the campaign did not start sending"

    gw2 = start_gateway(tmp_path, "--population", "0", *quiet_off)
    rx2 = RawESME("127.0.0.1", gw2.ports["smpp"], kind="rx")
    db = sqlite3.connect(str(tmp_path / "gateway.db"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rx2.pump(0.2)
            open_rows = db.execute("SELECT count(*) FROM outbox WHERE campaign_id = 'crash-care' "
                                   "AND state NOT IN ('delivered', 'failed', 'expired')").fetchone()[0]
            if open_rows == 0:
                break
        rows = db.execute("SELECT message_id, dest, state FROM outbox WHERE campaign_id = 'crash-care'").fetchall()
        # the demo fixtures' own scheduled campaigns (e.g. "30 14 * * mon-fri", China time) fire when the
        # test runs at their minute, and their messages reach the same RX bind: not this campaign's
        others = {mid for (mid,) in db.execute("SELECT message_id FROM outbox WHERE campaign_id IS NOT NULL "
                                                "AND campaign_id != 'crash-care'")}
    finally:
        db.close()
        rx2.close()
        gw2.stop()
    received = [reply for reply in [*received, *rx2.out.replies] if reply["id"] not in others]
    ids_by_dest: dict[str, set[str]] = defaultdict(set)
    for reply in received:
        ids_by_dest[reply["to"]].add(reply["id"])
    assert rows and all(state == "delivered" for _, _, state in rows)
    assert {mid for mid, _, _ in rows} == {r["id"] for r in received}, "every campaign message arrived"
    assert all(len(ids) == 1 for ids in ids_by_dest.values()), "a subscriber got two different campaign messages"
    assert len(ids_by_dest) == len(rows)
