"""The fake Bot API server is as strict as Telegram where the bot could go wrong."""

from __future__ import annotations

import json

import aiohttp
import pytest
import pytest_asyncio

from .fake_telegram import ApiError, FakeTelegram, parse_html


@pytest_asyncio.fixture
async def api():
    fake = FakeTelegram()
    await fake.start()
    fake.chats[42] = []
    async with aiohttp.ClientSession() as http:
        async def call(method: str, **params):
            url = f"{fake.base_url}/bot{fake.token}/{method}"
            async with http.post(url, json=params) as r:
                return r.status, await r.json()
        yield fake, call
    await fake.stop()


@pytest.mark.parametrize("text, error", [
    ("", "message text is empty"),
    ("x" * 4097, "message is too long"),
    ("a < b", "can't parse entities"),
    ("<b>bold", "Can't find end tag"),
    ("<script>x</script>", "Unsupported start tag"),
    ("fish & chips", "can't parse entities"),
])
async def test_send_message_rejects_what_telegram_rejects(api, text, error):
    _, call = api
    status, body = await call("sendMessage", chat_id=42, text=text, parse_mode="HTML")
    assert status == 400 and error in body["description"]


async def test_4096_characters_are_counted_after_entities(api):
    _, call = api
    status, _ = await call("sendMessage", chat_id=42, text="<b>" + "&amp;" * 4096 + "</b>",
                           parse_mode="HTML")
    assert status == 200


async def test_unknown_chats_long_callback_data_and_blocked_people(api):
    fake, call = api
    status, body = await call("sendMessage", chat_id=7, text="hi")
    assert status == 400 and "chat not found" in body["description"]
    markup = {"inline_keyboard": [[{"text": "x", "callback_data": "y" * 65}]]}
    status, body = await call("sendMessage", chat_id=42, text="hi", reply_markup=markup)
    assert status == 400 and "BUTTON_DATA_INVALID" in body["description"]
    fake.blocked.add(42)
    status, body = await call("sendMessage", chat_id=42, text="hi")
    assert status == 403


async def test_edits_that_change_nothing_and_double_answers_are_errors(api):
    fake, call = api
    _, sent = await call("sendMessage", chat_id=42, text="hi")
    mid = sent["result"]["message_id"]
    status, body = await call("editMessageText", chat_id=42, message_id=mid, text="hi")
    assert status == 400 and "not modified" in body["description"]
    status, _ = await call("editMessageText", chat_id=42, message_id=999, text="x")
    assert status == 400
    fake.press(42, mid, "data")
    qid = fake.updates[-1]["callback_query"]["id"]
    assert (await call("answerCallbackQuery", callback_query_id=qid))[0] == 200
    assert (await call("answerCallbackQuery", callback_query_id=qid))[0] == 400


async def test_get_updates_offsets_and_the_webhook_conflict(api):
    fake, call = api
    first = fake.type(42, "one")
    fake.type(42, "two")
    _, body = await call("getUpdates", timeout=0)
    assert [u["update_id"] for u in body["result"]] == [first, first + 1]
    _, body = await call("getUpdates", offset=first + 1, timeout=0)
    assert [u["update_id"] for u in body["result"]] == [first + 1], "confirmed ones are gone"
    await call("setWebhook", url="http://127.0.0.1:9/hook", secret_token="s")
    status, body = await call("getUpdates")
    assert status == 409 and "webhook is active" in body["description"]


async def test_injected_failures_come_back_as_telegram_errors(api):
    fake, call = api
    fake.failures["sendMessage"] = [ApiError(429, "Too Many Requests: retry after 3", 3)]
    status, body = await call("sendMessage", chat_id=42, text="hi")
    assert status == 429 and body["parameters"]["retry_after"] == 3
    assert (await call("sendMessage", chat_id=42, text="hi"))[0] == 200


def test_html_entities_are_parsed_like_telegram():
    assert parse_html('<a href="https://x">link</a> &lt;3 &amp; <i>it</i>') == "link <3 & it"
    with pytest.raises(ApiError):
        parse_html("<a>no href</a>")
    assert json.dumps(parse_html("plain"))


async def test_flood_limits_answer_429_with_retry_after_per_chat_group_and_overall(api):
    from .fake_telegram import FloodLimits

    fake, call = api
    fake.chats[-100] = []
    fake.limits = FloodLimits(overall=1000, chat_rate=1, chat_burst=3, group_per_minute=20)
    codes = [(await call("sendMessage", chat_id=42, text="hi"))[0] for _ in range(4)]
    assert codes == [200, 200, 200, 429], "a burst of 3, then about one a second"
    status, body = await call("sendMessage", chat_id=42, text="hi")
    assert status == 429 and body["parameters"]["retry_after"] >= 1
    group = [(await call("sendMessage", chat_id=-100, text="hi"))[0] for _ in range(21)]
    assert group.count(200) == 20 and group[-1] == 429, "20 a minute in a group"
    fake.limits = FloodLimits(overall=2, chat_burst=100)
    fake.chats.update({7: [], 8: [], 9: []})
    overall = [(await call("sendMessage", chat_id=c, text="hi"))[0] for c in (7, 8, 9)]
    assert overall == [200, 200, 429], "and the whole bot's rate"
