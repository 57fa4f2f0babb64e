"""The findings vocabulary: what a flow may ask about and rules may read.

The clinical reference lives in `../shared/triage/FINDINGS.yaml`; a copy ships
in `bot/data/findings.yaml` so an installed bot needs nothing outside the
package (a test keeps the two identical).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path

from bot.yamlsource import safe_load

BUNDLED = Path(__file__).parent / "data" / "findings.yaml"

Value = bool | float | str | None
"""A finding's value: bool, number (float), choice value (str) or None = unknown."""


class Kind(StrEnum):
    BOOLEAN = "boolean"
    NUMBER = "number"
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    kind: Kind
    question: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    default: str | None = None

    @property
    def absent(self) -> Value:
        """The value a finding has when nobody asked: false, the default, or unknown."""
        if self.kind is Kind.BOOLEAN:
            return False
        if self.kind is Kind.CHOICE:
            return self.default
        return None


@dataclass(frozen=True, slots=True)
class Vocabulary:
    version: int
    findings: dict[str, Finding]
    _absent: dict[str, Value] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._absent.update({f.id: f.absent for f in self.findings.values()})

    def __contains__(self, finding_id: object) -> bool:
        return finding_id in self.findings

    def __getitem__(self, finding_id: str) -> Finding:
        return self.findings[finding_id]

    def absent_values(self) -> dict[str, Value]:
        """A fresh dict of every finding's absent value (callers may change it)."""
        return dict(self._absent)


def parse_vocabulary(data: dict) -> Vocabulary:
    findings: dict[str, Finding] = {}
    for item in data["findings"]:
        kind = Kind(item["type"])
        findings[item["id"]] = Finding(
            id=item["id"],
            kind=kind,
            question=item.get("question", ""),
            unit=item.get("unit"),
            min=float(item["min"]) if "min" in item else None,
            max=float(item["max"]) if "max" in item else None,
            values=tuple(item.get("values", ())),
            default=item.get("default"),
        )
    return Vocabulary(version=int(data.get("version", 1)), findings=findings)


@cache
def bundled_vocabulary() -> Vocabulary:
    with BUNDLED.open(encoding="utf-8") as fh:
        return parse_vocabulary(safe_load(fh))
