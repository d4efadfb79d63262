"""The subscriber attributes rules may use: names, types and how they are computed.

Offer conditions (offers.yaml) and campaign targeting (notifier) are
``rule-engine`` expressions over these names, type-checked when fixtures load
(:func:`context` gives the typed context). ``facts(subscriber)`` turns a
subscriber row (ORM object, Core row or mapping) into the dict the rules see.

Numbers are all FLOAT (rule-engine has one number type). Derived facts:

- ``arpu_avg``: mean ARPU of the last 3 months (yuan); ``arpu_last``: the last month.
- ``data_usage_ratio`` / ``voice_usage_ratio`` / ``sms_usage_ratio``: this month's use over the
  plan allowance (use with no allowance counts as ``RATIO_CAP``).
- ``<channel>_response_rate`` / ``<channel>_answer_rate``: responded (answered) over contacted,
  for phone, sms, web and hall (0 when never contacted).
- ``four_high_count``: how many of the four monthly "four-high" flags are set.
- the cached segment columns: ``value_score``, ``value_grade``, ``usage_class``,
  ``high_tariff``/``high_data``/``high_silence``/``high_arpu`` (monthly window) and their ``_day``
  variants (daily window), ``channel_pref``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import rule_engine

from offers.models import CHANNELS

FLOAT = rule_engine.DataType.FLOAT
STRING = rule_engine.DataType.STRING
BOOLEAN = rule_engine.DataType.BOOLEAN

RATIO_CAP = 99.0

# Raw columns of ``subscribers`` exposed unchanged, with their rule type.
RAW: dict[str, Any] = {
    "msisdn": STRING, "brand": STRING, "plan": STRING, "age": FLOAT, "balance": FLOAT,
    "opted_out": BOOLEAN, "consent_marketing": BOOLEAN, "complaints": FLOAT, "vip": BOOLEAN,
    "plan_fee": FLOAT, "voice_allowance_min": FLOAT, "data_allowance_mb": FLOAT, "sms_allowance": FLOAT,
    "voice_used_min": FLOAT, "data_used_mb": FLOAT, "sms_used": FLOAT, "roaming_fee_month": FLOAT,
    "data_day_mb": FLOAT, "roaming_fee_day": FLOAT, "spend_day": FLOAT, "roaming": BOOLEAN,
    "arpu_avg": FLOAT, "days_silent": FLOAT, "tenure_months": FLOAT, "avg_payment": FLOAT,
    "late_payments": FLOAT, "vas_share": FLOAT, "contract_months_left": FLOAT, "has_broadband": BOOLEAN,
    "family_size": FLOAT, "service_calls": FLOAT, "web_minutes": FLOAT, "hall_visits": FLOAT,
    # cached segments
    "value_score": FLOAT, "value_grade": STRING, "usage_class": STRING,
    "high_tariff": BOOLEAN, "high_data": BOOLEAN, "high_silence": BOOLEAN, "high_arpu": BOOLEAN,
    "high_tariff_day": BOOLEAN, "high_data_day": BOOLEAN, "high_silence_day": BOOLEAN,
    "high_arpu_day": BOOLEAN, "channel_pref": STRING,
}

DERIVED: dict[str, Any] = {
    "arpu_last": FLOAT, "data_usage_ratio": FLOAT, "voice_usage_ratio": FLOAT, "sms_usage_ratio": FLOAT,
    "four_high_count": FLOAT,
    **{f"{ch}_response_rate": FLOAT for ch in CHANNELS},
    **{f"{ch}_answer_rate": FLOAT for ch in CHANNELS},
    **{f"{ch}_contacted": FLOAT for ch in CHANNELS},
}

SCHEMA: dict[str, Any] = {**RAW, **DERIVED}
"""Every attribute name a rule may use -> its ``rule_engine.DataType``."""

_CASTS = {FLOAT: float, STRING: str, BOOLEAN: bool}
_RAW_CASTS = tuple((name, _CASTS[kind], _CASTS[kind]()) for name, kind in RAW.items())
MONTH_FLAGS = ("high_tariff", "high_data", "high_silence", "high_arpu")


def ratio(used: float, allowance: float) -> float:
    """Use over allowance, capped; using something with no allowance counts as the cap."""
    if allowance <= 0:
        return RATIO_CAP if used > 0 else 0.0
    return min(used / allowance, RATIO_CAP)


def _get(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    if hasattr(row, "_mapping"):
        return row._mapping
    return _ObjectView(row)


class _ObjectView(Mapping[str, Any]):
    """Attribute access to an ORM object as a read-only mapping."""

    def __init__(self, obj: Any):
        self._obj = obj

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self._obj, key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self):
        return iter(RAW)

    def __len__(self) -> int:
        return len(RAW)


def facts(subscriber: Any) -> dict[str, Any]:
    """Every :data:`SCHEMA` attribute of one subscriber, typed for rule-engine (missing raw -> zero value)."""
    get = _get(subscriber).get
    out: dict[str, Any] = {}
    for name, cast, zero in _RAW_CASTS:
        value = get(name)
        out[name] = zero if value is None else cast(value)
    history = get("arpu_history") or []
    out["arpu_last"] = float(history[-1]) if history else out["arpu_avg"]
    out["data_usage_ratio"] = ratio(out["data_used_mb"], out["data_allowance_mb"])
    out["voice_usage_ratio"] = ratio(out["voice_used_min"], out["voice_allowance_min"])
    out["sms_usage_ratio"] = ratio(out["sms_used"], out["sms_allowance"])
    out["four_high_count"] = float(sum(1 for flag in MONTH_FLAGS if out[flag]))
    for ch in CHANNELS:
        contacted = float(get(f"{ch}_contacted") or 0)
        out[f"{ch}_contacted"] = contacted
        out[f"{ch}_answer_rate"] = float(get(f"{ch}_answered") or 0) / contacted if contacted else 0.0
        out[f"{ch}_response_rate"] = float(get(f"{ch}_responded") or 0) / contacted if contacted else 0.0
    return out


def arpu_avg(history: list[float] | None) -> float:
    """Mean of the last three monthly ARPU values (the operators' definition of ARPU)."""
    recent = list(history or [])[-3:]
    return round(sum(recent) / len(recent), 2) if recent else 0.0


@lru_cache(maxsize=1)
def context() -> rule_engine.Context:
    """The typed rule-engine context every offer / campaign condition is compiled with."""
    return rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(SCHEMA))


def type_name(name: str) -> str:
    """``'FLOAT'`` / ``'STRING'`` / ``'BOOLEAN'`` for an attribute (for help texts and problems)."""
    return SCHEMA[name].name
