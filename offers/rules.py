"""Conditions from fixtures: ``rule-engine`` expressions, type-checked against :mod:`offers.schema`.

A condition compiles once, when its fixture loads; an unknown attribute, a type
error (``brand > 3``, ``brand == 3``), a syntax error or a non-boolean result is a
:class:`~core.fixtures.Problem` with the fixture's file and line. Nothing is
ever passed to ``eval``: rule-engine parses its own small language.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import rule_engine
import rule_engine.ast as ast

from core.fixtures import Problem
from offers import schema

MAX_RULE_CHARS = 2000


@dataclass(frozen=True)
class Condition:
    """A compiled condition; ``text`` is what ops wrote.

    ``matches`` runs a closure compiled from rule-engine's own syntax tree (about ten times
    faster than walking the tree per call); a node type the closure compiler does not know,
    or a value it cannot compare (a null), falls back to rule-engine itself, so the answer is
    always rule-engine's.
    """

    text: str
    rule: rule_engine.Rule
    fast: Callable[[Mapping[str, Any]], Any] | None = field(default=None, compare=False, repr=False)

    def matches(self, facts: Mapping[str, Any]) -> bool:
        if self.fast is not None:
            try:
                return bool(self.fast(facts))
            except (TypeError, KeyError):
                pass
        return bool(self.rule.matches(facts))


_COMPARE = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge, "lt": operator.lt,
            "le": operator.le}


class _Unsupported(Exception):
    pass


def _literal(node: Any) -> Any:
    if isinstance(node, ast.SetExpression):
        return frozenset(_literal(v) for v in node.value)
    if isinstance(node, ast.ArrayExpression):
        return tuple(_literal(v) for v in node.value)
    if isinstance(node, ast.FloatExpression):
        return float(node.value)
    if isinstance(node, (ast.StringExpression, ast.BooleanExpression)):
        return node.value
    raise _Unsupported(type(node).__name__)


def _none_guard(op):
    # rule-engine compares null only for (in)equality; anything else is an error there too: fall back.
    def compare(a, b):
        if (a is None or b is None) and op not in (operator.eq, operator.ne):
            raise TypeError("null in an ordering comparison")
        return op(a, b)
    return compare


def compile_fast(node: Any) -> Callable[[Mapping[str, Any]], Any]:
    """A Python closure for a rule-engine expression tree; raises _Unsupported for other node types."""
    if isinstance(node, ast.SymbolExpression) and node.scope is None:
        name = node.name
        return lambda f: f[name]
    if isinstance(node, ast.LiteralExpressionBase):
        value = _literal(node)
        return lambda f: value
    if isinstance(node, ast.LogicExpression):
        left, right = compile_fast(node.left), compile_fast(node.right)
        if node.type == "and":
            return lambda f: bool(left(f)) and bool(right(f))
        return lambda f: bool(left(f)) or bool(right(f))
    if isinstance(node, ast.UnaryExpression) and node.type == "not":
        inner = compile_fast(node.right)
        return lambda f: not inner(f)
    if type(node) in (ast.ComparisonExpression, ast.ArithmeticComparisonExpression):
        op, left, right = _none_guard(_COMPARE[node.type]), compile_fast(node.left), compile_fast(node.right)
        return lambda f: op(left(f), right(f))
    if isinstance(node, ast.ContainsExpression):
        member, container = compile_fast(node.member), compile_fast(node.container)
        return lambda f: member(f) in container(f)
    raise _Unsupported(type(node).__name__)


def _fast_or_none(rule: rule_engine.Rule) -> Callable[[Mapping[str, Any]], Any] | None:
    try:
        return compile_fast(rule.statement.expression)
    except (_Unsupported, KeyError):
        return None


def compile_condition(text: Any, file: str, line: int | None, path: str = "") -> tuple[Condition | None,
                                                                                       list[Problem]]:
    """Compile one condition; returns ``(condition, [])`` or ``(None, problems)``."""
    def problem(reason: str) -> tuple[None, list[Problem]]:
        return None, [Problem(file, line, reason, path)]

    if not isinstance(text, str) or not text.strip():
        return problem("expected a non-empty rule expression (text)")
    if len(text) > MAX_RULE_CHARS:
        return problem(f"rule longer than {MAX_RULE_CHARS} characters")
    try:
        rule = rule_engine.Rule(text, context=schema.context())
    except rule_engine.errors.SymbolResolutionError as exc:
        return problem(_unknown(exc.symbol_name))
    except rule_engine.errors.RuleSyntaxError as exc:
        return problem(f"rule syntax error: {exc.message} in {text!r}")
    except rule_engine.errors.EngineError as exc:
        return problem(f"rule type error: {exc.message} in {text!r}")
    mismatch = _equality_mismatch(rule.statement.expression)
    if mismatch:
        return problem(f"rule type error: {mismatch} in {text!r}")
    result = rule.statement.expression.result_type
    if result not in (rule_engine.DataType.BOOLEAN, rule_engine.DataType.UNDEFINED):
        return problem(f"rule must be true/false, but {text!r} is a {result.name}")
    return Condition(text, rule, _fast_or_none(rule)), []


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, schema.SCHEMA, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(schema.SCHEMA))}"
    return f"unknown attribute '{name}'{hint}"


def _equality_mismatch(node: Any) -> str | None:
    """rule-engine allows ``==`` across types (always false); in ops' data that is a mistake."""
    if isinstance(node, ast.ComparisonExpression) and node.type in ("eq", "ne"):
        left, right = node.left.result_type, node.right.result_type
        undefined = rule_engine.DataType.UNDEFINED
        if undefined not in (left, right) and not rule_engine.DataType.is_compatible(left, right):
            return f"compares {left.name} with {right.name}"
    for child in ("left", "right", "expression", "condition", "case_true", "case_false"):
        sub = getattr(node, child, None)
        if isinstance(sub, ast.ExpressionBase):
            found = _equality_mismatch(sub)
            if found:
                return found
    return None
