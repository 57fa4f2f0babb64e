"""Groups, deep links, consent, clinician alerts, admin statistics and export — against the
fake Bot API with private, group, supergroup and channel chats, people and staff."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
import sys

from bot import deeplink
from bot.conversation import Conversations
from bot.engine import Engine

from .conftest import ROOT
from .fake_telegram import FakeTelegram
from .helpers import everything, rows
from .test_telegram import Harness, Person, emergency_by_buttons, self_care_by_typing

GROUP, SUPERGROUP, CHANNEL, STAFF, OTHER_STAFF = -200, -1001234567890, -1009999, -300, -301


class StaffHarness(Harness):
    """The bot with a staff chat (and a second one for people from SUPERGROUP)."""

    def __init__(self, fake, flow, db, mode="polling", admins=()):
        super().__init__(fake, flow, db, mode)
        self.settings = type(self.settings)(**{
            **{f: getattr(self.settings, f) for f in self.settings.__dataclass_fields__},
            "staff_chat": STAFF, "staff_chats": ((SUPERGROUP, OTHER_STAFF),),
            "admins": frozenset(admins)})
        self.bot.settings = self.settings
        self.bot.conversations = Conversations(Engine(flow), staff_chat=STAFF,
                                               staff_chats={SUPERGROUP: OTHER_STAFF})


def setup_chats(fake: FakeTelegram) -> None:
    fake.add_chat(GROUP, "group", "Back Pain Support")
    fake.add_chat(SUPERGROUP, "supergroup", "Clinic Community")
    fake.add_chat(CHANNEL, "channel", "Clinic News")
    fake.add_chat(STAFF, "group", "Clinicians on duty")
    fake.add_chat(OTHER_STAFF, "group", "Community nurses")


def invite_link(fake: FakeTelegram, chat: int) -> str:
    message = fake.bot_messages(chat)[-1]
    (text, url), = [(b["text"], b["url"]) for row in message.reply_markup["inline_keyboard"]
                    for b in row]
    assert text == "Start a private check"
    return url


async def test_in_groups_the_bot_offers_a_private_check_and_never_asks_there(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db):
        for chat, text in ((GROUP, "/start"), (SUPERGROUP, "/triage@triage_test_bot"),
                           (GROUP, "hey @triage_test_bot my back hurts")):
            before = len(fake.bot_messages(chat))
            fake.group_message(chat, 901, text)
            await fake.wait(lambda c=chat, b=before: len(fake.bot_messages(c)) > b)
        fake.group_message(GROUP, 902, "I have a fever and my back hurts")  # privacy mode off
        fake.group_message(GROUP, 902, "/start@some_other_bot")
        await asyncio.sleep(0.4)
        assert len(fake.bot_messages(GROUP)) == 2, "ordinary messages are ignored"
        link = invite_link(fake, SUPERGROUP)
        assert link.startswith("https://t.me/triage_test_bot?start=")
        assert deeplink.read(link.split("start=")[1], fake.token) == SUPERGROUP
        for chat in (GROUP, SUPERGROUP):
            assert not any("How old" in m.text for m in fake.bot_messages(chat))
        assert fake.errors == []


async def test_the_deep_link_records_the_source_and_a_forged_one_is_harmless(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db, admins=(999,)) as h:
        payload = deeplink.make(SUPERGROUP, fake.token)
        p = Person(fake, 903)
        await p.say(f"/start {payload}")
        await p.consent("No, don't alert anyone")
        await self_care_rest(p)
        forged = Person(fake, 904)
        await forged.say("/start " + payload[:-1] + ("A" if payload[-1] != "A" else "B"))
        await forged.consent("No, don't alert anyone")
        await self_care_rest(forged)
        fake.member_update(SUPERGROUP, "administrator")
        admin = Person(fake, 999)
        await admin.say("/stats", until=lambda: "Interviews started" in admin.last())
        stats = admin.last()
        assert "Clinic Community 1" in stats and "direct 1" in stats, stats
        assert "self_care 2" in stats
        assert rows(h.db, "SELECT count(*) FROM events WHERE source = ?", SUPERGROUP) \
            == [(2,)], "started + finished"


async def self_care_rest(p: Person) -> None:
    for text in ("33", "Female, not pregnant", "lower back", "none", "not measured", "none",
                 "mild", "2 days", "none", "none"):
        await p.say(text)
    assert p.last().startswith("🟢")


async def test_consent_is_asked_once_and_can_be_changed(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db):
        p = Person(fake, 905)
        await p.say("/start")
        consent = p.last()
        assert "Before we start" in consent and "30 days" in consent and "clinicians" in consent
        assert not any("How old" in m.text for m in fake.bot_messages(905)), \
            "no health question before consent"
        await p.consent("Yes, contact me only")
        assert "How old" in p.last()
        await p.say("/restart")
        assert "How old" in p.last(), "asked once"
        await p.say("/privacy", until=lambda: "Your choice now" in p.last())
        assert "Yes, contact me only" in p.last()
        await p.press("Yes, and show them my answers", wait_new=False)
        await p.fake.wait(lambda: "Saved: Yes, and show them my answers" in p.last())


async def test_an_emergency_alerts_the_staff_who_can_take_it(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db, mode="webhook") as h:
        p = Person(fake, 906)
        await emergency_by_buttons(p, consent="Yes, and show them my answers")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        alert = fake.bot_messages(STAFF)[0]
        assert alert.text.startswith("🔴 EMERGENCY — triage alert")
        assert "cauda equina" in alert.text and "Because you told me:" in alert.text
        assert "numbness around the genitals" in alert.text
        assert 'href="tg://user?id=906"' in alert.html
        await fake.wait(lambda: "clinician on duty has been told" in p.last())
        (_label, data), = alert.buttons()
        fake.press(701, alert.message_id, data, chat_id=STAFF, username="dr_ada")
        await fake.wait(lambda: "@dr_ada is on it" in alert.buttons()[0][0])
        fake.press(702, alert.message_id, data, chat_id=STAFF, username="dr_bob")
        await fake.wait(lambda: all(fake.queries.values()))
        assert rows(h.db, "SELECT taken_by FROM alerts") == [("@dr_ada",)]
        assert fake.bot_messages(OTHER_STAFF) == [] and fake.errors == []


async def test_without_consent_to_share_the_alert_has_no_answers_and_none_means_none(
        fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db):
        contact_only = Person(fake, 907)
        await emergency_by_buttons(contact_only, consent="Yes, contact me only")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        alert = fake.bot_messages(STAFF)[0].text
        assert "did not agree to share" in alert and "Because you told me" not in alert
        assert "numbness" not in alert.split("Red flags:")[0]
        nobody = Person(fake, 908)
        await emergency_by_buttons(nobody, consent="No, don't alert anyone")
        await asyncio.sleep(0.3)
        assert len(fake.bot_messages(STAFF)) == 1
        assert not any("clinician on duty" in m.text for m in fake.bot_messages(908))
        calm = Person(fake, 909)
        await calm.start("Yes, and show them my answers")
        await self_care_rest(calm)
        await asyncio.sleep(0.3)
        assert len(fake.bot_messages(STAFF)) == 1, "self-care alerts nobody"


async def test_people_from_a_source_group_alert_its_own_staff(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db):
        p = Person(fake, 910)
        await p.say("/start " + deeplink.make(SUPERGROUP, fake.token))
        await p.consent("Yes, contact me only")
        await p.say("45")
        await p.press("Male")
        await p.press("Lower back")
        await p.tick("in the chest")
        await fake.wait(lambda: len(fake.bot_messages(OTHER_STAFF)) == 1)
        assert f"from group {SUPERGROUP}" in fake.bot_messages(OTHER_STAFF)[0].text
        assert fake.bot_messages(STAFF) == []


async def test_an_undeliverable_alert_is_kept_retried_and_shown_to_admins(fake, flow, db):
    setup_chats(fake)
    fake.blocked.add(STAFF)  # the bot was removed from the staff group
    async with StaffHarness(fake, flow, db, admins=(999,)) as h:
        p = Person(fake, 911)
        await emergency_by_buttons(p, consent="Yes, contact me only")
        await asyncio.sleep(0.3)
        assert not any("clinician on duty" in m.text for m in fake.bot_messages(911)), \
            "never told a clinician knows when none does"
        admin = Person(fake, 999)
        await admin.say("/stats", until=lambda: "Alerts" in admin.last())
        assert "1 failing" in admin.last() and "Blocked" in admin.last()
        fake.blocked.discard(STAFF)  # the bot is added back
        await h.bot.flush()  # the minute-by-minute safety net: tried again at once
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1, timeout=5)
        await fake.wait(lambda: "clinician on duty has been told" in p.last())
        assert rows(h.db, "SELECT attempts, sent_at IS NOT NULL FROM alerts") == [(1, 1)]


async def test_non_admins_get_no_statistics(fake, flow, db):
    async with StaffHarness(fake, flow, db, admins=(999,)):
        p = Person(fake, 912)
        await p.say("/stats", until=lambda: p.seen() == 1)
        assert "Interviews" not in p.last() and "/restart" in p.last()


async def test_forget_erases_consent_and_pending_alerts(fake, flow, db):
    setup_chats(fake)
    fake.blocked.add(STAFF)  # so the alert stays pending
    async with StaffHarness(fake, flow, db) as h:
        p = Person(fake, 913)
        await emergency_by_buttons(p, consent="Yes, and show them my answers")
        await asyncio.sleep(0.2)
        assert rows(h.db, "SELECT count(*) FROM outbox WHERE user_id = 913 AND params LIKE"
                          " '%_alert%'") == [(1,)], "the alert waits in the outbox"
        await p.say("/forget")
        await p.press("Yes, erase it", wait_new=False)
        await fake.wait(lambda: "erased everything" in p.last())
        # (the confirmation's own outbox rows go once it is sent: the same moment)
        await fake.wait(lambda: rows(h.db, "SELECT count(*) FROM outbox WHERE user_id = 913")
                        == [(0,)], timeout=2)
        for table in ("conversations", "answer_log", "outbox", "alerts"):
            assert rows(h.db, f"SELECT count(*) FROM {table} WHERE user_id = 913") == [(0,)], \
                table
        assert not re.search(r"(?<![\d.])913(?!\d)", everything(h.db)), \
            "nothing of that person is left"
        seen = p.seen()
        await p.say("/start")
        assert "Before we start" in p.last(), "consent is asked again"
        assert seen < p.seen()


async def test_bot_added_and_removed_from_groups_is_recorded(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db) as h:
        fake.member_update(GROUP, "member")
        fake.member_update(CHANNEL, "administrator")
        last = fake.member_update(GROUP, "left")
        await fake.wait(lambda: fake.confirmed_offset > last)
        assert dict(rows(h.db, "SELECT chat_id, status FROM groups")) == \
            {GROUP: "left", CHANNEL: "administrator"}


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_",
                                                                      "TELEGRAM_"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, env=environ | env,
                          capture_output=True, text=True, timeout=60)


async def test_invite_posts_and_pins_the_deep_link_in_a_group_or_channel(fake):
    setup_chats(fake)
    env = {"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url}
    result = await asyncio.to_thread(cli, "invite", "--chat", str(CHANNEL), "--pin", env=env)
    assert result.returncode == 0, result.stderr
    message = fake.bot_messages(CHANNEL)[-1]
    assert fake.pinned[CHANNEL] == message.message_id
    assert deeplink.read(invite_link(fake, CHANNEL).split("start=")[1], fake.token) == CHANNEL


async def test_export_writes_anonymised_outcomes(fake, flow, db):
    async with StaffHarness(fake, flow, db) as h:
        await emergency_by_buttons(Person(fake, 914), consent="Yes, contact me only")
        await self_care_by_typing(Person(fake, 915))
    result = await asyncio.to_thread(cli, "export", "--since", "2000-01-01",
                                     env={"TRIAGEBOT_DB": str(h.db)})
    assert result.returncode == 0, result.stderr
    lines = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["level"] for r in lines) == ["emergency", "self_care"]
    assert set(lines[0]) == {"date", "source_group", "level", "rules", "questions", "flow"}
    assert {r["flow"] for r in lines} == {"back_pain_fever"}
    assert "914" not in result.stdout and "915" not in result.stdout


async def test_forget_and_restart_work_before_any_interview(fake, flow, db):
    async with StaffHarness(fake, flow, db) as h:
        p = Person(fake, 916)
        await p.say("/start")  # only the consent question so far
        await p.say("/restart")
        assert "Before we start" in p.last(), "no health question before consent"
        await p.say("/forget")
        await p.press("Yes, erase it", wait_new=False)
        await fake.wait(lambda: "erased everything" in p.last())
        assert rows(h.db, "SELECT count(*) FROM conversations WHERE user_id = 916") == [(0,)]


async def test_finishing_again_after_going_back_does_not_alert_twice(fake, flow, db):
    setup_chats(fake)
    async with StaffHarness(fake, flow, db):
        p = Person(fake, 917)
        await emergency_by_buttons(p, consent="Yes, contact me only")
        await fake.wait(lambda: len(fake.bot_messages(STAFF)) == 1)
        await p.say("/back")
        await p.press("Yes")  # confirm the earlier answer was a mistake
        await p.tick("in the chest")  # ... and it is still an emergency
        assert p.last().startswith("🔴")
        await asyncio.sleep(0.3)
        assert len(fake.bot_messages(STAFF)) == 1
