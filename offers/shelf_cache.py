"""The "200" reply of each subscriber, kept in memory so a steady-state "200" reads nothing from the database.

An entry holds what the shelf of one subscriber came to (the offer codes shown
and the reply text) for one catalog snapshot, and the time until which it
stays true by itself: the next start or end of an offer in the catalog, or
the end of one of the subscriber's refusal windows. Everything else that
changes a shelf is an event, and the router (offers/router.py) invalidates on
each: an order confirmed, a cancel, opt-out / opt-in, a refusal, any write a
transport marks with :func:`offers.router.mark_changed`; a new catalog
(fixture reload) empties the cache. A new learned snapshot (offers/learning.py,
every ``learning.refresh_s``) does not: an entry ranked under an older one keeps
its inputs (the eligible offers with their fixed scores, the template's
variables, the segment) and is ranked again from them on its next hit, so the
periodic refresh never sends 100k subscribers back to the database. The cache is a bounded LRU (entries are a
few hundred bytes; identical reply texts are shared), sized for 100k+ active
subscribers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.gcsafe import KeptDict

DEFAULT_SIZE = 250_000
MAX_SHARED_TEXTS = 50_000


@dataclass(frozen=True, slots=True)
class ShelfInputs:
    """What a shelf is re-ranked from under a new learned snapshot without reading the database."""

    # (fixed score, position in catalog.offers) of every offer on the shelf (shelf.candidates, packed: floats
    # and ints only, so the garbage collector stops tracking these tuples; :func:`unpack` gives the offers)
    candidates: tuple[tuple[float, int], ...]
    base: Any  # the reply template's subscriber variables
    segment: str  # the learned term's segment key


def pack(catalog: Any, cands: tuple[tuple[float, Any], ...]) -> tuple[tuple[float, int], ...]:
    """``(score, offer)`` pairs as ``(score, position of the offer in catalog.offers)``."""
    index = catalog.memo.get("offer.index")
    if index is None:
        index = catalog.memo["offer.index"] = {id(offer): i for i, offer in enumerate(catalog.offers)}
    return tuple((total, index[id(offer)]) for total, offer in cands)


def unpack(catalog: Any, packed: tuple[tuple[float, int], ...]) -> tuple[tuple[float, Any], ...]:
    offers = catalog.offers
    return tuple((total, offers[i]) for total, i in packed)


@dataclass(slots=True, eq=False)
class CachedShelf:
    """One subscriber's shelf; a rerank (:meth:`ShelfCache.rerank`) rewrites ``codes``, ``text``,
    ``exposure`` and ``learned`` in place, the rest is fixed when the entry is made."""

    catalog: Any  # the OffersCatalog snapshot the entry was computed from (compared by identity)
    valid_until: float
    codes: tuple[str, ...]
    text: str
    # ((rank, code) of each shown offer, segment, arm): recorded again on every hit; ints and strings in plain
    # tuples, which the garbage collector stops tracking (offers.exposures.shown)
    exposure: tuple[tuple[tuple[int, str], ...], str, str]
    learned: Any = None  # the learned snapshot ``codes`` were ranked under (compared by identity)
    inputs: ShelfInputs | None = None  # to rank again under another learned snapshot


class ShelfCache:
    """msisdn -> :class:`CachedShelf`, least recently used dropped first."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self.size = size
        self._entries: OrderedDict[str, CachedShelf] = OrderedDict()
        # shared texts, codes and exposures (equal -> one object); only strings and numbers, so a plain dict
        # would leave the collector's frozen set at each freeze and come back young (core/gcsafe.py)
        self._texts: dict[Any, Any] = KeptDict()
        self._catalog: Any = None
        self._boundaries: list[float] = []
        self.stats = {"hits": 0, "misses": 0, "invalidations": 0, "reranks": 0}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, msisdn: str, catalog: Any, now: float) -> CachedShelf | None:
        entry = self._entries.get(msisdn)
        if entry is None or entry.catalog is not catalog or now >= entry.valid_until:
            self.stats["misses"] += 1
            return None
        self._entries.move_to_end(msisdn)
        self.stats["hits"] += 1
        return entry

    def put(self, msisdn: str, catalog: Any, now: float, codes: tuple[str, ...], text: str,
            refused_until: float | None = None, exposure: tuple[tuple[tuple[int, str], ...], str, str] = ((), "", ""),
            learned: Any = None, inputs: ShelfInputs | None = None) -> CachedShelf:
        """Remember a shelf computed at ``now``; ``refused_until``: the earliest end of a refusal window."""
        if catalog is not self._catalog:
            self.invalidate_all()
            self._catalog = catalog
            self._boundaries = sorted({t for o in catalog.offers for t in (o.start_at, o.end_at) if t is not None})
        i = bisect_right(self._boundaries, now)
        valid_until = self._boundaries[i] if i < len(self._boundaries) else float("inf")
        if refused_until is not None:
            valid_until = min(valid_until, refused_until)
        return self._store(msisdn, CachedShelf(catalog, valid_until, codes, text, exposure, learned, inputs))

    def rerank(self, entry: CachedShelf, codes: tuple[str, ...], text: str,
               exposure: tuple[tuple[tuple[int, str], ...], str, str], learned: Any) -> CachedShelf:
        """The same inputs ranked under another learned snapshot (same validity), written into the entry.

        Each learned refresh (every ``learning.refresh_s``) makes every cached entry rank again on its next
        hit. A new entry per rerank was a long-lived object per hit that the garbage collector walked in
        each young collection it lived through and again at the freeze (gateway/gcstats.py): about 1,000
        per 2 s at 1,460 "200"/s over 100k subscribers, as many as everything else that lived that long.
        The entry is changed in place instead, to texts, codes and shown items shared by every entry, so
        a steady "200" leaves nothing new behind."""
        self.stats["reranks"] += 1
        entry.codes, entry.text, entry.exposure = self._shared(codes, text, exposure)
        entry.learned = learned
        return entry

    def _shared(self, codes: tuple[str, ...], text: str, exposure: tuple[tuple[tuple[int, str], ...], str, str]):
        # Identical texts, codes and shown items are shared between entries: 100k subscribers see a few
        # thousand distinct shelves, and every object an entry does not own is one the garbage
        # collector does not walk (gateway/gcstats.py)
        if len(self._texts) >= MAX_SHARED_TEXTS:
            self._texts.clear()
        text = self._texts.setdefault(text, text)
        codes = self._texts.setdefault(codes, codes)
        found = self._texts.get(exposure)
        if found is None:
            items, segment, arm = exposure
            found = (tuple(self._texts.setdefault(item, item) for item in items), segment, arm)
            self._texts[found] = found
        return codes, text, found

    def _store(self, msisdn: str, entry: CachedShelf) -> CachedShelf:
        entry.codes, entry.text, entry.exposure = self._shared(entry.codes, entry.text, entry.exposure)
        self._entries[msisdn] = entry
        self._entries.move_to_end(msisdn)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry

    def invalidate(self, msisdn: str) -> None:
        if self._entries.pop(msisdn, None) is not None:
            self.stats["invalidations"] += 1

    def invalidate_all(self) -> None:
        self.stats["invalidations"] += len(self._entries)
        self._entries.clear()
        self._texts.clear()
