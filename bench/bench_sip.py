"""SIP-lite IVR benchmark: the highest sipp call rate through a menu flow with zero failed calls,
and the agent-queue simulator's speed.

1. Starts the real gateway with the IVR (``run_gateway.py serve``, demo data) and runs the real
   sipp with ``tests/sipp/ivr_menu_walk.xml`` (INVITE, 4 keys by INFO, the gateway's BYE: ten
   datagrams a call) at rising rates, ``--seconds`` per step (60; ``--quick``: 10), until a step
   has a failed or missing call or the rate bound is reached. The result is the last clean rate.
2. Times ``ivr.queue.simulate`` for one day of a 200-agent centre at 90% load (target <= 5 s).

Prints a table, writes bench/out/sip.json and bench/out/sip.svg, and prints the result as the
last line (JSON).

    .venv/bin/python -m bench.bench_sip [--quick] [--start 100] [--step 100] [--max-rate 1500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT, hwm_mb, write_result
from bench.plot import bar_chart_svg

TARGET_CPS = 500
TARGET_SIM_S = 5.0


def sip_rates(start: int, step: int, max_rate: int, seconds: int, log) -> dict:
    from tests.test_ivr_sipp import run_sipp, start_ivr_gateway

    steps = []
    best = 0
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_ivr_gateway(Path(tmp) / "gw", "--set", "ivr.agents=5", "--log-format", "json")
        try:
            callers = [f"13800000{n:03d}" for n in range(1, 101)]
            rate = start
            while rate <= max_rate:
                calls = rate * seconds
                began = time.monotonic()
                result = run_sipp(gw, "ivr_menu_walk", "10086", calls, rate=rate, callers=callers,
                                  timeout_s=seconds + 60, extra=("-l", str(rate * 3)))
                took = time.monotonic() - began
                clean = result["failed"] == 0 and result["ok"] == calls
                steps.append({"rate": rate, "calls": calls, "ok": result["ok"], "failed": result["failed"],
                              "seconds": round(took, 1), "clean": clean})
                log(f"  {rate:>5} calls/s  {result['ok']:>7} ok  {result['failed']:>5} failed  "
                    f"{took:6.1f} s  {'clean' if clean else 'FAILED'}")
                if not clean:
                    break
                best = rate
                rate += step
            rss = hwm_mb(gw.proc.pid)
        finally:
            gw.stop()
    return {"best_cps": best, "steps": steps, "seconds_per_step": seconds, "gateway_peak_rss_mb": round(rss, 1)}


def queue_speed(agents: int = 200, aht_s: float = 180.0, load: float = 0.9, hours: float = 24.0) -> dict:
    from ivr.queue import simulate

    calls_per_hour = agents * load * 3600.0 / aht_s
    began = time.perf_counter()
    figures = simulate(calls_per_hour, aht_s, agents, hours, patience_s=120.0, seed=7)
    took = time.perf_counter() - began
    return {"agents": agents, "calls_per_hour": calls_per_hour, "hours": hours, "seconds": round(took, 3),
            "calls": figures["calls"], "calls_per_s": round(figures["calls"] / took), "figures": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s per rate step instead of 60")
    parser.add_argument("--seconds", type=int, default=None, help="seconds per rate step (default 60, quick 10)")
    parser.add_argument("--start", type=int, default=100, help="first call rate (calls/s)")
    parser.add_argument("--step", type=int, default=100, help="rate increase per step")
    parser.add_argument("--max-rate", type=int, default=1500, help="highest rate tried")
    parser.add_argument("--skip-sipp", action="store_true", help="only time the queue simulator")
    args = parser.parse_args(argv)
    seconds = args.seconds or (10 if args.quick else 60)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result: dict = {"name": "sip"}
    log("queue simulator: one day of a 200-agent centre at 90% load")
    result["queue"] = queue_speed()
    q = result["queue"]
    log(f"  {q['calls']} calls in {q['seconds']} s ({q['calls_per_s']} calls/s; target <= {TARGET_SIM_S} s)")
    if not args.skip_sipp:
        log(f"sipp menu walk, {seconds} s per step, from {args.start} calls/s by {args.step}")
        result["sip"] = sip_rates(args.start, args.step, args.max_rate, seconds, log)
        log(f"  highest clean rate: {result['sip']['best_cps']} calls/s (target >= {TARGET_CPS})")
    write_result("sip", result)
    if "sip" in result:
        svg = bar_chart_svg("SIP IVR menu walk: clean call rate (calls/s)",
                            [("best clean rate", result["sip"]["best_cps"], TARGET_CPS)], ("measured", "target"))
        (OUT / "sip.svg").write_text(svg, encoding="utf-8")
    print(json.dumps({"sip_best_cps": result.get("sip", {}).get("best_cps"), "queue_day_200_agents_s": q["seconds"],
                      "queue_calls": q["calls"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
