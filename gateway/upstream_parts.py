"""The SMSC message ids of parts sent upstream, kept in the database (table ``upstream_parts``).

The upstream client matches most receipts in memory; this is what survives a restart: a receipt
that finds no part in memory is looked up here by the SMSC's id (exact first, then the same number
in the other base), its outcome is stored on the part, and the outbox row is finished when every
part has one. Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from gateway.receipts import id_aliases, norm_id
from notifier.models import UpstreamPart

CHUNK = 500  # ids per IN (...) list
EXPIRE_BATCH = 5000


@dataclass(frozen=True)
class SentPart:
    smsc_id: str
    message_id: str
    part: int
    parts: int
    expires_at: float


@dataclass(frozen=True)
class Outcome:
    """A receipt's verdict on one part."""

    ok: bool
    stat: str


def record_sent(session: Session, parts: Iterable[SentPart]) -> None:
    rows = [{"smsc_id": norm_id(p.smsc_id), "message_id": p.message_id, "part": p.part, "parts": p.parts,
             "expires_at": p.expires_at, "ok": None, "stat": None} for p in parts]
    if rows:
        session.execute(insert(UpstreamPart.__table__), rows)


def record_outcome(session: Session, message_id: str, part: int, outcome: Outcome) -> None:
    """A part's receipt while other parts of the message still wait for theirs."""
    session.execute(update(UpstreamPart).where(UpstreamPart.message_id == message_id, UpstreamPart.part == part)
                    .values(ok=outcome.ok, stat=outcome.stat[:8]), execution_options={"synchronize_session": False})


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _parts_by_key(session: Session, keys: set[str]) -> dict[str, list[tuple[str, int]]]:
    t = UpstreamPart.__table__.c
    found: dict[str, list[tuple[str, int]]] = {}
    for chunk in _chunks(sorted(keys)):
        for key, mid, part in session.execute(select(t.smsc_id, t.message_id, t.part).where(t.smsc_id.in_(chunk))):
            found.setdefault(key, []).append((mid, part))
    return found


def apply_receipts(session: Session, receipts: Mapping[str, Outcome]) -> tuple[dict[str, Outcome], list[str]]:
    """Store each receipt (by SMSC id) on its part; returns ``({message id: outcome} of messages whose
    every part now has a receipt, [SMSC ids that match no part])``. Finished messages' parts are deleted."""
    keys = {k for smsc_id in receipts for k in (norm_id(smsc_id), *id_aliases(smsc_id))}
    by_key = _parts_by_key(session, keys)
    touched: set[str] = set()
    unmatched = []
    for smsc_id, outcome in receipts.items():
        candidates = [norm_id(smsc_id), *id_aliases(smsc_id)]
        hits = next((by_key[k] for k in candidates if k in by_key), None)
        if hits is None:
            unmatched.append(smsc_id)
            continue
        for mid, part in hits:
            record_outcome(session, mid, part, outcome)
            touched.add(mid)
    return finished(session, touched), unmatched


def finished(session: Session, message_ids: Iterable[str]) -> dict[str, Outcome]:
    """Of ``message_ids``, those whose every part has a receipt, with the message's outcome (a failed
    part fails it); their parts are deleted."""
    t = UpstreamPart.__table__.c
    outcomes: dict[str, dict[int, Outcome]] = {}
    totals: dict[str, int] = {}
    for chunk in _chunks(sorted(set(message_ids))):
        for mid, part, parts, ok, stat in session.execute(select(t.message_id, t.part, t.parts, t.ok, t.stat)
                                                           .where(t.message_id.in_(chunk))):
            totals[mid] = parts
            if ok is not None:
                outcomes.setdefault(mid, {})[part] = Outcome(bool(ok), stat or "")
    done = {}
    for mid, by_part in outcomes.items():
        if len(by_part) >= totals[mid]:
            failed = [o for o in by_part.values() if not o.ok]
            done[mid] = failed[0] if failed else next(iter(by_part.values()))
    forget(session, done)
    return done


def forget(session: Session, message_ids: Iterable[str]) -> None:
    """Drop the parts of messages that are finished."""
    for chunk in _chunks(sorted(set(message_ids))):
        session.execute(delete(UpstreamPart).where(UpstreamPart.message_id.in_(chunk)),
                        execution_options={"synchronize_session": False})


def expire(session: Session, now: float, batch: int = EXPIRE_BATCH) -> int:
    """Delete up to ``batch`` parts whose receipt window is over; returns how many.

    Parts are written in time order with the same window, so the expired ones come first by id:
    the first part still open bounds the deletion (a walk of the primary key, no index to keep up
    on the hot path)."""
    t = UpstreamPart.__table__.c
    bound = session.scalar(select(t.id).where(t.expires_at > now).order_by(t.id).limit(1))
    query = select(t.id).where(t.expires_at <= now)
    if bound is not None:
        query = query.where(t.id < bound)
    ids = list(session.scalars(query.order_by(t.id).limit(batch)))
    if ids:
        session.execute(delete(UpstreamPart).where(UpstreamPart.id.in_(ids)),
                        execution_options={"synchronize_session": False})
    return len(ids)
