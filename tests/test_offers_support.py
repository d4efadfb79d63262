"""Shared helpers of the offers tests (no tests here): demo fixture set, databases, a loaded session."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path

from core.db import Base, import_models, make_engine, session_factory
from core.fixtures import load_set, parse_set, read_dir
from offers.sections import FILES, SECTIONS, build_catalog

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()


@lru_cache(maxsize=1)
def demo_files() -> dict[str, str]:
    """Only the offers domain's files of fixtures/demo (other domains' files live there too)."""
    return {k: v for k, v in read_dir(DEMO).items() if k in FILES}


def parse_demo(**changes: str):
    files = {**demo_files(), **changes}
    parsed, problems = parse_set(files, SECTIONS)
    return parsed, problems


@lru_cache(maxsize=1)
def demo_catalog():
    parsed, problems = parse_demo()
    assert not problems, problems
    return build_catalog(parsed)


def make_test_engine(url: str):
    """Every table in the fresh database of the ``db_url`` fixture; returns the engine and its cleanup."""
    import_models()
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    return engine, engine.dispose


def load_demo(engine) -> None:
    parsed, problems = parse_demo()
    assert not problems, problems
    with session_factory(engine)() as session, session.begin():
        load_set(session, parsed, SECTIONS, NOW)
