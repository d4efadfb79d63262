"""``run_gateway.py`` commands. Each has --help with an example; errors say what to do next."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.db import DEFAULT_URL
from core.settings import KNOBS, SettingsError, parse_overrides

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "fixtures" / "demo"


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _sub(subs, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_text, description=f"{help_text}\n\nexample:\n  {example}",
                           formatter_class=Formatter)


def _serve_parser(subs) -> None:
    p = _sub(subs, "serve", "serve SMPP, SIP-lite IVR, HTTP ops API and SMTP",
             "python run_gateway.py serve --demo --workers 2 --set ivr.agents=2")
    p.add_argument("--host", default="127.0.0.1", help="address every listener binds to")
    p.add_argument("--smpp-port", type=int, default=2775, help="SMPP 3.4 server port (0 = pick a free one)")
    p.add_argument("--sip-port", type=int, default=5060, help="SIP-lite IVR UDP port")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP ops API and dashboard port")
    p.add_argument("--smtp-in-port", type=int, default=2525, help="SMTP port for email commands")
    p.add_argument("--smtp-out-port", type=int, default=8025, help="SMTP relay the gateway sends mail to")
    p.add_argument("--smtp-sink", action="store_true", help="also run an SMTP sink on --smtp-out-port "
                   "that writes mail to VAR/mail/")
    p.add_argument("--db", default=DEFAULT_URL, help="database URL (sqlite:///... or postgresql+psycopg://...)")
    p.add_argument("--upstream", metavar="HOST:PORT", help="bind to an operator SMSC as an ESME")
    p.add_argument("--upstream-account", default="gateway:secret1",
                   help="SYSTEM_ID:PASSWORD used with --upstream")
    p.add_argument("--upstream-bind", choices=("trx", "pair"), default="trx",
                   help="bind one transceiver, or a transmitter + receiver pair")
    p.add_argument("--demo", action="store_true", help="load fixtures/demo (first start) and a synthetic population")
    p.add_argument("--fixtures", metavar="DIR", help="load this fixture folder at start")
    p.add_argument("--population", type=int, default=None, metavar="N",
                   help="synthetic subscribers to generate with --demo (default 1000)")
    p.add_argument("--config", metavar="FILE", help="YAML/JSON file of settings (key: value), like --set")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a service knob; keys: " + ", ".join(sorted(KNOBS)))
    p.add_argument("--var-dir", default="var", help="folder for mail sink, reports and artifacts")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines on stderr")
    p.add_argument("--instance", default=None, help="name of this process (group) in a multi-process setup")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes sharing the ports and the database (default: the number of cores on "
                        "PostgreSQL, 1 on SQLite); 1 serves in this process")
    p.add_argument("--cluster", default=None, help=argparse.SUPPRESS)  # a worker: the parent's socket
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_gateway.py", formatter_class=Formatter,
        description="Telecom self-service gateway: SMS/USSD commands, SIP IVR, campaigns.\n\n"
                    "first session:\n  make run            # in one terminal\n"
                    "  .venv/bin/python run_gateway.py simulate sms --from 13800000001 --text 200")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(subs)

    p = _sub(subs, "check-fixtures", "validate a fixture folder; prints file:line: reason per problem",
             "python run_gateway.py check-fixtures fixtures/demo")
    p.add_argument("dir")

    p = _sub(subs, "load-fixtures", "validate and load a fixture folder in one transaction",
             "python run_gateway.py load-fixtures fixtures/demo --db sqlite:///var/gateway.db")
    p.add_argument("dir")
    p.add_argument("--db", default=DEFAULT_URL)

    p = _sub(subs, "gen-population", "write a seeded synthetic subscriber population",
             "python run_gateway.py gen-population --size 100000 --seed 7 --db sqlite:///var/gateway.db")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--db", default=DEFAULT_URL)

    p = _sub(subs, "explain", "why a subscriber sees or misses each offer",
             "python run_gateway.py explain 13800000001 --db sqlite:///var/gateway.db")
    p.add_argument("msisdn")
    p.add_argument("--db", default=DEFAULT_URL)
    p.add_argument("--json", action="store_true")

    from gateway import simulate_cli

    simulate_cli.add_parsers(_sub(subs, "simulate", "testers' simulators: sms, queue, smsc, callees, market",
                                  "python run_gateway.py simulate sms --from 13800000001 --text 200"))

    p = _sub(subs, "campaign", "campaign tools", "python run_gateway.py campaign plan care-roaming --at "
             "2026-11-24T10:00:00+08:00 --json")
    csubs = p.add_subparsers(dest="campaign_command", required=True)
    plan = _sub(csubs, "plan", "who would get what, and who is excluded (nothing is sent)",
                "python run_gateway.py campaign plan care-roaming --at 2026-11-24T10:00:00+08:00 --json")
    plan.add_argument("id")
    plan.add_argument("--at", required=True, help="ISO time the plan is made for")
    plan.add_argument("--db", default=DEFAULT_URL)
    plan.add_argument("--json", action="store_true", help="counts and 20 sample recipients as one JSON object")
    whole = plan.add_mutually_exclusive_group()
    whole.add_argument("--all", action="store_true", help="every targeted subscriber, one JSON line each "
                       "(recipient with send time and text, or the exclusion reason), then a summary line")
    whole.add_argument("--csv", action="store_true", help="every targeted subscriber as CSV with a header "
                       "(the summary goes to stderr)")

    p = _sub(subs, "project", "outbound call project tools", "python run_gateway.py project plan data-alert-call "
             "--at 2026-12-02T10:00:00+08:00 --json")
    psubs = p.add_subparsers(dest="project_command", required=True)
    plan = _sub(psubs, "plan", "who would be called, who gets SMS instead, who is excluded and why (nothing is "
                "dialled)", "python run_gateway.py project plan data-alert-call --at 2026-12-02T10:00:00+08:00 --json")
    plan.add_argument("id", help="project id from projects.yaml (GET /api/projects lists them)")
    plan.add_argument("--at", required=True, help="ISO time the plan is made for, e.g. 2026-12-02T10:00:00+08:00")
    plan.add_argument("--db", default=DEFAULT_URL, help="database URL (the one serve uses)")
    plan.add_argument("--json", action="store_true", help="one JSON object (keys in the README) instead of text")

    p = _sub(subs, "hash-password", "scrypt hash for accounts.yaml", "python run_gateway.py hash-password s3cret")
    p.add_argument("password")
    p = _sub(subs, "hash-token", "SHA-256 of an ops bearer token for ops_tokens.yaml",
             "python run_gateway.py hash-token my-long-random-token")
    p.add_argument("token")

    p = _sub(subs, "bench", "run the benchmark suite and print one table", "python run_gateway.py bench --quick")
    p.add_argument("--quick", action="store_true", help="small counts (a couple of minutes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a worker group's workers are started with
    handler = COMMANDS.get(args.command)
    return handler(args, parser)


def cmd_serve(args, parser) -> int:
    try:
        overrides = _config_file(args.config) if args.config else {}
        overrides.update(parse_overrides(args.set))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from gateway.service import serve

    return serve(args, overrides)


def _config_file(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read --config {path}: {exc}") from None
    data = data.get("settings", data) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        raise SettingsError(f"--config {path}: expected a mapping of key: value")
    return parse_overrides(f"{k}={v}" for k, v in data.items())


def _print_problems(problems) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_check_fixtures(args, parser) -> int:
    from core.fixtures import FixtureError, parse_set, read_dir
    from gateway.sections import all_sections

    try:
        files = read_dir(args.dir)
    except FixtureError as exc:
        _print_problems(exc.problems)
        return 1
    _, problems = parse_set(files, all_sections())
    if problems:
        _print_problems(problems)
        print(f"{len(problems)} problem(s) in {args.dir}; fix them and run check-fixtures again", file=sys.stderr)
        return 1
    print(f"{args.dir}: {len(files)} files, no problems")
    return 0


def _offline_gateway(db_url: str):
    from twisted.internet import reactor

    from gateway.app import Gateway

    return Gateway(reactor, db_url)


def cmd_load_fixtures(args, parser) -> int:
    from core.fixtures import FixtureError

    gateway = _offline_gateway(args.db)
    try:
        counts = gateway.load_fixtures_dir(args.dir)
    except FixtureError as exc:
        _print_problems(exc.problems)
        print("nothing was loaded", file=sys.stderr)
        return 1
    print(json.dumps({"loaded": counts}, ensure_ascii=False))
    return 0


def cmd_gen_population(args, parser) -> int:
    from core.db import make_engine, migrate
    from gateway.progress import progress_reporter
    from offers.population import generate

    engine = make_engine(args.db)
    migrate(engine)
    with progress_reporter("gen-population", args.size) as report:
        written = generate(engine, args.size, args.seed, progress=report)
    print(json.dumps({"subscribers": written, "seed": args.seed}))
    return 0


def cmd_explain(args, parser) -> int:
    from offers import learning
    from offers.shelf import explain

    gateway = _offline_gateway(args.db)
    if not gateway.restore_fixtures():
        print("no fixtures in this database: run load-fixtures first (or serve --demo)", file=sys.stderr)
        return 1
    catalog, settings, now = gateway.snapshot.offers, gateway.settings, gateway.now()
    with gateway.db() as session:
        # the durable learned state as the serving processes read it (the same draw per number)
        learned = learning.load(session, catalog, settings, now, int(now // settings["learning.refresh_s"]))
        result = explain(session, catalog, args.msisdn, now, settings, learned=learned)
    if result is None:
        print(f"unknown subscriber {args.msisdn}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        from gateway.tables import print_explain

        print_explain(result)
    return 0


def cmd_campaign(args, parser) -> int:
    from gateway.progress import progress_reporter
    from notifier.campaigns import plan_command

    lines = "csv" if args.csv else "jsonl" if args.all else None
    with progress_reporter(f"campaign plan {args.id}: subscribers scanned", None) as report:
        code, output = plan_command(args.db, None, args.id, args.at, args.json, lines=lines, out=sys.stdout,
                                    progress=report)
    print(output, file=sys.stdout if code == 0 and not args.csv else sys.stderr)
    return code


def cmd_project(args, parser) -> int:
    from notifier.projects_plan import plan_command

    code, output = plan_command(args.db, args.id, args.at, args.json)
    print(output, file=sys.stderr if code else sys.stdout)
    return code


def cmd_hash_password(args, parser) -> int:
    from notifier.security import hash_password

    print(hash_password(args.password))
    return 0


def cmd_hash_token(args, parser) -> int:
    from notifier.security import hash_token

    print(hash_token(args.token))
    return 0


def cmd_simulate(args, parser) -> int:
    return args.simulate_handler(args)


def cmd_bench(args, parser) -> int:
    from bench.run_all import main as bench_main

    return bench_main(["--quick"] if args.quick else [])


COMMANDS = {
    "serve": cmd_serve, "check-fixtures": cmd_check_fixtures, "load-fixtures": cmd_load_fixtures,
    "gen-population": cmd_gen_population, "explain": cmd_explain, "campaign": cmd_campaign,
    "project": cmd_project,
    "hash-password": cmd_hash_password, "hash-token": cmd_hash_token, "simulate": cmd_simulate,
    "bench": cmd_bench,
}
