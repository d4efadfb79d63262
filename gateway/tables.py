"""Readable terminal tables (rich) for command output."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_explain(result: dict[str, Any]) -> None:
    console = Console()
    segments = result.get("segments") or {}
    if segments:
        console.print(f"[bold]{result.get('msisdn')}[/bold] segments:")
        for name, value in segments.items():
            console.print(f"  {name}: {value}")
    table = Table(title="offers: in or out, and why")
    for column in ("rank", "code", "name", "in", "score", "reasons"):
        table.add_column(column)
    for item in result.get("decisions") or result.get("offers") or []:
        reasons = item.get("reasons") or []
        table.add_row(str(item.get("rank") or ""), str(item.get("code")), str(item.get("name", "")),
                      "yes" if item.get("included") else "no", _fmt(item.get("score")),
                      "; ".join(str(r) for r in reasons))
    console.print(table)
    _print_learning(console, result.get("learning"))


def _print_learning(console: Console, learning: dict[str, Any] | None) -> None:
    """The learned term: the subscriber's arm and, per offer, the evidence behind the factor."""
    if not learning:
        return
    console.print(f"learned ranking: arm [bold]{learning['arm']}[/bold], segment {learning['segment']}, "
                  f"frozen {learning['frozen']}, holdout share {learning['holdout_share']:g}")
    if learning.get("why"):
        console.print(f"  {learning['why']}")
    table = Table(title="learned term per offer (Beta posterior of conversion, Thompson draw)")
    for column in ("code", "shown", "confirmed", "prior", "posterior", "draw", "factor"):
        table.add_column(column)
    for code, ev in (learning.get("evidence") or {}).items():
        if ev is not None:
            table.add_row(code, str(ev["exposures"]), str(ev["conversions"]), f"{ev['prior_mean']:.2%}",
                          f"{ev['posterior_mean']:.2%}", f"{ev['draw']:.2%}", f"x{ev['factor']:.3f}")
    if learning.get("evidence"):
        console.print(table)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))
