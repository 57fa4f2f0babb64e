"""A channel broadcast: hundreds of people start at once, and emergencies must not wait.

`triagebot run` (webhook mode, the bot's default send settings) against the fake Bot
API with Telegram's flood control switched on (tests/fake_telegram.FloodLimits: a
private chat ~1 message/s after a burst of 3, a group 20/min, the whole bot
--overall per second, 429 with retry_after beyond). N people arrive through a
group's deep link in two waves of W seconds each, the second while the first is
answering; each reads 1-3 s before every answer, like a person:

* most answer a self-care interview by typing;
* --urgent of them agree to be contacted and end urgent (a staff alert);
* --red of them (in the first wave, so they reach the emergency question while the
  second wave's backlog builds) agree to be contacted and tick a red flag.

Prints JSON: p50/p95/p99/max of the time to the first question (from /start, the
person's reading of the consent notice included), from the red-flag answer to the
emergency advice, and from an urgent or emergency outcome to the staff alert; Bot
API calls per finished interview; 429s; and whether every person finished with
each answer recorded once.

With --kill-at S the bot is killed with kill -9 S seconds in and started again at
once; the JSON then also says how many messages reached a chat twice, how many staff
alerts were posted, and how many chats differ from their script's usual messages.

    python bench/burst.py [--people 1000] [--window 10] [--overall 30] [--seed 1]
                          [--kill-at S]
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
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import deeplink  # noqa: E402
from tests.fake_telegram import FakeTelegram, FloodLimits  # noqa: E402

GROUP, STAFF = -1001234567890, -300
SELF_CARE = ("33", "Female, not pregnant", "lower back", "none", "not measured", "none",
             "mild", "2 days", "none", "none")
URGENT = ("33", "Female, not pregnant", "lower back", "none", "101.3F", "none", "mild",
          "2 days", "none", "none", "none")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Person:
    def __init__(self, fake: FakeTelegram, user_id: int, rng: random.Random, times: dict):
        self.fake, self.id, self.rng, self.times = fake, user_id, rng, times

    def last(self) -> str:
        m = self.fake.last_bot_message(self.id)
        return m.text if m else ""

    async def wait(self, predicate, timeout: float = 600) -> float:
        await self.fake.wait(predicate, timeout=timeout, chat=self.id)
        return time.monotonic()

    async def read(self) -> None:
        await asyncio.sleep(self.rng.uniform(1, 3))

    def settled(self, before: int) -> bool:
        if self.fake.bot_message_count(self.id) <= before:
            return False
        m = self.fake.last_bot_message(self.id)
        return bool(m.buttons()) or "This is not a diagnosis" in m.text

    async def say(self, text: str) -> None:
        await self.read()
        before = self.fake.bot_message_count(self.id)
        self.fake.type(self.id, text)
        await self.wait(lambda: self.settled(before))

    async def press(self, label: str, settle: bool = True) -> float:
        await self.read()
        q = self.fake.last_question(self.id)
        data = next(d for t, d in q.buttons() if label in t)
        before, edits = self.fake.bot_message_count(self.id), q.edits
        self.fake.press(self.id, q.message_id, data)
        pressed = time.monotonic()
        await self.wait((lambda: self.settled(before)) if settle else (lambda: q.edits > edits))
        return pressed

    async def begin(self, consent: str) -> None:
        started = time.monotonic()
        self.fake.type(self.id, "/start " + deeplink.make(GROUP, self.fake.token))
        await self.wait(lambda: self.fake.last_question(self.id) is not None)
        await self.press(consent, settle=False)
        await self.wait(lambda: "How old" in self.last())
        self.times["first_question"].append(time.monotonic() - started)

    async def self_care(self) -> None:
        await self.begin("No, don't alert anyone")
        for text in SELF_CARE[0:]:
            await self.say(text)

    async def urgent(self) -> None:
        await self.begin("Yes, contact me only")
        for text in URGENT:
            await self.say(text)
        await self.alerted("urgent")

    async def red_flag(self) -> None:
        await self.begin("Yes, contact me only")
        await self.say("45")
        await self.press("Male")
        await self.press("Lower back")
        await self.press("in the chest", settle=False)
        pressed = await self.press("Done", settle=False)
        await self.wait(lambda: self.last().startswith("🔴"))
        self.times["red_flag_to_advice"].append(time.monotonic() - pressed)
        await self.alerted("emergency")

    async def alerted(self, level: str) -> None:
        outcome = time.monotonic()
        marker = f"tg://user?id={self.id}"
        await self.fake.wait(lambda: any(marker in m.html for m in self.fake.bot_messages(STAFF)),
                             timeout=600, chat=STAFF)
        self.times["outcome_to_alert"].append(time.monotonic() - outcome)
        self.times[f"alert_{level}"].append(time.monotonic() - outcome)
        # then the person is told, once the alert is posted (their last message)
        await self.wait(lambda: "clinician on duty has been told" in self.last(), timeout=60)


def unusual_chats(fake: FakeTelegram, crowd: list, scripts: dict) -> int:
    """Chats whose messages (a repeat in a row counted once) differ from what most
    people with the same script got: a message lost, or out of order."""
    seen: dict[Any, list[tuple[str, ...]]] = {}
    for p in crowd:
        texts = [m.html for m in fake.bot_messages(p.id)]
        seen.setdefault(scripts[p.id], []).append(
            tuple(t for n, t in enumerate(texts) if n == 0 or texts[n - 1] != t))
    odd = []
    for runs in seen.values():
        usual = Counter(runs).most_common(1)[0][0]
        odd += [(usual, run) for run in runs if run != usual]
    for usual, run in odd[:3]:  # what differed, for the log (the scripts' texts only)
        print("differs:", [t[:60] for t in run if t not in usual],
              "missing:", [t[:60] for t in usual if t not in run], file=sys.stderr)
    return len(odd)


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
    return {"n": len(values), "p50_s": round(q[49], 2), "p95_s": round(q[94], 2),
            "p99_s": round(q[98], 2), "max_s": round(max(values), 2)}


async def run(people: int, window: float, overall: float, red: float, urgent: float,
              seed: int, tmp: Path, kill_at: float | None = None) -> dict:
    fake = FakeTelegram(limits=FloodLimits(overall=overall))
    await fake.start()
    fake.add_chat(GROUP, "supergroup", "Clinic Community")
    fake.add_chat(STAFF, "group", "Clinicians on duty")
    port = free_port()
    db = tmp / "burst.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env |= {"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
            "TRIAGEBOT_MODE": "webhook", "TRIAGEBOT_WEBHOOK_SECRET": "s3cret",
            "TRIAGEBOT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
            "TRIAGEBOT_LISTEN": f"127.0.0.1:{port}", "TRIAGEBOT_DB": str(db),
            "TRIAGEBOT_STAFF_CHAT": str(STAFF), "TRIAGEBOT_CHECKINS": "off"}
    log = open(tmp / "bot.log", "wb")  # noqa: SIM115 - closed with the process

    def start():
        return asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", cwd=ROOT,
                                              env=env, stdout=log, stderr=log)

    proc = await start()
    killed: dict[str, float] = {}

    async def kill_and_restart(at: float) -> None:
        """kill -9 in the middle of the burst, then start again at once."""
        nonlocal proc
        await asyncio.sleep(at)
        proc.kill()
        await proc.wait()
        killed["sent_before_kill"] = sum(1 for m, _ in fake.calls if m == "sendMessage")
        hooks = sum(1 for m, _ in fake.calls if m == "setWebhook")
        proc = await start()
        await fake.wait(lambda: sum(1 for m, _ in fake.calls if m == "setWebhook") > hooks,
                        timeout=60)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"first_question": [], "red_flag_to_advice": [],
                                     "outcome_to_alert": [], "alert_emergency": [],
                                     "alert_urgent": []}
    try:
        await fake.wait(lambda: fake.webhook is not None, timeout=60)
        crowd = [Person(fake, 70_000 + i, random.Random(rng.random()), times)
                 for i in range(people)]
        for p in crowd:
            fake.chats.setdefault(p.id, [])
        n_red, n_urgent = max(1, round(red * people)), round(urgent * people)
        first, second = crowd[:people // 2], crowd[people // 2:]
        scripts = {p.id: Person.self_care for p in crowd}
        for p in first[:n_red]:
            scripts[p.id] = Person.red_flag
        for p in second[:n_urgent]:
            scripts[p.id] = Person.urgent

        async def arrive(p: Person, at: float) -> None:
            await asyncio.sleep(at)
            await scripts[p.id](p)

        t0 = time.monotonic()
        if kill_at is not None:
            killer = asyncio.create_task(kill_and_restart(kill_at))
        plan = [arrive(p, rng.uniform(0, window)) for p in first]
        plan += [arrive(p, window + rng.uniform(0, window)) for p in second]
        await asyncio.gather(*plan)
        wall = time.monotonic() - t0
        if kill_at is not None:
            await killer
        calls = Counter(method for method, _ in fake.calls)
        with sqlite3.connect(db) as conn:
            answers = conn.execute("SELECT user_id, interview, node, count(*) FROM answer_log"
                                   " WHERE event = 'answer' GROUP BY 1, 2, 3, finding"
                                   " HAVING count(*) > 1").fetchall()
            finished = conn.execute("SELECT count(*) FROM events WHERE kind = 'finished'"
                                    ).fetchone()[0]
        return {
            "people": people, "window_s": window, "overall_limit_per_s": overall,
            "wall_s": round(wall, 1),
            "time_to_first_question": summary(times["first_question"]),
            "red_flag_to_emergency_advice": summary(times["red_flag_to_advice"]),
            "outcome_to_staff_alert": summary(times["outcome_to_alert"]),
            "emergency_outcome_to_staff_alert": summary(times["alert_emergency"]),
            "urgent_outcome_to_staff_alert": summary(times["alert_urgent"]),
            "bot_api_calls_per_finished_interview": round(
                sum(n for m, n in calls.items() if m not in ("getUpdates",)) / max(finished, 1),
                2),
            "calls_by_method": dict(sorted(calls.items())),
            "429s": sum(1 for e in fake.errors if e[1] == 429),
            "finished": finished, "all_finished": finished == people,
            "answers_recorded_twice": len(answers),
            # a message that reached a chat twice in a row (a call made again after the
            # crash); the scripted interviews never repeat a message otherwise
            "messages_sent_twice": sum(
                1 for p in crowd for a, b in zip(fake.bot_messages(p.id),
                                                 fake.bot_messages(p.id)[1:], strict=False)
                if a.html == b.html),
            "staff_alerts": len(fake.bot_messages(STAFF)),
            "chats_lost_or_out_of_order": unusual_chats(fake, crowd, scripts),
            **({"killed_at_s": kill_at, **killed} if kill_at is not None else {}),
        }
    finally:
        proc.terminate()
        await proc.wait()
        log.close()
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per wave")
    parser.add_argument("--overall", type=float, default=30.0,
                        help="the fake's bot-wide limit, messages/s (30 pessimistic, 1000)")
    parser.add_argument("--red", type=float, default=0.05, help="share with a red flag")
    parser.add_argument("--urgent", type=float, default=0.05, help="share ending urgent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-at", type=float, default=None,
                        help="kill -9 the bot this many seconds in, and start it again")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.people, args.window, args.overall, args.red,
                                 args.urgent, args.seed, Path(tmp), args.kill_at))
    print(json.dumps({"benchmark": "burst", **result}, indent=2))


if __name__ == "__main__":
    main()
