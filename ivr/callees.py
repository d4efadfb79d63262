"""How a simulated subscriber's phone behaves on an outbound marketing call: pure decisions.

Two functions of (subscriber facts, offer, hour, rng) -> decision with reasons, used by the
callee simulator (``ivr.sip.uas_sim``) and testable alone:

``pickup(facts, hour, rng)`` -> ``Pickup``: answer (after ``ring_s`` seconds), busy (486) or no
answer (rings until the caller gives up). The chance to answer starts from the hour of day
(``CalleeKnobs.answer_by_hour``: low at night, lunch dip, evening peak), is scaled by the
subscriber's channel preference (phone people answer more, SMS people less) and by long
silence, and is pulled toward the subscriber's own phone answer history once there are at
least ``history_min`` past calls (``(p * k + answered) / (k + contacted)``). Busy follows the
hour too, higher for the top value grades (busy people).

``offer_reply(facts, offer, hour, rng, params, heard=n)`` -> ``OfferReply``: the keys of the outbound
IVR (``ivr.dialer.IVR_KEYS``): accept (DTMF 1), refuse as "not interested" (DTMF 3, or just hang
up), opt out of calls (DTMF 9); on the first hearing a callee now and then asks to hear the offer
again (DTMF 2, ``CalleeKnobs.replay_share``) and decides on the next. The accept propensity grows with how well the
offer fits the subscriber: ``fit`` is the shelf's ``fit x value`` (``offers.shelf.score`` divided
by the offer's priority: segment multipliers, trigger boost, affordability). An offer the
subscriber is not eligible for is mostly refused; the phone response history pulls the
propensity like the answer history above. Opting out is likelier for a poor fit (an offer the
subscriber is not eligible for counts as no fit at all), complaints,
calls late in the evening, and subscribers who refused marketing consent.

Unknown subscribers (``facts is None``), unknown offers or no segment parameters get the
defaults of ``CalleeKnobs``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from offers.catalog import CatalogOffer
from offers.segments import SegmentParams
from offers.shelf import score

__all__ = ["CalleeKnobs", "Pickup", "OfferReply", "pickup", "offer_reply", "offer_fit", "DIGITS"]

ANSWER, BUSY, NO_ANSWER = "answer", "busy", "no_answer"
ACCEPT, REFUSE, OPT_OUT, HANG_UP, REPLAY = "accept", "refuse", "opt_out", "hang_up", "replay"
# the outbound IVR's keys (ivr.dialer.IVR_KEYS): 1 order, 2 hear it again, 3 not interested, 9 no more calls
DIGITS = {ACCEPT: "1", REPLAY: "2", REFUSE: "3", OPT_OUT: "9"}

#            0     1     2     3     4     5     6     7     8     9    10    11
_ANSWER = (0.05, 0.03, 0.03, 0.03, 0.03, 0.05, 0.10, 0.25, 0.40, 0.50, 0.55, 0.50,
           0.40, 0.45, 0.50, 0.50, 0.50, 0.55, 0.60, 0.65, 0.60, 0.45, 0.25, 0.10)
#           12    13    14    15    16    17    18    19    20    21    22    23
_BUSY = (0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.03, 0.08, 0.12, 0.15, 0.15, 0.12,
         0.08, 0.10, 0.12, 0.12, 0.12, 0.15, 0.12, 0.10, 0.08, 0.06, 0.04, 0.02)


def _clamp(x: float, low: float, high: float) -> float:
    return low if x < low else high if x > high else x


@dataclass(frozen=True)
class CalleeKnobs:
    """The behaviour's parameters; the defaults are a plausible weekday population."""

    answer_by_hour: tuple[float, ...] = _ANSWER
    busy_by_hour: tuple[float, ...] = _BUSY
    pref_answer: Mapping[str, float] = field(default_factory=lambda: {"phone": 1.25, "sms": 0.8, "web": 0.9,
                                                                       "hall": 1.0})
    busy_grades: Mapping[str, float] = field(default_factory=lambda: {"A1": 1.4, "A2": 1.25})
    silent_days: float = 30.0  # silent this long: answers less
    silent_answer: float = 0.6
    history_min: float = 3.0  # past calls before the history counts
    history_weight: float = 4.0  # pseudo-calls the population prior is worth
    ring_s: tuple[float, float] = (2.0, 8.0)  # seconds before picking up (uniform)
    think_s: tuple[float, float] = (1.0, 4.0)  # seconds between the prompt and the key
    default_accept: float = 0.15
    accept_per_fit: float = 0.25  # p_accept = accept_per_fit * fit - 0.05
    accept_max: float = 0.6
    ineligible_accept: float = 0.2  # multiplier when the offer's eligibility is false
    opt_out_base: float = 0.03
    opt_out_poor_fit: float = 0.07  # times (1 - fit) when fit < 1; fit 0 when not eligible
    opt_out_per_complaint: float = 0.02
    opt_out_late: float = 0.05  # calls at 21:00 and later, or before 08:00
    opt_out_no_consent: float = 0.5
    hang_up_share: float = 0.3  # of refusals that just hang up instead of pressing 3
    replay_share: float = 0.08  # of first hearings, the callee presses 2 to hear the offer again


DEFAULT_KNOBS = CalleeKnobs()


@dataclass(frozen=True)
class Pickup:
    outcome: str  # answer, busy, no_answer
    ring_s: float  # seconds of ringing before the answer (0 unless answered)
    p_answer: float
    p_busy: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class OfferReply:
    action: str  # accept, refuse, opt_out, hang_up, replay
    digit: str | None  # the DTMF key, None for a hang-up
    p_accept: float
    p_opt_out: float
    fit: float | None
    reasons: tuple[str, ...]


def _with_history(p: float, facts: Mapping[str, Any], kind: str, knobs: CalleeKnobs,
                  reasons: list[str]) -> float:
    contacted = float(facts.get("phone_contacted") or 0.0)
    if contacted < knobs.history_min:
        return p
    rate = float(facts.get(f"phone_{kind}_rate") or 0.0)
    k = knobs.history_weight
    blended = (p * k + rate * contacted) / (k + contacted)
    reasons.append(f"phone {kind} history {rate:.2f} over {contacted:g} calls -> {blended:.3f}")
    return blended


def pickup(facts: Mapping[str, Any] | None, hour: int, rng: random.Random,
           knobs: CalleeKnobs = DEFAULT_KNOBS) -> Pickup:
    """Answer, busy or no answer for one call at local ``hour`` (0-23). See the module doc."""
    p_answer, p_busy = knobs.answer_by_hour[hour % 24], knobs.busy_by_hour[hour % 24]
    reasons = [f"hour {hour % 24}: answer {p_answer:.2f}, busy {p_busy:.2f}"]
    if facts is not None:
        pref = str(facts.get("channel_pref") or "")
        if pref in knobs.pref_answer:
            p_answer *= knobs.pref_answer[pref]
            reasons.append(f"channel_pref {pref} x{knobs.pref_answer[pref]:g}")
        if float(facts.get("days_silent") or 0.0) >= knobs.silent_days:
            p_answer *= knobs.silent_answer
            reasons.append(f"silent {float(facts['days_silent']):g} days x{knobs.silent_answer:g}")
        p_answer = _with_history(p_answer, facts, "answer", knobs, reasons)
        grade = str(facts.get("value_grade") or "")
        if grade in knobs.busy_grades:
            p_busy *= knobs.busy_grades[grade]
            reasons.append(f"value_grade {grade}: busy x{knobs.busy_grades[grade]:g}")
    p_answer = _clamp(p_answer, 0.0, 0.95)
    p_busy = _clamp(p_busy, 0.0, 1.0 - p_answer)
    draw = rng.random()
    if draw < p_answer:
        ring = rng.uniform(*knobs.ring_s)
        return Pickup(ANSWER, ring, p_answer, p_busy, (*reasons, f"answers after {ring:.1f} s"))
    outcome = BUSY if draw < p_answer + p_busy else NO_ANSWER
    return Pickup(outcome, 0.0, p_answer, p_busy, (*reasons, outcome.replace("_", " ")))


def offer_fit(facts: Mapping[str, Any], offer: CatalogOffer, params: SegmentParams) -> tuple[float, list[str]]:
    """How well ``offer`` fits: the shelf's ``fit x value`` (its score without the priority)."""
    reasons: list[str] = []
    total = score(offer, facts, params, reasons)
    return (total / offer.priority if offer.priority else 0.0), reasons


def offer_reply(facts: Mapping[str, Any] | None, offer: CatalogOffer | None, hour: int, rng: random.Random,
                params: SegmentParams | None = None, knobs: CalleeKnobs = DEFAULT_KNOBS, heard: int = 1,
                ) -> OfferReply:
    """What the callee does with the offer prompt, heard for the ``heard``-th time. See the module doc."""
    fit: float | None = None
    reasons: list[str] = []
    p_accept, p_opt_out = knobs.default_accept, knobs.opt_out_base
    if facts is not None and offer is not None and params is not None:
        fit, reasons = offer_fit(facts, offer, params)
        p_accept = _clamp(knobs.accept_per_fit * fit - 0.05, 0.01, knobs.accept_max)
        reasons.append(f"fit {fit:.3g} -> accept {p_accept:.3f}")
        eligible = offer.eligibility.matches(facts)
        if not eligible:
            p_accept *= knobs.ineligible_accept
            reasons.append(f"not eligible ({offer.eligibility.text}) x{knobs.ineligible_accept:g}")
        p_accept = _with_history(p_accept, facts, "response", knobs, reasons)
        p_opt_out += knobs.opt_out_poor_fit * max(0.0, 1.0 - (fit if eligible else 0.0))
        p_opt_out += knobs.opt_out_per_complaint * min(float(facts.get("complaints") or 0.0), 3.0)
        if not facts.get("consent_marketing", True):
            p_opt_out = knobs.opt_out_no_consent
            p_accept = min(p_accept, 1.0 - p_opt_out - knobs.opt_out_late)
            reasons.append("no marketing consent")
    else:
        unknown = "offer" if offer is None else "subscriber" if facts is None else "segment parameters"
        reasons.append(f"unknown {unknown}: default propensities")
    if hour % 24 >= 21 or hour % 24 < 8:
        p_opt_out += knobs.opt_out_late
        reasons.append(f"called at {hour % 24}:00: opt-out +{knobs.opt_out_late:g}")
    p_opt_out = _clamp(p_opt_out, 0.0, 1.0 - p_accept)
    if heard <= 1 and rng.random() < knobs.replay_share:
        reasons.append(f"asks to hear it again ({knobs.replay_share:g} of first hearings)")
        return OfferReply(REPLAY, DIGITS[REPLAY], p_accept, p_opt_out, fit, tuple(reasons))
    draw = rng.random()
    if draw < p_accept:
        action = ACCEPT
    elif draw < p_accept + p_opt_out:
        action = OPT_OUT
    else:
        action = HANG_UP if rng.random() < knobs.hang_up_share else REFUSE
    reasons.append(f"accept {p_accept:.3f}, opt out {p_opt_out:.3f} -> {action}")
    return OfferReply(action, DIGITS.get(action), p_accept, p_opt_out, fit, tuple(reasons))
