"""The foundation every domain stands on: storage and migrations, the fixtures framework, service
knobs, sandboxed templates and the injected clock. It names no domain package; domains register
with it (``migrations.MODEL_MODULES`` lists the modules that declare tables)."""
