"""The callee simulator: pure decisions (ivr.callees), and its sans-IO UAS (ivr.sip.uas_sim)
answering the sans-IO UAC (ivr.sip.uac) datagram by datagram on one fake clock."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from twisted.internet.selectreactor import SelectReactor

from core.fixtures import read_dir
from ivr.callee_server import DEMO_FIXTURES, hour_clock, load_catalog
from ivr.callees import ACCEPT, ANSWER, BUSY, DIGITS, NO_ANSWER, OPT_OUT, REFUSE, REPLAY, offer_reply, pickup
from ivr.outbound_sip import listen_outbound
from ivr.sip.core import SipCore
from ivr.sip.uac import Answered, DtmfReceived, Failed, HungUp, Ringing, TimedOut, Trying, UacEndpoint
from ivr.sip.uas_sim import CalleeApp
from offers import schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(read_dir(DEMO_FIXTURES))


def subscriber(**over) -> dict:
    base = {"msisdn": "13800000009", "brand": "mzone", "usage_class": "D", "value_grade": "B1",
            "channel_pref": "phone", "arpu_avg": 120.0, "data_used_mb": 9000.0, "data_allowance_mb": 6000.0,
            "consent_marketing": True}
    return schema.facts({**base, **over})


def test_pickup_is_a_function_of_its_inputs():
    facts = subscriber()
    first = [pickup(facts, 19, random.Random(f"1:{n}")) for n in range(50)]
    again = [pickup(facts, 19, random.Random(f"1:{n}")) for n in range(50)]
    assert first == again
    assert {p.outcome for p in first} == {ANSWER, BUSY, NO_ANSWER}
    answered = [p for p in first if p.outcome == ANSWER]
    assert all(2.0 <= p.ring_s <= 8.0 for p in answered) and answered[0].reasons[0].startswith("hour 19")


def test_pickup_hour_segment_and_history():
    rng = random.Random(0)
    night, evening = pickup(None, 3, rng), pickup(None, 19, rng)
    assert night.p_answer < 0.1 < 0.5 < evening.p_answer
    phone, sms = pickup(subscriber(channel_pref="phone"), 19, rng), pickup(subscriber(channel_pref="sms"), 19, rng)
    assert phone.p_answer > evening.p_answer > sms.p_answer
    silent = pickup(subscriber(days_silent=45.0), 19, rng)
    assert silent.p_answer < phone.p_answer
    keen = subscriber(phone_contacted=20, phone_answered=19)
    shy = subscriber(phone_contacted=20, phone_answered=1)
    assert pickup(keen, 19, rng).p_answer > phone.p_answer > pickup(shy, 19, rng).p_answer
    assert pickup(subscriber(value_grade="A1"), 10, rng).p_busy > pickup(subscriber(), 10, rng).p_busy
    outcomes = Counter(pickup(None, 3, random.Random(n)).outcome for n in range(2000))
    assert outcomes[NO_ANSWER] > 1800


def test_offer_reply_follows_fit(catalog):
    offer = catalog.offer("LL30")
    fitting = subscriber()  # usage class D, M-Zone: LL30's fit multipliers apply, eligible
    poor = subscriber(usage_class="A", brand="gotone", arpu_avg=20.0, data_used_mb=100.0)  # not eligible, no fit
    good = offer_reply(fitting, offer, 19, random.Random(1), catalog.params)
    bad = offer_reply(poor, offer, 19, random.Random(1), catalog.params)
    assert good.fit > 1.5 > bad.fit and good.p_accept > 0.3 > 0.05 > bad.p_accept
    assert bad.p_opt_out > good.p_opt_out
    assert any("not eligible" in r for r in bad.reasons) and any("fit usage_class=D" in r for r in good.reasons)
    accepted = Counter(offer_reply(fitting, offer, 19, random.Random(n), catalog.params).action for n in range(1000))
    refused = Counter(offer_reply(poor, offer, 19, random.Random(n), catalog.params).action for n in range(1000))
    assert accepted[ACCEPT] > 5 * refused[ACCEPT] and refused[OPT_OUT] > accepted[OPT_OUT]
    assert {r.digit for r in (good, bad)} <= {"1", "2", "3", "9", None}


def test_the_callee_presses_the_outbound_ivr_keys(catalog):
    """3 refuses (not interested), 2 asks to hear it again on a first hearing only, then a decision."""
    from ivr.dialer import IVR_KEYS

    assert {IVR_KEYS[DIGITS[a]] for a in (ACCEPT, REFUSE, OPT_OUT)} == {"accepted", "refused", "opted_out"}
    assert DIGITS[REPLAY] == "2"
    offer = catalog.offer("LL30")
    first = Counter(offer_reply(subscriber(), offer, 19, random.Random(n), catalog.params).action for n in range(2000))
    again = Counter(offer_reply(subscriber(), offer, 19, random.Random(n), catalog.params, heard=2).action
                    for n in range(2000))
    assert 80 < first[REPLAY] < 250 and again[REPLAY] == 0
    assert again[REFUSE] > 0 and {offer_reply(subscriber(), offer, 19, random.Random(n), catalog.params, heard=2).digit
                                  for n in range(200)} <= {"1", "3", "9", None}


def test_offer_reply_defaults_consent_and_late_hours(catalog):
    unknown = offer_reply(None, catalog.offer("LL30"), 12, random.Random(0), catalog.params)
    assert unknown.fit is None and unknown.p_accept == 0.15 and "unknown subscriber" in unknown.reasons[0]
    assert "unknown offer" in offer_reply(subscriber(), None, 12, random.Random(0)).reasons[0]
    no_consent = offer_reply(subscriber(consent_marketing=False), catalog.offer("LL30"), 12, random.Random(0),
                             catalog.params)
    assert no_consent.p_opt_out >= 0.5
    late = offer_reply(subscriber(), catalog.offer("LL30"), 22, random.Random(0), catalog.params)
    noon = offer_reply(subscriber(), catalog.offer("LL30"), 12, random.Random(0), catalog.params)
    assert late.p_opt_out > noon.p_opt_out


def test_hour_clock():
    assert hour_clock("Asia/Shanghai", None)(0.0) == 8 and hour_clock("UTC", 19)(0.0) == 19


# ----------------------------------------------------------------- the UAS against the UAC, in memory

class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


UAS_ADDR, UAC_ADDR = ("127.0.0.1", 5080), ("127.0.0.1", 5070)


class Wire:
    """Both sans-IO sides on one clock; datagrams shuttled one at a time."""

    def __init__(self, catalog, facts: dict, hour: int = 19, seed: int = 0) -> None:
        self.clock = Clock()
        self.uac = UacEndpoint(self.clock, local_host="127.0.0.1", local_port=UAC_ADDR[1], ring_timeout=30.0)
        core = SipCore(self.clock, local_host="127.0.0.1", local_port=UAS_ADDR[1], info_events=True)
        self.uas = CalleeApp(core, self.clock, facts_for=facts.get, offer_for=catalog.offer, params=catalog.params,
                             hour_of=lambda _now: hour, seed=seed)
        self.events: list = []
        self.prompt_on_answer = True

    def pump(self, events: list) -> None:
        pending = list(events)
        while True:
            for event in pending:
                self.react(event)
            pending = []
            to_uas = self.uac.datagrams_to_send()
            if not to_uas:
                return
            for data, addr in to_uas:
                assert addr == UAS_ADDR
                for out in self.uas.receive(data, UAC_ADDR):
                    pending += self.uac.receive_datagram(out.data, UAS_ADDR)

    def react(self, event) -> None:
        self.events.append(event)
        if isinstance(event, Answered) and self.prompt_on_answer:
            self.pump(self.uac.send_prompt(event.call_id, "按1订购 30元6GB", "offer", {"X-Offer-Code": "LL30"}))
        elif isinstance(event, DtmfReceived) and event.digit == "2":  # hear it again
            self.pump(self.uac.send_prompt(event.call_id, "按1订购 30元6GB", "offer", {"X-Offer-Code": "LL30"}))
        elif isinstance(event, DtmfReceived):
            self.pump(self.uac.hangup(event.call_id))

    def run(self, until: float) -> None:
        end = self.clock.t + until
        while True:
            times = [t for t in (self.uac.next_deadline(), self.uas.next_deadline()) if t is not None]
            if not times or min(times) > end:
                return
            self.clock.t = max(self.clock.t, min(times))
            self.pump(self.uac.tick())
            for out in self.uas.tick():
                self.pump(self.uac.receive_datagram(out.data, UAS_ADDR))

    def call(self, msisdn: str) -> str:
        call = self.uac.place_call(UAS_ADDR, msisdn, "10086", {"X-Project": "P1"})
        self.pump([])
        return call.call_id


def test_simulated_callees_against_the_uac(catalog):
    facts = {f"1390000{n:04d}": subscriber(msisdn=f"1390000{n:04d}") for n in range(200)}
    wire = Wire(catalog, facts)
    ids = [wire.call(msisdn) for msisdn in facts]
    wire.run(120.0)
    by_call: dict[str, list] = {}
    for event in wire.events:
        by_call.setdefault(event.call_id, []).append(type(event))
    assert set(by_call) == set(ids)
    shapes = Counter(tuple(seq) for seq in by_call.values())
    assert set(shapes) <= {
        (Trying, Failed),  # busy
        (Trying, Ringing, TimedOut),  # no answer: cancelled at the ring timeout
        (Trying, Ringing, Answered, DtmfReceived, HungUp),  # pressed a key, we hung up
        (Trying, Ringing, Answered, DtmfReceived, DtmfReceived, HungUp),  # 2 (hear it again), then a key
        (Trying, Ringing, Answered, HungUp),  # hung up on the offer
    }
    summary = wire.uas.summary()
    assert summary["calls"] == 200 and summary["live"] == 0
    assert summary["answer"] + summary["busy"] + summary["no_answer"] == 200
    assert summary["accept"] + summary["refuse"] + summary["opt_out"] + summary["hang_up"] == summary["answer"]
    assert summary["cancelled"] == summary["no_answer"] and summary["accept"] > 0 and summary["replay"] > 0
    digits = Counter(e.digit for e in wire.events if isinstance(e, DtmfReceived))
    assert digits["1"] == summary["accept"] and digits["9"] == summary["opt_out"]
    assert digits["3"] == summary["refuse"] > 0 and digits["2"] == summary["replay"]
    assert wire.uac.live_calls == 0


class DialerWire(Wire):
    """The outbound IVR's dialer (ivr.dialer, project video-ivr) calling the simulated callees through
    the UAC, as the dialer service does it: its commands become UAC calls, the UAC's events go back."""

    def __init__(self, catalog, facts: dict) -> None:
        super().__init__(catalog, facts)
        from core.fixtures import parse_set
        from gateway.sections import all_sections
        from ivr.dialer import Dialer
        from ivr.dialer_project import dial_config
        from notifier.projects_plan import Target

        parsed, problems = parse_set(read_dir(DEMO_FIXTURES), all_sections())
        assert problems == []
        project = parsed["notifier.projects"].get("video-ivr")
        targets = [Target(m, "SPHY", "B1", "Asia/Shanghai", False, 1.0, self.clock.t) for m in facts]
        self.dialer = Dialer(dial_config(project, ()), targets, now=self.clock, rng=random.Random(3),
                             allowed=lambda _target, t: t)
        self.ids: dict[str, str] = {}  # UAC call id <-> the dialer's, both ways
        self.commands: list = []

    def apply(self, commands: list) -> None:
        from ivr.dialer import Cancel, Dial, Hangup, Prompt

        for command in commands:
            self.commands.append(command)
            if isinstance(command, Dial):
                call = self.uac.place_call(UAS_ADDR, command.msisdn, "10086", {"X-Offer-Code": command.offer})
                self.ids[call.call_id], self.ids[command.call_id] = command.call_id, call.call_id
                self.pump([])
            elif isinstance(command, Prompt):
                self.pump(self.uac.send_prompt(self.ids[command.call_id], command.text, command.state,
                                               {"X-Offer-Code": "SPHY"}))
            elif isinstance(command, (Cancel, Hangup)):
                self.pump(self.uac.hangup(self.ids[command.call_id]))

    def react(self, event) -> None:
        import dataclasses

        self.events.append(event)
        self.apply(self.dialer.on_event(dataclasses.replace(event, call_id=self.ids[event.call_id])))

    def run(self, until: float) -> None:
        end = self.clock.t + until
        self.apply(self.dialer.advance())
        while True:
            times = [t for t in (self.uac.next_deadline(), self.uas.next_deadline(), self.dialer.next_deadline())
                     if t is not None]
            if not times or min(times) > end:
                return
            self.clock.t = max(self.clock.t, min(times))
            self.pump(self.uac.tick())
            for out in self.uas.tick():
                self.pump(self.uac.receive_datagram(out.data, UAS_ADDR))
            self.apply(self.dialer.advance())


def test_the_dialers_ivr_and_the_simulated_callees_agree(catalog):
    """A callee that refuses presses 3 and the dialer records a refusal (no replays to a hang-up); 2 replays
    the offer and the callee decides on the repeated prompt; each decision is the dialer's outcome."""
    from ivr.dialer import Record, Refused

    facts = {f"1390000{n:04d}": subscriber(msisdn=f"1390000{n:04d}", brand="mzone") for n in range(150)}
    wire = DialerWire(catalog, facts)
    wire.run(3 * 3600.0)
    callee, dialer = wire.uas.summary(), wire.dialer.summary()["outcomes"]
    assert callee["refuse"] > 10 and callee["replay"] > 0 and callee["live"] == 0
    assert dialer.get("refused", 0) == callee["refuse"]
    assert dialer.get("accepted", 0) == callee.get("accept", 0) and dialer.get("opted_out", 0) == callee.get("opt_out", 0)
    assert dialer.get("hungup", 0) == callee["hang_up"]
    refused = [c for c in wire.commands if isinstance(c, Refused)]
    assert len(refused) == callee["refuse"] and {c.offer for c in refused} == {"SPHY"}
    assert all(r.answered_at is not None for r in wire.commands if isinstance(r, Record) and r.outcome == "refused")


def test_same_seed_same_behaviour(catalog):
    facts = {f"1390000{n:04d}": subscriber(msisdn=f"1390000{n:04d}") for n in range(40)}
    summaries = []
    for _ in range(2):
        wire = Wire(catalog, facts, seed=7)
        for msisdn in reversed(facts) if summaries else facts:  # arrival order does not matter
            wire.call(msisdn)
        wire.run(120.0)
        summaries.append(wire.uas.summary())
    assert summaries[0] == summaries[1]


def test_prompt_without_offer_is_only_acknowledged(catalog):
    wire = Wire(catalog, {}, hour=19, seed=0)
    wire.prompt_on_answer = False
    answered = None
    for n in range(30):  # the first answered call of a seeded series
        call_id = wire.call(f"1380000{n:04d}")
        wire.run(10.0)
        if any(isinstance(e, Answered) and e.call_id == call_id for e in wire.events):
            answered = call_id
            break
    assert answered is not None
    before = len(wire.events)
    wire.pump(wire.uac.send_prompt(answered, "Welcome", "menu"))
    wire.run(10.0)
    assert wire.events[before:] == [] and wire.uas.summary()["prompts"] == 1
    for _ in range(3):
        wire.pump(wire.uac.send_prompt(answered, "Welcome", "menu"))
    wire.run(10.0)
    assert wire.events[-1] == HungUp(answered, by_remote=True)  # more than max_prompts: the callee hangs up


# ----------------------------------------------------------------- the command, over real UDP

def _start_simulator(tmp_path) -> tuple[subprocess.Popen, int]:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    subprocess.run([sys.executable, "run_gateway.py", "load-fixtures", "--db", db, str(DEMO_FIXTURES)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "run_gateway.py", "simulate", "callees", "--port", "0", "--hour", "19",
                             "--time-scale", "0", "--seed", "5", "--db", db, "--duration", "60"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)["callees"]


@pytest.mark.integration
def test_simulate_callees_command(tmp_path):
    proc, port = _start_simulator(tmp_path)
    try:
        reactor = SelectReactor()
        protocol = listen_outbound(reactor, ring_timeout=2.0)
        events: list = []
        handles = {}

        def on_event(event) -> None:
            events.append(event)
            if isinstance(event, Answered):
                handles[event.call_id].send_prompt("按1订购", "offer", {"X-Offer-Code": "LL30"})
            elif isinstance(event, DtmfReceived):
                handles[event.call_id].hangup()

        def dial() -> None:
            for n in range(40):
                handle = protocol.place_call("127.0.0.1", port, f"138000000{n % 10 + 1:02d}", "10086", None, on_event)
                handles[handle.call_id] = handle

        reactor.callWhenRunning(dial)
        reactor.callLater(6.0, reactor.stop)
        reactor.run(installSignalHandlers=False)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    summary = json.loads(out.strip().splitlines()[-1])
    ended = Counter(type(e) for e in events if isinstance(e, (Failed, HungUp, TimedOut)))
    assert summary["calls"] == 40 and summary["live"] == 0 and sum(ended.values()) == 40, (summary, err)
    assert summary["busy"] == ended[Failed] and summary["no_answer"] == ended[TimedOut]
    assert summary["answer"] == ended[HungUp] == summary["acked"]
    digits = Counter(e.digit for e in events if isinstance(e, DtmfReceived))
    assert digits["1"] == summary.get("accept", 0) and digits["9"] == summary.get("opt_out", 0)
