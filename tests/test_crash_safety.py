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
