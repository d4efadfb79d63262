"""Offers at scale: gen-population, segmentation of everyone, one subscriber's shelf; at 1M by default.

    .venv/bin/python -m bench.bench_offers --size 1000000 [--db sqlite:///bench/out/offers.db]

Prints figures and a last JSON line; writes bench/out/offers.json and a shelf-latency histogram SVG.
The database is kept (``--db``) so bench_smpp can serve the same population.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from bench.common import OUT, hwm_mb, write_result
from bench.plot import histogram_svg


def _pct(values: list[float], pct: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", default=None)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    url = args.db or f"sqlite:///{OUT / 'offers.db'}"
    if url.startswith("sqlite:///") and not args.db:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)

    from twisted.internet import task

    from gateway.app import Gateway
    from gateway.cli import DEMO_DIR
    from offers.population import generate
    from offers.segments import segment_all
    from offers.shelf import shelf_json

    gateway = Gateway(task.Clock(), url)
    gateway.reactor.advance(time.time())
    gateway.load_fixtures_dir(str(DEMO_DIR))
    started = time.perf_counter()
    generate(gateway.engine, args.size, args.seed)
    gen_s = time.perf_counter() - started

    params = gateway.snapshot.offers.params
    started = time.perf_counter()
    with gateway.db() as session:
        segment_all(session, params)
        session.commit()
    seg_s = time.perf_counter() - started

    rng = random.Random(1)
    catalog = gateway.snapshot.offers
    latencies = []
    with gateway.db() as session:
        for _ in range(args.samples):
            msisdn = str(13900000000 + rng.randrange(args.size))
            t0 = time.perf_counter()
            shelf_json(session, catalog, msisdn, gateway.now(), gateway.settings)
            latencies.append((time.perf_counter() - t0) * 1000)
    figures = {
        "bench": "offers", "subscribers": args.size, "gen_population_s": round(gen_s, 1),
        "segment_all_s": round(seg_s, 1), "shelf_median_ms": round(_pct(latencies, 50), 3),
        "shelf_p99_ms": round(_pct(latencies, 99), 3), "peak_rss_mb": round(hwm_mb(os.getpid()), 1),
        "db": url, "targets": {"gen_population_s": 60, "segment_all_s": 60, "shelf_median_ms": 1,
                               "shelf_p99_ms": 5},
    }
    write_result("offers", figures)
    (OUT / "offers_shelf.svg").write_text(histogram_svg(f"shelf latency at {args.size:,} subscribers",
                                                         latencies))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
