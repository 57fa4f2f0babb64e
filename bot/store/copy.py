"""`triagebot db copy SQLITE postgresql://...`: move a deployment to PostgreSQL.

The SQLite file is first copied with its online backup API (a consistent snapshot,
safe while the bot runs), then every table goes into an empty PostgreSQL database
in one transaction, the id sequences continue after the copied ids, and the row
counts are compared table by table before the commit. Anything different, and
nothing is committed. Updates the bot handles after the snapshot are not in the
copy: stop the bot before the copy you switch over with (deploy/README).
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import asyncpg

from bot.errors import SettingsError
from bot.store import maintenance
from bot.store.migrations import MIGRATIONS
from bot.store.postgres import PostgresStore

# every table and column, in an order that needs nothing not yet copied
TABLES: dict[str, tuple[str, ...]] = {
    "conversations": ("chat_id", "user_id", "session", "interview", "question_message",
                      "draft", "extra", "blocked", "updated_at"),
    "answer_log": ("id", "chat_id", "user_id", "interview", "at", "event", "node", "finding",
                   "value"),
    "processed_updates": ("update_id", "at"),
    "outbox": ("id", "chat_id", "user_id", "method", "params"),
    "groups": ("chat_id", "type", "title", "status", "updated_at"),
    "events": ("id", "at", "kind", "source", "level", "rules", "questions", "flow"),
    "alerts": ("id", "user_id", "staff_chat", "level", "created_at", "sent_at", "message_id",
               "taken_by", "taken_at", "attempts", "last_error"),
    "schedule": ("id", "chat_id", "user_id", "kind", "due_at", "interview", "status",
                 "created_at", "done_at"),
    "quarantined_updates": ("update_id", "kind", "error", "at"),
    "health": ("id", "at"),
}
SERIAL = ("answer_log", "outbox", "events", "alerts", "schedule")  # BIGSERIAL ids


async def copy(sqlite_path: Path, dsn: str) -> dict[str, int]:
    """Copy every row; return the count per table (as verified in PostgreSQL)."""
    if not sqlite_path.is_file():
        raise SettingsError(f"no SQLite database at {sqlite_path}")
    with tempfile.TemporaryDirectory(prefix="triagebot-copy-") as folder:  # (owner-only)
        snapshot = maintenance.backup(sqlite_path, Path(folder) / "snapshot.sqlite3")
        with sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True) as source:
            version = source.execute("PRAGMA user_version").fetchone()[0]
            if version != len(MIGRATIONS):
                raise SettingsError(f"{sqlite_path} is at schema version {version}, not "
                                    f"{len(MIGRATIONS)}: run `triagebot db migrate` on it first")
            rows = {table: source.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
                    for table, cols in TABLES.items()}
        source.close()
    store = PostgresStore(dsn)
    await store.open()  # creates or migrates the schema
    await store.close()
    db = await asyncpg.connect(dsn)
    try:
        async with db.transaction():
            for table in TABLES:
                if await db.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                    raise SettingsError(f"the PostgreSQL database already has rows in {table}:"
                                        " copy into an empty one")
            for table, cols in TABLES.items():
                records = [_typed(table, row) for row in rows[table]]
                if records:
                    await db.copy_records_to_table(table, records=records, columns=list(cols))
            for table in SERIAL:  # new ids continue after the copied ones
                await db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)")
            counts = {table: await db.fetchval(f"SELECT count(*) FROM {table}")
                      for table in TABLES}
            wrong = {t: (len(rows[t]), n) for t, n in counts.items() if n != len(rows[t])}
            if wrong:  # (rolled back: nothing half-copied stays)
                raise SettingsError(f"row counts differ after the copy (SQLite, PostgreSQL): "
                                    f"{wrong}; nothing was kept")
    finally:
        await db.close()
    return counts


def _typed(table: str, row: tuple) -> tuple:
    """SQLite's values as PostgreSQL's columns want them (0/1 -> boolean)."""
    if table == "conversations":
        return (*row[:7], bool(row[7]), row[8])
    return tuple(row)
