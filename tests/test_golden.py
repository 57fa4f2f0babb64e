"""Golden transcripts: whole conversations as a person sees them in the terminal.

Wording changes show up as reviewable diffs. Regenerate with
`pytest tests/test_golden.py --update-golden` and read the diff before committing.
"""

from __future__ import annotations

import io

import pytest
import yaml

from bot.chat import Terminal
from bot.session import PickMany, Typed
from bot.vignettes import answer

from .conftest import ROOT
from .helpers import last_ask

GOLDEN = ROOT / "tests" / "golden"
CASES = ["pub-01", "pub-07", "pub-11", "pub-14", "pub-17"]


def transcript(engine, case, lang: str = "en") -> str:
    out = io.StringIO()
    term = Terminal(out, colour=False, headings={k: engine.flow.text(k, lang)
                                                 for k in ("why", "because", "links")})
    truth = {**engine.flow.vocabulary.absent_values(), **case["findings"]}
    step = engine.start(lang)
    term.show(step.replies)
    while step.session.status != "done":
        inp = answer(engine.flow, last_ask(step.replies), truth)
        print(f"> {shown(last_ask(step.replies), inp)}", file=out)
        step = engine.handle(step.session, inp)
        term.show(step.replies)
    return out.getvalue()


def shown(ask, inp) -> str:
    """The answer as the person gave it: typed text, or the buttons pressed."""
    if isinstance(inp, Typed):
        return inp.text
    labels = {c.id: c.label for c in (*ask.options, *ask.extra)}
    if isinstance(inp, PickMany):
        return "[ticked: " + ("; ".join(labels[i] for i in inp.options) or "none") + "]"
    return f"[{labels[inp.option]}]"


@pytest.mark.parametrize("case_id, lang", [(c, "en") for c in CASES] +
                         [("pub-11", lang) for lang in ("es", "ru", "ar")])
def test_transcript(engine, case_id, lang, update_golden):
    """English for five cases; one whole case in each other language, so a change to a
    translation shows up as a diff a speaker of that language can review."""
    cases = yaml.safe_load((ROOT / "tests" / "vignettes" / "sample-vignettes.yaml").read_text())
    case = next(c for c in cases if c["id"] == case_id)
    got = transcript(engine, case, lang)
    path = GOLDEN / (f"{case_id}.txt" if lang == "en" else f"{case_id}.{lang}.txt")
    if update_golden:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.exists(), "run pytest tests/test_golden.py --update-golden"
    assert got == path.read_text(encoding="utf-8")
