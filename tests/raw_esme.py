"""A blocking test ESME on the gateway's own sans-IO session (client role), seeing every TLV.

smpplib drops TLVs it does not know; the crash and flood tests need the vendor
TLVs that carry the reply's outbox id and the MO id it answers.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from gateway.delivery import TAG_CORRELATION, TAG_GATEWAY_MESSAGE_ID
from gateway.smpp.session import (
    ESME,
    ConnectionShouldClose,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    Session,
    Timers,
)
from gateway.smpp.text import ConcatInfo, TextError, choose_encoding, parse_udh


class BindRefused(Exception):
    """The gateway answered the bind with an error ``status``."""

    def __init__(self, status: int):
        super().__init__(f"bind refused with status 0x{status:02X}")
        self.status = status


@dataclass
class Collected:
    acked: dict[int, str] = field(default_factory=dict)  # submit sequence -> message_id
    errors: dict[int, int] = field(default_factory=dict)  # submit sequence -> status
    replies: list[dict] = field(default_factory=list)  # every deliver_sm (parts included)


def _concat(pdu) -> ConcatInfo | None:
    """Where a deliver_sm part sits in its message (UDH), None for a single part."""
    if not pdu.params.get("esm_class", 0) & 0x40:
        return None
    try:
        return parse_udh(pdu.params.get("short_message", b""))[0]
    except TextError:
        return None


class RawESME:
    def __init__(self, host: str, port: int, system_id: str = "tester", password: str = "test1234",
                 kind: str = "trx", window: int = 50):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.session = Session(ESME, time.monotonic, Timers(session_init=0, enquire_link=0, inactivity=0,
                                                            response=60), window=window)
        self.out = Collected()
        self.bind_status = 0
        self.session.bind(kind, system_id, password)
        self._flush()
        deadline = time.monotonic() + 10
        while self.session.bound_kind is None:
            if self.bind_status:
                self.sock.close()
                raise BindRefused(self.bind_status)
            if time.monotonic() > deadline:
                raise RuntimeError("bind not answered")
            self.pump(0.5)

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.sock.sendall(data)

    def submit(self, source: str, dest: str, text: str, **params) -> int:
        data_coding, payload = choose_encoding(text)
        pdu = self.session.send_request("submit_sm", source_addr_ton=1, source_addr_npi=1, source_addr=source,
                                        dest_addr_ton=0, dest_addr_npi=1, destination_addr=dest,
                                        data_coding=data_coding, short_message=payload, **params)
        self._flush()
        return pdu.sequence_number

    def pump(self, timeout: float) -> bool:
        """Read for at most ``timeout`` seconds; False when the connection is gone."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except OSError:
            return False
        if not data:
            return False
        for event in self.session.receive_data(data):
            if isinstance(event, RequestReceived) and event.pdu.command == "deliver_sm":
                tlvs = event.pdu.tlvs
                concat = _concat(event.pdu)
                self.out.replies.append({
                    "from": event.pdu.params.get("source_addr"), "to": event.pdu.params.get("destination_addr"),
                    "esm_class": event.pdu.params.get("esm_class", 0),
                    "id": (tlvs.get(TAG_GATEWAY_MESSAGE_ID) or b"").decode(),
                    "mo": (tlvs.get(TAG_CORRELATION) or b"").decode(),
                    "receipted": tlvs.get(0x001E), "total": concat.total if concat else 1,
                    "data_coding": event.pdu.params.get("data_coding", 0),
                    "short_message": event.pdu.params.get("short_message", b"")})
                self.session.respond(event.pdu, 0)
            elif isinstance(event, ResponseReceived) and event.request.command.startswith("bind_"):
                self.bind_status = event.response.command_status
            elif isinstance(event, ResponseReceived) and event.request.command == "submit_sm":
                if event.response.command_status == 0:
                    self.out.acked[event.request.sequence_number] = event.response.params.get("message_id", "")
                else:
                    self.out.errors[event.request.sequence_number] = event.response.command_status
            elif isinstance(event, (ResponseTimeout, ConnectionShouldClose)):
                return False
        try:
            self._flush()
        except OSError:  # the gateway went away (a crash test kills it) while we answered
            return False
        return True

    def window_free(self) -> int:
        return self.session.window_available()

    def close(self) -> None:
        try:
            if self.session.bound_kind is not None:
                self.session.unbind()
                self._flush()
        except Exception:  # closing a broken connection: nothing to unbind
            pass
        self.sock.close()
