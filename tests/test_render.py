"""Rendering replies for Telegram: escaping, sizes, callback data."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.engine import Engine
from bot.flow import Level
from bot.session import Ask, Choice, Outcome, Say
from bot.telegram import render

from .fake_telegram import parse_html
from .helpers import last_ask


def test_every_button_of_the_bundled_flow_fits_telegrams_64_bytes(flow):
    engine = Engine(flow)
    step = engine.start()
    for node in flow.nodes.values():
        if not node.is_question:
            continue
        session = step.session.evolve(node=node.id)
        asks = [engine.current(session)]
        asks += [engine.current(session.evolve(item=k)) for k in range(len(node.items))]
        for ask in asks:
            markup = render.question_markup(ask, interview=0xFFFFFF,
                                            ticked=tuple(c.id for c in ask.options))
            for row in markup["inline_keyboard"]:
                for button in row:
                    assert len(button["callback_data"].encode()) <= 64, button
                    assert render.decode(button["callback_data"]).node in (node.id, "_")


def test_callback_data_round_trips_and_junk_decodes_to_none():
    data = render.encode(42, "danger", 3, "t.chest_pain")
    assert render.decode(data) == render.Button(42, "danger", 3, "t.chest_pain")
    for junk in (None, "", "x", "1|2", "zz|a|b|c", "1|a|notint|c"):
        assert render.decode(junk) is None


@given(st.text(max_size=200))
def test_any_text_is_escaped_into_valid_telegram_html(text):
    html = render.question_text(Ask("n", "text", text, hint=text))
    if text.strip():
        assert text in parse_html(html)


@given(st.text(min_size=1, max_size=20000))
def test_long_messages_are_split_into_parts_that_fit(text):
    parts = render.split(render.esc(text))
    assert all(len(p) <= render.MAX_TEXT for p in parts)
    assert "".join(parts).replace("\n", "").replace(" ", "") == \
        render.esc(text).replace("\n", "").replace(" ", "")


def test_an_outcome_renders_within_limits_with_every_part(engine):
    from bot.session import Pick, PickMany, Typed

    from .helpers import play

    step = play(engine, Typed("45"), Pick("sex", "male"), Pick("where", "lower"),
                PickMany("danger", ("chest_pain",)))
    calls = render.replies(1, 1, step.replies, {"why": "Why:", "because": "Because:",
                                                 "links": "Read more:"})
    text = "".join(c[1]["text"] for c in calls)
    shown = parse_html(text)
    assert shown.startswith("🔴 EMERGENCY: CALL 112 NOW")
    assert "Why:" in shown and "https" not in shown, "links are anchors"
    assert all(len(parse_html(c[1]["text"])) <= 4096 for c in calls)
    assert last_ask(step.replies) is None


def test_a_huge_outcome_is_split_and_still_valid_html():
    outcome = Outcome(Level.URGENT, "Urgent", "Go today.", tuple("reason " * 200 for _ in range(3)),
                      ("a <b> & c",), "advice " * 500, (("NHS & co", "https://x.example/?a=1&b=2"),),
                      "net " * 800, ("note",), "Not a doctor.")
    calls = render.replies(7, 1, (Say("hi"), outcome), {"why": "Why", "because": "B",
                                                        "links": "L"})
    assert len(calls) > 2
    for _, params in calls:
        assert len(parse_html(params["text"])) <= 4096
    assert "a <b> & c" in "".join(parse_html(p["text"]) for _, p in calls)


def test_a_checklist_keyboard_shows_ticks_and_done_only_when_something_is_ticked():
    ask = Ask("danger", "checklist", "Any?", (Choice("a", "A"), Choice("b", "B")),
              (Choice("none", "None"), Choice("not_sure", "Not sure")), multi=True)
    plain = [b["text"] for row in render.question_markup(ask, 1)["inline_keyboard"] for b in row]
    assert "☐ 1. A" in plain and not any("Done" in t for t in plain)
    ticked = [b["text"] for row in render.question_markup(ask, 1, ("b",))["inline_keyboard"]
              for b in row]
    assert "☑ 2. B" in ticked and any("Done" in t for t in ticked)
    assert "1. A\n2. B" in render.question_text(ask)
