"""Sessions, inputs and replies: plain frozen values that cross the engine's edge.

A `Session` survives a JSON round trip (`to_dict` / `from_dict`) so the store
can keep it in one column. Inputs are what a person did (typed, pressed a
button, asked to go back); replies are what the bot should say, as values:
only the Telegram adapter knows HTML and only `chat` knows ANSI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bot.findings import Value
from bot.flow import Level

# ---------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class Answer:
    """A finding's value and how it was learned.

    how: "answered" (the person said it), "carried" (said in the interview before a
    check-in), "handed" (said in another flow that handed over, `continue_with`),
    "assumed" (question skipped by `ask_if`; the flow's `otherwise`), "unsure" ("not
    sure", recorded as absent), "unsure_present" ("not sure" twice on an emergency question,
    recorded as present, RED-FLAGS.md 1.7).
    """

    node: str
    finding: str
    value: Value
    how: str = "answered"


@dataclass(frozen=True, slots=True)
class Mark:
    """A place where the person was asked something; `/back` returns to it."""

    node: str
    item: int  # -1: the question itself; k: checklist item k asked on its own
    answers_from: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """Append-only record: every answer, every going back and its confirmation."""

    event: str  # answer | back | back_confirmed | restart
    node: str = ""
    finding: str = ""
    value: Value = None


@dataclass(frozen=True, slots=True)
class Session:
    flow_id: str
    flow_version: int
    language: str = "en"
    status: str = "active"  # active | done
    node: str | None = None  # the question waiting for an answer
    item: int = -1  # checklist item asked on its own, or -1
    clarifying: bool = False  # asked again after "not sure" to an emergency question
    confirming_back: bool = False
    answers: tuple[Answer, ...] = ()
    marks: tuple[Mark, ...] = ()
    fired: tuple[str, ...] = ()  # rule ids firing on the current answers
    announced: tuple[str, ...] = ()  # rules whose escalation message was shown
    level: str | None = None  # the final level, once done
    log: tuple[LogEntry, ...] = ()
    floor: str | None = None  # a check-in: the earlier outcome's level, which it never lowers

    def evolve(self, **changes: Any) -> Session:
        """A copy with some fields changed (dataclasses.replace, without its overhead:
        the engine makes a few per answer)."""
        new = object.__new__(Session)
        for name in _SESSION_FIELDS:
            object.__setattr__(new, name, changes[name] if name in changes else
                               getattr(self, name))
        return new

    @property
    def questions_asked(self) -> int:
        return len(self.marks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        data = dict(data)
        data["answers"] = tuple(Answer(**a) for a in data.get("answers", ()))
        data["marks"] = tuple(Mark(**m) for m in data.get("marks", ()))
        data["log"] = tuple(LogEntry(**e) for e in data.get("log", ()))
        data["fired"] = tuple(data.get("fired", ()))
        data["announced"] = tuple(data.get("announced", ()))
        return cls(**data)


_SESSION_FIELDS = tuple(f.name for f in fields(Session))

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Start:
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Typed:
    text: str


@dataclass(frozen=True, slots=True)
class Pick:
    """A button press: the question (and checklist item) it belongs to, and the option id."""

    node: str
    option: str
    item: int = -1


@dataclass(frozen=True, slots=True)
class PickMany:
    """A checklist submitted with these items ticked (possibly none)."""

    node: str
    options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Back:
    pass


@dataclass(frozen=True, slots=True)
class Restart:
    pass


Input = Start | Typed | Pick | PickMany | Back | Restart

BACK_NODE = "_back"  # Pick(BACK_NODE, "yes"|"no") answers the back confirmation

# ---------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Choice:
    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Say:
    """A message: information from the flow, or a notice from the bot."""

    text: str


@dataclass(frozen=True, slots=True)
class Ask:
    """A question. `multi`: tick any number of `options`, then submit.

    `extra` holds the always-present answers (not sure, none of these,
    don't know); `hint` is set when re-asking after input that did not fit.
    """

    node: str
    kind: str  # yes_no | choice | number | text | checklist | confirm
    text: str
    options: tuple[Choice, ...] = ()
    extra: tuple[Choice, ...] = ()
    multi: bool = False
    item: int = -1
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Escalate:
    """A rule raised the level mid-interview; emergency ends the interview."""

    level: Level
    rules: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Outcome:
    level: Level
    title: str
    action: str
    reasons: tuple[str, ...]  # the fired rules' plain-words rationale, highest first
    evidence: tuple[str, ...]  # "because you told me": the answers that raised the level
    advice: str
    links: tuple[tuple[str, str], ...]  # (title, url)
    safety_net: str
    notes: tuple[str, ...]
    disclaimer: str
    rules: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Handoff:
    """The interview goes on in another flow (`continue_with:`): the adapter starts it
    with the findings the two share, at no lower level than `level`."""

    flow: str
    level: Level | None = None


Reply = Say | Ask | Escalate | Outcome | Handoff


@dataclass(frozen=True, slots=True)
class Step:
    session: Session
    replies: tuple[Reply, ...]
