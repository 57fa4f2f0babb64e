"""Translation files: one language of a flow, kept beside it.

`flows/back_pain_fever.es.yaml` holds the Spanish of `flows/back_pain_fever.yaml`,
keyed by the ids the flow already has, so a translator sees one language and
the flow author's file stays readable:

    translation_of: back_pain_fever
    language: es
    title: "..."
    links: {nhs_back_pain: "NHS: dolor de espalda"}      # or {title: ..., url: ...}
    labels: {age_years: "edad"}
    rules: {em-cauda-equina: "..."}                      # the rule's `says`
    levels: {emergency: {title: "...", action: "..."}}
    texts: {button_yes: "Sí"}
    nodes:
      age: {text: "...", unknown: "No lo sé"}
      sex: {text: "...", options: {male: "Hombre"}}
      danger: {text: "...", items: {chest_pain: "...", "recent_trauma=major": "..."}}

`merge` writes each string into the flow's language maps before the flow is
checked, and reports, against the translation file, every string it lacks
(`missing`) and every key that matches nothing in the flow (`problems`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import Problem, did_you_mean
from bot.yamlsource import Path as YPath
from bot.yamlsource import Source, dotted

LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
NODE_TEXTS = ("text", "unknown", "explain", "advice")


@dataclass
class Merged:
    language: str
    problems: list[Problem]  # the file itself is wrong: always errors
    missing: list[Problem]  # strings not translated yet: errors, or warnings if allowed


def files_for(flow_file: Path) -> list[Path]:
    """The translation files of a flow file: `<name>.<language>.yaml` beside it."""
    return sorted(p for p in flow_file.parent.glob(f"{flow_file.stem}.*.yaml")
                  if LANGUAGE.match(p.name[len(flow_file.stem) + 1:-len(".yaml")]))


def is_translation(path: Path) -> bool:
    return "." in path.stem and bool(LANGUAGE.match(path.stem.rsplit(".", 1)[1]))


def translatable(data: dict) -> Iterator[tuple[YPath, YPath]]:
    """(path of a language map in the flow, path of its string in a translation file)."""
    for key in ("title", "description"):
        if isinstance(data.get(key), dict):
            yield (key,), (key,)
    for lid, spec in _items(data.get("links")):
        if isinstance(spec, dict) and isinstance(spec.get("title"), dict):
            yield ("links", lid, "title"), ("links", lid)
    for fid, value in _items(data.get("labels")):
        if isinstance(value, dict):
            yield ("labels", fid), ("labels", fid)
    for i, rule in enumerate(data.get("rules") or ()):
        if isinstance(rule, dict) and isinstance(rule.get("says"), dict):
            yield ("rules", i, "says"), ("rules", str(rule.get("id")))
    for level, spec in _items(data.get("levels")):
        for key in ("title", "action"):
            if isinstance(spec, dict) and isinstance(spec.get(key), dict):
                yield ("levels", level, key), ("levels", level, key)
    for key, value in _items(data.get("texts")):
        if isinstance(value, dict):
            yield ("texts", key), ("texts", key)
    for key, value in _items(data.get("local")):  # (an empty default needs no translation)
        if isinstance(value, dict) and value.get("en") != "":
            yield ("local", key), ("local", key)
    for nid, node in _items(data.get("nodes")):
        if not isinstance(node, dict):
            continue
        for key in NODE_TEXTS:
            if isinstance(node.get(key), dict):
                yield ("nodes", nid, key), ("nodes", nid, key)
        for i, option in enumerate(node.get("options") or ()):
            if isinstance(option, dict) and isinstance(option.get("label"), dict):
                yield ("nodes", nid, "options", i, "label"), \
                    ("nodes", nid, "options", str(option.get("id")))
        for i, item in enumerate(node.get("items") or ()):
            if isinstance(item, dict) and isinstance(item.get("label"), dict):
                key = str(item.get("finding")) + (f"={item['value']}" if "value" in item else "")
                yield ("nodes", nid, "items", i, "label"), ("nodes", nid, "items", key)


def merge(flow: Source, translation: Source) -> Merged:
    """Write the translation's strings into `flow.data`'s language maps."""
    data, tr = flow.data, translation.data
    problems: list[Problem] = []
    missing: list[Problem] = []
    if not isinstance(tr, dict):
        problems.append(translation.problem((), "a translation file must be a mapping",
                                            "start it with `translation_of:` and `language:`"))
        return Merged("", problems, missing)
    lang = tr.get("language")
    named = Path(translation.file).stem.rsplit(".", 1)[-1]
    if not isinstance(lang, str) or not LANGUAGE.match(lang) or lang == "en":
        problems.append(translation.problem(("language",), f"language '{lang}' is not a "
                                            "language code other than en",
                                            f"write `language: {named}`"))
        return Merged("", problems, missing)
    if lang != named:
        problems.append(translation.problem(("language",), f"language '{lang}' does not match "
                                            f"the file name ('{named}')",
                                            "rename the file or fix `language:`"))
    if tr.get("translation_of") != data.get("flow"):
        problems.append(translation.problem(
            ("translation_of",), f"translation_of '{tr.get('translation_of')}' is not this "
            f"flow ('{data.get('flow')}')", f"write `translation_of: {data.get('flow')}`"))
    expected: set[YPath] = set()
    for target, key in translatable(data):
        expected.add(key)
        value = _get(tr, key)
        if isinstance(value, dict) and key[0] == "links":  # {title, url}
            url = value.get("url")
            if url is not None:
                if isinstance(url, str) and url.startswith("https://"):
                    _set_url(data, key[1], lang, url)
                else:
                    problems.append(translation.problem((*key, "url"), f"link url '{url}' is "
                                                        "not an https:// address",
                                                        "use the public https address"))
            value = value.get("title")
        english = _get(data, target)
        if isinstance(value, str) and value.strip():
            wanted = set(PLACEHOLDER.findall(str(english.get("en", ""))))
            if set(PLACEHOLDER.findall(value)) != wanted:  # e.g. a lost {emergency_number}
                problems.append(translation.problem(
                    key, f"placeholders {sorted(PLACEHOLDER.findall(value))} differ from the "
                    f"English {sorted(wanted)}", "keep every {name} of the English exactly"))
            english[lang] = value  # type: ignore[index]
            continue
        shown = str(english.get("en", ""))[:60] if isinstance(english, dict) else ""
        line, _ = flow.at(target)
        missing.append(translation.problem(
            key, f"missing translation of {dotted(target)} ('{shown}'…, "
            f"{Path(flow.file).name}:{line})", f"add `{dotted(key)}` in {lang}"))
    for key in _leaves(tr):
        if key[0] in ("translation_of", "language") or key in expected:
            continue
        if key[0] == "links" and key[:2] in expected and key[2:] in (("title",), ("url",)):
            continue
        problems.append(translation.problem(key, f"'{dotted(key)}' matches nothing in flow "
                                            f"'{data.get('flow')}'",
                                            _near(key, expected)))
    return Merged(lang, problems, missing)


def _items(value: Any) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def _get(data: Any, path: YPath) -> Any:
    for part in path:
        found = (isinstance(data, dict) and part in data) or \
            (isinstance(data, list) and isinstance(part, int) and part < len(data))
        if not found:
            return None
        data = data[part]
    return data


def _set_url(data: dict, link: Any, lang: str, url: str) -> None:
    spec = data["links"][link]
    if isinstance(spec.get("url"), str):
        spec["url"] = {"en": spec["url"]}
    if isinstance(spec.get("url"), dict):
        spec["url"][lang] = url


def _leaves(data: Any, path: YPath = ()) -> Iterator[YPath]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, (*path, str(key)))
    elif path:
        yield path


def _near(key: YPath, expected: set[YPath]) -> str:
    same_parent = [str(k[-1]) for k in expected if k[:-1] == key[:-1]]
    return did_you_mean(str(key[-1]), same_parent, "remove it, or check the flow's ids")
