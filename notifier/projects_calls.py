"""What a finished call of a project writes, in the caller's transaction.

- :func:`store_record`: the attempt as a ``project_calls`` row; a sampled agent call is the QA call
  record (steps reached, objections, duration, outcome) and is scored by the project's rules;
- :func:`order`: an accepted offer (press 1, or the agent's accepted outcome) goes through the same
  order path as an SMS ``KT<code>``: the router's second confirmation, sent by SMS from the outbox
  with an idempotency key per call, so a replayed event never sends it twice;
- :func:`opt_out`: the number joins the do-not-call list (pressed 9, or asked the agent);
- :func:`refuse`: a refusal of the offer, so no call (nor shelf) offers it for the refusal window.

Each offer put to an answered callee is an exposure (channel ``call``, context ``call:<project>``,
offers/exposures.py), recorded before the order or refusal it led to so those link to it; a callee
who hung up on the offer, or opted out of calls, is recorded with the call record.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifier.models import MessageLog
from notifier.project_models import DoNotCall, ProjectCall
from notifier.projects import Project
from notifier.projects_qa import sampled, score
from offers import exposures
from offers.router import Inbound, record_refusal

SERVICE = "10086"


def store_record(session: Session, project: Project, record: Any, stage: str) -> ProjectCall:
    """One attempt (an ``ivr.dialer.Record``) as a row, scored for QA when sampled."""
    row = ProjectCall(project_id=project.id, call_id=record.call_id[:200], msisdn=record.msisdn, stage=stage,
                      attempt=record.attempt, segment=record.segment[:8], offer_code=record.offer,
                      started_at=record.started_at, answered_at=record.answered_at, ended_at=record.ended_at,
                      outcome=record.outcome, agent=record.agent, step=record.steps[-1] if record.steps else None,
                      steps=list(record.steps), objections=list(record.objections))
    if record.outcome in ("hungup", "opted_out") and record.answered_at is not None and record.offer:
        _exposed(session, record.msisdn, record.offer, project.id, record.answered_at)
        if record.outcome == "opted_out":
            exposures.record_outcome(session, record.msisdn, None, "opt_out", record.ended_at, channel="call")
    if record.agent is not None and sampled(project, record.call_id):
        duration = record.ended_at - (record.answered_at or record.started_at)
        row.qa_sampled = True
        row.qa_score, row.qa_findings = score(project, {
            "steps": record.steps, "duration_s": duration, "unanswered": record.unanswered,
            "offer_named": record.offer_named})
    session.add(row)
    return row


def order(session: Session, router: Any, outbox: Any, account: str | None, project_id: str, call_id: str,
          msisdn: str, offer: str, now: float) -> bool:
    """Order ``offer`` for ``msisdn`` as if it texted KT<offer>; True when a confirmation SMS was queued."""
    key = f"prj:{project_id}:{call_id}"[:160]
    text = f"KT{offer}"
    _exposed(session, msisdn, offer, project_id, now)
    reply = router.handle(session, Inbound(channel="ivr", sender=msisdn, service=SERVICE, text=text), now)
    session.add(MessageLog(direction="MO", channel="ivr", account=None, source=msisdn, dest=SERVICE, text=text,
                           at=now, action=reply.action))
    if not reply.text or account is None:
        return False
    outbox.enqueue(session, kind="reply", source=reply.source, dest=msisdn, text=reply.text, account=account,
                   idempotency_key=key, correlation=call_id[:64])
    return True


def opt_out(session: Session, msisdn: str, now: float, source: str) -> None:
    if session.scalar(select(DoNotCall.msisdn).where(DoNotCall.msisdn == msisdn)) is None:
        session.add(DoNotCall(msisdn=msisdn, added_at=now, source=source[:32]))


def refuse(session: Session, msisdn: str, offer: str, now: float, project_id: str) -> None:
    record_refusal(session, msisdn, offer, now, source=f"call:{project_id}"[:32])
    _exposed(session, msisdn, offer, project_id, now)
    exposures.record_outcome(session, msisdn, offer, "refused", now, channel="call", suppresses=True)


def _exposed(session: Session, msisdn: str, offer: str, project_id: str, at: float) -> None:
    exposures.record_exposure(session, msisdn, offer, "call", f"call:{project_id}", at)
