"""Signed deep-link payloads: which group sent a person to the private chat.

`t.me/<bot>?start=<payload>` lets a group button open a private chat that
starts with `/start <payload>`. The payload names the group and carries a
short HMAC, so a forged or edited payload is simply ignored (no source).
A link may also name the flow to open (`-<flow id>` after the MAC, which covers
it); a bare flow id (`/start back_pain_fever`) opens that flow from no group.
Telegram allows 1-64 characters from A-Z, a-z, 0-9, _ and -.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

PAYLOAD = re.compile(r"^([mp])([0-9a-z]{1,13})-([A-Za-z0-9_-]{10})(?:-([a-z][a-z0-9_]{0,31}))?$")
FLOW = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _key(token: str) -> bytes:
    return hashlib.sha256(b"triagebot deep links\0" + token.encode()).digest()


def _sign(key: bytes, group_id: int, flow: str = "") -> str:
    signed = f"{group_id}:{flow}" if flow else str(group_id)  # (links made before flows)
    mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:10]


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def make(group_id: int, token: str, flow: str = "") -> str:
    """The payload for a group's link, opening `flow` if given (an id FLOW matches)."""
    if flow and not FLOW.match(flow):
        raise ValueError(f"flow id {flow!r} cannot go into a deep link")
    sign = "m" if group_id < 0 else "p"
    return f"{sign}{_b36(abs(group_id))}-{_sign(_key(token), group_id, flow)}" + \
        (f"-{flow}" if flow else "")


def read(payload: str, token: str) -> int | None:
    """The group id a genuine payload names, else None (never raises)."""
    return read_link(payload, token)[0]


def read_link(payload: str, token: str) -> tuple[int | None, str | None]:
    """(group id, flow id) of a payload: the group only if its MAC is genuine; the flow
    from a genuine link or a bare flow id, else None. Never raises."""
    payload = payload or ""
    if FLOW.match(payload):
        return None, payload
    m = PAYLOAD.match(payload)
    if not m or len(payload) > 64:
        return None, None
    group_id = int(m.group(2), 36) * (-1 if m.group(1) == "m" else 1)
    flow = m.group(4) or ""
    if not hmac.compare_digest(_sign(_key(token), group_id, flow), m.group(3)):
        return None, None
    return group_id, flow or None


def url(username: str, payload: str) -> str:
    return f"https://t.me/{username}?start={payload}"
