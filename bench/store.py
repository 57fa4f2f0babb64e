"""Session store: load + save per update as the table grows, and bytes per session.

For each size N (default 10k, 100k, 1M stored conversations, each holding a
mid-interview session), times the store's per-update transaction — read the
conversation, write the new session, the update id, the log entries and one
outbox call, commit — for random people, and prints JSON with p50/p99 and the
database size per session. The 10k figure is the baseline for the others.

    python bench/store.py [--sizes 10000,100000,1000000] [--updates 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def measure(size: int, updates: int, folder: Path) -> dict:
    engine, session = mid_interview()
    db = folder / f"store-{size}.sqlite3"
    store = SqliteStore(db)
    await store.open()
    await store.close()
    blob = codec.encode(session)
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO conversations (chat_id, user_id, session, interview, draft, extra,"
            " updated_at) VALUES (?, ?, ?, 1, '[]', '{}', ?)",
            ((i, i, blob, time.time()) for i in range(1, size + 1)))
    per_session = db.stat().st_size / size
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--updates", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [await measure(int(n), args.updates, Path(tmp))
                   for n in args.sizes.split(",")]
    base = results[0]["p99_ms"]
    for r in results:
        r["p99_vs_smallest"] = round(r["p99_ms"] / base, 2)
    print(json.dumps({"benchmark": "store", "updates_per_size": args.updates,
                      "results": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
