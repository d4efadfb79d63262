"""The one campaign scheduler: APScheduler 3.11 ``TwistedScheduler`` over a ``MemoryJobStore``.

Jobs are rebuilt from the campaigns fixture on start and on every reload, so there is never a
second scheduler on a shared job store. With PostgreSQL several gateway processes share the
database; only the leader — the process holding ``pg_try_advisory_lock`` on a dedicated
connection — runs the scheduler. The others retry every ``retry_s`` and take over when the
leader's connection (and with it the lock) goes away; the leader checks its connection as often
and steps down when it is lost. On SQLite a lone process leads; a worker group names one worker.

APScheduler fires jobs on real time in the reactor's thread pool; the job itself takes ``now``
from the injected clock, so planning is reproducible. A job plans and materialises in one
transaction (idempotent keys: a crash and a re-run send nothing twice). Every
``check_every_s`` the leader also runs the complaint / opt-out early warning, and once a day (at
``retention.hour``) the retention job deletes outbox and message-log rows past ``retention.*``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.twisted import TwistedScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text
from twisted.internet import defer, threads

from core.db import ReusedSessions, transaction
from notifier import reports
from notifier.campaigns import as_book, materialise_batched, plan
from notifier.outbox import Outbox, apply_retention
from notifier.policy import zone

log = logging.getLogger("gateway.scheduler")

LOCK_KEY = 0x6E6F7469  # "noti"
CHECK_JOB = "_early_warning"
RETENTION_JOB = "_retention"


class CampaignScheduler:
    def __init__(self, reactor: Any, db_factory: ReusedSessions, outbox: Outbox,
                 get_catalog: Callable[[], Any], settings: Mapping[str, Any], *,
                 now: Callable[[], float] | None = None, retry_s: float = 10.0, check_every_s: float = 300.0,
                 in_thread: Callable[[Callable[[], Any]], defer.Deferred] | None = None,
                 local_leader: bool = True):
        self.reactor = reactor
        self.db = db_factory
        self.outbox = outbox
        self.get_catalog = get_catalog
        self.settings = settings
        self.now = now or reactor.seconds
        self.retry_s = retry_s
        self.local_leader = local_leader  # without PostgreSQL: whether this process leads (one per group)
        self.check_every_s = check_every_s
        self.in_thread = in_thread or (lambda f: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f))
        self.scheduler: TwistedScheduler | None = None
        self._lock_conn = None
        self._retry_call = None
        self._running = False

    # --- leadership ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.scheduler is not None

    def start(self) -> None:
        self._running = True
        self._try_lead()

    def _engine(self):
        return self.db.kw["bind"]

    def _take_lock(self) -> bool:
        engine = self._engine()
        if engine.dialect.name != "postgresql":
            return self.local_leader
        conn = engine.connect()
        try:
            taken = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
            conn.commit()
        except Exception:
            conn.close()
            raise
        if taken:
            self._lock_conn = conn
        else:
            conn.close()
        return taken

    def _lock_alive(self) -> bool:
        if self._lock_conn is None:
            return True
        try:
            self._lock_conn.execute(text("SELECT 1"))
            self._lock_conn.commit()
            return True
        except Exception:  # the connection is gone, so is the lock: step down
            log.warning("campaign scheduler lost its database connection; stepping down")
            return False

    def _try_lead(self) -> None:
        self._retry_call = None
        if not self._running:
            return
        if self.scheduler is None:
            try:
                if self._take_lock():
                    self._start_scheduler()
                    log.info("campaign scheduler: this process leads")
            except Exception as exc:
                log.warning("campaign scheduler: cannot take the leader lock (%s); retrying", exc)
        elif not self._lock_alive():
            self._stop_scheduler()
        if self._engine().dialect.name == "postgresql":
            self._retry_call = self.reactor.callLater(self.retry_s, self._try_lead)

    # --- the APScheduler instance ---------------------------------------------------------------------

    def _start_scheduler(self) -> None:
        book = as_book(self.get_catalog())
        self.scheduler = TwistedScheduler(reactor=self.reactor, jobstores={"default": MemoryJobStore()},
                                          timezone=zone(book.policy.timezone),
                                          job_defaults={"coalesce": True, "max_instances": 1,
                                                        "misfire_grace_time": 3600})
        self._add_jobs(book)
        self.scheduler.start()

    def _add_jobs(self, book: Any) -> None:
        now = self.now()
        for campaign in book.campaigns.values():
            if campaign.end_at is not None and now >= campaign.end_at:
                continue
            self.scheduler.add_job(self._job, trigger=campaign.trigger, args=[campaign.id], id=campaign.id,
                                   name=campaign.name, replace_existing=True)
        self.scheduler.add_job(self._check, trigger=IntervalTrigger(seconds=self.check_every_s), id=CHECK_JOB,
                               replace_existing=True)
        self.scheduler.add_job(self._retention, trigger=CronTrigger(hour=int(self.settings.get("retention.hour", 3)),
                                                                    minute=17),
                               id=RETENTION_JOB, replace_existing=True)

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self._lock_conn is not None:
            conn, self._lock_conn = self._lock_conn, None
            # a pooled connection would keep the session lock: drop the DBAPI connection itself
            conn.invalidate()
            conn.close()

    def stop(self) -> None:
        self._running = False
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        self._stop_scheduler()

    def reload(self) -> None:
        """Rebuild every job from the current campaigns fixture (call after a fixture reload)."""
        if self.scheduler is not None:
            self.scheduler.remove_all_jobs()
            self._add_jobs(as_book(self.get_catalog()))

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self.scheduler.get_jobs()) if self.scheduler else []

    # --- running ----------------------------------------------------------------------------------------

    def execute(self, campaign_id: str) -> dict[str, Any]:
        """Plan, then materialise in short batched transactions (blocking; runs in a worker thread)."""
        now = self.now()
        book = as_book(self.get_catalog())
        with self.db() as session:
            result = plan(session, book, campaign_id, now, self.settings)
        summary = {"campaign": campaign_id, "status": result.status, "period": result.period,
                   "recipients": result.messages, "already_sent": result.already_sent,
                   "excluded": dict(result.excluded), "rate_per_s": result.rate.per_s}
        if result.status == "ready":
            summary.update(materialise_batched(self.db, self.outbox, result))
        log.info("campaign run %s", summary)
        return summary

    def _job(self, campaign_id: str) -> dict[str, Any] | None:
        try:
            return self.execute(campaign_id)
        except Exception:
            log.exception("campaign run %s failed; it will be retried at its next fire time", campaign_id)
            return None

    def _check(self) -> None:
        with transaction(self.db) as session:
            for alert in reports.check_thresholds(session, self.get_catalog(), self.now()):
                self._pause_job(alert.campaign_id)

    def retention(self) -> dict[str, int]:
        """Delete rows past ``retention.outbox_days`` / ``retention.message_log_days`` (blocking)."""
        counts = apply_retention(self.db, self.now(), self.settings)
        log.info("retention: deleted %d outbox rows (finished, older than %s days) and %d message_log rows "
                 "(older than %s days)", counts["outbox"], self.settings.get("retention.outbox_days", 30.0),
                 counts["message_log"], self.settings.get("retention.message_log_days", 30.0))
        return counts

    def _retention(self) -> None:
        try:
            self.retention()
        except Exception:
            log.exception("retention job failed; it runs again tomorrow")

    def run_now(self, campaign_id: str) -> defer.Deferred:
        """Run a campaign immediately (ops' ``POST /api/campaigns/{id}/run``); fires with the summary."""
        as_book(self.get_catalog()).get(campaign_id)
        return self.in_thread(lambda: self.execute(campaign_id))

    def pause(self, campaign_id: str, reason: str = "paused by ops") -> None:
        as_book(self.get_catalog()).get(campaign_id)
        with transaction(self.db) as session:
            reports.set_state(session, campaign_id, "paused", self.now(), reason)
        self._pause_job(campaign_id)

    def resume(self, campaign_id: str) -> None:
        as_book(self.get_catalog()).get(campaign_id)
        with transaction(self.db) as session:
            reports.set_state(session, campaign_id, "active", self.now(), None)
        if self.scheduler is not None and self.scheduler.get_job(campaign_id) is not None:
            self.scheduler.resume_job(campaign_id)

    def _pause_job(self, campaign_id: str | None) -> None:
        if self.scheduler is not None and campaign_id and self.scheduler.get_job(campaign_id) is not None:
            self.scheduler.pause_job(campaign_id)
