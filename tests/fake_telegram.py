"""A fake Telegram Bot API server over real HTTP, as strict as Telegram where it matters.

The real bot (python-telegram-bot over HTTP) talks to it through
TRIAGEBOT_API_URL. It checks what Telegram checks — 4096-character texts
after entity parsing, empty texts, HTML entities, 64-byte callback data,
unknown chats, edits that change nothing, callback queries answered twice —
keeps getUpdates offsets and long polling, refuses getUpdates while a webhook
is set (409), and delivers updates to a webhook with the secret header,
retrying until it gets a 2xx. Tests drive it as people would: type, press.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                "tg-spoiler", "span", "blockquote", "tg-emoji"}
TOKEN = re.compile(r"<(/?)([a-zA-Z][\w-]*)((?:\s+[^<>]*)?)>|&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
INT_FIELDS = {"chat_id", "message_id", "offset", "limit", "timeout", "user_id", "max_connections"}
JSON_FIELDS = {"reply_markup", "allowed_updates", "commands", "link_preview_options",
               "reply_parameters", "entities"}


ADMIN_RIGHTS = ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages",
                "can_manage_video_chats", "can_restrict_members", "can_promote_members",
                "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
                "can_delete_stories")
MEMBER_FIELDS: dict[str, dict[str, Any]] = {
    "kicked": {"until_date": 0},
    "administrator": dict.fromkeys(ADMIN_RIGHTS, False) | {"can_post_messages": True,
                                                            "can_pin_messages": True},
}


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None):
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after


def parse_html(text: str) -> str:
    """The plain text Telegram would show, or ApiError as Telegram would raise it."""
    out, stack, pos = [], [], 0
    for m in TOKEN.finditer(text):
        chunk = text[pos:m.start()]
        if "<" in chunk or ">" in chunk or "&" in chunk:
            bad = next(c for c in chunk if c in "<>&")
            offset = len(text[:pos + chunk.index(bad)].encode())
            raise ApiError(400, "Bad Request: can't parse entities: unexpected "
                                f"'{bad}' at byte offset {offset}")
        out.append(chunk)
        pos = m.end()
        if m.group(4):
            out.append({"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(m.group(4), "?"))
            continue
        closing, tag = m.group(1) == "/", m.group(2).lower()
        if tag not in ALLOWED_TAGS:
            raise ApiError(400, f"Bad Request: can't parse entities: Unsupported start tag "
                                f"\"{tag}\"")
        if closing:
            if not stack or stack[-1] != tag:
                raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag "
                                    f"corresponding to start tag \"{stack[-1] if stack else tag}\"")
            stack.pop()
        else:
            if tag == "a" and "href=" not in m.group(3):
                raise ApiError(400, "Bad Request: can't parse entities: link without href")
            stack.append(tag)
    rest = text[pos:]
    if "<" in rest or ">" in rest or "&" in rest:
        raise ApiError(400, "Bad Request: can't parse entities: unexpected character")
    if stack:
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag "
                            f"corresponding to start tag \"{stack[-1]}\"")
    out.append(rest)
    return "".join(out)


@dataclass
class Message:
    chat_id: int
    message_id: int
    text: str  # as shown (entities parsed)
    html: str
    from_bot: bool
    reply_markup: dict[str, Any] | None = None
    edits: int = 0

    def buttons(self) -> list[tuple[str, str]]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(b["text"], b.get("callback_data", "")) for row in rows for b in row]


class Bucket:
    """A token bucket: `burst` calls at once, then `rate` a second."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> float:
        """0 if a call may go now (and count it), else seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class FloodLimits:
    """Telegram's flood control, as the fake enforces it when given one: a private chat
    about 1 message a second after a short burst, a group 20 a minute, the whole bot
    `overall` a second; beyond them a 429 with `retry_after` (whole seconds, at least 1)."""

    overall: float = 30.0
    chat_rate: float = 1.0
    chat_burst: int = 3
    group_per_minute: int = 20
    methods: tuple[str, ...] = ("sendMessage",)

    def __post_init__(self) -> None:
        self._all = Bucket(self.overall, self.overall)
        self._chats: dict[int, Bucket] = {}

    def check(self, method: str, chat: int | None) -> None:
        if method not in self.methods or chat is None:
            return
        bucket = self._chats.get(chat)
        if bucket is None:
            bucket = self._chats[chat] = Bucket(self.group_per_minute / 60,
                                                self.group_per_minute) if chat < 0 else \
                Bucket(self.chat_rate, self.chat_burst)
        wait = bucket.take() or self._all.take()
        if wait:
            retry = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {retry}", retry_after=retry)


@dataclass
class FakeTelegram:
    token: str = "123456:TEST-TOKEN"
    username: str = "triage_test_bot"
    bot_id: int = 123456
    base_url: str = ""
    updates: list[dict[str, Any]] = field(default_factory=list)
    confirmed_offset: int = 0
    on_confirm: Any = None  # called with the new offset as the bot confirms updates
    webhook: dict[str, Any] | None = None
    messages: dict[tuple[int, int], Message] = field(default_factory=dict)
    chats: dict[int, list[int]] = field(default_factory=dict)  # chat -> its message ids
    blocked: set[int] = field(default_factory=set)
    commands: list[dict[str, Any]] = field(default_factory=list)
    commands_by_language: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    language_codes: dict[int, str] = field(default_factory=dict)  # user -> app language
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    errors: list[tuple[str, int, str]] = field(default_factory=list)
    queries: dict[str, bool] = field(default_factory=dict)  # id -> answered
    failures: dict[str, list[ApiError]] = field(default_factory=dict)  # injected, per method
    # seconds a method's answer takes to reach the bot, after the call took effect
    slow_answers: dict[str, float] = field(default_factory=dict)
    delivered: dict[int, int] = field(default_factory=dict)  # update id -> webhook 2xx count
    pinned: dict[int, int] = field(default_factory=dict)  # chat -> pinned message id
    chat_types: dict[int, tuple[str, str]] = field(default_factory=dict)  # chat -> (type, title)
    ssl: Any = None  # an SSLContext trusting the proxy's certificate, for HTTPS webhooks
    attempts: dict[int, int] = field(default_factory=dict)  # update id -> webhook attempts
    webhook_replies: list[str] = field(default_factory=list)  # methods made by webhook replies
    limits: FloodLimits | None = None  # Telegram's flood control (off unless given)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1000)
        self._msg_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._delivery: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        # wait() callers, by the chat whose calls can satisfy them (None: any call)
        self._waiters: dict[Any, set[asyncio.Future]] = {}
        self._bot_ids: dict[int, list[int]] = {}  # chat -> ids of the bot's messages in it
        self._query_chats: dict[str, int] = {}  # callback query id -> its chat
        self._deliverable = asyncio.Event()  # something may now go to the webhook
        self._posting: set[asyncio.Task] = set()  # webhook deliveries in flight
        # several workers behind one URL: every update posted to all of these at once
        # (as a load balancer's retry can), instead of the webhook's own URL
        self.fanout: list[str] = []
        # ...or spread over these, one update each in turn (a round-robin load balancer)
        self.balance: list[str] = []
        self._closing = False

    # ------------------------------------------------------------ server

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._endpoint)
        # (a call made to hang is not waited for when the fake stops)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else None)
        self._delivery = asyncio.create_task(self._deliver_forever())
        return self.base_url

    async def stop(self) -> None:
        self._closing = True
        self._new_update.set()  # wake every long poll so the server can stop at once
        if self._delivery:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
        for task in self._posting:
            task.cancel()
        await asyncio.gather(*self._posting, return_exceptions=True)
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    async def _endpoint(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        return await self._invoke(request.match_info["method"], await self._params(request))

    async def _invoke(self, method: str, params: dict[str, Any]) -> web.Response:
        self.calls.append((method, params))
        handler = getattr(self, "api_" + method.lower(), None)
        try:
            response = await self._call(method, handler, params)
        finally:
            self._notify(self._chat_of_call(params))
        if self.slow_answers.get(method):
            await asyncio.sleep(self.slow_answers[method])
        return response

    async def _call(self, method: str, handler: Any, params: dict[str, Any]) -> web.Response:
        try:
            if self.failures.get(method):
                raise self.failures[method].pop(0)
            if self.limits is not None:
                self.limits.check(method, self._chat_of_call(params))
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            result = await handler(params)
        except ApiError as exc:
            self.errors.append((method, exc.code, exc.description))
            body: dict[str, Any] = {"ok": False, "error_code": exc.code,
                                    "description": exc.description}
            if exc.retry_after is not None:
                body["parameters"] = {"retry_after": exc.retry_after}
            return web.json_response(body, status=exc.code)
        return web.json_response({"ok": True, "result": result})

    def _chat_of_call(self, params: dict[str, Any]) -> int | None:
        """The chat a call changes, if it names one we know."""
        if "callback_query_id" in params:
            return self._query_chats.get(str(params["callback_query_id"]))
        try:
            return int(params["chat_id"])
        except (KeyError, TypeError, ValueError):
            return None

    def _notify(self, chat: int | None) -> None:
        """Wake the waits a call to `chat` may have satisfied (every wait if unknown).

        Waking only that chat's waits keeps the simulated crowd cheap: a load of
        50 people would otherwise re-check 50 predicates on every call.
        """
        groups = self._waiters.values() if chat is None else \
            (self._waiters.get(chat, ()), self._waiters.get(None, ()))
        for group in groups:
            for woken in group:
                if not woken.done():
                    woken.set_result(None)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return await request.json()
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if key in INT_FIELDS:
                params[key] = int(value)  # type: ignore[arg-type]
            elif key in JSON_FIELDS or value in ("true", "false"):
                params[key] = json.loads(value)  # type: ignore[arg-type]
            else:
                params[key] = value
        return params

    # ------------------------------------------------------------ Bot API methods

    def _user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Triage",
                "username": self.username}

    async def api_getme(self, _: dict) -> dict:
        return self._user()

    async def api_setmycommands(self, p: dict) -> bool:
        """Like Telegram: one menu per language_code ('' for everyone else)."""
        code = p.get("language_code", "")
        if code and not re.fullmatch(r"[a-z]{2}", code):
            raise ApiError(400, "Bad Request: invalid language code specified")
        for command in p["commands"]:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command["command"]) or \
                    not 1 <= len(command["description"]) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands_by_language[code] = p["commands"]
        if not code:
            self.commands = p["commands"]
        return True

    async def api_setwebhook(self, p: dict) -> bool:
        self.webhook = {"url": p["url"], "secret": p.get("secret_token"),
                        "allowed": p.get("allowed_updates")}
        self._new_update.set()
        self._deliverable.set()
        return True

    async def api_deletewebhook(self, p: dict) -> bool:
        self.webhook = None
        if p.get("drop_pending_updates"):
            self.updates.clear()
        return True

    async def api_getwebhookinfo(self, _: dict) -> dict:
        return {"url": self.webhook["url"] if self.webhook else "", "has_custom_certificate":
                False, "pending_update_count": len(self.updates)}

    async def api_getupdates(self, p: dict) -> list[dict]:
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                "active; use deleteWebhook to delete the webhook first")
        offset = p.get("offset")
        if offset:
            if offset > self.confirmed_offset and self.on_confirm is not None:
                self.on_confirm(offset)
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(p.get("timeout", 0)), 50)
        while not self.updates and time.monotonic() < deadline and not self._closing:
            self._new_update.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), deadline - time.monotonic())
        return self.updates[: int(p.get("limit", 100))]

    def _chat(self, chat_id: Any) -> int:
        chat = int(chat_id)
        if chat not in self.chats:
            raise ApiError(400, "Bad Request: chat not found")
        if chat in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _markup(self, markup: Any) -> dict | None:
        if markup is None:
            return None
        for row in markup.get("inline_keyboard", []):
            for button in row:
                if not button.get("text"):
                    raise ApiError(400, "Bad Request: text buttons are unallowed")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _text(self, p: dict) -> tuple[str, str]:
        raw = p.get("text", "")
        shown = parse_html(raw) if p.get("parse_mode") == "HTML" else raw
        if not shown.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(shown) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return shown, raw

    def add_chat(self, chat_id: int, kind: str, title: str) -> None:
        """A group, supergroup or channel the bot has been added to."""
        self.chats.setdefault(chat_id, [])
        self.chat_types[chat_id] = (kind, title)

    def _chat_json(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self.chat_types:
            kind, title = self.chat_types[chat_id]
            return {"id": chat_id, "type": kind, "title": title}
        return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}

    def _message_json(self, m: Message) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": m.message_id, "date": int(time.time()), "text": m.text,
            "chat": self._chat_json(m.chat_id),
            "from": self._user() if m.from_bot else self._person(m.chat_id)}
        if m.reply_markup and m.reply_markup.get("inline_keyboard"):
            out["reply_markup"] = m.reply_markup
        return out

    async def api_sendmessage(self, p: dict) -> dict:
        chat = self._chat(p["chat_id"])
        shown, raw = self._text(p)
        markup = self._markup(p.get("reply_markup"))
        m = Message(chat, next(self._msg_ids), shown, raw, True, markup)
        self.messages[(chat, m.message_id)] = m
        self.chats[chat].append(m.message_id)
        self._bot_ids.setdefault(chat, []).append(m.message_id)
        return self._message_json(m)

    def _existing(self, p: dict) -> Message:
        chat = self._chat(p["chat_id"])
        m = self.messages.get((chat, int(p["message_id"])))
        if m is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not m.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return m

    async def api_editmessagetext(self, p: dict) -> dict:
        m = self._existing(p)
        shown, raw = self._text(p)
        markup = self._markup(p.get("reply_markup"))
        if shown == m.text and markup == m.reply_markup:
            raise ApiError(400, "Bad Request: message is not modified")
        m.text, m.html, m.reply_markup, m.edits = shown, raw, markup, m.edits + 1
        return self._message_json(m)

    async def api_editmessagereplymarkup(self, p: dict) -> dict:
        m = self._existing(p)
        markup = self._markup(p.get("reply_markup"))
        if (markup or {}).get("inline_keyboard", []) == \
                (m.reply_markup or {}).get("inline_keyboard", []):
            raise ApiError(400, "Bad Request: message is not modified")
        m.reply_markup, m.edits = markup, m.edits + 1
        return self._message_json(m)

    async def api_pinchatmessage(self, p: dict) -> bool:
        chat = self._chat(p["chat_id"])
        if (chat, int(p["message_id"])) not in self.messages:
            raise ApiError(400, "Bad Request: message to pin not found")
        self.pinned[chat] = int(p["message_id"])
        return True

    async def api_answercallbackquery(self, p: dict) -> bool:
        qid = str(p["callback_query_id"])
        if self.queries.get(qid, True):
            raise ApiError(400, "Bad Request: query is too old and response timeout expired "
                                "or query ID is invalid")
        self.queries[qid] = True
        return True

    # ------------------------------------------------------------ people

    def _person(self, user_id: int) -> dict[str, Any]:
        person = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        if user_id in self.language_codes:  # the language of their Telegram app
            person["language_code"] = self.language_codes[user_id]
        return person

    def _push(self, update: dict[str, Any]) -> int:
        update["update_id"] = next(self._ids)
        self.updates.append(update)
        self._new_update.set()
        self._deliverable.set()
        return update["update_id"]

    def type(self, user_id: int, text: str) -> int:
        """The person sends a text message in their private chat with the bot."""
        self.chats.setdefault(user_id, [])
        m = Message(user_id, next(self._msg_ids), text, text, False)
        self.messages[(user_id, m.message_id)] = m
        self.chats[user_id].append(m.message_id)
        return self._push({"message": {**self._message_json(m), "text": text}})

    def send(self, user_id: int, payload: dict[str, Any]) -> int:
        """The person sends something else (sticker, photo...): `payload` joins the message."""
        self.chats.setdefault(user_id, [])
        message = {"message_id": next(self._msg_ids), "date": int(time.time()),
                   "chat": {"id": user_id, "type": "private", "first_name": "U"},
                   "from": self._person(user_id), **payload}
        return self._push({"message": message})

    def raw(self, update: dict[str, Any]) -> int:
        return self._push(update)

    def press(self, user_id: int, message_id: int, data: str, chat_id: int | None = None,
              username: str | None = None) -> int:
        """Someone presses an inline button on one of the bot's messages (in `chat_id`,
        by default their private chat)."""
        m = self.messages[(chat_id or user_id, message_id)]
        qid = str(next(self._query_ids))
        self.queries[qid] = False
        self._query_chats[qid] = m.chat_id
        person = self._person(user_id) | ({"username": username} if username else {})
        return self._push({"callback_query": {
            "id": qid, "from": person, "chat_instance": str(m.chat_id),
            "data": data, "message": self._message_json(m)}})

    def group_message(self, chat_id: int, user_id: int, text: str) -> int:
        """Someone writes in a group the bot is in."""
        return self._push({"message": {
            "message_id": next(self._msg_ids), "date": int(time.time()), "text": text,
            "chat": self._chat_json(chat_id), "from": self._person(user_id)}})

    def member_update(self, chat_id: int, status: str) -> int:
        """The bot was added to, promoted in or removed from a chat."""
        bot = {"user": self._user()}
        return self._push({"my_chat_member": {
            "chat": self._chat_json(chat_id), "from": self._person(1), "date": int(time.time()),
            "old_chat_member": {"status": "left", **bot},
            "new_chat_member": {"status": status, **bot, **MEMBER_FIELDS.get(status, {})}}})

    # ------------------------------------------------------------ reading the chat

    def bot_messages(self, chat_id: int) -> list[Message]:
        return [self.messages[(chat_id, i)] for i in self._bot_ids.get(chat_id, [])]

    def bot_message_count(self, chat_id: int) -> int:
        return len(self._bot_ids.get(chat_id, ()))

    def last_bot_message(self, chat_id: int) -> Message | None:
        ids = self._bot_ids.get(chat_id)
        return self.messages[(chat_id, ids[-1])] if ids else None

    def last_question(self, chat_id: int) -> Message | None:
        """The newest bot message that still has buttons."""
        for m in reversed(self.bot_messages(chat_id)):
            if m.buttons():
                return m
        return None

    async def wait(self, predicate, timeout: float = 10.0, chat: int | None = None) -> None:
        """Wait until `predicate()` is true, checked whenever the bot calls the API
        (only calls to `chat`, when given) and at least every 0.2 s."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        waiters = self._waiters.setdefault(chat, set())
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for the bot")
            woken = loop.create_future()
            waiters.add(woken)
            timer = loop.call_later(min(left, 0.2), _wake, woken)
            try:
                await woken
            finally:
                timer.cancel()
                waiters.discard(woken)

    # ------------------------------------------------------------ webhook delivery

    async def _deliver_forever(self) -> None:
        """Deliver queued updates to the webhook: per chat in order, until a 2xx.

        Woken when an update is queued or a delivery ends (and every 50 ms anyway),
        not by polling, so the fake adds no delay of its own to each update.
        """
        busy: dict[Any, asyncio.Task] = {}
        while True:
            self._deliverable.clear()
            if self.webhook is not None and self.updates:
                waiting = []
                for update in self.updates:
                    chat = _chat_of(update)
                    if chat in busy and not busy[chat].done():
                        waiting.append(update)  # after the chat's update in flight
                        continue
                    busy[chat] = task = asyncio.create_task(self._post(update))
                    self._posting.add(task)
                    task.add_done_callback(self._delivered)
                self.updates[:] = waiting
                busy = {chat: task for chat, task in busy.items() if not task.done()}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._deliverable.wait(), 0.05)

    def _delivered(self, task: asyncio.Task) -> None:
        self._posting.discard(task)
        self._deliverable.set()

    async def _post(self, update: dict[str, Any]) -> None:
        assert self._session is not None
        delay = 0.05
        while self.webhook is not None:
            hook = self.webhook
            headers = {"X-Telegram-Bot-Api-Secret-Token": hook["secret"]} if hook["secret"] \
                else {}
            uid = update["update_id"]
            self.attempts[uid] = self.attempts.get(uid, 0) + 1
            # (a balancer that retries a failed request on the next worker)
            urls = self.fanout or ([self.balance[(uid + self.attempts[uid]) %
                                                 len(self.balance)]] if self.balance
                                   else [hook["url"]])
            if any(await asyncio.gather(*(self._post_once(url, update, headers)
                                          for url in urls))):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        self.updates.insert(0, update)  # webhook removed: back to getUpdates

    async def _post_once(self, url: str, update: dict[str, Any], headers: dict) -> bool:
        assert self._session is not None
        uid = update["update_id"]
        try:
            async with self._session.post(url, json=update, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=30)) as r:
                if 200 <= r.status < 300:
                    self.delivered[uid] = self.delivered.get(uid, 0) + 1
                    await self._webhook_reply(r)
                    return True
        except (TimeoutError, aiohttp.ClientError):
            pass
        return False

    async def _webhook_reply(self, response: aiohttp.ClientResponse) -> None:
        """Like Telegram, make the one Bot API call a webhook may answer with.

        Its result is not returned to the bot; errors are recorded as for any call.
        """
        if response.content_type != "application/json":
            return
        body = await response.json()
        if isinstance(body, dict) and "method" in body:
            method = body.pop("method")
            self.webhook_replies.append(method)
            await self._invoke(method, body)


def _wake(woken: asyncio.Future) -> None:
    if not woken.done():
        woken.set_result(None)


def _chat_of(update: dict[str, Any]) -> Any:
    """The chat an update is delivered in order with (forged ones: their own queue)."""
    def field(parent: Any, name: str) -> Any:
        return parent.get(name) if isinstance(parent, dict) else None

    body = field(update, "message") or field(update, "edited_message") or \
        field(field(update, "callback_query"), "message")
    chat = field(field(body, "chat"), "id")
    return chat if isinstance(chat, int) else update["update_id"]
