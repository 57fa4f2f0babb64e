"""Property: whatever a person does, in any order and at any time, with check-ins and
reminders falling due in between, the conversation layer answers with well-formed Bot
API calls and never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.conversation import Conversations, Event
from bot.engine import Engine
from bot.loader import load_flow
from bot.store import Conversation, Key, Scheduled, codec
from bot.telegram import render

from .conftest import BUNDLED

FLOW = load_flow(BUNDLED)
CONVERSATIONS = Conversations(Engine(FLOW, "112", {"ar": "997"}), staff_chat=-5,
                              checkins=True, nudge_hours=1, timezone="Europe/Madrid")
KEY = Key(77, 77)
NODES = sorted(FLOW.nodes)
SPECIAL = ["lang_es", "lang_ar", "lang_ru", "lang_en", "lang_xx", "checkin_6h",
           "checkin_morning", "checkin_no", "checkin_cancel", "fu_better", "fu_same",
           "fu_worse", "fu_bogus", "consent_share", "consent_none", "consent_bogus",
           "forget_no", "back", "restart"]

buttons = st.builds(
    lambda interview, node, item, option: render.encode(interview, node, item, option)
    if len(f"{interview:x}|{node}|{item}|{option}".encode()) <= 64 else "x",
    st.integers(0, 4), st.sampled_from(["_", *NODES]), st.integers(-1, 12),
    st.sampled_from([*SPECIAL, "yes", "no", "not_sure", "none", "unknown", "=done",
                     "t.saddle_numbness", "t.chest_pain", "male", "lower", "severe"]))
events = st.one_of(
    st.builds(lambda t: Event("text", text=t), st.text(max_size=40)),
    st.builds(lambda t: Event("text", text=t),
              st.sampled_from(["45", "٤٥", "sí", "да", "نعم", "none", "38,5", "3 días",
                               "1, 11", "lower back", "Male", "no sé"])),
    st.builds(lambda c, p: Event("command", command=c, payload=p),
              st.sampled_from(["start", "restart", "back", "language", "timezone", "help",
                               "privacy", "forget", "bogus"]),
              st.sampled_from(["", "Europe/Madrid", "Mars/Base", "x" * 80])),
    st.builds(lambda d, m: Event("button", button=render.decode(d), message_id=m,
                                 message_text="q"), buttons, st.integers(1, 50)),
    st.just(Event("other")), st.just(Event("edited")),
    st.builds(lambda lang: Event("text", text="hola", language=lang),
              st.sampled_from(["es", "pt-br", "ar", "", "zz"])),
    st.sampled_from([("due", "checkin", 0), ("due", "nudge", 0), ("due", "checkin", 1)]),
)


def well_formed(method: str, params: dict) -> None:
    if method in ("sendMessage", "editMessageText"):
        assert isinstance(params["text"], str) and 0 < len(params["text"]) <= 4096
    markup = params.get("reply_markup") or {}
    for row in markup.get("inline_keyboard", []):
        for button in row:
            assert button["text"].strip()
            if "callback_data" in button:
                assert len(button["callback_data"].encode()) <= 64


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(events, st.floats(0, 30)), max_size=30))
def test_any_sequence_of_events_gets_well_formed_answers(sequence):
    conv, now = Conversation(KEY), 1_800_000_000.0
    for event, hours in sequence:
        now += hours * 3600
        if isinstance(event, tuple):  # a check-in or reminder falls due (maybe a stale one)
            _, kind, older = event
            item = Scheduled(1, KEY, kind, now - 3600 * 20 * older, conv.interview - older)
            decision = CONVERSATIONS.due(conv, item, now)
        else:
            decision = CONVERSATIONS.decide(conv, event, now)
        for method, params in decision.calls:
            well_formed(method, params)
        conv = decision.conversation
        if conv.session is not None:  # what the store keeps can be read back (all but the
            # session's answer log, whose entries are rows of the answer_log table)
            assert codec.decode(codec.encode(conv.session)) == conv.session.evolve(log=())
        if decision.forget:
            conv = Conversation(KEY)
