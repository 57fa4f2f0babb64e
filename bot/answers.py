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

from bot import lexicon
from bot.findings import Value


@dataclass(frozen=True, slots=True)
class Got:
    value: Value


@dataclass(frozen=True, slots=True)
class Unsure:
    """'Not sure' to a yes/no, or 'don't know' / 'not measured' to a number."""


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str  # a key of lexicon.MESSAGES ("" for none), shown after the flow's re-ask
    values: tuple[tuple[str, str], ...] = ()  # filled into the message

    def explain(self, lang: str) -> str:
        """The reason in the person's language (English if it has no such message)."""
        if not self.reason:
            return ""
        template = lexicon.MESSAGES.get(lang, {}).get(self.reason) or \
            lexicon.MESSAGES["en"][self.reason]
        return template.format(**dict(self.values))


def invalid(reason: str, **values: object) -> Invalid:
    return Invalid(reason, tuple((k, f"{v:g}" if isinstance(v, float) else str(v))
                                 for k, v in values.items()))


Parsed = Got | Unsure | Invalid

MAX_INPUT = 200  # longer text is not an answer to a short question


# Arabic-Indic and Persian digits, the Arabic decimal separator and comma, and the
# Arabic letter forms people type interchangeably
_FOLD = str.maketrans({**{chr(0x660 + i): str(i) for i in range(10)},
                       **{chr(0x6F0 + i): str(i) for i in range(10)},
                       "\u066b": ".", "\u066c": "", "\u060c": ",", "\u061b": ";",
                       "\u061f": "?", "\u0640": "", "\u0649": "\u064a", "\u0629": "\u0647"})


def normalize(text: str) -> str:
    """Case, accents, punctuation and spacing removed: 'Sí!' -> 'si', '٣٨٫٥' -> '38.5'."""
    text = unicodedata.normalize("NFKD", text[: MAX_INPUT * 2].translate(_FOLD))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("’", "'").replace("_", " ").replace("«", " ").replace("»", " ")
    text = re.sub(r"[^\w\s'°.,/-]", " ", text)
    return " ".join(text.split()).strip(" .,!'").rstrip("?").strip()


def _table(words: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    return {lang: frozenset(filter(None, map(normalize, ws))) for lang, ws in words.items()}


YES, NO, UNSURE, NONE = (_table(t) for t in (lexicon.YES, lexicon.NO, lexicon.UNSURE,
                                             lexicon.NONE))
TODAY, YESTERDAY = _table(lexicon.TODAY), _table(lexicon.YESTERDAY)
_BARE_NO = frozenset(map(normalize, ("no", "none", "i don't", "i dont", "nope", "нет", "لا",
                                     "nada")))
_YES_FIRST = frozenset(map(normalize, ("yes", "yeah", "yep", "yup", "sí", "да", "نعم")))
_NO_FIRST = frozenset(map(normalize, ("no", "nope", "nah", "нет", "لا")))


def _words(table: dict[str, frozenset[str]], lang: str) -> frozenset[str]:
    return table.get(lang, frozenset()) | table["en"]


def _any_language(table: dict[str, frozenset[str]]) -> frozenset[str]:
    return frozenset().union(*table.values())


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
    if first in _YES_FIRST and not {"not", "no", "не", "لا"} & set(words[1:]):
        return Got(True)
    if first in _NO_FIRST:
        return Got(False)
    return invalid("yes_no")


def is_unknown(text: str, lang: str = "en", label: str | None = None) -> bool:
    t = normalize(text)
    return t in _words(UNSURE, lang) or (label is not None and t == normalize(label)) or \
        t in _BARE_NO


# ---------------------------------------------------------------- numbers

_NUMBER_WORDS = {normalize(k): v for k, v in lexicon.NUMBER_WORDS.items()}
_NUM = r"(\d+(?:[.,]\d+)?|" + "|".join(sorted(map(re.escape, _NUMBER_WORDS), key=len,
                                              reverse=True)) + r")"
_FILLER = re.compile(r"^(?:" + "|".join(sorted(
    {re.escape(normalize(w)) for ws in lexicon.FILLERS.values() for w in ws},
    key=len, reverse=True)) + r")\s+")
_UNIT_WORDS = {normalize(w): unit for unit, ws in lexicon.UNITS.items() for w in ws}
_PAIRS = {normalize(w): pair for w, pair in lexicon.PAIRS.items()}
_HALF = tuple(map(normalize, ("and a half", "y medio", "y media", "с половиной", "ونصف")))
_AFTER = ("old", "ago", "now", "or so", "de edad", "назад", "от роду", "مضت", "فقط",
          *_HALF)
_QUANTITY = re.compile(_NUM + r"\s*(?:of\s+)?([^\W\d_]+)?(?:\s+(?:" +
                       "|".join(map(re.escape, map(normalize, _AFTER))) + r"))*$")
_DAYS_PER = {"hours": 0.0, "days": 1.0, "weeks": 7.0, "months": 30.0, "years": 365.0}


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


_CELSIUS = frozenset(map(normalize, lexicon.CELSIUS)) - {"grados", "grado", "градус",
                                                          "градуса", "градусов", "درجه",
                                                          "درجات"}
_FAHRENHEIT = frozenset(map(normalize, lexicon.FAHRENHEIT))
_DEGREES = frozenset(map(normalize, ("deg", "degree", "degrees", "grados", "grado", "градус",
                                     "градуса", "градусов", "درجة", "درجات", "o", "º")))
_READING = re.compile(r"^(-?\d+(?:[.,]\d+)?)\s*(.*)$")


def _temperature_unit(rest: str) -> str | None:
    """'c', 'f', '' (no unit given) or None (words that are not a unit)."""
    unit = ""
    for token in rest.replace("°", " ").split():
        if token in _FAHRENHEIT:
            unit = "f"
        elif token in _CELSIUS:
            unit = unit or "c"
        elif token not in _DEGREES:
            return None
    return unit


def parse_temperature(text: str, lang: str = "en", unknown_label: str | None = None) -> Parsed:
    t = _strip_filler(normalize(text))
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    m = _READING.match(t)
    unit = _temperature_unit(m.group(2)) if m else None
    if m and unit is None:  # '38c' written without a space
        m2 = re.match(r"^(-?\d+(?:[.,]\d+)?)([^\W\d_]+)$", t.replace(" ", ""))
        unit = _temperature_unit(m2.group(2)) if m2 else None
        m = m2 if unit is not None else m
    if not m or unit is None:
        return invalid("temp_format")
    value = _to_number(m.group(1))
    if value is None:
        return invalid("temp_format")
    if not unit:
        unit = "c" if 30 <= value <= 45 else "f" if 86 <= value <= 113 else ""
    if not unit:
        return invalid("temp_unclear", value=m.group(1))
    celsius = fahrenheit_to_celsius(value) if unit == "f" else round_half_up(value)
    if not 30 <= celsius <= 45:
        return invalid("temp_impossible", value=f"{m.group(1)} °{unit.upper()}")
    return Got(celsius)


def _quantity(t: str) -> tuple[float, str] | None:
    """(number, unit) from '3 days', 'two weeks and a half', 'una semana', 'أسبوعين'."""
    if t in _PAIRS:
        return float(_PAIRS[t][0]), _PAIRS[t][1]
    if t in _UNIT_WORDS:  # 'неделю', 'أسبوع': one of it
        return 1.0, _UNIT_WORDS[t]
    m = _QUANTITY.match(t)
    if not m:
        return None
    number = _to_number(m.group(1))
    unit = m.group(2) or ""
    if number is None or (unit and unit not in _UNIT_WORDS):
        return None
    if t.endswith(_HALF):
        number += 0.5
    return number, _UNIT_WORDS.get(unit, "")


def parse_duration(text: str, lang: str = "en", unknown_label: str | None = None) -> Parsed:
    """Days since the first symptom: weeks x 7, months x 30, years x 365 (FINDINGS.yaml)."""
    t = _strip_filler(normalize(text))
    if t in _any_language(TODAY):
        return Got(0.0)
    if t in _any_language(YESTERDAY):
        return Got(1.0)
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    q = _quantity(t)
    if q is None:
        if re.search(r"\b(mon|tues|wednes|thurs|fri|satur|sun)day\b|\bsince\b", t):
            return invalid("duration_weekday")
        return invalid("duration_format")
    number, unit = q
    days = number * _DAYS_PER[unit or "days"]
    if not 0 <= days <= 36500:  # (also 'inf': a number of 309 digits)
        return invalid("duration_too_long", value=f"{number:g} {unit or 'days'}")
    if unit in ("", "days") and not float(number).is_integer():
        days = float(int(number))
    days = float(int(days))  # whole days: 'three and a half days' -> 3
    if not 0 <= days <= 36500:
        return invalid("duration_too_long", value=f"{number:g} {unit or 'days'}")
    return Got(days)


def parse_age(text: str, lang: str = "en", unknown_label: str | None = None) -> Parsed:
    """Age in years; babies in weeks or months stored as a fraction of a year."""
    t = _strip_filler(normalize(text))
    if t in {"newborn", "new born", "just born", "recien nacido", "новорожденный",
             "новорожденная", "حديث الولاده"}:
        return Got(0.0)
    if is_unknown(t, lang, unknown_label):
        return Unsure()
    q = _quantity(t)
    if q is None:
        return invalid("age_format")
    number, unit = q
    years = {"": number, "years": number, "months": number / 12, "weeks": number / 52,
             "days": number / 365, "hours": 0.0}[unit]
    if not 0 <= years <= 120:
        return invalid("age_impossible", value=f"{number:g} {unit or 'years'}")
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
        return invalid("number_format")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return invalid("number_range", value=value, low=lo if lo is not None else "",
                        high=hi if hi is not None else "")
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


_AND = r"\b(?:and|y|и|و)\b"


def parse_checklist(text: str, items: dict[str, list[str]], lang: str = "en",
                    none_label: str | None = None) -> Parsed:
    """Ticked item ids from '1, 3', labels, or 'none'; 'yes'/'not sure' -> Unsure.

    A bare "yes" says something applies without saying what, so the engine
    goes through the items one by one, as it does for "not sure".
    """
    t = normalize(text)
    if t in _words(NONE, lang) or (none_label and t == normalize(none_label)):
        return Got(())
    if t in _words(UNSURE, lang) or t in _words(YES, lang):
        return Unsure()
    ids = list(items)
    chosen: list[str] = []
    parts = [p for p in re.split(rf"\s*(?:,|;|/|{_AND}|&|\+)\s*|\s+", t) if p] \
        if re.fullmatch(rf"[\d,;/&+\s]+|[\d\s,]+(?:{_AND}\s+\d+)?", t) else \
        [p for p in re.split(rf"\s*(?:,|;|{_AND})\s*", t) if p]
    for part in parts:
        if part.isdecimal() and len(part) <= 6:  # (isdigit: also ➊ and ፩, which int refuses)
            n = int(part)
            if not 1 <= n <= len(ids):
                return invalid("list_range", value=n, high=len(ids))
            oid = ids[n - 1]
        else:
            found = match_option(part, items)
            if found is None:
                return invalid("list_format")
            oid = found
        if oid not in chosen:
            chosen.append(oid)
    if not chosen:
        return invalid("list_format")
    return Got(tuple(chosen))
