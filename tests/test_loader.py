"""Loading flows: the bundled ones are clean; every kind of mistake is reported
with its file, line and column, a plain explanation and a fix."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.errors import FlowError
from bot.loader import load_flow, load_flows
from bot.yamlsource import read_yaml, safe_load

from .conftest import BUNDLED, FLOWS

HERE = Path(__file__).resolve().parent
BROKEN = HERE / "broken_flows"

# file -> (line, col, words the message must contain)
EXPECTED = {
    "tab_indent": [(79, 1, "tabs for indentation")],
    "bad_indent": [(79, 9, "malformed YAML")],
    "duplicate_node": [(90, 3, "duplicate key 'chest' (first defined on line 76)")],
    "dangling_target": [(75, 5, "unknown node 'chets' — did you mean 'chest'?")],
    "unreachable": [(95, 3, "node 'orphan' can never be reached")],
    "no_way_out": [(90, 3, "node 'feverish' is on a loop with no way out"),
                   (95, 3, "node 'loop' is on a loop with no way out")],
    "unknown_finding": [(78, 5, "unknown finding 'chest_pains' — did you mean 'chest_pain'?"),
                        (19, 5, "rule 'em-chest-pain' can never fire; no question asks "
                                "chest_pain")],
    "unknown_value": [(25, 5, "'nowhere' is not a value of 'back_pain_location'")],
    "missing_translation": [(66, 5, "nodes.hello.text: missing translation 'fr'"),
                            (35, 3, "texts.button_yes: missing translation 'fr'")],
    "long_callback": [(73, 10, "is 58 bytes; Telegram's callback data leaves 48")],
    "dead_rule": [(9, 3, "`temperature_c > 50` can never be true"),
                  (26, 5, "rule 'ur-aortic' can never fire; no question asks "
                          "sudden_severe_onset")],
    "wrong_types": [(19, 5, "'temperature_c' is a number, not yes/no"),
                    (92, 5, "'temperature_c' is a number; a yes_no question asks a boolean")],
    "duplicate_rule": [(23, 5, "duplicate rule id 'em-chest-pain'"),
                       (23, 5, "does not start with its level")],
    "syntax_error": [(25, 5, "expected ')' but found 'the end'"),
                     (87, 9, "use AND / OR / NOT")],
    "yes_no_key": [(35, 3, "the key 'yes' reads as True")],
    "outcome_without_link": [(95, 3, "an outcome needs at least one guidance link"),
                             (71, 5, "a question must read as a question")],
}


def test_the_bundled_flows_are_clean():
    flows, problems = load_flows([FLOWS])
    assert problems == []
    assert "back_pain_fever" in flows


def test_there_are_at_least_ten_kinds_of_broken_flow():
    files = sorted(p.stem for p in BROKEN.glob("*.yaml"))
    assert files == sorted(EXPECTED) and len(files) >= 10


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_mistake_is_reported_where_it_is(name):
    path = BROKEN / f"{name}.yaml"
    with pytest.raises(FlowError) as info:
        load_flow(path)
    lines = [str(p) for p in info.value.problems]
    for line, col, words in EXPECTED[name]:
        prefix = f"{path}:{line}:{col}: "
        assert any(text.startswith(prefix) and words in text for text in lines), \
            f"expected {prefix}…{words}… in:\n" + "\n".join(lines)
    assert all(" — " in text for text in lines), "every problem says how to fix it"


def test_every_problem_in_a_folder_is_reported_not_just_the_first():
    _, problems = load_flows([BROKEN])
    files = {Path(p.file).stem for p in problems}
    assert files == set(EXPECTED)


def test_two_flows_with_the_same_id_are_a_problem(tmp_path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text((HERE / "flows" / "minimal.yaml").read_text())
    flows, problems = load_flows([tmp_path])
    assert len(flows) == 1
    assert any("flow id 'minimal' is also used by" in str(p) for p in problems)


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    _, problems = load_flows([tmp_path])
    assert problems and "cannot read the file" in str(problems[0])


def test_a_flow_that_is_not_a_mapping_is_a_problem(tmp_path):
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    _, problems = load_flows([tmp_path])
    assert "must be a mapping" in str(problems[0])


SCHEMA = json.loads((FLOWS / "flow.schema.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [BUNDLED, HERE / "flows" / "minimal.yaml"])
def test_the_published_json_schema_accepts_the_flows(path):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data)) == []


@pytest.mark.parametrize("mutate", [
    lambda d: d["nodes"]["where"].update(type="multiple_choice"),
    lambda d: d["nodes"]["where"].update(colour="red"),
    lambda d: d["rules"][0].pop("source"),
    lambda d: d["levels"].pop("urgent"),
    lambda d: d["links"]["nhs_back_pain"].update(url="http://insecure.example"),
    lambda d: d["nodes"]["temp"].pop("unknown"),
])
def test_the_json_schema_rejects_what_the_loader_rejects(mutate):
    data = yaml.safe_load((HERE / "flows" / "minimal.yaml").read_text(encoding="utf-8"))
    mutate(data)
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))


@pytest.mark.parametrize("text", [
    "x: !!python/object/apply:os.system ['echo owned']",
    "x: !!python/name:os.system",
])
def test_yaml_with_python_tags_is_refused_not_run(text):
    """Flows, translations, bot texts and vignettes are read by a safe loader (libyaml's
    when PyYAML has it): a Python tag is an error with its line, never a call (and
    never an exception out of the flow reader)."""
    with pytest.raises(yaml.YAMLError):
        safe_load(text)
    _, problems = read_yaml(text, "f.yaml")
    assert [(p.line, p.where) for p in problems] == [(1, "x")]
    assert "python/" in problems[0].what and "not allowed" in problems[0].what


def test_a_value_yaml_cannot_read_is_a_problem_not_a_crash():
    _, problems = read_yaml("age: !!int forty", "f.yaml")
    assert [(p.line, p.where) for p in problems] == [(1, "age")]
    assert "cannot read this value" in problems[0].what
