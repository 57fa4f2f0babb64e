"""The bundled flow implements RED-FLAGS.md exactly: same rules, same conditions.

Conditions are read straight from the rule tables of RED-FLAGS.md (their
notation is the flow language's), terms from sections 2 and 3, and the viral
exception from the bullet list of 5.2. Each flow rule must then agree with the
reference on many generated sets of findings, boundary values included.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import conditions as cond
from bot import rules as rulebook
from bot.findings import Kind, bundled_vocabulary, parse_vocabulary
from bot.flow import Level

ROW = re.compile(r"^\| `([a-z_-]+)` \| (.+?) \|")

# RED-FLAGS.md 5.2, bullet by bullet.
VIRAL_EXCEPTION_5_2 = (
    "viral_pattern"
    " AND NOT kidney_signs"
    " AND known(age_years) AND NOT high_risk_host"
    " AND known(duration_days) AND duration_days < 5"
    " AND (NOT known(temperature_c) OR temperature_c < 39.5)"
    " AND NOT pain_severity == severe"
)
SECTION_LEVEL = {"4.1": Level.EMERGENCY, "4.2": Level.URGENT, "4.3": Level.ROUTINE}


def reference(shared):
    """(terms, rules) as written in RED-FLAGS.md; rules map id -> (level, condition)."""
    text = (shared / "RED-FLAGS.md").read_text(encoding="utf-8")
    terms, rules, section = {}, {}, ""
    for line in text.splitlines():
        heading = re.match(r"^#{2,3} (\d+(?:\.\d+)?)", line)
        if heading:
            section = heading.group(1)
        m = ROW.match(line)
        if not m:
            continue
        name, condition = m.group(1), m.group(2).replace("`", "")
        condition = re.sub(r"\([\d.]+ °F\)", "", condition).strip()  # "(103.1 °F)" notes
        if section in SECTION_LEVEL:
            rules[name] = (SECTION_LEVEL[section], condition)
        elif section in ("2", "3") and "see section" not in condition:
            terms[name] = condition
    terms["viral_exception"] = VIRAL_EXCEPTION_5_2
    return terms, rules


@functools.cache
def compile_reference(shared):
    terms, rules = reference(shared)
    voc = bundled_vocabulary()
    trees = {name: cond.parse(text) for name, text in terms.items()}
    scope = cond.Scope(voc, trees)
    compiled = {}
    for rid, (level, text) in rules.items():
        tree = cond.parse(text)
        assert cond.check(tree, scope) == [], rid
        compiled[rid] = (level, cond.compile_expr(cond.expand(tree, trees)))
    return compiled


def test_every_reference_rule_is_in_the_flow_at_its_level(flow, shared):
    _, rules = reference(shared)
    assert len(rules) >= 60
    ours = {r.id: r for r in flow.rules}
    assert set(ours) == set(rules)
    for rid, (level, _) in rules.items():
        assert ours[rid].level is level, rid
        assert rid in ours[rid].source, f"{rid} must cite the rule it implements"


def test_conditions_are_the_reference_conditions_word_for_word(flow, shared):
    _, rules = reference(shared)
    for rule in flow.rules:
        assert " ".join(rule.when.text.split()) == rules[rule.id][1], rule.id


BOUNDARIES = {
    "temperature_c": [30.0, 35.9, 36.0, 37.9, 38.0, 38.3, 39.4, 39.5, 45.0],
    "age_years": [0.0, 0.13, 0.24, 0.25, 4.9, 5.0, 15.9, 16.0, 16.9, 17.0, 59.9, 60.0, 64.9,
                  65.0, 120.0],
    "duration_days": [0.0, 4.0, 5.0, 20.0, 21.0, 5475.0],
}


@st.composite
def finding_values(draw):
    voc = bundled_vocabulary()
    values = {}
    for f in voc.findings.values():
        if f.kind is Kind.BOOLEAN:
            values[f.id] = draw(st.booleans() | st.just(False))
        elif f.kind is Kind.CHOICE:
            values[f.id] = draw(st.sampled_from([*f.values, f.absent]))
        else:
            values[f.id] = draw(st.none() | st.sampled_from(BOUNDARIES[f.id]) |
                                st.floats(f.min, f.max, allow_nan=False))
    return values


@settings(max_examples=400, deadline=None)
@given(values=finding_values())
def test_flow_rules_fire_exactly_when_the_reference_rules_do(flow, shared, values):
    compiled = compile_reference(shared)
    ours = rulebook.with_terms(flow, values)
    for rule in flow.rules:
        assert rule.when.test(ours) == compiled[rule.id][1](values), rule.id


def test_links_come_from_red_flags_section_8(flow, shared):
    text = (shared / "RED-FLAGS.md").read_text(encoding="utf-8")
    section8 = text[text.index("## 8."):text.index("## 9.")]
    for link in flow.links.values():
        assert link.url.get("en") in section8, link.id
        for lang, url in link.url.by_lang:  # a translation's own page: the same publisher's
            assert urlsplit(url).netloc == urlsplit(link.url.get("en")).netloc, (link.id, lang)


def test_the_bundled_findings_copy_matches_the_reference(shared):
    ours = bundled_vocabulary()
    theirs = parse_vocabulary(yaml.safe_load((shared / "FINDINGS.yaml").read_text("utf-8")))
    assert ours == theirs


def test_every_finding_a_rule_reads_is_asked_by_the_flow(flow):
    asked = {f for node in flow.nodes.values() for f in node.asks}
    read = set().union(*(cond.findings_in(r.when.expr) for r in flow.rules))
    assert read - asked == set()
