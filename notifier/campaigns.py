"""Planning and materialising campaign runs.

:func:`plan` decides, without sending, who gets what in one run of a campaign at an instant:

1. the send window (the campaign's ``window`` in the operator's time zone, from ``at`` on; after
   its end, the next day's) fixes the period, the local day of the window start;
2. consolidation partners: every other active campaign on the same channel whose schedule fires
   later in that period and has not run yet; their items ride in this run's digests;
3. subscribers stream in primary-key chunks with their contact history (contacts, refusals,
   subscriptions, complaints of the chunk's number range); each one targeted by the campaign goes
   through the contact policy (:mod:`notifier.policy`), every exclusion counted by reason;
4. the items that pass become one digest per subscriber (:mod:`notifier.consolidate`);
5. the digests are staggered: ``not_before`` spread evenly over the window at the rate the
   hotline can absorb (:func:`notifier.policy.hotline_rate`), spilling into the next day's window
   when the window is too short, and held past quiet hours in each subscriber's time zone.

:func:`materialise` writes the plan to the outbox and the contact log in the caller's transaction.
Each digest's idempotency key is ``cmp:<campaign>:<period>:<channel>:<msisdn>``, so planning
and materialising again after a crash creates no duplicates, and a re-plan reports subscribers
already served as ``already_sent`` rather than sending twice.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import distinct, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from core.db import transaction
from core.templates import TemplateRenderError
from notifier import policy
from notifier.campaign_models import CampaignRun, CampaignState, Complaint, ContactLog, ExclusionCount
from notifier.campaign_sections import (
    Campaign,
    CampaignBook,
    LazyFacts,
    OfferInfo,
    build_book,
    fires_between,
    next_fire,
    render_item,
    template_vars,
)
from notifier.consolidate import Digest, Item, email_digest, sms_digest
from notifier.models import OutboxMessage
from notifier.outbox import Outbox
from offers import exposures, schema
from offers.models import Refusal, Subscriber, Subscription

log = logging.getLogger("notifier.campaigns")

CHUNK = 20_000
RENDER_CACHE = 20_000  # rendered items kept (least recently used out): memory stays flat at any population
SAMPLE = 20
_POLICY_COLUMNS = ("msisdn", "brand", "name", "email", "timezone", "consent_marketing", "opted_out", "complaints")


class CampaignError(Exception):
    """A campaign cannot be planned or materialised; the message says what to do."""


@dataclass(slots=True)
class Delivery:
    msisdn: str
    dest: str
    tz: str
    text: str
    subject: str | None
    parts: int
    items: tuple[Item, ...]
    not_before: float = 0.0


@dataclass
class Plan:
    campaign_id: str
    name: str
    kind: str
    channel: str
    status: str  # ready | paused | ended | not_started
    at: float
    period: str
    window_start: float
    window_end: float
    source: str
    account: str
    partners: tuple[str, ...] = ()
    scanned: int = 0
    targeted: int = 0
    already_sent: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    items_before: int = 0  # promos that would have gone out one by one
    left_out: int = 0  # items that did not fit the part limit
    held_quiet: int = 0
    rate: policy.Rate = policy.Rate(0.0, "")
    deliveries: list[Delivery] = field(default_factory=list)  # empty when the plan was streamed
    recipients: int = 0
    first_at: float | None = None
    last_at: float | None = None
    elapsed_s: float = 0.0

    @property
    def messages(self) -> int:
        return self.recipients

    @property
    def duration_s(self) -> float:
        first, last = self.first_at, self.last_at
        return (last - first + (1.0 / self.rate.per_s if self.rate.per_s else 0.0)) if first is not None else 0.0

    def as_dict(self, tz: str = "Asia/Shanghai", sample: int = SAMPLE) -> dict[str, Any]:
        """JSON-ready: counts, rate, duration and the first ``sample`` recipients with their text."""
        iso = _iso(tz)
        return {**self.summary(tz), "sample": [
            {"msisdn": d.msisdn, "dest": d.dest, "not_before": iso(d.not_before), "parts": d.parts,
             "campaigns": [i.campaign_id for i in d.items], "offers": [i.offer_code for i in d.items if i.offer_code],
             "subject": d.subject, "text": d.text} for d in self.deliveries[:sample]]}

    def summary(self, tz: str = "Asia/Shanghai") -> dict[str, Any]:
        """JSON-ready counts, rate and duration."""
        iso = _iso(tz)
        return {
            "campaign": self.campaign_id, "name": self.name, "kind": self.kind, "channel": self.channel,
            "status": self.status, "at": iso(self.at), "period": self.period,
            "window": {"start": iso(self.window_start), "end": iso(self.window_end)},
            "scanned": self.scanned, "targeted": self.targeted, "already_sent": self.already_sent,
            "excluded": dict(self.excluded), "excluded_total": sum(self.excluded.values()),
            "recipients": self.messages,
            "consolidated": {"partners": list(self.partners), "items_before": self.items_before,
                             "messages_after": self.messages, "merged": self.items_before - self.messages,
                             "left_out_for_later": self.left_out},
            "held_for_quiet_hours": self.held_quiet,
            "rate": {"per_s": round(self.rate.per_s, 3), "derivation": self.rate.explanation},
            "first_at": iso(self.first_at), "last_at": iso(self.last_at),
            "expected_duration_s": round(self.duration_s, 1), "planning_s": round(self.elapsed_s, 3),
        }


def _iso(tz: str) -> Callable[[float | None], str | None]:
    zone = policy.zone(tz)
    return lambda t: None if t is None else datetime.fromtimestamp(t, zone).isoformat(timespec="seconds")


def message_key(campaign_id: str, period: str, channel: str, msisdn: str) -> str:
    return f"cmp:{campaign_id}:{period}:{channel}:{msisdn}"


# --- windows and staggering -------------------------------------------------------------------------


def _local(day: datetime, seconds: int, tz: str) -> float:
    zone = policy.zone(tz)
    return (datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(seconds=seconds)).timestamp()


def send_window(window: tuple[int, int], at: float, tz: str) -> tuple[float, float]:
    """The part of the campaign window still ahead of ``at``: today's, or tomorrow's when today's is over."""
    day = datetime.fromtimestamp(at, policy.zone(tz))
    start, end = _local(day, window[0], tz), _local(day, window[1], tz)
    if at >= end:
        day += timedelta(days=1)
        start, end = _local(day, window[0], tz), _local(day, window[1], tz)
    return max(start, at), end


def spread(n: int, start: float, end: float, rate: float, window: tuple[int, int], tz: str) -> list[float]:
    """``n`` send times evenly over ``[start, end)``, never closer than ``1/rate``; overflow goes on
    in the following days' windows at the same spacing."""
    return list(send_times(n, start, end, rate, window, tz))


def send_times(n: int, start: float, end: float, rate: float, window: tuple[int, int], tz: str) -> Iterator[float]:
    """:func:`spread`, one time at a time."""
    if n <= 0:
        return
    spacing = max(1.0 / rate, (end - start) / n)
    t, window_end = start, end
    for _ in range(n):
        if t >= window_end:
            t, window_end = send_window(window, window_end, tz)
        yield t
        t += spacing


# --- history ----------------------------------------------------------------------------------------


def _histories(conn: Connection, lo: str, hi: str, now: float, pol: policy.PolicyParams,
               ) -> dict[str, policy.History]:
    """Contact history of every number in ``[lo, hi]`` (range scans on the msisdn indexes)."""
    contacts: dict[str, list[policy.Contact]] = {}
    c = ContactLog.__table__.c
    for row in conn.execute(select(c.msisdn, c.at, c.campaign_id, c.offer_code, c.channel, c.kind, c.content_hash,
                                   c.message_key, c.period)
                            .where(c.msisdn.between(lo, hi), c.at > now - pol.history_days * policy.DAY)):
        contacts.setdefault(row[0], []).append(policy.Contact(*row[1:]))
    refusals: dict[str, list[tuple[str, float]]] = {}
    since = now - max(pol.refusal_window_days, pol.same_offer_days) * policy.DAY
    r = Refusal.__table__.c
    for msisdn, code, at in conn.execute(select(r.msisdn, r.offer_code, r.at)
                                         .where(r.msisdn.between(lo, hi), r.at > since)):
        refusals.setdefault(msisdn, []).append((code, at))
    subscribed: dict[str, set[str]] = {}
    s = Subscription.__table__.c
    for msisdn, code in conn.execute(select(s.msisdn, s.offer_code)
                                     .where(s.msisdn.between(lo, hi), s.cancelled_at.is_(None))):
        subscribed.setdefault(msisdn, set()).add(code)
    complaints: dict[str, list[float]] = {}
    k = Complaint.__table__.c
    for msisdn, at in conn.execute(select(k.msisdn, k.at).where(k.msisdn.between(lo, hi),
                                                                k.at > now - pol.complaint_days * policy.DAY)):
        complaints.setdefault(msisdn, []).append(at)
    out = {}
    for msisdn in set(contacts) | set(refusals) | set(subscribed) | set(complaints):
        out[msisdn] = policy.History(tuple(contacts.get(msisdn, ())), tuple(refusals.get(msisdn, ())),
                                     frozenset(subscribed.get(msisdn, ())), tuple(complaints.get(msisdn, ())))
    return out


def _columns(campaigns: list[Campaign]) -> list[Any]:
    """Only the subscriber columns the targets and templates read (all of them when a derived fact is used)."""
    table = Subscriber.__table__
    reads = set().union(*(c.reads() for c in campaigns))
    if reads - set(schema.RAW) - {"brand_name", "name", "campaign_name", "offer_code", "offer_name", "price",
                                  "order"}:
        return list(table.columns)
    names = (reads & set(schema.RAW)) | set(_POLICY_COLUMNS)
    return [table.c[n] for n in table.columns.keys() if n in names]


def stream_subscribers(conn: Connection, columns: list[Any], chunk: int = CHUNK) -> Iterator[list[Any]]:
    """Subscriber rows in primary-key order, ``chunk`` at a time (keyset pages: no long-open cursor)."""
    table = Subscriber.__table__
    last = ""
    while True:
        rows = conn.execute(select(*columns).where(table.c.msisdn > last).order_by(table.c.msisdn)
                            .limit(chunk)).all()
        if not rows:
            return
        yield rows
        last = rows[-1].msisdn


# --- planning ---------------------------------------------------------------------------------------


def campaign_states(session: Session) -> dict[str, str]:
    return dict(session.execute(select(CampaignState.campaign_id, CampaignState.state)).all())


def effective_policy(book: CampaignBook, settings: Mapping[str, Any]) -> policy.PolicyParams:
    """The book's policy with quiet hours from the ``campaign.quiet_*`` knobs."""
    return replace(book.policy, quiet_start=policy.parse_hhmm(settings.get("campaign.quiet_start", "21:00")),
                   quiet_end=policy.parse_hhmm(settings.get("campaign.quiet_end", "08:00")))


def as_book(catalog: Any) -> CampaignBook:
    return catalog if isinstance(catalog, CampaignBook) else build_book(catalog)


class _Renderer:
    """Renders campaign items, caching by the values of the variables each template reads."""

    def __init__(self, book: CampaignBook):
        self.book = book
        self.cache: OrderedDict[tuple, Item | None] = OrderedDict()

    def item(self, campaign: Campaign, facts: LazyFacts, offer_code: str | None) -> Item | None:
        offer = (self.book.offers.get(offer_code) or OfferInfo(offer_code, offer_code, 0.0)) if offer_code else None
        variables = template_vars(campaign, facts, offer, self.book.brands)
        key = (campaign.id, offer_code, *variables.values())
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        try:
            item = render_item(campaign, variables, offer_code)
        except TemplateRenderError as exc:
            log.warning("campaign %s: template failed for %s: %s", campaign.id, facts.row.get("msisdn"), exc)
            item = None
        self.cache[key] = item
        if len(self.cache) > RENDER_CACHE:
            self.cache.popitem(last=False)
        return item


@dataclass
class _Run:
    """Mutable state of one planning pass."""

    lead: Campaign
    partners: list[Campaign]
    pol: policy.PolicyParams
    now: float
    period: str
    send_estimate: float
    used_today: int
    renderer: _Renderer
    plan: Plan
    listener: Callable[[Verdict], None] | None = None  # told every targeted subscriber's outcome
    keep: bool = True  # keep the deliveries in the plan (False: only count them)

    def exclude(self, code: str, msisdn: str) -> None:
        self.plan.excluded[code] = self.plan.excluded.get(code, 0) + 1
        if self.listener is not None:
            self.listener(Verdict(msisdn, "excluded", code))

    def served(self, msisdn: str) -> None:
        self.plan.already_sent += 1
        if self.listener is not None:
            self.listener(Verdict(msisdn, "already_sent"))

    def deliver(self, delivery: Delivery) -> None:
        self.plan.recipients += 1
        if self.keep:
            self.plan.deliveries.append(delivery)
        if self.listener is not None:
            self.listener(Verdict(delivery.msisdn, "recipient", delivery=delivery))


@dataclass(frozen=True, slots=True)
class Verdict:
    """One targeted subscriber's outcome in a plan: ``recipient`` (with the delivery), ``excluded``
    (with the reason code) or ``already_sent`` (served earlier in this period)."""

    msisdn: str
    outcome: str
    reason: str | None = None
    delivery: Delivery | None = None


def _served(history: policy.History, campaign_id: str, period: str) -> bool:
    return any(c.campaign_id == campaign_id and c.period == period for c in history.contacts)


def _campaign_item(run: _Run, campaign: Campaign, facts: LazyFacts, history: policy.History
                   ) -> tuple[Item | None, str | None]:
    """The campaign's item for this subscriber, or ``(None, reason code)``."""
    ask = campaign.ask
    chosen = policy.choose_offer(ask, history, run.pol, run.now)
    if not chosen.ok:
        return None, chosen.code
    blocked = policy.cooldown(ask, history, run.pol, run.now)
    if not blocked.ok:
        return None, blocked.code
    item = run.renderer.item(campaign, facts, chosen.offer)
    if item is None:
        return None, "render_failed"
    blocked = policy.same_content(item.content_hash, history, run.pol) if history.contacts else policy.OK
    return (item, None) if blocked.ok else (None, blocked.code)


def _digest(run: _Run, items: list[Item]) -> Digest:
    if run.lead.channel == "email":
        return email_digest(items, opt_out=run.pol.email_opt_out_text)
    return sms_digest(items, header=run.pol.digest_header, opt_out=run.pol.opt_out_text, max_parts=run.pol.max_parts)


def _consider(run: _Run, row: Any, history: policy.History) -> None:
    """One subscriber: target, policy, items, digest."""
    facts = LazyFacts(row._mapping)
    lead, plan = run.lead, run.plan
    if not lead.predicate(facts):
        return
    plan.targeted += 1
    if history.contacts and _served(history, lead.id, run.period):
        run.served(row.msisdn)
        return
    decision = policy.subscriber_checks(facts, history, run.pol, run.now)
    if decision.ok:
        decision = policy.channel_ok(lead.channel, row.email)
    if not decision.ok:
        run.exclude(decision.code, row.msisdn)
        return
    item, reason = _campaign_item(run, lead, facts, history)
    if item is None:
        run.exclude(reason, row.msisdn)
        return
    items = [item]
    for partner in run.partners:
        if partner.predicate(facts) and not (history.contacts and _served(history, partner.id, run.period)):
            extra, _ = _campaign_item(run, partner, facts, history)
            if extra is not None:
                items.append(extra)
    marketing = any(i.kind == "marketing" for i in items)
    if policy.counts_in_caps("marketing" if marketing else "care", lead.channel):
        for decision in (policy.caps(history, run.pol, run.send_estimate) if history.contacts else policy.OK,
                         policy.capacity(run.used_today, run.pol)):
            if not decision.ok:
                run.exclude(decision.code, row.msisdn)
                return
    digest = _digest(run, items)
    if item not in digest.items:  # the run's own item goes first when partners crowd it out
        digest = _digest(run, [item])
        if not digest.items:
            run.exclude("too_long", row.msisdn)
            return
    if marketing and lead.channel == "sms":
        run.used_today += 1
    plan.items_before += len(digest.items)
    plan.left_out += len(digest.left_out)
    dest = row.msisdn if lead.channel == "sms" else row.email
    run.deliver(Delivery(row.msisdn, dest, row.timezone or run.pol.timezone, digest.text, digest.subject,
                         digest.parts, digest.items))


def _used_today(session: Session, period: str) -> int:
    c = ContactLog.__table__.c
    return session.scalar(select(func.count(distinct(c.message_key)))
                          .where(c.period == period, c.kind == "marketing", c.channel == "sms")) or 0


def _partners(session: Session, book: CampaignBook, lead: Campaign, start: float, period_end: float,
              period: str, states: Mapping[str, str]) -> list[Campaign]:
    ran = set(session.scalars(select(CampaignRun.campaign_id).where(CampaignRun.period == period)))
    return [c for c in book.campaigns.values()
            if c.id != lead.id and c.channel == lead.channel and states.get(c.id, "active") == "active"
            and c.id not in ran and c.in_date(start) and fires_between(c, start, period_end, book.policy.timezone)]


def _status(lead: Campaign, state: str, start: float) -> str:
    if lead.end_at is not None and start >= lead.end_at:
        return "ended"
    if lead.start_at is not None and start < lead.start_at:
        return "not_started"
    return "paused" if state == "paused" else "ready"


def plan(session: Session, catalog: Any, campaign_id: str, at: float, settings: Mapping[str, Any], *,
         progress: Callable[[int], None] | None = None, chunk: int = CHUNK,
         listener: Callable[[Verdict], None] | None = None, keep: bool = True) -> Plan:
    """Who would get what in a run of ``campaign_id`` at ``at`` (epoch seconds); nothing is written.

    ``catalog`` is a :class:`CampaignBook` or a parsed fixture set. ``progress(n)`` is called after
    every chunk with the number of subscribers scanned; ``listener`` with every targeted subscriber's
    :class:`Verdict` in msisdn order. With ``keep=False`` the deliveries are counted, not kept, and
    get no send times (see :func:`stream_plan`). Raises :class:`CampaignError` for an unknown campaign.
    """
    started = time.perf_counter()
    book = as_book(catalog)
    try:
        lead = book.get(campaign_id)
    except KeyError as exc:
        raise CampaignError(exc.args[0]) from None
    pol = effective_policy(book, settings)
    start, end = send_window(lead.window, at, pol.timezone)
    period = policy.local_date(start, pol.timezone)
    day = datetime.fromtimestamp(start, policy.zone(pol.timezone))
    period_end = _local(day + timedelta(days=1), 0, pol.timezone)
    states = campaign_states(session)
    status = _status(lead, states.get(lead.id, "active"), start)
    result = Plan(lead.id, lead.name, lead.kind, lead.channel, status, at, period, start, end, lead.source,
                  lead.account, rate=policy.hotline_rate(pol.hotline, float(settings.get("outbox.rate", 2000.0))))
    if status in ("ended", "not_started"):
        return result
    partners = _partners(session, book, lead, start, period_end, period, states)
    result.partners = tuple(p.id for p in partners)
    run = _Run(lead, partners, pol, at, period, start, _used_today(session, period), _Renderer(book), result,
               listener, keep)
    conn = session.connection()
    for rows in stream_subscribers(conn, _columns([lead, *partners]), chunk):
        histories = _histories(conn, rows[0].msisdn, rows[-1].msisdn, at, pol)
        empty = policy.EMPTY_HISTORY
        for row in rows:
            _consider(run, row, histories.get(row.msisdn, empty))
        result.scanned += len(rows)
        if progress is not None:
            progress(result.scanned)
    result.excluded = {code: result.excluded[code] for code in policy.REASONS if code in result.excluded}
    _schedule(result, lead, pol)
    result.elapsed_s = time.perf_counter() - started
    return result


def _schedule(result: Plan, lead: Campaign, pol: policy.PolicyParams) -> None:
    times = _times(result, lead, pol)
    for delivery in result.deliveries:
        delivery.not_before = times(delivery.tz)


def _times(result: Plan, lead: Campaign, pol: policy.PolicyParams) -> Callable[[str], float]:
    """The send time of the next recipient (in plan order, by its time zone); keeps the plan's
    first/last time and quiet-hours count up to date."""
    times = send_times(result.recipients, result.window_start, result.window_end, result.rate.per_s, lead.window,
                       pol.timezone)
    result.held_quiet, result.first_at, result.last_at = 0, None, None

    def next_time(tz: str) -> float:
        t = next(times)
        held = policy.quiet_hold(t, tz, pol.quiet_start, pol.quiet_end) if lead.channel == "sms" else t
        result.held_quiet += held != t
        result.first_at = held if result.first_at is None else min(result.first_at, held)
        result.last_at = held if result.last_at is None else max(result.last_at, held)
        return held

    return next_time


# --- the whole list, streamed -------------------------------------------------------------------------

LINE_FIELDS = ("msisdn", "outcome", "reason", "dest", "not_before", "parts", "campaigns", "offers", "subject", "text")


def _spooled(verdict: Verdict) -> str:
    d = verdict.delivery
    line: dict[str, Any] = {"msisdn": verdict.msisdn, "outcome": verdict.outcome, "reason": verdict.reason}
    if d is not None:
        line.update(dest=d.dest, tz=d.tz, parts=d.parts, campaigns=[i.campaign_id for i in d.items],
                    offers=[i.offer_code for i in d.items if i.offer_code], subject=d.subject, text=d.text)
    return json.dumps(line, ensure_ascii=False) + "\n"


def stream_plan(session: Session, catalog: Any, campaign_id: str, at: float, settings: Mapping[str, Any], *,
                progress: Callable[[int], None] | None = None, chunk: int = CHUNK,
                ) -> tuple[Plan, Iterator[dict[str, Any]]]:
    """:func:`plan` for the whole list: the counts, and every targeted subscriber's line (``LINE_FIELDS``:
    a recipient with its send time and text, or the reason it is excluded or already served) in
    msisdn order. Send times depend on how many recipients there are, so lines are spooled to a
    temporary file while planning and timed as they are read back: memory stays flat at any size.
    The plan's ``first_at``/``last_at``/``held_quiet`` are complete once the lines are consumed.
    """
    book = as_book(catalog)
    spool = tempfile.TemporaryFile("w+", encoding="utf-8")
    try:
        result = plan(session, book, campaign_id, at, settings, progress=progress, chunk=chunk,
                      listener=lambda verdict: spool.write(_spooled(verdict)), keep=False)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return result, _timed_lines(result, book.get(campaign_id), effective_policy(book, settings), spool)


def _timed_lines(result: Plan, lead: Campaign, pol: policy.PolicyParams, spool: TextIO) -> Iterator[dict[str, Any]]:
    iso = _iso(pol.timezone)
    times = _times(result, lead, pol)
    with spool:
        for raw in spool:
            line = json.loads(raw)
            tz = line.pop("tz", None)
            line["not_before"] = iso(times(tz)) if line["outcome"] == "recipient" else None
            yield {key: line.get(key) for key in LINE_FIELDS}


def write_lines(lines: Iterator[dict[str, Any]], out: TextIO, fmt: str) -> None:
    """Plan lines as JSON lines (``jsonl``) or CSV with a header (``csv``; lists joined with ``;``)."""
    if fmt == "jsonl":
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return
    writer = csv.writer(out)
    writer.writerow(LINE_FIELDS)
    for line in lines:
        writer.writerow([";".join(v) if isinstance(v, list) else ("" if v is None else v)
                         for v in line.values()])


# --- materialising ----------------------------------------------------------------------------------


def _run_row(session: Session, result: Plan, now: float) -> CampaignRun:
    run = session.scalar(select(CampaignRun).where(CampaignRun.campaign_id == result.campaign_id,
                                                   CampaignRun.period == result.period))
    if run is None:
        run = CampaignRun(campaign_id=result.campaign_id, period=result.period, at=result.at, state="materialising")
        session.add(run)
        session.flush()
    return run


def _existing(session: Session, keys: list[str]) -> tuple[set[str], set[tuple[str, str]]]:
    outbox = set(session.scalars(select(OutboxMessage.idempotency_key).where(OutboxMessage.idempotency_key.in_(keys))))
    logged = set(tuple(r) for r in session.execute(select(ContactLog.message_key, ContactLog.campaign_id)
                                 .where(ContactLog.message_key.in_(keys))).all())
    return outbox, logged


def materialise(session: Session, outbox: Outbox, result: Plan, *, batch: int = 500,
                progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write the plan's messages to the outbox and the contact log, in the caller's transaction.

    Idempotent: a message whose key is already in the outbox, or an item already in the contact
    log, is not written again. Returns ``{"created", "existing", "contacts"}``. Raises
    :class:`CampaignError` unless the plan's status is ``ready``.
    """
    if result.status != "ready":
        raise CampaignError(f"campaign {result.campaign_id} is {result.status}; nothing materialised")
    now = outbox.now()
    run = _run_row(session, result, now)
    counts = {"created": 0, "existing": 0, "contacts": 0}
    for i in range(0, len(result.deliveries), batch):
        part = result.deliveries[i:i + batch]
        keys = [message_key(result.campaign_id, result.period, result.channel, d.msisdn) for d in part]
        in_outbox, logged = _existing(session, keys)
        for key, delivery in zip(keys, part, strict=True):
            _write(session, outbox, result, key, delivery, key in in_outbox, logged, counts)
        if progress is not None:
            progress(min(i + batch, len(result.deliveries)))
    _finish_run(session, run, result, now)
    return counts


def materialise_batched(factory: Any, outbox: Outbox, result: Plan, *, batch: int = 5000,
                        progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """:func:`materialise` in one short transaction per ``batch`` messages, so a big run never holds
    the database's write lock for long; a crash between batches is repaired by planning again."""
    totals = {"created": 0, "existing": 0, "contacts": 0}
    for i in range(0, max(len(result.deliveries), 1), batch):
        with transaction(factory) as session:
            counts = materialise(session, outbox, replace(result, deliveries=result.deliveries[i:i + batch]))
        for key, value in counts.items():
            totals[key] += value
        if progress is not None:
            progress(min(i + batch, len(result.deliveries)))
    return totals


def _write(session: Session, outbox: Outbox, result: Plan, key: str, d: Delivery, exists: bool,
           logged: set[tuple[str, str]], counts: dict[str, int]) -> None:
    if exists:
        counts["existing"] += 1
    else:
        extra = {"subject": d.subject} if d.subject else None
        outbox.enqueue(session, kind="campaign", source=result.source, dest=d.dest, text=d.text,
                       account=result.account if result.channel == "sms" else None,
                       channel="smpp" if result.channel == "sms" else "email", idempotency_key=key,
                       campaign_id=result.campaign_id, not_before=d.not_before, extra=extra)
        counts["created"] += 1
    for item in d.items:
        if (key, item.campaign_id) in logged:
            continue
        session.add(ContactLog(msisdn=d.msisdn, campaign_id=item.campaign_id, offer_code=item.offer_code,
                               channel=result.channel, kind=item.kind, at=d.not_before, period=result.period,
                               content_hash=item.content_hash, message_key=key, lead_campaign_id=result.campaign_id))
        if item.offer_code:
            exposures.record_exposure(session, d.msisdn, item.offer_code, result.channel,
                                      f"campaign:{item.campaign_id}", d.not_before)
        counts["contacts"] += 1


def _finish_run(session: Session, run: CampaignRun, result: Plan, now: float) -> None:
    run.state, run.finished_at, run.at = "done", now, result.at
    run.targeted = result.targeted
    run.messages = session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.idempotency_key.like(
                                      f"cmp:{result.campaign_id}:{result.period}:%"))) or 0
    run.items_before = max(run.items_before or 0, result.items_before)
    run.excluded = dict(result.excluded)
    run.rate_per_s = result.rate.per_s
    run.first_at, run.last_at = result.first_at, result.last_at
    session.query(ExclusionCount).filter(ExclusionCount.run_id == run.id).delete(synchronize_session=False)
    for reason, count in result.excluded.items():
        session.add(ExclusionCount(run_id=run.id, campaign_id=result.campaign_id, reason=reason, count=count))


def campaign_summaries(session: Session, catalog: Any, now: float) -> list[dict[str, Any]]:
    """Every campaign for ``GET /api/campaigns``: definition, state, next run, SMS preview."""
    book = as_book(catalog)
    states = campaign_states(session)
    iso = _iso(book.policy.timezone)
    out = []
    for c in sorted(book.campaigns.values(), key=lambda c: (-c.priority, c.id)):
        ended = c.end_at is not None and now >= c.end_at
        out.append({"id": c.id, "name": c.name, "kind": c.kind, "channel": c.channel, "priority": c.priority,
                    "state": "ended" if ended else states.get(c.id, "active"), "target": c.target.text,
                    "offers": list(c.offers), "schedule": dict(c.schedule),
                    "next_run": None if ended else iso(next_fire(c, now, book.policy.timezone)),
                    "window": [f"{w // 3600:02d}:{w % 3600 // 60:02d}" for w in c.window],
                    "thresholds": {"complaint_rate": c.complaint_rate, "opt_out_rate": c.opt_out_rate,
                                   "min_sent": c.min_sent},
                    "preview": dict(c.preview)})
    return out


# --- piggy-backing ----------------------------------------------------------------------------------


def piggyback_line(session: Session, msisdn: str, now: float, catalog: Any, *, record: bool = True) -> str | None:
    """One offer line a service message (bill, balance) may carry, or None.

    The highest-priority active marketing SMS campaign that targets this subscriber and passes the
    contact policy (caps aside: no extra message is sent) gives its rendered text plus the opt-out
    instruction. With ``record`` the contact is logged (channel ``piggyback``) so the 90-day offer
    rule and the same-content rule see it; the caller's transaction commits it.
    """
    book = as_book(catalog)
    row = session.execute(select(Subscriber.__table__).where(Subscriber.msisdn == msisdn)).first()
    if row is None:
        return None
    facts = LazyFacts(row._mapping)
    histories = _histories(session.connection(), msisdn, msisdn, now, book.policy)
    history = histories.get(msisdn, policy.EMPTY_HISTORY)
    if not policy.subscriber_checks(facts, history, book.policy, now).ok:
        return None
    states = campaign_states(session)
    renderer = _Renderer(book)
    for campaign in sorted(book.campaigns.values(), key=lambda c: (-c.priority, c.id)):
        if (campaign.kind != "marketing" or campaign.channel != "sms" or not campaign.in_date(now)
                or states.get(campaign.id, "active") != "active" or not campaign.predicate(facts)):
            continue
        chosen = policy.choose_offer(campaign.ask, history, book.policy, now)
        item = renderer.item(campaign, facts, chosen.offer) if chosen.ok else None
        if item is None or not policy.same_content(item.content_hash, history, book.policy).ok:
            continue
        if record:
            period = policy.local_date(now, book.policy.timezone)
            session.add(ContactLog(msisdn=msisdn, campaign_id=campaign.id, offer_code=item.offer_code,
                                   channel="piggyback", kind="marketing", at=now, period=period,
                                   content_hash=item.content_hash, message_key=f"pb:{campaign.id}:{msisdn}:{now:.0f}",
                                   lead_campaign_id=campaign.id))
        return f"{item.text}{book.policy.opt_out_text}"
    return None


# --- the CLI entry point ----------------------------------------------------------------------------


def parse_at(text: str, tz: str) -> float:
    """An ISO time (a naive one is in the operator's time zone) -> epoch seconds; ValueError if bad."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at expects an ISO time like 2026-11-24T10:00:00+08:00, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=policy.zone(tz))
    return when.timestamp()


def _load_book(session: Session, fixtures_dir: str | None) -> tuple[CampaignBook, Any]:
    from core.fixtures import FixtureError, parse_set, read_dir
    from core.settings import Settings
    from notifier import campaign_sections, core_sections
    from notifier.models import FixtureSetRow
    from offers import sections as offer_sections

    if fixtures_dir is not None:
        files = read_dir(fixtures_dir)
    else:
        row = FixtureSetRow.latest(session)
        if row is None:
            raise CampaignError("no fixtures in this database: run load-fixtures first (or serve --demo)")
        files = row.files
    sections = [*core_sections.SECTIONS, *offer_sections.SECTIONS, *campaign_sections.SECTIONS]
    names = {s.filename.rsplit(".", 1)[0] for s in sections}
    mine = {k: v for k, v in files.items() if k.rsplit(".", 1)[0] in names or k.startswith("templates/")}
    parsed, problems = parse_set(mine, sections)
    if problems:
        raise FixtureError(problems)
    return build_book(parsed), Settings(parsed.get("config") or {})


def plan_command(db_url: str, fixtures_dir: str | None, campaign_id: str, at_iso: str, as_json: bool, *,
                 lines: str | None = None, out: TextIO | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """``campaign plan ID --at TIME [--json | --all | --csv]``: returns ``(exit code, text to print)``;
    nothing is sent.

    The campaigns come from ``fixtures_dir`` when given, else from the fixture set loaded last into
    the database. With ``lines`` (``jsonl`` or ``csv``) every targeted subscriber's line is written to
    ``out`` (:func:`stream_plan`) and the text is the summary, ``{"summary": {...}}``. ``progress(n)``
    is told the subscribers scanned after every chunk (default: the ``notifier.campaigns`` log).
    """
    from core.db import make_engine, migrate, session_factory
    from core.fixtures import FixtureError

    progress = progress or (lambda n: log.info("campaign plan %s: %d subscribers scanned", campaign_id, n))
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            book, settings = _load_book(session, fixtures_dir)
            at = parse_at(at_iso, book.policy.timezone)
            if lines is None:
                result = plan(session, book, campaign_id, at, settings, progress=progress)
            else:
                result, stream = stream_plan(session, book, campaign_id, at, settings, progress=progress)
    except (CampaignError, ValueError) as exc:
        return 2, f"error: {exc}"
    except FixtureError as exc:
        return 1, f"fixture problems:\n{exc}"
    finally:
        engine.dispose()
    if lines is not None:
        write_lines(stream, out, lines)
        return 0, json.dumps({"summary": result.summary(book.policy.timezone)}, ensure_ascii=False)
    data = result.as_dict(book.policy.timezone)
    if as_json:
        return 0, json.dumps(data, ensure_ascii=False, indent=2)
    from notifier.reports import render_plan

    return 0, render_plan(data)
