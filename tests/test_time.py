"""Conversations over time, with a clock the test moves: expiry, check-ins, restarts."""

from __future__ import annotations

from .test_telegram import Harness, Person

HOUR = 3600.0
START = 1_800_000_000.0  # 2027-01-15 08:00 UTC


class Clock:
    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += hours * HOUR


async def test_an_interview_left_for_a_day_expires_and_its_buttons_go_stale(fake, flow,
                                                                          tmp_path):
    clock = Clock()
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "polling") as h:
        h.bot.clock = clock
        p = Person(fake, 801)
        await p.start()
        await p.say("45")
        old = p.question()
        assert "registered at birth" in old.text
        clock.advance(23)  # within the day: the interview goes on
        await p.press("Male")
        assert "Where is the back pain?" in p.last()
        where = p.question()
        clock.advance(25)  # left unanswered for more than 24 hours
        before = p.seen()
        data = next(d for t, d in where.buttons() if t == "Lower back")
        fake.press(801, where.message_id, data)
        await fake.wait(lambda: p.settled(before))
        new = [m.text for m in fake.bot_messages(801)[before:]]
        assert any("more than 24 hours" in m and "closed" in m for m in new)
        assert "How old is" in p.last(), "a new check starts from the beginning"
        assert not fake.messages[(801, where.message_id)].buttons(), "the old keyboard closed"
        await p.say("33")
        assert "registered at birth" in p.last(), "the new check goes on normally"
        assert fake.errors == []


async def test_a_finished_check_does_not_expire(fake, flow, tmp_path):
    clock = Clock()
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "polling") as h:
        h.bot.clock = clock
        p = Person(fake, 802)
        await p.start()
        await p.say("45")
        await p.press("Male")
        await p.press("Lower back")
        await p.tick("in the chest")
        assert p.last().startswith("🔴")
        clock.advance(48)
        await p.say("hello", until=lambda: "finished" in p.last())
        assert not any("more than 24 hours" in m.text for m in fake.bot_messages(802))
