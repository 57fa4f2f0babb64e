"""Who may do what, and where: the one authorization point for every update.

Every field of an update is hostile: a scripted account can press any callback
data on any bot message with a keyboard (the consent prompt is on every
person's screen) and type anything. So before anything is stored or sent, each
event is given the role it acts in, or refused:

* person: interview, consent, language, time zone, check-in and /forget actions,
  only in a private chat whose id is the sender's (health answers never belong in
  a group, nor in a chat whose id is not the person's);
* staff: "I'm on it", only in a configured staff chat (the store then checks that
  the press is on that alert's own message there);
* admin: /stats, only for TRIAGEBOT_ADMINS, only in their private chat;
* group: in groups and channels, only a request for the invitation to a private chat.

Everything else is refused: the adapter stops the button's spinner and changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.conversation import Event
from bot.store import Key

Role = Literal["person", "staff", "admin", "group"]


@dataclass(frozen=True, slots=True)
class Roles:
    """The deployment's staff chats and admins (from the settings)."""

    staff_chats: frozenset[int] = frozenset()
    admins: frozenset[int] = frozenset()


def authorize(key: Key, event: Event, roles: Roles) -> Role | None:
    """The role `event` acts in, or None if nobody may do that there."""
    private = event.private and key.chat_id == key.user_id
    if event.kind == "take":
        return "staff" if key.chat_id in roles.staff_chats else None
    if event.kind == "group":
        return "group" if not event.private else None
    if not private:
        return None
    if event.kind == "command" and event.command == "stats" and key.user_id in roles.admins:
        return "admin"
    return "person"
