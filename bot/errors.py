"""Errors, each saying whose fault it is and how to fix it.

* `FlowError`: the flow author's mistake (a YAML file); carries every problem
  found, each with file, line and column, so an author fixes them in one go.
* `SettingsError`: the operator's mistake (environment or config).

A person's typed input is never an error: it only ever gets a re-ask.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a flow file, with where it is and how to fix it."""

    file: str
    line: int  # 1-based
    col: int  # 1-based
    where: str  # dotted path of the offending key, e.g. "nodes.temp.next"
    what: str
    fix: str = ""
    warning: bool = False  # reported, but the flow still loads (missing translations, if allowed)

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        fix = f" — {self.fix}" if self.fix else ""
        kind = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}:{self.col}: {kind}{where}{self.what}{fix}"


def did_you_mean(word: str, choices: Iterable[str], otherwise: str = "") -> str:
    """The closest of `choices` as a fix ("did you mean 'chest'?"), else `otherwise`."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else otherwise


class FlowError(Exception):
    """A flow failed to load; `problems` lists every mistake found."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.what))
        super().__init__("\n".join(str(p) for p in self.problems))


class SettingsError(Exception):
    """The operator's configuration is wrong; the message says which setting and the fix."""


class StoreInUse(Exception):
    """Another bot process already runs on this database; the message says which."""
