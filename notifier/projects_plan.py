"""Who a project calls: the voice contact policy and the plan, without dialling.

:func:`decide` is a pure function of (subscriber facts, voice history, project, book, time) ->
:class:`~notifier.policy.Decision` with a reason, checked in this order:

1. consent (the campaigns' rule): ``no_consent``, ``opted_out`` (TD);
2. ``do_not_call``: the number pressed 9, asked an agent, or is listed in projects.yaml;
3. ``complained`` (the campaigns' rule and parameters);
4. the offer: the first of the project's offers not subscribed (``subscribed``) and not refused
   within ``voice_policy.refusal_days`` (``refused_recently``);
5. ``already_called``: this project already finished with the number (answered, or out of attempts:
   its attempts count over every day and stage, and the dialer goes on from them);
6. ``calls_week``: ``voice_policy.calls_per_week`` marketing calls in the rolling 7 days, every
   project, counted as the subscriber counts them: every attempt that reached the phone (answered,
   busy, or rang unanswered; a call that failed in the network does not count). The dialer keeps to
   the same limit while it redials (:class:`WeekCalls`);
7. ``prefers_sms``: channel preference SMS; with the project's ``sms_campaign`` the subscriber is
   listed under ``sms_instead`` (that campaign's own plan then applies its SMS rules).

Quiet hours never exclude: a number inside them (in its own time zone) is called when they end
(``not_before``). The trial batch is chosen by a seeded hash of the number (:func:`trial_rank`)
among every number the target condition selects, excluded or not, so the same numbers are in it on
every plan: a trial planned again (the next day, or started after a pause) calls what is left of
the same batch, never new numbers in place of those it has finished with.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from notifier import policy
from notifier.campaign_models import Complaint
from notifier.campaign_sections import LazyFacts
from notifier.campaigns import _iso, parse_at, send_window, stream_subscribers
from notifier.project_models import DoNotCall, ProjectCall
from notifier.projects import Project, ProjectBook
from notifier.projects_lifecycle import state_of
from offers.models import Refusal, Subscriber, Subscription

REASONS = ("no_consent", "opted_out", "do_not_call", "complained", "subscribed", "refused_recently",
           "already_called", "calls_week", "prefers_sms")
# outcomes of a call that was answered: it ends the project's attempts
ANSWERED = ("accepted", "refused", "opted_out", "hungup", "abandoned")
# outcomes of a call that reached the subscriber's phone: each counts in voice_policy.calls_per_week
REACHED = frozenset((*ANSWERED, "busy", "no_answer"))
SAMPLE = 20
WEEK = 7 * policy.DAY


@dataclass(frozen=True)
class VoiceHistory:
    dnc: bool = False
    subscribed: frozenset[str] = frozenset()
    refusals: tuple[tuple[str, float], ...] = ()
    complaints: tuple[float, ...] = ()
    week_calls: tuple[float, ...] = ()  # starts of marketing calls that reached the phone (any project, 7 days)
    done: bool = False  # this project finished with the number
    attempts: int = 0  # this project's calls to the number so far


EMPTY = VoiceHistory()


@dataclass(slots=True)
class Target:
    msisdn: str
    offer: str
    segment: str
    tz: str
    trial: bool
    fit: float  # 1.0 when the subscriber is eligible for the offer, else lower: the callee's propensity scales by it
    not_before: float = 0.0
    week_calls: tuple[float, ...] = ()  # calls that reached the phone in the 7 days before the plan
    attempts_made: int = 0  # this project's earlier attempts (other days, the trial)


def _no(code: str, reason: str) -> policy.Decision:
    return policy.Decision(False, code, reason)


def choose_offer(project: Project, history: VoiceHistory, book: ProjectBook, now: float,
                 tz: str = "Asia/Shanghai") -> policy.Decision:
    """The first of the project's offers neither subscribed nor refused within the refusal window."""
    first = None
    since = now - book.voice.refusal_days * policy.DAY
    for code in project.offers:
        if code in history.subscribed:
            first = first or _no("subscribed", f"already subscribed to {code}")
            continue
        refused = max((at for c, at in history.refusals if c == code and at > since), default=None)
        if refused is not None:
            first = first or _no("refused_recently", f"refused {code} on {policy.local_date(refused, tz)}, "
                                                     f"no call about it for {book.voice.refusal_days:g} days")
            continue
        return policy.Decision(True, "ok", f"offer {code}", offer=code)
    return first


def decide(facts: Mapping[str, Any], history: VoiceHistory, project: Project, book: ProjectBook,
           campaign_params: policy.PolicyParams, now: float) -> policy.Decision:
    """Whether to call this subscriber for this project now; OK carries the offer (see the module doc)."""
    decision = policy.consent(facts)
    if not decision.ok:
        return decision
    if history.dnc:
        return _no("do_not_call", "on the do-not-call list")
    decision = policy.complaints(facts, policy.History(complaints=history.complaints), campaign_params, now)
    if not decision.ok:
        return decision
    chosen = choose_offer(project, history, book, now, campaign_params.timezone)
    if not chosen.ok:
        return chosen
    if history.done:
        return _no("already_called", f"already called by {project.id}")
    week = sum(1 for at in history.week_calls if at > now - WEEK)
    if week >= book.voice.calls_per_week:
        return _no("calls_week", f"{week} marketing call(s) in 7 days (answered, busy or unanswered), "
                                 f"limit {book.voice.calls_per_week}")
    if facts.get("channel_pref") == "sms":
        why = f"prefers SMS: gets campaign {project.sms_campaign}" if project.sms_campaign else "prefers SMS"
        return _no("prefers_sms", why)
    return chosen


class WeekCalls:
    """The calls that reached each number in the rolling week, shared by the dialers of every project,
    so that redials (and two projects dialling at once) keep to ``voice_policy.calls_per_week``.

    A call counts from the moment it is dialled (it may reach the phone) until it ends without
    reaching it (``ended`` with an outcome outside :data:`REACHED`). ``seed`` adds the plan's history;
    a call already known (the same start time) is not counted twice. ``limit`` may change (a reload)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._calls: dict[str, list[float]] = {}

    def seed(self, msisdn: str, starts: Iterable[float]) -> None:
        known = self._calls.setdefault(msisdn, [])
        known.extend(t for t in starts if t not in known)
        known.sort()

    def dialled(self, msisdn: str, at: float) -> None:
        self.seed(msisdn, (at,))

    def ended(self, msisdn: str, started_at: float, outcome: str) -> None:
        known = self._calls.get(msisdn)
        if outcome not in REACHED and known and started_at in known:
            known.remove(started_at)

    def free_at(self, msisdn: str, now: float) -> float | None:
        """``now`` when ``msisdn`` may be called under the limit, else the time the call that keeps it
        at the limit leaves the week; None when the limit is 0 (no calls at all)."""
        if self.limit <= 0:
            return None
        known = self._calls.get(msisdn)
        while known and known[0] <= now - WEEK:
            known.pop(0)
        if not known:
            self._calls.pop(msisdn, None)
            return now
        return now if len(known) < self.limit else known[len(known) - self.limit] + WEEK


def trial_rank(project: Project, msisdn: str) -> float:
    """A stable draw in [0, 1) per project seed and number."""
    digest = hashlib.sha256(f"{project.trial.seed}:{project.id}:{msisdn}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def quiet_until(t: float, tz: str, book: ProjectBook) -> float:
    start, end = book.voice.quiet
    return policy.quiet_hold(t, tz, start, end)


def fit(project: Project, offer_code: str, facts: Mapping[str, Any], catalog: Any) -> float:
    offer = catalog.offer(offer_code) if catalog is not None else None
    if offer is None:
        return 1.0
    try:
        return 1.0 if offer.eligibility.matches(facts) else 0.4
    except (TypeError, KeyError):
        return 0.4


# --- history of a chunk of numbers -----------------------------------------------------------------


def voice_histories(conn: Connection, lo: str, hi: str, project: Project, now: float, book: ProjectBook,
                    campaign_params: policy.PolicyParams) -> dict[str, VoiceHistory]:
    """Voice history of every number in ``[lo, hi]`` (range scans on msisdn indexes)."""
    parts: dict[str, dict[str, Any]] = {}

    def put(msisdn: str, key: str, value: Any) -> None:
        parts.setdefault(msisdn, {}).setdefault(key, []).append(value)

    for (msisdn,) in conn.execute(select(DoNotCall.msisdn).where(DoNotCall.msisdn.between(lo, hi))):
        put(msisdn, "dnc", True)
    s = Subscription.__table__.c
    for msisdn, code in conn.execute(select(s.msisdn, s.offer_code).where(s.msisdn.between(lo, hi),
                                                                          s.cancelled_at.is_(None))):
        put(msisdn, "subscribed", code)
    r = Refusal.__table__.c
    for msisdn, code, at in conn.execute(select(r.msisdn, r.offer_code, r.at).where(
            r.msisdn.between(lo, hi), r.at > now - book.voice.refusal_days * policy.DAY)):
        put(msisdn, "refusals", (code, at))
    k = Complaint.__table__.c
    for msisdn, at in conn.execute(select(k.msisdn, k.at).where(
            k.msisdn.between(lo, hi), k.at > now - campaign_params.complaint_days * policy.DAY)):
        put(msisdn, "complaints", at)
    c = ProjectCall.__table__.c
    for msisdn, pid, at, outcome in conn.execute(
            select(c.msisdn, c.project_id, c.started_at, c.outcome).where(c.msisdn.between(lo, hi))):
        if outcome in REACHED and at > now - WEEK:
            put(msisdn, "week_calls", at)
        if pid == project.id:
            put(msisdn, "attempts", 1)
            if outcome in ANSWERED:
                put(msisdn, "done", True)
    return {m: VoiceHistory(bool(p.get("dnc")), frozenset(p.get("subscribed", ())), tuple(p.get("refusals", ())),
                            tuple(p.get("complaints", ())), tuple(p.get("week_calls", ())),
                            bool(p.get("done")) or len(p.get("attempts", ())) >= project.attempts,
                            len(p.get("attempts", ())))
            for m, p in parts.items()}


# --- the plan ----------------------------------------------------------------------------------------


@dataclass
class ProjectPlan:
    project: Project
    state: str
    at: float
    window: tuple[float, float]
    tz: str
    scanned: int = 0
    targeted: int = 0
    targets: list[Target] = field(default_factory=list)
    sms_instead: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    excluded_sample: list[dict[str, str]] = field(default_factory=list)
    held_quiet: int = 0
    elapsed_s: float = 0.0
    trial_heap: list[tuple[float, str]] = field(default_factory=list)  # a trial count's lowest ranks, negated

    @property
    def trial(self) -> list[Target]:
        return [t for t in self.targets if t.trial]

    def exclude(self, msisdn: str, decision: policy.Decision) -> None:
        self.excluded[decision.code] = self.excluded.get(decision.code, 0) + 1
        if len(self.excluded_sample) < SAMPLE:
            self.excluded_sample.append({"msisdn": msisdn, "reason": decision.code, "why": decision.reason})

    def as_dict(self, sample: int = SAMPLE) -> dict[str, Any]:
        iso, p = _iso(self.tz), self.project
        return {
            "project": p.id, "name": p.name, "state": self.state, "channel": p.channel,
            "at": iso(self.at), "window": {"start": iso(self.window[0]), "end": iso(self.window[1])},
            "in_window": self.window[0] <= self.at < self.window[1],
            "offers": list(p.offers), "scanned": self.scanned, "targeted": self.targeted,
            "call": len(self.targets), "trial": len(self.trial),
            "trial_rule": {"share": p.trial.share, "count": p.trial.count, "seed": p.trial.seed},
            "held_for_quiet_hours": self.held_quiet,
            "sms_instead": {"campaign": p.sms_campaign, "count": len(self.sms_instead),
                            "why": "channel preference is SMS: the SMS campaign reaches them instead of a call",
                            "sample": self.sms_instead[:sample]},
            "excluded": {code: self.excluded[code] for code in REASONS if code in self.excluded},
            "excluded_total": sum(self.excluded.values()),
            "excluded_sample": self.excluded_sample[:sample],
            "expected": {"answer_rate": p.answer_rate, "accept_rate": p.accept_rate,
                         "answered": round(len(self.targets) * p.answer_rate),
                         "accepted": round(len(self.targets) * p.answer_rate * p.accept_rate)},
            "sample": [{"msisdn": t.msisdn, "offer": t.offer, "segment": t.segment, "trial": t.trial,
                        "not_before": iso(t.not_before)} for t in self.targets[:sample]],
            "planning_s": round(self.elapsed_s, 3),
        }


def _columns() -> list[Any]:
    return list(Subscriber.__table__.columns)


def _consider(plan: ProjectPlan, row: Any, history: VoiceHistory, book: ProjectBook,
              params: policy.PolicyParams, catalog: Any) -> None:
    facts = LazyFacts(row._mapping)
    project = plan.project
    if not project.predicate(facts):
        return
    plan.targeted += 1
    _rank_for_trial(plan, row.msisdn)
    decision = decide(facts, history, project, book, params, plan.at)
    if not decision.ok:
        if decision.code == "prefers_sms" and project.sms_campaign:
            plan.sms_instead.append(row.msisdn)
        else:
            plan.exclude(row.msisdn, decision)
        return
    tz = row.timezone or params.timezone
    start = max(plan.at, plan.window[0])
    not_before = quiet_until(start, tz, book)
    plan.held_quiet += not_before != start
    plan.targets.append(Target(row.msisdn, decision.offer, row.value_grade or "", tz, False,
                               fit(project, decision.offer, facts, catalog), not_before, history.week_calls,
                               history.attempts))


def _rank_for_trial(plan: ProjectPlan, msisdn: str) -> None:
    """Keep the ``trial.count`` targeted numbers of lowest rank (a max-heap of negated ranks)."""
    count, heap = plan.project.trial.count, plan.trial_heap
    if not count:
        return
    entry = (-trial_rank(plan.project, msisdn), msisdn)
    if len(heap) < count:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)


def _mark_trial(plan: ProjectPlan) -> None:
    trial, project = plan.project.trial, plan.project
    if trial.share is not None:
        for t in plan.targets:
            t.trial = trial_rank(project, t.msisdn) < trial.share
        return
    chosen = {msisdn for _, msisdn in plan.trial_heap}
    for t in plan.targets:
        t.trial = t.msisdn in chosen


def plan(session: Session, book: ProjectBook, project_id: str, at: float, params: policy.PolicyParams, *,
         catalog: Any = None, progress: Callable[[int], None] | None = None, chunk: int = 20_000) -> ProjectPlan:
    """Who ``project_id`` would call at ``at`` (epoch seconds), who gets SMS instead, who is excluded
    and why; nothing is written. Raises KeyError for an unknown project."""
    started = time.perf_counter()
    project = book.get(project_id)
    tz = params.timezone
    result = ProjectPlan(project, state_of(session, project_id), at, send_window(project.window, at, tz), tz)
    conn = session.connection()
    for rows in stream_subscribers(conn, _columns(), chunk):
        histories = voice_histories(conn, rows[0].msisdn, rows[-1].msisdn, project, at, book, params)
        for row in rows:
            _consider(result, row, histories.get(row.msisdn, EMPTY), book, params, catalog)
        result.scanned += len(rows)
        if progress is not None:
            progress(result.scanned)
    _mark_trial(result)
    result.elapsed_s = time.perf_counter() - started
    return result


def iter_stage(plan_: ProjectPlan, stage: str) -> Iterator[Target]:
    """The targets a stage dials: the trial batch in ``trial``, everybody left in ``rollout``."""
    return (t for t in plan_.targets if stage == "rollout" or t.trial)


# --- the CLI entry point -------------------------------------------------------------------------------


def _load(session: Session, fixtures_dir: str | None) -> tuple[ProjectBook, Any, policy.PolicyParams]:
    from core.fixtures import FixtureError, parse_set, read_dir
    from gateway.sections import all_sections
    from notifier.models import FixtureSetRow
    from offers.sections import build_catalog

    if fixtures_dir is not None:
        files = read_dir(fixtures_dir)
    else:
        row = FixtureSetRow.latest(session)
        if row is None:
            raise ValueError("no fixtures in this database: run load-fixtures first (or serve --demo)")
        files = row.files
    parsed, problems = parse_set(files, all_sections())
    if problems:
        raise FixtureError(problems)
    params = parsed.get("notifier.contact_policy") or policy.PolicyParams()
    return parsed["notifier.projects"], build_catalog(parsed), params


def plan_command(db_url: str, project_id: str, at_iso: str, as_json: bool) -> tuple[int, str]:
    """``project plan ID --at TIME [--json]``: ``(exit code, text)``; nothing is dialled."""
    from core.db import make_engine, migrate, session_factory
    from core.fixtures import FixtureError

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            book, catalog, params = _load(session, None)
            at = parse_at(at_iso, params.timezone)
            result = plan(session, book, project_id, at, params, catalog=catalog)
    except KeyError as exc:
        return 2, f"error: {exc.args[0]}"
    except ValueError as exc:
        return 2, f"error: {exc}"
    except FixtureError as exc:
        return 1, f"fixture problems:\n{exc}"
    finally:
        engine.dispose()
    data = result.as_dict()
    if as_json:
        return 0, json.dumps(data, ensure_ascii=False, indent=2)
    return 0, render_plan(data)


def render_plan(data: Mapping[str, Any]) -> str:
    lines = [f"project {data['project']} ({data['name']}), {data['state']}, channel {data['channel']}",
             f"at {data['at']}; window {data['window']['start']} .. {data['window']['end']}",
             f"scanned {data['scanned']}, targeted {data['targeted']}, to call {data['call']} "
             f"(trial {data['trial']}), held for quiet hours {data['held_for_quiet_hours']}",
             f"SMS instead ({data['sms_instead']['campaign']}): {data['sms_instead']['count']}",
             "excluded: " + (", ".join(f"{k} {v}" for k, v in data["excluded"].items()) or "none")]
    lines += [f"  {s['msisdn']}  {s['offer']:<6} grade {s['segment']:<2} {'trial' if s['trial'] else ''}"
              for s in data["sample"]]
    return "\n".join(lines)
