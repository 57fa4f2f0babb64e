"""Peak memory of the webhook process with many stored sessions.

Fills a database with N conversations (each a mid-interview session of realistic
size), starts `triagebot run` in webhook mode against the test suite's fake Bot
API, runs a few interviews through it, and prints the process's peak RSS (VmHWM)
as JSON, with the same figure for an empty database measured in the same run.

    python bench/memory.py [--sessions 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.engine import Engine  # noqa: E402
from bot.loader import load_flow  # noqa: E402
from bot.session import Pick, PickMany, Typed  # noqa: E402
from bot.store import codec  # noqa: E402
from bot.store.sqlite import SqliteStore  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402


async def fill(db: Path, n: int) -> None:
    store = SqliteStore(db)
    await store.open()
    await store.close()
    engine = Engine(load_flow(ROOT / "flows" / "back_pain_fever.yaml"))
    step = engine.start()
    for inp in (Typed("45"), Pick("sex", "male"), Pick("where", "lower"), PickMany("danger", ()),
                Typed("37.5")):
        step = engine.handle(step.session, inp)
    session = codec.encode(step.session)
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO conversations (chat_id, user_id, session, interview, draft, extra,"
            " updated_at) VALUES (?, ?, ?, 1, '[]', '{\"consent\": \"none\"}', ?)",
            ((10_000_000 + i, 10_000_000 + i, session, now) for i in range(n)))


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def measure(db: Path, people: int) -> dict:
    fake = FakeTelegram()
    await fake.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env.update(TELEGRAM_BOT_TOKEN=fake.token, TRIAGEBOT_API_URL=fake.base_url,
               TRIAGEBOT_DB=str(db), TRIAGEBOT_MODE="webhook",
               TRIAGEBOT_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
               TRIAGEBOT_WEBHOOK_SECRET="s", TRIAGEBOT_LISTEN=f"127.0.0.1:{port}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await fake.wait(lambda: fake.webhook is not None, timeout=60)
        for i in range(people):  # some traffic, including people already stored
            fake.type(10_000_000 + i, "/start")
            fake.type(10_000_000 + i, "/help")
        await fake.wait(lambda: len(fake.delivered) >= 2 * people, timeout=120)
        return {"peak_rss_mb": round(peak_rss_kb(proc.pid) / 1024, 1),
                "db_mb": round(db.stat().st_size / 2**20, 1)}
    finally:
        proc.terminate()
        await proc.wait()
        await fake.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp) / "empty.sqlite3", Path(tmp) / "full.sqlite3"
        await fill(empty, 0)
        await fill(full, args.sessions)
        baseline = await measure(empty, args.people)
        loaded = await measure(full, args.people)
    print(json.dumps({"benchmark": "memory", "sessions": args.sessions,
                      "empty_db": baseline, "with_sessions": loaded,
                      "ratio": round(loaded["peak_rss_mb"] / baseline["peak_rss_mb"], 2)},
                     indent=2))


if __name__ == "__main__":
    asyncio.run(main())
