"""Worker groups: "200" round trips with 1 and 2 workers on SQLite, and 2 workers on PostgreSQL.

Each run starts ``run_gateway.py serve --workers N`` (demo data, the bench account with its
throttle lifted) and drives it with ../shared/tools/smpp_load.py (4 binds, window 10, replies
counted whole), beside the null-SMSC ceiling measured in the same run. The PostgreSQL run uses
a throwaway cluster (Debian's binaries, as .ci/run) on a free port. Prints a table and writes
bench/out/workers.json and bench/out/workers.svg.

    .venv/bin/python -m bench.bench_workers --count 20000 [--population 100000] [--no-pg]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from bench.common import (
    BENCH_ACCOUNT,
    NullSMSC,
    bench_fixtures,
    group_cpu_s,
    logged_replies,
    run_load,
    settled_logged_replies,
    write_result,
)
from bench.plot import bar_chart_svg


def round_trips(workers: int, count: int, duration: float, population: int, db_url: str | None = None) -> dict:
    from tests.harness import start_gateway

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fixtures = bench_fixtures(workdir)
        gw = start_gateway(workdir, "--fixtures", str(fixtures), "--population", str(population),
                           "--log-format", "json", db_url=db_url, workers=workers)
        try:
            sid, pw = BENCH_ACCOUNT
            cpu_before, logged_before = group_cpu_s(gw.proc.pid), logged_replies(gw.db_url)
            result = run_load(gw.ports["smpp"], count=count, duration=duration, message="200", system_id=sid,
                              password=pw, subscribers=max(100, min(population, 100_000)))
            used = group_cpu_s(gw.proc.pid) - cpu_before
            result["gateway_logged_replies"] = settled_logged_replies(gw.db_url) - logged_before
            result["cpu_ms_per_reply"] = round(1000 * used / result["replies"], 3) if result.get("replies") else None
            # where the parent placed the binds (the last hand-over's counts; none with one worker)
            placed = re.findall(r"to worker \d+ \(SMPP connections per worker: ([^)]*)\)", gw.log_text())
            result["smpp_placement"] = placed[-1] if placed else None
            return result
        finally:
            gw.stop()


def measure(count: int, duration: float, population: int, with_pg: bool) -> dict:
    results: dict = {}
    null = NullSMSC(reply=True)
    try:
        results["null"] = run_load(null.port, count=count, duration=duration, message="200")
    finally:
        null.stop()
    results["sqlite_1"] = round_trips(1, count, duration, population)
    results["sqlite_2"] = round_trips(2, count, duration, population)
    if with_pg:
        from bench.pgcluster import throwaway_postgres

        with throwaway_postgres() as url:
            results["postgres_2"] = round_trips(2, count, duration, population, db_url=url)
    return results


def summarise(results: dict, population: int) -> dict:
    def row(name: str) -> dict | None:
        r = results.get(name)
        if r is None:
            return None
        return {"round_trips_per_s": r["reply_tps"], "p50_ms": r["reply_p50_ms"], "p99_ms": r["reply_p99_ms"],
                "replies_missing": r["replies_missing"], "submit_errors": r["acked_err"],
                "parts_per_reply": round(r["reply_parts"] / r["replies"], 2) if r.get("replies") else None,
                "cpu_ms_per_reply": r.get("cpu_ms_per_reply"),
                "replies": r["replies"], "gateway_logged_replies": r["gateway_logged_replies"],
                "count_matches_log": r["replies"] == r["gateway_logged_replies"],
                "refused": sum(r["acked_err"].values()) if r.get("acked_err") else 0,
                "smpp_placement": r.get("smpp_placement")}

    one, two = row("sqlite_1"), row("sqlite_2")
    scale = round(two["round_trips_per_s"] / one["round_trips_per_s"], 2) if one["round_trips_per_s"] else None
    # What the workers could do with a core each and nobody else on the machine: cores / CPU per reply.
    # On a 2-core machine the load client takes part of the cores the second worker needs, so the
    # measured ratio understates the scaling; this one says whether a second worker adds work per reply.
    cpu1, cpu2 = one.get("cpu_ms_per_reply"), two.get("cpu_ms_per_reply")
    cpu_scale = round(2 * cpu1 / cpu2, 2) if cpu1 and cpu2 else None
    return {"population": population, "null_round_trips_per_s": results["null"]["reply_tps"],
            "sqlite_1_worker": one, "sqlite_2_workers": two, "postgres_2_workers": row("postgres_2"),
            "two_vs_one": scale, "cpu_capacity_two_vs_one": cpu_scale}


def print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f'"200" round trips by worker count (population {summary["population"]:,}; '
                        f'null SMSC {summary["null_round_trips_per_s"]}/s)')
    for column in ("run", "round trips/s", "p50 ms", "p99 ms", "missing", "refused", "parts/reply",
                   "client = gateway log", "CPU ms/reply"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for label, key in (("SQLite, 1 worker", "sqlite_1_worker"), ("SQLite, 2 workers", "sqlite_2_workers"),
                       ("PostgreSQL, 2 workers", "postgres_2_workers")):
        r = summary[key]
        if r is not None:
            table.add_row(label, str(r["round_trips_per_s"]), str(r["p50_ms"]), str(r["p99_ms"]),
                          str(r["replies_missing"]), str(r["refused"]), str(r["parts_per_reply"]),
                          f"{r['replies']} = {r['gateway_logged_replies']}", str(r["cpu_ms_per_reply"]))
    table.caption = (f"2 workers / 1 worker on SQLite: {summary['two_vs_one']}x measured; "
                     f"{summary['cpu_capacity_two_vs_one']}x in CPU-bound capacity (cores / CPU ms per reply: "
                     f"the load client shares this machine's cores)")
    Console(file=sys.stderr).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help='"200"s per run')
    parser.add_argument("--duration", type=float, default=120.0, help="longest a run may take (s)")
    parser.add_argument("--population", type=int, default=0, help="synthetic subscribers beside the 100 demo ones")
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL run")
    args = parser.parse_args(argv)
    summary = summarise(measure(args.count, args.duration, args.population, not args.no_pg), args.population)
    print_table(summary)
    write_result("workers", {"summary": summary})
    bars = [(label, (summary[key] or {}).get("round_trips_per_s") or 0, summary["null_round_trips_per_s"] or 0)
            for label, key in (("SQLite x1", "sqlite_1_worker"), ("SQLite x2", "sqlite_2_workers"),
                               ("PostgreSQL x2", "postgres_2_workers"))]
    out = Path(__file__).resolve().parent / "out" / "workers.svg"
    out.write_text(bar_chart_svg('"200" round trips/s: worker groups vs null SMSC', bars))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
