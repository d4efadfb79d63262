"""bench/soak.py's figures: each window's resident size as the spread of its samples, growth of the medians."""

from __future__ import annotations

import sqlite3

from bench.soak import (
    checkpoint_figures,
    collector_figures,
    database_files_mb,
    machine_ms,
    rss_figures,
    summary,
    window_seconds,
)


def test_a_window_gives_its_samples_spread_beside_its_end():
    figures = rss_figures([(500.0, 400.0), (560.0, 410.0), (510.0, 405.0)], (515.0, 408.0))
    assert figures == {"rss_mb": 515.0, "rss_median_mb": 510.0, "rss_min_mb": 500.0, "rss_max_mb": 560.0,
                       "anon_median_mb": 405.0, "rss_samples": 3}
    assert rss_figures([], (515.0, 408.0))["rss_median_mb"] == 515.0, "no sample yet: the end is the one"


def test_the_summary_compares_first_and_last_windows_three_ways():
    windows = [{"window": 1, "rss_mb": 600.0, "rss_median_mb": 500.0, "anon_median_mb": 400.0, "p99_ms": 20.0,
                "replies": 10, "machine_ms": 40.0},
               {"window": 2, "rss_mb": 520.0, "rss_median_mb": 505.0, "anon_median_mb": 404.0, "p99_ms": 22.0,
                "replies": 10, "machine_ms": 50.0}]
    result = summary(windows, sent=20, refused=0, seconds=1200, span=600)
    assert result["rss_growth_pct"] == -13.33
    assert result["rss_median_growth_pct"] == 1.0
    assert result["anon_median_growth_pct"] == 1.0
    assert result["p99_drift_pct"] == 10.0 and result["replies"] == 20
    assert result["machine_drift_pct"] == 25.0  # the machine slowed more than the p99 grew


def test_the_machine_yardstick_is_a_positive_time():
    assert machine_ms(rounds=1) > 0


def test_windows_are_ten_minutes_in_the_hour_and_a_sixth_of_a_shorter_run():
    assert window_seconds(3600) == 600 and window_seconds(300) == 50


def test_a_window_gives_the_database_and_log_sizes_of_a_sqlite_gateway(tmp_path):
    path = tmp_path / "gateway.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("INSERT INTO t VALUES (zeroblob(2000000))")
    db.commit()
    sizes = database_files_mb(f"sqlite:///{path}")
    assert sizes["db_mb"] is not None and sizes["wal_mb"] >= 2.0, sizes
    db.close()
    assert database_files_mb("postgresql+psycopg://gw@localhost/gateway") == {}, "no files to measure"


def test_a_window_gives_its_own_checkpoints_from_two_scrapes():
    before = {"checkpoints_total": 100.0, "checkpoint_busy_total": 1.0, "checkpoint_seconds_total": 2.5,
              "wal_frames": 900.0}
    after = {"checkpoints_total": 130.0, "checkpoint_busy_total": 3.0, "checkpoint_seconds_total": 4.0,
             "wal_frames": 1200.0}
    assert checkpoint_figures(before, after) == {"checkpoints": 30, "checkpoints_busy": 2, "checkpoint_s": 1.5,
                                                 "wal_frames_last": 1200}
    assert checkpoint_figures(before, {}) == {}, "not scraped: nothing"


def test_collector_figures_are_the_windows_full_collections():
    before = {"gen0": {"pause_ms": 50.0}, "gen1": {"pause_ms": 30.0},
              "gen2": {"collections": 4, "pause_ms": 120.0, "max_ms": 40.0}}
    after = {"gen0": {"pause_ms": 60.5}, "gen1": {"pause_ms": 45.0},
             "gen2": {"collections": 7, "pause_ms": 210.5, "max_ms": 45.0}, "wal": {}}
    assert collector_figures(before, after) == {"gc2": 3, "gc2_pause_ms": 90.5, "gc2_max_ms": 45.0,
                                                "gc_pause_ms": 116.0}, "young pauses: 10.5 + 15"
    assert collector_figures({}, after)["gc2"] == 7, "the first scrape counts from the start"
    assert collector_figures(before, {}) == {}, "not scraped: nothing"
