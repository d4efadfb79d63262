"""A synthetic, realistic subscriber population for demos and benchmarks (seeded, reproducible).

Numbers run from 13900000000 upwards. Distributions (per subscriber, independent unless said):

- brand: 全球通 gotone 25 %, 动感地带 mzone 35 %, 神州行 easyown 40 %.
- age: mzone triangular(16, 32, mode 21); gotone normal(42, 10) in [22, 75]; easyown normal(45, 15) in [18, 85].
- monthly ARPU: lognormal by brand, median gotone 150, mzone 55, easyown 35 yuan (sigma 0.5 / 0.45 / 0.6);
  6 months of history, each month x uniform(0.85, 1.15).
- plan: the brand's plan whose fee is nearest the ARPU (PLANS: fee, data MB, voice minutes, SMS).
- data used / allowance: lognormal, median 0.7, sigma 0.6 (about 10 % A, 55 % B, 20 % C, 15 % D);
  voice: median 0.6, sigma 0.5; SMS: uniform(0, 1.2) x allowance. Today's data: month / 30 x gamma(2, 0.5).
- roaming: 3 % roaming now; roaming + long-distance charges zero for 85 %, else lognormal(median 40, sigma 1).
- days silent: 90 % 0-2, 7 % 3-20, 3 % 30-120.
- tenure: exponential, mean 48 months (mzone 24), at most 300.
- average payment: ARPU x uniform(0.8, 2.0); late payments: 80 % none, 15 % one, 5 % 2-5.
- value-added share uniform(0, 0.35); complaints: 95 % none, else 1-4.
- family size 1-4 (45/30/17/8 %); broadband 30 %; handset contract running 20 % (1-24 months left).
- contact history per channel: contacted Poisson-like with mean phone 2, SMS 8, web 3, hall 1;
  answered share ~ uniform(0.3, 0.95); responded share of answered ~ uniform(0, 0.6).
- service calls mean 1.5, web minutes exponential mean 60, hall visits mean 1 a year.
- balance lognormal median 50 yuan, 2 decimals; opted out 3 %; marketing consent 90 %; e-mail 30 %.

Rows are written with Core executemany in chunks (no ORM objects) and segmented as they are
written, so the cached segment columns are ready.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from core import fleet_events
from core.fixtures import FixtureError, parse_text
from offers import schema, segments
from offers.models import CHANNELS, Subscriber

FIRST = 13900000000
CHUNK = 10000
DEMO_SEGMENTS = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "segments.yaml"

# brand -> [(plan, fee, data MB, voice minutes, SMS)]
PLANS: dict[str, list[tuple[str, float, float, float, float]]] = {
    "gotone": [("全球通128", 128, 30720, 500, 100), ("全球通188", 188, 61440, 1000, 200),
               ("全球通288", 288, 102400, 2000, 300)],
    "mzone": [("芒果卡18", 18, 5120, 50, 0), ("动感地带38", 38, 10240, 100, 50), ("动感地带58", 58, 20480, 200, 100)],
    "easyown": [("神州行8元保号", 8, 100, 30, 0), ("神州行18", 18, 1024, 100, 50), ("神州行28", 28, 3072, 200, 100)],
}
ARPU = {"gotone": (150.0, 0.5), "mzone": (55.0, 0.45), "easyown": (35.0, 0.6)}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉晨宇浩然子涵欣怡梓轩雨桐"
CONTACT_MEANS = {"phone": 2.0, "sms": 8.0, "web": 3.0, "hall": 1.0}


def demo_params() -> segments.SegmentParams:
    """The segment parameters of fixtures/demo/segments.yaml."""
    from offers.sections import parse_segments

    doc, problems = parse_text(DEMO_SEGMENTS.name, DEMO_SEGMENTS.read_text(encoding="utf-8"))
    params, found = parse_segments(doc, {}) if doc else (None, [])
    if params is None:
        raise FixtureError(problems + found)
    return params


def _count(rnd: random.Random, mean: float) -> int:
    """A small count with the given mean (geometric), cheap to draw."""
    return int(rnd.expovariate(1.0 / mean)) if mean > 0 else 0


def subscriber(rnd: random.Random, msisdn: str) -> dict[str, Any]:
    """One synthetic subscriber's columns (without segments)."""
    r = rnd.random()
    brand = "gotone" if r < 0.25 else "mzone" if r < 0.60 else "easyown"
    if brand == "mzone":
        age = int(rnd.triangular(16, 32, 21))
    elif brand == "gotone":
        age = int(min(max(rnd.gauss(42, 10), 22), 75))
    else:
        age = int(min(max(rnd.gauss(45, 15), 18), 85))
    median, sigma = ARPU[brand]
    arpu = rnd.lognormvariate(math.log(median), sigma)
    history = [round(arpu * rnd.uniform(0.85, 1.15), 2) for _ in range(6)]
    plan, fee, data_mb, voice_min, sms_n = min(PLANS[brand], key=lambda p: abs(p[1] - arpu))
    data_used = round(data_mb * rnd.lognormvariate(math.log(0.7), 0.6), 1)
    roaming_fee = 0.0 if rnd.random() < 0.85 else round(rnd.lognormvariate(math.log(40), 1.0), 2)
    s = rnd.random()
    silent = rnd.randint(0, 2) if s < 0.90 else rnd.randint(3, 20) if s < 0.97 else rnd.randint(30, 120)
    late = rnd.random()
    f = rnd.random()
    row: dict[str, Any] = {
        "msisdn": msisdn, "brand": brand, "name": rnd.choice(SURNAMES) + rnd.choice(GIVEN) + rnd.choice(GIVEN),
        "email": f"u{msisdn}@example.com" if rnd.random() < 0.3 else None, "timezone": "Asia/Shanghai",
        "age": age, "balance": round(rnd.lognormvariate(math.log(50), 0.8), 2),
        "opted_out": rnd.random() < 0.03, "consent_marketing": rnd.random() < 0.9,
        "complaints": 0 if rnd.random() < 0.95 else rnd.randint(1, 4), "vip": brand == "gotone" and arpu > 250,
        "plan": plan, "plan_fee": fee, "voice_allowance_min": voice_min, "data_allowance_mb": data_mb,
        "sms_allowance": sms_n,
        "voice_used_min": round(voice_min * rnd.lognormvariate(math.log(0.6), 0.5)),
        "data_used_mb": data_used, "sms_used": round(sms_n * rnd.uniform(0, 1.2)),
        "roaming_fee_month": roaming_fee, "data_day_mb": round(data_used / 30 * rnd.gammavariate(2, 0.5), 1),
        "roaming_fee_day": round(roaming_fee / 10, 2) if roaming_fee else 0.0,
        "spend_day": round(arpu / 30 * rnd.uniform(0.5, 1.5), 2), "roaming": rnd.random() < 0.03,
        "arpu_history": history, "arpu_avg": schema.arpu_avg(history), "days_silent": silent,
        "tenure_months": min(int(rnd.expovariate(1 / (24 if brand == "mzone" else 48))), 300),
        "avg_payment": round(arpu * rnd.uniform(0.8, 2.0), 2),
        "late_payments": 0 if late < 0.8 else 1 if late < 0.95 else rnd.randint(2, 5),
        "vas_share": round(rnd.uniform(0, 0.35), 3),
        "contract_months_left": rnd.randint(1, 24) if rnd.random() < 0.2 else 0,
        "has_broadband": rnd.random() < 0.3, "family_size": 1 if f < 0.45 else 2 if f < 0.75 else 3 if f < 0.92 else 4,
        "service_calls": _count(rnd, 1.5), "web_minutes": round(rnd.expovariate(1 / 60), 1),
        "hall_visits": _count(rnd, 1.0),
    }
    for ch in CHANNELS:
        contacted = _count(rnd, CONTACT_MEANS[ch])
        answered = int(contacted * rnd.uniform(0.3, 0.95))
        row[f"{ch}_contacted"], row[f"{ch}_answered"] = contacted, answered
        row[f"{ch}_responded"] = int(answered * rnd.uniform(0, 0.6))
    return row


def _connection(target: Session | Engine | Connection) -> tuple[Connection, bool]:
    if isinstance(target, Session):
        return target.connection(), False
    if isinstance(target, Engine):
        return target.connect(), True
    return target, False


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One executemany straight to the driver: SQLAlchemy's per-row parameter processing would
    double the time of a million-row population."""
    compiled = insert(Subscriber.__table__).compile(dialect=conn.dialect, column_keys=list(rows[0]))
    for row in rows:
        row["arpu_history"] = json.dumps(row["arpu_history"])
    if compiled.positional:
        order = compiled.positiontup
        conn.exec_driver_sql(compiled.string, [tuple(row[k] for k in order) for row in rows])
    else:
        conn.exec_driver_sql(compiled.string, rows)


def generate(target: Session | Engine | Connection, size: int, seed: int,
             progress: Callable[[int], None] | None = None, *, params: segments.SegmentParams | None = None,
             now: float | None = None, first: int = FIRST) -> int:
    """Write ``size`` subscribers ``first`` .. ``first + size - 1`` (replacing those numbers), segmented.

    With a Session the rows join its transaction; with an Engine one transaction is committed here.
    ``progress(n)`` is called after every chunk with the running count. Returns ``size``.
    """
    params = params or demo_params()
    rnd = random.Random(seed)
    conn, own = _connection(target)
    table = Subscriber.__table__
    try:
        tx = conn.begin() if own else None
        conn.execute(delete(table).where(table.c.msisdn >= str(first), table.c.msisdn < str(first + size)))
        done = 0
        while done < size:
            batch = []
            for n in range(first + done, first + min(done + CHUNK, size)):
                row = subscriber(rnd, str(n))
                row.update(segments.segment_columns(schema.facts(row), params), segmented_at=now)
                batch.append(row)
            _insert_rows(conn, batch)
            done += len(batch)
            if progress is not None:
                progress(done)
        fleet_events.publish(conn, fleet_events.REWRITE)  # other machines drop their cached shelves on commit
        if tx is not None:
            tx.commit()
    finally:
        if own:
            conn.close()
    from offers.router import subscribers_rewritten

    subscribers_rewritten()  # cached shelves of this process may describe the numbers just replaced
    return size
