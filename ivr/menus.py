"""IVR menu trees from ``ivr_menus.yaml``, validated at load like every fixture.

The file holds the shared prompts of the call states, the reprompt limits and, per service
number, either a menu tree (``kind: menu``: a start menu per brand, menus of options) or the
balance line (``kind: balance``: answer, prompt, hang up, balance SMS). Every prompt has a
Chinese and an English text, both Jinja2 templates checked against the variables they may use;
the header ``X-IVR-Prompt`` carries ``"<zh> / <en>"``.

Option actions:

- ``balance``  say the balance (the option's prompt may use ``balance``) and stay in the menu
- ``shelf``    send the offer shelf by SMS (the command router's answer to ``200``) and stay
- ``menu``     go to the submenu ``menu``
- ``agent``    join the agent queue ``queue`` (a name from ivr.yaml's queues)
- ``survey``   rate the caller's last agent call (1-5) on the IVR
- ``hangup``   say goodbye and hang up
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta

from core.fixtures import Doc, Parsed, Problem, check_fields
from core.templates import SMS_ENV, compile_template, render

ACTIONS = ("balance", "shelf", "menu", "agent", "survey", "hangup")
KEYS = frozenset("0123456789*#")
KINDS = ("menu", "balance")
DEFAULT_BRAND = "default"
BASE_VARS = ("msisdn", "brand_name")
SHARED_PROMPTS: dict[str, tuple[str, ...]] = {
    "goodbye": (),
    "not_found": ("number",),
    "queue": ("waiting", "wait_min", "queue"),
    "queue_busy": ("waiting", "wait_min", "queue"),
    "queue_hold": ("waiting", "wait_min", "queue"),
    "agent": ("agent", "queue"),
    "abandoned": (),
    "survey": (),
    "survey_thanks": ("score",),
    "survey_invalid": (),
    "survey_none": (),
}
"""Prompts every menu file must define, with the variables each may use (plus BASE_VARS)."""
OPTION_VARS = {"balance": ("balance",), "shelf": ()}
MAX_MENUS = 200
MAX_PROMPT_CHARS = 400
MAX_CACHED = 1000  # rendered texts kept per prompt


@dataclass(frozen=True)
class Prompt:
    zh: jinja2.Template
    en: jinja2.Template
    uses: tuple[str, ...] = ()  # the variables the two texts use, sorted
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def render(self, **variables: Any) -> str:
        """Both languages on one line: what the X-IVR-Prompt header carries.

        Rendered texts are kept per value of the variables used (most prompts use none, or only
        the brand), so a busy IVR renders each menu once, not once per call."""
        key = tuple(str(variables.get(name)) for name in self.uses)
        text = self._cache.get(key)
        if text is None:
            text = f"{render(self.zh, **variables)} / {render(self.en, **variables)}"
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = text
        return text


@dataclass(frozen=True)
class Option:
    key: str
    action: str
    target: str = ""  # the submenu (menu) or the queue (agent)
    prompt: Prompt | None = None  # said before the menu prompt again (balance, shelf)


@dataclass(frozen=True)
class Menu:
    name: str
    prompt: Prompt
    options: Mapping[str, Option]
    no_input: Prompt
    invalid: Prompt


@dataclass(frozen=True)
class Service:
    number: str
    kind: str  # menu / balance
    start: Mapping[str, str]  # brand (or "default") -> menu name
    menus: Mapping[str, Menu]
    prompt: Prompt | None = None  # the balance line's prompt

    def start_menu(self, brand: str | None) -> Menu:
        return self.menus[self.start.get(brand or DEFAULT_BRAND, self.start[DEFAULT_BRAND])]


@dataclass(frozen=True)
class Limits:
    no_input_s: float
    no_input_max: int
    invalid_max: int


@dataclass(frozen=True)
class IvrMenus:
    limits: Limits
    prompts: Mapping[str, Prompt]
    services: Mapping[str, Service]


# --- validation ------------------------------------------------------------------------------


class Checker:
    """Collects problems for one document; each helper returns None on a problem."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def fail(self, path: tuple, reason: str) -> None:
        self.problems.append(self.doc.problem(path, reason))

    def fields(self, path: tuple, item: Any, spec: Mapping[str, tuple]) -> bool:
        found = check_fields(self.doc, path, item, spec)
        self.problems += found
        return not found

    def prompt(self, path: tuple, item: Any, variables: tuple[str, ...]) -> Prompt | None:
        if not self.fields(path, item, {"zh": (str, True), "en": (str, True)}):
            return None
        out = {}
        for lang in ("zh", "en"):
            text = item[lang]
            if len(text) > MAX_PROMPT_CHARS:
                self.fail(path + (lang,), f"prompt longer than {MAX_PROMPT_CHARS} characters")
                continue
            template, found = compile_template(text, (*BASE_VARS, *variables), self.doc.file,
                                               self.doc.line(*path, lang), path=_dotted(path + (lang,)))
            self.problems += found
            out[lang] = template
        if not all(out.get(k) for k in ("zh", "en")):
            return None
        uses = set().union(*(jinja2.meta.find_undeclared_variables(SMS_ENV.parse(item[k])) for k in ("zh", "en")))
        return Prompt(out["zh"], out["en"], tuple(sorted(uses - set(SMS_ENV.globals))))


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _limits(c: Checker, data: Any) -> Limits | None:
    spec = {"no_input_s": ((int, float), True), "no_input_max": (int, True), "invalid_max": (int, True)}
    if not c.fields(("limits",), data, spec):
        return None
    if not 1 <= data["no_input_s"] <= 600:
        c.fail(("limits", "no_input_s"), "no_input_s must be 1..600 seconds")
    for key in ("no_input_max", "invalid_max"):
        if not 0 <= data[key] <= 10:
            c.fail(("limits", key), f"{key} must be 0..10")
    return Limits(float(data["no_input_s"]), data["no_input_max"], data["invalid_max"])


OPTION_FIELDS = {"action": (str, True), "menu": (str, False), "queue": (str, False), "prompt": (dict, False)}


def _option(c: Checker, path: tuple, key: str, item: Any, queues: set[str]) -> Option | None:
    if not c.fields(path, item, OPTION_FIELDS):
        return None
    action = item["action"]
    if action not in ACTIONS:
        c.fail(path + ("action",), f"unknown action '{action}' (known: {', '.join(ACTIONS)})")
        return None
    needs = {"menu": "menu", "agent": "queue"}.get(action)
    for name in ("menu", "queue"):
        if name != needs and item.get(name) is not None:
            c.fail(path + (name,), f"'{name}' does not belong to action '{action}'")
    if needs and not item.get(needs):
        c.fail(path, f"action '{action}' needs '{needs}'")
        return None
    if action == "agent" and item["queue"] not in queues:
        c.fail(path + ("queue",), f"unknown queue '{item['queue']}' (ivr.yaml queues: {', '.join(sorted(queues))})")
    prompt = None
    if action in OPTION_VARS:
        if item.get("prompt") is None:
            c.fail(path, f"action '{action}' needs a prompt (zh, en)")
            return None
        prompt = c.prompt(path + ("prompt",), item["prompt"], OPTION_VARS[action])
    elif item.get("prompt") is not None:
        c.fail(path + ("prompt",), f"action '{action}' says no prompt of its own")
    return Option(key, action, item.get(needs, "") if needs else "", prompt)


MENU_FIELDS = {"prompt": (dict, True), "no_input": (dict, True), "invalid": (dict, True), "options": (dict, True)}


def _menu(c: Checker, path: tuple, name: str, item: Any, queues: set[str]) -> Menu | None:
    if not c.fields(path, item, MENU_FIELDS):
        return None
    prompts = [c.prompt(path + (k,), item[k], ()) for k in ("prompt", "no_input", "invalid")]
    options = {}
    for key, spec in item["options"].items():
        key = str(key)
        if key not in KEYS:
            c.fail(path + ("options", key), "an option key is one of 0-9 * #")
            continue
        option = _option(c, path + ("options", key), key, spec, queues)
        if option is not None:
            options[key] = option
    if not item["options"]:
        c.fail(path + ("options",), "a menu needs at least one option")
    if None in prompts or len(options) != len(item["options"]):
        return None
    return Menu(name, prompts[0], options, prompts[1], prompts[2])


SERVICE_FIELDS = {"kind": (str, True), "start": (dict, False), "menus": (dict, False), "prompt": (dict, False)}


def _service(c: Checker, number: str, item: Any, brands: set[str], queues: set[str]) -> Service | None:
    path = ("services", number)
    if not number.isdigit() or len(number) > 20:
        c.fail(path, "a service number is 1-20 digits")
        return None
    if not c.fields(path, item, SERVICE_FIELDS):
        return None
    if item["kind"] not in KINDS:
        c.fail(path + ("kind",), f"kind must be one of {', '.join(KINDS)}")
        return None
    if item["kind"] == "balance":
        for extra in ("start", "menus"):
            if item.get(extra) is not None:
                c.fail(path + (extra,), f"a balance line has no '{extra}'")
        if item.get("prompt") is None:
            c.fail(path, "a balance line needs a prompt (zh, en)")
            return None
        prompt = c.prompt(path + ("prompt",), item["prompt"], ())
        return Service(number, "balance", {}, {}, prompt) if prompt else None
    return _menu_service(c, path, number, item, brands, queues)


def _menu_service(c: Checker, path: tuple, number: str, item: dict, brands: set[str],
                  queues: set[str]) -> Service | None:
    if item.get("prompt") is not None:
        c.fail(path + ("prompt",), "a menu service's prompts belong to its menus")
    menus_in, start = item.get("menus") or {}, item.get("start") or {}
    if not menus_in or len(menus_in) > MAX_MENUS:
        c.fail(path + ("menus",), f"a menu service needs 1..{MAX_MENUS} menus")
        return None
    menus = {str(n): _menu(c, path + ("menus", n), str(n), m, queues) for n, m in menus_in.items()}
    if DEFAULT_BRAND not in start:
        c.fail(path + ("start",), f"'start' needs a '{DEFAULT_BRAND}' menu (and may name one per brand)")
    for brand, menu in start.items():
        if brand != DEFAULT_BRAND and brand not in brands:
            c.fail(path + ("start", brand), f"unknown brand '{brand}' (segments.yaml: {', '.join(sorted(brands))})")
        if menu not in menus:
            c.fail(path + ("start", brand), f"unknown menu '{menu}'")
    for name, menu in menus.items():
        for key, option in (menu.options.items() if menu else ()):
            if option.action == "menu" and option.target not in menus:
                c.fail(path + ("menus", name, "options", key, "menu"), f"unknown menu '{option.target}'")
    if None in menus.values() or DEFAULT_BRAND not in start:
        return None
    return Service(number, "menu", dict(start), menus)


def parse_menus(doc: Doc | None, parsed: Parsed) -> tuple[IvrMenus | None, list[Problem]]:
    """Validate ivr_menus.yaml; brands come from segments.yaml, queues from ivr.yaml."""
    c = Checker(doc)
    if not c.fields((), doc.data, {"limits": (dict, True), "prompts": (dict, True), "services": (dict, True)}):
        return None, c.problems
    segments = parsed.get("offers.segments")
    brands = set(segments.brands) if segments is not None else set()
    setup = parsed.get("ivr.setup")
    queues = set(setup.queues) if setup is not None else set()
    limits = _limits(c, doc.data["limits"])
    prompts = {}
    for key, variables in SHARED_PROMPTS.items():
        if key not in doc.data["prompts"]:
            c.fail(("prompts",), f"missing prompt '{key}'")
            continue
        prompts[key] = c.prompt(("prompts", key), doc.data["prompts"][key], variables)
    for key in doc.data["prompts"]:
        if key not in SHARED_PROMPTS:
            c.fail(("prompts", key), f"unknown prompt (known: {', '.join(SHARED_PROMPTS)})")
    services = {str(n): _service(c, str(n), item, brands, queues) for n, item in doc.data["services"].items()}
    if not services:
        c.fail(("services",), "no service numbers")
    if c.problems:
        return None, c.problems
    return IvrMenus(limits, prompts, services), []
