"""``campaign plan --all`` / ``--csv``: the whole list, streamed, equal to the in-memory plan."""

from __future__ import annotations

import csv
import io
import json

import pytest

from gateway import cli
from notifier import campaigns
from tests.harness import ROOT

AT = "2026-11-24T10:00:00+08:00"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('plan') / 'plan.db'}"
    assert cli.main(["load-fixtures", str(ROOT / "fixtures" / "demo"), "--db", url]) == 0
    assert cli.main(["gen-population", "--size", "3000", "--seed", "7", "--db", url]) == 0
    return url


def _full(url: str, campaign: str) -> dict:
    code, text = campaigns.plan_command(url, None, campaign, AT, True)
    assert code == 0, text
    return json.loads(text)


def _stream(url: str, campaign: str, fmt: str) -> tuple[str, dict]:
    out = io.StringIO()
    code, summary = campaigns.plan_command(url, None, campaign, AT, False, lines=fmt, out=out)
    assert code == 0, summary
    return out.getvalue(), json.loads(summary)["summary"]


def test_json_lines_hold_every_recipient_and_exclusion_as_the_plan_counts_them(url):
    full = _full(url, "data-boost")
    text, summary = _stream(url, "data-boost", "jsonl")
    lines = [json.loads(line) for line in text.splitlines()]
    recipients = [x for x in lines if x["outcome"] == "recipient"]
    excluded = [x for x in lines if x["outcome"] == "excluded"]
    assert full["recipients"] > 100 and full["excluded_total"] > 10, "the fixture exercises both"
    assert len(recipients) == full["recipients"] == summary["recipients"]
    by_reason: dict[str, int] = {}
    for line in excluded:
        by_reason[line["reason"]] = by_reason.get(line["reason"], 0) + 1
    assert by_reason == full["excluded"] == summary["excluded"]
    assert len(lines) == full["targeted"], "one line per targeted subscriber"
    assert [x["msisdn"] for x in lines] == sorted(x["msisdn"] for x in lines)
    first = {k: recipients[0][k] for k in ("msisdn", "dest", "not_before", "parts", "campaigns", "offers", "text")}
    assert first == {k: full["sample"][0][k] for k in first}, "the same message at the same time"
    assert [r["msisdn"] for r in recipients[:20]] == [s["msisdn"] for s in full["sample"]]
    assert (summary["first_at"], summary["last_at"]) == (full["first_at"], full["last_at"])
    assert summary["held_for_quiet_hours"] == full["held_for_quiet_hours"]
    assert all(x["reason"] and x["not_before"] is None for x in excluded)


def test_csv_has_a_header_and_one_row_per_line(url):
    text, summary = _stream(url, "care-roaming", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == campaigns.LINE_FIELDS
    assert sum(r["outcome"] == "recipient" for r in rows) == summary["recipients"]
    assert sum(r["outcome"] == "excluded" for r in rows) == summary["excluded_total"]


def test_the_cli_streams_lines_then_a_summary(url, capsys):
    assert cli.main(["campaign", "plan", "data-boost", "--at", AT, "--db", url, "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(lines[-1])["summary"]
    assert len(lines) - 1 == summary["targeted"]
    assert cli.main(["campaign", "plan", "data-boost", "--at", AT, "--db", url, "--csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == ",".join(campaigns.LINE_FIELDS)
    assert json.loads(captured.err.splitlines()[-1])["summary"]["recipients"] == summary["recipients"]


def test_an_unknown_campaign_is_an_error_on_stderr(url, capsys):
    assert cli.main(["campaign", "plan", "nope", "--at", AT, "--db", url, "--csv"]) == 2
    captured = capsys.readouterr()
    assert "unknown campaign 'nope'" in captured.err and captured.out == ""
