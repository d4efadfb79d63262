"""A fake operator SMSC for testers, the ``--upstream`` client and partners' ESMEs.

Built on the same sans-IO :class:`~gateway.smpp.session.Session` (SMSC role) as the gateway's
server, with a thin Twisted adapter. Any bind is accepted (or only ``system_id``/``password``
when given). Every submit_sm is handled by a behaviour, one small class per fault, named by
what it does:

====================================  ===================  ================================================
class                                 ``--fault`` flag     magic destination
====================================  ===================  ================================================
:class:`HappySMSC`                    (default)            anything else
:class:`ThrottlingSMSC`               ``throttle``         ``19900000001``
:class:`QueueFullSMSC`                ``queue_full``       ``19900000002``
:class:`NoResponseSMSC`               ``no_response``      ``19900000003``
:class:`UnbindOnSubmitSMSC`           ``unbind_on_submit`` ``19900000004``
:class:`ReceiptBeforeResponseSMSC`    ``receipt_first``    ``19900000005``
:class:`UndeliveredReceiptSMSC`       ``undelivered``      ``19900000006``
:class:`SlowResponseSMSC`             ``slow``             ``19900000007``
====================================  ===================  ================================================

Transient faults (throttle, queue full, no response, unbind) hit the first attempt of each
message and let the retry through, so a correct client loses nothing. The simulator is the
receiver that counts "exactly once": a resend of a message it already accepted (same
gateway reference TLV, same part) gets the same message id back and no second receipt.

Message ids go out as decimal, hex, or ``mixed`` (hex in submit_sm_resp, zero-padded decimal
in the receipt), as real SMSCs do. MO traffic is injected from a CSV (source,dest,text) at a
rate, or by calling :meth:`SMSCSimulator.inject_mo`.
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from gateway.receipts import STATES, receipt_text
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.session import (
    SMSC,
    BindRequested,
    ConnectionShouldClose,
    RequestAborted,
    RequestReceived,
    ResponseReceived,
    ResponseTimeout,
    Session,
    State,
    Timers,
)
from gateway.smpp.text import parse_udh, split_message
from gateway.upstream import MESSAGE_REF_TAG

log = Logger(namespace="gateway.smsc_sim")

SIM_TIMERS = Timers(session_init=30, enquire_link=30, inactivity=600, response=30)


@dataclass
class Submitted:
    key: tuple
    number: int
    source: str
    dest: str
    submitted_at: float
    system_id: str
    resent: int = 0
    receipted: bool = False


# --- behaviours -----------------------------------------------------------------------------------------


class HappySMSC:
    """Accepts every submit_sm, answers at once, sends the configured receipt after its delay."""

    flag = "happy"
    magic = ""

    def on_submit(self, sim: SMSCSimulator, conn: SMSCProtocol, pdu: Any) -> None:
        sub, _ = sim.accept(conn, pdu)
        sim.respond(conn, pdu, sub)
        sim.receipt_later(sub, self.stat(sim))

    def stat(self, sim: SMSCSimulator) -> str:
        return sim.receipt_stat

    def first_attempt(self, sim: SMSCSimulator, pdu: Any) -> bool:
        """True the first time this message (part) is seen by this fault."""
        key = (self.flag, *sim.key_of(pdu))
        if key in sim.faulted:
            return False
        sim.faulted.add(key)
        return True


class _StatusOnFirstAttempt(HappySMSC):
    status = S.ESME_RTHROTTLED

    def on_submit(self, sim, conn, pdu) -> None:
        if self.first_attempt(sim, pdu):
            sim.stats[self.flag] += 1
            conn.respond(pdu, self.status)
            return
        super().on_submit(sim, conn, pdu)


class ThrottlingSMSC(_StatusOnFirstAttempt):
    """ESME_RTHROTTLED (0x58) on the first attempt of each message."""

    flag, magic, status = "throttle", "19900000001", S.ESME_RTHROTTLED


class QueueFullSMSC(_StatusOnFirstAttempt):
    """ESME_RMSGQFUL (0x14) on the first attempt of each message."""

    flag, magic, status = "queue_full", "19900000002", S.ESME_RMSGQFUL


class NoResponseSMSC(HappySMSC):
    """Accepts the first attempt but never answers it; the resend is answered with the same id."""

    flag, magic = "no_response", "19900000003"

    def on_submit(self, sim, conn, pdu) -> None:
        if self.first_attempt(sim, pdu):
            sim.stats[self.flag] += 1
            sim.accept(conn, pdu)  # and never answered: the client's response timer fires
            return
        super().on_submit(sim, conn, pdu)


class UnbindOnSubmitSMSC(HappySMSC):
    """Accepts the first attempt, then unbinds without answering it."""

    flag, magic = "unbind_on_submit", "19900000004"

    def on_submit(self, sim, conn, pdu) -> None:
        if self.first_attempt(sim, pdu):
            sim.stats[self.flag] += 1
            sim.accept(conn, pdu)
            conn.unbind()
            return
        super().on_submit(sim, conn, pdu)


class ReceiptBeforeResponseSMSC(HappySMSC):
    """Writes the delivery receipt before the submit_sm_resp."""

    flag, magic = "receipt_first", "19900000005"

    def on_submit(self, sim, conn, pdu) -> None:
        sub, _ = sim.accept(conn, pdu)
        sim.send_receipt(sub, self.stat(sim))
        sim.respond(conn, pdu, sub)


class UndeliveredReceiptSMSC(HappySMSC):
    """Accepts, then reports ``stat:UNDELIV``."""

    flag, magic = "undelivered", "19900000006"

    def stat(self, sim) -> str:
        return "UNDELIV"


class SlowResponseSMSC(HappySMSC):
    """Answers every submit_sm after ``slow_s`` seconds."""

    flag, magic = "slow", "19900000007"

    def on_submit(self, sim, conn, pdu) -> None:
        sub, _ = sim.accept(conn, pdu)
        sim.reactor.callLater(sim.slow_s, lambda: (sim.respond(conn, pdu, sub),
                                                   sim.receipt_later(sub, self.stat(sim))))


BEHAVIOURS: tuple[type[HappySMSC], ...] = (HappySMSC, ThrottlingSMSC, QueueFullSMSC, NoResponseSMSC,
                                           UnbindOnSubmitSMSC, ReceiptBeforeResponseSMSC,
                                           UndeliveredReceiptSMSC, SlowResponseSMSC)
FAULTS = {cls.flag: cls for cls in BEHAVIOURS}
MAGIC = {cls.magic: cls for cls in BEHAVIOURS if cls.magic}


# --- the Twisted adapter -------------------------------------------------------------------------------------


class SMSCProtocol(protocol.Protocol):
    def __init__(self, sim: SMSCSimulator):
        self.sim = sim
        self.session: Session | None = None
        self.system_id = ""
        self._timer = None
        self._callbacks: dict[int, Callable[[int | None], None]] = {}

    def connectionMade(self) -> None:
        self.session = Session(SMSC, self.sim.reactor.seconds, self.sim.timers, window=self.sim.window)
        self.sim.connections.add(self)
        self._reschedule()

    def dataReceived(self, data: bytes) -> None:
        self._handle(self.session.receive_data(data))
        self.flush()

    def connectionLost(self, reason: Any = None) -> None:
        self.sim.connections.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._handle(self.session.connection_lost())

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        deadline = self.session.next_deadline()
        self._timer = None if deadline is None else self.sim.reactor.callLater(
            max(0.0, deadline - self.sim.reactor.seconds()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._handle(self.session.tick())
        self.flush()

    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, BindRequested):
                self._bind(event.pdu)
            elif isinstance(event, RequestReceived):
                self._request(event.pdu)
            elif isinstance(event, ResponseReceived):
                callback = self._callbacks.pop(event.request.sequence_number, None)
                if callback is not None:
                    callback(event.response.command_status)
            elif isinstance(event, (ResponseTimeout, RequestAborted)):
                callback = self._callbacks.pop(event.request.sequence_number, None)
                if callback is not None:
                    callback(None)
            elif isinstance(event, ConnectionShouldClose) and self.transport is not None:
                self.flush()
                self.transport.loseConnection()

    def _bind(self, pdu) -> None:
        sim = self.sim
        system_id, password = pdu.params.get("system_id", ""), pdu.params.get("password", "")
        if sim.system_id and (system_id != sim.system_id or password != sim.password[:8]):
            self._handle(self.session.reject_bind(pdu, S.ESME_RINVPASWD))
            return
        self.system_id = system_id
        sim.stats["binds"] += 1
        self._handle(self.session.accept_bind(pdu, system_id="SMSCSIM"))
        sim.on_bind(self)

    def _request(self, pdu) -> None:
        if pdu.command in ("submit_sm", "data_sm"):
            self.sim.stats["submit_sm"] += 1
            self.sim.behaviour_for(pdu.params.get("destination_addr", "")).on_submit(self.sim, self, pdu)
        elif pdu.command not in ("outbind", "alert_notification"):
            self.respond(pdu, S.ESME_RINVCMDID)

    # --- used by the behaviours -------------------------------------------------------------------

    def respond(self, pdu, status: int, **params: Any) -> None:
        if self.session.state is not State.CLOSED:
            self._handle(self.session.respond(pdu, status, **params))
            self.flush()

    def unbind(self) -> None:
        if self.session.bound_kind is not None:
            self.session.unbind()
            self.flush()

    def can_deliver(self) -> bool:
        return self.session is not None and self.session.can_receive_mt and self.session.window_available() > 0

    def deliver(self, params: dict, on_response: Callable[[int | None], None]) -> bool:
        try:
            pdu = self.session.send_request("deliver_sm", **params)
        except Exception:  # window full or unbound: the caller tries another bind or later
            return False
        self._callbacks[pdu.sequence_number] = on_response
        self.flush()
        return True


class _Factory(protocol.ServerFactory):
    def __init__(self, sim: SMSCSimulator):
        self.sim = sim

    def buildProtocol(self, addr) -> SMSCProtocol:
        return SMSCProtocol(self.sim)


class SMSCSimulator:
    """The fake SMSC's shared state: accepted messages (deduplicated), receipts, MO injection, counters."""

    def __init__(self, reactor: Any, *, faults: list[str] = (), receipt_stat: str = "DELIVRD",
                 receipt_delay: float = 0.0, id_format: str = "dec", slow_s: float = 2.0, window: int = 100,
                 system_id: str = "", password: str = "", timers: Timers = SIM_TIMERS):
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        if receipt_stat not in STATES:
            raise ValueError(f"unknown receipt stat {receipt_stat!r}; known: {', '.join(STATES)}")
        if id_format not in ("dec", "hex", "mixed"):
            raise ValueError("id_format is dec, hex or mixed")
        self.reactor = reactor
        self.faults = [FAULTS[f]() for f in faults] or [HappySMSC()]
        self._fault_cycle = itertools.cycle(self.faults)
        self.magic = {number: cls() for number, cls in MAGIC.items()}
        self.receipt_stat, self.receipt_delay, self.id_format = receipt_stat, receipt_delay, id_format
        self.slow_s, self.window, self.timers = slow_s, window, timers
        self.system_id, self.password = system_id, password
        self.connections: set[SMSCProtocol] = set()
        self.accepted: dict[tuple, Submitted] = {}
        self.faulted: set[tuple] = set()
        self.mo_sent: list[tuple[str, str, str]] = []
        self.bind_listeners: list[Callable[[SMSCProtocol], None]] = []
        self._numbers = itertools.count(1_000_001)
        self._rr = 0
        self.stats: dict[str, int] = {k: 0 for k in ("binds", "submit_sm", "accepted", "duplicates", "receipts",
                                                     "mo", "mo_acked", *FAULTS)}

    # --- listening ---------------------------------------------------------------------------------

    def listen(self, port: int, interface: str = "127.0.0.1") -> Any:
        return self.reactor.listenTCP(port, _Factory(self), interface=interface)

    def on_bind(self, conn: SMSCProtocol) -> None:
        for listener in list(self.bind_listeners):
            listener(conn)

    def behaviour_for(self, dest: str) -> HappySMSC:
        return self.magic.get(dest) or next(self._fault_cycle)

    # --- accepting and answering -----------------------------------------------------------------

    @staticmethod
    def key_of(pdu) -> tuple:
        """(sender's reference, part number): how a resend of the same part is recognised."""
        ref = pdu.tlvs.get(MESSAGE_REF_TAG)
        part = 1
        if pdu.params.get("esm_class", 0) & 0x40:
            info, _ = parse_udh(pdu.message)
            part = info.seq if info is not None else 1
        if ref is None:
            ref = (pdu.params.get("source_addr", ""), pdu.params.get("destination_addr", ""), bytes(pdu.message))
        return (bytes(ref) if isinstance(ref, bytes | bytearray) else ref, part)

    def accept(self, conn: SMSCProtocol, pdu) -> tuple[Submitted, bool]:
        """Store the message; a resend returns the first acceptance and True."""
        key = self.key_of(pdu)
        found = self.accepted.get(key)
        if found is not None:
            found.resent += 1
            self.stats["duplicates"] += 1
            return found, True
        sub = Submitted(key, next(self._numbers), pdu.params.get("source_addr", ""),
                        pdu.params.get("destination_addr", ""), self.reactor.seconds(), conn.system_id)
        self.accepted[key] = sub
        self.stats["accepted"] += 1
        return sub, False

    def response_id(self, sub: Submitted) -> str:
        return f"{sub.number:X}" if self.id_format in ("hex", "mixed") else str(sub.number)

    def receipt_id(self, sub: Submitted) -> str:
        if self.id_format == "hex":
            return f"{sub.number:x}"
        return f"{sub.number:012d}" if self.id_format == "mixed" else str(sub.number)

    def respond(self, conn: SMSCProtocol, pdu, sub: Submitted) -> None:
        conn.respond(pdu, 0, message_id=self.response_id(sub))

    def receipt_later(self, sub: Submitted, stat: str) -> None:
        if self.receipt_delay > 0:
            self.reactor.callLater(self.receipt_delay, self.send_receipt, sub, stat)
        else:
            self.send_receipt(sub, stat)

    def send_receipt(self, sub: Submitted, stat: str) -> None:
        """One receipt per accepted part, to an RX/TRX bind of the account that sent it."""
        if sub.receipted:
            return
        rid = self.receipt_id(sub)
        text = receipt_text(rid, submitted_at=sub.submitted_at, done_at=self.reactor.seconds(), stat=stat,
                            err=0 if stat == "DELIVRD" else 1)
        params = {"source_addr": sub.dest, "destination_addr": sub.source, "esm_class": 0x04,
                  "short_message": text.encode("ascii"), "receipted_message_id": rid,
                  "message_state": STATES[stat]}
        if self._deliver(params, sub.system_id, lambda status: None):
            sub.receipted = True
            self.stats["receipts"] += 1
        else:  # no receiver bound right now: try again shortly
            self.reactor.callLater(0.2, self.send_receipt, sub, stat)

    def _deliver(self, params: dict, system_id: str | None, on_response: Callable[[int | None], None]) -> bool:
        receivers = [c for c in self.connections if c.can_deliver() and (system_id is None or
                                                                          c.system_id == system_id)]
        if not receivers:
            return False
        self._rr = (self._rr + 1) % len(receivers)
        return receivers[self._rr].deliver(params, on_response)

    # --- MO injection -------------------------------------------------------------------------------

    def inject_mo(self, source: str, dest: str, text: str) -> bool:
        """Send one MO (split with UDH when long) to a bound receiver; False when none can take it."""
        parts = split_message(text, ref=len(self.mo_sent) % 256)
        if not any(c.can_deliver() for c in self.connections):
            return False
        for part in parts:
            params = {"source_addr": source, "destination_addr": dest, "esm_class": part.esm_class,
                      "data_coding": part.data_coding, "short_message": part.short_message}
            self._deliver(params, None, self._mo_acked)
        self.mo_sent.append((source, dest, text))
        self.stats["mo"] += 1
        return True

    def _mo_acked(self, status: int | None) -> None:
        if status == 0:
            self.stats["mo_acked"] += 1

    def run_mo_csv(self, path: str, rate: float) -> None:
        """Inject the CSV's rows (source,dest,text) at ``rate`` per second once something is bound."""
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if len(r) >= 3 and not r[0].startswith("#")]
        interval = 1.0 / rate if rate > 0 else 0.0
        pending = iter(rows)

        def step() -> None:
            row = next(pending, None)
            if row is None:
                return
            if not self.inject_mo(row[0].strip(), row[1].strip(), row[2]):
                self.reactor.callLater(0.2, lambda: retry(row))
                return
            self.reactor.callLater(interval, step)

        def retry(row) -> None:
            if self.inject_mo(row[0].strip(), row[1].strip(), row[2]):
                self.reactor.callLater(interval, step)
            else:
                self.reactor.callLater(0.2, lambda: retry(row))

        self.reactor.callLater(0, step)

    def run_mo_rate(self, rate: float, text: str = "200", dest: str = "10086", senders: int = 100) -> None:
        """Inject ``text`` from the demo numbers 13800000001.. at ``rate`` per second while something is bound."""
        numbers = itertools.cycle(f"{13800000001 + i}" for i in range(senders))

        def step() -> None:
            self.inject_mo(next(numbers), dest, text)
            self.reactor.callLater(1.0 / rate, step)

        self.reactor.callLater(0, step)

    def summary(self) -> dict[str, Any]:
        return {**self.stats, "unique_messages": len({k[0] for k in self.accepted})}


def run(args: Any) -> int:
    """``run_gateway.py simulate smsc``: serve until SIGINT/SIGTERM, then print the counters as JSON."""
    from twisted.internet import reactor

    try:
        sim = SMSCSimulator(reactor, faults=args.fault, receipt_stat=args.receipt_stat,
                            receipt_delay=args.receipt_delay, id_format=getattr(args, "id_format", "dec"),
                            slow_s=getattr(args, "slow_s", 2.0), system_id=getattr(args, "system_id", "") or "",
                            password=getattr(args, "password", "") or "")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    port = sim.listen(args.port, args.host)
    if args.mo_csv:
        sim.run_mo_csv(args.mo_csv, args.mo_rate)
    elif args.mo_rate > 0:
        sim.run_mo_rate(args.mo_rate)
    print(json.dumps({"smsc": port.getHost().port, "faults": args.fault or ["happy"],
                      "magic": {cls.magic: cls.__name__ for cls in BEHAVIOURS if cls.magic}}), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: print(json.dumps(sim.summary()), flush=True))
    reactor.run()
    return 0
