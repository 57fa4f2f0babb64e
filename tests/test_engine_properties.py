"""Property-based tests of the engine: it never crashes, never under-triages
what its own rules say, and never reassures before asking what could matter."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import conditions as cond
from bot import rules as rulebook
from bot.engine import Engine
from bot.findings import Kind, bundled_vocabulary
from bot.flow import Level
from bot.loader import load_flow
from bot.session import Answer, Back, Outcome, Pick, PickMany, Restart, Session, Start, Typed
from bot.vignettes import answer

from .conftest import BUNDLED
from .helpers import last_ask

FLOW = load_flow(BUNDLED)
ENGINE = Engine(FLOW)
VOC = bundled_vocabulary()
NODE_IDS = sorted(FLOW.nodes)
OPTION_IDS = sorted({o.id for n in FLOW.nodes.values() for o in n.options} |
                    {i.id for n in FLOW.nodes.values() for i in n.items} |
                    {"yes", "no", "not_sure", "none", "unknown", "bogus"})

inputs = st.one_of(
    st.builds(Typed, st.text(max_size=60)),
    st.builds(Typed, st.sampled_from(["yes", "no", "not sure", "38.5", "101F", "3 days",
                                      "none", "1, 3", "lower", "65", "2 weeks", "?"])),
    st.builds(Pick, st.sampled_from([*NODE_IDS, "_back"]), st.sampled_from(OPTION_IDS),
              st.integers(-1, 15)),
    st.builds(PickMany, st.sampled_from(NODE_IDS),
              st.lists(st.sampled_from(OPTION_IDS), max_size=4).map(tuple)),
    st.just(Back()), st.just(Restart()), st.just(Start()),
)


def check_invariants(session: Session, replies, before: Session | None = None) -> None:
    """`before`: the session this step began from (None: the interview's first step)."""
    values = rulebook.values_of(FLOW, session.answers)
    fired = rulebook.fired(FLOW, values)
    assert session.fired == tuple(r.id for r in fired)
    assert Session.from_dict(json.loads(json.dumps(session.to_dict()))) == session
    if session.status == "done":
        level = Level.parse(session.level)
        assert level >= rulebook.highest(r.level for r in fired)
        if before is not None and before.status == "done":  # input after the end
            assert (session.answers, session.level, session.log) == (
                before.answers, before.level, before.log), "what it found stays"
        else:  # it ended in this step: on an answer, with its outcome
            assert any(isinstance(r, Outcome) for r in replies) or not session.log or \
                session.log[-1].event != "answer"  # (none: ended when handed)
    else:
        assert session.node in FLOW.nodes and FLOW.nodes[session.node].is_question
        if any(r.level is Level.EMERGENCY for r in fired):
            raise AssertionError("an emergency rule fired but the interview goes on")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(inputs, max_size=40))
def test_any_sequence_of_inputs_is_answered_and_keeps_the_invariants(sequence):
    step = ENGINE.start()
    for inp in sequence:
        before = step.session
        step = ENGINE.handle(before, inp)
        assert step.replies, f"no reply to {inp}"
        check_invariants(step.session, step.replies, before)


@st.composite
def people(draw):
    """A person's true findings (consistent with the vignette format's rules)."""
    truth = {}
    for f in VOC.findings.values():
        if f.kind is Kind.BOOLEAN:
            truth[f.id] = draw(st.booleans()) if draw(st.integers(0, 9)) == 0 else False
        elif f.kind is Kind.CHOICE:
            truth[f.id] = draw(st.sampled_from(f.values)) if f.default is None or \
                draw(st.integers(0, 4)) == 0 else f.default
        elif f.id == "age_years":  # a person always knows roughly how old they are
            truth[f.id] = draw(st.sampled_from([0.0, 0.1, 0.24, 0.25, 3.0, 4.9, 5.0, 12.0,
                                                15.9, 16.0, 16.5, 17.0, 40.0, 59.9, 60.0,
                                                64.0, 65.0, 90.0, 120.0]))
        else:
            truth[f.id] = draw(st.none() | st.sampled_from(
                [f.min, f.max, (f.min + f.max) / 2]) | st.floats(f.min, f.max).map(
                    lambda x: round(x, 1)))
    if truth["sex"] == "male":
        truth["pregnant"] = False
    if not truth["no_urine_12_hours"]:
        truth["not_passed_urine_all_day"] = False
    if not truth["cloudy_or_bloody_urine"]:
        truth["visible_blood_in_urine"] = False
    if truth["age_years"] >= 16:
        truth["child_red_features"] = False
    truth["_vague_age"] = draw(st.integers(0, 4)) == 0  # answers "I don't know", then a band
    return truth


def interview(truth):
    step = ENGINE.start()
    for _ in range(100):
        if step.session.status == "done":
            return step
        ask = last_ask(step.replies)
        reply = Typed("I don't know") if ask.node == "age" and truth["_vague_age"] else \
            answer(FLOW, ask, truth)
        step = ENGINE.handle(step.session, reply)
    raise AssertionError("no outcome after 100 answers")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people())
def test_no_reassurance_before_every_finding_that_could_raise_the_level_is_asked(truth):
    """RED-FLAGS.md 1.9: at an outcome, no rule above the final level could still fire,
    whatever the questions that were not asked would have been answered."""
    step = interview(truth)
    session = step.session
    level = Level.parse(session.level)
    answered = {a.finding: cond.exactly(a.value, VOC[a.finding].kind)
                for a in session.answers if a.finding in VOC}
    for rule in FLOW.rules:
        if rule.level > level:
            assert not cond.satisfiable(rule.when.expr, VOC, answered), (
                f"{rule.id} could still fire: the flow did not ask "
                f"{sorted(cond.findings_in(rule.when.expr) - set(answered))}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people())
def test_the_interview_level_is_what_the_rules_say_about_the_whole_truth(truth):
    """Asking only what matters loses nothing: the bot's level is never below the level
    the rules give on everything the person could have said."""
    step = interview(truth)
    everything = rulebook.fired(FLOW, truth)
    assert Level.parse(step.session.level) >= rulebook.highest(r.level for r in everything)


VIRAL_FACTS = {"body_aches_all_over", "cough", "sore_throat"}


@settings(max_examples=300, deadline=None)
@given(people(), st.sampled_from(sorted(
    f.id for f in VOC.findings.values() if f.kind is Kind.BOOLEAN and f.id not in VIRAL_FACTS)))
def test_levels_only_rise_when_a_symptom_is_added(truth, extra):
    """Rules are floors: saying yes to one more symptom never lowers the level
    (the viral exception's own facts are the one designed way down, 5.2)."""
    before = rulebook.highest(r.level for r in rulebook.fired(FLOW, truth))
    after = rulebook.highest(r.level for r in rulebook.fired(FLOW, {**truth, extra: True}))
    assert after >= before


STABLE = ("age_years", "sex", "pregnant", "diabetes", "immunosuppressed", "chemotherapy_recent",
          "long_term_condition", "recent_surgery_or_hospital", "injection_drug_use",
          "recent_spinal_procedure", "known_kidney_stone", "kidney_disease_or_single_kidney",
          "urinary_catheter", "malaria_area_travel", "history_of_cancer", "_vague_age")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people(), people())
def test_a_check_in_never_lowers_the_level_and_asks_what_could_raise_it(first, later):
    """Hours later the person's symptoms may be anything (their age and background
    stay): the check-in's level is never below the earlier one nor below what its
    rules say, and it does not reassure while an unasked answer could raise it."""
    earlier = interview(first).session
    truth = {**later, **{k: first[k] for k in STABLE}}
    step = ENGINE.start_followup(earlier)
    for _ in range(60):
        if step.session.status == "done":
            break
        step = ENGINE.handle(step.session, answer(FLOW, last_ask(step.replies), truth))
    session = step.session
    assert session.status == "done"
    check_invariants(session, step.replies)
    level = Level.parse(session.level)
    assert level >= Level.parse(earlier.level)
    answered = {a.finding: cond.exactly(a.value, VOC[a.finding].kind)
                for a in session.answers if a.finding in VOC}
    for rule in FLOW.rules:
        if rule.level > level:
            assert not cond.satisfiable(rule.when.expr, VOC, answered), rule.id


def _value(finding):
    """Any value a person could give for `finding` (by its kind in FINDINGS.yaml)."""
    if finding.kind is Kind.BOOLEAN:
        return st.booleans()
    if finding.kind is Kind.NUMBER:
        return st.floats(finding.min if finding.min is not None else 0,
                         finding.max if finding.max is not None else 100, allow_nan=False)
    return st.sampled_from(finding.values or ("none",))


CARRIABLE = sorted(f for f in FLOW.findings_used if f in VOC.findings)
carried = st.lists(st.sampled_from(CARRIABLE), max_size=12, unique=True).flatmap(
    lambda ids: st.tuples(*(_value(VOC.findings[f]).map(lambda v, f=f: Answer("x", f, v))
                            for f in ids)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(carried, st.sampled_from(list(Level)), st.lists(inputs, max_size=15))
def test_a_hand_off_runs_every_rule_on_what_it_carried_and_never_says_less(answers, floor,
                                                                            more):
    """Whatever another flow hands over, the rules fire on it at once (an emergency ends
    the interview before any question), and the level never falls below the floor."""
    step = ENGINE.start("en", carried=ENGINE.carries(tuple(answers)), floor=floor)
    check_invariants(step.session, step.replies)
    values = rulebook.values_of(FLOW, step.session.answers)
    if any(r.level is Level.EMERGENCY for r in rulebook.fired(FLOW, values)):
        assert step.session.status == "done" and step.session.level == "emergency"
        assert not any(hasattr(r, "options") for r in step.replies), "no question first"
    session = step.session
    for inp in more:
        before = session
        step = ENGINE.handle(before, inp)
        session = step.session
        check_invariants(session, step.replies, before)
        if session.status == "done" and session.floor:
            assert Level.parse(session.level) >= floor
