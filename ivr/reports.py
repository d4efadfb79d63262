"""Reports of the IVR: busy-hour guidance SMS (with their holdout) and calls.

``busy_hour_report(session, now)``::

    {"sent", "by_reason": {"over_threshold", "abandon"}, "holdout", "diverted", "diverted_holdout",
     "answer_rate_with", "answer_rate_without", "agent_calls_avoided", "window_s"}

- sent: guidance SMS queued; by_reason splits them by what triggered them.
- holdout: callers who met the same situation but were held out by the sampling (no SMS).
- diverted: SMS'd callers who used self-service (an MO to 10086 or a USSD session, in the
  message log) within ``window_s`` (24 h) after the decision; diverted_holdout: the same for the
  holdout, the baseline.
- answer_rate_with / _without: share of the SMS'd / held-out callers whose request was answered
  within the window, by self-service or by an agent (None when the group is empty).
- agent_calls_avoided: diverted SMS'd callers who did not reach an agent in the window.

``ivr_report(session, now)``: calls by outcome and service number, and for the agent queue
offered / answered / abandoned, service level (answered within 20 s over offered), ASA, by
queue and by agent.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ivr.models import BUSY_REASONS, OUTCOMES, BusyHourSms, Call
from notifier.models import MessageLog

__all__ = ["busy_hour_report", "ivr_report"]

WINDOW_S = 86400.0
CHUNK = 500


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _self_service(session: Session, msisdns: list[str], start: float, end: float,
                  service_numbers: tuple[str, ...]) -> dict[str, list[float]]:
    """When each caller used self-service: SMS to a service number, or any USSD."""
    out: dict[str, list[float]] = defaultdict(list)
    for chunk in _chunks(msisdns):
        query = select(MessageLog.source, MessageLog.at).where(
            MessageLog.direction == "MO", MessageLog.source.in_(chunk), MessageLog.at > start, MessageLog.at <= end,
            or_(MessageLog.channel == "ussd",
                (MessageLog.channel == "sms") & MessageLog.dest.in_(service_numbers)))
        for source, at in session.execute(query):
            out[source].append(at)
    return out


def _agent_answers(session: Session, msisdns: list[str], start: float, end: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for chunk in _chunks(msisdns):
        query = select(Call.caller, Call.agent_at).where(Call.caller.in_(chunk), Call.agent_at > start,
                                                         Call.agent_at <= end)
        for caller, at in session.execute(query):
            out[caller].append(at)
    return out


def _within(times: list[float], start: float, window_s: float) -> bool:
    return any(start < t <= start + window_s for t in times)


def busy_hour_report(session: Session, now: float, since: float | None = None,
                     service_numbers: tuple[str, ...] = ("10086",), window_s: float = WINDOW_S) -> dict[str, Any]:
    """See the module doc; ``since`` limits it to decisions from then on."""
    query = select(BusyHourSms)
    if since is not None:
        query = query.where(BusyHourSms.decided_at >= since)
    rows = list(session.scalars(query))
    msisdns = sorted({r.msisdn for r in rows})
    start = min((r.decided_at for r in rows), default=now)
    end = max((r.decided_at for r in rows), default=now) + window_s
    selfserve = _self_service(session, msisdns, start, end, service_numbers)
    agents = _agent_answers(session, msisdns, start, end)
    sent = [r for r in rows if r.sampled and r.sent_at is not None]
    holdout = [r for r in rows if not r.sampled]

    def diverted(group: list[BusyHourSms]) -> list[BusyHourSms]:
        return [r for r in group if _within(selfserve.get(r.msisdn, []), r.decided_at, window_s)]

    def answer_rate(group: list[BusyHourSms]) -> float | None:
        if not group:
            return None
        served = [r for r in group if _within(selfserve.get(r.msisdn, []) + agents.get(r.msisdn, []),
                                                r.decided_at, window_s)]
        return round(len(served) / len(group), 4)

    diverted_sent = diverted(sent)
    reasons = Counter(r.reason for r in sent)
    return {
        "sent": len(sent),
        "by_reason": {reason: reasons.get(reason, 0) for reason in BUSY_REASONS},
        "holdout": len(holdout),
        "diverted": len(diverted_sent),
        "diverted_holdout": len(diverted(holdout)),
        "answer_rate_with": answer_rate(sent),
        "answer_rate_without": answer_rate(holdout),
        "agent_calls_avoided": sum(1 for r in diverted_sent
                                   if not _within(agents.get(r.msisdn, []), r.decided_at, window_s)),
        "window_s": window_s,
    }


def _queue_figures(calls: list[Call], answer_within_s: float) -> dict[str, Any]:
    offered = [c for c in calls if c.queued_at is not None]
    answered = [c for c in offered if c.agent_at is not None]
    waits = [c.agent_at - c.queued_at for c in answered]
    n = len(offered)
    return {
        "offered": n,
        "answered": len(answered),
        "abandoned": sum(1 for c in offered if c.outcome == "abandoned"),
        "busy": sum(1 for c in offered if c.busy),
        "service_level": round(sum(1 for w in waits if w <= answer_within_s) / n, 4) if n else None,
        "asa_s": round(sum(waits) / len(waits), 2) if waits else None,
        "abandon_rate": round(sum(1 for c in offered if c.outcome == "abandoned") / n, 4) if n else None,
    }


def ivr_report(session: Session, now: float, since: float | None = None,
               answer_within_s: float = 20.0) -> dict[str, Any]:
    """Calls by outcome and service number, and the agent queue's figures (see the module doc)."""
    query = select(Call)
    if since is not None:
        query = query.where(Call.started_at >= since)
    calls = list(session.scalars(query))
    outcomes = Counter(c.outcome for c in calls)
    by_queue: dict[str, list[Call]] = defaultdict(list)
    by_agent: Counter[str] = Counter()
    for c in calls:
        if c.queue:
            by_queue[c.queue].append(c)
        if c.agent:
            by_agent[c.agent] += 1
    talk = [c.ended_at - c.agent_at for c in calls if c.agent_at is not None]
    return {
        "calls": len(calls),
        "by_outcome": {o: outcomes.get(o, 0) for o in OUTCOMES},
        "by_service": dict(sorted(Counter(c.service for c in calls).items())),
        "queue": _queue_figures(calls, answer_within_s),
        "mean_talk_s": round(sum(talk) / len(talk), 2) if talk else None,
        "by_queue": {q: _queue_figures(cs, answer_within_s) for q, cs in sorted(by_queue.items())},
        "by_agent": dict(sorted(by_agent.items())),
        "answer_within_s": answer_within_s,
        "at": now,
    }
