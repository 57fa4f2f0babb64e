"""The one use case that joins the edges: load -> engine -> commit -> replies to send.

`decide` is pure: given a conversation and what the person did, it returns
the new conversation, the answer-log entries and the Bot API calls to make.
`Conversations.handle` runs it inside one store transaction with the update
id, so the new state and the calls are committed before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bot import deeplink
from bot.engine import Engine
from bot.flow import Level
from bot.session import (
    Ask,
    Back,
    Input,
    LogEntry,
    Outcome,
    Pick,
    PickMany,
    Restart,
    Session,
    Start,
    Typed,
)
from bot.store import Conversation
from bot.telegram import render
from bot.telegram.render import Button, Call


@dataclass(frozen=True, slots=True)
class BotTexts:
    """What the bot itself says, outside any flow (English; see issue on languages)."""

    help: str = (
        "I ask a few short questions about back pain and fever and tell you how soon to "
        "get help, and why. I am not a doctor.\n\n"
        "/start – begin a new check\n/back – change your last answer\n"
        "/restart – start again\n/privacy – what I keep about you\n"
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
    consent: str = (
        "Before we start, please read this.\n\n"
        "• I keep your answers and my advice for {retention} days after your last message, "
        "then delete them. /forget erases them at any time.\n"
        "• If your answers show that you need care today or now, I can alert this service's "
        "clinicians on duty so one of them can contact you. Only they see the alert.\n\n"
        "May I alert them if needed?")
    consent_share: str = "Yes, and show them my answers"
    consent_contact: str = "Yes, contact me only"
    consent_none: str = "No, don't alert anyone"
    consent_store_only: str = "OK, start"
    consent_saved: str = "Saved: {choice}. You can change this any time with /privacy."
    consent_now: str = "Your choice now: {choice}. To change it, press a button:"
    notified: str = ("A clinician on duty has been told and may contact you. Do not wait for "
                     "them: follow the advice above.")
    alert_button: str = "✋ I'm on it"


@dataclass(frozen=True, slots=True)
class Event:
    """What the person did, already taken out of the Telegram update."""

    kind: str  # command | text | button | other | edited
    command: str = ""
    payload: str = ""
    text: str = ""
    button: Button | None = None
    message_id: int | None = None  # the message a button was on
    message_text: str = ""  # that message's text, to show the answer under it
    username: str = ""  # the person's @username, if they have one (for staff alerts)
    name: str = ""  # their first name as Telegram shows it
    at: float = 0.0  # when they sent it (Telegram's timestamp)


@dataclass(frozen=True, slots=True)
class Decision:
    conversation: Conversation
    log: tuple[LogEntry, ...]
    calls: list[Call]
    forget: bool = False
    toast: str = ""  # the short notice for answerCallbackQuery
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # events, alerts


MAX_TYPED = 1000


CONSENTS = ("share", "contact", "none")


@dataclass
class Conversations:
    engine: Engine
    texts: BotTexts = field(default_factory=BotTexts)
    retention_days: float = 30
    staff_chat: int | None = None  # where clinician alerts go
    staff_chats: dict[int, int] = field(default_factory=dict)  # source group -> staff chat
    token: str = ""  # signs deep-link payloads
    username: str = ""  # the bot's, for deep links (known after getMe)
    headings: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        flow = self.engine.flow
        self.headings = {k: flow.text(k, "en") for k in ("why", "because", "links")}

    def staff_for(self, source: int | None) -> int | None:
        return self.staff_chats.get(source, self.staff_chat) if source else self.staff_chat

    def invitation(self, chat_id: int) -> list[Call]:
        """The message, with a deep-link button, that sends group members to a private chat."""
        link = deeplink.url(self.username, deeplink.make(chat_id, self.token))
        markup = {"inline_keyboard": [[{"text": self.texts.group_button, "url": link}]]}
        return render.send(chat_id, render.esc(self.say(self.texts.group_invite)), markup)

    def _consent_prompt(self, conv: Conversation, intro: str = "") -> list[Call]:
        chat = conv.key.chat_id
        if self.staff_chat is None and not self.staff_chats:  # nobody to alert: storage only
            options = [(self.texts.consent_store_only, "none")]
            text = self.say(self.texts.consent.split("• If your answers")[0]).rstrip()
        else:
            options = [(self.texts.consent_share, "share"), (self.texts.consent_contact,
                                                              "contact"),
                       (self.texts.consent_none, "none")]
            text = self.say(self.texts.consent)
        markup = render.keyboard([[(label, render.encode(conv.interview, "_", -1,
                                                         "consent_" + value))]
                                  for label, value in options])
        return render.send(chat, render.esc(intro + text), markup)

    def _choice(self, value: str) -> str:
        return {"share": self.texts.consent_share, "contact": self.texts.consent_contact,
                "none": self.texts.consent_none}.get(value, value)

    def say(self, text: str) -> str:
        return text.replace("{emergency_number}", self.engine.emergency_number).replace(
            "{retention}", f"{self.retention_days:g}")

    # ------------------------------------------------------------------ decide

    def decide(self, conv: Conversation, event: Event) -> Decision:
        chat = conv.key.chat_id
        session = conv.session
        if event.name or event.username:  # how staff can reach them, if an alert is needed
            person = {"name": event.name, "username": event.username, "at": event.at}
            conv = replace(conv, extra={**conv.extra, "person": person})
        if event.kind == "command":
            return self._command(conv, event)
        if event.kind == "group":
            return Decision(conv, (), self.invitation(chat))
        if event.kind == "edited":
            return Decision(conv, (), render.send(chat, render.esc(self.say(self.texts.edited))))
        if session is None and event.kind != "button":  # anything first begins the check
            return self._begin(conv)
        if event.kind == "button":
            if event.button is None:  # not one of our buttons (or its data was lost)
                decision = self._remind(conv, self.texts.stale)
                return replace(decision, toast=self.texts.stale)
            return self._button(conv, event)
        if event.kind == "other" or (event.kind == "text" and len(event.text) > MAX_TYPED):
            notice = self.texts.not_text if event.kind == "other" else self.texts.too_long
            return self._remind(conv, notice)
        return self._run(conv, Typed(event.text))

    def _begin(self, conv: Conversation, payload: str = "") -> Decision:
        """A new check: remember the group that sent the person; ask consent once."""
        source = deeplink.read(payload, self.token) if payload else None
        if source is not None:
            conv = replace(conv, extra={**conv.extra, "source": source})
        if "consent" not in conv.extra:
            return Decision(conv, (), self._consent_prompt(conv))
        return self._run(conv, Start(), new_interview=True)

    def _command(self, conv: Conversation, event: Event) -> Decision:
        chat, name = conv.key.chat_id, event.command
        if name == "start":
            return self._begin(conv, event.payload)
        if name == "restart":
            if "consent" not in conv.extra:
                return self._begin(conv)
            return self._run(conv, Restart(), new_interview=True)
        if name == "back" and conv.session is not None:
            return self._run(conv, Back())
        if name == "privacy":
            calls = render.send(chat, render.esc(self.say(self.texts.privacy)))
            if "consent" in conv.extra:
                now = self.say(self.texts.consent_now).replace(
                    "{choice}", self._choice(conv.extra["consent"]))
                calls += self._consent_prompt(conv, intro=now + "\n\n")
            return Decision(conv, (), calls)
        if name == "forget":
            markup = render.keyboard([[
                (self.texts.forget_yes, render.encode(conv.interview, "_", -1, "forget_yes")),
                (self.texts.forget_no, render.encode(conv.interview, "_", -1, "forget_no"))]])
            return Decision(conv, (), render.send(chat, render.esc(self.texts.forget_confirm),
                                                  markup))
        return Decision(conv, (), render.send(chat, render.esc(self.say(self.texts.help))))

    def _button(self, conv: Conversation, event: Event) -> Decision:
        button, session = event.button, conv.session
        assert button is not None
        chat = conv.key.chat_id
        if button.node == "_" and button.option.startswith("consent_"):
            value = button.option.removeprefix("consent_")
            if value not in CONSENTS:
                return self._remind(conv, self.texts.stale) if session else Decision(conv, (), [])
            had = "consent" in conv.extra
            conv = replace(conv, extra={**conv.extra, "consent": value})
            calls = [render.answered(chat, event.message_id, event.message_text,
                                     self._choice(value))] if event.message_id else []
            saved = self.say(self.texts.consent_saved).replace("{choice}", self._choice(value))
            calls += render.send(chat, render.esc(saved))
            if had and session is not None:
                return Decision(conv, (), calls)
            decision = self._run(conv, Start(), new_interview=True)
            return replace(decision, calls=calls + decision.calls)
        if button.node == "_" and button.option in ("forget_yes", "forget_no"):
            calls = [render.drop_keyboard(chat, event.message_id)] if event.message_id else []
            if button.option == "forget_yes":
                return Decision(conv, (), calls, forget=True)
            return Decision(conv, (), calls + render.send(chat, render.esc(self.texts.kept)))
        if session is None:  # a button from before /forget or from a purged conversation
            return self._begin(conv)
        if button.interview != conv.interview:
            calls = [render.drop_keyboard(chat, event.message_id)] if event.message_id else []
            decision = self._remind(conv, self.texts.stale)
            return replace(decision, calls=calls + decision.calls, toast=self.texts.stale)
        if button.node == "_":
            inp: Input = Back() if button.option == "back" else Restart()
            return self._run(conv, inp, new_interview=button.option == "restart")
        ask = self.engine.current(session)
        if ask is not None and button.option.startswith("t.") and ask.multi and \
                (button.node, button.item) == (ask.node, ask.item):
            item = button.option[2:]
            draft = tuple(i for i in conv.draft if i != item) if item in conv.draft else \
                (*conv.draft, item)
            conv = replace(conv, draft=tuple(i for i in (c.id for c in ask.options) if i in draft))
            markup = render.question_markup(ask, conv.interview, conv.draft)
            calls: list[Call] = []
            if event.message_id:
                calls.append(("editMessageReplyMarkup", {
                    "chat_id": chat, "message_id": event.message_id, "reply_markup": markup}))
            return Decision(conv, (), calls)
        if button.option == "=done":
            inp = PickMany(button.node, conv.draft)
        else:
            inp = Pick(button.node, button.option, button.item)
        return self._run(conv, inp, pressed=event, shown=ask)

    def _remind(self, conv: Conversation, notice: str) -> Decision:
        """A notice, then the current question again (or that the check is finished)."""
        assert conv.session is not None
        chat = conv.key.chat_id
        ask = self.engine.current(conv.session)
        if ask is None:
            return Decision(conv, (), render.send(chat, render.esc(self.texts.finished)))
        calls = render.send(chat, render.esc(notice))
        calls += render.replies(chat, conv.interview, (ask,), self.headings, conv.draft)
        if conv.question_message:
            calls.insert(0, render.drop_keyboard(chat, conv.question_message))
        return Decision(conv, (), calls)

    def _run(self, conv: Conversation, inp: Input, new_interview: bool = False,
             pressed: Event | None = None, shown: Ask | None = None) -> Decision:
        """Feed the engine; turn its replies into calls; keep the chat a readable record."""
        chat = conv.key.chat_id
        old: Session | None = conv.session
        if old is None or isinstance(inp, Start):
            step = self.engine.start()
        else:
            step = self.engine.handle(old, inp)
        new = step.session
        interview = conv.interview + 1 if new_interview else conv.interview
        moved = any(isinstance(r, Ask | Outcome) for r in step.replies)
        calls: list[Call] = []
        # the question just answered (its id may not be stored yet if the press came fast)
        target = conv.question_message or (pressed.message_id if pressed else None)
        if moved and target:
            if pressed and pressed.message_id == target and shown is not None \
                    and _accepted(old, new):
                calls.append(render.answered(chat, target, pressed.message_text,
                                             _label(shown, pressed.button, conv.draft)))
            else:
                calls.append(render.drop_keyboard(chat, target))
        draft = () if moved else conv.draft
        calls += render.replies(chat, interview, step.replies, self.headings, draft)
        log = new.log[len(old.log):] if old and new.log[:len(old.log)] == old.log else new.log
        conv = replace(conv, session=new, interview=interview, draft=draft,
                       question_message=None if moved else conv.question_message)
        records: list[tuple[str, dict[str, Any]]] = []
        source = conv.extra.get("source")
        if new_interview:
            records.append(("event", {"kind": "started", "source": source}))
        outcome = next((r for r in step.replies if isinstance(r, Outcome)), None)
        if outcome is not None:
            records.append(("event", {"kind": "finished", "source": source,
                                      "level": outcome.level.id, "rules": outcome.rules,
                                      "questions": new.questions_asked}))
            alert = self._alert(conv, outcome)
            done = conv.extra.get("alerted", {})
            repeat = done.get("interview") == interview and \
                Level.parse(done.get("level", "self_care")) >= outcome.level
            if alert and not repeat:  # going back and finishing again alerts only if higher
                records.append(("alert", alert))
                conv = replace(conv, extra={**conv.extra, "alerted": {
                    "interview": interview, "level": outcome.level.id}})
        return Decision(conv, log, calls, records=records)

    def _alert(self, conv: Conversation, outcome: Outcome) -> dict | None:
        """A staff alert for an urgent or emergency outcome, if the person agreed to contact."""
        consent = conv.extra.get("consent")
        staff = self.staff_for(conv.extra.get("source"))
        if outcome.level < Level.URGENT or consent not in ("share", "contact") or staff is None:
            return None
        person = conv.extra.get("person", {})
        return {"staff_chat": staff, "level": outcome.level.id, "button": self.texts.alert_button,
                "text": render.alert_text(outcome, conv.key.user_id, person.get("name", ""),
                                          person.get("username", ""), person.get("at", 0.0),
                                          f"group {conv.extra['source']}"
                                          if conv.extra.get("source") else "",
                                          share=consent == "share", headings=self.headings)}


def _accepted(old: Session | None, new: Session) -> bool:
    return old is not None and (len(new.marks) > len(old.marks) or
                                (new.status == "done" and old.status != "done"))


def _label(ask: Ask, button: Button | None, ticked: tuple[str, ...]) -> str:
    if button is None:
        return ""
    choices = {c.id: c.label for c in (*ask.options, *ask.extra)}
    if button.option == "=done":
        return "; ".join(choices.get(i, i) for i in ticked)
    return choices.get(button.option, button.option)

