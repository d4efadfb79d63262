"""Fixture sections of the offers domain and the catalog built from them.

Files, in load order (later ones check references against earlier ones):

- ``segments.yaml``  -> ``parsed["offers.segments"]``: :class:`~offers.segments.SegmentParams`
- ``offers.yaml``    -> ``parsed["offers.offers"]``: list of :class:`~offers.catalog.CatalogOffer`
- ``subscribers.yaml`` -> ``parsed["offers.subscribers"]``: list of row dicts (demo people)
- ``keywords.yaml``  -> ``parsed["offers.keywords"]``: :class:`~offers.catalog.KeywordTable`
- ``replies.yaml``   -> ``parsed["offers.replies"]``: ``{key: template}``

Every problem names the file, the line and the reason. Loading upserts offers (offers
missing from the set are marked retired) and subscribers (with segments computed; a
subscriber's own opt-out / opt-in survives a reload), in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.fixtures import Doc, Parsed, Problem, Section, check_fields, require_list, require_mapping
from core.templates import compile_template
from offers import schema, segments
from offers.catalog import CatalogOffer, KeywordTable, OffersCatalog, normalize
from offers.models import CHANNELS, Offer, Refusal, Subscriber, Subscription
from offers.router import BASE_VARS, KEYWORD_ACTIONS, PREFIX_ACTIONS, REPLY_VARS, REQUIRED_ACTIONS
from offers.rules import compile_condition

NUM = (int, float)
CST = dt.timezone(dt.timedelta(hours=8))  # China Standard Time, no DST: dates in fixtures are local
SEGMENT_OUTPUTS = {"value_score", "value_grade", "usage_class", "channel_pref", "four_high_count",
                   *(n for n in schema.SCHEMA if n.startswith("high_"))}
FOUR_HIGH_KINDS = ("tariff", "data", "silence", "arpu")
WINDOWS = ("month", "day")

# --- segments.yaml ----------------------------------------------------------------------------------


def _input_fact(doc: Doc, path: tuple, name: Any) -> list[Problem]:
    """Segments are computed from raw / derived facts, never from other segments."""
    if name not in schema.SCHEMA or name in SEGMENT_OUTPUTS:
        return [doc.problem(path, f"unknown input fact {name!r}")]
    if schema.SCHEMA[name] == schema.STRING:
        return [doc.problem(path, f"fact {name!r} is text; a segment needs a number or true/false")]
    return []


FEATURE_FIELDS = {"fact": (str, True), "weight": (NUM, True), "full": (NUM, True), "invert": (bool, False)}


def _features(doc: Doc, path: tuple, items: Any) -> tuple[list[segments.Feature], list[Problem]]:
    if not isinstance(items, list) or not items:
        return [], [doc.problem(path, "expected a non-empty list of {fact, weight, full}")]
    out, problems = [], []
    for i, item in enumerate(items):
        found = check_fields(doc, path + (i,), item, FEATURE_FIELDS)
        if not found:
            found = _input_fact(doc, path + (i, "fact"), item["fact"])
            if item["full"] <= 0:
                found.append(doc.problem(path + (i, "full"), "full must be > 0"))
        problems += found
        if not found:
            out.append(segments.Feature(item["fact"], float(item["weight"]), float(item["full"]),
                                        bool(item.get("invert", False))))
    return out, problems


def _grades(doc: Doc, items: Any) -> tuple[list[tuple[str, float]], list[Problem]]:
    path = ("value", "grades")
    if not isinstance(items, list) or not items:
        return [], [doc.problem(path, "expected a list of {grade, min}, highest first")]
    out: list[tuple[str, float]] = []
    problems = []
    for i, item in enumerate(items):
        found = check_fields(doc, path + (i,), item, {"grade": (str, True), "min": (NUM, True)})
        if not found and out and item["min"] >= out[-1][1]:
            found.append(doc.problem(path + (i, "min"), "grades must be listed with falling minimums"))
        problems += found
        if not found:
            out.append((item["grade"], float(item["min"])))
    if not problems and out[-1][1] != 0:
        problems.append(doc.problem(path + (len(items) - 1, "min"), "the last grade must have min 0"))
    return out, problems


def _usage(doc: Doc, data: Any) -> tuple[str, list[tuple[str, float | None]], list[Problem]]:
    path = ("usage",)
    problems = check_fields(doc, path, data, {"fact": (str, True), "classes": (list, True)})
    if problems:
        return "", [], problems
    problems = _input_fact(doc, path + ("fact",), data["fact"])
    out: list[tuple[str, float | None]] = []
    for i, item in enumerate(data["classes"]):
        last = i == len(data["classes"]) - 1
        found = check_fields(doc, path + ("classes", i), item, {"class": (str, True), "below": (NUM, not last)})
        if not found and last and item.get("below") is not None:
            found.append(doc.problem(path + ("classes", i), "the last class takes everything above: no 'below'"))
        if not found and out and not last and item["below"] <= out[-1][1]:
            found.append(doc.problem(path + ("classes", i, "below"), "bounds must rise"))
        problems += found
        if not found:
            out.append((item["class"], None if last else float(item["below"])))
    return data["fact"], out, problems


def _four_high(doc: Doc, data: Any) -> tuple[dict, list[Problem]]:
    path = ("four_high",)
    if not isinstance(data, dict):
        return {}, [doc.problem(path, "expected a mapping tariff/data/silence/arpu -> {month, day}")]
    problems = [doc.problem(path, f"missing four-high kind '{k}'") for k in FOUR_HIGH_KINDS if k not in data]
    problems += [doc.problem(path + (k,), f"unknown four-high kind '{k}' (known: {', '.join(FOUR_HIGH_KINDS)})")
                 for k in data if k not in FOUR_HIGH_KINDS]
    out: dict[str, dict[str, segments.Threshold]] = {}
    for kind in FOUR_HIGH_KINDS:
        windows = data.get(kind)
        found = check_fields(doc, path + (kind,), windows, {w: (dict, True) for w in WINDOWS}) if kind in data else []
        for window in WINDOWS if not found and kind in data else ():
            wpath = path + (kind, window)
            item = windows[window]
            sub = check_fields(doc, wpath, item, {"fact": (str, True), "min": (NUM, True)})
            sub = sub or _input_fact(doc, wpath + ("fact",), item["fact"])
            found += sub
            if not sub:
                out.setdefault(kind, {})[window] = segments.Threshold(item["fact"], float(item["min"]))
        problems += found
    return out, problems


SEGMENT_FIELDS = {"brands": (dict, True), "value": (dict, True), "usage": (dict, True), "four_high": (dict, True),
                  "channels": (dict, True), "shelf": (dict, False)}


def parse_segments(doc: Doc | None, _parsed: Parsed) -> tuple[segments.SegmentParams | None, list[Problem]]:
    data, problems = require_mapping(doc)
    if data is None:
        return None, problems
    problems = check_fields(doc, (), data, SEGMENT_FIELDS)
    if problems:
        return None, problems
    brands = {}
    for key, item in data["brands"].items():
        found = check_fields(doc, ("brands", key), item, {"name": (str, True)})
        problems += found
        if not found:
            brands[str(key)] = item["name"]
    problems += check_fields(doc, ("value",), data["value"], {"features": (list, True), "grades": (list, True)})
    features, found = _features(doc, ("value", "features"), data["value"].get("features"))
    problems += found
    if not found and abs(sum(f.weight for f in features) - 100) > 1e-6:
        problems.append(doc.problem(("value", "features"),
                                    f"value weights must add up to 100, not {sum(f.weight for f in features):g}"))
    grades, found = _grades(doc, data["value"].get("grades"))
    problems += found
    usage_fact, classes, found = _usage(doc, data["usage"])
    problems += found
    flags, found = _four_high(doc, data["four_high"])
    problems += found
    factors = {}
    for ch, items in data["channels"].items():
        if ch not in CHANNELS:
            problems.append(doc.problem(("channels", ch), f"unknown channel '{ch}' (known: {', '.join(CHANNELS)})"))
            continue
        factors[ch], found = _features(doc, ("channels", ch), items)
        problems += found
    shelf = data.get("shelf") or {}
    found = check_fields(doc, ("shelf",), shelf, {"budget_share": (NUM, False), "trigger_boost": (NUM, False)})
    problems += found
    if problems:
        return None, problems
    return segments.SegmentParams(
        brands=brands, value_features=tuple(features), grades=tuple(grades), usage_fact=usage_fact,
        usage_classes=tuple(classes), four_high=flags, channel_factors={k: tuple(v) for k, v in factors.items()},
        budget_share=float(shelf.get("budget_share", 0.5)), trigger_boost=float(shelf.get("trigger_boost", 1.5)),
    ), []


# --- offers.yaml ------------------------------------------------------------------------------------

CODE = re.compile(r"^[A-Z][A-Z0-9]{1,11}$")
OFFER_TYPES = ("data", "voice", "sms", "family", "roaming", "broadband", "handset", "rollover", "downgrade",
               "plan", "vas")
OFFER_CHANNELS = ("sms", "ussd", "web", "ivr", "email", "hall", "phone")
FIT_FACTS = ("value_grade", "usage_class", "channel_pref", "brand")
OFFER_FIELDS = {
    "code": (str, True), "name": (str, True), "price": (NUM, True), "type": (str, True),
    "validity_days": (int, False), "exclusive_group": (str, False), "eligibility": (str, True),
    "trigger": (str, False), "priority": (NUM, True), "channels": (list, True), "start": ((str, dt.date), False),
    "end": ((str, dt.date), False), "confirm_text": (str, True), "description": (str, False), "fit": (dict, False),
}


def _epoch(value: Any) -> float:
    """A fixture date / datetime (China local time unless it says otherwise) as epoch seconds."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=CST)
    return value.timestamp()


def _fit_values(params: segments.SegmentParams | None) -> dict[str, set[str]]:
    if params is None:
        return {}
    return {"value_grade": {g for g, _ in params.grades}, "usage_class": {c for c, _ in params.usage_classes},
            "channel_pref": set(CHANNELS), "brand": set(params.brands)}


def _offer_problems(doc: Doc, path: tuple, item: dict, parsed: Parsed) -> list[Problem]:
    problems = []
    if not CODE.match(item["code"]):
        problems.append(doc.problem(path + ("code",), "code must be 2-12 of A-Z 0-9, starting with a letter"))
    if item["type"] not in OFFER_TYPES:
        problems.append(doc.problem(path + ("type",), f"unknown type (known: {', '.join(OFFER_TYPES)})"))
    if not 0 <= item["price"] <= 100000:
        problems.append(doc.problem(path + ("price",), "price must be 0..100000 yuan"))
    bad = [c for c in item["channels"] if c not in OFFER_CHANNELS]
    if bad or not item["channels"]:
        problems.append(doc.problem(path + ("channels",), f"channels must be among {', '.join(OFFER_CHANNELS)}"))
    for key in ("start", "end"):
        if item.get(key) is not None:
            try:
                _epoch(item[key])
            except (TypeError, ValueError):
                problems.append(doc.problem(path + (key,), "expected a date 2026-01-31 or an ISO date-time"))
    if not problems and item.get("start") and item.get("end") and _epoch(item["end"]) <= _epoch(item["start"]):
        problems.append(doc.problem(path + ("end",), "end must be after start"))
    known = _fit_values(parsed.get("offers.segments"))
    for fact, table in (item.get("fit") or {}).items():
        fpath = path + ("fit", fact)
        if fact not in FIT_FACTS:
            problems.append(doc.problem(fpath, f"fit applies to {', '.join(FIT_FACTS)}, not {fact!r}"))
        elif not isinstance(table, dict):
            problems.append(doc.problem(fpath, "expected a mapping value -> multiplier"))
        else:
            for value, x in table.items():
                if fact in known and str(value) not in known[fact]:
                    problems.append(doc.problem(fpath + (value,), f"unknown {fact} {value!r}"))
                if isinstance(x, bool) or not isinstance(x, NUM) or not 0 < x <= 10:
                    problems.append(doc.problem(fpath + (value,), "multiplier must be a number in (0, 10]"))
    return problems


def parse_offers(doc: Doc | None, parsed: Parsed) -> tuple[list[CatalogOffer], list[Problem]]:
    items, problems = require_list(doc, "offers")
    if items is None:
        return [], problems
    out: list[CatalogOffer] = []
    seen: set[str] = set()
    # every declared code, valid or not, so a broken offer is reported once, not again by each reference
    parsed["offers.declared_codes"] = {item.get("code") for item in items if isinstance(item, dict)}
    for i, item in enumerate(items):
        path = ("offers", i)
        found = check_fields(doc, path, item, OFFER_FIELDS) or _offer_problems(doc, path, item, parsed)
        if not found and item["code"] in seen:
            found.append(doc.problem(path + ("code",), f"duplicate offer code {item['code']!r}"))
        conditions = {}
        for key in ("eligibility", "trigger"):
            if not found and item.get(key) is not None:
                conditions[key], sub = compile_condition(item[key], doc.file, doc.line(*path, key),
                                                         f"offers[{i}].{key}")
                found += sub
        problems += found
        if found:
            continue
        seen.add(item["code"])
        out.append(CatalogOffer(
            code=item["code"], name=item["name"], price=float(item["price"]), type=item["type"],
            validity_days=int(item.get("validity_days") or 30), exclusive_group=item.get("exclusive_group"),
            eligibility=conditions["eligibility"], trigger=conditions.get("trigger"),
            priority=float(item["priority"]), channels=frozenset(item["channels"]),
            start_at=_epoch(item["start"]) if item.get("start") else None,
            end_at=_epoch(item["end"]) if item.get("end") else None,
            confirm_text=item["confirm_text"].strip(), description=(item.get("description") or "").strip(),
            fit={f: {str(k): float(v) for k, v in t.items()} for f, t in (item.get("fit") or {}).items()}))
    return out, problems


def load_offers(session: Session, offers: list[CatalogOffer], _parsed: Parsed) -> int:
    codes = [o.code for o in offers]
    session.execute(update(Offer).where(Offer.code.not_in(codes)).values(retired=True))
    for o in offers:
        row = session.get(Offer, o.code) or Offer(code=o.code)
        row.name, row.price, row.type, row.validity_days = o.name, o.price, o.type, o.validity_days
        row.exclusive_group, row.eligibility = o.exclusive_group, o.eligibility.text
        row.trigger = o.trigger.text if o.trigger else None
        row.priority, row.channels, row.start_at, row.end_at = o.priority, sorted(o.channels), o.start_at, o.end_at
        row.confirm_text, row.description, row.retired = o.confirm_text, o.description, False
        session.add(row)
    return len(offers)


# --- subscribers.yaml -------------------------------------------------------------------------------

MSISDN = re.compile(r"^\d{5,15}$")
_NUM_FIELDS = ("balance", "plan_fee", "voice_allowance_min", "data_allowance_mb", "sms_allowance", "voice_used_min",
               "data_used_mb", "sms_used", "roaming_fee_month", "data_day_mb", "roaming_fee_day", "spend_day",
               "avg_payment", "vas_share", "web_minutes")
_INT_FIELDS = ("age", "complaints", "days_silent", "tenure_months", "late_payments", "contract_months_left",
               "family_size", "service_calls", "hall_visits")
_BOOL_FIELDS = ("opted_out", "consent_marketing", "vip", "roaming", "has_broadband")
SUBSCRIBER_FIELDS: dict[str, tuple[Any, bool]] = {
    "msisdn": (str, True), "brand": (str, True), "name": (str, True), "email": (str, False),
    "timezone": (str, False), "plan": (str, True), "arpu_history": (list, True), "contact": (dict, False),
    "subscriptions": (list, False), "refusals": (list, False), "note": (str, False),
    **{k: (NUM, False) for k in _NUM_FIELDS}, **{k: (int, False) for k in _INT_FIELDS},
    **{k: (bool, False) for k in _BOOL_FIELDS},
}


def _subscriber_problems(doc: Doc, path: tuple, item: dict, parsed: Parsed) -> list[Problem]:
    problems = []
    if not MSISDN.match(item["msisdn"]):
        problems.append(doc.problem(path + ("msisdn",), "msisdn must be 5-15 digits (quote it)"))
    params = parsed.get("offers.segments")
    if params is not None and item["brand"] not in params.brands:
        problems.append(doc.problem(path + ("brand",), f"unknown brand (segments.yaml: {', '.join(params.brands)})"))
    history = item["arpu_history"]
    if not 1 <= len(history) <= 24 or any(isinstance(x, bool) or not isinstance(x, NUM) or x < 0 for x in history):
        problems.append(doc.problem(path + ("arpu_history",), "expected 1-24 monthly ARPU amounts >= 0, oldest first"))
    for ch, triple in (item.get("contact") or {}).items():
        if ch not in CHANNELS:
            problems.append(doc.problem(path + ("contact", ch), f"unknown channel (known: {', '.join(CHANNELS)})"))
        elif not (isinstance(triple, list) and len(triple) == 3 and all(isinstance(x, int) and x >= 0 for x in triple)
                  and triple[0] >= triple[1] >= triple[2]):
            problems.append(doc.problem(path + ("contact", ch),
                                        "expected [contacted, answered, responded], each <= the one before"))
    codes = parsed.get("offers.declared_codes") or set()
    for j, code in enumerate(item.get("subscriptions") or []):
        if code not in codes:
            problems.append(doc.problem(path + ("subscriptions", j), f"unknown offer code {code!r}"))
    for j, ref in enumerate(item.get("refusals") or []):
        found = check_fields(doc, path + ("refusals", j), ref, {"code": (str, True), "days_ago": (NUM, True)})
        if not found and ref["code"] not in codes:
            found.append(doc.problem(path + ("refusals", j, "code"), f"unknown offer code {ref['code']!r}"))
        problems += found
    return problems


def parse_subscribers(doc: Doc | None, parsed: Parsed) -> tuple[list[dict], list[Problem]]:
    if doc is None:
        return [], []
    items, problems = require_list(doc, "subscribers")
    if items is None:
        return [], problems
    defaults = doc.data.get("defaults") or {}
    problems += check_fields(doc, ("defaults",), defaults, {k: (types, False) for k, (types, _) in
                                                            SUBSCRIBER_FIELDS.items() if k not in ("msisdn", "name")})
    problems += [doc.problem((k,), f"unknown top-level key '{k}' (known: defaults, subscribers)")
                 for k in doc.data if k not in ("defaults", "subscribers")]
    if problems:  # bad defaults would repeat in every entry
        return [], problems
    out, seen = [], set()
    for i, raw in enumerate(items):
        path = ("subscribers", i)
        if not isinstance(raw, dict):
            problems.append(doc.problem(path, "expected a mapping"))
            continue
        item = {**defaults, **raw}
        found = check_fields(doc, path, item, SUBSCRIBER_FIELDS) or _subscriber_problems(doc, path, item, parsed)
        if not found and item["msisdn"] in seen:
            found.append(doc.problem(path + ("msisdn",), f"duplicate msisdn {item['msisdn']}"))
        problems += found
        if not found:
            seen.add(item["msisdn"])
            out.append(item)
    return out, problems


def subscriber_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of one subscribers.yaml entry (without segments)."""
    row: dict[str, Any] = {k: item[k] for k in (*_NUM_FIELDS, *_INT_FIELDS, *_BOOL_FIELDS) if k in item}
    row.update(msisdn=item["msisdn"], brand=item["brand"], name=item["name"], email=item.get("email"),
               timezone=item.get("timezone") or "Asia/Shanghai", plan=item["plan"],
               arpu_history=[float(x) for x in item["arpu_history"]],
               arpu_avg=schema.arpu_avg(item["arpu_history"]))
    for ch, (contacted, answered, responded) in (item.get("contact") or {}).items():
        row[f"{ch}_contacted"], row[f"{ch}_answered"], row[f"{ch}_responded"] = contacted, answered, responded
    return row


def _load_now(parsed: Parsed) -> float:
    return float(parsed["_now"])  # set by load_set from the injected clock


def load_subscribers(session: Session, items: list[dict], parsed: Parsed) -> int:
    params: segments.SegmentParams = parsed["offers.segments"]
    now = _load_now(parsed)
    for item in items:
        values = subscriber_row(item)
        values.update(segments.segment(schema.facts(values), params).columns(), segmented_at=now)
        row = session.get(Subscriber, item["msisdn"])
        if row is None:
            row = Subscriber(**{"opted_out": False, "consent_marketing": True, **values})
            session.add(row)
        else:
            # the subscriber's own TD / KTYX outranks the demo data
            values.pop("opted_out", None)
            values.pop("consent_marketing", None)
            for key, value in values.items():
                setattr(row, key, value)
        _load_history(session, item, now)
    return len(items)


def _load_history(session: Session, item: dict, now: float) -> None:
    msisdn = item["msisdn"]
    active = set(session.scalars(select(Subscription.offer_code).where(
        Subscription.msisdn == msisdn, Subscription.cancelled_at.is_(None))))
    for code in item.get("subscriptions") or []:
        if code not in active:
            session.add(Subscription(msisdn=msisdn, offer_code=code, started_at=now - 20 * 86400.0, channel="hall"))
    session.execute(delete(Refusal).where(Refusal.msisdn == msisdn, Refusal.source == "fixture"))
    for ref in item.get("refusals") or []:
        session.add(Refusal(msisdn=msisdn, offer_code=ref["code"], at=now - float(ref["days_ago"]) * 86400.0,
                            source="fixture"))


# --- keywords.yaml ----------------------------------------------------------------------------------

def parse_keywords(doc: Doc | None, _parsed: Parsed) -> tuple[KeywordTable | None, list[Problem]]:
    actions, problems = require_mapping(doc, ("actions",))
    if actions is None:
        return None, problems
    exact: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for action in REQUIRED_ACTIONS:
        if action not in actions:
            problems.append(doc.problem(("actions",), f"missing action '{action}'"))
    for action, spec in actions.items():
        path = ("actions", action)
        if action not in KEYWORD_ACTIONS and action not in PREFIX_ACTIONS:
            problems.append(doc.problem(path, f"unknown action (known: {', '.join(KEYWORD_ACTIONS + PREFIX_ACTIONS)})"))
            continue
        kind = "prefixes" if action in PREFIX_ACTIONS else "keywords"
        found = check_fields(doc, path, spec, {kind: (list, True)})
        problems += found
        for j, word in ([] if found else enumerate(spec[kind])):
            key = normalize(str(word))
            table = prefixes if kind == "prefixes" else exact
            if not isinstance(word, (str, int)) or isinstance(word, bool) or not key or len(key) > 20:
                problems.append(doc.problem(path + (kind, j), "expected a keyword of 1-20 characters"))
            elif key.isdigit() and len(key) == 1:
                problems.append(doc.problem(path + (kind, j), "a lone digit answers the open prompt; not a keyword"))
            elif key in exact or key in prefixes:
                problems.append(doc.problem(path + (kind, j), f"{word!r} is already a keyword of "
                                            f"'{exact.get(key) or prefixes.get(key)}'"))
            else:
                table[key] = action
    if problems:
        return None, problems
    ordered = tuple(sorted(prefixes.items(), key=lambda kv: (-len(kv[0]), kv[0])))
    return KeywordTable(exact=exact, prefixes=ordered), []


# --- replies.yaml -----------------------------------------------------------------------------------

def parse_replies(doc: Doc | None, _parsed: Parsed) -> tuple[dict | None, list[Problem]]:
    replies, problems = require_mapping(doc, ("replies",))
    if replies is None:
        return None, problems
    out = {}
    for key in REPLY_VARS:
        if key not in replies:
            problems.append(doc.problem(("replies",), f"missing reply '{key}'"))
    for key, text in replies.items():
        if key not in REPLY_VARS:
            problems.append(doc.problem(("replies", key), f"unknown reply (known: {', '.join(REPLY_VARS)})"))
            continue
        template, found = compile_template(text, (*BASE_VARS, *REPLY_VARS[key]), doc.file,
                                           doc.line("replies", key), path=f"replies.{key}")
        problems += found
        if template is not None:
            out[key] = template
    return (None, problems) if problems else (out, [])


SECTIONS: list[Section] = [
    Section("offers.segments", "segments.yaml", parse_segments),
    Section("offers.offers", "offers.yaml", parse_offers, load_offers),
    Section("offers.subscribers", "subscribers.yaml", parse_subscribers, load_subscribers, required=False),
    Section("offers.keywords", "keywords.yaml", parse_keywords),
    Section("offers.replies", "replies.yaml", parse_replies),
]
FILES = tuple(s.filename for s in SECTIONS)


def build_catalog(parsed: Parsed) -> OffersCatalog:
    """The immutable catalog of a fixture set that parsed without problems."""
    return OffersCatalog.build(parsed["offers.offers"], parsed["offers.segments"], parsed["offers.keywords"],
                               parsed["offers.replies"])
