"""Tables of outbound call projects: lifecycle state and its history, call attempts, the do-not-call list.

The project's definition lives in the fixtures (``projects.yaml``); these rows hold what ops and
the dialer did with it. Timestamps are float seconds since the epoch from the injected clock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class ProjectState(Base):
    """Where a project is in its lifecycle (draft, approved, rejected, trial, rollout, paused, closed)."""

    __tablename__ = "project_state"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(12), default="draft")
    stage: Mapped[str | None] = mapped_column(String(12), nullable=True)  # trial | rollout while paused
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)  # why rejected / paused
    changed_at: Mapped[float] = mapped_column(Float)
    changed_by: Mapped[str] = mapped_column(String(64), default="fixtures")
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {stage: plan figures when it started}


class ProjectTransition(Base):
    """Every lifecycle step: who (the ops token's name) did what, when, and why."""

    __tablename__ = "project_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(12))
    from_state: Mapped[str] = mapped_column(String(12))
    to_state: Mapped[str] = mapped_column(String(12))
    who: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class ProjectCall(Base):
    """One dial attempt of a project and what came of it (the QA call record when ``qa_sampled``)."""

    __tablename__ = "project_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str] = mapped_column(String(200))
    msisdn: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str] = mapped_column(String(12))  # trial | rollout
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    segment: Mapped[str] = mapped_column(String(8), default="")
    offer_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))  # busy, no_answer, failed, abandoned, accepted, ...
    agent: Mapped[str | None] = mapped_column(String(32), nullable=True)
    step: Mapped[str | None] = mapped_column(String(32), nullable=True)  # last script step reached
    steps: Mapped[list[str]] = mapped_column(JSON, default=list)
    objections: Mapped[list[str]] = mapped_column(JSON, default=list)
    qa_sampled: Mapped[bool] = mapped_column(Boolean, default=False)
    qa_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    qa_findings: Mapped[list[Any]] = mapped_column(JSON, default=list)

    __table_args__ = (Index("ix_project_calls_project", "project_id", "msisdn"),
                      Index("ix_project_calls_msisdn", "msisdn", "started_at"))


class DoNotCall(Base):
    """Numbers never to be called (pressed 9, asked an agent, or listed in projects.yaml)."""

    __tablename__ = "do_not_call"

    msisdn: Mapped[str] = mapped_column(String(20), primary_key=True)
    added_at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32), default="fixtures")
