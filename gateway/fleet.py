"""Hear the fleet's cache events on PostgreSQL (LISTEN ``gateway_events``; see core/fleet_events.py).

Every serving process on PostgreSQL (a lone ``serve``, each worker of ``serve --workers N``) holds
one extra connection, in autocommit, that LISTENs. A daemon thread waits on it (psycopg's
``notifies()``) and hands each payload to the reactor (``callFromThread``); everything else runs on
the reactor: the dispatch (``fleet_events.plan``) and the calls it plans on the router and the
fixture snapshot. When the connection drops the thread connects again after a back-off (0.5 s
doubling to 10 s); once listening (again) every cached shelf is dropped and a fixture set newer than
the one served is loaded, since events may have been missed meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from core import fleet_events

log = Logger(namespace="gateway.fleet")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
POLL_S = 0.5  # how often the thread looks up from its wait to see whether it should stop
APPLICATION_NAME = "gateway-fleet-listener"
# a silent network loss (no FIN) is seen within about a minute instead of never
CONNECT_DEFAULTS = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                    "connect_timeout": 10}


def connect_args(engine: Any) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for the engine's database (the URL as SQLAlchemy reads it)."""
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs.pop("context", None)  # the dialect's type adapters: this connection reads text only
    if args:
        kwargs["conninfo"] = args[0]
    kwargs.update({k: v for k, v in CONNECT_DEFAULTS.items() if k not in kwargs})
    kwargs.setdefault("application_name", APPLICATION_NAME)
    kwargs["autocommit"] = True
    return kwargs


class FleetListener(service.Service):
    """The LISTEN connection of one serving process. ``reload_fixtures()`` serves the newest fixture
    set of the database exactly as a local reload would (a worker of a group: without telling the group)."""

    def __init__(self, gateway: Any, reload_fixtures: Callable[[], Any] | None = None,
                 connect: Callable[[], Any] | None = None):
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.reload_fixtures = reload_fixtures or self._reload_here
        self._connect = connect or self._psycopg_connect
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0  # LISTENs established (reconnects are connections - 1)
        self.stats = {"events": 0, "ignored": 0, "bad": 0, "invalidated": 0, "reloads": 0}

    # --- reactor side -------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-listener", daemon=True)
        self._thread.start()

    def stopService(self) -> None:
        super().stopService()
        self._stopping.set()  # the thread ends within POLL_S and closes its connection; nobody waits for it

    def _reload_here(self) -> None:
        self.gateway.restore_fixtures()  # a new catalog: the shelf cache empties by itself
        log.info("fixtures reloaded (another machine loaded them)")

    def connected(self, newest_set: int | None) -> None:
        self.connections += 1
        if self.connections == 1:
            log.info("listening for fleet events on PostgreSQL (channel {channel}, origin {origin})",
                     channel=fleet_events.CHANNEL, origin=fleet_events.origin())
        else:
            log.info("listening for fleet events again: every cached shelf dropped (events may have been missed)")
        self._apply(fleet_events.after_connect(newest_set, self.gateway.fixture_set_id))

    def received(self, payload: str) -> None:
        if not self.running:
            return
        self.stats["events"] += 1
        try:
            calls = fleet_events.plan(payload, fleet_events.origin(), self.gateway.fixture_set_id)
        except fleet_events.BadPayload as exc:
            self.stats["bad"] += 1
            log.warn("fleet event ignored: {why}: {payload!r}", why=str(exc), payload=payload[:200])
            return
        if not calls:
            self.stats["ignored"] += 1
        self._apply(calls)

    def _apply(self, calls: list[fleet_events.Call]) -> None:
        for call in calls:
            if call[0] == "invalidate":
                self.stats["invalidated"] += 1
            elif call[0] == "reload_fixtures":
                self.stats["reloads"] += 1
        try:
            fleet_events.apply(calls, self.gateway.router, self.reload_fixtures)
        except Exception as exc:  # noqa: BLE001 - a bad fixture set in the database: keep serving the old one
            log.warn("fleet event not applied: {error}", error=repr(exc))

    def _warn(self, message: str, error: str, delay: float) -> None:
        log.warn("{message}: {error}; trying again in {delay:.1f} s", message=message, error=error, delay=delay)

    # --- the thread -----------------------------------------------------------------------------------

    def _psycopg_connect(self) -> tuple[Any, int | None]:
        """A connection that LISTENs, and the newest fixture set id once listening."""
        import psycopg

        conn = psycopg.connect(**connect_args(self.gateway.engine))
        try:
            conn.execute(f"LISTEN {fleet_events.CHANNEL}")
            newest = conn.execute("SELECT max(id) FROM fixture_sets").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        return conn, newest

    def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            try:
                conn, newest = self._connect()
            except Exception as exc:  # noqa: BLE001 - the database is down or refuses us: try later
                self.reactor.callFromThread(self._warn, "cannot listen for fleet events", _why(exc), delay)
                self._stopping.wait(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            self.reactor.callFromThread(self.connected, newest)
            try:
                while not self._stopping.is_set():
                    for note in conn.notifies(timeout=POLL_S):
                        if self._stopping.is_set():
                            break
                        self.reactor.callFromThread(self.received, note.payload)
                    delay = BACKOFF_FIRST_S  # it stayed up: the next drop starts the back-off afresh
            except Exception as exc:  # noqa: BLE001 - the connection dropped
                if not self._stopping.is_set():
                    self.reactor.callFromThread(self._warn, "lost the fleet events connection", _why(exc), delay)
                    self._stopping.wait(delay)
                    delay = min(BACKOFF_MAX_S, delay * 2)
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001, S110 - closing a broken connection
                    pass


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def install(gateway: Any, parent: service.MultiService, reload_fixtures: Callable[[], Any] | None = None) -> \
        FleetListener | None:
    """Listen for the fleet's events when the database is PostgreSQL (nothing to hear on SQLite)."""
    if gateway.engine.dialect.name != "postgresql":
        return None
    listener = FleetListener(gateway, reload_fixtures)
    listener.setName("fleet")
    listener.setServiceParent(parent)
    return listener
