"""The delivery scheduler: each chat in order, emergencies first, Telegram's 429s obeyed.

The scheduler's own tests use a real outbox (SQLite, then PostgreSQL) and a `deliver`
that plays Telegram's answers; the bot's run the whole path against the fake Bot API
with its flood control on.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.store import Key, Outgoing
from bot.telegram.delivery import DONE, STOP, Delivery, Limits, Verdict
from bot.telegram.render import PRIORITY, Priority

from .fake_telegram import FloodLimits
from .helpers import on_postgres, rows, store_on
from .test_telegram import Harness, Person


async def commit(store, key: Key, *texts: str, priority: Priority | None = None,
                 update_id: int | None = None) -> None:
    """Queue sendMessage calls for `key` as an update's commit does."""
    extra = {} if priority is None else {PRIORITY: int(priority)}
    calls = [("sendMessage", {"chat_id": key.chat_id, "text": t, **extra}) for t in texts]
    async with store.update(update_id, key) as tx:
        tx.save(tx.conversation, (), calls)


class Played:
    """A `deliver` for the scheduler: Telegram's answers played from a script, each call
    recorded as made in the store (as the bot does) once it is done."""

    def __init__(self, store, answers=None, latency: float = 0.0):
        self.store, self.answers, self.latency = store, answers, latency
        self.made: list[Outgoing] = []  # calls that took effect, in order
        self.attempts = 0

    async def __call__(self, out: Outgoing) -> Verdict:
        self.attempts += 1
        await asyncio.sleep(self.latency)
        verdict = self.answers(out) if self.answers else DONE
        if verdict.kind == "done":
            self.made.append(out)
            await self.store.sent(out.key, (out.id,))
        return verdict


async def drain(delivery: Delivery, timeout: float) -> None:
    """Start the scheduler on everything in the outbox; stop it once all is sent."""
    delivery.start()
    try:
        await delivery.wake_all()
        assert await delivery.idle(timeout)
    finally:
        await delivery.stop()


@pytest.fixture
async def store(db):
    s = store_on(db)
    await s.open()
    yield s
    await s.close()


FAST = Limits(chat_burst=10_000, group_per_minute=10_000, retry_base=0.001, retry_max=0.01,
              floor_rate=10_000)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=12),
       seed=st.integers(0, 2 ** 16))
async def test_each_chat_gets_its_calls_in_order_and_once_whatever_fails(tmp_path, db, plan, seed):
    """Commits arrive while earlier calls are being sent; Telegram answers at random with
    429s, network errors and successes. Every call is made exactly once, and each
    person's calls to their chat in the order they were committed. (A new SQLite file
    per example; on PostgreSQL, one database, whose outbox each example leaves empty.)"""
    store = store_on(db if on_postgres(db) else tmp_path / f"{uuid.uuid4().hex}.sqlite3")
    await store.open()
    rng = random.Random(seed)

    def answer(out: Outgoing) -> Verdict:
        roll = rng.random()
        if roll < 0.2:
            return Verdict("retry", 0.001, limited=True)
        if roll < 0.35:
            return Verdict("retry")
        return DONE

    played = Played(store, answer)
    delivery = Delivery(store, played, FAST)
    delivery.start()
    try:
        expected: dict[int, list[str]] = {}
        for n, (person, calls) in enumerate(plan):
            key = Key(person, person)
            texts = [f"{person}:{n}:{i}" for i in range(calls)]
            expected.setdefault(person, []).extend(texts)
            await commit(store, key, *texts)
            await delivery.wake(key)
            await asyncio.sleep(rng.choice((0, 0, 0.002)))
        assert await delivery.idle(10)
    finally:
        await delivery.stop()
        await store.close()
    made: dict[int, list[str]] = {}
    for out in played.made:
        made.setdefault(out.key.chat_id, []).append(out.params["text"])
    assert made == expected


async def test_an_emergency_jumps_a_backlog_and_takes_earlier_calls_of_its_chat_along(store):
    delivery_order = Played(store, latency=0.005)
    delivery = Delivery(store, delivery_order, Limits(workers=1, chat_burst=10_000))
    for person in range(100, 140):  # a backlog of replies to 40 people
        await commit(store, Key(person, person), f"reply {person}")
    # person 7's second call is the emergency; their first must still go before it
    await commit(store, Key(7, 7), "routine first")
    await commit(store, Key(7, 7), "call 112", priority=Priority.EMERGENCY)
    await drain(delivery, 10)
    texts = [out.params["text"] for out in delivery_order.made]
    assert texts[:2] == ["routine first", "call 112"], texts[:5]
    assert len(texts) == 42


async def test_first_contact_waits_behind_recent_replies_only(store):
    """Earliest deadline first: replies queued up to 2 s after a first contact go before
    it; later ones after it, so a newcomer never starves behind a busy interview."""
    now = [1000.0]
    played = Played(store)
    delivery = Delivery(store, played, Limits(workers=1, chat_burst=10_000),
                        clock=lambda: now[0])
    await commit(store, Key(1, 1), "welcome, new person", priority=Priority.FIRST)
    await delivery.wake(Key(1, 1))
    now[0] += 1.0
    await commit(store, Key(2, 2), "reply queued 1 s later")
    await delivery.wake(Key(2, 2))
    now[0] += 2.0
    await commit(store, Key(3, 3), "reply queued 3 s later")
    await delivery.wake(Key(3, 3))
    await commit(store, Key(4, 4), "check-in", priority=Priority.BULK)
    await delivery.wake(Key(4, 4))
    delivery.start()
    try:
        assert await delivery.idle(10)
    finally:
        await delivery.stop()
    assert [out.params["text"] for out in played.made] == [
        "reply queued 1 s later", "welcome, new person", "reply queued 3 s later", "check-in"]


async def test_a_closed_chat_ends_its_lane_and_others_go_on(store):
    def answer(out: Outgoing) -> Verdict:
        return STOP if out.key.chat_id == 5 else DONE

    played = Played(store, answer)
    delivery = Delivery(store, played, FAST)
    await commit(store, Key(5, 5), "a", "b")
    await commit(store, Key(6, 6), "c")
    await drain(delivery, 5)
    assert [out.params["text"] for out in played.made] == ["c"]
    assert played.attempts == 2, "one attempt for the closed chat, not one per call"


async def test_a_call_queued_while_its_chat_closed_goes_once_the_lane_ends(store):
    """The person blocked the bot (their calls dropped), then wrote again while the call
    in hand failed: the new reply is still sent, not left waiting for housekeeping."""
    key = Key(5, 5)

    class Reopened(Played):
        async def __call__(self, out: Outgoing) -> Verdict:
            if out.params["text"] != "a":
                return await super().__call__(out)
            self.attempts += 1
            await self.store.set_blocked(key)  # as the bot does on a 403
            await commit(self.store, key, "welcome back", update_id=77)
            return STOP

    played = Reopened(store)
    delivery = Delivery(store, played, FAST)
    await commit(store, key, "a", "b")
    await drain(delivery, 5)
    assert [out.params["text"] for out in played.made] == ["welcome back"]


async def test_pacing_one_chat_holds_only_that_chat(store):
    now = [0.0]
    played = Played(store)
    delivery = Delivery(store, played, Limits(chat_burst=2, chat_rate=1.0),
                        clock=lambda: now[0])
    await commit(store, Key(8, 8), "1", "2", "3")
    await commit(store, Key(9, 9), "x")
    delivery.start()
    try:
        await delivery.wake_all()
        await asyncio.sleep(0.2)
        assert sorted(out.params["text"] for out in played.made) == ["1", "2", "x"]
        now[0] += 1.0  # a second later the third may go (its timer was 1 s of real time)
        await asyncio.wait_for(delivery.idle(5), 5)
    finally:
        await delivery.stop()
    assert [out.params["text"] for out in played.made if out.key.chat_id == 8] == \
        ["1", "2", "3"]


# ------------------------------------------------------------ the bot, against the fake


async def test_a_429_for_one_chat_holds_that_chat_only(fake, flow, db):
    fake.limits = FloodLimits(overall=1000, chat_rate=0.5, chat_burst=1)
    async with Harness(fake, flow, db, "webhook") as h:
        a, b = Person(fake, 2001), Person(fake, 2002)
        await a.say("/start")
        fake.type(2001, "/help")  # a second message within 2 s: Telegram says wait
        await fake.wait(lambda: any(e[1] == 429 for e in fake.errors))
        limited = asyncio.get_running_loop().time()
        await b.say("/start")
        b_waited = asyncio.get_running_loop().time() - limited
        await fake.wait(lambda: "/restart" in a.last(), timeout=10)
        a_waited = asyncio.get_running_loop().time() - limited
        assert b_waited < 1.0, "another chat is not held up"
        assert a_waited >= 1.0, "the limited chat waited for its retry_after"
        assert h.bot.delivery.stats.limited_chat >= 1 and h.bot.delivery.stats.limited_bot == 0
        assert [m.text.count("/restart") for m in fake.bot_messages(2001)] == [0, 1]


async def test_429s_from_many_chats_slow_the_whole_bot_and_nothing_is_lost(fake, flow, db):
    fake.limits = FloodLimits(overall=4, chat_burst=100)
    async with Harness(fake, flow, db, "webhook") as h:
        crowd = [Person(fake, 2100 + i) for i in range(16)]
        for p in crowd:
            fake.type(p.id, "/start")
        await fake.wait(lambda: all(p.seen() >= 1 for p in crowd), timeout=20)
        await asyncio.sleep(0.5)
        assert [p.seen() for p in crowd] == [1] * 16, "each consent prompt exactly once"
        assert h.bot.delivery.stats.limited_bot >= 1
        limited = sum(1 for e in fake.errors if e[1] == 429)
        assert limited <= 16, f"{limited} 429s: the bot kept hammering after the first"


async def test_emergency_advice_overtakes_a_backlog_of_first_contacts(fake, flow, db):
    async with Harness(fake, flow, db, "webhook"):
        p = Person(fake, 2200)
        await p.start()
        await p.say("45")
        await p.press("Male")
        await p.press("Lower back")
        await p.press("in the chest", wait_new=False)
        fake.limits = FloodLimits(overall=5, chat_burst=100)
        crowd = [Person(fake, 2300 + i) for i in range(30)]
        for person in crowd:
            fake.type(person.id, "/start")
        await fake.wait(lambda: sum(person.seen() for person in crowd) >= 3)
        await p.press("Done", wait_new=False)
        await fake.wait(lambda: p.last().startswith("🔴"), timeout=10)
        waiting = sum(1 for person in crowd if person.seen() == 0)
        assert waiting >= 15, f"the emergency went first, ahead of the backlog ({waiting} left)"
        await fake.wait(lambda: all(person.seen() == 1 for person in crowd), timeout=30)


# ------------------------------------------------------------ kill -9 during a backlog


async def start_process(fake, db, **env_extra: str):
    import os
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_", "TELEGRAM_"))}
    env.update({"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
                "TRIAGEBOT_DB": str(db), "TRIAGEBOT_MODE": "polling",
                "TRIAGEBOT_LISTEN": "127.0.0.1:0", **env_extra})
    polls = sum(1 for c in fake.calls if c[0] == "getUpdates")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await fake.wait(lambda: sum(1 for c in fake.calls if c[0] == "getUpdates") > polls,
                    timeout=30)
    return proc


def outbox_rows(db) -> int:
    return rows(db, "SELECT count(*) FROM outbox")[0][0]


async def test_kill_9_in_a_backlog_resends_only_what_was_in_flight(fake, db):
    """40 people start while Telegram allows 8 messages a second; the bot is killed
    with about half the consent prompts sent. After the restart everyone has theirs,
    and only a call in flight at the kill can have gone twice (before: every reply
    that was sent but not yet deleted from the outbox went again)."""
    import signal

    proc = await start_process(fake, db)
    try:
        fake.limits = FloodLimits(overall=8, chat_burst=100)
        crowd = [Person(fake, 2400 + i) for i in range(40)]
        for p in crowd:
            fake.type(p.id, "/start")
        await fake.wait(lambda: sum(p.seen() for p in crowd) >= 16, timeout=30)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        sent_before = sum(p.seen() for p in crowd)
        left = outbox_rows(db)
        assert left >= 40 - sent_before - 4, "each sent call left the outbox at once"
        proc = await start_process(fake, db)
        await fake.wait(lambda: all(p.seen() >= 1 for p in crowd), timeout=30)
        await asyncio.sleep(0.5)
        twice = sum(p.seen() - 1 for p in crowd)
        assert twice <= 2, f"{twice} prompts sent twice: more than were in flight"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def test_kill_9_just_after_an_alert_does_not_post_it_again(fake, db):
    import signal

    from .test_groups_and_alerts import STAFF, setup_chats
    from .test_telegram import emergency_by_buttons

    setup_chats(fake)
    proc = await start_process(fake, db, TRIAGEBOT_STAFF_CHAT=str(STAFF))
    try:
        p = Person(fake, 2500)
        await emergency_by_buttons(p, consent="Yes, contact me only")
        await fake.wait(lambda: "clinician on duty has been told" in p.last())

        def recorded() -> bool:
            return rows(db, "SELECT sent_at IS NOT NULL FROM alerts") == [(True,)]

        for _ in range(100):
            if recorded() and outbox_rows(db) == 0:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # well within the minute of the old housekeeping
        await proc.wait()
        proc = await start_process(fake, db, TRIAGEBOT_STAFF_CHAT=str(STAFF))
        await asyncio.sleep(1.0)
        assert len(fake.bot_messages(STAFF)) == 1, "one alert, one 'I'm on it' button"
        told = [m for m in fake.bot_messages(2500) if "clinician on duty" in m.text]
        assert len(told) == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def test_replies_resume_soon_after_an_outage_without_waiting_for_housekeeping(
        fake, flow, db):
    from .fake_telegram import ApiError

    h = Harness(fake, flow, db, "polling")
    h.bot.delivery.limits = Limits(chat_burst=1000, retry_base=0.05, retry_max=0.4)
    async with h:
        p = Person(fake, 2600)
        await p.start()
        fake.failures["sendMessage"] = [ApiError(502, "Bad Gateway")] * 12
        fake.type(2600, "/help")
        await fake.wait(lambda: not fake.failures["sendMessage"], timeout=15)
        back = asyncio.get_running_loop().time()  # Telegram answers again
        await fake.wait(lambda: "/restart" in p.last(), timeout=5)
        assert asyncio.get_running_loop().time() - back < 1.0, "at most one backoff later"
        assert sum(1 for e in fake.errors if e[1] == 502) == 12


async def test_the_webhook_is_answered_at_the_commit_not_after_the_replies(fake, flow, db):
    """A slow Bot API (or a backlog) no longer holds Telegram's webhook requests open,
    of which it keeps at most 40: intake goes on while replies wait."""
    async with Harness(fake, flow, db, "webhook"):
        fake.slow_answers["sendMessage"] = 3.0  # each answer takes 3 s to come back
        started = asyncio.get_running_loop().time()
        update_id = fake.type(2700, "/start")
        await fake.wait(lambda: fake.delivered.get(update_id) == 1, timeout=10)
        assert asyncio.get_running_loop().time() - started < 1.5, "acknowledged at once"
        await fake.wait(lambda: any(m == "sendMessage" for m, _ in fake.calls), timeout=5)
        fake.slow_answers.clear()
