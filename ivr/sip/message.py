"""SIP messages over UDP: parse a datagram, serialise a message (RFC 3261 sections 7, 18.3, 20, 25).

Public API::

    parse(datagram: bytes) -> Request | Response        # raises SIPParseError
    message.to_bytes() -> bytes                          # Content-Length always recomputed
    make_response(request, status, reason=None, to_tag=None, headers=(), body=b"",
                  content_type=None) -> Response         # RFC 3261 8.2.6
    parse_name_addr(value) -> NameAddr                   # From / To / Contact values
    uri_user(uri) -> str                                 # "sip:10086@host" -> "10086"
    encode_header_text(text) / decode_header_text(value) # UTF-8 prompt text <-> one header line

Header names are case-insensitive and compact forms (``i f t v l c m k s`` ...) are
expanded, so ``msg.get("call-id")``, ``msg.get("i")`` and ``msg.get("Call-ID")`` are the
same lookup. Values keep their order; several ``Via`` lines, or one line holding
comma-separated Vias, both come back from ``msg.vias``.

A datagram that cannot be read raises ``SIPParseError`` carrying the wire status to answer
with (400, 505 or 513), a reason for the ``Warning`` header, and ``partial``: the request
as far as it could be read. ``error.answerable`` says whether that partial request has a
usable top Via, i.e. whether a 400 can be sent back at all or the junk must be dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

__all__ = [
    "MAX_DATAGRAM", "MAX_HEADERS", "SIPParseError", "Message", "Request", "Response", "Via",
    "NameAddr", "parse", "make_response", "parse_name_addr", "uri_user", "split_commas",
    "encode_header_text", "decode_header_text", "reason_phrase",
]

MAX_DATAGRAM = 65535
MAX_HEADERS = 100
SIP_VERSION = "SIP/2.0"

# RFC 3261 7.3.3 plus the later registrations a real UA may use.
COMPACT = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "l": "content-length",
    "c": "content-type", "m": "contact", "k": "supported", "s": "subject",
    "e": "content-encoding", "o": "event", "r": "refer-to", "b": "referred-by",
    "u": "allow-events", "x": "session-expires", "a": "accept-contact",
    "j": "reject-contact", "d": "request-disposition", "y": "identity",
}
_SPELLING = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
             "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
             "x-ivr-prompt": "X-IVR-Prompt", "x-ivr-state": "X-IVR-State"}

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    410: "Gone", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere",
}

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+\Z")
_VIA = re.compile(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+([^;\s]+)\s*(.*)\Z", re.S)
_CSEQ = re.compile(r"\s*(\d{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)\s*\Z")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6]\d\d)(?: (.*))?\Z", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NEWLINE = re.compile(r"\r\n|\r|\n")


class SIPParseError(ValueError):
    """A datagram that is not a well-formed SIP message.

    ``status`` is the response to send (400 unless said otherwise), ``reason`` goes into the
    Warning header, ``partial`` is the request read so far (None for responses and for
    datagrams whose start line is unreadable).
    """

    def __init__(self, reason: str, status: int = 400, partial: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial

    @property
    def answerable(self) -> bool:
        """True when ``partial`` has a top Via we can route a response to."""
        return self.partial is not None and self.partial.top_via is not None


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


@lru_cache(maxsize=1024)  # a few dozen names recur in every message; bounded against junk names
def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded."""
    name = name.lower()
    return COMPACT.get(name, name)


@lru_cache(maxsize=1024)
def spelling(key: str) -> str:
    """How a header name is written on the wire (``call-id`` -> ``Call-ID``)."""
    return _SPELLING.get(key) or "-".join(part.capitalize() for part in key.split("-"))


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <...> (multi-value headers)."""
    if "," not in value:  # the common case, without the character walk
        value = value.strip()
        return [value] if value else []
    parts, start, quoted, angle, i = [], 0, False, False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def _params(text: str) -> dict[str, str]:
    """``;a=1;b`` -> {"a": "1", "b": ""} with lower-case names."""
    out = {}
    for item in text.split(";"):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name:
            out[name] = value.strip().strip('"')
    return out


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    sent_by: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")


def parse_via(value: str) -> Via | None:
    match = _VIA.match(value)
    if match is None:
        return None
    return Via(match.group(1).upper(), match.group(2).lower(), _params(match.group(3)))


@dataclass(frozen=True, slots=True)
class NameAddr:
    display: str
    uri: str
    params: dict[str, str]

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")


def parse_name_addr(value: str) -> NameAddr:
    """Parse a From/To/Contact value: ``"Bob" <sip:bob@h>;tag=1`` or ``sip:bob@h;tag=1``."""
    quoted, i = False, 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and quoted:
            i += 1
        elif ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            end = value.find(">", i)
            if end < 0:
                break
            return NameAddr(value[:i].strip().strip('"'), value[i + 1:end].strip(),
                            _params(value[end + 1:]))
        i += 1
    # addr-spec form: parameters after the URI belong to the header (RFC 3261 20.10).
    uri, _, rest = value.strip().partition(";")
    return NameAddr("", uri.strip(), _params(rest))


def uri_user(uri: str) -> str:
    """The user part of a sip:/sips:/tel: URI; "" when there is none."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return ""
    scheme = scheme.strip().lower()
    if scheme == "tel":
        return rest.split(";", 1)[0].strip()
    if scheme not in ("sip", "sips") or "@" not in rest:
        return ""
    return rest.rsplit("@", 1)[0].split(":", 1)[0].split(";", 1)[0].strip()


def encode_header_text(text: str) -> str:
    """Put arbitrary UTF-8 text (a prompt with line breaks) on one header line.

    Backslash becomes ``\\\\``, any line break ``\\n``; other control characters become a
    space. A header value can therefore never break the message framing.
    """
    text = text.replace("\\", "\\\\")
    text = _NEWLINE.sub(r"\\n", text)
    return _CONTROL.sub(" ", text.replace("\t", " ")).strip()


def decode_header_text(value: str) -> str:
    """Inverse of ``encode_header_text`` (for test clients and tools)."""
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class Message:
    """Headers (ordered, multi-valued, case-insensitive) and a body."""

    def __init__(self, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self._headers: dict[str, list[str]] = {}
        self.body = body
        for name, value in headers:
            self.add(name, value)

    def get(self, name: str) -> str | None:
        values = self._headers.get(header_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self._headers.get(header_key(name), ()))

    def __contains__(self, name: str) -> bool:
        return header_key(name) in self._headers

    def add(self, name: str, value: str) -> None:
        self._headers.setdefault(header_key(name), []).append(value)

    def set(self, name: str, value: str) -> None:
        self._headers[header_key(name)] = [value]

    def remove(self, name: str) -> None:
        self._headers.pop(header_key(name), None)

    def header_items(self) -> list[tuple[str, str]]:
        return [(spelling(key), v) for key, values in self._headers.items() for v in values]

    @property
    def call_id(self) -> str:
        return (self.get("call-id") or "").strip()

    @cached_property
    def cseq(self) -> tuple[int, str] | None:
        """(number, METHOD) or None when absent or unreadable."""
        match = _CSEQ.match(self.get("cseq") or "")
        return (int(match.group(1)), match.group(2).upper()) if match else None

    @property
    def vias(self) -> list[str]:
        return [v for line in self._headers.get("via", ()) for v in split_commas(line)]

    @cached_property
    def top_via(self) -> Via | None:
        vias = self.vias
        return parse_via(vias[0]) if vias else None

    @cached_property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.get("from") or "")

    @cached_property
    def to(self) -> NameAddr:
        return parse_name_addr(self.get("to") or "")

    @property
    def content_type(self) -> str:
        """Media type in lower case without parameters ("" when absent)."""
        return (self.get("content-type") or "").split(";", 1)[0].strip().lower()

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise; Content-Length is always written and always right."""
        lines = [self.start_line()]
        for key, values in self._headers.items():
            if key == "content-length":
                continue
            name = spelling(key)
            for value in values:
                if "\n" in value or "\r" in value:
                    raise ValueError(f"header {name} holds a line break; use encode_header_text")
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        data = head + b"\r\n\r\n" + self.body
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"message of {len(data)} bytes does not fit a datagram")
        return data

    __bytes__ = to_bytes


class Request(Message):
    def __init__(self, method: str, uri: str, headers: Iterable[tuple[str, str]] = (),
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


class Response(Message):
    def __init__(self, status: int, reason: str = "", headers: Iterable[tuple[str, str]] = (),
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason or reason_phrase(status)

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} call-id={self.call_id!r}>"


def _split_head(datagram: bytes) -> tuple[bytes, bytes]:
    end = datagram.find(b"\r\n\r\n")
    if end >= 0:
        return datagram[:end], datagram[end + 4:]
    end = datagram.find(b"\n\n")  # bare-LF senders
    if end >= 0:
        return datagram[:end], datagram[end + 2:]
    return datagram, b""


def _start(line: str) -> tuple[Request | Response, str | None]:
    """The message named by the start line, and a version problem (answered with 505)."""
    if line[:8].upper() == "SIP/2.0 ":
        match = _STATUS_LINE.match(line)
        if match is None:
            raise SIPParseError("Bad status line")
        return Response(int(match.group(1)), (match.group(2) or "").strip()), None
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise SIPParseError("Bad request line")
    request = Request(parts[0].upper(), parts[1])
    if parts[2].upper() != SIP_VERSION:
        return request, f"Version {parts[2][:20]} not supported"
    return request, None


def _read_headers(msg: Message, lines: list[str]) -> str | None:
    """Fill ``msg`` from header lines; return the first problem (reading on past it)."""
    problem, last, count = None, None, 0
    for line in lines:
        if not line:
            continue
        if "\r" in line:  # a bare CR would split the line for the next reader
            problem, last = problem or "Bare CR in a header line", None
            continue
        if line[0] in " \t":  # folded continuation line (RFC 3261 7.3.1)
            if last is None:
                problem = problem or "Continuation line before any header"
            else:
                values = msg._headers[last]
                values[-1] = f"{values[-1]} {line.strip()}"
            continue
        count += 1
        if count > MAX_HEADERS:
            return problem or f"More than {MAX_HEADERS} headers"
        name, colon, value = line.partition(":")
        name = name.rstrip()
        if not colon or not _TOKEN.match(name):
            problem = problem or f"Malformed header line {line[:40]!r}"
            last = None
            continue
        last = header_key(name)
        msg.add(last, value.strip())
    return problem


def _body(msg: Message, raw: bytes) -> str | None:
    length = msg.get("content-length")
    if length is None:
        msg.body = raw
        return None
    if not (length.isascii() and length.strip().isdigit()):
        return "Bad Content-Length"
    size = int(length)
    if size > len(raw):
        return "Content-Length larger than the datagram"
    msg.body = raw[:size]  # UDP: bytes past Content-Length are discarded (RFC 3261 18.3)
    return None


def _missing(request: Request) -> str | None:
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not request.get(name):
            return f"Missing {name} header"
    if request.top_via is None:
        return "Malformed Via header"
    cseq = request.cseq
    if cseq is None:
        return "Malformed CSeq header"
    if cseq[1] != request.method:
        return "CSeq method does not match the request method"
    return None


def parse(datagram: bytes) -> Request | Response:
    """Parse one UDP datagram into a Request or Response; raise SIPParseError if malformed."""
    if len(datagram) > MAX_DATAGRAM:
        raise SIPParseError("Message too large", 513)
    head, raw_body = _split_head(datagram.lstrip(b"\r\n"))
    lines = head.decode("utf-8", "surrogateescape").split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines[0]:
        raise SIPParseError("Empty message")
    msg, version_problem = _start(lines[0])
    partial = msg if isinstance(msg, Request) else None
    problem = _read_headers(msg, lines[1:]) or _body(msg, raw_body)
    if version_problem is not None:
        raise SIPParseError(version_problem, 505, partial)
    if problem is None and isinstance(msg, Request):
        problem = _missing(msg)
    if problem is not None:
        raise SIPParseError(problem, 400, partial)
    return msg


def make_response(request: Request, status: int, reason: str | None = None, to_tag: str | None = None,
                  headers: Iterable[tuple[str, str]] | Mapping[str, str] = (), body: bytes = b"",
                  content_type: str | None = None) -> Response:
    """Build a response to ``request`` (RFC 3261 8.2.6).

    Via (all, in order), From, To, Call-ID and CSeq are copied. ``to_tag`` is added to To
    unless the request already had one or the status is 100. ``headers`` are added as given.
    """
    response = Response(status, reason or reason_phrase(status), body=body)
    for via in request.get_all("via"):
        response.add("via", via)
    for name in ("from", "to", "call-id", "cseq"):
        value = request.get(name)
        if value is not None:
            response.add(name, value)
    to_value = request.get("to")
    if to_tag and status != 100 and to_value is not None and not request.to.tag:
        response.set("to", f"{to_value};tag={to_tag}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        response.add(name, value)
    if content_type and body:
        response.set("content-type", content_type)
    return response
