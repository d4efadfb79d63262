"""The products report's figures equal counts made by hand on a small, hand-written event history."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import text

from core.db import session_factory
from notifier.product_reports import product_csv, product_report, wilson
from offers import exposures, fastsql
from tests.test_offers_support import NOW, load_demo, make_test_engine

DAY = 86400.0
WINDOW = 600.0


@pytest.fixture
def factory(db_url):
    engine, drop = make_test_engine(db_url)
    load_demo(engine)
    yield session_factory(engine)
    drop()


def _show(factory, msisdn: str, code: str, channel: str, context: str, at: float, **extra) -> int:
    with factory() as session, session.begin():
        if context == "shelf":  # as the router does: the shelf shown last is the one orders refer to
            fastsql.remember_shelf(session, msisdn, [code], at)
        return exposures.record_exposure(session, msisdn, code, channel, context, at, **extra)


def _then(factory, msisdn: str, code: str | None, *steps: tuple[str, float], **extra) -> None:
    for kind, at in steps:
        with factory() as session, session.begin():
            exposures.record_outcome(session, msisdn, code, kind, at, **extra)


def _history(factory) -> dict[str, int]:
    """Six exposures (five this week, one the week before) and their outcomes; see the test for the counts."""
    ids = {
        "e1": _show(factory, "13800000001", "LL30", "sms", "shelf", NOW - 2 * DAY, rank=1, segment="mzone:C",
                    arm="learned"),
        "e2": _show(factory, "13800000003", "LL30", "sms", "shelf", NOW - 1 * DAY, rank=2, segment="mzone:C",
                    arm="fixed"),
        "e3": _show(factory, "13800000005", "LL30", "ussd", "shelf", NOW - 3 * DAY, rank=1, segment="gotone:D",
                    arm="learned"),
        "e4": _show(factory, "13800000007", "LL30", "email", "campaign:data-upsell", NOW - 4 * DAY),
        "e5": _show(factory, "13800000009", "LL30", "sms", "shelf", NOW - 10 * DAY, rank=1, segment="mzone:D",
                    arm="learned"),
        "e6": _show(factory, "13800000002", "LL10", "sms", "shelf", NOW - 1 * DAY, rank=3, segment="mzone:C",
                    arm="learned"),
    }
    _then(factory, "13800000001", "LL30", ("ordered", NOW - 2 * DAY + 60), ("confirmed", NOW - 2 * DAY + 120),
          ("cancelled", NOW - 1 * DAY))
    _then(factory, "13800000003", "LL30", ("ordered", NOW - 1 * DAY + 60))  # never confirmed
    _then(factory, "13800000005", "LL30", ("refused", NOW - 3 * DAY + 60), suppresses=True)
    _then(factory, "13800000007", "LL30", ("ordered", NOW - 4 * DAY + 60), ("confirmed", NOW - 4 * DAY + 90))
    _then(factory, "13800000007", None, ("complaint", NOW - 3 * DAY))
    _then(factory, "13800000009", "LL30", ("ordered", NOW - 10 * DAY + 60), ("confirmed", NOW - 10 * DAY + 90))
    _then(factory, "13800000002", None, ("opt_out", NOW - 1 * DAY + 100))
    return ids


def test_outcomes_link_to_the_exposure_that_caused_them(factory):
    ids = _history(factory)
    with factory() as session:
        chain = exposures.chain(session, ids["e1"])
        assert [o["kind"] for o in chain["outcomes"]] == ["ordered", "confirmed", "cancelled"]
        assert chain["outcomes"][-1]["after_s"] == pytest.approx(1 * DAY - 120)
        assert [o["kind"] for o in exposures.chain(session, ids["e4"])["outcomes"]] == [
            "ordered", "confirmed", "complaint"]
        assert [o["kind"] for o in exposures.chain(session, ids["e6"])["outcomes"]] == ["opt_out"]
        assert exposures.chain(session, ids["e3"])["outcomes"][0]["suppresses"] is True


def test_report_figures_equal_hand_counts(factory):
    _history(factory)
    with factory() as session:
        report = product_report(session, NOW, NOW - 7 * DAY, confirm_window_s=WINDOW)
        campaign_segment = session.execute(text("SELECT brand || ':' || usage_class FROM subscribers "
                                                "WHERE msisdn = '13800000007'")).scalar_one()
    ll30 = next(i for i in report["items"] if i["product"] == "LL30")
    # by hand: e1..e4 this week; orders e1 e2 e4; confirmed e1 e4; e2's window passed; e1 cancelled after a day
    assert {k: ll30[k] for k in ("exposures", "ordered", "confirmed", "not_confirmed", "cancelled_7d",
                                 "cancelled_30d", "refused", "refused_suppressing", "complaints", "opt_outs")} == {
        "exposures": 4, "ordered": 3, "confirmed": 2, "not_confirmed": 1, "cancelled_7d": 1, "cancelled_30d": 1,
        "refused": 1, "refused_suppressing": 1, "complaints": 1, "opt_outs": 0}
    assert (ll30["conversion"], ll30["confirmation_rate"], ll30["retention_7d"], ll30["complaint_rate"]) == (
        0.5, pytest.approx(2 / 3, abs=1e-5), 0.5, 0.25)
    assert ll30["conversion_ci"] == (pytest.approx(0.15003, abs=1e-4), pytest.approx(0.84997, abs=1e-4))
    assert ll30["revenue"] == 60.0 and ll30["name"] == "30元6GB流量包"
    ll10 = next(i for i in report["items"] if i["product"] == "LL10")
    assert (ll10["exposures"], ll10["confirmed"], ll10["opt_outs"], ll10["conversion"]) == (1, 0, 1, 0.0)

    cells = {(r["product"], r["segment"], r["channel"]): (r["exposures"], r["confirmed"])
             for r in report["by_segment_channel"]}
    assert cells == {("LL30", "mzone:C", "sms"): (2, 1), ("LL30", "gotone:D", "ussd"): (1, 0),
                     ("LL30", campaign_segment, "campaign_email"): (1, 1), ("LL10", "mzone:C", "sms"): (1, 0)}

    arms = report["learned_vs_fixed"]["total"]
    assert (arms["learned"]["exposures"], arms["learned"]["confirmed"], arms["learned"]["revenue"]) == (3, 1, 30.0)
    assert (arms["fixed"]["exposures"], arms["fixed"]["confirmed"], arms["fixed"]["not_confirmed"]) == (1, 0, 1)

    week = next(w for w in report["this_week"] if w["product"] == "LL30")
    assert (week["this_week"]["exposures"], week["last_week"]["exposures"]) == (4, 1)
    assert week["change"]["confirmed"] == 1 and week["change"]["conversion"] == pytest.approx(0.5 - 1.0)


def test_csv_has_a_row_per_product_cell_and_arm(factory):
    _history(factory)
    with factory() as session:
        report = product_report(session, NOW, NOW - 7 * DAY, confirm_window_s=WINDOW)
    rows = list(csv.DictReader(io.StringIO(product_csv(report))))
    assert [r["level"] for r in rows].count("product") == 2
    ll30 = next(r for r in rows if r["level"] == "product" and r["product"] == "LL30")
    assert (ll30["exposures"], ll30["confirmed"], ll30["conversion_lo"][:5], ll30["revenue"]) == (
        "4", "2", "0.150", "60.0")
    assert {r["arm"] for r in rows if r["level"] == "arm"} == {"learned", "fixed"}


def test_wilson_interval():
    assert wilson(0, 0) is None
    assert wilson(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-4))
    assert wilson(10, 10)[1] == 1.0
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.40383, abs=1e-4) and hi == pytest.approx(0.59617, abs=1e-4)
