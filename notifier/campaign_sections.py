"""Campaign fixtures: ``contact_policy.yaml`` and ``campaigns.yaml``, validated with file/line problems.

- ``contact_policy.yaml`` -> ``parsed["notifier.contact_policy"]``: :class:`~notifier.policy.PolicyParams`
  (quiet hours are the ``campaign.quiet_start`` / ``campaign.quiet_end`` knobs, not in this file).
- ``campaigns.yaml`` -> ``parsed["notifier.campaigns"]``: ``{id: Campaign}``.

A campaign's target is a rule-engine condition type-checked against :mod:`offers.schema`; its
templates are sandboxed Jinja2 with their variables checked; the SMS text is rendered for a sample
subscriber at load and its length and part count recorded (``Campaign.preview``), a text over the
policy's part limit being a problem. The schedule is an APScheduler 3.11 cron or date trigger,
built at load so a bad field is a problem here, not a crash at start.

The target also compiles to a plain closure (:func:`fast_predicate`) for the common node types
(and/or/not, comparisons, ``in``, names, literals), which plans over a million subscribers need;
anything else falls back to rule-engine itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import jinja2
import jinja2.meta
import rule_engine.ast as ast
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select

from core.fixtures import Doc, Parsed, Problem, Section, check_fields, require_list, require_mapping
from core.templates import SMS_ENV, TemplateRenderError, compile_template, render
from notifier import policy
from notifier.campaign_models import CampaignState
from notifier.consolidate import Item, content_hash, email_digest, sms_digest, sms_size
from offers import schema
from offers.rules import Condition, compile_condition

CAMPAIGN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_CAMPAIGNS = 200
OFFER_VARS = ("offer_code", "offer_name", "price", "order")
EXTRA_VARS = ("brand_name", "name", "campaign_name")
TEMPLATE_VARS = frozenset(schema.SCHEMA) | frozenset(OFFER_VARS) | frozenset(EXTRA_VARS)
CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


# --- fast targeting -------------------------------------------------------------------------------


class LazyFacts(dict):
    """Facts of one subscriber row, computed on first use: raw columns cast alone, derived all at once."""

    __slots__ = ("row",)

    def __init__(self, row: Mapping[str, Any]):
        super().__init__()
        self.row = row

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __missing__(self, key: str) -> Any:
        kind = schema.RAW.get(key)
        if kind is not None:
            raw = self.row.get(key)
            value = schema._CASTS[kind](raw) if raw is not None else schema._CASTS[kind]()
            self[key] = value
            return value
        full = schema.facts(self.row)
        self.update(full)
        return full[key]


def fast_predicate(condition: Condition) -> Callable[[Mapping[str, Any]], bool]:
    """``condition.matches`` over lazily computed facts: the compiled closure of offers.rules reads only
    the attributes it needs; anything it cannot answer goes to rule-engine with the full facts."""
    def slow(f: Mapping[str, Any]) -> bool:
        return bool(condition.rule.matches(dict(schema.facts(f.row)) if isinstance(f, LazyFacts) else f))

    fast = condition.fast
    if fast is None:
        return slow

    def run(f: Mapping[str, Any]) -> bool:
        try:
            return bool(fast(f))
        except (TypeError, KeyError):
            return slow(f)
    return run


def symbols(condition: Condition) -> frozenset[str]:
    """Attribute names a condition reads."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, ast.SymbolExpression):
            found.add(node.name)
        for child in ("left", "right", "expression", "container", "member", "condition", "case_true",
                      "case_false"):
            sub = getattr(node, child, None)
            if isinstance(sub, ast.ExpressionBase):
                walk(sub)
        if isinstance(node, (ast.ArrayExpression, ast.SetExpression)):
            for value in node.value:
                walk(value)

    walk(condition.rule.statement.expression)
    return frozenset(found)


# --- campaign objects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignTemplate:
    source: str
    template: jinja2.Template
    used: tuple[str, ...]  # variables it reads, the render cache key
    subject: jinja2.Template | None = None  # email


@dataclass(frozen=True)
class OfferInfo:
    code: str
    name: str
    price: float

    def variables(self) -> dict[str, Any]:
        return {"offer_code": self.code, "offer_name": self.name, "price": self.price, "order": f"KT{self.code}"}


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    kind: str  # marketing | care
    channel: str  # sms | email
    target: Condition
    predicate: Callable[[Mapping[str, Any]], bool]
    offers: tuple[str, ...]
    template: CampaignTemplate
    schedule: Mapping[str, Any]
    trigger: BaseTrigger
    priority: int
    window: tuple[int, int]  # local seconds after midnight [start, end)
    start_at: float | None
    end_at: float | None
    repeat_after_days: float
    complaint_rate: float
    opt_out_rate: float
    min_sent: int
    source: str
    account: str
    preview: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ask(self) -> policy.Ask:
        return policy.Ask(self.id, self.kind, self.channel, self.offers, self.repeat_after_days)

    def in_date(self, t: float) -> bool:
        return (self.start_at is None or self.start_at <= t) and (self.end_at is None or t < self.end_at)

    def reads(self) -> frozenset[str]:
        return symbols(self.target) | frozenset(self.template.used)


@dataclass(frozen=True)
class CampaignBook:
    """Everything campaigns need from one fixture set: campaigns, the policy, offer names and brands."""

    campaigns: Mapping[str, Campaign]
    policy: policy.PolicyParams
    offers: Mapping[str, OfferInfo]
    brands: Mapping[str, str] = field(default_factory=dict)

    def get(self, campaign_id: str) -> Campaign:
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            known = ", ".join(sorted(self.campaigns)) or "(none loaded)"
            raise KeyError(f"unknown campaign '{campaign_id}'; known: {known}")
        return campaign


def template_vars(campaign: Campaign, facts: Mapping[str, Any], offer: OfferInfo | None,
                  brands: Mapping[str, str]) -> dict[str, Any]:
    """The variables a campaign template reads, for one subscriber and offer."""
    out: dict[str, Any] = {}
    offer_vars = offer.variables() if offer else dict.fromkeys(OFFER_VARS, "")
    for name in campaign.template.used:
        if name in offer_vars:
            out[name] = offer_vars[name]
        elif name == "brand_name":
            out[name] = brands.get(facts["brand"], facts["brand"])
        elif name == "name":
            out[name] = (facts.row.get("name") if isinstance(facts, LazyFacts) else facts.get("name")) or ""
        elif name == "campaign_name":
            out[name] = campaign.name
        else:
            out[name] = facts[name]
    return out


def render_item(campaign: Campaign, variables: Mapping[str, Any], offer_code: str | None) -> Item:
    """Render one campaign item (raises TemplateRenderError)."""
    text = render(campaign.template.template, **variables)
    subject = render(campaign.template.subject, **variables) if campaign.template.subject else None
    return Item(campaign.id, campaign.priority, campaign.kind, offer_code, text, content_hash(text), subject)


# --- parsing --------------------------------------------------------------------------------------


HOTLINE_FIELDS = {"agents": (int, True), "calls_per_agent_hour": ((int, float), True),
                  "target_utilisation": ((int, float), True), "baseline_calls_per_hour": ((int, float), False),
                  "callback_share": ((int, float), True), "min_rate_per_s": ((int, float), False)}
POLICY_FIELDS = {
    "timezone": (str, False), "caps": (dict, False), "same_offer_days": ((int, float), False),
    "refusals": (dict, False), "complaints": (dict, False), "history_days": ((int, float), False),
    "daily_capacity": (int, False), "opt_out_text": (str, False), "email_opt_out_text": (str, False),
    "digest": (dict, False), "hotline": (dict, True),
}
_BOUNDS = {"caps.day": (0, 100), "caps.week": (0, 500), "caps.month": (0, 2000), "same_offer_days": (0, 3650),
           "refusals.limit": (1, 1000), "refusals.window_days": (1, 3650), "complaints.limit": (1, 1000),
           "complaints.days": (0, 3650), "history_days": (1, 3650), "daily_capacity": (0, 10**9),
           "digest.max_parts": (1, 10), "hotline.agents": (0, 100000), "hotline.calls_per_agent_hour": (0.1, 1000),
           "hotline.target_utilisation": (0.01, 1), "hotline.baseline_calls_per_hour": (0, 10**7),
           "hotline.callback_share": (0.00001, 1), "hotline.min_rate_per_s": (0.01, 100000)}
_NESTED = {"caps": {"day": (int, False), "week": (int, False), "month": (int, False)},
           "refusals": {"limit": (int, False), "window_days": ((int, float), False)},
           "complaints": {"limit": (int, False), "days": ((int, float), False)},
           "digest": {"header": (str, False), "max_parts": (int, False)}, "hotline": HOTLINE_FIELDS}


def _bounds(doc: Doc, data: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for dotted, (low, high) in _BOUNDS.items():
        parts = dotted.split(".")
        value = data.get(parts[0])
        if len(parts) == 2:
            value = value.get(parts[1]) if isinstance(value, dict) else None
        if value is not None and not low <= value <= high:
            problems.append(doc.problem(tuple(parts), f"{dotted} must be within [{low}, {high}], got {value}"))
    return problems


def parse_policy(doc: Doc | None, _parsed: Parsed) -> tuple[policy.PolicyParams | None, list[Problem]]:
    if doc is None:
        return policy.PolicyParams(), []
    data, problems = require_mapping(doc)
    if data is None:
        return None, problems
    problems = check_fields(doc, (), data, POLICY_FIELDS)
    for key, spec in _NESTED.items():
        if isinstance(data.get(key), dict):
            problems += check_fields(doc, (key,), data[key], spec)
    if problems:
        return None, problems
    problems = _bounds(doc, data)
    if data.get("timezone") and policy.zone(data["timezone"]).key != data["timezone"]:
        problems.append(doc.problem(("timezone",), f"unknown time zone {data['timezone']!r} (e.g. Asia/Shanghai)"))
    if problems:
        return None, problems
    return _policy_from(data), []


def _policy_from(data: Mapping[str, Any]) -> policy.PolicyParams:
    base = policy.PolicyParams()
    caps, refusals = data.get("caps") or {}, data.get("refusals") or {}
    complaints, digest = data.get("complaints") or {}, data.get("digest") or {}
    hotline = policy.Hotline(**{k: v for k, v in data["hotline"].items()})
    return replace(
        base, timezone=data.get("timezone", base.timezone), cap_day=caps.get("day", base.cap_day),
        cap_week=caps.get("week", base.cap_week), cap_month=caps.get("month", base.cap_month),
        same_offer_days=float(data.get("same_offer_days", base.same_offer_days)),
        refusal_limit=refusals.get("limit", base.refusal_limit),
        refusal_window_days=float(refusals.get("window_days", base.refusal_window_days)),
        complaint_limit=complaints.get("limit", base.complaint_limit),
        complaint_days=float(complaints.get("days", base.complaint_days)),
        history_days=float(data.get("history_days", base.history_days)),
        daily_capacity=data.get("daily_capacity", base.daily_capacity),
        opt_out_text=data.get("opt_out_text", base.opt_out_text),
        email_opt_out_text=data.get("email_opt_out_text", base.email_opt_out_text),
        digest_header=digest.get("header", base.digest_header), max_parts=digest.get("max_parts", base.max_parts),
        hotline=hotline)


CAMPAIGN_FIELDS = {
    "id": (str, True), "name": (str, True), "kind": (str, True), "channel": (str, False), "target": (str, True),
    "offers": (list, False), "priority": (int, False), "schedule": (dict, True), "window": (str, False),
    "start": ((str, date), False), "end": ((str, date), False), "repeat_after_days": ((int, float), False),
    "thresholds": (dict, False), "templates": (dict, True), "source": (str, False), "account": (str, False),
    "note": (str, False),
}
THRESHOLD_FIELDS = {"complaint_rate": ((int, float), False), "opt_out_rate": ((int, float), False),
                    "min_sent": (int, False)}
EMAIL_FIELDS = {"subject": (str, True), "body": (str, True)}
WINDOW = re.compile(r"^(\d{1,2}:\d{2})-(\d{1,2}:\d{2})$")


def make_trigger(spec: Mapping[str, Any], tz: str) -> BaseTrigger:
    """An APScheduler trigger from ``{cron: {...} | "m h dom mon dow"}`` or ``{date: ISO}``; raises ValueError."""
    if set(spec) == {"cron"}:
        cron = spec["cron"]
        if isinstance(cron, str):
            return CronTrigger.from_crontab(cron, timezone=policy.zone(tz))
        if isinstance(cron, dict):
            unknown = set(cron) - set(CRON_FIELDS)
            if unknown:
                raise ValueError(f"unknown cron field(s) {', '.join(sorted(unknown))}; known: {', '.join(CRON_FIELDS)}")
            return CronTrigger(timezone=policy.zone(tz), **{k: str(v) for k, v in cron.items()})
        raise ValueError("cron must be a crontab text ('0 10 * * mon-fri') or a mapping of cron fields")
    if set(spec) == {"date"}:
        when = spec["date"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        if not isinstance(when, datetime):
            raise ValueError("date must be an ISO date-time, e.g. 2026-11-11T10:00:00")
        return DateTrigger(run_date=when, timezone=policy.zone(tz))
    raise ValueError("schedule must be exactly one of {cron: ...} or {date: ...}")


def _day_start(value: Any, tz: str, days_after: int = 0) -> float:
    day = value if isinstance(value, date) else date.fromisoformat(str(value))
    if isinstance(day, datetime):
        day = day.date()
    return datetime(day.year, day.month, day.day, tzinfo=policy.zone(tz)).timestamp() + days_after * 86400


def _templates(doc: Doc, path: tuple, item: dict, channel: str) -> tuple[CampaignTemplate | None, list[Problem]]:
    templates = item["templates"]
    if channel not in templates:
        return None, [doc.problem(path + ("templates",), f"a '{channel}' template is required for channel {channel}")]
    unknown = set(templates) - set(policy.CHANNELS)
    if unknown:
        return None, [doc.problem(path + ("templates",), f"unknown channel(s) {', '.join(sorted(unknown))}")]
    tpath = path + ("templates", channel)
    line = doc.line(*tpath)
    subject = None
    source = templates[channel]
    if channel == "email":
        problems = check_fields(doc, tpath, source, EMAIL_FIELDS)
        if problems:
            return None, problems
        subject, problems = compile_template(source["subject"], TEMPLATE_VARS, doc.file, line, path=".subject")
        if problems:
            return None, problems
        source = source["body"]
    compiled, problems = compile_template(source, TEMPLATE_VARS, doc.file, line, path=".".join(map(str, tpath)))
    if problems:
        return None, problems
    used = tuple(sorted(jinja2.meta.find_undeclared_variables(SMS_ENV.parse(source)) - set(SMS_ENV.globals)))
    if subject is not None:
        subject_used = jinja2.meta.find_undeclared_variables(SMS_ENV.parse(templates["email"]["subject"]))
        used = tuple(sorted(set(used) | (subject_used - set(SMS_ENV.globals))))
    return CampaignTemplate(source, compiled, used, subject), []


def _campaign_problems(doc: Doc, path: tuple, item: dict, offers: Mapping[str, OfferInfo]) -> list[Problem]:
    problems = []
    if not CAMPAIGN_ID.match(item["id"]):
        problems.append(doc.problem(path + ("id",), "id must be 1-64 of a-z 0-9 _ - (starting with a letter or digit)"))
    if item["kind"] not in policy.KINDS:
        problems.append(doc.problem(path + ("kind",), f"kind must be one of {', '.join(policy.KINDS)}"))
    if item.get("channel", "sms") not in policy.CHANNELS:
        problems.append(doc.problem(path + ("channel",), f"channel must be one of {', '.join(policy.CHANNELS)}"))
    for i, code in enumerate(item.get("offers") or []):
        if offers and str(code) not in offers:
            problems.append(doc.problem(path + ("offers", i), f"unknown offer '{code}' (not in offers.yaml)"))
    if item.get("window") is not None and not WINDOW.match(item["window"]):
        problems.append(doc.problem(path + ("window",), "window must be HH:MM-HH:MM, e.g. 09:00-20:00"))
    if not 0 <= item.get("priority", 50) <= 1000:
        problems.append(doc.problem(path + ("priority",), "priority must be 0..1000"))
    thresholds = item.get("thresholds") or {}
    problems += check_fields(doc, path + ("thresholds",), thresholds, THRESHOLD_FIELDS)
    for key in ("complaint_rate", "opt_out_rate"):
        if key in thresholds and not 0 < thresholds[key] <= 1:
            problems.append(doc.problem(path + ("thresholds", key), f"{key} must be in (0, 1]"))
    return problems


def _build(doc: Doc, path: tuple, item: dict, pol: policy.PolicyParams, offers: Mapping[str, OfferInfo],
           brands: Mapping[str, str]) -> tuple[Campaign | None, list[Problem]]:
    problems = _campaign_problems(doc, path, item, offers)
    channel = item.get("channel", "sms")
    target, found = compile_condition(item["target"], doc.file, doc.line(*path, "target"), f"{_p(path)}.target")
    problems += found
    template, found = _templates(doc, path, item, channel)
    problems += found
    try:
        trigger = make_trigger(item["schedule"], pol.timezone)
    except (ValueError, TypeError) as exc:
        problems.append(doc.problem(path + ("schedule",), f"bad schedule: {exc}"))
    try:
        start_at = _day_start(item["start"], pol.timezone) if item.get("start") else None
        end_at = _day_start(item["end"], pol.timezone, 1) if item.get("end") else None
    except ValueError as exc:
        problems.append(doc.problem(path + ("end",), f"bad date: {exc} (use YYYY-MM-DD)"))
    if problems:
        return None, problems
    window = WINDOW.match(item.get("window") or "09:00-20:00")
    try:
        win = (policy.parse_hhmm(window.group(1)), policy.parse_hhmm(window.group(2)))
    except ValueError as exc:
        return None, [doc.problem(path + ("window",), str(exc))]
    if win[0] >= win[1]:
        return None, [doc.problem(path + ("window",), "window must end after it starts, within one day")]
    thresholds = item.get("thresholds") or {}
    campaign = Campaign(
        id=item["id"], name=item["name"], kind=item["kind"], channel=channel, target=target,
        predicate=fast_predicate(target), offers=tuple(str(o) for o in item.get("offers") or ()),
        template=template, schedule=dict(item["schedule"]), trigger=trigger, priority=item.get("priority", 50),
        window=win, start_at=start_at, end_at=end_at,
        repeat_after_days=float(item.get("repeat_after_days", pol.same_offer_days if item["kind"] == "marketing"
                                         else 7)),
        complaint_rate=float(thresholds.get("complaint_rate", 0.001)),
        opt_out_rate=float(thresholds.get("opt_out_rate", 0.01)), min_sent=int(thresholds.get("min_sent", 500)),
        source=item.get("source", "10086"), account=item.get("account", "tester"))
    return _previewed(doc, path, campaign, pol, offers, brands)


def _p(path: tuple) -> str:
    return f"campaigns[{path[1]}]"


def _sample_facts() -> dict[str, Any]:
    """A plausible subscriber for the load-time preview (values typical of the demo population)."""
    return {"msisdn": "13800000000", "brand": "gotone", "plan": "全球通58元套餐", "age": 35, "balance": 56.8,
           "plan_fee": 58, "data_allowance_mb": 10240, "data_used_mb": 9216, "voice_allowance_min": 300,
           "voice_used_min": 180, "arpu_avg": 88.5, "arpu_history": [85, 90, 90], "days_silent": 0,
           "roaming_fee_month": 35, "roaming_fee_day": 12, "data_day_mb": 600, "tenure_months": 60,
           "family_size": 3, "value_grade": "B1", "usage_class": "C", "channel_pref": "sms", "name": "张先生"}


def _previewed(doc: Doc, path: tuple, campaign: Campaign, pol: policy.PolicyParams,
               offers: Mapping[str, OfferInfo], brands: Mapping[str, str]) -> tuple[Campaign | None, list[Problem]]:
    facts = LazyFacts(_sample_facts())
    offer = offers.get(campaign.offers[0]) if campaign.offers else None
    if offer is None and campaign.offers:
        offer = OfferInfo(campaign.offers[0], campaign.offers[0], 0.0)
    tpath = path + ("templates", campaign.channel)
    try:
        item = render_item(campaign, template_vars(campaign, facts, offer, brands), offer.code if offer else None)
    except TemplateRenderError as exc:
        return None, [doc.problem(tpath, f"template fails for a sample subscriber: {exc}")]
    if campaign.channel == "email":
        digest = email_digest([item], opt_out=pol.email_opt_out_text)
        return replace(campaign, preview={"channel": "email", "subject": digest.subject, "chars": len(digest.text)}), []
    digest = sms_digest([item], header=pol.digest_header, opt_out=pol.opt_out_text, max_parts=pol.max_parts)
    if not digest.items:
        size = sms_size(item.text + (pol.opt_out_text if campaign.kind == "marketing" else ""))
        return None, [doc.problem(tpath, f"SMS too long: {size} for a sample subscriber, "
                                         f"digest.max_parts is {pol.max_parts}")]
    size = sms_size(digest.text)
    return replace(campaign, preview={"channel": "sms", "text": digest.text, "encoding": size.encoding,
                                      "units": size.units, "parts": size.parts}), []


def _offer_infos(parsed: Parsed) -> dict[str, OfferInfo]:
    out = {}
    for offer in parsed.get("offers.offers") or ():
        get = offer.get if isinstance(offer, dict) else lambda k, o=offer: getattr(o, k, None)
        out[str(get("code"))] = OfferInfo(str(get("code")), str(get("name") or get("code")), float(get("price") or 0))
    return out


def _brands(parsed: Parsed) -> dict[str, str]:
    params = parsed.get("offers.segments")
    return dict(getattr(params, "brands", None) or {})


def parse_campaigns(doc: Doc | None, parsed: Parsed) -> tuple[dict[str, Campaign], list[Problem]]:
    if doc is None:
        return {}, []
    items, problems = require_list(doc, "campaigns")
    if items is None:
        return {}, problems
    if len(items) > MAX_CAMPAIGNS:
        return {}, [doc.problem(("campaigns",), f"more than {MAX_CAMPAIGNS} campaigns")]
    pol = parsed.get("notifier.contact_policy") or policy.PolicyParams()
    offers, brands = _offer_infos(parsed), _brands(parsed)
    out: dict[str, Campaign] = {}
    for i, item in enumerate(items):
        path = ("campaigns", i)
        found = check_fields(doc, path, item, CAMPAIGN_FIELDS)
        if not found and item["id"] in out:
            found = [doc.problem(path + ("id",), f"duplicate campaign id {item['id']!r}")]
        if not found:
            campaign, found = _build(doc, path, item, pol, offers, brands)
            if campaign is not None:
                out[campaign.id] = campaign
        problems += found
    return out, problems


def load_campaigns(session: Any, campaigns: Mapping[str, Campaign], parsed: Parsed) -> int:
    """Make sure every campaign has a state row; ops' pauses survive a reload."""
    known = set(session.scalars(select(CampaignState.campaign_id)))
    now = float(parsed["_now"])  # set by load_set from the injected clock
    for campaign_id in campaigns:
        if campaign_id not in known:
            session.add(CampaignState(campaign_id=campaign_id, state="active", changed_at=now))
    return len(campaigns)


def build_book(parsed: Parsed) -> CampaignBook:
    """The campaign book of a parsed fixture set (for ``gateway.sections.build_extras``)."""
    return CampaignBook(campaigns=dict(parsed.get("notifier.campaigns") or {}),
                        policy=parsed.get("notifier.contact_policy") or policy.PolicyParams(),
                        offers=_offer_infos(parsed), brands=_brands(parsed))


def preview_lines(book: CampaignBook) -> list[str]:
    """One line per campaign: its SMS size or email subject, for check-fixtures and the plan command."""
    lines = []
    for c in book.campaigns.values():
        p = c.preview
        if p.get("channel") == "sms":
            lines.append(f"{c.id}: SMS {p['units']} {p['encoding']} units, {p['parts']} part(s): {p['text']!r}")
        else:
            lines.append(f"{c.id}: email {p.get('subject')!r}, {p.get('chars')} characters")
    return lines


def next_fire(campaign: Campaign, after: float, tz: str) -> float | None:
    """The first fire time of the campaign's schedule at or after ``after`` (epoch seconds)."""
    start = datetime.fromtimestamp(after, policy.zone(tz))
    when = campaign.trigger.get_next_fire_time(None, start)
    return when.timestamp() if when is not None else None


def fires_between(campaign: Campaign, start: float, end: float, tz: str) -> bool:
    when = next_fire(campaign, start, tz)
    return when is not None and when < end


SECTIONS = [
    Section("notifier.contact_policy", "contact_policy.yaml", parse_policy, None, required=False),
    Section("notifier.campaigns", "campaigns.yaml", parse_campaigns, load_campaigns, required=False),
]
