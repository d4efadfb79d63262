"""Work kept off the reactor thread, in its thread pool: database figures too costly for it (counts
over big tables), cached (:class:`Cached`: readers on the reactor thread get the last value at once
and start a refresh when it is older than ``max_age_s``; at most one refresh runs at a time), and
periodic jobs (:class:`EveryInThread`: the WAL checkpoints, the allocator's trims)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

__all__ = ["Cached", "EveryInThread", "in_thread_of"]

log = Logger(namespace="gateway.offthread")
T = TypeVar("T")
InThread = Callable[[Callable[[], Any]], defer.Deferred]


def in_thread_of(reactor: Any) -> InThread:
    """Run a blocking call in ``reactor``'s thread pool; a fake clock (tests) has none: run it now."""
    if hasattr(reactor, "getThreadPool"):
        return lambda f: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f)
    return defer.maybeDeferred


class Cached(Generic[T]):
    """The last result of ``compute`` (None until the first one is in)."""

    def __init__(self, compute: Callable[[], T], now: Callable[[], float], in_thread: InThread,
                 max_age_s: float = 5.0, what: str = "figures"):
        self.compute, self.now, self.in_thread = compute, now, in_thread
        self.max_age_s, self.what = max_age_s, what
        self.value: T | None = None
        self.at = float("-inf")
        self._running = False

    def get(self) -> T | None:
        if not self._running and self.now() - self.at >= self.max_age_s:
            self.refresh()
        return self.value

    def refresh(self) -> defer.Deferred:
        self._running = True
        started = self.now()
        d = self.in_thread(self.compute)
        d.addCallbacks(lambda value: self._store(value, started), self._failed)
        return d

    def _store(self, value: T, started: float) -> T:
        self.value, self.at, self._running = value, started, False
        return value

    def _failed(self, failure: Any) -> None:
        self._running = False
        self.at = self.now()  # try again after max_age_s, not on every read
        log.failure("computing {what} failed; serving the last ones", failure, what=self.what)


class EveryInThread(service.Service):
    """:meth:`job` in the reactor's thread pool every :meth:`every_s` seconds (0: never), one at a time:
    a tick while one runs waits for it; stopping returns the one running (or None)."""

    what = "periodic job"

    def __init__(self, gateway: Any):
        self.gateway = gateway
        self._loop: task.LoopingCall | None = None
        self._running: Any = None

    def every_s(self) -> float:
        raise NotImplementedError

    def job(self) -> Any:
        raise NotImplementedError

    def startService(self) -> None:
        super().startService()
        every = self.every_s()
        if every <= 0:
            return
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.gateway.reactor
        self._loop.start(every, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running

    def tick(self) -> Any:
        if self._running is not None:
            return self._running
        d = self._running = in_thread_of(self.gateway.reactor)(self.job)
        d.addErrback(lambda f: log.failure("{what} failed", f, what=self.what))
        d.addBoth(self._done)  # after _running is set: a clock without threads has run the job already
        return d

    def _done(self, result: Any) -> Any:
        self._running = None
        return result
