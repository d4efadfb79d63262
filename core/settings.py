"""Service knobs: defaults, the fixtures' ``config.yaml`` and ``--set key=value`` overrides.

Every knob has a type, a default, bounds and a one-line description; an
unknown key or a bad value is an error that lists what is valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


KNOBS: dict[str, Knob] = {
    "smpp.session_init": Knob(float, 30.0, "seconds a new connection may stay unbound", 0.01, 3600),
    "smpp.enquire_link": Knob(float, 30.0, "idle seconds before the gateway pings the peer", 0.01, 3600),
    "smpp.inactivity": Knob(float, 300.0, "seconds without any PDU before the session is closed", 0.01, 86400),
    "smpp.response": Knob(float, 30.0, "seconds to wait for a response PDU", 0.01, 3600),
    "smpp.window": Knob(int, 60, "outstanding requests the gateway sends an ESME session (deliver_sm: a 3-part "
                               "reply takes 3; 60 keeps 20 replies in flight per bind)", 1, 1000),
    "smpp.upstream_window": Knob(int, 10, "outstanding submit_sm per session to an upstream SMSC", 1, 1000),
    "smpp.max_reply_delay_ms": Knob(float, 100.0, "while accepted replies have waited this long, a submit_sm to a "
                                    "service number is refused at once (ESME_RMSGQFUL)", 1, 600000),
    "smpp.ack_after_reply": Knob(bool, True, "a submit_sm to a service number is acknowledged when its reply is "
                                 "written to the ESME (not only committed), so the ESME's window bounds the "
                                 "replies in flight; held at most 1 s"),
    "pipeline.batch_ms": Knob(float, 3.0, "under load, accepted messages are routed and committed together at most "
                              "this often (an idle gateway commits at once, and a batch of 16 at the end of "
                              "the reactor turn)", 0, 1000),
    "gc.freeze_s": Knob(float, 2.0, "seconds between collections of the objects made since the last one, "
                        "after which the survivors (the shelf cache) leave the collector's sight (gc.freeze); "
                        "0: Python's own full collections, which walk every object", 0, 86400),
    "gc.sweep_s": Knob(float, 3600.0, "seconds between full garbage collections of the frozen objects too "
                       "(one pause of up to a second with 100k cached shelves, logged; 0: never)", 0, 30 * 86400),
    "malloc.arena_max": Knob(int, 1, "glibc arenas the process's threads allocate from (0: glibc's own, eight "
                             "per core; each thread pool job's arena kept what it freed); MALLOC_ARENA_MAX in the "
                             "environment wins", 0, 1024),
    "malloc.trim_s": Knob(float, 60.0, "seconds between malloc_trim calls handing the C allocator's free pages "
                          "back to the system (glibc keeps what the thread pool freed; 0: never)", 0, 86400),
    "sqlite.checkpoint_ms": Knob(float, 50.0, "milliseconds between WAL checkpoints done in a thread, so the "
                                 "reactor's commits never copy and sync the log themselves (0: only SQLite's own, "
                                 "in the commits, every 16,000 pages)", 0, 60000),
    "smpp.max_pdu": Knob(int, 65536, "largest accepted command_length in bytes", 64, 1048576),
    "smpp.reassembly_timeout": Knob(float, 60.0, "seconds to wait for the missing parts of a long MO", 1, 3600),
    "smpp.retry_max": Knob(int, 5, "delivery attempts of an MT before it fails", 1, 100),
    "smpp.retry_base": Knob(float, 2.0, "first retry delay in seconds (doubles each attempt)", 0.01, 3600),
    "smpp.validity": Knob(float, 86400.0, "seconds an undelivered MT waits in the outbox before it expires",
                          1, 30 * 86400),
    "router.confirm_window_s": Knob(float, 600.0, "seconds a KT order waits for its Y", 1, 86400),
    "router.shelf_prompt_window_s": Knob(float, 600.0, "seconds a lone digit refers to the last shelf", 1, 86400),
    "router.max_sms_parts": Knob(int, 3, "parts the 200 shelf reply may use", 1, 10),
    "shelf.top_k": Knob(int, 5, "offers on a shelf", 1, 20),
    "shelf.refusal_days": Knob(int, 90, "days a refused offer stays off the shelf", 0, 3650),
    "learning.enabled": Knob(bool, True, "the shelf's rank score has the learned (Thompson) term"),
    "learning.holdout_share": Knob(float, 0.1, "share of subscribers kept on the fixed ranking", 0, 1),
    "learning.seed": Knob(int, 1, "seed of the holdout hash and the Thompson draws", 0, 2**31),
    "learning.refresh_s": Knob(float, 30.0, "seconds between reloads of the learned state", 1, 86400),
    "learning.weight": Knob(float, 1.0, "exponent of the learned factor (0 turns it off)", 0, 5),
    "learning.floor": Knob(float, 0.25, "lowest learned factor: an offer keeps this share of its fixed score",
                           0.01, 1),
    "learning.cap": Knob(float, 4.0, "highest learned factor", 1, 100),
    "learning.prior_rate": Knob(float, 0.02, "prior conversion of a priority-50 offer", 0.0001, 0.5),
    "learning.prior_strength": Knob(float, 100.0, "pseudo-exposures the prior weighs", 1, 1e6),
    "learning.window_days": Knob(float, 30.0, "days of events the learned state counts", 1, 3650),
    "ivr.agents": Knob(int, 5, "simulated agents", 0, 10000),
    "ivr.agent_aht_s": Knob(float, 180.0, "mean agent handling seconds (exponential)", 0.01, 86400),
    "ivr.ring_ms": Knob(int, 0, "ringing before the IVR answers (ms)", 0, 60000),
    "ivr.queue_busy_threshold": Knob(int, 3, "calls waiting at or above which the queue is busy", 0, 100000),
    "ivr.busy_sms_ratio": Knob(float, 1.0, "share of busy/abandoned callers sent the guidance SMS", 0, 1),
    "ivr.patience_s": Knob(float, 120.0, "mean simulated caller patience in the queue", 0.01, 86400),
    "ivr.seed": Knob(int, 1, "random seed of the simulated agents", 0, 2**31),
    "survey.sample_rate": Knob(float, 1.0, "share of agent calls followed by a survey", 0, 1),
    "survey.min_call_s": Knob(float, 0.0, "minimum agent-call seconds for a survey", 0, 86400),
    "survey.mode": Knob(str, "sms", "survey by 'sms' or by staying on the 'ivr'", choices=("sms", "ivr")),
    "survey.expiry_s": Knob(float, 86400.0, "seconds a survey waits for its score", 1, 30 * 86400),
    "outbox.rate": Knob(float, 10000.0, "MT messages per second the sender drains at most", 0.1, 100000),
    "retention.outbox_days": Knob(float, 30.0, "days finished outbox rows are kept (delivered, failed, expired, "
                                  "sent)", 0.01, 3650),
    "retention.message_log_days": Knob(float, 30.0, "days message_log rows are kept", 0.01, 3650),
    "retention.hour": Knob(int, 3, "local hour (0-23) of the daily retention job", 0, 23),
    "campaign.quiet_start": Knob(str, "21:00", "start of quiet hours (local time HH:MM)"),
    "campaign.quiet_end": Knob(str, "08:00", "end of quiet hours (local time HH:MM)"),
    "outbound.callee_host": Knob(str, "127.0.0.1", "IP address of the callees' SIP endpoint (simulate callees, sipp)"),
    "outbound.callee_port": Knob(int, 5080, "UDP port of the callees' SIP endpoint", 1, 65535),
    "outbound.sync_s": Knob(float, 5.0, "seconds between checks for projects to start or stop dialling", 0.1, 3600),
}


class SettingsError(ValueError):
    pass


def coerce(key: str, raw: Any) -> Any:
    """Turn a raw value (text from ``--set`` or YAML) into the knob's type, or raise SettingsError."""
    knob = KNOBS.get(key)
    if knob is None:
        raise SettingsError(f"unknown setting '{key}'; valid keys: {', '.join(sorted(KNOBS))}")
    try:
        if knob.kind is bool:
            value: Any = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        elif knob.kind is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError("not an integer")
        else:
            value = knob.kind(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"setting '{key}' expects {knob.kind.__name__}, got {raw!r}") from None
    if knob.low is not None and value < knob.low or knob.high is not None and value > knob.high:
        raise SettingsError(f"setting '{key}'={value!r} is outside [{knob.low}, {knob.high}]")
    if knob.choices and value not in knob.choices:
        raise SettingsError(f"setting '{key}' must be one of {', '.join(knob.choices)}")
    return value


class Settings(Mapping[str, Any]):
    """An immutable view: defaults, then fixture values, then command-line overrides."""

    def __init__(self, *layers: Mapping[str, Any]):
        values = {key: knob.default for key, knob in KNOBS.items()}
        for layer in layers:
            for key, raw in layer.items():
                values[key] = coerce(key, raw)
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        return Settings(self._values, overrides)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["ivr.agents=3", ...]`` -> ``{"ivr.agents": 3}``; raises SettingsError naming the bad pair."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SettingsError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        out[key.strip()] = coerce(key.strip(), raw.strip())
    return out
