"""Integration: the real gateway with the IVR mounted, driven by the real sipp (tests/sipp/*.xml),
the resulting SMS read back with smpplib, and the reports over HTTP."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.sim_client import SimulatorClient
from tests.harness import RunningGateway, requires_programs, start_gateway
from tests.test_ivr_support import IVR_FILES, fixture_files

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = ROOT / "tests" / "sipp"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"

pytestmark = [pytest.mark.integration, requires_programs("IVR calls driven by sipp", "sipp")]


def _fixture_dir(workdir: Path) -> Path:
    """The demo fixtures with the IVR files (wherever the tests read them from)."""
    folder = workdir / "fixtures"
    for name, text in fixture_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def start_ivr_gateway(workdir: Path, *args: str) -> RunningGateway:
    workdir.mkdir(parents=True, exist_ok=True)
    running = start_gateway(workdir, "--population", "0", "--fixtures", str(_fixture_dir(workdir)), *args)
    assert "sip" in running.ports, f"serve did not mount the IVR: {running.ports}"
    return running


def run_sipp(gw: RunningGateway, scenario: str, service: str, calls: int, *, rate: float = 10,
             callers: list[str] | None = None, timeout_s: int = 60, extra: tuple[str, ...] = ()) -> dict:
    """Run one sipp scenario to completion; returns successful/failed call counts and sipp's output."""
    workdir = gw.workdir / f"sipp-{scenario}-{time.monotonic_ns()}"
    workdir.mkdir()
    csv = workdir / "callers.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in (callers or ["13800000001"])))
    cmd = [SIPP, f"127.0.0.1:{gw.ports['sip']}", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-inf", str(csv),
           "-s", service, "-m", str(calls), "-r", str(rate), "-i", "127.0.0.1", "-nostdin",
           "-timeout", f"{timeout_s}s", "-timeout_error", "-trace_stat", "-stf", str(workdir / "stat.csv"),
           "-trace_err", "-error_file", str(workdir / "errors.log"), *extra]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s + 30)
    stats = _last_stats(workdir / "stat.csv")
    errors = (workdir / "errors.log").read_text(errors="replace") if (workdir / "errors.log").exists() else ""
    return {"rc": done.returncode, "ok": stats.get("SuccessfulCall(C)", 0), "failed": stats.get("FailedCall(C)", 0),
            "out": done.stdout[-3000:] + done.stderr[-3000:] + errors[-3000:]}


def _last_stats(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    head, last = lines[0].split(";"), lines[-1].split(";")
    out = {}
    for name, value in zip(head, last, strict=False):
        if value.isdigit():
            out[name] = int(value)
    return out


def collect(gw: RunningGateway, msisdn: str, want: int = 1, wait: float = 10.0) -> list[dict]:
    """SMS the gateway delivered to this number on a tester RX bind (reassembled)."""
    client = SimulatorClient("127.0.0.1", gw.ports["smpp"], "tester", "test1234", wait=wait, bind="receiver")
    client.connect()
    try:
        got: list[dict] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(got) < want:
            got = [r for r in client.collect(msisdn) if r["kind"] == "reply"]
        return got
    finally:
        client.close()


def http_json(gw: RunningGateway, path: str) -> dict:
    """GET a JSON resource of the ops API (an HTTP error status raises)."""
    with urllib.request.urlopen(gw.url(path), timeout=10) as resp:
        return json.loads(resp.read())


def _balance(gw: RunningGateway, msisdn: str) -> float:
    import sqlalchemy as sa

    engine = sa.create_engine(gw.db_url)
    with engine.connect() as conn:
        value = conn.execute(sa.text("SELECT balance FROM subscribers WHERE msisdn = :m"), {"m": msisdn}).scalar()
    engine.dispose()
    return value


@pytest.fixture(scope="module")
def menu_gateway(tmp_path_factory):
    gw = start_ivr_gateway(tmp_path_factory.mktemp("ivr"), "--set", "ivr.agents=1", "--set", "ivr.agent_aht_s=1",
                           "--set", "survey.sample_rate=1")
    yield gw
    gw.stop()


def test_sipp_menu_walk(menu_gateway):
    result = run_sipp(menu_gateway, "ivr_menu_walk", "10086", 20, rate=20,
                      callers=[f"13800000{n:03d}" for n in range(10, 30)])
    assert result["failed"] == 0 and result["ok"] == 20, result["out"]


def test_sipp_1008611_balance_sms(menu_gateway):
    msisdn = "13800000006"
    result = run_sipp(menu_gateway, "ivr_1008611", "1008611", 1, callers=[msisdn])
    assert result["failed"] == 0 and result["ok"] == 1, result["out"]
    [sms] = collect(menu_gateway, msisdn)
    amount = re.search(r"(\d+\.\d{2})元", sms["text"]).group(1)
    assert sms["from"] in ("10086", "1008611")
    assert float(amount) == pytest.approx(_balance(menu_gateway, msisdn), abs=0.005)
    api = http_json(menu_gateway, f"/api/subscribers/{msisdn}")
    assert amount == f"{float(api['balance']):.2f}"


def test_sipp_agent_call_then_survey_sms_scored_by_reply(menu_gateway):
    msisdn = "13800000011"
    result = run_sipp(menu_gateway, "ivr_agent", "10086", 1, callers=[msisdn], extra=("-aa", "-l", "1"))
    assert result["failed"] == 0 and result["ok"] == 1, result["out"]
    [survey] = collect(menu_gateway, msisdn)
    assert "1-5" in survey["text"] and survey["from"] == "10086"
    client = SimulatorClient("127.0.0.1", menu_gateway.ports["smpp"], "tester", "test1234")
    client.connect()
    try:
        replies = [r for r in client.command(msisdn, "10086", "4") if r["kind"] == "reply"]
    finally:
        client.close()
    assert replies and "4分" in replies[0]["text"]
    report = http_json(menu_gateway, "/api/reports/surveys")
    assert report["responses"] >= 1 and report["histogram"]["4"] >= 1
    assert any(i["msisdn"] == msisdn and i["score"] == 4 for i in report["items"])


@pytest.fixture(scope="module")
def busy_gateway(tmp_path_factory):
    gw = start_ivr_gateway(tmp_path_factory.mktemp("busy"), "--set", "ivr.agents=0",
                           "--set", "ivr.queue_busy_threshold=0", "--set", "ivr.busy_sms_ratio=1")
    yield gw
    gw.stop()


def test_sipp_busy_queue_guidance_sms_once(busy_gateway):
    msisdn = "13800000002"  # gotone
    result = run_sipp(busy_gateway, "ivr_queue_abandon", "10086", 2, rate=1, callers=[msisdn, msisdn])
    assert result["failed"] == 0 and result["ok"] == 2, result["out"]
    got = collect(busy_gateway, msisdn, want=2, wait=5)
    assert len(got) == 1, got  # busy, then abandoned twice: one guidance SMS a day
    assert "全球通" in got[0]["text"] and "*200#" in got[0]["text"] and got[0]["from"] == "10086"
    report = http_json(busy_gateway, "/api/reports/busy-hour")
    assert report["sent"] >= 1 and report["by_reason"]["over_threshold"] >= 1


@pytest.fixture(scope="module")
def survey_ivr_gateway(tmp_path_factory):
    gw = start_ivr_gateway(tmp_path_factory.mktemp("sivr"), "--set", "ivr.agents=1", "--set", "ivr.agent_aht_s=1",
                           "--set", "survey.mode=ivr", "--set", "survey.sample_rate=1")
    yield gw
    gw.stop()


def test_sipp_ivr_survey(survey_ivr_gateway):
    result = run_sipp(survey_ivr_gateway, "ivr_survey", "10086", 3, rate=3,
                      callers=["13800000021", "13800000022", "13800000023"], extra=("-l", "1"))
    assert result["failed"] == 0 and result["ok"] == 3, result["out"]
    report = http_json(survey_ivr_gateway, "/api/reports/surveys")
    assert report["histogram"]["5"] >= 3


def test_ivr_files_are_known_to_the_fixture_set():
    assert set(IVR_FILES) <= set(fixture_files())
