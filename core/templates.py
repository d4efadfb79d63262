"""Message templates from fixtures: Jinja2, sandboxed, strict, bounded.

- ``ImmutableSandboxedEnvironment``: a template cannot call unsafe attributes or mutate the
  values it is given; ``StrictUndefined``: a missing variable is an error, not "".
- Variables are checked at load: every undeclared name must be among the allowed ones.
- Rendering is bounded: ``range()`` is capped at :data:`MAX_RANGE` items, output at
  :data:`MAX_OUTPUT` characters, and a runaway recursive macro stops with an error.
- SMS text is not autoescaped; the HTML (mail) environment autoescapes.

Notifier's campaign templates use the same two functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from core.fixtures import Problem

MAX_SOURCE = 16 * 1024
MAX_OUTPUT = 8 * 1024
MAX_RANGE = 1000


class TemplateRenderError(Exception):
    """A template failed at render time (missing variable, too long, sandbox violation)."""


def _range(*args: int) -> range:
    out = range(*args)
    if len(out) > MAX_RANGE:
        raise TemplateRenderError(f"range() of more than {MAX_RANGE} items")
    return out


def _yuan(value: Any) -> str:
    """``58.3`` -> ``"58.30"``: money is always written with two decimals."""
    return f"{float(value):.2f}"


def _price(value: Any) -> str:
    """A price without useless decimals: ``10.0`` -> ``"10"``, ``9.9`` -> ``"9.9"``."""
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:.2f}".rstrip("0")


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=autoescape,
                                        keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    env.globals = {"range": _range}
    env.filters["yuan"] = _yuan
    env.filters["price"] = _price
    return env


SMS_ENV = _environment(autoescape=False)
HTML_ENV = _environment(autoescape=True)


def compile_template(text: Any, allowed_vars: Iterable[str], file: str, line: int | None, *,
                     html: bool = False, path: str = "") -> tuple[jinja2.Template | None, list[Problem]]:
    """Compile one template, checking its variables; returns ``(template, [])`` or ``(None, problems)``.
    The template's ``reads`` is the set of variables it refers to."""
    def problem(reason: str, offset: int = 0) -> tuple[None, list[Problem]]:
        return None, [Problem(file, (line + offset) if line is not None else None, reason, path)]

    if not isinstance(text, str):
        return problem("expected template text")
    if len(text) > MAX_SOURCE:
        return problem(f"template longer than {MAX_SOURCE} characters")
    env = HTML_ENV if html else SMS_ENV
    try:
        parsed = env.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return problem(f"template syntax error (template line {exc.lineno}): {exc.message}")
    allowed = set(allowed_vars)
    unknown = sorted(jinja2.meta.find_undeclared_variables(parsed) - allowed - set(env.globals))
    if unknown:
        return problem(f"unknown template variable(s) {', '.join(unknown)}; allowed: "
                       f"{', '.join(sorted(allowed)) or '(none)'}")
    template = env.from_string(text)
    # the variables it reads: a caller may memoise renders keyed on these alone (offers/shelf.py)
    template.reads = frozenset(jinja2.meta.find_undeclared_variables(parsed))
    return template, []


def render(template: jinja2.Template, **variables: Any) -> str:
    """Render with the output bounded; raises :class:`TemplateRenderError` on any failure."""
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateRenderError(f"template output longer than {MAX_OUTPUT} characters")
            out.append(chunk)
    except TemplateRenderError:
        raise
    except (jinja2.UndefinedError, SecurityError, TypeError, ValueError, RecursionError) as exc:
        raise TemplateRenderError(f"template failed: {exc}") from exc
    return "".join(out).strip()
