"""USSD: screens and paging, the menu dialog, the session table with its idle timeout (task.Clock),
the handler against the real router and database, and end to end against the running gateway."""

from __future__ import annotations

import pytest
from twisted.internet import task

from core.fixtures import parse_set, read_dir
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.constants import Tag, UssdServiceOp
from gateway.smpp.pdu import PDU, Framer, decode, encode
from gateway.smpp.session import State
from gateway.smpp.text import decode_message
from gateway.ussd import (
    GSM7_SCREEN,
    UCS2_SCREEN,
    OfferRow,
    Route,
    Screen,
    UssdDialog,
    UssdHandler,
    UssdSessions,
    classify,
    fits_screen,
    is_ussd,
    pack_session_info,
    paginate,
    unpack_session_info,
)
from offers.ussd_menu import SECTION, parse_menus
from tests.harness import ROOT

DEMO = ROOT / "fixtures" / "demo"
SUB = "13800000001"


def _sections():
    from gateway.sections import all_sections

    sections = all_sections()
    return sections if any(s.name == SECTION.name for s in sections) else [*sections, SECTION]


@pytest.fixture(scope="module")
def book():
    parsed, problems = parse_set(read_dir(DEMO), _sections())
    assert not problems, problems
    return parsed["ussd.menus"]


# --- screens ------------------------------------------------------------------------------------------

def test_screen_limits_are_182_gsm7_or_80_ucs2():
    assert fits_screen("a" * GSM7_SCREEN) and not fits_screen("a" * (GSM7_SCREEN + 1))
    assert fits_screen("优" * UCS2_SCREEN) and not fits_screen("优" * (UCS2_SCREEN + 1))
    assert not fits_screen("{" * 92)  # GSM extension characters take two septets


@pytest.mark.parametrize("n", [1, 5, 20, 60])
def test_paginate_keeps_every_line_and_every_screen_fits(n):
    lines = [f"{i}.流量包{i}号 {i * 10}元" for i in range(1, n + 1)]
    pages = paginate(["为您推荐:"], lines, "98.更多", ["0.返回"])
    assert all(fits_screen(p) for p in pages)
    body = [line for p in pages for line in p.split("\n") if line not in ("为您推荐:", "98.更多", "0.返回")]
    assert body == lines
    assert all(p.endswith("98.更多") for p in pages[:-1]) and pages[-1].endswith("0.返回")


def test_paginate_cuts_a_line_longer_than_a_screen():
    pages = paginate([], ["很" * 300], "98.更多")
    assert len(pages) >= 4 and all(fits_screen(p) for p in pages)
    assert "".join(p.replace("\n98.更多", "").replace("\n", "") for p in pages) == "很" * 300


# --- the dialog -----------------------------------------------------------------------------------------

def test_menu_navigation_digits_back_home(book):
    dialog = UssdDialog(book, book.menu_for("*200#"))
    first = dialog.open()
    assert not first.end and "1.优惠推荐" in first.text
    sub = dialog.answer("4")
    assert "1.流量查询" in sub.text and "0.返回" in sub.text
    assert dialog.answer("0").text == first.text
    dialog.answer("4")
    assert dialog.answer("00").text == first.text
    wrong = dialog.answer("7")
    assert wrong.text.startswith(book.texts["invalid"]) and not wrong.end


def test_offers_order_keeps_the_second_confirmation(book):
    dialog = UssdDialog(book, book.menu_for("200"))
    dialog.open()
    assert dialog.answer("1") == Route("200", "offers")
    offers = [OfferRow(i, f"LL{i}", f"流量包{i}", 10.0 * i, f"KTLL{i}") for i in range(1, 6)]
    shown = dialog.routed("shelf", "ignored", offers)
    assert "1.流量包1 10元" in shown.text and not shown.end
    assert dialog.answer("2") == Route("KTLL2", "order")
    prompt = dialog.routed("confirm_prompt", "确认订购流量包2? 回复Y确认")
    assert book.texts["confirm_hint"] in prompt.text and not prompt.end
    assert dialog.answer("1") == Route("Y", "final")
    done = dialog.routed("subscribed", "您已成功订购流量包2")
    assert done == Screen("您已成功订购流量包2", True)


def test_back_from_confirmation_returns_to_the_offers(book):
    dialog = UssdDialog(book, book.menu_for("*200#"))
    dialog.open()
    dialog.answer("1")
    offers_screen = dialog.routed("shelf", "", [OfferRow(1, "A", "甲", 1, "KTA")])
    dialog.answer("1")
    dialog.routed("confirm_prompt", "确认?")
    assert dialog.answer("0").text == offers_screen.text


def test_a_long_final_reply_is_paged_and_only_the_last_page_ends(book):
    dialog = UssdDialog(book, book.menu_for("*200#"))
    dialog.open()
    assert dialog.answer("3") == Route("0000", "final")
    first = dialog.routed("list", "\n".join(f"{i}.已订购业务{i} 30元,取消回QXLL{i}" for i in range(1, 9)))
    assert not first.end and first.text.endswith(book.texts["more"])
    screens = [first]
    while not screens[-1].end:
        screens.append(dialog.answer(book.keys.more))
    assert len(screens) > 1 and all(fits_screen(s.text) for s in screens)


def test_not_subscriber_and_empty_shelf_end_the_session(book):
    dialog = UssdDialog(book, book.menu_for("*200#"))
    dialog.open()
    dialog.answer("1")
    assert dialog.routed("not_subscriber", "x") == Screen(book.texts["not_subscriber"], True)
    dialog.open()
    dialog.answer("1")
    assert dialog.routed("shelf_empty", "x") == Screen(book.texts["offers_empty"], True)


# --- session table and its timeout ----------------------------------------------------------------------------

def test_session_table_times_out_after_180_idle_seconds(book):
    clock = task.Clock()
    table = UssdSessions(clock.seconds)
    menu = book.menu_for("*200#")
    a = table.open(("tester", "1"), UssdDialog(book, menu), "*200#", None)
    clock.advance(100)
    table.open(("tester", "2"), UssdDialog(book, menu), "*200#", None)
    assert table.next_deadline() == 180
    clock.advance(79)
    assert table.get(("tester", "1")) is a  # activity restarts its idle time
    assert table.expire() == []
    clock.advance(101)
    assert [s.key for s in table.expire()] == [("tester", "2")]
    clock.advance(80)
    assert table.get(("tester", "1")) is None and len(table) == 0


def test_session_numbers_are_assigned_or_echoed(book):
    table = UssdSessions(task.Clock().seconds)
    menu = book.menu_for("*200#")
    assert table.open(("t", "1"), UssdDialog(book, menu), "*200#", None, number=77).number == 77
    s = table.open(("t", "2"), UssdDialog(book, menu), "*200#", None)
    info = s.next_info(end=False)
    assert unpack_session_info(info) == (s.number, 1, False)
    assert unpack_session_info(s.next_info(end=True)) == (s.number, 2, True)
    assert pack_session_info(0x12, 0x7F, True) == 0x12FF


def test_table_is_bounded():
    table = UssdSessions(task.Clock().seconds, max_sessions=3)
    for i in range(10):
        table.open(("t", str(i)), None, "", None)
    assert len(table) == 3


# --- PDU classification --------------------------------------------------------------------------------

def _submit(text: str, op: int | None = UssdServiceOp.PSSR_INDICATION, seq: int = 1, **tlvs) -> PDU:
    extra = {"ussd_service_op": op} if op is not None else {}
    return PDU.make("submit_sm", seq, service_type="USSD", source_addr=SUB, destination_addr="*200#",
                    short_message=text.encode(), **extra, **tlvs)


def test_classify_operations():
    assert classify(_submit("*200#"), False) == "begin"
    assert classify(_submit("*200#", UssdServiceOp.PSSD_INDICATION), False) == "begin"
    assert classify(_submit("1", UssdServiceOp.USSR_CONFIRM), True) == "continue"
    assert classify(_submit("", UssdServiceOp.USSN_CONFIRM), True) == "ack"
    assert classify(_submit("", UssdServiceOp.PSSR_RESPONSE), True) == "invalid"
    assert classify(_submit("1", None), True) == "continue"  # service_type USSD variant
    assert classify(_submit("*200#", None), True) == "begin"
    assert is_ussd(_submit("1", None)) and is_ussd(_submit("1"))
    assert not is_ussd(PDU.make("submit_sm", 1, short_message=b"200"))


# --- the handler with the real router, a fake connection and task.Clock ----------------------------------------

class FakeSession:
    state = State.BOUND_TRX
    can_receive_mt = True


class FakeConn:
    """What the handler uses of SMPPServerProtocol, recording what it would put on the wire."""

    def __init__(self, window: int = 10):
        self.system_id = "tester"
        self.session = FakeSession()
        self.window = window
        self.responses: list[tuple[int, int, dict]] = []
        self.delivered: list[dict] = []
        self.waiting: list = []

    def respond_later(self, pdu, status, **params):
        self.responses.append((pdu.sequence_number, status, params))

    def send_capacity(self) -> int:
        return self.window - len(self.waiting)

    def send_deliver_sm(self, params, on_response):
        # encode + decode: the screen must be a valid deliver_sm on the wire
        pdu = decode(encode(PDU.make("deliver_sm", 1, **params)))
        self.delivered.append({"text": decode_message(pdu.params["data_coding"], pdu.message),
                               "op": pdu.tlvs[Tag.ussd_service_op], "info": pdu.tlvs[Tag.its_session_info],
                               "to": pdu.params["destination_addr"], "from": pdu.params["source_addr"]})
        self.waiting.append(on_response)

    def ack_all(self):
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback(0)


@pytest.fixture(scope="module")
def live(tmp_path_factory, book):
    import gateway.app as app_module
    from gateway.app import Gateway

    clock = task.Clock()
    clock.advance(1_790_000_000)
    original = app_module.all_sections
    app_module.all_sections = _sections
    try:
        gw = Gateway(clock, f"sqlite:///{tmp_path_factory.mktemp('ussd') / 'u.db'}")
        gw.load_fixtures_dir(str(DEMO))
    finally:
        app_module.all_sections = original
    return gw, clock


def _handler(live, timeout: float = 180.0):
    gw, clock = live
    return UssdHandler(gw, timeout=timeout), clock


def _run(handler, conn, clock, pdu):
    handler.handle(conn, pdu)
    clock.advance(0)
    conn.ack_all()
    return conn.delivered[-1]


def test_handler_answers_submit_first_then_the_menu_with_session_info(live):
    handler, clock = _handler(live)
    conn = FakeConn()
    info = pack_session_info(0x2A, 1, False)
    screen = _run(handler, conn, clock, _submit("*200#", its_session_info=info))
    assert conn.responses[0][1] == 0 and conn.responses[0][2]["message_id"]
    assert screen["op"] == UssdServiceOp.USSR_REQUEST and "1.优惠推荐" in screen["text"]
    assert screen["to"] == SUB and unpack_session_info(screen["info"])[0] == 0x2A
    assert not unpack_session_info(screen["info"])[2]


def test_handler_balance_is_the_routers_reply_and_ends_the_session(live):
    handler, clock = _handler(live)
    conn = FakeConn()
    _run(handler, conn, clock, _submit("*200#"))
    final = _run(handler, conn, clock, _submit("2", UssdServiceOp.USSR_CONFIRM, seq=2))
    assert final["op"] == UssdServiceOp.PSSR_RESPONSE and unpack_session_info(final["info"])[2]
    assert "余额" in final["text"] and len(handler.sessions) == 0


def test_handler_orders_with_confirmation_through_the_router(live):
    from sqlalchemy import select

    from offers.models import Subscription

    gw, _ = live
    handler, clock = _handler(live)
    conn = FakeConn()
    sub = "13800000003"

    def send(text, op=UssdServiceOp.USSR_CONFIRM):
        pdu = PDU.make("submit_sm", 1, service_type="USSD", source_addr=sub, destination_addr="*200#",
                       short_message=text.encode(), ussd_service_op=op)
        return _run(handler, conn, clock, pdu)

    send("*200#", UssdServiceOp.PSSR_INDICATION)
    offers = send("1")
    assert offers["op"] == UssdServiceOp.USSR_REQUEST and "1." in offers["text"]
    prompt = send("1")
    assert "1.确认办理" in prompt["text"]
    done = send("1")
    assert done["op"] == UssdServiceOp.PSSR_RESPONSE
    with gw.db() as db:
        active = db.scalars(select(Subscription.offer_code).where(Subscription.msisdn == sub,
                                                                  Subscription.channel == "ussd")).all()
    assert len(active) == 1


def test_handler_times_out_idle_sessions_with_a_last_screen(live):
    handler, clock = _handler(live, timeout=180)
    conn = FakeConn()
    _run(handler, conn, clock, _submit("*200#"))
    clock.advance(179)
    assert len(handler.sessions) == 1
    clock.advance(2)
    conn.ack_all()
    last = conn.delivered[-1]
    assert last["op"] == UssdServiceOp.PSSR_RESPONSE and last["text"] == handler._book().texts["timeout"]
    late = _run(handler, conn, clock, _submit("1", UssdServiceOp.USSR_CONFIRM))
    assert late["op"] == UssdServiceOp.PSSR_RESPONSE


def test_handler_refuses_network_side_operations(live):
    handler, clock = _handler(live)
    conn = FakeConn()
    handler.handle(conn, _submit("x", UssdServiceOp.USSR_REQUEST))
    assert conn.responses == [(1, S.ESME_RINVOPTPARAMVAL, {})] and not conn.delivered


def test_handler_waits_for_window_room(live):
    handler, clock = _handler(live)
    conn = FakeConn(window=1)
    for i in range(5):
        pdu = PDU.make("submit_sm", i + 1, service_type="USSD", source_addr=f"1380000000{i}",
                       destination_addr="*200#", short_message=b"*200#", ussd_service_op=1)
        handler.handle(conn, pdu)
    assert len(conn.delivered) == 1
    for _ in range(4):
        conn.ack_all()
    assert len(conn.delivered) == 5


def test_handler_logs_mo_and_mt(live):
    from sqlalchemy import func, select

    from notifier.models import MessageLog

    gw, _ = live
    handler, clock = _handler(live)
    clock.advance(0)  # earlier tests' handlers flush their own log rows first
    with gw.db() as db:
        before = db.scalar(select(func.count()).where(MessageLog.channel == "ussd"))
    _run(handler, FakeConn(), clock, _submit("*200#"))
    clock.advance(0)
    with gw.db() as db:
        after = db.scalar(select(func.count()).where(MessageLog.channel == "ussd"))
    assert after - before == 2


def test_menu_fixture_problems_name_file_and_line():
    from core.fixtures import parse_text

    text = (DEMO / "ussd_menus.yaml").read_text(encoding="utf-8").replace("command: CXYE", "command: NOPE")
    doc, _ = parse_text("ussd_menus.yaml", text)
    parsed, _ = parse_set(read_dir(DEMO), _sections())
    book, problems = parse_menus(doc, parsed)
    assert book is None and problems and "NOPE" in problems[0].reason and problems[0].line


# --- end to end against the running gateway --------------------------------------------------------------------

def _ussd_pdus(port: int, steps: list[tuple[str, int]]) -> list[PDU]:
    """Bind TRX with raw PDUs, run the steps, return each screen's deliver_sm."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    framer = Framer()

    def read_until(pred):
        while True:
            frame = framer.next_frame()
            if frame is not None:
                pdu = decode(frame)
                if pdu.command == "deliver_sm":
                    sock.sendall(encode(pdu.response(0, message_id="")))
                if pred(pdu):
                    return pdu
                continue
            framer.feed(sock.recv(65536))

    sock.sendall(encode(PDU.make("bind_transceiver", 1, system_id="tester", password="test1234",
                                 interface_version=0x34)))
    assert read_until(lambda p: p.command == "bind_transceiver_resp").command_status == 0
    screens = []
    for i, (text, op) in enumerate(steps, 2):
        sock.sendall(encode(PDU.make("submit_sm", i, service_type="USSD", source_addr="13800000005",
                                     destination_addr="*200#", short_message=text.encode(), ussd_service_op=op)))
        screens.append(read_until(lambda p: p.command == "deliver_sm"))
    sock.close()
    return screens


@pytest.mark.integration
def test_end_to_end_balance_session(gateway):
    screens = _ussd_pdus(gateway.ports["smpp"], [("*200#", 1), ("2", 18)])
    assert screens[0].tlvs[Tag.ussd_service_op] == UssdServiceOp.USSR_REQUEST
    assert screens[1].tlvs[Tag.ussd_service_op] == UssdServiceOp.PSSR_RESPONSE
    assert unpack_session_info(screens[1].tlvs[Tag.its_session_info])[2]
    assert unpack_session_info(screens[0].tlvs[Tag.its_session_info])[0] == \
        unpack_session_info(screens[1].tlvs[Tag.its_session_info])[0]
    assert "余额" in decode_message(screens[1].params["data_coding"], screens[1].message)


@pytest.mark.integration
def test_end_to_end_with_smpplib_simulator(gateway):
    from gateway.sim_client import SimulatorClient

    client = SimulatorClient("127.0.0.1", gateway.ports["smpp"], "tester", "test1234", wait=10)
    client.connect()
    try:
        screen = client.ussd_start("13800000006", "*200#")
        assert not screen["end"] and "1." in screen["text"]
        offers = client.ussd_answer("13800000006", "1", screen)
        assert not offers["end"] and offers["session"] is not None
        home = client.ussd_answer("13800000006", "00", offers)
        final = client.ussd_answer("13800000006", "2", home)
    finally:
        client.close()
    assert final["end"] and final["op"] == UssdServiceOp.PSSR_RESPONSE

