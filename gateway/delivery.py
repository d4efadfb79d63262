"""Drain the outbox's ``smpp`` channel to bound RX/TRX sessions as deliver_sm.

Two ways in, one way out:

- rows born claimed: the MO pipeline writes a reply already leased to this
  sender when the account has a receiver bound, and hands it over after the
  commit (no extra query on the hot path);
- rows claimed from the table (``FOR UPDATE SKIP LOCKED`` on PostgreSQL):
  retries, staggered campaign rows, replies that waited for a bind, rows whose
  lease ran out because their process died.

Each row is split into SMS parts (UDH concatenation) and sent round-robin over
the account's binds, at most ``outbox.rate`` rows per second. A row is done
when every part got ``deliver_sm_resp`` OK; an error status, a timeout or a
lost connection retries the whole row with backoff (same message id). The
outcomes of one reactor turn are written in one transaction.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from gateway.binds import BindRegistry
from gateway.smpp.ratelimit import TokenBucket
from gateway.smpp.text import split_message
from notifier.models import FINAL_STATES, MessageLog
from offers import fastsql

log = Logger(namespace="gateway.delivery")

POLL_S = 1.0
CLAIM_LEASE_S = 120.0
RECORD_S = 0.05
EXPIRE_EVERY_S = 10.0
# Vendor-specific TLVs (SMPP 3.4 5.3.2: 0x1400-0x3FFF) on every reply part, so a tester can count
# replies by id: the outbox message id (the same on a resend) and the MO message id it answers.
TAG_GATEWAY_MESSAGE_ID = 0x1400
TAG_CORRELATION = 0x1401
# Outbox.mark_sent(delivered=True) as one plain statement per row, executed many
MARK_DELIVERED = ("UPDATE outbox SET state = 'delivered', sent_at = ?, done_at = ?, lease_owner = NULL, "
                  "lease_until = NULL, last_error = NULL WHERE message_id = ? AND state NOT IN ("
                  + ", ".join(f"'{s}'" for s in FINAL_STATES) + ")")
ACK_HOLD_MAX_S = 1.0  # an acknowledgement held for its reply goes out after this even if the reply did not
MAX_READY = 20000  # rows held in memory waiting for window room; beyond, they stay queued in the table


@dataclass(slots=True)
class OutRow:
    """What the sender needs of an outbox row."""

    message_id: str
    kind: str
    account: str | None
    source: str
    dest: str
    text: str
    extra: dict | None
    correlation: str | None = None
    parts: list[dict] | None = None  # deliver_sm params, built when the row is first at the head
    queued_at: float = 0.0  # when it joined ``ready``: how long the head has waited is the sender's lag
    @classmethod
    def of(cls, row: Any) -> OutRow:
        get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
        return cls(get("message_id"), get("kind"), get("account"), get("source"), get("dest"), get("text"),
                   get("extra"), get("correlation"))


@dataclass(slots=True)
class InFlight:
    row: OutRow
    parts_left: int
    failed: str | None = None


class SmppDeliverer:
    """Sends outbox rows of channel ``smpp`` to the ESMEs bound to this gateway."""

    def __init__(self, gateway: Any, registry: BindRegistry, owner: str,
                 build_parts: Callable[[OutRow, int], list[dict]] | None = None):
        self.gateway = gateway
        self.registry = registry
        self.owner = owner
        self.build_parts = build_parts or default_parts
        rate = float(gateway.settings["outbox.rate"])
        self.bucket = TokenBucket(rate=rate, burst=max(10.0, rate / 10), now=gateway.now)
        self._refs = itertools.count(1)
        self._pump_call = None
        self._poll_call = None
        self._record_call = None
        self._done: list[OutRow] = []
        self._failed: list[tuple[str, str, bool]] = []
        self.ready: deque[OutRow] = deque()
        self._checked_generation = -1
        self.table_may_have_due = True
        self._next_expiry = 0.0
        self.in_flight: dict[str, InFlight] = {}
        # reply outbox id -> (since, callback): acknowledgements held until that reply's parts are written
        self._ack_waiters: dict[str, tuple[float, Callable[[], None]]] = {}
        self.running = False
        self.sent_listeners: list[Callable[[int], None]] = []
        self.stats = {"sent_rows": 0, "sent_parts": 0, "errors": 0}

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._poll()

    def stop(self) -> None:
        """Stop sending; rows held in memory go back to the table untried."""
        self.running = False
        for call in (self._pump_call, self._poll_call, self._record_call):
            if call is not None and call.active():
                call.cancel()
        held = [row.message_id for row in self.ready]
        self.ready.clear()
        self._release_acks(list(self._ack_waiters))
        if held:
            with self.gateway.db() as session, session.begin():
                self.gateway.outbox.release(session, held)
        self._record()

    def poke(self, *_: Any) -> None:
        """Something may be due (a commit, a new bind, a freed window slot): pump soon."""
        if self.running and (self._pump_call is None or not self._pump_call.active()):
            self._pump_call = self.gateway.reactor.callLater(0, self._pump)

    def wake_table(self, *_: Any) -> None:
        """Rows may be due in the table (new queued rows, a new bind): claim on the next pump."""
        self.table_may_have_due = True
        self.poke()

    def when_sent(self, message_id: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the row ``message_id`` (born leased to this sender) has its parts
        written, or is given back or given up, or after :data:`ACK_HOLD_MAX_S` at the latest."""
        self._ack_waiters[message_id] = (self.gateway.now(), callback)

    def _release_acks(self, message_ids: Iterable[str]) -> None:
        for message_id in message_ids:
            waiter = self._ack_waiters.pop(message_id, None)
            if waiter is not None:
                waiter[1]()

    def _release_overdue_acks(self) -> None:
        if not self._ack_waiters:
            return
        limit = self.gateway.now() - ACK_HOLD_MAX_S
        overdue = []
        for message_id, (since, _) in self._ack_waiters.items():  # in the order they were held
            if since > limit:
                break
            overdue.append(message_id)
        self._release_acks(overdue)

    def _poll(self) -> None:
        # Retries and delayed (staggered, quiet-hour) rows become due with no event: look every POLL_S.
        # Otherwise the table is only queried when something says it may hold due rows: on the hot
        # path replies are born leased and never need a claim.
        self.wake_table()
        self._release_overdue_acks()
        now = self.gateway.now()
        if now >= self._next_expiry:  # rows nobody could take within smpp.validity end as expired
            self._next_expiry = now + EXPIRE_EVERY_S
            with self.gateway.db() as session, session.begin():
                expired = self.gateway.outbox.expire_due(session)
            if expired:
                log.info("{n} outbox messages expired undelivered (smpp.validity)", n=expired)
        if self.running:
            self._poll_call = self.gateway.reactor.callLater(POLL_S, self._poll)

    # --- the hot path: rows born claimed ------------------------------------------------------------

    def lease_owner_for(self, account: str | None) -> str | None:
        """The owner to write into a new row when this sender will send it at once (a receiver is bound)."""
        if self.running and account is not None and len(self.ready) < MAX_READY \
                and self.registry.receivers(account):
            return self.owner
        return None

    def take(self, rows: Iterable[Any]) -> None:
        """Committed rows; those leased to us are queued in memory and sent as room allows."""
        now = self.gateway.now()
        for row in rows:
            owner = row.get("lease_owner") if isinstance(row, dict) else getattr(row, "lease_owner", None)
            if owner == self.owner:
                out = OutRow.of(row)
                out.queued_at = now
                self.ready.append(out)
            else:
                self.table_may_have_due = True
        self.poke()

    # --- sending ------------------------------------------------------------------------------------

    def _pump(self) -> None:
        self._pump_call = None
        self._release_overdue_acks()
        self._send_ready()
        more = bool(self.ready)
        room = self._room()
        if room > 0 and not self.ready and self.table_may_have_due:
            more = self._claim(room) >= room  # a full claim: the table may hold more due rows
            self.table_may_have_due = more
            self._send_ready()
        if more and self.bucket.tokens < 1:  # held back by outbox.rate: come back when a token is due
            wait = max(0.001, (1 - self.bucket.tokens) / self.bucket.rate)
            self._pump_call = self.gateway.reactor.callLater(wait, self._pump)

    def _room(self) -> int:
        accounts = self.registry.accounts_with_receivers()
        return min(sum(self.registry.capacity(a) for a in accounts), int(self.bucket.tokens))

    def _send_ready(self) -> None:
        self._release_unbound()
        while self.ready and self.bucket.tokens >= 1:
            row = self.ready[0]
            if row.parts is None:
                try:
                    row.parts = self.build_parts(row, next(self._refs) % 256)
                except ValueError as exc:
                    self.ready.popleft()
                    self._release_acks((row.message_id,))
                    self._failed.append((row.message_id, f"cannot encode: {exc}", True))
                    self._schedule_record()
                    continue
            # every part needs a window slot now: a part sent nowhere would fail (and resend) the whole row
            if self.registry.capacity(row.account) < len(row.parts):
                break  # responses will poke us
            self._send_row(self.ready.popleft())

    def _release_unbound(self) -> None:
        """Rows whose account has no receiver left go back to the table for whoever binds next."""
        if not self.ready or self.registry.generation == self._checked_generation:
            return
        self._checked_generation = self.registry.generation
        orphans = [r for r in self.ready if not self.registry.receivers(r.account)]
        if not orphans:
            return
        ids = {r.message_id for r in orphans}
        self.ready = deque(r for r in self.ready if r.message_id not in ids)
        self._release_acks(ids)
        with self.gateway.db() as session, session.begin():
            self.gateway.outbox.release(session, ids)

    def _claim(self, room: int) -> int:
        accounts = [a for a in self.registry.accounts_with_receivers() if self.registry.capacity(a) > 0]
        if not accounts:
            return 0
        gw = self.gateway
        with gw.db() as session, session.begin():
            rows = gw.outbox.claim(session, channel="smpp", limit=room, owner=self.owner,
                                   lease_s=CLAIM_LEASE_S, accounts=accounts)
            now = gw.now()
            for row in rows:
                out = OutRow.of(row)
                out.queued_at = now
                self.ready.append(out)
        return len(rows)

    def _send_row(self, row: OutRow) -> None:
        parts, row.parts = row.parts or [], None  # a retry builds them again (a new concatenation ref)
        self.bucket.try_take(1)
        flight = InFlight(row, len(parts))
        self.in_flight[row.message_id] = flight
        receiver = self.registry.next_receiver(row.account)
        for params in parts:
            target = receiver if receiver is not None and receiver.send_capacity() > 0 \
                else self.registry.next_receiver(row.account)
            if target is None:
                self._part_result(flight, "no bind with window room")
                continue
            self.stats["sent_parts"] += 1
            target.send_deliver_sm(params, lambda status, f=flight: self._part_result(f, status))
        if self._ack_waiters:
            self._release_acks((row.message_id,))

    def _part_result(self, flight: InFlight, status: int | str | None) -> None:
        if status != 0:
            flight.failed = status if isinstance(status, str) else (
                "no response" if status is None else f"deliver_sm_resp status 0x{status:02X}")
        flight.parts_left -= 1
        if flight.parts_left > 0:
            return
        self.in_flight.pop(flight.row.message_id, None)
        if flight.failed is None:
            self._done.append(flight.row)
            self.stats["sent_rows"] += 1
        else:
            self._failed.append((flight.row.message_id, flight.failed, False))
            self.stats["errors"] += 1
        self._schedule_record()
        self.poke()

    # --- recording outcomes ---------------------------------------------------------------------------

    def _schedule_record(self) -> None:
        # Outcomes are written together every RECORD_S: one transaction for many rows. A crash in
        # between only means those rows are sent again (same message id) after their lease runs out.
        if self._record_call is None or not self._record_call.active():
            self._record_call = self.gateway.reactor.callLater(RECORD_S, self._record)

    def _record(self) -> None:
        done, self._done = self._done, []
        failed, self._failed = self._failed, []
        if not done and not failed:
            return
        gw = self.gateway
        now = gw.now()
        with gw.db() as session, session.begin():
            # The ESME is the last hop in server mode: its deliver_sm_resp means delivered.
            fastsql.executemany(session, MARK_DELIVERED, [(now, now, row.message_id) for row in done])
            fastsql.insert_rows(session, MessageLog.__tablename__, [
                {"direction": "MT", "channel": "sms", "account": row.account, "source": row.source,
                 "dest": row.dest, "text": row.text[:2000], "message_id": row.message_id, "at": now,
                 "action": row.kind} for row in done if row.kind != "receipt"])
            for message_id, error, permanent in failed:
                state = gw.outbox.retry(session, message_id, error, permanent=permanent)
                log.warn("outbox message {mid} not delivered ({error}); now {state}", mid=message_id,
                         error=error, state=state)
        for listener in self.sent_listeners:
            listener(len(done))


def default_parts(row: OutRow, ref: int) -> list[dict]:
    """deliver_sm parameters for one outbox row: a receipt, or the text split into parts."""
    if row.kind == "receipt":
        return [receipt_params(row)]
    parts = split_message(row.text, ref=ref)
    tlvs = {TAG_GATEWAY_MESSAGE_ID: row.message_id.encode()}
    if row.correlation:
        tlvs[TAG_CORRELATION] = row.correlation.encode()
    return [{
        "service_type": "", "source_addr_ton": 0, "source_addr_npi": 1, "source_addr": row.source,
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": row.dest, "esm_class": part.esm_class,
        "data_coding": part.data_coding, "short_message": part.short_message, "tlvs": tlvs,
    } for part in parts]


def receipt_params(row: OutRow) -> dict:
    extra = row.extra or {}
    return {
        "service_type": "", "source_addr_ton": 0, "source_addr_npi": 1, "source_addr": row.source,
        "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": row.dest, "esm_class": 0x04,
        "data_coding": 0, "short_message": extra.get("text", "").encode("ascii", "replace"),
        "receipted_message_id": extra.get("id", ""), "message_state": int(extra.get("state", 2)),
    }
