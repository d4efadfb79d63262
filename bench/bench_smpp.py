"""SMPP benchmark: "200" round trips and plain submit_sm acceptance, beside the null-SMSC ceiling.

Both are measured with ../shared/tools/smpp_load.py (4 binds, window 10), first
against ../shared/tools/smpp_null_server.py (the fastest SMPP server this
machine runs in Python: the ceiling), then against the real gateway started
as ``run_gateway.py serve`` with the demo data (plus --population N). Prints a
table and writes bench/out/smpp.json and bench/out/smpp.svg.

    .venv/bin/python -m bench.bench_smpp --count 20000 [--population 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import BENCH_ACCOUNT, NullSMSC, bench_fixtures, hwm_mb, rss_mb, run_load, write_result
from bench.plot import bar_chart_svg


def measure(count: int, duration: float, population: int, db_url: str | None = None) -> dict:
    results: dict = {}
    null = NullSMSC(reply=True)
    try:
        results["null_round_trip"] = run_load(null.port, count=count, duration=duration, message="200")
        results["null_submit"] = run_load(null.port, count=count, duration=duration, dest="13900000000",
                                          expect_replies=False)
    finally:
        null.stop()
    from tests.harness import start_gateway

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fixtures = bench_fixtures(workdir)
        gw = start_gateway(workdir, "--fixtures", str(fixtures), "--population", str(population),
                           "--log-format", "json", db_url=db_url)
        try:
            sid, pw = BENCH_ACCOUNT
            rss_before = rss_mb(gw.proc.pid)
            results["gateway_round_trip"] = run_load(gw.ports["smpp"], count=count, duration=duration,
                                                     message="200", system_id=sid, password=pw)
            results["gateway_submit"] = run_load(gw.ports["smpp"], count=count, duration=duration,
                                                 dest="13900000000", expect_replies=False,
                                                 system_id=sid, password=pw)
            results["rss_mb"] = {"before": round(rss_before, 1), "after": round(rss_mb(gw.proc.pid), 1),
                                 "peak": round(hwm_mb(gw.proc.pid), 1)}
        finally:
            gw.stop()
    return results


def summarise(results: dict, population: int) -> dict:
    rt, null_rt = results["gateway_round_trip"], results["null_round_trip"]
    sub, null_sub = results["gateway_submit"], results["null_submit"]
    return {
        "population": population,
        "round_trips_per_s": rt["reply_tps"], "round_trip_p50_ms": rt["reply_p50_ms"],
        "round_trip_p99_ms": rt["reply_p99_ms"], "null_round_trips_per_s": null_rt["reply_tps"],
        "round_trip_ratio": round(rt["reply_tps"] / null_rt["reply_tps"], 3) if null_rt["reply_tps"] else None,
        "replies_missing": rt["replies_missing"], "submit_errors": rt["acked_err"],
        "submit_per_s": sub["submit_tps"], "null_submit_per_s": null_sub["submit_tps"],
        "submit_ratio": round(sub["submit_tps"] / null_sub["submit_tps"], 3) if null_sub["submit_tps"] else None,
        "submit_p99_ms": sub["ack_p99_ms"], "rss_mb": results["rss_mb"],
    }


def print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SMPP benchmark (population {summary['population']:,})")
    table.add_column("figure")
    table.add_column("gateway", justify="right")
    table.add_column("null SMSC", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row('"200" round trips/s', str(summary["round_trips_per_s"]), str(summary["null_round_trips_per_s"]),
                  str(summary["round_trip_ratio"]))
    table.add_row("round trip p50 / p99 ms", f"{summary['round_trip_p50_ms']} / {summary['round_trip_p99_ms']}",
                  "", "")
    table.add_row("accepted submit_sm/s", str(summary["submit_per_s"]), str(summary["null_submit_per_s"]),
                  str(summary["submit_ratio"]))
    table.add_row("RSS MB (before/after/peak)", "{before}/{after}/{peak}".format(**summary["rss_mb"]), "", "")
    Console(file=sys.stderr).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--population", type=int, default=0)
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp folder)")
    args = parser.parse_args(argv)
    results = measure(args.count, args.duration, args.population, args.db)
    summary = summarise(results, args.population)
    print_table(summary)
    write_result(f"smpp_pop{args.population}", {"summary": summary, "raw": results})
    svg = bar_chart_svg("SMPP throughput (msg/s): gateway vs null SMSC", [
        ("200 round trips", summary["round_trips_per_s"] or 0, summary["null_round_trips_per_s"] or 0),
        ("submit_sm accepted", summary["submit_per_s"] or 0, summary["null_submit_per_s"] or 0)])
    out = Path(__file__).resolve().parent / "out" / f"smpp_pop{args.population}.svg"
    out.write_text(svg)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
