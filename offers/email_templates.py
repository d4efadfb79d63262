"""Email templates from fixtures (``email_templates.yaml``): subject, text and HTML, checked at load.

``reply`` wraps every router reply sent by email (variables ``command`` and ``reply``); every
other template is one agents may send (``POST /api/email``) and declares its own ``vars``.
Subject and text render without escaping; the HTML renders with autoescape on, so a value can
never inject markup. All templates may also use ``msisdn``, ``name`` and ``brand_name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jinja2

from core.fixtures import Doc, Parsed, Problem, Section, check_fields
from core.templates import compile_template, render

BASE_VARS = ("msisdn", "name", "brand_name")
REPLY_VARS = ("command", "reply")
FIELDS = {"subject": (str, True), "text": (str, True), "html": (str, True), "vars": (list, False)}


@dataclass(frozen=True)
class EmailTemplate:
    name: str
    variables: frozenset[str]
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template

    def render(self, **variables: Any) -> tuple[str, str, str]:
        """``(subject, text, html)``; raises TemplateRenderError when a variable is missing or bad."""
        return (render(self.subject, **variables).replace("\n", " "), render(self.text, **variables),
                render(self.html, **variables))


def parse_templates(doc: Doc | None, parsed: Parsed) -> tuple[Mapping[str, EmailTemplate] | None, list[Problem]]:
    if doc is None:
        return None, []
    data = doc.data.get("templates") if isinstance(doc.data, dict) else None
    if not isinstance(data, dict) or "reply" not in data:
        return None, [doc.problem(("templates",), "expected a 'templates:' mapping with at least 'reply'")]
    out, problems = {}, []
    for name, item in data.items():
        path = ("templates", name)
        found = check_fields(doc, path, item, FIELDS)
        if found:
            problems += found
            continue
        declared = REPLY_VARS if name == "reply" else tuple(str(v) for v in item.get("vars") or ())
        allowed = (*BASE_VARS, *declared)
        compiled = {}
        for part in ("subject", "text", "html"):
            template, found = compile_template(item[part], allowed, doc.file, doc.line(*path, part),
                                               html=part == "html", path=f"templates.{name}.{part}")
            problems += found
            compiled[part] = template
        if all(compiled.values()):
            out[name] = EmailTemplate(name, frozenset(declared), compiled["subject"], compiled["text"],
                                      compiled["html"])
    return (None, problems) if problems else (MappingProxyType(out), [])


SECTION = Section("email.templates", "email_templates.yaml", parse_templates, None, required=False)
