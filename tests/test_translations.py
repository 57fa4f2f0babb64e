"""Translations: every shipped language triages the vignettes right, and the loader
catches what translators get wrong."""

from __future__ import annotations

import shutil

import pytest

from bot.engine import Engine
from bot.errors import FlowError
from bot.loader import load_flow
from bot.session import Outcome, Pick, Typed
from bot.vignettes import load_vignettes, run_case, summarize

from .conftest import BUNDLED, FLOWS, ROOT
from .test_cli import triagebot

SHIPPED = ("en", "es", "ru", "ar")
VIGNETTES = ROOT / "tests" / "vignettes" / "sample-vignettes.yaml"


def test_the_bundled_flow_ships_english_spanish_russian_and_arabic(flow):
    assert set(SHIPPED) <= set(flow.languages)


@pytest.mark.parametrize("lang", SHIPPED)
def test_the_sample_vignettes_pass_in_every_language_typed(flow, lang):
    """The automatic patient types each answer in the language (button labels, the
    numbers of ticked items, decimal commas, Arabic-Indic digits): every case right."""
    engine = Engine(flow)
    cases = load_vignettes(VIGNETTES, flow)
    results = [run_case(engine, case, lang) for case in cases]
    summary = summarize(results)
    wrong = [(r.vignette.id, r.vignette.expected.id, r.got.id) for r in results if not r.correct]
    assert wrong == [] and summary["emergency_sensitivity"] == 1.0


@pytest.mark.parametrize("lang", SHIPPED)
def test_an_outcome_is_in_the_persons_language_with_their_emergency_number(flow, lang):
    engine = Engine(flow, "112", {"ar": "997"})
    step = engine.start(lang)
    for reply in (Typed("45"), Pick("sex", "male"), Pick("where", "lower"),
                  Typed("11")):  # 11: the saddle numbness item of the emergency screen
        step = engine.handle(step.session, reply)
    outcome = next(r for r in step.replies if isinstance(r, Outcome))
    assert outcome.rules[0] == "em-cauda-equina"
    number = "997" if lang == "ar" else "112"
    assert number in outcome.title and number in outcome.action
    rule = next(r for r in flow.rules if r.id == "em-cauda-equina")
    assert outcome.reasons[0] == rule.says.get(lang)
    # (no local.yaml: the service's "offered by" place is empty and leaves no trace)
    assert outcome.disclaimer == flow.text("disclaimer", lang).replace(" {offered_by}", "")
    if lang != "en":
        assert outcome.disclaimer != flow.text("disclaimer", "en")


def test_spanish_links_go_to_spanish_pages_where_the_publisher_has_them(flow):
    link = flow.links["medlineplus_back_pain"]
    assert link.url.get("es") == "https://medlineplus.gov/spanish/backpain.html"
    assert link.url.get("ru") == link.url.get("en")  # no checked Russian page: English


# ---------------------------------------------------------------- what the loader catches

@pytest.fixture
def folder(tmp_path):
    shutil.copy(BUNDLED, tmp_path / BUNDLED.name)
    shutil.copy(FLOWS / "back_pain_fever.es.yaml", tmp_path / "back_pain_fever.es.yaml")
    return tmp_path


def spanish(folder, old: str, new: str) -> None:
    path = folder / "back_pain_fever.es.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems(folder, **kwargs) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_flow(folder / BUNDLED.name, **kwargs)
    return [str(p) for p in info.value.problems]


def test_a_missing_string_names_the_key_the_file_and_the_english(folder):
    spanish(folder, '  button_done: "Listo"\n', "")
    found = problems(folder)
    assert len(found) == 1
    assert "back_pain_fever.es.yaml" in found[0] and "texts.button_done" in found[0]
    assert "'Done'" in found[0] and "back_pain_fever.yaml:" in found[0]


def test_missing_strings_can_be_warnings_and_then_show_in_english(folder):
    spanish(folder, '  button_done: "Listo"\n', "")
    flow = load_flow(folder / BUNDLED.name, allow_missing_translations=True)
    assert "es" in flow.languages
    assert flow.text("button_done", "es") == "Done" and flow.text("button_yes", "es") == "Sí"


def test_a_key_that_matches_nothing_is_an_error_with_a_suggestion(folder):
    spanish(folder, "      lower: \"Parte baja", "      lowr: \"Parte baja")
    found = problems(folder, allow_missing_translations=True)
    assert any("nodes.where.options.lowr" in p and "did you mean 'lower'" in p for p in found)


def test_a_lost_placeholder_is_an_error(folder):
    """A translated emergency title without the number would tell no one whom to call."""
    spanish(folder, 'title: "Emergencia: llame ahora al {emergency_number}"',
            'title: "Emergencia: llame ahora a urgencias"')
    found = problems(folder)
    assert any("levels.emergency.title" in p and "placeholders" in p for p in found)


def test_the_language_must_match_the_file_name(folder):
    spanish(folder, "language: es", "language: pt")
    assert any("does not match the file name" in p for p in problems(folder))


def test_validate_reports_missing_translations_as_errors_or_warnings(folder):
    spanish(folder, '  button_done: "Listo"\n', "")
    strict = triagebot("validate", str(folder))
    assert strict.returncode == 1 and "texts.button_done" in strict.stdout
    lenient = triagebot("validate", "--missing-translations", "warn", str(folder))
    assert lenient.returncode == 0 and "warning:" in lenient.stdout
    assert "languages en, es" in lenient.stdout


def test_chat_and_eval_take_a_language():
    chat = triagebot("chat", "--lang", "es", "--colour", "never", stdin="45\n")
    assert "¿Qué edad tiene" in chat.stdout
    unknown = triagebot("chat", "--lang", "xx", stdin="")
    assert unknown.returncode == 2 and "no language 'xx'" in unknown.stderr
    result = triagebot("eval", str(VIGNETTES), "--lang", "ar")
    assert result.returncode == 0 and "emergency sensitivity: 100.0%" in result.stdout


# ---------------------------------------------------------------- the bot's own texts

def test_the_bots_own_texts_are_complete_in_every_shipped_language():
    from bot.texts import load_texts

    locales = load_texts()
    assert set(SHIPPED) <= locales.keys()
    for lang in SHIPPED:
        assert locales[lang].missing == () and locales[lang].problems == (), lang
    names = {locales[lang].texts.language_name for lang in SHIPPED}
    assert names == {"English", "Español", "Русский", "العربية"}


def test_a_bot_text_that_loses_a_placeholder_is_reported(tmp_path):
    from bot.texts import load_texts

    (tmp_path / "xx.yaml").write_text('help: "No number here"\nbogus: "x"\n', encoding="utf-8")
    locale = load_texts(tmp_path)["xx"]
    assert any("help" in p and "{emergency_number}" in p for p in locale.problems)
    assert any("unknown key 'bogus'" in p for p in locale.problems)
    assert "help" in locale.missing and locale.texts.help == load_texts()["en"].texts.help
