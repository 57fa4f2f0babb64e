"""Read YAML safely, keeping the line and column of every key and value.

PyYAML's `safe_load` forgets positions and silently keeps the last of two
duplicate keys. Flow authors need both: every problem must point at a line,
and a duplicated node id must be an error, not a quiet overwrite. So we
compose the node tree with the safe loader and build plain values ourselves,
recording a mark for every path on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from bot.errors import Problem

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """Plain data read from one YAML file, plus where each part of it is."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]]

    def at(self, path: Path) -> tuple[int, int]:
        """Line and column (1-based) of `path`, or of its nearest marked parent."""
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (1, 1))

    def problem(self, path: Path, what: str, fix: str = "") -> Problem:
        line, col = self.at(path)
        return Problem(self.file, line, col, dotted(path), what, fix)


def dotted(path: Path) -> str:
    """`("nodes", "temp", "next", 0)` -> `nodes.temp.next[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Constructor(yaml.constructor.SafeConstructor):
    """Safe scalar construction only (no Python tags, no eval)."""


# libyaml's composer when PyYAML has it (its wheels do): the pure-Python one was half
# of the bot's start-up (0.2 s for a flow and its three translations). Both are safe.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str | Any) -> Any:
    """`yaml.safe_load`, through libyaml when available (a tenth of the time)."""
    return yaml.load(text, Loader=_LOADER)


def read_yaml(text: str, file: str) -> tuple[Source | None, list[Problem]]:
    """Parse `text`; on malformed YAML return the problem with its line."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = f"malformed YAML: {exc.problem or exc.context}"
        fix = _yaml_fix(text, line, str(exc.problem or ""))
        return None, [Problem(file, line, col, "", what, fix)]
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML marks nearly everything
        return None, [Problem(file, 1, 1, "", f"malformed YAML: {exc}", "check the file")]
    marks: dict[Path, tuple[int, int]] = {}
    problems: list[Problem] = []
    constructor = _Constructor()
    try:
        data = _build(root, (), marks, problems, constructor, file, set()) \
            if root is not None else None
    except _Alias as alias:  # one problem is enough: the rest may be the same alias again
        return None, [alias.problem]
    return Source(file, data, marks), problems


class _Alias(Exception):
    """An alias (*name) in a flow: refused, as copying it out could be a bomb."""

    def __init__(self, problem: Problem):
        self.problem = problem


def _yaml_fix(text: str, line: int, problem: str) -> str:
    lines = text.splitlines()
    current = lines[line - 1] if 0 < line <= len(lines) else ""
    if "\t" in current or "'\\t'" in problem:
        return "YAML does not allow tabs for indentation: use spaces"
    if "mapping values are not allowed" in problem:
        return "fix the indentation of this line or the one above, or quote text with ': '"
    if "expected <block end>" in problem or "indentation" in problem:
        return "indent items of the same list or mapping by the same number of spaces"
    return "check the indentation and quoting on this line and the one before"


def _build(
    node: yaml.Node,
    path: Path,
    marks: dict[Path, tuple[int, int]],
    problems: list[Problem],
    constructor: _Constructor,
    file: str,
    seen: set[int],
) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if id(node) in seen:  # the composer gives an alias the very node it names
        raise _Alias(Problem(file, *marks[path], dotted(path),
                             "YAML anchors and aliases (&name, *name) are not allowed in flows",
                             "write the value out in full where it is needed"))
    seen.add(id(node))
    if node.tag not in _Constructor.yaml_constructors:  # e.g. !!python/object: never run
        problems.append(Problem(file, *marks[path], dotted(path),
                                f"the YAML tag '{node.tag}' is not allowed here",
                                "remove the tag: flows hold plain text, numbers and lists"))
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if id(key_node) in seen:
                raise _Alias(Problem(file, key_node.start_mark.line + 1,
                                     key_node.start_mark.column + 1, dotted(path),
                                     "YAML aliases are not allowed in flows",
                                     "write the key out in full"))
            seen.add(id(key_node))
            try:
                key = constructor.construct_object(key_node, deep=True) \
                    if isinstance(key_node, yaml.ScalarNode) and \
                    key_node.tag in _Constructor.yaml_constructors else None
            except Exception:  # e.g. `!!int forty: ...`
                key = None
            if not isinstance(key, str | int | float | bool):
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(Problem(file, line, col, "", "a key must be plain text",
                                        "write the key as a word, e.g. `text:`"))
                continue
            if isinstance(key, bool):
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(Problem(
                    file, line, col, dotted(path), f"the key '{key_node.value}' reads as {key}",
                    f"YAML turns yes/no/on/off into true/false: quote it (\"{key_node.value}\")"))
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                first = marks.get((*path, key), (0, 0))[0]
                problems.append(Problem(
                    file, line, col, dotted((*path, key)),
                    f"duplicate key '{key}' (first defined on line {first})",
                    "remove or rename one of them; YAML keeps only the last"))
                continue
            out[key] = _build(value_node, (*path, key), marks, problems, constructor, file,
                              seen)
            marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*path, i), marks, problems, constructor, file, seen)
            for i, item in enumerate(node.value)
        ]
    try:
        return constructor.construct_object(node, deep=True)
    except Exception as exc:  # a value its explicit tag cannot build, e.g. `!!int forty`
        problems.append(Problem(file, *marks[path], dotted(path), f"cannot read this value: "
                                f"{getattr(exc, 'problem', None) or exc}",
                                "write a plain value, without a !!tag"))
        return None
