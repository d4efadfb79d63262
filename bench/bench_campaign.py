"""Benchmark: plan a campaign over a large population (target: 1M subscribers in <= 60 s).

The plan is the whole pipeline short of writing the outbox: target rule, contact policy with
history (10 % of the population was contacted in the last 90 days, 2 % refused something),
consolidation with the partner campaigns due the same day, template rendering, staggering.
The population comes from ``offers.population.generate`` and is kept in ``bench/out`` for the
next run. Figures go to stdout, the last line being one JSON object, to
``bench/out/bench_campaign.json`` and a picture of seconds per chunk to ``bench/out/bench_campaign.svg``.

    .venv/bin/python -m bench.bench_campaign --size 1000000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import OUT, hwm_mb, write_result  # noqa: E402
from bench.plot import histogram_svg  # noqa: E402

log = logging.getLogger("bench.campaign")
TARGET_S = 60.0


class OutOfTime(Exception):
    pass


def _book():
    from core.fixtures import parse_set, read_dir
    from notifier import campaign_sections, core_sections
    from offers import sections as offer_sections

    sections = [*core_sections.SECTIONS, *offer_sections.SECTIONS, *campaign_sections.SECTIONS]
    names = {s.filename.rsplit(".", 1)[0] for s in sections}
    files = {k: v for k, v in read_dir(ROOT / "fixtures" / "demo").items() if k.rsplit(".", 1)[0] in names}
    parsed, problems = parse_set(files, sections)
    if problems:
        raise SystemExit("demo fixtures have problems:\n" + "\n".join(map(str, problems)))
    return campaign_sections.build_book(parsed)


def _population(factory, size: int, seed: int, at: float) -> float:
    """Make sure the database holds ``size`` generated subscribers plus history; returns seconds spent."""
    from offers.models import Subscriber
    from offers.population import generate

    with factory() as session:
        have = session.scalar(select(func.count()).select_from(Subscriber))
    if have == size:
        return 0.0
    started = time.perf_counter()
    with factory() as session:
        generate(session, size, seed, lambda n: log.info("population: %d / %d", n, size))
        _history(session, size, seed, at)
        session.commit()
    return time.perf_counter() - started


def _history(session, size: int, seed: int, at: float) -> None:
    from notifier.campaign_models import ContactLog
    from offers.models import Refusal
    from offers.population import FIRST

    rnd = random.Random(seed + 1)
    contacts, refusals = [], []
    for n in rnd.sample(range(size), size // 10):
        when = at - rnd.uniform(1, 90) * 86400
        contacts.append({"msisdn": str(FIRST + n), "campaign_id": "older", "offer_code": rnd.choice(["LL20", "KD100"]),
                         "channel": "sms", "kind": "marketing", "at": when, "period": "old", "content_hash": "x",
                         "message_key": f"old:{n}", "lead_campaign_id": "older"})
    for n in rnd.sample(range(size), size // 50):
        refusals.append({"msisdn": str(FIRST + n), "offer_code": "LL30", "at": at - rnd.uniform(1, 60) * 86400,
                         "source": "sms"})
    conn = session.connection()
    for rows, table in ((contacts, ContactLog.__table__), (refusals, Refusal.__table__)):
        for i in range(0, len(rows), 20000):
            conn.execute(insert(table), rows[i:i + 20000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m bench.bench_campaign --size 1000000")
    parser.add_argument("--size", type=int, default=1_000_000, help="subscribers (default 1000000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--campaign", default="data-boost")
    parser.add_argument("--at", default="2026-11-24T10:00:00+08:00")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: a SQLite file in bench/out)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="give up planning after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import notifier.campaign_models  # noqa: F401 - registers the tables
    from core import db
    from core.settings import Settings
    from notifier.campaigns import parse_at, plan

    OUT.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(args.db or f"sqlite:///{OUT / f'bench_campaign_{args.size}.db'}")
    db.import_models()
    db.Base.metadata.create_all(engine)
    factory = db.session_factory(engine)
    book = _book()
    at = parse_at(args.at, book.policy.timezone)
    generation_s = _population(factory, args.size, args.seed, at)

    chunk_s: list[float] = []
    started = last = time.perf_counter()

    def progress(n: int) -> None:
        nonlocal last
        now = time.perf_counter()
        chunk_s.append(now - last)
        last = now
        if now - started > args.max_seconds:
            raise OutOfTime(f"planning passed {args.max_seconds} s at {n} subscribers")
        if len(chunk_s) % 10 == 0:
            log.info("plan: %d subscribers, %.1f s", n, now - started)

    try:
        with factory() as session:
            result = plan(session, book, args.campaign, at, Settings(), progress=progress)
    except OutOfTime as exc:
        print(json.dumps({"bench": "campaign_plan", "error": str(exc), "subscribers": args.size}))
        return 1
    seconds = time.perf_counter() - started
    figures = {
        "bench": "campaign_plan", "campaign": args.campaign, "subscribers": result.scanned,
        "seconds": round(seconds, 2), "subscribers_per_s": round(result.scanned / seconds),
        "targeted": result.targeted, "recipients": result.messages, "excluded": result.excluded,
        "items_before": result.items_before, "partners": list(result.partners),
        "rate_per_s": round(result.rate.per_s, 2), "expected_send_hours": round(result.duration_s / 3600, 1),
        "peak_rss_mb": round(hwm_mb(os.getpid()), 1), "population_generation_s": round(generation_s, 1),
        "target_s": TARGET_S, "within_target": seconds <= TARGET_S,
    }
    write_result("bench_campaign", figures)
    (OUT / "bench_campaign.svg").write_text(
        histogram_svg(f"campaign plan: seconds per chunk of 20000 ({result.scanned} subscribers)", chunk_s, unit="s"))
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
