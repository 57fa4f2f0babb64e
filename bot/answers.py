"""Typed text -> a value or a reason to ask again. Never raises.

People type "38,5", "101F", "two weeks", "yep" or "dunno" where buttons were
offered. Each parser returns `Got(value)`, `Unsure()` ("not sure" / "don't
know") or `Invalid(reason)`; the engine turns `Invalid` into a re-ask with a
hint and never advances on it. Implausible numbers are re-asked, never
clamped (FINDINGS.yaml).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from bot.findings import Value


@dataclass(frozen=True, slots=True)
class Got:
    value: Value


@dataclass(frozen=True, slots=True)
class Unsure:
    """'Not sure' to a yes/no, or 'don't know' / 'not measured' to a number."""


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str  # plain English, shown after the flow's re-ask text


Parsed = Got | Unsure | Invalid

MAX_INPUT = 200  # longer text is not an answer to a short question


def normalize(text: str) -> str:
    """Case, accents, punctuation and spacing removed: 'Sí!' -> 'si'."""
    text = unicodedata.normalize("NFKD", text[: MAX_INPUT * 2])
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("’", "'").replace("_", " ")
    text = re.sub(r"[^\w\s'°.,/-]", " ", text)
    return " ".join(text.split()).strip(" .,!'").rstrip("?").strip()


# Words are kept per language so more can be added without touching code paths.
YES = {"en": {"yes", "y", "yeah", "yea", "yep", "yup", "ya", "aye", "sure", "correct", "true",
              "i do", "i have", "yes i do", "yes i have", "it is", "i am", "affirmative",
              "definitely", "absolutely", "of course", "right"}}
NO = {"en": {"no", "n", "nope", "nah", "no i don't", "no i dont", "i don't", "i dont", "false",
             "not at all", "never", "negative", "no i haven't", "i haven't", "not really",
             "none", "nothing", "it isn't", "i am not", "i'm not"}}
UNSURE = {"en": {"not sure", "unsure", "don't know", "dont know", "do not know", "dunno",
                 "i don't know", "i dont know", "idk", "maybe", "perhaps", "no idea",
                 "not certain", "i'm not sure", "im not sure", "i am not sure", "?", "possibly",
                 "can't tell", "cant tell", "unknown", "not measured", "didn't measure",
                 "did not measure", "haven't measured", "no thermometer", "not taken",
                 "n/a", "na", "don't have a thermometer", "not known"}}


def _words(table: dict[str, set[str]], lang: str) -> set[str]:
    return table.get(lang, set()) | table["en"]


def parse_yes_no(text: str, lang: str = "en", labels: dict[str, str] | None = None) -> Parsed:
    """yes / no / not sure and their common variants; `labels` adds button labels."""
    t = normalize(text)
    if not t and "?" in text:
        return Unsure()
    extra = {normalize(k): v for k, v in (labels or {}).items()}
    if t in extra:
        v = extra[t]
        return Unsure() if v == "unsure" else Got(v == "yes")
    if t in _words(UNSURE, lang):
        return Unsure()
    if t in _words(YES, lang):
        return Got(True)
    if t in _words(NO, lang):
        return Got(False)
    words = re.split(r"[\s,;.!]+", t)
    first = words[0] if t else ""
    if first in {"yes", "yeah", "yep", "yup"} and "not" not in words:
        return Got(True)
    if first in {"no", "nope", "nah"}:
        return Got(False)
    return Invalid("please answer yes or no (or 'not sure')")


def is_unknown(text: str, lang: str = "en", label: str | None = None) -> bool:
    t = normalize(text)
    return t in _words(UNSURE, lang) or (label is not None and t == normalize(label)) or \
        t in {"no", "none", "i don't", "i dont", "nope"}


# ---------------------------------------------------------------- numbers

_NUMBER_WORDS = {
    "zero": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "couple": 2, "a couple of": 2, "a couple": 2,
    "few": 3, "a few": 3, "several": 3, "half a": 0.5, "half an": 0.5,
}
_NUM = r"(\d+(?:[.,]\d+)?|" + "|".join(sorted(map(re.escape, _NUMBER_WORDS), key=len,
                                              reverse=True)) + r")"
_FILLER = re.compile(r"^(about|around|roughly|approx(?:imately)?|nearly|almost|over|maybe|"
                     r"like|just|only|for|since|it was|it's|its|i am|i'm|im|he is|she is|"
                     r"they are|aged?|the last|last|past)\s+")


def _strip_filler(t: str) -> str:
    while True:
        new = _FILLER.sub("", t)
        if new == t:
            return t
        t = new


def _to_number(token: str) -> float | None:
    if token in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[token])
    try:
        return float(Decimal(token.replace(",", ".")))
    except (InvalidOperation, ValueError):
        return None


def round_half_up(x: float, places: int = 1) -> float:
    q = Decimal(1).scaleb(-places)
    return float(Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP))


def fahrenheit_to_celsius(f: float) -> float:
    """°C = (°F − 32) × 5 / 9, rounded half up to one decimal (RED-FLAGS.md 2)."""
    c = (Decimal(repr(f)) - 32) * 5 / 9
    return float(c.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


_TEMP = re.compile(
    r"^(-?\d+(?:[.,]\d+)?)\s*(?:°|º|o|deg(?:rees?)?)?\s*"
    r"(c|celsius|centigrade|f|fahrenheit)?$")


def parse_temperature(text: str, lang: str = "en", unknown_label: str | None = None) -> Parsed:
    t = _strip_filler(normalize(text)).replace("degrees", "deg").strip()
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    m = _TEMP.match(t.replace(" deg ", " ").replace("°", " °").replace("  ", " ").strip())
    if not m:
        m = _TEMP.match(t.replace(" ", ""))
    if not m:
        return Invalid("type the reading as a number, e.g. 38.5 or 101 F, or 'not measured'")
    value = _to_number(m.group(1))
    if value is None:
        return Invalid("type the reading as a number, e.g. 38.5")
    unit = (m.group(2) or "")[:1]
    if not unit:
        unit = "c" if 30 <= value <= 45 else "f" if 86 <= value <= 113 else ""
    if not unit:
        return Invalid(f"{m.group(1)} is not a body temperature I can read: type it in °C "
                       "(e.g. 38.5) or °F (e.g. 101 F)")
    celsius = fahrenheit_to_celsius(value) if unit == "f" else round_half_up(value)
    if not 30 <= celsius <= 45:
        return Invalid(f"{m.group(1)} °{unit.upper()} is not a possible body temperature: "
                       "please check the reading")
    return Got(celsius)


_UNIT_WORDS = {
    "day": "days", "days": "days", "d": "days", "hour": "hours", "hours": "hours", "hrs": "hours",
    "hr": "hours", "h": "hours", "week": "weeks", "weeks": "weeks", "wk": "weeks", "wks": "weeks",
    "w": "weeks", "month": "months", "months": "months", "mo": "months", "mos": "months",
    "m": "months", "year": "years", "years": "years", "yr": "years", "yrs": "years",
    "y": "years", "night": "days", "nights": "days", "minutes": "hours", "minute": "hours",
    "mins": "hours", "min": "hours",
}
_QUANTITY = re.compile(_NUM + r"\s*(?:of\s+)?([a-z]+)?(?:\s+(?:old|ago|now|or so|and a half))*$")
_DAYS_PER = {"hours": 0.0, "days": 1.0, "weeks": 7.0, "months": 30.0, "years": 365.0}


def _quantity(t: str) -> tuple[float, str] | None:
    m = _QUANTITY.match(t)
    if not m:
        return None
    number = _to_number(m.group(1))
    unit = m.group(2) or ""
    if number is None or (unit and unit not in _UNIT_WORDS):
        return None
    if t.endswith("and a half"):
        number += 0.5
    return number, _UNIT_WORDS.get(unit, "")


def parse_duration(text: str, lang: str = "en", unknown_label: str | None = None) -> Parsed:
    """Days since the first symptom: weeks x 7, months x 30, years x 365 (FINDINGS.yaml)."""
    t = _strip_filler(normalize(text))
    if t in {"today", "this morning", "tonight", "this evening", "this afternoon", "just now",
             "hours", "a few hours"}:
        return Got(0.0)
    if t in {"yesterday", "last night", "since yesterday", "1 night"}:
        return Got(1.0)
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    q = _quantity(t)
    if q is None:
        if re.search(r"\b(mon|tues|wednes|thurs|fri|satur|sun)day\b|\bsince\b", t):
            return Invalid("how many days is that? Type e.g. '3 days' or '2 weeks'")
        return Invalid("type how long, e.g. '3 days', '2 weeks' or '15 years'")
    number, unit = q
    days = number * _DAYS_PER[unit or "days"]
    if unit in ("", "days") and not float(number).is_integer():
        days = float(int(number))
    days = float(int(days))  # whole days: 'three and a half days' -> 3
    if not 0 <= days <= 36500:
        return Invalid(f"{number:g} {unit or 'days'} is longer than a lifetime: please check it")
    return Got(days)


def parse_age(text: str, lang: str = "en", unknown_label: str | None = None) -> Parsed:
    """Age in years; babies in weeks or months stored as a fraction of a year."""
    t = _strip_filler(normalize(text))
    if t in {"newborn", "new born", "just born"}:
        return Got(0.0)
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    q = _quantity(t)
    if q is None:
        return Invalid("type the age as a number, e.g. 42, or '7 weeks' / '5 months' for a baby")
    number, unit = q
    years = {"": number, "years": number, "months": number / 12, "weeks": number / 52,
             "days": number / 365, "hours": 0.0}[unit]
    if not 0 <= years <= 120:
        return Invalid(f"{number:g} {unit or 'years'} is not a possible age: please check it")
    return Got(float(years))


def parse_number(text: str, unit: str | None, lo: float | None, hi: float | None,
                 lang: str = "en", unknown_label: str | None = None) -> Parsed:
    """Numbers by the finding's unit; any other unit is a plain number in range."""
    if unit == "celsius":
        return parse_temperature(text, lang, unknown_label)
    if unit == "years":
        return parse_age(text, lang, unknown_label)
    if unit == "days":
        return parse_duration(text, lang, unknown_label)
    t = _strip_filler(normalize(text))
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    value = _to_number(t.split(" ")[0]) if t else None
    if value is None:
        return Invalid("type a number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return Invalid(f"{value:g} is outside {lo:g}..{hi:g}")
    return Got(value)


# ---------------------------------------------------------------- choices


def match_option(text: str, options: dict[str, list[str]]) -> str | None:
    """The option id whose id or label the text names; None if none or ambiguous.

    `options` maps id -> labels (every language). Exact match first, then a
    unique option whose label contains the text as whole words ("lower" for
    "Lower back").
    """
    t = normalize(text)
    if not t:
        return None
    for oid, labels in options.items():
        if t == normalize(oid) or any(t == normalize(label) for label in labels):
            return oid
    pattern = re.compile(rf"\b{re.escape(t)}\b")
    hits = {oid for oid, labels in options.items()
            if any(pattern.search(normalize(label)) for label in labels)}
    return hits.pop() if len(hits) == 1 else None


_NONE = {"none", "no", "nothing", "none of these", "none of them", "nope", "nah", "neither",
         "no none", "0", "n", "none of the above", "nothing like that", "all fine"}


def parse_checklist(text: str, items: dict[str, list[str]], lang: str = "en",
                    none_label: str | None = None) -> Parsed:
    """Ticked item ids from '1, 3', labels, or 'none'; 'yes'/'not sure' -> Unsure.

    A bare "yes" says something applies without saying what, so the engine
    goes through the items one by one, as it does for "not sure".
    """
    t = normalize(text)
    if t in _NONE or (none_label and t == normalize(none_label)):
        return Got(())
    if t in _words(UNSURE, lang) or t in _words(YES, lang):
        return Unsure()
    ids = list(items)
    chosen: list[str] = []
    parts = [p for p in re.split(r"\s*(?:,|;|/|\band\b|&|\+)\s*|\s+", t) if p] \
        if re.fullmatch(r"[\d,;/&+\s]+|[\d\s,]+(?:and\s+\d+)?", t) else \
        [p for p in re.split(r"\s*(?:,|;|\band\b)\s*", t) if p]
    for part in parts:
        if part.isdigit():
            n = int(part)
            if not 1 <= n <= len(ids):
                return Invalid(f"{n} is not on the list: use 1 to {len(ids)}, or 'none'")
            oid = ids[n - 1]
        else:
            found = match_option(part, items)
            if found is None:
                return Invalid("type the numbers of all that apply (e.g. 1, 3), or 'none'")
            oid = found
        if oid not in chosen:
            chosen.append(oid)
    if not chosen:
        return Invalid("type the numbers of all that apply (e.g. 1, 3), or 'none'")
    return Got(tuple(chosen))
