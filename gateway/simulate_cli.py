"""``run_gateway.py simulate``: the testers' SMS/USSD client (smpplib), queue simulator, fake SMSC, callees, market."""

from __future__ import annotations

import argparse
import json
import sys


def add_parsers(parser: argparse.ArgumentParser) -> None:
    from gateway.cli import Formatter

    subs = parser.add_subparsers(dest="simulate_command", required=True, metavar="SIMULATOR")

    sms = subs.add_parser(
        "sms", formatter_class=Formatter,
        help="bind to a running gateway with smpplib, send a command, print the reply",
        description="Bind with smpplib (as an ESME), text a command, print what comes back "
                    "(reassembled, decoded).\n\nexamples:\n"
                    "  python run_gateway.py simulate sms --from 13800000001 --text 200\n"
                    "  python run_gateway.py simulate sms --from 13800000001 --interactive\n"
                    "  python run_gateway.py simulate sms --from 13800000001 --ussd '*200#'")
    sms.add_argument("--host", default="127.0.0.1")
    sms.add_argument("--port", type=int, default=2775, help="gateway SMPP port")
    sms.add_argument("--system-id", default="tester")
    sms.add_argument("--password", default="test1234")
    sms.add_argument("--from", dest="sender", default="13800000001", help="subscriber number (source_addr)")
    sms.add_argument("--to", default="10086", help="service number (destination_addr)")
    sms.add_argument("--text", help="command to send (e.g. 200, KTLL30, Y, 0000, CXYE, TD)")
    sms.add_argument("--interactive", action="store_true", help="keep the session and read commands from stdin")
    sms.add_argument("--ussd", metavar="STRING", help="open a USSD session, e.g. '*200#'; answer each screen "
                     "on stdin")
    sms.add_argument("--ussd-answers", metavar="A,B,...", help="answer the USSD screens with these keys instead "
                     "of reading stdin, e.g. 1,1,1 (offers, first offer, confirm)")
    sms.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each reply")
    sms.add_argument("--receipt", action="store_true", help="ask for a delivery receipt (registered_delivery=1)")
    sms.add_argument("--json", action="store_true", help="print each reply as a JSON line")
    sms.set_defaults(simulate_handler=run_sms)

    queue = subs.add_parser(
        "queue", formatter_class=Formatter, help="run the agent-queue simulator alone (same code as the IVR)",
        description="Seeded discrete-event simulation of an agent queue; prints p_wait, asa_s, service_level, "
                    "abandon_rate, occupancy, calls.\n\nexample:\n"
                    "  python run_gateway.py simulate queue --calls-per-hour 300 --aht 180 --agents 16 "
                    "--hours 8 --seed 1 --json")
    queue.add_argument("--calls-per-hour", type=float, required=True)
    queue.add_argument("--aht", type=float, required=True, help="mean handling seconds (exponential)")
    queue.add_argument("--agents", type=int, required=True)
    queue.add_argument("--hours", type=float, default=1.0)
    queue.add_argument("--patience", type=float, default=None, help="mean patience seconds; none = never abandon")
    queue.add_argument("--seed", type=int, default=0)
    queue.add_argument("--answer-within", type=float, default=20.0, help="service-level threshold in seconds")
    queue.add_argument("--json", action="store_true")
    queue.set_defaults(simulate_handler=run_queue)

    smsc = subs.add_parser(
        "smsc", formatter_class=Formatter, help="a fake operator SMSC with receipts, MO injection and faults",
        description="Serve as an operator SMSC for --upstream and partners' ESMEs: receipts, MO injection and "
                    "faults by flag or by magic destination number (19900000001 throttle, ...02 queue full, "
                    "...03 no response, ...04 unbind on submit, ...05 receipt before response, "
                    "...06 undelivered receipt, ...07 slow responses). Prints its port as JSON, and its "
                    "counters when stopped.\n\nexamples:\n"
                    "  python run_gateway.py simulate smsc --port 2776 --fault throttle\n"
                    "  python run_gateway.py simulate smsc --port 2776 --mo-csv mo.csv --mo-rate 5 --id-format mixed")
    smsc.add_argument("--host", default="127.0.0.1")
    smsc.add_argument("--port", type=int, default=2776, help="0 = pick a free one")
    smsc.add_argument("--fault", action="append", default=[],
                      help="fault for every submit_sm: throttle, queue_full, no_response, unbind_on_submit, "
                           "receipt_first, undelivered, slow (repeat to alternate)")
    smsc.add_argument("--receipt-delay", type=float, default=0.0, help="seconds from submit to receipt")
    smsc.add_argument("--receipt-stat", default="DELIVRD", help="stat of every receipt (DELIVRD, UNDELIV, ...)")
    smsc.add_argument("--id-format", choices=("dec", "hex", "mixed"), default="dec",
                      help="message ids: decimal, hex, or hex in submit_sm_resp and zero-padded decimal in receipts")
    smsc.add_argument("--slow-s", type=float, default=2.0, help="response delay of the 'slow' fault")
    smsc.add_argument("--system-id", default="", help="accept only this system_id (default: any)")
    smsc.add_argument("--password", default="", help="with --system-id: the password it must bind with")
    smsc.add_argument("--mo-csv", help="CSV of source,dest,text MO to inject once something is bound")
    smsc.add_argument("--mo-rate", type=float, default=0.0,
                      help="MO per second: the CSV's pace, or without --mo-csv '200' from the demo numbers")
    smsc.set_defaults(simulate_handler=run_smsc)

    callees = subs.add_parser(
        "callees", formatter_class=Formatter,
        help="a SIP UAS standing in for subscribers' phones on outbound calls",
        description="Answer outbound calls as the subscribers would: answer, busy (486) or no answer (rings "
                    "until CANCEL) with probabilities per segment and hour; once answered, an offer prompt (INFO "
                    "with X-Offer-Code and X-IVR-Prompt) is accepted (DTMF 1), refused (2 or hang up) or opted "
                    "out of (9) with a propensity that grows with the offer's fit to the subscriber. Facts come "
                    "from --db (unknown numbers behave by default). Prints its port as JSON, and a JSON summary "
                    "when stopped.\n\nexamples:\n"
                    "  python run_gateway.py simulate callees --port 5080 --seed 1 --db sqlite:///var/gateway.db\n"
                    "  python run_gateway.py simulate callees --port 0 --hour 19 --time-scale 0.1 --duration 60")
    callees.add_argument("--host", default="127.0.0.1")
    callees.add_argument("--port", type=int, default=5080, help="UDP port; 0 = pick a free one")
    callees.add_argument("--seed", type=int, default=0, help="same seed, same behaviour per number and call")
    callees.add_argument("--db", help="database URL with the subscribers (facts, segments)")
    callees.add_argument("--fixtures", help="fixture directory for the offers catalog (default: the set loaded "
                         "last into --db, else the demo fixtures)")
    callees.add_argument("--tz", default="Asia/Shanghai", help="the subscribers' time zone for the hour of day")
    callees.add_argument("--hour", type=int, choices=range(24), metavar="0-23",
                         help="behave as at this local hour whatever the clock says")
    callees.add_argument("--time-scale", type=float, default=1.0,
                         help="multiply ringing and thinking times (0 = at once)")
    callees.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until "
                         "SIGINT/SIGTERM)")
    callees.set_defaults(simulate_handler=run_callees)

    from gateway.market_cli import add_parser as add_market

    add_market(subs, Formatter)


def run_sms(args) -> int:
    from gateway.sim_client import SimulatorClient, SimulatorError

    try:
        client = SimulatorClient(args.host, args.port, args.system_id, args.password, wait=args.wait)
        client.connect()
    except SimulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.ussd:
            return _run_ussd(client, args)
        if args.interactive:
            return _interactive(client, args)
        if not args.text:
            print("error: give --text, --interactive or --ussd", file=sys.stderr)
            return 2
        return _print_replies(client.command(args.sender, args.to, args.text, receipt=args.receipt), args)
    except SimulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _print_replies(replies, args) -> int:
    if not replies:
        print("(no reply)", file=sys.stderr)
        return 1
    for reply in replies:
        if args.json:
            print(json.dumps(reply, ensure_ascii=False))
        else:
            print(reply["text"])
    return 0


def _interactive(client, args) -> int:
    print(f"bound as {args.system_id}; texting {args.to} from {args.sender}. Type commands, Ctrl-D to quit.",
          file=sys.stderr)
    for line in sys.stdin:
        text = line.strip()
        if text:
            _print_replies(client.command(args.sender, args.to, text), args)
    return 0


def _run_ussd(client, args) -> int:
    """Show each screen; answers come from --ussd-answers, else from stdin (one per line) until the end bit."""
    scripted = [a for a in (args.ussd_answers or "").split(",") if a.strip()] if args.ussd_answers else None
    screen = client.ussd_start(args.sender, args.ussd)
    while True:
        if args.json:
            print(json.dumps(screen, ensure_ascii=False))
        else:
            print(screen["text"])
        if screen.get("end"):
            return 0
        if scripted is not None:
            if not scripted:
                return 0
            answer = scripted.pop(0)
        else:
            if sys.stdin.isatty():
                print("> ", end="", file=sys.stderr, flush=True)
            answer = sys.stdin.readline()
            if not answer:
                return 0
        screen = client.ussd_answer(args.sender, answer.strip(), screen)


def run_queue(args) -> int:
    from ivr.queue import simulate

    result = simulate(calls_per_hour=args.calls_per_hour, aht_s=args.aht, agents=args.agents, hours=args.hours,
                      patience_s=args.patience, seed=args.seed, answer_within_s=args.answer_within)
    if args.json:
        print(json.dumps(result))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="agent queue simulation")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in result.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        Console().print(table)
    return 0


def run_smsc(args) -> int:
    from gateway.smsc_sim import run

    return run(args)


def run_callees(args) -> int:
    from ivr.callee_server import run

    return run(args)
