"""The bot as a real process: `kill -9` mid-interview loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys

import pytest

from .conftest import ROOT
from .fake_telegram import FakeTelegram
from .test_telegram import Person


async def start_bot(fake: FakeTelegram, db) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
                "TRIAGEBOT_DB": str(db), "TRIAGEBOT_MODE": "polling",
                "TRIAGEBOT_LISTEN": "127.0.0.1:0"})
    commands_before = len([c for c in fake.calls if c[0] == "setMyCommands"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    await fake.wait(lambda: len([c for c in fake.calls if c[0] == "getUpdates"]) > 0 and
                    len([c for c in fake.calls if c[0] == "setMyCommands"]) > commands_before,
                    timeout=30)
    return proc


async def kill9(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def test_kill_9_mid_interview_then_the_last_button_still_works(fake, tmp_path):
    db = tmp_path / "bot.sqlite3"
    proc = await start_bot(fake, db)
    p = Person(fake, 601)
    try:
        await p.start()
        await p.say("45")
        await p.press("Male")
        question = p.question()
        assert "back pain?" in question.text
        await kill9(proc)
        fake.calls.clear()
        proc = await start_bot(fake, db)
        await p.press("Lower back")
        assert "Is any of these happening now?" in p.last()
        await p.tick("in the chest")
        assert p.last().startswith("🔴 EMERGENCY")
        assert "age: 45 years" not in p.last()  # only the answers that raised the level
        rows = sqlite3.connect(db).execute(
            "SELECT finding, value FROM answer_log WHERE user_id = 601 AND event = 'answer'"
        ).fetchall()
        answers = {f: json.loads(v) for f, v in rows}
        assert answers["age_years"] == 45.0 and answers["sex"] == "male"
        assert answers["back_pain_location"] == "lower" and answers["chest_pain"] is True
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0, "SIGTERM shuts down cleanly"
    log = (await proc.stderr.read()).decode()
    assert "ready as @triage_test_bot" in log
    for secret in (fake.token, "Lower back", "Male", "in the chest"):
        assert secret not in log, f"{secret!r} reached the log"


async def test_replies_committed_before_a_crash_are_sent_on_the_next_start(fake, tmp_path):
    db = tmp_path / "bot.sqlite3"
    proc = await start_bot(fake, db)
    p = Person(fake, 602)
    await p.start()
    await kill9(proc)
    with sqlite3.connect(db) as conn:  # as if the bot died between commit and send
        conn.execute("INSERT INTO outbox (chat_id, user_id, method, params) VALUES (?, ?, ?, ?)",
                     (602, 602, "sendMessage", json.dumps({"chat_id": 602, "text": "left over",
                                                           "parse_mode": "HTML"})))
    proc = await start_bot(fake, db)
    try:
        await fake.wait(lambda: p.last() == "left over")
        for _ in range(100):  # it is deleted from the outbox once Telegram accepted it
            if sqlite3.connect(db).execute("SELECT count(*) FROM outbox").fetchone() == (0,):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the sent call is still in the outbox")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def test_polling_works_even_if_the_metrics_port_is_taken(fake, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
        env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
                    "TRIAGEBOT_DB": str(tmp_path / "bot.sqlite3"),
                    "TRIAGEBOT_LISTEN": f"127.0.0.1:{port}"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            await fake.wait(lambda: any(c[0] == "getUpdates" for c in fake.calls), timeout=30)
            p = Person(fake, 603)
            await p.say("/start")
            assert "Before we start" in p.last()
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        assert "set TRIAGEBOT_LISTEN to a free port" in (await proc.stderr.read()).decode()


async def start_webhook_bot(fake: FakeTelegram, db, port: int, log) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
                "TRIAGEBOT_DB": str(db), "TRIAGEBOT_MODE": "webhook",
                "TRIAGEBOT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
                "TRIAGEBOT_WEBHOOK_SECRET": "s3cret", "TRIAGEBOT_LISTEN": f"127.0.0.1:{port}",
                "TRIAGEBOT_SEND_RATE": "10000", "TRIAGEBOT_CHAT_BURST": "10000"})
    hooks_before = len([c for c in fake.calls if c[0] == "setWebhook"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env, stdout=log, stderr=log)
    await fake.wait(lambda: len([c for c in fake.calls if c[0] == "setWebhook"]) > hooks_before,
                    timeout=30)
    return proc


async def test_kill_9_under_load_loses_no_answer_whose_reply_was_sent(fake, tmp_path):
    """Group commit: many people's updates share one commit. Kill the bot while 20
    people type answers as fast as replies come, start it again, and every person
    finishes with each answer recorded exactly once: none whose reply they saw was
    lost, and none redelivered by Telegram was counted twice."""
    from .test_deploy import free_port
    from .test_telegram import self_care_by_typing

    db, port = tmp_path / "bot.sqlite3", free_port()
    log = open(tmp_path / "bot.log", "wb")  # noqa: SIM115 - closed below
    proc = await start_webhook_bot(fake, db, port, log)
    people = [Person(fake, 700 + i) for i in range(20)]
    try:
        crowd = asyncio.gather(*(self_care_by_typing(p) for p in people))
        await fake.wait(lambda: sum(len(fake.bot_messages(p.id)) for p in people) > 60,
                        timeout=30)
        await kill9(proc)
        in_flight = len(fake.updates)
        proc = await start_webhook_bot(fake, db, port, log)
        await asyncio.wait_for(crowd, 60)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        log.close()
    assert in_flight or any(n > 1 for n in fake.attempts.values()), \
        "the kill happened with updates in flight"
    assert all(any(m.text.startswith("🟢 SELF-CARE") for m in fake.bot_messages(p.id))
               for p in people)
    rows = sqlite3.connect(db).execute(
        "SELECT user_id, node || '/' || finding, count(*) FROM answer_log"
        " WHERE event = 'answer' GROUP BY user_id, node, finding").fetchall()
    assert {user for user, _, _ in rows} == {p.id for p in people}
    assert all(n == 1 for _, _, n in rows), [r for r in rows if r[2] != 1]
    assert all(len([r for r in rows if r[0] == p.id]) == len(rows) // 20 for p in people)
    # calls sent just before the kill whose deletion from the outbox was not yet
    # committed are made again at start: a repeated question, and its edit refused
    # as "not modified"; nothing else may fail
    assert [e for e in fake.errors if "not modified" not in e[2]] == []


async def test_a_check_in_due_while_down_is_sent_once_across_kill_9_restarts(fake, flow,
                                                                           tmp_path):
    """Scheduled 6 hours before a real bot starts (so it is an hour overdue), it is sent
    when the bot comes up; after kill -9 and a second start it is not sent again.

    (Killed in the millisecond between Telegram accepting it and the commit that
    records that, it would be sent again: Telegram has no way to make a send
    idempotent, and losing a check-in would be worse than repeating it.)"""
    import time

    from .test_time import Clock, checkin_harness, self_care_with_offer

    db = tmp_path / "bot.sqlite3"
    async with checkin_harness(fake, flow, db, Clock(time.time() - 7 * 3600)):
        p = Person(fake, 606)
        await self_care_with_offer(p)
        await p.press("In 6 hours")
    proc = await start_bot(fake, db)
    try:
        await fake.wait(lambda: "Checking in as promised" in p.last(), timeout=30)
        for _ in range(100):  # recorded as sent (it left the outbox)
            if sqlite3.connect(db).execute("SELECT count(*) FROM outbox").fetchone() == (0,):
                break
            await asyncio.sleep(0.05)
        await kill9(proc)
        proc = await start_bot(fake, db)
        await asyncio.sleep(1.5)  # its check-in pass has run
        asked = [m for m in fake.bot_messages(606) if "Checking in" in m.text]
        assert len(asked) == 1
        status = sqlite3.connect(db).execute("SELECT status FROM schedule").fetchall()
        assert status == [("sent",)]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def test_a_second_bot_on_the_same_database_is_refused(fake, tmp_path):
    """The running bot keeps committed rows in memory, so a second one writing the same
    file would overwrite its answers: it must refuse to start and say why, while
    `db check` and `export` still work beside the running bot."""
    db = tmp_path / "bot.sqlite3"
    proc = await start_bot(fake, db)
    try:
        p = Person(fake, 604)
        await p.start()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
        env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
                    "TRIAGEBOT_DB": str(db), "TRIAGEBOT_LISTEN": "127.0.0.1:0"})
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 2
        assert "another triagebot is already running on" in err.decode()
        for command in (["db", "check"], ["export", "--since", "2026-01-01"]):
            other = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", *command, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(other.communicate(), 60)
            assert other.returncode == 0, (command, err.decode()[-500:])
        await p.say("45")  # the first bot is unaffected
        assert "sex" in p.last().lower()
    finally:
        await kill9(proc)
    proc = await start_bot(fake, db)  # a killed bot's claim dies with it
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_sigterm_lets_a_reply_in_flight_finish_so_it_is_not_sent_twice(fake, tmp_path,
                                                                             mode):
    """SIGTERM while a reply is on its way: the bot waits for Telegram's answer and
    records the call as made, so the next start does not send it again."""
    from .test_deploy import free_port

    db, port = tmp_path / "bot.sqlite3", free_port()
    log = open(tmp_path / "bot.log", "wb")  # noqa: SIM115 - closed below

    async def start() -> asyncio.subprocess.Process:
        if mode == "webhook":
            return await start_webhook_bot(fake, db, port, log)
        return await start_bot(fake, db)

    proc = await start()
    p = Person(fake, 605)
    try:
        await p.start()
        fake.slow_answers["sendMessage"] = 1.0  # Telegram took it; its answer is slow
        await p.say("45")  # the next question is shown; the bot still awaits the answer
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        fake.slow_answers.clear()
    shown = len(fake.bot_messages(605))
    proc = await start()
    try:
        await asyncio.sleep(1.0)  # a restart sends what is left in the outbox at once
        assert len(fake.bot_messages(605)) == shown, "a reply was sent twice"
        await p.say("male")
        assert "Where" in p.last()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        log.close()
