"""A cached SQLite database with a large synthetic population, for the SMPP benchmarks.

The first call builds ``bench/out/pop_<size>_<distinct>.sqlite``: ``distinct``
subscribers from ``offers.population.generate`` (13900000000 upwards; the load
is spread over these), then the rest of ``size`` filled by copying those rows
under new numbers in a few ``INSERT ... SELECT`` statements (seconds, where
generating a million rows one by one takes minutes). Later calls reuse the
file; every run works on its own copy, so runs start from the same data.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from bench.common import OUT
from offers.population import FIRST

SCHEMA_TAG = "v1"


def cached_path(size: int, distinct: int) -> Path:
    return OUT / f"pop_{size}_{distinct}_{SCHEMA_TAG}.sqlite"


def build(path: Path, size: int, distinct: int) -> None:
    from sqlalchemy import text

    from core.db import make_engine, migrate
    from offers.models import Subscriber
    from offers.population import generate

    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{tmp}")
    migrate(engine)
    started = time.monotonic()

    def progress(done: int) -> None:
        if done % 50000 == 0 or done == distinct:
            print(f"population: {done:,}/{distinct:,} generated ({time.monotonic() - started:.0f} s)",
                  file=sys.stderr, flush=True)

    generate(engine, distinct, 1, progress=progress)
    columns = [c.name for c in Subscriber.__table__.columns]
    others = ", ".join(c for c in columns if c != "msisdn")
    with engine.begin() as conn:
        for offset in range(distinct, size, distinct):
            count = min(distinct, size - offset)
            conn.execute(text(
                f"INSERT INTO subscribers (msisdn, {others}) SELECT CAST(CAST(msisdn AS INTEGER) + :off AS TEXT), "
                f"{others} FROM subscribers WHERE msisdn >= :lo AND msisdn < :hi"),
                {"off": offset, "lo": str(FIRST), "hi": str(FIRST + count)})
            print(f"population: {offset + count:,}/{size:,} (copies)", file=sys.stderr, flush=True)
    engine.dispose()
    tmp.rename(path)


def database_copy(workdir: Path, size: int, distinct: int, history: int = 0) -> str:
    """A SQLite URL of a fresh copy of the cached population database (built on first use); with
    ``history``, aged by that many past "200" round trips (bench/history.py, cached too)."""
    path = cached_path(size, distinct)
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        build(path, size, distinct)
    if history:
        from bench.history import aged_copy

        path = aged_copy(path, distinct, history)
    target = workdir / "gateway.db"
    shutil.copyfile(path, target)
    return f"sqlite:///{target}"
