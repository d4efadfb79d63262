"""SMPP benchmark: "200" round trips (max, paced at 80 %, overload at 2x) and plain submit_sm, beside the null SMSC.

Every figure is measured with ../shared/tools/smpp_load.py (4 binds, window
10; a reply counts when its last part is in), first against
../shared/tools/smpp_null_server.py (the ceiling of this machine and client),
then against the real gateway (``run_gateway.py serve``, shipped defaults
plus a ``bench`` account without the demo account's 500 msg/s) on a copy of
a cached database of ``--population`` subscribers, the load spread over
``--active`` of them (bench/population.py builds the cache once).

Runs, in order, on one gateway:

1. "200" as fast as the windows allow, twice over the same subscribers: ``cold`` (each one's first
   "200": database reads and ranking) and the steady state, whose rate is the capacity
   (replies/s, p50/p95/p99, parts per reply);
2. paced at 80 % of that capacity (target p99 <= 20 ms);
3. overload, paced at 2x the capacity (target p99 <= 1 s, no lost reply, the excess refused at the door);
4. plain submit_sm to a handset number (accepted/s).

Each run also reports the gateway's CPU milliseconds per reply (from /proc: the figure a machine
shared with other work does not blur; 1000 / it is one core's capacity). Each "200" run is checked
against the gateway's own MT log: the replies the
client counted must equal the replies the gateway logged as delivered.
``--profile`` then drives one more "200" run under cProfile inside the gateway
(gateway/profiling.py) and prints its top functions.

    .venv/bin/python -m bench.bench_smpp                        # 1,000,000 subscribers, 100,000 active
    .venv/bin/python -m bench.bench_smpp --profile --count 20000
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    BENCH_ACCOUNT,
    OUT,
    NullSMSC,
    Sampler,
    bench_fixtures,
    gc_figures,
    group_cpu_s,
    group_hwm_mb,
    group_rss_mb,
    logged_replies,
    py_spy,
    run_load,
    settled_logged_replies,
    write_result,
)
from bench.plot import bar_chart_svg
from offers.population import FIRST

PROFILE_TOP = 15
PROFILE_COUNT = 5000
PROFILE_SECONDS = 10.0  # "200"s of the profiled run (cProfile slows the gateway several times)
OVERLOAD_SECONDS = 12.0
PACED_SECONDS = 12.0


class Target:
    """The gateway under test: its port, process and database, and the load runs against it."""

    def __init__(self, gw, active: int, duration: float):
        self.gw, self.active, self.duration = gw, active, duration
        self.sid, self.pw = BENCH_ACCOUNT

    def round_trips(self, count: int, rate: float = 0.0) -> dict:
        before, cpu = logged_replies(self.gw.db_url), group_cpu_s(self.gw.proc.pid)
        result = run_load(self.gw.ports["smpp"], count=count, duration=self.duration, message="200",
                          system_id=self.sid, password=self.pw, src_base=FIRST, subscribers=self.active,
                          rate=rate)
        result["gateway_logged_replies"] = settled_logged_replies(self.gw.db_url) - before
        result["gateway_cpu_s"] = round(group_cpu_s(self.gw.proc.pid) - cpu, 2)
        return result

    def submits(self, count: int) -> dict:
        return run_load(self.gw.ports["smpp"], count=count, duration=self.duration, dest="13900000000",
                        expect_replies=False, system_id=self.sid, password=self.pw)

    def sample(self, capacity: float, path: Path, submits: bool = False) -> str:
        """py-spy over every process of the gateway during a steady run (or plain submits) of about
        PROFILE_SECONDS."""
        sampler = Sampler(self.gw.proc.pid, PROFILE_SECONDS, path)
        count = max(1000, int(capacity * (PROFILE_SECONDS + 2)))
        self.submits(count) if submits else self.round_trips(count)
        return sampler.wait()

    def profile(self, count: int, path: Path) -> str:
        self.gw.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        self.round_trips(count)
        path.unlink(missing_ok=True)
        self.gw.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if path.exists():  # kept for a closer look: python -m pstats bench/out/smpp_hot_path.prof
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / "smpp_hot_path.prof").write_bytes(path.read_bytes())
        return top_functions(path)


def top_functions(path: Path, n: int = PROFILE_TOP) -> str:
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(n)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


def measure(args: argparse.Namespace) -> dict:
    results: dict = {}
    null = NullSMSC(reply=True)
    try:
        results["null_round_trip"] = run_load(null.port, count=args.count, duration=args.duration, message="200")
        results["null_submit"] = run_load(null.port, count=args.submit_count, duration=args.duration,
                                          dest="13900000000", expect_replies=False)
    finally:
        null.stop()
    from bench.population import database_copy
    from tests.harness import start_gateway

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db_url = database_copy(workdir, args.population, args.active, args.history)
        profile_path = workdir / "gateway.prof"
        sampling = args.profile and py_spy() is not None
        if args.profile and not sampling and args.workers != 1:
            raise SystemExit("--profile without py-spy (pip install py-spy) profiles one process: add --workers 1")
        overrides = [arg for pair in args.set for arg in ("--set", pair)]
        gw = start_gateway(workdir, "--fixtures", str(bench_fixtures(workdir)), "--population",
                           str(args.population), "--log-format", "json", *overrides, db_url=db_url,
                           workers=args.workers,
                           env={"GATEWAY_PROFILE": str(profile_path)} if args.profile and not sampling else None)
        try:
            target = Target(gw, args.active, args.duration)
            results.update(drive(target, args))
            results["gc"] = gc_figures(gw.ports["http"])
            results["rss_mb"] = {"after": round(group_rss_mb(gw.proc.pid), 1),
                                 "peak": round(group_hwm_mb(gw.proc.pid), 1)}
            if sampling:
                samples = workdir / "samples.txt"
                if args.submit_only:
                    results["profile"] = target.sample(results["gateway_submit"]["submit_tps"] or 100.0, samples,
                                                       submits=True)
                else:
                    results["profile"] = target.sample(results["gateway_round_trip"]["reply_tps"] or 100.0,
                                                       samples)
                OUT.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(samples, OUT / "smpp_hot_path_samples.txt")  # collapsed stacks: flame-graph input
            elif args.profile:
                results["profile"] = target.profile(min(args.count, PROFILE_COUNT), profile_path)
        finally:
            gw.stop()
    return results


def drive(target: Target, args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.submit_only:
        print("bench: plain submit_sm ...", file=sys.stderr, flush=True)
        return {"gateway_submit": target.submits(args.submit_count)}
    print(f"bench: '200' at full speed, first contact of each of the {args.active:,} active subscribers (cold) ...",
          file=sys.stderr, flush=True)
    out["cold"] = target.round_trips(args.active)
    print("bench: '200' at full speed, the same subscribers again (steady state) ...", file=sys.stderr, flush=True)
    out["gateway_round_trip"] = full = target.round_trips(args.count)
    capacity = full["reply_tps"] or 100.0
    for name, factor, seconds in (("paced_80", 0.8, PACED_SECONDS), ("overload_2x", 2.0, OVERLOAD_SECONDS)):
        rate = round(capacity * factor, 1)
        print(f"bench: '200' paced at {rate}/s ({name}) ...", file=sys.stderr, flush=True)
        out[name] = target.round_trips(max(100, int(rate * seconds)), rate=rate)
    print("bench: plain submit_sm ...", file=sys.stderr, flush=True)
    out["gateway_submit"] = target.submits(args.submit_count)
    return out


def _run_row(run: dict) -> dict:
    return {"offered_per_s": run.get("rate") or None, "replies_per_s": run["reply_tps"],
            "p50_ms": run["reply_p50_ms"], "p95_ms": run["reply_p95_ms"], "p99_ms": run["reply_p99_ms"],
            "acked": run["acked_ok"], "refused": sum(run["acked_err"].values()), "replies": run["replies"],
            "replies_missing": run["replies_missing"], "gateway_logged_replies": run["gateway_logged_replies"],
            "parts_per_reply": round(run["reply_parts"] / run["replies"], 2) if run["replies"] else None,
            "count_matches_log": run["replies"] == run["gateway_logged_replies"],
            "cpu_ms_per_reply": round(run["gateway_cpu_s"] * 1000 / run["replies"], 3) if run["replies"] else None}


def summarise(results: dict, args: argparse.Namespace) -> dict:
    rt, null_rt = results["gateway_round_trip"], results["null_round_trip"]
    sub, null_sub = results["gateway_submit"], results["null_submit"]
    return {
        "population": args.population, "active": args.active, "history": args.history, "workers": args.workers,
        "round_trips_per_s": rt["reply_tps"], "round_trip_p50_ms": rt["reply_p50_ms"],
        "round_trip_p95_ms": rt["reply_p95_ms"], "round_trip_p99_ms": rt["reply_p99_ms"],
        "null_round_trips_per_s": null_rt["reply_tps"],
        "round_trip_ratio": round(rt["reply_tps"] / null_rt["reply_tps"], 3) if null_rt["reply_tps"] else None,
        "replies_missing": rt["replies_missing"], "submit_errors": rt["acked_err"],
        "runs": {name: _run_row(results[name]) for name in ("cold", "gateway_round_trip", "paced_80",
                                                             "overload_2x")},
        "submit_per_s": sub["submit_tps"], "null_submit_per_s": null_sub["submit_tps"],
        "submit_ratio": round(sub["submit_tps"] / null_sub["submit_tps"], 3) if null_sub["submit_tps"] else None,
        "submit_p99_ms": sub["ack_p99_ms"], "rss_mb": results["rss_mb"], "gc": results.get("gc"),
    }


def print_table(summary: dict, profile: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stderr, width=140)
    table = Table(title=f"SMPP benchmark ({summary['workers']} worker(s), population {summary['population']:,}, "
                        f"load over {summary['active']:,}; null SMSC '200' ceiling "
                        f"{summary['null_round_trips_per_s']}/s)")
    for column in ("run", "offered/s", "replies/s", "p50 / p95 / p99 ms", "acked", "refused", "missing",
                   "parts/reply", "client = gateway log", "CPU ms/reply"):
        table.add_column(column, justify="right")
    for name, row in summary["runs"].items():
        table.add_row(name, str(row["offered_per_s"] or "max"), str(row["replies_per_s"]),
                      f"{row['p50_ms']} / {row['p95_ms']} / {row['p99_ms']}", str(row["acked"]),
                      str(row["refused"]), str(row["replies_missing"]), str(row["parts_per_reply"]),
                      f"{row['replies']} = {row['gateway_logged_replies']}"
                      + ("" if row["count_matches_log"] else "  MISMATCH"), str(row["cpu_ms_per_reply"]))
    console.print(table)
    console.print(f"accepted submit_sm/s: {summary['submit_per_s']} (null SMSC {summary['null_submit_per_s']}); "
                  f"RSS MB after/peak: {summary['rss_mb']['after']}/{summary['rss_mb']['peak']}")
    if summary.get("gc"):
        console.print("garbage collections (count, total / longest pause ms): " + "; ".join(
            f"{gen} {row.get('collections', 0):.0f}, {row.get('pause_ms')} / {row.get('max_ms')}"
            for gen, row in sorted(summary["gc"].items()) if gen.startswith("gen"))
            + f"; frozen objects {summary['gc'].get('frozen', {}).get('objects', 0):,.0f}; sweeps "
            + str(summary["gc"].get("sweep", {})))
    wal = (summary.get("gc") or {}).get("wal")
    if wal:
        console.print(f"WAL checkpoints in the thread: {wal.get('checkpoints_total', 0):,.0f} "
                      f"({wal.get('checkpoint_busy_total', 0):,.0f} busy), "
                      f"{wal.get('checkpoint_seconds_total', 0):.1f} s in all, the longest "
                      f"{wal.get('checkpoint_max_seconds', 0) * 1000:.0f} ms; "
                      f"log at the last one: {wal.get('wal_frames', 0):,.0f} pages")
    if profile:
        console.print(f"gateway hot path, top {PROFILE_TOP} functions:")
        console.print(profile, markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help='"200" messages of the full-speed run')
    parser.add_argument("--submit-count", type=int, default=100_000,
                        help="plain submit_sm of the accepted-per-second run (about 5 s at 20,000/s: the 1-s "
                             "run of 20,000 swung by 15 %% with one slow commit)")
    parser.add_argument("--duration", type=float, default=120.0, help="time limit of each load run (s)")
    parser.add_argument("--population", type=int, default=1_000_000, help="subscribers in the database")
    parser.add_argument("--active", type=int, default=100_000, help="subscribers the load is spread over")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help='start from a database aged by N past "200" round trips (bench/history.py): '
                             "the soak's grown tables in minutes (6,652,800 = an hour at 1,848/s)")
    parser.add_argument("--profile", action="store_true",
                        help="sample one more steady run with py-spy (every worker) and print the top functions")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway worker processes (default 1, as `serve` ships on SQLite)")
    parser.add_argument("--submit-only", action="store_true",
                        help="only the plain submit_sm run (no warm-up, no '200' runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a gateway setting other than the shipped default (repeatable), e.g. pipeline.batch_ms=0")
    args = parser.parse_args(argv)
    if not 1 <= args.active <= args.population:
        parser.error("--active must be between 1 and --population")
    results = measure(args)
    if args.submit_only:
        sub, null_sub = results["gateway_submit"], results["null_submit"]
        print(f"accepted submit_sm/s: {sub['submit_tps']} (ack p50/p99 {sub['ack_p50_ms']}/{sub['ack_p99_ms']} ms; "
              f"null SMSC {null_sub['submit_tps']})", file=sys.stderr)
        if results.get("profile"):
            print(results["profile"], file=sys.stderr)
        return 0
    summary = summarise(results, args)
    print_table(summary, results.get("profile"))
    name = f"smpp_pop{args.population}_w{args.workers}"
    write_result(name, {"summary": summary, "raw": results})
    svg = bar_chart_svg("SMPP throughput (msg/s): gateway vs null SMSC", [
        ("200 round trips", summary["round_trips_per_s"] or 0, summary["null_round_trips_per_s"] or 0),
        ("submit_sm accepted", summary["submit_per_s"] or 0, summary["null_submit_per_s"] or 0)])
    (OUT / f"{name}.svg").write_text(svg)
    if results.get("profile"):
        (OUT / f"{name}_profile.txt").write_text(results["profile"] + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
