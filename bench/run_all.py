"""``make bench``: every benchmark, one table, each figure beside its ceiling from the same run.

Runs each benchmark as its own process (bounded in count and time) and reads
the JSON object each prints last. ``--quick`` uses small counts (minutes, not
an hour). The table is printed and written to bench/out/summary.json and
bench/out/summary.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import OUT, ROOT

PY = sys.executable


@dataclass
class Bench:
    name: str
    full: list[str]
    quick: list[str]
    rows: Callable[[dict], list[tuple[str, str, str, str]]]  # (figure, ours, ceiling, target)
    timeout: float


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _smpp_rows(d: dict) -> list[tuple[str, str, str, str]]:
    pop, runs = d.get("population", 0), d.get("runs") or {}
    paced, over = runs.get("paced_80") or {}, runs.get("overload_2x") or {}
    return [
        (f'"200" round trips/s (pop {pop:,}, {d.get("workers", 1)} worker(s))', _fmt(d.get("round_trips_per_s")),
         _fmt(d.get("null_round_trips_per_s")), ">= 3,000/s"),
        ("  p50 / p99 latency ms", f"{_fmt(d.get('round_trip_p50_ms'))} / {_fmt(d.get('round_trip_p99_ms'))}",
         "", "p99 <= 50 ms"),
        ("  paced at 80 %: p99 ms", _fmt(paced.get("p99_ms")), "", "<= 20 ms"),
        ("  overload 2x: p99 ms, lost, refused",
         f"{_fmt(over.get('p99_ms'))}, {_fmt(over.get('replies_missing'))}, {_fmt(over.get('refused'))}", "",
         "<= 1 s, 0 lost"),
        ("accepted submit_sm/s", _fmt(d.get("submit_per_s")), _fmt(d.get("null_submit_per_s")), ">= 20,000/s"),
        ("gateway RSS MB (peak)", _fmt((d.get("rss_mb") or {}).get("peak")), "", "<= 300 MB at 1M"),
    ]


def _ussd_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [("USSD sessions/s (p99 ms)", f"{_fmt(d.get('sessions_per_s'))} ({_fmt(d.get('p99_ms'))})", "",
             ">= 1,000/s")]


def _upstream_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [("upstream submit_sm/s", _fmt(d.get("submit_per_s")), _fmt(d.get("load_client_submit_per_s")),
             ">= 5,000/s")]


def _sip_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [("SIP calls/s, zero failures", _fmt(d.get("sip_best_cps")), "", ">= 500/s"),
            ("queue sim: day of 200 agents (s)", _fmt(d.get("queue_day_200_agents_s")), "", "<= 5 s")]


def _outbound_sip_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [("outbound SIP calls/s completed (failed)", f"{_fmt(d.get('completed_per_s'))} ({_fmt(d.get('failed'))})",
             "", ">= 200/s, 0 failed"),
            ("  setup p50 / p99 ms", f"{_fmt(d.get('setup_p50_ms'))} / {_fmt(d.get('setup_p99_ms'))}", "", "")]


def _campaign_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [(f"campaign plan, {d.get('subscribers', 0):,} subscribers (s)", _fmt(d.get("seconds")), "",
             "<= 60 s at 1M"),
            ("  plan peak RSS MB", _fmt(d.get("peak_rss_mb")), "", "")]


def _outbound_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [(f"outbound day, {d.get('agents')} agents x {d.get('targets', 0):,} targets (s)", _fmt(d.get("elapsed_s")),
             _fmt(d.get("cpu_s")), "<= 10 s"),
            ("  predictive abandoned-call rate", _fmt(d.get("abandon_rate")), "", "<= 0.03"),
            ("  agent occupancy", _fmt(d.get("occupancy")), "", ">= 0.80")]


def _market_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [(f"market: learned vs fixed lift, day {d.get('days')}", _fmt(d.get("lift_last_day")), "", ">= 0.15"),
            ("  worst day's lift", _fmt(d.get("worst_day_lift")), "", ">= -0.05"),
            (f"  {d.get('population', 0):,} subscribers x {d.get('days')} days (s)", _fmt(d.get("seconds")), "",
             "<= 60 s")]


def _workers_rows(d: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, key in (("SQLite, 1 worker", "sqlite_1_worker"), ("SQLite, 2 workers", "sqlite_2_workers"),
                       ("PostgreSQL, 2 workers", "postgres_2_workers")):
        r = d.get(key) or {}
        rows.append((f'"200" round trips/s, {label} (p99 ms)',
                     f"{_fmt(r.get('round_trips_per_s'))} ({_fmt(r.get('p99_ms'))})",
                     _fmt(d.get("null_round_trips_per_s")), ""))
    rows.append(("  2 workers / 1 worker", _fmt(d.get("two_vs_one"), "x"), "", ">= 1.7x"))
    rows.append(("  same, CPU-bound capacity (cores / CPU per reply)", _fmt(d.get("cpu_capacity_two_vs_one"), "x"),
                 "", ""))
    return rows


def benches(quick: bool) -> list[Bench]:
    m = [PY, "-m"]
    return [
        Bench("smpp", m + ["bench.bench_smpp", "--count", "20000", "--profile"],
              m + ["bench.bench_smpp", "--count", "4000", "--submit-count", "4000"],
              _smpp_rows, 900),
        Bench("ussd", m + ["bench.bench_ussd"], m + ["bench.bench_ussd", "--sessions", "2000"], _ussd_rows, 600),
        Bench("upstream", m + ["bench.bench_upstream"], m + ["bench.bench_upstream", "--count", "5000"],
              _upstream_rows, 600),
        Bench("sip", m + ["bench.bench_sip"], m + ["bench.bench_sip", "--quick"], _sip_rows, 1800),
        Bench("outbound_sip", m + ["bench.bench_outbound_sip"], m + ["bench.bench_outbound_sip", "--quick"],
              _outbound_sip_rows, 600),
        Bench("workers", m + ["bench.bench_workers", "--count", "20000"],
              m + ["bench.bench_workers", "--count", "4000"], _workers_rows, 1800),
        Bench("campaign", m + ["bench.bench_campaign", "--size", "1000000"],
              m + ["bench.bench_campaign", "--size", "50000"], _campaign_rows, 1800),
        Bench("outbound", m + ["bench.bench_outbound"], m + ["bench.bench_outbound", "--targets", "10000",
                                                              "--agents", "20"], _outbound_rows, 600),
        Bench("market", m + ["bench.bench_market"], m + ["bench.bench_market", "--population", "20000"],
              _market_rows, 600),
    ]


def run_one(bench: Bench, quick: bool) -> dict:
    cmd = bench.quick if quick else bench.full
    if not (ROOT / "bench" / f"{cmd[2].split('.')[-1]}.py").exists():
        return {"error": "benchmark not present"}
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {bench.timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    result = json.loads(lines[-1])
    result["_seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="names: smpp ussd upstream sip outbound_sip campaign outbound market workers")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    rows: list[tuple[str, str, str, str]] = []
    for bench in benches(args.quick):
        if args.only and bench.name not in args.only:
            continue
        print(f"bench: running {bench.name} ...", file=sys.stderr, flush=True)
        result = run_one(bench, args.quick)
        results[bench.name] = result
        if "error" in result:
            rows.append((bench.name, "error", "", result["error"][:80]))
        else:
            rows.extend(bench.rows(result.get("summary", result)))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    md = ["| figure | gateway | ceiling (same run) | target |", "|---|---|---|---|"]
    md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    (OUT / "summary.md").write_text("\n".join(md) + "\n")
    from rich.console import Console
    from rich.table import Table

    table = Table(title="benchmarks" + (" (quick)" if args.quick else ""))
    for column in ("figure", "gateway", "ceiling (same run)", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)
    print(f"written: {Path(OUT / 'summary.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
