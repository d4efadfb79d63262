"""Database figures too costly for the reactor thread (counts over big tables), computed in the
reactor's thread pool and cached: readers on the reactor thread get the last value at once and
start a refresh when it is older than ``max_age_s``; at most one refresh runs at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet import defer, threads
from twisted.logger import Logger

__all__ = ["Cached", "in_thread_of"]

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
