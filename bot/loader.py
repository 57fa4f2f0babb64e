"""YAML -> `Flow`, checking everything once and reporting every problem.

A flow author should fix a file in one pass, so nothing here stops at the
first mistake: each check appends a `Problem` (file:line:col, the key, what
is wrong, how to fix it) and loading fails at the end if there were any.
The bot refuses to start on a flow with problems; `triagebot validate`
prints them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bot import checks, translations
from bot import conditions as cond
from bot.errors import FlowError, Problem, did_you_mean
from bot.findings import Kind, Value, Vocabulary, bundled_vocabulary
from bot.flow import (
    FOLLOWUP_TEXTS,
    LEVEL_IDS,
    QUESTION_TYPES,
    REQUIRED_TEXTS,
    Branch,
    Condition,
    Flow,
    Item,
    Level,
    LevelText,
    Link,
    Node,
    Option,
    Rule,
    Text,
)
from bot.yamlsource import Path as YPath
from bot.yamlsource import Source, read_yaml

# Telegram allows 64 bytes of callback data. The adapter adds a short prefix
# (version and interview nonce, at most 15 bytes) to "node:option".
CALLBACK_BUDGET = 48
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_FLOW_ID = 32  # it rides in callback data (the /start menu) and in deep links (64 bytes)
RULE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")
RULE_PREFIX = {Level.EMERGENCY: "em-", Level.URGENT: "ur-", Level.ROUTINE: "ro-",
               Level.SELF_CARE: "sc-"}

TOP_KEYS = {"flow", "version", "title", "description", "languages", "start", "terms", "links",
            "labels", "rules", "levels", "texts", "nodes", "followup", "continues", "local"}
# placeholders the bot fills itself, so no local place may take their names
FILLED = ("emergency_number", "retention", "item", "items", "reason", "links", "choice",
          "hours", "time", "zone", "who", "language")
PLACE = re.compile(r"\{([a-z][a-z0-9_]*)\}")
USE_KEYS = {"use", "next", "ask_if"}  # a node that asks another node's question again
# (it keeps that node's `ask_if`, unless it gives its own)
NODE_KEYS = {
    "info": {"type", "text", "next", "continue_with"},
    "yes_no": {"type", "text", "asks", "next", "ask_if", "otherwise", "explain"},
    "choice": {"type", "text", "asks", "next", "ask_if", "otherwise", "options"},
    "number": {"type", "text", "asks", "next", "ask_if", "otherwise", "unknown"},
    "text": {"type", "text", "key", "max_length", "next", "ask_if"},
    "checklist": {"type", "text", "items", "next", "ask_if"},
    "outcome": {"type", "text", "level", "advice", "links", "continue_with"},
}


class _Builder:
    """Holds one file's source and the problems found so far."""

    def __init__(self, source: Source, vocabulary: Vocabulary,
                 translated: tuple[str, ...] = ()):
        self.src = source
        self.voc = vocabulary
        self.problems: list[Problem] = []
        self.languages: tuple[str, ...] = ("en",)  # every text must have these
        self.translated = translated  # languages from translation files (checked there)
        self.scope = cond.Scope(vocabulary, {})
        self.dangling = False

    def problem(self, path: YPath, what: str, fix: str = "") -> None:
        self.problems.append(self.src.problem(path, what, fix))

    # ---- small typed readers ------------------------------------------------

    def mapping(self, value: Any, path: YPath, what: str) -> dict:
        if isinstance(value, dict):
            return value
        self.problem(path, f"{what} must be a mapping (key: value lines)",
                     "indent its entries under it")
        return {}

    def keys(self, data: dict, allowed: set[str], path: YPath, required: Iterable[str]) -> None:
        for key in data:
            if key not in allowed:
                self.problem((*path, key), f"unknown key '{key}'",
                             did_you_mean(key, allowed, f"allowed: {', '.join(sorted(allowed))}"))
        for key in required:
            if key not in data:
                self.problem(path, f"missing '{key}'", f"add `{key}:`")

    def text(self, value: Any, path: YPath) -> Text | None:
        if value is None:
            return None
        if isinstance(value, str):
            self.problem(path, "text must be a language map",
                         f'write it as {{en: "{value[:30]}"}} so it can be translated')
            return Text.en(value)
        if not isinstance(value, dict) or not value:
            self.problem(path, "text must be a language map", 'e.g. {en: "How old are you?"}')
            return None
        out = []
        for lang, string in value.items():
            if not isinstance(string, str) or not string.strip():
                self.problem((*path, lang), f"the '{lang}' text is empty or not text",
                             "write the text in quotes")
                continue
            if lang not in self.languages and lang not in self.translated:
                self.problem((*path, lang), f"language '{lang}' is not listed in `languages:`",
                             did_you_mean(lang, self.languages, "add it to `languages:`"))
            out.append((lang, string))
        for lang in self.languages:
            if lang not in value:
                self.problem(path, f"missing translation '{lang}'",
                             f"add `{lang}: \"...\"` (every text needs every listed language)")
        if "en" not in dict(out):
            return Text((*tuple(out), ("en", next(iter(dict(out).values()), "?"))))
        return Text(tuple(out))

    def condition(self, value: Any, path: YPath) -> Condition | None:
        if not isinstance(value, str):
            self.problem(path, "a condition must be text", 'e.g. "fever AND back_pain"')
            return None
        try:
            tree = cond.parse(value)
        except cond.ConditionError as exc:
            self.problem(path, f"{exc.what} at column {exc.pos + 1} of the condition", exc.fix)
            return None
        errors = cond.check(tree, self.scope)
        for exc in errors:
            self.problem(path, exc.what, exc.fix)
        if errors:
            return None
        # `expr` has terms expanded (for analysis); `test` reads each term's value,
        # which `rules.values_of` computes once per set of answers.
        expanded = cond.expand(tree, self.scope.terms)
        return Condition(value, expanded, cond.compile_expr(tree))

    def value_for(self, finding: str, value: Any, path: YPath) -> tuple[bool, Value]:
        """Check that `value` fits `finding`'s type; return (ok, value as stored)."""
        if finding not in self.voc:
            self.problem(path, f"unknown finding '{finding}'",
                         did_you_mean(finding, self.voc.findings,
                                       "use an id from FINDINGS.yaml"))
            return False, None
        f = self.voc[finding]
        if f.kind is Kind.BOOLEAN and isinstance(value, bool):
            return True, value
        if f.kind is Kind.CHOICE and value in f.values:
            return True, value
        if f.kind is Kind.NUMBER and isinstance(value, int | float) and not isinstance(value, bool):
            if f.min is not None and f.max is not None and not f.min <= value <= f.max:
                self.problem(path, f"{value} is outside {finding}'s range {f.min}..{f.max}",
                             "use a plausible value in the finding's unit")
                return False, None
            return True, float(value)
        expected = {Kind.BOOLEAN: "true or false", Kind.NUMBER: f"a number in {f.unit}",
                    Kind.CHOICE: "one of " + ", ".join(f.values)}[f.kind]
        hint = did_you_mean(str(value), f.values) if f.kind is Kind.CHOICE else ""
        self.problem(path, f"'{value}' is not a value of '{finding}' ({f.kind})",
                     hint or f"use {expected}")
        return False, None

    def id_list(self, value: Any, path: YPath, known: dict, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(path, f"{what} must be a list", "e.g. [nhs_back_pain]")
            return ()
        out = []
        for i, item in enumerate(value):
            if item not in known:
                self.problem((*path, i), f"unknown {what[:-1]} '{item}'",
                             did_you_mean(item, known, f"define it under `{what}:`"))
            else:
                out.append(item)
        return tuple(out)

    # ---- sections -----------------------------------------------------------

    def build(self) -> Flow | None:
        data = self.src.data
        if not isinstance(data, dict):
            self.problem((), "a flow file must be a mapping with `flow:`, `nodes:` and the rest",
                         "see README 'How to write a flow'")
            return None
        self.keys(data, TOP_KEYS, (), ("flow", "version", "title", "start", "rules", "levels",
                                       "texts", "nodes"))
        langs = data.get("languages", ["en"])
        if not isinstance(langs, list) or "en" not in langs:
            self.problem(("languages",), "languages must be a list that includes en",
                         "e.g. languages: [en, fr]")
        else:
            self.languages = tuple(str(x) for x in langs)
        flow_id = data.get("flow", "")
        if not isinstance(flow_id, str) or not ID_PATTERN.match(flow_id):
            self.problem(("flow",), f"flow id '{flow_id}' is not a plain id",
                         "use lower-case letters, digits and _")
        elif len(flow_id) > MAX_FLOW_ID:
            self.problem(("flow",), f"flow id '{flow_id}' is longer than {MAX_FLOW_ID} "
                         "characters", "shorten it: it goes into buttons and deep links")
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            self.problem(("version",), "version must be a whole number from 1",
                         "raise it whenever the questions or rules change")
            version = 1
        title = self.text(data.get("title"), ("title",)) or Text.en(str(flow_id))
        description = self.text(data.get("description"), ("description",))
        terms = self.terms(self.mapping(data.get("terms", {}), ("terms",), "terms"))
        links = self.links(self.mapping(data.get("links", {}), ("links",), "links"))
        labels = {
            k: t for k, v in self.mapping(data.get("labels", {}), ("labels",), "labels").items()
            if (t := self.text(v, ("labels", k))) is not None
        }
        for k in labels:
            if k not in self.voc:
                self.problem(("labels", k), f"label for unknown finding '{k}'",
                             did_you_mean(k, self.voc.findings, "remove it"))
        rules = self.rules(data.get("rules"), links)
        levels = self.levels(self.mapping(data.get("levels", {}), ("levels",), "levels"))
        texts = self.texts(self.mapping(data.get("texts", {}), ("texts",), "texts"))
        local = self.local(self.mapping(data.get("local", {}), ("local",), "local"))
        nodes = self.nodes(self.mapping(data.get("nodes", {}), ("nodes",), "nodes"), links)
        start = data.get("start", "")
        if nodes and start not in nodes:
            self.problem(("start",), f"start node '{start}' does not exist",
                         did_you_mean(start, nodes, "name the first node of the interview"))
        followup = self.followup(data.get("followup"), nodes)
        continues = data.get("continues", [])
        if not isinstance(continues, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v < version
                for v in continues):
            self.problem(("continues",), "continues must list earlier version numbers",
                         f"e.g. continues: [{max(version - 1, 1)}] (sessions of those versions "
                         "go on in this one; `triagebot validate` checks no question changed "
                         "meaning under the same id)")
            continues = []
        asked = {f for n in nodes.values() for f in n.asks}
        for finding in sorted(asked):
            if finding not in labels:
                self.problem(("labels",), f"no label for asked finding '{finding}'",
                             f"add `{finding}: {{en: \"...\"}}` under labels (used in "
                             "'because you told me')")
        used = set(asked)
        for c in (*(r.when for r in rules), *terms.values(),
                  *(b.when for n in nodes.values() for b in n.next if b.when),
                  *(n.ask_if for n in nodes.values() if n.ask_if),
                  *(i.ask_if for n in nodes.values() for i in n.items if i.ask_if)):
            used |= cond.findings_in(c.expr)
        self.local_only_where_allowed(local, rules, nodes, labels)
        found = []
        if nodes and start in nodes and not self.dangling:  # else every later node looks lost
            found += checks.graph(nodes, start, *([followup] if followup else []))
        found += checks.dead_conditions(self.voc, rules, nodes, asked)
        for path, what, fix in found:
            self.problem(path, what, fix)
        if any(not p.warning for p in self.problems):
            return None
        frozen = MappingProxyType  # read-only views: a loaded flow never changes
        return Flow(
            id=flow_id, version=version, file=self.src.file, title=title,
            languages=(*self.languages, *(t for t in self.translated if t not in self.languages)),
            start=start, vocabulary=self.voc, terms=frozen(terms),
            rules=rules, nodes=frozen(nodes), links=frozen(links), labels=frozen(labels),
            levels=frozen(levels), texts=frozen(texts), followup=followup,
            continues=tuple(continues), description=description, findings_used=frozenset(used),
            local=frozen(local),
        )

    def followup(self, spec: Any, nodes: dict[str, Node]) -> str | None:
        """`followup: {start: node}`: where a check-in interview begins (optional)."""
        if spec is None:
            return None
        spec = self.mapping(spec, ("followup",), "followup")
        self.keys(spec, {"start"}, ("followup",), ("start",))
        start = spec.get("start")
        if start not in nodes:
            self.problem(("followup", "start"), f"follow-up start node '{start}' does not exist",
                         did_you_mean(str(start), nodes, "name the check-in's first question"))
            return None
        for key in FOLLOWUP_TEXTS:
            if key not in self.src.data.get("texts", {}):
                self.problem(("texts",), f"missing text '{key}' (a flow with `followup:` asks "
                             "better, same or worse first)", f"add `{key}: {{en: \"...\"}}`")
        return str(start)

    def terms(self, data: dict) -> dict[str, Condition]:
        trees: dict[str, cond.Expr] = {}
        for name, text in data.items():
            if name in self.voc:
                self.problem(("terms", name), f"term '{name}' has the name of a finding",
                             "rename the term")
                continue
            if not isinstance(text, str):
                self.problem(("terms", name), "a term must be a condition in quotes",
                             'e.g. fever: "temperature_c >= 38.0 OR felt_feverish"')
                continue
            try:
                trees[name] = cond.parse(text)
            except cond.ConditionError as exc:
                self.problem(("terms", name), f"{exc.what} at column {exc.pos + 1}", exc.fix)
        # a term may use terms defined before it or after it, but not itself
        ordered: dict[str, cond.Expr] = {}
        visiting: set[str] = set()

        def resolve(name: str) -> bool:
            if name in ordered:
                return True
            if name in visiting:
                self.problem(("terms", name), f"term '{name}' is defined in terms of itself",
                             "break the cycle")
                return False
            visiting.add(name)
            ok = all(resolve(a.name) for a in cond.atoms(trees[name])
                     if isinstance(a, cond.Var) and a.name in trees)
            visiting.discard(name)
            if ok:
                ordered[name] = trees[name]
            return ok

        for name in trees:
            resolve(name)
        self.scope = cond.Scope(self.voc, ordered)
        out = {}
        for name in ordered:
            c = self.condition(data[name], ("terms", name))
            if c is not None:
                out[name] = c
        return out

    def links(self, data: dict) -> dict[str, Link]:
        out = {}
        for lid, spec in data.items():
            path = ("links", lid)
            spec = self.mapping(spec, path, "a link")
            self.keys(spec, {"url", "title"}, path, ("url", "title"))
            url = spec.get("url", "")
            urls = url if isinstance(url, dict) else {"en": url}  # per language: translations
            if not all(isinstance(u, str) and u.startswith("https://") for u in urls.values()):
                self.problem((*path, "url"), f"link url '{url}' is not an https:// address",
                             "use the public https address from RED-FLAGS.md section 8")
            title = self.text(spec.get("title"), (*path, "title"))
            if title:
                out[lid] = Link(lid, Text(tuple((k, str(v)) for k, v in urls.items())), title)
        return out

    def rules(self, data: Any, links: dict[str, Link]) -> tuple[Rule, ...]:
        if not isinstance(data, list):
            self.problem(("rules",), "rules must be a list", "start each rule with `- id:`")
            return ()
        out: list[Rule] = []
        seen: dict[str, int] = {}
        for i, spec in enumerate(data):
            path: YPath = ("rules", i)
            spec = self.mapping(spec, path, "a rule")
            self.keys(spec, {"id", "level", "when", "says", "links", "source"}, path,
                      ("id", "level", "when", "says", "links", "source"))
            rid = str(spec.get("id", ""))
            if rid in seen:
                self.problem((*path, "id"), f"duplicate rule id '{rid}' (also rules[{seen[rid]}])",
                             "give each rule its own id")
            seen[rid] = i
            if not RULE_ID_PATTERN.match(rid):
                self.problem((*path, "id"), f"rule id '{rid}' is not a plain id",
                             "use lower-case words joined by -, e.g. em-cauda-equina")
            level_id = spec.get("level")
            if level_id not in LEVEL_IDS:
                self.problem((*path, "level"), f"unknown level '{level_id}'",
                             did_you_mean(level_id, LEVEL_IDS, "use " + ", ".join(LEVEL_IDS)))
                continue
            level = Level.parse(level_id)
            if not rid.startswith(RULE_PREFIX[level]):
                self.problem((*path, "id"), f"rule id '{rid}' does not start with its level",
                             f"{level.id} rules start with '{RULE_PREFIX[level]}'")
            if not str(spec.get("source", "")).strip():
                self.problem((*path, "source"), "a rule must name its source",
                             "cite the RED-FLAGS.md rule and the guideline behind it")
            when = self.condition(spec.get("when"), (*path, "when"))
            says = self.text(spec.get("says"), (*path, "says"))
            rule_links = self.id_list(spec.get("links"), (*path, "links"), links, "links")
            if when and says:
                out.append(Rule(rid, level, when, says, rule_links, str(spec.get("source"))))
        return tuple(out)

    def levels(self, data: dict) -> dict[Level, LevelText]:
        out = {}
        for key in data:
            if key not in LEVEL_IDS:
                self.problem(("levels", key), f"unknown level '{key}'",
                             did_you_mean(key, LEVEL_IDS, "use " + ", ".join(LEVEL_IDS)))
        for level in Level:
            path = ("levels", level.id)
            if level.id not in data:
                self.problem(("levels",), f"missing level '{level.id}'",
                             f"add `{level.id}:` with title and action")
                continue
            spec = self.mapping(data[level.id], path, "a level")
            self.keys(spec, {"title", "action"}, path, ("title", "action"))
            title = self.text(spec.get("title"), (*path, "title"))
            action = self.text(spec.get("action"), (*path, "action"))
            if title and action:
                out[level] = LevelText(title, action)
        return out

    def texts(self, data: dict) -> dict[str, Text]:
        out = {k: t for k, v in data.items() if (t := self.text(v, ("texts", k))) is not None}
        for key in REQUIRED_TEXTS:
            if key not in data:
                self.problem(("texts",), f"missing text '{key}'", f"add `{key}: {{en: \"...\"}}`")
        for key in data:
            if key not in REQUIRED_TEXTS and key not in FOLLOWUP_TEXTS:
                self.problem(("texts", key), f"unknown text '{key}'",
                             did_you_mean(key, REQUIRED_TEXTS, "remove it"))
        return out

    def local(self, data: dict) -> dict[str, Text]:
        """`local:` places a deployment may word its own way, with their defaults; an
        empty default (`{en: ""}`) shows nothing until local.yaml fills it."""
        out: dict[str, Text] = {}
        for name, value in data.items():
            path: YPath = ("local", name)
            if not isinstance(name, str) or not ID_PATTERN.match(name) or name in FILLED:
                self.problem(path, f"'{name}' cannot name a local place",
                             "use a plain id that the bot does not fill itself, e.g. "
                             "service_name")
                continue
            if isinstance(value, dict) and value.get("en") == "":
                out[name] = Text.en("")
                continue
            text = self.text(value, path)
            if text is not None:
                out[name] = text
        for name, text in out.items():  # one place may name another, once
            for other in PLACE.findall(text.get("en")):
                if other in out and set(PLACE.findall(out[other].get("en"))) & set(out):
                    self.problem(("local", name), f"'{name}' names '{other}', which names "
                                 "another place in turn", "let a place name plain ones only")
        return out

    def local_only_where_allowed(self, local: dict[str, Text], rules, nodes, labels) -> None:
        """Local places go in outcomes and fixed texts, never in a question, an answer,
        a label or a rule: local.yaml must not be able to change what is asked."""
        if not local:
            return
        texts: list[tuple[YPath, Text | None]] = [
            (("labels", k), t) for k, t in labels.items()]
        texts += [(("rules", i, "says"), r.says) for i, r in enumerate(rules)]
        for nid, node in nodes.items():
            if node.is_question:
                texts += [(("nodes", nid, "text"), node.text), (("nodes", nid, "explain"),
                                                                 node.explain),
                          (("nodes", nid, "unknown"), node.unknown)]
                texts += [(("nodes", nid, "options"), o.label) for o in node.options]
                texts += [(("nodes", nid, "items"), i.label) for i in node.items]
        for path, text in texts:
            named = {p for _, s in (text.by_lang if text else ()) for p in PLACE.findall(s)}
            for place in sorted(named & set(local)):
                self.problem(path, f"local place '{{{place}}}' in a question, answer, label "
                             "or rule", "use local places in outcomes and fixed texts only")

    # ---- nodes --------------------------------------------------------------

    def nodes(self, data: dict, links: dict[str, Link]) -> dict[str, Node]:
        built = {}
        for nid, spec in data.items():
            spec = self.used(str(nid), self.mapping(spec, ("nodes", nid), "a node"), data)
            node = self.node(str(nid), spec, links)
            if node:
                built[str(nid)] = node
        self.dangling = False
        for node in built.values():
            for i, branch in enumerate(node.next):
                if branch.goto not in built and branch.goto not in data:
                    self.dangling = True
                    path: YPath = ("nodes", node.id, "next")
                    if len(node.next) > 1 or isinstance(data[node.id].get("next"), list):
                        path = (*path, i, "goto")
                    self.problem(path, f"unknown node '{branch.goto}'",
                                 did_you_mean(branch.goto, data, "name an existing node"))
        return built

    def used(self, nid: str, spec: dict, data: dict) -> dict:
        """`use: other_node` asks that node's question again (its text, answers and
        translations) with this node's own `next`: the check-in asks red-flag
        questions of the first interview without copying them."""
        if "use" not in spec:
            return spec
        path: YPath = ("nodes", nid)
        self.keys(spec, USE_KEYS, path, ("use", "next"))
        other = data.get(spec["use"])
        if not isinstance(other, dict) or "use" in other or other.get("type") == "outcome":
            self.problem((*path, "use"), f"'{spec['use']}' is not a question node to reuse",
                         did_you_mean(str(spec["use"]), data, "name a question node"))
            return {"type": "info", "text": {"en": "?"}, "next": spec.get("next")}
        return {**{k: v for k, v in other.items() if k != "next"},  # (its ask_if too)
                **{k: v for k, v in spec.items() if k != "use"}}

    def node(self, nid: str, spec: dict, links: dict[str, Link]) -> Node | None:
        path: YPath = ("nodes", nid)
        if not ID_PATTERN.match(nid):
            self.problem(path, f"node id '{nid}' is not a plain id",
                         "use lower-case letters, digits and _")
        kind = spec.get("type")
        if kind not in NODE_KEYS:
            self.problem((*path, "type"), f"unknown node type '{kind}'",
                         did_you_mean(kind, NODE_KEYS, "use one of " + ", ".join(NODE_KEYS)))
            return None
        required = ["type"] + (["level"] if kind == "outcome" else ["text"])
        required += ["next"] if kind != "outcome" and "continue_with" not in spec else []
        handoff = spec.get("continue_with", "")
        if "continue_with" in spec and (not isinstance(handoff, str) or
                                        not ID_PATTERN.match(handoff)):
            self.problem((*path, "continue_with"), f"continue_with '{handoff}' is not a flow id",
                         "name the flow the interview goes on in, e.g. continue_with: fever")
            handoff = ""
        if "continue_with" in spec and "next" in spec:
            self.problem((*path, "next"), "a node that continues in another flow has no `next`",
                         "remove `next` or `continue_with`")
        required += ["asks"] if kind in ("yes_no", "choice", "number") else []
        self.keys(spec, NODE_KEYS[kind], path, required)
        text = self.text(spec.get("text"), (*path, "text")) or Text.en("")
        if kind in QUESTION_TYPES and text.get("en") and not _reads_as_question(text):
            self.problem((*path, "text"), "a question must read as a question",
                         "end it with '?' (or ':' for typed input)")
        asks = self.asks(spec.get("asks"), (*path, "asks"), kind)
        ask_if = self.condition(spec["ask_if"], (*path, "ask_if")) if "ask_if" in spec else None
        otherwise = self.otherwise(spec.get("otherwise"), (*path, "otherwise"), asks)
        if "otherwise" in spec and "ask_if" not in spec:
            self.problem((*path, "otherwise"), "`otherwise` needs `ask_if`",
                         "add the condition under which the question is asked")
        common: dict[str, Any] = dict(
            id=nid, type=kind, text=text, asks=asks, ask_if=ask_if, otherwise=otherwise,
            next=self.branches(spec.get("next"), (*path, "next"))
            if kind != "outcome" and "next" in spec else (), handoff=str(handoff or ""),
        )
        if kind == "choice":
            common["options"] = self.options(spec.get("options"), (*path, "options"), nid, asks)
        elif kind == "yes_no":
            common["explain"] = self.text(spec.get("explain"), (*path, "explain"))
            if asks:
                common["options"] = tuple(
                    Option(oid, Text.en(oid), ((asks[0], value),))
                    for oid, value in (("yes", True), ("no", False)))
        elif kind == "number":
            common["unknown"] = self.text(spec.get("unknown"), (*path, "unknown"))
            if common["unknown"] is None:
                self.problem(path, "a number question must accept \"don't know\"",
                             "add `unknown: {en: \"Not measured\"}` (FINDINGS.yaml)")
        elif kind == "checklist":
            items = self.items(spec.get("items"), (*path, "items"), nid)
            common["items"] = items
            common["asks"] = tuple(dict.fromkeys(i.finding for i in items))
        elif kind == "text":
            key = spec.get("key", "")
            if not isinstance(key, str) or not ID_PATTERN.match(key) or key in self.voc:
                self.problem((*path, "key"), "a text question needs a `key` that is not a finding",
                             "free text never feeds rules; name where it is kept, e.g. note")
            common["key"] = str(key)
            length = spec.get("max_length", 200)
            if not isinstance(length, int) or not 1 <= length <= 1000:
                self.problem((*path, "max_length"), "max_length must be 1..1000",
                             "short answers only")
                length = 200
            common["max_length"] = length
        elif kind == "outcome":
            level = spec.get("level")
            if level not in LEVEL_IDS:
                self.problem((*path, "level"), f"unknown level '{level}'",
                             did_you_mean(level, LEVEL_IDS, "use " + ", ".join(LEVEL_IDS)))
                return None
            common["level"] = Level.parse(level)
            common["advice"] = self.text(spec.get("advice"), (*path, "advice"))
            common["links"] = self.id_list(spec.get("links"), (*path, "links"), links, "links")
            if not common["links"]:
                self.problem((*path, "links"), "an outcome needs at least one guidance link",
                             "list link ids from `links:`")
        return Node(**common)

    def asks(self, value: Any, path: YPath, kind: str) -> tuple[str, ...]:
        if value is None:
            return ()
        names = value if isinstance(value, list) else [value]
        if kind != "choice" and len(names) != 1:
            self.problem(path, f"a {kind} question asks about exactly one finding",
                         "use a choice question with `sets:` to decide several at once")
        out = []
        expected = {"yes_no": Kind.BOOLEAN, "number": Kind.NUMBER}
        for i, name in enumerate(names):
            p = (*path, i) if isinstance(value, list) else path
            if name not in self.voc:
                self.problem(p, f"unknown finding '{name}'",
                             did_you_mean(name, self.voc.findings, "use an id from FINDINGS.yaml"))
                continue
            want = expected.get(kind)
            if want and self.voc[name].kind is not want:
                self.problem(p, f"'{name}' is a {self.voc[name].kind}; a {kind} question "
                             f"asks a {want}", "change the question type or the finding")
            out.append(name)
        return tuple(out)

    def otherwise(self, value: Any, path: YPath, asks: tuple[str, ...]) -> tuple:
        if value is None:
            return ()
        data = self.mapping(value, path, "otherwise")
        out = []
        for finding, v in data.items():
            if finding not in asks:
                self.problem((*path, finding), f"'{finding}' is not asked by this question",
                             "otherwise may only set the findings in `asks`")
            ok, stored = self.value_for(finding, v, (*path, finding))
            if ok:
                out.append((finding, stored))
        return tuple(out)

    def branches(self, value: Any, path: YPath) -> tuple[Branch, ...]:
        if isinstance(value, str):
            return (Branch(None, value),)
        if not isinstance(value, list) or not value:
            self.problem(path, "next must be a node id or a list of `- if: ... goto: ...`",
                         "e.g. next: sex")
            return ()
        out = []
        for i, spec in enumerate(value):
            p = (*path, i)
            spec = self.mapping(spec, p, "a branch")
            self.keys(spec, {"if", "goto"}, p, ("goto",))
            when = self.condition(spec["if"], (*p, "if")) if "if" in spec else None
            if i == len(value) - 1 and "if" in spec:
                self.problem(p, "the last branch has a condition, so the interview could stop "
                             "here", "end the list with a plain `- goto: <node>`")
            if i < len(value) - 1 and "if" not in spec:
                self.problem(p, "a branch without `if` must come last",
                             "branches after it could never be taken")
            out.append(Branch(when, str(spec.get("goto", ""))))
        return tuple(out)

    def options(self, value: Any, path: YPath, nid: str, asks: tuple[str, ...]) -> tuple:
        if not isinstance(value, list) or len(value) < 2:
            self.problem(path, "a choice question needs a list of at least two options",
                         "add `- id: ... label: ...` entries")
            return ()
        out, seen = [], set()
        for i, spec in enumerate(value):
            p = (*path, i)
            spec = self.mapping(spec, p, "an option")
            self.keys(spec, {"id", "label", "value", "sets"}, p, ("id", "label"))
            oid = str(spec.get("id", ""))
            self.callback_id(nid, oid, (*p, "id"))
            if oid in seen:
                self.problem((*p, "id"), f"duplicate option id '{oid}'", "give each its own id")
            seen.add(oid)
            sets: dict[str, Any]
            if "sets" in spec:
                sets = self.mapping(spec["sets"], (*p, "sets"), "sets")
            elif len(asks) == 1:
                sets = {asks[0]: spec.get("value", oid)}
            else:
                self.problem(p, "an option of a question that asks several findings needs `sets`",
                             "e.g. sets: {sex: female, pregnant: true}")
                sets = {}
            pairs = []
            for finding, v in sets.items():
                if finding not in asks:
                    self.problem((*p, "sets", finding),
                                 f"'{finding}' is not in this question's `asks`",
                                 "add it to asks, or remove it here")
                ok, stored = self.value_for(finding, v, (*p, "sets", finding))
                if ok:
                    pairs.append((finding, stored))
            for finding in asks:
                if finding not in sets and len(asks) > 1:
                    self.problem(p, f"option '{oid}' does not set '{finding}'",
                                 "every option must decide every finding the question asks")
            label = self.text(spec.get("label"), (*p, "label"))
            if label:
                out.append(Option(oid, label, tuple(pairs)))
        return tuple(out)

    def items(self, value: Any, path: YPath, nid: str) -> tuple[Item, ...]:
        if not isinstance(value, list) or not value:
            self.problem(path, "a checklist needs a list of items", "add `- finding: ...` items")
            return ()
        out, seen = [], set()
        for i, spec in enumerate(value):
            p = (*path, i)
            spec = self.mapping(spec, p, "an item")
            self.keys(spec, {"finding", "value", "label", "ask_if", "otherwise"}, p,
                      ("finding", "label"))
            finding = str(spec.get("finding", ""))
            if finding not in self.voc:
                self.problem((*p, "finding"), f"unknown finding '{finding}'",
                             did_you_mean(finding, self.voc.findings,
                                           "use an id from FINDINGS.yaml"))
                continue
            f = self.voc[finding]
            if f.kind is Kind.NUMBER:
                self.problem((*p, "finding"), f"'{finding}' is a number; checklists tick "
                             "yes/no findings or choice values", "ask it with a number question")
                continue
            if f.kind is Kind.CHOICE:
                if "value" not in spec:
                    self.problem(p, f"'{finding}' is a choice: say which value ticking sets",
                                 f"add `value:` ({', '.join(f.values)})")
                    continue
                ok, stored = self.value_for(finding, spec["value"], (*p, "value"))
                if not ok:
                    continue
                if stored == f.default:
                    self.problem((*p, "value"), "ticking must set something other than the "
                                 "'nothing there' default", "pick another value")
                iid = f"{finding}.{stored}"
            else:
                stored, iid = True, finding
            if iid in seen:
                self.problem(p, f"'{iid}' is listed twice in this checklist", "remove one")
            seen.add(iid)
            self.callback_id(nid, iid, p)
            ask_if = self.condition(spec["ask_if"], (*p, "ask_if")) if "ask_if" in spec else None
            otherwise: tuple = ()
            if "otherwise" in spec:
                if "ask_if" not in spec:
                    self.problem((*p, "otherwise"), "`otherwise` needs `ask_if`",
                                 "add the condition under which the item is shown")
                ok, value = self.value_for(finding, spec["otherwise"], (*p, "otherwise"))
                otherwise = ((finding, value),) if ok else ()
            label = self.text(spec.get("label"), (*p, "label"))
            if label:
                out.append(Item(iid, finding, stored, label, ask_if, otherwise))
        return tuple(out)

    def callback_id(self, nid: str, oid: str, path: YPath) -> None:
        size = len(f"{nid}:{oid}".encode())
        if size > CALLBACK_BUDGET:
            self.problem(path, f"'{nid}:{oid}' is {size} bytes; Telegram's callback data leaves "
                         f"{CALLBACK_BUDGET}", "shorten the node or option id")

def _reads_as_question(text: Text) -> bool:
    return all(s.rstrip().endswith(("?", ":", "?)", ":)", "؟", "؟)")) for _, s in text.by_lang)


# ---------------------------------------------------------------- entry points


def load_flow(path: str | Path, vocabulary: Vocabulary | None = None,
              allow_missing_translations: bool = False) -> Flow:
    """Load and check one flow file (and its translations); raise `FlowError` listing
    every problem. Warnings (missing translations, if allowed) do not stop it."""
    flow, problems = _load(Path(path), vocabulary or bundled_vocabulary(),
                           allow_missing_translations)
    if flow is None:
        raise FlowError(problems)
    return flow


def _read(path: Path) -> tuple[Source | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), 1, 1, "", f"cannot read the file: {exc}",
                              "check the path and that it is UTF-8 text")]
    return read_yaml(text, str(path))


def _load(path: Path, vocabulary: Vocabulary, allow_missing_translations: bool = False,
          ) -> tuple[Flow | None, list[Problem]]:
    source, problems = _read(path)
    if source is None:
        return None, problems
    languages: list[str] = []
    for file in translations.files_for(path):
        translation, found = _read(file)
        problems += found
        if translation is None or not isinstance(source.data, dict):
            continue
        merged = translations.merge(source, translation)
        problems += merged.problems
        problems += [replace(p, warning=True) for p in merged.missing] \
            if allow_missing_translations else merged.missing
        if merged.language and merged.language not in languages:
            languages.append(merged.language)
    builder = _Builder(source, vocabulary, tuple(languages))
    builder.problems.extend(problems)
    flow = builder.build()
    return flow, builder.problems


def flow_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their flow files, sorted; translation files (`name.es.yaml`)
    stand for the flow they translate."""
    out: list[Path] = []
    for p in map(Path, paths):
        for file in sorted(p.glob("*.yaml")) if p.is_dir() else [p]:
            if translations.is_translation(file):
                file = file.with_name(file.stem.rsplit(".", 1)[0] + file.suffix)
            if file not in out:
                out.append(file)
    return out


def load_flows(paths: Iterable[str | Path], vocabulary: Vocabulary | None = None,
               allow_missing_translations: bool = False,
               ) -> tuple[dict[str, Flow], list[Problem]]:
    """Load every flow; problems from all files, and duplicate flow ids across files.

    Missing translations are errors unless `allow_missing_translations`, when they
    are warnings (`Problem.warning`) and those texts fall back to English."""
    flows: dict[str, Flow] = {}
    problems: list[Problem] = []
    for path in flow_files(paths):
        flow, found = _load(path, vocabulary or bundled_vocabulary(),
                            allow_missing_translations)
        problems.extend(found)
        if flow is not None:
            if flow.id in flows:
                problems.append(Problem(str(path), 1, 1, "flow",
                                        f"flow id '{flow.id}' is also used by "
                                        f"{flows[flow.id].file}", "give each flow its own id"))
            flows[flow.id] = flow
    return flows, [*problems, *handoff_problems(flows)]


def handoff_problems(flows: dict[str, Flow]) -> list[Problem]:
    """`continue_with:` names a loaded flow other than its own, the hand-offs never
    come back round (that could loop without a question), and every finding carried
    over means the same in both flows (its kind, and the values it can take)."""
    found: list[Problem] = []
    edges: dict[str, list[str]] = {}
    for flow in flows.values():
        text = Path(flow.file).read_text(encoding="utf-8") if Path(flow.file).exists() else ""
        for nid, node in flow.nodes.items():
            if not node.handoff:
                continue
            match = re.search(rf"^\s*continue_with:\s*{re.escape(node.handoff)}\s*$", text,
                              re.MULTILINE)
            line = text.count("\n", 0, match.start()) + 1 if match else 1
            where = (flow.file, line, 1, f"nodes.{nid}.continue_with")
            target = flows.get(node.handoff)
            if target is None or target.id == flow.id:
                what = "its own flow" if target else f"flow '{node.handoff}', which is not " \
                    "loaded"
                found.append(Problem(*where, f"continues in {what}", did_you_mean(
                    node.handoff, [f for f in flows if f != flow.id],
                    "put the flow beside this one (TRIAGEBOT_FLOWS)")))
                continue
            edges.setdefault(flow.id, []).append(target.id)
            for fid in sorted(flow.findings_used & target.findings_used):
                mine = flow.vocabulary.findings.get(fid)
                theirs = target.vocabulary.findings.get(fid)
                if not mine or not theirs or (mine.kind, mine.values, mine.unit) == \
                        (theirs.kind, theirs.values, theirs.unit):
                    continue
                what, here, there = next(
                    (name, a, b) for name, a, b in (("kind", mine.kind, theirs.kind),
                                                    ("unit", mine.unit, theirs.unit),
                                                    ("values", mine.values, theirs.values))
                    if a != b)
                found.append(Problem(*where, f"finding '{fid}' has {what} {here} here but "
                                     f"{there} in '{target.id}', so it cannot be carried over",
                                     "use one findings vocabulary for both flows"))
    for start in edges:  # a cycle: following the hand-offs from a flow comes back to it
        seen, todo = set(), list(edges[start])
        while todo:
            fid = todo.pop()
            if fid == start:
                found.append(Problem(flows[start].file, 1, 1, "continue_with",
                                     f"flow '{start}' hands over to a flow that hands back to "
                                     "it", "end one of them with an outcome instead"))
                break
            if fid not in seen:
                seen.add(fid)
                todo.extend(edges.get(fid, ()))
    return found


# ---------------------------------------------------------------- older versions


def load_archive(folder: str | Path, vocabulary: Vocabulary | None = None,
                 allow_missing_translations: bool = False,
                 ) -> tuple[dict[tuple[str, int], Flow], list[Problem]]:
    """Older versions kept in FOLDER/versions/ (`name.v1.yaml`, translations beside it):
    interviews begun on them finish on them after a redeploy."""
    archive: dict[tuple[str, int], Flow] = {}
    problems: list[Problem] = []
    versions = Path(folder) / "versions"
    if not versions.is_dir():
        return archive, problems
    for path in flow_files([versions]):
        flow, found = _load(path, vocabulary or bundled_vocabulary(),
                            allow_missing_translations)
        problems.extend(found)
        if flow is not None:
            archive[(flow.id, flow.version)] = flow
    return archive, problems


def meaning(node: Node) -> tuple:
    """What a question means, wording aside: what it asks and what each answer sets."""
    return (node.type, node.asks, tuple((o.id, o.sets) for o in node.options),
            tuple((i.finding, i.value) for i in node.items), node.key)


def version_problems(flow: Flow, archive: dict[tuple[str, int], Flow]) -> list[Problem]:
    """A question whose meaning changed must change its id, or a session waiting at it
    (or a button pressed on it) would have its answer read as the new question's."""
    found: list[Problem] = []
    text = Path(flow.file).read_text(encoding="utf-8") if Path(flow.file).exists() else ""
    for (fid, version), old in sorted(archive.items()):
        if fid != flow.id:
            continue
        if version >= flow.version:
            found.append(Problem(old.file, 1, 1, "version", f"kept version {version} is not "
                                 f"older than the current {flow.version}",
                                 "raise `version:` in the current flow"))
            continue
        for nid, node in flow.nodes.items():
            if nid in old.nodes and meaning(old.nodes[nid]) != meaning(node):
                match = re.search(rf"^  {re.escape(nid)}:", text, re.MULTILINE)
                line = text.count("\n", 0, match.start()) + 1 if match else 1
                found.append(Problem(flow.file, line, 3, f"nodes.{nid}",
                                     f"question '{nid}' means something else than in version "
                                     f"{version} (what it asks or what its answers set changed)",
                                     "give the changed question a new id"))
    for version in flow.continues:
        if (flow.id, version) not in archive:
            found.append(Problem(flow.file, 1, 1, "continues", f"version {version} is not "
                                 "kept, so its questions cannot be compared",
                                 f"keep it as versions/{flow.id}.v{version}.yaml"))
    return found
