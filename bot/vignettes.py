"""Clinical vignettes: an automatic patient, and the metrics of VIGNETTES-FORMAT.md.

The patient answers each question from the vignette's findings, the way a
person would: typed numbers (so the parsers are exercised too), buttons for
yes/no and choices, ticks for checklists. Absent booleans are "no", absent
choices their default, unknown numbers "don't know". It never says "not sure".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.engine import NONE, UNKNOWN, Engine
from bot.findings import Kind, Value
from bot.flow import Flow, Level
from bot.session import Ask, Input, Pick, PickMany, Session, Typed
from bot.yamlsource import safe_load

MAX_STEPS = 200


@dataclass(frozen=True, slots=True)
class Vignette:
    id: str
    summary: str
    findings: dict[str, Value]
    expected: Level
    acceptable: tuple[Level, ...]
    source: str


@dataclass(frozen=True, slots=True)
class Result:
    vignette: Vignette
    got: Level
    fired: tuple[str, ...]
    questions: int

    @property
    def correct(self) -> bool:
        return self.got == self.vignette.expected or self.got in self.vignette.acceptable

    @property
    def under(self) -> bool:
        return not self.correct and self.got < self.vignette.expected

    @property
    def over(self) -> bool:
        return not self.correct and self.got > self.vignette.expected


class VignetteError(Exception):
    """A vignette file or case is malformed; the message names the case and the fix."""


def load_vignettes(path: str | Path, flow: Flow) -> list[Vignette]:
    try:
        data = safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise VignetteError(f"{path}: cannot read vignettes: {exc}") from exc
    if not isinstance(data, list):
        raise VignetteError(f"{path}: a vignette file is a YAML list of cases")
    out = []
    voc = flow.vocabulary
    for i, case in enumerate(data):
        where = f"{path}: case {case.get('id', i) if isinstance(case, dict) else i}"
        if not isinstance(case, dict) or not {"id", "findings", "expected"} <= case.keys():
            raise VignetteError(f"{where}: needs id, findings and expected")
        for fid, value in case["findings"].items():
            if fid not in voc:
                raise VignetteError(f"{where}: unknown finding '{fid}' (see FINDINGS.yaml)")
            if voc[fid].kind is Kind.NUMBER and not isinstance(value, int | float):
                raise VignetteError(f"{where}: {fid} must be a number")
        try:
            expected = Level.parse(case["expected"])
            acceptable = tuple(Level.parse(x) for x in case.get("acceptable", ()))
        except KeyError as exc:
            raise VignetteError(f"{where}: unknown level {exc}") from exc
        findings = {k: (float(v) if voc[k].kind is Kind.NUMBER else v)
                    for k, v in case["findings"].items()}
        out.append(Vignette(str(case["id"]), str(case.get("summary", "")), findings,
                            expected, acceptable, str(case.get("source", ""))))
    return out


def answer(flow: Flow, ask: Ask, truth: dict[str, Value]) -> Input:
    """What a person with these findings would reply to `ask`."""
    node = flow.nodes[ask.node]
    if ask.item >= 0:
        item = node.items[ask.item]
        return Pick(node.id, "yes" if truth[item.finding] == item.value else "no", ask.item)
    if node.type == "yes_no":
        return Pick(node.id, "yes" if truth[node.asks[0]] is True else "no")
    if node.type == "number":
        value = truth[node.asks[0]]
        return Pick(node.id, UNKNOWN) if value is None else Typed(f"{value:g}")
    if node.type == "checklist":
        visible = {c.id for c in ask.options}
        return PickMany(node.id, tuple(i.id for i in node.items
                                       if i.id in visible and truth[i.finding] == i.value))
    if node.type == "choice":
        for option in node.options:
            if all(truth[f] == v for f, v in option.sets):
                return Pick(node.id, option.id)
        numeric = [o for o in node.options if len(o.sets) == 1 and
                   isinstance(o.sets[0][1], float) and truth[o.sets[0][0]] is not None]
        fitting = [o for o in numeric if o.sets[0][1] <= truth[o.sets[0][0]]]  # type: ignore[operator]
        if fitting:  # an age band: the highest band starting at or below the age
            return Pick(node.id, max(fitting, key=lambda o: o.sets[0][1]).id)  # type: ignore[arg-type, return-value]
    raise VignetteError(f"question '{node.id}' cannot be answered from the findings")


ARABIC_DIGITS = str.maketrans("0123456789.,", "٠١٢٣٤٥٦٧٨٩٫،")


def typed(ask: Ask, reply: Input, lang: str) -> Input:
    """The same answer typed, as a person using `lang` would: the button's label, the
    numbers of the ticked items, a number written the local way."""
    if isinstance(reply, Pick):
        label = next(c.label for c in (*ask.options, *ask.extra) if c.id == reply.option)
        return Typed(label)
    if isinstance(reply, PickMany):
        if not reply.options:
            return Typed(next(c.label for c in ask.extra if c.id == NONE))
        ids = [c.id for c in ask.options]
        text = ", ".join(str(ids.index(o) + 1) for o in reply.options)
    else:
        text = reply.text  # type: ignore[union-attr]
        if lang in ("es", "ru", "pt", "fr", "de", "uk"):
            text = text.replace(".", ",")  # a decimal comma
    return Typed(text.translate(ARABIC_DIGITS) if lang in ("ar", "fa") else text)


def run_case(engine: Engine, vignette: Vignette, lang: str | None = None) -> Result:
    """One vignette through the engine. With `lang`, the interview is in that language
    and the patient types every answer in it instead of pressing buttons."""
    flow = engine.flow
    truth = {**flow.vocabulary.absent_values(), **vignette.findings}
    step = engine.start(lang)
    session: Session = step.session
    replies = step.replies
    for _ in range(MAX_STEPS):
        if session.status == "done":
            break
        ask = next((r for r in reversed(replies) if isinstance(r, Ask)), None)
        if ask is None:
            raise VignetteError(f"{vignette.id}: the interview stopped without a question")
        reply = answer(flow, ask, truth)
        step = engine.handle(session, typed(ask, reply, lang) if lang else reply)
        session, replies = step.session, step.replies
    else:
        raise VignetteError(f"{vignette.id}: no outcome after {MAX_STEPS} answers")
    return Result(vignette, Level.parse(session.level or "self_care"), session.fired,
                  session.questions_asked)


def summarize(results: Iterable[Result]) -> dict[str, Any]:
    """The summary object of VIGNETTES-FORMAT.md (rates are fractions 0..1)."""
    results = list(results)
    n = len(results)
    correct = sum(r.correct for r in results)
    under = sum(r.under for r in results)
    over = sum(r.over for r in results)
    emergency = [r for r in results if r.vignette.expected is Level.EMERGENCY]
    levels = [lv.id for lv in Level]
    per_level = {}
    for lv in Level:
        cases = [r for r in results if r.vignette.expected is lv]
        if cases:
            per_level[lv.id] = sum(r.correct for r in cases) / len(cases)
    confusion = {e: {g: 0 for g in levels} for e in levels}
    for r in results:
        confusion[r.vignette.expected.id][r.got.id] += 1
    questions = sorted(r.questions for r in results)
    return {
        "n": n,
        "correct": correct,
        "exact_accuracy": correct / n if n else 0.0,
        "under_triaged": under,
        "under_triage_rate": under / n if n else 0.0,
        "under_triage_two_levels": sum(
            1 for r in results if not r.correct and r.vignette.expected - r.got >= 2),
        "over_triaged": over,
        "over_triage_rate": over / n if n else 0.0,
        "emergency_total": len(emergency),
        "emergency_correct": sum(r.got is Level.EMERGENCY for r in emergency),
        "emergency_sensitivity": (sum(r.got is Level.EMERGENCY for r in emergency)
                                  / len(emergency)) if emergency else 1.0,
        "per_level_accuracy": per_level,
        "confusion": confusion,
        "risk_averseness": (over / under) if under else "inf",
        "median_questions": _median(questions),
    }


def _median(values: list[int]) -> float:
    if not values:
        return 0.0
    mid = len(values) // 2
    return float(values[mid]) if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def safe(summary: dict[str, Any]) -> bool:
    """The safety requirement: every emergency caught, nothing two levels too low."""
    return summary["emergency_correct"] == summary["emergency_total"] and \
        summary["under_triage_two_levels"] == 0
