"""Two machines on one PostgreSQL: what one changes, the other's caches stop serving (LISTEN/NOTIFY).

Two separate ``serve`` processes (``--instance a`` and ``--instance b``, one worker each) share a
fresh database. The events are asynchronous: every check polls with a deadline.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.fixtures import read_dir
from tests.harness import ROOT, RunningGateway, start_gateway
from tests.raw_esme import RawESME
from tests.test_workers import ask, close_all

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DEMO = ROOT / "fixtures" / "demo"
LISTENING = r"\[gateway\.fleet\] listening for fleet events on PostgreSQL"
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def machines(tmp_path_factory, pg_server_url):
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    root = tmp_path_factory.mktemp("fleet")
    a = start_gateway(root / "a", "--population", "0", "--instance", "a", db_url=url)
    b = start_gateway(root / "b", "--population", "0", "--instance", "b", db_url=url)
    try:
        for gw in (a, b):
            gw.wait_log(LISTENING)
        yield a, b, url
    finally:
        a.stop()
        b.stop()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def bind(gw: RunningGateway) -> RawESME:
    return RawESME("127.0.0.1", gw.ports["smpp"], system_id="tester", kind="trx", window=50)


def poll(check, what: str, timeout: float = DEADLINE_S):
    """``check()`` until it returns something true; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"


def order_on_a_is_off_the_shelf_of_b(a: RunningGateway, b: RunningGateway, msisdn: str) -> None:
    on_a, on_b = bind(a), bind(b)
    both = [on_a, on_b]
    try:
        shelf = ask(on_b, both, msisdn, "200")  # B caches this subscriber's shelf
        assert ask(on_b, both, msisdn, "200") == shelf  # from B's cache now
        code = re.search(r"回(KT\w+)", shelf).group(1)
        assert "Y" in ask(on_a, both, msisdn, code)  # the second-confirmation prompt, on A
        ask(on_a, both, msisdn, "Y")
        after = poll(lambda: (text := ask(on_b, both, msisdn, "200")) and code not in text and text,
                     f"{code} off the shelf B answers after the order on A")
    finally:
        close_all(*both)
    assert after != shelf


def test_an_order_on_one_machine_leaves_the_other_machines_shelf(machines):
    a, b, _ = machines
    order_on_a_is_off_the_shelf_of_b(a, b, "13800000003")


def _healthz(gw: RunningGateway) -> dict:
    with urllib.request.urlopen(gw.url("/healthz"), timeout=10) as resp:
        return json.loads(resp.read())


def test_fixtures_posted_to_one_machine_are_served_by_the_other_without_sighup(machines):
    a, b, _ = machines
    msisdn = "13800000004"
    files = read_dir(str(DEMO))
    marker = "新货架"
    assert marker not in files["replies.yaml"]
    files["replies.yaml"] = files["replies.yaml"].replace("  shelf: |\n    ", f"  shelf: |\n    {marker}", 1)
    assert marker in files["replies.yaml"]
    on_b = bind(b)
    try:
        assert marker not in ask(on_b, [on_b], msisdn, "200")  # cached on B
        version_b = _healthz(b)["fixtures_version"]
        request = urllib.request.Request(a.url("/api/fixtures"), data=json.dumps({"files": files}).encode(),
                                         method="POST", headers={"Authorization": "Bearer demo-token",
                                                                 "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
        poll(lambda: _healthz(b)["fixtures_version"] > version_b, "B swapped to the new fixture set")
        assert marker in ask(on_b, [on_b], msisdn, "200")
    finally:
        on_b.close()
    b.wait_log(r"fixtures reloaded \(another machine loaded them\)")
    assert "fixtures reloaded (another machine" not in a.log_text()  # A ignores its own event


def test_after_the_listening_connection_drops_b_listens_again_and_still_hears(machines):
    a, b, url = machines
    before = len(b.wait_log(r"listening for fleet events again", count=0))
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what a database restart or a network cut does to the listeners
        killed = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name = 'gateway-fleet-listener'")).scalar()
    engine.dispose()
    assert killed == 2  # one per machine
    for gw in (a, b):
        gw.wait_log(r"\[gateway\.fleet\] lost the fleet events connection")
    b.wait_log(r"listening for fleet events again", count=before + 1, timeout=DEADLINE_S)
    order_on_a_is_off_the_shelf_of_b(a, b, "13800000005")
