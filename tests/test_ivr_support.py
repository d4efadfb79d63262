"""IVR fixtures (ivr.yaml, ivr_menus.yaml) validation, and helpers the other IVR tests share:
a demo gateway on a task.Clock with the IVR tables and config, and a sipp-like SIP caller."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from twisted.internet import task

from core.db import Base
from core.fixtures import parse_set, read_dir
from gateway.app import Gateway
from gateway.sections import all_sections
from ivr import sections as ivr_sections
from ivr.effects import GatewayEffects
from ivr.flows import IvrApp
from ivr.models import BusyHourSms, Call, Survey
from ivr.sip import SendDatagram, SipCore, decode_header_text, parse
from ivr.sip.message import Response
from notifier import surveys

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "demo"
IVR_FILES = ("ivr.yaml", "ivr_menus.yaml")
T0 = 1_795_000_000.0  # 2026-11-18 19:06:40 CST, inside the demo's busy hours
NIGHT = T0 + 8 * 3600  # 03:06 CST: outside them
CALLER_ADDR = ("127.0.0.1", 5061)


def fixture_files() -> dict[str, str]:
    return read_dir(DEMO)


def sections():
    """Every section of a fixture set, the IVR's included (once the lead wires them, they are)."""
    found = all_sections()
    if not any(s.name == "ivr.setup" for s in found):
        found += ivr_sections.SECTIONS
    return found


def parse_files(files: dict[str, str]):
    return parse_set(files, sections())


class IvrWorld:
    """A demo gateway on a task.Clock, the IVR app on a SipCore, no sockets."""

    def __init__(self, tmp_path: Path, files: dict[str, str] | None = None, start: float = T0, **knobs) -> None:
        self.clock = task.Clock()
        self.clock.advance(start)
        self.gw = Gateway(self.clock, f"sqlite:///{tmp_path / 'ivr.db'}", overrides=knobs)
        Base.metadata.create_all(self.gw.engine, tables=[Call.__table__, Survey.__table__, BusyHourSms.__table__])
        files = files or fixture_files()
        self.gw.apply_fixtures({k: v for k, v in files.items() if k not in IVR_FILES} if not self._wired() else files,
                               source="test")
        parsed, problems = parse_files(files)
        assert not problems, problems
        self.config = ivr_sections.build_config(parsed)
        self.pokes = 0
        self.fx = GatewayEffects(self.gw, lambda: self.config, self._poke)
        surveys.register(self.gw.router, lambda: None)
        self.core = SipCore(self.clock.seconds, local_host="127.0.0.1", local_port=5060)
        self.app = IvrApp(self.core, self.clock.seconds, config=lambda: self.config,
                          settings=self.gw.live_settings, effects=self.fx)

    @staticmethod
    def _wired() -> bool:
        return any(s.name == "ivr.setup" for s in all_sections())

    def _poke(self) -> None:
        self.pokes += 1

    def send(self, data: bytes) -> list:
        return [parse(d.data) for d in self.app.receive(data, CALLER_ADDR) if isinstance(d, SendDatagram)]

    def advance(self, seconds: float, answer: bool = True) -> list:
        """Move the clock, running the app's deadlines on the way (like the UDP adapter does);
        the callers answer the gateway's INFO and BYE with 200 (like sipp -aa) unless told not to."""
        out = []
        end = self.clock.seconds() + seconds
        while True:
            when = self.app.next_deadline()
            if when is None or when > end:
                break
            self.clock.advance(max(0.0, when - self.clock.seconds()))
            new = [parse(d.data) for d in self.app.tick()]
            out += new
            for request in (m for m in new if answer and not isinstance(m, Response)):
                self.send(ok_to(request))
        self.clock.advance(max(0.0, end - self.clock.seconds()))
        return out

    def flush(self) -> None:
        self.fx.flush()

    def session(self):
        return self.gw.db()


_ids = itertools.count(1)


class Caller:
    """A SIP caller speaking like sipp's uac: fresh branch per transaction, one From tag."""

    def __init__(self, world: IvrWorld, msisdn: str = "13800000001", number: str = "10086") -> None:
        self.world, self.msisdn, self.number = world, msisdn, number
        n = next(_ids)
        self.call_id, self.tag, self.to_tag, self.cseq, self.branch = f"{n}-77@127.0.0.1", f"tag{n}", "", 0, 0
        self.last: list = []

    def request(self, method: str, body: bytes = b"", ctype: str = "", cseq: int | None = None) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        self.branch += 1
        lines = [f"{method} sip:{self.number}@127.0.0.1:5060 SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{self.call_id}-{self.branch}",
                 f"From: <sip:{self.msisdn}@127.0.0.1:5061>;tag={self.tag}",
                 f"To: <sip:{self.number}@127.0.0.1:5060>" + (f";tag={self.to_tag}" if self.to_tag else ""),
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", "Contact: <sip:caller@127.0.0.1:5061>",
                 "Max-Forwards: 70"]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _send(self, data: bytes) -> list:
        self.last = self.world.send(data)
        for msg in self.last:
            if isinstance(msg, Response) and msg.to.tag and not self.to_tag and msg.status >= 101:
                self.to_tag = msg.to.tag
        return self.last

    def invite(self) -> Response:
        self._send(self.request("INVITE"))
        return final(self.last)

    def ack(self) -> list:
        return self._send(self.request("ACK", cseq=1))

    def call(self) -> Response:
        """INVITE and ACK; returns the 200 OK."""
        ok = self.invite()
        assert ok.status == 200, ok.status
        self.ack()
        return ok

    def key(self, digit: str) -> Response:
        self._send(self.request("INFO", f"Signal={digit}\r\nDuration=160\r\n".encode(), "application/dtmf-relay"))
        return final(self.last)

    def bye(self) -> Response:
        self._send(self.request("BYE"))
        return final(self.last)

    def answer(self, request) -> list:
        """200 OK to a request the gateway sent (INFO, BYE)."""
        return self.world.send(ok_to(request))


def ok_to(request) -> bytes:
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in request.vias), f"From: {request.get('from')}",
             f"To: {request.get('to')}", f"Call-ID: {request.call_id}",
             f"CSeq: {request.cseq[0]} {request.cseq[1]}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def final(messages: list) -> Response | None:
    finals = [m for m in messages if isinstance(m, Response) and m.status >= 200]
    return finals[-1] if finals else None


def prompt(msg) -> str:
    return decode_header_text(msg.get("x-ivr-prompt") or "")


def state(msg) -> str:
    return msg.get("x-ivr-state") or ""


def requests(messages: list, method: str) -> list:
    return [m for m in messages if not isinstance(m, Response) and m.method == method]


# --------------------------------------------------------------------------------------- tests


def test_demo_ivr_fixtures_are_valid():
    parsed, problems = parse_files(fixture_files())
    assert problems == []
    config = ivr_sections.build_config(parsed)
    assert set(config.menus.services) == {"10086", "1008611"}
    assert config.menus.services["1008611"].kind == "balance"
    assert config.menus.services["10086"].start_menu("gotone").name == "main_gotone"
    assert config.menus.services["10086"].start_menu(None).name == "main"
    assert len(config.setup.agents) >= 5 and "general" in config.setup.queues


def _problems_with(name: str, old: str, new: str) -> list[str]:
    files = fixture_files()
    assert old in files[name]
    files[name] = files[name].replace(old, new, 1)
    _, problems = parse_files(files)
    return [str(p) for p in problems]


@pytest.mark.parametrize(("name", "old", "new", "reason"), [
    ("ivr_menus.yaml", "{action: menu, menu: data}", "{action: menu, menu: nowhere}", "unknown menu 'nowhere'"),
    ("ivr_menus.yaml", "{action: agent, queue: general}", "{action: agent, queue: sales}", "unknown queue 'sales'"),
    ("ivr_menus.yaml", "{action: hangup}", "{action: dance}", "unknown action 'dance'"),
    ("ivr_menus.yaml", '"9": {action: hangup}', '"x": {action: hangup}', "option key is one of"),
    ("ivr_menus.yaml", "{{ balance }}元", "{{ bill }}元", "unknown template variable(s) bill"),
    ("ivr_menus.yaml", "start: {default: main, gotone:", "start: {default: main, platinum:", "unknown brand"),
    ("ivr_menus.yaml", "  no_input_max: 2", "  no_input_max: 50", "no_input_max must be 0..10"),
    ("ivr_menus.yaml", '  goodbye: {zh: "感谢您的来电,再见。", en: "Thank you for calling. Goodbye."}\n', "",
     "missing prompt 'goodbye'"),
    ("ivr.yaml", 'shift: "08:00-20:00"', 'shift: "20:00-08:00"', "must end after it starts"),
    ("ivr.yaml", "skills: [data], shift", "skills: [cooking], shift", "unknown skill(s) cooking"),
    ("ivr.yaml", "{{ balance }}元", "{{ balanse }}元", "unknown template variable(s) balanse"),
    ("ivr.yaml", "  default: >-", "  standard: >-", "with a 'default' text"),
])
def test_bad_ivr_fixtures_name_file_line_and_reason(name, old, new, reason):
    problems = _problems_with(name, old, new)
    assert any(reason in p and p.startswith(f"{name}:") for p in problems), problems
    assert all(not p.startswith(f"{name}:0:") for p in problems if reason in p)
