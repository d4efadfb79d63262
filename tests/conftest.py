"""Shared fixtures: one real demo gateway per test module, databases for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.harness import start_gateway

PG_URL = os.environ.get("TEST_PG_URL")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The real gateway with the demo data, on free loopback ports (stopped with SIGTERM afterwards)."""
    workdir = tmp_path_factory.mktemp("gw")
    running = start_gateway(workdir, "--population", "0")
    yield running
    running.stop()


def _pg_database() -> str:
    """A fresh database on the test PostgreSQL server, so tests never see each other's rows."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database URL: SQLite always, PostgreSQL when TEST_PG_URL is set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if not PG_URL:
        pytest.skip("PostgreSQL not available (set TEST_PG_URL)")
    return _pg_database()


def pytest_sessionfinish(session, exitstatus):
    """Tests that used the global reactor's thread pool (deferToThread) must not keep pytest alive."""
    import sys

    reactor = sys.modules.get("twisted.internet.reactor")
    pool = getattr(reactor, "threadpool", None)
    if pool is not None:
        pool.stop()
