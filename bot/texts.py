"""What the bot itself says, outside any flow, in every language it speaks.

English is here, as the defaults of `BotTexts`; other languages are YAML files
in bot/locales/ with the same keys (README, "Adding a language"). Placeholders
in braces must be kept: {emergency_number}, {retention}, {choice}, {language}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from bot.yamlsource import safe_load

LOCALES = Path(__file__).resolve().parent / "locales"
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
RIGHT_TO_LEFT = frozenset({"ar", "fa", "he", "ur"})


@dataclass(frozen=True, slots=True)
class BotTexts:
    language_name: str = "English"  # the language's own name, on the /language buttons
    help: str = (
        "I ask a few short questions about back pain and fever and tell you how soon to "
        "get help, and why. I am not a doctor.\n\n"
        "/start – begin a new check\n/back – change your last answer\n"
        "/restart – start again\n/language – choose your language\n"
        "/timezone – your time zone, for check-ins\n"
        "/privacy – what I keep about you\n"
        "/forget – erase everything I keep about you\n/help – this message\n\n"
        "If someone is seriously ill or injured right now, call {emergency_number}.")
    privacy: str = (
        "I keep your answers to this check, and the advice I gave, so the conversation "
        "survives a restart of the bot. I keep them for {retention} days after your last "
        "message, then delete them. Nobody else can read them through this bot, except "
        "that, if you agreed, this service's clinicians on duty get an alert when your "
        "answers need care today or now. Send /forget to erase everything now.")
    forget_confirm: str = "Erase everything I keep about you? This cannot be undone."
    forget_yes: str = "Yes, erase it"
    forget_no: str = "No, keep it"
    forgotten: str = "Done: I have erased everything I kept about you. Send /start to begin again."
    kept: str = "OK, nothing was erased."
    stale: str = "That button belongs to an earlier check. Here is where we are now:"
    not_text: str = ("I can only read typed answers and button presses, not stickers, photos, "
                     "voice or files. Please answer the question:")
    too_long: str = "That is longer than I can read. Please answer in a few words."
    edited: str = ("I only read new messages, so your edit did not change anything. "
                   "If an answer was wrong, send /back.")
    finished: str = "This check is finished. Send /start or /restart to begin a new one."
    group_invite: str = ("Worried about back pain or a fever? I can check it with you in a "
                         "private chat: your answers stay between you and me, never in this "
                         "group. I am not a doctor; in an emergency call {emergency_number}.")
    group_button: str = "Start a private check"
    choose_flow: str = "Which check would you like to do?"  # /start, with several flows
    consent: str = (
        "Before we start, please read this.\n\n"
        "• I keep your answers and my advice for {retention} days after your last message, "
        "then delete them. /forget erases them at any time.\n"
        "• If your answers show that you need care today or now, I can alert this service's "
        "clinicians on duty so one of them can contact you. Only they see the alert.\n\n"
        "May I alert them if needed?")
    consent_store_only_text: str = (
        "Before we start, please read this.\n\n"
        "• I keep your answers and my advice for {retention} days after your last message, "
        "then delete them. /forget erases them at any time.")
    consent_share: str = "Yes, and show them my answers"
    consent_contact: str = "Yes, contact me only"
    consent_none: str = "No, don't alert anyone"
    consent_store_only: str = "OK, start"
    consent_saved: str = "Saved: {choice}. You can change this any time with /privacy."
    consent_now: str = "Your choice now: {choice}. To change it, press a button:"
    notified: str = ("A clinician on duty has been told and may contact you. Do not wait for "
                     "them: follow the advice above.")
    button_back: str = "« Back"
    button_restart: str = "Start over"
    expired: str = ("Your last check was left unanswered for more than {hours} hours, so I "
                    "have closed it and its buttons no longer work. Let's start again.")
    checkin_offer: str = ("Back pain with fever can change over hours. Shall I check on you "
                          "later?")
    checkin_6h: str = "In 6 hours"
    checkin_morning: str = "Tomorrow morning"
    checkin_no: str = "No, thanks"
    checkin_set: str = ("I will check on you at {time}. If you get worse before then, do not "
                        "wait for me: follow the advice above.")
    checkin_cancel: str = "Cancel the check-in"
    checkin_cancelled: str = "OK, I will not check on you."
    checkin_none: str = "OK. Send /start any time to check again."
    checkin_missed: str = ("I could not check on you at {time} as planned. If you are not "
                           "better, or are worse, send /start to check again now.")
    nudge: str = "Still there? Your check is not finished. Here is where we were:"
    timezone_now: str = ("Check-in times use the time zone {zone}. To use yours, send it like "
                         "this: /timezone Europe/Madrid")
    timezone_saved: str = "Saved: check-in times now use {zone}."
    timezone_unknown: str = ("I do not know the time zone \"{zone}\". Send it like this: "
                             "/timezone Europe/Madrid")
    language_prompt: str = "Which language shall I use?"
    language_saved: str = "OK: English from now on. Your answers so far are kept."
    cmd_start: str = "Begin a new check"
    cmd_back: str = "Change your last answer"
    cmd_restart: str = "Start again"
    cmd_language: str = "Choose your language"
    cmd_timezone: str = "Your time zone, for check-ins"
    cmd_help: str = "How this works"
    cmd_privacy: str = "What I keep about you"
    cmd_forget: str = "Erase everything I keep about you"
    # staff alerts (in the deployment's language, TRIAGEBOT_DEFAULT_LANGUAGE)
    alert_button: str = "✋ I'm on it"
    alert_title: str = "triage alert"
    alert_when: str = "When:"
    alert_from: str = "from"
    alert_red_flags: str = "Red flags:"
    alert_contact: str = "Contact:"
    alert_person: str = "the person"
    alert_rules: str = "Rules:"
    alert_language: str = "Their language:"
    alert_not_shared: str = "The person did not agree to share their answers."
    alert_taken: str = "Thank you — the others can see you have it."
    alert_already: str = "Already taken by {who}"
    alert_on_it: str = "{who} is on it"
    alert_forgotten: str = ("This person asked to be forgotten: their answers and this "
                            "alert's details have been erased.")
    failed: str = ("Sorry, something went wrong with your last message and I could not "
                   "use it. Please send /start to continue.")


KEYS = tuple(f.name for f in fields(BotTexts))


@dataclass(frozen=True)
class Locale:
    """One language's texts, and what its file lacks (shown in English meanwhile)."""

    code: str
    texts: BotTexts
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def load_texts(folder: Path = LOCALES) -> dict[str, Locale]:
    """English, and every bot/locales/<code>.yaml, checked against English's keys."""
    english = BotTexts()
    out = {"en": Locale("en", english)}
    for path in sorted(folder.glob("*.yaml")):
        data = safe_load(path.read_text(encoding="utf-8")) or {}
        problems = [f"{path.name}: unknown key '{k}'" for k in data if k not in KEYS]
        values = {}
        for key in KEYS:
            value = data.get(key)
            if not isinstance(value, str) or not value.strip():
                continue
            wanted = set(PLACEHOLDER.findall(getattr(english, key)))
            if set(PLACEHOLDER.findall(value)) != wanted:
                problems.append(f"{path.name}: {key}: keep the placeholders {sorted(wanted)}")
                continue
            values[key] = value
        missing = tuple(k for k in KEYS if k not in values)
        out[path.stem] = Locale(path.stem, BotTexts(**values), missing, tuple(problems))
    return out


def is_right_to_left(lang: str) -> bool:
    return lang.split("-")[0] in RIGHT_TO_LEFT
