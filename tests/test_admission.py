"""Admission at the door: a reply that could not go out within smpp.max_reply_delay_ms is refused up front."""

from __future__ import annotations

import time

import pytest
from twisted.internet.task import Clock

from gateway.admission import MIN_BACKLOG, MIN_RATE, SAMPLE_S, ReplyAdmission
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.text import choose_encoding
from tests.raw_esme import RawESME


class Queue:
    """A reply queue served at ``rate`` per second by the fake clock."""

    def __init__(self, clock: Clock):
        self.clock, self.backlog, self.completed = clock, 0, 0

    def serve(self, seconds: float, rate: float) -> None:
        steps = int(seconds / 0.01)
        for _ in range(steps):
            self.clock.advance(0.01)
            done = min(self.backlog, int(rate * 0.01))
            self.backlog -= done
            self.completed += done


def _admission(clock: Clock, queue: Queue, delay_s: float = 0.05) -> ReplyAdmission:
    return ReplyAdmission(clock.seconds, lambda: delay_s, lambda: queue.backlog, lambda: queue.completed)


def test_under_the_bound_everything_is_admitted():
    clock = Clock()
    queue = Queue(clock)
    adm = _admission(clock, queue)
    for _ in range(MIN_BACKLOG - 1):
        assert adm.admit()
        queue.backlog += 1
    assert adm.refused == 0


def test_a_full_queue_refuses_at_once_and_recovers_when_it_drains():
    clock = Clock()
    queue = Queue(clock)
    adm = _admission(clock, queue)
    queue.backlog = adm.limit()
    assert not adm.admit() and adm.refused == 1
    queue.serve(1.0, rate=1000)
    assert queue.backlog == 0 and adm.admit()


def test_the_limit_follows_the_measured_drain_rate():
    clock = Clock()
    queue = Queue(clock)
    adm = _admission(clock, queue, delay_s=0.1)
    assert adm.limit() == max(MIN_BACKLOG, int(MIN_RATE * 0.1))
    for _ in range(20):  # a busy gateway completing 3,000 replies/s
        queue.backlog += 300
        adm.admit()
        queue.serve(SAMPLE_S / 2, rate=3000)
        adm.admit()
    assert 2500 <= adm.rate <= 3000
    assert 250 <= adm.limit() <= 300


def test_an_idle_gateway_keeps_its_estimate():
    clock = Clock()
    queue = Queue(clock)
    adm = _admission(clock, queue)
    adm.rate = 3000.0
    for _ in range(10):
        clock.advance(1.0)
        assert adm.admit()
    assert adm.rate == 3000.0


def test_offered_twice_the_capacity_the_delay_stays_bounded():
    """Simulated overload: arrivals at 2x what the queue serves; the admitted backlog never exceeds
    what drains within the bound (plus one sample of estimation slack)."""
    clock = Clock()
    queue = Queue(clock)
    adm = _admission(clock, queue, delay_s=0.05)
    worst = 0.0
    for _ in range(500):  # 5 s in steps of 10 ms, 20 arrivals per step = 2,000/s offered, 1,000/s served
        for _ in range(20):
            if adm.admit():
                queue.backlog += 1
        queue.serve(0.01, rate=1000)
        worst = max(worst, queue.backlog / 1000)
    assert adm.refused > 4000
    assert worst <= 0.1


@pytest.mark.integration
def test_a_burst_beyond_the_bound_is_refused_and_every_accepted_one_is_answered(gateway):
    esme = RawESME("127.0.0.1", gateway.ports["smpp"], window=200)
    try:
        data_coding, payload = choose_encoding("200")
        for n in range(120):  # one write: all arrive before the gateway routes any of them
            esme.session.send_request("submit_sm", source_addr_ton=1, source_addr_npi=1,
                                      source_addr=f"138000000{1 + n % 50:02d}", dest_addr_ton=0, dest_addr_npi=1,
                                      destination_addr="10086", data_coding=data_coding, short_message=payload)
        esme._flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            esme.pump(0.2)
            answered = {r["mo"] for r in esme.out.replies if r["mo"]}
            if len(esme.out.acked) + len(esme.out.errors) == 120 and set(esme.out.acked.values()) <= answered:
                break
    finally:
        esme.close()
    statuses = set(esme.out.errors.values())
    assert esme.out.errors and statuses <= {S.ESME_RMSGQFUL, S.ESME_RTHROTTLED}, statuses
    assert S.ESME_RMSGQFUL in statuses
    answered = {r["mo"] for r in esme.out.replies if r["mo"]}
    assert set(esme.out.acked.values()) <= answered, "every accepted command gets its reply"
