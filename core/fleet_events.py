"""Cache events between the machines of a fleet sharing one PostgreSQL (LISTEN/NOTIFY).

A transaction that changes what processes cache (a subscriber's shelf, the fixture set, many
subscribers at once) publishes it with ``SELECT pg_notify('gateway_events', payload)`` inside that
same transaction: PostgreSQL delivers a notification only when its transaction commits, and drops
it on a rollback. Every serving process LISTENs (gateway/fleet.py) and applies what others sent.

This module is the pure part: the payload codec, the dispatch (an event -> the calls a process
makes), the process's identity, and :func:`publish`, which sends on a Session or Connection (and
does nothing on any other database: SQLite has one machine, whose worker group's coordinator
broadcasts already).

A payload is one JSON object, ASCII, shorter than 8000 bytes (PostgreSQL's limit)::

    {"v": 1, "from": "<origin>", "kind": "subscriber", "msisdns": ["13800000001", ...]}
    {"v": 1, "from": "<origin>", "kind": "rewrite"}
    {"v": 1, "from": "<origin>", "kind": "fixtures", "set": 42}

``from`` names the sending process, or the worker group it belongs to (a group's parent passes its
origin to its workers in ``GATEWAY_FLEET_ORIGIN``): a process ignores what its own group sent, which
it has applied already (locally, or through the group's coordinator).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CHANNEL = "gateway_events"
MAX_PAYLOAD = 7999  # bytes: PostgreSQL refuses a payload of 8000 or more
VERSION = 1
ORIGIN_ENV = "GATEWAY_FLEET_ORIGIN"

SUBSCRIBER = "subscriber"  # these subscribers' shelves changed
REWRITE = "rewrite"  # many subscribers were written: drop every cached shelf
FIXTURES = "fixtures"  # a new fixture set was stored: serve it
KINDS = (SUBSCRIBER, REWRITE, FIXTURES)

_origin: str | None = None


def origin() -> str:
    """This process's identity in the fleet (its group's, in a worker of a group); unique per start."""
    global _origin
    if _origin is None:
        _origin = os.environ.get(ORIGIN_ENV) or f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    return _origin


# --- codec ------------------------------------------------------------------------------------------------

def _head(sender: str, kind: str) -> dict[str, Any]:
    return {"v": VERSION, "from": sender, "kind": kind}


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def encode(sender: str, kind: str, msisdns: Iterable[str] = (), fixture_set: int | None = None,
           limit: int = MAX_PAYLOAD) -> list[str]:
    """The payloads of one event: a ``subscriber`` event is split into as few payloads of at most
    ``limit`` bytes as its msisdns need (in the order given, duplicates dropped); an msisdn that could
    not fit in a payload alone turns the whole event into one ``rewrite`` (coarser, still correct).
    An event with nothing to say (no msisdn) is no payload."""
    if kind not in KINDS:
        raise ValueError(f"unknown fleet event kind {kind!r}")
    if kind == REWRITE:
        return [_dump(_head(sender, kind))]
    if kind == FIXTURES:
        body = _head(sender, kind)
        if fixture_set is not None:
            body["set"] = int(fixture_set)
        return [_dump(body)]
    empty = _dump({**_head(sender, kind), "msisdns": []})
    base = len(empty)  # every item adds its JSON text and a comma (one comma fewer than items: slack)
    if base >= limit:
        raise ValueError("the sender's identity alone fills a payload")
    payloads: list[str] = []
    batch: list[str] = []
    size = base
    for msisdn in dict.fromkeys(msisdns):
        item = len(json.dumps(str(msisdn), ensure_ascii=True)) + 1
        if base + item > limit:
            return encode(sender, REWRITE)
        if size + item > limit:
            payloads.append(_dump({**_head(sender, kind), "msisdns": batch}))
            batch, size = [], base
        batch.append(str(msisdn))
        size += item
    if batch:
        payloads.append(_dump({**_head(sender, kind), "msisdns": batch}))
    return payloads


@dataclass(frozen=True)
class Event:
    sender: str
    kind: str
    msisdns: tuple[str, ...] = ()
    fixture_set: int | None = None


class BadPayload(ValueError):
    """A notification on our channel that is not an event we can read."""


def decode(payload: str | bytes) -> Event:
    """One payload -> its event; BadPayload when it is not JSON, too long, or not shaped as above.
    A kind this version does not know decodes (the dispatch ignores it): newer peers may add kinds."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise BadPayload("not UTF-8") from None
    if len(payload.encode("utf-8")) > MAX_PAYLOAD:
        raise BadPayload(f"longer than {MAX_PAYLOAD} bytes")
    try:
        body = json.loads(payload)
    except ValueError:
        raise BadPayload("not JSON") from None
    if not isinstance(body, dict):
        raise BadPayload("not a JSON object")
    sender, kind = body.get("from"), body.get("kind")
    if not isinstance(sender, str) or not sender:
        raise BadPayload("no sender ('from')")
    if not isinstance(kind, str) or not kind:
        raise BadPayload("no kind")
    msisdns = body.get("msisdns", [])
    if kind == SUBSCRIBER and (not isinstance(msisdns, list) or not all(isinstance(m, str) and m for m in msisdns)):
        raise BadPayload("'msisdns' is not a list of numbers")
    fixture_set = body.get("set")
    if fixture_set is not None and (isinstance(fixture_set, bool) or not isinstance(fixture_set, int)):
        raise BadPayload("'set' is not an integer")
    return Event(sender, kind, tuple(msisdns) if kind == SUBSCRIBER else (), fixture_set)


# --- dispatch ---------------------------------------------------------------------------------------------

Call = tuple[Any, ...]  # ("invalidate", msisdn) | ("invalidate_all",) | ("reload_fixtures", set id or None)


def plan(payload: str | bytes, own: str, serving_set: int | None = None) -> list[Call]:
    """What a process does with one notification: nothing for its own (group's) events and for kinds it
    does not know; a fixture set it already serves is not loaded again. Raises BadPayload."""
    event = decode(payload)
    if event.sender == own:
        return []
    if event.kind == SUBSCRIBER:
        return [("invalidate", m) for m in dict.fromkeys(event.msisdns)]
    if event.kind == REWRITE:
        return [("invalidate_all",)]
    if event.kind == FIXTURES:
        if event.fixture_set is not None and event.fixture_set == serving_set:
            return []
        return [("reload_fixtures", event.fixture_set)]
    return []


def after_connect(newest_set: int | None, serving_set: int | None) -> list[Call]:
    """Once (again) listening: events may have been missed meanwhile, so every cached shelf goes, and
    a fixture set newer than the one served is loaded."""
    calls: list[Call] = [("invalidate_all",)]
    if newest_set is not None and newest_set != serving_set:
        calls.append(("reload_fixtures", newest_set))
    return calls


def apply(calls: Iterable[Call], router: Any, reload_fixtures: Callable[[], Any]) -> None:
    """Make the planned calls on a Router (``invalidate``, ``invalidate_all``) and the fixture reload."""
    for call in calls:
        if call[0] == "invalidate":
            router.invalidate(call[1])
        elif call[0] == "invalidate_all":
            router.invalidate_all()
        elif call[0] == "reload_fixtures":
            reload_fixtures()
        else:
            raise ValueError(f"unknown call {call[0]!r}")


# --- sending ----------------------------------------------------------------------------------------------

_NOTIFY = "SELECT pg_notify(:channel, :payload)"


def publish(target: Any, kind: str, msisdns: Iterable[str] = (), fixture_set: int | None = None) -> int:
    """Notify the fleet inside ``target``'s transaction (a Session or a Connection): sent when it
    commits, never on a rollback. Does nothing unless the database is PostgreSQL. Returns the number
    of notifications queued."""
    from sqlalchemy import text

    dialect = target.get_bind().dialect if hasattr(target, "get_bind") else target.dialect
    if dialect.name != "postgresql":
        return 0
    payloads = encode(origin(), kind, msisdns, fixture_set)
    statement = text(_NOTIFY)
    for payload in payloads:
        target.execute(statement, {"channel": CHANNEL, "payload": payload})
    return len(payloads)
