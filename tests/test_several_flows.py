"""Several flows in one bot, through the real bot and the strict fake Bot API: the
/start menu, a link per flow, a hand-off that fires a rule on what it carried, /stats
per flow, staff alerts that name the check, and a new flow version mid-interview.

The flows are tests/flows/several (small test flows, not clinical content)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path

from bot import deeplink
from bot.cli import build_conversations
from bot.loader import load_flow
from bot.telegram import render

from .conftest import ROOT
from .helpers import rows
from .test_groups_and_alerts import GROUP, STAFF, cli, setup_chats
from .test_telegram import Harness, Person

FLOWS = ROOT / "tests" / "flows" / "several"
TITLES = {"Test back check", "Test intake"}


class SeveralHarness(Harness):
    """The bot wired as `triagebot run` wires it (bot.cli.build_conversations), with
    TRIAGEBOT_FLOWS pointing at `folder`."""

    def __init__(self, fake, db: Path | str, folder: Path = FLOWS, staff: bool = False,
                 admins=()):
        super().__init__(fake, load_flow(FLOWS / "backs.yaml"), db, "polling")
        self.settings = replace(self.settings, flows=folder, admins=frozenset(admins),
                                staff_chat=STAFF if staff else None)
        self.bot.settings = self.settings
        self.bot.conversations = build_conversations(self.settings)


def menu_labels(p: Person) -> list[str]:
    return [label for label, _ in p.question().buttons()]


def events(db: Path | str) -> list[tuple]:
    return rows(db, "SELECT kind, flow, source, level FROM events ORDER BY id")


async def test_start_offers_every_flow_and_a_button_opens_it(fake, db):
    async with SeveralHarness(fake, db):
        p = Person(fake, 1101)
        await p.start()  # consent first: the prompt then becomes the menu
        assert set(menu_labels(p)) == TITLES
        menu = p.question()
        assert "Which check would you like to do?" in menu.text
        assert "Test intake — A few general questions, then the back check." in menu.text
        assert "Only about the back." in menu.text
        await p.press("Test back check")
        assert p.last().startswith("Backs: where is the pain?")
        assert menu.text.endswith("✓ Test back check") and not menu.buttons()

        # a forged menu press: an unknown flow, or the menu of an earlier interview
        for data in (render.encode(1, "_", -1, "flow_nope"),
                     render.encode(0, "_", -1, "flow_intake")):
            before = p.seen()
            fake.press(1101, menu.message_id, data)
            await fake.wait(lambda before=before: p.seen() > before)
            assert "belongs to an earlier check" in p.last()
            assert p.last().endswith("Backs: where is the pain?"), "still the same check"

        # /start mid-check offers the flows again; until one is chosen, what is typed
        # still answers the current question
        await p.say("/start")
        assert set(menu_labels(p)) == TITLES
        again = p.question()
        await p.say("hello")
        assert p.last().startswith("Please choose one of the options") or \
            "Backs: where is the pain?" in p.last()
        (data,) = [d for label, d in again.buttons() if label == "Test intake"]
        before = p.seen()
        fake.press(1101, again.message_id, data)
        await fake.wait(lambda: p.settled(before))
        assert "Intake first." in p.last() and "Intake: do you have chest pain?" in p.last()

        # a new person pressing a flow button before consenting gets the consent first
        q = Person(fake, 1102)
        await q.say("hi")
        prompt = q.question()
        before = q.seen()
        fake.press(1102, prompt.message_id, render.encode(0, "_", -1, "flow_backs"))
        await fake.wait(lambda: q.seen() > before)
        assert "Before we start" in q.last() and "Backs:" not in q.transcript()
        assert fake.errors == []


async def test_a_link_per_flow_opens_it_directly_and_a_forged_one_does_not(fake, db):
    async with SeveralHarness(fake, db):
        p = Person(fake, 1201)
        await p.say("/start backs")
        await p.consent("OK, start")
        assert p.last().endswith("Backs: where is the pain?"), "no menu: the link chose"

        signed = deeplink.make(GROUP, fake.token, "intake")
        assert deeplink.read_link(signed, fake.token) == (GROUP, "intake")
        q = Person(fake, 1202)
        await q.say("/start " + signed)
        await q.consent("OK, start")
        assert "Intake: do you have chest pain?" in q.last()

        # the flow named in a signed link is covered by its MAC: another flow's name,
        # an unknown flow, garbage or a huge payload open the menu, from no group
        forged = signed.removesuffix("intake") + "backs"
        for n, payload in enumerate((forged, signed + "x", "nope", "-" * 60, "A" * 4000)):
            r = Person(fake, 1210 + n)
            await r.say("/start " + payload)
            await r.consent("OK, start")
            assert set(menu_labels(r)) == TITLES, payload[:80]
    happened = events(db)
    assert ("started", "backs", None, None) in happened
    assert ("started", "intake", GROUP, None) in happened
    assert sum(source is not None for _, _, source, _ in happened) == 1, \
        "forged links: no group"


async def test_invite_with_flow_posts_a_signed_link_to_that_flow(fake):
    setup_chats(fake)
    env = {"TELEGRAM_BOT_TOKEN": fake.token, "TRIAGEBOT_API_URL": fake.base_url,
           "TRIAGEBOT_FLOWS": str(FLOWS)}
    result = await asyncio.to_thread(cli, "invite", "--chat", str(GROUP), "--flow", "backs",
                                     env=env)
    assert result.returncode == 0, result.stderr
    post = fake.bot_messages(GROUP)[-1]
    assert post.text.startswith("Test back check")
    (button,), = post.reply_markup["inline_keyboard"]
    assert deeplink.read_link(button["url"].split("start=")[1], fake.token) == (GROUP, "backs")

    posts = fake.bot_message_count(GROUP)
    wrong = await asyncio.to_thread(cli, "invite", "--chat", str(GROUP), "--flow", "nope",
                                    env=env)
    assert wrong.returncode == 2 and "no flow 'nope'" in wrong.stderr
    assert fake.bot_message_count(GROUP) == posts, "nothing posted for a wrong flow"


async def test_a_hand_off_evaluates_the_next_flows_rules_on_what_it_carried(fake, db):
    setup_chats(fake)
    async with SeveralHarness(fake, db, staff=True, admins=(999,)):
        # chest pain is no red flag in the intake, but it is in the back check: at the
        # hand-off it fires at once, before the back check asks anything
        p = Person(fake, 1301)
        await p.say("/start intake")
        await p.consent("Yes, contact me only")
        await p.say("yes")
        await p.say("37")
        assert "Now the back check." in p.transcript()
        assert "EMERGENCY" in p.last() and "Test: chest pain is an emergency here." in p.last()
        assert "Backs:" not in p.transcript(), "no question of the back check was asked"
        await fake.wait(lambda: fake.bot_message_count(STAFF) == 1)
        alert = fake.bot_messages(STAFF)[-1].text
        assert "EMERGENCY" in alert and "Test back check" in alert, alert

        # a high temperature: urgent at once; what was said is not asked again, and
        # the back check's own self-care outcome cannot lower it
        q = Person(fake, 1302)
        await q.say("/start intake")
        await q.consent("No, don't alert anyone")
        await q.say("no")
        intake_question = q.question()
        await q.say("39.5")
        text = q.last()
        assert "You need care today. Test: a high temperature needs a check today." in text
        assert text.startswith("Now the back check.") and text.endswith("where is the pain?")
        assert "Backs: do you have chest pain?" not in q.transcript()
        # the intake's buttons are stale now: never read as an answer to the back check
        before = q.seen()
        fake.press(1302, intake_question.message_id, render.encode(1, "chest", -1, "yes"))
        await fake.wait(lambda: q.seen() > before)
        assert "earlier" in q.last() and q.last().endswith("Backs: where is the pain?")
        await q.press("Lower back")
        assert "URGENT" in q.last() and "Test: a high temperature" in q.last()

        admin = Person(fake, 999)
        await admin.say("/stats", until=lambda: "Interviews started" in admin.last())
        stats = admin.last()
        assert "backs: started 2, finished 2 (emergency 1, urgent 1)" in stats, stats
        assert "intake: started 2, finished 0" in stats, stats

    answers = rows(db, "SELECT user_id, finding, value FROM answer_log WHERE event = 'answer'"
                       " ORDER BY id")
    assert (1301, "chest_pain", "true") in answers and (1302, "temperature_c", "39.5") in \
        answers, answers
    assert [r for r in events(db) if r[0] == "finished"] == [
        ("finished", "backs", None, "emergency"), ("finished", "backs", None, "urgent")]


async def test_a_session_stays_on_its_flow_version_across_a_redeploy(fake, tmp_path, db):
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    shutil.copytree(FLOWS, v1)
    async with SeveralHarness(fake, db, folder=v1):
        p = Person(fake, 1401)
        await p.say("/start backs")
        await p.consent("OK, start")
        await p.press("Lower back")
        assert p.last().startswith("Backs: do you have chest pain?"), p.last()

    # version 2 rewords its questions; version 1 is kept for the interviews begun on it
    shutil.copytree(FLOWS, v2)
    (v2 / "versions").mkdir()
    shutil.copy(FLOWS / "backs.yaml", v2 / "versions" / "backs.v1.yaml")
    text = (FLOWS / "backs.yaml").read_text(encoding="utf-8")
    (v2 / "backs.yaml").write_text(text.replace("version: 1", "version: 2")
                                   .replace("Backs: ", "Backs v2: "), encoding="utf-8")
    async with SeveralHarness(fake, db, folder=v2):
        await p.say("no")
        assert p.last().startswith("Backs: what was your highest temperature"), "still v1"
        await p.say("37")
        assert "SELF-CARE" in p.last()
        await p.say("/start backs")
        assert p.last().startswith("Backs v2: where is the pain?"), "a new check: v2"
        await p.say("/start intake")  # the other flow is served as before
        assert "Intake: do you have chest pain?" in p.last()
    assert ("finished", "backs", None, "self_care") in events(db)


def test_validate_refuses_hand_offs_to_nowhere_back_round_or_beside_next(tmp_path):
    intake = (FLOWS / "intake.yaml").read_text(encoding="utf-8")
    backs = (FLOWS / "backs.yaml").read_text(encoding="utf-8")
    (tmp_path / "intake.yaml").write_text(intake.replace("continue_with: backs",
                                                         "continue_with: bakcs"))
    (tmp_path / "backs.yaml").write_text(backs)
    result = cli("validate", str(tmp_path), env={})
    assert result.returncode == 1
    line = intake[:intake.index("continue_with")].count("\n") + 1
    assert f"intake.yaml:{line}:1: nodes.over.continue_with: continues in flow 'bakcs', " \
           "which is not loaded — did you mean 'backs'?" in result.stdout, result.stdout

    # back round: the back check's outcome hands over to the intake, which hands back
    (tmp_path / "intake.yaml").write_text(intake)
    rest = '    advice: {en: "Rest."}\n'
    (tmp_path / "backs.yaml").write_text(backs.replace(rest, rest + "    continue_with: intake\n"))
    result = cli("validate", str(tmp_path), env={})
    assert result.returncode == 1 and "hands over to a flow that hands back to it" in \
        result.stdout, result.stdout

    (tmp_path / "backs.yaml").write_text(backs)
    (tmp_path / "intake.yaml").write_text(intake.replace(
        "    continue_with: backs\n", "    continue_with: backs\n    next: chest\n"))
    result = cli("validate", str(tmp_path), env={})
    assert result.returncode == 1 and "a node that continues in another flow has no `next`" \
        in result.stdout, result.stdout


async def test_check_ins_and_expiry_follow_the_flow_an_interview_ran(fake, tmp_path, db):
    from .test_time import Clock

    folder = tmp_path / "flows"
    shutil.copytree(FLOWS, folder)
    for path in (ROOT / "flows").glob("back_pain_fever*.yaml"):
        shutil.copy(path, folder / path.name)
    clock = Clock()
    h = SeveralHarness(fake, db, folder=folder)
    h.bot.clock = clock
    h.bot.conversations.checkins = True
    async with h:
        assert list(h.bot.conversations.engines) == ["back_pain_fever", "backs", "intake"]
        p = Person(fake, 1601)  # the bundled flow has a check-in: offered, then sent
        await p.say("/start back_pain_fever")
        await p.consent("OK, start")
        for text in ("33", "Female, not pregnant", "lower back", "none", "not measured",
                     "none", "mild", "2 days", "none", "none"):
            await p.say(text)
        await fake.wait(lambda: "check on you later?" in p.last())
        await p.press("In 6 hours")
        clock.advance(6.1)
        seen = p.seen()
        assert await h.bot.run_due() == 1
        await fake.wait(lambda: p.seen() > seen)
        assert "Checking in as promised" in p.last()

        q = Person(fake, 1602)  # the back check has none: its outcome offers nothing
        await q.say("/start backs")
        await q.consent("OK, start")
        await q.press("Lower back")
        await q.say("no")
        await q.say("37")
        assert "SELF-CARE" in q.last() and "check on you later" not in q.transcript()

        r = Person(fake, 1603)  # an interview of another flow expires like any
        await r.say("/start intake")
        await r.consent("OK, start")
        clock.advance(25)
        await r.say("yes")
        assert "more than 24 hours" in r.transcript() and set(menu_labels(r)) == {
            "Back pain and fever check", *TITLES}
    happened = events(db)
    assert ("expired", "intake", None, None) in happened and (
        "checkin", "back_pain_fever", None, None) in happened


def test_validate_refuses_a_carried_finding_whose_meaning_differs_between_flows():
    from dataclasses import replace as evolve

    from bot.findings import bundled_vocabulary
    from bot.loader import handoff_problems, load_flows

    (flows, problems) = load_flows([FLOWS])
    assert problems == []
    # the back check read with a vocabulary where temperature is in °F: not the same
    voc = bundled_vocabulary()
    fahrenheit = evolve(voc, findings={**voc.findings, "temperature_c": evolve(
        voc.findings["temperature_c"], unit="fahrenheit")})
    backs = load_flows([FLOWS / "backs.yaml"], vocabulary=fahrenheit)[0]["backs"]
    found = handoff_problems({**flows, "backs": backs})
    assert [p.what for p in found] == [
        "finding 'temperature_c' has unit celsius here but fahrenheit in 'backs', so it "
        "cannot be carried over"], found
    assert found[0].file.endswith("intake.yaml") and found[0].line > 1
