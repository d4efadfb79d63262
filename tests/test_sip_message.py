"""ivr.sip.message: parsing odd datagrams, compact headers, serialisation, make_response."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.message import (
    MAX_HEADERS,
    Request,
    Response,
    SIPParseError,
    decode_header_text,
    encode_header_text,
    make_response,
    parse,
    parse_name_addr,
    uri_user,
)

SDP = b"v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"

# What sipp's built-in uac scenario sends first.
SIPP_INVITE = (
    b"INVITE sip:10086@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag001\r\n"
    b"To: 10086 <sip:10086@127.0.0.1:5060>\r\n"
    b"Call-ID: 1-4242@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def test_sipp_invite_parses():
    req = parse(SIPP_INVITE)
    assert isinstance(req, Request)
    assert (req.method, req.uri) == ("INVITE", "sip:10086@127.0.0.1:5060")
    assert req.call_id == "1-4242@127.0.0.1"
    assert req.cseq == (1, "INVITE")
    assert req.from_.tag == "4242SIPpTag001" and req.to.tag == ""
    assert req.top_via.branch == "z9hG4bK-4242-1-0" and req.top_via.sent_by == "127.0.0.1:5061"
    assert req.body == SDP and req.content_type == "application/sdp"
    assert uri_user(req.uri) == "10086" and uri_user(req.from_.uri) == "sipp"


def test_round_trip_keeps_headers_and_body():
    again = parse(parse(SIPP_INVITE).to_bytes())
    assert again.header_items() == parse(SIPP_INVITE).header_items()
    assert again.body == SDP


def test_compact_forms_and_case_insensitive_names():
    data = (b"OPTIONS sip:10086@h SIP/2.0\r\nv: SIP/2.0/UDP h:5;branch=z9hG4bKx\r\n"
            b"f: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\ni: abc\r\ncseq: 7 OPTIONS\r\n"
            b"k: timer\r\ns: hello\r\nm: <sip:a@h:5>\r\nc: text/plain\r\nl: 2\r\n\r\nhi")
    req = parse(data)
    assert req.get("Call-ID") == req.get("i") == req.get("CALL-ID") == "abc"
    assert req.get("Supported") == "timer" and req.get("Subject") == "hello"
    assert req.get("contact") == "<sip:a@h:5>" and req.body == b"hi"
    assert b"Call-ID: abc\r\n" in req.to_bytes()  # written in the long form


def test_multiple_via_lines_and_comma_separated_vias():
    data = (b"BYE sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP p1:5060;branch=z9hG4bK1, SIP/2.0/UDP p2;branch=z9hG4bK2\r\n"
            b"Via: SIP/2.0/TCP p3:7;branch=z9hG4bK3\r\nFrom: a <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n"
            b"Call-ID: c\r\nCSeq: 2 BYE\r\n\r\n")
    req = parse(data)
    assert len(req.vias) == 3 and req.top_via.sent_by == "p1:5060"
    resp = make_response(req, 200)
    assert resp.get_all("via") == req.get_all("via")


def test_folded_header_lines_are_joined():
    data = (b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKf\r\nFrom: <sip:a@h>\r\n  ;tag=9\r\n"
            b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1\r\n\tOPTIONS\r\n\r\n")
    req = parse(data)
    assert req.from_.tag == "9" and req.cseq == (1, "OPTIONS")


def test_bare_lf_and_leading_crlf_tolerated():
    lf_sdp = SDP.replace(b"\r\n", b"\n")
    head = SIPP_INVITE[:SIPP_INVITE.index(b"\r\n\r\n")].replace(b"\r\n", b"\n")
    head = head.replace(f"Content-Length: {len(SDP)}".encode(), f"Content-Length: {len(lf_sdp)}".encode())
    req = parse(b"\r\n" + head + b"\n\n" + lf_sdp)
    assert req.method == "INVITE" and req.call_id == "1-4242@127.0.0.1" and req.body == lf_sdp


def test_content_length_cuts_trailing_bytes_and_too_long_is_an_error():
    base = (b"INFO sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKc\r\nFrom: <sip:a@h>;tag=1\r\n"
            b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 3 INFO\r\n")
    assert parse(base + b"Content-Length: 3\r\n\r\nabcdef").body == b"abc"
    with pytest.raises(SIPParseError) as err:
        parse(base + b"Content-Length: 30\r\n\r\nabc")
    assert err.value.status == 400 and err.value.answerable
    with pytest.raises(SIPParseError):
        parse(base + b"Content-Length: x\r\n\r\n")
    assert parse(base + b"\r\nno length").body == b"no length"


@pytest.mark.parametrize("missing", [b"Call-ID", b"CSeq", b"From", b"To"])
def test_missing_mandatory_header_is_answerable_400(missing):
    lines = [line for line in SIPP_INVITE.split(b"\r\n") if not line.startswith(missing + b":")]
    with pytest.raises(SIPParseError) as err:
        parse(b"\r\n".join(lines))
    assert err.value.status == 400 and err.value.answerable
    assert missing.decode() in err.value.reason


def test_junk_is_not_answerable():
    for junk in (b"hello world", b"\x00\xff\xfe", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"INVITE sip:x SIP/2.0\r\nFrom: a\r\n\r\n", b"SIP/2.0 2000 OK\r\nCall-ID: x\r\n\r\n",
                 b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCall-ID: c\r\n\r\n"):
        try:
            parse(junk)
        except SIPParseError as err:
            assert not err.answerable, junk
        else:
            raise AssertionError(f"{junk!r} parsed")


def test_cseq_method_mismatch_and_bad_version():
    with pytest.raises(SIPParseError) as err:
        parse(SIPP_INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"))
    assert err.value.answerable
    with pytest.raises(SIPParseError) as err:
        parse(SIPP_INVITE.replace(b" SIP/2.0\r\nVia", b" SIP/3.0\r\nVia", 1))
    assert err.value.status == 505 and err.value.answerable


def test_header_count_and_size_bounds():
    many = SIPP_INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * (MAX_HEADERS + 1))
    with pytest.raises(SIPParseError) as err:
        parse(many)
    assert "headers" in err.value.reason
    with pytest.raises(SIPParseError) as err:
        parse(SIPP_INVITE + b"x" * 70000)
    assert err.value.status == 513


def test_response_parses():
    resp = parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\n\r\n")
    assert isinstance(resp, Response) and resp.status == 180 and resp.reason == "Ringing"


def test_make_response_copies_dialog_headers_and_adds_tag():
    req = parse(SIPP_INVITE)
    resp = make_response(req, 180, to_tag="abc", headers={"Contact": "<sip:ivr@h>"})
    assert resp.get("to") == "10086 <sip:10086@127.0.0.1:5060>;tag=abc"
    for name in ("via", "from", "call-id", "cseq"):
        assert resp.get_all(name) == req.get_all(name)
    assert make_response(req, 100, to_tag="abc").to.tag == ""
    wire = parse(resp.to_bytes())
    assert wire.status == 180 and wire.get("Content-Length") == "0"


def test_name_addr_forms():
    assert parse_name_addr('"A <b>; c" <sip:1@h;lr>;tag=x').uri == "sip:1@h;lr"
    assert parse_name_addr('"A <b>; c" <sip:1@h;lr>;tag=x').tag == "x"
    assert parse_name_addr("sip:1@h;tag=y").tag == "y"
    assert uri_user("tel:+8613800000001;phone-context=x") == "+8613800000001"
    assert uri_user("sip:13800000001:pw@h") == "13800000001" and uri_user("http://x") == ""


def test_header_text_escaping_round_trips_and_never_breaks_lines():
    text = "欢迎致电\r\n1 话费\n2 流量\\ok\x00"
    value = encode_header_text(text)
    assert "\n" not in value and "\r" not in value
    assert decode_header_text(value) == "欢迎致电\n1 话费\n2 流量\\ok"
    req = Request("INFO", "sip:h", [("X-IVR-Prompt", "a\nb")])
    with pytest.raises(ValueError):
        req.to_bytes()


def test_every_prefix_of_a_datagram_parses_or_raises_parse_error():
    """The UDP analogue of byte-at-a-time feeding: truncated datagrams fail cleanly."""
    for cut in range(len(SIPP_INVITE) + 1):
        try:
            parse(SIPP_INVITE[:cut])
        except SIPParseError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_parse_error(data):
    try:
        parse(data)
    except SIPParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SIPP_INVITE) - 1), st.binary(min_size=1, max_size=3))
def test_mutated_invite_only_ever_raises_parse_error(pos, junk):
    try:
        parse(SIPP_INVITE[:pos] + junk + SIPP_INVITE[pos + 1:])
    except SIPParseError:
        pass
