"""``serve``: one twisted.application service tree with every surface of the gateway.

Start order: database and fixtures, then listeners (ports of 0 are chosen by
the OS), then the JSON ready line on stdout. SIGTERM/SIGINT stop the tree in
reverse: listeners close, SMPP sessions are unbound, the MO pipeline flushes
its last batch, the outbox keeps whatever was not sent (it is on disk).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from gateway.cli import DEMO_DIR
from gateway.logs import start_logging

log = Logger(namespace="gateway.serve")

DEFAULT_DEMO_POPULATION = 1000


# What each listener is, for the start-up lines (key: the ready line's name, or smtp_out for the sink).
SERVICE_LINES = {
    "smpp": "SMPP 3.4 server  {host}:{port}  (ESMEs bind here)",
    "sip": "SIP-lite IVR     {host}:{port} UDP  (call sip:10086@{host}:{port})",
    "http": "HTTP ops API     http://{host}:{port}/  (dashboard; API under /api, /openapi.json)",
    "smtp_in": "SMTP in          {host}:{port}  (email commands)",
    "smtp_out": "SMTP out sink    {host}:{port}  (mail written to {var}/mail/)",
}


def announce_ready(ports: dict[str, int], host: str, var_dir: str, extra: dict[str, int] | None = None) -> None:
    """One log line per service with its port, then the JSON ports line on stdout."""
    for name, port in {**ports, **(extra or {})}.items():
        line = SERVICE_LINES.get(name, f"{name:<16} {{host}}:{{port}}")
        log.info("{line}", line=line.format(host=host, port=port, var=var_dir))
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    log.info("ready: {ports}", ports=json.dumps(ports))


class ReadyLine(service.Service):
    """Once every listener is up: the start-up lines and the JSON ports line, or (in a worker of a
    group) the ports as a message to the parent, which announces the group once."""

    def __init__(self, port_sources: dict[str, Any], host: str, var_dir: str, extra: dict[str, Any] | None = None,
                 announce: Callable[[dict[str, int]], None] | None = None):
        self.port_sources = port_sources
        self.host, self.var_dir = host, var_dir
        self.extra = extra or {}  # listed for the user, not part of the JSON line
        self.announce = announce

    def startService(self) -> None:
        super().startService()
        ports = {name: src.port_number() for name, src in self.port_sources.items()}
        if self.announce is not None:
            self.announce(ports)
            return
        announce_ready(ports, self.host, self.var_dir, {n: s.port_number() for n, s in self.extra.items()})


def prepare_data(gateway, args) -> None:
    """Load fixtures (demo or a folder) and the demo population, or serve what the database holds."""
    if args.fixtures:
        gateway.load_fixtures_dir(args.fixtures)
    elif gateway.restore_fixtures():
        log.info("serving the fixture set stored in the database")
    elif args.demo:
        gateway.load_fixtures_dir(str(DEMO_DIR))
    else:
        raise SystemExit("the database holds no fixtures: start with --demo, or --fixtures DIR, "
                         "or run load-fixtures first")
    if args.demo:
        size = DEFAULT_DEMO_POPULATION if args.population is None else args.population
        _ensure_population(gateway, size)


def _ensure_population(gateway, size: int) -> None:
    from sqlalchemy import func, select

    from offers.models import Subscriber
    from offers.population import generate

    with gateway.db() as session:
        count = session.scalar(select(func.count()).select_from(Subscriber)) or 0
    if size > 0 and count < 100 + size:
        log.info("generating a synthetic population of {n} subscribers", n=size)
        generate(gateway.engine, size, 1)


def build_tree(gateway, args, reactor) -> tuple[service.MultiService, dict[str, Any]]:
    from gateway.smpp_server import SMPPServerService
    from gateway.wiring import build_surfaces

    top = service.MultiService()
    smpp = SMPPServerService(gateway, args.host, args.smpp_port)
    smpp.setName("smpp")
    smpp.setServiceParent(top)
    ports: dict[str, Any] = {"smpp": smpp}
    ports.update(build_surfaces(gateway, args, reactor, top, smpp))
    return top, ports


def default_workers(db_url: str) -> int:
    """One worker per core on PostgreSQL; one process on SQLite.

    Several processes on one SQLite file share its single write lock, and every commit of one
    empties the others' page caches, so on the "200" path two workers did less than one
    (bench_smpp, 1M subscribers: 1 worker 3,360 replies/s at 0.29 ms CPU each, 2 workers about
    2,100/s at 0.63-0.86 ms): ``--workers N`` still asks for N."""
    return 1 if db_url.startswith("sqlite") else (os.cpu_count() or 1)


def serve(args, overrides: dict[str, Any]) -> int:
    """``serve``: one process, or with ``--workers N`` (N > 1) the parent of a worker group."""
    count = args.workers or default_workers(args.db)
    if count > 1 and args.cluster is None:
        from gateway.cluster import serve_group

        start_logging(args.log_format)
        return serve_group(args, overrides, count)
    from twisted.internet import reactor

    start_logging(args.log_format, tag=None if args.cluster is None else f"w{args.worker_index}")
    gateway = load_gateway(args, overrides, reactor)
    if gateway is None:
        return 1
    from gateway.memtrim import configure_allocator

    configure_allocator(gateway.settings)  # before the thread pool's first thread
    top, port_sources = build_tree(gateway, args, reactor)
    announce = None
    reload_remote = None  # how fixtures another machine stored are served here
    if args.cluster is not None:
        from gateway.cluster import ClusterClient

        client = ClusterClient(gateway, args.cluster, args.worker_index)
        client.install(top.getServiceNamed("smpp"))
        client.connect()
        announce = client.ready
        reload_remote = partial(client.reload_fixtures, "another machine loaded them")
    from gateway import fleet

    fleet.install(gateway, top, reload_remote)  # PostgreSQL: hear the other machines' cache events
    sink = {"smtp_out": gateway.email_sender} if args.smtp_sink else {}
    ReadyLine(port_sources, args.host, args.var_dir, sink, announce).setServiceParent(top)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reload_fixtures, gateway, args))
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.callWhenRunning(_stop_once_on_signals, reactor)
    reactor.run(installSignalHandlers=True)
    return 0


def _stop_once_on_signals(reactor) -> None:
    """SIGTERM/SIGINT stop the reactor once: a second one while it stops (Ctrl-C under make, a
    supervisor's repeat) is logged and ignored, instead of Twisted's handler raising ReactorNotRunning."""
    from twisted.internet import error

    def stop() -> None:
        try:
            reactor.stop()
        except error.ReactorNotRunning:
            log.info("already stopping")

    def handler(signum: int, _frame: Any) -> None:
        log.info("received {name}, stopping", name=signal.Signals(signum).name)
        reactor.callFromThread(stop)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def load_gateway(args, overrides: dict[str, Any], reactor) -> Any:
    """The database ready and the fixtures loaded; None (problems on stderr) when the fixtures are bad.

    A worker of a group serves what its parent loaded.
    """
    from core.fixtures import FixtureError
    from gateway.app import Gateway
    from gateway.smpp.text import fits_parts

    Path(args.var_dir).mkdir(parents=True, exist_ok=True)
    try:
        gateway = Gateway(reactor, args.db, overrides, fits=fits_parts)
        gateway.var_dir = Path(args.var_dir)
        if args.instance:
            gateway.instance = args.instance
        if args.cluster is None:
            prepare_data(gateway, args)
            return gateway
        gateway.worker, gateway.reuse_port = args.worker_index, True
        gateway.instance = f"{gateway.instance}-w{args.worker_index}"  # stable: a restarted worker reclaims its rows
        if not gateway.restore_fixtures():
            raise SystemExit("worker: the database holds no fixtures")
    except FixtureError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("the gateway did not start: fix the fixtures above", file=sys.stderr)
        return None
    return gateway


def reload_fixtures(gateway, args) -> bool:
    """SIGHUP: load the fixture folder again (all or nothing); True when the new set is served."""
    from core.fixtures import FixtureError

    source = args.fixtures or (str(DEMO_DIR) if args.demo else None)
    if source is None:
        log.warn("SIGHUP: no fixture folder to reload (start with --fixtures DIR)")
        return False
    try:
        counts = gateway.load_fixtures_dir(source)
    except FixtureError as exc:
        for problem in exc.problems:
            log.error("SIGHUP reload refused: {problem}", problem=str(problem))
        return False
    log.info("SIGHUP: fixtures reloaded from {source}: {counts}", source=source, counts=counts)
    return True
