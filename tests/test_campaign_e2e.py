"""A whole campaign through the running gateway: created over HTTP, run, received by smpplib, reported."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.sim_client import SimulatorClient
from tests.harness import start_gateway

pytestmark = pytest.mark.integration

PEOPLE = ["13800000001", "13800000003", "13800000005"]
HEADERS = {"Authorization": "Bearer demo-token", "Content-Type": "application/json"}


def _post(gw, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(gw.url(path), data=json.dumps(body or {}).encode(), headers=HEADERS,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def local_time_clear_of_midnight() -> datetime:
    """China time with three minutes of the day left (waiting for the next day if need be), so a
    send window from now on does not wrap midnight."""
    local = datetime.now(ZoneInfo("Asia/Shanghai"))
    if local.hour == 23 and local.minute >= 57:
        time.sleep((60 - local.minute) * 60 - local.second + 1)
        local = datetime.now(ZoneInfo("Asia/Shanghai"))
    return local


def _get(gw, path: str) -> dict:
    with urllib.request.urlopen(gw.url(path), timeout=30) as resp:
        return json.load(resp)


@pytest.fixture
def gw(tmp_path):
    # quiet hours off (start == end): this test must not depend on the hour CI runs at
    running = start_gateway(tmp_path, "--population", "0", "--set", "campaign.quiet_start=00:00",
                            "--set", "campaign.quiet_end=00:00")
    yield running
    running.stop()


def test_campaign_is_sent_once_to_each_target_and_reported(gw):
    local = local_time_clear_of_midnight()
    start, end = local.strftime("%H:%M"), (local + timedelta(minutes=2)).strftime("%H:%M")
    targets = ", ".join(f"'{m}'" for m in PEOPLE)
    campaign = {"id": "e2e-care", "name": "端到端关怀", "kind": "care", "target": f"msisdn in [{targets}]",
                "offers": ["LL10"], "priority": 99, "schedule": {"date": "2099-01-01T00:00:00+08:00"},
                "window": f"{start}-{end}",
                "templates": {"sms": "{{ offer_name }}仅{{ price | price }}元,回复{{ order }}办理。"}}
    status, body = _post(gw, "/api/campaigns", campaign)
    assert status == 201, body
    receiver = SimulatorClient("127.0.0.1", gw.ports["smpp"], "tester", "test1234", wait=3, bind="receiver")
    receiver.connect()
    try:
        status, body = _post(gw, "/api/campaigns/e2e-care/run")
        assert status in (200, 202), body
        got: dict[str, list[dict]] = {}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and len(got) < len(PEOPLE):
            for person in PEOPLE:
                replies = [r for r in receiver.collect(person, since=0, grace=0.1) if r["kind"] == "reply"]
                if replies:
                    got[person] = replies
    finally:
        receiver.close()
    assert set(got) == set(PEOPLE), f"campaign SMS missing for {set(PEOPLE) - set(got)}"
    for person, messages in got.items():
        assert len({m["id"] for m in messages}) == 1, f"{person} got the campaign more than once"
        assert "KTLL10" in messages[0]["text"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = _get(gw, "/api/reports/campaigns?campaign=e2e-care")
        rows = [c for c in report["campaigns"] if c.get("id", c.get("campaign")) == "e2e-care"]
        if rows and rows[0].get("delivered") == len(PEOPLE):
            break
        time.sleep(0.5)
    assert rows and rows[0].get("sent", 0) >= len(PEOPLE) and rows[0].get("delivered") == len(PEOPLE), rows
