"""Shared helpers of the offers tests (no tests here): demo fixture set, databases, a loaded session."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from functools import lru_cache
from pathlib import Path

import pytest
from sqlalchemy import text

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


def _backends() -> list:
    out = ["sqlite"]
    if os.environ.get("TEST_PG_URL"):
        out.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return out


BACKENDS = _backends()


def make_test_engine(kind: str, tmp_path: Path):
    """A fresh database with every table: a SQLite file, or a private schema on TEST_PG_URL."""
    import_models()
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'offers.db'}")
        Base.metadata.create_all(engine)
        return engine, lambda: engine.dispose()
    url = os.environ["TEST_PG_URL"]
    schema = "t_offers_" + uuid.uuid4().hex[:10]
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    Base.metadata.create_all(engine)

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return engine, drop


def load_demo(engine) -> None:
    parsed, problems = parse_demo()
    assert not problems, problems
    with session_factory(engine)() as session, session.begin():
        load_set(session, parsed, SECTIONS, NOW)
