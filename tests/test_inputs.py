"""Reading updates from their JSON: the right event for real shapes, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.telegram import inputs, render

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children,
                                                                       max_size=3),
    max_leaves=10)
FIELDS = ["update_id", "message", "callback_query", "edited_message", "my_chat_member",
          "chat", "from", "id", "type", "text", "data", "date", "message_id", "status",
          "new_chat_member", "title", "username", "first_name"]
# updates whose keys are the real ones but whose values may be anything, nested
SHAPED = st.recursive(
    JSON, lambda children: st.dictionaries(st.sampled_from(FIELDS), children, max_size=6),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), SHAPED, max_size=5))
def test_no_update_shape_makes_the_reader_raise(update):
    inputs.kind(update)
    inputs.update_id(update)
    inputs.query_id(update)
    inputs.member_change(update)
    read = inputs.read(update, "triage_bot")
    if read is not None:
        key, event = read
        assert type(key.chat_id) is int and type(key.user_id) is int
        assert event.kind in ("button", "take", "edited", "group", "other", "command", "text")


def private(text=None, **extra):
    message = {"message_id": 5, "date": 1_700_000_000, "chat": {"id": 42, "type": "private"},
               "from": {"id": 42, "is_bot": False, "first_name": "Ada", "username": "ada"}}
    if text is not None:
        message["text"] = text
    return {"update_id": 1, "message": message | extra}


def test_messages_commands_and_buttons():
    key, event = inputs.read(private("38.5"))
    assert (key.chat_id, key.user_id, event.kind, event.text) == (42, 42, "text", "38.5")
    assert (event.username, event.name, event.at) == ("ada", "Ada", 1_700_000_000.0)
    _, event = inputs.read(private("/start@triage_bot grp123"), "triage_bot")
    assert (event.kind, event.command, event.payload) == ("command", "start", "grp123")
    assert inputs.read(private("/start@other_bot"), "triage_bot") is None
    _, event = inputs.read(private(sticker={"file_id": "x"}))
    assert event.kind == "other"
    data = render.encode(7, "sex", 0, "male")
    press = {"update_id": 2, "callback_query": {
        "id": "q1", "from": {"id": 42, "first_name": "Ada"}, "data": data, "chat_instance": "1",
        "message": {"message_id": 9, "date": 0, "chat": {"id": 42, "type": "private"},
                    "text": "Sex?"}}}
    key, event = inputs.read(press)
    assert event.kind == "button" and event.message_id == 9 and event.message_text == "Sex?"
    assert event.button == render.decode(data) and inputs.query_id(press) == "q1"
    assert inputs.kind(press) == "callback_query"


def test_groups_get_only_a_link_and_member_changes_are_read():
    group = {"update_id": 3, "message": {"message_id": 1, "date": 0, "text": "/triage",
                                         "chat": {"id": -100, "type": "supergroup"},
                                         "from": {"id": 42, "first_name": "Ada"}}}
    assert inputs.read(group, "triage_bot")[1].kind == "group"
    group["message"]["text"] = "my back hurts"
    assert inputs.read(group, "triage_bot") is None, "ordinary group talk is ignored"
    kicked = {"update_id": 4, "my_chat_member": {
        "chat": {"id": 42, "type": "private"}, "from": {"id": 42}, "date": 0,
        "old_chat_member": {"status": "member"}, "new_chat_member": {"status": "kicked"}}}
    change = inputs.member_change(kicked)
    assert (change.chat_type, change.user_id, change.status) == ("private", 42, "kicked")
    assert inputs.read(kicked) is None
