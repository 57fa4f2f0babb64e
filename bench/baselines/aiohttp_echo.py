"""Baseline: no framework. An aiohttp webhook receiver that calls sendMessage directly
(with a 2-button keyboard) before answering 200: the limit of this machine and load.

    TOKEN=... API_URL=http://127.0.0.1:PORT PORT=8443 SECRET=... python aiohttp_echo.py
"""

import hmac
import json
import os

import aiohttp
from aiohttp import web

KEYBOARD = json.dumps({"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"},
                                            {"text": "No", "callback_data": "no"}]]})


async def main() -> web.Application:
    api, token, secret = os.environ["API_URL"], os.environ["TOKEN"], os.environ["SECRET"]
    session = aiohttp.ClientSession()
    send = f"{api}/bot{token}/sendMessage"
    answer_query = f"{api}/bot{token}/answerCallbackQuery"

    async def hook(request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given, secret):
            return web.Response(status=403)
        update = await request.json()
        query = update.get("callback_query")
        message = update.get("message") or (query or {}).get("message") or {}
        if query:
            async with session.post(answer_query, json={"callback_query_id": query["id"]}):
                pass
        async with session.post(send, json={"chat_id": message["chat"]["id"],
                                            "text": "Next question?",
                                            "reply_markup": json.loads(KEYBOARD)}) as r:
            await r.read()
        return web.Response()

    async with session.post(f"{api}/bot{token}/setWebhook", json={
            "url": f"http://127.0.0.1:{os.environ['PORT']}/hook", "secret_token": secret}):
        pass
    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


if __name__ == "__main__":
    web.run_app(main(), host="127.0.0.1", port=int(os.environ["PORT"]), access_log=None,
                print=None)
