"""SMPP 3.4 server (SMSC role): a thin Twisted adapter around ``gateway.smpp.session.Session``.

Policy lives here, not in the session: accounts and passwords, bind limits,
per-account rates, source ranges, what a submit_sm means (a command to a
service number goes to the router; anything else is an MT accepted and
receipted), long-MO reassembly and delivery of the outbox to RX/TRX binds.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import protocol, threads
from twisted.logger import Logger

from gateway import profiling
from gateway.admission import ReplyAdmission
from gateway.binds import BindRegistry
from gateway.delivery import SmppDeliverer
from gateway.mo_parts import HeldPart, PartStore, sar_of
from gateway.pipeline import Accepted, MOPipeline
from gateway.receipts import receipt_extra
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.ratelimit import TokenBucket
from gateway.smpp.session import (
    SMSC,
    BindRequested,
    ConnectionShouldClose,
    ProtocolViolation,
    RequestAborted,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    Session,
    State,
    Timers,
    Unbound,
)
from gateway.smpp.text import ConcatInfo, Reassembler, TextError, decode_message
from gateway.ussd import is_ussd
from notifier.outbox import new_message_id
from notifier.security import verify_password
from offers.router import Inbound

log = Logger(namespace="gateway.smpp")

BIND_KIND = {"bind_transmitter": "tx", "bind_receiver": "rx", "bind_transceiver": "trx"}
SERVICE_NUMBERS = frozenset({"10086", "1008611", "10000"})
MAX_QUEUED_MO = 5000  # accepted but not yet committed: beyond this, ESME_RMSGQFUL
FAILED_BIND_BASE_DELAY = 0.2
FAILED_BIND_MAX_DELAY = 5.0
FAILURE_MEMORY_S = 600.0  # failed binds older than this are forgotten
MAX_TRACKED_IPS = 10000
RESEND_TEXT = "您发送的长短信未收全（缺少部分内容），请重新发送。Your long message arrived incomplete; please send it again."


class AccountGuard:
    """Shared per-account state across binds: rate buckets, verified-password cache, failures per IP."""

    def __init__(self, now: Callable[[], float]):
        self.now = now
        self.buckets: dict[str, TokenBucket] = {}
        self.verified: dict[tuple[str, str, str], bool] = {}
        self.failures: dict[str, tuple[int, float]] = {}  # ip -> (failed binds, last failure)

    def bucket(self, system_id: str, rate: float) -> TokenBucket:
        bucket = self.buckets.get(system_id)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[system_id] = TokenBucket(rate=rate, burst=max(1.0, rate / 10), now=self.now)
        return bucket

    def failure_delay(self, ip: str) -> float:
        count, last = self.failures.get(ip, (0, 0.0))
        if count == 0 or self.now() - last > FAILURE_MEMORY_S:
            return 0.0
        return min(FAILED_BIND_MAX_DELAY, FAILED_BIND_BASE_DELAY * 2 ** (count - 1))

    def record_failure(self, ip: str) -> None:
        count, last = self.failures.pop(ip, (0, 0.0))
        if self.now() - last > FAILURE_MEMORY_S:
            count = 0
        self.failures[ip] = (count + 1, self.now())
        while len(self.failures) > MAX_TRACKED_IPS:  # dicts keep insertion order: drop the stalest
            del self.failures[next(iter(self.failures))]


def ip_allowed(ip: str, allow: tuple[str, ...]) -> bool:
    if not allow:
        return True
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(net, strict=False) for net in allow)


def no_delay(transport: Any) -> None:
    """TCP_NODELAY on an SMPP connection: PDUs are small and answered one by one, and with Nagle's
    algorithm a deliver_sm written while an earlier segment was unacknowledged waited for the peer's
    delayed ACK (40 ms on Linux): at half load the reply p99 sat at 39-40 ms whatever else changed."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:  # not a TCP socket (a test transport, a UNIX socket)
            pass


class SMPPServerProtocol(protocol.Protocol):
    def __init__(self, server: SMPPServerService):
        self.server = server
        self.gateway = server.gateway
        self.session: Session | None = None
        self.system_id: str | None = None
        self.bind_kind: str | None = None
        self.peer_ip = ""
        self._timer = None
        self._callbacks: dict[int, Callable[[int | None], None]] = {}
        self._closing = False
        self._flush_due = False

    # --- Receiver interface for the deliverer ----------------------------------------------------

    def send_capacity(self) -> int:
        if self.session is None or self._closing or not self.session.can_receive_mt:
            return 0
        return self.session.window_available()

    def send_deliver_sm(self, params: dict, on_response: Callable[[int | None], None]) -> None:
        params = dict(params)
        tlvs = params.pop("tlvs", None)
        try:
            pdu = self.session.send_request("deliver_sm", tlvs=tlvs, **params)
        except Exception as exc:  # window full or session closing: the deliverer retries the row
            on_response(str(exc) or type(exc).__name__)
            return
        self._callbacks[pdu.sequence_number] = on_response
        self.server.count_pdu("deliver_sm", "out")
        self._flush_soon()

    def _flush_soon(self) -> None:
        """One transport write and one timer check for everything queued in this reactor turn: a reply is
        several deliver_sm, the deliverer sends many rows per turn, and a group commit answers many
        submit_sm at once."""
        if not self._flush_due:
            self._flush_due = True
            self.gateway.reactor.callLater(0, self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_due = False
        self._flush()
        self._reschedule()

    # --- Twisted ---------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        settings = self.gateway.settings
        timers = Timers(session_init=settings["smpp.session_init"], enquire_link=settings["smpp.enquire_link"],
                        inactivity=settings["smpp.inactivity"], response=settings["smpp.response"])
        self.session = Session(SMSC, self.gateway.now, timers, window=settings["smpp.window"],
                               max_pdu_size=settings["smpp.max_pdu"])
        no_delay(self.transport)
        peer = self.transport.getPeer()
        self.peer_ip = getattr(peer, "host", "")
        self.server.connections.add(self)
        self._reschedule()

    def dataReceived(self, data: bytes) -> None:
        self._handle(self.session.receive_data(data))
        self._flush()
        self._reschedule()

    def connectionLost(self, reason: Any = None) -> None:
        self.server.connections.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.system_id is not None and self.bind_kind is not None:
            self.server.registry.remove(self)
            self.server.on_bind_change()
        self._handle(self.session.connection_lost())
        for callback in list(self._callbacks.values()):
            callback(None)
        self._callbacks.clear()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _reschedule(self) -> None:
        deadline = self.session.next_deadline()
        if self._timer is not None and self._timer.active():
            if deadline is not None and abs(self._timer.getTime() - deadline) < 0.05:
                return
            self._timer.cancel()
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - self.gateway.now())
            self._timer = self.gateway.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._handle(self.session.tick())
        self._flush()
        self._reschedule()

    # --- events ----------------------------------------------------------------------------------

    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                self._on_request(event.pdu)
            elif isinstance(event, ResponseReceived):
                self._on_response(event.response, event.request)
            elif isinstance(event, BindRequested):
                self._on_bind(event.pdu)
            elif isinstance(event, (ResponseTimeout, RequestAborted)):
                callback = self._callbacks.pop(event.request.sequence_number, None)
                if callback is not None:
                    callback(None)
            elif isinstance(event, Unbound):
                self._forget_bind()
                if event.by_peer:
                    self._close_after_flush("peer unbound")
            elif isinstance(event, ConnectionShouldClose):
                log.info("closing SMPP connection from {ip} ({sid}): {reason}", ip=self.peer_ip,
                         sid=self.system_id, reason=event.reason)
                self._close_after_flush(event.reason)
            elif isinstance(event, ProtocolViolation):
                self.server.count_error(event.status)
                log.info("SMPP protocol error from {ip}: 0x{status:02X} {detail}", ip=self.peer_ip,
                         status=event.status, detail=event.detail)

    def _close_after_flush(self, _reason: str) -> None:
        self._closing = True
        self._flush()
        if self.transport is not None:
            self.transport.loseConnection()

    def _forget_bind(self) -> None:
        if self.bind_kind is not None:
            self.server.registry.remove(self)
            self.bind_kind = None
            self.server.on_bind_change()

    def _on_response(self, response, request) -> None:
        callback = self._callbacks.pop(request.sequence_number, None)
        self.server.count_pdu(response.command, "in", response.command_status)
        if callback is not None:
            callback(response.command_status)

    # --- binds -----------------------------------------------------------------------------------

    def _on_bind(self, pdu) -> None:
        system_id = pdu.params.get("system_id", "")
        password = pdu.params.get("password", "")
        kind = BIND_KIND[pdu.command]
        self.server.count_pdu(pdu.command, "in")
        # The session holds what follows the bind until it is decided: stop reading meanwhile.
        self.transport.pauseProducing()
        account = self.gateway.account(system_id)
        status = self._bind_precheck(account, kind)
        if status:
            self._reject_later(pdu, status, f"account {system_id!r}")
            return
        key = (system_id, password, account.password_hash)
        if key in self.server.guard.verified:
            self._finish_bind(pdu, account, kind, self.server.guard.verified[key])
            return
        d = threads.deferToThread(verify_password, password, account.password_hash)

        def verified(ok: bool) -> None:
            if ok:
                self.server.guard.verified[key] = True
            self._finish_bind(pdu, account, kind, ok)

        d.addCallback(verified)
        d.addErrback(lambda f: (log.failure("password check failed", f),
                                self._reject_later(pdu, S.ESME_RBINDFAIL, "internal error")))

    def _bind_precheck(self, account, kind: str) -> int:
        if account is None:
            return S.ESME_RINVSYSID
        if kind not in account.bind_types or not ip_allowed(self.peer_ip, account.ip_allow):
            return S.ESME_RBINDFAIL
        return 0

    def _finish_bind(self, pdu, account, kind: str, password_ok: bool) -> None:
        if self.session is None or self._closing:
            return
        if not password_ok:
            self._reject_later(pdu, S.ESME_RINVPASWD, f"wrong password for {account.system_id!r}")
            return
        self.server.registry.reserve(account.system_id, account.max_binds,
                                     lambda ok: self._bind_admitted(pdu, account, kind, ok))

    def _bind_admitted(self, pdu, account, kind: str, ok: bool) -> None:
        if self.session is None or self._closing or not self.connected:
            if ok:
                self.server.registry.unreserve(account.system_id)
            return
        if not ok:
            self._reject_later(pdu, S.ESME_RBINDFAIL,
                               f"{account.system_id!r} already has {account.max_binds} binds")
            return
        self.server.guard.failures.pop(self.peer_ip, None)
        self.system_id, self.bind_kind = account.system_id, kind
        self.server.registry.add(self)
        log.info("bound {sid} as {kind} from {ip}:{port}", sid=account.system_id, kind=kind, ip=self.peer_ip,
                 port=getattr(self.transport.getPeer(), "port", 0))
        self._bind_decided(self.session.accept_bind(pdu, system_id="10086"))
        self.server.on_bind_change()

    def _bind_decided(self, held_events: list) -> None:
        """The bind_resp is queued: answer what the peer pipelined behind the bind, read on."""
        self._handle(held_events)
        self._flush()
        self._reschedule()
        if self.transport is not None and not self._closing and self.session.state is not State.BIND_PENDING:
            self.transport.resumeProducing()  # (a bind held behind the decided one keeps reading paused)

    def _reject_later(self, pdu, status: int, why: str) -> None:
        """Refuse a bind; repeated failures from one address are answered ever more slowly."""
        guard = self.server.guard
        delay = guard.failure_delay(self.peer_ip)
        guard.record_failure(self.peer_ip)
        log.info("bind refused (0x{status:02X}) from {ip}: {why}", status=status, ip=self.peer_ip, why=why)

        def answer() -> None:
            if self.session is not None and not self._closing:
                self._bind_decided(self.session.reject_bind(pdu, status))

        if delay > 0:
            self.gateway.reactor.callLater(delay, answer)
        else:
            answer()

    # --- requests --------------------------------------------------------------------------------

    def _on_request(self, pdu) -> None:
        name = pdu.command
        self.server.count_pdu(name, "in")
        handler = getattr(self, f"_req_{name}", None)
        if handler is None:
            if name not in ("alert_notification", "outbind"):
                self._respond(pdu, S.ESME_RINVCMDID)
            return
        handler(pdu)

    def _account(self):
        return self.gateway.account(self.system_id) if self.system_id else None

    def _admission_status(self, account, source: str, dests: tuple[str, ...]) -> int:
        if not self.server.guard.bucket(account.system_id, account.rate).try_take():
            return S.ESME_RTHROTTLED
        if len(self.server.pipeline.pending) >= MAX_QUEUED_MO:
            return S.ESME_RMSGQFUL
        if not SERVICE_NUMBERS.isdisjoint(dests) and not self.server.admission.admit():
            return S.ESME_RMSGQFUL  # the replies already waiting are older than smpp.max_reply_delay_ms
        if account.source_ranges and not any(re.fullmatch(p, source) for p in account.source_ranges):
            return S.ESME_RINVSRCADR
        return 0

    def _req_submit_sm(self, pdu) -> None:
        self._submit(pdu, pdu.params.get("destination_addr", ""))

    def _req_data_sm(self, pdu) -> None:
        self._submit(pdu, pdu.params.get("destination_addr", ""))

    def _admit(self, pdu, source: str, dests: tuple[str, ...]) -> bool:
        """Rate, queue and source-range checks of a submit; a refusal is answered (and counted) here."""
        account = self._account()
        status = self._admission_status(account, source, dests) if account else S.ESME_RINVBNDSTS
        if status:
            self.server.count_error(status)
            self._respond(pdu, status)
        return not status

    def _submit(self, pdu, dest: str) -> None:
        source = pdu.params.get("source_addr", "")
        if not self._admit(pdu, source, (dest,)):
            return
        ussd = self.server.ussd
        if ussd is not None and is_ussd(pdu):
            ussd.handle(self, pdu)
            return
        data_coding = pdu.params.get("data_coding", 0)
        try:
            text, concat, body = self.server.reassembler.receive_part(
                source, dest, pdu.params.get("esm_class", 0), data_coding, pdu.message, sar_of(pdu))
        except TextError as exc:
            self._respond(pdu, exc.command_status)
            return
        message_id = new_message_id()
        registered = pdu.params.get("registered_delivery", 0) & 0x03
        if text is None:  # one part of a long MO: kept (durably) until the rest arrives
            self.server.hold_part(self, pdu, source, dest, concat, body, data_coding, HeldPart(message_id, registered))
            return
        self.server.accept_message(self, pdu, source, dest, text, message_id, registered, concat)

    def _req_submit_multi(self, pdu) -> None:
        source = pdu.params.get("source_addr", "")
        dests = [d.get("destination_addr") or d.get("dl_name", "") for d in pdu.params.get("dest_address", [])]
        if not self._admit(pdu, source, tuple(dests)):
            return
        try:
            text = decode_message(pdu.params.get("data_coding", 0), pdu.message)
        except TextError as exc:
            self._respond(pdu, exc.command_status)
            return
        message_id = new_message_id()
        self.server.accept_multi(self, pdu, source, dests, text, message_id,
                                 pdu.params.get("registered_delivery", 0) & 0x03)

    def _req_query_sm(self, pdu) -> None:
        found = self.server.query(pdu.params.get("message_id", ""))
        if found is None:
            self._respond(pdu, S.ESME_RQUERYFAIL)
        else:
            self._respond(pdu, 0, message_id=pdu.params.get("message_id", ""), final_date="",
                                 message_state=found, error_code=0)

    def _req_cancel_sm(self, pdu) -> None:
        ok = self.server.cancel(pdu.params.get("message_id", ""))
        self._respond(pdu, 0 if ok else S.ESME_RCANCELFAIL)

    def _req_replace_sm(self, pdu) -> None:
        ok = self.server.replace(pdu.params.get("message_id", ""), pdu.params)
        self._respond(pdu, 0 if ok else S.ESME_RREPLACEFAIL)

    def _respond(self, pdu, status: int = 0, **params: Any) -> None:
        # A response may release an unbind_resp the session held back behind it: handle what it returns.
        self._handle(self.session.respond(pdu, status, **params) or [])

    def respond_later(self, pdu, status: int, **params: Any) -> None:
        """Answer a request after asynchronous work (a commit); a no-op if the session closed."""
        if self.session is None or self._closing:
            return
        self._respond(pdu, status, **params)
        self._flush_soon()


def reclaim_leases(gateway: Any, owner: str | None) -> None:
    """Put the SMPP rows claimed by ``owner`` (``None``: by anybody) back in the queue."""
    from sqlalchemy import update

    from notifier.models import OutboxMessage

    query = update(OutboxMessage).where(OutboxMessage.state == "sending", OutboxMessage.channel == "smpp")
    if owner is not None:
        query = query.where(OutboxMessage.lease_owner == owner)
    with gateway.db() as session, session.begin():
        result = session.execute(query.values(state="queued", lease_owner=None, lease_until=None))
    if result.rowcount:
        log.info("{n} outbox rows claimed before a restart are due again", n=result.rowcount)


class SMPPServerFactory(protocol.Factory):
    def __init__(self, server: SMPPServerService):
        self.server = server

    def buildProtocol(self, addr) -> SMPPServerProtocol:
        return SMPPServerProtocol(self.server)


class SMPPServerService(service.Service):
    """Listens for ESMEs, owns the bind registry, the MO pipeline and the outbox deliverer."""

    def __init__(self, gateway: Any, host: str, port: int):
        self.gateway = gateway
        self.host, self.port = host, port
        self.listening = None
        self.accepts = True  # False in a worker of a group: the parent accepts and hands connections over
        self.connections: set[SMPPServerProtocol] = set()
        self.registry = BindRegistry()
        self.guard = AccountGuard(gateway.now)
        self.pipeline = MOPipeline(gateway)
        self.reassembler = Reassembler(gateway.now, timeout=gateway.settings["smpp.reassembly_timeout"])
        self.held_parts: dict[tuple[str, str], list[HeldPart]] = defaultdict(list)
        self.parts = PartStore(f"smpp:{gateway.instance}")
        self.deliverer = SmppDeliverer(gateway, self.registry, f"smpp:{gateway.instance}")
        self.pipeline.committed_listeners.append(self.deliverer.take)
        self.admission = ReplyAdmission(
            gateway.now, lambda: gateway.settings["smpp.max_reply_delay_ms"] / 1000.0,
            backlog=lambda: len(self.pipeline.pending) + len(self.deliverer.ready) + len(self.deliverer.in_flight),
            oldest_wait_s=self._oldest_wait,
            completed=lambda: self.deliverer.stats["sent_rows"] + self.deliverer.stats["errors"])
        self.pipeline.ack_when_sent = self.deliverer.when_sent
        self.pipeline.lease_owner = lambda account, channel: (
            self.deliverer.lease_owner_for(account) if channel == "smpp" else None)
        self.ussd = None  # a USSD handler plugs in here (gateway.ussd)
        self.pdu_counter: Callable[[str, str, int], None] | None = None
        self.error_counter: Callable[[int], None] | None = None
        self._expiry = None

    def port_number(self) -> int:
        return self.listening.getHost().port if self.listening is not None else self.port

    def startService(self) -> None:
        super().startService()

        self._restore_parts()
        if self.accepts:
            self.listening = self.gateway.listen_tcp(self.port, SMPPServerFactory(self), self.host)
        profiling.install_from_env(self.gateway.reactor)
        self._reclaim_leases()
        self.deliverer.start()
        self._schedule_expiry()

    def stopService(self):
        super().stopService()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self.pipeline.flush()
        for conn in list(self.connections):
            if conn.session is not None and conn.bind_kind is not None:
                try:
                    conn.session.unbind()
                except Exception:  # already unbinding or closed: just close
                    pass
            conn._close_after_flush("gateway shutting down")
        self.deliverer.stop()
        return self.listening.stopListening() if self.listening else None

    def _restore_parts(self) -> None:
        """Parts of long MO acknowledged before a restart wait again for the rest of their message."""
        gw = self.gateway
        with gw.db() as session, session.begin():
            restored = self.parts.restore(session, self.reassembler, gw.now(), gw.settings["smpp.reassembly_timeout"])
            for key, held in restored.items():
                self.held_parts[key].extend(held)
        if self.held_parts:
            log.info("{n} long MO from before the restart wait for their missing parts", n=len(self.held_parts))

    def _reclaim_leases(self) -> None:
        """Rows this instance had claimed before a crash are due again now, not when their lease ends.

        A lone SQLite process is the database's only user, so every claimed row is ours; a worker
        of a group (whose parent reclaimed every row at the group's start) takes back its own.
        """
        alone = self.gateway.engine.dialect.name == "sqlite" and self.gateway.worker is None
        reclaim_leases(self.gateway, None if alone else self.deliverer.owner)

    # --- counters (the metrics module plugs in) ------------------------------------------------------

    def count_pdu(self, command: str, direction: str, status: int = 0) -> None:
        if self.pdu_counter is not None:
            self.pdu_counter(command, direction, status)

    def count_error(self, status: int) -> None:
        if self.error_counter is not None:
            self.error_counter(status)

    def _oldest_wait(self) -> float:
        """Seconds the oldest accepted command has waited to be routed, or its reply to be sent."""
        now, oldest = self.gateway.now(), 0.0
        if self.pipeline.pending:
            oldest = now - self.pipeline.pending_since
        if self.deliverer.ready:
            oldest = max(oldest, now - self.deliverer.ready[0].queued_at)
        return oldest

    def on_bind_change(self) -> None:
        self.deliverer.wake_table()

    # --- accepted messages ----------------------------------------------------------------------

    def is_service_number(self, dest: str) -> bool:
        return dest in SERVICE_NUMBERS

    def hold_part(self, conn: SMPPServerProtocol, pdu, source: str, dest: str, concat: ConcatInfo, body: bytes,
                  data_coding: int, held: HeldPart) -> None:
        """One part of a long MO: its row is written in the next group commit, then it is acknowledged."""
        keep = self.parts.keep(self.reassembler, source, dest, concat, body, data_coding, held, self.gateway.now())
        if not keep:
            conn.respond_later(pdu, 0, message_id=held.message_id)
            return
        self.held_parts[(source, dest)].append(held)

        def done(_reply, error) -> None:
            conn.respond_later(pdu, S.ESME_RSYSERR if error is not None else 0, message_id=held.message_id)

        self.pipeline.accept(Accepted(Inbound("sms", source, dest, "", conn.system_id), held.message_id,
                                      conn.system_id, None, done, route=False, writes=keep, message=False))

    def accept_message(self, conn: SMPPServerProtocol, pdu, source: str, dest: str, text: str,
                       message_id: str, registered: int, concat: ConcatInfo | None = None) -> None:
        now = self.gateway.now()
        held = self.held_parts.pop((source, dest), [])
        release = self.parts.release_whole(source, dest, concat)
        receipt = None
        if registered == 1:
            receipt = receipt_extra(message_id, submitted_at=now, done_at=now, text=text)
        routed = self.is_service_number(dest)
        inbound = Inbound("sms", source, dest, text, conn.system_id)

        def done(reply, error) -> None:
            if error is not None:
                conn.respond_later(pdu, S.ESME_RSYSERR)
            else:
                conn.respond_later(pdu, 0, message_id=message_id)

        self.pipeline.accept(Accepted(inbound, message_id, conn.system_id, receipt, done, route=routed,
                                      ack_after_send=routed and self.gateway.settings["smpp.ack_after_reply"],
                                      part_receipts=[receipt_extra(part.message_id, submitted_at=now, done_at=now)
                                                     for part in held if part.registered == 1],
                                      writes=release))

    def accept_multi(self, conn, pdu, source: str, dests: list[str], text: str, message_id: str,
                     registered: int) -> None:
        now = self.gateway.now()
        receipt = receipt_extra(message_id, submitted_at=now, done_at=now, text=text) if registered == 1 else None
        pending = {"left": len(dests)}

        def done(reply, error) -> None:
            pending["left"] -= 1
            if pending["left"] == 0:
                conn.respond_later(pdu, 0, message_id=message_id, unsuccess_sme=[])

        for i, dest in enumerate(dests):
            inbound = Inbound("sms", source, dest, text, conn.system_id)
            self.pipeline.accept(Accepted(inbound, f"{message_id}" if i == 0 else new_message_id(),
                                          conn.system_id, receipt if i == 0 else None, done,
                                          route=self.is_service_number(dest)))

    def _schedule_expiry(self) -> None:
        self._expiry = self.gateway.reactor.callLater(1.0, self._expire_parts)

    def _expire_parts(self) -> None:
        for expired in self.reassembler.expire():
            log.warn("long MO from {sender} to {dest} (ref {ref}) incomplete after timeout: got parts {got} of "
                     "{total}; asked the sender to resend", sender=expired.sender, dest=expired.recipient,
                     ref=expired.ref, got=list(expired.received), total=expired.total)
            self.held_parts.pop((expired.sender, expired.recipient), None)
            self._send_resend_request(expired)
        if self.running:
            self._schedule_expiry()

    def _send_resend_request(self, expired) -> None:
        """Ask the sender of an incomplete long MO to send it again; its kept parts go in the same commit."""
        sender, service_number = expired.sender, expired.recipient
        accounts = self.gateway.service_accounts() or []
        gw = self.gateway
        with gw.db() as session, session.begin():
            self.parts.release(sender, service_number, expired.ref, expired.total)(session)
            for account in accounts[:1]:
                gw.outbox.enqueue(session, kind="reply", source=service_number, dest=sender, text=RESEND_TEXT,
                                  account=account)
        self.deliverer.wake_table()

    # --- query / cancel / replace -------------------------------------------------------------------

    def _row(self, session, message_id: str):
        from sqlalchemy import select

        from notifier.models import OutboxMessage

        return session.scalar(select(OutboxMessage).where(OutboxMessage.message_id == message_id))

    def query(self, message_id: str) -> int | None:
        from sqlalchemy import select

        from notifier.models import MessageLog

        states = {"queued": 1, "sending": 1, "sent": 1, "delivered": 2, "expired": 3, "failed": 5}
        with self.gateway.db() as session:
            row = self._row(session, message_id)
            if row is not None:
                return states.get(row.state, 7)
            logged = session.scalar(select(MessageLog.id).where(MessageLog.message_id == message_id))
        return 2 if logged is not None else None

    def cancel(self, message_id: str) -> bool:
        with self.gateway.db() as session, session.begin():
            row = self._row(session, message_id)
            if row is None or row.state != "queued":
                return False
            row.state, row.done_at, row.last_error = "expired", self.gateway.now(), "cancelled by cancel_sm"
            return True

    def replace(self, message_id: str, params: dict) -> bool:
        with self.gateway.db() as session, session.begin():
            row = self._row(session, message_id)
            if row is None or row.state != "queued":
                return False
            row.text = decode_message(params.get("data_coding", 0) or 0, params.get("short_message", b""))
            return True
