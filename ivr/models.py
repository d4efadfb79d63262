"""Tables of the IVR: calls, post-call surveys and busy-hour guidance SMS decisions.

Timestamps are float seconds since the epoch from the injected clock. A call row is written
once, when the call ends (the IVR batches them, one commit per reactor turn); surveys and
busy-hour decisions are written when they happen, so the SMS and its record commit together.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base
from notifier.models import Survey  # the survey belongs to the messaging domain; re-exported for the IVR

__all__ = ["BUSY_REASONS", "OUTCOMES", "BusyHourSms", "Call", "Survey"]

OUTCOMES = ("not_found", "self_service", "balance", "handled", "abandoned", "failed")
"""not_found: 404 for an unknown number; self_service: ended in the menus; balance: a 1008611 call
(balance SMS); handled: an agent talked to the caller; abandoned: left the agent queue (hung up or
ran out of patience); failed: never answered (CANCEL, no ACK)."""

BUSY_REASONS = ("over_threshold", "abandon")


class Call(Base):
    __tablename__ = "ivr_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(200))  # the SIP Call-ID
    caller: Mapped[str] = mapped_column(String(64))  # the From user: the caller's MSISDN
    service: Mapped[str] = mapped_column(String(64))  # the number dialled, e.g. 10086
    brand: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: not a subscriber
    started_at: Mapped[float] = mapped_column(Float)  # INVITE received
    answered_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # 200 OK sent
    queued_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # joined the agent queue
    agent_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # an agent picked up
    ended_at: Mapped[float] = mapped_column(Float)
    agent: Mapped[str | None] = mapped_column(String(32), nullable=True)
    queue: Mapped[str | None] = mapped_column(String(32), nullable=True)
    busy: Mapped[bool] = mapped_column(Boolean, default=False)  # met a busy queue
    outcome: Mapped[str] = mapped_column(String(16))  # one of OUTCOMES
    ended_by: Mapped[str] = mapped_column(String(16))  # caller, gateway, cancel, timeout, lost, rejected

    __table_args__ = (
        Index("ix_ivr_calls_caller_started", "caller", "started_at"),
        Index("ix_ivr_calls_started", "started_at"),
        Index("ix_ivr_calls_call_id", "call_id"),
    )


class BusyHourSms(Base):
    """The guidance decision for one caller and local day: sent (sampled) or held out.

    At most one row per caller and day, so a caller gets at most one guidance SMS a day and the
    holdout is a fair comparison group. Whether the caller then used self-service (diverted) is
    read from the message log by ``ivr.reports.busy_hour_report``.
    """

    __tablename__ = "ivr_busy_sms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msisdn: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, China Standard Time
    call_id: Mapped[str] = mapped_column(String(200))
    brand: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(String(16))  # one of BUSY_REASONS
    sampled: Mapped[bool] = mapped_column(Boolean)  # False: the holdout (no SMS)
    decided_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # SMS queued (sampled only)

    __table_args__ = (
        UniqueConstraint("msisdn", "day", name="uq_ivr_busy_sms_msisdn_day"),
        Index("ix_ivr_busy_sms_decided", "decided_at"),
    )
