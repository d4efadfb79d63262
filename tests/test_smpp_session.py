"""SMPP session state machine: bind flows, the state table (exhaustive), errors, timers, rate limit."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gateway.smpp.constants import CommandId, CommandStatus, Tag
from gateway.smpp.errors import IllegalSend, LocalProtocolError, WindowFull
from gateway.smpp.pdu import PDU, decode, encode
from gateway.smpp.ratelimit import TokenBucket
from gateway.smpp.session import (
    DEFAULT_TIMERS,
    ESME,
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

S = CommandStatus


def decode_all(data: bytes) -> list[PDU]:
    pdus = []
    while data:
        length = int.from_bytes(data[:4], "big")
        pdus.append(decode(data[:length]))
        data = data[length:]
    return pdus


def feed(session: Session, data: bytes, byte_by_byte: bool = False) -> list:
    if not byte_by_byte:
        return session.receive_data(data)
    events = []
    for i in range(len(data)):
        events += session.receive_data(data[i : i + 1])
    return events


class Link:
    """A client and a server session wired back to back, with a shared Twisted clock."""

    def __init__(self, timers: Timers = DEFAULT_TIMERS, window: int = 10, byte_by_byte: bool = False):
        self.clock = Clock()
        self.client = Session(ESME, self.clock.seconds, timers, window)
        self.server = Session(SMSC, self.clock.seconds, timers, window)
        self.byte_by_byte = byte_by_byte

    def to_server(self) -> list:
        return feed(self.server, self.client.data_to_send(), self.byte_by_byte)

    def to_client(self) -> list:
        return feed(self.client, self.server.data_to_send(), self.byte_by_byte)

    def bind(self, kind: str = "trx") -> None:
        self.client.bind(kind, "tester", "test1234")
        [requested] = self.to_server()
        self.server.accept_bind(requested.pdu, system_id="gateway")
        [answer] = self.to_client()
        assert answer.response.command_status == S.ESME_ROK


# --- happy paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("byte_by_byte", [False, True])
@pytest.mark.parametrize(
    "kind, state", [("tx", State.BOUND_TX), ("rx", State.BOUND_RX), ("trx", State.BOUND_TRX)]
)
def test_bind_accept(kind, state, byte_by_byte):
    link = Link(byte_by_byte=byte_by_byte)
    request = link.client.bind(kind, "tester", "test1234", system_type="VMA")
    assert link.client.state is State.BIND_PENDING
    [requested] = link.to_server()
    assert isinstance(requested, BindRequested) and link.server.state is State.BIND_PENDING
    assert requested.pdu.params["password"] == "test1234"
    link.server.accept_bind(requested.pdu, system_id="gateway")
    assert link.server.state is state and link.server.bound_kind == kind
    assert link.server.peer_system_id == "tester"
    [answer] = link.to_client()
    assert isinstance(answer, ResponseReceived) and answer.request == request
    assert answer.response.params["system_id"] == "gateway"
    assert answer.response.tlvs[Tag.sc_interface_version] == 0x34
    assert link.client.state is state and link.client.bound_kind == kind
    assert link.server.can_receive_mt is (kind != "tx")


def test_bind_reject_then_retry():
    link = Link()
    link.client.bind("trx", "tester", "wrong")
    [requested] = link.to_server()
    link.server.reject_bind(requested.pdu, S.ESME_RINVPASWD)
    assert link.server.state is State.OPEN
    [answer] = link.to_client()
    assert answer.response.command_status == S.ESME_RINVPASWD and answer.response.params == {}
    assert link.client.state is State.OPEN
    link.bind()
    assert link.client.state is link.server.state is State.BOUND_TRX


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_submit_and_deliver_round_trip(byte_by_byte):
    link = Link(byte_by_byte=byte_by_byte)
    link.bind()
    submit = link.client.send_request(
        "submit_sm", source_addr="13800000001", destination_addr="10086", short_message=b"200"
    )
    assert link.client.window_available() == 9
    [received] = link.to_server()
    assert isinstance(received, RequestReceived) and received.pdu == submit
    link.server.respond(received.pdu, message_id="m-1")
    [answer] = link.to_client()
    assert answer.response.params == {"message_id": "m-1"} and answer.request == submit
    assert link.client.window_available() == 10

    deliver = link.server.send_request(
        "deliver_sm", source_addr="10086", destination_addr="13800000001", short_message=b"shelf"
    )
    [received] = link.to_client()
    assert received.pdu == deliver
    link.client.respond(received.pdu)
    [answer] = link.to_server()
    assert answer.response.command == "deliver_sm_resp"


def test_enquire_link_is_answered_without_events():
    link = Link()
    link.bind()
    link.client.send_request("enquire_link")
    assert link.to_server() == []
    [answer] = link.to_client()
    assert answer.response.command == "enquire_link_resp" and answer.response.command_status == 0


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_unbind(initiator):
    link = Link()
    link.bind()
    if initiator == "client":
        a, b, to_b, to_a = link.client, link.server, link.to_server, link.to_client
    else:
        a, b, to_b, to_a = link.server, link.client, link.to_client, link.to_server
    a.unbind()
    assert a.state is State.UNBOUND
    assert not a.can_send("submit_sm") and not a.can_send("deliver_sm")
    assert to_b() == [Unbound(by_peer=True), ConnectionShouldClose("unbound by peer")]
    assert b.state is State.CLOSED
    answer, unbound, close = to_a()
    assert answer.response.command == "unbind_resp"
    assert (unbound, close) == (Unbound(by_peer=False), ConnectionShouldClose("unbind completed"))
    assert a.state is State.CLOSED and a.next_deadline() is None


def test_crossing_unbinds_are_both_answered():
    link = Link()
    link.bind()
    link.client.unbind()
    link.server.unbind()
    client_events = link.to_client()
    server_events = link.to_server()
    assert Unbound(by_peer=True) in client_events and Unbound(by_peer=True) in server_events
    assert link.client.state is link.server.state is State.CLOSED


def test_outbind_and_alert_notification_reach_the_client_unanswered():
    link = Link()
    outbind = link.server.send_request("outbind", system_id="smsc", password="pw")
    assert link.to_client() == [RequestReceived(outbind)]
    with pytest.raises(LocalProtocolError):
        link.client.respond(outbind)
    link.server = Session(SMSC, link.clock.seconds)
    link.bind("rx")
    alert = link.server.send_request("alert_notification", source_addr="13800000001", esme_addr="gw")
    assert link.to_client() == [RequestReceived(alert)]
    assert link.client.data_to_send() == b""


# --- the state table, exhaustively -----------------------------------------------------------

# SMPP 3.4 section 2.3, Table 2-1, transcribed independently of the session's own table:
# command: (ESME may issue, SMSC may issue, states in which it may be issued).
BOUND = {State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX}
TX = {State.BOUND_TX, State.BOUND_TRX}
RX = {State.BOUND_RX, State.BOUND_TRX}
SPEC_TABLE = {
    "bind_transmitter": (True, False, {State.OPEN}),
    "bind_receiver": (True, False, {State.OPEN}),
    "bind_transceiver": (True, False, {State.OPEN}),
    "outbind": (False, True, {State.OPEN}),
    "unbind": (True, True, BOUND | {State.UNBOUND}),  # plus a crossing unbind while UNBOUND
    "submit_sm": (True, False, TX),
    "submit_multi": (True, False, TX),
    "deliver_sm": (False, True, RX),
    "data_sm": (True, True, None),  # ESME sends it in TX/TRX, the SMSC in RX/TRX
    "query_sm": (True, False, TX),
    "cancel_sm": (True, False, TX),
    "replace_sm": (True, False, TX),
    "enquire_link": (True, True, set(State) - {State.CLOSED}),  # a link check, answered before a bind too
    "alert_notification": (False, True, RX),
}
REQUESTS = [c.name for c in CommandId if not c & 0x80000000]
RESPONSES = [c.name for c in CommandId if c & 0x80000000]
REACHABLE = [State.OPEN, State.BIND_PENDING, State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX, State.UNBOUND]
SAMPLE_PARAMS = {
    "submit_multi": {"dest_address": [{"destination_addr": "13800000001"}]},
    **{command: {"destination_addr": "10086"} for command in ("submit_sm", "deliver_sm", "data_sm")},
}


def test_spec_table_covers_every_request():
    assert set(SPEC_TABLE) == set(REQUESTS)


def session_in(role: str, state: State) -> Session:
    """A session of `role` driven into `state` through real PDUs."""
    clock = Clock()
    session = Session(role, clock.seconds)
    kind = {State.BOUND_TX: "tx", State.BOUND_RX: "rx"}.get(state, "trx")
    if state is State.OPEN:
        return session
    if role == SMSC:
        [requested] = session.receive_data(
            encode(
                PDU.make(
                    f"bind_{dict(tx='transmitter', rx='receiver', trx='transceiver')[kind]}", 1, system_id="t"
                )
            )
        )
        if state is not State.BIND_PENDING:
            session.accept_bind(requested.pdu)
    else:
        bind = session.bind(kind, "t", "p")
        if state is not State.BIND_PENDING:
            session.receive_data(encode(bind.response(system_id="smsc")))
    if state is State.UNBOUND:
        session.unbind()
    session.data_to_send()
    assert session.state is state
    return session


def expected_outcome(role: str, state: State, command: str) -> int | None:
    """The status a `role` session in `state` answers a peer's `command` with; None = accepted."""
    by_esme, by_smsc, states = SPEC_TABLE[command]
    peer_is_esme = role == SMSC
    if not (by_esme if peer_is_esme else by_smsc):
        return S.ESME_RINVCMDID
    if states is None:
        states = TX if peer_is_esme else RX
    if state in states:
        return None
    if command.startswith("bind_") and state in BOUND | {State.BIND_PENDING}:
        return S.ESME_RALYBND
    return S.ESME_RINVBNDSTS


@pytest.mark.parametrize("role, state, command", list(itertools.product([ESME, SMSC], REACHABLE, REQUESTS)))
def test_state_table(role, state, command):
    session = session_in(role, state)
    request = PDU.make(command, 77, **SAMPLE_PARAMS.get(command, {}))
    events = session.receive_data(encode(request))
    replies = decode_all(session.data_to_send())
    if role == SMSC and state is State.BIND_PENDING:  # held until the bind is decided (tested below)
        assert (events, replies) == ([], [])
        return
    status = expected_outcome(role, state, command)
    if status is None:
        if command in ("enquire_link", "unbind"):
            assert [(r.command, r.command_status) for r in replies] == [(f"{command}_resp", 0)]
        else:
            assert replies == []
            expected_event = BindRequested if command.startswith("bind_") else RequestReceived
            assert [type(e) for e in events] == [expected_event] and events[0].pdu == request
        return
    [reply] = replies
    response_name = "generic_nack" if command in ("outbind", "alert_notification") else f"{command}_resp"
    assert (reply.command, reply.command_status, reply.sequence_number) == (response_name, status, 77)
    assert reply.params == {}
    assert [(type(e), e.status) for e in events] == [(ProtocolViolation, status)]


@pytest.mark.parametrize("role, state, command", list(itertools.product([ESME, SMSC], REACHABLE, RESPONSES)))
def test_unsolicited_responses_are_reported_not_answered(role, state, command):
    session = session_in(role, state)
    events = session.receive_data(encode(PDU.make(command, 5000)))
    assert session.data_to_send() == b""
    # Behind a pending bind even a stray response waits its turn (reported once the bind is decided).
    assert [type(e) for e in events] == ([] if (role, state) == (SMSC, State.BIND_PENDING) else [ProtocolViolation])
    assert session.state is state


@pytest.mark.parametrize("role, state, command", list(itertools.product([ESME, SMSC], REACHABLE, REQUESTS)))
def test_send_side_uses_the_same_table(role, state, command):
    session = session_in(role, state)
    peer = ESME if role == SMSC else SMSC
    status = expected_outcome(peer, state, command)
    assert session.can_send(command) is (status is None)
    if status is None:
        return
    with pytest.raises(IllegalSend) as info:
        session.send_request(command, **SAMPLE_PARAMS.get(command, {}))
    assert info.value.command_status == status
    assert session.data_to_send() == b""


# --- errors through the session --------------------------------------------------------------


def bound_server() -> Session:
    return session_in(SMSC, State.BOUND_TRX)


def test_undecodable_known_request_gets_its_own_resp():
    session = bound_server()
    body = b"\0\x01\x01" + b"1" * 30 + b"\0"  # source_addr far over 21 octets
    data = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("00000004 00000000 0000002a") + body
    events = session.receive_data(data)
    [reply] = decode_all(session.data_to_send())
    assert (reply.command, reply.command_status, reply.sequence_number) == (
        "submit_sm_resp",
        S.ESME_RINVSRCADR,
        42,
    )
    assert events == [ProtocolViolation(S.ESME_RINVSRCADR, events[0].detail)]
    assert session.state is State.BOUND_TRX


def test_unknown_command_gets_generic_nack():
    session = bound_server()
    session.receive_data(bytes.fromhex("00000010 00000110 00000000 0000000b"))
    [reply] = decode_all(session.data_to_send())
    assert (reply.command, reply.command_status, reply.sequence_number) == (
        "generic_nack",
        S.ESME_RINVCMDID,
        11,
    )
    assert session.state is State.BOUND_TRX


@pytest.mark.parametrize("length", ["00000008", "00100001"])
def test_bad_command_length_nacks_and_closes(length):
    session = bound_server()
    events = session.receive_data(bytes.fromhex(length + "00000015 00000000 00000003") + b"more bytes")
    [reply] = decode_all(session.data_to_send())
    assert (reply.command, reply.command_status) == ("generic_nack", S.ESME_RINVCMDLEN)
    assert [type(e) for e in events] == [ProtocolViolation, ConnectionShouldClose]
    assert session.state is State.CLOSED
    assert session.receive_data(encode(PDU.make("enquire_link", 4))) == []


def test_duplicate_sequence_and_pending_limit():
    clock = Clock()
    session = Session(SMSC, clock.seconds, max_pending_in=2)
    [requested] = session.receive_data(encode(PDU.make("bind_transceiver", 1, system_id="t")))
    session.accept_bind(requested.pdu)
    session.data_to_send()
    submits = [encode(PDU.make("submit_sm", seq, destination_addr="10086")) for seq in (10, 10, 11, 12)]
    events = session.receive_data(b"".join(submits))
    assert [type(e) for e in events] == [
        RequestReceived,
        ProtocolViolation,
        RequestReceived,
        ProtocolViolation,
    ]
    replies = decode_all(session.data_to_send())
    assert [(r.sequence_number, r.command_status) for r in replies] == [
        (10, S.ESME_RSYSERR),
        (12, S.ESME_RTHROTTLED),
    ]
    session.respond(events[0].pdu, message_id="a")
    with pytest.raises(LocalProtocolError):
        session.respond(events[0].pdu, message_id="a")
    assert [type(e) for e in session.receive_data(submits[3])] == [RequestReceived]


def test_generic_nack_answers_an_outstanding_request():
    link = Link()
    link.bind()
    submit = link.client.send_request("submit_sm", destination_addr="10086", short_message=b"x")
    link.client.data_to_send()
    [answer] = link.client.receive_data(
        encode(PDU(CommandId.generic_nack, submit.sequence_number, S.ESME_RINVCMDLEN))
    )
    assert answer.request == submit and answer.response.command == "generic_nack"
    assert link.client.window_available() == 10


def test_response_to_the_wrong_command_is_not_matched():
    link = Link()
    link.bind()
    submit = link.client.send_request("submit_sm", destination_addr="10086")
    events = link.client.receive_data(encode(PDU.make("query_sm_resp", submit.sequence_number)))
    assert [type(e) for e in events] == [ProtocolViolation]
    assert link.client.window_available() == 9


# --- sending side ----------------------------------------------------------------------------


def test_window_full_and_exempt_commands():
    link = Link(window=3)
    link.bind()
    for _ in range(3):
        link.client.send_request("submit_sm", destination_addr="10086")
    assert link.client.window_available() == 0 and not link.client.can_send("submit_sm")
    with pytest.raises(WindowFull):
        link.client.send_request("submit_sm", destination_addr="10086")
    link.client.send_request("enquire_link")
    assert link.client.can_send("unbind")
    for received in link.to_server():
        link.server.respond(received.pdu)
    link.to_client()
    assert link.client.window_available() == 3


def test_sequence_numbers_increase_and_wrap():
    session = session_in(ESME, State.BOUND_TX)
    first = session.send_request("submit_sm", destination_addr="10086").sequence_number
    assert session.send_request("submit_sm", destination_addr="10086").sequence_number == first + 1
    session._next_seq = 0x7FFFFFFF
    assert session.send_request("submit_sm", destination_addr="10086").sequence_number == 0x7FFFFFFF
    assert session.send_request("submit_sm", destination_addr="10086").sequence_number == 1


def test_api_misuse_is_local_error():
    session = Session(SMSC, Clock().seconds)
    [requested] = session.receive_data(encode(PDU.make("bind_transmitter", 1, system_id="t")))
    with pytest.raises(LocalProtocolError):
        session.accept_bind(PDU.make("bind_transmitter", 999, system_id="x"))
    with pytest.raises(LocalProtocolError):
        session.reject_bind(requested.pdu, 0)
    session.reject_bind(requested.pdu, S.ESME_RBINDFAIL)
    with pytest.raises(LocalProtocolError):
        session.accept_bind(requested.pdu)
    with pytest.raises(LocalProtocolError):
        session_in(ESME, State.OPEN).bind("both", "a", "b")
    with pytest.raises(ValueError):
        Session("smsc", Clock().seconds)


# --- timers ----------------------------------------------------------------------------------


def test_session_init_timer_closes_an_unbound_connection():
    clock = Clock()
    session = Session(SMSC, clock.seconds)
    assert session.next_deadline() == 30
    clock.advance(29.9)
    assert session.tick() == []
    clock.advance(0.1)
    assert session.tick() == [ConnectionShouldClose("no bind within 30 s of connecting")]
    assert session.state is State.CLOSED and session.next_deadline() is None


def test_session_init_timer_stops_once_bound():
    link = Link()
    link.clock.advance(10)
    link.bind()
    link.clock.advance(25)
    assert link.server.next_deadline() == 40  # the enquire_link timer, not session_init
    assert link.server.tick() == []


def test_enquire_link_keeps_an_idle_link_alive():
    link = Link(Timers(enquire_link=30, inactivity=300, response=10))
    link.bind()
    assert link.server.next_deadline() == 30
    link.clock.advance(30)
    assert link.server.tick() == []
    [ping] = decode_all(link.server.data_to_send())
    assert ping.command == "enquire_link"
    assert link.server.next_deadline() == 40  # only the ping's response deadline is left
    link.clock.advance(1)
    assert link.client.receive_data(encode(ping)) == []
    assert link.to_server() == []
    assert link.server.next_deadline() == 61
    link.clock.advance(30)
    link.server.tick()
    assert decode_all(link.server.data_to_send())[0].command == "enquire_link"


def test_unanswered_enquire_link_closes():
    link = Link(Timers(enquire_link=30, response=10))
    link.bind()
    link.clock.advance(30)
    link.server.tick()
    link.clock.advance(10)
    assert link.server.tick() == [ConnectionShouldClose("enquire_link unanswered for 10 s")]


def test_inactivity_unbinds_and_closes():
    link = Link(Timers(enquire_link=0, inactivity=300))
    link.bind()
    link.clock.advance(200)
    link.server.receive_data(encode(PDU.make("enquire_link", 50)))
    link.server.data_to_send()
    link.clock.advance(299)
    assert link.server.tick() == []
    link.clock.advance(1)
    assert link.server.tick() == [ConnectionShouldClose("nothing received for 300 s")]
    [unbind] = decode_all(link.server.data_to_send())
    assert unbind.command == "unbind"


def test_response_timeout_frees_the_window():
    link = Link(Timers(response=5, enquire_link=0, inactivity=0))
    link.bind()
    first = link.client.send_request("submit_sm", destination_addr="10086")
    link.clock.advance(2)
    second = link.client.send_request("submit_sm", destination_addr="10086")
    assert link.client.next_deadline() == 5
    link.clock.advance(3)
    assert link.client.tick() == [ResponseTimeout(first)]
    assert link.client.window_available() == 9 and link.client.next_deadline() == 7
    link.clock.advance(2)
    assert link.client.tick() == [ResponseTimeout(second)]
    assert link.client.next_deadline() is None
    late = link.client.receive_data(encode(first.response(message_id="late")))
    assert [type(e) for e in late] == [ProtocolViolation]


def test_bind_response_timeout_returns_to_open():
    clock = Clock()
    session = Session(ESME, clock.seconds, Timers(session_init=100, response=10))
    bind = session.bind("trx", "t", "p")
    clock.advance(10)
    assert session.tick() == [ResponseTimeout(bind)]
    assert session.state is State.OPEN


def test_connection_lost_aborts_outstanding_requests():
    link = Link()
    link.bind()
    submit = link.client.send_request("submit_sm", destination_addr="10086")
    assert link.client.connection_lost() == [RequestAborted(submit)]
    assert link.client.state is State.CLOSED
    link.client.respond(submit)  # late answers after close are ignored
    assert link.client.data_to_send() == b""


def test_disabled_timers_give_no_deadline():
    link = Link(Timers(session_init=0, enquire_link=0, inactivity=0, response=0))
    assert link.server.next_deadline() is None
    link.bind()
    link.client.send_request("submit_sm", destination_addr="10086")
    assert link.client.next_deadline() is None and link.client.tick() == []


# --- chunked input ---------------------------------------------------------------------------


BIND = encode(PDU.make("bind_transceiver", 1, system_id="tester", password="test1234"))
# What a compliant ESME sends once bound: submits (one long, in message_payload),
# enquire_link and unbind.
CONVERSATION = b"".join(
    encode(p)
    for p in [
        PDU.make("submit_sm", 2, destination_addr="10086", short_message=b"200"),
        PDU.make("submit_sm", 3, destination_addr="10086", message_payload=b"x" * 500, sar_msg_ref_num=1),
        PDU.make("enquire_link", 4),
        PDU.make("submit_sm", 5, destination_addr="10086", short_message=b"0000"),
        PDU.make("unbind", 6),
    ]
)


def run_server(chunks: list[bytes]) -> tuple[list, list[PDU]]:
    """Bind a server session, then feed it `chunks`, answering every request."""
    session = Session(SMSC, Clock().seconds)
    [requested] = session.receive_data(BIND)
    session.accept_bind(requested.pdu, system_id="gw")
    session.data_to_send()
    events, replies = [], []
    for chunk in chunks:
        received = session.receive_data(chunk)
        events += received
        for event in received:
            if isinstance(event, RequestReceived):
                events += session.respond(event.pdu, message_id=f"m{event.pdu.sequence_number}")
        replies += decode_all(session.data_to_send())
    # Automatic answers (enquire_link) may overtake the application's, so compare by sequence.
    return events, sorted(replies, key=lambda pdu: pdu.sequence_number)


def test_conversation_byte_by_byte():
    whole_events, whole_replies = run_server([CONVERSATION])
    events, replies = run_server([CONVERSATION[i : i + 1] for i in range(len(CONVERSATION))])
    assert (events, replies) == (whole_events, whole_replies)
    assert [(r.command, r.command_status) for r in replies] == [
        ("submit_sm_resp", 0),
        ("submit_sm_resp", 0),
        ("enquire_link_resp", 0),
        ("submit_sm_resp", 0),
        ("unbind_resp", 0),
    ]
    assert [type(e) for e in events][-2:] == [Unbound, ConnectionShouldClose]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(CONVERSATION) - 1), max_size=30))
def test_conversation_random_chunks(cuts):
    points = sorted(set(cuts))
    chunks = [CONVERSATION[a:b] for a, b in zip([0, *points], [*points, len(CONVERSATION)], strict=True)]
    assert run_server(chunks) == run_server([CONVERSATION])


def test_peer_unbind_waits_for_pending_answers():
    clock = Clock()
    session = Session(SMSC, clock.seconds, Timers(response=5, enquire_link=0))
    [requested] = session.receive_data(BIND)
    session.accept_bind(requested.pdu)
    session.data_to_send()
    submits = [PDU.make("submit_sm", seq, destination_addr="10086") for seq in (2, 3)]
    events = session.receive_data(b"".join(encode(p) for p in [*submits, PDU.make("unbind", 4)]))
    assert events == [RequestReceived(submits[0]), RequestReceived(submits[1]), Unbound(by_peer=True)]
    assert session.state is State.UNBOUND and session.data_to_send() == b""
    [refused] = session.receive_data(encode(PDU.make("submit_sm", 5, destination_addr="10086")))
    assert refused.status == S.ESME_RINVBNDSTS
    session.data_to_send()
    assert session.respond(submits[1], message_id="b") == []
    assert session.respond(submits[0], message_id="a") == [ConnectionShouldClose("unbound by peer")]
    assert [(p.command, p.sequence_number) for p in decode_all(session.data_to_send())] == [
        ("submit_sm_resp", 3),
        ("submit_sm_resp", 2),
        ("unbind_resp", 4),
    ]


def test_peer_unbind_is_answered_when_the_application_stalls():
    clock = Clock()
    session = Session(SMSC, clock.seconds, Timers(response=5, enquire_link=0))
    [requested] = session.receive_data(BIND)
    session.accept_bind(requested.pdu)
    session.receive_data(encode(PDU.make("submit_sm", 2, destination_addr="10086")) + encode(PDU.make("unbind", 3)))
    session.data_to_send()
    assert session.next_deadline() == 5
    clock.advance(5)
    assert session.tick() == [ConnectionShouldClose("unbound by peer")]
    assert [p.command for p in decode_all(session.data_to_send())] == ["unbind_resp"]


# --- requests pipelined behind a bind ----------------------------------------------------------


def pipelined(data: bytes, byte_by_byte: bool) -> tuple[Session, PDU, list]:
    """A server session fed a bind and what follows it; returns the bind and the other events."""
    session = Session(SMSC, Clock().seconds)
    events = feed(session, data, byte_by_byte)
    assert isinstance(events[0], BindRequested)
    assert session.data_to_send() == b"", "nothing is answered before the bind is decided"
    return session, events[0].pdu, events[1:]


def answer_all(session: Session, events: list) -> list[tuple[str, int, int]]:
    for event in events:
        if isinstance(event, RequestReceived):
            session.respond(event.pdu, message_id="m")
    return [(p.command, p.command_status, p.sequence_number) for p in decode_all(session.data_to_send())]


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_requests_pipelined_behind_a_bind_are_answered_after_it_in_order(byte_by_byte):
    session, bind, later = pipelined(BIND + CONVERSATION, byte_by_byte)
    assert later == [] and session.state is State.BIND_PENDING
    events = session.accept_bind(bind, system_id="gw")
    assert [type(e) for e in events] == [RequestReceived, RequestReceived, RequestReceived, Unbound]
    assert answer_all(session, events) == [
        ("bind_transceiver_resp", 0, 1),
        ("enquire_link_resp", 0, 4),
        ("submit_sm_resp", 0, 2),
        ("submit_sm_resp", 0, 3),
        ("submit_sm_resp", 0, 5),
        ("unbind_resp", 0, 6),
    ]


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_requests_behind_a_refused_bind_meet_the_open_state(byte_by_byte):
    first = CONVERSATION[: int.from_bytes(CONVERSATION[:4], "big")]
    probe = encode(PDU.make("enquire_link", 9))
    session, bind, _ = pipelined(BIND + first + probe, byte_by_byte)
    events = session.reject_bind(bind, S.ESME_RINVPASWD)
    assert [(type(e), getattr(e, "status", None)) for e in events] == [(ProtocolViolation, S.ESME_RINVBNDSTS)]
    assert answer_all(session, events) == [
        ("bind_transceiver_resp", S.ESME_RINVPASWD, 1),
        ("submit_sm_resp", S.ESME_RINVBNDSTS, 2),
        ("enquire_link_resp", 0, 9),
    ]
    assert session.state is State.OPEN


def test_a_second_bind_behind_a_pending_one_waits_then_is_already_bound():
    session, bind, _ = pipelined(BIND + encode(PDU.make("bind_transmitter", 2, system_id="t")), False)
    events = session.accept_bind(bind)
    assert [type(e) for e in events] == [ProtocolViolation]
    assert answer_all(session, events) == [("bind_transceiver_resp", 0, 1), ("bind_transmitter_resp", S.ESME_RALYBND, 2)]


def test_a_bind_behind_a_refused_bind_is_the_next_pending_bind():
    retry = PDU.make("bind_transmitter", 2, system_id="t")
    session, bind, _ = pipelined(BIND + encode(retry) + encode(PDU.make("enquire_link", 3)), False)
    events = session.reject_bind(bind, S.ESME_RINVPASWD)
    assert events == [BindRequested(retry)] and session.state is State.BIND_PENDING
    assert session.accept_bind(retry) == []  # the enquire_link behind it was answered here
    assert answer_all(session, []) == [
        ("bind_transceiver_resp", S.ESME_RINVPASWD, 1),
        ("bind_transmitter_resp", 0, 2),
        ("enquire_link_resp", 0, 3),
    ]


def test_holding_behind_a_bind_is_bounded():
    session = Session(SMSC, Clock().seconds, max_held=100)
    [requested] = session.receive_data(BIND + b"\0" * 100)
    assert session.receive_data(b"\0") == [ConnectionShouldClose("more than 100 octets sent before the bind was answered")]
    assert session.state is State.CLOSED


@pytest.mark.parametrize("role", [ESME, SMSC])
def test_enquire_link_is_answered_before_any_bind(role):
    session = Session(role, Clock().seconds)
    assert session.receive_data(encode(PDU.make("enquire_link", 3))) == []
    [answer] = decode_all(session.data_to_send())
    assert (answer.command, answer.command_status, answer.sequence_number) == ("enquire_link_resp", 0, 3)
    assert session.state is State.OPEN


# --- token bucket ----------------------------------------------------------------------------


def test_token_bucket_rate_and_burst():
    clock = Clock()
    bucket = TokenBucket(rate=500, burst=500, now=clock.seconds)
    assert sum(bucket.try_take() for _ in range(600)) == 500
    clock.advance(0.01)
    assert sum(bucket.try_take() for _ in range(10)) == 5
    clock.advance(100)
    assert bucket.tokens == 500
    assert not bucket.try_take(501)
    assert bucket.try_take(500) and not bucket.try_take()


def test_token_bucket_ignores_clock_stepping_back():
    now = [100.0]
    bucket = TokenBucket(rate=1, burst=2, now=lambda: now[0])
    assert bucket.try_take(2)
    now[0] = 50.0
    assert not bucket.try_take()
    now[0] = 101.0
    assert bucket.try_take() and not bucket.try_take()


def test_token_bucket_rejects_nonsense():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=Clock().seconds)
