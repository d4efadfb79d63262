"""Reading and validating ops' fixture files, with file/line for every problem.

A fixture set is a folder (or, over HTTP, a ``{path: text}`` map) of YAML or
JSON files. Each domain contributes :class:`Section` objects: one file name,
a ``parse`` step that validates the document into plain objects (reporting
:class:`Problem` s, never raising), and a ``load`` step that writes rows in
the caller's transaction. Sections run in order, so a later one (rules,
campaigns) can check references against an earlier one (offers, schema).

Nothing is written unless every section of the set parsed without a problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILES = 200
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    reason: str
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line if self.line is not None else 0}"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "path": self.path, "reason": self.reason}


class FixtureError(Exception):
    """A fixture set that cannot be loaded; ``problems`` says every reason."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class Doc:
    """One parsed file: its data plus the line of every mapping key / list item."""

    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, *path: Any) -> int | None:
        """Line of the deepest known node along ``path`` (1-based)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return None

    def problem(self, path: tuple, reason: str) -> Problem:
        return Problem(self.file, self.line(*path), reason, _path_text(path))


def _path_text(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader (no Python object tags) that remembers where each node starts."""


def _construct(node: yaml.Node, path: tuple, lines: dict[tuple, int], loader: _LineLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise yaml.constructor.ConstructorError(None, None, f"tag {node.tag!r} is not allowed", node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, "mapping keys must be scalars",
                                                        key_node.start_mark)
            if key in out:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_text(name: str, text: str) -> tuple[Doc | None, list[Problem]]:
    """Parse one YAML/JSON text; a syntax error is a problem with its line."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        return None, [Problem(name, None, f"file larger than {MAX_FILE_BYTES} bytes")]
    if name.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [Problem(name, exc.lineno, f"invalid JSON: {exc.msg}")]
        return Doc(name, data, {(): 1}), []
    try:
        loader = _LineLoader(text)
    except yaml.YAMLError as exc:
        return None, [Problem(name, None, f"invalid YAML: {exc}")]
    try:
        node = loader.get_single_node()
        if node is None:
            return Doc(name, None, {(): 1}), []
        lines: dict[tuple, int] = {}
        data = _construct(node, (), lines, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        return None, [Problem(name, line, f"invalid YAML: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:
        return None, [Problem(name, None, f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    return Doc(name, data, lines), []


def read_dir(directory: str | Path) -> dict[str, str]:
    """Every fixture file below ``directory`` as ``{relative path: text}``."""
    root = Path(directory)
    if not root.is_dir():
        raise FixtureError([Problem(str(directory), None, "not a directory")])
    files: dict[str, str] = {}
    problems = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in SUFFIXES + (".j2",):
            continue
        rel = path.relative_to(root).as_posix()
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(Problem(rel, None, f"file larger than {MAX_FILE_BYTES} bytes"))
            continue
        try:
            files[rel] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(rel, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}"))
    if len(files) > MAX_FILES:
        problems.append(Problem(str(directory), None, f"more than {MAX_FILES} files"))
    if problems:
        raise FixtureError(problems)
    return files


Parsed = dict[str, Any]


@dataclass(frozen=True)
class Section:
    """One kind of fixture file.

    ``parse(doc, parsed)`` validates ``doc`` (``None`` when the file is
    absent and ``required`` is false) and returns ``(value, problems)``; the
    value is stored as ``parsed[name]`` for later sections. ``load(session,
    value, parsed)`` writes rows and returns how many.
    """

    name: str
    filename: str
    parse: Callable[[Doc | None, Parsed], tuple[Any, list[Problem]]]
    load: Callable[[Any, Any, Parsed], int] | None = None
    required: bool = True


def _find(files: Mapping[str, str], filename: str) -> str | None:
    stem = filename.rsplit(".", 1)[0]
    for candidate in (filename, stem + ".yml", stem + ".json"):
        if candidate in files:
            return candidate
    return None


def parse_set(files: Mapping[str, str], sections: Iterable[Section]) -> tuple[Parsed, list[Problem]]:
    """Validate a whole fixture set; returns the parsed values and every problem found."""
    problems: list[Problem] = []
    if len(files) > MAX_FILES:
        return {}, [Problem("<set>", None, f"more than {MAX_FILES} files")]
    parsed: Parsed = {"_files": dict(files)}
    known = set()
    for section in sections:
        name = _find(files, section.filename)
        doc = None
        if name is None:
            known.add(section.filename)
            if section.required:
                problems.append(Problem(section.filename, None, "required file is missing"))
                continue
        else:
            known.add(name)
            doc, syntax = parse_text(name, files[name])
            if syntax:
                problems.extend(syntax)
                continue
        try:
            value, found = section.parse(doc, parsed)
        except Exception as exc:  # a validator bug must still name the file, not crash the loader
            value, found = None, [Problem(name or section.filename, None, f"cannot validate: {exc!r}")]
        problems.extend(found)
        parsed[section.name] = value
    for name in files:
        if name.endswith(SUFFIXES) and name not in known and not name.startswith("templates/"):
            problems.append(Problem(name, None, "unknown fixture file (not part of any section)"))
    return parsed, problems


def load_set(session: Any, parsed: Parsed, sections: Iterable[Section], now: float) -> dict[str, int]:
    """Write every section in the caller's transaction at ``now`` (the injected clock's time, which
    sections read as ``parsed["_now"]``); returns counts per section."""
    parsed["_now"] = now
    counts = {}
    for section in sections:
        if section.load is not None:
            counts[section.name] = section.load(session, parsed.get(section.name), parsed)
    return counts


# --- small validation helpers shared by the sections -----------------------------------------

def require_mapping(doc: Doc, path: tuple = ()) -> tuple[dict | None, list[Problem]]:
    value = doc.data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, dict):
        return None, [doc.problem(path, "expected a mapping")]
    return value, []


def require_list(doc: Doc, key: str) -> tuple[list | None, list[Problem]]:
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get(key), list):
        return None, [doc.problem((key,), f"expected a top-level '{key}:' list")]
    return doc.data[key], []


def check_fields(doc: Doc, path: tuple, item: Any, spec: Mapping[str, tuple[type | tuple, bool]]) -> list[Problem]:
    """Check a mapping against ``{field: (types, required)}``; unknown fields are problems too."""
    if not isinstance(item, dict):
        return [doc.problem(path, "expected a mapping")]
    problems = []
    for key, (types, required) in spec.items():
        if key not in item:
            if required:
                problems.append(doc.problem(path, f"missing required field '{key}'"))
            continue
        value = item[key]
        if value is None and not required:
            continue
        if isinstance(value, bool) and bool not in _as_tuple(types):
            problems.append(doc.problem(path + (key,), f"expected {_type_names(types)}, got a boolean"))
        elif not isinstance(value, types):
            problems.append(doc.problem(path + (key,), f"expected {_type_names(types)}, got "
                                        f"{type(value).__name__}"))
    for key in item:
        if key not in spec:
            problems.append(doc.problem(path + (key,), f"unknown field '{key}' (known: {', '.join(spec)})"))
    return problems


def _as_tuple(types: type | tuple) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))
