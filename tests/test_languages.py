"""Languages on Telegram: picked from the app's language, changed with /language
mid-interview, right to left for Arabic, and the command menu in each language."""

from __future__ import annotations

import sqlite3

from bot.telegram.render import RLM

from .test_telegram import Harness, Person


async def test_the_app_language_picks_the_interview_language(fake, flow, tmp_path):
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook"):
        fake.language_codes[701] = "es"
        fake.language_codes[702] = "pt-br"  # not shipped: the deployment's default
        p, q = Person(fake, 701), Person(fake, 702)
        await p.say("/start")
        assert "Antes de empezar" in p.last()
        await p.consent("De acuerdo, empezar")
        assert "¿Qué edad tiene" in p.last()
        await q.start()
        assert "How old is" in q.last()
        menus = fake.commands_by_language
        assert {"es", "ru", "ar"} <= menus.keys() and menus[""] == fake.commands
        assert {c["command"] for c in menus["es"]} >= {"start", "back", "language", "forget"}
        assert next(c for c in menus["es"] if c["command"] == "forget")["description"] == \
            "Borrar todo lo que guardo sobre usted"
        assert fake.errors == []


async def test_switching_language_mid_interview_keeps_the_answers(fake, flow, tmp_path):
    db = tmp_path / "bot.sqlite3"
    async with Harness(fake, flow, db, "polling"):
        p = Person(fake, 703)
        await p.start()
        await p.say("45")
        await p.press("Male")
        assert "Where is the back pain?" in p.last()
        await p.say("/language")
        assert [label for label, _ in p.question().buttons()] == \
            ["English", "العربية", "Español", "Русский"]
        await p.press("Русский")
        messages = [m.text for m in fake.bot_messages(703)]
        assert any("теперь по-русски" in m for m in messages)
        assert p.last().endswith("Где болит спина?")  # the same question, in Russian
        assert next(label for label, _ in p.question().buttons()) == "Поясница"
        await p.press("Поясница")
        assert "Происходит ли сейчас" in p.last()
        await p.say("11", until=lambda: "Это не диагноз" in p.last())  # saddle numbness
        assert p.last().startswith("🔴")
        assert "синдром конского хвоста" in p.last()
        rows = sqlite3.connect(db).execute(
            "SELECT finding FROM answer_log WHERE user_id = 703 AND event = 'answer'"
        ).fetchall()
        assert {"age_years", "sex", "back_pain_location", "saddle_numbness"} <= \
            {r[0] for r in rows}, "the answers given in English are kept"
        assert fake.errors == []


async def test_arabic_reads_right_to_left_and_takes_arabic_digits(fake, flow, tmp_path):
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook"):
        fake.language_codes[704] = "ar"
        p = Person(fake, 704)
        await p.say("/start")
        await p.consent("حسنًا، لنبدأ")
        assert "كم عمر الشخص المريض" in p.last()
        await p.say("٤٥")  # Arabic-Indic digits
        await p.press("ذكر")
        await p.press("أسفل الظهر")
        await p.press("خدر أو تنميل حول الأعضاء التناسلية أو فتحة الشرج أو باطن الفخذين",
                      wait_new=False)
        q = p.question()
        fake.press(704, q.message_id, next(d for t, d in q.buttons() if t.startswith("تم")))
        await fake.wait(lambda: "هذا ليس تشخيصًا" in p.last())
        outcome = p.last()
        assert "حالة طارئة" in outcome and "112" in outcome
        for message in fake.bot_messages(704):
            for line in message.html.split("\n"):
                assert line.startswith(RLM), f"a line without its direction mark: {line!r}"
        assert fake.errors == []
