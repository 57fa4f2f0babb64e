"""The bot on Telegram: python-telegram-bot as the transport, our use case as the brain.

* Updates (their JSON, read by `inputs`) reach `process` from our own polling loop
  or our own webhook server (aiohttp). Both wait until the update's new state is
  committed before acknowledging it: the polling offset moves past an update, or
  the webhook answers 200, only then. The use case runs under a per-person lock,
  so one person's updates are handled in order while different people run at
  once, and their commits are grouped (see SqliteStore.update).
* Bot API calls go through python-telegram-bot's Bot (its errors and an aiohttp
  request; not its rate limiter: `delivery` paces by what Telegram answers); in
  webhook mode one call whose result is not needed (the button's answer, or an
  edit) rides on the webhook's response instead.
* Replies are sent after the commit, from the store's outbox, by the delivery
  scheduler (bot.telegram.delivery: each chat in order, emergencies first, 429s
  obeyed, failures retried with backoff); each call is recorded as made as soon
  as Telegram took it. A 403 (the person blocked the bot) marks the conversation
  and stops sending. A crash or an outage loses no reply and repeats only calls
  that were in flight.
* Logs never contain answers or message text: only update ids, kinds and codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hmac
import logging
import signal
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web
from telegram import BotCommand
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application
from telegram.warnings import PTBUserWarning

from bot import access
from bot.conversation import Conversations, Decision
from bot.errors import StoreInUse
from bot.settings import Settings
from bot.store import Conversation, Key, Outgoing, maintenance
from bot.store.sqlite import SqliteStore
from bot.telegram import http, inputs, render
from bot.telegram.aiohttp_request import AiohttpRequest
from bot.telegram.delivery import (
    DONE,
    RECORDING,
    STOP,
    Delivery,
    Limits,
    Priority,
    Verdict,
    priority,
)
from bot.telegram.metrics import Metrics

log = logging.getLogger("triagebot.telegram")
# Calls are stored in the outbox as (method, params) and replayed with do_api_request;
# python-telegram-bot suggests its typed methods instead, which we do not want here.
warnings.filterwarnings("ignore", message="Please use 'Bot.", category=PTBUserWarning)

_outcome: contextvars.ContextVar[str | None] = contextvars.ContextVar("outcome", default=None)
# While a webhook request is handled: room for the one Bot API call its response may
# carry (Telegram makes it), which saves the bot an HTTP request of its own.
_webhook_reply: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "webhook_reply", default=None)
# the outbox call riding on it, recorded as made once the response is written
_ridden: contextvars.ContextVar[list[Outgoing] | None] = contextvars.ContextVar(
    "ridden", default=None)
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
SEND_ATTEMPTS = 5  # of a call made directly (not from the outbox)
ALERT_RETRY = 60.0  # seconds before an alert Telegram refused is tried again
WEBHOOK_REPLY_METHODS = ("editMessageReplyMarkup", "editMessageText")
POLL_TIMEOUT = 25  # seconds of long polling per getUpdates
# After SIGTERM: seconds for the HTTP server's requests in flight, then for the loops'
# work in hand; with closing, well inside Docker's 10 s and systemd's 30 s
HTTP_GRACE = 2.0
SHUTDOWN_GRACE = 4.0
QUARANTINE_AFTER = 3  # attempts of an update that fails because of what it holds
STORE_RETRY_MAX = 30.0  # seconds between polling retries while the store cannot commit
STUCK_AFTER = 60.0  # an update still being handled after this long: /healthz fails
PROBE_EVERY = 5.0  # seconds a store probe's answer is reused by /healthz
MAX_BODY = 1 << 20  # bytes of a webhook request (Telegram's updates are far smaller)


# Libraries that log request bodies or SQL parameters at DEBUG, which would put health
# answers in the logs (python-telegram-bot logs every API call's parameters; aiosqlite
# every statement with its values). They never log below INFO here.
QUIET_LIBRARIES = ("telegram", "httpx", "httpcore", "aiosqlite", "aiohttp.access")


def keep_answers_out_of_logs() -> None:
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


def redact_token_everywhere(token: str) -> None:
    """Make every log record, from any library, show `<token>` instead of the bot token.

    python-telegram-bot and httpx log Bot API URLs (which contain the token) at
    DEBUG/INFO; a record factory catches them whatever the handlers are.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", None) == token:
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.exc_info or record.stack_info:  # tracebacks too (an error's URL, say)
            _redact_traceback(record, token)
        if _plain(record, token):  # e.g. the per-update line: ids and numbers only
            return record
        message = record.getMessage()
        if token in message:
            record.msg, record.args = message.replace(token, "<token>"), ()
        return record

    factory.redacts = token  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _redact_traceback(record: logging.LogRecord, token: str) -> None:
    """Format the record's traceback now, without the token; formatters then use it."""
    if record.exc_info:
        text = logging.Formatter().formatException(record.exc_info)
        if token in text:
            record.exc_text, record.exc_info = text.replace(token, "<token>"), None
    if record.stack_info and token in record.stack_info:
        record.stack_info = record.stack_info.replace(token, "<token>")


def _plain(record: logging.LogRecord, token: str) -> bool:
    """True if the record cannot show the token: a text without it, with only numbers
    (or no) arguments. Saves formatting every message twice."""
    args = record.args
    return isinstance(record.msg, str) and token not in record.msg and (
        not args or (isinstance(args, tuple) and all(
            type(a) in (int, float, bool) or a is None for a in args)))


class KeyedLocks:
    """One lock per person, dropped when nobody holds or waits for it (bounded memory)."""

    def __init__(self) -> None:
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: Key):
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class StartupFailed(Exception):
    """The bot cannot start; the message says why in one line (the CLI exits 1)."""


class Transient(Exception):
    """A start-up step failed in a way that waiting may cure; it is tried again."""


async def _retrying(what: str, step: Callable[[], Awaitable[None]], give_up_after: float,
                    stopping: asyncio.Event) -> None:
    """Run `step` until it succeeds, retrying Transient failures with backoff (1 s,
    doubling, at most 10 s) for up to `give_up_after` seconds, or until told to stop."""
    deadline, wait = time.monotonic() + give_up_after, 1.0
    while True:
        try:
            return await step()
        except Transient as exc:
            left = deadline - time.monotonic()
            if left <= 0 or stopping.is_set():
                raise StartupFailed(f"could not {what} for {give_up_after:g} s: {exc}"
                                    ) from None
            log.warning("cannot %s yet (%s); trying again in %.0f s", what, exc, min(wait, left))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), min(wait, left))
            wait = min(2 * wait, 10.0)


def _api_error(exc: TelegramError) -> str:
    """A Bot API error in a few words (never the URL, which holds the token)."""
    if isinstance(exc, RetryAfter):
        return "429 Too Many Requests"
    return f"{type(exc).__name__}: {exc.message[:80]}"


class Blocked(Exception):
    """The person blocked the bot (403): stop sending to them."""


class Rejected(Exception):
    """Telegram refused the call (400); retrying the same call cannot help."""


class Later(Exception):
    """The call could not be made now (a 429, a network error or 5xx): retry it."""

    def __init__(self, after: float | None = None, limited: bool = False):
        super().__init__(after)
        self.after, self.limited = after, limited


def _for_webhook_reply(pending: list[Outgoing]) -> Outgoing | None:
    """The call that may ride on the webhook's response instead of a request: an edit
    whose result is not needed, of a message no other call here touches (Telegram
    makes it after the others, so two edits of one message could land in reverse)."""
    touched = Counter((out.params.get("chat_id"), out.params.get("message_id"))
                      for out in pending)
    return next((out for out in pending if out.method in WEBHOOK_REPLY_METHODS
                 and touched[(out.params.get("chat_id"), out.params.get("message_id"))] == 1
                 and "_alert" not in out.params and render.QUESTION not in out.params),
                None)


class TelegramBot:
    def __init__(self, settings: Settings, conversations: Conversations, store: SqliteStore,
                 *, poll_timeout: int = POLL_TIMEOUT, retry_base: float = 0.5,
                 limits: Limits | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.conversations = conversations
        self.store = store
        self.poll_timeout = poll_timeout
        self.retry_base = retry_base
        self.clock = clock  # wall time for expiry and check-ins; tests move it by hand
        self.locks = KeyedLocks()
        self._answering: Counter[int] = Counter()  # people whose update is answered here
        self.metrics = Metrics()
        self.delivery = Delivery(store, self._deliver, limits or Limits(
            chat_burst=settings.chat_burst, bulk_rate=settings.bulk_rate,
            overall_rate=settings.send_rate, retry_base=retry_base),
            on_limited=lambda scope: self.metrics.limited.labels(scope).inc())
        self._recording: set[asyncio.Task] = set()  # calls made, their record committing
        self.ready = False
        self.stopping = asyncio.Event()
        self.username: str | None = None
        self.store_error: str | None = None  # why the last commit failed, until one works
        self.busy: dict[object, float] = {}  # updates being handled -> since (monotonic)
        self.polled_at = time.monotonic()  # the polling loop's last turn
        self._probed: tuple[float, str | None] = (0.0, None)  # (when, the probe's error)
        self._probing: asyncio.Future | None = None
        self.pool = http.Pool()  # the HTTP listener's connections
        assert settings.token, "checked by the CLI"
        redact_token_everywhere(settings.token)
        keep_answers_out_of_logs()
        self.application = (
            Application.builder().token(settings.token)
            .base_url(f"{settings.api_url}/bot").base_file_url(f"{settings.api_url}/file/bot")
            .request(AiohttpRequest())
            .get_updates_request(AiohttpRequest(pool_size=1))  # unused: see poll()
            .updater(None).build())

    @property
    def store(self) -> SqliteStore:
        return self._store

    @store.setter
    def store(self, store: SqliteStore) -> None:  # (tests swap in a store of their own)
        self._store = store
        if hasattr(self, "delivery"):
            self.delivery.outbox = store

    @property
    def roles(self) -> access.Roles:
        """Who is staff and admin, from the settings (bot.access decides with it); built
        once per Settings object, not per update."""
        settings = self.settings
        cached = getattr(self, "_roles", None)
        if cached is not None and cached[0] is settings:
            return cached[1]
        roles = access.Roles(
            staff_chats=frozenset(c for c in (settings.staff_chat,
                                               *(s for _, s in settings.staff_chats))
                                  if c is not None),
            admins=settings.admins)
        self._roles = (settings, roles)
        return roles

    # ------------------------------------------------------------ lifecycle

    async def start(self, give_up_after: float | None = None) -> None:
        """Open the store and introduce the bot to Telegram. A transient failure (the API
        unreachable or answering 5xx or 429, the database locked by another program) is
        retried with backoff for up to `give_up_after` seconds; then, or at once for one
        that waiting cannot cure, StartupFailed says what is wrong in one line."""
        give_up_after = self.settings.start_timeout if give_up_after is None else give_up_after
        await _retrying("open the database", self._open_store, give_up_after, self.stopping)
        await _retrying("reach Telegram", self._introduce, give_up_after, self.stopping)
        self.delivery.start()
        listen = getattr(self.store, "listen", None)
        if listen is not None:  # several workers on one database (PostgreSQL)
            await listen(self._woken)
        await self.delivery.wake_all()  # calls committed before a crash or restart
        self.ready = True
        log.info("ready as @%s", self.username)

    def _woken(self, user_id: int) -> None:
        """Another worker (or this one) committed calls for this person: send them if
        no other worker holds them (the store's claim decides). Passed over while this
        process is answering the person's update: it wakes them itself, once one call
        may have taken the webhook's response instead of a request."""
        if user_id not in self._answering:
            self._wake_soon(user_id)

    def _wake_soon(self, user_id: int) -> None:
        task = asyncio.create_task(self.delivery.wake(Key(user_id, user_id)))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
        task.add_done_callback(_log_failure)

    async def _open_store(self) -> None:
        try:
            await self.store.open(sole_writer=True)
        except StoreInUse:
            raise
        except Exception as exc:
            await self.store.close()  # (what it had opened), so a retry starts clean
            fault = self.store.fault(exc)
            if fault is not None and ("locked" in fault or self.settings.db_url):
                raise Transient(fault) from None  # (a PostgreSQL server not up yet, too)
            raise StartupFailed(f"cannot open the database {self.settings.db_name}: "
                                f"{fault or type(exc).__name__} (is it a triagebot database, "
                                "and is there free disk space?)") from None

    async def _introduce(self) -> None:
        """getMe and the command menus."""
        try:
            await self.application.initialize()
        except InvalidToken:
            raise StartupFailed("Telegram refused the token (401): check TELEGRAM_BOT_TOKEN "
                                "with @BotFather") from None
        except (NetworkError, RetryAfter) as exc:
            await self.application.shutdown()
            raise Transient(_api_error(exc)) from None
        except TelegramError as exc:
            raise StartupFailed(f"Telegram refused getMe: {_api_error(exc)}") from None
        try:
            await self._set_commands()
        except (NetworkError, RetryAfter) as exc:
            await self.application.shutdown()
            raise Transient(_api_error(exc)) from None
        except TelegramError as exc:
            raise StartupFailed(f"Telegram refused setMyCommands: {_api_error(exc)}") from None

    async def _set_commands(self) -> None:
        self.username = self.application.bot.username
        self.conversations.username = self.username or ""
        self.conversations.token = self.settings.token or ""
        conversations = self.conversations
        await self.application.bot.set_my_commands(  # the default menu, then each language's
            [BotCommand(c, d) for c, d in conversations.commands(conversations.default_language)])
        for lang in conversations.languages:
            await self.application.bot.set_my_commands(
                [BotCommand(c, d) for c, d in conversations.commands(lang)], language_code=lang)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop sending (calls in flight get `grace` seconds) and close everything;
        what was not sent stays in the outbox for the next start."""
        self.ready = False
        await self.delivery.stop(grace)
        if self._recording:
            await asyncio.wait(self._recording, timeout=max(grace, 1.0))
        with contextlib.suppress(Exception):
            await self.application.shutdown()
        await self.store.close()

    # ------------------------------------------------------------ one update

    async def process(self, update: dict[str, Any]) -> bool:
        """Handle one update (its JSON) completely. True once it is done with: its state
        committed, or the update set aside; False if the store cannot commit now (full
        disk, locked file), and the update must come again later.

        An update that fails for any other reason failed because of what it holds (the
        use case is deterministic), so it is tried again at once, and after
        QUARANTINE_AFTER attempts set aside: acknowledged, recorded by id and kind
        only, counted, and the person told to send /start. It never blocks their chat.
        """
        started = time.perf_counter()
        kind, update_id = inputs.kind(update), inputs.update_id(update)
        self.metrics.updates.labels(kind).inc()
        ticket = object()
        self.busy[ticket] = time.monotonic()
        try:
            for attempt in range(1, QUARANTINE_AFTER + 1):
                _outcome.set(None)
                try:
                    await self._handle(update, update_id)
                    self.store_error = None
                    break
                except Exception as exc:  # never a crash; never content in the log
                    fault = self.store.fault(exc)
                    if fault is not None:
                        self._store_failed(fault)
                        log.error("update %s not handled, kept for later: %s", update_id,
                                  fault, extra={"update_id": update_id, "error": fault})
                        return False
                    log.error("update %s failed (attempt %d): %s", update_id, attempt,
                              type(exc).__name__,
                              extra={"update_id": update_id, "error": type(exc).__name__})
                    if attempt == QUARANTINE_AFTER:
                        return await self._quarantine(update, update_id, kind, exc)
        finally:
            del self.busy[ticket]
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        log.info("update %s handled in %.1f ms", update_id, 1000 * elapsed,
                 extra={"update_id": update_id, "kind": kind,
                        "ms": round(1000 * elapsed, 1), "outcome_level": _outcome.get()})
        return True

    def _store_failed(self, why: str) -> None:
        self.store_error = why
        self.metrics.store_errors.inc()

    async def _quarantine(self, update: dict[str, Any], update_id: int | None, kind: str,
                          exc: Exception) -> bool:
        """Set aside an update that kept failing; tell the person, if it was theirs."""
        self.metrics.quarantined.labels(kind).inc()
        log.error("update %s set aside after %d failures (%s); the person is asked to "
                  "send /start", update_id, QUARANTINE_AFTER, type(exc).__name__,
                  extra={"update_id": update_id, "error": type(exc).__name__})
        query = inputs.query_id(update)
        if query is not None:
            await self._answer_query(query, "")
        read = inputs.read(update, self.username)
        notice = None
        if read is not None and access.authorize(*read, self.roles) == "person":
            key, event = read
            tx = self.conversations.texts_in(self.conversations.pick_language(event.language))
            notice = (key, [("sendMessage", {"chat_id": key.chat_id, "parse_mode": "HTML",
                                             "text": render.esc(tx.failed)})])
        if update_id is None:
            return True  # (nothing to record it by; Telegram always gives one)
        try:
            await self.store.quarantine(update_id, kind, type(exc).__name__, notice)
        except Exception as again:
            fault = self.store.fault(again)
            if fault is not None:
                self._store_failed(fault)
                return False
            raise
        if notice is not None:
            await self.delivery.wake(notice[0])
        return True

    async def _handle(self, update: dict[str, Any], update_id: int | None) -> None:
        member = inputs.member_change(update)
        if member is not None:
            if member.chat_type == "private":
                if member.status == "kicked":
                    await self.store.set_blocked(Key(member.chat_id, member.user_id))
            else:  # added to, promoted in, or removed from a group or channel
                await self.store.group_seen(member.chat_id, member.chat_type, member.title,
                                            member.status)
                log.info("%s %s: now %s", member.chat_type, member.chat_id, member.status)
            return
        read = inputs.read(update, self.username)
        query = inputs.query_id(update)
        role = access.authorize(*read, self.roles) if read is not None else None
        if read is None or role is None:  # refused, or nothing for us: change nothing
            if query is not None:
                await self._answer_query(query, "")
            return
        key, event = read
        if role == "staff":
            await self._take(key, event, query or "")
            return
        if role == "admin":
            await self._stats(key, event.payload)
            return

        def decide(conv: Conversation) -> Decision:
            if conv.blocked:  # they wrote to us again, so they unblocked the bot
                conv = replace(conv, blocked=False)
            return self.conversations.decide(conv, event, self.clock())

        self._answering[key.user_id] += 1
        try:
            async with self.locks(key):
                decision = await self._commit(key, update_id, decide)
            # committed: from here on nothing is lost, whatever fails
            if decision is not None:
                self._count(decision.records)
            if query is not None:
                await self._answer_query(query, decision.toast if decision else "")
            await self._ride_webhook(key)
        except BaseException:
            self._wake_soon(key.user_id)  # (its notification was passed over)
            raise
        finally:
            self._answering[key.user_id] -= 1
            if not self._answering[key.user_id]:
                del self._answering[key.user_id]
        await self.delivery.wake(key)
        if decision is not None and decision.forget:
            await self._forgotten(key)

    async def _forgotten(self, key: Key) -> None:
        """After the commit that erased a person: truncate the WAL, and erase them from
        this bot's own backups too."""
        await self.store.checkpoint()
        if self.settings.backup_dir is not None:
            await asyncio.to_thread(maintenance.erase_from_backups, self.settings.backup_dir,
                                    key.user_id)

    def _count(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, data in records:
            if kind == "event" and data["kind"] == "started":
                self.metrics.started.inc()
            elif kind == "event" and data["kind"] == "finished":
                _outcome.set(data["level"])
                self.metrics.finished.labels(data["level"]).inc()
                for rule in data.get("rules", ()):
                    self.metrics.rules.labels(rule).inc()

    async def _take(self, key: Key, event: Any, query_id: str) -> None:
        """A clinician pressed "I'm on it": record who, and show it to the other staff.
        A press that is not on that alert's own message in its staff chat gets the
        same silent answer as any refused press."""
        who = f"@{event.username}" if event.username else event.name or str(key.user_id)
        if not event.payload or event.message_id is None:
            await self._answer_query(query_id, "")
            return
        alert_id = int(event.payload)  # (inputs: 1 to 15 ASCII digits)
        result, taker = await self.store.take_alert(alert_id, key.chat_id, event.message_id,
                                                    who)
        tx = self.conversations.texts  # the staff's language
        if result != "taken":
            await self._answer_query(query_id, tx.alert_already.replace("{who}", taker)
                                     if result == "already" and taker else "")
            return
        await self._answer_query(query_id, tx.alert_taken)
        stamp = time.strftime("%H:%M UTC", time.gmtime())
        with contextlib.suppress(Rejected, Blocked):
            await self._call("editMessageReplyMarkup", {
                "chat_id": key.chat_id, "message_id": event.message_id,
                "reply_markup": render.keyboard([[(
                    "✋ " + tx.alert_on_it.replace("{who}", who) + f" ({stamp})",
                    f"!take|{alert_id}")]])})

    async def _stats(self, key: Key, payload: str) -> None:
        """Counts for admins: interviews and outcomes by level and source; alert health."""
        try:
            days = float(payload) if payload else 30.0
        except ValueError:
            days = 30.0
        stats = await self.store.stats(days)
        lines = [f"<b>Last {days:g} days</b>",
                 f"Interviews started: {stats['started']}, finished: {stats['finished']}",
                 "By level: " + (", ".join(f"{k} {v}" for k, v in sorted(stats['levels'].items()))
                                 or "none"),
                 "By source: " + (", ".join(f"{render.esc(k)} {v}"
                                            for k, v in sorted(stats['sources'].items()))
                                  or "none")]
        for flow, counts in sorted(stats["flows"].items()):  # each flow's own line
            finished = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "started")
            lines.append(f"{render.esc(flow)}: started {counts['started']}, finished "
                         f"{sum(v for k, v in counts.items() if k != 'started')}"
                         + (f" ({finished})" if finished else ""))
        a = stats["alerts"]
        lines.append(f"Alerts: {a['created']} created, {a['sent']} sent, {a['taken']} taken, "
                     f"{a['failing']} failing" + (f" (last error: {render.esc(a['last_error'])})"
                                                  if a["last_error"] else ""))
        with contextlib.suppress(Rejected, Blocked):
            await self._call("sendMessage", {"chat_id": key.chat_id, "text": "\n".join(lines),
                                             "parse_mode": "HTML"})

    async def _answer_query(self, query_id: str, text: str) -> None:
        """Stop the button's spinner (with a short notice if `text`).

        In webhook mode the answer rides on the webhook's response, made by Telegram
        once the update is committed; its result is not needed.
        """
        reply = _webhook_reply.get()
        if reply is not None and not reply:
            reply.append({"method": "answerCallbackQuery", "callback_query_id": query_id,
                          **({"text": text} if text else {})})
            return
        with contextlib.suppress(TelegramError):  # a late answer is harmless
            await self.application.bot.answer_callback_query(query_id, text=text or None)

    # ------------------------------------------------------------ sending

    async def flush(self) -> None:
        """Send whatever the outbox holds now, failing lanes included (housekeeping's
        safety net every minute; the scheduler itself retries failures with backoff)."""
        await self.delivery.wake_all(retry=True)

    async def _ride_webhook(self, key: Key) -> None:
        """In webhook mode, put one of this person's new calls on the webhook's
        response (see `_for_webhook_reply`); it is recorded as made once the response
        is written (a crash before that leaves it in the outbox: sent again, harmlessly,
        as an edit is)."""
        reply = _webhook_reply.get()
        if reply is None or reply:
            return
        pending = [out for out in await self.store.pending(key)
                   if out.key == key and not self.delivery.taken(out.id)]
        out = _for_webhook_reply(pending)
        if out is None:
            return
        ridden = _ridden.get()
        if ridden is None:
            return
        reply.append({"method": out.method, **_api_params(out)})
        ridden.append(out)
        self.delivery.in_flight.add(out.id)  # (the scheduler leaves it alone)

    def _record_soon(self, out: Outgoing, question: tuple[int, int] | None = None) -> None:
        """Record a call as made in the next group commit, without waiting for it: the
        chat's next call goes out meanwhile, and this one stays in flight (never made
        again by this process) until its record is committed."""
        task = asyncio.create_task(self._record(out, question=question))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)
        task.add_done_callback(lambda _: self.delivery.made(out.id))
        task.add_done_callback(_log_failure)

    async def _deliver(self, out: Outgoing) -> Verdict:
        """One attempt at a committed call, for the delivery scheduler. A call made is
        recorded in the next group commit (`_record_soon`); an alert, with the notice
        that follows from it, before the verdict is given."""
        alert = out.params.get("_alert")
        params = _api_params(out)
        if self.settings.paid_broadcast and priority(out) == Priority.BULK:
            params["allow_paid_broadcast"] = True  # (Telegram charges Stars past 30/s)
        try:
            result = await self._attempt(out.method, params)
        except Later as later:
            if alert is not None and not later.limited:
                await self.store.alert_failed(alert, "Telegram unreachable")
            return Verdict("retry", later.after, later.limited)
        except (Rejected, Blocked) as exc:
            if alert is not None:  # e.g. the bot was removed from the staff chat
                log.warning("alert %s not delivered: %s", alert, type(exc).__name__)
                await self.store.alert_failed(alert, f"{type(exc).__name__}: {exc}")
                return Verdict("retry", ALERT_RETRY)
            if isinstance(exc, Blocked):
                log.info("chat %s blocked the bot; not sending", out.key.chat_id)
                await self.store.set_blocked(out.key)
                return STOP
            self._record_soon(out)  # retrying the same call cannot help
            return RECORDING
        if alert is not None:
            message_id = result.get("message_id", 0) if isinstance(result, dict) else 0
            person = Key(out.key.user_id, out.key.user_id)
            # only now is it true that a clinician was told
            notify = ("sendMessage", {"chat_id": out.key.user_id, "parse_mode": "HTML",
                                      "text": render.esc(out.params.get("_notify") or
                                                         self.conversations.texts.notified)})
            await self._record(out, alert=(alert, message_id), then=((person, *notify),))
            await self.delivery.wake(person)
            return DONE
        interview = out.params.get(render.QUESTION)
        question = (interview, result["message_id"]) if interview is not None and \
            isinstance(result, dict) and "message_id" in result else None
        self._record_soon(out, question)
        return RECORDING

    async def _record(self, out: Outgoing, question: tuple[int, int] | None = None,
                      **alert: Any) -> None:
        """Record a call as made, trying again (with backoff) while the store cannot
        commit: the call is not made again meanwhile (it is in flight)."""
        wait = 0.5
        while True:
            try:
                if question is None:
                    await self.store.sent(out.key, (out.id,), **alert)
                else:  # (their next update reads the question's message id: in turn)
                    async with self.locks(out.key):
                        await self.store.sent(out.key, (out.id,), question, **alert)
                return
            except Exception as exc:
                fault = self.store.fault(exc)
                if fault is None:
                    raise
                self._store_failed(fault)
                log.error("cannot record a call as made: %s", fault)
                await asyncio.sleep(wait)
                wait = min(2 * wait, STORE_RETRY_MAX)

    async def _attempt(self, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call: its result; Later, Rejected or Blocked if it failed."""
        try:
            result = await self.application.bot.do_api_request(method, api_kwargs=params)
            return result if result is not None else True
        except RetryAfter as exc:
            self.metrics.api_errors.labels("429").inc()
            self.metrics.retries.inc()
            wait = exc.retry_after
            raise Later(wait.total_seconds() if isinstance(wait, timedelta) else float(wait),
                        limited=True) from None
        except BadRequest as exc:
            if "not modified" in exc.message.lower():
                return True
            self.metrics.api_errors.labels("400").inc()
            log.warning("%s rejected: %s", method, exc.message[:80])
            raise Rejected(exc.message[:80]) from None
        except Forbidden as exc:
            self.metrics.api_errors.labels("403").inc()
            raise Blocked(exc.message[:80]) from None
        except NetworkError:  # (python-telegram-bot's for timeouts and 5xx too)
            self.metrics.api_errors.labels("network").inc()
            self.metrics.retries.inc()
            raise Later() from None
        except Exception as exc:  # (another TelegramError, or none): would fail again
            self.metrics.api_errors.labels("other").inc()
            log.warning("%s failed: %s", method, type(exc).__name__)
            raise Rejected(type(exc).__name__) from None

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """A call made directly, not from the outbox (a staff button's edit, /stats): one
        `_attempt` after another while it may succeed later; None if it still could not
        be made. Rejected and Blocked are raised as `_attempt` raises them."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                return await self._attempt(method, params)
            except Later as later:
                await asyncio.sleep(later.after if later.after is not None
                                    else self.retry_base * 2 ** attempt)
        log.warning("%s failed %d times; given up", method, SEND_ATTEMPTS)
        return None

    # ------------------------------------------------------------ check-ins

    async def _commit(self, key: Key, update_id: int | None,
                      decide: Callable[[Conversation], Decision]) -> Decision | None:
        """Under the person's lock: read their conversation, decide, and commit the new
        state and the calls to make, before anything is sent. None for an update
        already handled."""
        decision: Decision | None = None
        async with self.store.update(update_id, key) as tx:
            if not tx.duplicate:
                decision = decide(tx.conversation)
                tx.save(decision.conversation, decision.log, decision.calls,
                        decision.records)
        if tx.duplicate:  # (the store may only find out when committing)
            decision = None
        return decision

    async def run_due(self) -> int:
        """Send every check-in whose time has come (also those that fell due while the bot
        was down), each once: it is claimed in the same commit as its message, under the
        person's lock, and its message leaves the outbox as soon as Telegram took it."""
        now, handled = self.clock(), 0
        for item in await self.store.due(now):
            async with self.locks(item.key):
                if item.id not in {s.id for s in await self.store.scheduled(item.key)}:
                    continue  # handled meanwhile (cancelled, or claimed)
                decision = await self._commit(
                    item.key, None, lambda conv, item=item: self.conversations.due(conv, item, now))
                assert decision is not None  # (no update id: never a duplicate)
                self._count(decision.records)
            await self.delivery.wake(item.key)
            handled += 1
        return handled

    async def schedule_loop(self, every: float = 20) -> None:
        """Check for due check-ins every `every` seconds (first at once)."""
        while not self.stopping.is_set():
            try:
                await self.run_due()
            except Exception as exc:  # never content in the log
                log.error("check-ins failed: %s", type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)

    # ------------------------------------------------------------ polling

    async def poll(self) -> None:
        """Long-poll getUpdates; move the offset only past updates done with (committed,
        or set aside). While the store cannot commit, wait, longer each time, and fetch
        the same updates again: Telegram keeps them until the offset passes them."""
        bot = self.application.bot
        await bot.delete_webhook(drop_pending_updates=False)
        offset: int | None = None
        backoff = 0.0
        while not self.stopping.is_set():
            self.polled_at = time.monotonic()
            if backoff:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                if self.stopping.is_set():
                    break
            try:
                # raw JSON, read by bot.telegram.inputs (not python-telegram-bot objects)
                updates = await self._unless_stopped(bot.do_api_request("getUpdates", api_kwargs={
                    "timeout": self.poll_timeout, "allowed_updates": ALLOWED_UPDATES,
                    **({"offset": offset} if offset is not None else {})},
                    read_timeout=self.poll_timeout + 10))
            except NetworkError as exc:
                log.warning("getUpdates failed: %s", type(exc).__name__)
                await asyncio.sleep(1)
                continue
            if updates is None:
                break  # told to stop while waiting for updates
            updates = [u for u in updates or () if isinstance(u, dict)
                       and inputs.update_id(u) is not None]
            if not updates:
                continue
            done = await self._process_batch(updates)
            offset = updates[-1]["update_id"] + 1
            kept = [update_id for update_id, ok in done.items() if not ok]
            if kept:
                offset = min(offset, *kept)  # fetch them again, after a pause
                backoff = min(max(2 * backoff, 0.5), STORE_RETRY_MAX)
            else:
                backoff = 0.0

    async def _unless_stopped(self, call: Awaitable[Any]) -> Any:
        """`call`'s result; None, the call dropped, if the bot is told to stop first.

        Only waiting is cut short this way: updates already fetched are handled to the
        end (replies included), so a stop does not leave a reply half sent.
        """
        task = asyncio.ensure_future(call)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            stopped = not task.done()
            if stopped:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        return None if stopped else task.result()

    async def _process_batch(self, updates: list[dict[str, Any]]) -> dict[int, bool]:
        """Each person's updates in order; different people at the same time."""
        queues: defaultdict[Any, list[dict[str, Any]]] = defaultdict(list)
        for update in updates:
            read = inputs.read(update, self.username)
            queues[read[0] if read else ("update", update["update_id"])].append(update)
        done: dict[int, bool] = {}

        async def run(queue: list[dict[str, Any]]) -> None:
            for update in queue:
                done[update["update_id"]] = ok = await self.process(update)
                if not ok:
                    break  # their later updates wait for this one (fetched again)

        await asyncio.gather(*(run(q) for q in queues.values()))
        return done

    # ------------------------------------------------------------ webhook

    def webhook_app(self) -> web.Application:
        """Our HTTP server: the webhook (200 only after the commit) in webhook mode, and
        in both modes `/healthz` (200 when ready) and `/metrics` (Prometheus)."""
        http.quiet_aiohttp()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[http.contained])
        app[http.POOL] = self.pool
        if self.settings.mode == "webhook":
            app.router.add_post(_path(self.settings.webhook_url or "/"), self._webhook)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        token = self.settings.metrics_token
        if token is None and not self.settings.loopback:
            return web.Response(status=403, text="set TRIAGEBOT_METRICS_TOKEN to serve metrics "
                                "on a listener other than loopback")
        if token and not _same(request.headers.get("Authorization"), f"Bearer {token}"):
            return web.Response(status=401, text="metrics need the bearer token")
        # (queued: every call waiting, whichever worker holds it; pending would claim)
        waiting = getattr(self.store, "queued", None) or self.store.pending
        queued = Counter(priority(out) for out in await waiting())
        for p in Priority:
            self.metrics.outbox.labels(p.name.lower()).set(queued[p])
        db = self.settings.db
        self.metrics.db_size.set(sum(p.stat().st_size for p in
                                     (db, db.with_name(db.name + "-wal")) if p.exists()))
        return web.Response(body=self.metrics.render(),
                            content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _healthz(self, _: web.Request) -> web.Response:
        """200 only when the bot can do its job: started, the store commits (a probe
        write at most every PROBE_EVERY seconds, and the last real commit worked), and
        no update or polling turn is stuck. Docker's HEALTHCHECK and systemd act on it."""
        problem = await self.unhealthy()
        return web.Response(text=problem or "ok", status=503 if problem else 200,
                            headers={"Cache-Control": "no-store"})

    async def unhealthy(self) -> str | None:
        """Why the bot cannot serve now, or None."""
        if not self.ready:
            return "starting"
        now = time.monotonic()
        if now - self._probed[0] >= PROBE_EVERY and (self._probing is None
                                                     or self._probing.done()):
            self._probing = asyncio.ensure_future(self._probe())
            if not self.store_error:  # (else answer at once; the probe may clear it)
                await asyncio.shield(self._probing)
        problem = self.store_error or self._probed[1]
        if problem:
            return f"store cannot commit: {problem}"
        if self.busy and now - min(self.busy.values()) > STUCK_AFTER:
            return "an update has been in hand for over a minute"
        if self.settings.mode == "polling" and \
                now - self.polled_at > self.poll_timeout + STORE_RETRY_MAX + STUCK_AFTER:
            return "the polling loop has stopped"
        return None

    async def _probe(self) -> None:
        """A test commit; one that works also clears the last update's store error."""
        try:
            await asyncio.wait_for(self.store.probe(), 10)
            error = None
        except Exception as exc:
            error = self.store.fault(exc) or type(exc).__name__
        self._probed = (time.monotonic(), error)
        if error is None:
            self.store_error = None

    async def _webhook(self, request: web.Request) -> web.Response:
        expected = self.settings.webhook_secret
        assert expected, "webhook mode needs a secret (checked by the settings)"
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        if given is None:
            return web.Response(status=401, text="missing secret token")
        if not _same(given, expected):
            return web.Response(status=403, text="wrong secret token")
        if not self.ready:
            return web.Response(status=503, text="starting")
        try:
            update = orjson.loads(await http.read_body(request, MAX_BODY))
            if not isinstance(update, dict) or inputs.update_id(update) is None:
                raise ValueError("not an update")
        except web.HTTPException:
            raise
        except Exception:  # the body is not logged: it may hold health answers
            log.warning("webhook body is not a valid update (%s bytes)",
                        request.content_length)
            return web.Response(status=400, text="not a valid update")
        reply: list[dict[str, Any]] = []
        ridden: list[Outgoing] = []
        token, token_ridden = _webhook_reply.set(reply), _ridden.set(ridden)
        try:
            ok = await self.process(update)
        finally:
            _webhook_reply.reset(token)
            _ridden.reset(token_ridden)
        if not ok:  # the store cannot commit now: Telegram delivers it again later
            return web.Response(status=503, text="store unavailable")
        if not reply:
            return web.Response(status=200)
        response = web.Response(body=orjson.dumps(reply[0]), content_type="application/json")
        try:
            await response.prepare(request)
            await response.write_eof()
        except BaseException:  # not answered: the scheduler makes the call itself
            for out in ridden:
                self.delivery.in_flight.discard(out.id)
                await self.delivery.wake(out.key)
            raise
        for out in ridden:
            self._record_soon(out)
        return response

    async def set_webhook(self) -> None:
        try:
            await self.application.bot.set_webhook(
                url=self.settings.webhook_url or "", secret_token=self.settings.webhook_secret,
                allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
        except (NetworkError, RetryAfter) as exc:
            raise Transient(_api_error(exc)) from None
        except TelegramError as exc:
            raise StartupFailed(f"Telegram refused setWebhook: {_api_error(exc)}") from None

    # ------------------------------------------------------------ housekeeping

    async def housekeeping(self, every: float = 60, purge_every: float = 3600) -> None:
        """Every minute, a safety net for sending (the scheduler retries by itself);
        apply the retention hourly; take scheduled backups if a backup folder is set."""
        last_purge = last_backup = time.monotonic()
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)
            if self.stopping.is_set():
                break
            try:
                if time.monotonic() - last_purge >= purge_every:
                    last_purge = time.monotonic()
                    removed = await self.store.purge(self.conversations.retention_days,
                                                     once_per=purge_every)
                    if removed:
                        log.info("retention: deleted %d old conversations", removed)
                folder = self.settings.backup_dir
                if folder and self.settings.db_url is None and \
                        time.monotonic() - last_backup >= self.settings.backup_hours * 3600:
                    last_backup = time.monotonic()
                    made = await asyncio.to_thread(maintenance.scheduled, self.settings.db,
                                                   folder, self.settings.backup_keep)
                    log.info("backup written: %s", made.name)
                await self.flush()
            except Exception as exc:
                log.error("housekeeping failed: %s", type(exc).__name__)


def _log_failure(task: asyncio.Task) -> None:
    """A background record that failed (not for the store: that one retries) is logged
    by type; its call may then be made again later, never lost."""
    if not task.cancelled() and task.exception() is not None:
        log.error("recording a call as made failed: %s", type(task.exception()).__name__)


def _api_params(out: Outgoing) -> dict[str, Any]:
    """A stored call's parameters for the Bot API (ours start with "_")."""
    return {k: v for k, v in out.params.items() if not k.startswith("_")}


def _same(given: str | None, expected: str) -> bool:
    """A header equals `expected`, compared in constant time. (aiohttp keeps undecodable
    bytes as surrogates, which plain encode() refuses: that was a 500 before.)"""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path or "/"


def settle_garbage_collector() -> None:
    """Once started: keep what start-up built (flows, texts, libraries) out of every
    later collection, and collect the young generation every 10,000 new objects, not
    700. Under bench/webhook_load.py the collector had taken ~11 % of the bot's CPU,
    with 40-50 ms pauses for each full collection; after this, ~3 %."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def run(bot: TelegramBot) -> None:
    """Run until SIGINT/SIGTERM: polling, or the webhook server; then shut down cleanly.
    Raises StartupFailed (with the store and every thread closed) if it cannot start."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, bot.stopping.set)
    http.raise_open_files_limit()
    tasks: list[asyncio.Task] = []
    runner = web.AppRunner(bot.webhook_app(), access_log=None, shutdown_timeout=HTTP_GRACE,
                           keepalive_timeout=http.HEAD_TIMEOUT)
    try:
        await bot.start()
        if bot.stopping.is_set():
            return
        settle_garbage_collector()
        tasks += [asyncio.create_task(bot.housekeeping()),
                  asyncio.create_task(bot.schedule_loop())]
        await runner.setup()
        site = http.GuardedSite(runner, bot.settings.listen_host, bot.settings.listen_port,
                                bot.pool)
        try:
            await site.start()
            log.info("listening on %s:%s (%s mode)", bot.settings.listen_host,
                     site.port, bot.settings.mode)
        except OSError as exc:
            if bot.settings.mode == "webhook":  # without its port a webhook bot cannot work
                raise StartupFailed(f"cannot listen on {bot.settings.listen_host}:"
                                    f"{bot.settings.listen_port}: {exc.strerror}; set "
                                    "TRIAGEBOT_LISTEN to a free port") from None
            log.warning("polling without /healthz and /metrics: cannot listen on %s:%s (%s); "
                        "set TRIAGEBOT_LISTEN to a free port", bot.settings.listen_host,
                        bot.settings.listen_port, exc.strerror)
        if bot.settings.mode == "webhook":
            await _retrying("set the webhook", bot.set_webhook, bot.settings.start_timeout,
                            bot.stopping)
        else:
            tasks.append(asyncio.create_task(bot.poll()))
        await bot.stopping.wait()
    finally:
        bot.stopping.set()
        await runner.cleanup()  # finishes requests in flight first (HTTP_GRACE at most)
        # and the loops finish what they are doing: polled updates, replies, check-ins
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bot.stop(grace=SHUTDOWN_GRACE / 2)
