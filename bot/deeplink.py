"""Signed deep-link payloads: which group sent a person to the private chat.

`t.me/<bot>?start=<payload>` lets a group button open a private chat that
starts with `/start <payload>`. The payload names the group and carries a
short HMAC, so a forged or edited payload is simply ignored (no source).
Telegram allows 1-64 characters from A-Z, a-z, 0-9, _ and -.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

PAYLOAD = re.compile(r"^([mp])([0-9a-z]{1,13})-([A-Za-z0-9_-]{10})$")


def _key(token: str) -> bytes:
    return hashlib.sha256(b"triagebot deep links\0" + token.encode()).digest()


def _sign(key: bytes, group_id: int) -> str:
    mac = hmac.new(key, str(group_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:10]


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def make(group_id: int, token: str) -> str:
    sign = "m" if group_id < 0 else "p"
    return f"{sign}{_b36(abs(group_id))}-{_sign(_key(token), group_id)}"


def read(payload: str, token: str) -> int | None:
    """The group id a genuine payload names, else None (never raises)."""
    m = PAYLOAD.match(payload or "")
    if not m:
        return None
    group_id = int(m.group(2), 36) * (-1 if m.group(1) == "m" else 1)
    expected = _sign(_key(token), group_id)
    return group_id if hmac.compare_digest(expected, m.group(3)) else None


def url(username: str, payload: str) -> str:
    return f"https://t.me/{username}?start={payload}"
