"""Long fuzz runs (outside CI) of every input surface: coverage-guided with atheris when installed.

Targets: the SMPP codec + session (server role, bytes in any chunking), the
SIP-lite parser + UAS core, the USSD session, the fixture loader. Only
protocol errors are allowed: any other exception is a crash and stops the
run with the input that caused it. Prints one JSON line of figures.

    .venv/bin/python -m bench.fuzz smpp --runs 1000000
    .venv/bin/python -m bench.fuzz all --runs 250000      # each target
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable

SEEDS_SMPP = [
    bytes.fromhex("0000002f000000020000000000000001534d50503354455354007365637265743038005355424d4954310000"
                  "0101000000"),
    bytes.fromhex("000000390000000400000000000000050000013132333435000001313030383600000000000000000000000548"
                  "656c6c6f"),
]


def smpp_target() -> Callable[[bytes], None]:
    from gateway.smpp.errors import SMPPError
    from gateway.smpp.session import SMSC, BindRequested, RequestReceived, Session, Timers

    clock = [0.0]

    def one(data: bytes) -> None:
        session = Session(SMSC, lambda: clock[0], Timers(), window=10)
        cut = data[0] % 7 + 1 if data else 1
        for i in range(0, len(data), cut):
            try:
                events = session.receive_data(data[i:i + cut])
            except SMPPError:
                return
            while events:
                event = events.pop(0)
                if isinstance(event, BindRequested):
                    events += session.accept_bind(event.pdu, "x")
                elif isinstance(event, RequestReceived) and event.pdu.command not in ("alert_notification",
                                                                                      "outbind"):
                    session.respond(event.pdu, 0)
            session.data_to_send()
        clock[0] += 100
        session.tick()
    return one


def sip_target() -> Callable[[bytes], None]:
    from ivr.sip import SipCore

    clock = [0.0]
    core = SipCore(lambda: clock[0], local_host="127.0.0.1", local_port=5060)

    def one(data: bytes) -> None:
        core.receive(data, ("127.0.0.1", 5061))
        clock[0] += 0.5
        core.tick()
    return one


def fixtures_target() -> Callable[[bytes], None]:
    from core.fixtures import parse_set
    from gateway.sections import all_sections

    def one(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        parse_set({"offers.yaml": text, "accounts.yaml": text}, all_sections())
    return one


def ussd_target() -> Callable[[bytes], None]:
    """The USSD dialog state machine on the demo menus: every input line a subscriber could type."""
    from core.fixtures import parse_set, read_dir
    from gateway.cli import DEMO_DIR
    from gateway.sections import all_sections
    from gateway.ussd import Route, UssdDialog

    parsed, _ = parse_set(read_dir(DEMO_DIR), all_sections())
    book = parsed["ussd.menus"]
    menu = book.menu_for("*200#")

    def one(data: bytes) -> None:
        dialog = UssdDialog(book, menu)
        dialog.open()
        for line in data.decode("utf-8", "replace").split("\n")[:20]:
            result = dialog.answer(line[:160])
            if isinstance(result, Route):
                dialog.routed("shelf" if result.purpose == "offers" else "help", "ok", [])
    return one


TARGETS = {"smpp": smpp_target, "sip": sip_target, "fixtures": fixtures_target, "ussd": ussd_target}


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if op < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.7:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif data:
            del data[rng.randrange(len(data))]
    return bytes(data)


def run_random(name: str, runs: int, seconds: float) -> dict:
    """Mutation fuzzing without coverage feedback (used when atheris is absent)."""
    target = TARGETS[name]()
    rng = random.Random(1)
    seeds = {"smpp": SEEDS_SMPP, "ussd": [b"1\n1\n1", b"2\n0\n9", b"98\n98\n1\n1\n#\n*"]}.get(
        name, [b"INVITE sip:10086@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", b"a: 1\n"])
    start = time.monotonic()
    done = 0
    while done < runs and time.monotonic() - start < seconds:
        data = _mutate(rng, rng.choice(seeds)) if rng.random() < 0.7 else rng.randbytes(rng.randrange(200))
        target(data)
        done += 1
    elapsed = time.monotonic() - start
    return {"target": name, "engine": "random", "cases": done, "seconds": round(elapsed, 1),
            "cases_per_s": round(done / elapsed), "crashes": 0}


def run_atheris(name: str, runs: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["gateway", "ivr", "offers", "notifier"]):
        target = TARGETS[name]()
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=512", "-print_final_stats=1"], target)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=3600.0, help="time limit per target (random engine)")
    parser.add_argument("--engine", choices=("random", "atheris"), default="random")
    args = parser.parse_args(argv)
    names = list(TARGETS) if args.target == "all" else [args.target]
    for name in names:
        if args.engine == "atheris":
            run_atheris(name, args.runs)
        else:
            print(json.dumps(run_random(name, args.runs, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
