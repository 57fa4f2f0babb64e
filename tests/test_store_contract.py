"""The store interface, run against both stores: SQLite, and PostgreSQL (a real server:
`.ci/run` starts a throwaway cluster and sets TRIAGEBOT_TEST_POSTGRES to its URL).

For PostgreSQL, two store objects on one database stand for two bot workers: the
same update given to both is handled once, and one person's updates never lose
each other's writes, however they race."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bot.session import LogEntry
from bot.store import Key
from bot.store.sqlite import SqliteStore

from .helpers import rows, store_on

PERSON = Key(7, 7)


# (the `db` fixture runs a test on both stores; these need several workers on one database)
only_postgres = pytest.mark.parametrize("db", ["postgres"], indirect=True)


async def opened(db):
    store = store_on(db)
    await store.open()
    return store


async def test_an_update_is_saved_once_and_a_redelivery_changes_nothing(db):
    store = await opened(db)
    try:
        async with store.update(1, PERSON) as tx:
            assert not tx.duplicate and tx.conversation.interview == 0
            tx.save(replace(tx.conversation, interview=1, extra={"lang": "es"}),
                    (LogEntry("answer", "age", "age_years", 45.0),),
                    [("sendMessage", {"chat_id": 7, "text": "¿Edad?"})],
                    [("event", {"kind": "started", "flow": "back_pain_fever"})])
        async with store.update(1, PERSON) as tx:  # the same update again
            tx.save(replace(tx.conversation, interview=99), (), [("sendMessage", {})])
        assert tx.duplicate
        async with store.update(2, PERSON) as tx:
            assert tx.conversation.interview == 1 and tx.conversation.extra == {"lang": "es"}
        pending = await store.pending(PERSON)
        assert [(o.method, o.params["text"]) for o in pending] == [("sendMessage", "¿Edad?")]
        await store.sent(PERSON, (pending[0].id,), question=(1, 555))
        assert await store.pending(PERSON) == [] and await store.pending() == []
        async with store.update(3, PERSON) as tx:
            assert tx.conversation.question_message == 555
        stats = await store.stats(1)
        assert stats["started"] == 1 and stats["flows"] == {"back_pain_fever": {"started": 1}}
    finally:
        await store.close()


async def test_forget_erases_the_person_and_queues_only_the_confirmation(db):
    store = await opened(db)
    try:
        async with store.update(1, PERSON) as tx:
            tx.save(replace(tx.conversation, interview=1), (LogEntry("answer", "a", "fever",
                                                                     True),),
                    [("sendMessage", {"chat_id": 7, "text": "q"})],
                    [("schedule", {"kind": "checkin", "due_at": 10.0, "interview": 1})])
        assert [s.kind for s in await store.scheduled(PERSON)] == ["checkin"]
        assert [s.key for s in await store.due(11.0)] == [PERSON]
        await store.forget(7, {"calls": [("sendMessage", {"chat_id": 7, "text": "gone"})]})
        assert [o.params["text"] for o in await store.pending(PERSON)] == ["gone"]
        assert await store.scheduled(PERSON) == [] and await store.due(11.0) == []
        async with store.update(2, PERSON) as tx:
            assert tx.conversation.session is None and tx.conversation.interview == 0
    finally:
        await store.close()


async def test_a_forged_huge_update_id_fails_alone(db):
    store = await opened(db)
    try:
        with pytest.raises((ValueError, OverflowError)):
            async with store.update(2 ** 70, PERSON) as tx:
                tx.save(tx.conversation, (), [])
        async with store.update(5, PERSON) as tx:  # the store goes on
            tx.save(replace(tx.conversation, interview=3), (), [])
        async with store.update(6, PERSON) as tx:
            assert tx.conversation.interview == 3
        assert await store.take_alert(2 ** 70, 1, 1, "x") == ("refused", None)
    finally:
        await store.close()


@only_postgres
async def test_two_workers_handle_the_same_update_once_and_lose_no_write(db):
    one, two = await opened(db), await opened(db)
    try:
        async def handle(store, update_id: int) -> bool:
            async with store.update(update_id, PERSON) as tx:
                await asyncio.sleep(0.01)  # read, think, write: a race if not locked
                tx.save(replace(tx.conversation, interview=tx.conversation.interview + 1), (),
                        [("sendMessage", {"chat_id": 7, "text": str(update_id)})])
            return tx.duplicate

        # every update delivered to both workers at once
        duplicates = await asyncio.gather(*(handle(store, n) for n in range(1, 21)
                                            for store in (one, two)))
        assert sum(duplicates) == 20, "each update handled by exactly one worker"
        async with one.update(None, PERSON) as tx:
            assert tx.conversation.interview == 20, "no read-modify-write lost"
        texts = [o.params["text"] for o in await two.pending(PERSON)]
        assert sorted(texts, key=int) == [str(n) for n in range(1, 21)] and len(texts) == 20
    finally:
        await one.close()
        await two.close()


@only_postgres
async def test_im_on_it_has_exactly_one_winner_across_workers(db):
    stores = [await opened(db) for _ in range(3)]
    try:
        async with stores[0].update(1, PERSON) as tx:
            tx.save(tx.conversation, (), [], [("alert", {
                "staff_chat": -300, "level": "urgent", "text": "alert", "button": "I'm on it"})])
        (alert,) = await stores[0].pending()
        await stores[0].sent(alert.key, (alert.id,), alert=(alert.params["_alert"], 42))
        results = await asyncio.gather(*(
            store.take_alert(alert.params["_alert"], -300, 42, f"nurse {n}")
            for n, store in enumerate(stores * 4)))
        assert [r for r, _ in results].count("taken") == 1
        winner = next(who for r, who in results if r == "taken")
        assert all(r == ("already", winner) for r in results if r[0] != "taken")
        assert await stores[1].take_alert(alert.params["_alert"], -301, 42, "x") == \
            ("refused", None), "not from another chat"
    finally:
        for store in stores:
            await store.close()


async def test_the_real_bot_runs_interviews_on_either_store_across_a_restart(db, fake, flow):
    from .test_telegram import Harness, Person, emergency_by_buttons

    async with Harness(fake, flow, db, "polling"):
        await emergency_by_buttons(Person(fake, 1701))
        p = Person(fake, 1702)
        await p.start()
        await p.say("33")
    assert fake.bot_messages(1701)[-1].text.startswith("🔴 EMERGENCY")
    async with Harness(fake, flow, db, "polling"):  # a new process, the same data
        await p.press("Female, not pregnant")
        assert "registered at birth" not in p.last(), "went on from the saved answer"
        assert "back" in p.last().lower(), p.last()
    assert fake.errors == []


def test_a_postgresql_url_never_shows_its_password():
    from bot.settings import from_env

    settings = from_env({"TRIAGEBOT_DB": "postgresql://bot:s3cret@db.example.org:5433/triage"})
    assert settings.db_url and settings.db_name == "postgresql://db.example.org:5433/triage"
    assert "s3cret" not in repr(settings)


@only_postgres
async def test_one_worker_at_a_time_sends_a_persons_calls_and_another_takes_over(db):
    from bot.store.postgres import PostgresStore

    one, two = await opened(db), await opened(db)
    assert isinstance(one, PostgresStore)
    one.lease = two.lease = 0.5
    other = Key(8, 8)
    try:
        for n, key in enumerate((PERSON, PERSON, other)):
            async with one.update(n + 1, key) as tx:
                tx.save(tx.conversation, (), [("sendMessage", {"chat_id": key.chat_id,
                                                               "text": str(n)})])
        assert len(await two.queued()) == 3, "counting (for /metrics) claims nothing"
        mine = await one.pending(PERSON)
        assert [o.params["text"] for o in mine] == ["0", "1"]
        assert await two.pending(PERSON) == [], "held by the first worker"
        assert [o.key for o in await two.pending()] == [other], "the free person only"
        async with two.update(9, PERSON) as tx:  # a new call while the first holds them
            tx.save(tx.conversation, (), [("sendMessage", {"chat_id": 7, "text": "new"})])
        assert [o.params["text"] for o in await one.pending(PERSON)] == ["0", "1", "new"]
        await one.sent(PERSON, (mine[0].id,))
        await asyncio.sleep(0.6)  # the first worker died: its lease runs out
        assert [o.params["text"] for o in await two.pending(PERSON)] == ["1", "new"]
        assert await one.pending(PERSON) == [], "and it is the second's now"
        await two.close()  # a clean stop hands the claims back at once
        assert [o.params["text"] for o in await one.pending(PERSON)] == ["1", "new"]
    finally:
        await one.close()
        await two.close()


@only_postgres
async def test_a_dead_workers_claims_pass_at_once_once_its_connections_are_gone(db):
    """A worker killed on a live host: the kernel closes its connections, so its claims
    (leases of 30 s still running) go to another worker at once, not 30 s later."""
    one, two = await opened(db), await opened(db)
    try:
        async with one.update(1, PERSON) as tx:
            tx.save(tx.conversation, (), [("sendMessage", {"chat_id": 7, "text": "hi"})], [
                ("schedule", {"kind": "checkin", "due_at": 10.0, "interview": 1})])
        assert len(await one.pending(PERSON)) == 1 and len(await one.due(100.0)) == 1
        assert await two.pending(PERSON) == [] and await two.due(100.0) == [], "alive: held"
        one.pool.terminate()  # as kill -9 leaves it: no claims handed back, no goodbye
        one.pool = None
        await asyncio.sleep(0.1)  # (the server notices the closed sockets)
        assert [o.params["text"] for o in await two.pending(PERSON)] == ["hi"]
        assert len(await two.due(100.0)) == 1
    finally:
        await one.close()
        await two.close()


@only_postgres
async def test_a_due_check_in_is_claimed_by_one_worker_and_retaken_if_it_dies(db):
    stores = [await opened(db) for _ in range(3)]
    for store in stores:
        store.lease = 0.5
    try:
        for n in range(5):
            key = Key(100 + n, 100 + n)
            async with stores[0].update(n + 1, key) as tx:
                tx.save(tx.conversation, (), [], [("schedule", {
                    "kind": "checkin", "due_at": 10.0 + n, "interview": 1})])
        taken = await asyncio.gather(*(s.due(100.0) for s in stores))  # at once
        ids = [item.id for batch in taken for item in batch]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 5, "each by one worker"
        for store, batch in zip(stores, taken, strict=True):  # (its own, again: a retry)
            assert {i.id for i in await store.due(100.0)} == {i.id for i in batch}
        await asyncio.sleep(0.6)  # nobody finished them: the leases run out
        assert len(await stores[2].due(100.0)) == 5
    finally:
        for store in stores:
            await store.close()


async def test_db_copy_moves_a_sqlite_deployment_to_postgresql_verified(tmp_path, pg_dsn):
    import subprocess
    import sys

    from bot.store.postgres import PostgresStore

    from .conftest import ROOT

    path = tmp_path / "bot.sqlite3"
    sqlite = SqliteStore(path)
    await sqlite.open()
    async with sqlite.update(1, PERSON) as tx:
        tx.save(replace(tx.conversation, interview=2, draft=("a",), extra={"lang": "ar"}),
                (LogEntry("answer", "age", "age_years", 45.0),),
                [("sendMessage", {"chat_id": 7, "text": "queued"})],
                [("event", {"kind": "started", "flow": "back_pain_fever"}),
                 ("schedule", {"kind": "checkin", "due_at": 5.0, "interview": 2}),
                 ("alert", {"staff_chat": -300, "level": "urgent", "text": "t", "button": "b"})])
    await sqlite.set_blocked(Key(9, 9))
    await sqlite.group_seen(-100, "supergroup", "Clinic", "member")
    await sqlite.close()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot", "db", "copy", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    done = run(str(path), pg_dsn)
    assert done.returncode == 0, done.stderr
    assert "conversations 1" in done.stdout and "answer_log 1" in done.stdout
    assert "outbox 2" in done.stdout, "the call and the staff alert"
    pg = PostgresStore(pg_dsn)
    await pg.open()
    try:
        async with pg.update(2, PERSON) as tx:  # the same conversation, read back
            assert tx.conversation.interview == 2 and tx.conversation.draft == ("a",)
            assert tx.conversation.extra == {"lang": "ar"}
            tx.save(tx.conversation, (), [("sendMessage", {"chat_id": 7, "text": "new"})])
        async with pg.update(1, PERSON) as tx:
            pass
        assert tx.duplicate, "update ids handled on SQLite stay handled"
        texts = [o.params.get("text") for o in await pg.pending(PERSON)]
        assert texts[0] == "queued" and texts[-1] == "new", "ids go on after the copied ones"
        assert len(await pg.due(10.0)) == 1 and (await pg.stats(1))["started"] == 1
    finally:
        await pg.close()
    again = run(str(path), pg_dsn)
    assert again.returncode == 2 and "copy into an empty one" in again.stderr


@only_postgres
async def test_workers_purge_once_per_period_between_them(db):
    """Each worker's hourly timer calls purge: one of them purges per hour, and another
    takes over when the one that did stops (its turn is older than 0.9 periods)."""
    stores = [await opened(db) for _ in range(3)]
    try:
        async def old_conversation(user: int) -> None:
            async with stores[0].update(None, Key(user, user)) as tx:
                tx.save(tx.conversation, (), [])
            rows(db, "UPDATE conversations SET updated_at = 0 WHERE user_id = ?", user)

        await old_conversation(1)
        done = await asyncio.gather(*(s.purge(30, once_per=3600) for s in stores))  # at once
        assert sorted(done) == [0, 0, 1], "one worker purged; the others skipped their turn"
        await old_conversation(2)
        assert [await s.purge(30, once_per=3600) for s in stores] == [0, 0, 0]
        assert rows(db, "SELECT user_id FROM conversations") == [(2,)], "not this hour"
        rows(db, "UPDATE housekeeping SET last_run = last_run - 0.91 * 3600")
        assert [await s.purge(30, once_per=3600) for s in stores] == [1, 0, 0]
        assert await stores[0].purge(30) == 0, "(without once_per: at once, as SQLite's)"
    finally:
        for store in stores:
            await store.close()


@only_postgres
async def test_a_lost_listening_connection_is_made_again_and_nothing_waits(db):
    """The server ends the connection that listens for other workers' commits (a
    restart, a failover): within seconds it listens again, and the people whose calls
    were committed meanwhile are woken, not left for the minute's safety net."""
    one, two = await opened(db), await opened(db)
    heard: list[int] = []
    try:
        await one.listen(heard.append)
        name = "triagebot " + one.worker
        rows(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
                 " application_name = ? AND query LIKE 'LISTEN%'", name)
        async with two.update(1, PERSON) as tx:  # its notification is lost
            tx.save(tx.conversation, (), [("sendMessage", {"chat_id": 7, "text": "hi"})])
        for _ in range(50):
            if PERSON.user_id in heard:
                break
            await asyncio.sleep(0.1)
        assert PERSON.user_id in heard, "woken after listening again"
        heard.clear()
        async with two.update(2, Key(8, 8)) as tx:  # and notifications arrive again
            tx.save(tx.conversation, (), [("sendMessage", {"chat_id": 8, "text": "yo"})])
        for _ in range(10):
            if 8 in heard:
                break
            await asyncio.sleep(0.05)
        assert 8 in heard
    finally:
        await one.close()
        await two.close()
