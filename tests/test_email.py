"""Email round trip through real SMTP sockets: a command mail in (aiosmtpd), the router's reply out
through the outbox and smtplib, into the sink's folder; unknown senders, size and rate limits."""

from __future__ import annotations

import email.policy
import smtplib
import time
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from core.fixtures import parse_set, read_dir
from gateway.email import EmailError, EmailIn, EmailSender, MailSink, command_of, send_template_email
from offers.email_templates import SECTION as EMAIL_SECTION
from tests.harness import ROOT

DEMO = ROOT / "fixtures" / "demo"
ADDRESS = "u13800000026@example.com"


def _sections():
    from gateway.sections import all_sections

    sections = all_sections()
    names = {s.name for s in sections}
    return sections + [s for s in (EMAIL_SECTION,) if s.name not in names] + _ussd_if_missing(names)


def _ussd_if_missing(names):
    from offers.ussd_menu import SECTION

    return [] if SECTION.name in names else [SECTION]


def spin(pred, timeout: float = 20.0) -> None:
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        reactor.iterate(0.005)


@pytest.fixture(scope="module")
def mail(tmp_path_factory):
    from twisted.internet import reactor

    import gateway.app as app_module
    from gateway.app import Gateway

    workdir = tmp_path_factory.mktemp("mail")
    pool = reactor.getThreadPool()
    if not pool.started:  # the reactor is iterated, never run: start the pool deferToThread uses
        pool.start()
    original = app_module.all_sections
    app_module.all_sections = _sections
    try:
        gw = Gateway(reactor, f"sqlite:///{workdir / 'm.db'}")
        gw.load_fixtures_dir(str(DEMO))
    finally:
        app_module.all_sections = original
    sink = MailSink(workdir / "var" / "mail", "127.0.0.1", 0)
    sink_port = sink.start()
    sender = EmailSender(gw, "127.0.0.1", sink_port)
    sender.start()
    inbound = EmailIn(gw, "127.0.0.1", 0, max_bytes=20_000, rate_per_minute=6)
    inbound.listeners.append(sender.poke)
    inbound.start()
    yield gw, inbound, sink, sender
    inbound.stop()
    sender.stop()
    sink.stop()


def _send(port: int, sender: str, subject: str, body: str = "") -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, "10086@gateway.example", subject
    message.set_content(body or "hello")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


def _mails(sink: MailSink) -> list:
    return [BytesParser(policy=email.policy.default).parsebytes(p.read_bytes())
            for p in sorted(sink.folder.glob("*.eml"))]


def test_command_of_subject_or_first_line():
    assert command_of("Re: CXYE", "") == "CXYE"
    assert command_of("  ", "\n\n 200 \nthanks") == "200"
    assert command_of("", "") == ""


@pytest.mark.integration
def test_a_command_mail_gets_the_routers_reply_by_email(mail):
    gw, inbound, sink, _ = mail
    before = len(_mails(sink))
    _send(inbound.port_number(), ADDRESS, "CXYE")
    spin(lambda: len(_mails(sink)) > before)
    reply = _mails(sink)[-1]
    assert reply["To"] == ADDRESS and "CXYE" in reply["Subject"]
    text = reply.get_body(preferencelist=("plain",)).get_content()
    html = reply.get_body(preferencelist=("html",)).get_content()
    assert "余额" in text and "余额" in html and "<p>" in html


@pytest.mark.integration
def test_the_command_may_be_the_first_body_line(mail):
    gw, inbound, sink, _ = mail
    before = len(_mails(sink))
    _send(inbound.port_number(), "U13800000027@EXAMPLE.COM", "", "0000\n-- sent from my phone")
    spin(lambda: len(_mails(sink)) > before)
    assert _mails(sink)[-1]["To"] == "u13800000027@example.com"


@pytest.mark.integration
def test_unknown_sender_gets_nothing(mail):
    gw, inbound, sink, _ = mail
    before_files, before_unknown = len(_mails(sink)), inbound.stats["unknown_senders"]
    _send(inbound.port_number(), "stranger@example.org", "200")
    spin(lambda: inbound.stats["unknown_senders"] > before_unknown)
    from twisted.internet import reactor

    for _ in range(50):
        reactor.iterate(0.01)
    assert len(_mails(sink)) == before_files


@pytest.mark.integration
def test_size_limit(mail):
    _, inbound, _, _ = mail
    with pytest.raises(smtplib.SMTPException) as info:
        _send(inbound.port_number(), ADDRESS, "CXYE", "x" * 50_000)
    assert "552" in str(info.value) or getattr(info.value, "smtp_code", 0) == 552


@pytest.mark.integration
def test_rate_limit_per_sender(mail):
    _, inbound, _, _ = mail
    codes = []
    for _ in range(3):
        try:
            _send(inbound.port_number(), "u13800000028@example.com", "CXLL")
            codes.append(250)
        except smtplib.SMTPDataError as exc:
            codes.append(exc.smtp_code)
    assert 451 in codes and codes[0] == 250


@pytest.mark.integration
def test_agent_template_email_is_escaped_html(mail):
    gw, _, sink, _ = mail
    message_id = send_template_email(gw, "13800000029", "agent_followup",
                                     {"agent": "王<b>", "note": "<script>alert(1)</script>"})
    assert message_id

    def followups():
        return [m for m in _mails(sink) if "客服跟进" in m["Subject"]]

    spin(followups)
    sent = followups()[-1]
    html = sent.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" in sent.get_body(preferencelist=("plain",)).get_content()


@pytest.mark.integration
def test_agent_email_errors(mail):
    gw = mail[0]
    with pytest.raises(EmailError) as unknown:
        send_template_email(gw, "19999999999", "agent_followup", {"agent": "a", "note": "b"})
    assert unknown.value.code == 404
    with pytest.raises(EmailError) as missing:
        send_template_email(gw, "13800000029", "agent_followup", {"agent": "a"})
    assert missing.value.code == 400 and "note" in str(missing.value)
    with pytest.raises(EmailError) as template:
        send_template_email(gw, "13800000029", "nope", {})
    assert template.value.code == 404


@pytest.mark.integration
def test_relay_down_means_retry_not_loss(mail, tmp_path):
    from sqlalchemy import select

    from notifier.models import OutboxMessage

    gw, _, _, sender = mail
    sender.stop()
    dead = EmailSender(gw, "127.0.0.1", 1)
    try:
        message_id = send_template_email(gw, "13800000029", "agent_followup", {"agent": "a", "note": "b"})
        dead.start()
        spin(lambda: dead.stats["errors"] > 0)
    finally:
        dead.stop()
        sender.start()
    with gw.db() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.message_id == message_id))
    assert row.state == "queued" and "unreachable" in row.last_error


def test_email_template_fixture_checks_variables():
    from core.fixtures import parse_text
    from offers.email_templates import parse_templates

    text = (DEMO / "email_templates.yaml").read_text(encoding="utf-8").replace("{{ note }}", "{{ secret }}", 1)
    doc, _ = parse_text("email_templates.yaml", text)
    parsed, _ = parse_set(read_dir(DEMO), _sections())
    templates, problems = parse_templates(doc, parsed)
    assert templates is None and "secret" in problems[0].reason and problems[0].line
