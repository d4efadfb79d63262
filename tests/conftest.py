"""Shared fixtures and the suite's rules.

Fixtures: one real demo gateway per test module; databases for SQLite and PostgreSQL. PostgreSQL is
``TEST_PG_URL`` when set, otherwise a throwaway server started once per session (tests/embedded_pg.py),
so the PostgreSQL tests run on every machine.

Rules: a test skips only when an external program is missing (tests/harness.requires_programs; the
run ends with one line naming those groups and the command that installs them), every other skip is
a failure; a test that opens a real socket or starts a gateway is marked ``integration`` (tests using
the ``gateway`` fixture or PostgreSQL are marked automatically, the others fail until they are).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests import harness
from tests.embedded_pg import EmbeddedPostgres
from tests.harness import INSTALL_HINT, MISSING_PROGRAM, start_gateway

# the marks a test gets for each database it runs on
POSTGRES_MARKS = (pytest.mark.postgres, pytest.mark.integration)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The real gateway with the demo data, on free loopback ports (stopped with SIGTERM afterwards)."""
    workdir = tmp_path_factory.mktemp("gw")
    running = start_gateway(workdir, "--population", "0")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The PostgreSQL server of this run: TEST_PG_URL, or an embedded throwaway one."""
    url = os.environ.get("TEST_PG_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database on the test server, so tests never see each other's rows; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=POSTGRES_MARKS)])
def db_url(request, tmp_path) -> str:
    """A database URL: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_url")


# --- the suite's rules ------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real gateway or on PostgreSQL use real sockets and real time: integration."""
    for item in items:
        if "gateway" in item.fixturenames or "pg_server_url" in item.fixturenames \
                or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request, monkeypatch) -> None:
    """A test not marked integration may open no socket and start no gateway."""
    if request.node.get_closest_marker("integration"):
        return

    def refuse(*_args, **_kwargs):
        raise RuntimeError(f"{request.node.nodeid} opened a real socket: mark it @pytest.mark.integration")

    for name in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(harness, "integration_allowed", False)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip for anything but a missing external program hides a regression: it fails instead."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and MISSING_PROGRAM not in _skip_reason(report):
        report.outcome = "failed"
        report.longrepr = (f"{_skip_reason(report)}\na test skips only when an external program is missing "
                           "(tests/harness.requires_programs); anything else is a failure")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter) -> Iterator[None]:
    """One line naming the test groups skipped for missing programs and how to install them, after the
    short summary, just above the counts."""
    yield
    groups = sorted({_skip_reason(r).partition(f"{MISSING_PROGRAM}: ")[2]
                     for r in terminalreporter.stats.get("skipped", []) if MISSING_PROGRAM in _skip_reason(r)})
    if groups:
        terminalreporter.write_line(f"skipped, external programs missing: {'; '.join(groups)}. "
                                    f"Install them with: {INSTALL_HINT}", yellow=True, bold=True)


def pytest_sessionfinish(session, exitstatus):
    """Tests that used the global reactor's thread pool (deferToThread) must not keep pytest alive."""
    import sys

    reactor = sys.modules.get("twisted.internet.reactor")
    pool = getattr(reactor, "threadpool", None)
    if pool is not None:
        pool.stop()
