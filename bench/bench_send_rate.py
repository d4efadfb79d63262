"""Does the outbox sender hold its configured rate? (campaign sending; target: within 2 % over 5 minutes)

Queues more messages than the run can send, lets the real gateway drain them to
RX binds at ``outbox.rate``, and counts what arrives per 10-second window.

    .venv/bin/python -m bench.bench_send_rate --rate 200 --seconds 300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCH_ACCOUNT, bench_fixtures, write_result
from tests.harness import start_gateway
from tests.raw_esme import RawESME


def _queue(db_url: str, count: int) -> None:
    from core.db import make_engine, session_factory
    from notifier.outbox import Outbox

    outbox = Outbox(time.time, {})
    factory = session_factory(make_engine(db_url))
    with factory() as session, session.begin():
        rows = [outbox.values(kind="campaign", source="10086", dest=f"139{i:08d}", text=f"campaign message {i}",
                              account=BENCH_ACCOUNT[0], campaign_id="bench") for i in range(count)]
        outbox.insert_many(session, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per measured window")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), "--fixtures", str(bench_fixtures(Path(tmp))), "--population", "0",
                           "--set", f"outbox.rate={args.rate}", "--log-format", "json")
        try:
            receivers = [RawESME("127.0.0.1", gw.ports["smpp"], *BENCH_ACCOUNT, kind="rx") for _ in range(2)]
            _queue(gw.db_url, int(args.rate * (args.seconds + 30) * 1.1))
            counts: list[int] = []
            start = time.monotonic()
            edge = start + 5.0  # let the first claims settle before measuring
            measured_from = None
            total_at_edge = 0
            while time.monotonic() - start < args.seconds + 5.0:
                for esme in receivers:
                    esme.pump(0.002)
                now = time.monotonic()
                if now >= edge:
                    total = sum(len(e.out.replies) for e in receivers)
                    if measured_from is None:
                        measured_from = now
                    else:
                        counts.append(total - total_at_edge)
                    total_at_edge = total
                    edge += args.window
            for esme in receivers:
                esme.close()
        finally:
            gw.stop()
    rates = [c / args.window for c in counts]
    overall = sum(counts) / (len(counts) * args.window) if counts else 0.0
    worst = max((abs(r - args.rate) / args.rate for r in rates), default=None)
    figures = {"bench": "send_rate", "configured_per_s": args.rate, "measured_per_s": round(overall, 2),
               "overall_error": round(abs(overall - args.rate) / args.rate, 4),
               "worst_window_error": round(worst, 4) if worst is not None else None,
               "windows": len(rates), "window_s": args.window, "per_window": [round(r, 1) for r in rates]}
    write_result("send_rate", figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
