"""Time from process start to ready: flows loaded and validated, database migrated,
the bot connected (getMe, setMyCommands) and /healthz answering 200.

Starts `triagebot run` (polling mode, against the fake Bot API) several times and
prints JSON with the median and worst time; a bare `python -c pass` start is
measured in the same run as the baseline.

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_telegram import FakeTelegram  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def ready_time(fake: FakeTelegram, db: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env |= {"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
            "TRIAGEBOT_DB": str(db), "TRIAGEBOT_LISTEN": f"127.0.0.1:{port}"}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            return time.perf_counter() - started
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.01)
    finally:
        proc.terminate()
        await proc.wait()


async def bare_python() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    fake = FakeTelegram()
    await fake.start()
    times, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):  # the first run also creates and migrates the database
            times.append(await ready_time(fake, Path(tmp) / "bot.sqlite3"))
            bare.append(await bare_python())
    await fake.stop()
    print(json.dumps({"benchmark": "startup", "runs": args.runs,
                      "ready_seconds_median": round(statistics.median(times), 3),
                      "ready_seconds_worst": round(max(times), 3),
                      "bare_python_seconds_median": round(statistics.median(bare), 3),
                      "ratio_to_bare_python": round(statistics.median(times) /
                                                    statistics.median(bare), 1)}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
