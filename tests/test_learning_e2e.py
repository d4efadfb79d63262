"""Results as events through the running gateway: an smpplib conversation (200, order, Y, QX) is one
linked chain of exposure and outcomes, visible in the products report; ops' learning endpoints."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from gateway.sim_client import SimulatorClient
from tests.harness import start_gateway

pytestmark = pytest.mark.integration

USER = "13800000001"
TOKEN = {"Authorization": "Bearer demo-token", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    running = start_gateway(tmp_path_factory.mktemp("learn"), "--population", "0")
    yield running
    running.stop()


def _request(gw, path: str, body: dict | None = None, headers: dict | None = None,
             method: str | None = None) -> tuple[int, bytes, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(gw.url(path), data=data, headers=headers or {},
                                     method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("content-type", "")


def _json(gw, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    status, raw, _ = _request(gw, path, body, headers)
    return status, json.loads(raw)


def _text(replies: list[dict]) -> str:
    assert replies, "no reply from the gateway"
    return replies[-1]["text"]


def test_show_order_confirm_cancel_is_one_linked_chain_in_the_report(gw):
    client = SimulatorClient(gw.host, gw.ports["smpp"], "tester", "test1234", wait=20)
    client.connect()
    try:
        shelf = _text(client.command(USER, "10086", "200"))
        _, api_shelf = _json(gw, f"/api/subscribers/{USER}/shelf")
        code = api_shelf["offers"][0]["code"]
        assert f"KT{code}" in shelf
        assert "Y" in _text(client.command(USER, "10086", "1"))  # the lone digit orders shelf item 1
        client.command(USER, "10086", "Y")
        assert "取消" in _text(client.command(USER, "10086", f"QX{code}"))
    finally:
        client.close()

    with sqlite3.connect(gw.db_url.removeprefix("sqlite:///")) as db:
        outcomes = db.execute("SELECT kind, exposure_id, after_s FROM outcomes WHERE msisdn = ? AND offer_code = ? "
                              "ORDER BY at, id", (USER, code)).fetchall()
        assert [k for k, _, _ in outcomes] == ["ordered", "confirmed", "cancelled"]
        exposure_ids = {e for _, e, _ in outcomes}
        assert len(exposure_ids) == 1 and None not in exposure_ids
        exposure = db.execute("SELECT offer_code, channel, context, rank FROM exposures WHERE id = ?",
                              (exposure_ids.pop(),)).fetchone()
        assert exposure == (code, "sms", "shelf", 1)
        assert 0 <= outcomes[-1][2] < 7 * 86400

    status, report = _json(gw, "/api/reports/products?days=1")
    assert status == 200
    row = next(i for i in report["items"] if i["product"] == code)
    assert (row["exposures"], row["ordered"], row["confirmed"], row["cancelled_7d"]) == (1, 1, 1, 1)
    assert row["retention_7d"] == 0.0 and row["conversion"] == 1.0
    detail = [r for r in report["by_segment_channel"] if r["product"] == code]
    assert [(r["channel"], r["confirmed"]) for r in detail] == [("sms", 1)]
    arms = report["learned_vs_fixed"]["total"]
    assert sum(a["exposures"] for a in arms.values()) == sum(i["exposures"] for i in report["items"])

    status, raw, kind = _request(gw, "/api/reports/products?days=1&format=csv")
    assert status == 200 and kind.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    product_row = next(r for r in rows if r["level"] == "product" and r["product"] == code)
    assert product_row["confirmed"] == "1" and product_row["cancelled_7d"] == "1"

    card = _dashboard_products(gw)
    shown = next(i for i in card["items"] if i["product"] == code)
    assert (shown["exposures"], shown["conversion"], shown["retention_7d"]) == (1, 1.0, 0.0)
    assert sum(a["exposures"] for a in card["arms"].values()) == sum(i["exposures"] for i in report["items"])


def _dashboard_products(gw) -> dict:
    """The dashboard's products card (computed in a thread: the first ticks may not have it yet)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = _json(gw, "/api/stats")[1]
        if stats.get("products"):
            return stats["products"]
        time.sleep(0.5)
    raise AssertionError("the dashboard never showed the products card")


def test_explain_shows_the_learned_term(gw):
    status, result = _json(gw, f"/api/subscribers/{USER}/shelf?explain=1")
    assert status == 200
    learning = result["learning"]
    assert learning["arm"] in ("learned", "fixed") and learning["segment"] == "mzone:C"
    if learning["arm"] == "learned":
        assert set(learning["evidence"]) >= {o["code"] for o in result["offers"]}
        assert any("learned x" in r for d in result["decisions"] if d["included"] for r in d["reasons"])
    else:
        assert "holdout" in learning["why"]


def test_ops_freeze_and_reset_need_the_token(gw):
    status, error = _json(gw, "/api/learning/freeze", {"frozen": True}, {"Content-Type": "application/json"})
    assert status == 401 and error["error"]["code"]
    status, error = _json(gw, "/api/learning/freeze", {"frozen": "yes"}, TOKEN)
    assert status == 400 and error["error"]["problems"][0]["field"] == "frozen"
    status, result = _json(gw, "/api/learning/freeze", {"frozen": True}, TOKEN)
    assert status == 200 and result["frozen"] is True
    assert _json(gw, "/api/learning")[1]["frozen"] is True
    status, result = _json(gw, "/api/learning/reset", {}, TOKEN)
    assert status == 200 and result["frozen"] is True and result["reset_at"] > 0
    state = _json(gw, "/api/learning")[1]
    assert state["reset_at"] == result["reset_at"] and state["settings"]["learning.holdout_share"] == 0.1
    assert _json(gw, "/api/learning/freeze", {"frozen": False}, TOKEN)[1]["frozen"] is False
