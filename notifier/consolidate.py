"""Consolidation: every campaign item due to one subscriber in one period becomes ONE message.

The operators in our sources raised marketing SMS delivery from 82 % to 99 % and cut promotion
complaints by a third largely by this: instead of three promos from three departments on one day,
the subscriber gets one digest.

- SMS digest: a single item goes as its own text; several go as the policy's header plus one
  numbered line each, ranked by campaign priority (higher first, then campaign id), each added
  only if the whole digest still fits ``max_parts`` SMS parts. Items that do not fit stay for a
  later period (they are not logged as contacted). A digest holding any marketing item ends with
  the opt-out instruction (``回复TD退订``).
- Email digest: the lead campaign's subject; the items' bodies one after another, then the opt-out.
- Service messages (bill, balance) may carry one piggy-backed offer line: :func:`piggyback_line`.

Part counting mirrors the gateway's splitter (GSM 03.38 160/153 septets, else UCS2 70/67 units)
without importing the transport layer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsSize:
    encoding: str  # gsm7 | ucs2
    units: int  # septets or UTF-16 code units
    parts: int

    def __str__(self) -> str:
        return f"{self.units} {'septets' if self.encoding == 'gsm7' else 'UCS2 units'}, {self.parts} part(s)"


@lru_cache(maxsize=8192)
def sms_size(text: str) -> SmsSize:
    """How the gateway will send ``text``: encoding, length in units, number of SMS parts."""
    if GSM_BASIC.issuperset(text):
        units, single, part = len(text), 160, 153
    elif (GSM_BASIC | GSM_EXTENDED).issuperset(text):
        units, single, part = len(text) + sum(1 for ch in text if ch in GSM_EXTENDED), 160, 153
    else:
        units = len(text.encode("utf-16-be", "surrogatepass")) // 2
        single, part = 70, 67
        return SmsSize("ucs2", units, 1 if units <= single else math.ceil(units / part))
    return SmsSize("gsm7", units, 1 if units <= single else math.ceil(units / part))


def content_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One campaign's contribution to a subscriber's message."""

    campaign_id: str
    priority: int
    kind: str  # marketing | care
    offer_code: str | None
    text: str
    content_hash: str
    subject: str | None = None  # email only


@dataclass(frozen=True)
class Digest:
    text: str
    subject: str | None
    items: tuple[Item, ...]  # included, in rank order
    left_out: tuple[Item, ...]  # did not fit the part limit
    parts: int


def rank(items: Sequence[Item]) -> list[Item]:
    return sorted(items, key=lambda i: (-i.priority, i.campaign_id))


def _sms_text(items: Sequence[Item], header: str, opt_out: str) -> str:
    footer = opt_out if any(i.kind == "marketing" for i in items) else ""
    if len(items) == 1:
        body = items[0].text
        return f"{body}{footer}" if footer and opt_out not in body else body
    lines = [header, *(f"{n}.{i.text}" for n, i in enumerate(items, 1))]
    if footer:
        lines.append(footer)
    return "\n".join(lines)


def sms_digest(items: Sequence[Item], *, header: str, opt_out: str, max_parts: int) -> Digest:
    """The SMS for a subscriber's items: greedy by rank, each kept only if the digest still fits."""
    kept: list[Item] = []
    left: list[Item] = []
    for item in rank(items):
        if sms_size(_sms_text([*kept, item], header, opt_out)).parts <= max_parts:
            kept.append(item)
        else:
            left.append(item)
    text = _sms_text(kept, header, opt_out) if kept else ""
    return Digest(text, None, tuple(kept), tuple(left), sms_size(text).parts if kept else 0)


def email_digest(items: Sequence[Item], *, opt_out: str) -> Digest:
    ranked = rank(items)
    body = "\n\n".join(i.text for i in ranked)
    if any(i.kind == "marketing" for i in ranked):
        body += f"\n\n{opt_out}"
    return Digest(body, ranked[0].subject if ranked else None, tuple(ranked), (), 0)
