"""Session store: load + save per update as the table grows, and bytes per session.

For each size N (default 10k, 100k, 1M stored conversations, each holding a
mid-interview session), times the store's per-update transaction — read the
conversation, write the new session, the update id, the log entries and one
outbox call, commit — for random people, and prints JSON with p50/p99 and the
database size per session. The 10k figure is the baseline for the others.

With --postgres ADMIN_URL (default: TRIAGEBOT_TEST_POSTGRES) the same runs on the
PostgreSQL store too, each size in a new database, and each PostgreSQL figure is
also given against SQLite's at the same size, measured in the same run.

    python bench/store.py [--sizes 10000,100000,1000000] [--updates 2000]
                          [--postgres postgresql://USER@HOST:PORT/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.engine import Engine  # noqa: E402
from bot.loader import load_flow  # noqa: E402
from bot.session import Pick, PickMany, Typed  # noqa: E402
from bot.store import Key, codec  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402


def mid_interview():
    engine = Engine(load_flow(ROOT / "flows" / "back_pain_fever.yaml"))
    step = engine.start()
    for inp in (Typed("45"), Pick("sex", "male"), Pick("where", "lower"),
                PickMany("danger", ()), Typed("37.5")):
        step = engine.handle(step.session, inp)
    return engine, step.session


async def fill_sqlite(size: int, blob: str, folder: Path):
    """A SQLite store holding `size` conversations; (the store, bytes per session)."""
    db = folder / f"store-{size}.sqlite3"
    store = SqliteStore(db)
    await store.open()
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO conversations (chat_id, user_id, session, interview, draft, extra,"
            " updated_at) VALUES (?, ?, ?, 1, '[]', '{}', ?)",
            ((i, i, blob, time.time()) for i in range(1, size + 1)))
    return store, db.stat().st_size / size


async def fill_postgres(size: int, blob: str, admin: str):
    """A PostgreSQL store on a new database holding `size` conversations (COPY), with
    the planner's statistics fresh; (the store, bytes per session of the table)."""
    import asyncpg

    from bot.store.postgres import PostgresStore

    name = await drop_database(admin, size)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    store = PostgresStore(dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        now = time.time()
        await conn.copy_records_to_table(
            "conversations", columns=("chat_id", "user_id", "session", "interview", "draft",
                                      "extra", "updated_at"),
            records=((i, i, blob, 1, "[]", "{}", now) for i in range(1, size + 1)))
        await conn.execute("VACUUM ANALYZE conversations")
        table = await conn.fetchval("SELECT pg_total_relation_size('conversations')")
    finally:
        await conn.close()
    return store, table / size


async def drop_database(admin: str, size: int) -> str:
    import asyncpg

    name = f"bench_store_{size}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
    return name


async def measure(store, size: int, per_session: float, updates: int) -> dict:
    engine, session = mid_interview()
    await store.open()
    rng = random.Random(size)
    timings = []
    step = engine.handle(session, PickMany("legs", ()))
    for n in range(updates):
        user = rng.randint(1, size)
        key = Key(user, user)
        started = time.perf_counter()
        async with store.update(10_000_000 + n, key) as tx:
            conv = replace(tx.conversation, session=step.session)
            tx.save(conv, step.session.log[-1:], [("sendMessage", {"chat_id": user,
                                                                   "text": "x"})])
        timings.append(time.perf_counter() - started)
    await store.close()
    q = statistics.quantiles(timings, n=100)
    return {"sessions": size, "p50_ms": round(1000 * q[49], 3), "p99_ms": round(1000 * q[98], 3),
            "bytes_per_session": round(per_session)}


def against(results: list[dict]) -> None:
    base = results[0]["p99_ms"]
    for r in results:
        r["p99_vs_smallest"] = round(r["p99_ms"] / base, 2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--postgres", default=os.environ.get("TRIAGEBOT_TEST_POSTGRES", ""),
                        help="an admin URL of a PostgreSQL server: the PostgreSQL store too")
    args = parser.parse_args()
    blob = codec.encode(mid_interview()[1])
    sqlite, postgres = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(n) for n in args.sizes.split(",")):
            store, per_session = await fill_sqlite(size, blob, Path(tmp))
            sqlite.append(await measure(store, size, per_session, args.updates))
            (Path(tmp) / f"store-{size}.sqlite3").unlink()  # (1M: 1.4 GB)
            if args.postgres:
                store, per_session = await fill_postgres(size, blob, args.postgres)
                result = await measure(store, size, per_session, args.updates)
                result["p99_vs_sqlite"] = round(result["p99_ms"] / sqlite[-1]["p99_ms"], 2)
                result["p50_vs_sqlite"] = round(result["p50_ms"] / sqlite[-1]["p50_ms"], 2)
                postgres.append(result)
                await drop_database(args.postgres, size)  # (1M: 1.6 GB)
    against(sqlite)
    report = {"benchmark": "store", "updates_per_size": args.updates, "results": sqlite}
    if postgres:
        against(postgres)
        report["postgres"] = postgres
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
