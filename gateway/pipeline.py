"""From an accepted MO to its reply in the outbox: one group commit per reactor turn.

Transports call :meth:`MOPipeline.accept`; everything accepted in one reactor
turn is routed and written in ONE transaction (MO log rows, the router's
state changes, reply and receipt outbox rows), and only after that commit are
the transports told to acknowledge (``submit_sm_resp``) -- so an acknowledged
MO always has its reply on disk, and one fsync serves many messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any

from twisted.logger import Logger

from notifier.models import MessageLog
from offers import fastsql
from offers.router import Inbound, Reply

log = Logger(namespace="gateway.pipeline")

MAX_BATCH = 500
# A batch this big is committed at the end of the reactor turn whatever pipeline.batch_ms says: it
# already shares one commit among many, and an ESME sending as fast as its window allows (4 binds x
# window 10 of plain submit_sm) waits for these acknowledgements before it sends more (a 3 ms wait
# capped it at ~10,000/s)
FULL_BATCH = 16
UNROUTED = Reply(text="", action="mt", source="", details={})


@dataclass
class Accepted:
    inbound: Inbound
    message_id: str
    reply_account: str | None  # ESME account the reply goes to (None: not over SMPP)
    receipt: dict[str, Any] | None  # receipt to queue once routed (SMPP registered_delivery)
    on_done: Callable[[Reply | None, Exception | None], None]
    reply_channel: str = "smpp"
    route: bool = True  # False: an MT to a handset (not a service number): logged and receipted only
    part_receipts: list[dict[str, Any]] = field(default_factory=list)  # earlier parts of a long MO
    # More writes for the same transaction, given the session (a held long-MO part saved or released).
    writes: tuple[Callable[[Any], None], ...] = ()
    message: bool = True  # False: only ``writes`` (a part acknowledged before its message is whole)
    # True: when the reply is born leased to a sender of this process, ``on_done`` waits until the
    # reply's parts are written (MOPipeline.ack_when_sent): the ESME's window then bounds the work in
    # flight, so a full window means replies late by one window, not an ever-growing backlog
    ack_after_send: bool = False
    reply_id: str | None = None  # set by the pipeline: the outbox id of the reply ``on_done`` waits for


class MOPipeline:
    def __init__(self, gateway: Any):
        self.gateway = gateway
        self.pending: list[Accepted] = []
        self.pending_since = 0.0  # when the oldest of ``pending`` was accepted
        self.last_flush = float("-inf")  # when the last batch was taken
        self._scheduled = None
        self.committed_listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        # (account, channel) -> lease owner to write into new rows a sender will take at once, or None
        self.lease_owner: Callable[[str | None, str], str | None] | None = None
        self.route_observer: Callable[[str, float], None] | None = None  # (channel, seconds) per MO
        self.routed_listeners: list[Callable[[Accepted, Reply], None]] = []
        # (reply outbox id, callback): call back once that reply's parts are written (or given up)
        self.ack_when_sent: Callable[[str, Callable[[], None]], None] | None = None
        self.stats = {"mo": 0, "replies": 0, "errors": 0, "batches": 0}

    def accept(self, item: Accepted) -> None:
        if not self.pending:
            self.pending_since = self.gateway.now()
        self.pending.append(item)
        if len(self.pending) >= MAX_BATCH:
            self.flush()
        elif len(self.pending) == FULL_BATCH and self._scheduled is not None and self._scheduled.getTime() > \
                self.gateway.reactor.seconds():
            self._scheduled.cancel()  # full enough: at the end of this turn, not after the batch window
            self._scheduled = self.gateway.reactor.callLater(0, self.flush)
        elif self._scheduled is None:
            # At once when idle; under load at most one commit per ``pipeline.batch_ms`` (sooner when
            # FULL_BATCH messages are waiting), so a busy gateway writes (and walks its indexes) for
            # many messages at a time
            wait = self.last_flush + float(self.gateway.settings["pipeline.batch_ms"]) / 1000.0 - self.pending_since
            self._scheduled = self.gateway.reactor.callLater(max(0.0, wait), self.flush)

    def flush(self) -> None:
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        batch, self.pending = self.pending, []
        if not batch:
            return
        self.last_flush = self.gateway.now()
        try:
            results, rows = self._route_batch(batch)
        except Exception:
            log.failure("batch of {n} MO failed; routing them one by one", n=len(batch))
            results, rows = [], []
            for item in batch:
                try:
                    one, one_rows = self._route_batch([item])
                    results.extend(one)
                    rows.extend(one_rows)
                except Exception as exc:
                    log.failure("MO {mid} from {sender} could not be routed", mid=item.message_id,
                                sender=item.inbound.sender)
                    self.stats["errors"] += 1
                    results.append((item, None, exc))
        self.stats["batches"] += 1
        for item, reply, error in results:
            if item.reply_id is not None and error is None and self.ack_when_sent is not None:
                self.ack_when_sent(item.reply_id, partial(item.on_done, reply, None))
            else:
                item.on_done(reply, error)
            if reply is not None:
                for listener in self.routed_listeners:
                    listener(item, reply)
        if rows:
            for listener in self.committed_listeners:
                listener(rows)

    def _route_batch(self, batch: list[Accepted]):
        gw = self.gateway
        now = gw.now()
        results, logs, rows = [], [], []
        with gw.db() as session, session.begin():
            for item in batch:
                for write in item.writes:
                    write(session)
                if not item.message:
                    results.append((item, None, None))
                    continue
                msg = item.inbound
                started = perf_counter()
                reply = gw.router.handle(session, msg, now) if item.route else UNROUTED
                if self.route_observer is not None and item.route:
                    self.route_observer(msg.channel, perf_counter() - started)
                logs.append({"direction": "MO" if item.route else "MT", "channel": msg.channel,
                             "account": msg.account, "source": msg.sender, "dest": msg.service,
                             "text": msg.text[:2000], "message_id": item.message_id, "at": now,
                             "action": reply.action})
                rows.extend(self._outbound(item, reply))
                self.stats["mo"] += 1
                results.append((item, reply, None))
            # plain executemany on the session's connection: the expression layer costs more than SQLite
            fastsql.insert_rows(session, MessageLog.__tablename__, logs)
            gw.outbox.insert_many(session, rows)
        return results, rows

    def _outbound(self, item: Accepted, reply: Reply) -> list[dict[str, Any]]:
        """Receipts and the reply of one message, born leased when a sender will take them at once."""
        gw, msg = self.gateway, item.inbound
        item.reply_id = None
        owner = self.lease_owner(item.reply_account, item.reply_channel) if self.lease_owner else None
        rows = [gw.outbox.values(kind="receipt", source=msg.service, dest=msg.sender, text="",
                                 account=item.reply_account, channel="smpp", correlation=item.message_id,
                                 extra=receipt, lease_owner=owner)
                for receipt in [*item.part_receipts, *([item.receipt] if item.receipt else [])]]
        if reply.text and item.reply_account is not None:
            leased = owner if item.reply_channel == "smpp" else None
            row = gw.outbox.values(kind="reply", source=reply.source, dest=msg.sender, text=reply.text,
                                   account=item.reply_account, channel=item.reply_channel,
                                   correlation=item.message_id, lease_owner=leased)
            rows.append(row)
            if leased is not None and item.ack_after_send:
                item.reply_id = row["message_id"]
            self.stats["replies"] += 1
        return rows
