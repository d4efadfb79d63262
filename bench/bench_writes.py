"""What one "200" costs the database, on a database aged by traffic, and what each per-number index adds.

The hot path's rows per "200", written as the gateway writes them (plain ``executemany`` on one
SQLite connection with the gateway's pragmas, group commits of ``--batch`` "200"s):

- the MO row of ``message_log`` and the reply's ``outbox`` row (the MO pipeline's commit), five shelf
  ``exposures``;
- the reply marked delivered and its MT row of ``message_log`` (the deliverer's commit).

Each variant runs ``--count`` "200"s on one copy of the aged population database (bench/history.py;
``--history`` past "200"s, 6,000,000 by default: about an hour at 1,700/s) and prints the CPU of the
writing thread per "200" (user + system, so the page reads count), the wall time, and the write-ahead
log it appended per "200" (the checkpointer copies every byte of it into the database again). The
variants drop, one after the other, the indexes whose keys are a subscriber's number: every insert lands on a random leaf, so
on a grown table each row dirties a page of its own, where the time-ordered indexes share one page
among the whole commit.

    .venv/bin/python -m bench.bench_writes                    # 20,000 "200"s per variant
    .venv/bin/python -m bench.bench_writes --history 0       # the same on the fresh population
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.history import REPLY
from bench.population import database_copy
from core.db import AUTOCHECKPOINT_PAGES
from gateway.delivery import MARK_DELIVERED
from notifier.outbox import new_message_id
from offers.population import FIRST

PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "cache_size=-16384",
           "mmap_size=268435456", f"wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
# cumulative: each variant drops its index from the copy the one before ran on
VARIANTS = (("as shipped", ()), ("without ix_outbox_dest", ("ix_outbox_dest",)),
            ("without both per-number indexes", ("ix_message_log_source_at",)))
WARM = 2_000  # "200"s written first and not measured: the page cache holds the tables' tails
LOG = ("INSERT INTO message_log (direction, channel, account, source, dest, text, message_id, at, action) "
       "VALUES (?, 'sms', 'bench', ?, ?, ?, ?, ?, ?)")
OUTBOX = ("INSERT INTO outbox (message_id, kind, channel, account, source, dest, text, state, attempts, "
          "next_attempt_at, expires_at, created_at, lease_owner, lease_until, correlation) "
          "VALUES (?, 'reply', 'smpp', 'bench', '10086', ?, ?, 'sending', 0, ?, ?, ?, 'bench', ?, ?)")
EXPOSURE = ("INSERT INTO exposures (id, msisdn, offer_code, channel, context, rank, segment, arm, at) "
            "VALUES (?, ?, ?, 'sms', 'shelf', ?, 'gotone:medium', 'learned', ?)")


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the gateway's pragmas, on which ``with db:`` is one transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.isolation_level = ""  # "with db" opens and commits one transaction
    for pragma in PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    return db


def run_variant(db: sqlite3.Connection, path: Path, count: int, batch: int, active: int, ids: list[int]) -> dict:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA wal_autocheckpoint=0")  # the log's growth is the figure: nothing checkpoints it here
    rng = random.Random(7)
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(0, count, batch):
        now = time.time()
        numbers = [str(FIRST + rng.randrange(active)) for _ in range(batch)]
        mo_ids = [new_message_id() for _ in numbers]
        mt_ids = [new_message_id() for _ in numbers]
        with db:  # the MO pipeline's group commit
            db.executemany(LOG, [("MO", n, "10086", "200", m, now, "shelf")
                                 for n, m in zip(numbers, mo_ids, strict=True)])
            db.executemany(OUTBOX, [(t, n, REPLY, now, now + 86400, now, now + 120, m)
                                    for n, m, t in zip(numbers, mo_ids, mt_ids, strict=True)])
            rows = []
            for n in numbers:
                for rank in range(1, 6):
                    ids[0] += 1
                    rows.append((ids[0], n, f"H{rank}", rank, now))
            db.executemany(EXPOSURE, rows)
        with db:  # the deliverer's commit: delivered, and the MT logged
            db.executemany(MARK_DELIVERED, [(now, now, t) for t in mt_ids])
            db.executemany(LOG, [("MT", "10086", n, REPLY, t, now, "reply")
                                 for n, t in zip(numbers, mt_ids, strict=True)])
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    wal = _wal_bytes(path)
    db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    return {"cpu_us_per_200": round(cpu / count * 1e6, 1), "wall_us_per_200": round(wall / count * 1e6, 1),
            "wal_kb_per_200": round(wal / count / 1024, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help='"200"s per variant (at most 200,000)')
    parser.add_argument("--batch", type=int, default=25, help='"200"s per group commit')
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=6_000_000, metavar="N",
                        help='past "200"s the copy is aged by (bench/history.py; 0: the fresh population)')
    args = parser.parse_args(argv)
    count, batch = min(max(args.count, 1), 200_000), min(max(args.batch, 1), 1000)
    with tempfile.TemporaryDirectory(prefix="bench_writes_") as tmp:
        url = database_copy(Path(tmp), args.population, args.active, args.history)
        path = Path(url.split("///", 1)[1])
        db = connect(path)
        ids = [(os.getpid() << 40) | 1]
        run_variant(db, path, WARM, batch, args.active, ids)
        results = {"count": count, "batch": batch, "history": args.history,
                   "db_mb": round(path.stat().st_size / 2**20, 1), "variants": {}}
        for name, dropped in VARIANTS:
            for index in dropped:
                db.execute(f"DROP INDEX IF EXISTS {index}")
            results["variants"][name] = figures = run_variant(db, path, count, batch, args.active, ids)
            print(f"{name:32s} {figures['cpu_us_per_200']:7.1f} us CPU  {figures['wall_us_per_200']:7.1f} us wall  "
                  f"{figures['wal_kb_per_200']:6.2f} KB of log per \"200\"", file=sys.stderr, flush=True)
        db.close()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
