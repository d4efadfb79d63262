"""A telephone manager (电话经理) following a project's script, and QA scoring of the recorded calls.

:func:`converse` walks the script for one answered call: each agent has a stable diligence
(from a hash of the agent id) that decides whether a step is skipped or an objection answered;
the callee raises objections at steps that have them, and accepts with the project's expected
acceptance scaled by how well the offer fits the subscriber (eligibility) and by whether the
objections were answered. :func:`score` applies the fixture's QA rules to a call record (质检监听)
and :func:`findings` sums them per agent and per script step.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from notifier.projects import Project, QaRule

OPT_OUT_SHARE = 0.01  # callees who ask an agent never to be called again


@dataclass(frozen=True)
class Conversation:
    outcome: str  # accepted | refused | opted_out
    steps: tuple[str, ...]  # the script steps the agent reached, in order
    objections: tuple[str, ...]  # objections the callee raised
    unanswered: tuple[str, ...]  # objections the agent did not answer with the script
    offer_named: bool


def diligence(agent_id: str) -> float:
    """How closely an agent keeps to the script, 0.75..1.0, stable per agent."""
    digest = hashlib.sha256(f"diligence:{agent_id}".encode()).digest()
    return 0.75 + 0.25 * int.from_bytes(digest[:4], "big") / 2**32


def converse(project: Project, fit: float, agent_id: str, rng: random.Random) -> Conversation:
    """One agent call of ``project`` with a callee whose offer fit is ``fit`` (0..1)."""
    care = diligence(agent_id)
    steps, raised, missed = [], [], []
    for i, step in enumerate(project.script):
        if 0 < i < len(project.script) - 1 and rng.random() > care + (1 - care) * 0.5:
            continue  # skipped a middle step
        steps.append(step.id)
        if step.objections and rng.random() < 0.35:
            objection = rng.choice(step.objections)
            raised.append(objection.text)
            if rng.random() > care:
                missed.append(objection.text)
    named = rng.random() < care
    if rng.random() < OPT_OUT_SHARE:
        return Conversation("opted_out", tuple(steps), tuple(raised), tuple(missed), named)
    accept = project.accept_rate * fit / 0.8  # an eligible callee (fit 1) a little above the average
    accept *= (0.5 if missed else 1.0) * (1.0 if named else 0.6) * len(steps) / len(project.script)
    outcome = "accepted" if rng.random() < min(accept, 0.95) else "refused"
    return Conversation(outcome, tuple(steps), tuple(raised), tuple(missed), named)


def _passes(rule: QaRule, record: Mapping[str, Any]) -> bool:
    if rule.check == "reached":
        return rule.value in (record.get("steps") or ())
    if rule.check == "max_duration_s":
        return record.get("duration_s", 0.0) <= float(rule.value)
    if rule.check == "min_duration_s":
        return record.get("duration_s", 0.0) >= float(rule.value)
    if rule.check == "objections_answered":
        return not record.get("unanswered") if rule.value else True
    return bool(record.get("offer_named")) == bool(rule.value)


def score(project: Project, record: Mapping[str, Any]) -> tuple[float, list[str]]:
    """``(score 0..100, ids of failed rules)`` of one recorded call under the project's QA rules."""
    total = sum(r.points for r in project.qa_rules)
    if not total:
        return 100.0, []
    failed = [r for r in project.qa_rules if not _passes(r, record)]
    return round(100.0 * (total - sum(r.points for r in failed)) / total, 1), [r.id for r in failed]


def sampled(project: Project, call_id: str) -> bool:
    """A stable draw per call: ``qa.sample`` of agent calls are recorded for QA."""
    digest = hashlib.sha256(f"qa:{project.id}:{call_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < project.qa_sample


def findings(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """QA per agent (calls, mean score, failed rules) and per script step (reached, objections)."""
    agents: dict[str, dict[str, Any]] = {}
    steps: dict[str, dict[str, int]] = {}
    for r in records:
        a = agents.setdefault(r.get("agent") or "?", {"calls": 0, "score_sum": 0.0, "failed": {}})
        a["calls"] += 1
        a["score_sum"] += r.get("qa_score") or 0.0
        for rule in r.get("qa_findings") or ():
            a["failed"][rule] = a["failed"].get(rule, 0) + 1
        for step in r.get("steps") or ():
            s = steps.setdefault(step, {"reached": 0, "accepted": 0})
            s["reached"] += 1
            s["accepted"] += r.get("outcome") == "accepted"
        for objection in r.get("objections") or ():
            key = f"objection: {objection}"
            steps.setdefault(key, {"reached": 0, "accepted": 0})["reached"] += 1
    per_agent = {k: {"calls": v["calls"], "mean_score": round(v["score_sum"] / v["calls"], 1),
                     "failed_rules": dict(sorted(v["failed"].items()))} for k, v in sorted(agents.items())}
    return {"agents": per_agent, "script": steps}
