"""Typed answers: examples from real people, and properties that hold for any text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.answers import (
    Got,
    Invalid,
    Unsure,
    fahrenheit_to_celsius,
    match_option,
    parse_age,
    parse_checklist,
    parse_duration,
    parse_number,
    parse_temperature,
    parse_yes_no,
)


@pytest.mark.parametrize("text, celsius", [
    ("38.5", 38.5), ("38,5", 38.5), ("101F", 38.3), ("101 °F", 38.3), ("39 C", 39.0),
    ("38.5°C", 38.5), ("100.4 F", 38.0), ("100.2F", 37.9), ("about 38", 38.0),
    ("98.6", 37.0), ("102", 38.9), ("37.95", 38.0), ("35,9 °c", 35.9), ("104 fahrenheit", 40.0),
])
def test_temperatures_in_celsius_or_fahrenheit(text, celsius):
    assert parse_temperature(text) == Got(celsius)


@pytest.mark.parametrize("text", ["60", "300", "20 C", "120 F", "-5", "hot", "38.5.1", ""])
def test_implausible_or_unreadable_temperatures_are_re_asked(text):
    assert isinstance(parse_temperature(text), Invalid)


@pytest.mark.parametrize("text", ["not measured", "Don't know", "dunno", "no thermometer"])
def test_an_unmeasured_temperature_is_unknown(text):
    assert parse_temperature(text, unknown_label="Not measured") == Unsure()


@pytest.mark.parametrize("text, years", [
    ("45", 45.0), ("45 years old", 45.0), ("about 70", 70.0), ("7 weeks", 7 / 52),
    ("3 months", 0.25), ("18 months", 1.5), ("two", 2.0), ("newborn", 0.0),
])
def test_ages(text, years):
    assert parse_age(text) == Got(years)


@pytest.mark.parametrize("text", ["300", "200 years", "-1", "old", "130"])
def test_impossible_ages_are_re_asked(text):
    assert isinstance(parse_age(text), Invalid)


@pytest.mark.parametrize("text, days", [
    ("3 days", 3.0), ("two weeks", 14.0), ("a month", 30.0), ("15 years", 5475.0),
    ("about 15 years", 5475.0), ("today", 0.0), ("yesterday", 1.0), ("a couple of days", 2.0),
    ("5", 5.0), ("3 weeks ago", 21.0), ("a few hours", 0.0), ("10 days", 10.0),
])
def test_durations(text, days):
    assert parse_duration(text) == Got(days)


@pytest.mark.parametrize("text", ["since Monday", "a while", "ages", "200 years"])
def test_durations_that_need_a_number_are_re_asked(text):
    result = parse_duration(text)
    assert isinstance(result, Invalid) and result.reason


@pytest.mark.parametrize("text, value", [
    ("yes", True), ("Yes!", True), ("YEP", True), ("yeah I do", True), ("y", True),
    ("no", False), ("Nope", False), ("no, never", False), ("nah", False), ("n", False),
    ("not sure", None), ("Don't know", None), ("maybe", None), ("?", None),
])
def test_yes_no_and_their_variants(text, value):
    expected = Unsure() if value is None else Got(value)
    assert parse_yes_no(text) == expected


def test_button_labels_count_as_answers_in_any_case_and_accent():
    labels = {"Sí": "yes", "Non": "no", "Pas sûr": "unsure"}
    assert parse_yes_no("si", labels=labels) == Got(True)
    assert parse_yes_no("NON", labels=labels) == Got(False)
    assert parse_yes_no("pas sur", labels=labels) == Unsure()


def test_choices_match_labels_and_ids_ignoring_case_and_accents():
    options = {"lower": ["Lower back"], "middle": ["Middle back (around the lower ribs)"],
               "none": ["No back pain"]}
    assert match_option("LOWER BACK", options) == "lower"
    assert match_option("middle", options) == "middle"
    assert match_option("lower", options) == "lower"
    assert match_option("back", options) is None, "ambiguous"
    assert match_option("purple", options) is None


def test_checklists_take_numbers_labels_or_none():
    items = {"chest_pain": ["Chest pain"], "seizure": ["A fit"], "rash": ["A rash"]}
    assert parse_checklist("1, 3", items) == Got(("chest_pain", "rash"))
    assert parse_checklist("none", items) == Got(())
    assert parse_checklist("0", items) == Got(())
    assert parse_checklist("chest pain and a fit", items) == Got(("chest_pain", "seizure"))
    assert parse_checklist("yes", items) == Unsure(), "a bare yes: go through them one by one"
    assert isinstance(parse_checklist("7", items), Invalid)


# ---------------------------------------------------------------- properties

PARSERS = [parse_temperature, parse_age, parse_duration, parse_yes_no,
           lambda t: parse_number(t, None, 0, 10),
           lambda t: parse_checklist(t, {"a": ["Alpha"], "b": ["Beta"]})]


@given(st.text(max_size=300))
def test_no_parser_raises_on_any_text(text):
    for parse in PARSERS:
        assert isinstance(parse(text), Got | Unsure | Invalid)
    assert match_option(text, {"a": ["Alpha"], "b": ["Beta"]}) in ("a", "b", None)


@given(st.integers(300, 450).map(lambda x: x / 10))
def test_celsius_round_trips(celsius):
    assert parse_temperature(f"{celsius:.1f}") == Got(celsius)
    assert parse_temperature(f"{celsius:.1f}".replace(".", ",") + " °C") == Got(celsius)


@given(st.integers(860, 1130).map(lambda x: x / 10))
def test_fahrenheit_converts_and_round_trips(fahrenheit):
    celsius = fahrenheit_to_celsius(fahrenheit)
    assert parse_temperature(f"{fahrenheit:.1f} F") == Got(celsius)
    back = celsius * 9 / 5 + 32
    assert abs(back - fahrenheit) <= 0.1  # one decimal of °C is finer than 0.2 °F
    assert parse_temperature(f"{back:.2f}F") == Got(celsius)


@given(st.floats(0, 120).map(lambda x: round(x, 2)))
def test_ages_in_years_round_trip(years):
    assert parse_age(f"{years:g}") == Got(years)


@given(st.integers(0, 100), st.sampled_from([("days", 1), ("weeks", 7), ("months", 30),
                                             ("years", 365)]))
def test_durations_convert_by_the_vocabulary(n, unit):
    name, days = unit
    result = parse_duration(f"{n} {name}")
    assert result == Got(float(n * days))


# ---------------------------------------------------------------- other languages

@pytest.mark.parametrize("lang, text, value", [
    ("es", "Sí", True), ("es", "si", True), ("es", "no", False), ("es", "claro que sí", None),
    ("ru", "Да", True), ("ru", "нет", False), ("ru", "да, есть", True),
    ("ar", "نعم", True), ("ar", "لا", False), ("ar", "أجل", True), ("ar", "اجل", True),
])
def test_yes_and_no_in_each_language(lang, text, value):
    got = parse_yes_no(text, lang)
    assert (got == Got(value)) if value is not None else isinstance(got, Got | Invalid)


@pytest.mark.parametrize("lang, text", [
    ("es", "no sé"), ("es", "No lo sé"), ("ru", "не знаю"), ("ru", "Не уверена"),
    ("ar", "لا أعرف"), ("ar", "غير متأكد"), ("ar", "لا اعرف"),
])
def test_not_sure_in_each_language(lang, text):
    assert parse_yes_no(text, lang) == Unsure()


@pytest.mark.parametrize("text, celsius", [
    ("38,5", 38.5), ("38,5 °C", 38.5), ("38,5 grados", 38.5), ("101 F", 38.3),
    ("38,5 С", 38.5), ("38.5 градусов", 38.5), ("39 по цельсию", None),
    ("٣٨٫٥", 38.5), ("٣٨,٥", 38.5), ("۳۹", 39.0), ("38.5 درجة", 38.5), ("١٠١ ف", 38.3),
    ("38.5 درجة مئوية", 38.5),
])
def test_temperatures_with_decimal_commas_other_digits_and_local_units(text, celsius):
    got = parse_temperature(text, "ru")
    assert got == Got(celsius) if celsius is not None else isinstance(got, Invalid)


@pytest.mark.parametrize("lang, text, days", [
    ("es", "3 días", 3), ("es", "hace 2 semanas", 14), ("es", "una semana", 7),
    ("es", "hoy", 0), ("es", "ayer", 1), ("es", "15 años", 5475),
    ("ru", "3 дня", 3), ("ru", "2 недели", 14), ("ru", "неделю", 7), ("ru", "5 дней", 5),
    ("ru", "около месяца", 30), ("ru", "вчера", 1),
    ("ar", "3 أيام", 3), ("ar", "منذ ٣ أيام", 3), ("ar", "أسبوعين", 14), ("ar", "شهر", 30),
    ("ar", "اليوم", 0), ("ar", "يومين", 2),
])
def test_durations_in_each_language(lang, text, days):
    assert parse_duration(text, lang) == Got(float(days))


@pytest.mark.parametrize("lang, text, years", [
    ("es", "45", 45), ("es", "45 años", 45), ("es", "6 meses", 0.5),
    ("ru", "45 лет", 45), ("ru", "6 месяцев", 0.5), ("ar", "٤٥", 45), ("ar", "45 سنة", 45),
    ("ar", "6 أشهر", 0.5),
])
def test_ages_in_each_language(lang, text, years):
    assert parse_age(text, lang) == Got(float(years))


@pytest.mark.parametrize("lang, text, ticked", [
    ("es", "ninguno", ()), ("ru", "ничего", ()), ("ar", "لا شيء", ()),
    ("ar", "١، ٣", ("a", "c")), ("es", "1 y 3", ("a", "c")), ("ru", "1 и 3", ("a", "c")),
])
def test_checklists_in_each_language(lang, text, ticked):
    items = {"a": ["A"], "b": ["B"], "c": ["C"]}
    assert parse_checklist(text, items, lang) == Got(ticked)


def test_reasons_are_given_in_the_persons_language():
    assert "número" in parse_age("abc", "es").explain("es")
    assert "возраст" in parse_age("abc", "ru").explain("ru")
    assert parse_age("abc").explain("xx") == parse_age("abc").explain("en")  # falls back


LANGS = st.sampled_from(["en", "es", "ru", "ar", "xx"])
SCRIPTS = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Z", "S")),
                  max_size=80)


@given(SCRIPTS, LANGS)
def test_no_parser_raises_on_any_text_in_any_language(text, lang):
    for parse in (parse_yes_no, parse_temperature, parse_duration, parse_age):
        result = parse(text, lang)
        assert isinstance(result, Got | Unsure | Invalid)
        if isinstance(result, Invalid):
            assert isinstance(result.explain(lang), str)
    assert isinstance(parse_checklist(text, {"a": ["Alpha"], "b": ["Бета"]}, lang),
                      Got | Unsure | Invalid)


@given(st.integers(300, 450).map(lambda x: x / 10))
def test_arabic_indic_digits_read_like_ascii(celsius):
    arabic = f"{celsius:.1f}".translate(str.maketrans("0123456789.", "٠١٢٣٤٥٦٧٨٩٫"))
    assert parse_temperature(arabic, "ar") == Got(celsius)
