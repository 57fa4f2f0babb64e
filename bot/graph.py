"""A flow as a diagram (Mermaid for GitHub, DOT for Graphviz).

Each question shows the findings it asks and which red-flag rules its answers
can fire; branches carry their conditions; skipped-when conditions (`ask_if`)
are shown on the node. The README's diagram is this output (a test checks).
"""

from __future__ import annotations

from bot import conditions
from bot.flow import Flow, Level, Node

LEVEL_CLASS = {Level.EMERGENCY: "em", Level.URGENT: "ur", Level.ROUTINE: "ro",
               Level.SELF_CARE: "sc"}


def rules_at(flow: Flow, node: Node) -> dict[Level, list[str]]:
    """Rules that an answer to `node` can fire (they read a finding it asks)."""
    asked = set(node.asks)
    out: dict[Level, list[str]] = {}
    for rule in flow.rules:
        if asked & conditions.findings_in(rule.when.expr):
            out.setdefault(rule.level, []).append(rule.id)
    return out


def _lines(flow: Flow, node: Node) -> list[str]:
    if node.type == "outcome":
        assert node.level is not None
        return [node.id, f"outcome: {node.level.id} or higher"]
    lines = [node.id if node.type != "info" else f"{node.id} (info)"]
    if node.type == "checklist":
        lines.append(f"checklist of {len(node.items)}")
    elif node.is_question:
        lines.append(f"{node.type}: {', '.join(node.asks)}")
    if node.ask_if:
        lines.append(f"only if {node.ask_if.text}")
    fired = rules_at(flow, node)
    if fired:
        lines.append("can fire " + ", ".join(f"{len(fired[lv])} {lv.id}"
                                             for lv in sorted(fired, reverse=True)))
    return lines


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def mermaid(flow: Flow) -> str:
    out = ["flowchart TD"]
    for node in flow.nodes.values():
        label = "<br/>".join(_mermaid_text(x) for x in _lines(flow, node))
        if node.type == "outcome":
            out.append(f'    {node.id}(["{label}"])')
        elif node.type == "info":
            out.append(f'    {node.id}[/"{label}"/]')
        else:
            out.append(f'    {node.id}["{label}"]')
    for node in flow.nodes.values():
        for branch in node.next:
            if branch.when is None:
                out.append(f"    {node.id} --> {branch.goto}")
            else:
                out.append(f'    {node.id} -- "{_mermaid_text(branch.when.text)}" --> '
                           f"{branch.goto}")
    stops = [n.id for n in flow.nodes.values() if Level.EMERGENCY in rules_at(flow, n)]
    if stops:  # an emergency rule ends the interview wherever it fires
        out.append('    EMERGENCY{{"emergency rule fired:<br/>stop, call the emergency number"}}')
        out.extend(f"    {nid} -.-> EMERGENCY" for nid in stops)
        out.append("    class EMERGENCY em")
    out.append("    classDef em stroke:#c00,stroke-width:3px")
    out.append("    classDef ur stroke:#e80,stroke-width:2px")
    out.append("    classDef outcome fill:#eef")
    for node in flow.nodes.values():
        fired = rules_at(flow, node)
        if node.type == "outcome":
            out.append(f"    class {node.id} outcome")
        elif fired:
            out.append(f"    class {node.id} {LEVEL_CLASS[max(fired)]}")
    return "\n".join(out) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dot(flow: Flow) -> str:
    out = [f'digraph "{flow.id}" {{', "  rankdir=TB;", '  node [fontname="Helvetica"];']
    colors = {Level.EMERGENCY: "red", Level.URGENT: "orange", Level.ROUTINE: "blue",
              Level.SELF_CARE: "darkgreen"}
    for node in flow.nodes.values():
        label = "\\n".join(_dot_text(x) for x in _lines(flow, node))
        fired = rules_at(flow, node)
        every = ", ".join(r for ids in fired.values() for r in ids)
        shape = {"outcome": "box, style=rounded", "info": "note"}.get(node.type, "box")
        color = colors[max(fired)] if fired else "black"
        out.append(f'  {node.id} [label="{label}", shape={shape}, color={color}, '
                   f'tooltip="{_dot_text(every)}"];')
    for node in flow.nodes.values():
        for branch in node.next:
            label = f' [label="{_dot_text(branch.when.text)}"]' if branch.when else ""
            out.append(f"  {node.id} -> {branch.goto}{label};")
    out.append("}")
    return "\n".join(out) + "\n"
