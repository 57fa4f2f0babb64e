"""Small helpers for tests: driving the engine, reading the database the bot wrote."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import sqlite3
from contextlib import closing
from pathlib import Path

from bot.engine import Engine
from bot.session import Ask, Input, Outcome, Reply, Session, Step


def last_ask(replies: tuple[Reply, ...]) -> Ask | None:
    return next((r for r in reversed(replies) if isinstance(r, Ask)), None)


def outcome(replies: tuple[Reply, ...]) -> Outcome | None:
    return next((r for r in replies if isinstance(r, Outcome)), None)


def play(engine: Engine, *inputs: Input, start: Step | None = None) -> Step:
    """Start (or continue from `start`) and feed inputs in order."""
    step = start or engine.start()
    for inp in inputs:
        step = engine.handle(step.session, inp)
    return step


def at(session: Session) -> tuple[str | None, int]:
    return session.node, session.item


def on_postgres(db: Path | str) -> bool:
    return isinstance(db, str) and db.startswith("postgresql://")


def store_on(db: Path | str):
    """The store the bot would open on `db` (a SQLite path or a postgresql:// URL)."""
    from bot.cli import open_store
    from bot.settings import from_env

    return open_store(from_env({"TELEGRAM_BOT_TOKEN": "1:x", "TRIAGEBOT_DB": str(db)}))


def rows(db: Path | str, sql: str, *args) -> list[tuple]:
    """Run one statement on the test's database, SQLite or PostgreSQL (`?` placeholders
    in both), committed, and return its rows as tuples. For reading what the bot wrote;
    it blocks the event loop for a moment, which a read never waits on."""
    if not on_postgres(db):
        with closing(sqlite3.connect(db)) as conn, conn:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    numbered = iter(range(1, sql.count("?") + 1))
    pg_sql = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def run() -> list[tuple]:
        import asyncpg

        conn = await asyncpg.connect(db)
        try:
            return [tuple(r) for r in await conn.fetch(pg_sql, *args)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # (its own event loop)
        return pool.submit(asyncio.run, run()).result()


def everything(db: Path | str) -> str:
    """Every row of every table, as text: to show something is nowhere in the database."""
    if not on_postgres(db):
        with closing(sqlite3.connect(db)) as conn:
            return "\n".join(conn.iterdump())
    tables = [name for name, in rows(db, "SELECT tablename FROM pg_tables "
                                         "WHERE schemaname = 'public'")]
    assert tables, "no tables: is this the bot's database?"
    return "\n".join(f"{table}: {row[0]}" for table in tables
                     for row in rows(db, f"SELECT t::text FROM {table} t"))
