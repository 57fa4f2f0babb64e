"""The engine's behaviour, through its public surface: start, handle, replies."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from bot.engine import Engine
from bot.flow import Level
from bot.session import (
    BACK_NODE,
    Back,
    Escalate,
    Pick,
    PickMany,
    Restart,
    Say,
    Session,
    Start,
    Typed,
)

from .helpers import at, last_ask, outcome, play

ADULT = (Typed("45"), Pick("sex", "male"), Pick("where", "lower"))


def test_start_greets_then_asks_the_first_question(engine):
    step = engine.start()
    assert isinstance(step.replies[0], Say)
    assert "not a doctor" in step.replies[0].text
    assert "112" in step.replies[0].text
    assert last_ask(step.replies).node == "age"
    assert step.session.status == "active"


def test_an_emergency_item_ends_the_interview_at_once(engine):
    step = play(engine, *ADULT, PickMany("danger", ("chest_pain",)))
    result = outcome(step.replies)
    assert result is not None and result.level is Level.EMERGENCY
    assert last_ask(step.replies) is None, "no further question after an emergency"
    assert step.session.status == "done" and step.session.level == "emergency"
    assert "em-chest-pain" in result.rules
    assert "112" in result.title and result.links
    assert "chest pain, pressure or tightness" in result.evidence
    assert result.safety_net == "", "emergency advice replaces the safety net"
    assert "not a doctor" in result.disclaimer


def test_the_configured_emergency_number_is_used_everywhere(flow):
    step = play(Engine(flow, emergency_number="999"), *ADULT,
                PickMany("danger", ("seizure",)))
    result = outcome(step.replies)
    assert "999" in result.title and "999" in result.action
    assert not any("112" in note for note in result.notes)


def test_an_urgent_rule_is_announced_once_and_the_interview_goes_on(engine):
    step = play(engine, Typed("45"), Pick("sex", "male"), Pick("where", "upper"))
    escalations = [r for r in step.replies if isinstance(r, Escalate)]
    assert len(escalations) == 1 and escalations[0].level is Level.URGENT
    assert "ur-upper-back-pain" in escalations[0].rules
    assert last_ask(step.replies).node == "danger"
    step = play(engine, PickMany("danger", ()), start=step)
    assert not any(isinstance(r, Escalate) for r in step.replies)


def test_back_pain_with_fever_is_not_announced_before_the_viral_facts_are_known(engine):
    step = play(engine, *ADULT, PickMany("danger", ()), Typed("38.6"))
    assert "ur-back-pain-fever" in step.session.fired
    assert not any(isinstance(r, Escalate) for r in step.replies)


def test_typed_input_that_does_not_fit_is_re_asked_and_never_advances(engine):
    step = play(engine, *ADULT, PickMany("danger", ()))
    before = step.session
    for text in ("purple", "60", "", "38.5.5", "🤒" * 500):
        step = play(engine, Typed(text), start=step)
        assert step.session == before
        ask = last_ask(step.replies)
        assert ask.node == "temperature" and ask.hint


def test_a_stale_button_is_never_recorded(engine):
    step = play(engine, *ADULT)
    before = step.session
    for stale in (Pick("sex", "female"), Pick("age_band", "65_plus"), PickMany("legs", ()),
                  Pick("danger", "not_sure", 3), Pick(BACK_NODE, "yes")):
        step = play(engine, stale, start=step)
        assert step.session == before, stale
        assert isinstance(step.replies[0], Say) and last_ask(step.replies).node == "danger"


def test_back_removes_the_last_answer_and_asks_again(engine):
    step = play(engine, Typed("45"), Pick("sex", "female"))
    step = play(engine, Back(), start=step)
    assert at(step.session) == ("sex", -1)
    assert not any(a.finding == "sex" for a in step.session.answers)
    assert last_ask(step.replies).node == "sex"
    step = play(engine, Back(), Back(), start=step)
    assert at(step.session) == ("age", -1) and step.session.answers == ()
    assert "no earlier answer" in step.replies[0].text


def test_going_back_after_an_urgent_message_needs_confirmation_and_keeps_the_log(engine):
    step = play(engine, Typed("45"), Pick("sex", "male"), Pick("where", "upper"))
    step = play(engine, Back(), start=step)
    assert last_ask(step.replies).kind == "confirm"
    step = play(engine, Pick(BACK_NODE, "no"), start=step)
    assert at(step.session) == ("danger", -1), "declining keeps the answer"
    step = play(engine, Back(), Typed("yes"), start=step)
    assert at(step.session) == ("where", -1)
    assert "ur-upper-back-pain" not in step.session.fired
    step = play(engine, Pick("where", "lower"), start=step)
    events = [(e.event, e.value) for e in step.session.log]
    assert ("answer", "upper") in events and ("back_confirmed", None) in events
    assert ("answer", "lower") in events


def test_after_an_emergency_going_back_is_confirmed_then_re_evaluates(engine):
    step = play(engine, *ADULT, PickMany("danger", ("chest_pain",)))
    step = play(engine, Back(), start=step)
    assert last_ask(step.replies).kind == "confirm"
    step = play(engine, Pick(BACK_NODE, "yes"), start=step)
    assert step.session.status == "active" and step.session.fired == ()
    assert last_ask(step.replies).node == "danger"


def test_not_sure_about_an_emergency_item_is_clarified_once_then_counts_as_yes(engine):
    step = play(engine, *ADULT, Typed("not sure"))
    ask = last_ask(step.replies)
    assert (ask.node, ask.item, ask.kind) == ("danger", 0, "yes_no")
    step = play(engine, Pick("danger", "not_sure", 0), start=step)
    ask = last_ask(step.replies)
    assert ask.item == 0 and "treat it as a yes" in ask.hint
    step = play(engine, Pick("danger", "not_sure", 0), start=step)
    result = outcome(step.replies)
    assert result.level is Level.EMERGENCY and "em-chest-pain" in result.rules
    assert any(a.how == "unsure_present" for a in step.session.answers)


def test_items_one_by_one_stop_at_the_first_emergency(engine):
    step = play(engine, *ADULT, Pick("danger", "not_sure"), Typed("no"), Typed("no"),
                Typed("yes"))
    assert outcome(step.replies).level is Level.EMERGENCY
    assert "em-sepsis-signs" in step.session.fired


def test_not_sure_about_a_non_emergency_question_is_noted_in_the_safety_net(engine):
    minor = (Typed("50"), Pick("sex", "female"), Pick("where", "lower"),
             PickMany("danger", ()), Pick("temperature", "unknown"), PickMany("legs", ()),
             Pick("severity", "mild"), Typed("2 days"),
             PickMany("details", ("recent_trauma.minor",)))
    step = play(engine, *minor)
    assert last_ask(step.replies).node == "bones"
    step = play(engine, Pick("bones", "not_sure"), PickMany("unwell", ()), start=step)
    result = outcome(step.replies)
    assert result.level is Level.SELF_CARE
    assert any("weak bones" in note for note in result.notes)


def test_final_level_is_the_highest_of_rules_and_outcome(engine):
    step = play(engine, Typed("30"), Pick("sex", "male"), Pick("where", "lower"),
                PickMany("danger", ()), Typed("37"), PickMany("legs", ("leg_weakness.one_leg",)),
                Pick("severity", "severe"), Typed("3 weeks"), PickMany("details", ()),
                PickMany("unwell", ()))
    result = outcome(step.replies)
    assert result.level is Level.URGENT
    assert result.rules[0] == "ur-leg-weakness"
    assert {"ro-severe-or-limiting", "ro-back-pain-not-settling"} <= set(result.rules)
    assert result.reasons[0].startswith("New weakness in one leg")
    assert result.safety_net and result.links


def test_restart_and_start_begin_a_fresh_interview(engine):
    step = play(engine, *ADULT)
    fresh = play(engine, Restart(), start=step)
    assert fresh.session.answers == () and last_ask(fresh.replies).node == "age"
    assert fresh.session.log[0].event == "answer", "the log keeps what came before"
    again = play(engine, Start(), start=step)
    assert again.session.answers == () and again.session.log == ()


def test_input_after_the_end_says_so(engine):
    step = play(engine, *ADULT, PickMany("danger", ("seizure",)))
    done = play(engine, Typed("hello"), start=step)
    assert done.session == step.session and "finished" in done.replies[0].text


def test_sessions_survive_a_json_round_trip(engine):
    step = play(engine, *ADULT, Pick("danger", "not_sure"), Typed("no"))
    data = json.loads(json.dumps(step.session.to_dict()))
    assert Session.from_dict(data) == step.session


def test_a_typed_age_band_is_asked_when_the_age_is_unknown(engine):
    step = play(engine, Typed("I don't know"))
    assert last_ask(step.replies).node == "age_band"
    step = play(engine, Pick("age_band", "under_3m"), Pick("sex", "female"),
                Pick("where", "none"), PickMany("danger", ()), Typed("100.4 F"), start=step)
    result = outcome(step.replies)
    assert result.level is Level.EMERGENCY and "em-young-child-temperature" in result.rules
    assert any("child" in note for note in result.notes)


ENGINE_MODULES = ("engine", "rules", "conditions", "answers", "session", "flow", "findings")
FORBIDDEN = {"telegram", "aiosqlite", "sqlite3", "random", "time", "datetime", "asyncio",
             "os", "socket", "httpx", "logging"}


def test_the_engine_imports_no_io_clock_or_randomness():
    root = Path(__file__).resolve().parent.parent / "bot"
    for name in ENGINE_MODULES:
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""]
                for n in names:
                    assert n.split(".")[0] not in FORBIDDEN, f"bot/{name}.py imports {n}"


def test_a_session_from_an_older_flow_version_starts_again(engine):
    step = play(engine, *ADULT)
    old = step.session.to_dict() | {"flow_version": engine.flow.version - 1}
    step = engine.handle(Session.from_dict(old), Typed("yes"))
    assert step.session.flow_version == engine.flow.version and step.session.answers == ()
    assert "Starting again" in step.replies[0].text and last_ask(step.replies).node == "age"


def test_free_text_questions_keep_a_short_answer_that_rules_never_read(tmp_path):
    from bot.loader import load_flow

    from .conftest import ROOT

    text = (ROOT / "tests" / "flows" / "minimal.yaml").read_text(encoding="utf-8")
    text = text.replace("    next: done\n  done:", "    next: note\n  note:\n    type: text\n"
                        "    key: note\n    max_length: 20\n"
                        "    text: {en: \"Anything else you want to tell us:\"}\n"
                        "    next: done\n  done:")
    (tmp_path / "flow.yaml").write_text(text, encoding="utf-8")
    engine = Engine(load_flow(tmp_path / "flow.yaml"))
    step = play(engine, Pick("where", "lower"), Typed("no"), Typed("not measured"),
                Typed("no"))
    assert last_ask(step.replies).kind == "text"
    step = play(engine, Typed("x" * 21), start=step)
    assert "at most 20 characters" in last_ask(step.replies).hint
    step = play(engine, Typed("  it itches "), start=step)
    assert outcome(step.replies).level is Level.SELF_CARE
    assert ("text:note", "it itches") in [(a.finding, a.value) for a in step.session.answers]


def test_going_back_after_an_urgent_outcome_needs_confirmation(engine):
    step = play(engine, Typed("30"), Pick("sex", "male"), Pick("where", "lower"),
                PickMany("danger", ()), Typed("38.2"), PickMany("legs", ()),
                Pick("severity", "moderate"), Typed("3 days"), PickMany("details", ()),
                PickMany("unwell", ()), PickMany("background", ()))
    assert step.session.level == "urgent"
    assert not any(isinstance(r, Escalate) for r in step.replies), "the outcome says it"
    step = play(engine, Back(), start=step)
    assert last_ask(step.replies).kind == "confirm"


def test_not_sure_about_a_question_that_is_an_emergency_only_with_fever(engine):
    """1.7 judged on the answers so far: no urine all day is an emergency with fever."""
    feverish = (Typed("40"), Pick("sex", "female"), Pick("where", "none"),
                PickMany("danger", ()), Typed("38.4"), PickMany("legs", ()), Typed("2 days"),
                PickMany("details", ()), PickMany("unwell", ("no_urine_12_hours",)))
    step = play(engine, *feverish)
    assert last_ask(step.replies).node == "no_urine_day"
    step = play(engine, Typed("not sure"), start=step)
    ask = last_ask(step.replies)
    assert ask.node == "no_urine_day" and "kidneys are struggling" in ask.hint
    step = play(engine, Typed("dunno"), start=step)
    assert outcome(step.replies).level is Level.EMERGENCY
    assert "em-sepsis-no-urine" in step.session.fired
