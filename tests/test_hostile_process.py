"""Hostile input and faults against the bot as a real process (issue 13): forged updates
of every kind, an unwritable store, a disk that fills up under load, start-up that
cannot succeed, and SIGTERM while Telegram hangs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from .conftest import ROOT
from .fake_telegram import ApiError, FakeTelegram
from .test_telegram import SECRET, Person


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bot:
    """`triagebot run` in a child process, in polling or webhook mode."""

    def __init__(self, fake: FakeTelegram, db: Path, mode: str = "webhook", **extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
        self.env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
                         "TRIAGEBOT_DB": str(db), "TRIAGEBOT_MODE": mode,
                         "TRIAGEBOT_WEBHOOK_URL": f"{self.url}/hook",
                         "TRIAGEBOT_WEBHOOK_SECRET": SECRET,
                         "TRIAGEBOT_LISTEN": f"127.0.0.1:{self.port}", **extra})
        self.fake, self.proc = fake, None
        self.started = 0.0

    async def launch(self) -> asyncio.subprocess.Process:
        self.started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        return self.proc

    async def __aenter__(self) -> Bot:
        await self.launch()
        await self.fake.wait(lambda: self.fake.webhook is not None if
                             self.env["TRIAGEBOT_MODE"] == "webhook" else
                             any(c[0] == "getUpdates" for c in self.fake.calls), timeout=30)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)

    async def stderr(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode()

    async def health(self) -> int:
        async with aiohttp.ClientSession() as client, \
                client.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=20)) as r:
            return r.status


async def answered_within_2_s(fake: FakeTelegram, user_id: int) -> None:
    fake.type(user_id, "/start")
    await fake.wait(lambda: fake.last_question(user_id) is not None, timeout=2)


def forged_updates(fake: FakeTelegram, victim: int, consent_message: int) -> list[dict]:
    """One update of each kind a scripted account (or a leaked secret) could make."""
    person = {"id": 1401, "is_bot": False, "first_name": "Mallory"}
    private = {"id": 1401, "type": "private"}
    group = {"id": -200, "type": "group", "title": "G"}
    on = {"message_id": consent_message, "date": 1, "chat": {"id": victim, "type": "private"}}
    return [
        {"callback_query": {"id": "q1", "from": person, "data": "!take|" + "9" * 20,
                            "message": {**on, "chat": private}}},
        {"callback_query": {"id": "q2", "from": person, "data": "!take|1", "message": on}},
        {"callback_query": {"id": "q3", "from": person, "data": "0|_|-1|consent_share",
                            "message": {"message_id": 1, "date": 1, "chat": group}}},
        {"callback_query": {"id": "q4", "from": person, "data": "\u0000" * 64 + "|" * 9,
                            "message": {**on, "chat": private}}},
        {"callback_query": {"id": "q5", "from": person, "data": "1|_|-1|forget_yes",
                            "message": on}},  # on the victim's message: not Mallory's chat
        {"edited_message": {"message_id": 3, "date": 1, "text": "x", "chat": group,
                            "from": person}},
        {"message": {"message_id": 4, "date": 1, "text": "/forget", "from": person,
                     "chat": {"id": victim, "type": "private"}}},
        {"message": {"message_id": 5, "date": 1, "text": "➊" * 4000, "from": person,
                     "chat": private}},
        {"message": {"message_id": 6, "date": 1, "sticker": {"file_id": "x"}, "from": person,
                     "chat": private}},
        {"message": [1, 2, 3]},
        {"message": {"chat": {"id": 2 ** 70, "type": "private"}, "from": {"id": 2 ** 70},
                     "text": "/start"}},
        {"my_chat_member": {"chat": {"id": victim, "type": "private"}, "from": person,
                            "date": 1, "new_chat_member": {"status": "kicked"}}},
        {"my_chat_member": {"chat": {"id": -200, "type": "group", "title": "T" * 100_000},
                            "from": person, "date": 1,
                            "new_chat_member": {"status": "member" * 1000}}},
        {"callback_query": "not an object"},
    ]


async def test_forged_updates_of_every_kind_leave_the_next_person_answered_in_2_s(
        fake, tmp_path):
    async with Bot(fake, tmp_path / "bot.sqlite3") as bot:
        victim = Person(fake, 1400)
        await victim.start()
        await victim.say("45")
        shown = victim.seen()
        consent = fake.bot_messages(1400)[0].message_id
        for n, update in enumerate(forged_updates(fake, 1400, consent)):
            fake.raw(update)
            await answered_within_2_s(fake, 1500 + n)
        await victim.press("Male")  # the victim's interview goes on, nothing erased
        assert victim.seen() > shown and "back pain" in victim.question().text
        assert await bot.health() == 200
        assert fake.bot_message_count(-200) == 0
        assert not any("Mallory" in m.text for chat in (1400, -200)
                       for m in fake.bot_messages(chat))
        db = sqlite3.connect(tmp_path / "bot.sqlite3")
        assert db.execute("SELECT count(*) FROM conversations WHERE user_id = 1401 AND"
                          " chat_id != 1401").fetchone() == (0,)
        assert db.execute("SELECT blocked FROM conversations WHERE user_id = 1400"
                          ).fetchone() == (0,)


async def test_healthz_fails_while_the_store_cannot_commit_and_recovers(fake, tmp_path):
    db = tmp_path / "bot.sqlite3"
    async with Bot(fake, db) as bot:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another program holds the database
        try:
            assert await bot.health() == 503
        finally:
            other.execute("ROLLBACK")
            other.close()
        deadline = time.monotonic() + 15
        while await bot.health() != 200:
            assert time.monotonic() < deadline, "healthy again once the store commits"
            await asyncio.sleep(0.5)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "6m"):
    """A tmpfs of `size` at `path` (root only; the test is skipped otherwise)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the filler to delete."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        for block in (b"\0" * 65536, b"\0"):
            with contextlib.suppress(OSError):
                while out.write(block):
                    pass
    return filler


@pytest.mark.parametrize("mode", ["webhook", "polling"])
async def test_a_full_disk_under_load_loses_no_acknowledged_update(fake, tmp_path, mode):
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "bot.sqlite3"
        async with Bot(fake, db, mode) as bot:
            people = [Person(fake, 1600 + i) for i in range(8)]
            await asyncio.gather(*(p.start() for p in people))
            filler = fill(disk)
            ids = [fake.type(p.id, "45") for p in people]  # answered while the disk is full
            await asyncio.sleep(2)
            if mode == "webhook":
                assert all(fake.delivered.get(i) is None for i in ids), "none acknowledged"
                assert await bot.health() == 503
            filler.unlink()  # space again: every answer is committed and answered
            for p in people:
                await fake.wait(lambda p=p: "Male" in str(getattr(
                    fake.last_question(p.id), "reply_markup", "")), timeout=60)
            log = await asyncio.wait_for(_stop(bot), 30)
        rows = sqlite3.connect(db).execute(
            "SELECT user_id, count(*) FROM answer_log WHERE finding = 'age_years'"
            " GROUP BY user_id").fetchall()
        assert sorted(rows) == [(p.id, 1) for p in people], "each answer recorded once"
        assert "database or disk is full" in log and "skipped" not in log


async def _stop(bot: Bot) -> str:
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    log = await bot.stderr()
    await bot.proc.wait()
    return log


async def exits_with_one_line(bot: Bot, within: float) -> str:
    proc = await bot.launch()
    try:
        await asyncio.wait_for(proc.wait(), within)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"still running after {within} s") from None
    log = await bot.stderr()
    assert proc.returncode == 1, log
    assert "Traceback" not in log, log
    return next(line for line in log.splitlines() if "not started" in line)


async def test_start_up_that_cannot_succeed_exits_non_zero_in_bounded_time(fake, tmp_path):
    """Five bots that cannot start, at once (only the 502 one reaches the fake)."""
    fake.failures["getMe"] = [ApiError(502, "Bad Gateway") for _ in range(100)]
    garbage = tmp_path / "c.sqlite3"
    garbage.write_bytes(os.urandom(8192))
    locked = tmp_path / "d.sqlite3"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # before the bot's first migration
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk)
        try:
            unreachable, bad_gateway, not_a_db, busy, full = await asyncio.gather(
                exits_with_one_line(Bot(fake, tmp_path / "a.sqlite3", TRIAGEBOT_START_TIMEOUT="2",
                                        TRIAGEBOT_API_URL=f"http://127.0.0.1:{free_port()}"), 20),
                exits_with_one_line(Bot(fake, tmp_path / "b.sqlite3",
                                        TRIAGEBOT_START_TIMEOUT="2"), 20),
                exits_with_one_line(Bot(fake, garbage), 15),
                exits_with_one_line(Bot(fake, locked, TRIAGEBOT_START_TIMEOUT="1"), 30),
                exits_with_one_line(Bot(fake, disk / "e.sqlite3"), 15))
        finally:
            holder.close()
    assert "could not reach Telegram for 2 s" in unreachable
    assert "could not reach Telegram" in bad_gateway and "Bad Gateway" in bad_gateway
    assert "cannot open the database" in not_a_db and "not a database" in not_a_db
    assert "could not open the database" in busy and "locked" in busy
    assert "cannot open the database" in full


async def test_sigterm_while_telegram_hangs_exits_within_docker_s_grace(fake, tmp_path):
    async with Bot(fake, tmp_path / "bot.sqlite3") as bot:
        fake.slow_answers["sendMessage"] = 120  # Telegram takes our call and never answers
        fake.type(1700, "/start")
        await fake.wait(lambda: any(c[0] == "sendMessage" for c in fake.calls))
        assert bot.proc is not None
        started = time.monotonic()
        bot.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bot.proc.wait(), 15)
        assert time.monotonic() - started < 10, "inside Docker's 10 s and systemd's 30 s"
    fake.slow_answers.clear()
    log = (await bot.stderr())
    assert json.dumps(fake.token)[1:-1] not in log
