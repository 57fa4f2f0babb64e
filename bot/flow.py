"""A flow, as the engine sees it: frozen, validated, ready to run.

`loader.py` turns YAML into these objects once, checking everything; nothing
here re-checks. Every user-facing string is a `Text` (a language map with
`en` always present).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from bot.conditions import Expr, Predicate
from bot.findings import Value, Vocabulary


class Level(IntEnum):
    """Triage levels, ordered so that `max()` gives the more urgent one."""

    SELF_CARE = 0
    ROUTINE = 1
    URGENT = 2
    EMERGENCY = 3

    @property
    def id(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Level:
        return cls[text.upper()]


LEVEL_IDS = tuple(level.id for level in Level)


@dataclass(frozen=True, slots=True)
class Text:
    """A user-facing string in every language of the flow."""

    by_lang: tuple[tuple[str, str], ...]

    def get(self, lang: str) -> str:
        for code, text in self.by_lang:
            if code == lang:
                return text
        return dict(self.by_lang)["en"]

    @classmethod
    def en(cls, text: str) -> Text:
        return cls((("en", text),))


@dataclass(frozen=True, slots=True)
class Link:
    id: str
    url: Text  # a page per language where a good local source exists, else English
    title: Text


@dataclass(frozen=True, slots=True)
class Condition:
    """A checked condition: its text (for diagrams), tree and compiled test."""

    text: str
    expr: Expr  # with terms expanded
    test: Predicate = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    level: Level
    when: Condition
    says: Text
    links: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class Branch:
    when: Condition | None  # None: always
    goto: str


@dataclass(frozen=True, slots=True)
class Option:
    """A button: its id (callback data), label, and the findings it sets."""

    id: str
    label: Text
    sets: tuple[tuple[str, Value], ...]


@dataclass(frozen=True, slots=True)
class Item:
    """One line of a checklist: ticking it sets `finding` to `value`."""

    id: str
    finding: str
    value: Value
    label: Text
    ask_if: Condition | None = None
    otherwise: tuple[tuple[str, Value], ...] = ()  # recorded when ask_if hides the item


NodeType = Literal["info", "yes_no", "choice", "number", "text", "checklist", "outcome"]
QUESTION_TYPES = ("yes_no", "choice", "number", "text", "checklist")


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    type: NodeType
    text: Text
    next: tuple[Branch, ...] = ()
    asks: tuple[str, ...] = ()  # findings this question decides
    ask_if: Condition | None = None
    otherwise: tuple[tuple[str, Value], ...] = ()
    options: tuple[Option, ...] = ()  # choice
    items: tuple[Item, ...] = ()  # checklist
    unknown: Text | None = None  # number: the "don't know" answer, if allowed
    explain: Text | None = None  # yes_no: plain explanation when "not sure"
    key: str = ""  # text: where a free-text answer is kept
    max_length: int = 0  # text
    level: Level | None = None  # outcome
    advice: Text | None = None  # outcome
    links: tuple[str, ...] = ()  # outcome
    handoff: str = ""  # info or outcome: the flow the interview continues in (continue_with)

    @property
    def is_question(self) -> bool:
        return self.type in QUESTION_TYPES

    def targets(self) -> tuple[str, ...]:
        return tuple(b.goto for b in self.next)

    @property
    def ends(self) -> bool:
        """The interview ends here (in this flow): an outcome, or a hand-off."""
        return self.type == "outcome" or bool(self.handoff)


@dataclass(frozen=True, slots=True)
class LevelText:
    title: Text
    action: Text


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    version: int
    file: str
    title: Text
    languages: tuple[str, ...]
    start: str
    vocabulary: Vocabulary
    terms: Mapping[str, Condition]
    rules: tuple[Rule, ...]
    nodes: Mapping[str, Node]
    links: Mapping[str, Link]
    labels: Mapping[str, Text]
    levels: Mapping[Level, LevelText]
    texts: Mapping[str, Text]
    followup: str | None = None  # first node of the check-in interview, if the flow has one
    continues: tuple[int, ...] = ()  # earlier versions whose sessions carry on in this one
    description: Text | None = None  # one line under the title where several flows are offered
    findings_used: frozenset[str] = frozenset()  # asked, or read by a rule, term or branch
    # places a deployment may word its own way (local.yaml), with this flow's defaults
    local: Mapping[str, Text] = field(default_factory=dict)

    def text(self, key: str, lang: str) -> str:
        return self.texts[key].get(lang)


# Fixed texts every flow must define, so the bot never speaks a string a
# translator has not seen. The loader checks that each exists.
REQUIRED_TEXTS = (
    "button_yes", "button_no", "button_not_sure", "button_none", "button_done", "why",
    "because", "links", "safety_net", "disclaimer", "emergency_advice",
    "emergency_number_note", "unsure_note",
    "reask_yes_no", "reask_choice", "reask_number", "reask_checklist", "reask_text",
    "clarify_not_sure", "item_question", "raised_urgent", "back_confirm", "back_done",
    "back_nothing", "restarted", "finished", "stale", "child_note",
)
# ...and these when the flow has a check-in (`followup:`)
FOLLOWUP_TEXTS = ("followup_question", "followup_better", "followup_same", "followup_worse",
                  "followup_recheck")
