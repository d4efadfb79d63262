"""Benchmark: a day of a 100-agent outbound project over 50,000 targets, simulated (target: <= 10 s,
predictive abandoned-call rate <= 3%, agent occupancy >= 80%).

The same dialer core the gateway runs (:mod:`ivr.dialer`) with the demo project ``data-alert-call``
(its script, attempts, back-off, predictive pacing), 100 telephone managers on shift for the calling
window, and simulated callees (:mod:`ivr.dialer_sim`) on a simulated clock: no sockets. Figures go to
stdout, the last line one JSON object, to ``bench/out/bench_outbound.json``, and a picture of agent
occupancy and the abandoned-call rate per hour to ``bench/out/bench_outbound.svg``.

    .venv/bin/python -m bench.bench_outbound --agents 100 --targets 50000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import OUT, write_result  # noqa: E402
from bench.plot import bar_chart_svg  # noqa: E402

TARGET_S = 10.0
TZ = "Asia/Shanghai"
SEGMENTS = (("A1", 0.02), ("A2", 0.05), ("B1", 0.13), ("B2", 0.2), ("C", 0.35), ("D", 0.25))


def _book():
    from core.fixtures import parse_set, read_dir
    from gateway.sections import all_sections

    parsed, problems = parse_set(read_dir(ROOT / "fixtures" / "demo"), all_sections())
    if problems:
        raise SystemExit("demo fixtures have problems:\n" + "\n".join(map(str, problems)))
    return parsed["notifier.projects"]


def _targets(n: int, rng: random.Random, offers: tuple[str, ...]) -> list:
    from notifier.projects_plan import Target

    names, weights = zip(*SEGMENTS, strict=True)
    return [Target(f"139{i:08d}", rng.choice(offers), rng.choices(names, weights)[0], TZ, False,
                   1.0 if rng.random() < 0.7 else 0.4) for i in range(n)]


def simulate(agents: int, targets: int, pacing: str, seed: int, project_id: str = "data-alert-call") -> dict:
    from ivr.dialer import Dialer
    from ivr.dialer_project import agents_for, allowed_fn, dial_config
    from ivr.dialer_sim import CalleeModel, CalleeNetwork, SimClock, run

    book = _book()
    project = book.get(project_id)
    rng = random.Random(seed)
    day = datetime(2026, 12, 2, tzinfo=ZoneInfo(TZ))
    start = day.timestamp() + project.window[0]
    end = day.timestamp() + project.window[1]
    clock = SimClock(start)
    population = _targets(targets, rng, project.offers)
    for t in population:
        t.not_before = start
    config = dial_config(project, agents_for(project, start, end, agents), pacing=pacing)
    dialer = Dialer(config, population, now=clock, rng=rng, allowed=allowed_fn(project, book, TZ, until=end))
    network = CalleeNetwork(CalleeModel(answer_rate=project.answer_rate, accept_rate=project.accept_rate, tz=TZ),
                            random.Random(seed + 1), clock, {t.msisdn: t for t in population})
    started, cpu = time.perf_counter(), time.process_time()
    records = run(dialer, network, clock, end)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    summary = dialer.summary()
    reached = len({r.msisdn for r in records})
    return {"agents": agents, "targets": targets, "pacing": pacing, "seed": seed, "elapsed_s": round(elapsed, 3), "cpu_s": round(cpu, 3),
            "simulated_hours": round((end - start) / 3600, 2), "dialled": summary["dialled"],
            "numbers_reached": reached, "answered": summary["answered"], "abandoned": summary["abandoned"],
            "abandon_rate": round(summary["abandon_rate"], 4), "occupancy": round(summary["occupancy"], 4),
            "outcomes": summary["outcomes"], "target_s": TARGET_S,
            "ok": elapsed <= TARGET_S and summary["abandon_rate"] <= 0.03 and summary["occupancy"] >= 0.8,
            "over_time": summary["over_time"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--targets", type=int, default=50_000)
    parser.add_argument("--pacing", choices=("predictive", "progressive"), default="predictive")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = simulate(args.agents, args.targets, args.pacing, args.seed)
    for row in result["over_time"][::4]:
        when = datetime.fromtimestamp(row["t"], ZoneInfo(TZ)).strftime("%H:%M")
        print(f"{when}  dialled {row['dialled']:>5}  answered {row['answered']:>5}  abandoned {row['abandoned']:>3}"
              f"  abandon {row['abandon_rate']:.2%}  occupancy {row['occupancy']:.1%}")
    print(f"{result['agents']} agents, {result['targets']} targets, {result['pacing']}: simulated "
          f"{result['simulated_hours']} h in {result['elapsed_s']} s ({result['cpu_s']} s CPU; target <= {TARGET_S:g} s); "
          f"dialled "
          f"{result['dialled']}, answered {result['answered']}, abandon rate {result['abandon_rate']:.2%} "
          f"(<= 3%), occupancy {result['occupancy']:.1%} (>= 80%)")
    write_result("bench_outbound", result)
    rows = [(datetime.fromtimestamp(r["t"], ZoneInfo(TZ)).strftime("%H:%M"), 100 * r["occupancy"],
             100 * r["abandon_rate"]) for r in result["over_time"][::4]]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_outbound.svg").write_text(bar_chart_svg("occupancy and abandoned calls, a quarter hour each hour (%)", rows,
                                                          ("occupancy %", "abandoned %")))
    print(json.dumps({k: v for k, v in result.items() if k != "over_time"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
