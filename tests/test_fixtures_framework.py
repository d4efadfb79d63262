"""The fixture framework: line numbers, every problem reported, nothing half-parsed; settings knobs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.fixtures import Problem, parse_set, parse_text, read_dir
from core.settings import KNOBS, Settings, SettingsError, coerce, parse_overrides
from notifier import core_sections

ACCOUNTS = """accounts:
  - system_id: tester
    password_hash: scrypt$16384$8$1$00$00
    bind_types: [tx, rx, trx]
    max_binds: 4
"""


def test_yaml_lines_follow_keys_and_items():
    doc, problems = parse_text("a.yaml", "x:\n  - name: one\n  - name: two\n    price: 3\n")
    assert not problems
    assert doc.line("x", 1, "price") == 4
    assert doc.line("x", 0) == 2
    assert doc.line("x", 5, "nothing") == 1  # the deepest known node: the key "x"


def test_syntax_error_has_file_and_line():
    _, problems = parse_text("bad.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    assert [(p.file, p.line) for p in problems] == [("bad.yaml", 3)]  # where the parser gave up: 'c:' inside [...]


def test_duplicate_keys_are_refused():
    _, problems = parse_text("dup.yaml", "a: 1\na: 2\n")
    assert problems and "duplicate key" in problems[0].reason and problems[0].line == 2


def test_python_tags_are_not_constructed():
    _, problems = parse_text("evil.yaml", "a: !!python/object/apply:os.system ['true']\n")
    assert problems


def test_json_errors_have_lines():
    _, problems = parse_text("x.json", '{\n "a": 1,\n}')
    assert problems and problems[0].line == 3


def test_every_problem_is_reported_at_once():
    files = {"accounts.yaml": ACCOUNTS.replace("max_binds: 4", "max_binds: many")
             .replace("[tx, rx, trx]", "[tx, fax]"),
             "config.yaml": "settings:\n  nope.knob: 1\n  ivr.agents: -3\n"}
    _, problems = parse_set(files, core_sections.SECTIONS)
    reasons = "\n".join(map(str, problems))
    assert "accounts.yaml:5: accounts[0].max_binds" in reasons
    assert "config.yaml:2" in reasons and "unknown setting 'nope.knob'" in reasons
    assert "config.yaml:3" in reasons and "ivr.agents" in reasons


def test_missing_required_and_unknown_files():
    _, problems = parse_set({"stray.yaml": "a: 1\n"}, core_sections.SECTIONS)
    texts = [str(p) for p in problems]
    assert any("accounts.yaml" in t and "required file is missing" in t for t in texts)
    assert any("stray.yaml" in t and "unknown fixture file" in t for t in texts)


def test_read_dir_refuses_non_utf8(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(Exception) as info:
        read_dir(tmp_path)
    assert "not UTF-8" in str(info.value)


def test_problem_format():
    assert str(Problem("f.yaml", 7, "bad", "offers[2].price")) == "f.yaml:7: offers[2].price: bad"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_text_never_raises(text):
    doc, problems = parse_text("fuzz.yaml", text)
    assert (doc is None) == bool(problems)  # a document, or one problem naming the file, never both
    assert len(problems) <= 1 and all(p.file == "fuzz.yaml" for p in problems)


def test_settings_coerce_and_bounds():
    assert coerce("ivr.agents", "3") == 3
    assert coerce("survey.sample_rate", "0.5") == 0.5
    with pytest.raises(SettingsError, match="valid keys"):
        coerce("ivr.agentz", 1)
    with pytest.raises(SettingsError, match="outside"):
        coerce("survey.sample_rate", 2)
    with pytest.raises(SettingsError, match="one of"):
        coerce("survey.mode", "fax")
    with pytest.raises(SettingsError, match="key=value"):
        parse_overrides(["ivr.agents"])
    s = Settings({"ivr.agents": 2}, {"ivr.agents": "7"})
    assert s["ivr.agents"] == 7 and len(s) == len(KNOBS)
