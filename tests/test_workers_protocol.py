"""The worker group's coordination core (gateway.cluster_protocol), sans-IO: bytes fed one at a time."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.cluster_protocol import (
    HOLD_S,
    MAX_HELD,
    MAX_LINE,
    ClusterProtocolError,
    Coordinator,
    LeasedBucket,
    LineCodec,
    WorkerLink,
    chunk_of,
)


def _feed_bytewise(codec: LineCodec, data: bytes) -> list[dict]:
    out: list[dict] = []
    for i in range(len(data)):
        out.extend(codec.receive(data[i:i + 1]))
    return out


def test_codec_byte_at_a_time_and_odd_chunks():
    msgs = [{"op": "bind", "id": 1, "account": "tester", "max": 4}, {"op": "event", "event": {"kind": "wake"}},
            {"op": "publish", "event": {"kind": "subscriber", "msisdn": "13800000001"}}]
    wire = b"".join(LineCodec.encode(m) for m in msgs)
    assert _feed_bytewise(LineCodec(), wire) == msgs
    codec, got = LineCodec(), []
    for start in range(0, len(wire), 7):
        got.extend(codec.receive(wire[start:start + 7]))
    assert got == msgs


@pytest.mark.parametrize("line, reason", [
    (b"not json\n", "not JSON"), (b"[1, 2]\n", "JSON object"), (b'{"no_op": 1}\n', "JSON object"),
    (b"x" * (MAX_LINE + 1), "longer than"),
])
def test_codec_refuses_junk(line, reason):
    with pytest.raises(ClusterProtocolError, match=reason):
        LineCodec().receive(line)


def _group(workers=(0, 1)) -> tuple[Coordinator, Clock]:
    clock = Clock()
    coordinator = Coordinator(clock.seconds)
    for w in workers:
        coordinator.connected(w)
    return coordinator, clock


def _bind(coordinator: Coordinator, worker: int, n: int = 1, limit: int = 4) -> list[bool]:
    return [coordinator.handle(worker, {"op": "bind", "id": i, "account": "tester", "max": limit})[0][1]["ok"]
            for i in range(n)]


def test_bind_limit_holds_across_workers_and_a_dead_worker_frees_its_binds():
    coordinator, _ = _group()
    assert _bind(coordinator, 0, 3) == [True, True, True]
    assert _bind(coordinator, 1, 2) == [True, False]  # the fifth bind, on the other worker
    coordinator.handle(0, {"op": "unbind", "account": "tester"})
    assert _bind(coordinator, 1) == [True]
    coordinator.disconnected(1)  # crashed: both of its binds are gone
    assert coordinator.binds("tester") == 2
    assert _bind(coordinator, 0, 3) == [True, True, False]


def test_a_bad_message_changes_nothing():
    coordinator, _ = _group()
    with pytest.raises(ClusterProtocolError):
        coordinator.handle(0, {"op": "bind", "id": 1, "account": "tester", "max": "four"})
    with pytest.raises(ClusterProtocolError):
        coordinator.handle(0, {"op": "tokens", "account": "tester", "rate": 10})
    assert coordinator.binds("tester") == 0
    assert coordinator.handle(7, {"op": "bind", "id": 1, "account": "tester", "max": 4}) == []  # not connected
    assert coordinator.handle(0, {"op": "nonsense"}) == []


def test_tokens_are_one_bucket_for_the_account():
    coordinator, clock = _group()

    def lease(worker: int, want: int) -> int:
        return coordinator.handle(worker, {"op": "tokens", "account": "a", "rate": 100, "want": want})[0][1]["granted"]

    assert lease(0, 6) == 6 and lease(1, 6) == 4 and lease(0, 6) == 0  # burst 10 shared by both workers
    clock.advance(0.05)
    assert lease(1, 10) == 5


def test_publish_reaches_every_other_worker():
    coordinator, _ = _group((0, 1, 2))
    out = coordinator.handle(1, {"op": "publish", "event": {"kind": "wake"}})
    assert out == [(0, {"op": "event", "event": {"kind": "wake"}}), (2, {"op": "event", "event": {"kind": "wake"}})]


def test_ready_is_reported():
    coordinator, _ = _group()
    seen = []
    coordinator.ready_listeners.append(lambda w, ports: seen.append((w, ports)))
    coordinator.handle(1, {"op": "ready", "ports": {"smpp": 2775}})
    assert seen == [(1, {"smpp": 2775})]


def test_leased_bucket_borrows_once_then_refuses_until_tokens_come():
    clock = Clock()
    asked: list[int] = []
    bucket = LeasedBucket(500, clock.seconds, asked.append)
    chunk = chunk_of(500)
    assert bucket.try_take()  # the first message of an idle account is not refused for want of a lease
    assert asked == [chunk + 1]
    for _ in range(chunk - 1):
        assert bucket.try_take()
    assert not bucket.try_take()  # borrowed a whole chunk; the lease is still out
    bucket.granted(0, chunk * 2)  # the parent has nothing left
    assert not bucket.try_take() and len(asked) == 1  # and it does not ask again at once
    clock.advance(chunk / 500)
    assert not bucket.try_take() and len(asked) == 2
    bucket.granted(chunk * 2, chunk * 2)
    assert bucket.try_take()


class _Pipe:
    """A coordinator and two worker links joined in memory, delivering one byte at a time."""

    def __init__(self):
        self.clock = Clock()
        self.coordinator = Coordinator(self.clock.seconds)
        self.events: dict[int, list[dict]] = {0: [], 1: []}
        self.links = {w: WorkerLink(w, self.events[w].append) for w in (0, 1)}
        self.codecs = {w: LineCodec() for w in (0, 1)}
        self.hello: set[int] = set()

    def run(self) -> None:
        for w, link in self.links.items():
            for msg in _feed_bytewise(self.codecs[w], link.data_to_send()):
                if msg["op"] == "hello":
                    self.coordinator.connected(msg["worker"])
                    continue
                for target, answer in self.coordinator.handle(w, msg):
                    _feed_bytewise_into(self.links[target], LineCodec.encode(answer))


def _feed_bytewise_into(link: WorkerLink, data: bytes) -> None:
    for i in range(len(data)):
        link.receive_data(data[i:i + 1])


def test_links_and_coordinator_end_to_end():
    pipe = _Pipe()
    decided: list[bool] = []
    for w in (0, 1, 0, 1, 1):
        pipe.links[w].acquire_bind("tester", 4, decided.append)
    pipe.run()
    assert decided == [True, True, True, True, False]
    pipe.links[0].publish({"kind": "subscriber", "msisdn": "13800000001"})
    pipe.run()
    assert pipe.events == {0: [], 1: [{"kind": "subscriber", "msisdn": "13800000001"}]}
    bucket = pipe.links[1].bucket("slow", 50, pipe.clock.seconds)
    taken = 0
    for _ in range(20):  # a lease answered between every two messages, no time passing
        taken += bucket.try_take()
        pipe.run()
    assert 5 <= taken <= 5 + 2 * chunk_of(50)  # the burst, plus what a lease in flight may borrow
    assert not bucket.try_take()


def test_a_lost_parent_refuses_pending_binds():
    link = WorkerLink(0, lambda e: None)
    decided: list[bool] = []
    link.acquire_bind("tester", 4, decided.append)
    link.lost()
    assert decided == [False]


def test_a_worker_refuses_junk_from_the_parent():
    link = WorkerLink(0, lambda e: None)
    with pytest.raises(ClusterProtocolError):
        link.receive_data(b'{"op": "bind_ok"}\n')


# --- SMPP connections: the parent places each on the ready worker with the fewest ---------------------

def _ready_group(workers=(0, 1)) -> tuple[Coordinator, Clock, list]:
    coordinator, clock = _group(workers)
    released: list = []
    coordinator.released_listeners.append(released.append)
    for w in workers:
        coordinator.handle(w, {"op": "ready", "ports": {"smpp": 2775}})
    return coordinator, clock, released


def _accept(coordinator: Coordinator, handle: str) -> int | None:
    """Accept ``handle``; the worker it went to (None: held), its conn line checked."""
    handoffs, close = coordinator.accept(handle, f"127.0.0.1:{4000 + len(handle)}")
    assert close == []
    if not handoffs:
        return None
    (handoff,) = handoffs
    assert handoff.handle == handle and handoff.msg["op"] == "conn" and handoff.msg["peer"].startswith("127.0.0.1:")
    return handoff.worker


def _taken(coordinator: Coordinator, worker: int, ok: bool = True) -> None:
    cid = max(coordinator.workers[worker].in_transit)
    coordinator.handle(worker, {"op": "conn_taken", "id": cid, "ok": ok})


def test_connections_go_to_the_fewest_and_ties_take_turns():
    coordinator, _, released = _ready_group((0, 1, 2))
    assert [_accept(coordinator, f"c{i}") for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert coordinator.smpp_counts() == {0: 2, 1: 2, 2: 2}
    coordinator.handle(1, {"op": "conn_closed"})
    coordinator.handle(1, {"op": "conn_closed"})
    coordinator.handle(2, {"op": "conn_closed"})
    assert coordinator.smpp_counts() == {0: 2, 1: 0, 2: 1}
    # 1 has none; then 1 and 2 tie at one (2 is next after 1); then 1 alone has one; then all tie at two
    assert [_accept(coordinator, f"d{i}") for i in range(4)] == [1, 2, 1, 2]
    assert released == []  # the parent keeps its copies until each worker has said conn_taken


def test_conn_taken_releases_the_parents_copy_and_a_refusal_is_not_counted():
    coordinator, _, released = _ready_group()
    assert _accept(coordinator, "a") == 0 and _accept(coordinator, "b") == 1
    _taken(coordinator, 0)
    _taken(coordinator, 1, ok=False)  # the worker could not adopt it: it is closed, not counted
    assert released == ["a", "b"]
    assert coordinator.smpp_counts() == {0: 1, 1: 0}
    coordinator.handle(0, {"op": "conn_taken", "id": 1, "ok": True})  # again, or someone else's id: nothing
    coordinator.handle(1, {"op": "conn_taken", "id": 1, "ok": False})
    assert released == ["a", "b"] and coordinator.smpp_counts() == {0: 1, 1: 0}
    assert _accept(coordinator, "c") == 1


def test_a_lost_worker_takes_its_connections_and_a_restarted_one_starts_from_none():
    coordinator, _, released = _ready_group()
    for handle in "abcd":
        _accept(coordinator, handle)
    _taken(coordinator, 0)
    assert coordinator.disconnected(1) == ["b", "d"]  # handed, never confirmed: the parent closes them
    assert coordinator.disconnected(1) == []
    assert coordinator.smpp_counts() == {0: 2}
    assert [_accept(coordinator, h) for h in "ef"] == [0, 0]  # the survivor takes them all
    coordinator.connected(1)  # restarted: not placed on before it is ready
    assert _accept(coordinator, "g") == 0 and coordinator.smpp_counts() == {0: 5}
    coordinator.handle(1, {"op": "ready", "ports": {"smpp": 2775}})
    assert [_accept(coordinator, h) for h in "hijkl"] == [1, 1, 1, 1, 1]
    assert _accept(coordinator, "m") in (0, 1) and coordinator.smpp_counts() in ({0: 6, 1: 5}, {0: 5, 1: 6})


def test_with_no_ready_worker_connections_wait_a_few_seconds_then_are_closed():
    coordinator, clock = _group(())
    assert _accept(coordinator, "a") is None
    clock.advance(HOLD_S / 2)
    assert _accept(coordinator, "b") is None
    coordinator.connected(0)
    assert coordinator.place() == ([], [])  # connected, not ready yet
    clock.advance(HOLD_S / 2)
    assert coordinator.place() == ([], ["a"])  # waited too long
    coordinator.handle(0, {"op": "ready", "ports": {"smpp": 2775}})
    handoffs, close = coordinator.place()
    assert [(h.worker, h.handle) for h in handoffs] == [(0, "b")] and close == []
    assert not coordinator.held


def test_held_connections_are_bounded():
    coordinator, _ = _group(())
    for i in range(MAX_HELD):
        assert coordinator.accept(i, "127.0.0.1:1") == ([], [])
    assert coordinator.accept("one too many", "127.0.0.1:1") == ([], [0])  # the oldest goes
    assert len(coordinator.held) == MAX_HELD


def test_conn_messages_are_checked():
    coordinator, _, _ = _ready_group()
    with pytest.raises(ClusterProtocolError):
        coordinator.handle(0, {"op": "conn_taken", "id": "x", "ok": True})
    assert coordinator.handle(7, {"op": "conn_closed"}) == []  # not connected
    coordinator.handle(0, {"op": "conn_closed"})  # more closes than connections: never below zero
    assert coordinator.smpp_counts() == {0: 0, 1: 0}


def test_worker_adopts_descriptors_in_order_and_reports_closes():
    adopted: list[tuple[int, str]] = []

    def adopt(fd: int, peer: str) -> bool:
        adopted.append((fd, peer))
        return fd != 13  # 13 cannot be adopted (the worker closes it)

    link = WorkerLink(0, lambda e: None, on_conn=adopt)
    link.data_to_send()
    link.fd_received(11)
    link.fd_received(13)
    wire = b"".join(LineCodec.encode({"op": "conn", "id": i, "peer": f"10.0.0.1:{i}"}) for i in (1, 2, 3))
    _feed_bytewise_into(link, wire)  # the third line came without a descriptor
    assert adopted == [(11, "10.0.0.1:1"), (13, "10.0.0.1:2")]
    link.conn_closed()
    assert _feed_bytewise(LineCodec(), link.data_to_send()) == [
        {"op": "conn_taken", "id": 1, "ok": True}, {"op": "conn_taken", "id": 2, "ok": False},
        {"op": "conn_taken", "id": 3, "ok": False}, {"op": "conn_closed"}]


def test_connections_end_to_end_byte_by_byte():
    pipe = _Pipe()
    fds = iter(range(100, 200))
    held: dict[int, list[int]] = {0: [], 1: []}
    for w in (0, 1):
        pipe.links[w].on_conn = lambda fd, peer, w=w: held[w].append(fd) is None
        pipe.links[w].ready({"smpp": 2775})
    pipe.run()
    released: list[str] = []
    pipe.coordinator.released_listeners.append(released.append)

    def accept(name: str) -> None:
        handoffs, _ = pipe.coordinator.accept(name, "127.0.0.1:9")
        for h in handoffs:  # the descriptor first, then its line
            pipe.links[h.worker].fd_received(next(fds))
            _feed_bytewise_into(pipe.links[h.worker], LineCodec.encode(h.msg))

    for name in "abcd":
        accept(name)
    pipe.run()
    assert held == {0: [100, 102], 1: [101, 103]} and sorted(released) == list("abcd")
    pipe.links[0].conn_closed()
    pipe.links[0].conn_closed()
    pipe.run()
    accept("e")
    accept("f")
    pipe.run()
    assert held == {0: [100, 102, 104, 105], 1: [101, 103]}
    assert pipe.coordinator.smpp_counts() == {0: 2, 1: 2}
