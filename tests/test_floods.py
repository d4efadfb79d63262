"""Floods and abuse against the real gateway: bad binds, junk, held-open halves, many sockets."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from bench.common import rss_mb
from tests.harness import start_gateway
from tests.raw_esme import RawESME

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("flood"), "--population", "0", "--set", "smpp.session_init=1",
                       "--set", "smpp.inactivity=3", "--set", "smpp.enquire_link=1")
    yield gw
    gw.stop()


def _bind_pdu(seq: int, password: bytes) -> bytes:
    body = b"tester\0" + password + b"\0" + b"\0" + bytes((0x34, 0, 0)) + b"\0"
    return struct.pack(">IIII", 16 + len(body), 0x09, 0, seq) + body


def _read_pdu(sock: socket.socket) -> tuple[int, int, int]:
    header = b""
    while len(header) < 16:
        chunk = sock.recv(16 - len(header))
        if not chunk:
            raise ConnectionError("closed")
        header += chunk
    length, command_id, status, _seq = struct.unpack(">IIII", header)
    remaining = length - 16
    while remaining > 0:
        remaining -= len(sock.recv(remaining))
    return length, command_id, status


def _round_trip_ok(gw) -> bool:
    esme = RawESME("127.0.0.1", gw.ports["smpp"])
    try:
        esme.submit("13800000001", "10086", "CXYE")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not esme.out.replies:
            esme.pump(0.1)
        return bool(esme.out.replies)
    finally:
        esme.close()


def test_wrong_password_storm_is_slowed_and_others_keep_working(strict_gateway):
    delays = []
    for seq in range(1, 9):
        # one connection per attempt, as a bind storm does (session_init=1 s closes slow ones anyway)
        sock = socket.create_connection(("127.0.0.1", strict_gateway.ports["smpp"]), timeout=30)
        try:
            start = time.monotonic()
            sock.sendall(_bind_pdu(seq, b"wrong"))
            try:
                _length, command_id, status = _read_pdu(sock)
                assert command_id == 0x80000009 and status == 0x0E
            except ConnectionError:
                pass  # closed by session_init before the slowed answer: the storm is slowed either way
            delays.append(time.monotonic() - start)
        finally:
            sock.close()
    assert delays[-1] > delays[0] + 0.5, f"repeated failures should be answered ever more slowly: {delays}"
    assert _round_trip_ok(strict_gateway)


def test_oversized_length_gets_generic_nack_and_close(strict_gateway):
    sock = socket.create_connection(("127.0.0.1", strict_gateway.ports["smpp"]), timeout=10)
    try:
        sock.sendall(struct.pack(">IIII", 10_000_000, 4, 0, 1))
        _length, command_id, status = _read_pdu(sock)
        assert command_id == 0x80000000 and status == 0x02
        assert sock.recv(16) == b""  # closed
    finally:
        sock.close()


def test_half_pdu_held_open_is_closed_by_the_session_timer(strict_gateway):
    sock = socket.create_connection(("127.0.0.1", strict_gateway.ports["smpp"]), timeout=10)
    try:
        sock.sendall(_bind_pdu(1, b"test1234")[:10])  # never finished
        start = time.monotonic()
        assert sock.recv(64) == b""
        assert time.monotonic() - start < 5
    finally:
        sock.close()


def test_many_idle_connections_are_reaped_memory_stays_bounded(strict_gateway):
    before = rss_mb(strict_gateway.proc.pid)
    socks = [socket.create_connection(("127.0.0.1", strict_gateway.ports["smpp"]), timeout=10)
             for _ in range(300)]
    try:
        assert _round_trip_ok(strict_gateway), "a real client must still get through"
        time.sleep(2.5)  # session_init is 1 s: every idle socket is closed by now
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(socks)
    finally:
        for s in socks:
            s.close()
    assert rss_mb(strict_gateway.proc.pid) - before < 50


def test_junk_stream_never_kills_the_gateway(strict_gateway):
    import random

    rng = random.Random(7)
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", strict_gateway.ports["smpp"]), timeout=5)
        try:
            sock.sendall(rng.randbytes(rng.randrange(1, 400)))
            sock.settimeout(2)
            try:
                sock.recv(4096)
            except OSError:
                pass
        finally:
            sock.close()
    assert strict_gateway.proc.poll() is None
    assert _round_trip_ok(strict_gateway)
