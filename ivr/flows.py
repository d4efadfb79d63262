"""The IVR application: menus, the agent queue, balance line and surveys over one SipCore.

Pure logic on an injected clock: no sockets, no Twisted, no database. A transport adapter
(``ivr.server``) feeds datagrams in and puts the returned ones on the wire; everything that
touches storage or sends SMS goes through the injected :class:`Effects`::

    app = IvrApp(core, now, config=lambda: snapshot_ivr_config, settings=live_settings, effects=fx)
    out = app.receive(datagram, addr)   # -> [SendDatagram]
    out = app.tick()                    # run what is due at now()
    app.next_deadline()                 # when tick() must run next (SIP timers, queue, IVR timers)

A call walks the states ``menu`` -> ``queue`` -> ``agent`` -> (``survey``) -> ``bye``; every
final response and in-dialog request the application sends carries ``X-IVR-Prompt`` (the
prompt, "<zh> / <en>") and ``X-IVR-State``. The 200 to a key's INFO carries the new prompt;
the gateway sends its own INFO only when the state changes without a key (an agent picks up,
the IVR survey starts). A caller who stays silent is not reprompted on the wire (no state
change): after ``no_input_max`` + 1 silences of ``no_input_s`` the gateway hangs up with the
no-input prompt and goodbye.

Busy-hour guidance: a caller who presses 0 and has to wait while ``ivr.queue_busy_threshold``
calls are already waiting (or, during the fixture's busy hours, the expected wait is over its
threshold) is told so and stays queued, and the effects are asked for a guidance SMS
(``over_threshold``); a caller who leaves the queue (hangs up, or the simulated patience of
mean ``ivr.patience_s`` runs out, then the gateway hangs up) gets ``abandon``. Sampling and the
once-a-day rule belong to the effects, which see the database.

After an agent call lasting more than ``survey.min_call_s``, a share ``survey.sample_rate`` of
callers gets a survey: by SMS, or with ``survey.mode=ivr`` (when the agent ends the call) the
call stays up in state ``survey`` for a 1-5 key.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ivr.menus import Menu, Option, Prompt, Service
from ivr.queue import Agent, AgentPickedUp, AgentQueue, CallAbandoned, CallHandled, QueueEvent
from ivr.sections import CST, AgentSpec, IvrConfig
from ivr.sip import CallAcked, CallEnded, Dtmf, IncomingCall, SendDatagram, SipCore

__all__ = ["IvrApp", "Effects", "Profile", "CallInfo", "MENU", "QUEUE", "AGENT", "SURVEY", "BYE"]

log = logging.getLogger(__name__)

RING, MENU, QUEUE, AGENT, SURVEY, BYE = "ring", "menu", "queue", "agent", "survey", "bye"
_ANSWER, _NO_INPUT = 0, 1
_SCORES = frozenset("12345")


@dataclass(frozen=True, slots=True)
class Profile:
    """What the IVR needs to know about a caller who is a subscriber."""

    brand: str
    grade: str
    vip: bool


@dataclass(slots=True)
class CallInfo:
    """One call as the IVR sees it; handed to the effects when something is to be recorded."""

    call_id: str
    caller: str
    service: str
    brand: str | None
    started_at: float
    priority: int = 0
    state: str = RING
    answered_at: float | None = None
    queued_at: float | None = None
    agent_at: float | None = None
    agent: str | None = None
    queue: str | None = None
    busy: bool = False
    outcome: str | None = None
    menu: Menu | None = None
    no_input: int = 0
    invalid: int = 0
    timer: list | None = None


class Effects(Protocol):
    """Storage and SMS for the IVR (``ivr.effects.GatewayEffects`` in the gateway)."""

    def profile(self, msisdn: str) -> Profile | None: ...
    def brand_name(self, brand: str | None) -> str: ...
    def balance(self, msisdn: str) -> float | None: ...
    def open_survey(self, msisdn: str) -> str | None: ...  # call id of the newest unanswered survey
    def call_ended(self, call: CallInfo, ended_by: str) -> None: ...
    def balance_sms(self, call: CallInfo) -> None: ...
    def shelf_sms(self, call: CallInfo) -> None: ...
    def busy_sms(self, call: CallInfo, reason: str) -> None: ...
    def survey(self, call: CallInfo, mode: str) -> None: ...
    def survey_score(self, call_id: str, score: int) -> None: ...


def build_agents(roster: Iterable[AgentSpec], count: int, now: float) -> list[Agent]:
    """The first ``count`` agents of the fixture roster (generic ones when it is shorter).

    Shifts are placed on the local day of ``now``; an all-day shift ("00:00-24:00") never ends.
    """
    local = _local_midnight(now)
    out = []
    for spec in list(roster)[:count]:
        start, end = spec.shift
        on = -math.inf if start == 0 and end == 1440 else local + start * 60.0
        off = math.inf if start == 0 and end == 1440 else local + end * 60.0
        out.append(Agent(spec.agent_id, spec.skills, on, off))
    out += [Agent(f"g{n + 1}") for n in range(count - len(out))]
    return out


def _local_midnight(now: float) -> float:
    offset = CST.utcoffset(None).total_seconds()
    return (now + offset) // 86400 * 86400 - offset


def _headers(prompt: str, state: str) -> tuple[tuple[str, str], tuple[str, str]]:
    return (("X-IVR-Prompt", prompt), ("X-IVR-State", state))


class IvrApp:
    """Every call of one SipCore. See the module doc."""

    def __init__(self, core: SipCore, now: Callable[[], float], *, config: Callable[[], IvrConfig | None],
                 settings: Mapping[str, Any], effects: Effects, rng: random.Random | None = None) -> None:
        self.core, self._now, self._config, self._settings, self._fx = core, now, config, settings, effects
        self._rng = rng or random.Random(int(settings["ivr.seed"]))
        self._calls: dict[str, CallInfo] = {}
        self._timers: list[list] = []
        self._seq = 0
        self._out: list[SendDatagram] = []
        self._queue: AgentQueue | None = None
        self._survey_targets: dict[str, str] = {}  # call in state survey -> the call it rates

    # ----------------------------------------------------------------- driving
    @property
    def calls(self) -> int:
        return len(self._calls)

    @property
    def queue(self) -> AgentQueue:
        """The agent queue, staffed from the fixtures and ``ivr.agents`` when first needed."""
        if self._queue is None:
            cfg = self._config()
            roster = cfg.setup.agents if cfg is not None else ()
            agents = build_agents(roster, int(self._settings["ivr.agents"]), self._now())
            self._queue = AgentQueue(agents, float(self._settings["ivr.agent_aht_s"]), now=self._now,
                                     rng=self._rng)
        return self._queue

    def status(self) -> dict[str, Any]:
        """Live figures for the dashboard's ``queue`` (the day's service level comes from the report)."""
        queue = self._queue
        waiting = queue.waiting if queue is not None else 0
        threshold = int(self._settings["ivr.queue_busy_threshold"])
        return {"waiting": waiting, "agents": queue.agents_on_shift if queue is not None else
                int(self._settings["ivr.agents"]),
                "agents_busy": sum(1 for c in self._calls.values() if c.state == AGENT),
                "busy": waiting >= threshold, "threshold": threshold,
                "calls_in_ivr": sum(1 for c in self._calls.values() if c.state in (MENU, SURVEY))}

    def receive(self, datagram: bytes, addr: Any) -> list[SendDatagram]:
        self._out = []
        self._run(self.core.receive(datagram, addr))
        return self._out

    def tick(self) -> list[SendDatagram]:
        self._out = []
        self._run(self.core.tick())
        if self._queue is not None:
            self._queue_events(self._queue.advance())
        now = self._now()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, call = heapq.heappop(self._timers)
            if call is not None:
                call.timer = None
                self._guard(self._on_timer, kind, call)
        return self._out

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][3] is None:
            heapq.heappop(self._timers)
        times = [t for t in (self.core.next_deadline(),
                             self._queue.next_deadline() if self._queue is not None else None,
                             self._timers[0][0] if self._timers else None) if t is not None]
        return min(times) if times else None

    # ----------------------------------------------------------------- plumbing
    def _run(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, SendDatagram):
                self._out.append(action)
            elif isinstance(action, IncomingCall):
                self._guard(self._on_incoming, action)
            elif isinstance(action, Dtmf) and not self._guard(self._on_dtmf, action):
                self._run(self.core.reply(action, 500))  # never leave a key unanswered
            elif isinstance(action, CallEnded):
                self._guard(self._on_ended, action)
            elif isinstance(action, CallAcked):
                continue  # the menu timer already runs from the answer

    def _guard(self, handler: Callable, *args: Any) -> bool:
        try:
            handler(*args)
        except Exception:  # one call's broken prompt or storage error must not stop the others
            log.exception("IVR handler %s failed", getattr(handler, "__name__", handler))
            return False
        return True

    def _arm(self, call: CallInfo, delay: float, kind: int) -> None:
        self._disarm(call)
        self._seq += 1
        call.timer = [self._now() + delay, self._seq, kind, call]
        heapq.heappush(self._timers, call.timer)

    @staticmethod
    def _disarm(call: CallInfo) -> None:
        if call.timer is not None:
            call.timer[3] = None
            call.timer = None

    def _vars(self, call: CallInfo, **extra: Any) -> dict[str, Any]:
        return {"msisdn": call.caller, "brand_name": self._fx.brand_name(call.brand), **extra}

    def _say(self, call: CallInfo, *prompts: Prompt, **extra: Any) -> str:
        variables = self._vars(call, **extra)
        return " ".join(p.render(**variables) for p in prompts)

    def _shared(self, key: str) -> Prompt:
        return self._config().menus.prompts[key]

    def _hangup(self, call: CallInfo, prompt: str) -> None:
        call.state = BYE
        self._disarm(call)
        self._run(self.core.hangup(call.call_id, _headers(prompt, BYE)))

    # ----------------------------------------------------------------- call set-up
    def _service(self, number: str) -> Service | None:
        cfg = self._config()
        return cfg.menus.services.get(number) if cfg is not None else None

    def _on_incoming(self, ev: IncomingCall) -> None:
        profile = self._fx.profile(ev.from_user)
        call = CallInfo(ev.call_id, ev.from_user, ev.uri_user, profile.brand if profile else None, self._now())
        self._calls[call.call_id] = call
        service = self._service(ev.uri_user)
        if service is None:
            self._not_found(call)
            return
        if profile is not None:
            call.priority = self._config().setup.priority(profile.brand, profile.grade, profile.vip)
        ring_ms = int(self._settings["ivr.ring_ms"])
        if ring_ms > 0:
            self._run(self.core.ring(call.call_id))
            self._arm(call, ring_ms / 1000.0, _ANSWER)
        else:
            self._answer(call, service)

    def _not_found(self, call: CallInfo) -> None:
        call.outcome, call.state = "not_found", BYE
        cfg = self._config()
        prompt = self._say(call, cfg.menus.prompts["not_found"], number=call.service) if cfg else "Not Found"
        self._run(self.core.reject(call.call_id, 404, _headers(prompt, BYE)))

    def _answer(self, call: CallInfo, service: Service) -> None:
        call.answered_at = self._now()
        if service.kind == "balance":
            prompt = self._say(call, service.prompt)
            call.outcome = "balance"
            self._run(self.core.answer(call.call_id, _headers(prompt, BYE)))
            self._fx.balance_sms(call)
            self._hangup(call, prompt)  # the BYE leaves once the caller ACKs the 200
            return
        call.state, call.menu = MENU, service.start_menu(call.brand)
        self._run(self.core.answer(call.call_id, _headers(self._say(call, call.menu.prompt), MENU)))
        self._arm_menu(call)

    def _arm_menu(self, call: CallInfo) -> None:
        self._arm(call, self._config().menus.limits.no_input_s, _NO_INPUT)

    def _on_timer(self, kind: int, call: CallInfo) -> None:
        if self._calls.get(call.call_id) is not call:
            return
        if kind == _ANSWER:
            service = self._service(call.service)
            if service is None:  # the number left the fixtures while ringing
                self._not_found(call)
            else:
                self._answer(call, service)
            return
        call.no_input += 1
        if call.no_input > self._config().menus.limits.no_input_max:
            retry = call.menu.no_input if call.state == MENU and call.menu else self._shared("survey_invalid")
            self._hangup(call, self._say(call, retry, self._shared("goodbye")))
        else:
            self._arm_menu(call)

    # ----------------------------------------------------------------- keys
    def _on_dtmf(self, ev: Dtmf) -> None:
        call = self._calls.get(ev.call_id)
        if call is None or call.state in (RING, BYE):
            self._run(self.core.reply(ev, 200, _headers(self._goodbye(call), BYE)))
            return
        call.no_input = 0
        if call.state == MENU:
            self._menu_key(call, ev)
        elif call.state == SURVEY:
            self._survey_key(call, ev)
        elif call.state == QUEUE:
            waiting = self.queue.waiting
            prompt = self._say(call, self._shared("queue_hold"), waiting=waiting, queue=call.queue,
                               wait_min=self._wait_min(call))
            self._run(self.core.reply(ev, 200, _headers(prompt, QUEUE)))
        else:
            prompt = self._say(call, self._shared("agent"), agent=call.agent, queue=call.queue)
            self._run(self.core.reply(ev, 200, _headers(prompt, AGENT)))

    def _goodbye(self, call: CallInfo | None) -> str:
        cfg = self._config()
        if cfg is None:
            return "Goodbye"
        return cfg.menus.prompts["goodbye"].render(msisdn=call.caller if call else "",
                                                   brand_name=self._fx.brand_name(call.brand if call else None))

    def _reply(self, ev: Dtmf, prompt: str, state: str) -> None:
        self._run(self.core.reply(ev, 200, _headers(prompt, state)))

    def _menu_key(self, call: CallInfo, ev: Dtmf) -> None:
        menu = call.menu
        option = menu.options.get(ev.digit)
        if option is None:
            self._invalid(call, ev, menu.invalid, menu.prompt, MENU)
            return
        call.invalid = 0
        handler = getattr(self, f"_do_{option.action}")
        handler(call, ev, option)

    def _invalid(self, call: CallInfo, ev: Dtmf, invalid: Prompt, again: Prompt, state: str) -> None:
        call.invalid += 1
        if call.invalid > self._config().menus.limits.invalid_max:
            prompt = self._say(call, invalid, self._shared("goodbye"))
            self._reply(ev, prompt, BYE)
            self._hangup(call, prompt)
            return
        self._reply(ev, self._say(call, invalid, again), state)
        self._arm_menu(call)

    def _do_balance(self, call: CallInfo, ev: Dtmf, option: Option) -> None:
        balance = self._fx.balance(call.caller)
        if balance is None:  # not a subscriber: nothing to say
            self._invalid(call, ev, call.menu.invalid, call.menu.prompt, MENU)
            return
        self._reply(ev, self._say(call, option.prompt, call.menu.prompt, balance=f"{balance:.2f}"), MENU)
        self._arm_menu(call)

    def _do_shelf(self, call: CallInfo, ev: Dtmf, option: Option) -> None:
        self._fx.shelf_sms(call)
        self._reply(ev, self._say(call, option.prompt, call.menu.prompt), MENU)
        self._arm_menu(call)

    def _do_menu(self, call: CallInfo, ev: Dtmf, option: Option) -> None:
        service = self._service(call.service)  # a reload may have dropped the submenu: stay then
        call.menu = service.menus.get(option.target, call.menu) if service is not None else call.menu
        self._reply(ev, self._say(call, call.menu.prompt), MENU)
        self._arm_menu(call)

    def _do_hangup(self, call: CallInfo, ev: Dtmf, _option: Option) -> None:
        prompt = self._goodbye(call)
        self._reply(ev, prompt, BYE)
        self._hangup(call, prompt)

    def _do_survey(self, call: CallInfo, ev: Dtmf, _option: Option) -> None:
        target = self._fx.open_survey(call.caller)
        if target is None:
            self._reply(ev, self._say(call, self._shared("survey_none"), call.menu.prompt), MENU)
            self._arm_menu(call)
            return
        call.state = SURVEY
        self._survey_targets[call.call_id] = target
        self._reply(ev, self._say(call, self._shared("survey")), SURVEY)
        self._arm_menu(call)

    def _survey_key(self, call: CallInfo, ev: Dtmf) -> None:
        if ev.digit not in _SCORES:
            self._invalid(call, ev, self._shared("survey_invalid"), self._shared("survey"), SURVEY)
            return
        target = self._survey_targets.pop(call.call_id, call.call_id)
        self._fx.survey_score(target, int(ev.digit))
        prompt = self._say(call, self._shared("survey_thanks"), score=int(ev.digit))
        self._reply(ev, prompt, BYE)
        self._hangup(call, prompt)

    # ----------------------------------------------------------------- the agent queue
    def _wait_min(self, call: CallInfo) -> int:
        skill = self._config().setup.queues.get(call.queue or "")
        wait = self.queue.expected_wait_s(call.priority, skill)
        return 99 if math.isinf(wait) else max(1, math.ceil(wait / 60))

    def _is_busy(self, call: CallInfo, skill: str | None) -> bool:
        queue, setup = self.queue, self._config().setup
        if queue.waiting >= int(self._settings["ivr.queue_busy_threshold"]):
            return True
        return (setup.in_busy_hours(self._now())
                and queue.expected_wait_s(call.priority, skill) > setup.busy_expected_wait_s)

    def _do_agent(self, call: CallInfo, ev: Dtmf, option: Option) -> None:
        self._disarm(call)
        skill = self._config().setup.queues[option.target]
        busy = self._is_busy(call, skill)
        call.state, call.queue, call.queued_at = QUEUE, option.target, self._now()
        patience = self._rng.expovariate(1.0 / float(self._settings["ivr.patience_s"]))
        events = self.queue.offer(call.call_id, call.priority, skill, patience)
        mine = [e for e in events if isinstance(e, AgentPickedUp) and e.call_id == call.call_id]
        if mine:  # an agent was free: the answer to the key already says so
            self._picked_up(call, mine[0])
            prompt = self._say(call, self._shared("agent"), agent=call.agent, queue=call.queue)
            self._reply(ev, prompt, AGENT)
        else:
            key = "queue_busy" if busy else "queue"
            prompt = self._say(call, self._shared(key), waiting=self.queue.waiting - 1, queue=call.queue,
                               wait_min=self._wait_min(call))
            self._reply(ev, prompt, QUEUE)
            if busy:
                call.busy = True
                self._fx.busy_sms(call, "over_threshold")
        self._queue_events([e for e in events if e not in mine])

    def _picked_up(self, call: CallInfo, ev: AgentPickedUp) -> None:
        call.state, call.agent, call.agent_at = AGENT, ev.agent_id, self._now()

    def _queue_events(self, events: list[QueueEvent]) -> None:
        for ev in events:
            call = self._calls.get(ev.call_id)
            if call is None:
                continue
            if isinstance(ev, AgentPickedUp):
                self._picked_up(call, ev)
                prompt = self._say(call, self._shared("agent"), agent=call.agent, queue=call.queue)
                self._run(self.core.send_info(call.call_id, _headers(prompt, AGENT)))
            elif isinstance(ev, CallHandled):
                self._guard(self._agent_done, call)
            elif isinstance(ev, CallAbandoned):
                call.outcome = "abandoned"
                self._fx.busy_sms(call, "abandon")
                self._hangup(call, self._say(call, self._shared("abandoned")))

    def _survey_due(self, call: CallInfo) -> bool:
        minimum = float(self._settings["survey.min_call_s"])
        if minimum > 0 and self._now() - call.agent_at <= minimum:
            return False
        return self._rng.random() < float(self._settings["survey.sample_rate"])

    def _agent_done(self, call: CallInfo) -> None:
        """The agent's handling time is over: survey on the IVR, or by SMS, then goodbye."""
        call.outcome = "handled"
        due = self._survey_due(call)
        if due and self._settings["survey.mode"] == "ivr":
            call.state = SURVEY
            self._fx.survey(call, "ivr")
            self._run(self.core.send_info(call.call_id, _headers(self._say(call, self._shared("survey")), SURVEY)))
            self._arm_menu(call)
            return
        if due:
            self._fx.survey(call, "sms")
        self._hangup(call, self._goodbye(call))

    # ----------------------------------------------------------------- the end
    def _on_ended(self, ev: CallEnded) -> None:
        call = self._calls.pop(ev.call_id, None)
        if call is None:
            return
        self._disarm(call)
        self._survey_targets.pop(call.call_id, None)
        if ev.by != "gateway":
            self._caller_left(call)
        if call.outcome is None:
            call.outcome = self._outcome(call)
        self._fx.call_ended(call, ev.by)

    def _caller_left(self, call: CallInfo) -> None:
        if call.state == QUEUE:
            self._queue_events(self.queue.abandon(call.call_id))
            call.outcome = "abandoned"
            self._fx.busy_sms(call, "abandon")
        elif call.state == AGENT:
            self._queue_events(self.queue.release(call.call_id))
            call.outcome = "handled"
            if self._survey_due(call):
                self._fx.survey(call, "sms")

    @staticmethod
    def _outcome(call: CallInfo) -> str:
        if call.answered_at is None:
            return "failed"
        if call.agent_at is not None:
            return "handled"
        return "self_service"
