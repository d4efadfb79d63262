"""A project's lifecycle: a table of (action, state) -> state, and its recorded transitions.

::

    draft --approve--> approved --start--> trial --go--> rollout
      \\--reject (reason)--> rejected        \\--pause--> paused --start--> (the stage it left)
    every state but closed --close--> closed

Only ``trial`` and ``rollout`` dial (:data:`DIALLING`): a project that was never approved, was
rejected, is paused or closed never places a call. Roll-out needs an explicit ``go`` after the
trial. Each step is a :class:`~notifier.project_models.ProjectTransition` row: who (the ops
token's name), when (the injected clock), why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from notifier.project_models import ProjectState, ProjectTransition

ACTIONS = ("approve", "reject", "start", "go", "pause", "close")
STATES = ("draft", "approved", "rejected", "trial", "rollout", "paused", "closed")
DIALLING = ("trial", "rollout")
MAX_REASON = 500

_TABLE: dict[tuple[str, str], str] = {
    ("approve", "draft"): "approved",
    ("reject", "draft"): "rejected",
    ("start", "approved"): "trial",
    ("go", "trial"): "rollout",
    ("pause", "trial"): "paused",
    ("pause", "rollout"): "paused",
}


class TransitionError(Exception):
    """The action is not allowed from the project's state; the message says what is."""


@dataclass(frozen=True)
class Step:
    state: str
    stage: str | None  # the dialling stage a paused project returns to


def allowed(state: str) -> tuple[str, ...]:
    """Actions possible from ``state`` (for error messages and the API)."""
    out = [action for (action, src) in _TABLE if src == state]
    if state == "paused":
        out += ["start", "go"]
    if state != "closed":
        out.append("close")
    return tuple(out)


def next_step(action: str, state: str, stage: str | None, reason: str | None) -> Step:
    """Where ``action`` takes a project in ``state`` (paused in ``stage``); raises TransitionError."""
    if action not in ACTIONS:
        raise TransitionError(f"unknown action '{action}'; one of {', '.join(ACTIONS)}")
    if action == "reject" and not (reason or "").strip():
        raise TransitionError("a rejection needs a reason (what must change before approval)")
    if action == "close" and state != "closed":
        return Step("closed", None)
    if state == "paused" and action == "start":
        return Step(stage or "trial", None)
    if state == "paused" and action == "go":
        return Step("rollout", None)
    target = _TABLE.get((action, state))
    if target is None:
        can = ", ".join(allowed(state)) or "nothing"
        raise TransitionError(f"cannot {action} a project that is {state}; from {state} you can: {can}")
    return Step(target, state if target == "paused" else None)


def _row(session: Session, project_id: str, now: float) -> ProjectState:
    row = session.get(ProjectState, project_id)
    if row is None:
        row = ProjectState(project_id=project_id, state="draft", changed_at=now, changed_by="fixtures")
        session.add(row)
    return row


def transition(session: Session, project_id: str, action: str, who: str, now: float,
               reason: str | None = None) -> dict[str, Any]:
    """Apply ``action`` in the caller's transaction; returns the new state. Raises TransitionError."""
    row = _row(session, project_id, now)
    step = next_step(action, row.state, row.stage, reason)
    reason = (reason or "").strip()[:MAX_REASON] or None
    session.add(ProjectTransition(project_id=project_id, action=action, from_state=row.state, to_state=step.state,
                                  who=who[:64], at=now, reason=reason))
    row.state, row.stage, row.changed_at, row.changed_by = step.state, step.stage, now, who[:64]
    row.reason = reason if step.state in ("rejected", "paused", "closed") else None
    return {"project": project_id, "action": action, "state": step.state, "who": who, "at": now, "reason": reason}


def states(session: Session) -> dict[str, ProjectState]:
    return {row.project_id: row for row in session.scalars(select(ProjectState))}


def state_of(session: Session, project_id: str) -> str:
    row = session.get(ProjectState, project_id)
    return row.state if row is not None else "draft"


def history(session: Session, project_id: str, limit: int = 200) -> list[dict[str, Any]]:
    rows = session.scalars(select(ProjectTransition).where(ProjectTransition.project_id == project_id)
                           .order_by(ProjectTransition.id).limit(limit))
    return [{"action": r.action, "from": r.from_state, "to": r.to_state, "who": r.who, "at": r.at,
             "reason": r.reason} for r in rows]


def remember_plan(session: Session, project_id: str, stage: str, figures: dict[str, Any]) -> None:
    """Keep the plan's figures (targeted, excluded by reason ...) of a stage as it starts, for the reports."""
    row = session.get(ProjectState, project_id)
    if row is not None:
        row.plan = {**(row.plan or {}), stage: figures}
