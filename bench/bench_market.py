"""The learned shelf in a seeded market: learned vs fixed conversion per day, and the time it takes.

    .venv/bin/python -m bench.bench_market [--population 100000 --days 30 --seed 7]

Target: by day 30 the learned shelf's conversion beats the fixed ranking (the holdout) by >= 15 %
relative, it is never below it by more than 5 % on any day, and the whole run takes <= 60 s.
Prints the figures and a last JSON line; writes bench/out/market.json and bench/out/market.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench.common import OUT, hwm_mb, write_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holdout", type=float, default=0.5)
    args = parser.parse_args(argv)

    from core.settings import Settings
    from gateway.cli import DEMO_DIR
    from gateway.market_cli import _catalog, write_png
    from offers.market_sim import simulate

    started = time.perf_counter()
    cpu = time.process_time()
    result = simulate(_catalog(str(DEMO_DIR)), Settings(), days=args.days, population=args.population,
                      seed=args.seed, holdout_share=args.holdout)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    days = result["days"]
    lifts = [d["learned_conversion"] / d["fixed_conversion"] - 1 for d in days]
    summary = {"population": args.population, "days": args.days, "seed": args.seed, "seconds": round(seconds, 1),
               "cpu_seconds": round(cpu_s, 1), "lift_last_day": round(lifts[-1], 4), "worst_day_lift": round(min(lifts), 4),
               "learned_last_day": days[-1]["learned_conversion"], "fixed_last_day": days[-1]["fixed_conversion"],
               "regret_first_day": days[0]["regret"], "regret_last_day": days[-1]["regret"],
               "peak_rss_mb": round(hwm_mb(os.getpid()), 1)}
    summary["targets_met"] = (summary["lift_last_day"] >= 0.15 and summary["worst_day_lift"] >= -0.05
                              and seconds <= 60)
    OUT.mkdir(parents=True, exist_ok=True)
    write_png(result, str(OUT / "market.png"))
    write_result("market", {"summary": summary, "days": days})
    for d, lift in zip(days, lifts, strict=True):
        print(f"day {d['day']:>3}  learned {d['learned_conversion']:.4f}  fixed {d['fixed_conversion']:.4f}  "
              f"lift {lift:+.1%}  regret {d['regret']:.4f}", file=sys.stderr)
    print(f"{args.population:,} subscribers x {args.days} days: {seconds:.1f} s wall ({cpu_s:.1f} s CPU); "
          f"day-{args.days} lift {lifts[-1]:+.1%} (target >= +15%), worst day {min(lifts):+.1%} (target >= -5%)",
          file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
