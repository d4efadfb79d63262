"""Tables of the campaign machinery: campaign state, runs, the contact log, complaints, opt-outs, alerts.

Timestamps are float seconds since the epoch from the injected clock. The
contact log is the memory of the contact policy: one row per campaign item a
subscriber was sent (a consolidated digest of three campaigns is three rows
sharing one ``message_key``, the outbox idempotency key), so caps count
messages and the 90-day rule counts offers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base

CAMPAIGN_STATES = ("active", "paused")


class CampaignState(Base):
    """Ops' switch per campaign (the definition itself lives in the fixtures)."""

    __tablename__ = "campaign_state"

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(12), default="active")
    reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    changed_at: Mapped[float] = mapped_column(Float)


class CampaignRun(Base):
    """One materialised run of a campaign for one period (a local day)."""

    __tablename__ = "campaign_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)  # the planning instant
    state: Mapped[str] = mapped_column(String(16), default="materialising")  # -> done
    targeted: Mapped[int] = mapped_column(Integer, default=0)
    messages: Mapped[int] = mapped_column(Integer, default=0)
    items_before: Mapped[int] = mapped_column(Integer, default=0)  # separate promos without consolidation
    excluded: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    rate_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    first_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (UniqueConstraint("campaign_id", "period", name="uq_campaign_runs_campaign_period"),)


class ContactLog(Base):
    """Every marketing / care contact: who, which campaign and offer, which channel, when, what content."""

    __tablename__ = "contact_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msisdn: Mapped[str] = mapped_column(String(20))
    campaign_id: Mapped[str] = mapped_column(String(64))
    offer_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    channel: Mapped[str] = mapped_column(String(16))  # sms, email, piggyback
    kind: Mapped[str] = mapped_column(String(12))  # marketing, care
    at: Mapped[float] = mapped_column(Float)  # when it is due to go out (not_before)
    period: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(32))
    message_key: Mapped[str] = mapped_column(String(160))  # the outbox idempotency key
    lead_campaign_id: Mapped[str] = mapped_column(String(64))  # the run that sent the digest

    __table_args__ = (
        UniqueConstraint("message_key", "campaign_id", name="uq_contact_log_message_campaign"),
        Index("ix_contact_log_msisdn_at", "msisdn", "at"),
        Index("ix_contact_log_campaign", "campaign_id", "period"),
    )


class ExclusionCount(Base):
    """Subscribers a run left out, counted by reason."""

    __tablename__ = "campaign_exclusions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(Integer)
    campaign_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_campaign_exclusions_campaign", "campaign_id"),)


class Complaint(Base):
    """A complaint about marketing (hotline, 12300 escalation, ops entry); attributed to a campaign."""

    __tablename__ = "complaints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msisdn: Mapped[str] = mapped_column(String(20))
    at: Mapped[float] = mapped_column(Float)
    campaign_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="hotline")
    text: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_complaints_msisdn_at", "msisdn", "at"),
                      Index("ix_complaints_campaign", "campaign_id"))


class OptOutEvent(Base):
    """An opt-out (TD) or opt-in (KTYX); an opt-out is attributed to the last campaign contact."""

    __tablename__ = "opt_out_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msisdn: Mapped[str] = mapped_column(String(20))
    at: Mapped[float] = mapped_column(Float)
    opted_out: Mapped[bool] = mapped_column(default=True)
    campaign_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="sms")

    __table_args__ = (Index("ix_opt_out_events_campaign", "campaign_id"),)


class Alert(Base):
    """An ops alert (a campaign paused itself, ...); shown on the dashboard until acknowledged."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    campaign_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    acknowledged_at: Mapped[float | None] = mapped_column(Float, nullable=True)
