"""Benchmark: ``campaign plan`` over a large population, time and peak memory (RSS) of each mode.

``--json`` keeps every delivery in memory (and prints 20); ``--all`` (JSON lines) and ``--csv``
stream the whole list, so their memory should not grow with the population. Each mode runs as its
own ``run_gateway.py`` process; its peak RSS is the kernel's ``ru_maxrss`` for that child. The
population (fixtures/demo + ``gen-population --seed 7``) is kept in ``bench/out`` for the next run
(or give ``--db``). Figures go to stdout, the last line one JSON object, and to
``bench/out/bench_plan.json``.

    .venv/bin/python -m bench.bench_plan --size 1000000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import OUT, write_result  # noqa: E402

CLI = [sys.executable, str(ROOT / "run_gateway.py")]
MODES = {"json": ["--json"], "all": ["--all"], "csv": ["--csv"]}
MAX_S = 3600  # one mode never runs longer than this


def _subscribers(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM subscribers").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _populate(path: Path, size: int) -> float:
    """fixtures/demo plus ``size`` generated subscribers into ``path`` (unless it has them); seconds spent."""
    if _subscribers(path) >= size:
        return 0.0
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    started = time.perf_counter()
    subprocess.run([*CLI, "load-fixtures", str(ROOT / "fixtures" / "demo"), "--db", url], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*CLI, "gen-population", "--size", str(size), "--seed", "7", "--db", url], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _run(mode: str, url: str, campaign: str, at: str, out_path: Path) -> dict:
    """One ``campaign plan`` process: wall seconds, peak RSS (MB), lines written."""
    started = time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([*CLI, "campaign", "plan", campaign, "--at", at, "--db", url, *MODES[mode]],
                                stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + MAX_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"campaign plan {MODES[mode]} ran longer than {MAX_S} s")
            time.sleep(0.2)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"campaign plan {MODES[mode]} failed with {os.waitstatus_to_exitcode(status)}")
    return {"mode": mode, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "records": _records(mode, out_path), "output_mb": round(out_path.stat().st_size / 1e6, 1)}


def _records(mode: str, path: Path) -> int:
    """Subscribers listed: JSON lines but the summary, CSV rows but the header, the sample of --json."""
    with open(path, encoding="utf-8", newline="") as handle:
        if mode == "csv":
            return sum(1 for _ in csv.reader(handle)) - 1
        if mode == "all":
            return sum(1 for _ in handle) - 1
        return len(json.load(handle)["sample"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="generated subscribers")
    parser.add_argument("--db", type=Path, help="SQLite file to use (made when it has fewer subscribers)")
    parser.add_argument("--campaign", default="data-boost")
    parser.add_argument("--at", default="2026-11-24T10:00:00+08:00")
    parser.add_argument("--modes", default="json,all,csv", help="comma-separated: json, all, csv")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    path = args.db or OUT / f"bench_plan_{args.size}.db"
    populate_s = _populate(path, args.size)
    runs = [_run(mode, f"sqlite:///{path}", args.campaign, args.at, OUT / f"bench_plan.{mode}.out")
            for mode in args.modes.split(",")]
    print(f"campaign plan {args.campaign} over {_subscribers(path):,} subscribers"
          + (f" (population made in {populate_s:.0f} s)" if populate_s else ""))
    print(f"{'mode':<6} {'seconds':>8} {'peak RSS MB':>12} {'records':>10} {'output MB':>10}")
    for run in runs:
        print(f"{run['mode']:<6} {run['seconds']:>8} {run['peak_rss_mb']:>12} {run['records']:>10} "
              f"{run['output_mb']:>10}")
    result = {"benchmark": "campaign_plan", "subscribers": _subscribers(path), "campaign": args.campaign,
              "runs": runs}
    write_result("bench_plan", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
