"""The condition language of flows: small, typed, checked at load, never eval'd.

Conditions are written the way RED-FLAGS.md writes its rules, so a clinician
can compare the two side by side::

    fever AND (neck_stiffness OR (headache AND light_sensitivity))
    age_years >= 60 AND sudden_severe_onset
    back_pain_location in [middle, upper]
    NOT known(temperature_c) OR temperature_c < 39.5

Grammar (keywords are case-insensitive)::

    expr    := and ( OR and )*
    and     := unary ( AND unary )*
    unary   := NOT unary | atom
    atom    := '(' expr ')' | known '(' NAME ')' | NAME [ op value | in '[' value, ... ']' ]
    op      := == | != | < | <= | > | >=

A bare NAME is a boolean finding or a derived term (`terms:` in the flow).
Numbers compare with numbers; a comparison with an unknown number is false.
Choices compare with `==`, `!=` or `in` against their listed values.

Three things happen to a condition: `parse` (text -> tree, with positions),
`check` (names, types and values against the vocabulary; comparisons that can
never be true), and `compile` (tree -> a fast closure over a dict of values).
`satisfiable` answers "can this ever be true?" for dead-rule checks and for the
test that a flow asks every finding that could still raise the level.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from bot.findings import Kind, Value, Vocabulary

# ---------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Known:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    name: str
    op: str
    value: float | str
    pos: int


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    values: tuple[str, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    expr: Expr


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Expr, ...]


Expr = Var | Known | Compare | Member | Not | All | AnyOf


class ConditionError(Exception):
    """A mistake in a condition: `pos` is the 0-based offset in the text."""

    def __init__(self, what: str, pos: int, fix: str = ""):
        super().__init__(what)
        self.what, self.pos, self.fix = what, pos, fix


# ---------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|<|>)|(?P<punct>[()\[\],]))"
)
_KEYWORDS = {"and", "or", "not", "in", "known", "true", "false"}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].lstrip()
            at = len(text) - len(bad)
            fix = "use AND / OR / NOT and == != < <= > >=" if bad[:1] in "&|=!" else \
                "names are letters, digits and _"
            raise ConditionError(f"unexpected '{bad[:10]}'", at, fix)
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        out.append((kind, value, start))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, value: str, fix: str) -> None:
        _kind, got, pos = self.take()
        if got != value:
            shown = got or "the end"
            raise ConditionError(f"expected '{value}' but found '{shown}'", pos, fix)

    def parse(self) -> Expr:
        if self.peek()[0] == "end":
            raise ConditionError("empty condition", 0,
                                 "write a condition, e.g. `fever AND back_pain`")
        expr = self.or_()
        kind, value, pos = self.peek()
        if kind != "end":
            raise ConditionError(f"unexpected '{value}'", pos,
                                 "join conditions with AND or OR, and balance the brackets")
        return expr

    def or_(self) -> Expr:
        items = [self.and_()]
        while self.peek()[:2] == ("kw", "or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else AnyOf(tuple(items))

    def and_(self) -> Expr:
        items = [self.unary()]
        while self.peek()[:2] == ("kw", "and"):
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else All(tuple(items))

    def unary(self) -> Expr:
        if self.peek()[:2] == ("kw", "not"):
            self.take()
            return Not(self.unary())
        return self.atom()

    def atom(self) -> Expr:
        kind, value, pos = self.take()
        if (kind, value) == ("punct", "("):
            expr = self.or_()
            self.expect(")", "close every '(' with ')'")
            return expr
        if (kind, value) == ("kw", "known"):
            self.expect("(", "write known(finding), e.g. known(temperature_c)")
            nkind, name, npos = self.take()
            if nkind != "name":
                raise ConditionError("known() needs a finding name", npos,
                                     "e.g. known(temperature_c)")
            self.expect(")", "close known( with )")
            return Known(name, npos)
        if kind != "name":
            shown = value or "the end"
            raise ConditionError(f"expected a finding or term name, found '{shown}'", pos,
                                 "e.g. `fever`, `age_years >= 65`, `sex == female`")
        nkind, nvalue, _ = self.peek()
        if nkind == "op":
            self.take()
            return Compare(value, nvalue, self.value(), pos)
        if (nkind, nvalue) == ("kw", "in"):
            self.take()
            self.expect("[", "list the values in brackets: in [middle, upper]")
            values = [self.value()]
            while self.peek()[1] == ",":
                self.take()
                values.append(self.value())
            self.expect("]", "close the list with ]")
            if not all(isinstance(v, str) for v in values):
                raise ConditionError("`in [...]` takes choice values", pos,
                                     "compare numbers with < <= > >=")
            return Member(value, tuple(str(v) for v in values), pos)
        return Var(value, pos)

    def value(self) -> float | str:
        kind, value, pos = self.take()
        if kind == "num":
            return float(value)
        if kind == "name":
            return value
        if kind == "kw" and value in ("true", "false"):
            raise ConditionError("booleans are written bare", pos,
                                 "write `chest_pain` or `NOT chest_pain`, not `== true`")
        raise ConditionError(f"expected a value, found '{value or 'the end'}'", pos,
                             "e.g. 38.0, both_legs")


def parse(text: str) -> Expr:
    """Text -> tree, or `ConditionError` with the position of the mistake."""
    return _Parser(text).parse()


# ---------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class Scope:
    """What names a condition may use: the vocabulary plus derived terms."""

    vocabulary: Vocabulary
    terms: Mapping[str, Expr]

    def names(self) -> list[str]:
        return [*self.vocabulary.findings, *self.terms]


def _unknown_name(name: str, pos: int, scope: Scope) -> ConditionError:
    close = difflib.get_close_matches(name, scope.names(), n=1)
    fix = f"did you mean '{close[0]}'?" if close else \
        "use a finding id from FINDINGS.yaml or a term defined under `terms:`"
    return ConditionError(f"unknown finding or term '{name}'", pos, fix)


def check(expr: Expr, scope: Scope) -> list[ConditionError]:
    """Every type and value mistake in `expr` (an empty list when it is sound)."""
    errors: list[ConditionError] = []
    voc = scope.vocabulary
    for atom in atoms(expr):
        name = atom.name
        if name not in voc and name not in scope.terms:
            errors.append(_unknown_name(name, atom.pos, scope))
            continue
        if isinstance(atom, Var):
            if name in voc and voc[name].kind is not Kind.BOOLEAN:
                f = voc[name]
                example = f"{name} >= {_fmt(f.min)}" if f.kind is Kind.NUMBER else \
                    f"{name} == {f.values[0]}"
                errors.append(ConditionError(f"'{name}' is a {f.kind}, not yes/no", atom.pos,
                                             f"compare it, e.g. `{example}`"))
            continue
        if name in scope.terms:
            errors.append(ConditionError(f"'{name}' is a yes/no term", atom.pos,
                                         f"write `{name}` or `NOT {name}` without a comparison"))
            continue
        f = voc[name]
        if isinstance(atom, Known):
            if f.kind is not Kind.NUMBER:
                errors.append(ConditionError(f"known() is for numbers; '{name}' is a {f.kind}",
                                             atom.pos, "compare the value instead"))
            continue
        if f.kind is Kind.BOOLEAN:
            errors.append(ConditionError(f"'{name}' is yes/no and cannot be compared", atom.pos,
                                         f"write `{name}` or `NOT {name}`"))
            continue
        values = atom.values if isinstance(atom, Member) else (atom.value,)
        if f.kind is Kind.CHOICE:
            if isinstance(atom, Compare) and atom.op not in ("==", "!="):
                errors.append(ConditionError(f"'{name}' is a choice: use == != or in", atom.pos,
                                             f"e.g. `{name} == {f.values[0]}`"))
            for v in values:
                if v not in f.values:
                    close = difflib.get_close_matches(str(v), f.values, n=1)
                    hint = f"did you mean '{close[0]}'?" if close else \
                        f"use one of: {', '.join(f.values)}"
                    errors.append(ConditionError(f"'{v}' is not a value of '{name}'",
                                                 atom.pos, hint))
            continue
        # number
        if isinstance(atom, Member) or not isinstance(atom.value, float):
            errors.append(ConditionError(f"'{name}' is a number: compare it with a number",
                                         atom.pos, f"e.g. `{name} >= {_fmt(f.min)}`"))
            continue
        if not _can_be_true(atom.op, atom.value, f.min, f.max):
            errors.append(ConditionError(
                f"`{name} {atom.op} {_fmt(atom.value)}` can never be true: {name} is "
                f"between {_fmt(f.min)} and {_fmt(f.max)} {f.unit or ''}".rstrip(),
                atom.pos, "check the threshold and the unit"))
    return errors


def _fmt(x: float | None) -> str:
    if x is None:
        return "?"
    return str(int(x)) if float(x).is_integer() else str(x)


def _can_be_true(op: str, c: float, lo: float | None, hi: float | None) -> bool:
    lo = float("-inf") if lo is None else lo
    hi = float("inf") if hi is None else hi
    return {
        "<": c > lo, "<=": c >= lo, ">": c < hi, ">=": c <= hi,
        "==": lo <= c <= hi, "!=": True,
    }[op]


def atoms(expr: Expr) -> Iterator[Var | Known | Compare | Member]:
    if isinstance(expr, Not):
        yield from atoms(expr.expr)
    elif isinstance(expr, All | AnyOf):
        for item in expr.items:
            yield from atoms(item)
    else:
        yield expr


def nodes(expr: Expr) -> Iterator[Expr]:
    """Every node of the tree, the root first."""
    yield expr
    if isinstance(expr, Not):
        yield from nodes(expr.expr)
    elif isinstance(expr, All | AnyOf):
        for item in expr.items:
            yield from nodes(item)


def expand(expr: Expr, terms: Mapping[str, Expr]) -> Expr:
    """Replace every term by its definition, so only findings remain."""
    if isinstance(expr, Var) and expr.name in terms:
        return expand(terms[expr.name], terms)
    if isinstance(expr, Not):
        return Not(expand(expr.expr, terms))
    if isinstance(expr, All):
        return All(tuple(expand(i, terms) for i in expr.items))
    if isinstance(expr, AnyOf):
        return AnyOf(tuple(expand(i, terms) for i in expr.items))
    return expr


def findings_in(expr: Expr) -> set[str]:
    """Finding ids read by an expanded expression."""
    return {a.name for a in atoms(expr)}


# ---------------------------------------------------------------- evaluating

Values = Mapping[str, Value]
Predicate = Callable[[Values], bool]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


def compile_expr(expr: Expr) -> Predicate:
    """An expanded tree -> a closure over a complete dict of finding values."""
    if isinstance(expr, Var):
        name = expr.name
        return lambda v: v[name] is True
    if isinstance(expr, Known):
        name = expr.name
        return lambda v: v[name] is not None
    if isinstance(expr, Compare):
        name, value, op = expr.name, expr.value, _OPS[expr.op]
        if isinstance(value, str):
            return (lambda v: v[name] == value) if expr.op == "==" else \
                (lambda v: v[name] != value)

        def compare(v: Values) -> bool:
            x = v[name]
            return x is not None and op(x, value)
        return compare
    if isinstance(expr, Member):
        name, allowed = expr.name, frozenset(expr.values)
        return lambda v: v[name] in allowed
    if isinstance(expr, Not):
        inner = compile_expr(expr.expr)
        return lambda v: not inner(v)
    parts = tuple(compile_expr(i) for i in expr.items)
    if isinstance(expr, All):
        return _all_of(parts)
    return _any_of(parts)


def _all_of(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 2:
        a, b = parts
        return lambda v: a(v) and b(v)
    if len(parts) == 3:
        a, b, c = parts
        return lambda v: a(v) and b(v) and c(v)

    def every(v: Values) -> bool:  # a loop: faster than all() over a generator
        for p in parts:  # noqa: SIM110
            if not p(v):
                return False
        return True
    return every


def _any_of(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 2:
        a, b = parts
        return lambda v: a(v) or b(v)
    if len(parts) == 3:
        a, b, c = parts
        return lambda v: a(v) or b(v) or c(v)

    def some(v: Values) -> bool:
        for p in parts:  # noqa: SIM110
            if p(v):
                return True
        return False
    return some


def evaluate(expr: Expr, values: Values) -> bool:
    return compile_expr(expr)(values)


def evidence(expr: Expr, values: Values) -> list[str]:
    """The findings whose values make `expr` true, in reading order.

    Used for "because you told me: ...": only atoms that are true and not
    under a NOT count, since "you do not have X" never raised a level.
    """
    out: list[str] = []

    def walk(e: Expr, negated: bool) -> bool:
        if isinstance(e, Not):
            return not walk(e.expr, not negated)
        if isinstance(e, All | AnyOf):
            results = [walk(i, negated) for i in e.items]
            return all(results) if isinstance(e, All) else any(results)
        ok = compile_expr(e)(values)
        if ok and not negated and not isinstance(e, Known) and e.name not in out:
            out.append(e.name)
        return ok

    if walk(expr, False):
        return out
    return []


# ---------------------------------------------------------------- satisfiability


@dataclass(frozen=True, slots=True)
class Span:
    lo: float
    lo_in: bool
    hi: float
    hi_in: bool

    def empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and not (self.lo_in and self.hi_in))


@dataclass(frozen=True, slots=True)
class NumDomain:
    """The values a number may still take: unknown, and/or a union of spans."""

    unknown: bool
    spans: tuple[Span, ...]

    def empty(self) -> bool:
        return not self.unknown and not self.spans

    def meet(self, other: NumDomain) -> NumDomain:
        spans = []
        for a in self.spans:
            for b in other.spans:
                lo, lo_in = max((a.lo, a.lo_in), (b.lo, b.lo_in), key=lambda t: (t[0], not t[1]))
                hi, hi_in = min((a.hi, a.hi_in), (b.hi, b.hi_in), key=lambda t: (t[0], t[1]))
                s = Span(lo, lo_in, hi, hi_in)
                if not s.empty():
                    spans.append(s)
        return NumDomain(self.unknown and other.unknown, tuple(spans))


Domain = frozenset | NumDomain  # set of allowed values for booleans/choices
INF = float("inf")


def _literal(atom: Expr, negated: bool, voc: Vocabulary) -> tuple[str, Domain]:
    """The domain an atom (or its negation) allows for its finding."""
    name = atom.name  # type: ignore[union-attr]
    f = voc[name]
    if f.kind is Kind.BOOLEAN:
        return name, frozenset({negated is False})
    if f.kind is Kind.CHOICE:
        every = frozenset((*f.values, None))
        if isinstance(atom, Member):
            allowed = frozenset(atom.values)
        elif atom.op == "==":  # type: ignore[union-attr]
            allowed = frozenset({atom.value})  # type: ignore[union-attr]
        else:
            allowed = every - {atom.value}  # type: ignore[union-attr]
        return name, (every - allowed) if negated else allowed
    everything = Span(-INF, True, INF, True)
    if isinstance(atom, Known):
        return name, NumDomain(negated, () if negated else (everything,))
    c, op = float(atom.value), atom.op  # type: ignore[union-attr]
    spans = {
        "<": (Span(-INF, True, c, False),), "<=": (Span(-INF, True, c, True),),
        ">": (Span(c, False, INF, True),), ">=": (Span(c, True, INF, True),),
        "==": (Span(c, True, c, True),),
        "!=": (Span(-INF, True, c, False), Span(c, False, INF, True)),
    }
    opposite = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
    if negated:  # NOT (x < c) is true for x >= c *and* for unknown x
        return name, NumDomain(True, spans[opposite[op]])
    return name, NumDomain(False, spans[op])


def _dnf(expr: Expr, negated: bool, voc: Vocabulary, limit: int) -> list[list[tuple[str, Domain]]]:
    if isinstance(expr, Not):
        return _dnf(expr.expr, not negated, voc, limit)
    if isinstance(expr, All | AnyOf):
        conj = isinstance(expr, All) != negated
        parts = [_dnf(i, negated, voc, limit) for i in expr.items]
        if not conj:
            return [c for p in parts for c in p]
        out: list[list[tuple[str, Domain]]] = [[]]
        for p in parts:
            out = [a + b for a in out for b in p]
            if len(out) > limit:
                raise OverflowError
        return out
    return [[_literal(expr, negated, voc)]]


def satisfiable(expr: Expr, voc: Vocabulary, fixed: Mapping[str, Domain] | None = None,
                limit: int = 20000) -> bool:
    """Could the expanded `expr` be true for some values of its findings?

    `fixed` narrows findings (e.g. to what was answered, or to their absent
    value when no question asks them). Numbers range over the vocabulary's
    min..max or unknown. Errs towards True when the search is too large.
    """
    conjunctions = dnf(expr, voc, limit)
    return True if conjunctions is None else consistent(conjunctions, voc, fixed)


Conjunction = list[tuple[str, Domain]]


def dnf(expr: Expr, voc: Vocabulary, limit: int = 20000) -> list[Conjunction] | None:
    """`expr` as an OR of ANDs of per-finding domains; None when too large to expand."""
    try:
        return _dnf(expr, False, voc, limit)
    except OverflowError:
        return None


def consistent(conjunctions: list[Conjunction], voc: Vocabulary,
               fixed: Mapping[str, Domain] | None = None) -> bool:
    """Can some conjunction hold, given the `fixed` domains? (see `satisfiable`)"""
    fixed = fixed or {}
    for conj in conjunctions:
        domains: dict[str, Domain] = {}
        ok = True
        for name, dom in conj:
            current = domains.get(name)
            if current is None:
                current = fixed.get(name) or _full(name, voc)
            current = current.meet(dom) if isinstance(current, NumDomain) else current & dom
            domains[name] = current
            if (current.empty() if isinstance(current, NumDomain) else not current):
                ok = False
                break
        if ok:
            return True
    return False


def _full(name: str, voc: Vocabulary) -> Domain:
    f = voc[name]
    if f.kind is Kind.BOOLEAN:
        return frozenset({True, False})
    if f.kind is Kind.CHOICE:
        return frozenset((*f.values, None))
    lo = -INF if f.min is None else f.min
    hi = INF if f.max is None else f.max
    return NumDomain(True, (Span(lo, True, hi, True),))


def exactly(value: Value, kind: Kind) -> Domain:
    """The domain holding just one value (an answer, or an absent finding)."""
    if kind is Kind.NUMBER:
        if value is None:
            return NumDomain(True, ())
        return NumDomain(False, (Span(float(value), True, float(value), True),))  # type: ignore[arg-type]
    return frozenset({value})
