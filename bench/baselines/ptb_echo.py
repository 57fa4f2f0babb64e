"""Baseline: a minimal python-telegram-bot bot, default settings, webhook mode.

It answers every text message and every button press with a message carrying a
2-button keyboard: the framework's own floor for the per-update path.

    TOKEN=... API_URL=http://127.0.0.1:PORT PORT=8443 SECRET=... python ptb_echo.py
"""

import os

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="yes"),
                                  InlineKeyboardButton("No", callback_data="no")]])


async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.callback_query:
        await update.callback_query.answer()
    await context.bot.send_message(update.effective_chat.id, "Next question?",
                                   reply_markup=KEYBOARD)


def main() -> None:
    api = os.environ["API_URL"]
    app = (Application.builder().token(os.environ["TOKEN"]).base_url(f"{api}/bot")
           .base_file_url(f"{api}/file/bot").build())
    app.add_handler(MessageHandler(filters.ALL, answer))
    app.add_handler(CallbackQueryHandler(answer))
    port = int(os.environ["PORT"])
    app.run_webhook(listen="127.0.0.1", port=port, url_path="hook",
                    webhook_url=f"http://127.0.0.1:{port}/hook",
                    secret_token=os.environ["SECRET"])


if __name__ == "__main__":
    main()
