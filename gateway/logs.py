"""Structured logging with twisted.logger: readable text or one JSON object per line, on stderr."""

from __future__ import annotations

import json
import logging
import re
import sys

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatTime,
    globalLogBeginner,
)


def _json_observer(stream, tag: str | None = None):
    def observe(event: dict) -> None:
        record = {
            "time": event.get("log_time"), "level": event["log_level"].name if event.get("log_level") else None,
            "ns": event.get("log_namespace"), "msg": formatEvent(event),
        }
        if tag:
            record["process"] = tag
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        stream.flush()
    return observe


def _text_observer(stream, tag: str | None = None):
    prefix = f"{tag} " if tag else ""

    def observe(event: dict) -> None:
        level = event["log_level"].name.upper() if event.get("log_level") else "INFO"
        line = f"{formatTime(event.get('log_time'))} {level:<5} {prefix}[{event.get('log_namespace', '-')}] " \
               f"{formatEvent(event)}"
        failure = event.get("log_failure")
        if failure is not None:
            line += "\n" + failure.getTraceback()
        stream.write(line + "\n")
        stream.flush()
    return observe


class _ToTwisted(logging.Handler):
    """Domain modules log with the standard library (they import no Twisted); send it to the same place."""

    LEVELS = {logging.DEBUG: LogLevel.debug, logging.INFO: LogLevel.info, logging.WARNING: LogLevel.warn,
              logging.ERROR: LogLevel.error, logging.CRITICAL: LogLevel.critical}

    def emit(self, record: logging.LogRecord) -> None:
        level = self.LEVELS.get(record.levelno, LogLevel.info)
        Logger(namespace=record.name).emit(level, "{msg}", msg=self.format(record))


# Start-up chatter of libraries, kept at debug so the start-up shows what a user needs: Alembic's
# plugin and migration lines, APScheduler adding jobs, Twisted's factories and ports starting.
CHATTER_NAMESPACES = ("alembic.",)
CHATTER = re.compile(r"Adding job tentatively|Added job |Scheduler started$|Starting factory |Stopping factory |Starting protocol "
                     r"|\S+ starting on \d+$")


def is_chatter(event: dict) -> bool:
    if event.get("log_level") is not LogLevel.info:
        return False
    if event.get("log_namespace", "").startswith(CHATTER_NAMESPACES):
        return True
    return CHATTER.match(formatEvent(event)) is not None


def _demoting(observer):
    """Chatter arrives at info; pass it on at debug."""
    def observe(event: dict) -> None:
        observer(dict(event, log_level=LogLevel.debug) if is_chatter(event) else event)
    return observe


def start_logging(fmt: str = "text", level: LogLevel = LogLevel.info, stream=None, tag: str | None = None) -> None:
    """Log to ``stream`` (stderr); ``tag`` names the process on every line (a group's worker: ``w1``)."""
    stream = stream or sys.stderr
    observer = _json_observer(stream, tag) if fmt == "json" else _text_observer(stream, tag)
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo([_demoting(FilteringLogObserver(observer, [predicate]))],
                                     redirectStandardIO=False)
    root = logging.getLogger()
    root.addHandler(_ToTwisted())
    root.setLevel(logging.INFO)
    for noisy in ("smpplib", "apscheduler.executors", "aiosmtpd", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
