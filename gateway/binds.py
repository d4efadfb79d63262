"""Who is bound right now: per-account bind counts, receivers for round-robin delivery."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Protocol


class Receiver(Protocol):
    system_id: str
    bind_kind: str  # tx, rx, trx

    def send_capacity(self) -> int: ...


class BindAdmission(Protocol):
    """Bind counts shared by a worker group (gateway.cluster): asked before a bind, told after it ends."""

    def acquire_bind(self, system_id: str, limit: int, decided: Callable[[bool], None]) -> None: ...

    def release_bind(self, system_id: str) -> None: ...


class BindRegistry:
    def __init__(self) -> None:
        self.admission: BindAdmission | None = None  # None: this process is the only one
        self._binds: dict[str, list[Receiver]] = defaultdict(list)
        self._rr: dict[str, int] = defaultdict(int)
        self._receivers: dict[str, list[Receiver]] = {}  # cache, rebuilt when binds change
        self.generation = 0  # bumps on every bind change, so users can cache too

    def count(self, system_id: str) -> int:
        return len(self._binds.get(system_id, ()))

    def reserve(self, system_id: str, limit: int, decided: Callable[[bool], None]) -> None:
        """Decide whether one more bind of the account stays within ``limit`` (across the group)."""
        if self.admission is None:
            decided(self.count(system_id) < limit)
        else:
            self.admission.acquire_bind(system_id, limit, decided)

    def unreserve(self, system_id: str) -> None:
        """A reserved bind that did not happen after all (the connection went away meanwhile)."""
        if self.admission is not None:
            self.admission.release_bind(system_id)

    def add(self, binding: Receiver) -> None:
        self._binds[binding.system_id].append(binding)
        self._changed()

    def _changed(self) -> None:
        self._receivers.clear()
        self.generation += 1

    def remove(self, binding: Receiver) -> None:
        binds = self._binds.get(binding.system_id)
        if binds and binding in binds:
            binds.remove(binding)
            if not binds:
                del self._binds[binding.system_id]
            self._changed()
            self.unreserve(binding.system_id)

    def receivers(self, system_id: str) -> list[Receiver]:
        found = self._receivers.get(system_id)
        if found is None:
            found = self._receivers[system_id] = [b for b in self._binds.get(system_id, ())
                                                  if b.bind_kind in ("rx", "trx")]
        return found

    def accounts_with_receivers(self) -> list[str]:
        return [sid for sid, binds in self._binds.items() if any(b.bind_kind in ("rx", "trx") for b in binds)]

    def next_receiver(self, system_id: str) -> Receiver | None:
        """Round-robin over the account's RX/TRX binds that have window room."""
        receivers = self.receivers(system_id)
        if not receivers:
            return None
        start = self._rr[system_id]
        for i in range(len(receivers)):
            candidate = receivers[(start + i) % len(receivers)]
            if candidate.send_capacity() > 0:
                self._rr[system_id] = (start + i + 1) % len(receivers)
                return candidate
        return None

    def capacity(self, system_id: str) -> int:
        return sum(max(0, r.send_capacity()) for r in self.receivers(system_id))

    def all(self) -> Iterator[Receiver]:
        for binds in list(self._binds.values()):
            yield from list(binds)

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for sid, binds in self._binds.items():
            kinds: dict[str, int] = defaultdict(int)
            for b in binds:
                kinds[b.bind_kind] += 1
            out[sid] = dict(kinds)
        return out
