"""A population database aged by traffic: what an hour (or a day) of "200"s leaves behind.

The soak's question -- does the gateway slow down as its tables grow? -- takes an hour to ask with
traffic. This answers it in minutes: the cached population database (bench/population.py) plus
``shelves`` past "200" round trips written straight into the tables the hot path appends to, with the
keys the gateway itself would write (time-ordered message ids, random subscriber numbers among the
active ones, timestamps before now), per "200":

- the MO and the MT row of ``message_log``;
- the reply's ``outbox`` row, delivered;
- five shelf ``exposures``.

``bench_smpp --history N`` and ``soak --history N`` run on such a copy; the file is cached in
``bench/out`` beside the population it starts from.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from offers.population import FIRST

# a real shelf reply's length: three UCS2 parts
REPLY = ("【10086】为您推荐：1.5G流量包 10元/月 回1订购；2.视频会员月包 15元 回2订购；3.语音100分钟 "
         "20元 回3订购；4.家庭宽带提速 免费体验 回4订购；5.国际漫游日包 25元/天 回5订购。回复Y确认，"
         "回复QX退订，回复TD拒收营销信息。")
CHUNK = 250_000
RATE = 2000.0  # "200"/s the history is spread at (its timestamps end one minute before now)


def _series(n: int) -> str:
    return f"WITH RECURSIVE s(n) AS (SELECT {n} UNION ALL SELECT n + 1 FROM s WHERE n < {n} + ? - 1)"


def age(path: Path, shelves: int, distinct: int, *, now: float | None = None) -> None:
    """Append ``shelves`` round trips of history to the SQLite file at ``path`` (in chunks, one
    transaction each)."""
    now = time.time() if now is None else now
    start = now - 60 - shelves / RATE
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")
    began = time.monotonic()
    for first in range(0, shelves, CHUNK):
        count = min(CHUNK, shelves - first)
        at = f"({start} + n / {RATE})"
        msisdn = f"CAST({FIRST} + abs(random()) % {distinct} AS TEXT)"
        ms = f"(CAST({at} * 1000 AS INTEGER) & 17592186044415)"  # 11 hex digits, as new_message_id
        with db:
            db.execute(f"CREATE TEMP TABLE h AS {_series(first)} "
                       f"SELECT n, {at} AS at, {msisdn} AS msisdn, printf('%011x%05x%08x', {ms}, 0, 2 * n) AS mo, "
                       f"printf('%011x%05x%08x', {ms}, 0, 2 * n + 1) AS mt FROM s", (count,))
            db.execute("INSERT INTO message_log (direction, channel, account, source, dest, text, message_id, at, "
                       "action) SELECT 'MO', 'sms', 'bench', msisdn, '10086', '200', mo, at, 'shelf' FROM h")
            db.execute("INSERT INTO outbox (message_id, kind, channel, account, source, dest, text, state, "
                       "attempts, next_attempt_at, expires_at, created_at, sent_at, done_at, correlation) "
                       "SELECT mt, 'reply', 'smpp', 'bench', '10086', msisdn, ?, 'delivered', 1, at, at + 86400, "
                       "at, at, at, mo FROM h", (REPLY,))
            db.execute("INSERT INTO message_log (direction, channel, account, source, dest, text, message_id, at, "
                       "action) SELECT 'MT', 'sms', 'bench', '10086', msisdn, ?, mt, at, NULL FROM h", (REPLY,))
            db.execute("INSERT INTO exposures (id, msisdn, offer_code, channel, context, rank, segment, arm, at) "
                       "SELECT 5 * n + r, msisdn, 'H' || r, 'sms', 'shelf', r, 'gotone:medium', 'learned', at "
                       "FROM h, (SELECT 1 AS r UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 "
                       "UNION ALL SELECT 5)")
            db.execute("DROP TABLE h")
        print(f"history: {first + count:,}/{shelves:,} round trips ({time.monotonic() - began:.0f} s)",
              file=sys.stderr, flush=True)
    fold(db, now - 60)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def fold(db: sqlite3.Connection, until: float) -> None:
    """Count the history into ``learned_counts`` as the gateway's learning refresh would have while it
    happened, and mark it folded: a gateway started on the copy folds only what is new."""
    with db:
        db.execute("INSERT INTO learned_counts (bucket, offer_code, segment, exposures, conversions) "
                   "SELECT CAST(at / 3600 AS INTEGER), offer_code, segment, COUNT(*), 0 FROM exposures "
                   "WHERE context = 'shelf' AND segment IS NOT NULL AND at < ? GROUP BY 1, 2, 3 "
                   "ON CONFLICT DO UPDATE SET exposures = learned_counts.exposures + excluded.exposures", (until,))
        db.execute("INSERT INTO learning_control (id, frozen, reset_at, changed_at, changed_by, folded_until) "
                   "VALUES (1, 0, 0.0, 0.0, '', ?) ON CONFLICT (id) DO UPDATE SET folded_until = excluded.folded_until",
                   (until,))


def aged_copy(population: Path, distinct: int, shelves: int) -> Path:
    """The cached aged database beside ``population`` (built from it on first use)."""
    import shutil

    path = population.with_name(f"{population.stem}_h{shelves}.sqlite")
    if not path.exists():
        building = path.with_suffix(".building")
        shutil.copyfile(population, building)
        age(building, shelves, distinct)
        building.rename(path)
    return path
