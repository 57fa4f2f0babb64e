"""Sessions as stored: compact JSON (lists, not objects, for answers and marks).

The answer log is not stored inside the session: every entry is already a row of
the `answer_log` table, written in the same transaction. Old rows written as
`Session.to_dict()` still load.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import orjson

from bot.session import Answer, Mark, Session

_PLAIN = tuple(f.name for f in fields(Session) if f.name not in ("answers", "marks", "log"))


def encode(session: Session) -> str:
    data: dict[str, Any] = {name: getattr(session, name) for name in _PLAIN}
    data["answers"] = [[a.node, a.finding, a.value, a.how] for a in session.answers]
    data["marks"] = [[m.node, m.item, m.answers_from] for m in session.marks]
    return orjson.dumps(data).decode()


def decode(text: str) -> Session:
    data = orjson.loads(text)
    answers, marks = data.get("answers", []), data.get("marks", [])
    if (answers and isinstance(answers[0], dict)) or (marks and isinstance(marks[0], dict)):
        return Session.from_dict(data)  # the first format, whole objects
    data["answers"] = tuple(Answer(*a) for a in answers)
    data["marks"] = tuple(Mark(*m) for m in marks)
    data["log"] = ()
    data["fired"] = tuple(data.get("fired", ()))
    data["announced"] = tuple(data.get("announced", ()))
    return Session(**data)
