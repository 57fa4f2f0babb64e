"""The one use case that joins the edges: load -> engine -> commit -> replies to send.

`decide` is pure: given a conversation and what the person did, it returns
the new conversation, the answer-log entries and the Bot API calls to make.
`Conversations.handle` runs it inside one store transaction with the update
id, so the new state and the calls are committed before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot import deeplink
from bot.engine import Engine, handed_over
from bot.flow import Level
from bot.session import (
    Ask,
    Back,
    Escalate,
    Handoff,
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
from bot.store import Conversation, Scheduled
from bot.telegram import render
from bot.telegram.render import Button, Call, Priority
from bot.texts import BotTexts, Locale, is_right_to_left, load_texts


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
    language: str = ""  # their Telegram app's language (IETF tag), a first guess at ours
    name: str = ""  # their first name as Telegram shows it
    at: float = 0.0  # when they sent it (Telegram's timestamp)
    private: bool = False  # in a private chat whose id is the sender's (bot.access)


@dataclass(frozen=True, slots=True)
class Decision:
    conversation: Conversation
    log: tuple[LogEntry, ...]
    calls: list[Call]
    forget: bool = False
    toast: str = ""  # the short notice for answerCallbackQuery
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # events, alerts
    priority: Priority = Priority.REPLY  # how soon its calls must go (bot.telegram.delivery)


MAX_TYPED = 1000


CONSENTS = ("share", "contact", "none")


@dataclass
class Conversations:
    engine: Engine  # the default flow's (one flow served: the only one)
    retention_days: float = 30
    staff_chat: int | None = None  # where clinician alerts go
    staff_chats: dict[int, int] = field(default_factory=dict)  # source group -> staff chat
    token: str = ""  # signs deep-link payloads
    username: str = ""  # the bot's, for deep links (known after getMe)
    default_language: str = "en"  # for unknown Telegram languages, and for staff alerts
    expiry_hours: float = 24.0  # an interview left unanswered this long is closed
    checkins: bool = False  # offer a check-in after a non-emergency outcome (settings: on)
    timezone: str = "UTC"  # for "tomorrow morning"
    checkin_stale_hours: float = 12.0  # a check-in this late (the bot was down) is dropped
    nudge_hours: float = 0.0  # remind once after this long idle mid-interview (0: never)
    locales: dict[str, Locale] = field(default_factory=load_texts)
    # older versions of the flows, kept so that interviews begun on them finish on them
    archive: dict[tuple[str, int], Engine] = field(default_factory=dict)
    # every flow served, by id, in the order /start offers them (the default among them)
    engines: dict[str, Engine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine.flow.id not in self.engines:
            self.engines = {self.engine.flow.id: self.engine, **self.engines}
        # a language is offered when both an interview and the bot's own texts have it
        spoken = dict.fromkeys(lang for e in self.engines.values() for lang in e.flow.languages)
        self.languages = tuple(lang for lang in spoken if lang in self.locales)
        if self.default_language not in self.languages:
            self.default_language = "en"

    def engine_for(self, session: Session | None) -> Engine:
        """The engine of the flow a session runs, at the version it began on if that is
        kept and the current one does not continue it; else the current one (and for a
        flow no longer served, the default flow's, which starts it afresh)."""
        if session is None:
            return self.engine
        current = self.engines.get(session.flow_id, self.engine)
        flow = current.flow
        version = (session.flow_id, session.flow_version)
        if version != (flow.id, flow.version) and session.flow_version not in flow.continues:
            return self.archive.get(version, current)
        return current

    def _engine_of(self, conv: Conversation) -> Engine:
        return self.engine_for(conv.session)

    @property
    def texts(self) -> BotTexts:
        """The deployment's own language (staff alerts, group posts)."""
        return self.locales[self.default_language].texts

    def texts_in(self, lang: str) -> BotTexts:
        return self.locales[lang if lang in self.locales else "en"].texts

    def language_of(self, conv: Conversation) -> str:
        lang = conv.extra.get("lang")
        return lang if lang in self.languages else self.default_language

    def pick_language(self, telegram_code: str) -> str:
        """Our language for Telegram's language_code ('es', 'pt-br', 'ar'), else the default."""
        code = (telegram_code or "").lower().replace("_", "-")
        for candidate in (code, code.split("-")[0]):
            if candidate in self.languages:
                return candidate
        return self.default_language

    def labels(self, lang: str, engine: Engine | None = None) -> render.Labels:
        """The bot's own buttons under each question, in `lang`."""
        tx = self.texts_in(lang)
        return render.Labels(back=tx.button_back, restart=tx.button_restart,
                             done=(engine or self.engine).flow.text("button_done", lang) + " ✓")

    def headings(self, lang: str, engine: Engine | None = None) -> dict[str, str]:
        flow = (engine or self.engine).flow
        return {k: flow.text(k, lang) for k in ("why", "because", "links")}

    def staff_for(self, source: int | None) -> int | None:
        return self.staff_chats.get(source, self.staff_chat) if source else self.staff_chat

    def invitation(self, chat_id: int, lang: str | None = None, flow: str = "") -> list[Call]:
        """The message, with a deep-link button, that sends group members to a private
        chat: to the /start menu, or straight into `flow` (its title on top)."""
        lang = lang if lang in self.languages else self.default_language
        tx = self.texts_in(lang)
        link = deeplink.url(self.username, deeplink.make(chat_id, self.token, flow))
        markup = {"inline_keyboard": [[{"text": tx.group_button, "url": link}]]}
        text = render.esc(self._signed(self.say(tx.group_invite, lang), lang))
        if flow:
            text = f"<b>{render.esc(self.engines[flow].flow.title.get(lang))}</b>\n\n" + text
        calls = render.send(chat_id, text, markup)
        return render.right_to_left(calls) if is_right_to_left(lang) else calls

    def commands(self, lang: str) -> list[tuple[str, str]]:
        """The command menu (setMyCommands) in one language."""
        tx = self.texts_in(lang)
        return [("start", tx.cmd_start), ("back", tx.cmd_back), ("restart", tx.cmd_restart),
                ("language", tx.cmd_language), ("timezone", tx.cmd_timezone),
                ("help", tx.cmd_help),
                ("privacy", tx.cmd_privacy), ("forget", tx.cmd_forget)]

    def _consent_prompt(self, conv: Conversation, intro: str = "") -> list[Call]:
        chat, lang = conv.key.chat_id, self.language_of(conv)
        tx = self.texts_in(lang)
        if self.staff_chat is None and not self.staff_chats:  # nobody to alert: storage only
            options = [(tx.consent_store_only, "none")]
            text = self.say(tx.consent_store_only_text, lang)
        else:
            options = [(tx.consent_share, "share"), (tx.consent_contact, "contact"),
                       (tx.consent_none, "none")]
            text = self.say(tx.consent, lang)
        markup = render.keyboard([[(label, render.encode(conv.interview, "_", -1,
                                                         "consent_" + value))]
                                  for label, value in options])
        return render.send(chat, render.esc(intro + text), markup)

    def _menu(self, conv: Conversation) -> list[Call]:
        """Several flows: which check to do, each with its title and one line."""
        chat, lang = conv.key.chat_id, self.language_of(conv)
        lines = [render.esc(self.texts_in(lang).choose_flow)]
        rows = []
        for fid, engine in self.engines.items():
            flow = engine.flow
            title = flow.title.get(lang)
            about = f" — {render.esc(flow.description.get(lang))}" if flow.description else ""
            lines.append(f"• <b>{render.esc(title)}</b>{about}")
            rows.append([(title, render.encode(conv.interview, "_", -1, "flow_" + fid))])
        return render.send(chat, "\n".join(lines), render.keyboard(rows))

    def _language_prompt(self, conv: Conversation) -> list[Call]:
        tx = self.texts_in(self.language_of(conv))
        markup = render.keyboard([[(self.texts_in(lang).language_name,
                                    render.encode(conv.interview, "_", -1, "lang_" + lang))]
                                  for lang in self.languages])
        return render.send(conv.key.chat_id, render.esc(tx.language_prompt), markup)

    def _choice(self, value: str, lang: str) -> str:
        tx = self.texts_in(lang)
        return {"share": tx.consent_share, "contact": tx.consent_contact,
                "none": tx.consent_none}.get(value, value)

    def _signed(self, text: str, lang: str) -> str:
        """`text`, then who offers the service, if local.yaml names it (the flow's
        `offered_by` place)."""
        offered = self.engine.place("offered_by", lang)
        return f"{text}\n\n{offered}" if offered else text

    def say(self, text: str, lang: str) -> str:
        return text.replace("{emergency_number}", self.engine.number(lang)).replace(
            "{retention}", f"{self.retention_days:g}")

    # ------------------------------------------------------------------ decide

    def decide(self, conv: Conversation, event: Event, now: float = 0.0) -> Decision:
        """What to do about one event at `now` (Unix time; 0: no clock, nothing expires);
        every text in the person's language."""
        if "lang" not in conv.extra and event.kind != "group":  # first contact: their app's
            lang = conv.session.language if conv.session is not None else \
                self.pick_language(event.language)  # (a session from before languages: its)
            conv = replace(conv, extra={**conv.extra, "lang": lang})
        expired = self._expired(conv, now) and event.kind not in ("group", "edited")
        closed = conv.session.flow_id if expired and conv.session else None
        if expired:  # closed: whatever they sent starts a new check, after a notice
            conv = replace(conv, session=None)
        if now and event.kind != "group":
            conv = replace(conv, extra={**conv.extra, "active_at": now})
        decision = self._decide(conv, event, now)
        after = decision.conversation.session
        if self.nudge_hours and now and after is not None and after.status != "done":
            decision = replace(decision, records=[*decision.records, ("schedule", {
                "kind": "nudge", "due_at": now + self.nudge_hours * 3600,
                "interview": decision.conversation.interview})])  # replaces the pending one
        if expired:
            lang = self.language_of(conv)
            notice = self.texts_in(lang).expired.replace("{hours}", f"{self.expiry_hours:g}")
            decision = replace(decision, calls=render.send(conv.key.chat_id, render.esc(notice))
                               + decision.calls,
                               records=[("event", {"kind": "expired", "flow": closed,
                                                   "source": conv.extra.get("source")}),
                                        *decision.records])
        return self._directed(decision)

    def _directed(self, decision: Decision) -> Decision:
        """The one place that marks a right-to-left person's messages (Arabic), and
        the calls' priority when it is not a plain reply; notices are folded into the
        message that follows them (render.fold)."""
        decision = replace(decision, calls=render.fold(decision.calls))
        if decision.priority != Priority.REPLY:
            decision = replace(decision, calls=render.prioritised(decision.calls,
                                                                  decision.priority))
        if is_right_to_left(self.language_of(decision.conversation)):
            return replace(decision, calls=render.right_to_left(decision.calls))
        return decision

    def _expired(self, conv: Conversation, now: float) -> bool:
        """An unfinished interview untouched for longer than the expiry."""
        active_at = conv.extra.get("active_at")
        return bool(now and self.expiry_hours and conv.session is not None
                    and conv.session.status != "done" and isinstance(active_at, int | float)
                    and now - active_at > self.expiry_hours * 3600)

    def _decide(self, conv: Conversation, event: Event, now: float = 0.0) -> Decision:
        chat = conv.key.chat_id
        session = conv.session
        lang = self.language_of(conv)
        tx = self.texts_in(lang)
        if event.name or event.username:  # how staff can reach them, if an alert is needed
            person = {"name": event.name, "username": event.username, "at": event.at}
            conv = replace(conv, extra={**conv.extra, "person": person})
        if event.kind == "command":
            return self._command(conv, event)
        if event.kind == "group":
            return Decision(conv, (), self.invitation(chat, self.pick_language(event.language)),
                            priority=Priority.BULK)
        if event.kind == "edited":
            return Decision(conv, (), render.send(chat, render.esc(self.say(tx.edited, lang))))
        if session is None and event.kind != "button":  # anything first begins the check
            return self._begin(conv)
        if event.kind == "button":
            if event.button is None:  # not one of our buttons (or its data was lost)
                decision = self._remind(conv, tx.stale)
                return replace(decision, toast=tx.stale)
            return self._button(conv, event, now)
        if event.kind == "other" or (event.kind == "text" and len(event.text) > MAX_TYPED):
            notice = tx.not_text if event.kind == "other" else tx.too_long
            return self._remind(conv, notice)
        return self._run(conv, Typed(event.text))

    def _begin(self, conv: Conversation, payload: str = "") -> Decision:
        """A new check: remember the group that sent the person, and the flow a link
        names; ask consent once; then open that flow (or offer them all)."""
        source, wanted = deeplink.read_link(payload, self.token) if payload else (None, None)
        if source is not None:
            conv = replace(conv, extra={**conv.extra, "source": source})
        if wanted in self.engines:
            conv = replace(conv, extra={**conv.extra, "wants": wanted})
        if "consent" not in conv.extra:  # a new person: their first contact
            return Decision(conv, (), self._consent_prompt(conv), priority=Priority.FIRST)
        return self._open(conv)

    def _open(self, conv: Conversation, flow: str | None = None) -> Decision:
        """Start the flow chosen (a menu button, a link), or the only one; with several
        and none chosen, offer them (/start's menu)."""
        wanted = flow or conv.extra.get("wants")
        conv = replace(conv, extra={k: v for k, v in conv.extra.items() if k != "wants"})
        if wanted not in self.engines:
            if len(self.engines) > 1:
                return Decision(conv, (), self._menu(conv))
            wanted = self.engine.flow.id
        return self._run(conv, Start(), new_interview=True, flow=wanted)

    def _command(self, conv: Conversation, event: Event) -> Decision:
        chat, name = conv.key.chat_id, event.command
        lang = self.language_of(conv)
        tx = self.texts_in(lang)
        if name == "language":
            return Decision(conv, (), self._language_prompt(conv))
        if name == "timezone":
            return self._set_timezone(conv, event.payload.strip())
        if name == "start":
            return self._begin(conv, event.payload)
        if name == "restart":
            if "consent" not in conv.extra:
                return self._begin(conv)
            return self._run(conv, Restart(), new_interview=True)
        if name == "back" and conv.session is not None:
            return self._run(conv, Back())
        if name == "privacy":
            calls = render.send(chat, render.esc(self.say(tx.privacy, lang)))
            if "consent" in conv.extra:
                now = self.say(tx.consent_now, lang).replace(
                    "{choice}", self._choice(conv.extra["consent"], lang))
                calls += self._consent_prompt(conv, intro=now + "\n\n")
            return Decision(conv, (), calls)
        if name == "forget":
            markup = render.keyboard([[
                (tx.forget_yes, render.encode(conv.interview, "_", -1, "forget_yes")),
                (tx.forget_no, render.encode(conv.interview, "_", -1, "forget_no"))]])
            return Decision(conv, (), render.send(chat, render.esc(tx.forget_confirm), markup))
        return Decision(conv, (), render.send(chat, render.esc(self._signed(
            self.say(tx.help, lang), lang))))

    def _button(self, conv: Conversation, event: Event, now: float = 0.0) -> Decision:
        button, session = event.button, conv.session
        assert button is not None
        chat, lang = conv.key.chat_id, self.language_of(conv)
        tx = self.texts_in(lang)
        if button.node == "_" and button.option.startswith("lang_"):
            return self._switch_language(conv, event, button.option.removeprefix("lang_"))
        if button.node == "_" and button.option.startswith("checkin_"):
            return self._checkin_choice(conv, event, button.option, now)
        if button.node == "_" and button.option.startswith("fu_"):
            return self._followup_answer(conv, event, button)
        if button.node == "_" and button.option.startswith("consent_"):
            value = button.option.removeprefix("consent_")
            if value not in CONSENTS:
                return self._remind(conv, tx.stale) if session else Decision(conv, (), [])
            had = "consent" in conv.extra
            conv = replace(conv, extra={**conv.extra, "consent": value})
            calls = [render.answered(chat, event.message_id, event.message_text,
                                     self._choice(value, lang))] if event.message_id else []
            saved = self.say(tx.consent_saved, lang).replace("{choice}",
                                                             self._choice(value, lang))
            calls += render.send(chat, render.esc(saved))
            if had and session is not None:
                return Decision(conv, (), calls)
            decision = self._open(conv)
            if event.message_id:  # first contact stays one message: the prompt becomes
                # the first question (or the menu), the consent and the choice kept on top
                merged = render.into(event.message_id, event.message_text,
                                     render.fold(render.send(chat, render.esc(saved))
                                                 + decision.calls))
                if merged is not None:
                    return replace(decision, calls=merged)
            return replace(decision, calls=calls + decision.calls)
        if button.node == "_" and button.option.startswith("flow_"):
            return self._chosen(conv, event, button.option.removeprefix("flow_"))
        if button.node == "_" and button.option in ("forget_yes", "forget_no"):
            calls = [render.drop_keyboard(chat, event.message_id)] if event.message_id else []
            if button.option == "forget_yes":  # erased in this update's own commit
                done = calls + render.send(chat, render.esc(tx.forgotten))
                if is_right_to_left(lang):
                    done = render.right_to_left(done)
                return Decision(conv, (), [], forget=True, records=[("forget", {
                    "calls": done, "alert_note": render.esc(self.texts.alert_forgotten)})])
            return Decision(conv, (), calls + render.send(chat, render.esc(tx.kept)))
        if session is None:  # a button from before /forget or from a purged conversation
            return self._begin(conv)
        if button.interview != conv.interview:
            calls = [render.drop_keyboard(chat, event.message_id)] if event.message_id else []
            decision = self._remind(conv, tx.stale)
            return replace(decision, calls=calls + decision.calls, toast=tx.stale)
        if button.node == "_":
            inp: Input = Back() if button.option == "back" else Restart()
            return self._run(conv, inp, new_interview=button.option == "restart")
        ask = self.engine_for(session).current(session)
        if ask is not None and button.option.startswith("t.") and ask.multi and \
                (button.node, button.item) == (ask.node, ask.item):
            item = button.option[2:]
            draft = tuple(i for i in conv.draft if i != item) if item in conv.draft else \
                (*conv.draft, item)
            conv = replace(conv, draft=tuple(i for i in (c.id for c in ask.options) if i in draft))
            markup = render.question_markup(ask, conv.interview, conv.draft,
                                            self.labels(lang, self.engine_for(session)))
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

    def _chosen(self, conv: Conversation, event: Event, flow: str) -> Decision:
        """A flow picked from the /start menu: only a served flow, only after consent,
        only from the menu of the current interview."""
        button = event.button
        assert button is not None
        if "consent" not in conv.extra:  # (a forged press cannot skip the consent)
            return self._begin(conv)
        if flow not in self.engines or button.interview != conv.interview:
            return replace(self._remind(conv, self.texts_in(self.language_of(conv)).stale),
                           toast=self.texts_in(self.language_of(conv)).stale)
        title = self.engines[flow].flow.title.get(self.language_of(conv))
        calls = [render.answered(conv.key.chat_id, event.message_id, event.message_text,
                                 title)] if event.message_id else []
        decision = self._open(conv, flow)
        return replace(decision, calls=calls + decision.calls)

    # ------------------------------------------------------------------ check-ins

    def _checkin_offer(self, conv: Conversation, interview: int) -> list[Call]:
        tx = self.texts_in(self.language_of(conv))
        markup = render.keyboard([[(label, render.encode(interview, "_", -1, option))]
                                  for label, option in ((tx.checkin_6h, "checkin_6h"),
                                                        (tx.checkin_morning, "checkin_morning"),
                                                        (tx.checkin_no, "checkin_no"))])
        return render.send(conv.key.chat_id, render.esc(tx.checkin_offer), markup)

    def zone_of(self, conv: Conversation | None) -> str:
        """The person's own time zone if they set one (/timezone), else the deployment's."""
        zone = conv.extra.get("tz") if conv is not None else None
        return zone if isinstance(zone, str) and _known_zone(zone) else self.timezone

    def _set_timezone(self, conv: Conversation, zone: str) -> Decision:
        tx, chat = self.texts_in(self.language_of(conv)), conv.key.chat_id
        if not zone:
            text = tx.timezone_now.replace("{zone}", self.zone_of(conv))
        elif not _known_zone(zone):
            text = tx.timezone_unknown.replace("{zone}", zone[:40])
        else:
            conv = replace(conv, extra={**conv.extra, "tz": zone})
            text = tx.timezone_saved.replace("{zone}", zone)
        return Decision(conv, (), render.send(chat, render.esc(text)))

    def checkin_time(self, option: str, now: float, zone_name: str | None = None) -> float:
        """When a check-in chosen at `now` falls due: in 6 hours, or the first 09:00 in the
        person's (else the deployment's) time zone at least 6 hours away ("tomorrow
        morning", even at 1 a.m.)."""
        if option == "checkin_6h":
            return now + 6 * 3600
        zone = ZoneInfo(zone_name or self.timezone)
        earliest = datetime.fromtimestamp(now + 6 * 3600, zone)
        morning = earliest.replace(hour=9, minute=0, second=0, microsecond=0)
        if morning < earliest:
            morning += timedelta(days=1)
        return morning.timestamp()

    def local_time(self, when: float, zone_name: str | None = None) -> str:
        name = zone_name or self.timezone
        return datetime.fromtimestamp(when, ZoneInfo(name)).strftime("%Y-%m-%d %H:%M ") + name

    def _checkin_choice(self, conv: Conversation, event: Event, option: str,
                        now: float) -> Decision:
        """The person chose when (or whether) to be checked on, or cancelled it."""
        chat, lang = conv.key.chat_id, self.language_of(conv)
        tx = self.texts_in(lang)
        button = event.button
        assert button is not None
        labels = {"checkin_6h": tx.checkin_6h, "checkin_morning": tx.checkin_morning,
                  "checkin_no": tx.checkin_no, "checkin_cancel": tx.checkin_cancel}
        calls = [render.answered(chat, event.message_id, event.message_text,
                                 labels.get(option, option))] if event.message_id else []
        if option == "checkin_cancel":
            return Decision(conv, (), calls + render.send(chat, render.esc(tx.checkin_cancelled)),
                            records=[("unschedule", {"kind": "checkin"})])
        if option == "checkin_no" or not now or button.interview != conv.interview:
            return Decision(conv, (), calls + render.send(chat, render.esc(tx.checkin_none)))
        zone = self.zone_of(conv)
        due = self.checkin_time(option, now, zone)
        markup = render.keyboard([[(tx.checkin_cancel,
                                    render.encode(conv.interview, "_", -1, "checkin_cancel"))]])
        text = tx.checkin_set.replace("{time}", self.local_time(due, zone))
        return Decision(conv, (), calls + render.send(chat, render.esc(text), markup),
                        records=[("schedule", {"kind": "checkin", "due_at": due,
                                               "interview": conv.interview})])

    def due(self, conv: Conversation, item: Scheduled, now: float) -> Decision:
        """A scheduled check-in has come: ask better, same or worse; or, if the person
        has started another check meanwhile, skip it; or, if it is too late to be useful
        (the bot was down), say so. A reminder repeats the current question. Each way
        marks it done, once."""
        return self._directed(replace(self._due(conv, item, now), priority=Priority.BULK))

    def _due(self, conv: Conversation, item: Scheduled, now: float) -> Decision:
        chat, lang = conv.key.chat_id, self.language_of(conv)
        tx = self.texts_in(lang)
        done = ("scheduled_done", {"id": item.id, "status": "sent"})
        skipped = Decision(conv, (), [], records=[("scheduled_done", {"id": item.id,
                                                                       "status": "skipped"})])
        flow = self._engine_of(conv).flow
        session = conv.session
        if item.kind == "nudge":  # still mid-interview and quiet since: remind once
            idle = now - conv.extra.get("active_at", now) >= self.nudge_hours * 3600 * 0.99
            if session is None or session.status == "done" or \
                    conv.interview != item.interview or not idle or conv.blocked:
                return skipped
            return replace(self._remind(conv, tx.nudge), records=[done])
        moved_on = session is None or conv.interview != item.interview or \
            session.status != "done" or flow.followup is None
        if moved_on or conv.blocked:
            return skipped
        if self.checkin_stale_hours and now - item.due_at > self.checkin_stale_hours * 3600:
            text = tx.checkin_missed.replace("{time}", self.local_time(item.due_at,
                                                                       self.zone_of(conv)))
            return Decision(conv, (), render.send(chat, render.esc(text)),
                            records=[("scheduled_done", {"id": item.id, "status": "dropped"})])
        markup = render.keyboard([[(flow.text(key, lang), render.encode(
            conv.interview, "_", -1, key.replace("followup_", "fu_")))]
            for key in ("followup_better", "followup_same", "followup_worse")])
        calls = render.send(chat, render.esc(flow.text("followup_question", lang)), markup)
        return Decision(conv, (), calls, records=[done, ("event", {
            "kind": "checkin", "source": conv.extra.get("source"), "flow": flow.id})])

    def _followup_answer(self, conv: Conversation, event: Event, button: Button) -> Decision:
        """Better or the same: the red-flag questions again; worse: the whole interview."""
        chat, lang = conv.key.chat_id, self.language_of(conv)
        flow = self._engine_of(conv).flow
        session = conv.session
        if session is None or button.interview != conv.interview or session.status != "done":
            return self._remind(conv, self.texts_in(lang).stale) if session else \
                self._begin(conv)
        option = button.option.replace("fu_", "followup_")
        calls = [render.answered(chat, event.message_id, event.message_text,
                                 flow.text(option, lang))] if event.message_id else []
        if option == "followup_worse":
            decision = self._run(conv, Start(), new_interview=True, flow=session.flow_id)
            notice = render.send(chat, render.esc(flow.text("followup_recheck", lang)))
        else:
            decision = self._run(conv, Start(), new_interview=True, followup=True)
            notice = []
        return replace(decision, calls=calls + notice + decision.calls)

    def _switch_language(self, conv: Conversation, event: Event, lang: str) -> Decision:
        """Speak `lang` from now on; mid-interview, keep every answer and ask the current
        question again in it."""
        chat = conv.key.chat_id
        if lang not in self.languages:
            return Decision(conv, (), [])
        conv = replace(conv, extra={**conv.extra, "lang": lang})
        tx = self.texts_in(lang)
        calls = [render.answered(chat, event.message_id, event.message_text,
                                 tx.language_name)] if event.message_id else []
        if conv.session is None:
            return Decision(conv, (), calls + render.send(chat, render.esc(tx.language_saved)))
        conv = replace(conv, session=replace(conv.session, language=lang))
        decision = self._remind(conv, tx.language_saved)
        return replace(decision, calls=calls + decision.calls)

    def _remind(self, conv: Conversation, notice: str) -> Decision:
        """A notice, then the current question again (or that the check is finished);
        with no check yet, the notice and the start of one."""
        chat, lang = conv.key.chat_id, self.language_of(conv)
        if conv.session is None:
            begun = self._begin(conv)
            return replace(begun, calls=render.send(chat, render.esc(notice)) + begun.calls)
        engine = self.engine_for(conv.session)
        ask = engine.current(conv.session)
        if ask is None:
            return Decision(conv, (), render.send(chat, render.esc(self.texts_in(lang).finished)))
        calls = render.send(chat, render.esc(notice))
        calls += render.replies(chat, conv.interview, (ask,), self.headings(lang, engine),
                                conv.draft, self.labels(lang, engine))
        if conv.question_message:
            calls.insert(0, render.drop_keyboard(chat, conv.question_message))
        return Decision(conv, (), calls)

    def _run(self, conv: Conversation, inp: Input, new_interview: bool = False,
             pressed: Event | None = None, shown: Ask | None = None,
             followup: bool = False, flow: str | None = None) -> Decision:
        """Feed the engine; turn its replies into calls; keep the chat a readable record.
        A new interview runs `flow` (else the session's, else the default); starting
        again is always on the current version of its flow."""
        chat, lang = conv.key.chat_id, self.language_of(conv)
        old: Session | None = conv.session
        latest = self.engines.get(flow or (old.flow_id if old else ""), self.engine)
        if followup and old is not None:
            step = latest.start_followup(old, lang)
        elif old is None or isinstance(inp, Start):
            step = latest.start(lang)
        else:
            step = (latest if isinstance(inp, Restart) else self.engine_for(old)).handle(old, inp)
        # this flow's step, then each flow taking over (continue_with)
        legs = handed_over(self.engine_for(step.session), step, self.engines, lang)
        new = legs[-1][1].session
        interview = conv.interview + 1 if new_interview else conv.interview
        replies = [r for _, leg in legs for r in leg.replies]
        moved = any(isinstance(r, Ask | Outcome) for r in replies)
        calls: list[Call] = []
        # the question just answered (its id may not be stored yet if the press came fast)
        target = conv.question_message or (pressed.message_id if pressed else None)
        if moved and target:
            if pressed and pressed.message_id == target and shown is not None \
                    and _accepted(old, step.session):
                calls.append(render.answered(chat, target, pressed.message_text,
                                             _label(shown, pressed.button, conv.draft)))
            else:
                calls.append(render.drop_keyboard(chat, target))
        draft = () if moved else conv.draft
        first = step.session
        log = first.log[len(old.log):] if old and first.log[:len(old.log)] == old.log \
            else first.log
        log += tuple(e for _, leg in legs[1:] for e in leg.session.log)
        records: list[tuple[str, dict[str, Any]]] = []
        source = conv.extra.get("source")
        emergency = False
        for i, (engine, leg) in enumerate(legs):  # a hand-off is a new interview, in its flow
            number = interview + i
            shown_replies = tuple(r for r in leg.replies if not isinstance(r, Handoff))
            calls += render.replies(chat, number, shown_replies, self.headings(lang, engine),
                                    draft, self.labels(lang, engine))
            alerted = conv.extra.get("alerted", {})
            if i and alerted.get("interview") == number - 1:  # alerted already: again only
                conv = replace(conv, extra={**conv.extra, "alerted": {  # if it gets higher
                    **alerted, "interview": number}})
            if new_interview or i:
                records.append(("event", {"kind": "started", "source": source,
                                          "flow": leg.session.flow_id}))
            emergency |= any(isinstance(r, Escalate | Outcome) and r.level == Level.EMERGENCY
                             for r in leg.replies)
            outcome = next((r for r in leg.replies if isinstance(r, Outcome)), None)
            if outcome is None:
                continue
            records.append(("event", {"kind": "finished", "source": source,
                                      "level": outcome.level.id, "rules": outcome.rules,
                                      "questions": leg.session.questions_asked,
                                      "flow": leg.session.flow_id}))
            alert = self._alert(conv, outcome, engine)
            done = conv.extra.get("alerted", {})
            repeat = done.get("interview") == number and \
                Level.parse(done.get("level", "self_care")) >= outcome.level
            if alert and not repeat:  # going back and finishing again alerts only if higher
                records.append(("alert", alert))
                conv = replace(conv, extra={**conv.extra, "alerted": {
                    "interview": number, "level": outcome.level.id}})
            if self.checkins and engine.flow.followup and outcome.level < Level.EMERGENCY \
                    and i == len(legs) - 1 and new.status == "done":
                calls += self._checkin_offer(conv, number)
        conv = replace(conv, session=new, interview=interview + len(legs) - 1, draft=draft,
                       question_message=None if moved else conv.question_message)
        return Decision(conv, log, calls, records=records,
                        priority=Priority.EMERGENCY if emergency else Priority.REPLY)

    def _alert(self, conv: Conversation, outcome: Outcome, engine: Engine) -> dict | None:
        """A staff alert for an urgent or emergency outcome, if the person agreed to contact;
        it names the flow."""
        consent = conv.extra.get("consent")
        staff = self.staff_for(conv.extra.get("source"))
        if outcome.level < Level.URGENT or consent not in ("share", "contact") or staff is None:
            return None
        person = conv.extra.get("person", {})
        staff_lang, lang = self.default_language, self.language_of(conv)
        rules = {r.id: r for r in engine.flow.rules}
        reasons = tuple(dict.fromkeys(rules[rid].says.get(staff_lang)
                                      for rid in outcome.rules))[:len(outcome.reasons) or 1]
        return {"staff_chat": staff, "level": outcome.level.id,
                "button": self.texts.alert_button,
                "notify": self.texts_in(lang).notified,  # for the person, once it is sent
                "text": render.alert_text(
                    replace(outcome, reasons=reasons), conv.key.user_id, person.get("name", ""),
                    person.get("username", ""), person.get("at", 0.0),
                    f"group {conv.extra['source']}" if conv.extra.get("source") else "",
                    share=consent == "share", headings=self.headings(staff_lang, engine),
                    texts=self.texts, flow=engine.flow.title.get(staff_lang),
                    language="" if lang == staff_lang else self.texts_in(lang).language_name)}


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


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

