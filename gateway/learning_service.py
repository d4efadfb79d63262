"""The learned shelf's periodic refresh: fold the events into ``learned_arms`` and swap the snapshot.

Runs off the reactor thread (the fold is a grouped scan of the window's events); the new
:class:`offers.learning.LearnedSnapshot` replaces the router's in one assignment, so the "200"
path only ever reads memory. Every process on a database runs its own; ops' freeze and reset
(HTTP) reach the others at their next refresh, ``learning.refresh_s`` at most.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import task, threads
from twisted.logger import Logger

from offers import learning

log = Logger(namespace="gateway.learning")


class LearningService(service.Service):
    def __init__(self, gateway: Any):
        self.gateway = gateway
        self._loop: task.LoopingCall | None = None
        self._running: Any = None
        gateway.learning = self
        gateway.reload_listeners.append(lambda _snapshot: self.refresh() if self.running else None)

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = self.gateway.reactor
        self._loop.start(float(self.gateway.settings["learning.refresh_s"]), now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running

    def refresh(self) -> Any:
        """Start one refresh unless one is running; returns its Deferred (or the one running)."""
        if self._running is not None or self.gateway.snapshot is None:
            return self._running
        catalog, settings, now = self.gateway.snapshot.offers, self.gateway.settings, self.gateway.now()
        version = int(now // float(settings["learning.refresh_s"]))
        d = threads.deferToThread(self._load, catalog, settings, now, version)
        d.addCallback(self._swap)
        d.addErrback(lambda f: log.failure("learned state refresh failed; keeping the previous one", f))
        d.addBoth(self._done)
        self._running = d
        return d

    def _load(self, catalog: Any, settings: Any, now: float, version: int) -> learning.LearnedSnapshot:
        with self.gateway.db() as session:  # refresh commits its own transactions
            return learning.refresh(session, catalog, settings, now, version)

    def _swap(self, snapshot: learning.LearnedSnapshot) -> None:
        self.gateway.router.learned = snapshot

    def _done(self, result: Any) -> Any:
        self._running = None
        return result


def control(gateway: Any, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """Ops' freeze / reset, written to the shared control row, then a refresh of this process."""
    now = gateway.now()
    with gateway.db() as session, session.begin():
        if action == "reset":
            result = learning.reset(session, now, "api")
        else:
            result = learning.set_frozen(session, bool(body["frozen"]), now, "api")
    refresher = getattr(gateway, "learning", None)
    if refresher is not None:
        refresher.refresh()
    return result
