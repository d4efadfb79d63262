"""Fixture sections of the IVR: ``ivr.yaml`` (queues, agents, busy hours, SMS texts) and
``ivr_menus.yaml`` (menu trees, see :mod:`ivr.menus`), and the runtime config built from them.

``ivr.yaml``::

    sms_source: "10086"                 # the number IVR SMS come from
    queues: {general: {skill: null}, vip: {skill: vip}}   # skill null: any agent
    priority: {vip: 2, grades: {A1: 2}, brands: {gotone: 1}}   # higher is served first
    agents: [{id: "1001", name: 王芳, skills: [vip], shift: "00:00-24:00"}]
    busy_hours: {windows: ["09:00-12:00"], expected_wait_s: 120}
    guidance_sms: {default: "...", gotone: "..."}   # per brand; self-service pointers
    balance_sms: "...{{ balance }}..."
    survey: {sms: "...", thanks: "...", invalid: "..."}

Times are local (China Standard Time, UTC+8). Both files are optional: without them the IVR
answers every number with 404.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from core.fixtures import Doc, Parsed, Problem, Section
from core.templates import compile_template, render
from ivr.menus import Checker, IvrMenus, parse_menus

CST = dt.timezone(dt.timedelta(hours=8))
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
MAX_AGENTS = 10000
SMS_VARS = {
    "guidance": ("msisdn", "brand_name"),
    "balance_sms": ("msisdn", "brand_name", "balance"),
    "survey.sms": ("msisdn", "brand_name", "agent", "queue"),
    "survey.thanks": ("score",),
    "survey.invalid": (),
}


@dataclass(frozen=True)
class AgentSpec:
    agent_id: str
    name: str
    skills: frozenset[str]
    shift: tuple[int, int]  # minutes of the local day [start, end)


@dataclass(frozen=True)
class IvrSetup:
    sms_source: str
    queues: Mapping[str, str | None]  # queue name -> skill (None: any agent)
    vip_priority: int
    grade_priority: Mapping[str, int]
    brand_priority: Mapping[str, int]
    agents: tuple[AgentSpec, ...]
    busy_windows: tuple[tuple[int, int], ...]
    busy_expected_wait_s: float
    guidance: Mapping[str, jinja2.Template]  # brand or "default"
    balance_sms: jinja2.Template
    survey_sms: jinja2.Template
    survey_thanks: jinja2.Template
    survey_invalid: jinja2.Template

    def priority(self, brand: str | None, grade: str | None, vip: bool) -> int:
        """Queue priority of a caller: the best of VIP, value grade and brand (higher first)."""
        return max(self.vip_priority if vip else 0, self.grade_priority.get(grade or "", 0),
                   self.brand_priority.get(brand or "", 0))

    def in_busy_hours(self, now: float) -> bool:
        local = dt.datetime.fromtimestamp(now, CST)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.busy_windows)

    def guidance_text(self, brand: str | None, **variables: Any) -> str:
        return render(self.guidance.get(brand or "", self.guidance["default"]), **variables)


@dataclass(frozen=True)
class IvrConfig:
    """What the running IVR needs from one fixture snapshot (``snapshot.extras["ivr"]``)."""

    setup: IvrSetup
    menus: IvrMenus


def local_day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, CST).strftime("%Y-%m-%d")


def _window(c: Checker, path: tuple, text: Any) -> tuple[int, int] | None:
    match = _WINDOW.match(str(text))
    if match is None:
        c.fail(path, "expected a local time window HH:MM-HH:MM (end up to 24:00)")
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start or end > 24 * 60:
        c.fail(path, "a window must end after it starts, on the same day")
        return None
    return start, end


def _template(c: Checker, path: tuple, text: Any, variables: tuple[str, ...]) -> jinja2.Template | None:
    template, found = compile_template(text, variables, c.doc.file, c.doc.line(*path),
                                       path=".".join(str(p) for p in path))
    c.problems += found
    return template


def _agents(c: Checker, items: Any, skills: set[str]) -> tuple[AgentSpec, ...]:
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_AGENTS:
        c.fail(("agents",), f"expected a list of 1..{MAX_AGENTS} agents")
        return ()
    out, seen = [], set()
    spec = {"id": ((str, int), True), "name": (str, False), "skills": (list, False), "shift": (str, False)}
    for i, item in enumerate(items):
        path = ("agents", i)
        if not c.fields(path, item, spec):
            continue
        agent_id = str(item["id"])
        if agent_id in seen:
            c.fail(path + ("id",), f"agent id '{agent_id}' is used twice")
        seen.add(agent_id)
        unknown = [s for s in item.get("skills") or [] if s not in skills]
        if unknown:
            c.fail(path + ("skills",), f"unknown skill(s) {', '.join(map(str, unknown))} "
                   f"(queues' skills: {', '.join(sorted(skills)) or 'none'})")
        shift = _window(c, path + ("shift",), item.get("shift") or "00:00-24:00")
        if shift is not None:
            out.append(AgentSpec(agent_id, item.get("name") or agent_id, frozenset(item.get("skills") or ()),
                                 shift))
    return tuple(out)


def _priorities(c: Checker, data: Any, brands: set[str]) -> tuple[int, dict, dict]:
    if not c.fields(("priority",), data, {"vip": (int, False), "grades": (dict, False), "brands": (dict, False)}):
        return 0, {}, {}
    grades, by_brand = data.get("grades") or {}, data.get("brands") or {}
    for name, table in (("grades", grades), ("brands", by_brand)):
        for key, value in table.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                c.fail(("priority", name, key), "a priority is an integer 0..100")
    for brand in by_brand:
        if brand not in brands:
            c.fail(("priority", "brands", brand), f"unknown brand '{brand}'")
    return int(data.get("vip") or 0), dict(grades), dict(by_brand)


def _busy(c: Checker, data: Any) -> tuple[tuple[tuple[int, int], ...], float]:
    if not c.fields(("busy_hours",), data, {"windows": (list, True), "expected_wait_s": ((int, float), True)}):
        return (), 0.0
    windows = [_window(c, ("busy_hours", "windows", i), w) for i, w in enumerate(data["windows"])]
    if data["expected_wait_s"] < 0:
        c.fail(("busy_hours", "expected_wait_s"), "expected_wait_s must not be negative")
    return tuple(w for w in windows if w), float(data["expected_wait_s"])


def _guidance(c: Checker, data: Any, brands: set[str]) -> dict[str, jinja2.Template]:
    if not isinstance(data, dict) or "default" not in data:
        c.fail(("guidance_sms",), "expected a mapping brand -> text with a 'default' text")
        return {}
    out = {}
    for brand, text in data.items():
        if brand != "default" and brand not in brands:
            c.fail(("guidance_sms", brand), f"unknown brand '{brand}' (segments.yaml: {', '.join(sorted(brands))})")
        template = _template(c, ("guidance_sms", brand), text, SMS_VARS["guidance"])
        if template is not None:
            out[str(brand)] = template
    return out


SETUP_FIELDS = {"sms_source": ((str, int), True), "queues": (dict, True), "priority": (dict, False),
                "agents": (list, True), "busy_hours": (dict, True), "guidance_sms": (dict, True),
                "balance_sms": (str, True), "survey": (dict, True)}


def parse_setup(doc: Doc | None, parsed: Parsed) -> tuple[IvrSetup | None, list[Problem]]:
    """Validate ivr.yaml (brands are checked against segments.yaml)."""
    if doc is None or doc.data is None:
        return None, []
    c = Checker(doc)
    if not c.fields((), doc.data, SETUP_FIELDS):
        return None, c.problems
    data = doc.data
    segments = parsed.get("offers.segments")
    brands = set(segments.brands) if segments is not None else set()
    source = str(data["sms_source"])
    if not source.isdigit() or len(source) > 20:
        c.fail(("sms_source",), "sms_source is a service number of 1-20 digits")
    queues = {}
    for name, spec in data["queues"].items():
        if c.fields(("queues", name), spec, {"skill": (str, False)}):
            queues[str(name)] = spec.get("skill")
    if not queues:
        c.fail(("queues",), "at least one queue")
    agents = _agents(c, data["agents"], {s for s in queues.values() if s})
    vip, grades, by_brand = _priorities(c, data.get("priority") or {}, brands)
    windows, expected = _busy(c, data["busy_hours"])
    guidance = _guidance(c, data["guidance_sms"], brands)
    balance = _template(c, ("balance_sms",), data["balance_sms"], SMS_VARS["balance_sms"])
    survey = {}
    if c.fields(("survey",), data["survey"], {"sms": (str, True), "thanks": (str, True), "invalid": (str, True)}):
        survey = {k: _template(c, ("survey", k), data["survey"][k], SMS_VARS[f"survey.{k}"])
                  for k in ("sms", "thanks", "invalid")}
    if c.problems:
        return None, c.problems
    return IvrSetup(source, queues, vip, grades, by_brand, agents, windows, expected, guidance, balance,
                    survey["sms"], survey["thanks"], survey["invalid"]), []


def parse_menu_file(doc: Doc | None, parsed: Parsed) -> tuple[IvrMenus | None, list[Problem]]:
    if doc is None or doc.data is None:
        return None, []
    if parsed.get("ivr.setup") is None:
        return None, [Problem(doc.file, 1, "ivr_menus.yaml needs a valid ivr.yaml (queues, agents, SMS texts)")]
    return parse_menus(doc, parsed)


SECTIONS: list[Section] = [
    Section("ivr.setup", "ivr.yaml", parse_setup, required=False),
    Section("ivr.menus", "ivr_menus.yaml", parse_menu_file, required=False),
]


def build_config(parsed: Parsed) -> IvrConfig | None:
    """The IVR's runtime config of a parsed fixture set; None when the set has no IVR files."""
    setup, menus = parsed.get("ivr.setup"), parsed.get("ivr.menus")
    if setup is None or menus is None:
        return None
    return IvrConfig(setup, menus)
