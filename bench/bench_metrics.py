"""Benchmark: ``GET /metrics`` and ``GET /api/stats`` of a gateway whose outbox and message log hold
1M rows each.

Before: the queries /metrics and the dashboard's first tick ran on the reactor thread (outbox
count by state, oldest queued row, message-log totals), timed here directly on the same file.
After: the running gateway (``serve`` on that database, loopback) answers from counts made in its
thread pool; every request is timed from a client. Figures go to stdout, the last line one JSON
object, and to ``bench/out/bench_metrics.json``.

    .venv/bin/python -m bench.bench_metrics --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402

CLI = [sys.executable, str(ROOT / "run_gateway.py")]
T0 = 1_790_000_000.0
READY_S = 300


def _fill(path: Path, rows: int) -> None:
    """The demo fixtures, then ``rows`` outbox rows (1 in 100 queued) and ``rows`` message-log rows over 30 days."""
    subprocess.run([*CLI, "load-fixtures", str(ROOT / "fixtures" / "demo"), "--db", f"sqlite:///{path}"],
                   check=True, stdout=subprocess.DEVNULL)
    step = 30 * 86400 / rows
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO outbox (message_id, kind, channel, source, dest, text, state, attempts, next_attempt_at, "
            "expires_at, created_at, sent_at, done_at) VALUES (?, 'reply', 'smpp', '10086', ?, 'x', ?, 1, ?, ?, ?, "
            "?, ?)",
            ((f"m{i:012x}", f"138{i % 10**8:08d}", "queued" if i % 100 == 0 else "delivered", T0 + i * step,
              T0 + i * step + 86400, T0 + i * step, T0 + i * step, T0 + i * step + 1) for i in range(rows)))
        conn.executemany(
            "INSERT INTO message_log (direction, channel, source, dest, text, message_id, at) "
            "VALUES (?, 'sms', ?, '10086', '200', ?, ?)",
            (("MO" if i % 2 else "MT", f"138{i % 10**8:08d}", f"l{i:012x}", T0 + i * step) for i in range(rows)))


def _ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def _before(path: Path) -> dict[str, float]:
    """The reactor-thread queries of the earlier /metrics and first dashboard tick, in ms."""
    with sqlite3.connect(path) as conn:
        return {
            "outbox_count_by_state_ms": _ms(lambda: conn.execute(
                "SELECT state, count(*) FROM outbox GROUP BY state").fetchall()),
            "oldest_queued_ms": _ms(lambda: conn.execute(
                "SELECT min(created_at) FROM outbox WHERE state = 'queued'").fetchall()),
            "message_log_totals_ms": _ms(lambda: conn.execute(
                "SELECT direction, count(*) FROM message_log GROUP BY direction").fetchall()),
        }


def _serve(path: Path, workdir: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([*CLI, "serve", "--db", f"sqlite:///{path}", "--host", "127.0.0.1", "--smpp-port", "0",
                             "--sip-port", "0", "--http-port", "0", "--smtp-in-port", "0", "--smtp-out-port", "0",
                             "--var-dir", str(workdir / "var")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + READY_S
    buf = b""
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            buf += os.read(proc.stdout.fileno(), 65536)
            for line in buf.splitlines():
                if line.startswith(b"{") and b'"http"' in line:
                    return proc, json.loads(line)
    proc.kill()
    raise SystemExit("the gateway did not start")


def _get_ms(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
    return (time.perf_counter() - started) * 1000, body


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"first_ms": round(times[0], 2), "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2), "max_ms": round(ordered[-1], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the outbox and in the message log")
    parser.add_argument("--requests", type=int, default=200, help="requests of each endpoint")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "metrics.db"
        _fill(path, args.rows)
        before = {k: round(v, 1) for k, v in _before(path).items()}
        proc, ports = _serve(path, workdir)
        try:
            base = f"http://127.0.0.1:{ports['http']}"
            metrics = [_get_ms(base + "/metrics") for _ in range(args.requests)]
            stats = [_get_ms(base + "/api/stats")[0] for _ in range(args.requests)]
        finally:
            proc.terminate()
            proc.wait(30)
    has_depth = b'gateway_outbox_depth{state="delivered"}' in metrics[-1][1]
    result = {"benchmark": "metrics", "rows": args.rows, "before_reactor_queries": before,
              "metrics": _summary([t for t, _ in metrics]), "stats": _summary(stats),
              "outbox_depth_exported": has_depth}
    print(f"{args.rows:,} outbox + {args.rows:,} message_log rows")
    print("before, on the reactor thread per scrape/first tick: "
          + ", ".join(f"{k} {v}" for k, v in before.items()))
    for name in ("metrics", "stats"):
        print(f"GET /{'metrics' if name == 'metrics' else 'api/stats'}: "
              + ", ".join(f"{k} {v}" for k, v in result[name].items()))
    write_result("bench_metrics", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
