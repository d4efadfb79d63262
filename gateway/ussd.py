"""USSD over SMPP: ``ussd_service_op`` / ``its_session_info``, menus from fixtures, the same router.

Three layers, the first two sans-IO (no sockets, no Twisted, time injected):

- :class:`UssdDialog`: the menu state machine of one caller. ``open()`` gives the first screen;
  ``answer(text)`` gives the next :class:`Screen`, or a :class:`Route` when the router must answer
  a command first (``200``, ``KT<code>``, ``Y``, ``CXYE`` ...), after which ``routed(...)`` gives
  the screen. Screens are paged to :data:`GSM7_SCREEN` / :data:`UCS2_SCREEN` characters.
- :class:`UssdSessions`: the session table keyed by (ESME account, MSISDN) with the idle
  timeout (default 180 s) on the injected clock.
- :class:`UssdHandler`: plugs into ``SMPPServerService.ussd``. It answers the submit_sm at once,
  runs router commands of one reactor turn in ONE transaction (with the MO/MT log rows), and sends
  each screen back as deliver_sm on the session it came from: ``ussd_service_op`` 2 (USSR request)
  for a screen that expects an answer, 17 (PSSR response) with the end bit for the last one.

``its_session_info`` (SMPP 3.4 5.3.2.43): session number in the high octet, the dialogue's
sequence number in bits 7..1, end-of-session in bit 0. The gateway echoes the caller's session
number (or assigns one) and numbers its own screens.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from core.templates import TemplateRenderError, render
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.constants import Tag, UssdServiceOp
from gateway.smpp.session import State
from gateway.smpp.text import TextError, choose_encoding, decode_message, gsm7_length, ucs2_length
from notifier.models import MessageLog
from notifier.outbox import new_message_id
from offers.catalog import normalize
from offers.router import Inbound
from offers.ussd_menu import Menu, MenuItem, UssdBook

__all__ = [
    "GSM7_SCREEN",
    "UCS2_SCREEN",
    "Route",
    "Screen",
    "UssdDialog",
    "UssdHandler",
    "UssdSessions",
    "classify",
    "fits_screen",
    "is_ussd",
    "pack_session_info",
    "paginate",
    "unpack_session_info",
]

log = Logger(namespace="gateway.ussd")

GSM7_SCREEN = 182
UCS2_SCREEN = 80
DEFAULT_TIMEOUT = 180.0
MAX_SESSIONS = 200_000
MAX_QUEUED_SCREENS = 1000  # per connection, waiting for window room
USSD_SERVICE_TYPE = "USSD"
MESSAGE_LOG = MessageLog.__table__
GSM_DC_GROUP = 0x0F  # GSM 03.38 DCS "language unspecified": GSM 7-bit, as handsets send USSD


# --- screens -----------------------------------------------------------------------------------------

def fits_screen(text: str) -> bool:
    """One USSD screen: 182 GSM 7-bit characters, or 80 UCS2 characters when any is outside GSM."""
    septets = gsm7_length(text)
    return septets <= GSM7_SCREEN if septets is not None else ucs2_length(text) <= UCS2_SCREEN


def _split_line(line: str, room: Callable[[str], bool]) -> list[str]:
    """Cut a line too long for one screen into pieces that fit (never mid-character)."""
    pieces, current = [], ""
    for ch in line:
        if current and not room(current + ch):
            pieces.append(current)
            current = ""
        current += ch
    if current:
        pieces.append(current)
    return pieces


def paginate(head: list[str], lines: list[str], more: str, tail: list[str] = ()) -> list[str]:
    """Screens of ``head`` (first screen only) + body lines + ``tail`` (last screen only); every screen
    but the last ends with the ``more`` hint. Each screen fits :func:`fits_screen`."""
    tail = list(tail)
    pending = list(lines)
    pages: list[str] = []
    while True:
        top = list(head) if not pages else []
        if not pending or fits_screen("\n".join([*top, *pending, *tail])):
            pages.append("\n".join([*top, *pending, *tail]))
            return pages
        page: list[str] = []
        while pending and fits_screen("\n".join([*top, *page, pending[0], more])):
            page.append(pending.pop(0))
        if not page and not top:  # one line longer than a screen: cut it
            pieces = _split_line(pending.pop(0), lambda s: fits_screen(s + "\n" + more))
            page, pending[0:0] = pieces[:1], pieces[1:]
        pages.append("\n".join([*top, *page, more]))


@dataclass(frozen=True)
class Screen:
    text: str
    end: bool  # the last screen: PSSR response with the end-of-session bit


@dataclass(frozen=True)
class Route:
    """The dialog needs the router's answer to ``command`` before it can show the next screen."""

    command: str
    purpose: str  # offers | order | confirm | final


@dataclass(frozen=True)
class OfferRow:
    rank: int
    code: str
    name: str
    price: float
    order: str


# --- the dialog (one caller's menu state machine) ------------------------------------------------------

@dataclass
class _View:
    kind: str  # menu | offers | confirm | text
    title: str = ""
    items: tuple[MenuItem, ...] = ()
    offers: tuple[OfferRow, ...] = ()
    text: str = ""
    page: int = 0
    pages: list[str] = field(default_factory=list)


class UssdDialog:
    """The menu state machine of one USSD session (sans-IO; the router is asked through :class:`Route`)."""

    def __init__(self, book: UssdBook, menu: Menu):
        self.book = book
        self.menu = menu
        self.stack: list[_View] = []
        self.waiting: Route | None = None

    def open(self) -> Screen:
        self.stack = [_View("menu", self.menu.title, self.menu.items)]
        return self._show()

    def answer(self, text: str) -> Screen | Route:
        if self.waiting is not None:
            return self._show(self.book.texts["invalid"])
        key = normalize(text)
        keys = self.book.keys
        view = self.stack[-1]
        if key == keys.home:
            del self.stack[1:]
            self.stack[0].page = 0
            return self._show()
        if key == keys.back:
            return self._back(view)
        if key == keys.more and view.page + 1 < len(view.pages):
            view.page += 1
            return self._show()
        return self._select(view, key)

    def _back(self, view: _View) -> Screen:
        if view.page > 0:
            view.page -= 1
        elif len(self.stack) > 1:
            self.stack.pop()
        return self._show()

    def _select(self, view: _View, key: str) -> Screen | Route:
        if view.kind == "menu":
            item = next((i for i in view.items if i.key == key), None)
            if item is None:
                return self._show(self.book.texts["invalid"])
            if item.action == "menu":
                self.stack.append(_View("menu", item.title, item.items))
                return self._show()
            return self._wait(Route("200", "offers") if item.action == "offers" else Route(item.command, "final"))
        if view.kind == "offers":
            offer = next((o for o in view.offers if str(o.rank) == key), None)
            if offer is None:
                return self._show(self.book.texts["invalid"])
            return self._wait(Route(f"KT{offer.code}", "order"))
        if view.kind == "confirm" and key in self.book.confirm_keys:
            return self._wait(Route("Y", "final"))
        return self._show(self.book.texts["invalid"])

    def _wait(self, route: Route) -> Route:
        self.waiting = route
        return route

    def routed(self, action: str, text: str, offers: list[OfferRow] | None = None) -> Screen:
        """The router answered the pending :class:`Route` with ``action`` and ``text``."""
        route, self.waiting = self.waiting, None
        texts = self.book.texts
        if action == "not_subscriber":
            return Screen(texts["not_subscriber"], True)
        if route is not None and route.purpose == "offers" and action == "shelf" and offers:
            self.stack.append(_View("offers", texts["offers_title"], offers=tuple(offers)))
            return self._show()
        if route is not None and route.purpose == "offers":
            return self._final(texts["offers_empty"])
        if route is not None and route.purpose == "order" and action == "confirm_prompt":
            self.stack.append(_View("confirm", text=text))
            return self._show()
        return self._final(text)

    def _final(self, text: str) -> Screen:
        view = _View("text", text=text)
        self.stack.append(view)
        return self._show()

    def _show(self, notice: str = "") -> Screen:
        view = self.stack[-1]
        view.pages = self._pages(view, notice)
        view.page = min(view.page, len(view.pages) - 1)
        last = view.page == len(view.pages) - 1
        return Screen(view.pages[view.page], view.kind == "text" and last)

    def _pages(self, view: _View, notice: str) -> list[str]:
        texts = self.book.texts
        head = [notice] if notice else []
        back = [texts["back"]] if len(self.stack) > 1 else []
        if view.kind == "menu":
            return paginate([*head, view.title], [f"{i.key}.{i.label}" for i in view.items], texts["more"], back)
        if view.kind == "offers":
            return paginate([*head, view.title], [self._offer_line(o) for o in view.offers], texts["more"], back)
        if view.kind == "confirm":
            return paginate(head, view.text.splitlines(), texts["more"], [texts["confirm_hint"]])
        return paginate(head, view.text.splitlines() or [""], texts["more"])

    def _offer_line(self, offer: OfferRow) -> str:
        try:
            return render(self.book.offer_line, rank=offer.rank, code=offer.code, name=offer.name,
                          price=offer.price, order=offer.order)
        except TemplateRenderError:
            return f"{offer.rank}.{offer.name}"


# --- the session table ------------------------------------------------------------------------------------

@dataclass
class UssdSession:
    key: tuple[str, str]  # (ESME account, MSISDN)
    dialog: UssdDialog
    number: int  # its_session_info session number, echoed on every screen
    service: str  # the USSD string / address the caller dialled (the screens' source_addr)
    conn: Any
    last_at: float
    sequence: int = 0

    def next_info(self, end: bool) -> int:
        self.sequence = (self.sequence + 1) & 0x7F
        return pack_session_info(self.number, self.sequence, end)


class UssdSessions:
    """Open USSD sessions, oldest activity first, each ending after ``timeout`` idle seconds."""

    def __init__(self, now: Callable[[], float], timeout: float = DEFAULT_TIMEOUT, max_sessions: int = MAX_SESSIONS):
        self.now = now
        self.timeout = timeout
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple[str, str], UssdSession] = OrderedDict()
        self._numbers = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, key: tuple[str, str], dialog: UssdDialog, service: str, conn: Any,
             number: int | None = None) -> UssdSession:
        """A new session (replacing the caller's previous one); the oldest goes when the table is full."""
        self._sessions.pop(key, None)
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        if number is None:
            self._numbers = (self._numbers + 1) & 0xFF
            number = self._numbers
        session = UssdSession(key, dialog, number, service, conn, self.now())
        self._sessions[key] = session
        return session

    def get(self, key: tuple[str, str]) -> UssdSession | None:
        """The live session of this caller (touching it), or None when there is none or it timed out."""
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.now()
        if now - session.last_at >= self.timeout:
            del self._sessions[key]
            return None
        session.last_at = now
        self._sessions.move_to_end(key)
        return session

    def close(self, key: tuple[str, str]) -> None:
        self._sessions.pop(key, None)

    def expire(self) -> list[UssdSession]:
        """Remove and return every session idle for ``timeout`` seconds or more."""
        now = self.now()
        out = []
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if now - session.last_at < self.timeout:
                break
            del self._sessions[key]
            out.append(session)
        return out

    def next_deadline(self) -> float | None:
        if not self._sessions:
            return None
        return next(iter(self._sessions.values())).last_at + self.timeout


# --- PDU-level helpers ---------------------------------------------------------------------------------------

def pack_session_info(number: int, sequence: int, end: bool) -> int:
    return ((number & 0xFF) << 8) | ((sequence & 0x7F) << 1) | int(end)


def unpack_session_info(value: int) -> tuple[int, int, bool]:
    """``(session number, sequence, end-of-session)``."""
    return (value >> 8) & 0xFF, (value >> 1) & 0x7F, bool(value & 1)


def is_ussd(pdu: Any) -> bool:
    """A submit_sm / data_sm that belongs to USSD: the ussd_service_op TLV, or service_type ``USSD``."""
    return Tag.ussd_service_op in pdu.tlvs or pdu.params.get("service_type", "").upper() == USSD_SERVICE_TYPE


def classify(pdu: Any, has_session: bool) -> str:
    """What the handset side asks: ``begin`` (PSSR/PSSD indication), ``continue`` (USSR confirm),
    ``ack`` (USSN confirm) or ``invalid`` (an operation only the network side sends)."""
    op = pdu.tlvs.get(Tag.ussd_service_op)
    if op is None:  # the service_type "USSD" variant: a new dial, or the answer to the open screen
        text = pdu.message.decode("latin-1", "replace").strip()
        return "continue" if has_session and not text.startswith("*") else "begin"
    if isinstance(op, bytes):
        op = int.from_bytes(op, "big")
    if op in (UssdServiceOp.PSSR_INDICATION, UssdServiceOp.PSSD_INDICATION):
        return "begin"
    if op == UssdServiceOp.USSR_CONFIRM:
        return "continue"
    if op == UssdServiceOp.USSN_CONFIRM:
        return "ack"
    return "invalid"


def screen_params(session: UssdSession, screen: Screen, msisdn: str) -> dict[str, Any]:
    """deliver_sm parameters of one screen."""
    data_coding, payload = choose_encoding(screen.text)
    op = UssdServiceOp.PSSR_RESPONSE if screen.end else UssdServiceOp.USSR_REQUEST
    return {"service_type": USSD_SERVICE_TYPE, "source_addr_ton": 0, "source_addr_npi": 1,
            "source_addr": session.service[:20], "dest_addr_ton": 1, "dest_addr_npi": 1,
            "destination_addr": msisdn, "esm_class": 0, "data_coding": data_coding, "short_message": payload,
            "ussd_service_op": int(op), "its_session_info": session.next_info(screen.end)}


def _text_of(pdu: Any) -> str:
    data_coding = pdu.params.get("data_coding", 0)
    return decode_message(0 if data_coding == GSM_DC_GROUP else data_coding, pdu.message).strip()


# --- the adapter plugged into the SMPP server ----------------------------------------------------------------

@dataclass
class _Job:
    session: UssdSession
    route: Route
    msisdn: str


class UssdHandler:
    """``SMPPServerService.ussd``: ``handle(conn, pdu)`` for every submit_sm / data_sm carrying USSD."""

    def __init__(self, gateway: Any, registry: Any = None, *, timeout: float = DEFAULT_TIMEOUT,
                 book: Callable[[], UssdBook | None] | None = None):
        self.gateway = gateway
        self.registry = registry
        self.sessions = UssdSessions(gateway.now, timeout)
        self._book = book or (lambda: (gateway.snapshot.parsed.get("ussd.menus") if gateway.snapshot else None))
        self._jobs: list[_Job] = []
        self._logs: list[dict[str, Any]] = []
        self._flush_call = None
        self._expiry_call = None
        self._queued: dict[int, deque] = {}
        self.stats = {"sessions": 0, "screens": 0, "routed": 0, "timeouts": 0, "errors": 0}

    # --- entry point ---------------------------------------------------------------------------------------

    def handle(self, conn: Any, pdu: Any) -> None:
        msisdn = pdu.params.get("source_addr", "")
        key = (conn.system_id or "", msisdn)
        kind = classify(pdu, key in self.sessions._sessions)
        if kind == "invalid":
            conn.respond_later(pdu, S.ESME_RINVOPTPARAMVAL)
            return
        try:
            text = _text_of(pdu)
        except TextError as exc:
            conn.respond_later(pdu, exc.command_status or S.ESME_RINVPARLEN)
            return
        message_id = new_message_id()
        conn.respond_later(pdu, 0, message_id=message_id)  # the answer to the PDU first, then the screen
        if kind == "ack":
            return
        dest = pdu.params.get("destination_addr", "")
        self._log("MO", conn.system_id, msisdn, dest, text, message_id)
        if kind == "begin":
            self._begin(conn, pdu, key, text, dest)
        else:
            self._continue(conn, key, text)

    def _begin(self, conn: Any, pdu: Any, key: tuple[str, str], text: str, dest: str) -> None:
        book = self._book()
        menu = (book.menu_for(text) or book.menu_for(dest)) if book is not None else None
        info = pdu.tlvs.get(Tag.its_session_info)
        number = unpack_session_info(info)[0] if isinstance(info, int) else None
        service = dest or text
        if menu is None:
            session = self.sessions.open(key, None, service, conn, number)
            unknown = book.texts["unknown_code"] if book is not None else "USSD service unavailable"
            self._send(session, Screen(unknown, True))
            return
        session = self.sessions.open(key, UssdDialog(book, menu), service, conn, number)
        self.stats["sessions"] += 1
        self._send(session, session.dialog.open())
        self._arm_expiry()

    def _continue(self, conn: Any, key: tuple[str, str], text: str) -> None:
        session = self.sessions.get(key)
        if session is None or session.dialog is None:
            book = self._book()
            gone = self.sessions.open(key, None, "", conn)
            self._send(gone, Screen(book.texts["timeout"] if book else "session ended", True))
            return
        session.conn = conn
        step = session.dialog.answer(text)
        if isinstance(step, Route):
            self._jobs.append(_Job(session, step, key[1]))
            self._schedule_flush()
        else:
            self._send(session, step)

    # --- router commands: one transaction per reactor turn -----------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.gateway.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Run the router commands and write the log rows queued in this reactor turn, in one transaction."""
        self._flush_call = None
        jobs, self._jobs = self._jobs, []
        logs, self._logs = self._logs, []
        if not jobs and not logs:
            return
        gw = self.gateway
        now = gw.now()
        results = []
        try:
            with gw.db() as db, db.begin():
                for job in jobs:
                    inbound = Inbound("ussd", job.msisdn, job.session.service, job.route.command, job.session.key[0])
                    reply = gw.router.handle(db, inbound, now)
                    results.append((job, reply))
                    logs.append(_log_row("MO", job.session.key[0], job.msisdn, job.session.service,
                                         job.route.command, None, now, reply.action))
                if logs:  # Core executemany: the ORM's bulk path costs more than the routing itself
                    db.execute(MESSAGE_LOG.insert(), logs)
        except Exception:
            log.failure("USSD batch of {n} commands failed", n=len(jobs))
            self.stats["errors"] += 1
            for job in jobs:
                self._send(job.session, Screen("system busy, please try again later", True))
            return
        self.stats["routed"] += len(results)
        for job, reply in results:
            offers = self._offers(reply) if job.route.purpose == "offers" else None
            self._send(job.session, job.session.dialog.routed(reply.action, reply.text, offers))

    def _offers(self, reply: Any) -> list[OfferRow]:
        catalog = self.gateway.snapshot.offers
        rows = []
        for rank, code in enumerate(reply.details.get("offers") or [], 1):
            offer = catalog.offer(code)
            if offer is not None:
                rows.append(OfferRow(rank, offer.code, offer.name, offer.price, offer.order))
        return rows

    # --- sending screens ---------------------------------------------------------------------------

    def _send(self, session: UssdSession, screen: Screen) -> None:
        msisdn = session.key[1]
        if screen.end:
            self.sessions.close(session.key)
        params = screen_params(session, screen, msisdn)
        self._log("MT", session.key[0], session.service, msisdn, screen.text, None)
        self.stats["screens"] += 1
        conn = self._receiver(session)
        if conn is None:
            return
        if conn.send_capacity() > 0 and not self._queued.get(id(conn)):
            conn.send_deliver_sm(params, lambda status, c=conn: self._drain(c))
            return
        queue = self._queued.setdefault(id(conn), deque())
        if len(queue) < MAX_QUEUED_SCREENS:
            queue.append(params)

    def _receiver(self, session: UssdSession) -> Any:
        """The caller's own session when it receives deliver_sm (RX/TRX), else another bind of the account."""
        conn = session.conn
        if conn.session is not None and conn.session.can_receive_mt:
            return conn
        if self.registry is not None:
            return self.registry.next_receiver(session.key[0])
        return None

    def _drain(self, conn: Any) -> None:
        queue = self._queued.get(id(conn))
        if not queue:
            return
        if conn.session is None or conn.session.state is State.CLOSED:
            self._queued.pop(id(conn), None)
            return
        while queue and conn.send_capacity() > 0:
            conn.send_deliver_sm(queue.popleft(), lambda status, c=conn: self._drain(c))
        if not queue:
            self._queued.pop(id(conn), None)

    # --- idle timeout ---------------------------------------------------------------------------------

    def _arm_expiry(self) -> None:
        deadline = self.sessions.next_deadline()
        if deadline is None:
            return
        call = self._expiry_call
        if call is not None and call.active():
            if call.getTime() <= deadline:
                return
            call.cancel()
        self._expiry_call = self.gateway.reactor.callLater(max(0.0, deadline - self.gateway.now()), self._expire)

    def _expire(self) -> None:
        self._expiry_call = None
        for session in self.sessions.expire():
            if session.dialog is None:
                continue
            self.stats["timeouts"] += 1
            self._send(session, Screen(session.dialog.book.texts["timeout"], True))
        self._arm_expiry()

    # --- message log --------------------------------------------------------------------------------

    def _log(self, direction: str, account: str | None, source: str, dest: str, text: str,
             message_id: str | None) -> None:
        self._logs.append(_log_row(direction, account, source, dest, text, message_id, self.gateway.now(), None))
        self._schedule_flush()


def _log_row(direction: str, account: str | None, source: str, dest: str, text: str, message_id: str | None,
             at: float, action: str | None) -> dict[str, Any]:
    return {"direction": direction, "channel": "ussd", "account": account, "source": source, "dest": dest,
            "text": text[:2000], "message_id": message_id, "at": at, "action": action}


def install_ussd(gateway: Any, smpp: Any) -> UssdHandler:
    """Plug a USSD handler into the SMPP server (``SMPPServerService.ussd``); returns it."""
    handler = UssdHandler(gateway, smpp.registry)
    smpp.ussd = handler
    return handler
