"""Soak (not in CI): "200" paced at half the measured maximum for a long time; RSS growth and latency drift.

The gateway serves a copy of the benchmark's cached population (1,000,000
subscribers, load spread over ``--active`` of them, bench/population.py).
Without ``--rate`` the maximum is measured first (a short full-speed run with
the shared load client) and the soak runs at half of it. A reply counts when
its last part is in. Prints, per window, the replies, p50/p99 and RSS, then the
figures the issue asks for: RSS growth in % from the end of the first window
to the end, and the p99 of the first against the last window. Windows are ten
minutes, or a sixth of the run when it is shorter than an hour.

    .venv/bin/python -m bench.soak --seconds 3600     # the issue's hour
    .venv/bin/python -m bench.soak --seconds 300      # a short look (50 s windows)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.common import (
    BENCH_ACCOUNT,
    bench_fixtures,
    group_rss_mb,
    logged_replies,
    run_load,
    settled_logged_replies,
    write_result,
)
from offers.population import FIRST
from tests.harness import start_gateway

WINDOW_S = 600.0


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * pct / 100))], 2)


def window_seconds(seconds: float) -> float:
    return WINDOW_S if seconds >= 3600 else seconds / 6


def soak(rate: float | None, seconds: float, population: int, active: int, workers: int,
         overrides: tuple[str, ...] = (), history: int = 0) -> dict:
    from bench.population import database_copy

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        gw = start_gateway(workdir, "--fixtures", str(bench_fixtures(workdir)), "--population", str(population),
                           "--log-format", "json", *[arg for pair in overrides for arg in ("--set", pair)], db_url=database_copy(workdir, population, active, history), workers=workers)
        try:
            def full_speed(count: int) -> dict:
                return run_load(gw.ports["smpp"], count=count, duration=300, message="200",
                                system_id=BENCH_ACCOUNT[0], password=BENCH_ACCOUNT[1], src_base=FIRST,
                                subscribers=active)

            # every active subscriber's first "200" (cold) before the clock starts: the first window
            # must be the steady state the last one is compared with
            warm = full_speed(active)
            print(f"soak: {active:,} subscribers warmed at {warm['reply_tps']}/s", file=sys.stderr)
            if rate is None:
                full = full_speed(20000)
                rate = max(10.0, round(full["reply_tps"] / 2, 1))
                print(f"soak: measured maximum {full['reply_tps']}/s, soaking at {rate}/s", file=sys.stderr)
            before = logged_replies(gw.db_url)
            result = Driver(gw, rate, seconds, active).run()
            # beside the client's whole replies (counted at their last part), the gateway's own count; the
            # client stops reading when the soak ends, so replies still in flight then are the difference
            result["gateway_logged_replies"] = settled_logged_replies(gw.db_url) - before
            return {"rate": rate, **result}
        finally:
            gw.stop()


class Driver:
    """The shared load client (4 binds, window 10, replies counted whole), paced at ``rate``, one run per
    window: each window's replies, p50/p99 and the group's RSS at its end."""

    def __init__(self, gw, rate: float, seconds: float, active: int):
        self.gw, self.rate, self.seconds, self.active = gw, rate, seconds, active
        self.refused = 0

    def run(self) -> dict:
        windows: list[dict] = []
        span = window_seconds(self.seconds)
        sent = 0
        for number in range(1, max(1, round(self.seconds / span)) + 1):
            count = int(self.rate * span)
            result = run_load(self.gw.ports["smpp"], count=count, duration=span + 60, message="200",
                              system_id=BENCH_ACCOUNT[0], password=BENCH_ACCOUNT[1], src_base=FIRST,
                              subscribers=self.active, rate=self.rate)
            sent += result.get("sent", count)
            self.refused += sum(result["acked_err"].values())
            windows.append({"window": number, "rss_mb": round(group_rss_mb(self.gw.proc.pid), 1),
                            "replies": result["replies"], "replies_per_s": result["reply_tps"],
                            "missing": result["replies_missing"], "p50_ms": result["reply_p50_ms"],
                            "p99_ms": result["reply_p99_ms"]})
            print(json.dumps(windows[-1]), file=sys.stderr, flush=True)
        return summary(windows, sent, self.refused, self.seconds, span)


def summary(windows: list[dict], sent: int, refused: int, seconds: float, span: float) -> dict:
    first, last = (windows[0], windows[-1]) if windows else ({}, {})
    rss0, rss1 = first.get("rss_mb"), last.get("rss_mb")
    p0, p1 = first.get("p99_ms"), last.get("p99_ms")
    return {"seconds": seconds, "window_s": round(span, 1), "sent": sent, "refused": refused,
            "replies": sum(w["replies"] for w in windows),
            "rss_first_window_mb": rss0, "rss_end_mb": rss1,
            "rss_growth_pct": round((rss1 - rss0) / rss0 * 100, 2) if rss0 else None,
            "p99_first_window_ms": p0, "p99_last_window_ms": p1,
            "p99_drift_pct": round((p1 - p0) / p0 * 100, 1) if p0 else None, "windows": windows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=None, help='"200"/s (default: half the measured maximum)')
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help='start from a database aged by N past "200" round trips (bench/history.py)')
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway worker processes (default 1, as `serve` ships on SQLite)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a gateway setting other than the shipped default (repeatable)")
    args = parser.parse_args(argv)
    result = soak(args.rate, args.seconds, args.population, args.active, args.workers, tuple(args.set), args.history)
    result["workers"] = args.workers
    write_result("soak", result)
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
