"""Autogenerate an Alembic revision from the models: ``python -m migrations.regenerate "message"``."""

import sys
import tempfile

from alembic import command

from core.db import alembic_config, import_models, make_engine, migrate


def main() -> None:
    import_models()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/schema.db"
        migrate(make_engine(url))  # the database at the current head
        command.revision(alembic_config(url), message=sys.argv[1] if len(sys.argv) > 1 else "schema change",
                         autogenerate=True)


if __name__ == "__main__":
    main()
