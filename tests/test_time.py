"""Conversations over time, with a clock the test moves: expiry, check-ins, restarts."""

from __future__ import annotations

from .helpers import rows
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


async def test_an_interview_left_for_a_day_expires_and_its_buttons_go_stale(fake, flow, db):
    clock = Clock()
    async with Harness(fake, flow, db, "polling") as h:
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


async def test_a_finished_check_does_not_expire(fake, flow, db):
    clock = Clock()
    async with Harness(fake, flow, db, "polling") as h:
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


def checkin_harness(fake, flow, db, clock: Clock, timezone: str = "UTC") -> Harness:
    h = Harness(fake, flow, db, "polling")
    h.bot.clock = clock
    h.bot.conversations.checkins = True
    h.bot.conversations.timezone = timezone
    return h


async def self_care_with_offer(p: Person) -> None:
    """Typed interview to self-care (back pain, no fever); the check-in offer follows."""
    await p.start()
    for text in ("33", "Female, not pregnant", "lower back", "none", "not measured", "none",
                 "mild", "2 days", "none", "none"):
        await p.say(text)
    await p.fake.wait(lambda: "check on you later?" in p.last())
    assert any(m.text.startswith("🟢 SELF-CARE") for m in p.fake.bot_messages(p.id))


def schedule_rows(db) -> list[tuple]:
    return rows(db, "SELECT user_id, kind, due_at, status FROM schedule ORDER BY id")


async def test_a_check_in_is_sent_when_due_and_asks_the_red_flags_again(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock) as h:
        p = Person(fake, 811)
        await self_care_with_offer(p)
        await p.press("In 6 hours")
        assert "I will check on you at 2027-01-15 14:00 UTC" in p.last()
        assert schedule_rows(db) == [(811, "checkin", START + 6 * HOUR, "pending")]
        clock.advance(5.9)
        assert await h.bot.run_due() == 0
        clock.advance(0.2)
        seen = p.seen()
        assert await h.bot.run_due() == 1
        await fake.wait(lambda: p.seen() > seen)
        assert "Checking in as promised" in p.last()
        assert await h.bot.run_due() == 0, "sent once"
        await p.press("About the same")
        assert "Is any of these happening now?" in p.last()
        await p.tick("in the chest")  # a red flag at the check-in escalates as usual
        assert any(m.text.startswith("🔴 EMERGENCY") for m in fake.bot_messages(811))
        assert schedule_rows(db)[0][3] == "sent"
        assert fake.errors == []


async def test_worse_goes_through_the_whole_interview_again(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock) as h:
        p = Person(fake, 812)
        await self_care_with_offer(p)
        await p.press("In 6 hours")
        clock.advance(6)
        await h.bot.run_due()
        await fake.wait(lambda: "Checking in as promised" in p.last())
        await p.press("Worse")
        texts = [m.text for m in fake.bot_messages(812)]
        assert any("go through everything again" in t for t in texts)
        assert "How old is" in p.last()


async def test_tomorrow_morning_is_in_the_deployments_time_zone(fake, flow, db):
    # 2027-01-15 08:00 UTC is 03:00 in New York: +6 h is 09:00 there, so "tomorrow
    # morning" is that same morning; in London (08:00) it is the next day's 09:00
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock,
                               "America/New_York") as h:
        conversations = h.bot.conversations
        assert conversations.checkin_time("checkin_morning", clock()) == START + 6 * HOUR
        conversations.timezone = "Europe/London"
        assert conversations.checkin_time("checkin_morning", clock()) == START + 25 * HOUR
        conversations.timezone = "Asia/Riyadh"  # 11:00 there: +6 h = 17:00 -> next 09:00
        assert conversations.checkin_time("checkin_morning", clock()) == START + 22 * HOUR


async def test_a_cancelled_check_in_is_never_sent(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock) as h:
        p = Person(fake, 813)
        await self_care_with_offer(p)
        await p.press("Tomorrow morning")
        await p.press("Cancel the check-in", wait_new=False)
        await fake.wait(lambda: "I will not check on you" in p.last())
        clock.advance(48)
        assert await h.bot.run_due() == 0
        assert schedule_rows(db)[0][3] == "cancelled"


async def test_check_ins_survive_restarts_and_are_sent_exactly_once(fake, flow, db):
    clock = Clock()
    p, q = Person(fake, 814), Person(fake, 815)
    async with checkin_harness(fake, flow, db, clock):
        for person in (p, q):
            await self_care_with_offer(person)
            await person.press("In 6 hours")
    clock.advance(3)  # restart before the due time: nothing to send yet
    async with checkin_harness(fake, flow, db, clock) as h:
        assert await h.bot.run_due() == 0
    clock.advance(4)  # down while it fell due; back one hour late: sent once
    async with checkin_harness(fake, flow, db, clock) as h:
        assert await h.bot.run_due() == 2
    async with checkin_harness(fake, flow, db, clock) as h:  # a second restart in a row
        assert await h.bot.run_due() == 0
    for person in (p, q):
        asked = [m for m in fake.bot_messages(person.id) if "Checking in" in m.text]
        assert len(asked) == 1, "exactly once"
    assert [r[3] for r in schedule_rows(db)] == ["sent", "sent"]


async def test_a_check_in_too_late_is_dropped_with_a_note(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock):
        p = Person(fake, 816)
        await self_care_with_offer(p)
        await p.press("In 6 hours")
    clock.advance(6 + 13)  # the bot was down for more than the 12 stale hours
    async with checkin_harness(fake, flow, db, clock) as h:
        assert await h.bot.run_due() == 1
        await fake.wait(lambda: "could not check on you" in p.last())
        assert "/start" in p.last() and "2027-01-15 14:00 UTC" in p.last()
        assert not any("Checking in" in m.text for m in fake.bot_messages(816))
        assert schedule_rows(db)[0][3] == "dropped"


async def test_a_new_check_meanwhile_skips_the_check_in_and_forget_deletes_them(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock) as h:
        p = Person(fake, 817)
        await self_care_with_offer(p)
        await p.press("In 6 hours")
        await p.say("/restart")  # a new check of their own before the time
        clock.advance(7)
        assert await h.bot.run_due() == 1
        assert schedule_rows(db)[0][3] == "skipped"
        assert not any("Checking in" in m.text for m in fake.bot_messages(817))
        await p.say("/start")
        q = Person(fake, 818)
        await self_care_with_offer(q)
        await q.press("Tomorrow morning")
        await q.say("/forget")
        await q.press("Yes, erase it", wait_new=False)
        await fake.wait(lambda: "erased everything" in q.last())
        assert [r for r in schedule_rows(db) if r[0] == 818] == []


async def test_a_quiet_interview_gets_one_reminder_when_nudges_are_on(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock) as h:
        h.bot.conversations.nudge_hours = 2
        p = Person(fake, 819)
        await p.start()
        await p.say("45")
        clock.advance(1)
        assert await h.bot.run_due() == 0
        await p.press("Male")  # activity: the reminder moves to 2 hours from now
        clock.advance(1.5)
        assert await h.bot.run_due() == 0
        clock.advance(0.6)
        seen = p.seen()
        assert await h.bot.run_due() == 1
        await fake.wait(lambda: p.seen() >= seen + 1)
        texts = [m.text for m in fake.bot_messages(819)[seen:]]
        assert len(texts) == 1, "the reminder and the question in one message"
        assert texts[0].index("Still there?") < texts[0].index("Where is the back pain?")
        clock.advance(5)
        assert await h.bot.run_due() == 0, "one reminder, not one every 2 hours"
        await p.press("Lower back")  # the interview goes on from the reminder's keyboard
        assert "Is any of these happening now?" in p.last()


async def test_a_person_can_set_their_own_time_zone(fake, flow, db):
    clock = Clock()
    async with checkin_harness(fake, flow, db, clock, "Europe/London") as h:
        p = Person(fake, 820)
        await p.say("/timezone Mars/Olympus", until=lambda: "do not know" in p.last())
        await p.say("/timezone America/New_York", until=lambda: "Saved" in p.last())
        await self_care_with_offer(p)
        await p.press("Tomorrow morning")  # 03:00 in New York: +6 h is 09:00 that morning
        assert "2027-01-15 09:00 America/New_York" in p.last()
        assert schedule_rows(db)[0][2] == START + 6 * HOUR
        await p.say("/timezone", until=lambda: "America/New_York" in p.last())
        assert h.bot.conversations.zone_of(None) == "Europe/London"
