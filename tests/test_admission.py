"""Admission at the door: a reply that could not go out within smpp.max_reply_delay_ms is refused up front."""

from __future__ import annotations

import time
from collections import deque

import pytest
from twisted.internet.task import Clock

from gateway.admission import MIN_BACKLOG, ReplyAdmission
from gateway.smpp.constants import CommandStatus as S
from gateway.smpp.text import choose_encoding
from tests.raw_esme import RawESME


class Queue:
    """A FIFO of reply timestamps served at ``rate`` per second on the fake clock."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.waiting: deque[float] = deque()
        self.latencies: list[float] = []
        self.done = 0

    def add(self) -> None:
        self.waiting.append(self.clock.seconds())

    def oldest_wait(self) -> float:
        return self.clock.seconds() - self.waiting[0] if self.waiting else 0.0

    def serve(self, seconds: float, rate: float, step: float = 0.001) -> None:
        credit = 0.0
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            credit += rate * step
            while credit >= 1 and self.waiting:
                credit -= 1
                self.latencies.append(self.clock.seconds() - self.waiting.popleft())
                self.done += 1


def _admission(queue: Queue, delay_s: float = 0.03) -> ReplyAdmission:
    return ReplyAdmission(queue.clock.seconds, lambda: delay_s, lambda: len(queue.waiting), queue.oldest_wait,
                          lambda: queue.done)


def test_a_burst_into_an_idle_gateway_is_admitted():
    queue = Queue(Clock())
    adm = _admission(queue)
    for _ in range(MIN_BACKLOG):
        assert adm.admit()
        queue.add()
    queue.clock.advance(1.0)  # even when they are old: a small backlog is never refused
    assert len(queue.waiting) == MIN_BACKLOG and adm.refused == 0


def test_stale_replies_refuse_at_once_and_a_drained_queue_admits_again():
    queue = Queue(Clock())
    adm = _admission(queue)
    for _ in range(10):  # a busy second at 2,000 replies/s teaches the drain rate
        for _ in range(200):
            queue.add()
        adm.admit()
        queue.serve(0.1, rate=2000)
    assert 1500 < adm.rate <= 2000 and adm.limit() >= 90
    queue.serve(0.5, rate=2000)
    refused = adm.refused
    for _ in range(MIN_BACKLOG + 10):
        queue.add()
    assert adm.admit()  # all fresh, under the limit
    for _ in range(adm.limit()):
        queue.add()
    assert not adm.admit()  # too many to drain within twice the bound
    queue.serve(0.02, rate=2000)
    queue.clock.advance(0.03)
    assert not adm.admit() and adm.refused == refused + 2  # and now too old as well
    queue.serve(1.0, rate=1000)
    assert not queue.waiting and adm.admit()


@pytest.mark.parametrize("overload", [1.0, 2.0, 5.0])
def test_offered_beyond_capacity_every_admitted_reply_waits_about_the_bound(overload):
    queue = Queue(Clock())
    adm = _admission(queue, delay_s=0.03)
    capacity = 2000.0
    per_ms = capacity * overload / 1000
    credit = 0.0
    for _ in range(5000):  # 5 s of arrivals, 1 ms steps
        credit += per_ms
        while credit >= 1:
            credit -= 1
            if adm.admit():
                queue.add()
        queue.serve(0.001, rate=capacity)
    queue.serve(1.0, rate=capacity)
    assert not queue.waiting
    assert max(queue.latencies) <= 2 * 0.03 + 0.01
    served = len(queue.latencies) / 5
    assert served >= 0.95 * min(capacity, capacity * overload)  # the door never starves the server
    if overload > 1.5:
        assert adm.refused > 0


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
