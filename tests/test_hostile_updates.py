"""Properties (issue 13, class 7): any update, however forged, and any typed text go
through the parsers, the authorization point and the use case without raising, and
nothing health-related is ever sent to a chat that is not the person's own."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import access, answers
from bot.conversation import Conversations
from bot.engine import Engine
from bot.loader import load_flow
from bot.store import Conversation
from bot.telegram import inputs, render

from .conftest import BUNDLED

FLOW = load_flow(BUNDLED)
CONVERSATIONS = Conversations(Engine(FLOW), staff_chat=-300, checkins=True)
ROLES = access.Roles(staff_chats=frozenset({-300}), admins=frozenset({9}))
# digits int() refuses (➊ ፩ ²), digits it takes (٣ ७), huge numbers, units, separators
TRICKY = st.lists(st.sampled_from([*"0123456789➊➋፩፪²³٣٤७८.,-+eE°CFf /:;&", "days", "weeks",
                                    " y ", "١٠", "inf", "nan", "9" * 400]),
                  max_size=40).map("".join)
ANY = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(),
                st.text(max_size=30), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
IDS = st.one_of(st.integers(-5, 12), st.sampled_from([-300, -200, 9, 2 ** 53, -(2 ** 63),
                                                      2 ** 64]), ANY)
TEXTS = st.one_of(st.text(max_size=80), TRICKY, ANY,
                  st.sampled_from(["/start", "/stats", "/forget", "/start@triage_test_bot",
                                   "/start x y", "@triage_test_bot help", "/timezone Europe"]))
DATA = st.one_of(st.text(max_size=70), ANY, st.sampled_from([
    "!take|1", "!take|" + "9" * 20, "!take|", "0|_|-1|consent_share", "1|_|-1|forget_yes",
    "1|_|-1|lang_es", "1|_|-1|checkin_6h", "ff|red_flags|0|=done", "1|age|0|t.x",
    "1|_|-1|fu_worse", "zz|_|x|y"]))


def chat():
    return st.fixed_dictionaries({"id": IDS}, optional={
        "type": st.one_of(st.sampled_from(["private", "group", "supergroup", "channel"]), ANY),
        "title": TEXTS})


def person():
    return st.fixed_dictionaries({"id": IDS}, optional={
        "first_name": TEXTS, "username": TEXTS, "language_code": TEXTS, "is_bot": ANY})


def message():
    return st.fixed_dictionaries({}, optional={
        "message_id": IDS, "date": IDS, "chat": st.one_of(chat(), ANY),
        "from": st.one_of(person(), ANY), "text": TEXTS, "sticker": ANY})


updates = st.fixed_dictionaries({"update_id": IDS}, optional={
    "message": st.one_of(message(), ANY),
    "edited_message": st.one_of(message(), ANY),
    "callback_query": st.one_of(st.fixed_dictionaries({}, optional={
        "id": TEXTS, "from": st.one_of(person(), ANY), "data": DATA,
        "message": st.one_of(message(), ANY)}), ANY),
    "my_chat_member": st.one_of(st.fixed_dictionaries({}, optional={
        "chat": chat(), "from": person(), "new_chat_member": st.fixed_dictionaries(
            {}, optional={"status": TEXTS})}), ANY),
})


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(updates, st.sampled_from([None, "consented", "mid-interview"]))
def test_any_update_is_read_authorized_and_decided_without_raising(update, state):
    inputs.kind(update), inputs.update_id(update), inputs.query_id(update)
    member = inputs.member_change(update)
    if member is not None and member.chat_type == "private":
        assert member.chat_id == member.user_id, "only a person blocks the bot in their chat"
    read = inputs.read(update, "triage_test_bot")
    if read is None:
        return
    key, event = read
    role = access.authorize(key, event, ROLES)
    if role not in ("person", "group"):
        return
    conv = Conversation(key)
    if state is not None:
        conv = CONVERSATIONS.decide(conv, _consent(conv.interview), 1e9).conversation
    if state == "mid-interview":
        conv = CONVERSATIONS.decide(conv, _text("45"), 1e9).conversation
    decision = CONVERSATIONS.decide(conv, event, 1.8e9)
    for method, params in decision.calls:
        assert params["chat_id"] == key.chat_id, "replies only ever go to this chat"
        if role == "group":  # a group gets the invitation to a private chat, nothing else
            assert method == "sendMessage" and "url" in str(params["reply_markup"])
            assert "callback_data" not in str(params["reply_markup"])
        else:
            assert key.chat_id == key.user_id and event.private
    if role == "group":
        assert decision.log == () and decision.conversation.session is None


@settings(max_examples=400, deadline=None)
@given(st.one_of(TRICKY, st.text(max_size=200)), st.sampled_from(["en", "es", "ru", "ar"]))
def test_every_parser_answers_any_text_with_a_value_or_a_reason(text, lang):
    items = {"a": ["apple"], "b": ["banana"], "c": ["cherry"]}
    for parsed in (answers.parse_yes_no(text, lang), answers.parse_temperature(text, lang),
                   answers.parse_duration(text, lang), answers.parse_age(text, lang),
                   answers.parse_number(text, "mm", 0, 100),
                   answers.parse_checklist(text, items, lang)):
        assert type(parsed).__name__ in ("Got", "Invalid", "Unsure"), parsed


def test_digits_that_int_refuses_and_huge_numbers_get_a_re_ask():
    items = {"a": ["apple"], "b": ["banana"]}
    for text in ("➊", "፩", "➊, ➋"):
        assert type(answers.parse_checklist(text, items)).__name__ == "Invalid", text
    assert type(answers.parse_checklist("٢", items)).__name__ == "Got"  # Arabic-Indic 2
    for text in ("9" * 309 + " days", "9" * 5000, "1e999 weeks"):
        assert type(answers.parse_duration(text)).__name__ == "Invalid", text[:20]


def _consent(interview: int):
    from bot.conversation import Event

    return Event("button", button=render.decode(render.encode(interview, "_", -1,
                                                              "consent_none")),
                 private=True, message_id=1)


def _text(text: str):
    from bot.conversation import Event

    return Event("text", text=text, private=True)
