"""Email: commands in over SMTP (aiosmtpd), replies and agent mail out through the outbox.

- :class:`EmailIn` runs aiosmtpd in its own thread (asyncio) and hands each accepted mail to
  the reactor with ``callFromThread``. A mail from a subscriber's registered address with a
  command in the subject (or, with no subject, the first body line) gets the router's reply by
  email: an outbox row of channel ``email`` with text and HTML (``email_templates.yaml``,
  ``reply``; the HTML autoescaped). An unknown sender gets nothing but a log line. Mails are
  limited in size (552 above :data:`MAX_MAIL_BYTES`) and per sender in rate (451).
- :class:`EmailSender` drains outbox channel ``email`` to the SMTP relay (``--smtp-out-port``)
  with smtplib in a worker thread; a failed attempt is retried with the outbox's backoff.
- :class:`MailSink` (``--smtp-sink``) is an SMTP server writing every mail to ``VAR/mail/``.
- :func:`send_template_email` queues an agent's template mail to a subscriber.
"""

from __future__ import annotations

import email.policy
import itertools
import smtplib
import time
from collections import OrderedDict
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import insert
from twisted.application import service
from twisted.internet import threads
from twisted.logger import Logger

from core.templates import TemplateRenderError
from gateway.smpp.ratelimit import TokenBucket
from notifier.models import MessageLog
from offers.queries import msisdn_by_email
from offers.router import Inbound
from offers.shelf import reply_vars

log = Logger(namespace="gateway.email")

CHANNEL = "email"
MAX_MAIL_BYTES = 64 * 1024
MAX_COMMAND = 160
RATE_PER_MINUTE = 10.0
MAX_SENDERS_TRACKED = 10_000
FROM_ADDRESS = "10086@gateway.example"
POLL_S = 1.0
SEND_BATCH = 20
SMTP_TIMEOUT_S = 10.0


class EmailError(Exception):
    """An email could not be queued; ``code`` is the HTTP-ish status a caller maps it to."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


class _Controller(Controller):
    """aiosmtpd's Controller, able to listen on port 0 (it connects to itself to check it is up)
    and to share its port with the other workers of a group (``reuse_port``)."""

    def __init__(self, *args: Any, reuse_port: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reuse_port = reuse_port

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, host=self.hostname, port=self.port,
                                       ssl=self.ssl_context, reuse_port=self.reuse_port or None)

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        if self.reuse_port:  # a self-test connection could land on another worker: build the server directly
            self.loop.call_soon_threadsafe(self._factory_invoker)
            return
        super()._trigger_server()


def command_of(subject: str, body: str) -> str:
    """The command of a mail: the subject without reply prefixes, else the first non-empty body line."""
    text = subject.strip()
    while text.lower().startswith(("re:", "fw:", "fwd:", "回复:", "回复：")):
        text = text.split(":", 1)[-1].split("：", 1)[-1].strip()
    if not text:
        text = next((line.strip() for line in body.splitlines() if line.strip()), "")
    return text[:MAX_COMMAND]


def _body_text(message: Any) -> str:
    part = message.get_body(preferencelist=("plain",)) if message.is_multipart() else message
    try:
        return part.get_content() if part is not None else ""
    except (LookupError, ValueError):
        return ""


# --- SMTP in ----------------------------------------------------------------------------------------

class _CommandHandler:
    """aiosmtpd handler (runs in the SMTP thread): checks the rate, parses, hands over to the reactor."""

    def __init__(self, owner: EmailIn):
        self.owner = owner
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _allowed(self, sender: str) -> bool:
        bucket = self.buckets.get(sender)
        if bucket is None:
            rate = self.owner.rate_per_minute / 60.0
            bucket = self.buckets[sender] = TokenBucket(rate=rate, burst=max(1.0, self.owner.rate_per_minute / 6),
                                                        now=time.monotonic)
            while len(self.buckets) > MAX_SENDERS_TRACKED:
                self.buckets.popitem(last=False)
        self.buckets.move_to_end(sender)
        return bucket.try_take()

    async def handle_DATA(self, server, session, envelope) -> str:
        sender = parseaddr(envelope.mail_from or "")[1].lower()
        if not sender:
            return "550 5.1.7 a sender address is required"
        if not self._allowed(sender):
            return "451 4.7.1 too many mails from this address, try again later"
        message = BytesParser(policy=email.policy.default).parsebytes(envelope.original_content or envelope.content)
        subject = str(message.get("subject", "") or "")
        command = command_of(subject, _body_text(message))
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        self.owner.reactor.callFromThread(self.owner.accept, sender, rcpt, command)
        return "250 2.0.0 OK: queued"


class _SmtpServer:
    """An aiosmtpd controller (its own thread and asyncio loop) with the start/stop the service uses."""

    controller: _Controller

    def start(self) -> int:
        self.controller.start()
        return self.controller.port

    def stop(self) -> None:
        self.controller.stop()

    def port_number(self) -> int:
        return self.controller.port


class EmailIn(_SmtpServer):
    """SMTP in (aiosmtpd in a thread); :meth:`accept` runs on the reactor."""

    def __init__(self, gateway: Any, host: str, port: int, *, max_bytes: int = MAX_MAIL_BYTES,
                 rate_per_minute: float = RATE_PER_MINUTE):
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.rate_per_minute = rate_per_minute
        self.controller = _Controller(_CommandHandler(self), hostname=host, port=port, data_size_limit=max_bytes,
                                      server_hostname="gateway.example", reuse_port=gateway.reuse_port)
        self.listeners: list[Any] = []  # called with the outbox row values of each reply queued
        self.stats = {"mails": 0, "unknown_senders": 0, "replies": 0}

    def accept(self, sender: str, rcpt: str, command: str) -> None:
        """One mail's command: route it for a known subscriber and queue the reply by email."""
        self.stats["mails"] += 1
        gw = self.gateway
        now = gw.now()
        with gw.db() as session, session.begin():
            msisdn = msisdn_by_email(session, sender)
            if msisdn is None:
                self.stats["unknown_senders"] += 1
                log.info("email command from unknown address {sender} ignored", sender=sender)
                return
            reply = gw.router.handle(session, Inbound(CHANNEL, msisdn, rcpt or FROM_ADDRESS, command), now)
            session.execute(insert(MessageLog), [{
                "direction": "MO", "channel": CHANNEL, "account": None, "source": sender, "dest": rcpt,
                "text": command, "message_id": None, "at": now, "action": reply.action}])
            if not reply.text:
                return
            row = _queue_template(gw, session, msisdn, sender, "reply", {"command": command, "reply": reply.text},
                                  kind="reply", fallback=(f"10086: {command}", reply.text))
        self.stats["replies"] += 1
        for listener in self.listeners:
            listener(row)


def _templates(gateway: Any) -> Any:
    return (gateway.snapshot.parsed.get("email.templates") if gateway.snapshot else None) or {}


def _facts(session: Any, msisdn: str, gateway: Any) -> dict[str, Any]:
    from offers.models import Subscriber

    sub = session.get(Subscriber, msisdn)
    facts = {"msisdn": msisdn, "brand": sub.brand if sub else ""}
    return reply_vars(facts, gateway.snapshot.offers, sub.name if sub else "")


def _queue_template(gw: Any, session: Any, msisdn: str, address: str, name: str, variables: dict[str, Any], *,
                    kind: str, fallback: tuple[str, str] | None = None) -> Any:
    template = _templates(gw).get(name)
    if template is None and fallback is None:
        raise EmailError(f"unknown email template {name!r}; known: {', '.join(sorted(_templates(gw)))}", 404)
    if template is None:
        subject, text, html = fallback[0], fallback[1], None
    else:
        missing = sorted(template.variables - set(variables))
        if missing:
            raise EmailError(f"template {name!r} needs variable(s) {', '.join(missing)}")
        try:
            subject, text, html = template.render(**{**variables, **_facts(session, msisdn, gw)})
        except TemplateRenderError as exc:
            raise EmailError(f"template {name!r} failed: {exc}", 422) from None
    return gw.outbox.enqueue(session, kind=kind, source=FROM_ADDRESS, dest=address, text=text, channel=CHANNEL,
                             extra={"subject": subject, "html": html, "msisdn": msisdn})


def send_template_email(gateway: Any, msisdn: str, template_name: str, variables: dict[str, Any]) -> str:
    """Queue an agent's template mail to a subscriber's registered address; returns the outbox message id.

    Raises :class:`EmailError` (code 404: unknown subscriber or template; 409: no email address;
    400: a missing variable; 422: the template failed).
    """
    from offers.models import Subscriber

    with gateway.db() as session, session.begin():
        sub = session.get(Subscriber, msisdn)
        if sub is None:
            raise EmailError(f"unknown subscriber {msisdn}", 404)
        if not sub.email:
            raise EmailError(f"subscriber {msisdn} has no email address", 409)
        row = _queue_template(gateway, session, msisdn, sub.email, template_name, dict(variables), kind="email")
        return row.message_id


# --- SMTP out -----------------------------------------------------------------------------------------

def build_message(source: str, dest: str, text: str, extra: dict | None) -> EmailMessage:
    extra = extra or {}
    message = EmailMessage()
    message["From"] = source if "@" in source else FROM_ADDRESS
    message["To"] = dest
    message["Subject"] = extra.get("subject") or "10086"
    message.set_content(text)
    if extra.get("html"):
        message.add_alternative(extra["html"], subtype="html")
    return message


def _smtp_send(host: str, port: int, messages: list[tuple[str, EmailMessage]]) -> list[tuple[str, str | None]]:
    """(message id, error or None) per mail; one SMTP connection for the batch. Runs in a worker thread."""
    results = []
    try:
        with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S) as smtp:
            for message_id, message in messages:
                try:
                    smtp.send_message(message)
                    results.append((message_id, None))
                except smtplib.SMTPException as exc:
                    results.append((message_id, f"SMTP refused: {exc}"[:200]))
    except (OSError, smtplib.SMTPException) as exc:
        done = {mid for mid, _ in results}
        results += [(mid, f"SMTP relay unreachable: {exc}"[:200]) for mid, _ in messages if mid not in done]
    return results


class EmailSender:
    """Drains outbox channel ``email`` to the relay at ``host:port`` (smtplib in a worker thread);
    ``port`` may be a callable (the sink's port, known once it listens)."""

    def __init__(self, gateway: Any, host: str, port: int | Callable[[], int], owner: str | None = None):
        self.gateway = gateway
        self.reactor = gateway.reactor
        self.host, self.port = host, port
        self.owner = owner or f"email-{id(self):x}"
        self.running = False
        self.busy = False
        self._poll_call = None
        self.stats = {"sent": 0, "errors": 0}

    def start(self) -> None:
        self.running = True
        self._poll()

    def port_number(self) -> int:
        return self.port() if callable(self.port) else self.port

    def stop(self) -> None:
        self.running = False
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()

    def poke(self, *_: Any) -> None:
        if self.running and not self.busy:
            self.reactor.callLater(0, self._send_due)

    def _poll(self) -> None:
        self.poke()
        if self.running:
            self._poll_call = self.reactor.callLater(POLL_S, self._poll)

    def _send_due(self) -> None:
        if self.busy or not self.running:
            return
        gw = self.gateway
        with gw.db() as session, session.begin():
            rows = gw.outbox.claim(session, channel=CHANNEL, limit=SEND_BATCH, owner=self.owner, lease_s=120.0)
            batch = [(r.message_id, build_message(r.source, r.dest, r.text, r.extra)) for r in rows]
        if not batch:
            return
        self.busy = True
        d = threads.deferToThread(_smtp_send, self.host, self.port_number(), batch)
        d.addCallback(self._record)
        d.addErrback(lambda f: log.failure("email batch failed", f))
        d.addBoth(self._idle)

    def _idle(self, _result: Any) -> None:
        self.busy = False
        self.poke()

    def _record(self, results: list[tuple[str, str | None]]) -> None:
        gw = self.gateway
        with gw.db() as session, session.begin():
            gw.outbox.mark_sent(session, [mid for mid, error in results if error is None])
            for mid, error in results:
                if error is not None:
                    state = gw.outbox.retry(session, mid, error)
                    log.warn("email {mid} not sent ({error}); now {state}", mid=mid, error=error, state=state)
        self.stats["sent"] += sum(1 for _, e in results if e is None)
        self.stats["errors"] += sum(1 for _, e in results if e is not None)


# --- the demo sink ---------------------------------------------------------------------------------------

class _SinkHandler:
    def __init__(self, folder: Path):
        self.folder = folder
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope) -> str:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self.counter):06d}.eml"
        # written aside, then renamed: whoever reads the folder never sees half a mail
        part = self.folder / f".{name}.part"
        part.write_bytes(envelope.original_content or envelope.content)
        part.replace(self.folder / name)
        return "250 2.0.0 OK: stored"


class MailSink(_SmtpServer):
    """``--smtp-sink``: an SMTP server that writes every mail it gets to ``folder`` (one .eml each)."""

    def __init__(self, folder: str | Path, host: str, port: int, max_bytes: int = 1024 * 1024,
                 reuse_port: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.controller = _Controller(_SinkHandler(self.folder), hostname=host, port=port,
                                      data_size_limit=max_bytes, reuse_port=reuse_port)


# --- serve wiring ---------------------------------------------------------------------------------------

class _Started(service.Service):
    """Runs ``start()`` / ``stop()`` of an object with the service tree; exposes its port."""

    def __init__(self, target: Any):
        self.target = target

    def startService(self) -> None:
        super().startService()
        self.target.start()

    def stopService(self):
        super().stopService()
        self.target.stop()

    def port_number(self) -> int:
        return self.target.port_number()


def email_services(gateway: Any, args: Any, top: Any) -> dict[str, Any]:
    """Mount SMTP in, the outbox email sender and (with ``--smtp-sink``) the sink; returns ``{"smtp_in": ...}``.

    With ``--smtp-sink`` and ``--smtp-out-port 0`` the sender sends to the port the sink got.
    """
    ports: dict[str, Any] = {}
    sink = None
    if args.smtp_sink:
        sink = MailSink(Path(args.var_dir) / "mail", args.host, args.smtp_out_port,
                        reuse_port=gateway.reuse_port)
        _Started(sink).setServiceParent(top)
    sender = EmailSender(gateway, args.host, sink.port_number if sink is not None else args.smtp_out_port)
    _Started(sender).setServiceParent(top)
    inbound = EmailIn(gateway, args.host, args.smtp_in_port)
    inbound.listeners.append(sender.poke)
    _Started(inbound).setServiceParent(top)
    ports["smtp_in"] = inbound
    gateway.email_sender = sender
    return ports
