"""Upstream client benchmark: outbox rows drained as submit_sm per second to the null SMSC.

First the shared load client (../shared/tools/smpp_load.py) measures its own submit_sm rate
against ../shared/tools/smpp_null_server.py (the machine's ceiling); then the gateway's upstream
client, in this process, drains N queued outbox rows of channel ``upstream`` to the same kind of
null SMSC (claim from the database, submit_sm, submit_sm_resp, rows marked ``sent``). The figure
is rows/s from the first bind to the last row acknowledged, and its ratio to the load client's
rate. Ends with one JSON line; writes bench/out/upstream.json and bench/out/upstream.svg.

    .venv/bin/python -m bench.bench_upstream --count 20000 [--window 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import NullSMSC, run_load, write_result
from bench.plot import bar_chart_svg


def drain(port: int, count: int, window: int, duration: float, workdir: Path) -> dict:
    from twisted.internet import reactor, task

    from gateway.app import Gateway
    from gateway.upstream import UpstreamClient

    gw = Gateway(reactor, f"sqlite:///{workdir / 'up.db'}", {"outbox.rate": 100000})  # no fixtures needed
    with gw.db() as session, session.begin():
        rows = [gw.outbox.values(kind="reply", source="10086", dest=f"{13900000000 + i % 1000}",
                                 text=f"upstream bench message {i}", account="gateway", channel="upstream")
                for i in range(count)]
        gw.outbox.insert_many(session, rows)
    client = UpstreamClient(gw, "127.0.0.1", port, "bench", "bench", window=window, rate=100000,
                            initial_delay=0.05)
    marks: dict[str, float] = {}

    def check() -> None:
        if client.links and "bound" not in marks:
            marks["bound"] = time.perf_counter()
        if client.stats["sent_rows"] >= count or time.perf_counter() - marks.get("start", 0) > duration:
            marks["done"] = time.perf_counter()
            client.stopService()
            reactor.stop()

    marks["start"] = time.perf_counter()
    client.startService()
    task.LoopingCall(check).start(0.01)
    reactor.run()
    elapsed = marks["done"] - marks.get("bound", marks["start"])
    return {"rows": client.stats["sent_rows"], "submitted": client.stats["submitted"], "seconds": round(elapsed, 3),
            "submit_per_s": round(client.stats["acked"] / elapsed, 1) if elapsed else 0.0,
            "throttled": client.stats["throttled"], "timeouts": client.stats["timeouts"], "window": window}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--window", type=int, default=100, help="outstanding submit_sm on the upstream link")
    parser.add_argument("--duration", type=float, default=120.0)
    args = parser.parse_args(argv)
    null = NullSMSC(reply=False)
    try:
        load = run_load(null.port, count=args.count, duration=args.duration, dest="13900000000",
                        expect_replies=False)
        with tempfile.TemporaryDirectory() as tmp:
            ours = drain(null.port, args.count, args.window, args.duration, Path(tmp))
    finally:
        null.stop()
    ceiling = load.get("submit_tps") or 0.0
    summary = {**ours, "load_client_submit_per_s": ceiling,
               "ratio": round(ours["submit_per_s"] / ceiling, 3) if ceiling else None, "target_per_s": 5000}
    write_result("upstream", {"summary": summary, "load_client": load})
    out = Path(__file__).resolve().parent / "out"
    (out / "upstream.svg").write_text(bar_chart_svg("submit_sm/s to the null SMSC", [
        ("upstream client vs load client", summary["submit_per_s"], ceiling)], labels=("gateway", "load client")))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
