"""USSD menus from fixtures (``ussd_menus.yaml``): which screens ``*200#`` opens, validated at load.

A menu is data, like the SMS keywords: each item of a menu is a key the caller
types, a label, and one action:

- ``menu``: open the nested ``items`` (with their own ``title``);
- ``offers``: the caller's offer shelf, the same one the ``200`` SMS shows, paged;
  picking an offer orders it through the router (``KT<code>``) and keeps its
  second confirmation (``Y``);
- ``command``: run a router command (``CXYE``, ``0000``, ``TD`` ...) and show its reply
  as the last screen.

Navigation keys (back, home, more) and the fixed texts of the screens are data
too. Commands are checked against the keyword table, so a menu can never point
at a command the router would answer with the help text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jinja2

from core.fixtures import Doc, Parsed, Problem, Section, check_fields
from core.templates import compile_template
from offers.catalog import KeywordTable, normalize

ACTIONS = ("menu", "offers", "command")
MAX_DEPTH = 4
MAX_ITEMS = 9
MAX_LABEL = 40
_KEY = re.compile(r"^[0-9]{1,2}$")
NAV_KEYS = ("back", "home", "more")
TEXT_KEYS = {
    "more": "the paging hint, e.g. '98.更多'",
    "back": "the back hint, e.g. '0.返回'",
    "offers_title": "heading of the offers screen",
    "offers_empty": "last screen when the caller has no offers",
    "confirm_hint": "the options under an order's confirmation prompt, e.g. '1.确认 0.返回'",
    "invalid": "line shown above a screen when the input matched nothing",
    "timeout": "last screen of a session idle too long",
    "unknown_code": "last screen for a USSD string no menu serves",
    "not_subscriber": "last screen for a caller who is not a subscriber",
}
OFFER_LINE_VARS = ("rank", "code", "name", "price", "order")


@dataclass(frozen=True)
class MenuItem:
    key: str
    label: str
    action: str  # menu | offers | command
    command: str = ""
    title: str = ""
    items: tuple[MenuItem, ...] = ()


@dataclass(frozen=True)
class Menu:
    code: str
    title: str
    items: tuple[MenuItem, ...]


@dataclass(frozen=True)
class NavKeys:
    back: str
    home: str
    more: str


@dataclass(frozen=True)
class UssdBook:
    menus: Mapping[str, Menu]  # normalized USSD string or alias -> menu
    keys: NavKeys
    confirm_keys: frozenset[str]  # normalized answers that confirm an order (besides the router's Y)
    texts: Mapping[str, str]
    offer_line: jinja2.Template

    def menu_for(self, text: str) -> Menu | None:
        """The menu a USSD string (``*200#``, ``200``) opens, or None."""
        return self.menus.get(normalize(text))


# --- parsing ----------------------------------------------------------------------------------------

TOP_FIELDS = {"keys": (dict, True), "confirm_keys": (list, False), "texts": (dict, True),
              "offer_line": (str, True), "menus": (list, True)}
MENU_FIELDS = {"code": (str, True), "aliases": (list, False), "title": (str, True), "items": (list, True)}
ITEM_FIELDS = {"key": (str, True), "label": (str, True), "action": (str, True), "command": (str, False),
               "title": (str, False), "items": (list, False)}


def parse_menus(doc: Doc | None, parsed: Parsed) -> tuple[UssdBook | None, list[Problem]]:
    if doc is None:
        return None, []
    if not isinstance(doc.data, dict):
        return None, [doc.problem((), "expected a mapping with keys, texts, offer_line and menus")]
    problems = check_fields(doc, (), doc.data, TOP_FIELDS)
    if problems:
        return None, problems
    data = doc.data
    keys, found = _nav_keys(doc, data["keys"])
    problems += found
    texts, found = _texts(doc, data["texts"])
    problems += found
    offer_line, found = compile_template(data["offer_line"], OFFER_LINE_VARS, doc.file, doc.line("offer_line"),
                                         path="offer_line")
    problems += found
    keywords = parsed.get("offers.keywords")
    menus: dict[str, Menu] = {}
    for i, raw in enumerate(data["menus"]):
        menu, found = _menu(doc, ("menus", i), raw, keys, keywords)
        problems += found
        if menu is None:
            continue
        aliases = raw.get("aliases") or []
        for name in [menu.code, *aliases]:
            if not isinstance(name, str) or not name.strip():
                problems.append(doc.problem(("menus", i, "aliases"), "aliases must be non-empty strings"))
            elif normalize(name) in menus:
                problems.append(doc.problem(("menus", i), f"USSD string {name!r} is served by two menus"))
            else:
                menus[normalize(name)] = menu
    confirm = [str(k) for k in data.get("confirm_keys") or ["1"]]
    if problems:
        return None, problems
    return UssdBook(MappingProxyType(menus), keys, frozenset(normalize(k) for k in confirm),
                    MappingProxyType(texts), offer_line), []


def _nav_keys(doc: Doc, raw: dict) -> tuple[NavKeys, list[Problem]]:
    spec = {name: (str, True) for name in NAV_KEYS}
    problems = check_fields(doc, ("keys",), raw, spec)
    if problems:
        return NavKeys("0", "00", "98"), problems
    values = [raw[name] for name in NAV_KEYS]
    if len(set(values)) != len(values):
        problems.append(doc.problem(("keys",), "back, home and more must be different keys"))
    for name in NAV_KEYS:
        if not _KEY.match(raw[name]) and raw[name] not in ("*", "#"):
            problems.append(doc.problem(("keys", name), "a navigation key is 1-2 digits, '*' or '#'"))
    return NavKeys(raw["back"], raw["home"], raw["more"]), problems


def _texts(doc: Doc, raw: dict) -> tuple[dict[str, str], list[Problem]]:
    problems = []
    for key in TEXT_KEYS:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(doc.problem(("texts",), f"missing text '{key}': {TEXT_KEYS[key]}"))
    for key in raw:
        if key not in TEXT_KEYS:
            problems.append(doc.problem(("texts", key), f"unknown text '{key}' (known: {', '.join(TEXT_KEYS)})"))
    return {k: str(v).strip() for k, v in raw.items() if k in TEXT_KEYS and isinstance(v, str)}, problems


def _menu(doc: Doc, path: tuple, raw: Any, keys: NavKeys,
          keywords: KeywordTable | None) -> tuple[Menu | None, list[Problem]]:
    problems = check_fields(doc, path, raw, MENU_FIELDS)
    if problems:
        return None, problems
    items, problems = _items(doc, path + ("items",), raw["items"], keys, keywords, 1)
    return Menu(raw["code"], raw["title"], items), problems


def _items(doc: Doc, path: tuple, raw: list, keys: NavKeys, keywords: KeywordTable | None,
           depth: int) -> tuple[tuple[MenuItem, ...], list[Problem]]:
    if not raw or len(raw) > MAX_ITEMS:
        return (), [doc.problem(path, f"a menu holds 1 to {MAX_ITEMS} items")]
    if depth > MAX_DEPTH:
        return (), [doc.problem(path, f"menus nest at most {MAX_DEPTH} deep")]
    items, problems, seen = [], [], set()
    for i, item in enumerate(raw):
        found = check_fields(doc, path + (i,), item, ITEM_FIELDS)
        if found:
            problems += found
            continue
        built, found = _item(doc, path + (i,), item, keys, keywords, depth)
        if item["key"] in seen:
            found.append(doc.problem(path + (i, "key"), f"key {item['key']!r} used twice in this menu"))
        seen.add(item["key"])
        problems += found
        if built is not None and not found:
            items.append(built)
    return tuple(items), problems


def _item(doc: Doc, path: tuple, item: dict, keys: NavKeys, keywords: KeywordTable | None,
          depth: int) -> tuple[MenuItem | None, list[Problem]]:
    key, action = item["key"], item["action"]
    problems = []
    if not _KEY.match(key):
        problems.append(doc.problem(path + ("key",), "a menu key is 1-2 digits"))
    if key in (keys.back, keys.home, keys.more):
        problems.append(doc.problem(path + ("key",), f"key {key!r} is a navigation key (back/home/more)"))
    if len(item["label"]) > MAX_LABEL:
        problems.append(doc.problem(path + ("label",), f"a label is at most {MAX_LABEL} characters"))
    if action not in ACTIONS:
        return None, problems + [doc.problem(path + ("action",), f"unknown action {action!r} "
                                             f"(known: {', '.join(ACTIONS)})")]
    if action == "menu":
        if not item.get("items"):
            return None, problems + [doc.problem(path, "action 'menu' needs its own 'items'")]
        children, found = _items(doc, path + ("items",), item["items"], keys, keywords, depth + 1)
        return MenuItem(key, item["label"], action, title=item.get("title") or item["label"],
                        items=children), problems + found
    if item.get("items"):
        problems.append(doc.problem(path + ("items",), f"only action 'menu' has items, not {action!r}"))
    command = item.get("command") or ""
    if action == "command":
        problems += _check_command(doc, path + ("command",), command, keywords)
    return MenuItem(key, item["label"], action, command=command, title=item.get("title") or item["label"]), problems


def _check_command(doc: Doc, path: tuple, command: str, keywords: KeywordTable | None) -> list[Problem]:
    if not command.strip():
        return [doc.problem(path, "action 'command' needs a router command, e.g. CXYE")]
    if keywords is None:
        return []  # keywords.yaml had its own problems: they are reported there
    match = keywords.match(command)
    if match is None or match[0] == "help":
        return [doc.problem(path, f"{command!r} is not a command of keywords.yaml")]
    return []


SECTION = Section("ussd.menus", "ussd_menus.yaml", parse_menus, None, required=False)
"""Add after the offers sections (it checks commands against ``offers.keywords``)."""
