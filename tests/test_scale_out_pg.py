"""Two gateway processes on one PostgreSQL database: shared outbox, one scheduler leader."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from tests.harness import start_gateway
from tests.raw_esme import RawESME

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def two_gateways(tmp_path, pg_url):
    a = start_gateway(tmp_path / "a", "--population", "0", "--instance", "a", db_url=pg_url)
    b = start_gateway(tmp_path / "b", "--population", "0", "--instance", "b", db_url=pg_url)
    yield a, b
    a.stop()
    b.stop()


def test_replies_cross_processes_exactly_once(two_gateways):
    a, b = two_gateways
    tx = RawESME("127.0.0.1", a.ports["smpp"], kind="tx")  # A has no receiver for 'tester' ...
    rx = RawESME("127.0.0.1", b.ports["smpp"], kind="rx")  # ... so B's sender must claim A's replies
    try:
        for i in range(60):
            tx.submit(f"138000{1 + i % 100:05d}", "10086", "CXYE")
            tx.pump(0.01)
        deadline = time.monotonic() + 30
        while len(tx.out.acked) < 60 and time.monotonic() < deadline:
            tx.pump(0.1)
        acked = set(tx.out.acked.values())
        by_mo: dict[str, set[str]] = defaultdict(set)
        while time.monotonic() < deadline + 30:
            rx.pump(0.2)
            for reply in rx.out.replies:
                by_mo[reply["mo"]].add(reply["id"])
            if acked <= set(by_mo):
                break
    finally:
        tx.close()
        rx.close()
    assert len(acked) == 60
    assert acked <= set(by_mo), f"{len(acked - set(by_mo))} replies never crossed to the other process"
    assert all(len(ids) == 1 for ids in by_mo.values())
    wire_ids = [r["id"] for r in rx.out.replies]
    assert len(wire_ids) == len(set(wire_ids)), "a reply went out twice"


def test_exactly_one_campaign_scheduler_leads(two_gateways):
    a, b = two_gateways
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        leaders = [g for g in (a, b) if "this process leads" in g.log_text()]
        if leaders:
            break
        time.sleep(0.2)
    assert len(leaders) == 1
    leader = leaders[0]
    other = b if leader is a else a
    leader.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "this process leads" not in other.log_text():
        time.sleep(0.5)
    assert "this process leads" in other.log_text(), "the second process did not take over"
