"""Post-call satisfaction surveys: create them, take the 1-5 reply, report on them.

A survey row is written when an agent call ends and the caller is sampled (``ivr.flows``);
in SMS mode its text goes through the outbox in the same transaction. :func:`register` adds
the router prompt ``survey``: a lone digit from that caller within ``survey.expiry_s`` (while
the survey is the newest open prompt) is the score, recorded against the call, agent and
queue, and thanked. A score is taken once; a survey past its expiry is no longer open.

Functions take the caller's session and never commit.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifier.models import Survey
from notifier.outbox import Outbox
from offers.catalog import normalize
from offers.router import Inbound, Reply, Router

__all__ = ["SurveyTexts", "create_survey", "open_survey", "record_score", "register", "survey_report"]

CST = dt.timezone(dt.timedelta(hours=8))
SCORES = range(1, 6)
MAX_ITEMS = 1000


@dataclass(frozen=True)
class SurveyTexts:
    """The reply texts of the survey prompt, from the current fixtures."""

    source: str
    thanks: Callable[[int], str]
    invalid: Callable[[], str]


DEFAULT_TEXTS = SurveyTexts("10086", lambda score: f"感谢您的评价({score}分)!", lambda: "请回复数字1-5为本次服务评分。")


def create_survey(session: Session, outbox: Outbox, *, call_id: str, msisdn: str, agent: str, queue: str,
                  mode: str, now: float, expiry_s: float, text: str = "", source: str = "10086",
                  account: str | None = None) -> Survey:
    """Record a survey; in ``sms`` mode also queue its SMS (idempotent per call)."""
    row = Survey(call_id=call_id, msisdn=msisdn, agent=agent, queue=queue, mode=mode, sent_at=now,
                 expires_at=now + expiry_s)
    session.add(row)
    if mode == "sms":
        outbox.enqueue(session, kind="survey", source=source, dest=msisdn, text=text, account=account,
                       idempotency_key=f"survey:{call_id}"[:160], correlation=call_id[:64],
                       validity_s=expiry_s)
    return row


def record_score(session: Session, survey: Survey, score: int, now: float) -> bool:
    """Take a score for an open survey; False when it was answered already or has expired."""
    if survey.score is not None or now > survey.expires_at or score not in SCORES:
        return False
    survey.score, survey.answered_at = score, now
    return True


def open_survey(session: Session, msisdn: str, now: float, mode: str | None = None) -> Survey | None:
    """The newest unanswered, unexpired survey of this caller (of one mode, or any)."""
    query = select(Survey).where(Survey.msisdn == msisdn, Survey.score.is_(None), Survey.expires_at > now)
    if mode is not None:
        query = query.where(Survey.mode == mode)
    return session.scalars(query.order_by(Survey.sent_at.desc(), Survey.id.desc()).limit(1)).first()


def register(router: Router, texts: Callable[[], SurveyTexts | None]) -> None:
    """Let a lone digit answer the newest open SMS survey (router prompt ``survey``)."""

    def find_open(session: Session, msisdn: str, now: float) -> tuple[float, Survey] | None:
        row = open_survey(session, msisdn, now, "sms")
        return (row.sent_at, row) if row is not None else None

    def answer(session: Session, msg: Inbound, row: Survey, now: float) -> Reply:
        current = texts() or DEFAULT_TEXTS
        digit = normalize(msg.text)
        if digit.isdigit() and record_score(session, row, int(digit), now):
            return Reply(current.thanks(int(digit)), "survey", current.source, {"score": int(digit),
                                                                                 "call_id": row.call_id})
        return Reply(current.invalid(), "survey_invalid", current.source, {"call_id": row.call_id})

    router.register_prompt("survey", find_open, answer)


def _summary(scores: list[int]) -> dict[str, Any]:
    n = len(scores)
    return {"responses": n, "mean": round(sum(scores) / n, 2) if n else None,
            "satisfaction": round(sum(1 for s in scores if s >= 4) / n, 4) if n else None}


def survey_report(session: Session, now: float, since: float | None = None) -> dict[str, Any]:
    """Scores of answered surveys (all, or sent since ``since``), overall and by agent, queue and day.

    ``satisfaction`` is the share of 4-5 scores; ``items`` lists the newest responses first (at most
    MAX_ITEMS); ``sent``, ``open`` and ``expired`` count the surveys offered.
    """
    query = select(Survey)
    if since is not None:
        query = query.where(Survey.sent_at >= since)
    rows = list(session.scalars(query.order_by(Survey.answered_at.desc(), Survey.id.desc())))
    answered = [r for r in rows if r.score is not None]
    scores = [r.score for r in answered]
    histogram = Counter(str(s) for s in scores)
    groups: dict[str, dict[str, list[int]]] = {"agent": defaultdict(list), "queue": defaultdict(list),
                                               "day": defaultdict(list)}
    for r in answered:
        groups["agent"][r.agent].append(r.score)
        groups["queue"][r.queue].append(r.score)
        groups["day"][dt.datetime.fromtimestamp(r.answered_at, CST).strftime("%Y-%m-%d")].append(r.score)
    return {
        **_summary(scores),
        "histogram": {str(s): histogram.get(str(s), 0) for s in SCORES},
        "sent": len(rows),
        "open": sum(1 for r in rows if r.score is None and r.expires_at > now),
        "expired": sum(1 for r in rows if r.score is None and r.expires_at <= now),
        "items": [{"msisdn": r.msisdn, "score": r.score, "call_id": r.call_id, "agent": r.agent,
                   "queue": r.queue, "mode": r.mode, "at": r.answered_at} for r in answered[:MAX_ITEMS]],
        "by_agent": {k: _summary(v) for k, v in sorted(groups["agent"].items())},
        "by_queue": {k: _summary(v) for k, v in sorted(groups["queue"].items())},
        "by_day": {k: _summary(v) for k, v in sorted(groups["day"].items())},
    }
