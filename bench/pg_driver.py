"""Choosing the PostgreSQL driver by measurement: asyncpg against psycopg 3 (async),
on the store's per-update transaction (lock the person's row, record the update id,
write the conversation and two outbox calls, commit), from N concurrent tasks.

    python bench/pg_driver.py postgresql://user@127.0.0.1:5432/db [--updates 3000]

Prints one JSON object: updates/s and p99 per driver, and psycopg's time relative
to asyncpg's measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

SCHEMA = """
DROP TABLE IF EXISTS bench_conv, bench_processed, bench_outbox;
CREATE TABLE bench_conv (chat_id BIGINT, user_id BIGINT, session TEXT, interview INT,
                         PRIMARY KEY (chat_id, user_id));
CREATE TABLE bench_processed (update_id BIGINT PRIMARY KEY, at DOUBLE PRECISION);
CREATE TABLE bench_outbox (id BIGSERIAL PRIMARY KEY, chat_id BIGINT, user_id BIGINT,
                           method TEXT, params TEXT);
"""
SESSION = json.dumps({"flow_id": "back_pain_fever", "answers": [
    {"node": f"n{i}", "finding": f"f{i}", "value": True, "how": "answered"} for i in range(12)]})


async def run_asyncpg(dsn: str, updates: int, tasks: int) -> list[float]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=tasks, max_size=tasks)
    async with pool.acquire() as c:
        await c.execute(SCHEMA)
    times: list[float] = []
    counter = iter(range(updates))

    async def worker() -> None:
        for n in counter:
            user = n % 500
            t0 = time.perf_counter()
            async with pool.acquire() as c, c.transaction():
                await c.execute("INSERT INTO bench_conv VALUES ($1, $1, NULL, 0) ON CONFLICT"
                                " DO NOTHING", user)
                await c.fetchrow("SELECT session, interview FROM bench_conv WHERE chat_id = $1"
                                 " AND user_id = $1 FOR UPDATE", user)
                await c.fetchval("INSERT INTO bench_processed VALUES ($1, 0) ON CONFLICT DO"
                                 " NOTHING RETURNING update_id", n)
                await c.execute("UPDATE bench_conv SET session = $2, interview = interview + 1"
                                " WHERE chat_id = $1 AND user_id = $1", user, SESSION)
                await c.executemany("INSERT INTO bench_outbox (chat_id, user_id, method, params)"
                                    " VALUES ($1, $1, $2, $3)",
                                    [(user, "sendMessage", SESSION), (user, "edit", "{}")])
            times.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    await pool.close()
    return times


async def run_psycopg(dsn: str, updates: int, tasks: int) -> list[float]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(dsn, min_size=tasks, max_size=tasks, open=False)
    await pool.open()
    async with pool.connection() as c:
        await c.execute(SCHEMA)
    times: list[float] = []
    counter = iter(range(updates))

    async def worker() -> None:
        for n in counter:
            user = n % 500
            t0 = time.perf_counter()
            async with pool.connection() as c, c.transaction():
                await c.execute("INSERT INTO bench_conv VALUES (%s, %s, NULL, 0) ON CONFLICT"
                                " DO NOTHING", (user, user))
                await (await c.execute("SELECT session, interview FROM bench_conv WHERE"
                                       " chat_id = %s AND user_id = %s FOR UPDATE",
                                       (user, user))).fetchone()
                await (await c.execute("INSERT INTO bench_processed VALUES (%s, 0) ON CONFLICT"
                                       " DO NOTHING RETURNING update_id", (n,))).fetchone()
                await c.execute("UPDATE bench_conv SET session = %s, interview = interview + 1"
                                " WHERE chat_id = %s AND user_id = %s", (SESSION, user, user))
                async with c.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO bench_outbox (chat_id, user_id, method, params) VALUES"
                        " (%s, %s, %s, %s)", [(user, user, "sendMessage", SESSION),
                                              (user, user, "edit", "{}")])
            times.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    await pool.close()
    return times


def summary(times: list[float], wall: float) -> dict:
    times = sorted(times)
    return {"updates_per_second": round(len(times) / wall), "p50_ms": round(
        1000 * statistics.median(times), 2), "p99_ms": round(
        1000 * times[int(len(times) * 0.99) - 1], 2)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result: dict = {"benchmark": "pg_driver", "updates": args.updates, "tasks": args.tasks}
    walls: dict[str, list[float]] = {"asyncpg": [], "psycopg": []}
    for _ in range(args.rounds):  # alternated, so drift hits both alike
        for name, fn in (("asyncpg", run_asyncpg), ("psycopg", run_psycopg)):
            t0 = time.perf_counter()
            times = await fn(args.dsn, args.updates, args.tasks)
            wall = time.perf_counter() - t0
            walls[name].append(wall)
            result[name] = summary(times, wall)
    result["psycopg_time_vs_asyncpg"] = round(statistics.median(walls["psycopg"]) /
                                              statistics.median(walls["asyncpg"]), 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
