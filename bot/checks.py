"""Whole-flow checks: reachability, a way out of every node, conditions that can
never be true. Each returns (path, what is wrong, how to fix it) for the loader
to place at a line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from bot import conditions as cond
from bot.findings import Vocabulary
from bot.flow import Node, Rule

Found = list[tuple[tuple, str, str]]


def graph(nodes: dict[str, Node], start: str, *more_starts: str) -> Found:
    """Unreachable nodes (from `start` or any of `more_starts`), and nodes from which no
    outcome can be reached."""
    found: Found = []
    reachable: set[str] = set()
    for root in (start, *more_starts):
        reachable |= _reach(root, lambda n: nodes[n].targets() if n in nodes else ())
    for nid in nodes:
        if nid not in reachable:
            found.append((("nodes", nid), f"node '{nid}' can never be reached",
                          f"point a `next` at it, or remove it (start is '{start}')"))
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes.values():
        for t in node.targets():
            if t in preds:
                preds[t].append(node.id)
    outcomes = [n for n, node in nodes.items() if node.ends]
    if not outcomes:
        return [*found, (("nodes",), "the flow has no outcome node",
                         "add a node with `type: outcome`")]
    finishing: set[str] = set()
    for o in outcomes:
        finishing |= _reach(o, lambda n: preds.get(n, ()))
    for nid in nodes:
        if nid in reachable and nid not in finishing:
            cyclic = nid in _reach_strict(nid, lambda n: nodes[n].targets() if n in nodes else ())
            what = "is on a loop with no way out" if cyclic else "leads to no outcome"
            found.append((("nodes", nid), f"node '{nid}' {what}",
                          "give it a `next` that ends at an outcome node"))
    return found


def dead_conditions(voc: Vocabulary, rules: tuple[Rule, ...], nodes: dict[str, Node],
                    asked: set[str]) -> Found:
    """Rules or branches that no answer to this flow's questions can make true."""
    found: Found = []
    fixed = {f.id: cond.exactly(f.absent, f.kind)
             for f in voc.findings.values() if f.id not in asked}
    for i, rule in enumerate(rules):
        if not cond.satisfiable(rule.when.expr, voc, fixed):
            missing = sorted(cond.findings_in(rule.when.expr) - asked)
            why = f"; no question asks {', '.join(missing)}" if missing else ""
            found.append((("rules", i, "when"), f"rule '{rule.id}' can never fire{why}",
                          "ask the findings it needs, or fix the condition"))
    for node in nodes.values():
        conditions = [(("nodes", node.id, "next", i, "if"), b.when)
                      for i, b in enumerate(node.next) if b.when]
        if node.ask_if:
            conditions.append((("nodes", node.id, "ask_if"), node.ask_if))
        conditions += [(("nodes", node.id, "items", i, "ask_if"), item.ask_if)
                       for i, item in enumerate(node.items) if item.ask_if]
        for path, c in conditions:
            if not cond.satisfiable(c.expr, voc, fixed):
                found.append((path, f"condition `{c.text}` can never be true",
                              "check the values and that the findings are asked"))
    return found


Edges = Callable[[str], Iterable[str]]


def _reach(start: str, edges: Edges) -> set[str]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in edges(todo.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _reach_strict(start: str, edges: Edges) -> set[str]:
    """Nodes reachable in one or more steps (so `start` is in it only on a cycle)."""
    seen: set[str] = set()
    todo = deque(edges(start))
    while todo:
        n = todo.popleft()
        if n not in seen:
            seen.add(n)
            todo.extend(edges(n))
    return seen
