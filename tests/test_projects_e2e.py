"""Outbound call projects through the running gateway: the lifecycle over HTTP (token, who and when,
reasons, never dialling unless approved and started), and a whole call: an approved, started project
calls the real sipp UAS (tests/sipp/uas_answer.xml), the callee presses 1, the second-confirmation
SMS arrives over smpplib, Y confirms, and the project's report counts it."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from core.fixtures import read_dir
from gateway.sim_client import SimulatorClient
from tests.harness import requires_programs, start_gateway
from tests.test_campaign_e2e import local_time_clear_of_midnight
from tests.test_sip_uac_sipp import free_udp_port, start_sipp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
HEADERS = {"Authorization": "Bearer demo-token", "Content-Type": "application/json"}
CALLEE = "13800000004"  # phone preference, consent, age 39, no complaints: eligible for CL5


def _request(gw, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(gw.url(path), data=data, headers=headers if headers is not None else HEADERS,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _post(gw, path: str, body: dict | None = None, **kw) -> tuple[int, dict]:
    return _request(gw, "POST", path, {} if body is None else body, **kw)


def _get(gw, path: str) -> dict:
    status, body = _request(gw, "GET", path)
    assert status == 200, body
    return body


def test_lifecycle_over_http(tmp_path):
    gw = start_gateway(tmp_path, "--population", "0", "--set", f"outbound.callee_port={free_udp_port()}",
                       "--set", "outbound.sync_s=0.5")
    try:
        listed = _get(gw, "/api/projects")
        assert {p["id"]: p["state"] for p in listed["items"]} == {
            "data-alert-call": "draft", "upgrade-5g-call": "draft", "video-ivr": "draft"}
        status, body = _post(gw, "/api/projects/data-alert-call/approve", headers={})
        assert status == 401
        status, body = _post(gw, "/api/projects/data-alert-call/start")
        assert status == 409 and "cannot start a project that is draft" in body["error"]["message"]
        status, body = _post(gw, "/api/projects/data-alert-call/reject")
        assert status == 400 and body["error"]["problems"][0]["field"] == "reason"
        status, body = _post(gw, "/api/projects/data-alert-call/reject", {"reason": "话术缺少资费说明"})
        assert status == 200 and body["state"] == "rejected" and body["who"] == "demo"
        shown = _get(gw, "/api/projects/data-alert-call")
        assert shown["state"] == "rejected" and shown["reason"] == "话术缺少资费说明" and shown["live"] is None
        assert [(t["action"], t["who"]) for t in shown["transitions"]] == [("reject", "demo")]
        assert shown["transitions"][0]["at"] > 0
        status, body = _post(gw, "/api/projects/data-alert-call/approve")
        assert status == 409

        bad = {"id": "bad-one", "name": "x", "target": "brand > 3", "offers": ["CL5"], "channel": "agent",
               "window": "09:00-20:00", "trial": {"count": 1}, "script": [{"step": "hi", "text": "您好"}]}
        status, body = _post(gw, "/api/projects", bad)
        assert status == 422 and body["error"]["problems"][0]["file"] == "projects.yaml"
        assert body["error"]["problems"][0]["line"] > 0
        good = dict(bad, id="new-one", target="value_grade == 'B1'")
        status, body = _post(gw, "/api/projects", good)
        assert status == 201 and body["state"] == "draft"

        assert _get(gw, "/api/projects/video-ivr")["live"] is None  # a draft never dials
        bare = urllib.request.Request(gw.url("/api/projects/upgrade-5g-call/approve"), method="POST",
                                      headers={"Authorization": "Bearer demo-token"})  # curl -X POST, no body
        with urllib.request.urlopen(bare, timeout=60) as resp:
            assert json.load(resp)["state"] == "approved"
        for action, state in (("approve", "approved"), ("start", "trial"), ("go", "rollout"), ("pause", "paused"),
                              ("start", "rollout"), ("close", "closed")):
            status, body = _post(gw, f"/api/projects/video-ivr/{action}")
            assert status == 200 and body["state"] == state, body
            if state == "trial":
                deadline = time.monotonic() + 30
                while _get(gw, "/api/projects/video-ivr")["live"] is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                live = _get(gw, "/api/projects/video-ivr")["live"]
                assert live is not None and live["stage"] == "trial"
        shown = _get(gw, "/api/projects/video-ivr")
        assert shown["state"] == "closed" and shown["live"] is None
        assert [t["to"] for t in shown["transitions"]] == ["approved", "trial", "rollout", "paused", "rollout", "closed"]
        assert shown["plan"]["trial"]["call"] >= 1 and "excluded" in shown["plan"]["trial"]
        report = _get(gw, "/api/reports/projects")
        assert "items" in report and "over_time" in report
    finally:
        gw.stop()


def _fixture_set() -> dict[str, str]:
    files = read_dir(ROOT / "fixtures" / "demo")
    doc = yaml.safe_load(files["projects.yaml"])
    doc["voice_policy"]["quiet_hours"] = "00:00-00:00"  # this test must not depend on the hour it runs at
    doc["projects"].append({
        "id": "e2e-ivr", "name": "端到端外呼", "target": f"msisdn == '{CALLEE}'", "offers": ["CL5"], "channel": "ivr",
        "window": "00:00-23:59", "attempts": 1, "pacing": {"mode": "progressive", "lines": 2},
        "trial": {"share": 1.0, "seed": 1}, "prompt": "个性彩铃每月5元,订购请按1,再听一遍请按2,不感兴趣请按3,不再接到此类来电请按9。",
        "script": [{"step": "prompt", "text": "播放产品介绍"}]})
    files["projects.yaml"] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    return files


@requires_programs("outbound calls to sipp callees", "sipp")
def test_project_calls_sipp_callee_presses_1_and_confirms_by_sms(tmp_path):
    local_time_clear_of_midnight()  # the calling window 00:00-23:59 must not close mid-test
    sipp, port = start_sipp("uas_answer", tmp_path)
    gw = start_gateway(tmp_path / "gw", "--population", "0", "--set", f"outbound.callee_port={port}",
                       "--set", "outbound.sync_s=0.5")
    client = SimulatorClient("127.0.0.1", gw.ports["smpp"], "tester", "test1234", wait=3)
    try:
        status, body = _post(gw, "/api/fixtures", {"files": _fixture_set()})
        assert status == 200, body
        client.connect()
        assert _post(gw, "/api/projects/e2e-ivr/approve")[0] == 200
        status, body = _post(gw, "/api/projects/e2e-ivr/start")
        assert status == 200 and body["state"] == "trial"
        prompt = []
        deadline = time.monotonic() + 60
        while not prompt and time.monotonic() < deadline:
            prompt = [r for r in client.collect(CALLEE, since=0, grace=0.1) if r["kind"] == "reply"]
        assert prompt, "no confirmation SMS arrived"
        assert "Y" in prompt[0]["text"] and "彩铃" in prompt[0]["text"]
        replies = client.command(CALLEE, "10086", "Y")
        done = [r["text"] for r in replies if r["kind"] == "reply"]
        assert done and any("彩铃" in t for t in done[-1:]), done
        subscriber = _get(gw, f"/api/subscribers/{CALLEE}")
        assert "CL5" in json.dumps(subscriber, ensure_ascii=False)
        report = _get(gw, "/api/projects/e2e-ivr")["report"]
        row = next(i for i in report["items"] if i["offer"] == "CL5")
        assert (row["stage"], row["dialled"], row["answered"], row["accepted"], row["confirmed"]) == \
            ("trial", 1, 1, 1, 1)
    finally:
        client.close()
        gw.stop()
        try:
            _, err = sipp.communicate(timeout=30)
        finally:
            sipp.kill()
    assert sipp.returncode == 0, err.decode(errors="replace")[-2000:]


@requires_programs("outbound calls to sipp callees", "sipp")
def test_sipp_callee_hears_it_again_then_refuses_with_3_and_the_product_stays_off_calls_and_shelf(tmp_path):
    local_time_clear_of_midnight()  # the calling window 00:00-23:59 must not close mid-test
    sipp, port = start_sipp("uas_refuse", tmp_path)
    gw = start_gateway(tmp_path / "gw", "--population", "0", "--set", f"outbound.callee_port={port}",
                       "--set", "outbound.sync_s=0.5")
    try:
        status, body = _post(gw, "/api/fixtures", {"files": _fixture_set()})
        assert status == 200, body
        assert _post(gw, "/api/projects/e2e-ivr/approve")[0] == 200
        assert _post(gw, "/api/projects/e2e-ivr/start")[0] == 200
        deadline = time.monotonic() + 60
        row = None
        while row is None and time.monotonic() < deadline:
            time.sleep(0.3)
            items = _get(gw, "/api/projects/e2e-ivr")["report"]["items"]
            row = next((i for i in items if i["offer"] == "CL5"), None)
        assert row is not None, "the call was not recorded"
        assert (row["answered"], row["refused"], row["accepted"], row["opted_out"]) == (1, 1, 0, 0)
        shelf = _get(gw, f"/api/subscribers/{CALLEE}/shelf?explain=1")
        assert "CL5" not in [o["code"] for o in shelf["offers"]]
        assert "refused" in json.dumps(shelf, ensure_ascii=False)
        assert _post(gw, "/api/projects/e2e-ivr/go")[0] == 200  # roll-out plans again: the refusal excludes it
        deadline = time.monotonic() + 30
        plan = {}
        while "rollout" not in plan and time.monotonic() < deadline:
            time.sleep(0.3)
            plan = _get(gw, "/api/projects/e2e-ivr")["plan"]
        assert plan["rollout"]["excluded"] == {"refused_recently": 1} and plan["rollout"]["call"] == 0
    finally:
        gw.stop()
        try:
            _, err = sipp.communicate(timeout=30)
        finally:
            sipp.kill()
    assert sipp.returncode == 0, err.decode(errors="replace")[-2000:]
