"""Drain the outbox's ``smpp`` channel to bound RX/TRX sessions as deliver_sm.

One pump per reactor turn claims due rows for the accounts that have room in
some receiver's window, splits each text into SMS parts (UDH concatenation),
sends them round-robin over the account's binds and records the outcome in
one transaction per turn. A row is done when every part got
``deliver_sm_resp`` OK; an error status or a timeout retries the whole row
with exponential backoff (same message id), then fails or expires.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from gateway.binds import BindRegistry
from gateway.smpp.ratelimit import TokenBucket
from gateway.smpp.text import split_message
from notifier.models import OutboxMessage

log = Logger(namespace="gateway.delivery")

POLL_S = 1.0
CLAIM_LEASE_S = 120.0


@dataclass
class InFlight:
    row_id: int
    message_id: str
    kind: str
    parts_left: int
    failed: str | None = None
    started: float = field(default_factory=time.monotonic)


class SmppDeliverer:
    """Sends outbox rows of channel ``smpp`` to the ESMEs bound to this gateway."""

    def __init__(self, gateway: Any, registry: BindRegistry, owner: str,
                 build_parts: Callable[[OutboxMessage, int], list[dict]] | None = None):
        self.gateway = gateway
        self.registry = registry
        self.owner = owner
        self.build_parts = build_parts or default_parts
        self.bucket = TokenBucket(rate=float(gateway.settings["outbox.rate"]),
                                  burst=max(10.0, float(gateway.settings["outbox.rate"]) / 10), now=gateway.now)
        self._refs = itertools.count(1)
        self._pump_call = None
        self._poll_call = None
        self._done: list[int] = []
        self._failed: list[tuple[int, str, bool]] = []
        self._record_call = None
        self.in_flight: dict[int, InFlight] = {}
        self.running = False
        self.sent_listeners: list[Callable[[int], None]] = []
        self.stats = {"sent_rows": 0, "sent_parts": 0, "errors": 0}

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._poll()

    def stop(self) -> None:
        self.running = False
        for call in (self._pump_call, self._poll_call, self._record_call):
            if call is not None and call.active():
                call.cancel()
        self._record()

    def poke(self, *_: Any) -> None:
        """Something may be due (a commit, a new bind, a freed window slot): pump soon."""
        if self.running and (self._pump_call is None or not self._pump_call.active()):
            self._pump_call = self.gateway.reactor.callLater(0, self._pump)

    def _poll(self) -> None:
        # Retries and delayed (staggered, quiet-hour) rows become due with no event: look every POLL_S.
        self.poke()
        if self.running:
            self._poll_call = self.gateway.reactor.callLater(POLL_S, self._poll)

    # --- sending ------------------------------------------------------------------------------

    def _pump(self) -> None:
        self._pump_call = None
        accounts = [a for a in self.registry.accounts_with_receivers() if self.registry.capacity(a) > 0]
        if not accounts:
            return
        room = sum(self.registry.capacity(a) for a in accounts)
        room = min(room, max(1, int(self.bucket.available())))
        if room <= 0:
            self._pump_call = self.gateway.reactor.callLater(0.01, self._pump)
            return
        gw = self.gateway
        with gw.db() as session, session.begin():
            rows = gw.outbox.claim(session, channel="smpp", limit=room, owner=self.owner,
                                   lease_s=CLAIM_LEASE_S, accounts=accounts)
            session.expunge_all()
        for row in rows:
            if not self._send_row(row):
                self._release(row)

    def _send_row(self, row: OutboxMessage) -> bool:
        receiver = self.registry.next_receiver(row.account)
        if receiver is None:
            return False
        try:
            parts = self.build_parts(row, next(self._refs) % 256)
        except ValueError as exc:
            self._failed.append((row.id, f"cannot encode: {exc}", True))
            self._schedule_record()
            return True
        if receiver.send_capacity() < 1:
            return False
        self.bucket.try_take(1)
        flight = InFlight(row.id, row.message_id, row.kind, len(parts))
        self.in_flight[row.id] = flight
        for params in parts:
            target = receiver if receiver.send_capacity() > 0 else self.registry.next_receiver(row.account)
            if target is None:
                self._part_result(flight, "no bind with window room")
                continue
            target.send_deliver_sm(params, lambda status, f=flight: self._part_result(f, status))
        return True

    def _release(self, row: OutboxMessage) -> None:
        with self.gateway.db() as session, session.begin():
            self.gateway.outbox.release(session, [row.id])

    def _part_result(self, flight: InFlight, status: int | str | None) -> None:
        if status != 0:
            flight.failed = status if isinstance(status, str) else (
                "no response" if status is None else f"deliver_sm_resp status 0x{status:02X}")
        flight.parts_left -= 1
        if flight.parts_left > 0:
            return
        self.in_flight.pop(flight.row_id, None)
        if flight.failed is None:
            self._done.append(flight.row_id)
            self.stats["sent_rows"] += 1
        else:
            self._failed.append((flight.row_id, flight.failed, False))
            self.stats["errors"] += 1
        self._schedule_record()
        self.poke()

    # --- recording outcomes --------------------------------------------------------------------

    def _schedule_record(self) -> None:
        if self._record_call is None or not self._record_call.active():
            self._record_call = self.gateway.reactor.callLater(0, self._record)

    def _record(self) -> None:
        done, self._done = self._done, []
        failed, self._failed = self._failed, []
        if not done and not failed:
            return
        gw = self.gateway
        with gw.db() as session, session.begin():
            # The ESME is the last hop in server mode: its deliver_sm_resp means delivered.
            gw.outbox.mark_sent(session, done, delivered=True)
            for row_id, error, permanent in failed:
                state = gw.outbox.retry(session, row_id, error, permanent=permanent)
                log.warn("outbox row {row} not delivered ({error}); now {state}", row=row_id, error=error,
                         state=state)
        for listener in self.sent_listeners:
            listener(len(done))


def default_parts(row: OutboxMessage, ref: int) -> list[dict]:
    """deliver_sm parameters for one outbox row: a receipt, or the text split into parts."""
    if row.kind == "receipt":
        return [receipt_params(row)]
    parts = split_message(row.text, ref=ref)
    return [{
        "service_type": "", "source_addr_ton": 0, "source_addr_npi": 1, "source_addr": row.source,
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": row.dest, "esm_class": part.esm_class,
        "data_coding": part.data_coding, "short_message": part.short_message,
    } for part in parts]


def receipt_params(row: OutboxMessage) -> dict:
    extra = row.extra or {}
    text = extra.get("text", "")
    return {
        "service_type": "", "source_addr_ton": 0, "source_addr_npi": 1, "source_addr": row.source,
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": row.dest, "esm_class": 0x04,
        "data_coding": 0, "short_message": text.encode("ascii", "replace"),
        "receipted_message_id": extra.get("id", ""), "message_state": int(extra.get("state", 2)),
    }
