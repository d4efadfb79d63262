"""Reports of outbound call projects (反馈、分析): per project, stage and product, from the call rows.

Per project x stage (trial, rollout) x product: numbers targeted and excluded by reason (the plan
stored when the stage started), dialled (attempts and numbers), connected (answered and put through
to an agent or the IVR prompt), answered, accepted, confirmed (the subscription the second
confirmation created), cancelled within 7 days, complaints within 7 days, refusals (pressed 3, or
told the agent no), opt-outs; conversion
(accepted / answered) by segment and by script step; the trial beside the project's expected
figures; agent occupancy and the abandoned-call rate per hour; QA findings per agent and script.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifier.campaign_models import Complaint
from notifier.project_models import ProjectCall, ProjectState
from notifier.projects_qa import findings
from offers.models import Subscription

WEEK = 7 * 86400.0
HOUR = 3600.0
COUNTS = ("dialled", "numbers", "answered", "connected", "accepted", "confirmed", "cancelled_7d", "complaints",
          "refused", "opted_out", "abandoned")
MAX_ROWS = 500_000


def _rate(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0


class _Group:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.numbers: set[str] = set()
        self.segments: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # answered, accepted
        self.steps: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # reached, accepted

    def add(self, call: ProjectCall, outcomes: Mapping[str, Any]) -> None:
        c = self.counts
        c["dialled"] += 1
        self.numbers.add(call.msisdn)
        if call.answered_at is None:
            return
        accepted = call.outcome == "accepted"
        c["answered"] += 1
        c["connected"] += call.outcome != "abandoned"
        c["abandoned"] += call.outcome == "abandoned"
        c["accepted"] += accepted
        c["refused"] += call.outcome == "refused"
        c["opted_out"] += call.outcome == "opted_out"
        c["confirmed"] += bool(outcomes.get("confirmed"))
        c["cancelled_7d"] += bool(outcomes.get("cancelled_7d"))
        c["complaints"] += bool(outcomes.get("complaint"))
        self.segments[call.segment or "?"][0] += 1
        self.segments[call.segment or "?"][1] += accepted
        for step in call.steps or ():
            self.steps[step][0] += 1
            self.steps[step][1] += accepted

    def as_dict(self) -> dict[str, Any]:
        c = dict(self.counts, numbers=len(self.numbers))
        c["answer_rate"] = _rate(c["answered"], c["dialled"])
        c["conversion"] = _rate(c["accepted"], c["answered"])
        c["abandon_rate"] = _rate(c["abandoned"], c["answered"])
        c["by_segment"] = {k: {"answered": a, "accepted": b, "conversion": _rate(b, a)}
                           for k, (a, b) in sorted(self.segments.items())}
        c["by_step"] = {k: {"reached": a, "accepted": b, "conversion": _rate(b, a)} for k, (a, b) in self.steps.items()}
        return c


def _outcomes(session: Session, calls: list[ProjectCall]) -> dict[int, dict[str, Any]]:
    """Confirmation, 7-day cancellation and complaints following each accepted / answered call."""
    numbers = sorted({c.msisdn for c in calls if c.answered_at is not None})
    subs: dict[str, list[Subscription]] = defaultdict(list)
    complaints: dict[str, list[float]] = defaultdict(list)
    for i in range(0, len(numbers), 500):
        chunk = numbers[i:i + 500]
        for sub in session.scalars(select(Subscription).where(Subscription.msisdn.in_(chunk))):
            subs[sub.msisdn].append(sub)
        for msisdn, at in session.execute(select(Complaint.msisdn, Complaint.at).where(Complaint.msisdn.in_(chunk))):
            complaints[msisdn].append(at)
    out = {}
    for call in calls:
        if call.answered_at is None:
            continue
        sub = next((s for s in subs.get(call.msisdn, ()) if s.offer_code == call.offer_code
                    and s.started_at >= call.started_at), None) if call.outcome == "accepted" else None
        out[call.id] = {
            "confirmed": sub is not None,
            "cancelled_7d": sub is not None and sub.cancelled_at is not None and sub.cancelled_at - sub.started_at <= WEEK,
            "complaint": any(call.started_at <= at <= call.started_at + WEEK for at in complaints.get(call.msisdn, ())),
        }
    return out


def _hourly(calls: list[ProjectCall], agents: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per project and hour: answered, abandoned, the abandoned-call rate and agent occupancy."""
    hours: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for call in calls:
        if call.answered_at is None:
            continue
        h = hours[(call.project_id, int(call.answered_at // HOUR))]
        h[0] += 1
        h[1] += call.outcome == "abandoned"
        if call.agent:
            h[2] += max(0.0, call.ended_at - call.answered_at)
    return [{"project": pid, "hour": hour * HOUR, "answered": a, "abandoned": b, "abandon_rate": _rate(b, a),
             "occupancy": round(min(talk / (agents.get(pid, 1) * HOUR), 1.0), 4) if pid in agents else None}
            for (pid, hour), (a, b, talk) in sorted(hours.items())]


def project_report(session: Session, *, now: float, since: float, project_id: str | None = None,
                   book: Any = None) -> dict[str, Any]:
    """The report of every project (or one) over calls started since ``since``; ``book`` adds the
    expected figures and agent counts."""
    query = select(ProjectCall).where(ProjectCall.started_at >= since).order_by(ProjectCall.id).limit(MAX_ROWS)
    if project_id is not None:
        query = query.where(ProjectCall.project_id == project_id)
    calls = list(session.scalars(query))
    outcomes = _outcomes(session, calls)
    groups: dict[tuple[str, str, str], _Group] = defaultdict(_Group)
    for call in calls:
        groups[(call.project_id, call.stage, call.offer_code or "")].add(call, outcomes.get(call.id, {}))
    states = {r.project_id: r for r in session.scalars(select(ProjectState))}
    projects = getattr(book, "projects", {}) or {}
    items = []
    for (pid, stage, offer), group in sorted(groups.items()):
        item = {"project": pid, "stage": stage, "offer": offer, **group.as_dict()}
        plan = (states[pid].plan or {}).get(stage) if pid in states else None
        item["targeted"] = plan.get("targeted") if plan else None
        item["excluded"] = plan.get("excluded") if plan else None
        if pid in projects:
            item["expected"] = {"answer_rate": projects[pid].answer_rate, "conversion": projects[pid].accept_rate}
        items.append(item)
    qa = [{"agent": c.agent, "qa_score": c.qa_score, "qa_findings": c.qa_findings, "steps": c.steps,
           "objections": c.objections, "outcome": c.outcome} for c in calls if c.qa_sampled]
    agents = {pid: p.agents for pid, p in projects.items() if p.channel == "agent"}
    return {"since": since, "now": now, "calls": len(calls), "items": items, "over_time": _hourly(calls, agents),
            "qa": {"sampled": len(qa), **findings(qa)}}
