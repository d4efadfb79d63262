"""The testers' SMPP client on smpplib 2.2.4: send a command, collect the reply, reassembled and decoded.

smpplib quirks handled here, never by bending the server:
- passwords longer than 8 characters are truncated by smpplib (SMPP 3.4 allows 9 octets with the NUL);
- its DeliverSM does not know ``ussd_service_op``, so the USSD screens would lose their operation code:
  we add the TLV to DeliverSM's parameter table in this process only;
- it answers every deliver_sm itself from ``read_once``; we collect the PDUs in the handler.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import smpplib.client
import smpplib.command
import smpplib.consts
import smpplib.exceptions
import smpplib.ptypes

from gateway.delivery import TAG_CORRELATION, TAG_GATEWAY_MESSAGE_ID
from gateway.smpp.text import choose_encoding, decode_message, parse_udh, split_message

ESM_RECEIPT = 0x04
ESM_UDHI = 0x40
USSR_REQUEST, PSSR_RESPONSE, USSR_CONFIRM, PSSR_INDICATION = 2, 17, 18, 1


def _patch_deliver_sm() -> None:
    """Teach smpplib's DeliverSM the TLVs the gateway sends that it does not know."""
    params = smpplib.command.DeliverSM.params
    extra = {"ussd_service_op": smpplib.command.Param(type=int, size=1),
             # the gateway's vendor TLVs (gateway/delivery.py): the reply's outbox id and the MO it answers
             "gateway_message_id": smpplib.command.Param(type=smpplib.ptypes.ostr, max=65),
             "mo_message_id": smpplib.command.Param(type=smpplib.ptypes.ostr, max=65)}
    smpplib.consts.OPTIONAL_PARAMS.setdefault("gateway_message_id", TAG_GATEWAY_MESSAGE_ID)
    smpplib.consts.OPTIONAL_PARAMS.setdefault("mo_message_id", TAG_CORRELATION)
    for name, param in extra.items():
        if name not in params:
            params[name] = param
            smpplib.command.DeliverSM.params_order = (*smpplib.command.DeliverSM.params_order, name)


_patch_deliver_sm()


class SimulatorError(Exception):
    pass


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")


class SimulatorClient:
    def __init__(self, host: str, port: int, system_id: str, password: str, *, wait: float = 10.0,
                 bind: str = "transceiver"):
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password[:8]
        self.wait = wait
        self.bind = bind
        self.received: list[Any] = []
        self._ref = int(time.time()) % 200
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.client = smpplib.client.Client(host, port, timeout=wait, allow_unknown_opt_params=True)
        self.client.set_message_received_handler(self._on_pdu)
        self.client.set_message_sent_handler(self._on_sent)
        self.client.set_error_pdu_handler(self._on_error)
        self.sent_ids: list[str] = []
        self.errors: list[int] = []

    def connect(self) -> None:
        try:
            self.client.connect()
            getattr(self.client, f"bind_{self.bind}")(system_id=self.system_id, password=self.password)
        except smpplib.exceptions.PDUError as exc:
            raise SimulatorError(f"bind refused: {exc}") from None
        except (smpplib.exceptions.ConnectionError, OSError) as exc:
            raise SimulatorError(f"cannot reach the gateway at {self.host}:{self.port} ({exc}); "
                                 "is it running (make run)?") from None

    def close(self) -> None:
        try:
            if self.client.state in (smpplib.consts.SMPP_CLIENT_STATE_BOUND_TX,
                                     smpplib.consts.SMPP_CLIENT_STATE_BOUND_RX,
                                     smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX):
                self.client.unbind()
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError):
            pass
        self.client.disconnect()

    def _on_pdu(self, pdu, **_) -> int:
        self.received.append(pdu)
        return 0

    def _on_sent(self, pdu, **_) -> None:
        self.sent_ids.append(_text(pdu.message_id))

    def _on_error(self, pdu) -> None:
        self.errors.append(int(pdu.status))

    # --- sending ---------------------------------------------------------------------------------

    def submit(self, sender: str, to: str, text: str, *, receipt: bool = False, **extra: Any) -> int:
        """Send one command (split with UDH when long); returns the number of parts."""
        self._ref = (self._ref + 1) % 256
        parts = split_message(text, ref=self._ref)
        for part in parts:
            self.client.send_message(
                source_addr_ton=1, source_addr_npi=1, source_addr=sender, dest_addr_ton=0, dest_addr_npi=1,
                destination_addr=to, short_message=part.short_message, data_coding=part.data_coding,
                esm_class=part.esm_class, registered_delivery=1 if receipt else 0, **extra)
        return len(parts)

    def command(self, sender: str, to: str, text: str, *, receipt: bool = False) -> list[dict]:
        """Send a command and return the reply messages (each reassembled) from the service number."""
        start = len(self.received)
        self.submit(sender, to, text, receipt=receipt)
        return self.collect(sender, since=start, want_receipt=receipt)

    def collect(self, sender: str, *, since: int = 0, want_receipt: bool = False, grace: float = 0.3) -> list[dict]:
        """Read until one whole reply arrived (plus a short grace for more), or ``wait`` passes."""
        deadline = time.monotonic() + self.wait
        done_at = None
        while True:
            now = time.monotonic()
            limit = min(deadline, done_at + grace) if done_at else deadline
            if now >= limit:
                break
            self.client._socket.settimeout(max(0.01, limit - now))
            try:
                self.client.read_once(auto_send_enquire_link=False)
            except TimeoutError:
                continue
            except smpplib.exceptions.ConnectionError as exc:
                raise SimulatorError(f"connection lost: {exc}") from None
            replies = reassemble(self.received[since:], sender)
            complete = [r for r in replies if r["kind"] == "reply"]
            receipts = [r for r in replies if r["kind"] == "receipt"]
            if complete and (receipts or not want_receipt) and done_at is None:
                done_at = time.monotonic()
        return reassemble(self.received[since:], sender)

    # --- USSD ------------------------------------------------------------------------------------

    def ussd_start(self, sender: str, code: str) -> dict:
        start = len(self.received)
        self.client.send_message(
            service_type="USSD", source_addr_ton=1, source_addr_npi=1, source_addr=sender, dest_addr_ton=0,
            dest_addr_npi=1, destination_addr=code, short_message=choose_encoding(code)[1],
            data_coding=choose_encoding(code)[0], ussd_service_op=PSSR_INDICATION)
        return self._ussd_screen(sender, start)

    def ussd_answer(self, sender: str, answer: str, screen: dict) -> dict:
        start = len(self.received)
        dc, payload = choose_encoding(answer)
        extra = {}
        if screen.get("session") is not None:
            extra["its_session_info"] = screen["session"]
        self.client.send_message(
            service_type="USSD", source_addr_ton=1, source_addr_npi=1, source_addr=sender, dest_addr_ton=0,
            dest_addr_npi=1, destination_addr=screen.get("service", "*200#"), short_message=payload,
            data_coding=dc, ussd_service_op=USSR_CONFIRM, **extra)
        return self._ussd_screen(sender, start)

    def _ussd_screen(self, sender: str, since: int) -> dict:
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            for pdu in self.received[since:]:
                op = getattr(pdu, "ussd_service_op", None)
                if op is not None and _text(pdu.destination_addr) == sender:
                    info = getattr(pdu, "its_session_info", None)
                    return {"text": decode_message(pdu.data_coding or 0, pdu.short_message or b""),
                            "op": op, "session": info,
                            "end": op == PSSR_RESPONSE or bool(info is not None and info & 1),
                            "service": _text(pdu.source_addr)}
            self.client._socket.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.client.read_once(auto_send_enquire_link=False)
            except TimeoutError:
                break
        raise SimulatorError("no USSD screen came back")


def reassemble(pdus: list[Any], sender: str | None = None) -> list[dict]:
    """deliver_sm PDUs -> whole messages (UDH concatenation) and receipts, in arrival order."""
    out: list[dict] = []
    groups: dict[tuple, dict] = {}
    for pdu in pdus:
        if getattr(pdu, "command", "") != "deliver_sm":
            continue
        dest = _text(pdu.destination_addr)
        if sender is not None and dest != sender:
            continue
        source = _text(pdu.source_addr)
        raw = pdu.short_message or b""
        if (pdu.esm_class or 0) & ESM_RECEIPT:
            out.append({"kind": "receipt", "from": source, "to": dest, "text": _text(raw),
                        "receipted_message_id": _text(getattr(pdu, "receipted_message_id", "")),
                        "message_state": getattr(pdu, "message_state", None)})
            continue
        info, body = parse_udh(raw) if (pdu.esm_class or 0) & ESM_UDHI else (None, raw)
        ids = {"id": _text(getattr(pdu, "gateway_message_id", None)),
               "mo": _text(getattr(pdu, "mo_message_id", None))}
        if info is None:
            out.append({"kind": "reply", "from": source, "to": dest, "parts": 1,
                        "text": decode_message(pdu.data_coding or 0, body), **ids})
            continue
        key = (source, dest, info.ref, info.total)
        group = groups.setdefault(key, {"parts": {}, "dc": pdu.data_coding or 0, "slot": len(out)})
        group["parts"][info.seq] = body
        if len(group["parts"]) == info.total:
            joined = b"".join(group["parts"][i] for i in sorted(group["parts"]))
            out.append({"kind": "reply", "from": source, "to": dest, "parts": info.total,
                        "text": decode_message(group["dc"], joined), **ids})
            del groups[key]
    return out
