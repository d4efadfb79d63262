"""Results as events: every time an offer is put in front of a subscriber (an *exposure*) and every
*outcome* that exposure caused, linked by the exposure's id.

Exposures: a "200" shelf (SMS or USSD, with the rank), a campaign SMS or email, an outbound call
offer; each row says its channel and context and, for the shelf, the subscriber's segment and
which ranking showed it (``learned`` or the ``fixed`` holdout).

Outcomes (``kind``), each pointing at the exposure that caused it (None when there was none):

- ``ordered`` (KT), linked to the newest exposure of that offer within :data:`ATTRIBUTION_S`: on the
  subscriber's last shelf (the one a lone digit orders from), or in a campaign message or a call;
- ``confirmed`` (Y) and ``cancelled`` (QX, with ``after_s`` since the confirmation: the report
  counts cancels within 7 and 30 days), linked through the order before them, so show -> order ->
  confirm -> cancel is one chain whatever else was shown in between;
- ``refused`` (BX, ``suppresses`` when the refusal keeps the offer off the shelf);
- ``complaint`` and ``opt_out``, linked to the newest exposure of any offer (the top of the last shelf).

"Not confirmed in time" is an ``ordered`` outcome without a ``confirmed`` one once the confirm
window has passed; the report derives it.

Writing costs the hot path nothing extra: rows are buffered on the session and written with one
bulk insert each when the caller's unit of work commits (the MO pipeline's group commit).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, event, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base
from offers import fastsql

ATTRIBUTION_S = 7 * 86400.0
OUTCOMES = ("ordered", "confirmed", "cancelled", "refused", "complaint", "opt_out")
ARMS = ("learned", "fixed")
_BUFFER = "offers.exposures"
# Ids unique across processes without a round trip: a random 31-bit process prefix, then a counter
# (an integer key: SQLite keeps the row in its rowid B-tree, no separate key index to write).
_PREFIX = int.from_bytes(os.urandom(4), "big") >> 1 << 32
_COUNTER = itertools.count(1)
ID = BigInteger().with_variant(Integer, "sqlite")


class Exposure(Base):
    __tablename__ = "exposures"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=False)
    msisdn: Mapped[str] = mapped_column(String(20))
    offer_code: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))  # sms, ussd, email, call
    context: Mapped[str] = mapped_column(String(80))  # shelf, campaign:<id>, call:<project>
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    segment: Mapped[str | None] = mapped_column(String(40), nullable=True)  # brand:usage_class
    arm: Mapped[str | None] = mapped_column(String(8), nullable=True)  # learned | fixed (shelf only)
    at: Mapped[float] = mapped_column(Float)

    # Only appends on the "200" path: (at, msisdn) grows at its end; the number lookup covers the
    # rare campaign and call exposures (a shelf's are found through the subscriber's last shelf).
    __table_args__ = (Index("ix_exposures_at", "at", "msisdn"),
                      Index("ix_exposures_msisdn_offer", "msisdn", "offer_code", "at",
                            sqlite_where=text("context <> 'shelf'"), postgresql_where=text("context <> 'shelf'")))


class Outcome(Base):
    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exposure_id: Mapped[int | None] = mapped_column(ID, nullable=True)
    msisdn: Mapped[str] = mapped_column(String(20))
    offer_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    kind: Mapped[str] = mapped_column(String(12))
    channel: Mapped[str] = mapped_column(String(16), default="sms")  # where the outcome arrived
    at: Mapped[float] = mapped_column(Float)
    after_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # cancelled: since confirmed
    suppresses: Mapped[bool] = mapped_column(Boolean, default=False)  # refused: keeps it off the shelf

    __table_args__ = (Index("ix_outcomes_exposure", "exposure_id"),
                      Index("ix_outcomes_msisdn_offer", "msisdn", "offer_code", "at"),
                      Index("ix_outcomes_at", "at"))


@dataclass(frozen=True)
class Link:
    exposure_id: int | None
    at: float | None = None  # when the linked event (exposure or order/confirmation) happened
    offer_code: str | None = None


EXPOSURE_COLUMNS = ("id", "msisdn", "offer_code", "channel", "context", "rank", "segment", "arm", "at")
_ID, _MSISDN, _CODE, _AT, _RANK = 0, 1, 2, 8, 5
OUTCOME_COLUMNS = ("exposure_id", "msisdn", "offer_code", "kind", "channel", "at", "after_s", "suppresses")
_INSERTS = {name: f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            for name, cols in (("exposures", EXPOSURE_COLUMNS), ("outcomes", OUTCOME_COLUMNS))}


def new_id() -> int:
    return _PREFIX | next(_COUNTER)


def exposure_row(msisdn: str, offer_code: str, channel: str, context: str, at: float, *, rank: int | None = None,
                 segment: str | None = None, arm: str | None = None) -> tuple:
    """One exposure as a row for :func:`record_exposures` (any channel: shelf, campaign, call), in
    :data:`EXPOSURE_COLUMNS` order; its id is ``row[0]``."""
    return (new_id(), msisdn, offer_code, channel[:16], context[:80], rank, segment, arm, at)


def _buffer(session: Session) -> dict[str, list[tuple]]:
    return session.info.setdefault(_BUFFER, {"exposures": [], "outcomes": []})


def record_exposures(session: Session, rows: list[tuple]) -> None:
    """Queue exposure rows; they are written with one bulk insert when the session commits."""
    _buffer(session)["exposures"].extend(rows)


def record_exposure(session: Session, msisdn: str, offer_code: str, channel: str, context: str, at: float,
                    **extra: Any) -> int:
    """Record one exposure (a campaign message, an outbound call offer); returns its id."""
    row = exposure_row(msisdn, offer_code, channel, context, at, **extra)
    record_exposures(session, [row])
    return row[_ID]


@event.listens_for(Session, "before_commit")
def _write_buffered(session: Session) -> None:
    pending = session.info.pop(_BUFFER, None)
    if not pending:
        return
    for name, statement in _INSERTS.items():
        if pending[name]:  # the driver's executemany: no per-row work in SQLAlchemy on the hot path
            fastsql.executemany(session, statement, pending[name])


fastsql.keep_through_savepoints(_BUFFER, lambda buffer: {name: list(rows) for name, rows in buffer.items()})


# --- outcomes --------------------------------------------------------------------------------------

def _last_exposure(session: Session, msisdn: str, code: str | None, now: float) -> Link:
    """The newest exposure of ``code`` (of any offer when None) to ``msisdn`` within the window:
    on the subscriber's last shelf, or in a campaign or call."""
    mine = [r for r in _buffer(session)["exposures"]
            if r[_MSISDN] == msisdn and (code is None or r[_CODE] == code)]
    if mine:  # shown in this unit of work: the newest, the top of its shelf
        row = min(mine, key=lambda r: (-r[_AT], r[_RANK] or 0))
        return Link(row[_ID], row[_AT], row[_CODE])
    since = now - ATTRIBUTION_S
    found = [link for link in (_on_last_shelf(session, msisdn, code, since), _elsewhere(session, msisdn, code, since))
             if link.exposure_id is not None]
    return max(found, key=lambda link: link.at) if found else Link(None)


def _on_last_shelf(session: Session, msisdn: str, code: str | None, since: float) -> Link:
    fastsql.write_shelf_views(session)
    _, views = fastsql.rows(session, "SELECT codes, at FROM shelf_views WHERE msisdn = ?", (msisdn,))
    if not views or views[0][1] < since:
        return Link(None)
    codes, at = views[0]
    codes = json.loads(codes) if isinstance(codes, str) else codes
    wanted = code if code is not None else (codes[0] if codes else None)
    if wanted not in codes:
        return Link(None)
    _, rows = fastsql.rows(session, "SELECT id, at, offer_code FROM exposures WHERE at = ? AND msisdn = ? "
                                    "AND offer_code = ? AND context = 'shelf' LIMIT 1", (at, msisdn, wanted))
    return Link(*rows[0]) if rows else Link(None)


def _elsewhere(session: Session, msisdn: str, code: str | None, since: float) -> Link:
    where = "msisdn = ? AND context <> 'shelf' AND at >= ?" + ("" if code is None else " AND offer_code = ?")
    params: tuple = (msisdn, since) + (() if code is None else (code,))
    _, rows = fastsql.rows(session, f"SELECT id, at, offer_code FROM exposures WHERE {where} "
                                    "ORDER BY at DESC LIMIT 1", params)
    return Link(*rows[0]) if rows else Link(None)


def _last_outcome(session: Session, msisdn: str, code: str, kind: str) -> Link:
    """The exposure behind the newest ``kind`` outcome of this number and offer, and its time."""
    for row in reversed(_buffer(session)["outcomes"]):
        if row[1] == msisdn and row[2] == code and row[3] == kind:
            return Link(row[0], row[5], code)
    _, rows = fastsql.rows(session, "SELECT exposure_id, at FROM outcomes WHERE msisdn = ? AND offer_code = ? "
                                    "AND kind = ? ORDER BY at DESC, id DESC LIMIT 1", (msisdn, code, kind))
    return Link(rows[0][0], rows[0][1], code) if rows else Link(None)


def _link(session: Session, msisdn: str, code: str | None, kind: str, now: float) -> tuple[Link, float | None]:
    if kind == "confirmed" and code is not None:
        return _last_outcome(session, msisdn, code, "ordered"), None
    if kind == "cancelled" and code is not None:
        confirmed = _last_outcome(session, msisdn, code, "confirmed")
        return confirmed, (now - confirmed.at if confirmed.at is not None else None)
    return _last_exposure(session, msisdn, code, now), None


def record_outcome(session: Session, msisdn: str, code: str | None, kind: str, now: float, *,
                   channel: str = "sms", suppresses: bool = False) -> int | None:
    """Record an outcome linked to the exposure that caused it; returns that exposure's id (or None).

    ``code`` None (a complaint, an opt-out) links to the newest exposure of any offer.
    """
    if kind not in OUTCOMES:
        raise ValueError(f"unknown outcome {kind!r}; one of {', '.join(OUTCOMES)}")
    link, after = _link(session, msisdn, code, kind, now)
    _buffer(session)["outcomes"].append((link.exposure_id, msisdn, code or link.offer_code, kind, channel[:16], now,
                                         after, suppresses))
    return link.exposure_id


def chain(session: Session, exposure_id: int) -> dict[str, Any] | None:
    """One exposure and every outcome linked to it, oldest first (for ops and tests)."""
    row = session.get(Exposure, exposure_id)
    if row is None:
        return None
    _, outcomes = fastsql.rows(session, "SELECT kind, at, channel, after_s, suppresses FROM outcomes "
                                        "WHERE exposure_id = ? ORDER BY at, id", (exposure_id,))
    return {"exposure": _as_dict(row), "outcomes": [
        {"kind": k, "at": at, "channel": ch, "after_s": after, "suppresses": bool(sup)}
        for k, at, ch, after, sup in outcomes]}


def _as_dict(row: Exposure) -> Mapping[str, Any]:
    return {c.key: getattr(row, c.key) for c in Exposure.__table__.columns}


def shown(items: Any) -> tuple[tuple[int, str], ...]:
    """The (rank, offer code) pairs of shown shelf items, as :func:`record_shelf` takes them: a tuple of ints
    and strings, which the garbage collector stops tracking, so the shelf cache keeps it for free."""
    return tuple((i.rank, i.code) for i in items)


def record_shelf(session: Session, msisdn: str, channel: str, pairs: tuple[tuple[int, str], ...], at: float,
                 segment: str, arm: str) -> None:
    """The offers of one shelf reply (SMS "200" or a USSD offers page): (rank, code) pairs from :func:`shown`."""
    record_exposures(session, [(_PREFIX | next(_COUNTER), msisdn, code, channel, "shelf", rank, segment, arm, at)
                               for rank, code in pairs])
