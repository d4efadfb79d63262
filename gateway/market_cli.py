"""``run_gateway.py simulate market``: the learned shelf against the fixed one in a seeded market.

Prints a table per day (learned vs holdout conversion, regret against the best fixed ranking),
with ``--json`` one JSON object as the last stdout line, and with ``--png`` a picture of the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def add_parser(subs: Any, formatter: type) -> None:
    market = subs.add_parser(
        "market", formatter_class=formatter,
        help="synthetic subscribers using the shelf day by day: learned vs fixed ranking",
        description="Seeded market of synthetic subscribers with hidden propensities who send 200, order, "
                    "confirm and cancel day by day, ranked by the gateway's own shelf code with the learned "
                    "term; a holdout keeps the fixed ranking. Prints per day the conversion of both and the "
                    "regret against the best fixed ranking.\n\nexample:\n"
                    "  python run_gateway.py simulate market --days 30 --population 100000 --seed 7 "
                    "--png var/market.png")
    market.add_argument("--days", type=int, default=30, help="simulated days (1-365)")
    market.add_argument("--population", type=int, default=100_000, help="subscribers (100-2,000,000)")
    market.add_argument("--seed", type=int, default=1)
    market.add_argument("--holdout", type=float, default=0.5,
                        help="share of subscribers on the fixed ranking (learning.holdout_share in the gateway)")
    market.add_argument("--refreshes", type=int, default=4, help="learned-state refreshes per simulated day")
    market.add_argument("--fixtures", default=str(DEMO_DIR), help="fixture folder with the offers")
    market.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a knob, e.g. learning.weight=1.5 or learning.cap=3")
    market.add_argument("--json", action="store_true", help="end with one JSON line of the days")
    market.add_argument("--png", metavar="PATH", help="write the conversion and regret curves as a PNG")
    market.set_defaults(simulate_handler=run_market)


def _check(args: argparse.Namespace) -> str | None:
    if not 1 <= args.days <= 365:
        return "--days must be from 1 to 365"
    if not 100 <= args.population <= 2_000_000:
        return "--population must be from 100 to 2,000,000"
    if not 0.0 < args.holdout < 1.0:
        return "--holdout must be between 0 and 1 (both arms need subscribers)"
    if not 1 <= args.refreshes <= 96:
        return "--refreshes must be from 1 to 96"
    return None


def _catalog(directory: str) -> Any:
    from core.fixtures import FixtureError, parse_set, read_dir
    from offers.sections import FILES, SECTIONS, build_catalog

    files = {k: v for k, v in read_dir(directory).items() if k in FILES}
    parsed, problems = parse_set(files, SECTIONS)
    if problems:
        raise FixtureError(problems)
    return build_catalog(parsed)


def run_market(args: argparse.Namespace) -> int:
    from core.fixtures import FixtureError
    from core.settings import Settings, SettingsError, parse_overrides
    from offers.market_sim import simulate

    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        settings = Settings(parse_overrides(args.set))
        catalog = _catalog(args.fixtures)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FixtureError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    result = simulate(catalog, settings, days=args.days, population=args.population, seed=args.seed,
                      holdout_share=args.holdout, refreshes=args.refreshes,
                      progress=None if args.json else _progress_line)
    if args.png:
        write_png(result, args.png)
    if args.json:
        print(json.dumps({"days": [_json_day(d) for d in result["days"]], "seed": result["seed"]}))
    else:
        _print_summary(result, args.png)
    return 0


def _json_day(day: dict[str, Any]) -> dict[str, Any]:
    keys = ("day", "learned_conversion", "fixed_conversion", "regret", "learned_realized", "fixed_realized")
    return {k: day[k] for k in keys}


def _progress_line(day: dict[str, Any]) -> None:
    print(f"day {day['day']:>3}: learned {day['learned_conversion']:.4f}  fixed {day['fixed_conversion']:.4f}  "
          f"regret {day['regret']:.4f}  (realised {day['learned_realized']:.4f} / {day['fixed_realized']:.4f}, "
          f"visits {day['learned_visits']} / {day['fixed_visits']})", file=sys.stderr, flush=True)


def _print_summary(result: dict[str, Any], png: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"market: {result['population']} subscribers, seed {result['seed']}, "
                        f"holdout {result['holdout_share']:g}, {result['elapsed_s']} s")
    for column in ("day", "learned", "fixed", "lift", "regret", "realised learned", "realised fixed"):
        table.add_column(column, justify="right")
    for d in result["days"]:
        lift = d["learned_conversion"] / d["fixed_conversion"] - 1 if d["fixed_conversion"] else 0.0
        table.add_row(str(d["day"]), f"{d['learned_conversion']:.4f}", f"{d['fixed_conversion']:.4f}",
                      f"{lift:+.1%}", f"{d['regret']:.4f}", f"{d['learned_realized']:.4f}",
                      f"{d['fixed_realized']:.4f}")
    console = Console()
    console.print(table)
    if png:
        console.print(f"curves written to {png}")


def write_png(result: dict[str, Any], path: str) -> None:
    """Conversion of both arms and the regret per day, as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d["day"] for d in result["days"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(days, [d["learned_conversion"] for d in result["days"]], label="learned shelf")
    top.plot(days, [d["fixed_conversion"] for d in result["days"]], label="fixed ranking (holdout)")
    top.set_ylabel("conversion per shelf")
    top.legend()
    top.set_title(f"simulated market: {result['population']} subscribers, seed {result['seed']}")
    bottom.plot(days, [d["regret"] for d in result["days"]], color="tab:red", label="regret vs best fixed ranking")
    bottom.set_xlabel("day")
    bottom.set_ylabel("regret")
    bottom.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
