"""A multi-part reply waits until its account's windows have room for every part.

Sending the parts that fit and failing the rest would resend the whole row later, so the
handset would get the first parts twice (with fewer binds per process, as in a worker group,
this happened to one reply in ten under load).
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock

from gateway.binds import BindRegistry
from gateway.delivery import OutRow, SmppDeliverer


class Receiver:
    def __init__(self, window: int):
        self.system_id, self.bind_kind, self.window = "tester", "trx", window
        self.pending: list = []
        self.parts = 0

    def send_capacity(self) -> int:
        return self.window - len(self.pending)

    def send_deliver_sm(self, params: dict, on_response) -> None:
        self.parts += 1
        self.pending.append(on_response)

    def answer_all(self) -> None:
        pending, self.pending = self.pending, []
        for callback in pending:
            callback(0)


def _row(n: int) -> OutRow:
    return OutRow(f"m{n}", "reply", "tester", "10086", "13800000001", "shelf", None)


def test_three_part_rows_wait_for_room_for_all_parts():
    clock = Clock()
    gateway = SimpleNamespace(settings={"outbox.rate": 1000.0}, now=clock.seconds, reactor=clock)
    registry = BindRegistry()
    receiver = Receiver(window=4)
    registry.add(receiver)
    deliverer = SmppDeliverer(gateway, registry, "me", build_parts=lambda row, ref: [{}, {}, {}])
    deliverer.running = True
    deliverer.ready.extend([_row(1), _row(2)])
    deliverer._send_ready()
    assert receiver.parts == 3 and len(deliverer.ready) == 1  # the second row waits: 1 slot for 3 parts
    receiver.answer_all()
    deliverer._send_ready()
    receiver.answer_all()
    assert receiver.parts == 6 and not deliverer.ready
    assert deliverer._failed == [] and [r.message_id for r in deliverer._done] == ["m1", "m2"]
