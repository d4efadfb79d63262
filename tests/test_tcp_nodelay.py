"""SMPP connections send without Nagle's algorithm (gateway/smpp_server.py no_delay)."""

from __future__ import annotations

import socket

import pytest

from gateway.smpp_server import no_delay


class _Transport:
    def __init__(self, sock):
        self.sock = sock

    def setTcpNoDelay(self, enabled):  # noqa: N802 - Twisted's name
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))


@pytest.mark.integration
def test_smpp_connections_turn_nagle_off():
    """With Nagle's algorithm a reply part waited for the ESME's delayed ACK: the half-load p99 sat at
    39-40 ms (15-24 ms with TCP_NODELAY)."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()):
        conn, _ = server.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            no_delay(_Transport(conn))
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_transport_without_tcp_is_left_alone():
    no_delay(object())  # a test's StringTransport, a UNIX socket
