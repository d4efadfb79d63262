"""Integration: ivr.outbound_sip (the UAC adapter on a real UDP port) calling the real sipp
playing the shipped UAS scenarios (tests/sipp/uas_*.xml); the event sequence is asserted and
sipp must end its scenario without an error (exit status 0)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from twisted.internet.selectreactor import SelectReactor

from ivr.outbound_sip import listen_outbound
from ivr.sip.transaction import TimerValues
from ivr.sip.uac import TERMINAL, Answered, DtmfReceived, Failed, HungUp, Ringing, TimedOut, Trying
from tests.harness import requires_programs

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = ROOT / "tests" / "sipp"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"

pytestmark = [pytest.mark.integration, requires_programs("outbound calls to sipp callees", "sipp")]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_bound(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until sipp holds the UDP port (binding it ourselves fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sipp exited before listening: {proc.stderr.read().decode()[-800:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise AssertionError(f"sipp did not bind 127.0.0.1:{port}")


def start_sipp(scenario: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_udp_port()
    cmd = [SIPP, "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
           "-nostdin", "-timeout", "30s", "-timeout_error", "-trace_err", "-error_file", str(workdir / "err.log")]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_bound(port, proc)
    return proc, port


def place_one(scenario: str, workdir: Path, react, *, ring_timeout: float = 25.0) -> list:
    """Call sipp once; ``react(event, call)`` answers events. Returns every event, in order.

    The ring timeout stays under sipp's own 30 s and far above what a loaded machine makes of an answer
    that comes at once: the only CANCEL these scenarios may see is the one a test asks for (the ring
    timeout's own test passes its 1 s)."""
    proc, port = start_sipp(scenario, workdir)
    reactor = SelectReactor()
    protocol = listen_outbound(reactor, ring_timeout=ring_timeout, times=TimerValues(t1=0.1))
    events: list = []
    holder = {}

    def on_event(event) -> None:
        events.append(event)
        react(event, holder["call"])
        if isinstance(event, TERMINAL):
            reactor.callLater(1.0, reactor.stop)  # let the last ACK / 200 reach sipp

    reactor.callWhenRunning(lambda: holder.setdefault("call", protocol.place_call(
        "127.0.0.1", port, "13800000001", "10086", {"X-Offer-Code": "LL30"}, on_event)))
    reactor.callLater(30, reactor.stop)
    reactor.run(installSignalHandlers=False)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    errors = (workdir / "err.log").read_text() if (workdir / "err.log").exists() else ""
    assert proc.returncode == 0, (f"sipp failed ({proc.returncode}): {err.decode()[-800:]} {errors[-800:]}; "
                                  f"our side saw {events}")
    return events


def prompt_then_hangup_on_dtmf(event, call) -> None:
    if isinstance(event, Answered):
        call.send_prompt("按1订购 Press 1 to order, 2 to hear again, 3 not interested, 9 never call again", "offer",
                         {"X-Offer-Code": "LL30"})
    elif isinstance(event, DtmfReceived):
        call.hangup()


def outbound_ivr(event, call) -> None:
    """The outbound IVR's keys: 2 plays the offer again, any other key ends the call."""
    if isinstance(event, DtmfReceived) and event.digit == "2":
        call.send_prompt("按1订购 Press 1 to order, 2 to hear again, 3 not interested", "offer", {"X-Offer-Code": "LL30"})
    else:
        prompt_then_hangup_on_dtmf(event, call)


def nothing(event, call) -> None:
    return None


def test_sipp_answers_and_presses_1(tmp_path):
    events = place_one("uas_answer", tmp_path, prompt_then_hangup_on_dtmf)
    call_id = events[0].call_id
    assert events == [Trying(call_id), Ringing(call_id, 180), Answered(call_id, ()),
                      DtmfReceived(call_id, "1", 160), HungUp(call_id, by_remote=False)]


def test_sipp_opts_out_with_9(tmp_path):
    events = place_one("uas_optout", tmp_path, prompt_then_hangup_on_dtmf)
    assert [type(e) for e in events] == [Trying, Ringing, Answered, DtmfReceived, HungUp]
    assert events[3].digit == "9"


def test_sipp_hears_the_offer_again_then_refuses_with_3(tmp_path):
    events = place_one("uas_refuse", tmp_path, outbound_ivr)
    assert [type(e) for e in events] == [Trying, Ringing, Answered, DtmfReceived, DtmfReceived, HungUp]
    assert [e.digit for e in events if isinstance(e, DtmfReceived)] == ["2", "3"]


def test_sipp_busy_486(tmp_path):
    events = place_one("uas_busy", tmp_path, nothing)
    call_id = events[0].call_id
    assert events == [Trying(call_id), Failed(call_id, 486, "Busy Here")]


def test_sipp_no_answer_cancelled_at_ring_timeout(tmp_path):
    events = place_one("uas_noanswer", tmp_path, nothing, ring_timeout=1.0)
    call_id = events[0].call_id
    assert events == [Trying(call_id), Ringing(call_id, 180), TimedOut(call_id, "ring")]
