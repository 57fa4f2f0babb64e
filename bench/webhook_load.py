"""Load the whole webhook path and compare it with two baselines measured in the same run.

The fake Bot API server (tests/fake_telegram.py) runs in this process and plays U
people who each answer only after the previous reply, like a human (no think time):
for triagebot, full interviews by buttons and by typing; for the baselines, the same
number of messages. Targets, each in its own process, one after the other:

* triagebot — `triagebot run` in webhook mode (HTTP -> python-telegram-bot -> engine
  -> SQLite commit -> replies), with Telegram's send limits lifted so that capacity,
  not policy, is measured;
* ptb_echo — bench/baselines/ptb_echo.py, a bare python-telegram-bot bot with default
  settings answering each update with a 2-button keyboard (the framework's floor);
* aiohttp_echo — bench/baselines/aiohttp_echo.py, no framework (the limit here).

Prints JSON: updates/s, latency p50/p95/p99 from pushing an update to the bot's final
reply, errors, the bot's CPU seconds per update, its peak RSS, and the ratios.

    python bench/webhook_load.py [--people 50] [--rounds 3] [--repeat 3] [--targets a,b,c]

With --repeat N the targets run N times in turn (T P A T P A ...), since this
machine's speed drifts by ±15 % within a minute: each figure is the median over the
repeats, and each ratio the median of the ratios within a repeat (with its range).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_telegram import FakeTelegram  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PROFILE_DIR: Path | None = None  # --profile DIR: run triagebot under pyinstrument


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int, thread: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads included (or of one)."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Person:
    """Someone who sends one thing, waits for the bot's reply, then sends the next."""

    def __init__(self, fake: FakeTelegram, user_id: int, latencies: list[float]):
        self.fake, self.id, self.latencies = fake, user_id, latencies
        self.updates = 0

    def messages(self):
        return self.fake.bot_messages(self.id)

    def settled(self, before: int, echo: bool) -> bool:
        if self.fake.bot_message_count(self.id) <= before:
            return False
        last = self.fake.last_bot_message(self.id)
        return echo or bool(last.buttons()) or "This is not a diagnosis" in last.text

    async def act(self, push, echo: bool) -> None:
        before = self.fake.bot_message_count(self.id)
        started = time.perf_counter()
        push()
        self.updates += 1
        await self.fake.wait(lambda: self.settled(before, echo), timeout=120, chat=self.id)
        self.latencies.append(time.perf_counter() - started)

    async def say(self, text: str, echo: bool = False) -> None:
        await self.act(lambda: self.fake.type(self.id, text), echo)

    async def press(self, label: str) -> None:
        q = next(m for m in reversed(self.messages()) if m.buttons())
        data = next(d for t, d in q.buttons() if label in t)
        await self.act(lambda: self.fake.press(self.id, q.message_id, data), False)

    async def consent(self, label: str) -> None:  # the prompt becomes the first question
        q = next(m for m in reversed(self.messages()) if m.buttons())
        data = next(d for t, d in q.buttons() if label in t)
        started = time.perf_counter()
        self.fake.press(self.id, q.message_id, data)
        self.updates += 1
        await self.fake.wait(lambda: bool(q.buttons()) and "consent" not in q.buttons()[0][1],
                             timeout=120, chat=self.id)
        self.latencies.append(time.perf_counter() - started)

    async def toggle(self, label: str) -> None:  # edits the keyboard; no new message
        q = next(m for m in reversed(self.messages()) if m.buttons())
        data = next(d for t, d in q.buttons() if label in t)
        edits, started = q.edits, time.perf_counter()
        self.fake.press(self.id, q.message_id, data)
        self.updates += 1
        await self.fake.wait(lambda: q.edits > edits, timeout=120, chat=self.id)
        self.latencies.append(time.perf_counter() - started)


async def interview(p: Person, n: int, rounds: int) -> None:
    """Full triagebot interviews: buttons for even people, typing for odd ones."""
    for _ in range(rounds):
        await one_interview(p, n)


async def one_interview(p: Person, n: int) -> None:
    await p.say("/start")
    labels = [label for label, _ in p.fake.last_question(p.id).buttons()]
    if "OK, start" in labels:
        await p.consent("OK, start")
    elif "No, don't alert anyone" in labels:  # consent is asked once per person
        await p.consent("No, don't alert anyone")
    if n % 2 == 0:
        await p.say("45")
        await p.press("Male")
        await p.press("Lower back")
        await p.toggle("Numbness or tingling around the genitals")
        await p.press("Done")
    else:
        for text in ("33", "Female, not pregnant", "lower back", "none", "101.3F", "none",
                     "mild", "2 days", "none", "none", "none"):
            await p.say(text)


async def echo_chat(p: Person, count: int) -> None:
    for i in range(count):
        await p.say(f"message {i}", echo=True)


async def fresh_database(admin: str, name: str) -> str:
    """An empty PostgreSQL database for one run; its URL."""
    import asyncpg

    db = await asyncpg.connect(admin)
    try:
        await db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await db.execute(f"CREATE DATABASE {name}")
    finally:
        await db.close()
    return admin.rsplit("/", 1)[0] + "/" + name


async def run_target(name: str, people: int, per_person: int, rounds: int, tmp: Path,
                     repeat: int = 0, postgres: str = "") -> dict:
    if name.startswith("triagebot_pg"):  # triagebot_pg: one worker; triagebot_pg2: two
        dsn = await fresh_database(postgres, f"bench_{name}_{repeat}")
        workers = 2 if name.endswith("2") else 1
        results = await run_target("triagebot", people, per_person, rounds, tmp, repeat,
                                   postgres=dsn + f"#{workers}")
        return results
    workers = 1
    if "#" in postgres:  # (a PostgreSQL target's own fresh database, and its workers)
        postgres, count = postgres.rsplit("#", 1)
        workers = int(count)
    else:
        postgres = ""  # the other targets keep to SQLite
    fake = FakeTelegram()
    await fake.start()
    port = free_port()
    ports = [port] + [free_port() for _ in range(workers - 1)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env |= {"TELEGRAM_BOT_TOKEN": fake.token, "TOKEN": fake.token, "API_URL": fake.base_url,
            "TRIAGEBOT_API_URL": fake.base_url, "PORT": str(port), "SECRET": "s3cret",
            "TRIAGEBOT_MODE": "webhook", "TRIAGEBOT_WEBHOOK_SECRET": "s3cret",
            "TRIAGEBOT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
            "TRIAGEBOT_LISTEN": f"127.0.0.1:{port}",
            "TRIAGEBOT_DB": postgres or str(tmp / f"{name}-{repeat}.db"),
            "TRIAGEBOT_SEND_RATE": "100000", "TRIAGEBOT_CHAT_BURST": "100000"}
    profile = ["-m", "pyinstrument", "--renderer", "text", "--outfile",
               str(PROFILE_DIR / f"{name}-{repeat}.txt")] if PROFILE_DIR else []
    command = {"triagebot": [sys.executable, *profile, "-m", "bot", "run"],
               "ptb_echo": [sys.executable, str(ROOT / "bench/baselines/ptb_echo.py")],
               "aiohttp_echo": [sys.executable, str(ROOT / "bench/baselines/aiohttp_echo.py")]}
    log = open(tmp / f"{name}-{repeat}.log", "wb")  # noqa: SIM115 - closed with the process
    procs = [await asyncio.create_subprocess_exec(
        *command[name], cwd=ROOT, env=env | {"TRIAGEBOT_LISTEN": f"127.0.0.1:{p}",
                                             "PORT": str(p)}, stdout=log, stderr=log)
        for p in ports]
    proc = procs[0]
    try:
        await fake.wait(lambda: fake.webhook is not None, timeout=60)
        await asyncio.sleep(0.5 + 1.5 * (workers - 1))  # let them finish starting
        if workers > 1:  # a load balancer in front: updates in turn
            fake.balance = [f"http://127.0.0.1:{p}/hook" for p in ports]
        latencies: list[float] = []
        crowd = [Person(fake, 50_000 + i, latencies) for i in range(people)]
        for p in crowd:
            fake.chats.setdefault(p.id, [])
        # the load generator's own garbage collector paused it (and so every simulated
        # person) for up to ~120 ms in a run: not the bot's latency, so off while timing
        gc.collect()
        gc.disable()
        cpu0, t0, own0 = _cpu(procs), time.perf_counter(), time.process_time()
        main0 = sum(cpu_seconds(proc.pid, proc.pid))  # the event loop's thread
        if name == "triagebot":
            await asyncio.gather(*(interview(p, i, rounds) for i, p in enumerate(crowd)))
        else:
            await asyncio.gather(*(echo_chat(p, per_person) for p in crowd))
        wall, (user, system) = time.perf_counter() - t0, _cpu(procs)
        main = sum(cpu_seconds(proc.pid, proc.pid)) - main0
        user, system = user - cpu0[0], system - cpu0[1]
        own = time.process_time() - own0  # the fake server and the simulated people
        gc.enable()
        updates = sum(p.updates for p in crowd)
        q = statistics.quantiles(latencies, n=100)
        return {"updates": updates, "updates_per_second": round(updates / wall, 1),
                "p50_ms": round(1000 * q[49], 1), "p95_ms": round(1000 * q[94], 1),
                "p99_ms": round(1000 * q[98], 1), "errors": len(fake.errors),
                "error_kinds": dict(Counter(f"{m} {code}: {text[:50]}"
                                            for m, code, text in fake.errors)),
                "api_calls_per_update": {m: round(n / updates, 2) for m, n in sorted(
                    Counter(method for method, _ in fake.calls).items()) if n >= updates / 10},
                "bot_cpu_ms_per_update": round(1000 * (user + system) / updates, 2),
                "of_which_system_ms": round(1000 * system / updates, 2),
                "peak_rss_mb": round(sum(peak_rss_mb(p.pid) for p in procs), 1),
                # busy share of one core: which single thread limits the closed loop
                "bot_main_thread_cpu_share": round(main / wall, 2),
                "load_generator_cpu_share": round(own / wall, 2)}
    except AssertionError:  # the bot died or stalled: show why
        log.close()
        print((tmp / f"{name}-{repeat}.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        gc.enable()
        for p in procs:
            if p.returncode is None:
                p.terminate()
            await p.wait()
        log.close()
        await fake.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="interviews per person")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every target, in turn")
    parser.add_argument("--targets", default="triagebot,ptb_echo,aiohttp_echo")
    parser.add_argument("--profile", help="folder for a pyinstrument profile of triagebot")
    parser.add_argument("--postgres", default=os.environ.get("TRIAGEBOT_TEST_POSTGRES", ""),
                        help="an admin URL of a PostgreSQL server, for the targets "
                             "triagebot_pg (one worker) and triagebot_pg2 (two behind a "
                             "round-robin balancer); each run gets a new database")
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = Path(args.profile) if args.profile else None
    if PROFILE_DIR:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        per = 10 * args.rounds
        for repeat in range(args.repeat):
            run: dict[str, dict] = {}
            for name in args.targets.split(","):
                run[name] = await run_target(name, args.people, per, args.rounds, Path(tmp),
                                             repeat, args.postgres)
                if name == "triagebot":  # baselines get as many messages per person as
                    per = round(run[name]["updates"] / args.people)  # an interview has
            runs.append(run)
    out = {"benchmark": "webhook_load", "people": args.people, "repeats": args.repeat,
           "results": {name: _median(r[name] for r in runs) for name in runs[0]}}
    figures = {"throughput": "updates_per_second", "p99": "p99_ms",
               "cpu": "bot_cpu_ms_per_update"}
    for name in ("triagebot_pg", "triagebot_pg2"):  # PostgreSQL next to SQLite, same run
        if {"triagebot", name} <= runs[0].keys():
            for figure, metric in figures.items():
                ratios = sorted(r[name][metric] / r["triagebot"][metric] for r in runs)
                out[f"{name}_{figure}_vs_sqlite"] = round(statistics.median(ratios), 2)
    for name, key in (("ptb_echo", "ptb"), ("aiohttp_echo", "aiohttp")):
        if {"triagebot", name} <= runs[0].keys():
            for figure, metric in figures.items() if key == "ptb" else [
                    ("throughput", "updates_per_second")]:
                ratios = sorted(r["triagebot"][metric] / r[name][metric] for r in runs)
                out[f"{figure}_vs_{key}"] = round(statistics.median(ratios), 2)
                out[f"{figure}_vs_{key}_range"] = [round(ratios[0], 2), round(ratios[-1], 2)]
    out["runs"] = [{name: [r["updates_per_second"], r["p99_ms"], r["bot_cpu_ms_per_update"]]
                    for name, r in run.items()} for run in runs]  # updates/s, p99, CPU ms
    print(json.dumps(out, indent=2))


def _cpu(procs) -> tuple[float, float]:
    """User and system CPU seconds of all these processes."""
    times = [cpu_seconds(p.pid) for p in procs]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def _median(results) -> dict:
    """Each figure's median over the repeats (call counts as measured the first time)."""
    results = list(results)
    out = dict(results[0])
    for key, value in out.items():
        if isinstance(value, int | float):
            out[key] = round(statistics.median(r[key] for r in results), 2)
    return out


if __name__ == "__main__":
    asyncio.run(main())
