"""Soak (not in CI): "200" paced at half the measured maximum for a long time; RSS growth and latency drift.

The gateway serves a copy of the benchmark's cached population (1,000,000
subscribers, load spread over ``--active`` of them, bench/population.py).
Without ``--rate`` the maximum is measured first (a short full-speed run with
the shared load client) and the soak runs at half of it. A reply counts when
its last part is in. Prints, per window, the replies, p50/p99 and RSS, then the
figures the issue asks for: RSS growth in % from the end of the first window
to the end, and the p99 of the first against the last window. Windows are ten
minutes, or a sixth of the run when it is shorter than an hour.

The resident size is also sampled every ``--rss-every`` seconds (10) during the
whole soak: each window prints the median, lowest and highest of its samples
beside the one at its end, and the summary gives the growth of the median from
the first window to the last (``rss_median_growth_pct``). One sample is a
noisy measure of growth: what the thread pool's jobs hold at that moment moves
the resident size by tens of MB within a minute. Beside it, the anonymous part
(``RssAnon``: the process's own memory, without the database pages SQLite's
memory map has brought in, which come and go with the connections that map
them): ``anon_median_mb`` per window and ``anon_median_growth_pct``.

    .venv/bin/python -m bench.soak --seconds 3600     # the issue's hour
    .venv/bin/python -m bench.soak --seconds 300      # a short look (50 s windows)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import (
    BENCH_ACCOUNT,
    bench_fixtures,
    gc_figures,
    group_anon_mb,
    group_cpu_s,
    group_rss_mb,
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


def database_files_mb(db_url: str) -> dict:
    """Sizes of a SQLite database's file and its write-ahead log (MB; nothing for another database): the
    file grows ~1.7 KB a "200" and the log's high-water mark shows how long a read snapshot held it back."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)  # parsed as the gateway's engine parses it (gateway/checkpointer.py: url.database)
    if url.get_backend_name() != "sqlite" or not url.database:
        return {}
    path = Path(url.database)
    wal = path.with_name(path.name + "-wal")
    return {"db_mb": round(path.stat().st_size / 1e6, 1) if path.exists() else None,
            "wal_mb": round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0}


def checkpoint_figures(before: dict, after: dict) -> dict:
    """One window's WAL checkpoints from two scrapes of the gateway's checkpoint counters
    (bench.common.gc_figures()["wal"]): how many, how many found the log busy, their time, and the log's
    length at the last one."""
    if not after:
        return {}
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0)
             for key in ("checkpoints_total", "checkpoint_busy_total", "checkpoint_seconds_total")}
    return {"checkpoints": int(delta["checkpoints_total"]), "checkpoints_busy": int(delta["checkpoint_busy_total"]),
            "checkpoint_s": round(delta["checkpoint_seconds_total"], 2), "wal_frames_last": int(after.get("wal_frames", 0))}


def collector_figures(before: dict, after: dict) -> dict:
    """One window's full (generation 2) collections from two scrapes of the gateway's collector figures
    (bench.common.gc_figures()): how many, their pause in all (ms), the longest so far (ms); and the pause
    of every collection of the window, the young generations' too (``gc_pause_ms``): the reactor stands
    still in each, and a young collection that walks long-lived objects costs as much as a full one."""
    old, new = before.get("gen2", {}), after.get("gen2", {})
    if not new:
        return {}
    pause = sum(after.get(f"gen{g}", {}).get("pause_ms", 0.0) - before.get(f"gen{g}", {}).get("pause_ms", 0.0)
                for g in range(3))
    return {"gc2": int(new.get("collections", 0) - old.get("collections", 0)),
            "gc2_pause_ms": round(new.get("pause_ms", 0.0) - old.get("pause_ms", 0.0), 1),
            "gc2_max_ms": new.get("max_ms", 0.0), "gc_pause_ms": round(pause, 1)}


def window_seconds(seconds: float) -> float:
    return WINDOW_S if seconds >= 3600 else seconds / 6


def soak(rate: float | None, seconds: float, population: int, active: int, workers: int,
         overrides: tuple[str, ...] = (), history: int = 0, rss_every: float = 10.0, scrape: bool = False) -> dict:
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
            # settled: the measuring run's last replies are still being logged when its client returns (an
            # hour soak once logged 50 more replies than it sent, all of them that run's tail)
            before = settled_logged_replies(gw.db_url)
            result = Driver(gw, rate, seconds, active, rss_every, scrape).run()
            # beside the client's whole replies (counted at their last part), the gateway's own count; the
            # client stops reading when the soak ends, so replies still in flight then are the difference
            result["gateway_logged_replies"] = settled_logged_replies(gw.db_url) - before
            return {"rate": rate, **result}
        finally:
            gw.stop()


class RssSampler:
    """The group's resident size every ``every`` seconds, in a thread, until :meth:`take` empties it."""

    def __init__(self, pid: int, every: float):
        self.pid, self.every = pid, every
        self._samples: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            sample = (group_rss_mb(self.pid), group_anon_mb(self.pid))
            with self._lock:
                self._samples.append(sample)

    def take(self) -> list[tuple[float, float]]:
        with self._lock:
            samples, self._samples = self._samples, []
        return samples


def rss_figures(samples: list[tuple[float, float]], end: tuple[float, float]) -> dict:
    """One window's resident size: at its end, and the median, lowest and highest of its (RSS, anonymous)
    samples; the anonymous part's median."""
    samples = samples or [end]
    rss = [sample[0] for sample in samples]
    return {"rss_mb": round(end[0], 1), "rss_median_mb": round(statistics.median(rss), 1),
            "rss_min_mb": round(min(rss), 1), "rss_max_mb": round(max(rss), 1),
            "anon_median_mb": round(statistics.median(sample[1] for sample in samples), 1), "rss_samples": len(samples)}


class Driver:
    """The shared load client (4 binds, window 10, replies counted whole), paced at ``rate``, one run per
    window: each window's replies, p50/p99 and the group's RSS (at its end, and its samples' spread)."""

    def __init__(self, gw, rate: float, seconds: float, active: int, rss_every: float = 10.0,
                 scrape: bool = False):
        self.gw, self.rate, self.seconds, self.active = gw, rate, seconds, active
        self.rss_every, self.scrape = rss_every, scrape
        self.refused = 0

    def run(self) -> dict:
        windows: list[dict] = []
        span = window_seconds(self.seconds)
        sent = 0
        scraped = self._scrape()
        cpu = group_cpu_s(self.gw.proc.pid)
        with RssSampler(self.gw.proc.pid, self.rss_every) as sampler:
            for number in range(1, max(1, round(self.seconds / span)) + 1):
                count = int(self.rate * span)
                result = run_load(self.gw.ports["smpp"], count=count, duration=span + 60, message="200",
                                  system_id=BENCH_ACCOUNT[0], password=BENCH_ACCOUNT[1], src_base=FIRST,
                                  subscribers=self.active, rate=self.rate)
                sent += result.get("sent", count)
                self.refused += sum(result["acked_err"].values())
                end = (group_rss_mb(self.gw.proc.pid), group_anon_mb(self.gw.proc.pid))
                cpu, cpu_before = group_cpu_s(self.gw.proc.pid), cpu
                windows.append({"window": number, **rss_figures(sampler.take(), end),
                                "replies": result["replies"], "replies_per_s": result["reply_tps"],
                                "missing": result["replies_missing"], "p50_ms": result["reply_p50_ms"],
                                "p99_ms": result["reply_p99_ms"],
                                # the gateway's CPU per reply: a window that costs more per reply than the
                                # first at the same rate has more work per reply, not just more waiting
                                "cpu_ms_per_reply": round((cpu - cpu_before) * 1000 / max(1, result["replies"]), 3),
                                **database_files_mb(self.gw.db_url), "machine_ms": machine_ms()})
                if self.scrape:
                    scraped, before = self._scrape(), scraped
                    windows[-1].update(checkpoint_figures(before.get("wal", {}), scraped.get("wal", {})))
                    windows[-1].update(collector_figures(before, scraped))
                print(json.dumps(windows[-1]), file=sys.stderr, flush=True)
        return summary(windows, sent, self.refused, self.seconds, span)

    def _scrape(self) -> dict:
        """The collector's and the checkpoint thread's counters on /metrics (only with ``scrape``: a scrape
        also counts the outbox, work the soak otherwise leaves out, as a gateway nobody scrapes would)."""
        return gc_figures(self.gw.ports["http"]) if self.scrape else {}


def machine_ms(rounds: int = 3) -> float:
    """How long a fixed pure-Python workload takes on this machine now, best of ``rounds``, in ms.

    Run between windows, when the load is off: a yardstick of the machine itself. On a shared virtual
    machine the speed swings by a third from one quarter of an hour to the next (the same ten-minute run,
    same code and database, gave a p99 of 8-15 ms once and 27-28 ms an hour later, at 0.37-0.43 against
    0.49-0.53 ms of CPU per reply), so a window's p99 is compared with its ``machine_ms`` beside it."""
    best = float("inf")
    for _ in range(max(1, rounds)):
        started = time.perf_counter()
        table: dict[str, int] = {}
        total = 0
        for i in range(200_000):
            total += i * i % 7
            if i % 4 == 0:
                table[str(i)] = total
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


def _growth(before: float | None, after: float | None, digits: int = 2) -> float | None:
    return round((after - before) / before * 100, digits) if before and after is not None else None


def summary(windows: list[dict], sent: int, refused: int, seconds: float, span: float) -> dict:
    first, last = (windows[0], windows[-1]) if windows else ({}, {})
    rss0, rss1 = first.get("rss_mb"), last.get("rss_mb")
    med0, med1 = first.get("rss_median_mb"), last.get("rss_median_mb")
    anon0, anon1 = first.get("anon_median_mb"), last.get("anon_median_mb")
    p0, p1 = first.get("p99_ms"), last.get("p99_ms")
    return {"seconds": seconds, "window_s": round(span, 1), "sent": sent, "refused": refused,
            "replies": sum(w["replies"] for w in windows),
            "rss_first_window_mb": rss0, "rss_end_mb": rss1, "rss_growth_pct": _growth(rss0, rss1),
            "rss_median_first_window_mb": med0, "rss_median_last_window_mb": med1,
            "rss_median_growth_pct": _growth(med0, med1),
            "anon_median_first_window_mb": anon0, "anon_median_last_window_mb": anon1,
            "anon_median_growth_pct": _growth(anon0, anon1),
            "p99_first_window_ms": p0, "p99_last_window_ms": p1,
            "p99_drift_pct": _growth(p0, p1, 1),
            # the machine's own drift over the same span: a p99 drift beside a machine that slowed as much
            # is the machine's, not the gateway's
            "machine_ms_first_window": first.get("machine_ms"), "machine_ms_last_window": last.get("machine_ms"),
            "machine_drift_pct": _growth(first.get("machine_ms"), last.get("machine_ms"), 1), "windows": windows}


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
    parser.add_argument("--rss-every", type=float, default=10.0, metavar="S",
                        help="seconds between samples of the resident size (default 10)")
    parser.add_argument("--scrape", action="store_true",
                        help="scrape /metrics at each window's end for its WAL checkpoints (count, busy, seconds, "
                             "log length at the last one) and full collections (count, pause, longest)")
    args = parser.parse_args(argv)
    if args.rss_every <= 0:
        parser.error("--rss-every must be above 0")
    result = soak(args.rate, args.seconds, args.population, args.active, args.workers, tuple(args.set), args.history,
                  args.rss_every, args.scrape)
    result["workers"] = args.workers
    write_result("soak", result)
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
