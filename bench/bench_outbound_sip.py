"""Outbound SIP benchmark: the gateway's UAC (ivr.outbound_sip) calling a real sipp UAS.

sipp plays ``tests/sipp/uas_answer.xml`` (100, 180, 200 at once; after the ACK it waits for the
prompt INFO, presses 1 by INFO and waits for the BYE: eleven datagrams a call) on a free
loopback port. The UAC places ``--rate`` calls per second for ``--seconds`` (200/s for 60 s;
``--quick``: 10 s), sends the offer prompt on the answer and hangs up on the key. A call
counts as completed when it went Answered -> DtmfReceived("1") -> HungUp(by us); anything
else (Failed, TimedOut, the callee's BYE) is a failure. The run is bounded: it stops
``--grace`` seconds after the last call was placed whatever is still open (open calls count
as failures).

Prints the figures to stderr, writes bench/out/outbound_sip.json and prints the result as the
last line (JSON): calls/s attempted, answered and completed, failures, call-setup latency
(INVITE sent -> 200 received) p50/p99 in ms, and whether sipp itself saw every call succeed.

    .venv/bin/python -m bench.bench_outbound_sip [--quick] [--rate 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT, ROOT, write_result

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIO = ROOT / "tests" / "sipp" / "uas_answer.xml"
TICKS_PER_S = 50


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Dialer:
    """Places calls at a fixed rate and tallies what each one did."""

    def __init__(self, reactor, protocol, port: int, rate: int, total: int) -> None:
        self.reactor, self.protocol, self.port = reactor, protocol, port
        self.rate, self.total = rate, total
        self.placed = self.answered = self.completed = self.failed = 0
        self.setup_ms: list[float] = []
        self.failures: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._keyed: set[str] = set()
        self._handles: dict = {}
        self.began = self.last_placed = 0.0

    def start(self) -> None:
        self.began = time.monotonic()
        self._tick()

    def _tick(self) -> None:
        due = min(self.total, int((time.monotonic() - self.began) * self.rate) + 1)
        while self.placed < due:
            self._place(self.placed)
            self.placed += 1
        if self.placed < self.total:
            self.reactor.callLater(1.0 / TICKS_PER_S, self._tick)
        else:
            self.last_placed = time.monotonic()

    def _place(self, n: int) -> None:
        handle = self.protocol.place_call("127.0.0.1", self.port, f"139{n % 100_000_000:08d}", "10086",
                                          {"X-Project": "bench"}, self.on_event)
        self._started[handle.call_id] = time.monotonic()
        self._handles[handle.call_id] = handle

    def on_event(self, event) -> None:
        from ivr.sip.uac import TERMINAL, Answered, DtmfReceived, HungUp

        call_id = event.call_id
        if isinstance(event, Answered):
            self.answered += 1
            self.setup_ms.append((time.monotonic() - self._started[call_id]) * 1000)
            self._handles[call_id].send_prompt("按1订购 30元6GB流量包", "offer", {"X-Offer-Code": "LL30"})
        elif isinstance(event, DtmfReceived):
            self._keyed.add(call_id)
            self._handles[call_id].hangup()
        elif isinstance(event, HungUp) and not event.by_remote and call_id in self._keyed:
            self.completed += 1
            self._done(call_id)
        elif isinstance(event, TERMINAL):
            self.failed += 1
            kind = type(event).__name__
            self.failures[kind] = self.failures.get(kind, 0) + 1
            self._done(call_id)

    def _done(self, call_id: str) -> None:
        self._handles.pop(call_id, None)
        self._keyed.discard(call_id)

    @property
    def open_calls(self) -> int:
        return len(self._handles)


def start_sipp(port: int, total: int, seconds: float, workdir: Path) -> subprocess.Popen:
    cmd = [SIPP, "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(port), "-m", str(total), "-l", "4000",
           "-nostdin", "-timeout", f"{int(seconds) + 90}s", "-trace_stat", "-stf", str(workdir / "stat.csv"),
           "-fd", "1", "-buff_size", str(4 * 1024 * 1024), "-trace_err", "-error_file", str(workdir / "errors.log")]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sipp_totals(workdir: Path) -> dict:
    path = workdir / "stat.csv"
    if not path.exists():
        return {}
    rows = list(csv.DictReader(path.read_text().splitlines(), delimiter=";"))
    if not rows:
        return {}
    last = rows[-1]
    return {"successful": int(last.get("SuccessfulCall(C)", 0)), "failed": int(last.get("FailedCall(C)", 0))}


def run(rate: int, seconds: float, grace: float, log) -> dict:
    from twisted.internet import reactor

    from ivr.outbound_sip import listen_outbound
    from tests.test_sip_uac_sipp import free_udp_port, wait_bound

    total = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_udp_port()
        sipp = start_sipp(port, total, seconds, workdir)
        try:
            wait_bound(port, sipp)
            protocol = listen_outbound(reactor, ring_timeout=10.0, max_calls=total + 1)
            dialer = Dialer(reactor, protocol, port, rate, total)

            def watch() -> None:
                done = dialer.placed == total and dialer.open_calls == 0
                late = dialer.last_placed and time.monotonic() - dialer.last_placed > grace
                if done or late:
                    reactor.stop()
                else:
                    reactor.callLater(0.2, watch)

            reactor.callWhenRunning(dialer.start)
            reactor.callWhenRunning(watch)
            reactor.run()
            ended = time.monotonic()
            try:
                sipp.wait(timeout=15)  # it ends by itself once it has seen ``total`` calls
            except subprocess.TimeoutExpired:
                log(f"  sipp still running after {total} calls: {sipp_totals(workdir)}")
        finally:
            sipp.kill()
        totals = sipp_totals(workdir)
        errors = (workdir / "errors.log").read_text(errors="replace") if (workdir / "errors.log").exists() else ""
        if errors:
            (OUT / "outbound_sip_sipp_errors.log").write_text(errors)
            log(f"  sipp reported errors: see {OUT / 'outbound_sip_sipp_errors.log'}")
    dial_s = max(dialer.last_placed - dialer.began, 1e-9)
    p50, p99 = percentile(dialer.setup_ms, 0.50), percentile(dialer.setup_ms, 0.99)
    return {"name": "outbound_sip", "rate_target": rate, "seconds_target": seconds, "calls": total,
            "attempted": dialer.placed, "answered": dialer.answered, "completed": dialer.completed,
            "failed": dialer.failed + dialer.open_calls, "failures": dialer.failures, "left_open": dialer.open_calls,
            "attempted_per_s": round(dialer.placed / dial_s, 1), "answered_per_s": round(dialer.answered / dial_s, 1),
            "completed_per_s": round(dialer.completed / dial_s, 1),
            "setup_p50_ms": round(p50, 2) if p50 is not None else None,
            "setup_p99_ms": round(p99, 2) if p99 is not None else None,
            "wall_s": round(ended - dialer.began, 1), "sipp": {**totals, "exit": sipp.returncode},
            "udp_counters": dict(protocol.endpoint.counters)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60")
    parser.add_argument("--rate", type=int, default=200, help="calls placed per second")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of dialling (default 60, quick 10)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds after the last call before giving up")
    args = parser.parse_args(argv)
    if not Path(SIPP).exists():
        print("sipp is not installed (Debian package sip-tester; make test-deps)", file=sys.stderr)
        return 2
    seconds = args.seconds or (10.0 if args.quick else 60.0)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    log(f"outbound SIP: {args.rate} calls/s for {seconds:g} s to sipp uas_answer.xml")
    result = run(args.rate, seconds, args.grace, log)
    log(f"  attempted {result['attempted']} ({result['attempted_per_s']}/s), answered {result['answered']} "
        f"({result['answered_per_s']}/s), completed {result['completed']}, failed {result['failed']} "
        f"{result['failures'] or ''}")
    log(f"  setup latency p50 {result['setup_p50_ms']} ms, p99 {result['setup_p99_ms']} ms; "
        f"sipp {result['sipp']}; wall {result['wall_s']} s")
    write_result("outbound_sip", result)
    print(json.dumps({key: result[key] for key in ("attempted_per_s", "answered_per_s", "completed_per_s",
                                                    "attempted", "answered", "completed", "failed",
                                                    "setup_p50_ms", "setup_p99_ms")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
