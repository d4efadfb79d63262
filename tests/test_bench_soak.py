"""bench/soak.py's figures: each window's resident size as the spread of its samples, growth of the medians."""

from __future__ import annotations

from bench.soak import rss_figures, summary, window_seconds


def test_a_window_gives_its_samples_spread_beside_its_end():
    figures = rss_figures([(500.0, 400.0), (560.0, 410.0), (510.0, 405.0)], (515.0, 408.0))
    assert figures == {"rss_mb": 515.0, "rss_median_mb": 510.0, "rss_min_mb": 500.0, "rss_max_mb": 560.0,
                       "anon_median_mb": 405.0, "rss_samples": 3}
    assert rss_figures([], (515.0, 408.0))["rss_median_mb"] == 515.0, "no sample yet: the end is the one"


def test_the_summary_compares_first_and_last_windows_three_ways():
    windows = [{"window": 1, "rss_mb": 600.0, "rss_median_mb": 500.0, "anon_median_mb": 400.0, "p99_ms": 20.0,
                "replies": 10},
               {"window": 2, "rss_mb": 520.0, "rss_median_mb": 505.0, "anon_median_mb": 404.0, "p99_ms": 22.0,
                "replies": 10}]
    result = summary(windows, sent=20, refused=0, seconds=1200, span=600)
    assert result["rss_growth_pct"] == -13.33
    assert result["rss_median_growth_pct"] == 1.0
    assert result["anon_median_growth_pct"] == 1.0
    assert result["p99_drift_pct"] == 10.0 and result["replies"] == 20


def test_windows_are_ten_minutes_in_the_hour_and_a_sixth_of_a_shorter_run():
    assert window_seconds(3600) == 600 and window_seconds(300) == 50
