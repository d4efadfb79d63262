"""``serve --workers N``: one parent, N worker processes sharing the ports and the database.

The parent prepares the database (migrations, fixtures, demo population), reserves every
listening port (a socket bound with SO_REUSEPORT, so a port of 0 is chosen once for the whole
group), starts the workers and runs the coordinator (``gateway.cluster_protocol``) on a Unix
socket only its user can open. Each worker binds its own SO_REUSEPORT sockets on the HTTP,
SMTP and SIP ports: the kernel spreads those TCP connections over the workers and keeps each
UDP peer (a SIP caller's address and port) on one worker, so a call's dialog stays where it began.

The SMPP port is the parent's alone: SMPP sessions are few and long-lived, and the kernel's
random placement of four binds on two workers is often 3/1 or 4/0. The parent accepts each
connection and passes its file descriptor over the worker's Unix socket (SCM_RIGHTS) to the
ready worker holding the fewest SMPP connections (ties in turn); the worker adopts it as if it
had accepted it, and says when it ends. With no worker ready (all restarting) a connection
waits a few seconds for one, then is closed.

- one ready line (the chosen ports) once every worker serves;
- SIGTERM/SIGINT stop every worker, then the parent; SIGHUP reloads the fixtures once (in the
  parent) and every worker swaps to them;
- a worker that dies is logged and started again after a back-off (0.5 s doubling to 10 s;
  reset once it has served for a minute); a worker that dies before the group first served
  stops the whole start (exit status 1).
"""

from __future__ import annotations

import errno
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
from twisted.internet.interfaces import IFileDescriptorReceiver, IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from core import fleet_events
from gateway.app import LISTEN_BACKLOG, shared_socket
from gateway.cluster_protocol import HOLD_S, ClusterProtocolError, Coordinator, Handoff, LineCodec, WorkerLink
from gateway.smpp_server import AccountGuard, SMPPServerFactory, SMPPServerProtocol

log = Logger(namespace="gateway.cluster")

ROOT = Path(__file__).resolve().parent.parent
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 30.0


# --- in a worker ------------------------------------------------------------------------------------

@implementer(IFileDescriptorReceiver)
class _LinkProtocol(protocol.Protocol):
    def __init__(self, client: ClusterClient):
        self.client = client

    def connectionMade(self) -> None:
        self.client.transport = self.transport
        self.client.flush()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        """An SMPP connection's descriptor: its ``conn`` line follows (never precedes) it."""
        self.client.link.fd_received(descriptor)

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


class _HandedSMPP(SMPPServerProtocol):
    """An SMPP session on a connection the parent accepted: the same protocol, and the parent is
    told when it ends (so that its connection counts stay true)."""

    def __init__(self, server: Any, client: ClusterClient):
        super().__init__(server)
        self.client = client

    def connectionLost(self, reason: Any = None) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.client.link.conn_closed()


class _HandedFactory(SMPPServerFactory):
    def __init__(self, server: Any, client: ClusterClient):
        super().__init__(server)
        self.client = client

    def buildProtocol(self, addr: Any) -> _HandedSMPP:
        return _HandedSMPP(self.server, self.client)


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
        self.link = WorkerLink(worker, self._on_event, self.flush, self._adopt)
        self.transport = None
        self.smpp: Any = None
        self._smpp_factory: _HandedFactory | None = None
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
        while self.link.fds:  # descriptors whose conn line never came
            _close_fd(self.link.fds.popleft())
        if self.reactor.running:
            log.warn("lost the group's coordinator: stopping this worker")
            try:
                self.reactor.stop()
            except error.ReactorNotRunning:  # already stopping
                pass

    def install(self, smpp: Any) -> None:
        """Share the SMPP server's bind counts and rates with the group and wire the events."""
        self.smpp = smpp
        smpp.accepts = False  # the parent accepts SMPP connections and hands them over (_adopt)
        self._smpp_factory = _HandedFactory(smpp, self)
        smpp.registry.admission = self
        smpp.guard = ClusterGuard(self.gateway.now, self)
        smpp.pipeline.committed_listeners.append(self._committed)
        self.gateway.router.subscriber_changed_listeners.append(lambda msisdn: self.link.publish(
            {"kind": "subscriber", "msisdn": msisdn}))
        self.gateway.reload_listeners.append(self._reloaded)

    def ready(self, ports: dict[str, int]) -> None:
        self.link.ready(ports)

    def _adopt(self, fd: int, peer: str) -> bool:
        """Serve a connection the parent accepted, exactly as one accepted here; False (and the
        descriptor closed) when it cannot be."""
        try:
            sock = socket.socket(fileno=fd)  # owns fd: the family and type are read from it
        except OSError as exc:
            log.warn("handed SMPP connection from {peer} unusable: {why}", peer=peer, why=exc.strerror)
            _close_fd(fd)
            return False
        try:
            if self.smpp is None or not self.smpp.running:
                return False
            sock.setblocking(False)
            # the reactor wraps its own duplicate of the descriptor; ours is closed below
            self.reactor.adoptStreamConnection(sock.fileno(), sock.family, self._smpp_factory)
            return True
        except Exception:  # noqa: BLE001 - gone already (ENOTCONN), or anything else: refuse it
            log.failure("could not adopt the SMPP connection from {peer}", peer=peer)
            return False
        finally:
            sock.close()

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
            self.reload_fixtures("another process of the group loaded them")

    def reload_fixtures(self, why: str) -> None:
        """Serve the newest fixture set of the database, which another process stored: the group's
        other workers are not told (they hear of it as this one did)."""
        self._remote_reload = True
        try:  # a new catalog: the shelf cache empties by itself
            self.gateway.restore_fixtures()
            log.info("fixtures reloaded ({why})", why=why)
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
        if msg["op"] == "conn_closed":
            log.info("smpp connection on worker {w} ended (SMPP connections per worker: {counts})",
                     w=self.worker, counts=_counts(self.group.coordinator.smpp_counts()))

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


@implementer(IReadDescriptor)
class _Acceptor:
    """The parent's SMPP listening socket: accepts connections for the workers."""

    BATCH = 64  # accepts per readable event

    def __init__(self, sock: socket.socket, accepted: Callable[[socket.socket, str], None]):
        self.sock = sock
        self.accepted = accepted

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "smpp-acceptor"

    def doRead(self) -> None:
        for _ in range(self.BATCH):
            try:
                conn, addr = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                log.error("SMPP accept failed: {why}", why=exc.strerror)  # EMFILE and the like: try later
                return
            conn.setblocking(False)
            host, port = addr[0], addr[1]
            self.accepted(conn, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def connectionLost(self, reason: Any) -> None:
        pass


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
        self.acceptor: _Acceptor | None = None
        self._place_call: Any = None
        self.coordinator.released_listeners.append(_close)

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
            for handle in self.coordinator.disconnected(worker):  # handed, never confirmed
                _close(handle)

    def dispatch(self, outgoing: list[tuple[int, dict[str, Any]]]) -> None:
        for worker, msg in outgoing:
            link = self.links.get(worker)
            if link is not None:
                link.send(msg)

    def broadcast(self, event: dict[str, Any]) -> None:
        self.dispatch(self.coordinator.broadcast(event))

    # --- SMPP connections -----------------------------------------------------------------------------

    def accept_smpp(self) -> None:
        """Listen on the SMPP port (ours alone: no worker binds it) and hand connections out."""
        sock = self.reserved.pop("smpp")
        sock.listen(LISTEN_BACKLOG)
        self.acceptor = _Acceptor(sock, self._smpp_accepted)
        self.reactor.addReader(self.acceptor)

    def _smpp_accepted(self, conn: socket.socket, peer: str) -> None:
        self._hand_out(self.coordinator.accept(conn, peer))

    def _place(self) -> None:
        self._place_call = None
        self._hand_out(self.coordinator.place())

    def _hand_out(self, placed: tuple[list[Handoff], list[Any]]) -> None:
        handoffs, close = placed
        for handoff in handoffs:
            link = self.links[handoff.worker]  # the coordinator places only on connected workers
            link.transport.sendFileDescriptor(handoff.handle.fileno())
            link.send(handoff.msg)  # carries the descriptor: it is sent with the line's bytes
            log.info("smpp connection from {peer} to worker {w} (SMPP connections per worker: {counts})",
                     peer=handoff.msg["peer"], w=handoff.worker, counts=_counts(self.coordinator.smpp_counts()))
        for handle in close:
            log.warn("smpp connection from {peer} closed: no worker took it within {s} s",
                     peer=_peer_of(handle), s=HOLD_S)
            _close(handle)
        if self.coordinator.held and self._place_call is None and not self.stopping:
            self._place_call = self.reactor.callLater(0.5, self._place)

    def _worker_ready(self, worker: int, ports: dict[str, int]) -> None:
        self.ready.add(worker)
        if self.acceptor is not None:
            self._hand_out(self.coordinator.place())  # connections held while no worker was ready
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
        self.accept_smpp()
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
        self._stop_accepting()
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

    def _stop_accepting(self) -> None:
        if self.acceptor is not None:
            self.reactor.removeReader(self.acceptor)
            self.acceptor.sock.close()
            self.acceptor = None
        if self._place_call is not None and self._place_call.active():
            self._place_call.cancel()
        self._place_call = None
        while self.coordinator.held:
            _close(self.coordinator.held.popleft()[1])

    def _kill_all(self) -> None:
        for proc in list(self.procs.values()):
            log.warn("worker pid {pid} did not stop within {s} s: killing it", pid=proc.pid, s=STOP_GRACE_S)
            _signal(proc, "KILL")

    def _cleanup(self) -> defer.Deferred:
        stopped = defer.maybeDeferred(self.listening.stopListening) if self.listening else defer.succeed(None)
        return stopped.addBoth(lambda _: shutil.rmtree(self.run_dir, ignore_errors=True))


def _close(handle: socket.socket) -> None:
    """Close the parent's copy of an accepted connection (no shutdown: a worker may hold it)."""
    try:
        handle.close()
    except OSError:
        pass


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _peer_of(handle: socket.socket) -> str:
    try:
        host, port = handle.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def _counts(counts: dict[int, int]) -> str:
    return " ".join(f"w{w}={n}" for w, n in counts.items()) or "no worker ready"


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

    # the group is one member of the fleet: its workers ignore the PostgreSQL events it sent itself
    os.environ[fleet_events.ORIGIN_ENV] = fleet_events.origin()
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
