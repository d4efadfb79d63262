"""``serve --workers N``: one parent, N worker processes sharing the ports and the database.

The parent prepares the database (migrations, fixtures, demo population), reserves every
listening port (a socket bound with SO_REUSEPORT, so a port of 0 is chosen once for the whole
group), starts the workers and runs the coordinator (``gateway.cluster_protocol``) on a Unix
socket only its user can open. Each worker binds its own SO_REUSEPORT sockets on those ports:
the kernel spreads TCP connections (SMPP, HTTP, SMTP) over the workers and keeps each UDP peer
(a SIP caller's address and port) on one worker, so a call's dialog stays where it began.

- one ready line (the chosen ports) once every worker serves;
- SIGTERM/SIGINT stop every worker, then the parent; SIGHUP reloads the fixtures once (in the
  parent) and every worker swaps to them;
- a worker that dies is logged and started again after a back-off (0.5 s doubling to 10 s;
  reset once it has served for a minute); a worker that dies before the group first served
  stops the whole start (exit status 1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, protocol, threads
from twisted.logger import Logger

from gateway.app import shared_socket
from gateway.cluster_protocol import ClusterProtocolError, Coordinator, LineCodec, WorkerLink
from gateway.smpp_server import AccountGuard

log = Logger(namespace="gateway.cluster")

ROOT = Path(__file__).resolve().parent.parent
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 30.0


# --- in a worker ------------------------------------------------------------------------------------

class _LinkProtocol(protocol.Protocol):
    def __init__(self, client: ClusterClient):
        self.client = client

    def connectionMade(self) -> None:
        self.client.transport = self.transport
        self.client.flush()

    def dataReceived(self, data: bytes) -> None:
        try:
            self.client.link.receive_data(data)
        except ClusterProtocolError as exc:
            log.error("coordinator sent junk ({error}); leaving the group", error=str(exc))
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.client.lost()


class _LinkFactory(protocol.ClientFactory):
    def __init__(self, client: ClusterClient):
        self.client = client

    def buildProtocol(self, addr: Any) -> _LinkProtocol:
        return _LinkProtocol(self.client)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        log.error("cannot reach the group's coordinator: {why}", why=reason.getErrorMessage())
        self.client.lost()


class ClusterGuard(AccountGuard):
    """Account rates shared by the group: tokens leased from the parent, spent locally."""

    def __init__(self, now: Callable[[], float], client: ClusterClient):
        super().__init__(now)
        self.client = client

    def bucket(self, system_id: str, rate: float) -> Any:
        return self.client.link.bucket(system_id, rate, self.now)


class ClusterClient:
    """A worker's link to the parent: bind admission, rate leases, events in and out."""

    def __init__(self, gateway: Any, socket_path: str, worker: int):
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.socket_path = socket_path
        self.link = WorkerLink(worker, self._on_event, self.flush)
        self.transport = None
        self.smpp: Any = None
        self._remote_reload = False
        self._wake_call = None

    def connect(self) -> None:
        self.reactor.connectUNIX(self.socket_path, _LinkFactory(self))

    def flush(self) -> None:
        if self.transport is not None:
            data = self.link.data_to_send()
            if data:
                self.transport.write(data)

    def lost(self) -> None:
        """Without the parent there is no group: stop this worker."""
        self.transport = None
        self.link.lost()
        if self.reactor.running:
            log.warn("lost the group's coordinator: stopping this worker")
            try:
                self.reactor.stop()
            except error.ReactorNotRunning:  # already stopping
                pass

    def install(self, smpp: Any) -> None:
        """Share the SMPP server's bind counts and rates with the group and wire the events."""
        self.smpp = smpp
        smpp.registry.admission = self
        smpp.guard = ClusterGuard(self.gateway.now, self)
        smpp.pipeline.committed_listeners.append(self._committed)
        self.gateway.router.subscriber_changed_listeners.append(lambda msisdn: self.link.publish(
            {"kind": "subscriber", "msisdn": msisdn}))
        self.gateway.reload_listeners.append(self._reloaded)

    def ready(self, ports: dict[str, int]) -> None:
        self.link.ready(ports)

    # --- BindAdmission ---------------------------------------------------------------------------

    def acquire_bind(self, system_id: str, limit: int, decided: Callable[[bool], None]) -> None:
        self.link.acquire_bind(system_id, limit, decided)

    def release_bind(self, system_id: str) -> None:
        self.link.release_bind(system_id)

    # --- events ------------------------------------------------------------------------------------

    def _committed(self, rows: list[dict[str, Any]]) -> None:
        """Replies queued with no receiver here: the workers that hold one should look now, not at their poll."""
        if self._wake_call is None and any(r.get("channel") == "smpp" and not r.get("lease_owner") for r in rows):
            self._wake_call = self.reactor.callLater(0, self._publish_wake)

    def _publish_wake(self) -> None:
        self._wake_call = None
        self.link.publish({"kind": "wake"})

    def _reloaded(self, _snapshot: Any) -> None:
        if not self._remote_reload:
            self.link.publish({"kind": "fixtures"})

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "wake" and self.smpp is not None:
            self.smpp.deliverer.wake_table()
        elif kind == "subscriber":  # another worker committed a change to this subscriber's shelf
            self.gateway.router.invalidate(str(event["msisdn"]))
        elif kind == "fixtures":
            self._remote_reload = True
            try:  # a new catalog: the shelf cache empties by itself
                self.gateway.restore_fixtures()
                log.info("fixtures reloaded (another process of the group loaded them)")
            finally:
                self._remote_reload = False


# --- in the parent -------------------------------------------------------------------------------------

class _CoordinatorConnection(protocol.Protocol):
    def __init__(self, group: WorkerGroup):
        self.group = group
        self.codec = LineCodec()
        self.worker: int | None = None

    def dataReceived(self, data: bytes) -> None:
        try:
            for msg in self.codec.receive(data):
                self._message(msg)
        except ClusterProtocolError as exc:
            log.error("worker {w} sent junk ({error}); dropping its link", w=self.worker, error=str(exc))
            self.transport.loseConnection()

    def _message(self, msg: dict[str, Any]) -> None:
        if self.worker is None:
            if msg["op"] != "hello" or not isinstance(msg.get("worker"), int):
                raise ClusterProtocolError("the first message must be hello with a worker index")
            self.worker = msg["worker"]
            self.group.attach(self.worker, self)
            return
        self.group.dispatch(self.group.coordinator.handle(self.worker, msg))

    def send(self, msg: dict[str, Any]) -> None:
        self.transport.write(LineCodec.encode(msg))

    def connectionLost(self, reason: Any = None) -> None:
        if self.worker is not None:
            self.group.detach(self.worker, self)


class _CoordinatorFactory(protocol.Factory):
    def __init__(self, group: WorkerGroup):
        self.group = group

    def buildProtocol(self, addr: Any) -> _CoordinatorConnection:
        return _CoordinatorConnection(self.group)


class _WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, group: WorkerGroup, index: int):
        self.group = group
        self.index = index

    def processEnded(self, reason: Any) -> None:
        self.group.exited(self.index, reason.value)


class WorkerGroup:
    """Starts, watches and stops the workers; runs the coordinator; prints the ready line."""

    def __init__(self, reactor: Any, args: Any, count: int):
        self.reactor = reactor
        self.args = args
        self.count = count
        self.coordinator = Coordinator(reactor.seconds)
        self.coordinator.ready_listeners.append(self._worker_ready)
        self.links: dict[int, _CoordinatorConnection] = {}
        self.procs: dict[int, Any] = {}
        self.started_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.reserved: dict[str, socket.socket] = {}
        self.ports: dict[str, int] = {}
        self.ready: set[int] = set()
        self.announced = False
        self.stopping = False
        self.exit_code = 0
        self.run_dir = tempfile.mkdtemp(prefix="gateway-group-")  # mode 0700: only this user reaches it
        self.socket_path = os.path.join(self.run_dir, "coordinator.sock")
        self._all_ended: defer.Deferred | None = None
        self.listening: Any = None

    # --- start ------------------------------------------------------------------------------------

    def reserve_ports(self) -> dict[str, int]:
        """Bind (not listen) one SO_REUSEPORT socket per port, so port 0 is chosen once for the group."""
        args = self.args
        wanted = {"smpp": args.smpp_port, "sip": args.sip_port, "http": args.http_port,
                  "smtp_in": args.smtp_in_port}
        if args.smtp_sink:
            wanted["smtp_out"] = args.smtp_out_port
        for name, port in wanted.items():
            kind = socket.SOCK_DGRAM if name == "sip" else socket.SOCK_STREAM
            try:
                sock = shared_socket(kind, args.host, port)
            except OSError as exc:
                raise SystemExit(f"error: cannot use {name} port {args.host}:{port}: {exc.strerror}; "
                                 f"pick another with --{name.replace('_', '-')}-port") from None
            self.reserved[name] = sock
            self.ports[name] = sock.getsockname()[1]
        return self.ports

    def start(self) -> None:
        self.listening = self.reactor.listenUNIX(self.socket_path, _CoordinatorFactory(self), mode=0o600)
        for index in range(self.count):
            self._spawn(index)

    def _argv(self, index: int) -> list[str]:
        ports = [f"--{name.replace('_', '-')}-port={port}" for name, port in self.ports.items()]
        return [sys.executable, str(ROOT / "run_gateway.py"), *self.args.argv, "--workers=1", *ports,
                f"--cluster={self.socket_path}", f"--worker-index={index}"]

    def _spawn(self, index: int) -> None:
        if self.stopping:
            return
        self.started_at[index] = self.reactor.seconds()
        # The workers' stdout goes to our stderr: our stdout carries only the group's ready line.
        self.procs[index] = self.reactor.spawnProcess(_WorkerProcess(self, index), sys.executable,
                                                      self._argv(index), env=dict(os.environ),
                                                      childFDs={0: "w", 1: 2, 2: 2})
        log.info("worker {w} started (pid {pid})", w=index, pid=self.procs[index].pid)

    # --- the coordinator's connections ------------------------------------------------------------------

    def attach(self, worker: int, link: _CoordinatorConnection) -> None:
        self.links[worker] = link
        self.coordinator.connected(worker)

    def detach(self, worker: int, link: _CoordinatorConnection) -> None:
        if self.links.get(worker) is link:  # not a restarted worker's new link
            del self.links[worker]
            self.coordinator.disconnected(worker)

    def dispatch(self, outgoing: list[tuple[int, dict[str, Any]]]) -> None:
        for worker, msg in outgoing:
            link = self.links.get(worker)
            if link is not None:
                link.send(msg)

    def broadcast(self, event: dict[str, Any]) -> None:
        self.dispatch(self.coordinator.broadcast(event))

    def _worker_ready(self, worker: int, ports: dict[str, int]) -> None:
        self.ready.add(worker)
        if self.announced:
            log.info("worker {w} serving again", w=worker)
            return
        if len(self.ready) < self.count:
            return
        self.announced = True
        # The workers hold the UDP port now; ours would take a share of the datagrams.
        sip = self.reserved.pop("sip", None)
        if sip is not None:
            sip.close()
        from gateway.service import announce_ready

        log.info("{n} workers serving", n=self.count)
        line = {name: self.ports[name] for name in ("smpp", "sip", "http", "smtp_in")}
        sink = {"smtp_out": self.ports["smtp_out"]} if "smtp_out" in self.ports else {}
        announce_ready(line, self.args.host, self.args.var_dir, sink)

    # --- exits and restarts ------------------------------------------------------------------------------

    def exited(self, index: int, status: Any) -> None:
        self.procs.pop(index, None)
        self.ready.discard(index)
        why = _describe(status)
        if self.stopping:
            log.info("worker {w} stopped ({why})", w=index, why=why)
            if not self.procs and self._all_ended is not None:
                self._all_ended.callback(None)
            return
        if not self.announced:
            log.error("worker {w} {why} before the group served: stopping", w=index, why=why)
            self.exit_code = 1
            self.reactor.stop()
            return
        uptime = self.reactor.seconds() - self.started_at.get(index, 0.0)
        self.failures[index] = 0 if uptime >= STABLE_AFTER_S else self.failures.get(index, 0) + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, self.failures[index] - 1))
        log.warn("worker {w} {why} after {up:.1f} s; starting it again in {d:.1f} s", w=index, why=why,
                 up=uptime, d=delay)
        self.reactor.callLater(delay, self._spawn, index)

    def stop(self) -> defer.Deferred | None:
        """SIGTERM every worker; SIGKILL those still running after the grace period."""
        self.stopping = True
        for sock in self.reserved.values():
            sock.close()
        self.reserved.clear()
        if not self.procs:
            return self._cleanup()
        self._all_ended = defer.Deferred()
        for proc in list(self.procs.values()):
            _signal(proc, "TERM")
        kill = self.reactor.callLater(STOP_GRACE_S, self._kill_all)

        def ended(_: Any) -> Any:
            if kill.active():
                kill.cancel()
            return self._cleanup()

        return self._all_ended.addCallback(ended)

    def _kill_all(self) -> None:
        for proc in list(self.procs.values()):
            log.warn("worker pid {pid} did not stop within {s} s: killing it", pid=proc.pid, s=STOP_GRACE_S)
            _signal(proc, "KILL")

    def _cleanup(self) -> defer.Deferred:
        stopped = defer.maybeDeferred(self.listening.stopListening) if self.listening else defer.succeed(None)
        return stopped.addBoth(lambda _: shutil.rmtree(self.run_dir, ignore_errors=True))


def _signal(proc: Any, name: str) -> None:
    try:
        proc.signalProcess(name)
    except Exception:  # noqa: BLE001 - already gone (ProcessExitedAlready, OSError)
        pass


def _describe(status: Any) -> str:
    sig = getattr(status, "signal", None)
    if sig:
        return f"was killed by {signal.Signals(sig).name}"
    return f"exited with status {getattr(status, 'exitCode', None)}"


def serve_group(args: Any, overrides: dict[str, Any], count: int) -> int:
    """The parent of ``serve --workers N``: prepare the data, start the workers, supervise them."""
    from twisted.internet import reactor

    from gateway.service import load_gateway, reload_fixtures
    from gateway.smpp_server import reclaim_leases

    gateway = load_gateway(args, overrides, reactor)
    if gateway is None:
        return 1
    if gateway.engine.dialect.name == "sqlite":  # the group is the database's only user
        reclaim_leases(gateway, None)
    group = WorkerGroup(reactor, args, count)
    group.reserve_ports()

    def on_hup() -> None:
        # in a thread: the coordinator keeps answering leases and binds while the set loads
        loading = threads.deferToThread(reload_fixtures, gateway, args)
        loading.addCallback(lambda ok: group.broadcast({"kind": "fixtures"}) if ok else None)
        loading.addErrback(lambda failure: log.failure("SIGHUP reload failed", failure))

    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(on_hup))
    reactor.callWhenRunning(group.start)
    reactor.addSystemEventTrigger("before", "shutdown", group.stop)
    reactor.run(installSignalHandlers=True)
    return group.exit_code
