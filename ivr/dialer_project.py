"""A project (notifier.projects) as a dialer configuration: agents, pacing, the allowed times, the script.

Pure glue shared by the running gateway (:mod:`ivr.dialer_service`) and the benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

from ivr.dialer import DialConfig
from ivr.queue import Agent
from notifier import policy
from notifier.campaigns import send_window
from notifier.projects import Project, ProjectBook
from notifier.projects_qa import converse


def agents_for(project: Project, on_s: float, off_s: float, count: int | None = None) -> tuple[Agent, ...]:
    """The project's telephone managers (电话经理), on shift for ``[on_s, off_s)``."""
    n = project.agents if count is None else count
    return tuple(Agent(f"{project.id[:12]}-tm{i + 1:03d}", frozenset({project.id}), on_s, off_s) for i in range(n))


def _converse(project: Project, target: Any, agent_id: str, rng: random.Random) -> Any:
    return converse(project, target.fit, agent_id, rng)


def dial_config(project: Project, agents: tuple[Agent, ...], **overrides: Any) -> DialConfig:
    pacing = project.pacing
    values = dict(
        project_id=project.id, channel=project.channel, pacing=pacing.mode, attempts=project.attempts,
        backoff=project.backoff, ring_timeout_s=pacing.ring_timeout_s, abandon_after_s=pacing.abandon_after_s,
        abandon_ceiling=pacing.abandon_ceiling, lines=pacing.lines, agents=agents, aht_s=project.aht_s,
        prompt=project.prompt, expected_answer_rate=project.answer_rate, converse=partial(_converse, project))
    values.update(overrides)
    return DialConfig(**values)


def allowed_fn(project: Project, book: ProjectBook, tz: str, until: float | None = None,
               ) -> Callable[[Any, float], float | None]:
    """``allowed(target, t)``: the first time at or after ``t`` inside the calling window (operator's
    time zone) and outside the voice quiet hours (the callee's time zone); None after ``until``."""
    quiet_start, quiet_end = book.voice.quiet
    today: list[float] = [0.0, 0.0]  # the last window computed: most calls fall inside it
    clear = _clear(project, book)

    def allowed(target: Any, t: float) -> float | None:
        if today[0] <= t < today[1] and (target.tz == tz or not target.tz) and clear:
            return t if until is None or t < until else None
        for _ in range(3):
            start, _end = send_window(project.window, t, tz)
            held = policy.quiet_hold(start, target.tz or tz, quiet_start, quiet_end)
            if held == start:
                break
            t = held
        today[0], today[1] = start, _end
        if until is not None and start >= until:
            return None
        return start

    return allowed


def _clear(project: Project, book: ProjectBook) -> bool:
    """Whether the calling window lies wholly outside the quiet hours (same time zone)."""
    start, end = project.window
    q0, q1 = book.voice.quiet
    if q0 > q1:  # wraps midnight: quiet is [q0, 24h) and [0, q1)
        return start >= q1 and end <= q0
    return end <= q0 or start >= q1
