"""The durable outbox: every outbound message is a row before any wire sees it.

States: ``queued`` -> ``sending`` (claimed, with a lease) -> ``sent`` (the
peer acknowledged) -> ``delivered`` (a receipt, or the peer is the
subscriber's own handset/ESME); or ``failed`` (attempts exhausted, permanent
error) / ``expired`` (validity ran out). A ``sending`` row whose lease ran out
belongs to a process that died: it is due again, with the same message id, so
a receiver can drop the duplicate.

Functions take the caller's session and never commit: the caller's unit of
work decides, so an MO, its reply and its log rows commit together.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import and_, delete, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from notifier.models import FINAL_STATES, OUTBOX_STATES, MessageLog, OutboxMessage
from offers import fastsql

MAX_TEXT = 64 * 1024
PURGE_BATCH = 5000
DAY = 86400.0


_ID_TAG = (secrets.randbits(20) ^ os.getpid()) & 0xFFFFF  # this process's part of every id
_ID_SEQ = itertools.count(secrets.randbits(24))


def new_message_id() -> str:
    """A 24-hex-digit id, time-ordered: 11 digits of wall-clock milliseconds, 5 of a tag drawn per
    process, 8 of a counter. Unique within a process by the counter, across processes by time and
    tag; fits SMPP's 65-octet message_id. Being time-ordered, a new id lands at the right edge of the
    outbox's and the message log's id indexes: a commit dirties one index page, not one per row."""
    return f"{int(time.time() * 1000) & 0xFFFFFFFFFFF:011x}{_ID_TAG:05x}{next(_ID_SEQ) & 0xFFFFFFFF:08x}"


class Outbox:
    def __init__(self, now: Callable[[], float], settings: Mapping[str, Any]):
        self.now = now
        self.retry_max = int(settings.get("smpp.retry_max", 5))
        self.retry_base = float(settings.get("smpp.retry_base", 2.0))
        self.validity = float(settings.get("smpp.validity", 86400.0))

    def values(self, *, kind: str, source: str, dest: str, text: str, account: str | None = None,
               channel: str = "smpp", idempotency_key: str | None = None, campaign_id: str | None = None,
               correlation: str | None = None, not_before: float | None = None, validity_s: float | None = None,
               extra: dict[str, Any] | None = None, message_id: str | None = None,
               lease_owner: str | None = None, lease_s: float = 120.0) -> dict[str, Any]:
        """The column values of one new row; with ``lease_owner`` it is born claimed by that sender."""
        if len(text) > MAX_TEXT:
            raise ValueError(f"message text longer than {MAX_TEXT} characters")
        now = self.now()
        start = max(now, not_before or now)
        return {
            "message_id": message_id or new_message_id(), "idempotency_key": idempotency_key, "kind": kind,
            "channel": channel, "account": account, "source": source, "dest": dest, "text": text, "extra": extra,
            "state": "sending" if lease_owner else "queued", "attempts": 1 if lease_owner else 0,
            "next_attempt_at": start,
            "expires_at": start + (validity_s if validity_s is not None else self.validity),
            "created_at": now, "campaign_id": campaign_id, "correlation": correlation,
            "lease_owner": lease_owner, "lease_until": now + lease_s if lease_owner else None,
            "sent_at": None, "done_at": None, "last_error": None,
        }

    @staticmethod
    def insert_many(session: Session, rows: list[dict[str, Any]]) -> None:
        """Write many new rows in one statement (rows from :meth:`values`, without idempotency keys):
        a plain executemany on the session's connection, as the expression layer costs more than SQLite."""
        fastsql.insert_rows(session, OutboxMessage.__tablename__, rows, json_columns=("extra",))

    def enqueue(self, session: Session, **fields: Any) -> OutboxMessage:
        """Add one message; with an idempotency key already used, return the existing row instead.

        Takes the keyword arguments of :meth:`values`.
        """
        row_values = self.values(**fields)
        key = row_values["idempotency_key"]
        if key is not None:
            existing = session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
            if existing is not None:
                return existing
        row = OutboxMessage(**row_values)
        if key is None:
            session.add(row)
            return row
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            # Another process enqueued the same key between our check and insert.
            return session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
        return row

    def _due(self, channel: str, now: float):
        return and_(
            OutboxMessage.channel == channel,
            or_(
                and_(OutboxMessage.state == "queued", OutboxMessage.next_attempt_at <= now),
                and_(OutboxMessage.state == "sending", OutboxMessage.lease_until < now),
            ),
        )

    def claim(self, session: Session, *, channel: str, limit: int, owner: str, lease_s: float = 60.0,
              accounts: Iterable[str] | None = None) -> list[OutboxMessage]:
        """Take up to ``limit`` due messages for sending; with PostgreSQL, rows others hold are skipped."""
        now = self.now()
        query = (select(OutboxMessage).where(self._due(channel, now))
                 .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
        if accounts is not None:
            query = query.where(OutboxMessage.account.in_(list(accounts)))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        else:  # SQLite: take the write lock before reading, so no other process claims the same rows
            session.execute(update(OutboxMessage).where(false()).values(id=OutboxMessage.id))
        rows = list(session.scalars(query))
        for row in rows:
            row.state = "sending"
            row.lease_owner = owner
            row.lease_until = now + lease_s
            row.attempts += 1
        return rows

    def mark_sent(self, session: Session, message_ids: Iterable[str], *, delivered: bool = False) -> None:
        """The peer acknowledged these messages (by message id); ``delivered`` when it is the last hop."""
        message_ids = list(message_ids)
        if not message_ids:
            return
        now = self.now()
        values: dict[str, Any] = {"state": "delivered" if delivered else "sent", "sent_at": now,
                                  "lease_owner": None, "lease_until": None, "last_error": None}
        if delivered:
            values["done_at"] = now
        session.execute(update(OutboxMessage).where(OutboxMessage.message_id.in_(message_ids),
                                                    OutboxMessage.state.not_in(FINAL_STATES)).values(**values),
                        execution_options={"synchronize_session": False})

    def mark_delivered(self, session: Session, message_ids: Iterable[str], *, ok: bool = True,
                       error: str | None = None) -> int:
        """Apply delivery receipts by message id; returns rows changed."""
        message_ids = list(message_ids)
        if not message_ids:
            return 0
        state = "delivered" if ok else "failed"
        result = session.execute(
            update(OutboxMessage).where(OutboxMessage.message_id.in_(message_ids),
                                        OutboxMessage.state.not_in(FINAL_STATES))
            .values(state=state, done_at=self.now(), last_error=error),
            execution_options={"synchronize_session": False})
        return result.rowcount or 0

    def retry(self, session: Session, message_id: str, error: str, *, permanent: bool = False) -> str:
        """A failed attempt: back off exponentially, or fail for good; returns the new state."""
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.message_id == message_id))
        if row is None or row.state in FINAL_STATES:
            return row.state if row else "missing"
        now = self.now()
        row.last_error = error[:200]
        row.lease_owner = row.lease_until = None
        if permanent or row.attempts >= self.retry_max:
            row.state, row.done_at = "failed", now
        elif now >= row.expires_at:
            row.state, row.done_at = "expired", now
        else:
            row.state = "queued"
            row.next_attempt_at = now + self.retry_base * (2 ** max(0, row.attempts - 1))
        return row.state

    def release(self, session: Session, message_ids: Iterable[str]) -> None:
        """Give claimed messages back untried (no bind to send on, shutting down)."""
        message_ids = list(message_ids)
        if message_ids:
            session.execute(
                update(OutboxMessage).where(OutboxMessage.message_id.in_(message_ids),
                                            OutboxMessage.state == "sending")
                .values(state="queued", lease_owner=None, lease_until=None,
                        attempts=OutboxMessage.attempts - 1),
                execution_options={"synchronize_session": False})

    def expire_due(self, session: Session) -> int:
        now = self.now()
        result = session.execute(
            update(OutboxMessage).where(OutboxMessage.state == "queued", OutboxMessage.expires_at <= now)
            .values(state="expired", done_at=now), execution_options={"synchronize_session": False})
        return result.rowcount or 0

    @staticmethod
    def depth_by_state(session: Session, states: tuple[str, ...] = OUTBOX_STATES) -> dict[str, int]:
        """Rows by state, for ``states``: a walk of the state index over those rows only (the live states
        are few rows; the final ones are every row kept, see :func:`gateway.metrics.outbox_figures`)."""
        counts = dict.fromkeys(states, 0)
        query = select(OutboxMessage.state, func.count()).where(OutboxMessage.state.in_(states))
        for state, count in session.execute(query.group_by(OutboxMessage.state)):
            counts[state] = count
        return counts

    @staticmethod
    def oldest_queued_at(session: Session) -> float | None:
        return session.scalar(select(func.min(OutboxMessage.created_at)).where(OutboxMessage.state == "queued"))

    @staticmethod
    def oldest_queued_age(session: Session, now: float) -> float:
        oldest = Outbox.oldest_queued_at(session)
        return max(0.0, now - oldest) if oldest is not None else 0.0


# --- retention ----------------------------------------------------------------------------------------------
# Rows are appended in clock order, so ids grow with time: the first id newer than the cutoff bounds
# every batch (a walk of the primary key over the old rows only, no index on a time column to keep up).


def _first_id_since(session: Session, table: Any, time_column: Any, cutoff: float) -> int | None:
    return session.scalar(select(table.c.id).where(time_column >= cutoff).order_by(table.c.id).limit(1))


def _finished_before(cutoff: float) -> Any:
    """Rows nobody will send again: final states done before ``cutoff``, and ``sent`` rows whose
    receipt never came; never ``queued`` or ``sending``."""
    c = OutboxMessage.__table__.c
    return or_(and_(c.state.in_(FINAL_STATES), c.done_at < cutoff), and_(c.state == "sent", c.sent_at < cutoff))


def _purge(session: Session, table: Any, time_column: Any, condition: Any, cutoff: float, batch: int) -> int:
    """Delete up to ``batch`` rows matching ``condition`` below the first id at or after ``cutoff``."""
    bound = _first_id_since(session, table, time_column, cutoff)
    query = select(table.c.id).where(condition)
    if bound is not None:
        query = query.where(table.c.id < bound)
    ids = list(session.scalars(query.order_by(table.c.id).limit(batch)))
    if ids:
        session.execute(delete(table).where(table.c.id.in_(ids)))
    return len(ids)


def purge_outbox(session: Session, cutoff: float, batch: int = PURGE_BATCH) -> int:
    """Delete up to ``batch`` finished outbox rows older than ``cutoff``; returns how many."""
    table = OutboxMessage.__table__
    return _purge(session, table, table.c.created_at, _finished_before(cutoff), cutoff, batch)


def purge_message_log(session: Session, cutoff: float, batch: int = PURGE_BATCH) -> int:
    """Delete up to ``batch`` message_log rows older than ``cutoff``; returns how many."""
    table = MessageLog.__table__
    return _purge(session, table, table.c.at, table.c.at < cutoff, cutoff, batch)


def apply_retention(factory: Callable[[], Session], now: float, settings: Mapping[str, Any], *,
                    batch: int = PURGE_BATCH, max_batches: int = 10_000) -> dict[str, int]:
    """Delete what ``retention.*`` no longer keeps, one short transaction per ``batch`` rows (so senders
    are never held up for long); returns rows deleted per table."""
    jobs = (("outbox", purge_outbox, float(settings.get("retention.outbox_days", 30.0))),
            ("message_log", purge_message_log, float(settings.get("retention.message_log_days", 30.0))))
    counts = {}
    for name, purge, days in jobs:
        counts[name] = 0
        for _ in range(max_batches):
            with factory() as session, session.begin():
                deleted = purge(session, now - days * DAY, batch)
            counts[name] += deleted
            if deleted < batch:
                break
    return counts
