"""Alembic migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.db import Base, import_models, make_engine, migrate


def test_upgrade_head_matches_models(db_url):
    import_models()
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # a second upgrade is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ; run: .venv/bin/python -m migrations.regenerate 'msg'\n{diff}"
