"""Read models of the offers domain for the HTTP API and the CLI."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offers import schema
from offers.catalog import OffersCatalog
from offers.models import CHANNELS, Subscriber, Subscription
from offers.shelf import segment_report


def subscriber_view(session: Session, msisdn: str, catalog: OffersCatalog | None = None) -> dict[str, Any] | None:
    """``GET /api/subscribers/{msisdn}``: profile, plan, usage, segments (with reasons when a catalog is
    given), active subscriptions; None for an unknown number. ``balance`` is a number with 2 decimals,
    ``balance_text`` the same written as in the SMS (``"58.30"``)."""
    sub = session.get(Subscriber, msisdn)
    if sub is None:
        return None
    facts = schema.facts(sub)
    subs = session.scalars(select(Subscription).where(
        Subscription.msisdn == msisdn, Subscription.cancelled_at.is_(None)).order_by(Subscription.started_at)).all()
    if catalog is not None:
        segments: dict[str, Any] = segment_report(facts, catalog.params)
    else:
        segments = {"value_score": sub.value_score, "value_grade": sub.value_grade, "usage_class": sub.usage_class,
                    **{k: v for k, v in facts.items() if k.startswith("high_")}, "channel_pref": sub.channel_pref,
                    "channel_scores": {ch: getattr(sub, f"pref_{ch}") for ch in CHANNELS}}
    return {
        "msisdn": sub.msisdn, "name": sub.name, "brand": sub.brand,
        "brand_name": catalog.brand_name(sub.brand) if catalog else sub.brand,
        "email": sub.email, "timezone": sub.timezone, "age": sub.age,
        "balance": round(sub.balance, 2), "balance_text": f"{sub.balance:.2f}",
        "opted_out": bool(sub.opted_out), "consent_marketing": bool(sub.consent_marketing),
        "complaints": sub.complaints, "vip": bool(sub.vip), "tenure_months": sub.tenure_months,
        "plan": {"name": sub.plan, "fee": sub.plan_fee, "data_mb": sub.data_allowance_mb,
                 "voice_min": sub.voice_allowance_min, "sms": sub.sms_allowance},
        "usage": {"data_mb": sub.data_used_mb, "voice_min": sub.voice_used_min, "sms": sub.sms_used,
                  "data_ratio": round(facts["data_usage_ratio"], 3), "voice_ratio": round(facts["voice_usage_ratio"], 3),
                  "data_today_mb": sub.data_day_mb, "roaming": bool(sub.roaming),
                  "roaming_fee_month": sub.roaming_fee_month, "days_silent": sub.days_silent},
        "arpu": {"history": list(sub.arpu_history or []), "avg_3m": sub.arpu_avg},
        "segments": segments,
        "subscriptions": [{"code": s.offer_code, "started_at": s.started_at, "channel": s.channel,
                           "cancel": f"QX{s.offer_code}"} for s in subs],
    }


def msisdn_by_email(session: Session, address: str) -> str | None:
    """The subscriber an e-mail command comes from (case-insensitive address), for the SMTP-in transport."""
    return session.scalar(select(Subscriber.msisdn).where(func.lower(Subscriber.email) == address.strip().lower())
                          .order_by(Subscriber.msisdn).limit(1))
