"""The bot's HTTP listener (webhook, /healthz, /metrics), hardened for the open internet.

aiohttp alone lets a connection sit forever before sending its request, and takes
as many connections as the process has file descriptors: about a thousand idle
connections once took the webhook and /healthz down, and the accept loop's "too
many open files" tracebacks filled the disk. So every connection here:

* must deliver each request's head within HEAD_TIMEOUT seconds of connecting or
  of its previous response (idle keep-alive connections are closed then too);
* must deliver the body within BODY_TIMEOUT (see `read_body`);
* counts against MAX_CONNECTIONS: at the cap a new connection takes the place of
  the oldest idle one (never one whose request is being handled), or is closed at
  once when none is idle.

A handler that raises gets a bare 500 and one log line naming the exception type,
never a traceback (which could carry a request's content).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("triagebot.http")

HEAD_TIMEOUT = 15.0
BODY_TIMEOUT = 10.0
MAX_CONNECTIONS = 256
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: the cap and the head timeout."""

    def __init__(self, inner: asyncio.Protocol, pool: Pool):
        self.inner, self.pool = inner, pool
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.handling = 0  # requests of this connection inside a handler
        self.admitted = False  # aiohttp's protocol was told of the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.pool.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)
        self.arm()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self.inner.pause_writing()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.inner.resume_writing()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.pool.release(self)
        if self.admitted:  # (also one evicted for a newer connection: aiohttp cleans up)
            self.inner.connection_lost(exc)

    # the head timeout: armed while the connection waits for a request's head
    def arm(self) -> None:
        self.disarm()
        self.timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self.expire)
        self.pool.idle(self)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        self.timer = None
        if self.handling == 0 and self.transport is not None:
            self.transport.abort()

    @property
    def waiting(self) -> bool:
        return self.timer is not None and self.handling == 0


class Pool:
    """The open connections, oldest idle first."""

    def __init__(self, limit: int = MAX_CONNECTIONS):
        self.limit = limit
        self.open: dict[Guard, None] = {}  # insertion order: oldest first
        self.by_transport: dict[Any, Guard] = {}

    def admit(self, guard: Guard) -> bool:
        if len(self.open) >= self.limit:
            oldest = next((g for g in self.open if g.waiting), None)
            if oldest is None:
                return False  # every connection is in a handler: refuse this one
            self._drop(oldest)
            assert oldest.transport is not None
            oldest.transport.abort()
        self.open[guard] = None
        self.by_transport[guard.transport] = guard
        return True

    def idle(self, guard: Guard) -> None:
        """Move an idle connection to the back: the first to go is the longest idle."""
        if guard in self.open:
            del self.open[guard]
            self.open[guard] = None

    def release(self, guard: Guard) -> None:
        """Forget a closed connection."""
        self._drop(guard)

    def _drop(self, guard: Guard) -> None:
        self.by_transport.pop(guard.transport, None)
        self.open.pop(guard, None)


@web.middleware
async def contained(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request: the head timeout paused while it is handled; errors contained."""
    pool: Pool | None = request.app.get(POOL)
    guard = pool.by_transport.get(request.transport) if pool is not None else None
    if guard is not None:
        guard.handling += 1
        guard.disarm()
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:  # no traceback: it may hold a request's content
        log.error("%s %s failed: %s", request.method, request.path[:40], type(exc).__name__)
        return web.Response(status=500, text="internal error")
    finally:
        if guard is not None:
            guard.handling -= 1
            if guard.handling == 0 and guard.transport is not None and \
                    not guard.transport.is_closing():
                guard.arm()


POOL = web.AppKey("triagebot_pool", Pool)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request's body, within BODY_TIMEOUT and `limit` bytes; only identity, gzip
    or deflate encodings (anything else is refused before reading)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate", ""):
        raise web.HTTPUnsupportedMediaType(text="unsupported Content-Encoding")
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    return await asyncio.wait_for(request.read(), BODY_TIMEOUT)


class NoTraceback(logging.Filter):
    """aiohttp's own "Error handling request" for a malformed request (a bad header, an
    encoding it cannot decode): one line with the error's type, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_aiohttp() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, NoTraceback) for f in logger.filters):
        logger.addFilter(NoTraceback())


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, each connection wrapped in a Guard from one Pool."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, pool: Pool):
        super().__init__(runner, host, port)
        self.pool = pool

    async def start(self) -> None:
        await web.BaseSite.start(self)  # (registers the site with its runner)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Guard(server(), self.pool), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]


def raise_open_files_limit() -> None:
    """Use the hard limit on open files (systemd's soft default is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 1 << 20), hard))
