"""The SQLite store: what it keeps in memory must always match what it committed."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.store import Conversation, Key
from bot.store.sqlite import SqliteStore, _conversation

PEOPLE = [Key(1, 1), Key(2, 2), Key(-100, 1)]  # two private chats, one group chat of person 1

# One step: (kind, person index, how many calls, which pending calls were "sent")
steps = st.lists(st.tuples(
    st.sampled_from(["update", "update", "update", "bad update", "sent", "sent", "blocked",
                     "forget"]),
    st.integers(0, len(PEOPLE) - 1), st.integers(0, 3), st.integers(0, 7)), max_size=25)


def committed_outbox(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return [(i, c, u, m, orjson.loads(p)) for i, c, u, m, p in db.execute(
            "SELECT id, chat_id, user_id, method, params FROM outbox ORDER BY id")]


def as_rows(outgoing) -> list[tuple]:
    return [(o.id, o.key.chat_id, o.key.user_id, o.method, o.params) for o in outgoing]


async def apply(store: SqliteStore, kind: str, key: Key, calls: int, sent_mask: int) -> None:
    pending = await store.pending(key)
    sent = tuple(o.id for n, o in enumerate(pending) if sent_mask >> n & 1)
    if kind in ("update", "bad update"):
        params = {"chat_id": key.chat_id, "text": "x"}
        batch = [("sendMessage", {**params, "n": n}) for n in range(calls)]
        if kind == "bad update":
            batch.append(("sendMessage", {**params, "bad": {1, 2}}))  # not JSON: fails
        try:
            async with store.update(None, key) as tx:
                tx.save(tx.conversation, (), batch)
        except TypeError:
            assert kind == "bad update"
    elif kind == "sent":  # what the delivery scheduler records after each call
        await store.sent(key, sent)
    elif kind == "blocked":
        await store.set_blocked(key)
    else:
        await store.forget(key.user_id)


@settings(max_examples=40, deadline=None)
@given(steps)
def test_the_outbox_in_memory_is_always_the_committed_one(plan):
    """Sending reads the outbox from memory, not the database: after every kind of
    write (calls committed, sent ones deleted, a failed commit, a block, /forget) it
    must hold exactly the committed rows, and a restart must load the same."""
    async def run(path: Path) -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            for kind, who, calls, sent_mask in plan:
                await apply(store, kind, PEOPLE[who], calls, sent_mask)
                assert as_rows(await store.pending()) == committed_outbox(path)
                for key in PEOPLE:
                    assert as_rows(await store.pending(key)) == [
                        r for r in committed_outbox(path) if r[2] == key.user_id]
        finally:
            await store.close()
        reopened = SqliteStore(path)
        await reopened.open()
        try:
            assert as_rows(await reopened.pending()) == committed_outbox(path)
            await apply(reopened, "update", PEOPLE[0], 1, 0)  # new ids never reuse old ones
            ids = [r[0] for r in committed_outbox(path)]
            assert ids == sorted(set(ids))
        finally:
            await reopened.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "s.sqlite3"))


def test_a_failed_commit_leaves_no_call_to_send(tmp_path):
    async def run() -> None:
        store = SqliteStore(tmp_path / "s.sqlite3")
        await store.open()
        try:
            await apply(store, "bad update", PEOPLE[0], 2, 0)
            assert await store.pending() == []
            await apply(store, "update", PEOPLE[0], 2, 0)
            assert [o.params["n"] for o in await store.pending(PEOPLE[0])] == [0, 1]
        finally:
            await store.close()

    asyncio.run(run())


# ------------------------------------------------------------ kept conversation rows

row_steps = st.lists(st.tuples(
    st.sampled_from(["save", "save", "redelivered", "question", "question", "blocked", "forget",
                     "purge", "reopen"]),
    st.integers(0, len(PEOPLE) - 1), st.integers(0, 5)), max_size=30)


async def read_fresh(path: Path, key: Key) -> Conversation:
    """The conversation as the table has it (read directly, nothing kept in memory)."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT session, interview, question_message, draft, extra, blocked"
                         " FROM conversations WHERE chat_id = ? AND user_id = ?",
                         (key.chat_id, key.user_id)).fetchone()
    return Conversation(key) if row is None else _conversation(key, row)


@settings(max_examples=150, deadline=None)
@given(row_steps)
def test_a_kept_conversation_always_reads_like_the_table(plan):
    """A person's next update reads their row from memory: after any mix of saves,
    redelivered updates, question bookkeeping, blocks, /forget, the retention purge and
    restarts it must read exactly as the table, and a redelivered update changes nothing."""
    from dataclasses import replace

    async def run(path: Path) -> None:
        store = SqliteStore(path)
        await store.open()
        update_ids = iter(range(1, 10_000))
        done: list[tuple[Key, int]] = []  # (person, update id) handled
        try:
            for kind, who, n in plan:
                key = PEOPLE[who]
                if kind == "save":
                    uid = next(update_ids)
                    async with store.update(uid, key) as tx:
                        c = tx.conversation
                        tx.save(replace(c, interview=c.interview + n % 2, question_message=n,
                                        draft=("a",) * n, extra={**c.extra, "n": n},
                                        blocked=False), (), [("sendMessage", {"n": n})])
                    assert not tx.duplicate
                    done.append((key, uid))
                elif kind == "redelivered" and done:
                    old_key, uid = done[n % len(done)]
                    before = await read_fresh(path, old_key)
                    async with store.update(uid, old_key) as tx:
                        if not tx.duplicate:
                            tx.save(replace(tx.conversation, extra={"changed": True}), (),
                                    [("sendMessage", {"again": True})])
                    assert tx.duplicate, "an update handled before is reported as such"
                    assert await read_fresh(path, old_key) == before
                    assert not any(o.params.get("again") for o in await store.pending())
                elif kind == "question":
                    c = await read_fresh(path, key)
                    await store.sent(key, (), (c.interview, 100 + n))
                elif kind == "blocked":
                    await store.set_blocked(key)
                elif kind == "forget":
                    await store.forget(key.user_id)
                elif kind == "purge":
                    await store.purge(-1)  # everything is older than "in a day"
                else:
                    await store.close()
                    store = SqliteStore(path)
                    await store.open()
                for person in PEOPLE:
                    async with store.update(None, person) as tx:
                        kept = tx.conversation
                    assert kept == await read_fresh(path, person), (kind, person)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "s.sqlite3"))
