"""Hostile input and faults (issue 13): no single person, update or fault breaks the bot
for everyone else. Each test reproduces one class of what broke: the bot in this
process against the strict fake Bot API, a real SQLite file, real HTTP."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import aiohttp
import pytest

from bot.errors import SettingsError
from bot.settings import from_env
from bot.store import Key
from bot.store.sqlite import SqliteStore
from bot.telegram import http

from .helpers import on_postgres, rows
from .test_groups_and_alerts import STAFF, StaffHarness, setup_chats
from .test_telegram import SECRET, Harness, Person, emergency_by_buttons


def poison(db, user_id: int) -> str:
    """Make every answer of this person fail to be written, as an integrity error of the
    database would; returns that error's name."""
    if not on_postgres(db):
        rows(db, "CREATE TRIGGER poison BEFORE INSERT ON answer_log WHEN "
                 f"NEW.user_id = {user_id} BEGIN SELECT RAISE(ABORT, 'poison'); END")
        return "IntegrityError"
    rows(db, "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             f"IF NEW.user_id = {user_id} THEN RAISE EXCEPTION 'poison' USING ERRCODE = "
             "'check_violation'; END IF; RETURN NEW; END $$")
    rows(db, "CREATE TRIGGER poison BEFORE INSERT ON answer_log FOR EACH ROW "
             "EXECUTE FUNCTION poison()")
    return "CheckViolationError"


def in_a_transaction(h: Harness) -> bool:
    """Is any of the store's connections left inside a transaction?"""
    if not on_postgres(h.db):
        return h.store.db.in_transaction or h.store._batches.in_transaction
    return rows(h.db, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                      "current_database() AND state LIKE 'idle in transaction%'") != [(0,)]


def cure(db) -> None:
    rows(db, "DROP TRIGGER poison" + (" ON answer_log" if on_postgres(db) else ""))


async def served(fake, user_id: int) -> None:
    """A new person's /start is answered (the consent prompt) within 2 s."""
    fake.type(user_id, "/start")
    await fake.wait(lambda: fake.last_question(user_id) is not None, timeout=2)


# ------------------------------------------------------------ 1. one update wedges the store

async def test_a_forged_alert_id_too_big_for_the_database_does_not_wedge_the_store(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db) as h:
        p = Person(fake, 1301)
        await emergency_by_buttons(p, consent="Yes, contact me only")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        alert = fake.bot_messages(STAFF)[0]
        for data in ("!take|" + "9" * 20, "!take|-1", "!take|1e3", "!take|" + "9" * 5000):
            fake.press(1302, alert.message_id, data, chat_id=STAFF)
        await fake.wait(lambda: all(fake.queries.values()))
        await served(fake, 1303)
        assert rows(h.db, "SELECT taken_by FROM alerts") == [(None,)]
        await fake.wait(lambda: not in_a_transaction(h), timeout=2)  # none stays open


async def test_a_write_that_fails_inside_any_store_transaction_leaves_the_store_usable(
        tmp_path):
    """Break each table's writes in turn (a trigger that raises inside the transaction),
    run every store write; afterwards both connections are out of any transaction and
    the next person's update commits."""
    db = tmp_path / "bot.sqlite3"
    store = SqliteStore(db)
    await store.open(sole_writer=True)
    person = Key(5, 5)
    ids = iter(range(1, 1_000_000))

    def latest_alert(posted: bool = False) -> int:
        return rows(db, "SELECT coalesce(max(id), 0) FROM alerts" +
                    (" WHERE message_id = 7" if posted else ""))[0][0]

    async def one_update(key: Key) -> None:
        async with store.update(next(ids), key) as tx:
            conv = tx.conversation
            tx.save(conv, (), [("sendMessage", {"chat_id": key.chat_id, "text": "hi"})],
                    [("event", {"kind": "started"}), ("alert", {
                        "staff_chat": -300, "level": "urgent", "text": "t", "button": "b"}),
                     ("schedule", {"kind": "checkin", "due_at": 1.0, "interview": 1})])

    writes = {
        "update": lambda: one_update(person),
        "alert_sent": lambda: store.alert_sent(latest_alert(), 7),
        "take_alert": lambda: store.take_alert(latest_alert(posted=True), -300, 7, "@x"),
        "set_blocked": lambda: store.set_blocked(person),
        "group_seen": lambda: store.group_seen(-200, "group", "G", "member"),
        "quarantine": lambda: store.quarantine(next(ids), "message", "ValueError",
                                               (person, [("sendMessage", {"chat_id": 5})])),
        "probe": lambda: store.probe(),
        "purge": lambda: store.purge(0),
        "forget": lambda: store.forget(person.user_id),
    }
    tables = [r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    failed = set()
    try:
        for table in tables:
            for op in ("INSERT", "UPDATE", "DELETE"):
                with sqlite3.connect(db) as conn:  # (an alert posted, not yet taken)
                    conn.execute("UPDATE alerts SET message_id = 7, taken_by = NULL")
                    conn.execute(f"CREATE TRIGGER broken BEFORE {op} ON {table} BEGIN "
                                 "SELECT RAISE(ABORT, 'injected'); END")
                for name, write in writes.items():
                    try:
                        await write()
                    except sqlite3.IntegrityError as exc:
                        assert "injected" in str(exc)
                        failed.add(name)
                    assert not store.db.in_transaction, (table, op, name)
                    assert not store._batches.in_transaction, (table, op, name)
                with sqlite3.connect(db) as conn:
                    conn.execute("DROP TRIGGER broken")
                next_person = Key(1000 + len(failed), 1000 + len(failed))
                await one_update(next_person)
                assert rows(db, "SELECT count(*) FROM conversations WHERE user_id = ?",
                            next_person.user_id) == [(1,)]
    finally:
        await store.close()
    assert failed == set(writes), "each write was broken at least once"


async def test_an_update_that_keeps_failing_is_set_aside_and_its_chat_moves_on(
        fake, flow, db):
    async with Harness(fake, flow, db, "webhook") as h:
        p = Person(fake, 1304)
        await p.start()
        error = poison(db, 1304)  # this person's answers cannot be written
        update_id = fake.type(1304, "45")
        await fake.wait(lambda: "something went wrong" in p.last())
        assert "/start" in p.last()
        await fake.wait(lambda: fake.delivered.get(update_id) == 1)  # acknowledged
        assert fake.attempts[update_id] == 1, "retried at once, not by Telegram's redelivery"
        assert rows(db, "SELECT kind, error FROM quarantined_updates WHERE update_id = ?",
                    update_id) == [("message", error)]
        metrics = h.bot.metrics.render().decode()
        assert 'triagebot_updates_quarantined_total{kind="message"} 1.0' in metrics
        await served(fake, 1305)  # and everyone else is served
        cure(db)
        await p.say("45")  # the person's next message works again
        assert any("Male" in label for label, _ in p.question().buttons())


# ------------------------------------------------------------ 2. staff actions

async def test_only_the_alerts_own_staff_chat_and_message_can_take_it(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db) as h:
        p = Person(fake, 1310)
        await emergency_by_buttons(p, consent="Yes, contact me only")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        alert = fake.bot_messages(STAFF)[0]
        (_label, data), = alert.buttons()
        outsider = Person(fake, 1311)
        await outsider.say("/start")  # the consent prompt: a message with a keyboard
        consent = outsider.question()
        answered = len(fake.calls)
        for forged in (data, "!take|1", "!take|2"):
            fake.press(1311, consent.message_id, forged, username="outsider")
        fake.press(1312, alert.message_id, data, chat_id=STAFF, username="dr_ada")
        await fake.wait(lambda: "@dr_ada is on it" in alert.buttons()[0][0])
        await fake.wait(lambda: all(fake.queries.values()))
        toasts = [c[1].get("text") for c in fake.calls[answered:]
                  if c[0] == "answerCallbackQuery"]
        assert toasts.count(None) == 3, "the outsider's presses get a silent answer"
        assert len(toasts) == 4 and any("Thank you" in (t or "") for t in toasts)
        assert rows(h.db, "SELECT taken_by FROM alerts") == [("@dr_ada",)]
        assert not any("outsider" in m.text for m in fake.bot_messages(1311))


async def test_a_take_pressed_on_another_message_of_the_staff_chat_is_refused(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db) as h:
        for user in (1313, 1314):
            await emergency_by_buttons(Person(fake, user), consent="Yes, contact me only")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 2)
        first, second = fake.bot_messages(STAFF)
        (_l, first_data), = first.buttons()
        fake.press(1315, second.message_id, first_data, chat_id=STAFF, username="dr_x")
        await fake.wait(lambda: all(fake.queries.values()))
        assert rows(h.db, "SELECT taken_by FROM alerts") == [(None,), (None,)]


# ------------------------------------------------------------ 3. health talk in a group

async def test_interview_buttons_and_edits_in_a_group_change_nothing(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db) as h:
        p = Person(fake, 1320)
        await emergency_by_buttons(p, consent="Yes, contact me only")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        alert = fake.bot_messages(STAFF)[0]
        before = rows(h.db, "SELECT chat_id, user_id FROM conversations")
        for data in ("0|_|-1|consent_share", "1|_|-1|restart", "1|_|-1|lang_es",
                     "1|_|-1|checkin_6h", "1|_|-1|forget_yes", "garbage", ""):
            fake.press(1321, alert.message_id, data, chat_id=STAFF)
        fake.raw({"edited_message": {"message_id": 5, "date": 1, "text": "my back",
                                     "chat": {"id": STAFF, "type": "group"},
                                     "from": {"id": 1321, "is_bot": False, "first_name": "E"}}})
        await fake.wait(lambda: all(fake.queries.values()))
        await served(fake, 1322)
        assert len(fake.bot_messages(STAFF)) == 1 and alert.edits == 0
        after = rows(h.db, "SELECT chat_id, user_id FROM conversations")
        assert set(after) - set(before) == {(1322, 1322)}, "nothing stored for the group"


async def test_a_private_update_whose_chat_is_not_the_senders_is_refused(fake, flow, db):
    async with Harness(fake, flow, db, "polling") as h:
        victim = Person(fake, 1323)
        await victim.start()
        shown = victim.seen()
        fake.raw({"message": {"message_id": 9, "date": 1, "text": "/forget",
                              "chat": {"id": 1323, "type": "private"},
                              "from": {"id": 1324, "is_bot": False, "first_name": "M"}}})
        fake.raw({"message": {"message_id": 10, "date": 1, "text": "/start",
                              "chat": {"id": -200, "type": "private"},
                              "from": {"id": 1324, "is_bot": False, "first_name": "M"}}})
        await served(fake, 1325)
        assert victim.seen() == shown
        assert rows(h.db, "SELECT count(*) FROM conversations WHERE user_id = 1324"
                    ) == [(0,)]


# ------------------------------------------------------------ 4. secure by default

def test_webhook_mode_refuses_to_start_without_a_proper_secret():
    base = {"TRIAGEBOT_MODE": "webhook", "TRIAGEBOT_WEBHOOK_URL": "https://bot.example/h"}
    with pytest.raises(SettingsError, match="needs TRIAGEBOT_WEBHOOK_SECRET"):
        from_env(base)
    for bad in ("has space", "ü" * 4, "x" * 257, "semi;colon"):
        with pytest.raises(SettingsError, match="Telegram's rule"):
            from_env({**base, "TRIAGEBOT_WEBHOOK_SECRET": bad})
    assert from_env({**base, "TRIAGEBOT_WEBHOOK_SECRET": "A-z_09" * 40}).webhook_secret


def test_the_listener_binds_to_loopback_unless_told_otherwise():
    assert from_env({}).listen_host == "127.0.0.1" and from_env({}).loopback
    assert from_env({"TRIAGEBOT_LISTEN": "[::1]:8081"}).listen_host == "::1"
    assert not from_env({"TRIAGEBOT_LISTEN": " 0.0.0.0:8080 "}).loopback
    for bad in ("8080", ":8080", "host:port", "a b:80", "[::1]:99999"):
        with pytest.raises(SettingsError, match="host:port"):
            from_env({"TRIAGEBOT_LISTEN": bad})
    for url in ("http://localhost.example.org/h", "http://127.0.0.1.evil.org/h", "ftp://x/h"):
        with pytest.raises(SettingsError, match="https://"):
            from_env({"TRIAGEBOT_WEBHOOK_URL": url})
    with pytest.raises(SettingsError, match="not a time zone"):
        from_env({"TRIAGEBOT_TIMEZONE": "Europe"})  # a folder of zones


async def test_metrics_need_their_token_off_loopback_and_time_no_red_flag(fake, flow, tmp_path):
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook") as h:
        await emergency_by_buttons(Person(fake, 1330))
        async with aiohttp.ClientSession() as client:
            async with client.get(h.url + "/metrics") as r:
                assert r.status == 200  # bound to loopback: open to this machine
                text = await r.text()
            assert "triagebot_rules_fired_total" in text and "_created" not in text
            h.bot.settings = type(h.settings)(**{
                **{f: getattr(h.settings, f) for f in h.settings.__dataclass_fields__},
                "listen_host": "0.0.0.0"})
            async with client.get(h.url + "/metrics") as r:
                assert r.status == 403 and "TRIAGEBOT_METRICS_TOKEN" in await r.text()


# ------------------------------------------------------------ 5. the HTTP listener

async def start_guarded(bot, pool):
    from aiohttp import web

    bot.pool = pool
    runner = web.AppRunner(bot.webhook_app(), access_log=None)
    await runner.setup()
    site = http.GuardedSite(runner, "127.0.0.1", 0, pool)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}"


async def test_idle_connections_cannot_take_the_listener_down(fake, flow, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.5)
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook") as h:
        runner, url = await start_guarded(h.bot, http.Pool(limit=50))
        port = int(url.rsplit(":", 1)[1])
        idle: list[asyncio.StreamWriter] = []
        try:
            for _ in range(200):  # they connect and say nothing
                idle.append((await asyncio.open_connection("127.0.0.1", port))[1])
            reader, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            async with aiohttp.ClientSession() as client, client.get(url + "/healthz") as r:
                assert r.status == 200, "the newest connection takes an idle one's place"
            assert await asyncio.wait_for(reader.read(100), 2) == b"", \
                "a request head not sent in time: closed"
            assert len(h.bot.pool.open) <= 50
            await asyncio.sleep(0.1)
            assert len(runner.server.connections) <= 50, "aiohttp let go of evicted ones"
        finally:
            for writer in idle:
                writer.close()
            await runner.cleanup()


async def test_malformed_requests_get_an_answer_and_no_traceback(fake, flow, tmp_path, caplog):
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook") as h:
        hook = h.url + "/hook/abc"
        update = b'{"update_id": 5, "message": {}}'
        with caplog.at_level(logging.DEBUG):
            assert await raw_status(h.url, b"POST /hook/abc HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 2\r\nX-Telegram-Bot-Api-Secret-Token: "
                                    b"\xff\xfe\r\n\r\n{}") == b"403"
            h.bot.settings = type(h.settings)(**{
                **{f: getattr(h.settings, f) for f in h.settings.__dataclass_fields__},
                "metrics_token": "m"})
            assert await raw_status(h.url, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                    b"Authorization: Bearer \xff\r\n\r\n") == b"401"
            async with aiohttp.ClientSession(auto_decompress=False) as client:
                headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
                async with client.post(hook, data=update, headers={
                        **headers, "Content-Encoding": "br"}) as r:
                    assert r.status in (400, 415)  # (aiohttp's parser may refuse it first)
                async with client.post(hook, data=b"x" * (2 << 20), headers=headers) as r:
                    assert r.status == 413
                async with client.post(hook, data=b"\xff\x00garbage", headers=headers) as r:
                    assert r.status == 400
        assert "Traceback" not in caplog.text
        assert all(r.exc_info is None for r in caplog.records), "one line each, no traceback"


async def raw_status(url: str, request: bytes) -> bytes:
    """The status code of a request sent as raw bytes (what a client library refuses)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    writer.write(request)
    await writer.drain()
    status = (await reader.readline()).split()[1]
    writer.close()
    return status


# ------------------------------------------------------------ 8. honest erasure

async def test_forget_erases_the_answers_from_the_file_the_wal_the_backups_and_the_alert(
        fake, flow, tmp_path):
    from bot.store import maintenance

    setup_chats(fake)
    backups = tmp_path / "backups"
    async with StaffHarness(fake, flow, tmp_path / "bot.sqlite3") as h:
        h.bot.settings = type(h.settings)(**{
            **{f: getattr(h.settings, f) for f in h.settings.__dataclass_fields__},
            "backup_dir": backups})
        p = Person(fake, 1340)
        await emergency_by_buttons(p, consent="Yes, and show them my answers")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        alert = fake.bot_messages(STAFF)[0]
        await fake.wait(lambda: "clinician on duty has been told" in p.last())
        backup = maintenance.scheduled(h.settings.db, backups, 7)
        assert b"User1340" in backup.read_bytes()
        await p.say("/forget", until=lambda: "Erase everything" in p.last())
        await p.press("Yes, erase it", wait_new=False)
        await fake.wait(lambda: "erased everything" in p.last())
        await fake.wait(lambda: "asked to be forgotten" in alert.text)
        assert alert.buttons() == [], "nobody can take an alert about no one"
        # the backups are erased last, moments after the confirmation is sent
        await fake.wait(lambda: b"User1340" not in backup.read_bytes(), timeout=2)
        db = h.settings.db
        stored = b"".join(f.read_bytes() for f in (db, db.with_name(db.name + "-wal"))
                          if f.exists())
        assert b"User1340" not in stored, "the name (and answers) are gone from the file"
        assert rows(backup, "SELECT count(*) FROM conversations WHERE user_id = 1340") == [(0,)]


async def test_a_forget_confirmed_while_the_store_cannot_commit_is_done_later_not_lost(
        fake, flow, tmp_path, caplog):
    db = tmp_path / "bot.sqlite3"
    harness = Harness(fake, flow, db, "polling")
    harness.store = harness.bot.store = SqliteStore(db, busy_timeout=0.5)
    async with harness:
        p = Person(fake, 1345)
        await p.start()
        await p.say("45")
        await p.say("/forget", until=lambda: "Erase everything" in p.last())
        confirm = p.question()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            fake.press(1345, confirm.message_id,
                       next(d for t, d in confirm.buttons() if "Yes" in t))
            await fake.wait(lambda: "kept for later: database is locked" in caplog.text, timeout=10)
            assert "erased" not in p.last()
        finally:
            other.execute("ROLLBACK")
            other.close()
        await fake.wait(lambda: "erased everything" in p.last(), timeout=20)
        assert rows(db, "SELECT count(*) FROM answer_log WHERE user_id = 1345") == [(0,)]
        assert rows(db, "SELECT count(*) FROM conversations WHERE user_id = 1345") == [(0,)]


# ------------------------------------------------------------ 9. store failures cost nothing

@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_locked_database_delays_an_answer_and_never_loses_it(fake, flow, tmp_path,
                                                                     mode, caplog):
    db = tmp_path / "bot.sqlite3"
    harness = Harness(fake, flow, db, mode)
    harness.store = harness.bot.store = SqliteStore(db, busy_timeout=0.5)  # (a faster test)
    async with harness as h:
        p = Person(fake, 1350)
        await p.start()
        other = sqlite3.connect(db, isolation_level=None)  # another program holds the file
        other.execute("BEGIN IMMEDIATE")
        try:
            update_id = fake.type(1350, "45")
            await fake.wait(lambda: "kept for later: database is locked" in caplog.text, timeout=15)
            if mode == "webhook":
                assert fake.delivered.get(update_id) is None, "not acknowledged"
                problem = await h.bot.unhealthy()
                assert problem and "store cannot commit" in problem
        finally:
            other.execute("ROLLBACK")
            other.close()
        await fake.wait(lambda: "Male" in str(getattr(fake.last_question(1350), "reply_markup",
                                                      "")), timeout=20)
        assert rows(db, "SELECT value FROM answer_log WHERE user_id = 1350 AND finding ="
                    " 'age_years'") == [("45.0",)]
        assert "kept for later: database is locked" in caplog.text
        assert "skipped" not in caplog.text


# ------------------------------------------------------------ 10. logs, settings, YAML

def test_the_token_never_reaches_a_log_even_in_a_traceback(capsys):
    from bot.cli import configure_logging
    from bot.telegram.app import redact_token_everywhere

    token = "987654:SECRET-token-in-a-url"
    configure_logging("json")
    redact_token_everywhere(token)
    log = logging.getLogger("triagebot.test")
    try:
        raise RuntimeError(f"redirect to https://api.telegram.org/bot{token}/getMe")
    except RuntimeError:
        log.exception("call failed")
    log.error("stack", stack_info=True, extra={"url": "x"})
    err = capsys.readouterr().err
    assert "call failed" in err and "RuntimeError" in err and "<token>" in err
    assert token not in err


def test_many_identical_errors_are_logged_a_few_times_a_minute(capsys):
    from bot.logs import RateLimit

    now = [0.0]
    limit = RateLimit(burst=3, window=60, clock=lambda: now[0])
    handler = logging.StreamHandler()
    handler.addFilter(limit)
    log = logging.getLogger("triagebot.flood")
    log.addHandler(handler)
    log.propagate = False
    try:
        for _ in range(1000):
            log.error("accept failed: %s", "EMFILE")
        now[0] = 61
        log.error("accept failed: %s", "EMFILE")
    finally:
        log.removeHandler(handler)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and "997 more like it" in lines[-1]


# a "billion laughs": nine levels of nine aliases, ~400 million items once copied out
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi",
                                                               strict=True))


@pytest.mark.parametrize("text, problem", [
    (BOMB, "aliases"),
    ("a: &a [*a]\n", "aliases"),
    ("? !!python/name:os.system\n: 1\nflow: x\n", "a key must be plain text"),
    ("!!python/object/apply:os.system [echo hi]\n", "not allowed"),
])
def test_a_hostile_flow_file_is_refused_with_its_line_and_no_traceback(tmp_path, capsys,
                                                                       text, problem):
    from bot.cli import main

    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr()
    assert f"{path}:" in out.out and problem in out.out
    assert "Traceback" not in out.out + out.err
