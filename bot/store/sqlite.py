"""The session store on SQLite (WAL), one transaction per batch of updates.

Updates' writes are group-committed on a dedicated writer thread with its own
connection, each batch's whole transaction in one trip to that thread. (Through
aiosqlite it was a trip per statement, ~10 per batch, each waiting for a turn of
the busy event loop: a batch of ~9 updates took ~13 ms under bench/webhook_load.py.)
Reads and the rare other writes go through aiosqlite. One asyncio lock keeps this
process's write transactions one at a time, and every transaction, on either
connection, is rolled back on any exception: one failing write (a forged id too
big for SQLite, a full disk) fails alone and leaves both connections usable.

`store_fault` tells the two kinds of failure apart for the adapter: the store's
own (full disk, locked or broken file), which a retry later can cure, and the
rest, which came from what an update held and would fail again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from bot.errors import StoreInUse
from bot.store import (
    Conversation,
    Key,
    Outgoing,
    Saving,
    Scheduled,
    codec,
    conversation_of,
    dumps,
    stats_of,
)
from bot.store.migrations import MIGRATIONS, PERSONAL_TABLES

PROCESSED_KEEP_SECONDS = 2 * 24 * 3600  # Telegram gives up redelivering well before this
ROWS_KEPT = 4096  # conversations whose committed row stays in memory (a few MB at most)
PROBE_WAIT_MS = 1000
SQLITE_INT = range(-(2 ** 63), 2 ** 63)  # what SQLite can store; larger ids are forged


_dumps = dumps
SqliteTransaction = Saving


@dataclass(frozen=True, slots=True)
class _Write:
    """What one update asks to commit."""

    update_id: int | None
    key: Key
    sent: tuple[int, ...]
    question: tuple[int, int] | None
    saved: tuple | None
    checked: bool  # the update id was already looked up (else: by the batch, before saving)
    erase: dict[str, Any] | None = None  # forget this person (see SqliteStore._erase)
    alert: tuple[int, int] | None = None  # (alert id, its message id): the alert was posted
    then: tuple[tuple[Key, str, dict[str, Any]], ...] = ()  # calls to queue with it


# A conversation's row as committed: session, interview, question_message, draft, extra,
# blocked (the texts exactly as stored, so a kept row reads back like the table's).
Row = tuple[str | None, int, int | None, str, str, int]


class SqliteStore:
    """Conversations, answer log, processed update ids and outbox in one SQLite file."""

    def __init__(self, path: str | Path, busy_timeout: float = 5.0):
        self.path = Path(path)
        # how long a write waits for another program holding the file (a backup tool,
        # `sqlite3` in a shell) before it fails as "database is locked"
        self.busy_ms = int(busy_timeout * 1000)
        self.db: aiosqlite.Connection | None = None  # migrations and the rare writes
        self.reader: aiosqlite.Connection | None = None  # reads of the per-update path
        self._batches: sqlite3.Connection | None = None  # group commits, on _thread only
        self._thread: ThreadPoolExecutor | None = None
        self._claim: int | None = None  # the lock file held while the bot runs
        self.lock = asyncio.Lock()  # one write transaction at a time, on either connection
        self._queue: list[tuple[_Write, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        # The committed outbox, by user: a mirror of the table, changed only after each
        # commit (this process is its only writer), so sending needs no read per update.
        self._outbox: dict[int, list[Outgoing]] = {}
        self._next_outbox_id = 1
        # The rows of recently active conversations, as committed (kept up to date the
        # same way), so a person's next update needs no read.
        self._rows: OrderedDict[Key, Row] = OrderedDict()

    async def open(self, *, sole_writer: bool = False) -> None:
        """Open (creating and migrating) the database. `sole_writer`: the bot's own
        store, which keeps committed rows in memory and so must be the only process
        writing them; a second one is refused (StoreInUse) instead of overwriting
        the first one's answers. `db migrate`, `export` and backups may still run."""
        if str(self.path) == ":memory:":
            raise ValueError("the store needs a file (its connections share it)")
        if sole_writer:
            self._claim = _claim(self.path)
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # health data: owner-only from the first byte (SQLite copies this mode
            # to its -wal and -shm files)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=FULL")
        await self.db.execute("PRAGMA foreign_keys=ON")
        await self.db.execute(f"PRAGMA busy_timeout={self.busy_ms:d}")
        # the retention purge deletes on this connection (/forget on the writer's):
        # overwrite what is deleted, so erased answers do not linger in free space
        await self.db.execute("PRAGMA secure_delete=ON")
        await self.migrate()
        await self._load_outbox()
        # WAL: reads on their own connection see only committed data and do not wait
        # behind a commit's fsync
        self.reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self.reader.execute("PRAGMA query_only=ON")
        await self.reader.execute(f"PRAGMA busy_timeout={self.busy_ms:d}")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triagebot-commit")
        self._batches = await self._in_thread(_connect_for_batches, self.path, self.busy_ms)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._batches is not None:
            await self._in_thread(self._batches.close)
            self._batches = None
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
        if self.reader is not None:
            await self.reader.close()
        self.reader = None
        if self._claim is not None:
            os.close(self._claim)  # (the kernel also drops it if the process dies)
            self._claim = None
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def migrate(self) -> int:
        """Apply every migration newer than the file's user_version; return the version."""
        assert self.db is not None
        async with self.db.execute("PRAGMA user_version") as cur:
            (version,) = await cur.fetchone()  # type: ignore[misc]
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            async with self._writing() as db:
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number:d}")
            version = number
        return version

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the main connection, under the write lock."""
        async with self.lock, self._transaction_held() as db:
            yield db

    @contextlib.asynccontextmanager
    async def _transaction_held(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction on the main connection, for a caller holding the write
        lock (to update what it keeps in memory after the commit, still under it):
        committed when the block ends, rolled back on any exception, cancellation
        included, so the connection is never left inside a transaction."""
        assert self.lock.locked()
        db = self.db
        assert db is not None, "the store is not open"
        if db.in_transaction:  # (only if an earlier rollback itself failed)
            await db.rollback()
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):  # (the connection may be gone)
                await db.execute("ROLLBACK")
            raise

    async def _load_outbox(self) -> None:
        assert self.db is not None
        self._outbox = {}
        rows = await self.db.execute_fetchall(
            "SELECT id, chat_id, user_id, method, params FROM outbox ORDER BY id")
        for r in rows:
            self._outbox.setdefault(r[2], []).append(
                Outgoing(r[0], Key(r[1], r[2]), r[3], orjson.loads(r[4])))
        self._next_outbox_id = (rows[-1][0] + 1) if rows else 1

    def _outgoing(self, key: Key, method: str, params: dict[str, Any]) -> tuple[Outgoing, str]:
        """A new outbox call with the next id, and its params as stored. The mirror gets
        the params read back from that text, exactly what a restart would load."""
        text = _dumps(params)
        out = Outgoing(self._next_outbox_id, key, method, orjson.loads(text))
        self._next_outbox_id += 1
        return out, text

    def _mirror(self, added: list[Outgoing], sent: dict[int, set[int]]) -> None:
        """Apply a commit's outbox changes to the mirror (only after it committed)."""
        for user, ids in sent.items():
            kept = [out for out in self._outbox.get(user, ()) if out.id not in ids]
            if kept:
                self._outbox[user] = kept
            else:
                self._outbox.pop(user, None)
        for out in added:
            self._outbox.setdefault(out.key.user_id, []).append(out)

    @contextlib.asynccontextmanager
    async def update(self, update_id: int | None, key: Key) -> AsyncIterator[SqliteTransaction]:
        """Read a conversation and, if `save` was called, commit it with the update id.

        The caller holds this person's lock, so nothing else changes their row between
        the read and the write. The write is committed together with whatever other
        people's updates are waiting (group commit: one fsync for the batch), and this
        returns only after that commit.

        A recently active person's row is kept in memory as committed, so there is no
        read: whether the update was handled before is then looked up in the commit's
        transaction, and `tx.duplicate` turns true after the block if it was.
        """
        row = self._rows.get(key)
        if row is not None:  # a redelivered update is then caught by its commit
            self._rows.move_to_end(key)
            conversation, duplicate = _conversation(key, row), False
        else:
            conversation, duplicate = await self._read(key, update_id)
        tx = SqliteTransaction(duplicate, conversation)
        yield tx
        saved = tx.saved if not duplicate else None
        if await self._commit(_Write(update_id, key, (), None, saved, row is None)):
            tx.duplicate = True  # handled before: nothing of this one was saved

    async def _read(self, key: Key, update_id: int | None) -> tuple[Conversation, bool]:
        assert self.reader is not None
        rows = await self.reader.execute_fetchall(
            "SELECT c.session, c.interview, c.question_message, c.draft, c.extra, c.blocked,"
            " EXISTS (SELECT 1 FROM processed_updates WHERE update_id = ?)"
            " FROM (SELECT 1) LEFT JOIN conversations c ON c.chat_id = ? AND c.user_id = ?",
            (update_id, key.chat_id, key.user_id))
        *row, duplicate = next(iter(rows))
        if row[1] is None:
            return Conversation(key), bool(duplicate)
        return _conversation(key, tuple(row)), bool(duplicate)  # type: ignore[arg-type]

    def _keep(self, key: Key, row: Row) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > ROWS_KEPT:
            self._rows.popitem(last=False)

    def _question_sent(self, key: Key, question: tuple[int, int]) -> None:
        """A kept row gets the bookkeeping's question message as the table does."""
        row = self._rows.get(key)
        if row is not None and row[1] == question[0]:
            self._rows[key] = (row[0], row[1], question[1], row[3], row[4], row[5])

    async def _commit(self, write: _Write) -> bool:
        """Queue one update's writes for the next group commit and wait for it. True if
        the update turned out to be handled already (its state was then not saved)."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((write, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        return await asyncio.shield(done)  # a cancelled caller must not cancel others' commit

    async def _write_batches(self) -> None:
        """Commit queued writes, all waiting updates in one transaction, until none wait.

        If a batch fails, its writes are retried one transaction each, so one bad
        update fails alone and the others still commit.
        """
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                handled = await self._transaction([w for w, _ in batch])
            except Exception:
                for write, done in batch:
                    try:
                        handled = await self._transaction([write])
                    except Exception as exc:  # handed to the waiting update
                        self._rows.pop(write.key, None)
                        done.set_exception(exc)
                    else:
                        done.set_result(write.update_id in handled)
            else:
                for write, done in batch:
                    done.set_result(write.update_id in handled)

    def _in_thread(self, fn, *args):
        assert self._thread is not None
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _transaction(self, writes: list[_Write]) -> set[int]:
        """Commit these writes; return the update ids among them handled before (whose
        new state is then not saved)."""
        now = time.time()
        unchecked = [w.update_id for w in writes if not w.checked and w.update_id is not None]
        statements = [
            ("INSERT OR IGNORE INTO processed_updates (update_id, at) VALUES (?, ?)",
             [(w.update_id, now) for w in writes if w.update_id is not None]),
            ("DELETE FROM outbox WHERE id = ?", [(i,) for w in writes for i in w.sent]),
            ("UPDATE conversations SET question_message = ? WHERE chat_id = ? AND user_id = ?"
             " AND interview = ?", [(w.question[1], w.key.chat_id, w.key.user_id, w.question[0])
                                    for w in writes if w.question is not None])]
        added: list[Outgoing] = []
        sent: dict[int, set[int]] = {}
        for w in writes:
            sent.setdefault(w.key.user_id, set()).update(w.sent)

        forgotten: set[int] = set()

        def transaction(db: sqlite3.Connection) -> tuple[set[int], list[tuple[Key, Row]]]:
            if db.in_transaction:  # (only if an earlier rollback itself failed)
                db.rollback()
            db.execute("BEGIN IMMEDIATE")
            try:
                handled: set[int] = set()
                for i in range(0, len(unchecked), 500):  # inside the write transaction:
                    ids = unchecked[i:i + 500]  # nothing can add one meanwhile
                    handled.update(r[0] for r in db.execute(
                        "SELECT update_id FROM processed_updates WHERE update_id IN"
                        f" ({','.join('?' * len(ids))})", ids))
                for sql, rows in statements:
                    if rows:
                        db.executemany(sql, rows)
                saved = [w.saved for w in writes if w.saved and w.update_id not in handled]
                kept = self._save(db, saved, now, added, forgotten)
                for w in writes:
                    if w.erase is not None:
                        self._erase(db, w.key.user_id, w.erase, added, forgotten)
                    if w.alert is not None:
                        db.execute("UPDATE alerts SET sent_at = ?, message_id = ? WHERE id = ?",
                                   (now, w.alert[1], w.alert[0]))
                    for key, method, params in w.then:
                        if key.user_id not in forgotten:
                            out, text = self._outgoing(key, method, params)
                            added.append(out)
                            db.execute("INSERT INTO outbox (id, chat_id, user_id, method,"
                                       " params) VALUES (?, ?, ?, ?, ?)",
                                       (out.id, key.chat_id, key.user_id, method, text))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
            return handled, kept

        async with self.lock:
            handled, kept = await self._in_thread(transaction, self._batches)
            for user in forgotten:  # their outbox and rows are gone from the table
                self._outbox.pop(user, None)
                for key in [k for k in self._rows if k.user_id == user]:
                    del self._rows[key]
            self._mirror(added, sent)
            for w in writes:
                if w.question is not None:
                    self._question_sent(w.key, w.question)
            for key, row in kept:
                if key.user_id not in forgotten:
                    self._keep(key, row)
        return handled

    async def sent(self, key: Key, ids: tuple[int, ...], question: tuple[int, int] | None = None,
                   alert: tuple[int, int] | None = None,
                   then: tuple[tuple[Key, str, dict[str, Any]], ...] = ()) -> None:
        """Record outbox calls as made (Telegram took them, or refused them for good), at
        once, in the next group commit: a crash then re-sends only calls in flight.
        With them: the question message just sent ((interview, message id)), or the
        alert just posted ((alert id, message id)) and `then`, calls that follow from
        it (telling the person a clinician knows), queued in the same commit."""
        await self._commit(_Write(None, key, ids, question, None, True, None, alert, then))

    def _save(self, db: sqlite3.Connection, saved: list[tuple], now: float,
              added: list[Outgoing], forgotten: set[int]) -> list[tuple[Key, Row]]:
        """Write new conversation states, their log, outbox calls (each also put in
        `added`) and records; return the conversations' rows as written. (On the
        writer thread, inside its transaction.)"""
        if not saved:
            return []
        rows: list[tuple[Key, Row]] = [
            (c.key, (codec.encode(c.session) if c.session else None, c.interview,
                     c.question_message, _dumps(list(c.draft)), _dumps(c.extra), int(c.blocked)))
            for c, _, _, _ in saved]
        db.executemany(
            "INSERT INTO conversations (chat_id, user_id, session, interview, question_message,"
            " draft, extra, blocked, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (chat_id, user_id) DO UPDATE SET session = excluded.session,"
            " interview = excluded.interview, question_message = excluded.question_message,"
            " draft = excluded.draft, extra = excluded.extra, blocked = excluded.blocked,"
            " updated_at = excluded.updated_at",
            [(key.chat_id, key.user_id, *row, now) for key, row in rows])
        log_rows = [(c.key.chat_id, c.key.user_id, c.interview, now, e.event, e.node,
                     e.finding, _dumps(e.value)) for c, log, _, _ in saved for e in log]
        if log_rows:
            db.executemany(
                "INSERT INTO answer_log (chat_id, user_id, interview, at, event, node, finding,"
                " value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", log_rows)
        outbox = []
        for c, _, calls, _ in saved:
            for method, params in calls:
                out, text = self._outgoing(c.key, method, params)
                added.append(out)
                outbox.append((out.id, c.key.chat_id, c.key.user_id, method, text))
        if outbox:
            db.executemany(
                "INSERT INTO outbox (id, chat_id, user_id, method, params) VALUES (?, ?, ?, ?, ?)",
                outbox)
        for conv, _, _, records in saved:
            for kind, data in records:
                self._record(db, conv.key, kind, data, now, added, forgotten)
        return rows

    def _record(self, db: sqlite3.Connection, key: Key, kind: str, data: dict[str, Any],
                now: float, added: list[Outgoing], forgotten: set[int]) -> None:
        if kind == "forget":  # /forget, confirmed: in the same commit as the press
            self._erase(db, key.user_id, data, added, forgotten)
        elif kind == "schedule":  # a check-in or reminder; replaces pending ones of its kind
            db.execute(
                "UPDATE schedule SET status = 'replaced', done_at = ? WHERE user_id = ? AND"
                " chat_id = ? AND kind = ? AND status = 'pending'",
                (now, key.user_id, key.chat_id, data["kind"]))
            db.execute(
                "INSERT INTO schedule (chat_id, user_id, kind, due_at, interview, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.chat_id, key.user_id, data["kind"], data["due_at"], data["interview"], now))
        elif kind == "unschedule":  # cancelled by the person, or no longer wanted
            db.execute(
                "UPDATE schedule SET status = 'cancelled', done_at = ? WHERE user_id = ? AND"
                " chat_id = ? AND status = 'pending'" + (" AND kind = ?" if data.get("kind")
                                                         else ""),
                (now, key.user_id, key.chat_id, *((data["kind"],) if data.get("kind") else ())))
        elif kind == "scheduled_done":  # claimed: sent, or dropped because too late
            db.execute(
                "UPDATE schedule SET status = ?, done_at = ? WHERE id = ? AND status = 'pending'",
                (data["status"], now, data["id"]))
        elif kind == "event":  # anonymous: no user id, for statistics and export
            db.execute(
                "INSERT INTO events (at, kind, source, level, rules, questions, flow)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, data["kind"], data.get("source"), data.get("level"),
                 ",".join(data.get("rules", ())), data.get("questions"), data.get("flow")))
        elif kind == "alert":
            cur = db.execute(
                "INSERT INTO alerts (user_id, staff_chat, level, created_at) VALUES"
                " (?, ?, ?, ?)", (key.user_id, data["staff_chat"], data["level"], now))
            alert_id = cur.lastrowid
            params = {"chat_id": data["staff_chat"], "text": data["text"],
                      "parse_mode": "HTML", "_alert": alert_id, "_notify": data.get("notify"),
                      "_priority": 0,  # (render.Priority.EMERGENCY: before everything)
                      "reply_markup": {"inline_keyboard": [[{
                          "text": data["button"], "callback_data": f"!take|{alert_id}"}]]}}
            out, text = self._outgoing(Key(data["staff_chat"], key.user_id), "sendMessage",
                                       params)
            added.append(out)
            db.execute(
                "INSERT INTO outbox (id, chat_id, user_id, method, params) VALUES (?, ?, ?, ?, ?)",
                (out.id, data["staff_chat"], key.user_id, "sendMessage", text))

    async def due(self, now: float, limit: int = 100) -> list[Scheduled]:
        """Pending check-ins and reminders whose time has come, oldest first."""
        assert self.reader is not None
        rows = await self.reader.execute_fetchall(
            "SELECT id, chat_id, user_id, kind, due_at, interview FROM schedule"
            " WHERE status = 'pending' AND due_at <= ? ORDER BY due_at LIMIT ?", (now, limit))
        return [Scheduled(r[0], Key(r[1], r[2]), r[3], r[4], r[5]) for r in rows]

    async def scheduled(self, key: Key) -> list[Scheduled]:
        """This person's pending check-ins and reminders."""
        assert self.reader is not None
        rows = await self.reader.execute_fetchall(
            "SELECT id, chat_id, user_id, kind, due_at, interview FROM schedule"
            " WHERE status = 'pending' AND user_id = ? AND chat_id = ? ORDER BY due_at",
            (key.user_id, key.chat_id))
        return [Scheduled(r[0], Key(r[1], r[2]), r[3], r[4], r[5]) for r in rows]

    async def pending(self, key: Key | None = None) -> list[Outgoing]:
        """Calls committed but not yet made, oldest first (for one conversation or all:
        for a person, everything sent on their behalf, alerts included)."""
        if key is not None:
            return list(self._outbox.get(key.user_id, ()))
        return sorted((out for calls in self._outbox.values() for out in calls),
                      key=lambda out: out.id)

    async def set_blocked(self, key: Key) -> None:
        """The person blocked the bot: stop sending, drop what was waiting."""
        async with self.lock:
            async with self._transaction_held() as db:
                await db.execute("UPDATE conversations SET blocked = 1 WHERE chat_id = ? AND"
                                 " user_id = ?", (key.chat_id, key.user_id))
                await db.execute("DELETE FROM outbox WHERE chat_id = ? AND user_id = ?",
                                 (key.chat_id, key.user_id))
            self._mirror([], {key.user_id: {out.id for out in self._outbox.get(key.user_id, ())
                                            if out.key == key}})
            row = self._rows.get(key)
            if row is not None:
                self._rows[key] = (*row[:5], 1)

    async def forget(self, user_id: int, erase: dict[str, Any] | None = None) -> None:
        """Erase every row about this person, for real (see `_erase`). The bot does it
        as part of the update that confirms /forget (a "forget" record), so an erasure
        can never be acknowledged and then lost; this is the same, on its own."""
        await self._transaction([_Write(None, Key(user_id, user_id), (), None, None, True,
                                        erase or {})])
        await self.checkpoint()

    async def checkpoint(self) -> None:
        """Copy the WAL into the file and truncate it: after /forget, the erased pages
        (overwritten in the file) leave no older copy behind in the WAL."""
        async with self.lock:
            with contextlib.suppress(sqlite3.Error):  # (a reader mid-query: next time)
                await self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]

    def _erase(self, db: sqlite3.Connection, user_id: int, data: dict[str, Any],
               added: list[Outgoing], forgotten: set[int]) -> None:
        """(Writer thread, inside its transaction.) Delete every row about a person with
        the deleted content overwritten, drop calls queued for them earlier in this
        commit, then queue `data["calls"]` (the confirmation) and, on each alert posted
        about them, an edit to `data["alert_note"]` with its button removed."""
        alerts = db.execute("SELECT staff_chat, message_id FROM alerts WHERE user_id = ? AND"
                            " message_id IS NOT NULL", (user_id,)).fetchall()
        for table in PERSONAL_TABLES:  # (secure_delete is on for this connection)
            db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
        added[:] = [out for out in added if out.key.user_id != user_id]
        forgotten.add(user_id)
        calls = [(Key(params["chat_id"], user_id), method, params)
                 for method, params in data.get("calls", ())]
        if data.get("alert_note"):
            calls += [(Key(chat, user_id), "editMessageText", {
                "chat_id": chat, "message_id": message, "text": data["alert_note"],
                "parse_mode": "HTML", "reply_markup": {"inline_keyboard": []}})
                for chat, message in alerts]
        for key, method, params in calls:
            out, text = self._outgoing(key, method, params)
            added.append(out)
            db.execute("INSERT INTO outbox (id, chat_id, user_id, method, params) VALUES"
                       " (?, ?, ?, ?, ?)", (out.id, key.chat_id, user_id, method, text))

    async def purge(self, older_than_days: float, once_per: float = 0.0) -> int:
        """Delete conversations (and their log) untouched for longer than the retention.
        (`once_per` is for several workers on PostgreSQL; here there is one process.)"""
        cutoff = time.time() - older_than_days * 86400
        async with self.lock:
            async with self._transaction_held() as db:
                for table in ("answer_log", "schedule"):  # (their check-ins go with them)
                    await db.execute(
                        f"DELETE FROM {table} WHERE (chat_id, user_id) IN (SELECT chat_id,"
                        " user_id FROM conversations WHERE updated_at < ?)", (cutoff,))
                await db.execute("DELETE FROM schedule WHERE status != 'pending' AND"
                                 " done_at < ?", (cutoff,))
                cur = await db.execute("DELETE FROM conversations WHERE updated_at < ?",
                                       (cutoff,))
                await db.execute("DELETE FROM processed_updates WHERE at < ?",
                                 (time.time() - PROCESSED_KEEP_SECONDS,))
            self._rows.clear()  # (some of them may be gone now)
        return cur.rowcount

    async def quarantine(self, update_id: int, kind: str, error: str,
                         notice: tuple[Key, list[tuple[str, dict[str, Any]]]] | None = None,
                         ) -> None:
        """Set aside an update that keeps failing because of what it holds: mark it
        handled (a redelivery is then ignored) and record its id, kind and error type,
        never its content; `notice`: calls telling the person, queued in the same commit."""
        async with self.lock:
            calls = [self._outgoing(notice[0], method, params)
                     for method, params in notice[1]] if notice else []
            async with self._transaction_held() as db:
                now = time.time()
                await db.execute("INSERT OR IGNORE INTO processed_updates (update_id, at)"
                                 " VALUES (?, ?)", (update_id, now))
                await db.execute("INSERT OR REPLACE INTO quarantined_updates (update_id, kind,"
                                 " error, at) VALUES (?, ?, ?, ?)",
                                 (update_id, kind[:40], error[:80], now))
                await db.executemany(
                    "INSERT INTO outbox (id, chat_id, user_id, method, params) VALUES"
                    " (?, ?, ?, ?, ?)", [(out.id, out.key.chat_id, out.key.user_id, out.method,
                                          text) for out, text in calls])
            self._mirror([out for out, _ in calls], {})

    def fault(self, exc: BaseException) -> str | None:
        return store_fault(exc)

    async def probe(self) -> None:
        """Commit a tiny write through the path updates take (the writer thread and its
        connection); raises what a commit would raise now (full disk, locked file).
        It waits at most PROBE_WAIT for a lock: a health check should answer soon."""

        def write(db: sqlite3.Connection) -> None:
            if db.in_transaction:
                db.rollback()
            try:
                db.execute(f"PRAGMA busy_timeout={min(self.busy_ms, PROBE_WAIT_MS):d}")
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO health (id, at) VALUES (1, ?)",
                           (time.time(),))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise
            finally:
                db.execute(f"PRAGMA busy_timeout={self.busy_ms:d}")

        async with self.lock:
            await self._in_thread(write, self._batches)

    # ------------------------------------------------------------ alerts, groups, statistics

    async def alert_sent(self, alert_id: int, message_id: int) -> None:
        await self._write("UPDATE alerts SET sent_at = ?, message_id = ? WHERE id = ?",
                          (time.time(), message_id, alert_id))

    async def alert_failed(self, alert_id: int, error: str) -> None:
        await self._write("UPDATE alerts SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                          (error[:200], alert_id))

    async def take_alert(self, alert_id: int, staff_chat: int, message_id: int,
                         who: str) -> tuple[str, str | None]:
        """Record who took an alert, if the press was on that alert's own message in its
        staff chat: ("taken", who) or ("already", whoever has it). ("refused", None)
        when no such alert is there (forged, or from another chat), which says nothing
        about which alerts exist."""
        if not (alert_id in SQLITE_INT and staff_chat in SQLITE_INT
                and message_id in SQLITE_INT):
            return "refused", None
        async with self._writing() as db:
            rows = await db.execute_fetchall(
                "SELECT taken_by FROM alerts WHERE id = ? AND staff_chat = ? AND"
                " message_id = ?", (alert_id, staff_chat, message_id))
            if not rows:
                return "refused", None
            if rows[0][0]:
                return "already", rows[0][0]
            await db.execute("UPDATE alerts SET taken_by = ?, taken_at = ? WHERE id = ?",
                             (who[:100], time.time(), alert_id))
            return "taken", who

    async def group_seen(self, chat_id: int, kind: str, title: str, status: str) -> None:
        title, kind, status = title[:256], kind[:20], status[:20]  # (Telegram's are shorter)
        await self._write(
            "INSERT INTO groups (chat_id, type, title, status, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (chat_id) DO UPDATE SET type = excluded.type, title = excluded.title,"
            " status = excluded.status, updated_at = excluded.updated_at",
            (chat_id, kind, title, status, time.time()))

    async def stats(self, days: float) -> dict[str, Any]:
        """Counts only, no personal data: interviews and outcomes by level, source and
        flow."""
        since = time.time() - days * 86400
        assert self.db is not None
        async with self.lock:
            async with self.db.execute(
                    "SELECT kind, COALESCE(source, 0), COALESCE(level, ''), count(*),"
                    " COALESCE(flow, '') FROM events WHERE at >= ? GROUP BY 1, 2, 3, 5",
                    (since,)) as cur:
                rows = await cur.fetchall()
            async with self.db.execute(
                    "SELECT count(*), sum(sent_at IS NOT NULL), sum(taken_by IS NOT NULL),"
                    " sum(sent_at IS NULL AND attempts > 0), max(CASE WHEN sent_at IS NULL"
                    " THEN last_error END) FROM alerts WHERE created_at >= ?", (since,)) as cur:
                alerts = await cur.fetchone()
            async with self.db.execute("SELECT chat_id, title FROM groups") as cur:
                titles = dict(await cur.fetchall())
        return stats_of(days, list(rows), tuple(alerts or (0, 0, 0, 0, None)), titles)

    async def export(self, since: float) -> list[tuple]:
        """Finished interviews since `since`: day, source group, level, rules, questions,
        flow."""
        assert self.db is not None
        async with self.lock, self.db.execute(
                "SELECT date(at, 'unixepoch'), source, level, rules, questions, flow FROM events"
                " WHERE kind = 'finished' AND at >= ? ORDER BY at", (since,)) as cur:
            return list(await cur.fetchall())

    async def _write(self, sql: str, args: tuple) -> None:
        async with self._writing() as db:
            await db.execute(sql, args)


def store_fault(exc: BaseException) -> str | None:
    """Why the store itself failed ("database or disk is full", "database is locked", a
    broken file), which a later retry can cure; None if the failure came from what was
    being written, which would fail the same way again. (SQLite's messages name no data.)"""
    if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        return (str(exc) or type(exc).__name__)[:120]
    return None


def _claim(path: Path) -> int:
    """Hold an exclusive lock on `<database>.lock` for as long as the bot runs."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(
            f"another triagebot is already running on {path} (it holds {lock}). Stop it "
            "first: two bots on one database would overwrite each other's answers.") from None
    return fd


def _connect_for_batches(path: Path, busy_ms: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=FULL")  # (WAL is the file's, set at open)
    db.execute("PRAGMA secure_delete=ON")  # what is deleted (sent calls, old rows) is zeroed
    db.execute("PRAGMA foreign_keys=ON")
    db.execute(f"PRAGMA busy_timeout={busy_ms:d}")
    return db


_conversation = conversation_of
