"""The gateway as an ESME of an operator SMSC (``--upstream host:port``).

- Binds as a transceiver (or a transmitter + receiver pair) and stays bound: enquire_link keeps
  the link alive (the session's timers), a lost link is redialled with exponential backoff and
  jitter (Twisted's ``ReconnectingClientFactory``, reset after every successful bind).
- MO arrives as deliver_sm, long MO reassembled, and goes to the router through the MO pipeline
  (one group commit per reactor turn) with ``reply_channel='upstream'``: replies become outbox
  rows of channel ``upstream``; the deliver_sm_resp goes out after the commit.
- A sender drains outbox channel ``upstream`` as submit_sm: window per link, ``outbox.rate``
  per second, a growing pause on ESME_RTHROTTLED / ESME_RMSGQFUL, each part resent after a
  response timeout. A row is ``sent`` when every part got submit_sm_resp OK, ``delivered`` or
  ``failed`` when every part's receipt came (one receipt per part).
- Receipts are matched to submit_sm_resp ids whatever format the SMSC writes them in (hex or
  decimal, leading zeros), also when a receipt overtakes its response (:class:`ReceiptMatcher`).
  The SMSC ids are also written to the database (:mod:`gateway.upstream_parts`) with the row's
  ``sent``, so a receipt that arrives after a restart (or a crash) still finishes its row; the
  receipt is answered only once its outcome is committed.
- Nothing is lost across a disconnect: unacknowledged rows go back to the outbox (released, not
  failed) and are sent after the rebind. Every submit_sm carries the row's message id in a vendor
  TLV (:data:`MESSAGE_REF_TAG`), so a receiver can drop a resend of a part it already took: the
  same message id reaches it exactly once.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.logger import Logger

from gateway import upstream_parts
from gateway.delivery import OutRow
from gateway.mo_parts import HeldPart, PartStore, sar_of
from gateway.pipeline import Accepted, MOPipeline
from gateway.receipts import id_aliases, norm_id, parse_receipt
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.constants import Tag
from gateway.smpp.ratelimit import TokenBucket
from gateway.smpp.session import (
    ESME,
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
from gateway.smpp.text import Reassembler, TextError, split_message
from gateway.upstream_parts import Outcome, SentPart
from notifier.outbox import new_message_id
from offers.router import Inbound

log = Logger(namespace="gateway.upstream")

MESSAGE_REF_TAG = 0x1492  # vendor TLV (SMPP 3.4 5.3.2: 0x1400-0x3FFF): our message id, for duplicate detection
CHANNEL = "upstream"
POLL_S = 1.0
EXPIRE_EVERY_S = 60.0
CLAIM_LEASE_S = 300.0
CLAIM_BATCH = 500
MAX_READY = 5000
THROTTLE_BASE_S = 0.05
THROTTLE_MAX_S = 5.0
PERMANENT = frozenset({S.ESME_RINVDSTADR, S.ESME_RINVSRCADR, S.ESME_RINVMSGLEN, S.ESME_RINVDSTTON,
                       S.ESME_RINVDSTNPI, S.ESME_RINVESMCLASS, S.ESME_RINVPARLEN})
BACKPRESSURE = frozenset({S.ESME_RTHROTTLED, S.ESME_RMSGQFUL})
FAILED_STATS = frozenset({"UNDELIV", "EXPIRED", "DELETED", "REJECTD", "UNKNOWN"})
FINAL_MESSAGE_STATES = {2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 7: "UNKNOWN", 8: "REJECTD"}


# --- receipts to parts, whatever the id format (sans-IO) -----------------------------------------------

@dataclass(frozen=True)
class ReceiptInfo:
    stat: str
    ok: bool


class ReceiptMatcher:
    """Which sent part a receipt reports on.

    ``sent(smsc_id, ref)`` registers the id from a submit_sm_resp (and returns a receipt that came
    first, if any); ``receipt(smsc_id, info)`` returns the part's ``ref`` or None, keeping the
    receipt a while in case its response is still on the way. An exact match (leading zeros and
    case ignored) wins over a match in the other base. Both tables are bounded, oldest out first.
    """

    def __init__(self, max_entries: int = 1_000_000, max_early: int = 100_000):
        self.max_entries, self.max_early = max_entries, max_early
        self._exact: OrderedDict[str, Any] = OrderedDict()
        self._alias: dict[str, Any] = {}
        self._early: OrderedDict[str, ReceiptInfo] = OrderedDict()

    def sent(self, smsc_id: str, ref: Any) -> ReceiptInfo | None:
        key = norm_id(smsc_id)
        for candidate in (key, *id_aliases(smsc_id)):
            early = self._early.pop(candidate, None)
            if early is not None:
                return early
        self._exact[key] = ref
        for alias in id_aliases(smsc_id):
            self._alias.setdefault(alias, ref)
        while len(self._exact) > self.max_entries:
            old, _ = self._exact.popitem(last=False)
            self._drop_aliases(old)
        return None

    def receipt(self, smsc_id: str, info: ReceiptInfo) -> Any:
        key = norm_id(smsc_id)
        ref = self._exact.pop(key, None)
        if ref is not None:
            self._drop_aliases(key)
            return ref
        ref = self._alias.pop(key, None)
        if ref is not None:
            for candidate in id_aliases(smsc_id):
                if self._exact.get(candidate) == ref:
                    del self._exact[candidate]
            return ref
        self.keep_early(smsc_id, info)
        return None

    def take_early(self, smsc_id: str) -> ReceiptInfo | None:
        """The receipt for ``smsc_id`` still waiting for its response, removed; None when none waits
        (its response came since and matched it)."""
        return self._early.pop(norm_id(smsc_id), None)

    def keep_early(self, smsc_id: str, info: ReceiptInfo) -> None:
        self._early[norm_id(smsc_id)] = info
        while len(self._early) > self.max_early:
            self._early.popitem(last=False)

    def _drop_aliases(self, key: str) -> None:
        for alias in id_aliases(key):
            self._alias.pop(alias, None)

    def __len__(self) -> int:
        return len(self._exact)


def receipt_of(pdu: Any) -> tuple[str, ReceiptInfo] | None:
    """``(receipted id, outcome)`` of a receipt deliver_sm (TLVs first, else the standard text)."""
    fields = parse_receipt(pdu.message.decode("latin-1", "replace"))
    smsc_id = pdu.tlvs.get(Tag.receipted_message_id) or fields.get("id")
    if not smsc_id:
        return None
    state = pdu.tlvs.get(Tag.message_state)
    stat = fields.get("stat", "").upper() or FINAL_MESSAGE_STATES.get(state, "")
    if not stat and state is None:
        return None
    return smsc_id, ReceiptInfo(stat, stat not in FAILED_STATS and state not in (3, 4, 5, 7, 8))


# --- one SMPP link ------------------------------------------------------------------------------------------

class UpstreamLink(protocol.Protocol):
    """One ESME session to the SMSC: binds on connect, reports to the client."""

    def __init__(self, client: UpstreamClient, kind: str, factory: Any):
        self.client = client
        self.kind = kind
        self.factory = factory
        self.session: Session | None = None
        self.bound = False
        self._timer = None
        self._callbacks: dict[int, Callable[[int | None, Any], None]] = {}

    def connectionMade(self) -> None:
        from gateway.smpp_server import no_delay

        no_delay(self.transport)
        c = self.client
        self.session = Session(ESME, c.reactor.seconds, c.timers, window=c.window)
        self.session.bind(self.kind, c.system_id, c.password)
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        self._handle(self.session.receive_data(data))
        self.flush()

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        events = self.session.connection_lost() if self.session is not None else []
        if self.bound:
            self.bound = False
            self.client.link_down(self)
        self._handle(events)

    def flush(self) -> None:
        if self.session is None:
            return
        data = self.session.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        deadline = self.session.next_deadline()
        if self._timer is not None and self._timer.active():
            if deadline is not None and abs(self._timer.getTime() - deadline) < 0.01:
                return
            self._timer.cancel()
        self._timer = None if deadline is None else self.client.reactor.callLater(
            max(0.0, deadline - self.client.reactor.seconds()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._handle(self.session.tick())
        self.flush()

    def capacity(self) -> int:
        if not self.bound or self.kind == "rx" or self.session.state is State.CLOSED:
            return 0
        return self.session.window_available()

    def submit(self, params: dict, on_response: Callable[[int | None, Any], None]) -> None:
        pdu = self.session.send_request("submit_sm", **params)
        self._callbacks[pdu.sequence_number] = on_response

    def respond(self, pdu: Any, status: int = 0, **params: Any) -> None:
        if self.session is not None and self.session.state is not State.CLOSED:
            self._handle(self.session.respond(pdu, status, **params))
            self.flush()

    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, ResponseReceived):
                self._on_response(event.response, event.request)
            elif isinstance(event, (ResponseTimeout, RequestAborted)):
                callback = self._callbacks.pop(event.request.sequence_number, None)
                if callback is not None:
                    callback(None, None)
            elif isinstance(event, RequestReceived):
                self._on_request(event.pdu)
            elif isinstance(event, Unbound) and self.bound:
                self.bound = False
                self.client.link_down(self)
            elif isinstance(event, ConnectionShouldClose):
                log.info("upstream {kind} link closing: {reason}", kind=self.kind, reason=event.reason)
                self.flush()
                if self.transport is not None:
                    self.transport.loseConnection()
            elif isinstance(event, ProtocolViolation):
                log.warn("upstream protocol error 0x{status:02X}: {detail}", status=event.status, detail=event.detail)

    def _on_response(self, response: Any, request: Any) -> None:
        if request.command.startswith("bind_"):
            if response.command_status == 0:
                self.bound = True
                self.factory.resetDelay()
                log.info("bound to the upstream SMSC as {kind}", kind=self.kind)
                self.client.link_up(self)
            else:
                log.warn("upstream SMSC refused the {kind} bind: 0x{status:02X}", kind=self.kind,
                         status=response.command_status)
                self.transport.loseConnection()
            return
        callback = self._callbacks.pop(request.sequence_number, None)
        if callback is not None:
            callback(response.command_status, response)

    def _on_request(self, pdu: Any) -> None:
        if pdu.command in ("deliver_sm", "data_sm"):
            self.client.on_deliver(self, pdu)
        elif pdu.command not in ("outbind", "alert_notification"):
            self.respond(pdu, S.ESME_RINVCMDID)


class _LinkFactory(protocol.ReconnectingClientFactory):
    def __init__(self, client: UpstreamClient, kind: str):
        self.client = client
        self.kind = kind
        self.clock = client.reactor
        self.initialDelay = client.initial_delay
        self.delay = client.initial_delay
        self.maxDelay = client.max_delay
        self.jitter = 0.2

    def buildProtocol(self, addr) -> UpstreamLink:
        return UpstreamLink(self.client, self.kind, self)

    def clientConnectionFailed(self, connector, reason) -> None:
        log.info("upstream SMSC unreachable ({reason}); redialling", reason=reason.getErrorMessage())
        super().clientConnectionFailed(connector, reason)


# --- the client: links, the outbox sender, MO and receipts ----------------------------------------------------

@dataclass
class _Row:
    row: OutRow
    parts: list[dict]
    acked: dict[int, str] = field(default_factory=dict)  # part index -> SMSC message id
    in_flight: set[int] = field(default_factory=set)
    timeouts: int = 0


class UpstreamClient(service.Service):
    """``--upstream host:port``: MO in through the router, outbox channel ``upstream`` out as submit_sm."""

    def __init__(self, gateway: Any, host: str, port: int, system_id: str, password: str, *, bind: str = "trx",
                 reactor: Any = None, owner: str | None = None, initial_delay: float = 1.0,
                 max_delay: float = 60.0, window: int | None = None, rate: float | None = None,
                 throttle_max_s: float = THROTTLE_MAX_S):
        if bind not in ("trx", "pair"):
            raise ValueError("bind is 'trx' (one transceiver) or 'pair' (transmitter + receiver)")
        self.gateway = gateway
        self.reactor = reactor or gateway.reactor
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password[:8]
        self.kinds = ("trx",) if bind == "trx" else ("tx", "rx")
        self.initial_delay, self.max_delay = initial_delay, max_delay
        self.throttle_max_s = throttle_max_s
        settings = gateway.settings
        self.timers = Timers(session_init=settings["smpp.session_init"], enquire_link=settings["smpp.enquire_link"],
                             inactivity=settings["smpp.inactivity"], response=settings["smpp.response"])
        self.window = window or settings["smpp.upstream_window"]
        self.bucket = TokenBucket(rate=rate or settings["outbox.rate"], burst=max(10.0, (rate or 100) / 10),
                                  now=self.reactor.seconds)
        self.owner = owner or f"upstream-{id(self):x}"
        self.links: list[UpstreamLink] = []
        self.factories: list[_LinkFactory] = []
        self.pipeline = MOPipeline(gateway)
        self.pipeline.committed_listeners.append(lambda rows: self.poke())
        self.reassembler = Reassembler(self.reactor.seconds, timeout=settings["smpp.reassembly_timeout"])
        self.parts = PartStore(f"{CHANNEL}:{gateway.instance}")
        self.matcher = ReceiptMatcher()
        self.rows: dict[str, _Row] = {}
        self.ready: deque[tuple[str, int]] = deque()
        self.partial: dict[str, dict[int, str]] = {}  # acked parts of rows given back to the outbox
        self.outcomes: dict[str, dict[int, bool]] = {}  # message id -> part index -> receipt ok
        self.part_counts: dict[str, int] = {}
        self._sent: list[str] = []
        self._sent_parts: list[SentPart] = []  # SMSC ids to keep in the database
        self._lookups: dict[str, None] = {}  # receipts matched by no part in memory: try the database
        self._partials: list[tuple[str, int, Outcome]] = []  # part receipts of messages still incomplete
        self._next_expiry = 0.0
        self._finished: list[tuple[str, bool, str | None]] = []
        self._retries: list[tuple[str, str, bool]] = []
        self._after_commit: list[Callable[[], None]] = []
        self._pause_until = 0.0
        self._throttle_s = THROTTLE_BASE_S
        self._pump_call = self._poll_call = self._record_call = None
        self.stats = {"submitted": 0, "acked": 0, "throttled": 0, "timeouts": 0, "receipts": 0, "mo": 0,
                      "sent_rows": 0, "delivered_rows": 0, "failed_rows": 0, "unmatched_receipts": 0}

    # --- lifecycle ----------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        with self.gateway.db() as session, session.begin():  # long-MO parts acknowledged before a restart
            self.parts.restore(session, self.reassembler, self.reactor.seconds(),
                               self.gateway.settings["smpp.reassembly_timeout"])
        for kind in self.kinds:
            factory = _LinkFactory(self, kind)
            self.factories.append(factory)
            self.reactor.connectTCP(self.host, self.port, factory)
        self._poll()

    def stopService(self):
        super().stopService()
        for factory in self.factories:
            factory.stopTrying()
        for call in (self._pump_call, self._poll_call):
            if call is not None and call.active():
                call.cancel()
        self.pipeline.flush()
        for link in list(self.links):
            if link.session is not None and link.session.bound_kind is not None:
                link.session.unbind()
                link.flush()
        self._give_back(list(self.rows))
        self._record()

    def link_up(self, link: UpstreamLink) -> None:
        self.links.append(link)
        self.poke()

    def link_down(self, link: UpstreamLink) -> None:
        if link in self.links:
            self.links.remove(link)
        if not any(lk.kind in ("tx", "trx") for lk in self.links):
            # nothing left to send on: unacknowledged rows go back to the outbox until the rebind
            self.reactor.callLater(0, self._give_back_idle)

    def _give_back_idle(self) -> None:
        if not any(lk.kind in ("tx", "trx") for lk in self.links):
            self._give_back([mid for mid, r in self.rows.items() if not r.in_flight])

    def _give_back(self, message_ids: list[str]) -> None:
        for mid in message_ids:
            state = self.rows.pop(mid, None)
            if state is not None and state.acked:
                self.partial[mid] = dict(state.acked)
        gone = set(message_ids)
        self.ready = deque(item for item in self.ready if item[0] not in gone)
        if message_ids:
            with self.gateway.db() as session, session.begin():
                self.gateway.outbox.release(session, message_ids)

    def poke(self) -> None:
        if self.running and (self._pump_call is None or not self._pump_call.active()):
            self._pump_call = self.reactor.callLater(0, self._pump)

    def _poll(self) -> None:
        self.poke()
        self._expire_parts()
        self._expire_smsc_ids()
        if self.running:
            self._poll_call = self.reactor.callLater(POLL_S, self._poll)

    # --- sending ------------------------------------------------------------------------------------

    def _senders(self) -> list[UpstreamLink]:
        return [lk for lk in self.links if lk.capacity() > 0]

    def _pump(self) -> None:
        self._pump_call = None
        if not self._senders():
            return
        if len(self.ready) < CLAIM_BATCH and len(self.rows) < MAX_READY:
            self._claim()
        now = self.reactor.seconds()
        if now < self._pause_until:
            self._pump_call = self.reactor.callLater(self._pause_until - now, self._pump)
            return
        touched = set()
        while self.ready:
            senders = self._senders()
            if not senders:
                break
            if not self.bucket.try_take(1):
                wait = max(0.001, (1 - self.bucket.tokens) / self.bucket.rate)
                self._pump_call = self.reactor.callLater(wait, self._pump)
                break
            link = max(senders, key=UpstreamLink.capacity)
            mid, index = self.ready.popleft()
            state = self.rows.get(mid)
            if state is None or index in state.acked:
                continue
            state.in_flight.add(index)
            link.submit(state.parts[index], lambda status, resp, m=mid, i=index: self._result(m, i, status, resp))
            self.stats["submitted"] += 1
            touched.add(link)
        for link in touched:
            link.flush()

    def _claim(self) -> None:
        gw = self.gateway
        with gw.db() as session, session.begin():
            rows = gw.outbox.claim(session, channel=CHANNEL, limit=CLAIM_BATCH, owner=self.owner,
                                   lease_s=CLAIM_LEASE_S)
            fresh = [OutRow.of(r) for r in rows if r.message_id not in self.rows]
        for row in fresh:
            try:
                parts = self._parts(row)
            except (ValueError, TextError) as exc:
                self._retries.append((row.message_id, f"cannot encode: {exc}", True))
                continue
            state = _Row(row, parts, acked=self.partial.pop(row.message_id, {}))
            self.rows[row.message_id] = state
            self.part_counts[row.message_id] = len(parts)
            self.ready.extend((row.message_id, i) for i in range(len(parts)) if i not in state.acked)
        if fresh:
            self._schedule_record()

    def _parts(self, row: OutRow) -> list[dict]:
        ref = zlib.crc32(row.message_id.encode()) & 0xFF  # the same split on every resend
        ident = row.message_id.encode("ascii")
        return [{"source_addr_ton": 0, "source_addr_npi": 1, "source_addr": row.source, "dest_addr_ton": 1,
                 "dest_addr_npi": 1, "destination_addr": row.dest, "esm_class": part.esm_class,
                 "registered_delivery": 1, "data_coding": part.data_coding, "short_message": part.short_message,
                 "tlvs": {MESSAGE_REF_TAG: ident}}
                for part in split_message(row.text, ref=ref)]

    def _result(self, mid: str, index: int, status: int | None, response: Any) -> None:
        state = self.rows.get(mid)
        if state is None:
            return
        state.in_flight.discard(index)
        if status == 0:
            self._acked(state, index, response.params.get("message_id", ""))
        elif status is None:
            self._timed_out(state, index)
        elif status in BACKPRESSURE:
            self.stats["throttled"] += 1
            self.ready.appendleft((mid, index))
            self._pause_until = self.reactor.seconds() + self._throttle_s
            self._throttle_s = min(self.throttle_max_s, self._throttle_s * 2)
        else:
            self._drop(mid, f"submit_sm_resp status 0x{status:02X}", status in PERMANENT)
        self.poke()

    def _acked(self, state: _Row, index: int, smsc_id: str) -> None:
        mid = state.row.message_id
        self._throttle_s = THROTTLE_BASE_S
        self.stats["acked"] += 1
        state.acked[index] = smsc_id
        self._sent_parts.append(SentPart(smsc_id, mid, index, len(state.parts),
                                         self.gateway.now() + self.gateway.outbox.validity))
        early = self.matcher.sent(smsc_id, (mid, index))
        if early is not None:
            self._part_outcome(mid, index, early)
        if len(state.acked) == len(state.parts):
            del self.rows[mid]
            self._sent.append(mid)
            self.stats["sent_rows"] += 1
            self._schedule_record()

    def _timed_out(self, state: _Row, index: int) -> None:
        self.stats["timeouts"] += 1
        state.timeouts += 1
        if state.timeouts >= self.gateway.outbox.retry_max * len(state.parts):
            self._drop(state.row.message_id, "no submit_sm_resp", False)
        else:
            self.ready.appendleft((state.row.message_id, index))

    def _drop(self, mid: str, error: str, permanent: bool) -> None:
        state = self.rows.pop(mid, None)
        if state is not None and state.acked and not permanent:
            self.partial[mid] = dict(state.acked)
        self._retries.append((mid, error, permanent))
        self._schedule_record()

    # --- MO and receipts ----------------------------------------------------------------------------

    def on_deliver(self, link: UpstreamLink, pdu: Any) -> None:
        if pdu.params.get("esm_class", 0) & 0x04:
            self._receipt(link, pdu)
            return
        self.stats["mo"] += 1
        source, dest = pdu.params.get("source_addr", ""), pdu.params.get("destination_addr", "")
        data_coding = pdu.params.get("data_coding", 0)
        try:
            text, concat, body = self.reassembler.receive_part(source, dest, pdu.params.get("esm_class", 0),
                                                               data_coding, pdu.message, sar_of(pdu))
        except TextError as exc:
            link.respond(pdu, exc.command_status or S.ESME_RSYSERR)
            return

        def done(reply, error) -> None:
            link.respond(pdu, S.ESME_RSYSERR if error is not None else 0)

        message_id = new_message_id()
        if text is None:  # one part of a long MO: answered once it is kept on disk
            keep = self.parts.keep(self.reassembler, source, dest, concat, body, data_coding,
                                   HeldPart(message_id, 0), self.reactor.seconds())
            if not keep:
                link.respond(pdu, 0)
                return
            self.pipeline.accept(Accepted(Inbound("sms", source, dest, "", None), message_id, self.system_id, None,
                                          done, route=False, writes=keep, message=False))
            return
        self.pipeline.accept(Accepted(Inbound("sms", source, dest, text, None), message_id, self.system_id,
                                      None, done, reply_channel=CHANNEL,
                                      writes=self.parts.release_whole(source, dest, concat)))

    def _expire_smsc_ids(self) -> None:
        """SMSC ids whose receipt window (``smpp.validity``) is over, checked every ``EXPIRE_EVERY_S``."""
        now = self.reactor.seconds()
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRE_EVERY_S
            with self.gateway.db() as session, session.begin():
                upstream_parts.expire(session, self.gateway.now())

    def _expire_parts(self) -> None:
        """Long MO whose missing parts never came: logged, their kept parts deleted."""
        expired = self.reassembler.expire()
        if not expired:
            return
        with self.gateway.db() as session, session.begin():
            for gone in expired:
                log.warn("upstream long MO from {sender} to {dest} (ref {ref}) incomplete: got parts {got} of "
                         "{total}", sender=gone.sender, dest=gone.recipient, ref=gone.ref, got=list(gone.received),
                         total=gone.total)
                self.parts.release(gone.sender, gone.recipient, gone.ref, gone.total)(session)

    def _receipt(self, link: UpstreamLink, pdu: Any) -> None:
        found = receipt_of(pdu)
        if found is None:
            link.respond(pdu, 0)
            return
        smsc_id, info = found
        self.stats["receipts"] += 1
        ref = self.matcher.receipt(smsc_id, info)
        if ref is not None:
            self._part_outcome(ref[0], ref[1], info)
        else:  # sent before a restart, or its response is still on the way
            self._lookups[smsc_id] = None
        # answered once the outcome is on disk, so a crash makes the SMSC send it again
        self._after_commit.append(lambda: link.respond(pdu, 0))
        self._schedule_record()

    def _part_outcome(self, mid: str, index: int, info: ReceiptInfo) -> None:
        outcome = self.outcomes.setdefault(mid, {})
        outcome[index] = info.ok
        total = self.part_counts.get(mid, 1)
        if len(outcome) >= total:
            ok = all(outcome.values())
            del self.outcomes[mid]
            self.part_counts.pop(mid, None)
            self._finish(mid, Outcome(ok, info.stat))
        else:
            self._partials.append((mid, index, Outcome(info.ok, info.stat)))
            self._schedule_record()

    def _finish(self, mid: str, outcome: Outcome) -> None:
        self._finished.append((mid, outcome.ok, None if outcome.ok else f"receipt stat:{outcome.stat}"))
        self.stats["delivered_rows" if outcome.ok else "failed_rows"] += 1
        self._schedule_record()

    def _from_database(self, session: Any, lookups: list[str]) -> None:
        """Receipts no part in memory matched (and none since): match them against the stored SMSC ids."""
        pending = {sid: info for sid in lookups if (info := self.matcher.take_early(sid)) is not None}
        if not pending:
            return
        done, unmatched = upstream_parts.apply_receipts(session, {sid: Outcome(i.ok, i.stat)
                                                                  for sid, i in pending.items()})
        for smsc_id in unmatched:  # its response may still come
            self.matcher.keep_early(smsc_id, pending[smsc_id])
        self.stats["unmatched_receipts"] += len(unmatched)
        for mid, outcome in done.items():
            self.outcomes.pop(mid, None)
            self.part_counts.pop(mid, None)
            self._finish(mid, outcome)

    # --- recording outcomes: one transaction per reactor turn -------------------------------------------

    def _schedule_record(self) -> None:
        if self._record_call is None or not self._record_call.active():
            self._record_call = self.reactor.callLater(0, self._record)

    def _record(self) -> None:
        self._record_call = None
        sent, self._sent = self._sent, []
        finished, self._finished = self._finished, []
        retries, self._retries = self._retries, []
        after, self._after_commit = self._after_commit, []
        sent_parts, self._sent_parts = self._sent_parts, []
        lookups, self._lookups = list(self._lookups), {}
        partials, self._partials = self._partials, []
        if sent or finished or retries or sent_parts or lookups or partials:
            gw = self.gateway
            with gw.db() as session, session.begin():
                upstream_parts.record_sent(session, sent_parts)
                gw.outbox.mark_sent(session, sent)
                for mid, index, outcome in partials:
                    upstream_parts.record_outcome(session, mid, index, outcome)
                self._from_database(session, lookups)
                finished.extend(self._finished)
                self._finished = []
                upstream_parts.forget(session, [mid for mid, _ok, _error in finished])
                by_outcome: dict[tuple[bool, str | None], list[str]] = {}
                for mid, ok, error in finished:
                    by_outcome.setdefault((ok, error), []).append(mid)
                for (ok, error), ids in by_outcome.items():
                    gw.outbox.mark_delivered(session, ids, ok=ok, error=error)
                for mid, error, permanent in retries:
                    state = gw.outbox.retry(session, mid, error, permanent=permanent)
                    log.warn("upstream message {mid} not sent ({error}); now {state}", mid=mid, error=error,
                             state=state)
        for callback in after:
            callback()


def parse_endpoint(value: str) -> tuple[str, int]:
    """``host:port`` -> ``(host, port)``; ValueError with what to write instead."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--upstream expects HOST:PORT (e.g. 127.0.0.1:2776), got {value!r}")
    return host, int(port)


def upstream_service(gateway: Any, args: Any) -> UpstreamClient | None:
    """The client for ``--upstream HOST:PORT`` with ``--upstream-account SYSTEM_ID:PASSWORD`` (and an
    optional ``--upstream-bind trx|pair``), or None when ``--upstream`` is not given."""
    if not args.upstream:
        return None
    host, port = parse_endpoint(args.upstream)
    system_id, sep, password = args.upstream_account.partition(":")
    if not sep or not system_id:
        raise ValueError(f"--upstream-account expects SYSTEM_ID:PASSWORD, got {args.upstream_account!r}")
    return UpstreamClient(gateway, host, port, system_id, password, bind=getattr(args, "upstream_bind", "trx"))
