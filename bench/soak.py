"""Soak (not in CI): a paced MO load for a long time; RSS growth and latency drift per minute.

    .venv/bin/python -m bench.soak --rate 500 --seconds 3600      # the issue's hour at 500 msg/s
    .venv/bin/python -m bench.soak --rate 500 --seconds 120       # a short look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCH_ACCOUNT, bench_fixtures, rss_mb, write_result
from tests.harness import start_gateway
from tests.raw_esme import RawESME


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def soak(rate: float, seconds: float, population: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), "--fixtures", str(bench_fixtures(Path(tmp))), "--population",
                           str(population), "--log-format", "json")
        try:
            return _drive(gw, rate, seconds)
        finally:
            gw.stop()


def _drive(gw, rate: float, seconds: float) -> dict:
    esme = RawESME("127.0.0.1", gw.ports["smpp"], *BENCH_ACCOUNT, window=100)
    sent_at: dict[int, float] = {}
    pending: dict[str, float] = {}  # MO id -> submit time, once acked
    minutes: list[dict] = []
    latencies: list[float] = []
    start = time.monotonic()
    next_minute = start + 60
    sent = 0
    rss_start = rss_mb(gw.proc.pid)
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while sent < due and esme.window_free() > 0:
            seq = esme.submit(f"138000{1 + sent % 100:05d}", "10086", "CXYE")
            sent_at[seq] = time.monotonic()
            sent += 1
        esme.pump(0.005)
        for seq, mo_id in esme.out.acked.items():  # consumed and cleared: the client stays O(1) per message
            pending[mo_id] = sent_at.pop(seq, time.monotonic())
        esme.out.acked.clear()
        for reply in esme.out.replies:
            t0 = pending.pop(reply["mo"], None)
            if t0 is not None:
                latencies.append((time.monotonic() - t0) * 1000)
        esme.out.replies.clear()
        if time.monotonic() >= next_minute:
            minutes.append({"minute": len(minutes) + 1, "rss_mb": round(rss_mb(gw.proc.pid), 1),
                            "replies": len(latencies), "p50_ms": _pct(latencies, 50), "p99_ms": _pct(latencies, 99)})
            print(json.dumps(minutes[-1]), file=sys.stderr, flush=True)
            latencies = []
            next_minute += 60
    esme.close()
    p99s = [m["p99_ms"] for m in minutes if m["p99_ms"] is not None]
    return {"rate": rate, "seconds": seconds, "sent": sent, "rss_start_mb": round(rss_start, 1),
            "rss_end_mb": round(rss_mb(gw.proc.pid), 1),
            "rss_growth_mb": round(rss_mb(gw.proc.pid) - rss_start, 1),
            "p99_first_ms": p99s[0] if p99s else None, "p99_last_ms": p99s[-1] if p99s else None,
            "p99_median_ms": statistics.median(p99s) if p99s else None, "minutes": minutes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--population", type=int, default=0)
    args = parser.parse_args(argv)
    result = soak(args.rate, args.seconds, args.population)
    write_result("soak", result)
    print(json.dumps({k: v for k, v in result.items() if k != "minutes"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
