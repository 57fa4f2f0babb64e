"""The bot on Telegram: python-telegram-bot as the transport, our use case as the brain.

* Updates (their JSON, read by `inputs`) reach `process` from our own polling loop
  or our own webhook server (aiohttp). Both wait until the update's new state is
  committed before acknowledging it: the polling offset moves past an update, or
  the webhook answers 200, only then. The use case runs under a per-person lock,
  so one person's updates are handled in order while different people run at
  once, and their commits are grouped (see SqliteStore.update).
* Bot API calls go through python-telegram-bot's Bot (its rate limiter, errors and
  an aiohttp request); in webhook mode one call whose result is not needed (the
  button's answer, or an edit) rides on the webhook's response instead.
* Replies are sent after the commit from the store's outbox, with retries on
  429 and network errors; a 403 (the person blocked the bot) marks the
  conversation and stops sending. Whatever could not be sent is retried from
  the database, so a crash or an outage loses no reply.
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
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web
from aiolimiter import AsyncLimiter
from telegram import BotCommand
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, Application
from telegram.warnings import PTBUserWarning

from bot.conversation import Conversations, Decision
from bot.settings import Settings
from bot.store import Conversation, Key, Outgoing, maintenance
from bot.store.sqlite import SqliteStore
from bot.telegram import inputs, render
from bot.telegram.aiohttp_request import AiohttpRequest
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
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
SEND_ATTEMPTS = 5
WEBHOOK_REPLY_METHODS = ("editMessageReplyMarkup", "editMessageText")
POLL_TIMEOUT = 25  # seconds of long polling per getUpdates
SHUTDOWN_GRACE = 8  # seconds to finish work in hand after SIGTERM (Docker waits 10)
FAILED_UPDATE_ATTEMPTS = 3  # then an update that keeps failing is skipped (and logged)


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
        if _plain(record, token):  # e.g. the per-update line: ids and numbers only
            return record
        message = record.getMessage()
        if token in message:
            record.msg, record.args = message.replace(token, "<token>"), ()
        return record

    factory.redacts = token  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


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


class ChatPacer:
    """About one message a second per chat, allowing a short burst (Telegram's advice).

    python-telegram-bot's AIORateLimiter keeps the bot-wide 30 messages/s and the
    group limits; this adds the per-chat pace for private chats. Limiters are
    dropped when idle, so memory stays bounded.
    """

    def __init__(self, burst: int = 3, per_seconds: float = 3.0):
        self.burst, self.per_seconds = burst, per_seconds
        self._limiters: OrderedDict[int, AsyncLimiter] = OrderedDict()

    async def wait(self, chat_id: int) -> None:
        limiter = self._limiters.pop(chat_id, None) or AsyncLimiter(self.burst, self.per_seconds)
        self._limiters[chat_id] = limiter  # most recently used last
        while len(self._limiters) > 10_000:
            self._limiters.popitem(last=False)
        await limiter.acquire()


class Blocked(Exception):
    """The person blocked the bot (403): stop sending to them."""


class Rejected(Exception):
    """Telegram refused the call (400); retrying the same call cannot help."""


def _for_webhook_reply(pending: list[Outgoing]) -> Outgoing | None:
    """The call that may ride on the webhook's response instead of a request: an edit
    whose result is not needed, of a message no other call here touches (Telegram
    makes it after the others, so two edits of one message could land in reverse)."""
    touched = Counter((out.params.get("chat_id"), out.params.get("message_id"))
                      for out in pending)
    return next((out for out in pending if out.method in WEBHOOK_REPLY_METHODS
                 and touched[(out.params.get("chat_id"), out.params.get("message_id"))] == 1
                 and "_alert" not in out.params), None)


class TelegramBot:
    def __init__(self, settings: Settings, conversations: Conversations, store: SqliteStore,
                 *, poll_timeout: int = POLL_TIMEOUT, retry_base: float = 0.5,
                 rate_limiter: AIORateLimiter | None = None, pacer: ChatPacer | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.conversations = conversations
        self.store = store
        self.poll_timeout = poll_timeout
        self.retry_base = retry_base
        self.clock = clock  # wall time for expiry and check-ins; tests move it by hand
        self.locks = KeyedLocks()
        # written with the person's next update (see SqliteStore.update), or when idle:
        self.sent_ids: dict[int, tuple[int, ...]] = {}  # user -> outbox ids Telegram accepted
        self.questions: dict[Key, tuple[int, int]] = {}  # conversation -> (interview, message)
        self.metrics = Metrics()
        self.pacer = pacer or ChatPacer(burst=settings.chat_burst,
                                        per_seconds=float(settings.chat_burst))
        self.ready = False
        self.stopping = asyncio.Event()
        self.username: str | None = None
        assert settings.token, "checked by the CLI"
        redact_token_everywhere(settings.token)
        keep_answers_out_of_logs()
        self.application = (
            Application.builder().token(settings.token)
            .base_url(f"{settings.api_url}/bot").base_file_url(f"{settings.api_url}/file/bot")
            .request(AiohttpRequest())
            .get_updates_request(AiohttpRequest(pool_size=1))  # unused: see poll()
            .rate_limiter(rate_limiter or AIORateLimiter(overall_max_rate=settings.send_rate,
                                                         max_retries=2))
            .updater(None).build())

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.store.open(sole_writer=True)
        await self.application.initialize()
        self.username = self.application.bot.username
        self.conversations.username = self.username or ""
        self.conversations.token = self.settings.token or ""
        conversations = self.conversations
        await self.application.bot.set_my_commands(  # the default menu, then each language's
            [BotCommand(c, d) for c, d in conversations.commands(conversations.default_language)])
        for lang in conversations.languages:
            await self.application.bot.set_my_commands(
                [BotCommand(c, d) for c, d in conversations.commands(lang)], language_code=lang)
        await self.flush()  # replies committed before a crash or restart go out now
        self.ready = True
        log.info("ready as @%s", self.username)

    async def settle(self) -> None:
        """Write the deferred bookkeeping of people who have been quiet since."""
        sent, self.sent_ids = self.sent_ids, {}
        questions, self.questions = self.questions, {}
        try:
            await self.store.settle(sent, questions)
        except Exception:  # keep them for the next try
            for user, ids in sent.items():
                self.sent_ids[user] = (*ids, *self.sent_ids.get(user, ()))
            for key, value in questions.items():
                self.questions.setdefault(key, value)
            raise

    async def stop(self) -> None:
        self.ready = False
        with contextlib.suppress(Exception):
            await self.settle()
        with contextlib.suppress(Exception):
            await self.application.shutdown()
        await self.store.close()

    # ------------------------------------------------------------ one update

    async def process(self, update: dict[str, Any]) -> bool:
        """Handle one update (its JSON) completely; True once its state is committed."""
        started = time.perf_counter()
        kind, update_id = inputs.kind(update), inputs.update_id(update)
        self.metrics.updates.labels(kind).inc()
        _outcome.set(None)
        try:
            ok = await self._handle(update, update_id)
        except Exception as exc:  # never a crash; never content in the log
            ok = False
            log.error("update %s failed: %s", update_id, type(exc).__name__,
                      extra={"update_id": update_id, "error": type(exc).__name__})
        elapsed = time.perf_counter() - started
        self.metrics.latency.observe(elapsed)
        log.info("update %s handled in %.1f ms", update_id, 1000 * elapsed,
                 extra={"update_id": update_id, "kind": kind,
                        "ms": round(1000 * elapsed, 1), "outcome_level": _outcome.get()})
        return ok

    async def _handle(self, update: dict[str, Any], update_id: int | None) -> bool:
        member = inputs.member_change(update)
        if member is not None:
            if member.chat_type == "private":
                if member.status == "kicked":
                    await self.store.set_blocked(Key(member.chat_id, member.user_id))
            else:  # added to, promoted in, or removed from a group or channel
                await self.store.group_seen(member.chat_id, member.chat_type, member.title,
                                            member.status)
                log.info("%s %s: now %s", member.chat_type, member.chat_id, member.status)
            return True
        read = inputs.read(update, self.username)
        query = inputs.query_id(update)
        if read is None:
            if query is not None:
                await self._answer_query(query, "")
            return True
        key, event = read
        if event.kind == "take":
            await self._take(key, event, query or "")
            return True
        if event.kind == "command" and event.command == "stats" and \
                key.user_id in self.settings.admins and key.chat_id == key.user_id:
            await self._stats(key, event.payload)
            return True
        def decide(conv: Conversation) -> Decision:
            if conv.blocked:  # they wrote to us again, so they unblocked the bot
                conv = replace(conv, blocked=False)
            return self.conversations.decide(conv, event, self.clock())

        async with self.locks(key):
            decision = await self._commit(key, update_id, decide)
            if decision is not None:
                self._count(decision.records)
            if query is not None:
                await self._answer_query(query, decision.toast if decision else "")
            if decision is not None and decision.forget:
                await self.flush(key)  # close the confirmation's keyboard first
                await self.store.forget(key.user_id)
                tx = self.conversations.texts_in(
                    self.conversations.language_of(decision.conversation))
                with contextlib.suppress(Rejected, Blocked):
                    await self._call("sendMessage", {"chat_id": key.chat_id, "parse_mode": "HTML",
                                                     "text": render.esc(tx.forgotten)})
            await self.flush(key)
        return True

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
        """A clinician pressed "I'm on it": record who, and show it to the other staff."""
        who = f"@{event.username}" if event.username else event.name or str(key.user_id)
        try:
            alert_id = int(event.payload)
        except ValueError:
            await self._answer_query(query_id, "")
            return
        took, taker = await self.store.take_alert(alert_id, who)
        tx = self.conversations.texts  # the staff's language
        if not took:
            await self._answer_query(query_id, tx.alert_already.replace("{who}", taker)
                                     if taker else "")
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

    async def flush(self, key: Key | None = None) -> None:
        """Make every committed call still in the outbox, oldest first.

        Called with a key under that person's lock; without one (at start and
        hourly) it takes each person's lock in turn, so no call goes out twice.
        """
        if key is None:
            for person in dict.fromkeys(out.key for out in await self.store.pending()):
                async with self.locks(person):
                    await self.flush(person)
            await self.settle()
            return
        done: list[int] = []
        already = set(self.sent_ids.get(key.user_id, ()))  # sent, awaiting their delete
        pending = [out for out in await self.store.pending(key) if out.id not in already]
        by_webhook = _for_webhook_reply(pending)
        try:
            for out in pending:
                if out is by_webhook:
                    reply = _webhook_reply.get()
                    if reply is not None and not reply:
                        reply.append({"method": out.method, **out.params})
                        done.append(out.id)
                        continue
                if "_alert" in out.params:
                    await self._send_alert(out)  # a failing alert never holds up the person
                    continue
                try:
                    ok = await self._send(out)
                except Blocked:
                    log.info("chat %s blocked the bot; not sending", out.key.chat_id)
                    await self.store.set_blocked(out.key)
                    return
                if not ok:
                    return  # still failing: keep it (and what follows) for the next flush
                done.append(out.id)
        finally:
            if done:  # recorded with this person's next update (or at idle/shutdown);
                # after a crash before that, at most these calls are made again
                self.sent_ids[key.user_id] = (*self.sent_ids.get(key.user_id, ()), *done)

    async def _send(self, out: Outgoing) -> bool:
        params = {k: v for k, v in out.params.items() if not k.startswith("_")}
        try:
            result = await self._call(out.method, params)
        except Rejected:
            return True  # logged; retrying the same call cannot help
        if result is None:
            return False
        interview = out.params.get(render.QUESTION)
        if interview is not None and isinstance(result, dict) and "message_id" in result:
            self.questions[out.key] = (interview, result["message_id"])
        return True

    async def _send_alert(self, out: Outgoing) -> None:
        """Post a clinician alert; on failure keep it in the database and record why."""
        alert_id = out.params["_alert"]
        params = {k: v for k, v in out.params.items() if not k.startswith("_")}
        try:
            result = await self._call(out.method, params)
            error = None if result is not None else "Telegram unreachable"
        except (Rejected, Blocked) as exc:
            result, error = None, f"{type(exc).__name__}: {exc}"
        if error is not None:
            log.warning("alert %s not delivered: %s", alert_id, error)
            await self.store.alert_failed(alert_id, error)
            return
        message_id = result.get("message_id", 0) if isinstance(result, dict) else 0
        await self.store.alert_sent(alert_id, message_id)
        self.sent_ids[out.key.user_id] = (*self.sent_ids.get(out.key.user_id, ()), out.id)
        # only now is it true that a clinician was told
        with contextlib.suppress(Rejected, Blocked):
            await self._call("sendMessage", {
                "chat_id": out.key.user_id, "parse_mode": "HTML",
                "text": render.esc(out.params.get("_notify") or
                                   self.conversations.texts.notified)})

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """One Bot API call with retries; None if it could not be made now.

        A 400 that retrying cannot fix (e.g. an edit of a deleted message) is
        logged with its method and dropped, so one bad call never blocks a chat.
        """
        for attempt in range(SEND_ATTEMPTS):
            if method == "sendMessage":
                await self.pacer.wait(int(params["chat_id"]))
            try:
                result = await self.application.bot.do_api_request(method, api_kwargs=params)
                return result if result is not None else True
            except RetryAfter as exc:
                self.metrics.api_errors.labels("429").inc()
                self.metrics.retries.inc()
                wait = exc.retry_after
                await asyncio.sleep(wait.total_seconds() if isinstance(wait, timedelta) else wait)
            except BadRequest as exc:
                if "not modified" in exc.message.lower():
                    return True
                self.metrics.api_errors.labels("400").inc()
                log.warning("%s rejected: %s", method, exc.message[:80])
                raise Rejected(exc.message[:80]) from exc
            except Forbidden as exc:
                self.metrics.api_errors.labels("403").inc()
                raise Blocked(exc.message[:80]) from exc
            except NetworkError:
                self.metrics.api_errors.labels("network").inc()
                self.metrics.retries.inc()
                await asyncio.sleep(self.retry_base * 2 ** attempt)
        log.warning("%s failed %d times; kept in the outbox", method, SEND_ATTEMPTS)
        return None

    # ------------------------------------------------------------ check-ins

    async def _commit(self, key: Key, update_id: int | None,
                      decide: Callable[[Conversation], Decision]) -> Decision | None:
        """Under the person's lock: read their conversation, decide, and commit the new
        state and the calls to make (with the bookkeeping of earlier sends), before
        anything is sent. None for an update already handled."""
        sent = self.sent_ids.pop(key.user_id, ())
        question = self.questions.pop(key, None)
        decision: Decision | None = None
        try:
            async with self.store.update(update_id, key, sent, question) as tx:
                if not tx.duplicate:
                    decision = decide(tx.conversation)
                    tx.save(decision.conversation, decision.log, decision.calls,
                            decision.records)
            if tx.duplicate:  # (the store may only find out when committing)
                decision = None
        except BaseException:  # not committed: keep the bookkeeping for the next try
            self.sent_ids[key.user_id] = (*sent, *self.sent_ids.get(key.user_id, ()))
            if question is not None:
                self.questions.setdefault(key, question)
            raise
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
                await self.flush(item.key)
            handled += 1
        if handled:
            await self.settle()  # sent check-ins leave the outbox now, not with a later update
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
        """Long-poll getUpdates; move the offset only past committed updates."""
        bot = self.application.bot
        await bot.delete_webhook(drop_pending_updates=False)
        offset: int | None = None
        failures: defaultdict[int, int] = defaultdict(int)
        while not self.stopping.is_set():
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
            for update_id, ok in done.items():
                if not ok:
                    failures[update_id] += 1
                    if failures[update_id] < FAILED_UPDATE_ATTEMPTS:
                        offset = min(offset, update_id)  # fetch it again
                    else:
                        log.error("update %s skipped after %d failures", update_id,
                                  FAILED_UPDATE_ATTEMPTS)

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
                done[update["update_id"]] = await self.process(update)

        await asyncio.gather(*(run(q) for q in queues.values()))
        return done

    # ------------------------------------------------------------ webhook

    def webhook_app(self) -> web.Application:
        """Our HTTP server: the webhook (200 only after the commit) in webhook mode, and
        in both modes `/healthz` (200 when ready) and `/metrics` (Prometheus)."""
        app = web.Application(client_max_size=1 << 20)
        if self.settings.mode == "webhook":
            app.router.add_post(_path(self.settings.webhook_url or "/"), self._webhook)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        token = self.settings.metrics_token
        if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(),
                                             f"Bearer {token}".encode()):
            return web.Response(status=401, text="metrics need the bearer token")
        db = self.settings.db
        self.metrics.db_size.set(sum(p.stat().st_size for p in
                                     (db, db.with_name(db.name + "-wal")) if p.exists()))
        return web.Response(body=self.metrics.render(),
                            content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok" if self.ready else "starting",
                            status=200 if self.ready else 503)

    async def _webhook(self, request: web.Request) -> web.Response:
        expected = self.settings.webhook_secret
        if expected:
            given = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
            if given is None:
                return web.Response(status=401, text="missing secret token")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.Response(status=403, text="wrong secret token")
        if not self.ready:
            return web.Response(status=503, text="starting")
        try:
            update = orjson.loads(await request.read())
            if not isinstance(update, dict) or inputs.update_id(update) is None:
                raise ValueError("not an update")
        except Exception:  # the body is not logged: it may hold health answers
            log.warning("webhook body is not a valid update (%s bytes)",
                        request.content_length)
            return web.Response(status=400, text="not a valid update")
        reply: list[dict[str, Any]] = []
        token = _webhook_reply.set(reply)
        try:
            ok = await self.process(update)
        finally:
            _webhook_reply.reset(token)
        if not ok:  # Telegram delivers it again (and ignores any reply)
            return web.Response(status=500)
        if reply:
            return web.Response(body=orjson.dumps(reply[0]), content_type="application/json")
        return web.Response(status=200)

    async def set_webhook(self) -> None:
        await self.application.bot.set_webhook(
            url=self.settings.webhook_url or "", secret_token=self.settings.webhook_secret,
            allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)

    # ------------------------------------------------------------ housekeeping

    async def housekeeping(self, every: float = 60, purge_every: float = 3600) -> None:
        """Retry unsent replies and alerts every minute; apply the retention hourly;
        take scheduled backups if a backup folder is set."""
        last_purge = last_backup = time.monotonic()
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), every)
            if self.stopping.is_set():
                break
            try:
                if time.monotonic() - last_purge >= purge_every:
                    last_purge = time.monotonic()
                    removed = await self.store.purge(self.conversations.retention_days)
                    if removed:
                        log.info("retention: deleted %d old conversations", removed)
                folder = self.settings.backup_dir
                if folder and time.monotonic() - last_backup >= self.settings.backup_hours * 3600:
                    last_backup = time.monotonic()
                    made = await asyncio.to_thread(maintenance.scheduled, self.settings.db,
                                                   folder, self.settings.backup_keep)
                    log.info("backup written: %s", made.name)
                await self.flush()
            except Exception as exc:
                log.error("housekeeping failed: %s", type(exc).__name__)


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
    """Run until SIGINT/SIGTERM: polling, or the webhook server; then shut down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, bot.stopping.set)
    await bot.start()
    settle_garbage_collector()
    tasks = [asyncio.create_task(bot.housekeeping()), asyncio.create_task(bot.schedule_loop())]
    runner = web.AppRunner(bot.webhook_app(), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, bot.settings.listen_host, bot.settings.listen_port)
        try:
            await site.start()
            log.info("listening on %s:%s (%s mode)", bot.settings.listen_host,
                     bot.settings.listen_port, bot.settings.mode)
        except OSError as exc:
            if bot.settings.mode == "webhook":
                raise  # without its port a webhook bot cannot work
            log.warning("polling without /healthz and /metrics: cannot listen on %s:%s (%s); "
                        "set TRIAGEBOT_LISTEN to a free port", bot.settings.listen_host,
                        bot.settings.listen_port, exc.strerror)
        if bot.settings.mode == "webhook":
            await bot.set_webhook()
        else:
            tasks.append(asyncio.create_task(bot.poll()))
        await bot.stopping.wait()
    finally:
        bot.stopping.set()
        await runner.cleanup()  # finishes requests in flight first
        # and the loops finish what they are doing: polled updates, replies, check-ins
        await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bot.stop()
