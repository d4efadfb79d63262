"""The offers catalog: one immutable snapshot of what ops loaded (offers, segment parameters,
keywords, reply templates).

The running gateway holds one reference and swaps it whole on reload; the router
reads it once per message, so no subscriber ever sees half old, half new rules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jinja2

from core.templates import render
from offers.rules import Condition
from offers.segments import SegmentParams

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Keyword form of a text: NFKC (full-width -> half-width), casefolded, without whitespace."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class CatalogOffer:
    code: str
    name: str
    price: float
    type: str
    validity_days: int
    exclusive_group: str | None
    eligibility: Condition
    trigger: Condition | None
    priority: float
    channels: frozenset[str]
    start_at: float | None
    end_at: float | None
    confirm_text: str
    description: str = ""
    fit: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # fact -> value -> multiplier

    @property
    def order(self) -> str:
        return f"KT{self.code}"

    def in_date(self, now: float) -> bool:
        return (self.start_at is None or self.start_at <= now) and (self.end_at is None or now < self.end_at)


@dataclass(frozen=True)
class KeywordTable:
    """Keywords are exact matches of the normalized text; prefixes take the rest as an argument."""

    exact: Mapping[str, str]  # normalized keyword -> action
    prefixes: tuple[tuple[str, str], ...]  # (normalized prefix, action), longest first

    def match(self, text: str) -> tuple[str, str] | None:
        """``(action, argument)`` for a message text, or None (the help)."""
        key = normalize(text)
        if key in self.exact:
            return self.exact[key], ""
        for prefix, action in self.prefixes:
            if key.startswith(prefix) and len(key) > len(prefix):
                return action, key[len(prefix):]
        return None


@dataclass(frozen=True)
class OffersCatalog:
    offers: tuple[CatalogOffer, ...]
    params: SegmentParams
    keywords: KeywordTable
    replies: Mapping[str, jinja2.Template]
    by_code: Mapping[str, CatalogOffer] = field(default_factory=dict)  # normalized code -> offer
    # renders of this snapshot memoised by their inputs (offers/shelf.py fit_items); dies with the snapshot
    memo: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @classmethod
    def build(cls, offers: list[CatalogOffer], params: SegmentParams, keywords: KeywordTable,
              replies: Mapping[str, jinja2.Template]) -> OffersCatalog:
        return cls(offers=tuple(offers), params=params, keywords=keywords,
                   replies=MappingProxyType(dict(replies)),
                   by_code=MappingProxyType({normalize(o.code): o for o in offers}))

    def offer(self, code: str) -> CatalogOffer | None:
        """The offer with this code, any case or width."""
        return self.by_code.get(normalize(code))

    def brand_name(self, brand: str) -> str:
        return self.params.brands.get(brand, brand)

    def reply(self, key: str, **variables: Any) -> str:
        """Render the reply template ``key`` (raises TemplateRenderError when it fails)."""
        return render(self.replies[key], **variables)
