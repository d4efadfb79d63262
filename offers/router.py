"""The one command router for every channel (SMS, USSD, email, HTTP, IVR).

A transport hands an :class:`Inbound` to :meth:`Router.handle` with the caller's
session and the clock's time, and gets a :class:`Reply` back (``text`` "" means no
reply). Keywords and reply texts are fixture data (keywords.yaml, replies.yaml),
matched case- and width-insensitively. The router never commits: the caller's
unit of work decides, so the MO, its effects and its reply commit together.

Actions (DESIGN.md, "SMS commands"): ``shelf`` (200), ``order`` (KT<code>, or a lone
digit after a shelf) -> second confirmation, ``confirm`` (Y), ``list`` (0000),
``cancel`` (QX<code>), ``balance`` (CXYE), ``usage`` (CXLL), ``opt_out`` (TD, T, N, R,
退订), ``opt_in`` (KTYX), ``refuse`` (BX<code>), ``help``. A lone digit answers the
newest open prompt: the last shelf (within ``router.shelf_prompt_window_s``) or a
prompt another domain registered (a survey), whichever was sent last.

The "200" reply of each subscriber is cached (:class:`offers.shelf_cache.ShelfCache`,
``Router.shelf_cache``), so a steady-state "200" reads nothing from the database.
Whatever changes a subscriber's shelf calls :func:`mark_changed` with the session that
writes it (the router does for confirm, cancel, opt-out/opt-in and refusals): the entry is
dropped at once, and again after that session commits, when every Router of the process
calls ``invalidate(msisdn)`` and then each of its ``subscriber_changed_listeners`` with the
msisdn. That list is the one hook a multi-process server needs: broadcast the msisdn and
call ``router.invalidate(msisdn)`` in the other processes (``invalidate_all()`` for a
rewrite of many subscribers: :func:`subscribers_rewritten`). A new catalog (fixture
reload) empties the cache by itself.

Other machines on the same PostgreSQL hear of it too: just before the session commits, the msisdns it
marked are published in that transaction (``core.fleet_events``, NOTIFY: delivered on commit only),
and each machine's serving processes invalidate them (gateway/fleet.py).
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from core import fleet_events
from core.settings import KNOBS
from core.templates import TemplateRenderError
from offers import exposures, fastsql, schema
from offers.catalog import CatalogOffer, OffersCatalog, normalize
from offers.learning import EMPTY, LearnedSnapshot, assign_segment, segment_key
from offers.models import PendingOrder, Refusal, ShelfView, Subscriber, Subscription
from offers.shelf import DAY, candidates, default_fits, fit_items, load_inputs, rank, reply_vars
from offers.shelf_cache import CachedShelf, ShelfCache, ShelfInputs, pack, unpack

log = logging.getLogger(__name__)

SERVICE_NUMBER = "10086"
MAX_TEXT = 1600
_DIGIT = re.compile(r"^[0-9]$")
_CHANGED = "offers.changed_msisdns"  # session.info key: subscribers whose shelf this transaction changed
_PUBLISHED = "offers.published_msisdns"  # session.info key: those of them the fleet was notified of already
_ROUTERS: weakref.WeakSet[Router] = weakref.WeakSet()

BASE_VARS = ("msisdn", "name", "brand_name")
REPLY_VARS: dict[str, tuple[str, ...]] = {
    "shelf": ("offers",),  # offers: [{rank, code, name, price, order}]
    "shelf_empty": (),
    "confirm_prompt": ("offer", "window_min"),  # offer: {code, name, price, order, confirm_text, validity_days}
    "order_done": ("offer",),
    "order_already": ("offer",),
    "order_unknown": ("code",),
    "order_unavailable": ("offer", "reason"),
    "order_excluded": ("offer", "other"),  # other: the active offer of the same group
    "confirm_none": (),
    "confirm_expired": ("offer",),
    "list": ("subscriptions",),  # subscriptions: [{code, name, price, cancel}]
    "list_empty": (),
    "cancel_done": ("offer",),
    "cancel_unknown": ("code",),
    "balance": ("balance",),
    "usage": ("used_mb", "allowance_mb", "left_mb", "used", "allowance", "left", "ratio"),
    "opt_out_done": (),
    "opt_in_done": (),
    "refuse_done": ("offer",),
    "digit_out_of_range": ("digit", "count"),
    "help": (),
    "not_subscriber": (),
}
"""Every reply template replies.yaml must define, with the variables it may use (plus BASE_VARS)."""


@dataclass(frozen=True)
class Inbound:
    channel: str  # sms, ussd, email, http, ivr
    sender: str  # the subscriber's MSISDN
    service: str  # the number / address it was sent to
    text: str
    account: str | None = None  # the ESME system_id that sent it, for routing the reply


@dataclass(frozen=True)
class Reply:
    text: str  # "" means no reply
    action: str
    source: str = SERVICE_NUMBER
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prompt:
    kind: str
    find_open: Callable[[Session, str, float], Any]
    answer: Callable[..., Reply]


class Router:
    def __init__(self, catalog: Callable[[], OffersCatalog], settings: Mapping[str, Any],
                 fits: Callable[[str, int], bool] = default_fits):
        """``catalog()`` returns the current snapshot; ``fits(text, parts)`` says whether a text fits
        that many SMS parts in its encoding (the transport knows GSM-7 vs UCS2)."""
        self._catalog = catalog
        self._settings = settings
        self._fits = fits
        self._prompts: list[_Prompt] = []
        self.shelf_cache = ShelfCache()
        self._learned: LearnedSnapshot = EMPTY
        # called with an msisdn after a commit changed that subscriber's shelf (see the module docstring)
        self.subscriber_changed_listeners: list[Callable[[str], None]] = []
        _ROUTERS.add(self)

    @property
    def learned(self) -> LearnedSnapshot:
        """The learned term's snapshot, swapped whole by the periodic refresh (offers/learning.py)."""
        return self._learned

    @learned.setter
    def learned(self, snapshot: LearnedSnapshot) -> None:
        # a new snapshot draws afresh, so every cached shelf may rank differently now: an entry ranked
        # under an older snapshot is ranked again from its cached inputs on its next hit (no database read)
        self._learned = snapshot

    def invalidate(self, msisdn: str) -> None:
        """Forget the cached shelf of one subscriber (this process only)."""
        self.shelf_cache.invalidate(msisdn)

    def invalidate_all(self) -> None:
        """Forget every cached shelf (this process only)."""
        self.shelf_cache.invalidate_all()

    def _committed(self, msisdns: set[str]) -> None:
        for msisdn in msisdns:
            self.invalidate(msisdn)
            for listener in list(self.subscriber_changed_listeners):
                listener(msisdn)

    def _knob(self, key: str) -> Any:
        return self._settings.get(key, KNOBS[key].default)

    def register_prompt(self, kind: str, find_open: Callable[[Session, str, float], Any],
                        answer: Callable[..., Reply]) -> None:
        """Let another domain answer lone digits.

        ``find_open(session, msisdn, now)`` returns None when nothing of this kind is open for the
        number, else ``(sent_at, prompt)``; ``answer(session, msg, prompt, now) -> Reply`` is called
        when that prompt is the newest open one.
        """
        self._prompts.append(_Prompt(kind, find_open, answer))

    def handle(self, session: Session, msg: Inbound, now: float) -> Reply:
        catalog = self._catalog()  # one snapshot for the whole message
        ctx = _Ctx(self, session, catalog, msg, now)
        text = msg.text[:MAX_TEXT]
        digit = normalize(text)
        if _DIGIT.match(digit):
            # before the subscriber check: a survey may go to any caller, subscriber or not
            answered = self._digit(ctx, digit)
            if answered is not None:
                return answered
        match = catalog.keywords.match(text)
        if match is not None and match[0] == "shelf":
            cached = self.shelf_cache.get(msisdn=msg.sender, catalog=catalog, now=now)
            if cached is not None and cached.learned is not self._learned:
                cached = self._rerank(msg.sender, cached, catalog)
            if cached is not None:  # the steady-state "200": no read; the shelf view and its exposures
                _remember_shelf(session, msg.sender, cached.codes, now)
                pairs, segment, arm = cached.exposure
                exposures.record_shelf(session, msg.sender, msg.channel, pairs, now, segment, arm)
                return Reply(cached.text, "shelf", SERVICE_NUMBER, {"offers": list(cached.codes)})
        if ctx.facts() is None:
            return ctx.reply("not_subscriber", "not_subscriber")
        if match is None:
            return ctx.reply("help", "help")
        action, arg = match
        return _ACTIONS[action](ctx, arg)

    def _rerank(self, msisdn: str, entry: CachedShelf, catalog: OffersCatalog) -> CachedShelf | None:
        """A cached shelf ranked again under the current learned snapshot (None: build it afresh)."""
        if entry.inputs is None:
            return None
        learned = self._learned
        arm, term = assign_segment(learned, entry.inputs.segment, msisdn)
        items = rank(unpack(catalog, entry.inputs.candidates), self._knob("shelf.top_k"), term)
        try:
            text, items = fit_items(catalog, items, entry.inputs.base, self._fits, self._knob("router.max_sms_parts"))
        except TemplateRenderError:
            return None  # the full path logs it and answers with the help
        return self.shelf_cache.rerank(entry, tuple(i.code for i in items), text,
                                       (exposures.shown(items), entry.inputs.segment, arm), learned)

    def _digit(self, ctx: _Ctx, digit: str) -> Reply | None:
        """The newest open prompt takes the digit (None when none is open); the shelf is one candidate
        among the registered ones."""
        best: tuple[float, Callable[[], Reply]] | None = None
        fastsql.write_shelf_views(ctx.session)  # a "200" earlier in this transaction is the last shelf
        view = ctx.session.get(ShelfView, ctx.msg.sender)
        fresh = view is not None and ctx.now - view.at <= self._knob("router.shelf_prompt_window_s")
        if fresh and ctx.facts() is not None:
            best = (view.at, lambda: _order_nth(ctx, view, int(digit)))
        for prompt in self._prompts:
            found = prompt.find_open(ctx.session, ctx.msg.sender, ctx.now)
            if found is None:
                continue
            sent_at, handle = found
            if best is None or sent_at > best[0]:
                best = (sent_at, lambda p=prompt, h=handle: p.answer(ctx.session, ctx.msg, h, ctx.now))
        return best[1]() if best is not None else None


class _Ctx:
    """One message being handled: its catalog snapshot, session, subscriber."""

    def __init__(self, router: Router, session: Session, catalog: OffersCatalog, msg: Inbound, now: float):
        self.router, self.session, self.catalog, self.msg, self.now = router, session, catalog, msg, now
        self._facts: dict | None = None
        self._base: dict[str, Any] | None = None
        self.active: set[str] = set()
        self.refused: dict[str, float] = {}

    def facts(self) -> dict | None:
        if self._facts is None:
            days = self.router._knob("shelf.refusal_days")
            self._facts, self.active, self.refused = load_inputs(self.session, self.msg.sender, self.now, days)
        return self._facts

    def base(self) -> dict[str, Any]:
        if self._base is None:
            facts = self._facts or {"msisdn": self.msg.sender}
            self._base = reply_vars(facts, self.catalog, facts.get("name", ""))
        return self._base

    def reply(self, key: str, action: str, details: dict[str, Any] | None = None, **variables: Any) -> Reply:
        try:
            text = self.catalog.reply(key, **self.base(), **variables)
        except TemplateRenderError as exc:
            # ops' template broke at run time: answer with the help rather than nothing
            log.error("reply template %s failed: %s", key, exc)
            text = self.catalog.reply("help", **self.base())
        return Reply(text, action, SERVICE_NUMBER, details or {})


def _offer_vars(offer: CatalogOffer) -> dict[str, Any]:
    return {"code": offer.code, "name": offer.name, "price": offer.price, "order": offer.order,
            "cancel": f"QX{offer.code}", "confirm_text": offer.confirm_text, "validity_days": offer.validity_days}


def _shelf(ctx: _Ctx, _arg: str) -> Reply:
    r = ctx.router
    days = r._knob("shelf.refusal_days")
    learned = r.learned
    segment = segment_key(ctx.facts())
    arm, term = assign_segment(learned, segment, ctx.msg.sender)
    cands = candidates(ctx.facts(), ctx.catalog, ctx.active, ctx.refused, ctx.now, refusal_days=days)
    base = ctx.base()
    try:
        text, items = fit_items(ctx.catalog, rank(cands, r._knob("shelf.top_k"), term), base, r._fits,
                                r._knob("router.max_sms_parts"))
    except TemplateRenderError as exc:
        log.error("shelf template failed: %s", exc)
        return ctx.reply("help", "help")
    codes = [i.code for i in items]
    _remember_shelf(ctx.session, ctx.msg.sender, codes, ctx.now)
    pairs = exposures.shown(items)
    exposures.record_shelf(ctx.session, ctx.msg.sender, ctx.msg.channel, pairs, ctx.now, segment, arm)
    refused_until = min((at + days * DAY for at in ctx.refused.values()), default=None)
    r.shelf_cache.put(ctx.msg.sender, ctx.catalog, ctx.now, tuple(codes), text, refused_until,
                      exposure=(pairs, segment, arm), learned=learned,
                      inputs=ShelfInputs(pack(ctx.catalog, cands), base, segment))
    return Reply(text, "shelf", SERVICE_NUMBER, {"offers": codes})


def _remember_shelf(session: Session, msisdn: str, codes: list[str] | tuple[str, ...], now: float) -> None:
    """Upsert the last shelf shown (one plain statement: this runs on every "200")."""
    fastsql.remember_shelf(session, msisdn, codes, now)
    loaded = session.identity_map.get(identity_key(ShelfView, msisdn)) if len(session.identity_map) else None
    if loaded is not None:  # a ShelfView read earlier in this unit of work must not shadow the new row
        session.expire(loaded)


def _order_nth(ctx: _Ctx, view: ShelfView, n: int) -> Reply:
    if not 1 <= n <= len(view.codes):
        return ctx.reply("digit_out_of_range", "help", digit=n, count=len(view.codes))
    return _order(ctx, view.codes[n - 1])


def _unavailable(ctx: _Ctx, offer: CatalogOffer) -> Reply | None:
    """Why this subscriber cannot order this offer now, as a reply; None when they can."""
    if offer.code in ctx.active:
        return ctx.reply("order_already", "order_already", {"offer": offer.code}, offer=_offer_vars(offer))
    for code in ctx.active:
        other = ctx.catalog.offer(code)
        if other is not None and offer.exclusive_group and other.exclusive_group == offer.exclusive_group:
            return ctx.reply("order_excluded", "order_refused", {"offer": offer.code, "other": code},
                             offer=_offer_vars(offer), other=_offer_vars(other))
    # the self-service shelf channel ("sms") covers SMS, USSD and HTTP orders alike
    allowed = {"sms", "web" if ctx.msg.channel == "http" else ctx.msg.channel}
    if not offer.in_date(ctx.now):
        reason = "活动不在有效期内"
    elif not offer.channels & allowed:
        reason = "该渠道暂不受理"
    elif not offer.eligibility.matches(ctx.facts()):
        reason = "您的号码暂不符合办理条件"
    else:
        return None
    return ctx.reply("order_unavailable", "order_refused", {"offer": offer.code, "reason": reason},
                     offer=_offer_vars(offer), reason=reason)


def _order(ctx: _Ctx, arg: str) -> Reply:
    offer = ctx.catalog.offer(arg)
    if offer is None:
        return ctx.reply("order_unknown", "order_unknown", {"code": arg.upper()}, code=arg.upper())
    refusal = _unavailable(ctx, offer)
    if refusal is not None:
        return refusal
    window = ctx.router._knob("router.confirm_window_s")
    pending = ctx.session.get(PendingOrder, ctx.msg.sender)
    if pending is None:
        pending = PendingOrder(msisdn=ctx.msg.sender)
        ctx.session.add(pending)
    pending.offer_code, pending.channel = offer.code, ctx.msg.channel
    pending.created_at, pending.expires_at, pending.confirmed_at = ctx.now, ctx.now + window, None
    exposures.record_outcome(ctx.session, ctx.msg.sender, offer.code, "ordered", ctx.now, channel=ctx.msg.channel)
    mark_changed(ctx.session, ctx.msg.sender)
    return ctx.reply("confirm_prompt", "confirm_prompt", {"offer": offer.code}, offer=_offer_vars(offer),
                     window_min=int(window // 60))


def _confirm(ctx: _Ctx, _arg: str) -> Reply:
    pending = ctx.session.get(PendingOrder, ctx.msg.sender)
    if pending is None:
        return ctx.reply("confirm_none", "confirm_none")
    offer = ctx.catalog.offer(pending.offer_code)
    if offer is None:
        return ctx.reply("confirm_none", "confirm_none")
    if pending.confirmed_at is not None:
        # a repeated Y: the subscription exists already, say so instead of ordering twice
        return ctx.reply("order_already", "order_already", {"offer": offer.code}, offer=_offer_vars(offer))
    if ctx.now > pending.expires_at:
        ctx.session.delete(pending)
        return ctx.reply("confirm_expired", "confirm_expired", {"offer": offer.code}, offer=_offer_vars(offer))
    refusal = _unavailable(ctx, offer)
    if refusal is not None:
        ctx.session.delete(pending)
        return refusal
    # the partial unique index keeps one active row even if two processes race on the same Y
    ctx.session.add(Subscription(msisdn=ctx.msg.sender, offer_code=offer.code, started_at=ctx.now,
                                 channel=pending.channel))
    mark_changed(ctx.session, ctx.msg.sender)
    pending.confirmed_at = ctx.now
    exposures.record_outcome(ctx.session, ctx.msg.sender, offer.code, "confirmed", ctx.now, channel=ctx.msg.channel)
    return ctx.reply("order_done", "subscribed", {"offer": offer.code}, offer=_offer_vars(offer))


def _list(ctx: _Ctx, _arg: str) -> Reply:
    rows = ctx.session.scalars(select(Subscription).where(
        Subscription.msisdn == ctx.msg.sender, Subscription.cancelled_at.is_(None))
        .order_by(Subscription.started_at, Subscription.offer_code)).all()
    if not rows:
        return ctx.reply("list_empty", "list")
    subs = []
    for row in rows:
        offer = ctx.catalog.offer(row.offer_code)
        subs.append(_offer_vars(offer) if offer else {"code": row.offer_code, "name": row.offer_code,
                                                      "price": 0.0, "cancel": f"QX{row.offer_code}"})
    return ctx.reply("list", "list", {"offers": [s["code"] for s in subs]}, subscriptions=subs)


def _cancel(ctx: _Ctx, arg: str) -> Reply:
    offer = ctx.catalog.offer(arg)
    code = offer.code if offer else arg.upper()
    done = ctx.session.execute(update(Subscription).where(
        Subscription.msisdn == ctx.msg.sender, Subscription.offer_code == code,
        Subscription.cancelled_at.is_(None)).values(cancelled_at=ctx.now)).rowcount
    if not done:
        return ctx.reply("cancel_unknown", "cancel_unknown", {"offer": code}, code=code)
    mark_changed(ctx.session, ctx.msg.sender)
    ctx.active.discard(code)
    exposures.record_outcome(ctx.session, ctx.msg.sender, code, "cancelled", ctx.now, channel=ctx.msg.channel)
    variables = _offer_vars(offer) if offer else {"code": code, "name": code, "price": 0.0}
    return ctx.reply("cancel_done", "cancelled", {"offer": code}, offer=variables)


def _balance(ctx: _Ctx, _arg: str) -> Reply:
    balance = f"{ctx.facts()['balance']:.2f}"
    return ctx.reply("balance", "balance", {"balance": balance}, balance=balance)


def _size(mb: float) -> str:
    return f"{mb / 1024:.2f}GB" if mb >= 1024 else f"{mb:.0f}MB"


def _usage(ctx: _Ctx, _arg: str) -> Reply:
    f = ctx.facts()
    used, allowance = f["data_used_mb"], f["data_allowance_mb"]
    left = max(allowance - used, 0.0)
    return ctx.reply("usage", "usage", {"used_mb": used, "allowance_mb": allowance},
                     used_mb=round(used, 1), allowance_mb=round(allowance, 1), left_mb=round(left, 1),
                     used=_size(used), allowance=_size(allowance), left=_size(left),
                     ratio=round(schema.ratio(used, allowance) * 100))


def _opt(ctx: _Ctx, opted_out: bool) -> Reply:
    values: dict[str, Any] = {"opted_out": opted_out}
    if not opted_out:
        values["consent_marketing"] = True
    ctx.session.execute(update(Subscriber).where(Subscriber.msisdn == ctx.msg.sender).values(**values))
    if opted_out:
        exposures.record_outcome(ctx.session, ctx.msg.sender, None, "opt_out", ctx.now, channel=ctx.msg.channel)
    mark_changed(ctx.session, ctx.msg.sender)
    key = "opt_out_done" if opted_out else "opt_in_done"
    return ctx.reply(key, "opt_out" if opted_out else "opt_in", {"opted_out": opted_out})


def _refuse(ctx: _Ctx, arg: str) -> Reply:
    offer = ctx.catalog.offer(arg)
    if offer is None:
        return ctx.reply("order_unknown", "order_unknown", {"code": arg.upper()}, code=arg.upper())
    record_refusal(ctx.session, ctx.msg.sender, offer.code, ctx.now, source=ctx.msg.channel)
    exposures.record_outcome(ctx.session, ctx.msg.sender, offer.code, "refused", ctx.now, channel=ctx.msg.channel,
                             suppresses=ctx.router._knob("shelf.refusal_days") > 0)
    return ctx.reply("refuse_done", "refused", {"offer": offer.code}, offer=_offer_vars(offer))


def record_refusal(session: Session, msisdn: str, code: str, now: float, source: str = "sms") -> None:
    """Note that a subscriber declined an offer (a reply, a campaign answer): it leaves their shelf
    for ``shelf.refusal_days`` days."""
    session.add(Refusal(msisdn=msisdn, offer_code=code, at=now, source=source))
    mark_changed(session, msisdn)


def mark_changed(session: Session, msisdn: str) -> None:
    """This session writes something that changes the subscriber's shelf: drop the cached shelf now
    (later messages of the same unit of work see the change) and once more after the commit."""
    session.info.setdefault(_CHANGED, set()).add(msisdn)
    for router in list(_ROUTERS):
        router.invalidate(msisdn)


def subscribers_rewritten() -> None:
    """Many subscribers were written (a population run, a bulk import): empty every shelf cache.

    That is this process; the transaction that wrote them tells the other machines with
    ``core.fleet_events.publish(conn, fleet_events.REWRITE)`` (offers.population does)."""
    for router in list(_ROUTERS):
        router.invalidate_all()


@event.listens_for(Session, "before_commit")
def _publish_changed(session: Session) -> None:
    """Tell the fleet (PostgreSQL) in this transaction, so that it hears only of committed changes.

    Also runs when a savepoint is released: what was sent then (part of the enclosing transaction
    from then on) is not sent again at the commit, unless a savepoint around it rolls back."""
    changed = session.info.get(_CHANGED)
    if not changed:
        return
    published = session.info.setdefault(_PUBLISHED, set())
    new = [m for m in changed if m not in published]
    if new:
        fleet_events.publish(session, fleet_events.SUBSCRIBER, sorted(new))
        published.update(new)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    session.info.pop(_PUBLISHED, None)
    changed = session.info.pop(_CHANGED, None)
    if changed:
        for router in list(_ROUTERS):
            router._committed(changed)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: Any) -> None:
    # A savepoint rolled back: the transaction goes on with what it changed before (kept, and
    # published again at the commit: a notification sent inside the savepoint is gone with it).
    # The whole transaction rolled back: nothing of it stands.
    session.info.pop(_PUBLISHED, None)
    changed = session.info.get(_CHANGED, ()) if previous.nested else session.info.pop(_CHANGED, ())
    # a shelf cached from the rolled-back state must not outlive it
    for msisdn in changed:
        for router in list(_ROUTERS):
            router.invalidate(msisdn)


_ACTIONS: dict[str, Callable[[_Ctx, str], Reply]] = {
    "shelf": _shelf,
    "order": _order,
    "confirm": _confirm,
    "list": _list,
    "cancel": _cancel,
    "balance": _balance,
    "usage": _usage,
    "opt_out": lambda ctx, _arg: _opt(ctx, True),
    "opt_in": lambda ctx, _arg: _opt(ctx, False),
    "refuse": _refuse,
    "help": lambda ctx, _arg: ctx.reply("help", "help"),
}
KEYWORD_ACTIONS = ("shelf", "confirm", "list", "balance", "usage", "opt_out", "opt_in", "help")
PREFIX_ACTIONS = ("order", "cancel", "refuse")
REQUIRED_ACTIONS = ("shelf", "order", "confirm", "list", "cancel", "balance", "usage", "opt_out", "opt_in")
