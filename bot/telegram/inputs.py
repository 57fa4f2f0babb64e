"""Telegram update -> (who, what they did). Never raises; unknown shapes are 'other'."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from bot.conversation import Event
from bot.store import Key
from bot.telegram import render

COMMANDS = ("start", "restart", "back", "help", "privacy", "forget")


def read(update: Update, bot_username: str | None = None) -> tuple[Key, Event] | None:
    """The conversation key and the event, or None for updates the bot ignores."""
    if update.callback_query is not None:
        query = update.callback_query
        message = query.message
        if message is None or query.from_user is None:
            return None
        key = Key(message.chat.id, query.from_user.id)
        text = getattr(message, "text", None) or ""
        return key, Event("button", button=render.decode(query.data),
                          message_id=message.message_id, message_text=text)
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
    if message.chat.type != ChatType.PRIVATE:
        # in groups only commands addressed to us get a (privacy) reply; see issue 4
        if text and text.startswith("/"):
            return key, Event("group")
        return None
    if text is None:
        return key, Event("other")
    if text.startswith("/"):
        head, _, payload = text[1:].partition(" ")
        name, _, target = head.partition("@")
        if target and bot_username and target.lower() != bot_username.lower():
            return None  # a command for another bot
        return key, Event("command", command=name.lower(), payload=payload.strip())
    return key, Event("text", text=text)
