"""Erlang B / Erlang C formulas for an M/M/N agent queue (callers never abandon).

    traffic(calls_per_hour, aht_s) -> erlangs
    erlang_b(agents, traffic_erlangs) -> P(blocked) in a loss system
    erlang_c(agents, traffic_erlangs) -> P(wait): share of calls that find every agent busy
    asa(agents, calls_per_hour, aht_s) -> mean wait in seconds over all calls
    service_level(agents, calls_per_hour, aht_s, answer_within_s) -> share answered within that time

Erlang B is computed with the recurrence B(k) = A*B(k-1) / (k + A*B(k-1)), which stays in
[0, 1] for any number of agents (no factorials, no overflow); Erlang C follows from it as
C = N*B / (N - A*(1 - B)). At or above N erlangs the queue grows without bound: P(wait) is
1, ASA infinite and the service level 0.
"""

from __future__ import annotations

import math

__all__ = ["traffic", "erlang_b", "erlang_c", "asa", "service_level"]


def traffic(calls_per_hour: float, aht_s: float) -> float:
    """Offered load in erlangs."""
    return calls_per_hour * aht_s / 3600.0


def _check(agents: int, traffic_erlangs: float) -> None:
    if agents < 0 or traffic_erlangs < 0:
        raise ValueError("agents and traffic must not be negative")


def erlang_b(agents: int, traffic_erlangs: float) -> float:
    _check(agents, traffic_erlangs)
    b = 1.0
    for k in range(1, agents + 1):
        ab = traffic_erlangs * b
        b = ab / (k + ab)
    return b


def erlang_c(agents: int, traffic_erlangs: float) -> float:
    _check(agents, traffic_erlangs)
    if traffic_erlangs == 0:
        return 0.0
    if traffic_erlangs >= agents:
        return 1.0
    b = erlang_b(agents, traffic_erlangs)
    return agents * b / (agents - traffic_erlangs * (1.0 - b))


def asa(agents: int, calls_per_hour: float, aht_s: float) -> float:
    """Average speed of answer: C * AHT / (N - A)."""
    a = traffic(calls_per_hour, aht_s)
    if a >= agents:
        return math.inf
    return erlang_c(agents, a) * aht_s / (agents - a)


def service_level(agents: int, calls_per_hour: float, aht_s: float, answer_within_s: float) -> float:
    """P(wait <= t) = 1 - C * exp(-(N - A) * t / AHT)."""
    a = traffic(calls_per_hour, aht_s)
    if a >= agents:
        return 0.0
    return 1.0 - erlang_c(agents, a) * math.exp(-(agents - a) * answer_within_s / aht_s)
