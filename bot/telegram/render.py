"""Engine replies -> Bot API calls (HTML text, inline keyboards). Pure: no I/O.

Every user-visible string is HTML-escaped here and nowhere else. Callback data
names the interview, the question (and checklist item) and the option, so a
press on an old keyboard is recognised, and always fits Telegram's 64 bytes.
Calls are plain (method, params) pairs so the store can keep them in its
outbox until they have been sent.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from bot.flow import Level
from bot.session import Ask, Escalate, Outcome, Reply, Say
from bot.texts import BotTexts

MAX_TEXT = 4096
MAX_CALLBACK = 64
QUESTION = "_question"  # marks the sendMessage that carries the current question
PRIORITY = "_priority"  # how soon a call must go, if not as a plain reply (Priority)
ALONE = "_alone"  # a message kept on its own (an outcome: see `fold`)

LEVEL_MARK = {Level.EMERGENCY: "🔴", Level.URGENT: "🟠", Level.ROUTINE: "🔵",
              Level.SELF_CARE: "🟢"}
TICKED, UNTICKED = "☑", "☐"

Call = tuple[str, dict[str, Any]]


class Priority(IntEnum):
    """How soon a call must go (bot.telegram.delivery sends by it)."""

    EMERGENCY = 0  # emergency advice and staff alerts
    REPLY = 1  # a reply to someone mid-interview (calls without a mark)
    FIRST = 2  # first contact: the first message a new person gets
    BULK = 3  # proactive: check-ins, nudges, group invitations


@dataclass(frozen=True, slots=True)
class Button:
    """A decoded callback: which interview, question, item and option it answers."""

    interview: int
    node: str
    item: int
    option: str


def encode(interview: int, node: str, item: int, option: str) -> str:
    data = f"{interview:x}|{node}|{item}|{option}"
    if len(data.encode()) > MAX_CALLBACK:  # the loader keeps ids short enough
        raise ValueError(f"callback data over {MAX_CALLBACK} bytes: {data!r}")
    return data


def decode(data: str | None) -> Button | None:
    """A button's data, or None if it is not one of ours (never raises)."""
    try:
        interview, node, item, option = (data or "").split("|", 3)
        return Button(int(interview, 16), node, int(item), option)
    except ValueError:
        return None


def esc(text: str) -> str:
    return html.escape(text, quote=False)


def keyboard(rows: list[list[tuple[str, str]]]) -> dict[str, Any]:
    return {"inline_keyboard": [[{"text": label, "callback_data": data} for label, data in row]
                                for row in rows if row]}


NO_KEYBOARD = {"inline_keyboard": []}


@dataclass(frozen=True, slots=True)
class Labels:
    """Bot-level button labels (the flow's own texts label the answers)."""

    back: str = "« Back"
    restart: str = "Start over"
    done: str = "Done ✓"


def question_markup(ask: Ask, interview: int, ticked: tuple[str, ...] = (),
                    labels: Labels = Labels()) -> dict[str, Any]:
    """The inline keyboard for a question: its answers, then Back / Start over."""
    def data(option: str) -> str:
        return encode(interview, ask.node, ask.item, option)

    rows: list[list[tuple[str, str]]] = []
    if ask.multi:
        for n, choice in enumerate(ask.options, 1):  # the text lists them in full
            mark = TICKED if choice.id in ticked else UNTICKED
            rows.append([(f"{mark} {n}. {choice.label}", data("t." + choice.id))])
        if ticked:
            rows.append([(labels.done, data("=done"))])
        rows.append([(c.label, data(c.id)) for c in ask.extra])
    elif ask.kind in ("yes_no", "confirm"):
        rows.append([(c.label, data(c.id)) for c in (*ask.options, *ask.extra)])
    else:
        rows.extend([[(c.label, data(c.id))] for c in ask.options])
        rows.append([(c.label, data(c.id)) for c in ask.extra])
    if ask.kind != "confirm":
        rows.append([(labels.back, encode(interview, "_", -1, "back")),
                     (labels.restart, encode(interview, "_", -1, "restart"))])
    return keyboard(rows)


def question_text(ask: Ask) -> str:
    """The question in bold; a checklist lists its items in full (buttons get cut short)."""
    hint = f"<i>{esc(ask.hint)}</i>\n\n" if ask.hint else ""
    items = "".join(f"\n{n}. {esc(c.label)}" for n, c in enumerate(ask.options, 1)) \
        if ask.multi else ""
    return hint + f"<b>{esc(ask.text)}</b>" + (f"\n{items}" if items else "")


def outcome_text(o: Outcome, headings: dict[str, str]) -> str:
    parts = [f"{LEVEL_MARK[o.level]} <b>{esc(o.title.upper())}</b>", esc(o.action)]
    if o.reasons:
        parts.append(f"<b>{esc(headings['why'])}</b>\n" +
                     "\n".join(f"• {esc(r)}" for r in o.reasons))
    if o.evidence:
        parts.append(f"<i>{esc(headings['because'])}</i> " + esc("; ".join(o.evidence)) + ".")
    if o.advice:
        parts.append(esc(o.advice))
    if o.safety_net:
        parts.append(esc(o.safety_net))
    if o.links:
        parts.append(f"<b>{esc(headings['links'])}</b>\n" + "\n".join(
            f'• <a href="{html.escape(url, quote=True)}">{esc(title)}</a>'
            for title, url in o.links))
    parts.extend(esc(n) for n in o.notes)
    parts.append(f"<i>{esc(o.disclaimer)}</i>")
    return "\n\n".join(parts)


def split(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut a message at paragraph (then line) breaks so each part fits `limit`.

    Parts never cut inside a tag, because breaks only come between paragraphs
    and lines, and every tag here opens and closes on one line.
    """
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for block in text.split("\n\n"):
        pieces = [block] if len(block) <= limit else _lines(block, limit)
        for piece in pieces:
            joined = f"{current}\n\n{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                parts.append(current)
                current = piece
    if current:
        parts.append(current)
    return parts


def _lines(block: str, limit: int) -> list[str]:
    out, current = [], ""
    for line in block.split("\n"):
        while len(line) > limit:  # one huge line: cut at a space
            cut = line.rfind(" ", 0, limit) if " " in line[:limit] else limit
            out.append(line[:cut])
            line = line[cut:].lstrip()
        joined = f"{current}\n{line}" if current else line
        if len(joined) <= limit:
            current = joined
        else:
            out.append(current)
            current = line
    if current:
        out.append(current)
    return out


def send(chat_id: int, text: str, markup: dict[str, Any] | None = None,
         question: int | None = None) -> list[Call]:
    """sendMessage calls for `text` (split to fit); `question` marks the current question
    with its interview number, so its message id can be remembered once sent."""
    calls: list[Call] = []
    parts = split(text)
    for i, part in enumerate(parts):
        params: dict[str, Any] = {"chat_id": chat_id, "text": part, "parse_mode": "HTML",
                                  "link_preview_options": {"is_disabled": True}}
        if markup is not None and i == len(parts) - 1:
            params["reply_markup"] = markup
            if question is not None:
                params[QUESTION] = question
        calls.append(("sendMessage", params))
    return calls


def replies(chat_id: int, interview: int, items: tuple[Reply, ...],
            headings: dict[str, str], ticked: tuple[str, ...] = (),
            labels: Labels = Labels()) -> list[Call]:
    """Every reply of one step as Bot API calls, in order."""
    calls: list[Call] = []
    for reply in items:
        if isinstance(reply, Say):
            calls += send(chat_id, esc(reply.text))
        elif isinstance(reply, Escalate):
            calls += send(chat_id, f"{LEVEL_MARK[reply.level]} <b>{esc(reply.text)}</b>")
        elif isinstance(reply, Ask):
            calls += send(chat_id, question_text(reply),
                          question_markup(reply, interview, ticked, labels), question=interview)
        elif isinstance(reply, Outcome):
            calls += [(method, {**params, ALONE: True}) for method, params in
                      send(chat_id, outcome_text(reply, headings))]
    return calls


def fold(calls: list[Call]) -> list[Call]:
    """Fewer messages, same content: a plain notice (a message without buttons, such as
    "Saved: ...", the welcome or an escalation) goes at the top of the next message to
    the same chat instead of in a message of its own, if the two fit in one.

    An outcome is never folded into what follows it: a message with buttons is later
    edited to show the answer as plain text, which would drop the outcome's links.
    """
    out: list[Call] = []
    for method, params in calls:
        if out and method == "sendMessage" and out[-1][0] == "sendMessage":
            before = out[-1][1]
            if before.get("chat_id") == params.get("chat_id") and not before.get(ALONE) \
                    and "reply_markup" not in before and QUESTION not in before \
                    and before.get("parse_mode") == params.get("parse_mode") == "HTML":
                text = f"{before['text']}\n\n{params['text']}"
                if len(text) <= MAX_TEXT:
                    merged = {**params, "text": text}
                    if PRIORITY in before or PRIORITY in params:
                        merged[PRIORITY] = min(before.get(PRIORITY, Priority.REPLY),
                                               params.get(PRIORITY, Priority.REPLY))
                    out[-1] = (method, merged)
                    continue
        out.append((method, params))
    return out


def answered(chat_id: int, message_id: int, question: str, answer: str) -> Call:
    """Edit a question once answered: show the answer, drop the keyboard."""
    return ("editMessageText", {
        "chat_id": chat_id, "message_id": message_id, "parse_mode": "HTML",
        "text": f"{esc(question)}\n\n✓ <i>{esc(answer)}</i>"[:MAX_TEXT],
        "reply_markup": NO_KEYBOARD})


def into(message_id: int, shown: str, calls: list[Call]) -> list[Call] | None:
    """The first message of `calls` (a question) as an edit of the message pressed,
    whose text (`shown`, as Telegram shows it) stays on top: one message instead of
    two. None if there is no such message or the two would not fit in one."""
    if not calls or calls[0][0] != "sendMessage" or "reply_markup" not in calls[0][1]:
        return None
    params = calls[0][1]
    text = f"{esc(shown)}\n\n{params['text']}"
    if not shown or len(text) > MAX_TEXT:
        return None
    edit = {**params, "message_id": message_id, "text": text}
    return [("editMessageText", edit), *calls[1:]]


def drop_keyboard(chat_id: int, message_id: int) -> Call:
    return ("editMessageReplyMarkup", {"chat_id": chat_id, "message_id": message_id,
                                       "reply_markup": NO_KEYBOARD})


def alert_text(outcome: Outcome, user_id: int, name: str, username: str, at: float,
               source: str, share: bool, headings: dict[str, str], texts: BotTexts,
               language: str = "", flow: str = "") -> str:
    """A short alert for the staff chat: level, the check (`flow`'s title), red flags,
    when, how to reach the person.

    In the staff's language (`texts`, `headings`); the person's answers (the "because"
    line, in the person's `language` if that differs) only when they agreed to share.
    """
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at)) if at else "—"
    who = f'<a href="tg://user?id={int(user_id)}">{esc(name or texts.alert_person)}</a>'
    if username:
        who += f" (@{esc(username)})"
    lines = [f"{LEVEL_MARK[outcome.level]} <b>{esc(outcome.level.id.replace('_', ' ').upper())}"
             f"</b> — {esc(texts.alert_title)}" + (f" · {esc(flow)}" if flow else ""),
             f"<b>{esc(texts.alert_when)}</b> {when}" + (
                 f" · {esc(texts.alert_from)} {esc(source)}" if source else ""),
             f"<b>{esc(texts.alert_red_flags)}</b>\n" + "\n".join(f"• {esc(r)}"
                                                               for r in outcome.reasons),
             f"<b>{esc(texts.alert_contact)}</b> {who}"]
    if language:
        lines.append(f"<b>{esc(texts.alert_language)}</b> {esc(language)}")
    if share and outcome.evidence:
        lines.append(f"<b>{esc(headings.get('because', 'Because:'))}</b> " +
                     esc("; ".join(outcome.evidence)) + ".")
        lines.append(f"<b>{esc(texts.alert_rules)}</b> " + esc(", ".join(outcome.rules)))
    elif not share:
        lines.append(f"<i>{esc(texts.alert_not_shared)}</i>")
    return "\n\n".join(lines)[:MAX_TEXT]


def prioritised(calls: list[Call], priority: int) -> list[Call]:
    """Mark calls with their delivery priority (bot.telegram.delivery), unless a more
    urgent one is marked already."""
    return [(method, {**params, PRIORITY: min(priority, params.get(PRIORITY, priority))})
            for method, params in calls]


RLM = "\u200f"  # RIGHT-TO-LEFT MARK


def right_to_left(calls: list[Call]) -> list[Call]:
    """Mark every line of every message right to left.

    Telegram sets each paragraph's direction from its first strong character, so an
    Arabic line that starts with a digit, an emoji or a Latin name ("NHS: ...", "🔴 112")
    would read left to right. A message that would grow past Telegram's limit is left
    as it is (the marks are cosmetic).
    """
    out: list[Call] = []
    for method, params in calls:
        text = params.get("text")
        if method in ("sendMessage", "editMessageText") and isinstance(text, str):
            marked = RLM + text.replace("\n", "\n" + RLM)
            if len(marked) <= MAX_TEXT:
                params = {**params, "text": marked}
        out.append((method, params))
    return out
