"""A Telegram update (its JSON, as a dict) -> who, and what they did.

Updates are read straight from their JSON: building python-telegram-bot's `Update`
objects took about a fifth of the bot's CPU per update (bench/webhook_load.py
--profile), for the handful of fields used here. Never raises: a field missing or
of the wrong type makes the update one the bot ignores, or an 'other' event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.conversation import Event
from bot.store import Key
from bot.telegram import render

KINDS = ("message", "callback_query", "edited_message", "my_chat_member", "channel_post")
# Telegram's ids fit in 52 bits; anything outside is forged (and would not fit SQLite)
MAX_ID = 2 ** 53
ALERT_ID = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class MemberChange:
    """The bot was added to, promoted in, blocked in or removed from a chat."""

    chat_id: int
    chat_type: str
    title: str
    user_id: int
    status: str


def update_id(update: dict[str, Any]) -> int | None:
    return _int(update, "update_id")


def kind(update: dict[str, Any]) -> str:
    return next((k for k in KINDS if isinstance(update.get(k), dict)), "other")


def query_id(update: dict[str, Any]) -> str | None:
    """The id to answer if this update is a button press."""
    query = _dict(update, "callback_query")
    value = query.get("id")
    return value if isinstance(value, str) else None


def member_change(update: dict[str, Any]) -> MemberChange | None:
    member = _dict(update, "my_chat_member")
    chat, user = _dict(member, "chat"), _dict(member, "from")
    status = _dict(member, "new_chat_member").get("status")
    if not member or not _int(chat, "id") or not isinstance(status, str):
        return None
    if _str(chat, "type") == "private" and chat["id"] != _int(user, "id"):
        return None  # only a person can block the bot in their own chat
    return MemberChange(chat["id"], _str(chat, "type"), _str(chat, "title"),
                        _int(user, "id") or 0, status)


def read(update: dict[str, Any], bot_username: str | None = None) -> tuple[Key, Event] | None:
    """The conversation key and the event, or None for updates the bot ignores."""
    query = _dict(update, "callback_query")
    if query:
        message, user = _dict(query, "message"), _dict(query, "from")
        chat_id, user_id, message_id = _int(_dict(message, "chat"), "id"), _int(user, "id"), \
            _int(message, "message_id")
        if chat_id is None or user_id is None or message_id is None:
            return None
        key, who, data = Key(chat_id, user_id), _who(user, message), _str(query, "data")
        who["private"] = _private(_dict(message, "chat"), user_id)
        if data.startswith("!take|"):  # a clinician took an alert
            alert = data.partition("|")[2]
            return key, Event("take", payload=alert if ALERT_ID.fullmatch(alert) else "",
                              message_id=message_id, **who)
        return key, Event("button", button=render.decode(data), message_id=message_id,
                          message_text=_str(message, "text"), **who)
    edited = _dict(update, "edited_message")
    if edited:
        chat, user = _dict(edited, "chat"), _dict(edited, "from")
        if _int(user, "id") is None or _int(chat, "id") is None:
            return None
        return Key(chat["id"], user["id"]), Event("edited", private=_private(chat, user["id"]))
    message = _dict(update, "message")
    chat, user = _dict(message, "chat"), _dict(message, "from")
    if _int(user, "id") is None or _int(chat, "id") is None:
        return None  # channel posts, member updates, polls...: nothing to answer
    key, who = Key(chat["id"], user["id"]), _who(user, message)
    who["private"] = _private(chat, user["id"])
    text = message.get("text")
    text = text if isinstance(text, str) else None
    if chat.get("type") != "private":
        # health answers never belong in a group: /start, /triage or a mention of the
        # bot get a button to a private chat; everything else is ignored
        if text and _for_us_in_group(text, bot_username):
            return key, Event("group", **who)
        return None
    if text is None:
        return key, Event("other", **who)
    if text.startswith("/"):
        head, _, payload = text[1:].partition(" ")
        name, _, target = head.partition("@")
        if target and bot_username and target.lower() != bot_username.lower():
            return None  # a command for another bot
        return key, Event("command", command=name.lower(), payload=payload.strip(), **who)
    return key, Event("text", text=text, **who)


def _dict(parent: dict[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name)
    return value if isinstance(value, dict) else {}


def _int(parent: dict[str, Any], name: str) -> int | None:
    value = parent.get(name)  # (bool is not an id)
    return value if type(value) is int and -MAX_ID < value < MAX_ID else None


def _private(chat: dict[str, Any], user_id: int) -> bool:
    """A private chat, and the sender's own (its id is the person's id)."""
    return chat.get("type") == "private" and chat.get("id") == user_id


def _str(parent: dict[str, Any], name: str) -> str:
    value = parent.get(name)
    return value if isinstance(value, str) else ""


def _who(user: dict[str, Any], message: dict[str, Any]) -> dict:
    date = message.get("date")
    # (Telegram's own limits: 32-character usernames, 64-character names)
    return {"username": _str(user, "username")[:32], "name": _str(user, "first_name")[:64],
            "at": float(date) if type(date) is int and date >= 0 else 0.0,
            "language": _str(user, "language_code")[:16]}


def _for_us_in_group(text: str, bot_username: str | None) -> bool:
    if text.startswith("/"):
        head = text[1:].split(" ", 1)[0]
        name, _, target = head.partition("@")
        if target and bot_username and target.lower() != bot_username.lower():
            return False
        return name.lower() in ("start", "triage", "help")
    return bool(bot_username) and f"@{bot_username}".lower() in text.lower()
