"""`triagebot chat`: the same interview in a terminal.

Numbered choices, typed answers, /back and /restart, and a coloured level at
the end. Only this module knows about ANSI colours; the engine's replies are
plain values.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from typing import TextIO

from bot.engine import Engine, handed_over
from bot.flow import Level
from bot.session import (
    Ask,
    Back,
    Escalate,
    Input,
    Outcome,
    Pick,
    Reply,
    Restart,
    Say,
    Session,
    Typed,
)

COLOURS = {Level.EMERGENCY: "\033[1;97;41m", Level.URGENT: "\033[1;30;43m",
           Level.ROUTINE: "\033[1;97;44m", Level.SELF_CARE: "\033[1;97;42m"}
RESET = "\033[0m"
WIDTH = 78
HELP = "Type your answer. /back changes the last answer, /restart starts again, /quit ends."


class Terminal:
    """Renders replies as text and turns typed lines into engine inputs."""

    def __init__(self, out: TextIO, colour: bool, headings: dict[str, str] | None = None):
        self.out = out
        self.colour = colour
        self.current: Ask | None = None
        # the outcome's headings in the interview's language (flow texts why/because/links)
        self.headings = headings or {"why": "Why:", "because": "Because you told me:",
                                     "links": "Read more:"}

    def write(self, text: str = "", indent: str = "") -> None:
        for paragraph in text.split("\n"):
            wrapped = textwrap.fill(paragraph, WIDTH, initial_indent=indent,
                                    subsequent_indent=indent + ("  " if paragraph.startswith("•")
                                                                else ""))
            print(wrapped if paragraph else "", file=self.out)

    def show(self, replies: tuple[Reply, ...]) -> None:
        for reply in replies:
            if isinstance(reply, Say):
                self.write(reply.text)
                self.write()
            elif isinstance(reply, Escalate):
                print(self.badge(reply.level, "!"), file=self.out, end=" ")
                self.write(reply.text)
                self.write()
            elif isinstance(reply, Ask):
                self.ask(reply)
            elif isinstance(reply, Outcome):
                self.outcome(reply)
        self.out.flush()

    def badge(self, level: Level, text: str) -> str:
        return f"{COLOURS[level]} {text} {RESET}" if self.colour else f"[{text}]"

    def ask(self, ask: Ask) -> None:
        self.current = ask
        if ask.hint:
            self.write(ask.hint)
        self.write(ask.text)
        if ask.multi:
            for n, option in enumerate(ask.options, 1):
                self.option(n, option.label)
            self.write("Type the numbers of all that apply (e.g. 1, 3), 0 for none of these, "
                       "or ? if you are not sure.", indent="  ")
        elif ask.kind == "number":
            extra = " or ".join(f"'{c.label}'" for c in ask.extra)
            if extra:
                self.write(f"(Type the answer, or {extra}.)", indent="  ")
        else:
            for n, option in enumerate((*ask.options, *ask.extra), 1):
                self.option(n, option.label)

    def option(self, n: int, label: str) -> None:
        print(textwrap.fill(f"{n:>3}) {label}", WIDTH, subsequent_indent="     "), file=self.out)

    def outcome(self, o: Outcome) -> None:
        self.write()
        print(self.badge(o.level, o.title.upper()), file=self.out)  # not wrapped: colour codes
        self.write()
        self.write(o.action)
        if o.reasons:
            self.write()
            self.write(self.headings["why"])
            for reason in o.reasons:
                self.write(f"• {reason}")
        if o.evidence:
            self.write(self.headings["because"] + " " + "; ".join(o.evidence) + ".")
        if o.advice:
            self.write()
            self.write(o.advice)
        if o.safety_net:
            self.write()
            self.write(o.safety_net)
        if o.links:
            self.write()
            self.write(self.headings["links"])
            for title, url in o.links:
                self.write(f"• {title}: {url}")
        for note in o.notes:
            self.write()
            self.write(note)
        self.write()
        self.write(o.disclaimer)
        self.write()
        self.write("(/restart to check again, /back to change the last answer, /quit to end)")

    def to_input(self, line: str) -> Input | None:
        """A typed line -> an engine input; None means quit."""
        text = line.strip()
        command = text.lower()
        if command in ("/quit", "/exit", "/q"):
            return None
        if command == "/back":
            return Back()
        if command in ("/restart", "/start"):
            return Restart()
        ask = self.current
        if ask and not ask.multi and ask.kind != "number" and text.isdecimal() and len(text) < 6:
            choices = (*ask.options, *ask.extra)
            if 1 <= int(text) <= len(choices):
                return Pick(ask.node, choices[int(text) - 1].id, ask.item)
        if ask and ask.multi and text == "?":
            return Pick(ask.node, "not_sure")
        return Typed(text)


def run_chat(engine: Engine, read: Callable[[str], str], out: TextIO, colour: bool,
             language: str | None = None, engines: Mapping[str, Engine] | None = None,
             ) -> Session:
    """Run one terminal conversation until /quit or end of input; a `continue_with`
    goes on in that flow of `engines`."""
    lang = language if language in engine.flow.languages else "en"
    term = Terminal(out, colour, {k: engine.flow.text(k, lang) for k in ("why", "because",
                                                                          "links")})
    term.write(HELP)
    term.write()
    engines = engines or {}
    legs = handed_over(engine, engine.start(language), engines, language)
    for _, leg in legs:
        term.show(leg.replies)
    engine, session = legs[-1][0], legs[-1][1].session  # (the flow handed over to, if any)
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):
            term.write()
            break
        inp = term.to_input(line)
        if inp is None:
            break
        term.write()
        legs = handed_over(engine, engine.handle(session, inp), engines, language)
        for _, leg in legs:
            term.show(leg.replies)
        engine, session = legs[-1][0], legs[-1][1].session
    return session
