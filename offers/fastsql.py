"""Hot-path statements on the session's own DBAPI connection (same transaction, no SQL compilation).

The "200" path runs a handful of fixed statements per message; through the
SQLAlchemy expression layer each costs more Python than the database takes to
answer. These are plain SQL that SQLite and PostgreSQL both accept, written
with ``?`` placeholders and converted for psycopg's ``%s``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session


@lru_cache(maxsize=64)
def _sql(statement: str, paramstyle: str) -> str:
    return statement.replace("?", "%s") if paramstyle in ("format", "pyformat") else statement


_CURSOR = "fastsql.cursor"  # session.info key: (transaction, DBAPI cursor, paramstyle)


def _cursor(session: Session):
    """The DBAPI cursor of the session's connection, remembered for the rest of its transaction: asking
    the session for its connection costs more than most of these statements.

    Each pooled connection has one cursor for its whole life (in the pool record's ``info``), used only
    by the thread that has the connection checked out. A cursor per transaction, dropped with the
    session, was freed by whichever thread's garbage collection found the session's cycle, and freeing
    a sqlite3 cursor resets the prepared statement it last ran: the connection's statement cache had
    lent that statement to the next transaction's cursor meanwhile, and the reset landed in the middle
    of its ``executemany`` (``sqlite3.InterfaceError: bad parameter or other API misuse``: a batch
    routed again one by one, three times in 20 minutes of the soak, each at the learned refresh,
    whose thread had collected)."""
    transaction = session.get_transaction()
    cached = session.info.get(_CURSOR)
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1], cached[2]
    conn = session.connection()
    pooled = conn.connection
    cursor = pooled.info.get(_CURSOR)
    if cursor is None or cursor.connection is not pooled.dbapi_connection:  # new, or the record reconnected
        cursor = pooled.info[_CURSOR] = pooled.dbapi_connection.cursor()
    found = cursor, conn.dialect.paramstyle
    session.info[_CURSOR] = (session.get_transaction(), *found)
    return found


def rows(session: Session, statement: str, params: tuple) -> tuple[list[str], list[tuple]]:
    cur, style = _cursor(session)
    cur.execute(_sql(statement, style), params)
    names = [d[0] for d in cur.description] if cur.description else []
    return names, cur.fetchall()


def execute(session: Session, statement: str, params: tuple) -> int:
    """Run one statement; returns the rows it changed (DBAPI rowcount)."""
    cur, style = _cursor(session)
    cur.execute(_sql(statement, style), params)
    return cur.rowcount


def subscriber_inputs(session: Session, msisdn: str, since: float) -> tuple[dict[str, Any] | None, set[str],
                                                                           dict[str, float]]:
    """The subscriber's row (as a mapping), active subscription codes and last refusals since ``since``."""
    names, found = rows(session, "SELECT * FROM subscribers WHERE msisdn = ?", (msisdn,))
    if not found:
        return None, set(), {}
    row = dict(zip(names, found[0], strict=True))
    for key, value in row.items():
        # JSON columns come back as text from the raw driver on SQLite
        if isinstance(value, str) and value[:1] in "[{" and key.endswith(("history", "json")):
            row[key] = json.loads(value)
    _, mixed = rows(session,
                    "SELECT 'a', offer_code, 0.0 FROM subscriptions WHERE msisdn = ? AND cancelled_at IS NULL "
                    "UNION ALL SELECT 'r', offer_code, MAX(at) FROM refusals WHERE msisdn = ? AND at >= ? "
                    "GROUP BY offer_code", (msisdn, msisdn, since))
    active = {code for kind, code, _ in mixed if kind == "a"}
    refused = {code: at for kind, code, at in mixed if kind == "r"}
    return row, active, refused


_VIEWS = "fastsql.shelf_views"  # session.info key: {msisdn: row} of shelves shown, not yet written
_UPSERT_VIEW = ("INSERT INTO shelf_views (msisdn, codes, at) VALUES (?, ?, ?) "
                "ON CONFLICT (msisdn) DO UPDATE SET codes = excluded.codes, at = excluded.at")


def remember_shelf(session: Session, msisdn: str, codes: list[str] | tuple[str, ...], now: float) -> None:
    """Record the last shelf shown; written with the others of the transaction in one executemany
    before it commits (or before anything reads ``shelf_views``: call :func:`write_shelf_views`)."""
    session.info.setdefault(_VIEWS, {})[msisdn] = (msisdn, _codes_json(tuple(codes)), now)


@event.listens_for(Session, "before_commit")
def write_shelf_views(session: Session) -> None:
    pending = session.info.pop(_VIEWS, None)
    if pending:
        executemany(session, _UPSERT_VIEW, list(pending.values()))


_ABSENT = object()


def keep_through_savepoints(key: str, snapshot: Callable[[Any], Any]) -> None:
    """Keep the rows a transaction buffers in ``session.info[key]`` true across savepoints: a savepoint
    that rolls back takes back only what was buffered inside it (``snapshot`` copies the buffer when it
    begins); the whole transaction rolling back drops the buffer."""
    marks = key + ".savepoints"

    @event.listens_for(Session, "after_transaction_create")
    def _began(session: Session, transaction: Any) -> None:
        if transaction.nested:
            found = session.info.get(key, _ABSENT)
            session.info.setdefault(marks, {})[id(transaction)] = found if found is _ABSENT else snapshot(found)

    @event.listens_for(Session, "after_soft_rollback")
    def _rolled_back(session: Session, previous: Any) -> None:
        if not previous.nested:
            session.info.pop(key, None)
            session.info.pop(marks, None)
            return
        saved = session.info.get(marks, {}).pop(id(previous), _ABSENT)
        if saved is _ABSENT:
            session.info.pop(key, None)
        else:
            session.info[key] = saved


keep_through_savepoints(_VIEWS, dict)


@lru_cache(maxsize=4096)
def _codes_json(codes: tuple[str, ...]) -> str:
    """Shelves repeat (cached shelves share their codes): serialise each list once."""
    return json.dumps(list(codes))


def executemany(session: Session, statement: str, params: list[tuple]) -> None:
    if not params:
        return
    cur, style = _cursor(session)
    cur.executemany(_sql(statement, style), params)


@lru_cache(maxsize=16)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def insert_rows(session: Session, table: str, rows: list[dict[str, Any]], json_columns: tuple[str, ...] = ()) -> None:
    """Insert many rows given as dicts with the same keys (JSON columns serialised here), one executemany."""
    if not rows:
        return
    columns = tuple(rows[0])
    json_at = [i for i, c in enumerate(columns) if c in json_columns]
    values = []
    for row in rows:
        tup = [row[c] for c in columns]
        for i in json_at:
            if tup[i] is not None:
                tup[i] = json.dumps(tup[i])
        values.append(tup)
    executemany(session, _insert_sql(table, columns), values)
