"""The running gateway's shared state: database, fixture snapshot, settings, router, outbox.

Every transport (SMPP, USSD, SIP, HTTP, SMTP) holds one :class:`Gateway`.
The fixture snapshot is one immutable object swapped in a single assignment,
so a reload (HTTP or SIGHUP) never shows anybody half old, half new rules.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from twisted.logger import Logger

from core import fleet_events
from core.db import make_engine, migrate, session_factory, transaction
from core.fixtures import FixtureError, load_set, parse_set, read_dir
from core.settings import Settings
from gateway.sections import all_sections
from notifier.models import FixtureSetRow
from notifier.outbox import Outbox
from notifier.security import hash_token

log = Logger(namespace="gateway")

LISTEN_BACKLOG = 128


def shared_socket(kind: int, host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT: every worker of a group binds one, the kernel spreads
    TCP connections over them and keeps each UDP peer (address and port) on one of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class AccountInfo:
    system_id: str
    password_hash: str
    bind_types: frozenset[str]
    max_binds: int
    rate: float
    source_ranges: tuple[str, ...]
    ip_allow: tuple[str, ...]
    receives_service_sms: bool


@dataclass(frozen=True)
class Snapshot:
    """Everything the fixtures define, validated, as one immutable value."""

    version: int
    parsed: Mapping[str, Any]
    settings: Settings
    offers: Any  # offers.catalog.OffersCatalog
    accounts: Mapping[str, AccountInfo]
    token_hashes: frozenset[str]
    extras: Mapping[str, Any] = field(default_factory=dict)


class LiveSettings(Mapping[str, Any]):
    """A Mapping that always reads the current snapshot's settings."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    def __getitem__(self, key: str) -> Any:
        return self._gateway.settings[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._gateway.settings)

    def __len__(self) -> int:
        return len(self._gateway.settings)


class Gateway:
    def __init__(self, reactor: Any, db_url: str, overrides: Mapping[str, Any] | None = None,
                 fits: Callable[[str, int], bool] | None = None):
        from offers.router import Router
        from offers.shelf import default_fits

        self.reactor = reactor
        self.now: Callable[[], float] = reactor.seconds
        self.overrides = dict(overrides or {})
        self.db_url = db_url
        self.engine = make_engine(db_url)
        migrate(self.engine)
        self.db = session_factory(self.engine)
        self.snapshot: Snapshot | None = None
        self.fixture_set_id: int | None = None  # the fixture_sets row served (None: none loaded yet)
        self.live_settings = LiveSettings(self)
        self.outbox = Outbox(self.now, self.live_settings)
        self.router = Router(lambda: self.snapshot.offers, self.live_settings, fits or default_fits)
        self.reload_listeners: list[Callable[[Snapshot], None]] = []
        self.started_at = self.now()
        # Names this process's leases; stable across restarts so a restarted process reclaims its own.
        self.instance = "local" if db_url.startswith("sqlite") else f"{socket.gethostname()}-{os.getpid()}"
        self.worker: int | None = None  # index in a worker group (serve --workers N > 1)
        self.reuse_port = False  # listeners share their ports with the group's other workers

    # --- fixtures -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self.snapshot is None:
            return Settings(self.overrides)
        return self.snapshot.settings

    def has_fixtures(self) -> bool:
        with self.db() as session:
            return session.scalar(select(FixtureSetRow.id).limit(1)) is not None

    def load_fixtures_dir(self, directory: str) -> dict[str, int]:
        return self.apply_fixtures(read_dir(directory), source=str(directory))

    def apply_fixtures(self, files: Mapping[str, str], source: str) -> dict[str, int]:
        """Validate a whole fixture set, load it in one transaction, then swap the snapshot.

        Raises FixtureError (and changes nothing) when any file has a problem.
        """
        sections = all_sections()
        parsed, problems = parse_set(files, sections)
        if problems:
            raise FixtureError(problems)
        snapshot = self._build_snapshot(parsed)
        with transaction(self.db) as session:
            counts = load_set(session, parsed, sections, self.now())
            row = FixtureSetRow(loaded_at=self.now(), source=source[:200], files=dict(files), counts=counts)
            session.add(row)
            session.flush()
            fleet_events.publish(session, fleet_events.FIXTURES, fixture_set=row.id)  # other machines load it too
        self.fixture_set_id = row.id
        self._swap(snapshot)
        log.info("fixtures loaded from {source}: {counts}", source=source, counts=counts)
        return counts

    def restore_fixtures(self) -> bool:
        """Serve the fixture set loaded last (after a restart); False when the database has none."""
        with self.db() as session:
            row = FixtureSetRow.latest(session)
        if row is None:
            return False
        parsed, problems = parse_set(row.files, all_sections())
        if problems:
            raise FixtureError(problems)
        snapshot = self._build_snapshot(parsed)
        self.fixture_set_id = row.id
        self._swap(snapshot)
        return True

    def _build_snapshot(self, parsed: Mapping[str, Any]) -> Snapshot:
        from gateway.sections import build_extras
        from offers.sections import build_catalog

        settings = Settings(parsed.get("config") or {}, self.overrides)
        accounts = {a["system_id"]: AccountInfo(
            system_id=a["system_id"], password_hash=a["password_hash"], bind_types=frozenset(a["bind_types"]),
            max_binds=a["max_binds"], rate=a["rate"], source_ranges=tuple(a["source_ranges"]),
            ip_allow=tuple(a["ip_allow"]), receives_service_sms=a["receives_service_sms"])
            for a in parsed.get("accounts") or []}
        tokens = frozenset(t["token_sha256"] for t in parsed.get("ops_tokens") or [])
        version = (self.snapshot.version + 1) if self.snapshot else 1
        return Snapshot(version, parsed, settings, build_catalog(parsed), accounts, tokens,
                        build_extras(parsed))

    def _swap(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        for listener in list(self.reload_listeners):
            listener(snapshot)

    # --- listeners -----------------------------------------------------------------------------------

    def listen_tcp(self, port: int, factory: Any, interface: str) -> Any:
        """reactor.listenTCP, or in a worker group a socket sharing the port (SO_REUSEPORT)."""
        if not self.reuse_port:
            return self.reactor.listenTCP(port, factory, interface=interface)
        sock = shared_socket(socket.SOCK_STREAM, interface, port)
        try:
            sock.listen(LISTEN_BACKLOG)
            return self.reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
        finally:
            sock.close()  # the reactor holds its own duplicate

    def listen_udp(self, port: int, protocol: Any, interface: str) -> Any:
        """reactor.listenUDP, or in a worker group a socket sharing the port (each peer sticks to one worker)."""
        if not self.reuse_port:
            return self.reactor.listenUDP(port, protocol, interface=interface)
        sock = shared_socket(socket.SOCK_DGRAM, interface, port)
        try:
            return self.reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol)
        finally:
            sock.close()

    # --- accounts and tokens ----------------------------------------------------------------

    def account(self, system_id: str) -> AccountInfo | None:
        return self.snapshot.accounts.get(system_id) if self.snapshot else None

    def service_accounts(self) -> list[str]:
        """Accounts that receive gateway-originated SMS (IVR, surveys, campaigns)."""
        if self.snapshot is None:
            return []
        return [a.system_id for a in self.snapshot.accounts.values() if a.receives_service_sms]

    def token_ok(self, token: str | None) -> bool:
        return bool(token) and self.snapshot is not None and hash_token(token) in self.snapshot.token_hashes
