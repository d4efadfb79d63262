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
    for item in result.get("offers") or result.get("decisions") or []:
        reasons = item.get("reasons") or []
        table.add_row(str(item.get("rank") or ""), str(item.get("code")), str(item.get("name", "")),
                      "yes" if item.get("included") else "no", _fmt(item.get("score")),
                      "; ".join(str(r) for r in reasons))
    console.print(table)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))
