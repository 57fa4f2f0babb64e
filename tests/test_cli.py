"""The command line, run as a real process, and the README that documents it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import yaml

from bot import graph
from bot.cli import build_parser
from bot.settings import ENV_VARS

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
VIGNETTES = ROOT / "tests" / "vignettes" / "sample-vignettes.yaml"


def triagebot(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_",
                                                                      "TELEGRAM_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, env=environ, timeout=60)


def test_validate_is_clean_on_the_bundled_flows():
    result = triagebot("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "back_pain_fever" in result.stdout and "61 rules" in result.stdout


def test_validate_prints_every_problem_with_file_line_and_column():
    result = triagebot("validate", "tests/broken_flows")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "tests/broken_flows/dangling_target.yaml:75:5: nodes.where.next: unknown node " \
           "'chets' — did you mean 'chest'?" in lines
    assert len({line.split(":")[0] for line in lines}) >= 10
    assert all(re.match(r"^tests/broken_flows/\w+\.yaml:\d+:\d+: ", line) for line in lines)


def test_eval_meets_the_safety_requirement_on_the_public_vignettes():
    result = triagebot("eval", str(VIGNETTES), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    summary = data["summary"]
    assert summary["emergency_sensitivity"] == 1.0
    assert summary["under_triaged"] == 0 and summary["under_triage_two_levels"] == 0
    assert summary["n"] == len(data["results"]) == 18
    assert summary["correct"] + summary["under_triaged"] + summary["over_triaged"] == 18
    assert summary["median_questions"] <= 10
    first = data["results"][0]
    assert {"id", "expected", "got", "fired_rules"} <= first.keys()
    assert set(summary["confusion"]) == {"self_care", "routine", "urgent", "emergency"}
    assert "safety requirement: met" in triagebot("eval", str(VIGNETTES)).stdout


def test_eval_fails_when_an_emergency_is_missed(tmp_path):
    cases = yaml.safe_load(VIGNETTES.read_text(encoding="utf-8"))
    mild = next(c for c in cases if c["expected"] == "self_care")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump([{**mild, "id": "x-1", "expected": "emergency"}]))
    result = triagebot("eval", str(wrong), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["summary"]["emergency_sensitivity"] == 0.0


def test_eval_reports_a_malformed_vignette_file_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: x\n  findings: {temprature_c: 38}\n  expected: urgent\n")
    result = triagebot("eval", str(bad))
    assert result.returncode == 2 and "unknown finding 'temprature_c'" in result.stderr


def test_graph_draws_mermaid_and_dot():
    mermaid = triagebot("graph", "back_pain_fever")
    assert mermaid.returncode == 0 and mermaid.stdout.startswith("flowchart TD")
    assert "danger -.-> EMERGENCY" in mermaid.stdout
    dot = triagebot("graph", "back_pain_fever", "--format", "dot")
    assert dot.stdout.startswith('digraph "back_pain_fever"') and "em-chest-pain" in dot.stdout


def test_run_without_a_token_says_what_to_do():
    result = triagebot("run")
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr and "triagebot chat" in result.stderr


def test_run_refuses_a_broken_flow(tmp_path):
    (tmp_path / "broken.yaml").write_text(
        (ROOT / "tests" / "broken_flows" / "unreachable.yaml").read_text())
    result = triagebot("run", env={"TRIAGEBOT_FLOWS": str(tmp_path), "TELEGRAM_BOT_TOKEN": "1:x"})
    assert result.returncode == 1 and "can never be reached" in result.stderr


def test_bad_settings_name_the_variable():
    result = triagebot("chat", env={"TRIAGEBOT_EMERGENCY_NUMBER": "call-me"})
    assert result.returncode == 2 and "TRIAGEBOT_EMERGENCY_NUMBER" in result.stderr


def test_chat_runs_a_whole_interview_in_the_terminal():
    answers = "45\n1\n1\n0\n101.5 F\n0\n2\n4 days\n0\n0\n0\n/quit\n"
    result = triagebot("chat", stdin=answers, env={"TRIAGEBOT_EMERGENCY_NUMBER": "999"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "URGENT: BE SEEN BY A CLINICIAN TODAY" in out
    assert "38.6 °C" in out, "101.5 °F is shown back converted"
    assert "999" in out and "not a doctor" in out


def test_chat_re_asks_and_goes_back():
    answers = "300\n45\n/back\n70\n1\n1\n1\n/quit\n"
    out = triagebot("chat", stdin=answers).stdout
    assert "not a possible age" in out
    assert "go back one question" in out
    assert "EMERGENCY: CALL 112 NOW" in out


# ---------------------------------------------------------------- the docs are tested


def test_the_readme_documents_every_command():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in commands:
        assert f"`triagebot {name}" in README, f"README does not document `triagebot {name}`"


def test_the_readme_documents_every_setting():
    for var in ENV_VARS:
        assert f"`{var}`" in README, f"README does not document {var}"


def test_the_readme_diagram_is_the_bundled_flow(flow):
    block = README.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block == graph.mermaid(flow), "regenerate it: triagebot graph back_pain_fever"


def test_ci_runs_the_readme_test_command():
    command = 'pip install -e ".[test]" && pytest'
    assert command in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install --quiet -e ".[test]"' in ci and "\npytest\n" in ci
    assert "ruff check ." in ci


def test_the_vignette_copy_matches_the_reference(shared):
    assert VIGNETTES.read_text("utf-8") == (shared / "sample-vignettes.yaml").read_text("utf-8")


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "bot", "--version"], capture_output=True,
                            text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("triagebot ")
