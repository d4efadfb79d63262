"""HTTP ops API: the real Gateway on a task.Clock, its twisted.web Site fed raw HTTP bytes in random chunks.

No sockets, no global reactor: every request goes through twisted.web's HTTP parser
and the klein router exactly as on the wire. One integration test at the end drives the
running gateway (``run_gateway.py serve``) over loopback.
"""

from __future__ import annotations

import json
import random
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from core.fixtures import read_dir
from gateway.app import Gateway
from gateway.http import make_site
from gateway.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "demo"
T0 = 1_795_370_400.0  # 2026-11-23 10:00 China time: inside every campaign's send window
AUTH = {"Authorization": "Bearer demo-token"}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        return self.json()["error"]


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Response(int(lines[0].split()[1]), headers, body)


class Client:
    """Speaks HTTP/1.1 to a Site over a StringTransport, feeding the request in random-sized chunks."""

    def __init__(self, site, seed: int = 7):
        self.site = site
        self.rng = random.Random(seed)

    def open(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
             chunked: bool = False):
        proto = self.site.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        raw = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for name, value in (headers or {}).items():
            raw += f"{name}: {value}\r\n"
        data = raw.encode()
        if body is not None and chunked:
            data += b"Transfer-Encoding: chunked\r\n\r\n"
            for i in range(0, len(body), 65536):
                part = body[i:i + 65536]
                data += b"%x\r\n%s\r\n" % (len(part), part)
            data += b"0\r\n\r\n"
        else:
            if body is not None:
                data += b"Content-Length: %d\r\n" % len(body)
            data += b"\r\n" + (body or b"")
        self._feed(proto, data)
        return proto, transport

    def _feed(self, proto, data: bytes) -> None:
        if len(data) > 100_000:  # big bodies: large chunks, the parser path is the same
            for i in range(0, len(data), 50_000):
                proto.dataReceived(data[i:i + 50_000])
            return
        i = 0
        while i < len(data):
            n = self.rng.choice((1, 1, 2, 7, 64, 512))
            proto.dataReceived(data[i:i + n])
            i += n

    def request(self, method: str, path: str, *, json_body: Any = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, chunked: bool = False) -> Response:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        _, transport = self.open(method, path, body=body, headers=headers, chunked=chunked)
        return parse_response(transport.value())

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, *, auth: bool = True, **kw) -> Response:
        headers = {**(AUTH if auth else {}), **kw.pop("headers", {})}
        return self.request("POST", path, json_body=json_body, headers=headers, **kw)


def make_gateway(directory: Path) -> tuple[Gateway, Clock]:
    clock = Clock()
    clock.advance(T0)
    gateway = Gateway(clock, f"sqlite:///{directory / 'gateway.db'}")
    gateway.load_fixtures_dir(str(DEMO))
    return gateway, clock


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    gateway, clock = make_gateway(tmp_path_factory.mktemp("http"))
    return gateway, clock, Client(make_site(gateway, {}))


@pytest.fixture
def client(env) -> Client:
    return env[2]


def assert_error(resp: Response, status: int, code: str | None = None, field: str | None = None) -> None:
    assert resp.status == status, resp.body
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.error
    assert set(err) == {"code", "message", "problems"} and err["message"]
    if code:
        assert err["code"] == code
    if field:
        assert field in err["message"]
        assert any(p.get("field") == field for p in err["problems"]), err


# --- reads -----------------------------------------------------------------------------------------------


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status == 200
    assert resp.json()["status"] == "ok" and resp.json()["fixtures_version"] >= 1


def test_subscriber_and_unknown_and_invalid(client):
    body = client.get("/api/subscribers/13800000001").json()
    assert body["msisdn"] == "13800000001" and body["balance_text"] == f"{body['balance']:.2f}"
    assert_error(client.get("/api/subscribers/13999999999"), 404, "not_found")
    assert_error(client.get("/api/subscribers/12ab"), 400, "invalid_request", field="msisdn")


def test_shelf_matches_the_200_sms_and_explains(client):
    shelf = client.get("/api/subscribers/13800000002/shelf").json()
    assert shelf["offers"] and [o["rank"] for o in shelf["offers"]] == list(range(1, len(shelf["offers"]) + 1))
    assert all(o["order"] == f"KT{o['code']}" for o in shelf["offers"])
    reply = client.post("/api/messages", {"from": "13800000002", "to": "10086", "text": "200"}).json()
    assert reply["action"] == "shelf"
    for offer in shelf["offers"]:
        assert offer["order"] in reply["reply"]
    explained = client.get("/api/subscribers/13800000002/shelf?explain=1").json()
    assert [o["code"] for o in explained["offers"]] == [o["code"] for o in shelf["offers"]]
    assert explained["decisions"] and all("reasons" in d for d in explained["decisions"])
    assert_error(client.get("/api/subscribers/13800000002/shelf?explain=maybe"), 400, field="explain")
    assert_error(client.get("/api/subscribers/13999999999/shelf"), 404)


def test_unknown_path_and_method_are_json_errors(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    resp = client.request("DELETE", "/api/outbox")
    assert_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["allow"]


# --- writes: token, body limits, validation ---------------------------------------------------------------


def test_writes_need_a_valid_bearer_token(client):
    msg = {"from": "13800000001", "to": "10086", "text": "CXYE"}
    resp = client.post("/api/messages", msg, auth=False)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert_error(client.post("/api/messages", msg, auth=False, headers={"Authorization": "Bearer nope"}), 401)
    assert_error(client.post("/api/messages", msg, auth=False, headers={"Authorization": "Basic ZGVtbw=="}), 401)
    assert client.post("/api/messages", msg).status == 200


@pytest.mark.parametrize("body, field", [
    ({"to": "10086", "text": "200"}, "from"),
    ({"from": "138x", "to": "10086", "text": "200"}, "from"),
    ({"from": "13800000001", "to": "", "text": "200"}, "to"),
    ({"from": "13800000001", "to": "10086", "text": 200}, "text"),
    ({"from": "13800000001", "to": "10086", "text": "x" * 1001}, "text"),
    ({"from": "13800000001", "to": "10086", "text": "200", "extra": 1}, "extra"),
])
def test_message_body_validation_names_the_field(client, body, field):
    assert_error(client.post("/api/messages", body), 400, "invalid_request", field=field)


def test_bodies_not_json_or_too_large(client):
    assert_error(client.post("/api/messages", body=b"{not json", headers={"Content-Type": "application/json"}),
                 400, field="body")
    assert_error(client.post("/api/messages", body=b"[1]", headers={"Content-Type": "application/json"}),
                 400, field="body")
    assert_error(client.post("/api/messages", body=b"from=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type")
    big = json.dumps({"from": "13800000001", "to": "10086", "text": "x" * 70_000}).encode()
    assert_error(client.post("/api/messages", body=big, headers={"Content-Type": "application/json"}), 413)
    # chunked: no Content-Length to refuse up front; the body read is cut at the limit
    assert_error(client.post("/api/messages", body=big, chunked=True,
                             headers={"Content-Type": "application/json"}), 413)
    # beyond the largest limit the request object stops storing the body at all
    huge = b'{"files": {"a.yaml": "' + b"x" * (8 * 1024 * 1024) + b'"}}'
    assert_error(client.post("/api/fixtures", body=huge, chunked=True,
                             headers={"Content-Type": "application/json"}), 413, "payload_too_large")


def test_message_reply_is_logged_and_counted(env):
    gateway, clock, client = env
    reply = client.post("/api/messages", {"from": "13800000003", "to": "10086", "text": "CXYE"}).json()
    assert reply["action"] and reply["reply"] and reply["source"] == "10086" and reply["message_id"]
    metrics = client.get("/metrics").body.decode()
    assert 'gateway_sms_in_total{channel="http"}' in metrics
    assert "gateway_router_latency_seconds_bucket" in metrics


def test_message_through_the_mo_pipeline(tmp_path):
    from gateway.pipeline import MOPipeline

    gateway, clock = make_gateway(tmp_path)
    pipeline = MOPipeline(gateway)
    client = Client(make_site(gateway, {"pipeline": pipeline}))
    proto, transport = client.open("POST", "/api/messages", body=json.dumps(
        {"from": "13800000001", "to": "10086", "text": "200"}).encode(),
        headers={**AUTH, "Content-Type": "application/json"})
    assert transport.value() == b""  # waits for the pipeline's group commit
    clock.advance(0)
    resp = parse_response(transport.value())
    assert resp.status == 200 and resp.json()["action"] == "shelf"
    assert pipeline.stats["mo"] == 1


def test_a_full_batch_commits_at_the_end_of_the_turn(tmp_path):
    """Under load a batch waits up to pipeline.batch_ms for company, but one of FULL_BATCH messages commits
    at the end of the reactor turn: an ESME sending plain submit_sm as fast as 4 windows of 10 allow waits
    for those acknowledgements (a 3 ms wait capped it at ~10,000/s)."""
    from gateway.pipeline import FULL_BATCH, Accepted, MOPipeline
    from offers.router import Inbound

    gateway, clock = make_gateway(tmp_path)
    pipeline = MOPipeline(gateway)
    done: list = []

    def accept(i: int) -> None:
        pipeline.accept(Accepted(Inbound("sms", f"1380000{i:04d}", "13900000000", "hi", "load"), f"m{i}", "load",
                                 None, lambda _reply, error: done.append(error), route=False))

    accept(0)
    clock.advance(0)
    assert done == [None]  # idle: at once
    for i in range(1, FULL_BATCH):
        accept(i)
    clock.advance(0)
    assert len(done) == 1  # under load: the batch window (3 ms) has not passed
    accept(FULL_BATCH)
    clock.advance(0)
    assert len(done) == 1 + FULL_BATCH and not any(done)


# --- fixtures ---------------------------------------------------------------------------------------------


def test_fixture_upload_refuses_a_broken_set_whole_then_loads_a_good_one(env):
    gateway, _, client = env
    files = read_dir(DEMO)
    before = gateway.snapshot.version
    broken = dict(files)
    broken["offers.yaml"] = files["offers.yaml"] + "\n  - code: [unclosed\n"
    resp = client.post("/api/fixtures", {"files": broken})
    assert_error(resp, 422, "invalid_fixtures")
    problems = resp.error["problems"]
    assert problems and all(p["file"] and p["reason"] and "line" in p for p in problems)
    assert any(p["file"] == "offers.yaml" and p["line"] for p in problems)
    assert gateway.snapshot.version == before
    ok = client.post("/api/fixtures", {"files": files})
    assert ok.status == 200, ok.body
    assert ok.json()["loaded"]["offers.offers"] > 0 and ok.json()["version"] == before + 1
    info = client.get("/api/fixtures").json()
    assert info["version"] == before + 1 and "offers.yaml" in info["files"]


@pytest.mark.parametrize("body, field", [
    ({}, "files"), ({"files": {}}, "files"), ({"files": []}, "files"),
    ({"files": {"../etc/passwd.yaml": "x"}}, "files.../etc/passwd.yaml"),
    ({"files": {"a.txt": "x"}}, "files.a.txt"), ({"files": {"a.yaml": 3}}, "files.a.yaml"),
    ({"files": {"a.yaml": "x"}, "more": 1}, "more"),
])
def test_fixture_upload_shape_errors(client, body, field):
    assert_error(client.post("/api/fixtures", body), 400, field=field)


# --- outbox and pagination --------------------------------------------------------------------------------


def test_outbox_filter_and_pagination_follow_next(env):
    gateway, _, client = env
    with gateway.db() as session, session.begin():
        for i in range(7):
            gateway.outbox.enqueue(session, kind="reply", source="10086", dest=f"1390000000{i}", text=f"t{i}",
                                   account="tester")
    seen, url = [], "/api/outbox?state=queued&limit=3"
    while url:
        page = client.get(url).json()
        assert len(page["items"]) <= 3 and all(i["state"] == "queued" for i in page["items"])
        seen.extend(i["id"] for i in page["items"])
        url = page["next"]
    assert len(seen) == len(set(seen)) >= 7 and seen == sorted(seen, reverse=True)
    assert page["depth"]["queued"] >= 7
    assert client.get("/api/outbox?dest=13900000004").json()["items"][0]["text"] == "t4"
    assert_error(client.get("/api/outbox?state=lost"), 400, field="state")
    assert_error(client.get("/api/outbox?limit=0"), 400, field="limit")
    assert_error(client.get("/api/outbox?offset=-1"), 400, field="offset")


# --- campaigns --------------------------------------------------------------------------------------------


class InlineScheduler:
    """CampaignScheduler with its worker thread replaced by a direct call."""

    def __new__(cls, gateway):
        from gateway.scheduler import CampaignScheduler

        return CampaignScheduler(gateway.reactor, gateway.db, gateway.outbox,
                                 lambda: gateway.snapshot.extras.get("campaigns") or gateway.snapshot.parsed,
                                 gateway.live_settings, in_thread=lambda f: defer.succeed(f()))


def test_campaigns_list_paged(client):
    page = client.get("/api/campaigns?limit=2").json()
    assert len(page["items"]) == 2 and page["total"] >= 3 and page["next"]
    second = client.get(page["next"]).json()
    assert {c["id"] for c in page["items"]}.isdisjoint(c["id"] for c in second["items"])
    assert {"id", "name", "state", "progress"} <= set(page["items"][0])


def test_campaign_create_validates_with_the_whole_set(tmp_path):
    gateway, _, = make_gateway(tmp_path)
    client = Client(make_site(gateway, {}))
    new = {"id": "api-test", "name": "接口测试活动", "kind": "marketing", "target": "age >= 18",
           "offers": ["LL20"], "schedule": {"cron": "0 11 * * mon-fri"}, "window": "09:00-20:00",
           "templates": {"sms": "{{ offer_name }} 回复{{ order }}办理"}}
    resp = client.post("/api/campaigns", new)
    assert resp.status == 201, resp.body
    ids = [c["id"] for c in client.get("/api/campaigns?limit=500").json()["items"]]
    assert "api-test" in ids
    assert_error(client.post("/api/campaigns", new), 409, "conflict")
    bad = dict(new, id="api-bad", target="no_such_attribute > 1")
    resp = client.post("/api/campaigns", bad)
    assert_error(resp, 422, "invalid_fixtures")
    assert any(p["file"].endswith("campaigns.yaml") for p in resp.error["problems"])
    assert_error(client.post("/api/campaigns", {"id": "has space"}), 400, field="id")


def test_campaign_run_pause_resume(tmp_path):
    gateway, _ = make_gateway(tmp_path)
    assert_error(Client(make_site(gateway, {})).post("/api/campaigns/data-boost/pause"), 503, "no_scheduler")
    client = Client(make_site(gateway, {"scheduler": InlineScheduler(gateway)}))
    run = client.post("/api/campaigns/care-roaming/run")
    assert run.status == 200, run.body
    assert run.json()["campaign"] == "care-roaming" and "excluded" in run.json()
    assert client.post("/api/campaigns/care-roaming/pause").json()["state"] == "paused"
    report = client.get("/api/reports/campaigns?campaign=care-roaming").json()
    assert report["campaigns"][0]["state"] == "paused"
    assert client.post("/api/campaigns/care-roaming/resume").json()["state"] == "active"
    assert_error(client.post("/api/campaigns/no-such/run"), 404, "not_found")
    assert_error(client.get("/api/reports/campaigns?campaign=no-such"), 404, "not_found")
    assert_error(client.post("/api/campaigns/care-roaming/pause", auth=False), 401)


# --- reports ----------------------------------------------------------------------------------------------


def test_campaign_report_json_and_csv(client):
    report = client.get("/api/reports/campaigns").json()
    assert "campaigns" in report and "totals" in report
    for resp in (client.get("/api/reports/campaigns?format=csv"),
                 client.get("/api/reports/campaigns", headers={"Accept": "text/csv"})):
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/csv")
        assert "attachment" in resp.headers["content-disposition"]
        assert resp.body.decode().splitlines()[0].startswith("campaign,state")
    assert_error(client.get("/api/reports/campaigns?format=xml"), 400, field="format")
    assert_error(client.get("/api/reports/weather"), 404)


@pytest.mark.parametrize("kind", ["surveys", "busy-hour", "ivr"])
def test_ivr_reports_json_and_csv(client, kind):
    resp = client.get(f"/api/reports/{kind}?days=30")
    assert resp.status == 200, resp.body
    csv_resp = client.get(f"/api/reports/{kind}?format=csv")
    assert csv_resp.status == 200 and csv_resp.body.decode().count("\n") >= 2
    assert_error(client.get(f"/api/reports/{kind}?days=0"), 400, field="days")


def test_survey_report_shape_and_paging(client):
    body = client.get("/api/reports/surveys?limit=1").json()
    assert {"responses", "histogram", "mean", "satisfaction", "items", "next"} <= set(body)
    assert set(body["histogram"]) == {"1", "2", "3", "4", "5"} and len(body["items"]) <= 1


# --- metrics, stats, events, dashboard --------------------------------------------------------------------


def test_metrics_exposition_and_separate_registries(env):
    gateway, _, client = env
    resp = client.get("/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.body.decode()
    for name in ("gateway_outbox_depth{state=\"queued\"}", "gateway_outbox_oldest_queued_age_seconds",
                 "gateway_http_requests_total", "gateway_fixture_version"):
        assert name in text
    one, two = GatewayMetrics(), GatewayMetrics()
    one.sip_calls.labels(outcome="completed").inc()
    assert b'gateway_sip_calls_total{outcome="completed"} 1.0' in one.render()
    assert b"gateway_sip_calls_total{" not in two.render()


def test_stats_fall_back_to_the_database_and_merge_the_provider(tmp_path):
    gateway, clock = make_gateway(tmp_path)
    provider = {"queue": {"waiting": 4, "busy": True}, "outbox": {"queued": 99}}
    client = Client(make_site(gateway, {"stats": lambda: provider}))
    stats = client.get("/api/stats").json()
    assert stats["queue"]["waiting"] == 4 and stats["queue"]["busy"] is True  # provider wins key by key
    assert stats["outbox"]["queued"] == 99 and "failed" in stats["outbox"]
    assert len(stats["sms"]["in_per_min"]) == 30


def test_event_stream_pushes_live_numbers_and_stops_on_disconnect(tmp_path):
    gateway, clock = make_gateway(tmp_path)
    client = Client(make_site(gateway, {}))
    proto, transport = client.open("GET", "/api/events")

    def events() -> list[dict]:
        text = _dechunk(transport.value().partition(b"\r\n\r\n")[2]).decode()
        return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]

    head = transport.value().partition(b"\r\n\r\n")[0].decode().lower()
    assert "200 ok" in head and "text/event-stream" in head
    first = events()[-1]["sms"]["in_total"]
    client.post("/api/messages", {"from": "13800000005", "to": "10086", "text": "200"})
    clock.advance(1)
    assert events()[-1]["sms"]["in_total"] == first + 1
    assert events()[-1]["sms"]["in_per_min"][-1] >= 1
    clock.advance(1)
    count = len(events())
    proto.connectionLost(Failure(ConnectionDone()))
    clock.advance(5)
    assert len(events()) == count
    assert not clock.getDelayedCalls()  # the LoopingCall stopped with its last client


def test_dashboard_page_and_local_assets(client):
    page = client.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.body.decode()
    assert "坐席排队" in html and 'id="sms-in-total"' in html
    for asset, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css"), ("favicon.svg", "svg")):
        resp = client.get(f"/static/{asset}")
        assert resp.status == 200 and kind in resp.headers["content-type"]
        text = resp.body.decode()
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert_error(client.get("/static/nope.js"), 404)


# --- the running gateway ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_running_gateway_http(tmp_path):
    from tests.harness import start_gateway

    gw = start_gateway(tmp_path, "--population", "0")
    try:
        assert "http" in gw.ports, gw.ports
        with urllib.request.urlopen(gw.url("/healthz"), timeout=10) as resp:
            assert json.load(resp)["status"] == "ok"
        req = urllib.request.Request(gw.url("/api/messages"), method="POST", headers={
            **AUTH, "Content-Type": "application/json"},
            data=json.dumps({"from": "13800000001", "to": "10086", "text": "CXYE"}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            reply = json.load(resp)
        with urllib.request.urlopen(gw.url("/api/subscribers/13800000001"), timeout=10) as resp:
            balance = json.load(resp)["balance_text"]
        assert balance in reply["reply"]
        with urllib.request.urlopen(gw.url("/metrics"), timeout=10) as resp:
            assert b"gateway_outbox_depth" in resp.read()
    finally:
        gw.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
