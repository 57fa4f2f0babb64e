"""python-telegram-bot's HTTP seam, on aiohttp instead of httpx.

Profiling the webhook path (bench/webhook_load.py --profile) showed about three
quarters of the bot's CPU inside python-telegram-bot's default httpx client.
python-telegram-bot lets a bot supply its own `BaseRequest`; this one sends the
same requests, as JSON, through one pooled aiohttp session, which the bot
already uses for its webhook server. Files are not supported (the bot sends none).
"""

from __future__ import annotations

import aiohttp
import orjson
from telegram.error import NetworkError, TelegramError, TimedOut
from telegram.request import BaseRequest, RequestData

JSON = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    def __init__(self, pool_size: int = 100, read_timeout: float = 30.0,
                 connect_timeout: float = 10.0):
        self._pool_size = pool_size
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300),
                headers={"User-Agent": self.USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar())  # the Bot API sets none to keep

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict:
        """Telegram's answer, read with orjson (the stdlib's json was a tenth of each call
        here). Unlike python-telegram-bot's default, a bad answer is not logged: it may
        echo a message's text."""
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            try:  # invalid UTF-8: read it as python-telegram-bot does
                return orjson.loads(payload.decode("utf-8", "replace"))
            except orjson.JSONDecodeError as exc:
                raise TelegramError("Invalid server response (not JSON)") from exc

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout=BaseRequest.DEFAULT_NONE,
                         write_timeout=BaseRequest.DEFAULT_NONE,
                         connect_timeout=BaseRequest.DEFAULT_NONE,
                         pool_timeout=BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("AiohttpRequest is not initialized")
        if request_data is not None and request_data.contains_files:
            raise NetworkError("this bot does not upload files")
        read = self._read_timeout if not isinstance(read_timeout, int | float) else read_timeout
        connect = self._connect_timeout if not isinstance(connect_timeout, int | float) \
            else connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_read=read)
        # a JSON body (which the Bot API accepts) skips aiohttp's form encoder,
        # about a sixth of a call's CPU here
        data = orjson.dumps(request_data.parameters) if request_data else None
        try:
            async with self._session.request(method, url, data=data, timeout=timeout,
                                             headers=JSON if data else None) as resp:
                return resp.status, await resp.read()
        except TimeoutError:
            raise TimedOut from None
        except aiohttp.ClientError as err:  # (its text and traceback name the URL: the token)
            raise NetworkError(f"aiohttp.{type(err).__name__}") from None
