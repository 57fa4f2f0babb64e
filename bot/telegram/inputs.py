"""Telegram update -> (who, what they did). Never raises; unknown shapes are 'other'."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from bot.conversation import Event
from bot.store import Key
from bot.telegram import render


def read(update: Update, bot_username: str | None = None) -> tuple[Key, Event] | None:
    """The conversation key and the event, or None for updates the bot ignores."""
    if update.callback_query is not None:
        query = update.callback_query
        message = query.message
        if message is None or query.from_user is None:
            return None
        key = Key(message.chat.id, query.from_user.id)
        who = _who(query.from_user, getattr(message, "date", None))
        if (query.data or "").startswith("!take|"):  # a clinician took an alert
            return key, Event("take", payload=query.data.partition("|")[2],
                              message_id=message.message_id, **who)
        text = getattr(message, "text", None) or ""
        return key, Event("button", button=render.decode(query.data),
                          message_id=message.message_id, message_text=text, **who)
    if update.edited_message is not None:
        m = update.edited_message
        if m.from_user is None or m.chat.type != ChatType.PRIVATE:
            return None
        return Key(m.chat.id, m.from_user.id), Event("edited")
    message = update.message
    if message is None or message.from_user is None:
        return None  # channel posts, member updates, polls...: nothing to answer
    key = Key(message.chat.id, message.from_user.id)
    text = message.text
    who = _who(message.from_user, message.date)
    if message.chat.type != ChatType.PRIVATE:
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


def _who(user, date) -> dict:
    return {"username": user.username or "", "name": user.first_name or "",
            "at": date.timestamp() if date else 0.0}


def _for_us_in_group(text: str, bot_username: str | None) -> bool:
    if text.startswith("/"):
        head = text[1:].split(" ", 1)[0]
        name, _, target = head.partition("@")
        if target and bot_username and target.lower() != bot_username.lower():
            return False
        return name.lower() in ("start", "triage", "help")
    return bool(bot_username) and f"@{bot_username}".lower() in text.lower()
