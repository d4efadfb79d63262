"""``serve --workers 2``: the parent accepts SMPP connections and hands each to the worker holding
the fewest, so four binds are two per worker (the kernel's SO_REUSEPORT hash often made them 3/1).

Which worker holds a session is read from the bind's log line (``w<N> [gateway.smpp] bound ...
from 127.0.0.1:<client port>``: the peer address survives the hand-over), and the parent logs each
hand-over with the group's counts (``smpp connection from ... to worker 1 (SMPP connections per
worker: w0=2 w1=2)``).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import pytest

from tests.harness import RunningGateway, start_gateway
from tests.raw_esme import BindRefused, RawESME
from tests.test_workers import ask, close_all

pytestmark = pytest.mark.integration

BINDFAIL = 0x0D


def bind(gw: RunningGateway, tries: int = 50) -> tuple[RawESME, int]:
    """A tester TRX bind and the worker holding it (a bind refused because a session closed a moment
    ago is not counted out yet is tried again)."""
    for _ in range(tries):
        try:
            esme = RawESME("127.0.0.1", gw.ports["smpp"])
        except BindRefused as exc:
            if exc.status != BINDFAIL:
                raise
            time.sleep(0.2)
            continue
        return esme, gw.worker_of(esme.sock.getsockname()[1])
    raise AssertionError(f"no bind in {tries} tries")


def handed(gw: RunningGateway, count: int) -> list[re.Match]:
    return gw.wait_log(r"\[gateway\.cluster\] smpp connection from 127\.0\.0\.1:(\d+) to worker (\d) "
                       r"\(SMPP connections per worker: (.*)\)$", count=count)


def bind_four(gw: RunningGateway, binds: list[RawESME]) -> list[int]:
    """Four binds, appended to ``binds``; asserts they are two per worker and returns each one's worker."""
    placed = []
    for _ in range(4):
        esme, worker = bind(gw)
        binds.append(esme)
        placed.append(worker)
    assert Counter(placed) == {0: 2, 1: 2}, placed
    return placed


def test_four_binds_are_two_per_worker_and_each_gets_its_reply(tmp_path):
    gw = start_gateway(tmp_path, "--population", "0", workers=2)
    binds: list[RawESME] = []
    try:
        placed = bind_four(gw, binds)
        assert handed(gw, 4)[-1].group(3) == "w0=2 w1=2"
        for i, esme in enumerate(binds):
            assert re.search(r"回KT\w+", ask(esme, binds, f"1380000001{i}", "200"))
        assert all(not e.out.errors for e in binds)
        # a closed session is counted out: the next connection goes where it was
        gone = placed.index(1)
        binds.pop(gone).close()
        gw.wait_log(r"smpp connection on worker 1 ended \(SMPP connections per worker: w0=2 w1=1\)$")
        esme, worker = bind(gw)
        binds.append(esme)
        assert worker == 1
    finally:
        close_all(*binds)
        assert gw.stop() == 0


def test_binds_of_a_killed_worker_reconnect_to_the_survivor_then_to_the_restarted_worker(tmp_path):
    gw = start_gateway(tmp_path, "--population", "0", workers=2)
    binds: list[RawESME] = []
    try:
        placed = bind_four(gw, binds)
        os.kill(gw.worker_pid(1), signal.SIGKILL)
        gw.wait_log(r"worker 1 was killed by SIGKILL")
        victims = [e for e, w in zip(binds, placed, strict=True) if w == 1]
        for esme in victims:
            deadline = time.monotonic() + 10
            while esme.pump(0.2):
                assert time.monotonic() < deadline, "a bind of the killed worker is still open"
            esme.sock.close()
        binds = [e for e in binds if e not in victims]
        again, where = bind(gw)  # worker 1 is starting again: only worker 0 takes connections
        binds.append(again)
        assert where == 0
        gw.wait_log(r"worker 1 serving again", timeout=120)
        again, where = bind(gw)  # 3 on worker 0, none on the restarted worker 1
        binds.append(again)
        assert where == 1
        assert handed(gw, 6)[-1].group(3) == "w0=3 w1=1"
        for i, esme in enumerate(binds):
            assert re.search(r"回KT\w+", ask(esme, binds, f"1380000002{i}", "200"))
    finally:
        close_all(*binds)
        assert gw.stop() == 0
