"""Fixture sections of the messaging core: config.yaml, accounts.yaml, ops_tokens.yaml."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from sqlalchemy import delete

from core.fixtures import Doc, Parsed, Problem, Section, check_fields, require_list, require_mapping
from core.settings import SettingsError, coerce
from notifier.models import Account, OpsToken

BIND_TYPES = ("tx", "rx", "trx")
SYSTEM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def parse_config(doc: Doc | None, _parsed: Parsed) -> tuple[dict[str, Any], list[Problem]]:
    if doc is None or doc.data is None:
        return {}, []
    settings, problems = require_mapping(doc, ("settings",))
    if settings is None:
        return {}, problems
    out = {}
    for key, raw in settings.items():
        try:
            out[key] = coerce(str(key), raw)
        except SettingsError as exc:
            problems.append(doc.problem(("settings", key), str(exc)))
    return out, problems


ACCOUNT_DEFAULTS = {"max_binds": 4, "rate": 500.0, "source_ranges": [], "ip_allow": [],
                    "receives_service_sms": False}
ACCOUNT_FIELDS = {
    "system_id": (str, True), "password_hash": (str, True), "bind_types": (list, True),
    "max_binds": (int, False), "rate": ((int, float), False), "source_ranges": (list, False),
    "ip_allow": (list, False), "receives_service_sms": (bool, False),
}


def _account_problems(doc: Doc, path: tuple, item: dict) -> list[Problem]:
    problems = []
    if not SYSTEM_ID.match(str(item["system_id"])):
        problems.append(doc.problem(path + ("system_id",), "system_id must be 1-15 of A-Z a-z 0-9 _ . -"))
    if not str(item["password_hash"]).startswith("scrypt$") or item["password_hash"].count("$") != 5:
        problems.append(doc.problem(path + ("password_hash",),
                                    "expected an scrypt hash (run_gateway.py hash-password PASSWORD)"))
    bad = [b for b in item["bind_types"] if b not in BIND_TYPES]
    if bad or not item["bind_types"]:
        problems.append(doc.problem(path + ("bind_types",), f"bind types must be among {', '.join(BIND_TYPES)}"))
    if not 1 <= int(item["max_binds"]) <= 1000:
        problems.append(doc.problem(path + ("max_binds",), "max_binds must be 1..1000"))
    if not 0 < float(item["rate"]) <= 100000:
        problems.append(doc.problem(path + ("rate",), "rate must be > 0 and <= 100000 msg/s"))
    for i, pattern in enumerate(item["source_ranges"]):
        try:
            re.compile(str(pattern))
        except re.error as exc:
            problems.append(doc.problem(path + ("source_ranges", i), f"invalid regular expression: {exc}"))
    for i, net in enumerate(item["ip_allow"]):
        try:
            ipaddress.ip_network(str(net), strict=False)
        except ValueError as exc:
            problems.append(doc.problem(path + ("ip_allow", i), f"invalid network: {exc}"))
    return problems


def parse_accounts(doc: Doc | None, _parsed: Parsed) -> tuple[list[dict], list[Problem]]:
    items, problems = require_list(doc, "accounts")
    if items is None:
        return [], problems
    seen = set()
    out = []
    for i, item in enumerate(items):
        path = ("accounts", i)
        found = check_fields(doc, path, item, ACCOUNT_FIELDS)
        if not found:
            # one normalised form (defaults filled in) for validation, loading and the snapshot
            item = {**ACCOUNT_DEFAULTS, **{k: v for k, v in item.items() if v is not None}}
            item["max_binds"], item["rate"] = int(item["max_binds"]), float(item["rate"])
            item["receives_service_sms"] = bool(item["receives_service_sms"])
            found = _account_problems(doc, path, item)
            if item["system_id"] in seen:
                found.append(doc.problem(path + ("system_id",), f"duplicate system_id {item['system_id']!r}"))
            seen.add(item["system_id"])
        problems.extend(found)
        if not found:
            out.append(item)
    return out, problems


def load_accounts(session, accounts: list[dict], _parsed: Parsed) -> int:
    session.execute(delete(Account))
    for item in accounts:
        session.add(Account(
            system_id=item["system_id"], password_hash=item["password_hash"], bind_types=list(item["bind_types"]),
            max_binds=item["max_binds"], rate=item["rate"], source_ranges=list(item["source_ranges"]),
            ip_allow=list(item["ip_allow"]), receives_service_sms=int(item["receives_service_sms"])))
    return len(accounts)


TOKEN_FIELDS = {"name": (str, True), "token_sha256": (str, True), "scopes": (list, False)}


def parse_tokens(doc: Doc | None, _parsed: Parsed) -> tuple[list[dict], list[Problem]]:
    if doc is None:
        return [], []
    items, problems = require_list(doc, "tokens")
    if items is None:
        return [], problems
    out = []
    for i, item in enumerate(items):
        found = check_fields(doc, ("tokens", i), item, TOKEN_FIELDS)
        if not found and not re.fullmatch(r"[0-9a-f]{64}", item["token_sha256"]):
            found.append(doc.problem(("tokens", i, "token_sha256"),
                                     "expected 64 lowercase hex digits (run_gateway.py hash-token TOKEN)"))
        problems.extend(found)
        if not found:
            out.append(item)
    return out, problems


def load_tokens(session, tokens: list[dict], _parsed: Parsed) -> int:
    session.execute(delete(OpsToken))
    for item in tokens:
        session.add(OpsToken(name=item["name"], token_sha256=item["token_sha256"],
                             scopes=list(item.get("scopes") or ["write"])))
    return len(tokens)


SECTIONS = [
    Section("config", "config.yaml", parse_config, None, required=False),
    Section("accounts", "accounts.yaml", parse_accounts, load_accounts),
    Section("ops_tokens", "ops_tokens.yaml", parse_tokens, load_tokens, required=False),
]
