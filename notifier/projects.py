"""Outbound call projects (外呼) as fixture data: ``projects.yaml``, validated with file:line problems.

A project says whom to call (a rule-engine target over :mod:`offers.schema`, like campaigns), what
to offer (offer codes), how (an agent following a script, or an outbound IVR), when (a local
calling window), how hard (attempts per number, retry back-off, progressive or predictive
pacing under an abandoned-call ceiling), how to try it first (a trial share or count, seeded),
and how to judge it (a QA sample share and scoring rules). The file also holds the voice
contact policy (quiet hours, calls per week, days after a refusal) and a do-not-call list.

``parsed["notifier.projects"]`` is a :class:`ProjectBook`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from core.fixtures import Doc, Parsed, Problem, Section, check_fields, require_list
from notifier import policy
from notifier.campaign_sections import fast_predicate
from notifier.project_models import DoNotCall, ProjectState
from offers.rules import Condition, compile_condition

PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
WINDOW = re.compile(r"^(\d{1,2}:\d{2})-(\d{1,2}:\d{2})$")
MSISDN = re.compile(r"^[0-9]{5,20}$")
MAX_PROJECTS = 100
MAX_STEPS = 20
CHANNELS = ("agent", "ivr")
PACING = ("progressive", "predictive")
QA_CHECKS = ("reached", "max_duration_s", "min_duration_s", "objections_answered", "offer_named")


@dataclass(frozen=True)
class Objection:
    text: str
    answer: str


@dataclass(frozen=True)
class Step:
    id: str
    text: str
    objections: tuple[Objection, ...] = ()


@dataclass(frozen=True)
class QaRule:
    id: str
    points: float
    check: str  # one of QA_CHECKS
    value: Any
    text: str = ""


@dataclass(frozen=True)
class Pacing:
    mode: str = "predictive"
    abandon_ceiling: float = 0.03
    abandon_after_s: float = 2.0  # an answered call with no free agent this long is abandoned
    ring_timeout_s: float = 25.0
    lines: int = 30  # concurrent calls of an IVR project


@dataclass(frozen=True)
class Trial:
    share: float | None = None
    count: int | None = None
    seed: int = 1


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    target: Condition
    predicate: Any
    offers: tuple[str, ...]
    channel: str
    window: tuple[int, int]
    attempts: int
    backoff_s: tuple[float, ...]
    pacing: Pacing
    trial: Trial
    script: tuple[Step, ...]
    qa_sample: float
    qa_rules: tuple[QaRule, ...]
    agents: int = 10
    aht_s: float = 180.0
    accept_rate: float = 0.08  # expected acceptance of an answered call (trial figures are shown beside it)
    answer_rate: float = 0.45
    sms_campaign: str | None = None
    prompt: str = ""
    note: str = ""

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); the last delay repeats."""
        return self.backoff_s[min(attempt, len(self.backoff_s)) - 1]

    def step_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.script)

    def window_text(self) -> str:
        return "-".join(f"{w // 3600:02d}:{w % 3600 // 60:02d}" for w in self.window)


@dataclass(frozen=True)
class VoicePolicy:
    quiet: tuple[int, int] = (21 * 3600, 9 * 3600)  # subscriber's local time, may wrap midnight
    calls_per_week: int = 2
    refusal_days: float = 90.0


@dataclass(frozen=True)
class ProjectBook:
    projects: Mapping[str, Project] = field(default_factory=dict)
    voice: VoicePolicy = VoicePolicy()
    do_not_call: frozenset[str] = frozenset()

    def get(self, project_id: str) -> Project:
        project = self.projects.get(project_id)
        if project is None:
            known = ", ".join(sorted(self.projects)) or "(none loaded)"
            raise KeyError(f"unknown project '{project_id}'; known: {known}")
        return project


# --- parsing -------------------------------------------------------------------------------------------

FIELDS = {
    "id": (str, True), "name": (str, True), "target": (str, True), "offers": (list, True), "channel": (str, True),
    "window": (str, True), "attempts": (int, False), "backoff_s": ((int, float, list), False),
    "pacing": (dict, False), "trial": (dict, True), "script": (list, True), "qa": (dict, False),
    "agents": (dict, False), "expected": (dict, False), "sms_campaign": (str, False), "prompt": (str, False),
    "note": (str, False),
}
PACING_FIELDS = {"mode": (str, True), "abandon_ceiling": ((int, float), False), "abandon_after_s": ((int, float), False),
                 "ring_timeout_s": ((int, float), False), "lines": (int, False)}
TRIAL_FIELDS = {"share": ((int, float), False), "count": (int, False), "seed": (int, False)}
STEP_FIELDS = {"step": (str, True), "text": (str, True), "objections": (list, False)}
OBJECTION_FIELDS = {"objection": (str, True), "answer": (str, True)}
QA_FIELDS = {"sample": ((int, float), True), "rules": (list, True)}
RULE_FIELDS = {"id": (str, True), "points": ((int, float), True), "text": (str, False),
               **{check: ((str, int, float, bool), False) for check in QA_CHECKS}}
AGENT_FIELDS = {"count": (int, True), "aht_s": ((int, float), False)}
EXPECTED_FIELDS = {"answer_rate": ((int, float), False), "accept_rate": ((int, float), False)}
POLICY_FIELDS = {"quiet_hours": (str, False), "calls_per_week": (int, False), "refusal_days": ((int, float), False)}
TOP_FIELDS = {"voice_policy": (dict, False), "do_not_call": (list, False), "projects": (list, True)}


def _window(text: str) -> tuple[int, int]:
    match = WINDOW.match(text)
    if match is None:
        raise ValueError("expected HH:MM-HH:MM, e.g. 09:00-20:00")
    return policy.parse_hhmm(match.group(1)), policy.parse_hhmm(match.group(2))


def _in(value: float, low: float, high: float) -> bool:
    return low <= value <= high


class _Checker:
    """Collects the problems of one project item at their lines."""

    def __init__(self, doc: Doc, path: tuple):
        self.doc, self.path, self.problems = doc, path, []

    def fields(self, sub: tuple, item: Any, spec: Mapping[str, Any]) -> bool:
        found = check_fields(self.doc, self.path + sub, item, spec)
        self.problems += found
        return not found

    def add(self, sub: tuple, reason: str) -> None:
        self.problems.append(self.doc.problem(self.path + sub, reason))


def _script(c: _Checker, items: list) -> tuple[Step, ...]:
    if not items:
        c.add(("script",), "a script needs at least one step")
    if len(items) > MAX_STEPS:
        c.add(("script",), f"at most {MAX_STEPS} steps")
    steps, seen = [], set()
    for i, item in enumerate(items[:MAX_STEPS]):
        if not c.fields(("script", i), item, STEP_FIELDS):
            continue
        if not STEP_ID.match(item["step"]):
            c.add(("script", i, "step"), "step id must be 1-32 of a-z 0-9 _ starting with a letter")
        elif item["step"] in seen:
            c.add(("script", i, "step"), f"duplicate step '{item['step']}'")
        seen.add(item["step"])
        objections = []
        for j, obj in enumerate(item.get("objections") or []):
            if c.fields(("script", i, "objections", j), obj, OBJECTION_FIELDS):
                objections.append(Objection(obj["objection"], obj["answer"]))
        steps.append(Step(item["step"], item["text"].strip(), tuple(objections)))
    return tuple(steps)


def _qa(c: _Checker, qa: Mapping[str, Any], steps: tuple[str, ...]) -> tuple[float, tuple[QaRule, ...]]:
    if not c.fields(("qa",), qa, QA_FIELDS):
        return 0.0, ()
    if not _in(qa["sample"], 0, 1):
        c.add(("qa", "sample"), "sample must be a share from 0 to 1")
    rules = []
    for i, item in enumerate(qa["rules"]):
        if not c.fields(("qa", "rules", i), item, RULE_FIELDS):
            continue
        checks = [k for k in QA_CHECKS if k in item]
        if len(checks) != 1:
            c.add(("qa", "rules", i), f"a rule checks exactly one of {', '.join(QA_CHECKS)}")
            continue
        value = item[checks[0]]
        if checks[0] == "reached" and value not in steps:
            c.add(("qa", "rules", i, "reached"), f"unknown script step '{value}' (steps: {', '.join(steps)})")
        rules.append(QaRule(item["id"], float(item["points"]), checks[0], value, item.get("text", "")))
    return float(qa["sample"]), tuple(rules)


def _pacing(c: _Checker, item: Mapping[str, Any]) -> Pacing:
    spec = item.get("pacing") or {"mode": "predictive"}
    if not c.fields(("pacing",), spec, PACING_FIELDS):
        return Pacing()
    pacing = Pacing(spec["mode"], float(spec.get("abandon_ceiling", 0.03)), float(spec.get("abandon_after_s", 2.0)),
                    float(spec.get("ring_timeout_s", 25.0)), int(spec.get("lines", 30)))
    if pacing.mode not in PACING:
        c.add(("pacing", "mode"), f"mode must be one of {', '.join(PACING)}")
    if not 0 < pacing.abandon_ceiling <= 0.2:
        c.add(("pacing", "abandon_ceiling"), "abandon_ceiling must be a share in (0, 0.2]")
    if not _in(pacing.ring_timeout_s, 5, 120):
        c.add(("pacing", "ring_timeout_s"), "ring_timeout_s must be 5..120 seconds")
    if not _in(pacing.lines, 1, 10_000):
        c.add(("pacing", "lines"), "lines must be 1..10000")
    return pacing


def _trial(c: _Checker, spec: Mapping[str, Any]) -> Trial:
    if not c.fields(("trial",), spec, TRIAL_FIELDS):
        return Trial()
    if ("share" in spec) == ("count" in spec):
        c.add(("trial",), "give exactly one of share (0..1) or count (numbers)")
        return Trial()
    trial = Trial(float(spec["share"]) if "share" in spec else None, spec.get("count"), int(spec.get("seed", 1)))
    if trial.share is not None and not 0 < trial.share <= 1:
        c.add(("trial", "share"), "share must be in (0, 1]")
    if trial.count is not None and trial.count < 1:
        c.add(("trial", "count"), "count must be at least 1")
    return trial


def _backoff(c: _Checker, raw: Any) -> tuple[float, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 60 <= v <= 7 * 86400
                         for v in values):
        c.add(("backoff_s",), "back-off must be seconds from 60 to 604800 (a number or a list, one per retry)")
        return (3600.0,)
    return tuple(float(v) for v in values)


def _basics(c: _Checker, item: Mapping[str, Any], offers: set[str], campaigns: Mapping[str, Any]) -> None:
    if not PROJECT_ID.match(item["id"]):
        c.add(("id",), "id must be 1-64 of a-z 0-9 _ - (starting with a letter or digit)")
    if item["channel"] not in CHANNELS:
        c.add(("channel",), f"channel must be one of {', '.join(CHANNELS)}")
    if not item["offers"]:
        c.add(("offers",), "a project offers at least one product")
    for i, code in enumerate(item["offers"]):
        if offers and str(code) not in offers:
            c.add(("offers", i), f"unknown offer '{code}' (not in offers.yaml)")
    if not _in(item.get("attempts", 3), 1, 10):
        c.add(("attempts",), "attempts must be 1..10")
    sms = item.get("sms_campaign")
    if sms is not None and sms not in campaigns:
        c.add(("sms_campaign",), f"unknown campaign '{sms}' (not in campaigns.yaml)")
    if item["channel"] == "ivr" and not item.get("prompt"):
        c.add(("prompt",), "an ivr project needs a prompt (what the callee hears: 1 order, 2 hear again, 3 not interested, 9 no more calls)")
    for key in ("answer_rate", "accept_rate"):
        value = (item.get("expected") or {}).get(key)
        if value is not None and not 0 < value <= 1:
            c.add(("expected", key), f"{key} must be a share in (0, 1]")


def _build(doc: Doc, path: tuple, item: dict, offers: set[str], campaigns: Mapping[str, Any],
           ) -> tuple[Project | None, list[Problem]]:
    c = _Checker(doc, path)
    _basics(c, item, offers, campaigns)
    target, found = compile_condition(item["target"], doc.file, doc.line(*path, "target"),
                                      f"projects[{path[1]}].target")
    c.problems += found
    try:
        window = _window(item["window"])
        if window[0] >= window[1]:
            c.add(("window",), "window must end after it starts, within one day")
    except ValueError as exc:
        c.add(("window",), str(exc))
        window = (0, 0)
    script = _script(c, item["script"])
    qa_sample, qa_rules = _qa(c, item.get("qa") or {"sample": 0, "rules": []}, tuple(s.id for s in script))
    agents = item.get("agents") or {"count": 10}
    if c.fields(("agents",), agents, AGENT_FIELDS) and not (_in(agents["count"], 1, 5000)
                                                            and _in(agents.get("aht_s", 180), 10, 3600)):
        c.add(("agents",), "agents.count must be 1..5000 and aht_s 10..3600 seconds")
    expected = item.get("expected") or {}
    c.fields(("expected",), expected, EXPECTED_FIELDS)
    project = Project(
        id=item["id"], name=item["name"], target=target, predicate=fast_predicate(target) if target else None,
        offers=tuple(str(o) for o in item["offers"]), channel=item["channel"], window=window,
        attempts=int(item.get("attempts", 3)), backoff_s=_backoff(c, item.get("backoff_s", [1800, 7200])),
        pacing=_pacing(c, item), trial=_trial(c, item["trial"]), script=script, qa_sample=qa_sample,
        qa_rules=qa_rules, agents=int(agents.get("count", 10)), aht_s=float(agents.get("aht_s", 180)),
        accept_rate=float(expected.get("accept_rate", 0.08)), answer_rate=float(expected.get("answer_rate", 0.45)),
        sms_campaign=item.get("sms_campaign"), prompt=item.get("prompt", ""), note=item.get("note", ""))
    return (None, c.problems) if c.problems else (project, [])


def _voice(doc: Doc, spec: Any) -> tuple[VoicePolicy, list[Problem]]:
    problems = check_fields(doc, ("voice_policy",), spec, POLICY_FIELDS)
    if problems:
        return VoicePolicy(), problems
    base = VoicePolicy()
    try:
        quiet = _window(spec["quiet_hours"]) if "quiet_hours" in spec else base.quiet
    except ValueError as exc:
        return base, [doc.problem(("voice_policy", "quiet_hours"), str(exc))]
    voice = VoicePolicy(quiet, int(spec.get("calls_per_week", base.calls_per_week)),
                        float(spec.get("refusal_days", base.refusal_days)))
    if not 0 <= voice.calls_per_week <= 50:
        problems.append(doc.problem(("voice_policy", "calls_per_week"), "calls_per_week must be 0..50"))
    return voice, problems


def _dnc(doc: Doc, numbers: list) -> tuple[frozenset[str], list[Problem]]:
    problems = [doc.problem(("do_not_call", i), "expected a phone number of 5-20 digits (quote it)")
                for i, n in enumerate(numbers) if not isinstance(n, str) or not MSISDN.match(n)]
    return frozenset(n for n in numbers if isinstance(n, str)), problems


def parse_projects(doc: Doc | None, parsed: Parsed) -> tuple[ProjectBook, list[Problem]]:
    if doc is None:
        return ProjectBook(), []
    if not isinstance(doc.data, dict):
        return ProjectBook(), [doc.problem((), "expected a mapping with a top-level 'projects:' list")]
    problems = check_fields(doc, (), doc.data, TOP_FIELDS)
    items, found = require_list(doc, "projects")
    if problems or items is None:
        return ProjectBook(), problems + found
    voice, problems = _voice(doc, doc.data.get("voice_policy") or {})
    dnc, found = _dnc(doc, doc.data.get("do_not_call") or [])
    problems += found
    if len(items) > MAX_PROJECTS:
        return ProjectBook(), [doc.problem(("projects",), f"more than {MAX_PROJECTS} projects")]
    offers = {str(getattr(o, "code", None) or (o.get("code") if isinstance(o, dict) else ""))
              for o in parsed.get("offers.offers") or ()}
    campaigns = parsed.get("notifier.campaigns") or {}
    out: dict[str, Project] = {}
    for i, item in enumerate(items):
        path = ("projects", i)
        found = check_fields(doc, path, item, FIELDS)
        if not found and item["id"] in out:
            found = [doc.problem(path + ("id",), f"duplicate project id {item['id']!r}")]
        if not found:
            project, found = _build(doc, path, item, offers, campaigns)
            if project is not None:
                out[project.id] = project
        problems += found
    return ProjectBook(out, voice, dnc), problems


def load_projects(session: Any, book: ProjectBook, parsed: Parsed) -> int:
    """A draft state row for every new project (ops' approvals survive a reload); the listed numbers
    join the do-not-call table (numbers added at run time stay)."""
    now = float(parsed["_now"])  # set by load_set from the injected clock
    known = set(session.scalars(select(ProjectState.project_id)))
    for project_id in book.projects:
        if project_id not in known:
            session.add(ProjectState(project_id=project_id, state="draft", changed_at=now))
    listed = set(session.scalars(select(DoNotCall.msisdn)))
    for msisdn in sorted(book.do_not_call - listed):
        session.add(DoNotCall(msisdn=msisdn, added_at=now, source="fixtures"))
    return len(book.projects)


def build_book(parsed: Parsed) -> ProjectBook:
    return parsed.get("notifier.projects") or ProjectBook()


SECTIONS = [Section("notifier.projects", "projects.yaml", parse_projects, load_projects, required=False)]
