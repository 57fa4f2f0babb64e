"""Delivery: the outbox's committed calls, sent by a scheduler, not by the update.

An update's handler commits its new state and its calls (the outbox) and returns;
the webhook is acknowledged then. This scheduler sends the calls:

* **In order per lane**: a lane is one person's calls to one chat (their private
  chat; a staff chat for their alerts). A reply never overtakes an earlier one to
  the same chat, an edit never precedes the message it edits, and a staff chat
  that is slow to take alerts never holds up the person's own replies.
* **Earliest deadline first**: a call's deadline is when it was queued plus its
  class's slack: emergency advice and staff alerts before anything else; replies
  to people mid-interview 0 s; first contact 2 s; proactive messages (check-ins,
  nudges, invitations) 60 s. A lane takes the earliest deadline among its calls,
  so an emergency behind a routine message carries it along. Under a backlog
  nobody starves: a first contact waits only behind replies queued up to 2 s
  after it, not behind every reply there will be.
* **Paced as Telegram asks, and no more**: a private chat about one message a
  second after a short burst, a group 20 a minute, proactive messages at most
  `bulk_rate` a second; a bot-wide cap only if the operator sets one. A 429 makes
  that chat wait its `retry_after`; 429s from two chats within a second are the
  bot-wide limit, so everything waits, and then keeps under the rate Telegram
  allowed, raised 5 % a second until the next 429 (or dropped after a quiet minute).
* **Failures retried per lane with backoff** (0.5 s doubling to 30 s, with
  jitter), never on a timer, so a Telegram outage ends for each chat soon after
  Telegram is back.

The scheduler holds no call of its own: what to send comes from the store's outbox,
and `deliver` records each call as made as soon as Telegram took it, so a crash
re-sends at most the calls in flight at that moment. The outbox is the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.store import Key, Outgoing
from bot.telegram.render import PRIORITY, Priority

log = logging.getLogger("triagebot.delivery")

# seconds added to when a call was queued to give its deadline
SLACK = {Priority.EMERGENCY: -86400.0, Priority.REPLY: 0.0, Priority.FIRST: 2.0,
         Priority.BULK: 60.0}
PACED = frozenset({"sendMessage"})  # what Telegram's per-chat and bot-wide limits count
GLOBAL_WINDOW = 1.0  # 429s from two chats within this many seconds: the bot-wide limit
RAISE_EVERY = 1.0  # seconds between raises of a learned bot-wide rate
FORGET_LIMIT_AFTER = 60.0  # seconds without a bot-wide 429 before the learned rate goes


def priority(out: Outgoing) -> Priority:
    if "_alert" in out.params:
        return Priority.EMERGENCY
    value = out.params.get(PRIORITY, Priority.REPLY)
    return Priority(value) if value in Priority._value2member_map_ else Priority.REPLY


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of one attempt at a call: done (made, or dropped for good, and
    recorded either way; `recording`: its record is still being committed, and the
    deliverer takes it out of `in_flight` once it is), retry (after `after` seconds, or
    the lane's backoff; `limited`: Telegram answered 429), or stop (the chat is closed
    to us: the lane ends)."""

    kind: Literal["done", "retry", "stop"]
    after: float | None = None
    limited: bool = False
    recording: bool = False


DONE, STOP, RETRY = Verdict("done"), Verdict("stop"), Verdict("retry")
RECORDING = Verdict("done", recording=True)


class Outbox(Protocol):
    async def pending(self, key: Key | None = None) -> list[Outgoing]: ...


class Bucket:
    """A token bucket: `burst` at once, then `rate` a second."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, max(1.0, burst)
        self.level, self.at = self.burst, now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.level >= 1 else (1 - self.level) / self.rate

    def take(self, now: float) -> None:
        self.wait(now)
        self.level -= 1


@dataclass(slots=True)
class _Lane:
    state: Literal["queued", "waiting", "sending"] = "queued"
    token: int = 0  # bumped on every (re)queue: older heap entries are stale
    deadline: float = 0.0
    failures: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class Limits:
    """Pacing, from the settings (see module docstring)."""

    chat_burst: int = 3
    chat_rate: float = 1.0
    group_per_minute: int = 20
    bulk_rate: float = 30.0
    overall_rate: float | None = None  # the operator's bot-wide cap; None: Telegram's 429s
    retry_base: float = 0.5
    retry_max: float = 30.0
    workers: int = 32  # calls in flight at once
    floor_rate: float = 1.0  # the least a bot-wide 429 brings the rate down to, a second


@dataclass
class Stats:
    limited_chat: int = 0  # 429s taken as one chat's
    limited_bot: int = 0  # 429s taken as the bot-wide limit


class Delivery:
    """Sends what the outbox holds (see the module docstring)."""

    def __init__(self, outbox: Outbox, deliver: Callable[[Outgoing], Awaitable[Verdict]],
                 limits: Limits | None = None, clock: Callable[[], float] = time.monotonic,
                 on_limited: Callable[[str], None] = lambda scope: None):
        self.outbox, self.deliver, self.on_limited = outbox, deliver, on_limited
        self.limits = limits or Limits()
        self.clock = clock
        self.in_flight: set[int] = set()  # outbox ids being sent (or riding a webhook reply)
        # ids made and recorded here lately: a read of the outbox begun before their
        # record committed (PostgreSQL's reads wait) must not bring them back
        self._made: dict[int, float] = {}
        self.stats = Stats()
        self._lanes: dict[Key, _Lane] = {}
        self._heap: list[tuple[float, int, Key, int]] = []
        self._order = itertools.count()
        self._seen: dict[int, float] = {}  # outbox id -> when it was first queued here
        self._chats: OrderedDict[int, Bucket] = OrderedDict()
        self._chat_pause: dict[int, float] = {}
        self._paused_until = 0.0
        now = clock()
        self._cap = Bucket(self.limits.overall_rate, self.limits.overall_rate, now) \
            if self.limits.overall_rate else None
        self._learned: Bucket | None = None  # the bot-wide rate Telegram allowed
        self._learned_at = self._raised_at = 0.0
        self._bulk = Bucket(self.limits.bulk_rate, self.limits.bulk_rate, now)
        self._limited: deque[tuple[float, int]] = deque()  # (when, chat) of recent 429s
        self._sent: deque[float] = deque()  # when paced calls went out, the last second
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task] = []
        self._closing = False  # stopping: no new call is begun

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if not self._workers:
            self._closing = False
            self._workers = [asyncio.create_task(self._work())
                             for _ in range(self.limits.workers)]

    async def stop(self, grace: float = 0.0) -> None:
        """Let calls in flight finish for up to `grace` seconds, then stop; whatever is
        not sent stays in the outbox for the next start."""
        self._closing = True
        if grace:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._in_flight_done(), grace)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
        self._lanes.clear()
        self._heap.clear()
        self._idle.set()

    def taken(self, out_id: int) -> bool:
        """Being made, or made and recorded lately, by this process: not to send."""
        return out_id in self.in_flight or out_id in self._made

    def made(self, out_id: int) -> None:
        """A call's record as made has committed (its sender takes it out of flight)."""
        self.in_flight.discard(out_id)
        self._made[out_id] = self.clock()

    async def _in_flight_done(self) -> None:
        while any(lane.state == "sending" for lane in self._lanes.values()):
            await asyncio.sleep(0.02)

    async def idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is waiting to be sent (tests; shutdown). True if so."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------ queueing

    async def wake(self, key: Key, retry: bool = False) -> None:
        """New calls for this person were committed (or may have been): send them, in
        each of their lanes (their chat; staff chats, for alerts about them).
        `retry`: a lane waiting to retry a failure tries now (its chat's pace and any
        429 pause still hold)."""
        self._queue(await self.outbox.pending(key), retry)

    def _queue(self, pending: list[Outgoing], retry: bool) -> None:
        """Queue the lanes of calls just read, all at once: a store whose reads await
        (PostgreSQL) must not let the first lane go before a later, more urgent one
        is queued."""
        now = self.clock()
        lanes: dict[Key, list[Outgoing]] = {}
        for out in pending:
            if not self.taken(out.id):
                self._seen.setdefault(out.id, now)
                lanes.setdefault(out.key, []).append(out)
        for key, calls in lanes.items():
            self._wake(key, calls, retry)

    def _wake(self, key: Key, calls: list[Outgoing], retry: bool) -> None:
        deadline = self._deadline(calls)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(deadline=deadline)
            self._idle.clear()
            self._push(key, lane)
        elif lane.state == "queued" and deadline < lane.deadline:
            lane.deadline = deadline  # e.g. an emergency behind a routine reply
            self._push(key, lane)
        elif lane.state == "waiting" and retry:
            if lane.timer is not None:
                lane.timer.cancel()
            lane.deadline = deadline
            self._push(key, lane)
        elif lane.state == "waiting":  # queued again, when its wait ends, by this deadline
            lane.deadline = min(lane.deadline, deadline)
        # sending: the lane reads its calls again when the call in hand is done

    async def wake_all(self, retry: bool = False) -> None:
        """Everything in the outbox (at start: what was committed before a restart)."""
        pending = await self.outbox.pending()
        ids = {out.id for out in pending}  # calls dropped meanwhile (blocked, forgotten)
        self._seen = {i: t for i, t in self._seen.items() if i in ids}
        recent = self.clock() - 60
        self._made = {i: t for i, t in self._made.items() if t > recent}
        self._queue(pending, retry)

    async def _calls(self, key: Key) -> list[Outgoing]:
        calls = [out for out in await self.outbox.pending(key)
                 if out.key == key and not self.taken(out.id)]
        now = self.clock()
        for out in calls:
            self._seen.setdefault(out.id, now)
        return calls

    def _deadline(self, calls: list[Outgoing]) -> float:
        now = self.clock()
        return min(self._seen.get(out.id, now) + SLACK[priority(out)] for out in calls)

    def _push(self, key: Key, lane: _Lane) -> None:
        lane.state, lane.token = "queued", lane.token + 1
        heapq.heappush(self._heap, (lane.deadline, next(self._order), key, lane.token))
        self._ready.set()

    def _later(self, key: Key, lane: _Lane, after: float) -> None:
        lane.state = "waiting"
        loop = asyncio.get_running_loop()
        lane.timer = loop.call_later(max(after, 0.0), self._due, key, lane)

    def _due(self, key: Key, lane: _Lane) -> None:
        lane.timer = None
        if self._lanes.get(key) is lane and lane.state == "waiting":
            self._push(key, lane)

    def _drop(self, key: Key) -> None:
        self._lanes.pop(key, None)
        if not self._lanes:
            self._idle.set()

    # ------------------------------------------------------------ sending

    async def _work(self) -> None:
        while True:
            while not self._heap:
                self._ready.clear()
                await self._ready.wait()
            await self._bot_wide_turn()
            if self._closing:
                return
            if not self._heap:
                continue  # (another worker took it meanwhile)
            _, _, key, token = heapq.heappop(self._heap)
            lane = self._lanes.get(key)
            if lane is None or lane.token != token or lane.state != "queued":
                continue  # stale: the lane was queued again, or moved on
            lane.state = "sending"
            try:
                await self._serve(key, lane)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never content in the log
                log.error("delivery failed: %s", type(exc).__name__)
                lane.failures += 1
                self._later(key, lane, self._backoff(lane))

    async def _bot_wide_turn(self) -> None:
        """Wait out a bot-wide pause (a 429 for the whole bot) and the bot-wide rate,
        then take this turn's token at once (workers waking together must not all go)."""
        while True:
            now = self.clock()
            wait = self._paused_until - now
            shared = [b for b in (self._cap, self._learned) if b is not None]
            for bucket in shared:
                wait = max(wait, bucket.wait(now))
            if wait <= 0:
                for bucket in shared:
                    bucket.take(now)
                return
            await asyncio.sleep(wait)

    async def _serve(self, key: Key, lane: _Lane) -> None:
        """Make the lane's oldest call, if its chat and class may have one now."""
        calls = await self._calls(key)
        if not calls:
            self._drop(key)
            return
        head, now = calls[0], self.clock()
        wait = self._pace(head, now)
        if wait > 0:
            self._later(key, lane, wait)
            return
        self.in_flight.add(head.id)
        verdict = RETRY
        try:
            verdict = await self.deliver(head)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s failed: %s", head.method, type(exc).__name__)
        finally:
            if not verdict.recording:
                self.in_flight.discard(head.id)
                if verdict.kind != "retry":
                    self._made[head.id] = self.clock()
        if verdict.kind == "done":
            self._seen.pop(head.id, None)
            lane.failures = 0
            await self._next(key, lane)
        elif verdict.kind == "stop":  # (the bot has dropped the chat's calls)
            known = {out.id for out in calls}
            for out in calls:
                self._seen.pop(out.id, None)
            fresh = [out for out in await self._calls(key) if out.id not in known]
            if fresh:  # queued since: e.g. they wrote again (the lane goes on with them)
                lane.failures, lane.deadline = 0, self._deadline(fresh)
                self._push(key, lane)
            else:
                self._drop(key)
        else:
            lane.failures += 1
            after = verdict.after if verdict.after is not None else self._backoff(lane)
            if verdict.limited:
                self._throttled(head, after)
            self._later(key, lane, after)

    async def _next(self, key: Key, lane: _Lane) -> None:
        calls = await self._calls(key)
        if not calls:
            self._drop(key)
            return
        lane.deadline = self._deadline(calls)
        self._push(key, lane)

    def _pace(self, out: Outgoing, now: float) -> float:
        """Seconds this call must wait for its chat's pace (or a 429's pause), or for the
        rate of proactive messages; 0, with the tokens taken, if it may go now."""
        chat = _chat(out)
        wait = self._chat_pause.get(chat, 0.0) - now
        if wait > 0:
            return wait
        self._chat_pause.pop(chat, None)
        if out.method not in PACED:
            return 0.0
        bucket = self._bucket(chat, now)
        bulk = priority(out) == Priority.BULK
        wait = max(bucket.wait(now), self._bulk.wait(now) if bulk else 0.0)
        if wait > 0:
            return wait
        bucket.take(now)
        if bulk:
            self._bulk.take(now)
        self._sent.append(now)
        while self._sent and self._sent[0] < now - GLOBAL_WINDOW:
            self._sent.popleft()
        self._raise_learned(now)
        return 0.0



    def _bucket(self, chat: int, now: float) -> Bucket:
        bucket = self._chats.pop(chat, None)
        if bucket is None:
            bucket = Bucket(self.limits.group_per_minute / 60, self.limits.group_per_minute,
                            now) if chat < 0 else \
                Bucket(self.limits.chat_rate, self.limits.chat_burst, now)
        self._chats[chat] = bucket  # most recently used last; the oldest go first
        while len(self._chats) > 100_000:
            self._chats.popitem(last=False)
        return bucket

    def _throttled(self, out: Outgoing, after: float) -> None:
        """Telegram answered 429: that chat waits; if another chat had one within the
        last GLOBAL_WINDOW seconds, it is the bot-wide limit: everything waits, then
        keeps under the rate just sent."""
        now, chat = self.clock(), _chat(out)
        self._chat_pause[chat] = max(self._chat_pause.get(chat, 0.0), now + after)
        while self._limited and self._limited[0][0] < now - GLOBAL_WINDOW:
            self._limited.popleft()
        self._limited.append((now, chat))
        if len({c for _, c in self._limited}) < 2:
            self.stats.limited_chat += 1
            self.on_limited("chat")
            return
        self.stats.limited_bot += 1
        self.on_limited("bot")
        self._paused_until = max(self._paused_until, now + after)
        # what Telegram took in the last second (sent, less those it refused), a little less
        took = sum(1 for t in self._sent if t >= now - GLOBAL_WINDOW) - len(self._limited)
        rate = max(self.limits.floor_rate, 0.9 * took)
        if self._learned is None or rate < self._learned.rate:
            self._learned = Bucket(rate, rate, now + after)
            self._learned.level = 0.0  # (the pause comes first)
            log.warning("Telegram's bot-wide limit reached: sending at most %.0f/s", rate)
        self._learned_at = self._raised_at = now

    def _raise_learned(self, now: float) -> None:
        learned = self._learned
        if learned is None or now - self._raised_at < RAISE_EVERY:
            return
        if now - self._learned_at > FORGET_LIMIT_AFTER:
            self._learned = None
            return
        self._raised_at = now
        learned.rate = learned.burst = learned.rate * 1.05

    def _backoff(self, lane: _Lane) -> float:
        base = min(self.limits.retry_base * 2 ** max(lane.failures - 1, 0),
                   self.limits.retry_max)
        return base * random.uniform(0.8, 1.2)


def _chat(out: Outgoing) -> int:
    chat: Any = out.params.get("chat_id", out.key.chat_id)
    try:
        return int(chat)
    except (TypeError, ValueError):
        return out.key.chat_id
