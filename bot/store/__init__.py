"""Where conversations live between updates: a small interface and its SQLite home.

One conversation per (chat, user). An update is handled in one transaction
that reads the conversation, writes its new state, the update id and the
replies still to send (the outbox), and commits **before** anything is sent.
A crash after the commit loses nothing: the outbox is sent on the next start.
Each call leaves the outbox (`sent`) as soon as Telegram took it, so a crash
repeats only calls in flight; the outbox is the delivery scheduler's queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from bot.session import LogEntry, Session


@dataclass(frozen=True, slots=True)
class Key:
    """Who a conversation is with: in a private chat, chat and user are the same."""

    chat_id: int
    user_id: int


@dataclass(frozen=True, slots=True)
class Conversation:
    key: Key
    session: Session | None = None
    interview: int = 0  # bumped for every new interview; buttons carry it
    question_message: int | None = None  # the message holding the current question
    draft: tuple[str, ...] = ()  # checklist items ticked but not yet submitted
    blocked: bool = False  # the person blocked the bot: send nothing
    extra: dict[str, Any] = field(default_factory=dict)  # small UI state (e.g. confirmations)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One Bot API call to make after the commit, kept until it succeeded."""

    id: int
    key: Key
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A check-in (or reminder) due at a time (UTC, Unix seconds), for one interview."""

    id: int
    key: Key
    kind: str  # checkin | nudge
    due_at: float
    interview: int


class Saving:
    """A Transaction that keeps what `save` was given, for the store to write at the
    end of the block (both stores use it)."""

    def __init__(self, duplicate: bool, conversation: Conversation):
        self.duplicate = duplicate
        self.conversation = conversation
        self.saved: tuple | None = None

    def save(self, conversation: Conversation, log: tuple[LogEntry, ...],
             calls: list[tuple[str, dict[str, Any]]],
             records: list[tuple[str, dict[str, Any]]] | tuple = ()) -> None:
        self.saved = (conversation, log, calls, list(records))


def dumps(value: Any) -> str:
    """JSON text as the stdlib would accept it back (orjson: a tenth of json.dumps' time)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def conversation_of(key: Key, row: tuple) -> Conversation:
    """A conversation from its stored columns (session, interview, question_message,
    draft, extra, blocked), as either store keeps them."""
    from bot.store import codec

    session, interview, question, draft, extra, blocked = row
    return Conversation(key, codec.decode(session) if session else None, interview, question,
                        tuple(orjson.loads(draft)), bool(blocked), orjson.loads(extra))


class Transaction(Protocol):
    # This update id was already handled: change nothing. May only turn true when the
    # block ends (the store can find out at the commit, and then saves nothing).
    duplicate: bool
    conversation: Conversation

    def save(self, conversation: Conversation, log: tuple[LogEntry, ...],
             calls: list[tuple[str, dict[str, Any]]],
             records: list[tuple[str, dict[str, Any]]] | tuple = ()) -> None: ...


class Store(Protocol):
    """What the Telegram adapter needs from a session store (SqliteStore implements it)."""

    async def open(self, *, sole_writer: bool = False) -> None: ...

    async def close(self) -> None: ...

    def update(self, update_id: int | None, key: Key): ...  # async context -> Transaction

    async def pending(self, key: Key | None = None) -> list[Outgoing]: ...

    async def sent(self, key: Key, ids: tuple[int, ...], question: tuple[int, int] | None = None,
                   alert: tuple[int, int] | None = None,
                   then: tuple[tuple[Key, str, dict[str, Any]], ...] = ()) -> None: ...

    async def due(self, now: float, limit: int = 100) -> list[Scheduled]: ...

    async def scheduled(self, key: Key) -> list[Scheduled]: ...

    async def set_blocked(self, key: Key) -> None: ...

    async def forget(self, user_id: int, erase: dict[str, Any] | None = None) -> None: ...

    async def checkpoint(self) -> None: ...

    async def quarantine(self, update_id: int, kind: str, error: str,
                         notice: tuple[Key, list[tuple[str, dict[str, Any]]]] | None = None,
                         ) -> None: ...

    async def probe(self) -> None: ...

    def fault(self, exc: BaseException) -> str | None: ...

    async def take_alert(self, alert_id: int, staff_chat: int, message_id: int,
                         who: str) -> tuple[str, str | None]: ...

    async def purge(self, older_than_days: float) -> int: ...


def stats_of(days: float, rows: list[tuple], alerts: tuple, titles: dict) -> dict[str, Any]:
    """/stats from either store's rows: events (kind, source, level, count, flow), the
    alerts' (created, sent, taken, failing, last error) and group titles."""
    started = sum(n for kind, _, _, n, _ in rows if kind == "started")
    levels: dict[str, int] = {}
    sources: dict[str, int] = {}
    flows: dict[str, dict[str, int]] = {}
    for kind, source, level, n, flow in rows:
        counts = flows.setdefault(flow or "-", {"started": 0})
        if kind == "finished":
            levels[level] = levels.get(level, 0) + n
            counts[level] = counts.get(level, 0) + n
        if kind == "started":
            name = titles.get(source) or (str(source) if source else "direct")
            sources[name] = sources.get(name, 0) + n
            counts["started"] += n
    flows = {f: c for f, c in flows.items() if len(c) > 1 or c["started"]}
    total, sent, taken, failing, error = alerts or (0, 0, 0, 0, None)
    return {"days": days, "started": started, "finished": sum(levels.values()),
            "levels": levels, "sources": sources, "flows": flows,
            "alerts": {"created": total or 0, "sent": sent or 0, "taken": taken or 0,
                       "failing": failing or 0, "last_error": error}}
