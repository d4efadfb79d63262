"""What the IVR does to storage and the SMS outbox, for the gateway (``ivr.flows.Effects``).

Reads the IVR needs at once (the caller's brand, the balance to say, an open survey) run on
the spot; the caller's profile is cached (bounded). Writes are batched: call records and SMS
jobs wait for one transaction per flush, so hundreds of calls a second cost a few commits.
SMS jobs flush on the next reactor turn, call records within ``flush_delay_s``; after each
commit that queued SMS the deliverer is poked so they leave at once.

SMS go from the fixture's ``sms_source`` (10086) to the caller, for the first account that
receives service SMS (``Gateway.service_accounts()``; the demo's ``tester``). Callers whose
number is not all digits (sipp's default ``sipp``) get no SMS.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.templates import TemplateRenderError, render
from ivr.flows import CallInfo, Profile
from ivr.models import BusyHourSms, Call, Survey
from ivr.sections import IvrConfig, local_day
from notifier.models import MessageLog
from notifier.surveys import create_survey, open_survey
from offers.models import Subscriber
from offers.router import Inbound

__all__ = ["GatewayEffects", "sampled"]

log = logging.getLogger(__name__)

Job = Callable[[Session], bool]  # True when it queued an SMS
_BALANCE = select(Subscriber.balance).where(Subscriber.msisdn == bindparam("msisdn"))


def sampled(msisdn: str, day: str, seed: int, ratio: float) -> bool:
    """A stable draw per caller and day: the same caller is in the same group all day long."""
    digest = hashlib.sha256(f"{seed}:{msisdn}:{day}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < ratio


class GatewayEffects:
    def __init__(self, gateway: Any, config: Callable[[], IvrConfig | None], poke: Callable[[], None], *,
                 flush_delay_s: float = 0.2, cache_size: int = 100_000) -> None:
        self.gw, self._config, self._poke = gateway, config, poke
        self.flush_delay_s, self._cache_size = flush_delay_s, cache_size
        self._profiles: dict[str, Profile | None] = {}
        self._records: list[dict[str, Any]] = []
        self._jobs: list[Job] = []
        self._flush_call = None
        self.stats = {"flushes": 0, "calls": 0, "sms": 0, "errors": 0}

    # ----------------------------------------------------------------- reads
    def profile(self, msisdn: str) -> Profile | None:
        if msisdn in self._profiles:
            return self._profiles[msisdn]
        profile = None
        if msisdn.isdigit():
            with self.gw.db() as session:
                row = session.execute(select(Subscriber.brand, Subscriber.value_grade, Subscriber.vip)
                                      .where(Subscriber.msisdn == msisdn)).first()
            profile = Profile(row.brand, row.value_grade, bool(row.vip)) if row is not None else None
        if len(self._profiles) >= self._cache_size:
            self._profiles.clear()  # bounded: rebuilt from the callers of the next minutes
        self._profiles[msisdn] = profile
        return profile

    def brand_name(self, brand: str | None) -> str:
        snapshot = self.gw.snapshot
        if brand is None or snapshot is None:
            return ""
        return snapshot.offers.brand_name(brand)

    def balance(self, msisdn: str) -> float | None:
        # a plain connection: this runs on the reactor for every "say balance" key
        with self.gw.engine.connect() as conn:
            return conn.execute(_BALANCE, {"msisdn": msisdn}).scalar()

    def open_survey(self, msisdn: str) -> str | None:
        with self.gw.db() as session:
            row = open_survey(session, msisdn, self.gw.now())
        return row.call_id if row is not None else None

    # ----------------------------------------------------------------- writes
    def call_ended(self, call: CallInfo, ended_by: str) -> None:
        metrics = getattr(self.gw, "metrics", None)
        if metrics is not None:
            metrics.sip_calls.labels(outcome=call.outcome or "unknown").inc()
        self._records.append({
            "call_id": call.call_id[:200], "caller": call.caller[:64], "service": call.service[:64],
            "brand": call.brand, "started_at": call.started_at, "answered_at": call.answered_at,
            "queued_at": call.queued_at, "agent_at": call.agent_at, "ended_at": self.gw.now(),
            "agent": call.agent, "queue": call.queue, "busy": call.busy, "outcome": call.outcome,
            "ended_by": ended_by[:16]})
        self._schedule(urgent=False)

    def balance_sms(self, call: CallInfo) -> None:
        self._job(call, lambda session, setup: self._balance_job(session, call, setup))

    def shelf_sms(self, call: CallInfo) -> None:
        self._job(call, lambda session, setup: self._shelf_job(session, call, setup))

    def busy_sms(self, call: CallInfo, reason: str) -> None:
        self._job(call, lambda session, setup: self._busy_job(session, call, reason, setup))

    def survey(self, call: CallInfo, mode: str) -> None:
        self._job(call, lambda session, setup: self._survey_job(session, call, mode, setup))

    def survey_score(self, call_id: str, score: int) -> None:
        now = self.gw.now()

        def job(session: Session) -> bool:
            row = session.scalars(select(Survey).where(Survey.call_id == call_id, Survey.score.is_(None))
                                  .order_by(Survey.id.desc()).limit(1)).first()
            if row is not None and row.expires_at >= now:
                session.execute(update(Survey).where(Survey.id == row.id).values(score=score, answered_at=now))
            return False

        self._jobs.append(job)
        self._schedule(urgent=True)

    # ----------------------------------------------------------------- batching
    def _job(self, call: CallInfo, work: Callable[[Session, Any], bool]) -> None:
        if not call.caller.isdigit():
            return
        config = self._config()
        if config is None:
            return
        self._jobs.append(lambda session: work(session, config.setup))
        self._schedule(urgent=True)

    def _schedule(self, urgent: bool) -> None:
        call = self._flush_call
        if call is not None and call.active():
            if urgent and call.getTime() > self.gw.now():
                call.reset(0)
            return
        self._flush_call = self.gw.reactor.callLater(0 if urgent else self.flush_delay_s, self.flush)

    def flush(self) -> None:
        """Write everything pending in one transaction (each SMS job in its own savepoint)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        records, self._records = self._records, []
        jobs, self._jobs = self._jobs, []
        if not records and not jobs:
            return
        queued = False
        try:
            with self.gw.db() as session, session.begin():
                if records:
                    session.execute(insert(Call), records)
                for job in jobs:
                    queued = self._run_job(session, job) or queued
        except Exception:
            self.stats["errors"] += 1
            log.exception("IVR records not written (%d calls, %d jobs)", len(records), len(jobs))
            return
        self.stats["flushes"] += 1
        self.stats["calls"] += len(records)
        if queued:
            self._poke()

    def _run_job(self, session: Session, job: Job) -> bool:
        try:
            with session.begin_nested():
                return bool(job(session))
        except (IntegrityError, TemplateRenderError) as exc:
            # a race with another process (once-a-day row) or ops' template broke: skip this one
            self.stats["errors"] += 1
            log.warning("IVR job skipped: %s", exc)
            return False

    def _send(self, session: Session, call: CallInfo, kind: str, source: str, text: str, key: str) -> bool:
        accounts = self.gw.service_accounts()
        if not accounts or not text:
            log.warning("no account receives service SMS: %s to %s not sent", kind, call.caller)
            return False
        self.gw.outbox.enqueue(session, kind=kind, source=source, dest=call.caller, text=text,
                               account=accounts[0], idempotency_key=key[:160], correlation=call.call_id[:64])
        self.stats["sms"] += 1
        return True

    def _vars(self, call: CallInfo) -> dict[str, Any]:
        return {"msisdn": call.caller, "brand_name": self.brand_name(call.brand)}

    # ----------------------------------------------------------------- jobs
    def _balance_job(self, session: Session, call: CallInfo, setup: Any) -> bool:
        balance = session.scalar(select(Subscriber.balance).where(Subscriber.msisdn == call.caller))
        if balance is None:
            return False
        text = render(setup.balance_sms, **self._vars(call), balance=f"{balance:.2f}")
        return self._send(session, call, "ivr", setup.sms_source, text, f"ivr-balance:{call.call_id}")

    def _shelf_job(self, session: Session, call: CallInfo, setup: Any) -> bool:
        now = self.gw.now()
        msg = Inbound(channel="ivr", sender=call.caller, service=setup.sms_source, text="200")
        reply = self.gw.router.handle(session, msg, now)
        session.add(MessageLog(direction="MO", channel="ivr", account=None, source=call.caller,
                               dest=setup.sms_source, text="200", at=now, action=reply.action))
        return self._send(session, call, "reply", reply.source, reply.text, f"ivr-shelf:{call.call_id}:{now}")

    def _busy_job(self, session: Session, call: CallInfo, reason: str, setup: Any) -> bool:
        now = self.gw.now()
        day = local_day(now)
        if session.scalar(select(BusyHourSms.id).where(BusyHourSms.msisdn == call.caller, BusyHourSms.day == day)):
            return False  # at most one decision (SMS or holdout) per caller and day
        settings = self.gw.settings
        chosen = sampled(call.caller, day, int(settings["ivr.seed"]), float(settings["ivr.busy_sms_ratio"]))
        row = BusyHourSms(msisdn=call.caller, day=day, call_id=call.call_id[:200], brand=call.brand,
                          reason=reason, sampled=chosen, decided_at=now)
        session.add(row)
        session.flush()  # the unique (msisdn, day) row first: a racing process loses here, not later
        if not chosen:
            return False
        text = setup.guidance_text(call.brand, **self._vars(call))
        sent = self._send(session, call, "ivr", setup.sms_source, text, f"ivr-busy:{call.caller}:{day}")
        row.sent_at = now if sent else None
        return sent

    def _survey_job(self, session: Session, call: CallInfo, mode: str, setup: Any) -> bool:
        now = self.gw.now()
        settings = self.gw.settings
        text = render(setup.survey_sms, **self._vars(call), agent=call.agent, queue=call.queue) \
            if mode == "sms" else ""
        accounts = self.gw.service_accounts()
        create_survey(session, self.gw.outbox, call_id=call.call_id[:200], msisdn=call.caller,
                      agent=call.agent or "", queue=call.queue or "", mode=mode, now=now,
                      expiry_s=float(settings["survey.expiry_s"]), text=text, source=setup.sms_source,
                      account=accounts[0] if accounts else None)
        return mode == "sms"
