"""Start-up chatter of libraries is logged at debug: hidden at the default level, kept at debug."""

from __future__ import annotations

import io

import pytest
from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate

from gateway.logs import _demoting, _text_observer

CHATTER = [
    ("alembic.runtime.plugins", "setup plugin alembic.autogenerate.schemas"),
    ("alembic.runtime.migration", "Context impl SQLiteImpl."),
    ("alembic.runtime.migration", "Will assume non-transactional DDL."),
    ("alembic.runtime.migration", "Running upgrade  -> 7025eb295b5e, initial schema"),
    ("apscheduler.scheduler", "Adding job tentatively -- it will be properly scheduled when the scheduler starts"),
    ("log_legacy", "SMPPServerFactory starting on 35599"),
    ("twisted.web.server.Site", "Starting factory <twisted.web.server.Site object at 0x7f809d78d410>"),
]
KEPT = [
    ("gateway.serve", "SMPP 3.4 server  127.0.0.1:2775  (ESMEs bind here)"),
    ("gateway.serve", 'ready: {"smpp": 2775}'),
    ("gateway.scheduler", "campaign scheduler: this process leads"),
]


def _shown(level: LogLevel, namespace: str, text: str) -> str:
    stream = io.StringIO()
    observe = _demoting(FilteringLogObserver(_text_observer(stream), [LogLevelFilterPredicate(level)]))
    observe({"log_level": LogLevel.info, "log_namespace": namespace, "log_format": "{msg}", "msg": text,
             "log_time": 0.0})
    return stream.getvalue()


@pytest.mark.parametrize("namespace, text", CHATTER)
def test_chatter_is_debug(namespace, text):
    assert _shown(LogLevel.info, namespace, text) == ""
    assert "DEBUG" in _shown(LogLevel.debug, namespace, text)


@pytest.mark.parametrize("namespace, text", KEPT)
def test_what_a_user_needs_stays_at_info(namespace, text):
    assert text in _shown(LogLevel.info, namespace, text)
