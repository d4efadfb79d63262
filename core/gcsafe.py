"""A dict that the garbage collector, once it has frozen it, never walks again.

CPython stops tracking a plain dict whose keys and values are all untracked (strings, numbers, and
tuples of them once a collection has seen them) at each full collection. It tracks the dict again,
as a new object in the youngest generation, when a tracked object is stored in it, and a fresh tuple
is tracked until its first collection. So a big memo of such entries left the collector's frozen
set at every freeze (gateway/gcstats.py) and came back young at its next miss. Then each young
collection, and the next freeze, walked every one of its entries.

The 65,536-entry ``lru_cache`` of the holdout hash did this. The collector walked its 131,072
references about three times in every two seconds: about 1 ms a walk in a quiet process, more in the
gateway's heap.

A subclass of dict is always tracked. The freeze moves it with everything else, and from then on only
its new entries are walked, once each, while they are young.
"""

from __future__ import annotations

__all__ = ["KeptDict"]


class KeptDict(dict):
    """A plain dict in every other way; see the module's docstring."""

    __slots__ = ()
