"""Tables of the offers domain: subscribers, offers, subscriptions, refusals, pending orders, shelf views.

Timestamps are float seconds since the epoch from the injected clock. Money is
in yuan (float; shown with 2 decimals). The subscriber row also caches its
segments (value grade, usage class, four-high flags, channel preference) so a
shelf at a million subscribers needs one primary-key lookup, not a re-scoring;
:func:`offers.segments.segment_all` refreshes them in bulk.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base

CHANNELS = ("phone", "sms", "web", "hall")


class Subscriber(Base):
    __tablename__ = "subscribers"

    msisdn: Mapped[str] = mapped_column(String(20), primary_key=True)
    brand: Mapped[str] = mapped_column(String(16))  # key of segments.yaml brands: gotone, mzone, easyown
    name: Mapped[str] = mapped_column(String(64), default="")
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    timezone: Mapped[str] = mapped_column(String(40), default="Asia/Shanghai")
    age: Mapped[int] = mapped_column(Integer, default=30)
    balance: Mapped[float] = mapped_column(Float, default=0.0)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_marketing: Mapped[bool] = mapped_column(Boolean, default=True)
    complaints: Mapped[int] = mapped_column(Integer, default=0)  # last 12 months
    vip: Mapped[bool] = mapped_column(Boolean, default=False)

    # plan and its monthly allowances
    plan: Mapped[str] = mapped_column(String(32), default="")
    plan_fee: Mapped[float] = mapped_column(Float, default=0.0)
    voice_allowance_min: Mapped[float] = mapped_column(Float, default=0.0)
    data_allowance_mb: Mapped[float] = mapped_column(Float, default=0.0)
    sms_allowance: Mapped[float] = mapped_column(Float, default=0.0)

    # this month's usage (monthly window) and today's (daily window)
    voice_used_min: Mapped[float] = mapped_column(Float, default=0.0)
    data_used_mb: Mapped[float] = mapped_column(Float, default=0.0)
    sms_used: Mapped[float] = mapped_column(Float, default=0.0)
    roaming_fee_month: Mapped[float] = mapped_column(Float, default=0.0)  # roaming + long distance, yuan
    data_day_mb: Mapped[float] = mapped_column(Float, default=0.0)
    roaming_fee_day: Mapped[float] = mapped_column(Float, default=0.0)
    spend_day: Mapped[float] = mapped_column(Float, default=0.0)
    roaming: Mapped[bool] = mapped_column(Boolean, default=False)  # abroad / roaming right now

    # value features
    arpu_history: Mapped[list[float]] = mapped_column(JSON, default=list)  # monthly, oldest first
    arpu_avg: Mapped[float] = mapped_column(Float, default=0.0)  # mean of the last 3 months (cached)
    days_silent: Mapped[int] = mapped_column(Integer, default=0)
    tenure_months: Mapped[int] = mapped_column(Integer, default=0)
    avg_payment: Mapped[float] = mapped_column(Float, default=0.0)  # mean top-up / payment, yuan
    late_payments: Mapped[int] = mapped_column(Integer, default=0)  # last 12 months
    vas_share: Mapped[float] = mapped_column(Float, default=0.0)  # value-added services share of spend, 0-1
    contract_months_left: Mapped[int] = mapped_column(Integer, default=0)  # handset contract still running
    has_broadband: Mapped[bool] = mapped_column(Boolean, default=False)
    family_size: Mapped[int] = mapped_column(Integer, default=1)

    # channel contact history: contacted / answered / responded per channel, plus behaviour factors
    phone_contacted: Mapped[int] = mapped_column(Integer, default=0)
    phone_answered: Mapped[int] = mapped_column(Integer, default=0)
    phone_responded: Mapped[int] = mapped_column(Integer, default=0)
    sms_contacted: Mapped[int] = mapped_column(Integer, default=0)
    sms_answered: Mapped[int] = mapped_column(Integer, default=0)
    sms_responded: Mapped[int] = mapped_column(Integer, default=0)
    web_contacted: Mapped[int] = mapped_column(Integer, default=0)
    web_answered: Mapped[int] = mapped_column(Integer, default=0)
    web_responded: Mapped[int] = mapped_column(Integer, default=0)
    hall_contacted: Mapped[int] = mapped_column(Integer, default=0)
    hall_answered: Mapped[int] = mapped_column(Integer, default=0)
    hall_responded: Mapped[int] = mapped_column(Integer, default=0)
    service_calls: Mapped[int] = mapped_column(Integer, default=0)  # calls to 10086, last 3 months
    web_minutes: Mapped[float] = mapped_column(Float, default=0.0)  # app / web hall minutes per month
    hall_visits: Mapped[int] = mapped_column(Integer, default=0)  # business hall visits, last 12 months

    # cached segments (offers.segments)
    value_score: Mapped[float] = mapped_column(Float, default=0.0)
    value_grade: Mapped[str] = mapped_column(String(2), default="D")
    usage_class: Mapped[str] = mapped_column(String(1), default="B")
    high_tariff: Mapped[bool] = mapped_column(Boolean, default=False)
    high_data: Mapped[bool] = mapped_column(Boolean, default=False)
    high_silence: Mapped[bool] = mapped_column(Boolean, default=False)
    high_arpu: Mapped[bool] = mapped_column(Boolean, default=False)
    high_tariff_day: Mapped[bool] = mapped_column(Boolean, default=False)
    high_data_day: Mapped[bool] = mapped_column(Boolean, default=False)
    high_silence_day: Mapped[bool] = mapped_column(Boolean, default=False)
    high_arpu_day: Mapped[bool] = mapped_column(Boolean, default=False)
    channel_pref: Mapped[str] = mapped_column(String(8), default="sms")
    pref_phone: Mapped[float] = mapped_column(Float, default=0.0)
    pref_sms: Mapped[float] = mapped_column(Float, default=0.0)
    pref_web: Mapped[float] = mapped_column(Float, default=0.0)
    pref_hall: Mapped[float] = mapped_column(Float, default=0.0)
    segmented_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_subscribers_grade", "value_grade", "usage_class"),)


class Offer(Base):
    """An offer as loaded from offers.yaml (the running shelf uses the compiled catalog, not this row)."""

    __tablename__ = "offers"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    price: Mapped[float] = mapped_column(Float)
    type: Mapped[str] = mapped_column(String(16))
    validity_days: Mapped[int] = mapped_column(Integer, default=30)
    exclusive_group: Mapped[str | None] = mapped_column(String(32), nullable=True)
    eligibility: Mapped[str] = mapped_column(Text, default="true")
    trigger: Mapped[str | None] = mapped_column(Text, nullable=True)
    priority: Mapped[float] = mapped_column(Float, default=50.0)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    start_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    confirm_text: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    retired: Mapped[bool] = mapped_column(Boolean, default=False)  # no longer in the fixture set


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msisdn: Mapped[str] = mapped_column(String(20))
    offer_code: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float] = mapped_column(Float)
    cancelled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    channel: Mapped[str] = mapped_column(String(16), default="sms")

    __table_args__ = (
        Index("ix_subscriptions_msisdn", "msisdn", "cancelled_at"),
        # one active subscription per number and offer, whatever races the Y replies run
        Index("uq_subscriptions_active", "msisdn", "offer_code", unique=True,
              sqlite_where=text("cancelled_at IS NULL"), postgresql_where=text("cancelled_at IS NULL")),
    )


class Refusal(Base):
    __tablename__ = "refusals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msisdn: Mapped[str] = mapped_column(String(20))
    offer_code: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(32), default="sms")  # sms, campaign:<id>, fixture

    __table_args__ = (Index("ix_refusals_msisdn_at", "msisdn", "at"),)


class PendingOrder(Base):
    """The KT order waiting for its Y; one per number (a newer KT replaces it)."""

    __tablename__ = "pending_orders"

    msisdn: Mapped[str] = mapped_column(String(20), primary_key=True)
    offer_code: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16), default="sms")
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    confirmed_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # a repeated Y sees this


class ShelfView(Base):
    """The last shelf shown to a number, so a lone digit can order item N."""

    __tablename__ = "shelf_views"

    msisdn: Mapped[str] = mapped_column(String(20), primary_key=True)
    codes: Mapped[list[str]] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float)


def contact_columns() -> dict[str, tuple[str, str, str]]:
    """``{channel: (contacted, answered, responded)}`` column names of the contact history."""
    return {ch: (f"{ch}_contacted", f"{ch}_answered", f"{ch}_responded") for ch in CHANNELS}


def row_dict(row: Any) -> dict[str, Any]:
    """A subscriber (ORM object or Core row) as a plain dict of its columns."""
    if hasattr(row, "_mapping"):
        return dict(row._mapping)
    return {c.key: getattr(row, c.key) for c in Subscriber.__table__.columns}
