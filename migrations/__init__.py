"""The schema of the whole gateway: Alembic revisions, and the modules whose tables they manage."""

# Every module that declares tables; Alembic, create_all and core.db.import_models import them all.
MODEL_MODULES = (
    "offers.models",
    "offers.exposures",
    "offers.learning",
    "notifier.models",
    "notifier.campaign_models",
    "notifier.project_models",
    "ivr.models",
)
