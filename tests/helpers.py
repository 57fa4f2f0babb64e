"""Small helpers for driving the engine in tests."""

from __future__ import annotations

from bot.engine import Engine
from bot.session import Ask, Input, Outcome, Reply, Session, Step


def last_ask(replies: tuple[Reply, ...]) -> Ask | None:
    return next((r for r in reversed(replies) if isinstance(r, Ask)), None)


def outcome(replies: tuple[Reply, ...]) -> Outcome | None:
    return next((r for r in replies if isinstance(r, Outcome)), None)


def play(engine: Engine, *inputs: Input, start: Step | None = None) -> Step:
    """Start (or continue from `start`) and feed inputs in order."""
    step = start or engine.start()
    for inp in inputs:
        step = engine.handle(step.session, inp)
    return step


def at(session: Session) -> tuple[str | None, int]:
    return session.node, session.item
