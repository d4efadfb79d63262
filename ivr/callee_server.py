"""``run_gateway.py simulate callees``: the callee simulator on a UDP port (Twisted wiring).

The SIP side is ``ivr.sip.uas_sim.CalleeApp`` carried by the IVR's own adapter
(``ivr.server.SipProtocol``); this module gathers its inputs: the offers catalog (``--fixtures``,
else the fixture set loaded last into ``--db``, else the repository's demo fixtures), the
subscribers' facts from ``--db`` (looked up once per number; without a database every callee
is an unknown subscriber with the default behaviour) and the local hour (``--tz``, or a fixed
``--hour``). It prints ``{"callees": port}`` once listening and the JSON summary on exit.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ivr.server import SipProtocol
from ivr.sip.core import SipCore
from ivr.sip.uas_sim import CalleeApp
from offers.catalog import OffersCatalog

__all__ = ["load_catalog", "facts_lookup", "hour_clock", "listen_callees", "run"]

log = logging.getLogger(__name__)

DEMO_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
FACTS_CACHE = 100_000


def load_catalog(files: Mapping[str, str]) -> OffersCatalog:
    """The offers catalog of a fixture set (raises FixtureError with file:line reasons)."""
    from core.fixtures import FixtureError, parse_set
    from notifier import core_sections
    from offers import sections as offer_sections

    sections = [*core_sections.SECTIONS, *offer_sections.SECTIONS]
    names = {s.filename.rsplit(".", 1)[0] for s in sections}
    mine = {k: v for k, v in files.items() if k.rsplit(".", 1)[0] in names or k.startswith("templates/")}
    parsed, problems = parse_set(mine, sections)
    if problems:
        raise FixtureError(problems)
    return offer_sections.build_catalog(parsed)


def _fixture_files(fixtures_dir: str | None, session_factory: Any) -> dict[str, str]:

    from core.fixtures import read_dir
    from notifier.models import FixtureSetRow

    if fixtures_dir is None and session_factory is not None:
        with session_factory() as session:
            row = FixtureSetRow.latest(session)
        if row is not None:
            return dict(row.files)
    return read_dir(fixtures_dir or DEMO_FIXTURES)


def facts_lookup(session_factory: Any, now: Callable[[], float]) -> Callable[[str], Mapping[str, Any] | None]:
    """``msisdn -> facts or None`` from the database, each number read once (bounded cache)."""
    from offers.shelf import load_inputs

    cache: dict[str, Mapping[str, Any] | None] = {}

    def lookup(msisdn: str) -> Mapping[str, Any] | None:
        if msisdn not in cache:
            if len(cache) >= FACTS_CACHE:
                cache.clear()
            with session_factory() as session:
                cache[msisdn] = load_inputs(session, msisdn, now(), 0.0)[0]
        return cache[msisdn]

    return lookup


def hour_clock(tz: str, fixed_hour: int | None) -> Callable[[float], int]:
    """``clock time -> local hour`` in ``tz``, or always ``fixed_hour``."""
    if fixed_hour is not None:
        return lambda _now: fixed_hour
    zone = ZoneInfo(tz)
    return lambda now: datetime.fromtimestamp(now, zone).hour


def listen_callees(reactor: Any, host: str, port: int, make_app: Callable[[SipCore], CalleeApp]) -> SipProtocol:
    protocol = SipProtocol(reactor, make_app, host, info_events=True)
    reactor.listenUDP(port, protocol, interface=host)
    return protocol


def _session_factory(db_url: str | None) -> Any:
    if not db_url:
        return None
    from core.db import make_engine, migrate, session_factory

    engine = make_engine(db_url)
    migrate(engine)
    return session_factory(engine)


def run(args: Any) -> int:
    """Serve until SIGINT/SIGTERM or ``--duration``; print the summary as JSON."""
    from twisted.internet import reactor

    from core.fixtures import FixtureError

    try:
        factory = _session_factory(args.db)
        catalog = load_catalog(_fixture_files(args.fixtures, factory))
        hour_of = hour_clock(args.tz, args.hour)
    except FixtureError as exc:
        print(f"fixture problems:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    facts_for = facts_lookup(factory, reactor.seconds) if factory is not None else (lambda _msisdn: None)
    apps: list[CalleeApp] = []

    def make_app(core: SipCore) -> CalleeApp:
        apps.append(CalleeApp(core, reactor.seconds, facts_for=facts_for, offer_for=catalog.offer,
                              params=catalog.params, hour_of=hour_of, seed=args.seed, time_scale=args.time_scale))
        return apps[0]

    protocol = listen_callees(reactor, args.host, args.port, make_app)
    print(json.dumps({"callees": protocol.transport.getHost().port}), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: print(json.dumps(apps[0].summary()), flush=True))
    if args.duration:
        reactor.callLater(args.duration, reactor.stop)
    reactor.run()
    return 0
