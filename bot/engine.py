"""The triage state machine: (flow, session, input) -> (session, replies).

Theory of operation
-------------------
A session waits at one question (`session.node`), or is done. An input is
either an answer to that question (typed, or a button that names the
question), or a command (start, restart, back). An accepted answer records
one or more findings, then **every** red-flag rule is evaluated on all the
answers so far (RED-FLAGS.md 1.1):

* an emergency rule ends the interview at once with the emergency outcome;
* the first time an urgent rule fires, the person is told that same-day care
  is needed and that a few more questions check for anything more serious;
* otherwise the flow's `next` branches pick the following node. Information
  nodes are said and passed; questions whose `ask_if` is false are skipped
  (recording their `otherwise` values); checklists with no item left to ask
  are skipped; an outcome node ends the interview.

The final level is the highest of the outcome node's level and every fired
rule: rules only raise it. Input that does not fit the question is re-asked
with a hint and never advances. "Not sure" to a question that could fire an
emergency rule is asked once more with an explanation, and counts as "yes"
if still unsure (RED-FLAGS.md 1.7). Going back removes the last answer and
re-evaluates the rules; if an urgent or emergency message was already shown,
the person first confirms that the earlier answer was a mistake (1.4), and
both answers stay in the append-only log.

Nothing here touches Telegram, SQLite, the clock or randomness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from bot import answers as parse
from bot import conditions, local
from bot import rules as rulebook
from bot.findings import Kind, Value
from bot.flow import Flow, Item, Level, Node, Rule
from bot.session import (
    BACK_NODE,
    Answer,
    Ask,
    Back,
    Choice,
    Escalate,
    Handoff,
    Input,
    LogEntry,
    Mark,
    Outcome,
    Pick,
    PickMany,
    Reply,
    Restart,
    Say,
    Session,
    Start,
    Step,
    Typed,
)

DEFAULT_EMERGENCY_NUMBER = "112"
MAX_REASONS = 3
MAX_LINKS = 3
UNSURE = "not_sure"
NONE = "none"
UNKNOWN = "unknown"


def fill(text: str, **values: str) -> str:
    """Put values into `{name}` slots; never str.format on text a person typed."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


class Engine:
    """The pure interview engine for one flow and one deployment's settings."""

    def __init__(self, flow: Flow, emergency_number: str = DEFAULT_EMERGENCY_NUMBER,
                 emergency_numbers: Mapping[str, str] | None = None,
                 overlay: local.Overlay | None = None):
        self.flow = flow
        self.overlay = overlay or local.NO_OVERLAY  # the deployment's wording (local.yaml)
        self.emergency_number = self.overlay.number("*") or emergency_number
        self.emergency_numbers = {**(emergency_numbers or {}),  # per language, if it differs
                                  **{k: v for k, v in self.overlay.emergency.items() if k != "*"}}
        self._places = {lang: local.places(flow, self.overlay, lang)
                        for lang in (*flow.languages, "en")}
        self._last: tuple[tuple[Answer, ...], dict] = ((), rulebook.values_of(flow, ()))
        self._asks: dict[tuple, Ask] = {}  # bounded by the flow's questions and languages
        self._by_id = {r.id: r for r in flow.rules}
        self._order = {r.id: i for i, r in enumerate(flow.rules)}
        self._readers: dict[str, set[str]] = {}  # finding -> ids of rules that read it
        for rule in flow.rules:
            for finding in conditions.findings_in(rule.when.expr):
                self._readers.setdefault(finding, set()).add(rule.id)

    def _values(self, answers: tuple[Answer, ...]) -> dict:
        """Every finding's value for these answers (read-only; cached for the last answers).

        One step looks at the same answers several times (rules, branches,
        skipped questions); the cache is keyed by identity, so it is exact.
        """
        last_answers, values = self._last
        if answers is not last_answers:
            values = rulebook.values_of(self.flow, answers)
            self._last = (answers, values)
        return values

    def _current(self, s: Session) -> tuple[Rule, ...]:
        """The rules firing now (kept exact in `session.fired` after every answer)."""
        return tuple(self._by_id[rid] for rid in s.fired)

    # ------------------------------------------------------------ entry points

    def start(self, language: str | None = None, carried: tuple[Answer, ...] = (),
              floor: Level | None = None) -> Step:
        """A new interview; one handed over from another flow (`continue_with`) brings
        the answers it `carried` and the level it had reached (`floor`, never lowered).
        Every rule is evaluated on the carried answers at once, before any question: a
        red flag among them ends it, or is announced, straight away."""
        lang = language if language in self.flow.languages else "en"
        session = Session(self.flow.id, self.flow.version, lang,
                          answers=tuple(replace(a, how="handed") for a in carried),
                          floor=floor.id if floor else None)
        replies: list[Reply] = []
        if carried:
            session, stop = self._evaluate(session, replies, [a.finding for a in carried])
            if stop:
                return Step(session, tuple(replies))
        session = self._enter(session, self.flow.start, replies)
        return Step(session, tuple(replies))

    def carries(self, answers: tuple[Answer, ...]) -> tuple[Answer, ...]:
        """What an interview handed over to this flow keeps: what the person said
        (not what another flow assumed, nor "not sure") about findings this flow
        asks or its rules read. Its questions about them are not asked again."""
        used = self.uses
        return tuple(a for a in answers if a.finding in used and
                     a.how in ("answered", "unsure_present", "carried", "handed"))

    @property
    def uses(self) -> frozenset[str]:
        """Every finding this flow asks, or a rule or branch reads."""
        return self.flow.findings_used

    def start_followup(self, earlier: Session, language: str | None = None) -> Step:
        """A check-in: the flow's `followup` questions, with the earlier interview's
        answers kept (age, sex, background...) so that every rule still applies to the
        whole picture; a new answer replaces the earlier one for its finding."""
        if self.flow.followup is None or (earlier.flow_id, earlier.flow_version) != \
                (self.flow.id, self.flow.version):
            return self.start(language or earlier.language)  # nothing to build on: afresh
        lang = language if language in self.flow.languages else earlier.language
        carried = tuple(replace(a, how="carried") for a in earlier.answers)
        fired = tuple(r.id for r in rulebook.fired(self.flow, self._values(carried)))
        session = Session(self.flow.id, self.flow.version, lang, answers=carried, fired=fired,
                          floor=earlier.level)
        replies: list[Reply] = []
        session = self._enter(session, self.flow.followup, replies)
        return Step(session, tuple(replies))

    def handle(self, s: Session, inp: Input) -> Step:
        replies: list[Reply] = []
        if isinstance(inp, Start):
            return self.start(inp.language or s.language)
        if isinstance(inp, Restart):
            step = self.start(s.language)
            fresh = step.session.evolve(log=(*s.log, LogEntry("restart"), *step.session.log))
            return Step(fresh, (Say(self._t("restarted", s)), *step.replies))
        if s.flow_id != self.flow.id or (s.flow_version != self.flow.version and
                                         s.flow_version not in self.flow.continues) or \
                (s.node is not None and s.node not in self.flow.nodes):
            # a session from another flow, or a version this one does not continue: its
            # questions may mean something else now, so start again rather than guess
            step = self.start(s.language)
            return Step(step.session, (Say(self._t("restarted", s)), *step.replies))
        if s.flow_version != self.flow.version:  # declared compatible; validate checked
            s = s.evolve(flow_version=self.flow.version)  # that its node ids kept meaning
        if isinstance(inp, Back):
            return self._back(s)
        if s.confirming_back:
            return self._confirm_back(s, inp)
        if s.status == "done" or s.node is None:
            return Step(s, (Say(self._t("finished", s)),))
        node = self.flow.nodes[s.node]
        if _stale(inp, s):
            return Step(s, (Say(self._t("stale", s)), self._ask(s, node)))
        if s.item >= 0:
            s = self._answer_item(s, node, inp, replies)
        elif node.type == "checklist":
            s = self._answer_checklist(s, node, inp, replies)
        else:
            s = self._answer_question(s, node, inp, replies)
        return Step(s, tuple(replies))

    def current(self, s: Session) -> Ask | None:
        """The question the session waits on, as it was asked (None when done)."""
        if s.confirming_back:
            return self._confirm_ask(s)
        if s.status == "done" or s.node is None or s.node not in self.flow.nodes:
            return None
        return self._ask(s, self.flow.nodes[s.node])

    # ------------------------------------------------------------ answering

    def _answer_question(self, s: Session, node: Node, inp: Input, out: list[Reply]) -> Session:
        lang = s.language
        result: parse.Parsed
        if node.type == "yes_no":
            result = self._yes_no(s, inp)
            if isinstance(result, parse.Unsure):
                return self._not_sure(s, node, node.asks[0], None, out)
            if isinstance(result, parse.Got):
                return self._accept(s, node, [(node.asks[0], result.value, "answered")], out)
        elif node.type == "choice":
            option_id = inp.option if isinstance(inp, Pick) else parse.match_option(
                _text(inp), {o.id: [t for _, t in o.label.by_lang] for o in node.options})
            option = next((o for o in node.options if o.id == option_id), None)
            if option is not None:
                pairs = [(f, v, "answered") for f, v in option.sets]
                return self._accept(s, node, pairs, out)
            result = parse.Invalid("")
        elif node.type == "number":
            f = self.flow.vocabulary[node.asks[0]]
            unknown_label = node.unknown.get(lang) if node.unknown else None
            if isinstance(inp, Pick):
                result = parse.Unsure() if inp.option == UNKNOWN else parse.Invalid("")
            else:
                result = parse.parse_number(_text(inp), f.unit, f.min, f.max, lang, unknown_label)
            if isinstance(result, parse.Unsure):
                return self._accept(s, node, [(f.id, None, "answered")], out)
            if isinstance(result, parse.Got):
                return self._accept(s, node, [(f.id, result.value, "answered")], out)
        else:  # free text, never read by rules
            text = _text(inp).strip()
            if text and len(text) <= node.max_length:
                return self._accept(s, node, [("text:" + node.key, text, "answered")], out)
            result = parse.invalid("text_too_long", high=node.max_length) if text \
                else parse.Invalid("")
        out.append(self._reask(s, node, result))
        return s

    def _yes_no(self, s: Session, inp: Input) -> parse.Parsed:
        """A yes/no/not sure answer from a button, or typed in any of its forms."""
        if isinstance(inp, Pick):
            return {"yes": parse.Got(True), "no": parse.Got(False),
                    UNSURE: parse.Unsure()}.get(inp.option, parse.Invalid(""))
        labels = {self._t("button_yes", s): "yes", self._t("button_no", s): "no",
                  self._t("button_not_sure", s): "unsure"}
        return parse.parse_yes_no(_text(inp), s.language, labels)

    def _answer_checklist(self, s: Session, node: Node, inp: Input, out: list[Reply]) -> Session:
        visible = self._visible(node, s)
        result: parse.Parsed
        if isinstance(inp, PickMany):
            ids = {i.id for i in visible}
            result = parse.Got(inp.options) if set(inp.options) <= ids else \
                parse.invalid("list_changed")
        elif isinstance(inp, Pick):  # items are ticked on the client and sent as PickMany
            result = {NONE: parse.Got(()), UNSURE: parse.Unsure()}.get(
                inp.option, parse.Invalid(""))
        else:
            labels = {i.id: [t for _, t in i.label.by_lang] for i in visible}
            result = parse.parse_checklist(_text(inp), labels, s.language,
                                           self._t("button_none", s))
        if isinstance(result, parse.Unsure) and visible:
            # go through the items one at a time; the list itself is a place to go back to
            hidden = self._hidden(node, s)
            s = s.evolve(marks=(*s.marks, Mark(node.id, -1, len(s.answers))),
                         answers=s.answers + hidden, item=node.items.index(visible[0]))
            s, stop = self._evaluate(s, out, [a.finding for a in hidden])
            if not stop:
                out.append(self._ask(s, node))
            return s
        if isinstance(result, parse.Got):
            ticked = set(result.value)  # type: ignore[arg-type]
            if ticked <= {i.id for i in visible}:
                pairs = self._checklist_values(visible, ticked)
                pairs += [(a.finding, a.value, a.how) for a in self._hidden(node, s)]
                return self._accept(s, node, pairs, out)
            result = parse.Invalid("")
        out.append(self._reask(s, node, result))
        return s

    def _hidden(self, node: Node, s: Session) -> tuple[Answer, ...]:
        """`otherwise` values of checklist items that `ask_if` hides."""
        values = self._values(s.answers)
        return tuple(Answer(node.id, f, v, "assumed") for i in node.items
                     if i.ask_if is not None and not i.ask_if.test(values)
                     for f, v in i.otherwise)

    def _checklist_values(self, visible: list[Item], ticked: set[str]) -> list:
        pairs = []
        for finding in dict.fromkeys(i.finding for i in visible):
            f = self.flow.vocabulary[finding]
            chosen = [i.value for i in visible if i.finding == finding and i.id in ticked]
            if f.kind is Kind.BOOLEAN:
                value: Value = bool(chosen)
            else:
                value = max(chosen, key=f.values.index) if chosen else f.absent
            pairs.append((finding, value, "answered"))
        return pairs

    def _answer_item(self, s: Session, node: Node, inp: Input, out: list[Reply]) -> Session:
        item = node.items[s.item]
        result = self._yes_no(s, inp)
        if isinstance(result, parse.Unsure):
            return self._not_sure(s, node, item.finding, item, out)
        if isinstance(result, parse.Got):
            value = self._item_value(s, node, item, bool(result.value))
            pairs = [] if value is _KEEP else [(item.finding, value, "answered")]
            return self._accept(s, node, pairs, out)
        out.append(self._reask(s, node, result))
        return s

    def _item_value(self, s: Session, node: Node, item: Item, yes: bool) -> object:
        """An item answered on its own; choice items keep the more severe value."""
        f = self.flow.vocabulary[item.finding]
        if f.kind is Kind.BOOLEAN:
            return yes
        earlier = [a.value for a in s.answers if a.node == node.id and a.finding == f.id]
        if not yes:
            return _KEEP if earlier else f.absent
        if earlier and earlier[-1] in f.values and \
                f.values.index(earlier[-1]) > f.values.index(item.value):  # type: ignore[arg-type]
            return _KEEP
        return item.value

    def _not_sure(self, s: Session, node: Node, finding: str, item: Item | None,
                  out: list[Reply]) -> Session:
        """RED-FLAGS.md 1.7: clarify once if 'yes' could mean an emergency."""
        present = item.value if item else True
        values = rulebook.values_of(self.flow, (*s.answers, Answer(node.id, finding, present)))
        dangerous = any(r.level is Level.EMERGENCY for r in rulebook.fired(self.flow, values))
        if dangerous and not s.clarifying:
            s = s.evolve(clarifying=True)
            explain = node.explain.get(s.language) if node.explain and not item else ""
            hint = " ".join(x for x in (self._t("clarify_not_sure", s), explain) if x)
            out.append(self._ask(s, node, hint=hint))
            return s
        if dangerous:
            return self._accept(s, node, [(finding, present, "unsure_present")], out)
        absent = self.flow.vocabulary[finding].absent
        if item and self._item_value(s, node, item, False) is _KEEP:
            return self._accept(s, node, [], out)
        return self._accept(s, node, [(finding, absent, "unsure")], out)

    def _accept(self, s: Session, node: Node, pairs: list, out: list[Reply]) -> Session:
        """Record an accepted answer, evaluate every rule, then move on."""
        mark = Mark(node.id, s.item, len(s.answers))
        before = self._values(s.answers)
        changed = [f for f, v, _ in pairs if before.get(f, v) != v or f not in before]
        s = s.evolve(
            clarifying=False, marks=(*s.marks, mark),
            answers=s.answers + tuple(Answer(node.id, f, v, how) for f, v, how in pairs),
            log=s.log + tuple(LogEntry("answer", node.id, f, v) for f, v, _ in pairs),
        )
        said = len(out)
        s, stop = self._evaluate(s, out, changed)
        if stop:
            return s
        if s.item >= 0:
            later = [k for k, i in enumerate(node.items) if k > s.item and self._shows(i, s)]
            if later:
                s = s.evolve(item=later[0])
                out.append(self._ask(s, node))
                return s
        s = self._enter(s, self._next(node, s), out)
        if s.status == "done":  # the outcome says it all; no "a few more questions" notice
            out[said:] = [r for r in out[said:] if not isinstance(r, Escalate)]
        return s

    def _evaluate(self, s: Session, out: list[Reply], changed: list[str]) -> tuple[Session, bool]:
        """Apply the rules; end at once on emergency; announce urgent once.

        Only rules that read a `changed` finding can change their result, so
        only those are tested again; the others keep their result in
        `session.fired` (a property test checks it always equals a full
        evaluation of every rule).
        """
        values = self._values(s.answers)
        affected = set().union(*(self._readers.get(f, ()) for f in changed))
        now = {rid for rid in s.fired if rid not in affected}
        now.update(rid for rid in affected if self._by_id[rid].when.test(values))
        ids = tuple(sorted(now, key=self._order.__getitem__))
        if ids != s.fired:
            s = s.evolve(fired=ids)
        fired = self._current(s)
        if any(r.level is Level.EMERGENCY for r in fired):
            return self._finish(s, None, fired, values, out), True
        urgent = [] if s.announced else [
            r for r in fired
            if r.level is Level.URGENT and rulebook.settled(self.flow, r, s.answers)]
        if urgent:
            text = fill(self._t("raised_urgent", s), reason=urgent[0].says.get(s.language))
            out.append(Escalate(Level.URGENT, tuple(r.id for r in urgent), text))
            s = s.evolve(announced=tuple(r.id for r in urgent))
        return s, False

    # ------------------------------------------------------------ moving

    def _next(self, node: Node, s: Session) -> str:
        values = self._values(s.answers)
        for branch in node.next:
            if branch.when is None or branch.when.test(values):
                return branch.goto
        return node.next[-1].goto  # the loader makes the last branch unconditional

    def _shows(self, item: Item, s: Session) -> bool:
        return item.ask_if is None or item.ask_if.test(self._values(s.answers))

    def _visible(self, node: Node, s: Session) -> list[Item]:
        values = self._values(s.answers)
        return [i for i in node.items if i.ask_if is None or i.ask_if.test(values)]

    def _enter(self, s: Session, node_id: str, out: list[Reply]) -> Session:
        """Walk from `node_id` to the next question to ask, or to an outcome."""
        for _ in range(len(self.flow.nodes) * 2 + 2):
            node = self.flow.nodes[node_id]
            values = self._values(s.answers)
            if node.type == "info":
                out.append(Say(self._fill(node.text.get(s.language), s.language)))
                if node.handoff:  # it goes on in another flow, at no less than it reached
                    level = rulebook.highest((r.level for r in self._current(s)),
                                             Level.parse(s.floor) if s.floor else
                                             Level.SELF_CARE)
                    out.append(Handoff(node.handoff, level))
                    return s.evolve(status="done", node=None, item=-1, level=level.id)
            elif node.type == "outcome":
                s = self._finish(s, node, self._current(s), values, out)
                if node.handoff:
                    out.append(Handoff(node.handoff, Level.parse(s.level or "self_care")))
                return s
            elif node.asks and s.answers and s.answers[0].how == "handed" and \
                    self._handed(s, node):  # (handed answers come first in a session)
                pass  # answered in the flow that handed over: kept, not asked again
            elif (node.ask_if is not None and not node.ask_if.test(values)) or \
                    (node.type == "checklist" and not self._visible(node, s)):
                assumed = tuple(Answer(node.id, f, v, "assumed") for f, v in node.otherwise)
                if node.type == "checklist":
                    assumed += tuple(Answer(node.id, f, v, "assumed")
                                     for i in node.items for f, v in i.otherwise)
                if assumed:
                    s = s.evolve(answers=s.answers + assumed)
                    s, stop = self._evaluate(s, out, [a.finding for a in assumed])
                    if stop:
                        return s
            else:
                s = s.evolve(node=node.id, item=-1, clarifying=False)
                out.append(self._ask(s, node))
                return s
            node_id = self._next(node, s)
        # Only a flow whose branches loop at run time gets here; the safe
        # answer is to stop asking and give at least same-day advice.
        values = self._values(s.answers)
        fired = rulebook.fired(self.flow, values)
        return self._finish(s, None, fired, values, out, floor=Level.URGENT)

    def _handed(self, s: Session, node: Node) -> bool:
        """Every finding `node` asks came with the interview from another flow."""
        handed = {a.finding for a in s.answers if a.how == "handed"}
        return bool(handed) and all(f in handed for f in node.asks)

    # ------------------------------------------------------------ going back

    def _back(self, s: Session) -> Step:
        if not s.marks:
            replies: list[Reply] = [Say(self._t("back_nothing", s))]
            if s.node:
                replies.append(self._ask(s, self.flow.nodes[s.node]))
            return Step(s, tuple(replies))
        if s.announced or s.level in (Level.EMERGENCY.id, Level.URGENT.id):
            s = s.evolve(confirming_back=True)
            return Step(s, (self._confirm_ask(s),))
        return self._go_back(s)

    def _confirm_ask(self, s: Session) -> Ask:
        options = (Choice("yes", self._t("button_yes", s)), Choice("no", self._t("button_no", s)))
        return Ask(BACK_NODE, "confirm", self._t("back_confirm", s), options=options)

    def _confirm_back(self, s: Session, inp: Input) -> Step:
        if isinstance(inp, Pick) and inp.node == BACK_NODE:
            result = parse.Got(inp.option == "yes")
        elif isinstance(inp, Pick | PickMany):
            return Step(s, (Say(self._t("stale", s)), self._confirm_ask(s)))
        else:
            result = parse.parse_yes_no(_text(inp), s.language)
        if not isinstance(result, parse.Got):
            ask = replace(self._confirm_ask(s), hint=self._t("reask_yes_no", s))
            return Step(s, (ask,))
        s = s.evolve(confirming_back=False)
        if result.value:
            s = s.evolve(log=(*s.log, LogEntry("back_confirmed")))
            return self._go_back(s)
        if s.status == "done" or s.node is None:
            return Step(s, (Say(self._t("finished", s)),))
        return Step(s, (self._ask(s, self.flow.nodes[s.node]),))

    def _go_back(self, s: Session) -> Step:
        mark = s.marks[-1]
        answers = s.answers[: mark.answers_from]
        values = self._values(answers)
        fired = tuple(r.id for r in rulebook.fired(self.flow, values))
        s = s.evolve(
            status="active", level=None, node=mark.node, item=mark.item, clarifying=False,
            answers=answers, marks=s.marks[:-1], fired=fired,
            announced=tuple(r for r in s.announced if r in fired),
            log=(*s.log, LogEntry("back", mark.node)),
        )
        node = self.flow.nodes[mark.node]
        return Step(s, (Say(self._t("back_done", s)), self._ask(s, node)))

    # ------------------------------------------------------------ speaking

    def _t(self, key: str, s: Session) -> str:
        return self._fill(self.flow.text(key, s.language), s.language)

    def number(self, lang: str) -> str:
        """The emergency number to tell someone using this language."""
        return self.emergency_numbers.get(lang, self.emergency_number)

    def place(self, name: str, lang: str) -> str:
        """A local place of the flow as filled for this deployment ('' if unset)."""
        return (self._places.get(lang) or self._places["en"]).get(name, "")

    def _fill(self, text: str, lang: str) -> str:
        """The deployment's local places, then the emergency number."""
        if "{" not in text:
            return text
        places = self._places.get(lang) or self._places["en"]
        return fill(local.fill(text, places), emergency_number=self.number(lang))

    def _reask(self, s: Session, node: Node, result: parse.Parsed) -> Ask:
        """The same question again, saying what is expected (and what was wrong)."""
        kind = "yes_no" if s.item >= 0 else node.type
        reason = result.explain(s.language) if isinstance(result, parse.Invalid) else ""
        hint = " ".join(x for x in (self._t("reask_" + kind, s), reason) if x)
        return self._ask(s, node, hint=hint)

    def _ask(self, s: Session, node: Node, hint: str = "") -> Ask:
        """The question as a reply. Asks that do not depend on answers are built once."""
        key: tuple = (node.id, s.item, s.language)
        if node.type == "checklist" and s.item < 0:  # which items show depends on answers
            key += tuple(i.id for i in self._visible(node, s))
        ask = self._asks.get(key)
        if ask is None:
            ask = self._asks[key] = self._build_ask(s, node, "")
        return replace(ask, hint=hint) if hint else ask

    def _build_ask(self, s: Session, node: Node, hint: str) -> Ask:
        lang = s.language
        t = lambda key: self._t(key, s)  # noqa: E731
        yes_no = (Choice("yes", t("button_yes")), Choice("no", t("button_no")))
        not_sure = Choice(UNSURE, t("button_not_sure"))
        if s.item >= 0:
            label = node.items[s.item].label.get(lang)
            return Ask(node.id, "yes_no", fill(t("item_question"), item=label), yes_no,
                       (not_sure,), item=s.item, hint=hint)
        text = self._fill(node.text.get(lang), lang)
        if node.type == "yes_no":
            return Ask(node.id, "yes_no", text, yes_no, (not_sure,), hint=hint)
        if node.type == "choice":
            options = tuple(Choice(o.id, o.label.get(lang)) for o in node.options)
            return Ask(node.id, "choice", text, options, hint=hint)
        if node.type == "number":
            extra = (Choice(UNKNOWN, node.unknown.get(lang)),) if node.unknown else ()
            return Ask(node.id, "number", text, (), extra, hint=hint)
        if node.type == "checklist":
            items = tuple(Choice(i.id, i.label.get(lang)) for i in self._visible(node, s))
            return Ask(node.id, "checklist", text, items,
                       (Choice(NONE, t("button_none")), not_sure), multi=True, hint=hint)
        return Ask(node.id, "text", text, hint=hint)

    def _finish(self, s: Session, node: Node | None, fired: tuple[Rule, ...], values: dict,
                out: list[Reply], floor: Level = Level.SELF_CARE) -> Session:
        if s.floor:  # a check-in never says less than the advice it follows up
            floor = max(floor, Level.parse(s.floor))
        level = rulebook.highest((r.level for r in fired),
                                 max(floor, node.level if node and node.level else floor))
        out.append(self._outcome(s, level, node, fired, values))
        return s.evolve(status="done", node=None, item=-1, level=level.id,
                       fired=tuple(r.id for r in fired))

    def _outcome(self, s: Session, level: Level, node: Node | None, fired: tuple[Rule, ...],
                 values: dict) -> Outcome:
        lang, flow = s.language, self.flow
        ordered = rulebook.by_urgency(fired)
        reasons = tuple(dict.fromkeys(r.says.get(lang) for r in ordered))[:MAX_REASONS]
        evidence = tuple(rulebook.describe(flow, f, values[f], lang)
                         for f in rulebook.evidence(flow, fired, values))
        link_ids = [lid for r in ordered for lid in r.links]
        link_ids += list(node.links) if node else []
        links = tuple((flow.links[lid].title.get(lang), flow.links[lid].url.get(lang))
                      for lid in dict.fromkeys(link_ids))[:MAX_LINKS]
        links += local.links_for(self.overlay, level, lang)  # the service's own pages
        if level is Level.EMERGENCY:
            advice = self._t("emergency_advice", s)
        else:
            advice = node.advice.get(lang) if node and node.advice and \
                level <= Level.ROUTINE else ""
        notes = []
        unsure = [a.finding for a in s.answers if a.how == "unsure"]
        if unsure:
            names = "; ".join(flow.labels[f].get(lang) if f in flow.labels else f
                              for f in dict.fromkeys(unsure))
            notes.append(fill(self._t("unsure_note", s), items=names))
        age = values.get("age_years")
        if isinstance(age, float) and age < 16:
            notes.append(self._t("child_note", s))
        if self.number(lang) == DEFAULT_EMERGENCY_NUMBER:
            notes.append(self._t("emergency_number_note", s))
        level_text = flow.levels[level]
        return Outcome(
            level=level,
            title=self._fill(level_text.title.get(lang), lang),
            action=self._fill(level_text.action.get(lang), lang),
            reasons=reasons,
            evidence=evidence,
            advice=self._fill(advice, lang),
            links=links,
            safety_net=self._t("safety_net", s) if level < Level.EMERGENCY else "",
            notes=tuple(notes),
            disclaimer=self._t("disclaimer", s),
            rules=tuple(r.id for r in ordered),
        )


def handed_over(engine: Engine, step: Step, engines: Mapping[str, Engine],
                language: str | None = None) -> list[tuple[Engine, Step]]:
    """`step` (of `engine`), then for each `continue_with` in it the flow named, started
    with the findings the two share and at no lower level (its rules run on them at
    once). The loader refuses hand-offs that come back round, so this ends."""
    legs = [(engine, step)]
    for _ in range(len(engines)):
        handoff = next((r for r in legs[-1][1].replies if isinstance(r, Handoff)), None)
        if handoff is None or handoff.flow not in engines:
            break
        target, session = engines[handoff.flow], legs[-1][1].session
        legs.append((target, target.start(language or session.language,
                                          carried=target.carries(session.answers),
                                          floor=handoff.level)))
    return legs


_KEEP = object()  # an item answered "no" must not undo a more severe earlier "yes"


def _stale(inp: Input, s: Session) -> bool:
    """A button from another question, item or interview: never record it as an answer."""
    if isinstance(inp, Pick):
        return inp.node != s.node or inp.item != s.item
    if isinstance(inp, PickMany):
        return inp.node != s.node or s.item >= 0
    return False


def _text(inp: Input) -> str:
    return inp.text if isinstance(inp, Typed) else ""

