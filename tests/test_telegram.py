"""The real bot (python-telegram-bot over HTTP) against the strict fake Bot API server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import stat
from pathlib import Path

import aiohttp
import pytest

from bot.cli import open_store
from bot.conversation import Conversations
from bot.engine import Engine
from bot.settings import from_env
from bot.store.migrations import MIGRATIONS
from bot.store.sqlite import SqliteStore
from bot.telegram.app import TelegramBot
from bot.telegram.delivery import Limits

from .fake_telegram import ApiError, FakeTelegram
from .helpers import rows

SECRET = "s3cret-token_123"


class Harness:
    """The bot running in this process, in polling or webhook mode."""

    def __init__(self, fake: FakeTelegram, flow, db: Path | str, mode: str, port: int = 0):
        """`db`: a SQLite file, or a postgresql:// URL (the `db` fixture gives either)."""
        self.fake, self.mode, self.db = fake, mode, db
        env = {"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
               "TRIAGEBOT_DB": str(db), "TRIAGEBOT_MODE": mode,
               "TRIAGEBOT_WEBHOOK_URL": "https://bot.example/hook/abc",
               "TRIAGEBOT_WEBHOOK_SECRET": SECRET, "TRIAGEBOT_LISTEN": f"127.0.0.1:{port}"}
        self.settings = from_env(env)
        self.store = open_store(self.settings)
        # one message a second per chat would make these tests slow: the pace is tested
        # on its own (and the fake enforces Telegram's only where a test asks)
        self.bot = TelegramBot(self.settings, Conversations(Engine(flow)), self.store,
                               poll_timeout=1, limits=Limits(
                                   chat_burst=1000, group_per_minute=100_000,
                                   retry_base=0.01))
        self.tasks: list[asyncio.Task] = []
        self.runner = None
        self.url = ""

    async def __aenter__(self) -> Harness:
        await self.bot.start()
        if self.mode == "polling":
            self.tasks.append(asyncio.create_task(self.bot.poll()))
        else:
            from aiohttp import web

            self.runner = web.AppRunner(self.bot.webhook_app(), access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            await self.bot.set_webhook()
            # the public URL is https://bot.example/...; the fake delivers to us locally
            self.fake.webhook["url"] = self.url + "/hook/abc"
        return self

    async def __aexit__(self, *exc) -> None:
        self.bot.stopping.set()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.runner is not None:
            await self.runner.cleanup()
        await self.bot.stop()


class Person:
    """Someone chatting with the bot through the fake server."""

    def __init__(self, fake: FakeTelegram, user_id: int):
        self.fake, self.id = fake, user_id

    def seen(self) -> int:
        return len(self.fake.bot_messages(self.id))

    def settled(self, before: int) -> bool:
        """The bot has finished answering: its newest message is a question or an outcome."""
        if self.seen() <= before:
            return False
        last = self.fake.bot_messages(self.id)[-1]
        return bool(last.buttons()) or "This is not a diagnosis" in last.text

    async def say(self, text: str, until=None) -> None:
        before = self.seen()
        self.fake.type(self.id, text)
        await self.fake.wait(until or (lambda: self.settled(before)))

    def question(self):
        q = self.fake.last_question(self.id)
        assert q is not None, "no question with buttons"
        return q

    async def press(self, label: str, wait_new: bool = True) -> None:
        q = self.question()
        data = next((d for text, d in q.buttons() if label in text), None)
        assert data is not None, f"no button {label!r} in {q.buttons()}"
        before, edits = self.seen(), q.edits
        self.fake.press(self.id, q.message_id, data)
        query = max(self.fake.queries, key=int)  # the one just made (no await between)
        await self.fake.wait((lambda: self.settled(before)) if wait_new else
                             (lambda: q.edits > edits))
        await self.fake.wait(lambda: self.fake.queries[query])  # the spinner stopped

    async def tick(self, *labels: str) -> None:
        for label in labels:
            await self.press(label, wait_new=False)
        await self.press("Done")

    async def start(self, consent: str = "") -> None:
        """/start, then answer the one-time consent question (storage only by default)."""
        await self.say("/start")
        labels = [t for t, _ in self.question().buttons()]
        if "OK, start" in labels or "Yes, contact me only" in labels:
            await self.consent(consent or ("OK, start" if "OK, start" in labels
                                           else "No, don't alert anyone"))

    async def consent(self, label: str) -> None:
        """Answer the consent prompt, which then becomes the first question (one message
        for first contact: its text stays on top)."""
        prompt = self.question()
        await self.press(label, wait_new=False)
        await self.fake.wait(lambda: bool(prompt.buttons()) and "consent" not in
                             prompt.buttons()[0][1])

    def last(self) -> str:
        messages = self.fake.bot_messages(self.id)
        return messages[-1].text if messages else ""

    def transcript(self) -> str:
        return "\n---\n".join(m.text for m in self.fake.bot_messages(self.id))


async def emergency_by_buttons(p: Person, consent: str = "") -> None:
    await p.start(consent)
    await p.say("45")
    await p.press("Male")
    await p.press("Lower back")
    await p.tick("Numbness or tingling around the genitals")


async def self_care_by_typing(p: Person) -> None:
    await p.start()
    for text in ("33", "Female, not pregnant", "lower back", "none", "not measured",
                 "none", "mild", "2 days", "none", "none"):
        await p.say(text)


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_red_flag_interview_by_buttons_ends_in_emergency(fake, flow, db, mode):
    async with Harness(fake, flow, db, mode):
        p = Person(fake, 501)
        await emergency_by_buttons(p)
        assert p.last().startswith("🔴 EMERGENCY: CALL 112 NOW")
        assert "cauda equina" in p.last() and "not a doctor" in p.last()
        sex = next(m for m in fake.bot_messages(501) if "registered at birth" in m.text)
        assert sex.text.endswith("✓ Male") and not sex.buttons(), "answered and closed"
        assert all(answered for answered in fake.queries.values()), "every press answered"
        if mode == "webhook":  # by the webhook's response, not a request of the bot's
            assert fake.webhook_replies.count("answerCallbackQuery") == len(fake.queries) \
                == sum(method == "answerCallbackQuery" for method, _ in fake.calls)
        assert fake.errors == []


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_self_care_interview_by_typing(fake, flow, db, mode):
    async with Harness(fake, flow, db, mode):
        p = Person(fake, 502)
        await self_care_by_typing(p)
        assert p.last().startswith("🟢 SELF-CARE")
        assert "nhs.uk/conditions/back-pain" in fake.bot_messages(502)[-1].html
        # typed answers close the keyboards of the questions they answer (in webhook
        # mode by the webhook's response, which Telegram acts on a moment later)
        await fake.wait(lambda: not any(m.buttons() for m in fake.bot_messages(502)))
        if mode == "webhook":
            assert fake.webhook_replies.count("editMessageReplyMarkup") >= 5
        assert fake.errors == []


async def test_commands_are_registered_and_unknown_ones_get_help(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        assert {c["command"] for c in fake.commands} >= {"start", "restart", "back", "help",
                                                         "privacy", "forget"}
        p = Person(fake, 503)
        await p.say("/frobnicate", until=lambda: p.seen() == 1)
        assert "/restart" in p.last() and "not a doctor" in p.last()
        await p.say("/privacy", until=lambda: p.seen() == 2)
        assert "30 days" in p.last()


async def test_stickers_long_text_and_edits_get_a_polite_answer(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        p = Person(fake, 504)
        await p.start()
        before = p.seen()
        fake.send(504, {"sticker": {"file_id": "x", "file_unique_id": "y", "width": 1,
                                    "height": 1, "is_animated": False, "is_video": False,
                                    "type": "regular"}})
        await fake.wait(lambda: p.settled(before))
        # the notice, then the question again: in one message
        assert p.seen() == before + 1 and p.last().index("stickers") < p.last().index("How old")
        await p.say("x" * 5000)
        assert p.last().index("longer than I can read") < p.last().index("How old")
        before = p.seen()
        fake.raw({"edited_message": {"message_id": 1, "date": 0, "edit_date": 1, "text": "46",
                                     "chat": {"id": 504, "type": "private", "first_name": "U"},
                                     "from": {"id": 504, "is_bot": False, "first_name": "U"}}})
        await fake.wait(lambda: p.seen() > before)
        assert "did not change anything" in p.last()
        assert fake.errors == []


async def test_a_stale_button_is_answered_and_never_recorded(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        p = Person(fake, 505)
        await p.start()
        await p.say("45")
        old = p.question()
        old_male = next(d for t, d in old.buttons() if t == "Male")
        await p.say("/restart")
        before = p.seen()
        fake.press(505, old.message_id, old_male)
        await fake.wait(lambda: p.settled(before))
        assert any("earlier check" in m.text for m in fake.bot_messages(505)[before:])
        assert "How old" in p.last()
        assert all(fake.queries.values())


async def test_two_fast_presses_on_one_keyboard_record_one_answer(fake, flow, db):
    async with Harness(fake, flow, db, "polling") as h:
        p = Person(fake, 506)
        await p.start()
        await p.say("45")
        q = p.question()
        male = next(d for t, d in q.buttons() if t == "Male")
        female = next(d for t, d in q.buttons() if t.startswith("Female, not"))
        fake.press(506, q.message_id, male)
        fake.press(506, q.message_id, female)
        await fake.wait(lambda: all(fake.queries.values()) and "back pain?" in p.last())
        await asyncio.sleep(0.3)
        async with h.store.update(None, _key(506)) as tx:
            answers = [a for a in tx.conversation.session.answers if a.finding == "sex"]
        assert [a.value for a in answers] == ["male"]


async def test_back_and_restart_buttons(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        p = Person(fake, 507)
        await p.start()
        await p.say("45")
        await p.press("« Back")
        assert "How old" in p.last()
        await p.say("50")
        await p.press("Start over")
        assert "How old" in p.last()


async def test_a_blocked_person_is_marked_and_not_sent_to(fake, flow, db):
    async with Harness(fake, flow, db, "polling") as h:
        p = Person(fake, 508)
        await p.start()
        fake.blocked.add(508)
        fake.type(508, "45")
        await fake.wait(lambda: any(code == 403 for _, code, _ in fake.errors))
        await asyncio.sleep(0.2)
        assert rows(h.db, "SELECT blocked FROM conversations WHERE user_id = 508") == [(1,)]
        assert rows(h.db, "SELECT count(*) FROM outbox") == [(0,)]


async def test_429_and_network_errors_are_retried_so_no_reply_is_lost(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        fake.failures["sendMessage"] = [
            ApiError(429, "Too Many Requests: retry after 1", retry_after=1),
            ApiError(502, "Bad Gateway")]
        p = Person(fake, 509)
        await p.start()
        assert "How old" in p.last()
        assert [code for _, code, _ in fake.errors] == [429, 502]


async def test_forget_erases_every_row_about_the_person(fake, flow, db):
    async with Harness(fake, flow, db, "polling") as h:
        other = Person(fake, 511)
        await other.start()
        p = Person(fake, 510)
        await p.start()
        await p.say("45")
        await p.say("/forget")
        await p.press("Yes, erase it", wait_new=False)
        await fake.wait(lambda: "erased everything" in p.last())
        assert "erased everything" in p.last()
        # (the confirmation's own outbox rows go once it is sent: the same moment)
        await fake.wait(lambda: rows(h.db, "SELECT count(*) FROM outbox WHERE user_id = 510")
                        == [(0,)], timeout=2)
        for table in ("conversations", "answer_log", "outbox"):
            assert rows(h.db, f"SELECT count(*) FROM {table} WHERE user_id = 510") == [(0,)], \
                table
        assert rows(h.db, "SELECT count(*) FROM conversations WHERE user_id = 511") == [(1,)]


async def test_the_database_is_owner_only(fake, flow, tmp_path):
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "polling") as h:
        mode = stat.S_IMODE(h.settings.db.stat().st_mode)
        assert mode & 0o077 == 0, oct(mode)


async def test_fifty_people_at_once_all_finish_correctly(fake, flow, db):
    async with Harness(fake, flow, db, "webhook") as h:
        people = [Person(fake, 1000 + i) for i in range(50)]
        scripts = [emergency_by_buttons if i % 2 else self_care_by_typing
                   for i in range(50)]
        await asyncio.gather(*(run(p) for run, p in zip(scripts, people, strict=True)))
        for i, p in enumerate(people):
            assert p.last().startswith("🔴" if i % 2 else "🟢"), p.transcript()[-300:]
        assert fake.errors == []
        await fake.wait(lambda: len(h.bot.locks) == 0)  # per-person locks are released


# ---------------------------------------------------------------- webhook contract


async def test_the_webhook_checks_the_secret_and_the_body(fake, flow, db):
    async with Harness(fake, flow, db, "webhook") as h, \
            aiohttp.ClientSession() as http:
        assert fake.webhook["secret"] == SECRET
        assert set(fake.webhook["allowed"]) >= {"message", "callback_query"}
        async with http.get(h.url + "/healthz") as r:
            assert r.status == 200
        update = {"update_id": 77, "message": {
            "message_id": 1, "date": 0, "text": "/start",
            "chat": {"id": 512, "type": "private", "first_name": "U"},
            "from": {"id": 512, "is_bot": False, "first_name": "U"}}}
        fake.chats.setdefault(512, [])
        for headers, status in (({}, 401),
                                ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, 403)):
            async with http.post(h.url + "/hook/abc", json=update, headers=headers) as r:
                assert r.status == status
        good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with http.post(h.url + "/hook/abc", data=b"{not json", headers=good) as r:
            assert r.status == 400
        async with http.post(h.url + "/hook/abc", json={"hello": 1}, headers=good) as r:
            assert r.status == 400
        assert fake.bot_messages(512) == [], "nothing processed"
        for _ in range(2):  # the same update delivered twice advances once
            async with http.post(h.url + "/hook/abc", json=update, headers=good) as r:
                assert r.status == 200
        assert len([m for m in fake.bot_messages(512) if "Before we start" in m.text]) == 1
        assert rows(h.db, "SELECT count(*) FROM processed_updates WHERE update_id = 77") \
            == [(1,)]


def _key(user: int):
    from bot.store import Key

    return Key(user, user)


async def test_in_a_group_the_bot_never_starts_an_interview(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        fake.chats.setdefault(-100, [])
        fake.raw({"message": {"message_id": 9, "date": 0, "text": "/start@triage_test_bot",
                              "chat": {"id": -100, "type": "group", "title": "Clinic"},
                              "from": {"id": 513, "is_bot": False, "first_name": "U"}}})
        fake.raw({"message": {"message_id": 10, "date": 0, "text": "my back hurts",
                              "chat": {"id": -100, "type": "group", "title": "Clinic"},
                              "from": {"id": 513, "is_bot": False, "first_name": "U"}}})
        await fake.wait(lambda: len(fake.bot_messages(-100)) == 1)
        await asyncio.sleep(0.3)
        assert len(fake.bot_messages(-100)) == 1, "ordinary group messages are ignored"
        assert "private chat" in fake.bot_messages(-100)[0].text


async def test_old_conversations_are_deleted_after_the_retention(fake, flow, db):
    async with Harness(fake, flow, db, "polling") as h:
        for user in (514, 515):
            await Person(fake, user).start()
        rows(h.db, "UPDATE conversations SET updated_at = updated_at - 31 * 86400 "
                   "WHERE user_id = 514")
        for user in (514, 515):  # a pending check-in each
            rows(h.db, "INSERT INTO schedule (chat_id, user_id, kind, due_at, interview,"
                       " created_at) VALUES (?, ?, 'checkin', 0, 1, 0)", user, user)
        assert await h.store.purge(30) == 1
        assert rows(h.db, "SELECT user_id FROM conversations") == [(515,)]
        assert rows(h.db, "SELECT count(*) FROM answer_log WHERE user_id = 514") == [(0,)]
        assert rows(h.db, "SELECT user_id FROM schedule") == [(515,)]


async def test_the_schema_is_migrated_once_and_recorded(tmp_path):
    store = SqliteStore(tmp_path / "m.sqlite3")
    await store.open()
    assert await store.migrate() == len(MIGRATIONS)
    await store.close()
    await store.open()  # again: nothing to apply, nothing broken
    assert await store.migrate() == len(MIGRATIONS)
    await store.close()
    db = sqlite3.connect(tmp_path / "m.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_polling_confirms_an_update_only_after_it_is_handled(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        p = Person(fake, 516)
        committed_when_confirmed = []  # read at the moment the offset passes the update
        fake.on_confirm = lambda offset: committed_when_confirmed.append(rows(
            db, "SELECT count(*) FROM processed_updates WHERE update_id = ?", uid) + rows(
            db, "SELECT count(*) FROM conversations WHERE user_id = 516"))
        uid = fake.type(516, "/start")
        await fake.wait(lambda: p.settled(0))
        await fake.wait(lambda: fake.confirmed_offset > uid)
        assert committed_when_confirmed[0] == [(1,), (1,)], \
            "the offset moved only after the update and its state were committed"


async def test_telegram_redelivers_to_a_webhook_that_is_not_ready_yet(fake, flow, db):
    async with Harness(fake, flow, db, "webhook") as h:
        h.bot.ready = False  # as during start-up: 503
        p = Person(fake, 517)
        uid = fake.type(517, "/start")
        await fake.wait(lambda: fake.attempts.get(uid, 0) >= 2)
        assert p.seen() == 0
        h.bot.ready = True
        await fake.wait(lambda: p.settled(0) and fake.delivered.get(uid) == 1)


async def test_replies_to_one_chat_are_paced(fake, flow, db):
    """Telegram asks for about one message a second per chat; a short burst is fine."""
    async with Harness(fake, flow, db, "polling") as h:
        h.bot.delivery.limits.chat_burst = 2  # (before the chat's first message)
        p = Person(fake, 518)
        started = asyncio.get_running_loop().time()
        await p.start()  # the consent prompt, then edited into the first question
        await p.say("/privacy", until=lambda: p.seen() == 2)  # the burst's second
        assert asyncio.get_running_loop().time() - started < 0.9, "a burst goes at once"
        await p.say("/help", until=lambda: p.seen() == 3)
        elapsed = asyncio.get_running_loop().time() - started
        assert elapsed >= 0.9, "the third message waited for the pace"


async def test_a_button_without_our_data_gets_the_current_question(fake, flow, db):
    async with Harness(fake, flow, db, "polling"):
        p = Person(fake, 519)
        await p.start()
        before = p.seen()
        fake.press(519, p.question().message_id, "not-ours")
        await fake.wait(lambda: p.settled(before))
        assert "How old" in p.last() and all(fake.queries.values())


async def test_blocking_the_bot_is_recorded_from_my_chat_member(fake, flow, db):
    async with Harness(fake, flow, db, "polling") as h:
        await Person(fake, 520).start()
        uid = fake.raw({"my_chat_member": {
            "chat": {"id": 520, "type": "private", "first_name": "U"},
            "from": {"id": 520, "is_bot": False, "first_name": "U"}, "date": 0,
            "old_chat_member": {"status": "member", "user": fake._user()},
            "new_chat_member": {"status": "kicked", "until_date": 0, "user": fake._user()}}})
        await fake.wait(lambda: fake.confirmed_offset > uid)
        assert rows(h.db, "SELECT blocked FROM conversations WHERE user_id = 520") == [(1,)]


async def test_a_bad_webhook_body_is_logged_without_its_content(fake, flow, db, caplog):
    caplog.set_level("DEBUG")
    async with Harness(fake, flow, db, "webhook") as h, \
            aiohttp.ClientSession() as http:
        body = b'{"update_id": "x", "message": {"text": "my saddle is numb"}}'
        async with http.post(h.url + "/hook/abc", data=body,
                             headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
            assert r.status == 400
        logging.getLogger("some.library").info("calling %s/bot%s/getMe", fake.base_url,
                                               fake.token)
        logging.getLogger("some.library").warning(  # in the text itself, numbers as args
            "POST /bot" + fake.token + "/getMe: %d after %.1f s", 502, 0.5)
    assert "not a valid update" in caplog.text
    assert "saddle" not in caplog.text
    assert fake.token not in caplog.text and "<token>" in caplog.text, "the token is redacted"
