"""The worker group's coordination protocol, sans-IO: JSON lines between the parent and its workers.

Everything an account promises across worker processes is decided here, in the parent, by
pure state machines (no sockets, no Twisted, time from an injected clock):

- bind counts: a worker asks ``bind`` before accepting one and says ``unbind`` when it ends;
  a worker that goes away releases all of its binds;
- msg/s throttle: one token bucket per account in the parent; workers lease tokens in chunks
  (``tokens``) and spend them locally, so a submit_sm never waits for the parent;
- events: ``publish`` sends an event to every other worker (outbox rows due, a subscriber
  changed, fixtures reloaded); the parent itself can send events to all;
- ``ready``: a worker serves; the parent prints the group's one ready line once all have;
- SMPP connections: the parent accepts them and hands each (its file descriptor, then a ``conn``
  line) to the ready worker holding the fewest (ties in turn); the worker answers ``conn_taken``
  once it adopted it (or could not) and ``conn_closed`` when one ends, so the counts stay true.
  With no ready worker a connection is held (at most :data:`MAX_HELD`, :data:`HOLD_S` seconds).

Wire format: one JSON object per line, UTF-8, at most :data:`MAX_LINE` bytes.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.smpp.ratelimit import TokenBucket

__all__ = ["HOLD_S", "MAX_HELD", "MAX_LINE", "ClusterProtocolError", "Coordinator", "Handoff", "LeasedBucket",
           "LineCodec", "WorkerLink", "burst_of", "chunk_of"]

MAX_LINE = 65536
HOLD_S = 5.0  # an SMPP connection accepted while no worker is ready waits this long for one...
MAX_HELD = 128  # ...and at most this many wait; more are closed at once


def burst_of(rate: float) -> float:
    """The burst an account may send at once: the same with one worker as with many."""
    return max(1.0, rate / 10)


def chunk_of(rate: float) -> int:
    """Tokens a worker leases at a time: half the burst, so that a burst read in one reactor turn
    (where no lease can be answered) is admitted as one process would admit it."""
    return max(1, int(burst_of(rate) / 2))


class ClusterProtocolError(ValueError):
    """A peer sent something that is not a line of JSON object (or a line too long)."""


class LineCodec:
    """Bytes in any chunking -> JSON objects; objects -> bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def receive(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise ClusterProtocolError(f"line longer than {MAX_LINE} bytes")
                return out
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if line.strip():
                out.append(self._decode(line))

    @staticmethod
    def _decode(line: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(line)
        except ValueError as exc:
            raise ClusterProtocolError(f"not JSON: {exc}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise ClusterProtocolError("expected a JSON object with an 'op'")
        return msg

    @staticmethod
    def encode(msg: dict[str, Any]) -> bytes:
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# --- the parent's side ------------------------------------------------------------------------------

Outgoing = list[tuple[int, dict[str, Any]]]  # (worker, message)


@dataclass
class _Worker:
    binds: Counter = field(default_factory=Counter)
    ports: dict[str, int] | None = None
    smpp: int = 0  # SMPP connections handed to it and not yet closed
    in_transit: set[int] = field(default_factory=set)  # handed, not yet confirmed (conn_taken)


@dataclass(frozen=True)
class Handoff:
    """Send ``handle``'s file descriptor, then ``msg``, to ``worker``."""

    worker: int
    handle: Any
    msg: dict[str, Any]


class Coordinator:
    """Bind counts, token buckets, event fan-out and SMPP connection placement for one worker group."""

    def __init__(self, now: Callable[[], float]):
        self.now = now
        self.workers: dict[int, _Worker] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.ready_listeners: list[Callable[[int, dict[str, int]], None]] = []
        # a handed connection's handle once its worker answered conn_taken: the parent closes its copy
        self.released_listeners: list[Callable[[Any], None]] = []
        self.held: deque[tuple[float, Any, str]] = deque()  # (accepted at, handle, peer)
        self.handles: dict[int, tuple[int, Any]] = {}  # conn id -> (worker, handle) until conn_taken
        self._conn_ids = 0
        self._last_pick = -1

    def connected(self, worker: int) -> None:
        self.workers[worker] = _Worker()

    def disconnected(self, worker: int) -> list[Any]:
        """A worker went away (exit or crash): its binds and connections are gone with it. Returns the
        handles of the connections handed to it and not confirmed, for the caller to close."""
        gone = self.workers.pop(worker, None)
        if gone is None:
            return []
        return [self.handles.pop(cid)[1] for cid in sorted(gone.in_transit) if cid in self.handles]

    # --- SMPP connections ---------------------------------------------------------------------------

    def smpp_counts(self) -> dict[int, int]:
        """SMPP connections per ready worker (what placement compares)."""
        return {w: state.smpp for w, state in sorted(self.workers.items()) if state.ports is not None}

    def accept(self, handle: Any, peer: str) -> tuple[list[Handoff], list[Any]]:
        """A connection accepted on the SMPP port: where it goes (or held), and what to close now."""
        self.held.append((self.now(), handle, peer))
        return self.place()

    def place(self) -> tuple[list[Handoff], list[Any]]:
        """Hand the held connections to ready workers, fewest connections first (ties: in turn after
        the last one picked); close those held too long or beyond :data:`MAX_HELD`."""
        handoffs: list[Handoff] = []
        while self.held:
            worker = self._pick()
            if worker is None:
                break
            _at, handle, peer = self.held.popleft()
            self._conn_ids += 1
            state = self.workers[worker]
            state.smpp += 1
            state.in_transit.add(self._conn_ids)
            self.handles[self._conn_ids] = (worker, handle)
            handoffs.append(Handoff(worker, handle, {"op": "conn", "id": self._conn_ids, "peer": peer}))
        close: list[Any] = []
        while self.held and (len(self.held) > MAX_HELD or self.now() - self.held[0][0] >= HOLD_S):
            close.append(self.held.popleft()[1])
        return handoffs, close

    def _pick(self) -> int | None:
        ready = [w for w, state in self.workers.items() if state.ports is not None]
        if not ready:
            return None
        fewest = min(self.workers[w].smpp for w in ready)
        tied = sorted(w for w in ready if self.workers[w].smpp == fewest)
        worker = next((w for w in tied if w > self._last_pick), tied[0])
        self._last_pick = worker
        return worker

    def _conn_taken(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        """The worker adopted connection ``id`` (``ok``) or could not (it is closed: not counted)."""
        cid, ok = int(msg["id"]), bool(msg["ok"])
        state = self.workers[worker]
        if cid not in state.in_transit:
            return []
        state.in_transit.discard(cid)
        if not ok:
            state.smpp = max(0, state.smpp - 1)
        _worker, handle = self.handles.pop(cid)
        for listener in self.released_listeners:
            listener(handle)
        return []

    def _conn_closed(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        state = self.workers[worker]
        state.smpp = max(0, state.smpp - 1)
        return []

    def binds(self, account: str) -> int:
        return sum(w.binds[account] for w in self.workers.values())

    def handle(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        """Answer one message of ``worker``; a message with missing or mistyped fields raises
        :class:`ClusterProtocolError` and changes nothing."""
        handler = _HANDLERS.get(msg["op"])
        if handler is None or worker not in self.workers:
            return []
        try:
            return handler(self, worker, msg)
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterProtocolError(f"bad {msg['op']!r} message: {exc!r}") from None

    def broadcast(self, event: dict[str, Any], *, exclude: int | None = None) -> Outgoing:
        return [(w, {"op": "event", "event": event}) for w in self.workers if w != exclude]

    def _bind(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        account, limit = str(msg["account"]), int(msg["max"])
        ok = self.binds(account) < limit
        if ok:
            self.workers[worker].binds[account] += 1
        return [(worker, {"op": "bind_ok", "id": msg["id"], "ok": ok})]

    def _unbind(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        binds = self.workers[worker].binds
        account = str(msg["account"])
        if binds[account] > 0:
            binds[account] -= 1
        return []

    def _tokens(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        account, rate, want = str(msg["account"]), float(msg["rate"]), max(0, int(msg["want"]))
        bucket = self.buckets.get(account)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[account] = TokenBucket(rate=rate, burst=burst_of(rate), now=self.now)
        granted = min(want, int(bucket.tokens))
        if granted:
            bucket.try_take(granted)
        return [(worker, {"op": "tokens_ok", "account": account, "granted": granted, "want": want})]

    def _publish(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        return self.broadcast(msg["event"], exclude=worker)

    def _ready(self, worker: int, msg: dict[str, Any]) -> Outgoing:
        ports = {str(k): int(v) for k, v in dict(msg["ports"]).items()}
        self.workers[worker].ports = ports
        for listener in self.ready_listeners:
            listener(worker, ports)
        return []


_HANDLERS: dict[str, Callable[[Coordinator, int, dict[str, Any]], Outgoing]] = {
    "bind": Coordinator._bind, "unbind": Coordinator._unbind, "tokens": Coordinator._tokens,
    "publish": Coordinator._publish, "ready": Coordinator._ready,
    "conn_taken": Coordinator._conn_taken, "conn_closed": Coordinator._conn_closed,
}


# --- a worker's side --------------------------------------------------------------------------------

class LeasedBucket:
    """An account's msg/s budget on one worker, spent from tokens leased by the parent in chunks.

    ``try_take`` never waits: it spends a leased token, or borrows up to one chunk ahead (repaid
    by the next lease), so an idle account's first message is not refused for want of a lease.
    When a lease comes back short the account is out of tokens: no borrowing, and no new lease
    asked, until a chunk may have accumulated. Whatever the timing, a worker is never more than
    one chunk ahead of what the parent granted. ``request(want)`` asks for a lease;
    :meth:`granted` takes the answer.
    """

    def __init__(self, rate: float, now: Callable[[], float], request: Callable[[int], None]):
        self.rate = rate
        self.chunk = chunk_of(rate)
        self.now = now
        self._request = request
        self.credit = 0.0
        self.in_flight = False
        self._short_until = 0.0  # after a short lease: no borrowing, no asking, until then

    def try_take(self) -> bool:
        ok = self.credit >= 1 or (self.credit > -self.chunk and self.now() >= self._short_until)
        if ok:
            self.credit -= 1
        self._top_up()
        return ok

    def _top_up(self) -> None:
        if self.in_flight or self.credit >= self.chunk / 2 or self.now() < self._short_until:
            return
        self.in_flight = True
        self._request(int(self.chunk - self.credit))

    def granted(self, granted: int, want: int) -> None:
        self.in_flight = False
        self.credit += granted
        self._short_until = 0.0 if granted >= want else self.now() + self.chunk / self.rate


class WorkerLink:
    """A worker's end of the protocol: requests with answers by callback, events to a handler."""

    def __init__(self, worker: int, on_event: Callable[[dict[str, Any]], None],
                 on_output: Callable[[], None] = lambda: None,
                 on_conn: Callable[[int, str], bool] | None = None):
        self.worker = worker
        self.on_event = on_event
        self.on_output = on_output  # called when there are bytes to send
        # adopts a handed SMPP connection (its file descriptor, the peer): True once it serves it
        self.on_conn = on_conn
        self.fds: deque[int] = deque()  # received, not yet claimed by a conn line (they arrive first)
        self.codec = LineCodec()
        self._out = bytearray(LineCodec.encode({"op": "hello", "worker": worker}))
        self._ids = 0
        self._pending: dict[int, Callable[[bool], None]] = {}
        self.leases: dict[str, LeasedBucket] = {}

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send(self, msg: dict[str, Any]) -> None:
        self._out += LineCodec.encode(msg)
        self.on_output()

    def acquire_bind(self, account: str, limit: int, callback: Callable[[bool], None]) -> None:
        self._ids += 1
        self._pending[self._ids] = callback
        self._send({"op": "bind", "id": self._ids, "account": account, "max": limit})

    def release_bind(self, account: str) -> None:
        self._send({"op": "unbind", "account": account})

    def bucket(self, account: str, rate: float, now: Callable[[], float]) -> LeasedBucket:
        bucket = self.leases.get(account)
        if bucket is None or bucket.rate != rate:
            bucket = self.leases[account] = LeasedBucket(
                rate, now, lambda want: self._send({"op": "tokens", "account": account, "rate": rate, "want": want}))
        return bucket

    def publish(self, event: dict[str, Any]) -> None:
        self._send({"op": "publish", "event": event})

    def ready(self, ports: dict[str, int]) -> None:
        self._send({"op": "ready", "ports": ports})

    def fd_received(self, fd: int) -> None:
        self.fds.append(fd)

    def conn_closed(self) -> None:
        """An SMPP connection the parent handed here has ended."""
        self._send({"op": "conn_closed"})

    def receive_data(self, data: bytes) -> None:
        """Answers and events from the parent; junk raises :class:`ClusterProtocolError`."""
        for msg in self.codec.receive(data):
            try:
                self._dispatch(msg)
            except (KeyError, TypeError, ValueError) as exc:
                raise ClusterProtocolError(f"bad {msg['op']!r} message: {exc!r}") from None

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "bind_ok":
            callback = self._pending.pop(int(msg["id"]), None)
            if callback is not None:
                callback(bool(msg["ok"]))
        elif op == "tokens_ok":
            bucket = self.leases.get(str(msg["account"]))
            if bucket is not None:
                bucket.granted(int(msg["granted"]), int(msg["want"]))
        elif op == "event":
            self.on_event(dict(msg["event"]))
        elif op == "conn":
            cid, peer = int(msg["id"]), str(msg["peer"])
            fd = self.fds.popleft() if self.fds else None
            ok = fd is not None and self.on_conn is not None and self.on_conn(fd, peer)
            self._send({"op": "conn_taken", "id": cid, "ok": ok})

    def lost(self) -> None:
        """The parent is gone: pending bind requests are refused."""
        pending, self._pending = self._pending, {}
        for callback in pending.values():
            callback(False)
