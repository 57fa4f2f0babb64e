"""No health answer ever reaches the logs, even at DEBUG."""

from __future__ import annotations

import logging

from .test_telegram import Harness, Person, emergency_by_buttons, self_care_by_typing

ANSWER_TEXTS = ("Numbness or tingling", "Female, not pregnant", "lower back", "not measured",
                "2 days", "Lower back", "Male")
FINDING_VALUES = ("saddle_numbness", "back_pain_location", '"lower"', "'lower'", "33.0",
                  "45.0", "female", "age_years", "temperature_c")


async def test_full_interviews_at_debug_leave_no_answer_in_the_logs(fake, flow, tmp_path,
                                                                    caplog):
    caplog.set_level(logging.DEBUG)
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook"):
        await emergency_by_buttons(Person(fake, 801))
        await self_care_by_typing(Person(fake, 802))
    text = caplog.text
    assert "update" in text and "handled in" in text, "the bot did log at DEBUG"
    for secret in ANSWER_TEXTS + FINDING_VALUES:
        assert secret not in text, f"{secret!r} reached the logs"


async def test_answers_in_other_languages_stay_out_of_the_logs_too(fake, flow, tmp_path, caplog):
    """Arabic typed with Arabic-Indic digits, then a switch to Russian mid-interview: the
    logs still hold ids, kinds and codes only."""
    caplog.set_level(logging.DEBUG)
    async with Harness(fake, flow, tmp_path / "bot.sqlite3", "webhook"):
        fake.language_codes[803] = "ar"
        p = Person(fake, 803)
        await p.say("/start")
        await p.consent("حسنًا، لنبدأ")
        await p.say("٤٥")
        await p.press("ذكر")
        await p.say("/language")
        await p.press("Русский")
        await p.press("Поясница")
    text = caplog.text
    assert "handled in" in text
    for secret in ("٤٥", "ذكر", "Поясница", "45.0", "male", "lower", "lang_ru", "'ru'"):
        assert secret not in text, f"{secret!r} reached the logs"
