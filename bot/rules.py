"""Red-flag evaluation: which rules fire on a set of answers, and why.

Rules are floors (RED-FLAGS.md 1.2): the level is the highest fired rule and
the flow's own outcome, so it can only go up for a given set of answers.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot import conditions
from bot.findings import Kind, Value
from bot.flow import Flow, Level, Rule
from bot.session import Answer

Values = dict[str, Value]


TERMS = "\0terms"  # marks a dict whose derived terms are filled in


def values_of(flow: Flow, answers: Iterable[Answer]) -> Values:
    """Every finding's value (what was answered, else its absent value) and every term's."""
    values = flow.vocabulary.absent_values()
    for a in answers:
        if a.finding in values:
            values[a.finding] = a.value
    return _add_terms(flow, values)


def with_terms(flow: Flow, values: Values) -> Values:
    """A copy of `values` with the flow's derived terms (fever, back_pain, ...) added."""
    return _add_terms(flow, dict(values))


def _add_terms(flow: Flow, values: Values) -> Values:
    # each term computed once; the loader orders terms so that a term's own terms come first
    for name, term in flow.terms.items():
        values[name] = term.test(values)
    values[TERMS] = True
    return values


def fired(flow: Flow, values: Values) -> tuple[Rule, ...]:
    if TERMS not in values:
        values = with_terms(flow, values)
    return tuple(rule for rule in flow.rules if rule.when.test(values))


def settled(flow: Flow, rule: Rule, answers: Iterable[Answer]) -> bool:
    """Will `rule` keep firing whatever the questions still to come are answered?

    Used before telling a person mid-interview that they need same-day care:
    a rule with an exception (`NOT viral_exception`) may stop firing once the
    exception's facts are known, and the bot must not announce a level it
    would later take back.
    """
    if not any(isinstance(e, conditions.Not) for e in conditions.nodes(rule.when.expr)):
        return True  # without NOT, more answers can only add to what makes it true
    voc = flow.vocabulary
    key = id(rule.when)
    if key not in _negations:
        _negations[key] = (rule.when, conditions.dnf(conditions.Not(rule.when.expr), voc),
                           frozenset(conditions.findings_in(rule.when.expr)), {})
    _, unless, reads, known = _negations[key]
    answered = {a.finding: a.value for a in answers if a.finding in reads}
    seen = tuple(sorted(answered.items(), key=lambda kv: kv[0]))
    if seen not in known:
        fixed = {f: conditions.exactly(v, voc[f].kind) for f, v in answered.items()}
        if len(known) > 4096:  # bounded: the answers that matter to one rule are few
            known.clear()
        known[seen] = unless is not None and not conditions.consistent(unless, voc, fixed)
    return known[seen]


# Per rule condition (kept alive beside it, so its id stays unique): NOT(rule) in
# disjunctive normal form, the findings it reads, and the answers already judged.
# Reused after every answer while an urgent rule with an exception waits.
_negations: dict[int, tuple] = {}


def highest(levels: Iterable[Level], floor: Level = Level.SELF_CARE) -> Level:
    return max((floor, *levels))


def by_urgency(rules: Iterable[Rule]) -> list[Rule]:
    """Highest level first; the flow's order within a level."""
    return sorted(rules, key=lambda r: -r.level)


def evidence(flow: Flow, rules: Iterable[Rule], values: Values) -> list[str]:
    """The findings that made these rules fire, without repeats, in order."""
    out: list[str] = []
    for rule in by_urgency(rules):
        for finding in conditions.evidence(rule.when.expr, values):
            if finding not in out:
                out.append(finding)
    return out


def describe(flow: Flow, finding: str, value: Value, lang: str) -> str:
    """A finding in plain words for 'because you told me': label, plus the value."""
    f = flow.vocabulary[finding]
    label = flow.labels[finding].get(lang) if finding in flow.labels else finding
    if f.kind is Kind.BOOLEAN:
        return label
    if f.kind is Kind.CHOICE:
        return f"{label}: {str(value).replace('_', ' ')}"
    if value is None:
        return label
    unit = {"celsius": "°C", "years": "years", "days": "days"}.get(f.unit or "", "")
    number = f"{value:g}" if f.unit != "years" or value >= 1 else _baby_age(value)
    return f"{label}: {number} {unit}".rstrip() if f.unit != "years" or value >= 1 else \
        f"{label}: {number}"


def _baby_age(years: float) -> str:
    weeks = round(years * 52)
    return f"{weeks} weeks" if weeks < 13 else f"{round(years * 12)} months"
