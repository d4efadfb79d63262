"""Storage: one SQLAlchemy declarative base, engine creation and schema migration.

SQLite (WAL) is the default; a PostgreSQL URL (``postgresql+psycopg://...``)
is accepted unchanged. Every table of every domain package hangs off
:class:`Base`, so Alembic sees one metadata.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

DEFAULT_URL = "sqlite:///var/gateway.db"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# pages of WAL after which a commit checkpoints the log itself (SQLite's default is 1,000): the backstop of
# the checkpoint thread (gateway/checkpointer.py), which keeps the log far shorter; 64 MB
AUTOCHECKPOINT_PAGES = 16000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets readers (HTTP, reports) run while the outbox writer commits;
    # NORMAL sync is durable across process crashes in WAL mode.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # The hot path touches index pages all over the message log, outbox and shelf views: 16 MiB of page
    # cache per connection (the default is 2), bounded, and reads through a 256 MiB memory map (a cache
    # another process's commit invalidated refills from the map, not by a read() per page); the pool
    # hands out the last connection returned
    # (LIFO), so the reactor thread keeps reusing one warm cache instead of warming five
    cur.execute("PRAGMA cache_size=-16384")
    cur.execute("PRAGMA mmap_size=268435456")
    # A gateway checkpoints in a thread (gateway/checkpointer.py); the commits' own checkpoint (which syncs
    # the log on the committing thread) is only the backstop, at 16,000 pages instead of 1,000
    cur.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    cur.close()


def make_engine(url: str = DEFAULT_URL, **kwargs) -> Engine:
    """Create an engine; for a SQLite file make sure its folder exists and turn WAL on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        kwargs.setdefault("pool_use_lifo", True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def session_factory(engine: Engine) -> ReusedSessions:
    return ReusedSessions(sessionmaker(engine, expire_on_commit=False))


class ReusedSessions:
    """Called like a ``sessionmaker``, and what a caller gets is the same: a closed, empty Session to use
    in ``with ... as session`` (whose exit closes it). But each thread is handed its one reused Session
    whenever that one is idle, and a new one only when it is busy (a unit of work opened inside another).

    A Session used once and dropped leaves a garbage cycle behind (Session, SessionTransaction,
    Connection, RootTransaction and their event dispatchers: about 40 objects), which only the cyclic
    collector frees; the hot path opens one per group commit, hundreds a second, and that garbage was
    most of what the gateway's periodic full collection walked (``gateway/gcstats.py``). A closed
    Session holds no connection, no transaction and no objects (``close`` expunges them all), so reusing
    it is the same as a new one, without the cycle. ``info`` is emptied each time it is handed out.
    """

    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory
        self._local = threading.local()

    def __call__(self) -> Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.factory()
        elif session.get_transaction() is not None:
            return self.factory()  # busy: a unit of work inside another gets its own
        session.info.clear()
        return session

    def __getattr__(self, name: str):
        return getattr(self.factory, name)  # kw, class_, configure: the sessionmaker's


@contextmanager
def transaction(factory: Callable[[], Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def import_models() -> None:
    """Import every module that declares tables (listed by ``migrations.MODEL_MODULES``, the schema's
    own package) so ``Base.metadata`` is complete; the foundation itself names no domain."""
    import importlib

    import migrations

    for name in migrations.MODEL_MODULES:
        importlib.import_module(name)


def alembic_config(url: str):
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    cfg = Config()
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it on an empty database)."""
    from alembic import command

    import_models()
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def database_url_from_env(default: str = DEFAULT_URL) -> str:
    return os.environ.get("GATEWAY_DB", default)
