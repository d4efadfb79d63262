"""The contact policy: pure functions of (subscriber facts, contact history, campaign, parameters, clock).

Every function returns a :class:`Decision` that explains itself
(``"excluded: contacted 2026-10-02 (campaign databoost), window 90 days"``), so ops can be
shown why and tests can hit every boundary. The rules, in the order they are checked:

1. consent: ``consent_marketing`` false -> ``no_consent``; opted out (TD) -> ``opted_out``;
2. complaints: ``complaints`` (12-month count) >= ``complaint_limit``, or a complaint row within
   ``complaint_days`` -> ``complained``;
3. refusals: ``refusal_limit`` or more refusals within ``refusal_window_days`` -> ``refusals``;
4. channel: an email campaign needs an address -> ``no_email``;
5. offers: an offer already subscribed, refused or contacted within ``same_offer_days`` is skipped;
   when none is left -> ``subscribed`` / ``recent_offer``;
6. cooldown: the same campaign within its ``repeat_after_days`` -> ``cooldown``;
7. content: the same content (hash of the text) sent before -> ``same_content``;
8. caps (marketing SMS only; a digest counts once): ``cap_day`` / ``cap_week`` / ``cap_month``
   messages in the rolling 1 / 7 / 30 days before the send time -> ``cap_day`` ...;
9. capacity: the global marketing messages per day -> ``capacity``.

Quiet hours never exclude: a message due inside them is held to their end in the subscriber's
time zone (:func:`quiet_hold`). Windows are half-open: a contact exactly ``N`` days old is
outside an ``N``-day window; quiet hours include their start and exclude their end.
Care messages (the four-high care campaigns) obey every rule except the marketing caps,
the 90-day offer rule and the global capacity, which are for marketing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = 86400.0
KINDS = ("marketing", "care")
CHANNELS = ("sms", "email")

# Every exclusion reason, in check order (reports list them in this order).
REASONS = ("no_consent", "opted_out", "complained", "refusals", "no_email", "subscribed", "recent_offer",
           "cooldown", "same_content", "cap_day", "cap_week", "cap_month", "capacity", "render_failed",
           "too_long")
CAPS = (("cap_day", 1), ("cap_week", 7), ("cap_month", 30))


@dataclass(frozen=True)
class Hotline:
    """Hotline capacity the campaign must not flood: the stagger rate is derived from it."""

    agents: int = 120
    calls_per_agent_hour: float = 10.0
    target_utilisation: float = 0.85
    baseline_calls_per_hour: float = 800.0
    callback_share: float = 0.005  # share of recipients who call the hotline about a message
    min_rate_per_s: float = 1.0


@dataclass(frozen=True)
class Rate:
    per_s: float
    explanation: str


@dataclass(frozen=True)
class PolicyParams:
    timezone: str = "Asia/Shanghai"  # the operator's clock: periods (local days) and send windows
    quiet_start: int = 21 * 3600  # seconds after local midnight
    quiet_end: int = 8 * 3600
    cap_day: int = 1
    cap_week: int = 3
    cap_month: int = 6
    same_offer_days: float = 90.0
    refusal_limit: int = 3
    refusal_window_days: float = 180.0
    complaint_limit: int = 1
    complaint_days: float = 365.0
    history_days: float = 180.0  # how far back contacts are read (same content, cooldowns)
    daily_capacity: int = 500_000
    opt_out_text: str = "回复TD退订"
    email_opt_out_text: str = "如不希望再收到此类邮件,请发送短信TD至10086退订。"
    max_parts: int = 3
    digest_header: str = "【中国移动】为您精选:"
    hotline: Hotline = field(default_factory=Hotline)


@dataclass(frozen=True)
class Contact:
    at: float
    campaign_id: str
    offer_code: str | None
    channel: str
    kind: str
    content_hash: str
    message_key: str
    period: str = ""


@dataclass(frozen=True)
class History:
    """What the policy knows of one subscriber besides the facts."""

    contacts: tuple[Contact, ...] = ()
    refusals: tuple[tuple[str, float], ...] = ()  # (offer code, at)
    subscribed: frozenset[str] = frozenset()
    complaints: tuple[float, ...] = ()  # complaint times


EMPTY_HISTORY = History()


@dataclass(frozen=True)
class Ask:
    """What one campaign wants to send one subscriber."""

    campaign_id: str
    kind: str
    channel: str
    offers: tuple[str, ...] = ()
    repeat_after_days: float = 0.0


@dataclass(frozen=True)
class Decision:
    ok: bool
    code: str = "ok"
    reason: str = ""
    offer: str | None = None

    def __str__(self) -> str:
        return self.reason if self.ok else f"excluded: {self.reason}"


OK = Decision(True)


def _no(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """A time zone by name; an unknown name falls back to China Standard Time."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def local_date(t: float, tz: str) -> str:
    return datetime.fromtimestamp(t, zone(tz)).strftime("%Y-%m-%d")


def parse_hhmm(text: str) -> int:
    """``"21:00"`` -> seconds after midnight; raises ValueError with what is expected."""
    try:
        hours, minutes = str(text).split(":")
        value = dtime(int(hours), int(minutes))
    except (ValueError, TypeError):
        raise ValueError(f"expected a local time HH:MM, got {text!r}") from None
    return value.hour * 3600 + value.minute * 60


def _at_local(day: datetime, seconds: int, tz: ZoneInfo) -> float:
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    return (midnight + timedelta(seconds=seconds)).timestamp()


def in_quiet(t: float, tz: str, start: int, end: int) -> bool:
    """Whether ``t`` is inside quiet hours ``[start, end)`` (local seconds; may wrap midnight)."""
    if start == end:
        return False
    local = datetime.fromtimestamp(t, zone(tz))
    sod = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    return start <= sod < end if start < end else (sod >= start or sod < end)


def quiet_hold(t: float, tz: str, start: int, end: int) -> float:
    """``t`` itself outside quiet hours, else the end of the quiet period it falls in."""
    if not in_quiet(t, tz, start, end):
        return t
    zinfo = zone(tz)
    local = datetime.fromtimestamp(t, zinfo)
    sod = local.hour * 3600 + local.minute * 60 + local.second
    day = local + timedelta(days=1) if start > end and sod >= start else local
    return _at_local(day, end, zinfo)


def hotline_rate(hotline: Hotline, max_rate: float) -> Rate:
    """Messages per second the hotline can absorb: spare calls per hour over the callback share."""
    offered = hotline.agents * hotline.calls_per_agent_hour * hotline.target_utilisation
    spare = offered - hotline.baseline_calls_per_hour
    raw = spare / hotline.callback_share / 3600.0 if spare > 0 and hotline.callback_share > 0 else 0.0
    per_s = min(max(raw, hotline.min_rate_per_s), max_rate)
    text = (f"{hotline.agents} agents x {hotline.calls_per_agent_hour:g} calls/h x "
            f"{hotline.target_utilisation:g} utilisation = {offered:.0f} calls/h, minus "
            f"{hotline.baseline_calls_per_hour:.0f} baseline = {max(spare, 0):.0f} spare calls/h; "
            f"{hotline.callback_share:.2%} of recipients call back -> {raw:.2f} msg/s")
    if per_s != raw:
        text += f", bounded to {per_s:.2f} msg/s (floor {hotline.min_rate_per_s:g}, outbox.rate {max_rate:g})"
    return Rate(per_s, text)


# --- the rules -------------------------------------------------------------------------------------


def consent(facts: Mapping[str, Any]) -> Decision:
    if not facts.get("consent_marketing", True):
        return _no("no_consent", "no marketing consent on record")
    if facts.get("opted_out"):
        return _no("opted_out", "opted out of marketing (TD); never marketed until KTYX")
    return OK


def complaints(facts: Mapping[str, Any], history: History, params: PolicyParams, now: float) -> Decision:
    count = int(facts.get("complaints") or 0)
    if count >= params.complaint_limit:
        return _no("complained", f"{count} complaint(s) in 12 months, limit {params.complaint_limit}")
    since = now - params.complaint_days * DAY
    recent = [at for at in history.complaints if at > since]
    if recent:
        return _no("complained", f"complained {local_date(max(recent), params.timezone)}, "
                                 f"suppressed {params.complaint_days:g} days")
    return OK


def refusals(history: History, params: PolicyParams, now: float) -> Decision:
    since = now - params.refusal_window_days * DAY
    count = sum(1 for _, at in history.refusals if at > since)
    if count >= params.refusal_limit:
        return _no("refusals", f"{count} refusals in {params.refusal_window_days:g} days, "
                               f"limit {params.refusal_limit}")
    return OK


def channel_ok(channel: str, email: str | None) -> Decision:
    if channel == "email" and not email:
        return _no("no_email", "email campaign, no email address on record")
    return OK


def subscriber_checks(facts: Mapping[str, Any], history: History, params: PolicyParams, now: float) -> Decision:
    """The rules about the subscriber alone (1-3), shared by every campaign in a digest."""
    for decision in (consent(facts), complaints(facts, history, params, now), refusals(history, params, now)):
        if not decision.ok:
            return decision
    return OK


def offer_block(code: str, ask: Ask, history: History, params: PolicyParams, now: float) -> Decision:
    """Why one offer cannot go to this subscriber now, or OK."""
    if code in history.subscribed:
        return _no("subscribed", f"already subscribed to {code}")
    if ask.kind != "marketing":
        return OK
    since = now - params.same_offer_days * DAY
    last = max((c.at for c in history.contacts if c.offer_code == code and c.at > since), default=None)
    if last is not None:
        return _no("recent_offer", f"contacted {local_date(last, params.timezone)} about {code}, "
                                   f"window {params.same_offer_days:g} days")
    refused = max((at for offer, at in history.refusals if offer == code and at > since), default=None)
    if refused is not None:
        return _no("recent_offer", f"refused {code} {local_date(refused, params.timezone)}, "
                                   f"window {params.same_offer_days:g} days")
    return OK


def choose_offer(ask: Ask, history: History, params: PolicyParams, now: float) -> Decision:
    """The first of the campaign's offers that may go out (``Decision.offer``), else the first reason."""
    if not ask.offers:
        return OK
    first: Decision | None = None
    for code in ask.offers:
        block = offer_block(code, ask, history, params, now)
        if block.ok:
            return Decision(True, "ok", f"offer {code}", offer=code)
        first = first or block
    return first


def cooldown(ask: Ask, history: History, params: PolicyParams, now: float) -> Decision:
    if ask.repeat_after_days <= 0:
        return OK
    since = now - ask.repeat_after_days * DAY
    last = max((c.at for c in history.contacts if c.campaign_id == ask.campaign_id and c.at > since),
               default=None)
    if last is not None:
        return _no("cooldown", f"contacted {local_date(last, params.timezone)} by {ask.campaign_id}, "
                               f"repeats after {ask.repeat_after_days:g} days")
    return OK


def same_content(content_hash: str, history: History, params: PolicyParams) -> Decision:
    for c in history.contacts:
        if c.content_hash == content_hash:
            return _no("same_content", f"same content already sent {local_date(c.at, params.timezone)}")
    return OK


def caps(history: History, params: PolicyParams, send_at: float) -> Decision:
    """Marketing SMS caps over rolling windows ending at the send time; a digest counts once."""
    for code, days in CAPS:
        limit = getattr(params, code)
        since = send_at - days * DAY
        keys = {c.message_key for c in history.contacts
                if c.kind == "marketing" and c.channel == "sms" and c.at > since}
        if len(keys) >= limit:
            return _no(code, f"{len(keys)} marketing SMS in the last {days} day(s), cap {limit}")
    return OK


def capacity(used_today: int, params: PolicyParams) -> Decision:
    if used_today >= params.daily_capacity:
        return _no("capacity", f"global daily capacity {params.daily_capacity} reached")
    return OK


def counts_in_caps(kind: str, channel: str) -> bool:
    return kind == "marketing" and channel == "sms"


def decide(facts: Mapping[str, Any], history: History, ask: Ask, params: PolicyParams, now: float, *,
           send_at: float | None = None, content_hash: str | None = None, email: str | None = None,
           used_today: int = 0) -> Decision:
    """Every rule for one campaign and one subscriber; OK carries the chosen offer."""
    send_at = now if send_at is None else send_at
    checks = [lambda: subscriber_checks(facts, history, params, now),
              lambda: channel_ok(ask.channel, email)]
    for check in checks:
        decision = check()
        if not decision.ok:
            return decision
    chosen = choose_offer(ask, history, params, now)
    if not chosen.ok:
        return chosen
    for decision in (cooldown(ask, history, params, now),
                     same_content(content_hash, history, params) if content_hash else OK):
        if not decision.ok:
            return decision
    if counts_in_caps(ask.kind, ask.channel):
        for decision in (caps(history, params, send_at), capacity(used_today, params)):
            if not decision.ok:
                return decision
    return chosen


def count_reasons(decisions: Iterable[Decision]) -> dict[str, int]:
    """Exclusions counted by reason code, in :data:`REASONS` order."""
    out: dict[str, int] = {}
    for d in decisions:
        if not d.ok:
            out[d.code] = out.get(d.code, 0) + 1
    return {code: out[code] for code in REASONS if code in out}
