"""The deployment overlay (`local.yaml`): one service's own wording, in every language,
at the places the flows mark as local, without touching the clinical flow files.

A flow declares its local places under `local:`, each with a default (possibly
empty) in every language, and uses them as `{name}` in outcome and fixed texts
(never in a question, an answer, a rule or a level: the loader refuses that). A
deployment's local.yaml gives its own values for some of them, per language, and
may add guidance links and the emergency numbers. Upgrading a flow never conflicts
with it: the two files never hold the same thing.

Filling: `{name}` takes the overlay's value, else the flow's default; a local text
may name another (`offered_by: "Offered by {service_name}."`). A text that names
an empty value is empty itself, and an empty value disappears with the space
before it, so an unset service name leaves the flow's wording exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bot.errors import Problem, did_you_mean
from bot.flow import LEVEL_IDS, Flow, Level, Text
from bot.yamlsource import Source, read_yaml

PLACE = re.compile(r"\{([a-z][a-z0-9_]*)\}")
NUMBER = re.compile(r"[0-9]{2,6}")
URL = re.compile(r"https://[^\s\"'<>]{3,500}")
RESERVED = ("emergency_number", "links")  # keys of local.yaml that are not places
MAX_VALUE = 300  # characters: a line or two, not a page
MAX_LINKS = 3


@dataclass(frozen=True, slots=True)
class LocalLink:
    id: str
    title: Text
    url: Text
    levels: frozenset[Level]  # the outcomes that show it


@dataclass(frozen=True, slots=True)
class Overlay:
    file: str = ""
    values: Mapping[str, Text] = field(default_factory=dict)  # place -> its wording
    emergency: Mapping[str, str] = field(default_factory=dict)  # language ('*': all) -> number
    links: tuple[LocalLink, ...] = ()

    def number(self, lang: str) -> str | None:
        return self.emergency.get(lang, self.emergency.get("*"))


NO_OVERLAY = Overlay()


def places(flow: Flow, overlay: Overlay, lang: str) -> dict[str, str]:
    """Every local place of `flow` in `lang`, filled (for Engine: {name} -> text)."""
    raw = {name: (overlay.values.get(name, default)).get(lang)
           for name, default in flow.local.items()}
    out: dict[str, str] = {}
    for name, text in raw.items():  # one level of naming another, as the loader allows
        named = PLACE.findall(text)
        if any(n in raw and not raw[n].strip() for n in named):
            out[name] = ""  # "Offered by {service_name}." with no service name: nothing
        else:
            out[name] = fill(text, {n: raw[n] for n in named if n in raw})
    return out


def fill(text: str, values: Mapping[str, str]) -> str:
    """Put local values into `{name}` places; an empty one goes with the space before it."""
    if "{" not in text:
        return text
    for name, value in values.items():
        slot = "{" + name + "}"
        if slot not in text:
            continue
        text = re.sub(r"[ \t]*" + re.escape(slot), "", text) if not value.strip() else \
            text.replace(slot, value)
    return text


def links_for(overlay: Overlay, level: Level, lang: str) -> tuple[tuple[str, str], ...]:
    return tuple((link.title.get(lang), link.url.get(lang)) for link in overlay.links
                 if level in link.levels)


# ---------------------------------------------------------------- loading


def load_overlay(path: str | Path, flows: Iterable[Flow], allow_missing: bool = False,
                 ) -> tuple[Overlay | None, list[Problem]]:
    """Read and check local.yaml against the flows it serves: every problem, with its
    file:line; None if there are errors (missing languages are warnings if allowed,
    and those fall back to English)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), 1, 1, "", f"cannot read the file: {exc}",
                              "check the path (TRIAGEBOT_LOCAL) and that it is UTF-8 text")]
    source, problems = read_yaml(text, str(path))
    if source is None:
        return None, problems
    checker = _Checker(source, list(flows), allow_missing)
    overlay = checker.build()
    problems += checker.problems
    return (None if any(not p.warning for p in problems) else overlay), problems


class _Checker:
    def __init__(self, source: Source, flows: list[Flow], allow_missing: bool):
        self.src, self.problems = source, []  # type: list[Problem]
        self.allow_missing = allow_missing
        self.languages = tuple(dict.fromkeys(lang for f in flows for lang in f.languages))
        self.places: dict[str, Flow] = {}
        for flow in flows:
            for name in flow.local:
                self.places.setdefault(name, flow)

    def problem(self, path: tuple, what: str, fix: str = "", warning: bool = False) -> None:
        p = self.src.problem(path, what, fix)
        self.problems.append(replace(p, warning=True) if warning else p)

    def build(self) -> Overlay:
        data = self.src.data
        if data is None:
            return Overlay(self.src.file)  # an empty file (every example commented out)
        if not isinstance(data, dict):
            self.problem((), "local.yaml must be a mapping of names to texts",
                         "see the examples `triagebot init` writes")
            return Overlay(self.src.file)
        values: dict[str, Text] = {}
        emergency: dict[str, str] = {}
        links: tuple[LocalLink, ...] = ()
        for key, value in data.items():
            if key == "emergency_number":
                emergency = self.numbers(value)
            elif key == "links":
                links = self.links(value)
            elif key in self.places:
                text = self.text(value, (key,))
                if text is not None:
                    values[key] = text
            else:
                known = [*self.places, *RESERVED]
                self.problem((key,), f"'{key}' is not a local place of any flow",
                             did_you_mean(str(key), known, "the places are: " +
                                          ", ".join(sorted(known))))
        return Overlay(self.src.file, MappingProxyType(values), MappingProxyType(emergency),
                       links)

    def text(self, value: Any, path: tuple, url: bool = False) -> Text | None:
        """A plain string (every language), or a map with every language served."""
        if isinstance(value, str):
            value = {lang: value for lang in self.languages}
        if not isinstance(value, dict) or not value:
            self.problem(path, "a local value must be text, or a map of languages to text",
                         'e.g. {en: "Riverside Health", es: "Salud Riverside"}')
            return None
        out = []
        for lang, string in value.items():
            if lang not in self.languages:
                self.problem((*path, lang), f"language '{lang}' is not one the flows speak",
                             did_you_mean(str(lang), self.languages,
                                          "use " + ", ".join(self.languages)))
            elif not isinstance(string, str) or not string.strip():
                self.problem((*path, lang), f"the '{lang}' text is empty or not text",
                             "write it in quotes, or remove the line to keep the flow's")
            elif len(string) > MAX_VALUE:
                self.problem((*path, lang), f"the '{lang}' text is {len(string)} characters",
                             f"keep it under {MAX_VALUE}: a line or two")
            elif url and not URL.fullmatch(string):
                self.problem((*path, lang), f"'{string[:60]}' is not an https:// address",
                             "use the page's public https address")
            elif not url and ("{" in string or "}" in string or "<" in string):
                self.problem((*path, lang), "a local value cannot hold {places} or <tags>",
                             "write plain text; the flow decides where it goes")
            else:
                out.append((str(lang), string))
        for lang in self.languages:
            if lang not in value:
                self.problem(path, f"no '{lang}' text (the flows speak {lang})",
                             f"add `{lang}: \"...\"`" + (" (shown in English meanwhile)"
                                                         if self.allow_missing else ""),
                             warning=self.allow_missing)
        if not any(lang == "en" for lang, _ in out):
            return None if not out else Text((*tuple(out), ("en", out[0][1])))
        return Text(tuple(out))

    def numbers(self, value: Any) -> dict[str, str]:
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = {"*": str(value)}
        if not isinstance(value, dict):
            self.problem(("emergency_number",), "emergency_number must be digits, or a map "
                         "of languages to digits", "e.g. emergency_number: \"112\"")
            return {}
        out = {}
        for lang, number in value.items():
            number = str(number)
            if lang != "*" and lang not in self.languages:
                self.problem(("emergency_number", lang), f"language '{lang}' is not one the "
                             "flows speak", did_you_mean(str(lang), self.languages, ""))
            elif not NUMBER.fullmatch(number):
                self.problem(("emergency_number",) + ((lang,) if lang != "*" else ()),
                             f"'{number}' is not an emergency number",
                             "write the local emergency number in digits, e.g. 112, 999, 911")
            else:
                out[str(lang)] = number
        return out

    def links(self, value: Any) -> tuple[LocalLink, ...]:
        if not isinstance(value, dict):
            self.problem(("links",), "links must map an id to {title, url, levels}",
                         "see the example `triagebot init` writes")
            return ()
        if len(value) > MAX_LINKS:
            self.problem(("links",), f"{len(value)} local links: at most {MAX_LINKS}",
                         "an outcome with many links is read less")
        out = []
        for lid, spec in value.items():
            path = ("links", lid)
            if not isinstance(spec, dict):
                self.problem(path, "a link needs `title:` and `url:`", "")
                continue
            for key in spec:
                if key not in ("title", "url", "levels"):
                    self.problem((*path, key), f"unknown key '{key}'",
                                 did_you_mean(str(key), ("title", "url", "levels"), ""))
            for key in ("title", "url"):
                if key not in spec:
                    self.problem(path, f"missing '{key}'", f"add `{key}:`")
            levels = spec.get("levels", list(LEVEL_IDS))
            if not isinstance(levels, list) or not all(x in LEVEL_IDS for x in levels):
                self.problem((*path, "levels"), "levels must list triage levels",
                             "e.g. levels: [urgent, routine, self_care]")
                levels = list(LEVEL_IDS)
            title = self.text(spec.get("title"), (*path, "title")) if "title" in spec else None
            url = self.text(spec.get("url"), (*path, "url"), url=True) if "url" in spec \
                else None
            if title and url:
                out.append(LocalLink(str(lid), title, url,
                                     frozenset(Level.parse(x) for x in levels)))
        return tuple(out[:MAX_LINKS])
