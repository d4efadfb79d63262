"""The personalised offer shelf ("200"): eligible offers, ranked, top K, every decision explained.

An offer is on the shelf when all of these hold (checked in this order; the first that
fails is the reason it is out):

1. in date (``start <= now < end``);
2. sold on the channel (``sms`` for the 200 SMS, USSD and the HTTP shelf alike);
3. not already subscribed;
4. not mutually excluded: no active subscription in the same ``exclusive_group``;
5. not refused in the last ``shelf.refusal_days`` days;
6. its eligibility condition is true.

Eligible offers are ranked by ``score = priority x fit x value`` (ties: higher priority, then code):

- ``priority``: the offer's priority from offers.yaml;
- ``fit`` (fit to segment): the product of the offer's ``fit`` multipliers that match the
  subscriber's segments (e.g. ``usage_class: {D: 1.5}``), times ``trigger_boost`` (segments.yaml)
  when the offer's trigger condition holds;
- ``value``: ``0.5 + 0.5 x min(1, budget_share x arpu_avg / price)`` - an offer the subscriber
  can comfortably afford counts fully, a dear one half (free offers count fully).

The top ``shelf.top_k`` are shown, further cut to what fits ``router.max_sms_parts`` SMS parts
(:func:`fit_reply`), so the 200 SMS, USSD and ``GET .../shelf`` show the same offers in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.gcsafe import KeptDict
from core.settings import KNOBS
from offers import fastsql, schema, segments
from offers.catalog import CatalogOffer, OffersCatalog
from offers.learning import EMPTY, LearnedSnapshot, LearnedTerm, assign, learning_report

DAY = 86400.0
SHELF_CHANNEL = "sms"
EXCLUDED = "excluded"  # the reason when none was asked for


@dataclass(frozen=True, slots=True)
class ShelfItem:
    rank: int
    code: str
    name: str
    price: float
    order: str

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "code": self.code, "name": self.name, "price": self.price, "order": self.order}


@dataclass(frozen=True)
class OfferDecision:
    code: str
    name: str
    included: bool
    rank: int | None
    score: float | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Shelf:
    offers: tuple[ShelfItem, ...]
    decisions: tuple[OfferDecision, ...]  # every offer of the catalog, in or out, in catalog order

    def codes(self) -> list[str]:
        return [item.code for item in self.offers]


def _exclusion(offer: CatalogOffer, facts: Mapping[str, Any], active: Mapping[str, str | None],
               groups: set[str], refusals: Mapping[str, float], now: float, refusal_days: float, channel: str,
               explain: bool) -> str | None:
    """Why the offer is off the shelf (None: it is on). Without ``explain`` the reason is only
    :data:`EXCLUDED`: the SMS path needs the verdict, not the words."""
    if not offer.in_date(now):
        return ("out of date (" + ("not started" if offer.start_at and now < offer.start_at else "ended") + ")"
                if explain else EXCLUDED)
    if channel not in offer.channels:
        return f"not sold on channel {channel} (channels: {', '.join(sorted(offer.channels))})" if explain \
            else EXCLUDED
    if offer.code in active:
        return "already subscribed"
    if offer.exclusive_group and offer.exclusive_group in groups:
        if not explain:
            return EXCLUDED
        code = next(c for c, g in active.items() if g == offer.exclusive_group)
        return f"excluded by active subscription {code} (group {offer.exclusive_group})"
    refused = refusals.get(offer.code)
    if refused is not None and now - refused < refusal_days * DAY:
        return f"refused {(now - refused) / DAY:.0f} days ago (kept off for {refusal_days:g} days)" if explain \
            else EXCLUDED
    if not offer.eligibility.matches(facts):
        return f"not eligible: {offer.eligibility.text} is false" if explain else EXCLUDED
    return None


def score(offer: CatalogOffer, facts: Mapping[str, Any], params: segments.SegmentParams,
          reasons: list[str] | None = None) -> float:
    """``priority x fit x value`` (see the module docstring); its reasons go to ``reasons`` when given."""
    fit = 1.0
    for fact, table in offer.fit.items():
        x = table.get(str(facts.get(fact)))
        if x is not None:
            fit *= x
            if reasons is not None:
                reasons.append(f"fit {fact}={facts.get(fact)} x{x:g}")
    if offer.trigger is not None:
        met = offer.trigger.matches(facts)
        if met:
            fit *= params.trigger_boost
        if reasons is not None:
            reasons.append(f"trigger met: {offer.trigger.text} x{params.trigger_boost:g}" if met
                           else f"trigger not met: {offer.trigger.text}")
    budget = params.budget_share * float(facts.get("arpu_avg", 0.0))
    value = 1.0 if offer.price <= 0 else 0.5 + 0.5 * min(1.0, budget / offer.price)
    total = round(offer.priority * fit * value, 3)
    if reasons is not None:
        reasons.append(f"score {offer.priority:g} x {fit:.3g} x {value:.3g} = {total:g}")
    return total


def build_shelf(facts: Mapping[str, Any], catalog: OffersCatalog, active_codes: Mapping[str, str | None] | set,
                refusals: Mapping[str, float], now: float, top_k: int, *,
                refusal_days: float = KNOBS["shelf.refusal_days"].default, channel: str = SHELF_CHANNEL,
                learned: LearnedTerm | None = None, explain: bool = True) -> Shelf:
    """Rank the catalog for one subscriber.

    ``active_codes``: codes of active subscriptions (a mapping code -> exclusive group, or a set of
    codes whose groups are looked up in the catalog); ``refusals``: code -> last refusal time;
    ``learned``: the learned term (offers/learning.py), applied to eligible offers only.
    Without ``explain`` only the shown offers are computed (``decisions`` is empty): the SMS path.
    """
    active = _active_groups(active_codes, catalog)
    groups = {g for g in active.values() if g}
    ranked: list[tuple[float, CatalogOffer, list[str] | None]] = []
    out: dict[str, OfferDecision] = {}
    for offer in catalog.offers:
        why = _exclusion(offer, facts, active, groups, refusals, now, refusal_days, channel, explain)
        if why is not None:
            if explain:
                out[offer.code] = OfferDecision(offer.code, offer.name, False, None, None, (why,))
            continue
        reasons = [f"eligible: {offer.eligibility.text}"] if explain else None
        total = score(offer, facts, catalog.params, reasons)
        if learned is not None:
            total, reasons = learned.apply(offer, total, reasons)
        ranked.append((total, offer, reasons))
    ranked.sort(key=_rank_order)
    items = _shown(offer for _, offer, _ in ranked[:top_k])
    if not explain:
        return Shelf(items, ())
    for rank, (total, offer, reasons) in enumerate(ranked, 1):
        shown = rank <= top_k
        reasons.append(f"rank {rank}" + (f" of top {top_k}" if shown else f", beyond top {top_k}"))
        out[offer.code] = OfferDecision(offer.code, offer.name, shown, rank, total, tuple(reasons))
    return Shelf(items, tuple(out[o.code] for o in catalog.offers))


def candidates(facts: Mapping[str, Any], catalog: OffersCatalog, active_codes: Mapping[str, str | None] | set,
               refusals: Mapping[str, float], now: float, *,
               refusal_days: float = KNOBS["shelf.refusal_days"].default,
               channel: str = SHELF_CHANNEL) -> tuple[tuple[float, CatalogOffer], ...]:
    """The offers on one subscriber's shelf with their fixed scores (no learned term), in catalog
    order: what :func:`rank` orders under any learned snapshot. Stays true while the subscriber's
    inputs, the catalog and the clock's offer/refusal boundaries do (offers/shelf_cache.py)."""
    active = _active_groups(active_codes, catalog)
    groups = {g for g in active.values() if g}
    return tuple((score(offer, facts, catalog.params), offer) for offer in catalog.offers
                 if _exclusion(offer, facts, active, groups, refusals, now, refusal_days, channel, False) is None)


def rank(cands: tuple[tuple[float, CatalogOffer], ...], top_k: int,
         learned: LearnedTerm | None = None) -> tuple[ShelfItem, ...]:
    """The shown items of :func:`candidates` under a learned term: the same order as :func:`build_shelf`."""
    ranked = [(learned.apply(offer, total, None)[0] if learned is not None else total, offer)
              for total, offer in cands]
    ranked.sort(key=_rank_order)
    return _shown(offer for _, offer in ranked[:top_k])


def _rank_order(scored: tuple[Any, ...]) -> tuple[float, float, str]:
    """Higher score first, then higher priority, then code: the one order of every shelf."""
    return -scored[0], -scored[1].priority, scored[1].code


def _shown(offers: Iterable[CatalogOffer]) -> tuple[ShelfItem, ...]:
    return tuple(ShelfItem(i, o.code, o.name, o.price, o.order) for i, o in enumerate(offers, 1))


def _active_groups(active_codes: Mapping[str, str | None] | set, catalog: OffersCatalog) -> dict[str, str | None]:
    if isinstance(active_codes, Mapping):
        return dict(active_codes)
    groups = {}
    for code in active_codes:
        offer = catalog.offer(code)
        groups[code] = offer.exclusive_group if offer else None
    return groups


# --- reading one subscriber's inputs ------------------------------------------------------------------

def load_inputs(session: Session, msisdn: str, now: float, refusal_days: float) -> tuple[dict | None, set[str],
                                                                                         dict[str, float]]:
    """``(facts or None, active codes, {code: last refusal})`` with one PK lookup and two index scans."""
    row, active, refused = fastsql.subscriber_inputs(session, msisdn, now - refusal_days * DAY)
    if row is None:
        return None, set(), {}
    facts = schema.facts(row)
    facts["name"] = row.get("name") or ""  # for reply templates; not a rule attribute
    return facts, active, refused


def _knob(settings: Mapping[str, Any] | None, key: str) -> Any:
    return (settings or {}).get(key, KNOBS[key].default)


def shelf_for(session: Session, catalog: OffersCatalog, msisdn: str, now: float,
              settings: Mapping[str, Any] | None = None, channel: str = SHELF_CHANNEL,
              learned: LearnedSnapshot = EMPTY, explain: bool = False) -> tuple[dict | None, Shelf | None]:
    """``(facts, shelf)`` of one subscriber (``(None, None)`` when unknown), knobs from ``settings``."""
    days = _knob(settings, "shelf.refusal_days")
    facts, active, refused = load_inputs(session, msisdn, now, days)
    if facts is None:
        return None, None
    _, term = assign(learned, facts, msisdn, explain=explain)
    shelf = build_shelf(facts, catalog, active, refused, now, _knob(settings, "shelf.top_k"),
                        refusal_days=days, channel=channel, learned=term, explain=explain)
    return facts, shelf


# --- the SMS rendering, shared by the router and the HTTP shelf -----------------------------------

def default_fits(text: str, max_parts: int) -> bool:
    """UCS2-safe fallback: 70 characters in one part, 67 per part with a concatenation header."""
    return len(text) <= (70 if max_parts == 1 else 67 * max_parts)


def reply_vars(facts: Mapping[str, Any], catalog: OffersCatalog, name: str = "") -> dict[str, Any]:
    """Variables every reply template may use about the subscriber."""
    return {"msisdn": facts.get("msisdn", ""), "name": name,
            "brand_name": catalog.brand_name(str(facts.get("brand", "")))}


def fit_reply(catalog: OffersCatalog, shelf: Shelf, base: Mapping[str, Any],
              fits: Callable[[str, int], bool] = default_fits,
              max_parts: int = KNOBS["router.max_sms_parts"].default) -> tuple[str, tuple[ShelfItem, ...]]:
    """The 200 reply text and the items it shows: the ranked shelf, cut from the end until it fits."""
    return fit_items(catalog, shelf.offers, base, fits, max_parts)


def fit_items(catalog: OffersCatalog, items: tuple[ShelfItem, ...], base: Mapping[str, Any],
              fits: Callable[[str, int], bool] = default_fits,
              max_parts: int = KNOBS["router.max_sms_parts"].default) -> tuple[str, tuple[ShelfItem, ...]]:
    """:func:`fit_reply` of ranked items, memoised per catalog snapshot on the shown codes and the
    subscriber variables the shelf templates read. A shelf text is shared by every subscriber of a brand
    who sees the same offers, so the hot path renders each distinct shelf once.

    The memo holds only strings and numbers: ``(codes, parts, variables) -> (text, items kept)``. The
    items of a code in one snapshot are always the same (:func:`_shown`). Each learned refresh brings
    new rankings, and so new entries. An entry of plain tuples is walked by the garbage collector once,
    and then no longer tracked. The memo itself is a :class:`core.gcsafe.KeptDict`, which is frozen once
    and never walked again."""
    memo = catalog.memo.get(("shelf", fits))
    if memo is None:
        memo = catalog.memo[("shelf", fits)] = KeptDict()
    key = (tuple(i.code for i in items), max_parts, *_read_vars(catalog, base))
    found = memo.get(key)
    if found is None:
        if len(memo) >= MAX_MEMO:
            memo.clear()
        text, fitted = _fit_items(catalog, items, base, fits, max_parts)
        found = memo[key] = (text, len(fitted))
    return found[0], items[:found[1]]


MAX_MEMO = 50_000


def _read_vars(catalog: OffersCatalog, base: Mapping[str, Any]) -> tuple[Any, ...]:
    reads = catalog.memo.get("shelf.reads")
    if reads is None:  # once per catalog snapshot
        names: set[str] | None = set()
        for key in ("shelf", "shelf_empty"):
            found = getattr(catalog.replies.get(key), "reads", None)
            if found is None:  # a template not compiled by core.templates: key on every variable
                names = None
                break
            names |= found
        reads = catalog.memo["shelf.reads"] = tuple(sorted(names)) if names is not None else ()
    if not reads:
        return tuple(sorted(base.items()))
    return tuple((k, base[k]) for k in reads if k in base)


def _fit_items(catalog: OffersCatalog, items: tuple[ShelfItem, ...], base: Mapping[str, Any],
               fits: Callable[[str, int], bool], max_parts: int) -> tuple[str, tuple[ShelfItem, ...]]:
    if not items:
        return catalog.reply("shelf_empty", **base), ()
    while items:
        text = catalog.reply("shelf", offers=[i.as_dict() for i in items], **base)
        if fits(text, max_parts) or len(items) == 1:
            return text, items
        items = items[:-1]
    raise AssertionError("unreachable: a non-empty shelf always returns")


def shelf_json(session: Session, catalog: OffersCatalog, msisdn: str, now: float,
               settings: Mapping[str, Any] | None = None,
               fits: Callable[[str, int], bool] = default_fits,
               learned: LearnedSnapshot = EMPTY) -> dict[str, Any] | None:
    """``{"msisdn", "offers": [{"rank", "code", "name", "price", "order"}]}`` - the 200 SMS's offers; None if unknown."""
    facts, shelf = shelf_for(session, catalog, msisdn, now, settings, learned=learned)
    if facts is None:
        return None
    _, items = fit_reply(catalog, shelf, reply_vars(facts, catalog), fits, _knob(settings, "router.max_sms_parts"))
    return {"msisdn": msisdn, "offers": [i.as_dict() for i in items]}


def explain(session: Session, catalog: OffersCatalog, msisdn: str, now: float,
            settings: Mapping[str, Any] | None = None,
            fits: Callable[[str, int], bool] = default_fits,
            learned: LearnedSnapshot = EMPTY) -> dict[str, Any] | None:
    """The shelf plus every offer's decision and the subscriber's segments with reasons, and the
    learned term's evidence (offers/learning.py); None if unknown."""
    facts, shelf = shelf_for(session, catalog, msisdn, now, settings, learned=learned, explain=True)
    if facts is None:
        return None
    _, items = fit_reply(catalog, shelf, reply_vars(facts, catalog), fits, _knob(settings, "router.max_sms_parts"))
    shown = {i.code for i in items}
    decisions = []
    for d in shelf.decisions:
        row = d.as_dict()
        if d.included and d.code not in shown:
            row["included"] = False
            row["reasons"].append("cut so the reply fits the SMS part limit")
        decisions.append(row)
    return {"msisdn": msisdn, "offers": [i.as_dict() for i in items],
            "segments": segment_report(facts, catalog.params), "decisions": decisions,
            "learning": learning_report(learned, facts, msisdn, catalog)}


def segment_report(facts: Mapping[str, Any], params: segments.SegmentParams) -> dict[str, Any]:
    """Cached segments as stored, with the reasons recomputed from the current parameters."""
    live = segments.segment(facts, params)
    cached = {k: facts.get(k) for k in live.columns() if k in facts}
    report: dict[str, Any] = {**cached, "channel_scores": dict(live.channel_scores),
                              "reasons": {k: list(v) for k, v in live.reasons.items()}}
    stale = sorted(k for k, v in live.columns().items() if k in cached and cached[k] != v)
    if stale:
        report["stale"] = stale  # parameters or usage changed since the last segment run
    return report
