"""Benchmark the pure engine: answers processed per second over full interviews.

Replays recorded interviews (the automatic patient on the public vignettes)
through `Engine.handle`, with every red-flag rule evaluated after each answer,
and prints one JSON object. The baseline, measured in the same run, is the
bare rule evaluation alone (all rules on a dict of values), so the ratio shows
what the state machine costs on top of the rules.

    python bench/engine.py [--vignettes FILE] [--seconds 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import rules as rulebook  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.loader import load_flow  # noqa: E402
from bot.session import Ask  # noqa: E402
from bot.vignettes import answer, load_vignettes  # noqa: E402

DEFAULT_VIGNETTES = ROOT.parent / "shared" / "triage" / "sample-vignettes.yaml"


def record(engine: Engine, vignettes) -> list[list]:
    """The inputs each vignette's patient gives, so replay times the engine alone."""
    scripts = []
    for v in vignettes:
        truth = {**engine.flow.vocabulary.absent_values(), **v.findings}
        step, script = engine.start(), []
        while step.session.status != "done":
            ask = next(r for r in reversed(step.replies) if isinstance(r, Ask))
            inp = answer(engine.flow, ask, truth)
            script.append(inp)
            step = engine.handle(step.session, inp)
        scripts.append(script)
    return scripts


def replay(engine: Engine, scripts, seconds: float) -> tuple[float, int, int]:
    answers = interviews = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for script in scripts:
            step = engine.start()
            for inp in script:
                step = engine.handle(step.session, inp)
            answers += len(script)
            interviews += 1
    return time.perf_counter() - start, answers, interviews


def rules_only(engine: Engine, scripts, seconds: float) -> float:
    values = engine.flow.vocabulary.absent_values()
    per_round = sum(len(s) for s in scripts)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(per_round):
            rulebook.fired(engine.flow, values)
        done += per_round
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vignettes", default=str(DEFAULT_VIGNETTES))
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of engine then baseline, interleaved; medians reported")
    args = parser.parse_args()
    flow = load_flow(ROOT / "flows" / "back_pain_fever.yaml")
    engine = Engine(flow)
    vignettes = load_vignettes(args.vignettes, flow)
    scripts = record(engine, vignettes)
    questions = [len(s) for s in scripts]
    rates, baselines, interviews_rates = [], [], []
    for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both alike
        elapsed, answers, interviews = replay(engine, scripts, args.seconds)
        rates.append(answers / elapsed)
        interviews_rates.append(interviews / elapsed)
        baselines.append(rules_only(engine, scripts, args.seconds))
    print(json.dumps({
        "benchmark": "engine",
        "python": platform.python_version(),
        "vignettes": len(vignettes),
        "rounds": args.rounds,
        "answers_per_second": round(statistics.median(rates)),
        "answers_per_second_best": round(max(rates)),
        "interviews_per_second": round(statistics.median(interviews_rates)),
        "median_questions_per_interview": statistics.median(questions),
        "baseline_rule_evaluations_per_second": round(statistics.median(baselines)),
        "engine_cost_vs_bare_rules": round(statistics.median(
            b / r for b, r in zip(baselines, rates, strict=True)), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
