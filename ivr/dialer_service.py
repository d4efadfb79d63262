"""The dialer in a running gateway: projects in trial or roll-out call their targets over SIP.

:class:`DialerService` (a Twisted service of ``serve``) binds one UDP port for outbound calls
(:func:`ivr.outbound_sip.listen_outbound`) and every ``outbound.sync_s`` seconds (and at once when
the HTTP API changes a project) compares the projects' lifecycle states with what it runs: a
project that entered ``trial`` or ``rollout`` gets a :class:`ProjectRun` (its plan's targets for
that stage, a :class:`~ivr.dialer.Dialer` on the reactor's clock, agents on shift for the day's
calling window); one that left them (paused, closed) has its live calls hung up and stops. After
the window a run ends and the next day's is planned again (numbers finished are no longer targets);
a fixture reload that changes the project or the voice policy stops its run and plans it again.
Calls go to ``outbound.callee_host:callee_port`` (``run_gateway.py simulate callees`` or a sipp
UAS). Finished calls, orders (second confirmation by SMS through the router), opt-outs and refusals
are written in one transaction per reactor turn.

Tests give it a ``port`` (anything with ``place_call`` returning a handle with ``send_prompt`` and
``hangup``, as :class:`ivr.outbound_sip.OutboundSipProtocol`) and an ``in_thread`` (how a plan is
run off the reactor: ``in_thread(fn, *args) -> Deferred``), so it runs on ``task.Clock`` alone.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import task, threads

from ivr.dialer import Cancel, Dial, Dialer, Hangup, OptOut, Order, Prompt, Record, Refused
from ivr.dialer_project import agents_for, allowed_fn, dial_config
from ivr.outbound_sip import listen_outbound
from ivr.sip.uac import Failed, TooManyCalls
from notifier import policy, projects_calls, projects_lifecycle
from notifier.campaigns import _iso, send_window
from notifier.projects import Project, ProjectBook, VoicePolicy
from notifier.projects_plan import WeekCalls, iter_stage, plan

__all__ = ["DialerService", "ProjectRun"]

log = logging.getLogger(__name__)
CALLER = "10086"


class ProjectRun:
    """One project's stage being dialled: the dialer core, its calls' SIP handles, its timer."""

    def __init__(self, owner: DialerService, project: Project, stage: str, targets: list[Any]) -> None:
        gw = owner.gw
        self.owner, self.project, self.stage = owner, project, stage
        tz = owner.timezone()
        start, end = send_window(project.window, gw.now(), tz)
        self.start, self.until = start, end  # the agents' shift: the next day's window is a new run, planned again
        book: ProjectBook = owner.book()
        self.voice = book.voice
        owner.week.limit = book.voice.calls_per_week
        self.dialer = Dialer(dial_config(project, agents_for(project, start, end)), targets, now=gw.now,
                             rng=random.Random(f"{project.id}:{stage}"), allowed=allowed_fn(project, book, tz),
                             week=owner.week)
        self.handles: dict[str, Any] = {}
        self.offers: dict[str, str] = {}
        self._timer = None
        self.stopped = False

    def tick(self) -> None:
        self._timer = None
        self.pump(self.dialer.advance())

    def on_uac(self, call_id: str, event: Any) -> None:
        if not self.stopped:
            self.pump(self.dialer.on_event(dataclasses.replace(event, call_id=call_id)))

    def pump(self, commands: list[Any]) -> None:
        for command in commands:
            self._apply(command)
        self._reschedule()

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for handle in self.handles.values():
            handle.hangup()
        self.handles.clear()

    def summary(self) -> dict[str, Any]:
        """The dialer's figures, the run's calling window, and ``waiting_until``: with no call up, when
        the dialer dials next (the window has not opened, quiet hours, a back-off), else None."""
        iso = _iso(self.owner.timezone())
        due = self.dialer.next_deadline()
        waiting = due if not self.handles and due is not None and due > self.owner.gw.now() else None
        return {"project": self.project.id, "stage": self.stage, "live_calls": len(self.handles),
                "window": {"start": iso(self.start), "end": iso(self.until)},
                "waiting_until": iso(waiting), **self.dialer.summary()}

    def _reschedule(self) -> None:
        if self.stopped:
            return
        when = self.dialer.next_deadline()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if when is not None:
            reactor = self.owner.gw.reactor
            self._timer = reactor.callLater(max(0.0, when - reactor.seconds()), self.tick)

    def _apply(self, command: Any) -> None:
        if isinstance(command, Dial):
            self._dial(command)
        elif isinstance(command, Prompt):
            handle = self.handles.get(command.call_id)
            if handle is not None:
                handle.send_prompt(command.text, command.state, {"X-Offer-Code": self.offers.get(command.call_id, "")})
        elif isinstance(command, (Cancel, Hangup)):
            handle = self.handles.pop(command.call_id, None)
            if handle is not None:
                handle.hangup()
        else:
            if isinstance(command, Record):
                self.handles.pop(command.call_id, None)
                self.offers.pop(command.call_id, None)
            self.owner.write(self, command)

    def _dial(self, dial: Dial) -> None:
        settings = self.owner.gw.settings
        headers = {"X-Project": self.project.id, "X-Offer-Code": dial.offer}
        try:
            handle = self.owner.port.place_call(
                str(settings["outbound.callee_host"]), int(settings["outbound.callee_port"]), dial.msisdn, CALLER,
                headers, lambda event, call_id=dial.call_id: self.on_uac(call_id, event),
                ring_timeout=self.project.pacing.ring_timeout_s + 5.0)
        except (TooManyCalls, ValueError) as exc:
            log.warning("project %s: call to %s not placed: %s", self.project.id, dial.msisdn, exc)
            self.owner.gw.reactor.callLater(0, self.on_uac, dial.call_id, Failed(dial.call_id, 503, "not placed"))
            return
        self.handles[dial.call_id] = handle
        self.offers[dial.call_id] = dial.offer


def _definition(project: Project) -> tuple[Project, str | None]:
    """What a run depends on, comparable across fixture reloads (a compiled target is a new object)."""
    target = project.target.text if project.target is not None else None
    return dataclasses.replace(project, target=None, predicate=None), target


class DialerService(service.Service):
    def __init__(self, gateway: Any, poke: Any = None, host: str = "127.0.0.1", *, port: Any = None,
                 in_thread: Callable[..., Any] | None = None) -> None:
        self.gw, self._poke, self._host = gateway, poke, host
        self.port, self._own_port = port, port is None
        self._in_thread = in_thread or self._in_reactor_pool
        self.runs: dict[str, ProjectRun] = {}
        self.week = WeekCalls(VoicePolicy().calls_per_week)  # every project's calls, per number
        self._writes: list[tuple[ProjectRun, Any]] = []
        self._flush_call = None
        self._loop: task.LoopingCall | None = None
        self._starting: set[str] = set()

    # ----------------------------------------------------------------- service
    def startService(self) -> None:
        super().startService()
        if self._own_port:
            self.port = listen_outbound(self.gw.reactor, self._host, 0)
        self._loop = task.LoopingCall(self.sync)
        self._loop.clock = self.gw.reactor
        self._loop.start(float(self.gw.settings["outbound.sync_s"]), now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for run in self.runs.values():
            run.stop()
        self.runs.clear()
        self.flush()
        if self._own_port and self.port is not None and self.port.transport is not None:
            return self.port.transport.stopListening()
        return None

    def _in_reactor_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        reactor = self.gw.reactor
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    def book(self) -> ProjectBook:
        snapshot = self.gw.snapshot
        return snapshot.extras.get("projects") if snapshot is not None else ProjectBook()

    def timezone(self) -> str:
        snapshot = self.gw.snapshot
        params = snapshot.parsed.get("notifier.contact_policy") if snapshot is not None else None
        return getattr(params, "timezone", "Asia/Shanghai")

    def live_stats(self) -> dict[str, Any]:
        """The dashboard's ``outbound`` figures: every project dialling now, the last two hours over time."""
        out = {}
        for pid, run in self.runs.items():
            summary = run.summary()
            out[pid] = dict(summary, over_time=summary["over_time"][-8:])
        return out

    # ----------------------------------------------------------------- which projects dial
    def sync(self) -> None:
        """Start the runs of projects in trial or roll-out; stop the others."""
        if not self.running or self.gw.snapshot is None:
            return
        book = self.book()
        with self.gw.db() as session:
            wanted = {pid: row.state for pid, row in projects_lifecycle.states(session).items()
                      if row.state in projects_lifecycle.DIALLING and pid in book.projects}
        now = self.gw.now()
        for pid in list(self.runs):
            run = self.runs[pid]
            changed = pid in book.projects and (_definition(book.projects[pid]) != _definition(run.project)
                                                or book.voice != run.voice)
            if wanted.get(pid) != run.stage or (now >= run.until and not run.handles) or changed:
                self.runs.pop(pid).stop()
                log.info("project %s: %s stage stopped dialling%s", pid, run.stage,
                         " (its definition or the voice policy changed: planned again)" if changed else "")
        for pid, stage in wanted.items():
            if pid not in self.runs:
                self._start(book, book.projects[pid], stage)

    def _start(self, book: ProjectBook, project: Project, stage: str) -> None:
        """Plan the stage in a worker thread (a scan of every subscriber), then dial on the reactor."""
        if project.id in self._starting:
            return
        self._starting.add(project.id)
        d = self._in_thread(self._plan, book, project, stage)
        d.addCallback(self._started, project, stage)
        d.addErrback(lambda failure: log.error("project %s: %s stage not started: %s", project.id, stage,
                                               failure.getErrorMessage()))
        d.addBoth(lambda _: self._starting.discard(project.id))

    def _plan(self, book: ProjectBook, project: Project, stage: str) -> list[Any]:
        from offers.sections import build_catalog

        snapshot = self.gw.snapshot
        params = snapshot.parsed.get("notifier.contact_policy") or policy.PolicyParams()
        with self.gw.db() as session:
            result = plan(session, book, project.id, self.gw.now(), params, catalog=build_catalog(snapshot.parsed))
        targets = list(iter_stage(result, stage))
        figures = {"at": result.at, "targeted": result.targeted, "excluded": dict(result.excluded),
                   "sms_instead": len(result.sms_instead), "call": len(targets)}
        with self.gw.db() as session, session.begin():
            projects_lifecycle.remember_plan(session, project.id, stage, figures)
        return targets

    def _started(self, targets: list[Any], project: Project, stage: str) -> None:
        if not self.running or project.id in self.runs:
            return
        with self.gw.db() as session:
            if projects_lifecycle.state_of(session, project.id) != stage:
                return  # paused or closed while it was being planned
        run = self.runs[project.id] = ProjectRun(self, project, stage, targets)
        log.info("project %s: %s stage dials %d numbers", project.id, stage, len(targets))
        run.tick()

    # ----------------------------------------------------------------- writes
    def write(self, run: ProjectRun, command: Any) -> None:
        self._writes.append((run, command))
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.gw.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        writes, self._writes = self._writes, []
        if not writes:
            return
        now, queued = self.gw.now(), False
        accounts = self.gw.service_accounts()
        try:
            with self.gw.db() as session, session.begin():
                for run, command in writes:
                    queued = self._write_one(session, run, command, now, accounts) or queued
        except Exception:
            log.exception("outbound call results not written (%d)", len(writes))
            return
        if queued and self._poke is not None:
            self._poke()

    def _write_one(self, session: Any, run: ProjectRun, command: Any, now: float, accounts: list[str]) -> bool:
        pid = run.project.id
        if isinstance(command, Record):
            projects_calls.store_record(session, run.project, command, run.stage)
        elif isinstance(command, Order):
            return projects_calls.order(session, self.gw.router, self.gw.outbox, accounts[0] if accounts else None,
                                        pid, command.call_id, command.msisdn, command.offer, now)
        elif isinstance(command, OptOut):
            projects_calls.opt_out(session, command.msisdn, now, f"call:{pid}")
        elif isinstance(command, Refused):
            projects_calls.refuse(session, command.msisdn, command.offer, now, pid)
        return False
