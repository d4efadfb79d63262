"""``serve --workers 2``: what an account promises holds across worker processes.

Which worker holds a session is read from the bind's log line (``w<N> [gateway.smpp] bound ...
from 127.0.0.1:<client port>``); a test that needs a session on the other worker binds until the
kernel puts one there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import time
from collections import defaultdict

import pytest

from gateway.smpp.text import decode_message, parse_udh
from tests.harness import RunningGateway, start_gateway
from tests.raw_esme import BindRefused, RawESME

pytestmark = pytest.mark.integration

THROTTLED = 0x58
BINDFAIL = 0x0D


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("group"), "--population", "0", workers=2)
    yield gw
    gw.stop()


def connect(gw: RunningGateway, account: str = "tester", kind: str = "trx", worker: int | None = None,
            tries: int = 60, window: int = 50) -> tuple[RawESME, int]:
    """A bound session, on ``worker`` when given; refusals for the account's bind limit are retried
    (a session closed a moment ago may not have been counted out yet)."""
    for _ in range(tries):
        try:
            esme = RawESME("127.0.0.1", gw.ports["smpp"], system_id=account, kind=kind, window=window)
        except BindRefused as exc:
            if exc.status != BINDFAIL:
                raise
            time.sleep(0.2)
            continue
        where = gw.worker_of(esme.sock.getsockname()[1])
        if worker is None or where == worker:
            return esme, where
        esme.close()
    raise AssertionError(f"no {kind} bind of {account} landed on worker {worker} in {tries} tries")


def pump_all(esmes: list[RawESME], until, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out waiting for the gateway"
        for esme in esmes:
            esme.pump(0.02)


def ask(sender: RawESME, everyone: list[RawESME], msisdn: str, text: str) -> str:
    """Send ``text`` to 10086 and return the whole reply, whichever bind of the account it reaches."""
    seq = sender.submit(msisdn, "10086", text)
    pump_all(everyone, lambda: seq in sender.out.acked)
    mo = sender.out.acked[seq]
    pump_all(everyone, lambda: _reply_text(everyone, mo) is not None)
    return _reply_text(everyone, mo)


def _reply_text(esmes: list[RawESME], mo: str) -> str | None:
    parts = [r for e in esmes for r in e.out.replies if r["mo"] == mo and r["esm_class"] != 0x04]
    if not parts:
        return None
    texts: dict[int, str] = {}
    total = 1
    for part in parts:
        body, seq = part["short_message"], 1
        if part["esm_class"] & 0x40:
            concat, body = parse_udh(body)
            total, seq = concat.total, concat.seq
        texts[seq] = decode_message(part["data_coding"], body)
    if len(texts) < total:
        return None
    return "".join(texts[i] for i in sorted(texts))


def close_all(*esmes: RawESME) -> None:
    for esme in esmes:
        esme.close()


def test_fifth_bind_is_refused_even_when_the_binds_are_on_different_workers(group):
    first, where = connect(group)
    binds = [first, connect(group, worker=1 - where)[0], connect(group, worker=where)[0],
             connect(group, worker=1 - where)[0]]
    try:
        for _ in range(4):  # wherever the kernel puts it, the fifth is refused
            with pytest.raises(BindRefused) as refused:
                RawESME("127.0.0.1", group.ports["smpp"])
            assert refused.value.status == BINDFAIL
        binds.pop().close()
        binds.append(connect(group)[0])  # a freed bind is free on either worker
    finally:
        close_all(*binds)


def test_account_throttle_is_shared_by_the_workers(group):
    """partner1 may send 50 msg/s (burst 5): two binds on two workers together get no more."""
    a, where = connect(group, account="partner1")
    b, _ = connect(group, account="partner1", worker=1 - where)
    sent: dict[RawESME, list[int]] = {a: [], b: []}
    try:
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 2.0:
            for esme in (a, b):
                while esme.window_free() > 0 and i < 2000:
                    sent[esme].append(esme.submit(f"1380000{i % 10000:04d}", "13900000001", "hello"))
                    i += 1
                esme.pump(0.005)
        pump_all([a, b], lambda: all(len(e.out.acked) + len(e.out.errors) == len(sent[e]) for e in (a, b)))
        elapsed = time.monotonic() - start
    finally:
        close_all(a, b)
    accepted = len(a.out.acked) + len(b.out.acked)
    statuses = {s for e in (a, b) for s in e.out.errors.values()}
    assert statuses == {THROTTLED}, statuses
    # one bucket for the account: 50/s plus the burst and what two workers may borrow ahead of a lease
    assert accepted <= 50 * elapsed + 5 + 4, f"{accepted} accepted in {elapsed:.2f} s"
    assert a.out.acked and b.out.acked


def test_a_reply_reaches_the_receiver_bound_on_the_other_worker(group):
    rx, where = connect(group, kind="rx")
    tx, _ = connect(group, kind="tx", worker=1 - where)
    try:
        started = time.monotonic()
        text = ask(tx, [tx, rx], "13800000002", "CXYE")
        assert re.search(r"\d+\.\d{2}", text)
        assert not tx.out.replies, "a TX bind gets no deliver_sm"
        assert time.monotonic() - started < 10
    finally:
        close_all(tx, rx)


def test_an_order_on_one_worker_is_off_the_shelf_answered_by_the_other(group):
    a, where = connect(group)
    b, _ = connect(group, worker=1 - where)
    both = [a, b]
    msisdn = "13800000003"
    try:
        shelf = ask(b, both, msisdn, "200")  # cached by worker b, if it caches
        code = re.search(r"回(KT\w+)", shelf).group(1)
        ask(a, both, msisdn, code)  # the second-confirmation prompt
        ask(a, both, msisdn, "Y")
        after = ask(b, both, msisdn, "200")
    finally:
        close_all(a, b)
    assert code not in after, f"{code} still offered by the other worker after the order:\n{after}"


def test_exactly_one_campaign_scheduler(group):
    # every worker has started its scheduler service before the group's ready line
    leads = group.wait_log(r"^\S+ \S+ +(w\d+) \[gateway\.scheduler\] campaign scheduler: this process leads$")
    assert [m.group(1) for m in leads] == ["w0"]


def _versions(gw: RunningGateway, want: int = 2) -> dict[int, int]:
    import json
    import urllib.request

    seen: dict[int, int] = {}
    for _ in range(200):
        with urllib.request.urlopen(gw.url("/healthz"), timeout=10) as resp:
            body = json.loads(resp.read())
        seen[body["worker"]] = body["fixtures_version"]
        if len(seen) == want:
            return seen
    raise AssertionError(f"/healthz answered only by workers {sorted(seen)}")


def test_sighup_reloads_every_worker(group):
    before = _versions(group)
    reloaded = len(group.wait_log(r"fixtures reloaded \(another process", count=0))
    group.proc.send_signal(signal.SIGHUP)
    group.wait_log(r"fixtures reloaded \(another process", count=reloaded + 2)
    after = _versions(group)
    assert all(after[w] > before[w] for w in before), (before, after)


def test_a_malformed_pdu_on_one_worker_disturbs_no_session_of_another(group):
    a, where = connect(group)
    b, _ = connect(group, worker=1 - where)
    try:
        for _ in range(8):  # spread over both workers by the kernel
            sock = socket.create_connection(("127.0.0.1", group.ports["smpp"]), timeout=10)
            try:
                sock.sendall(struct.pack(">IIII", 10_000_000, 4, 0, 1))
                _length, command_id, status = struct.unpack(">III", sock.recv(12))
                assert (command_id, status) == (0x80000000, 0x02)  # as with one process
            finally:
                sock.close()
        for esme in (a, b):
            assert re.search(r"\d+\.\d{2}", ask(esme, [a, b], "13800000004", "CXYE"))
            assert not esme.out.errors
    finally:
        close_all(a, b)
    assert "was killed" not in group.log_text() and "exited with status" not in group.log_text()


def test_default_on_sqlite_is_one_process(tmp_path):
    """Several processes on one SQLite file serve the "200" path slower than one (gateway/service.py
    default_workers): without --workers, SQLite gets one."""
    gw = start_gateway(tmp_path, "--population", "0", workers=None)
    try:
        assert _versions(gw, 1) == {None: 1}
    finally:
        assert gw.stop() == 0


def test_default_on_postgres_is_one_worker_per_core_and_sigterm_stops_them_all(tmp_path, pg_url):
    gw = start_gateway(tmp_path, "--population", "0", workers=None, db_url=pg_url)
    cores = os.cpu_count() or 1
    try:
        if cores > 1:
            assert sorted(_versions(gw, cores)) == list(range(cores))
            pids = [gw.worker_pid(i) for i in range(cores)]
        else:
            assert _versions(gw, 1) == {None: 1}
            pids = []
    finally:
        assert gw.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sigkill_of_a_worker_under_mo_load_loses_nothing_and_the_other_worker_does_not_notice(tmp_path):
    gw = start_gateway(tmp_path, "--population", "0", workers=2)
    # two windows of 20: never more in flight than the account's burst of 50, so nothing is throttled
    survivor, where = connect(gw, window=20)
    victim, _ = connect(gw, worker=1 - where, window=20)
    sent = 0
    try:
        start = time.monotonic()
        while min(len(survivor.out.acked), len(victim.out.acked)) < 100:
            assert time.monotonic() - start < 60, "MO load did not get through"
            for esme in (survivor, victim):  # ~300 msg/s in all: under the account's 500 msg/s
                while esme.window_free() > 0 and sent < (time.monotonic() - start) * 300:
                    esme.submit(f"138000{1 + sent % 100:05d}", "10086", "CXYE")
                    sent += 1
                esme.pump(0.01)
        os.kill(gw.worker_pid(1 - where), signal.SIGKILL)
        while victim.pump(0.2):  # whatever was in flight when it died
            pass
        killed, after = time.monotonic(), 0
        while time.monotonic() - killed < 3:  # the survivor keeps its session and its load (150 msg/s)
            if survivor.window_free() > 0 and after < (time.monotonic() - killed) * 150:
                survivor.submit(f"138000{1 + sent % 100:05d}", "10086", "CXYE")
                sent, after = sent + 1, after + 1
            assert survivor.pump(0.01), "the surviving worker's session was closed"
        gw.wait_log(rf"worker {1 - where} serving again", timeout=120)
        again, _ = connect(gw)
        acked = set(survivor.out.acked.values()) | set(victim.out.acked.values())
        everyone = [survivor, victim, again]
        replies_by_mo: dict[str, set[str]] = defaultdict(set)

        def all_answered() -> bool:
            for esme in everyone:
                for reply in esme.out.replies:
                    replies_by_mo[reply["mo"]].add(reply["id"])
            return all(replies_by_mo.get(mo) for mo in acked)

        pump_all([survivor, again], all_answered, timeout=90)
        assert not survivor.out.errors, "the survivor's submits were refused"
        assert survivor.session.bound_kind == "trx"
    finally:
        for esme in (survivor, victim):
            esme.sock.close()
        gw.stop()
    doubled = {mo: ids for mo, ids in replies_by_mo.items() if len(ids) > 1}
    assert not doubled, f"MO answered by more than one reply message: {list(doubled.items())[:3]}"
    assert re.search(rf"worker {1 - where} was killed by SIGKILL", gw.log_text())


@pytest.mark.postgres
def test_a_group_on_postgresql_shares_binds_replies_and_one_scheduler(tmp_path, pg_url):
    gw = start_gateway(tmp_path, "--population", "0", db_url=pg_url, workers=2)
    try:
        rx, where = connect(gw, kind="rx")
        tx, _ = connect(gw, kind="tx", worker=1 - where)
        try:
            assert re.search(r"\d+\.\d{2}", ask(tx, [tx, rx], "13800000005", "CXYE"))
        finally:
            close_all(tx, rx)
        assert len(gw.wait_log(r"campaign scheduler: this process leads")) == 1  # the advisory lock's one
        # each worker hears the other machines' cache events on its own connection
        gw.wait_log(r"^\S+ \S+ +w\d \[gateway\.fleet\] listening for fleet events on PostgreSQL", count=2)
    finally:
        gw.stop()
