"""The deployment overlay (local.yaml), the env file and `triagebot init`: a service's
own name, urgent line and pages in every language, without touching the flows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import local
from bot.engine import Engine
from bot.flow import Level
from bot.loader import load_flows
from bot.local import load_overlay
from bot.session import Outcome
from bot.vignettes import answer, load_vignettes, typed

from .conftest import FLOWS, ROOT

EMERGENCY = "45\nmale\nlower back\n11\n"  # typed: saddle numbness, an emergency
VIGNETTES = ROOT / "tests" / "vignettes" / "sample-vignettes.yaml"
LANGS = ("en", "es", "ru", "ar")
NAMES = {"en": "Riverside Health", "es": "Salud Riverside", "ru": "Риверсайд Здоровье",
         "ar": "ريفرسايد هيلث"}
LINES = {"en": "the Riverside urgent line, 0800 123 456",
         "es": "la línea urgente de Riverside, 0800 123 456",
         "ru": "срочная линия Riverside, 0800 123 456", "ar": "خط ريفرسايد العاجل، 0800 123 456"}
OFFERED = {"en": "This check is offered by {}.", "es": "Este servicio lo ofrece {}.",
           "ru": "Эту проверку предоставляет {}.", "ar": "يقدّم هذا الفحص {}."}
HOURS = {"en": "Opening hours: 8-20.", "es": "Horario: 8-20.", "ru": "Часы работы: 8-20.",
         "ar": "ساعات العمل: 8-20."}


def overlay_text() -> str:
    def by_lang(values: dict[str, str]) -> str:
        return "".join(f'\n  {lang}: "{text}"' for lang, text in values.items())
    return (f"service_name:{by_lang(NAMES)}\nurgent_line:{by_lang(LINES)}\n"
            "urgent_hours: \"8-20\"\n"
            "links:\n  riverside:\n    title: {en: \"Riverside: urgent care\", es: \"Riverside:"
            " urgencias\", ru: \"Riverside: срочно\", ar: \"ريفرسايد: عاجل\"}\n"
            "    url: {en: \"https://riverside.example/urgent\", es: \"https://riverside."
            "example/es/urgente\", ru: \"https://riverside.example/urgent\", ar: "
            "\"https://riverside.example/urgent\"}\n    levels: [urgent]\n")


@pytest.fixture(scope="module")
def flows():
    found, problems = load_flows([FLOWS])
    assert not problems
    return found


def outcome_of(engine: Engine, vignette_id: str, lang: str) -> Outcome:
    """The outcome the automatic patient of a public vignette reaches, typing in `lang`."""
    case = next(v for v in load_vignettes(VIGNETTES, engine.flow) if v.id == vignette_id)
    truth = {**engine.flow.vocabulary.absent_values(), **case.findings}
    step = engine.start(lang)
    for _ in range(60):
        done = next((r for r in step.replies if isinstance(r, Outcome)), None)
        if done:
            return done
        ask = [r for r in step.replies if hasattr(r, "options")][-1]
        reply = answer(engine.flow, ask, truth)
        step = engine.handle(step.session, typed(ask, reply, lang) if lang != "en" else reply)
    raise AssertionError("no outcome")


@pytest.mark.parametrize("lang", LANGS)
def test_an_overlay_names_the_service_and_its_urgent_line_in_every_language(
        flows, tmp_path, lang):
    (tmp_path / "local.yaml").write_text(overlay_text(), encoding="utf-8")
    overlay, problems = load_overlay(tmp_path / "local.yaml", flows.values())
    assert problems == [] and overlay is not None
    flow = flows["back_pain_fever"]
    plain, mine = Engine(flow), Engine(flow, overlay=overlay)

    urgent, before = outcome_of(mine, "pub-06", lang), outcome_of(plain, "pub-06", lang)
    assert urgent.level == before.level == Level.URGENT and urgent.rules == before.rules
    assert LINES[lang] in urgent.action and HOURS[lang] in urgent.action
    assert "NHS 111" in before.action and "NHS 111" not in urgent.action
    assert urgent.disclaimer == before.disclaimer + " " + OFFERED[lang].format(NAMES[lang])
    assert urgent.links[:len(before.links)] == before.links, "the flow's links come first"
    url = "https://riverside.example/es/urgente" if lang == "es" else \
        "https://riverside.example/urgent"
    assert urgent.links[len(before.links):] == ((
        {"en": "Riverside: urgent care", "es": "Riverside: urgencias", "ru": "Riverside: срочно",
         "ar": "ريفرسايد: عاجل"}[lang], url),)

    # a self-care outcome names the service, without the urgent-only link
    calm = outcome_of(mine, "pub-14", lang)
    assert calm.disclaimer.endswith(OFFERED[lang].format(NAMES[lang]))
    assert all("riverside" not in url for _, url in calm.links)
    # the interview itself is the same: same questions, same levels
    assert outcome_of(mine, "pub-01", lang).level == outcome_of(plain, "pub-01", lang).level


def test_without_an_overlay_the_wording_is_the_flows_exactly(flows):
    flow = flows["back_pain_fever"]
    for lang in LANGS:
        assert local.fill(flow.text("disclaimer", lang), local.places(
            flow, local.NO_OVERLAY, lang)) == flow.text("disclaimer", lang).removesuffix(
            " {offered_by}")
    assert local.fill("a {x} b", {"x": ""}) == "a b" and local.fill("{x} b", {"x": ""}) == " b"


BROKEN = """\
service_name: {en: "Riverside", es: "Riverside", ru: "Riverside"}
servce_line: "x"
urgent_line: {en: "call {emergency_number}", es: "a", ru: "b", ar: "c", fr: "d"}
emergency_number: "99x"
links:
  ours: {title: "Ours", url: "http://riverside.example", levels: [urgentt]}
welcome: {en: "a new first question?"}
"""


def triagebot(*args: str, cwd: Path, env: dict | None = None,
              stdin: str = "") -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGEBOT_",
                                                                      "TELEGRAM_"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=environ |
                          (env or {}), input=stdin, capture_output=True, text=True, timeout=60)


def test_a_broken_overlay_is_refused_with_file_line_and_what_to_do(tmp_path):
    (tmp_path / "local.yaml").write_text(BROKEN, encoding="utf-8")
    result = triagebot("validate", cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "local.yaml:1:1: service_name: no 'ar' text (the flows speak ar)" in out, out
    assert "local.yaml:2:1: servce_line: 'servce_line' is not a local place of any flow — " \
           "did you mean 'service_name'?" in out, out
    assert "local.yaml:3:" in out and "cannot hold {places} or <tags>" in out
    assert "urgent_line.fr: language 'fr' is not one the flows speak" in out
    assert "local.yaml:4:1: emergency_number: '99x' is not an emergency number" in out
    assert "links.ours.url.en: 'http://riverside.example' is not an https:// address" in out
    assert "links.ours.levels: levels must list triage levels" in out
    assert "local.yaml:7:1: welcome: 'welcome' is not a local place" in out, \
        "a question cannot be reworded"
    for command in (["chat"], ["run"]):  # the bot refuses to start on it
        refused = triagebot(*command, cwd=tmp_path, env={"TELEGRAM_BOT_TOKEN": "1:x"})
        assert refused.returncode == 1 and "local.yaml:2:1:" in refused.stderr, refused.stderr

    (tmp_path / "local.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    assert "local.yaml must be a mapping" in triagebot("validate", cwd=tmp_path).stdout
    (tmp_path / "local.yaml").write_text("a: [unclosed\n", encoding="utf-8")
    assert "local.yaml:" in triagebot("validate", cwd=tmp_path).stdout
    (tmp_path / "local.yaml").write_text("service_name: \"" + "x" * 5000 + "\"\n")
    assert "keep it under 300" in triagebot("validate", cwd=tmp_path).stdout


def test_a_flow_cannot_put_a_local_place_in_a_question(tmp_path):
    text = (ROOT / "tests" / "flows" / "minimal.yaml").read_text(encoding="utf-8")
    text = text.replace('text: {en: "Where is the pain?"}',
                        'text: {en: "Where is the pain, {service_name}?"}')
    text += '\nlocal:\n  service_name: {en: ""}\n'
    (tmp_path / "minimal.yaml").write_text(text, encoding="utf-8")
    result = triagebot("validate", str(tmp_path), cwd=ROOT)
    assert result.returncode == 1
    assert "nodes.where.text: local place '{service_name}' in a question, answer, label or " \
           "rule" in result.stdout, result.stdout


def test_init_writes_a_folder_that_chat_and_validate_use(tmp_path):
    made = triagebot("init", "clinic", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "clinic"
    env_file, overlay = folder / "triagebot.env", folder / "local.yaml"
    assert env_file.stat().st_mode & 0o777 == 0o600, "it will hold the token"
    text = env_file.read_text()
    from bot.settings import ENV_VARS
    for var in ENV_VARS:
        assert var in text or var == "TRIAGEBOT_ENV_FILE", f"triagebot.env lacks {var}"
    again = triagebot("init", "clinic", cwd=tmp_path)
    assert again.returncode == 0 and "exists, left as it is" in again.stderr
    assert env_file.read_text() == text, "never overwritten"

    assert triagebot("validate", cwd=folder).returncode == 0
    # the volunteer removes the # of the service name, and sets the number in the env file
    lines = overlay.read_text(encoding="utf-8").splitlines()
    start = lines.index("# service_name:")
    lines[start:start + 5] = [line[2:] for line in lines[start:start + 5]]
    overlay.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env_file.write_text(text.replace("# TRIAGEBOT_EMERGENCY_NUMBER=112",
                                     "TRIAGEBOT_EMERGENCY_NUMBER=999"))
    chat = triagebot("chat", "--colour", "never", cwd=folder,
                     stdin="45\nmale\nlower back\n11\n")  # saddle numbness: emergency
    assert chat.returncode == 0, chat.stderr
    assert "This check is offered by Riverside Health." in chat.stdout
    assert "CALL 999 NOW" in chat.stdout
    assert (folder / "triagebot.sqlite3").exists() is False, "chat keeps nothing"

    # what the environment says wins over the file; a stray key is named with a fix
    chat = triagebot("chat", "--colour", "never", cwd=folder, stdin="45\nmale\nlower back\n11\n",
                     env={"TRIAGEBOT_EMERGENCY_NUMBER": "112"})
    assert "CALL 112 NOW" in chat.stdout
    env_file.write_text(text + "TRIAGEBOT_EMERGENCY_NUMBR=999\n")
    wrong = triagebot("chat", cwd=folder)
    assert wrong.returncode == 2 and "did you mean 'TRIAGEBOT_EMERGENCY_NUMBER'" in wrong.stderr


def test_two_emergency_numbers_that_disagree_are_refused(tmp_path):
    (tmp_path / "local.yaml").write_text('emergency_number: "999"\n')
    refused = triagebot("chat", cwd=tmp_path, env={"TRIAGEBOT_EMERGENCY_NUMBER": "112"})
    assert refused.returncode == 2 and "keep it in one place" in refused.stderr
    agreed = triagebot("chat", "--colour", "never", cwd=tmp_path, stdin=EMERGENCY)
    assert "CALL 999 NOW" in agreed.stdout, agreed.stdout + agreed.stderr


def test_the_env_file_paths_are_from_its_folder(tmp_path):
    from bot.settings import read_env_file

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "x.env").write_text("TRIAGEBOT_DB=data.sqlite3\nTRIAGEBOT_MODE=\n")
    environ = {"TRIAGEBOT_ENV_FILE": str(tmp_path / "conf" / "x.env")}
    read_env_file(environ)
    assert environ["TRIAGEBOT_DB"] == str((tmp_path / "conf" / "data.sqlite3").resolve())
    assert "TRIAGEBOT_MODE" not in environ, "an empty line means the default"


async def test_the_running_bot_speaks_the_overlay_in_help_and_outcomes(fake, flow, tmp_path):
    from dataclasses import replace

    from bot.cli import build_conversations

    from .test_telegram import Harness, Person, emergency_by_buttons

    (tmp_path / "local.yaml").write_text(overlay_text().replace("levels: [urgent]",
                                                                "levels: [emergency]"))
    h = Harness(fake, flow, tmp_path / "bot.sqlite3", "polling")
    h.settings = replace(h.settings, local=tmp_path / "local.yaml")
    h.bot.settings = h.settings
    h.bot.conversations = build_conversations(h.settings)
    async with h:
        p = Person(fake, 1501)
        await p.say("/help", until=lambda: p.seen() == 1)
        assert p.last().endswith("This check is offered by Riverside Health.")
        await emergency_by_buttons(p)
        outcome = fake.bot_messages(1501)[-1]
        assert "EMERGENCY" in outcome.text and "Riverside: urgent care" in outcome.text
        assert "https://riverside.example/urgent" in outcome.html
        assert "This check is offered by Riverside Health." in outcome.text
        assert fake.errors == []


def test_the_deploy_env_example_is_a_valid_env_file(tmp_path):
    from bot.settings import read_env_file

    environ = {"TRIAGEBOT_ENV_FILE": str(ROOT / "deploy" / "env.example")}
    read_env_file(environ)  # TRIAGEBOT_DOMAIN is Caddy's: passed over, not refused
    assert environ["TRIAGEBOT_MODE"] == "webhook" and "TRIAGEBOT_DOMAIN" not in environ
