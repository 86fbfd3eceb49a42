"""Mermaid text of a flow's DAG, from its manifest (what the dashboard shows and copies)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["to_mermaid"]

_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;", "#": "#35;", "\n": " "}


def _text(value: str) -> str:
    """``value`` made safe inside a quoted Mermaid label (entity codes, one line)."""
    return "".join(_ESCAPES.get(c, c) for c in value)


def _edge_label(entry: Any) -> str:
    if isinstance(entry, Mapping):
        statuses, when = list(entry.get("statuses") or []), entry.get("when")
    else:
        statuses, when = list(entry or []), None
    label = ", ".join(str(s) for s in statuses) or "any"
    if when:
        label += f" if {when}"
    return _text(label)


def _steps(steps: Mapping[str, Any], ids: dict[str, str], prefix: str, indent: str, lines: list[str]) -> None:
    for key, step in steps.items():
        node = ids[prefix + key]
        label = f"{_text(key)}<br/><small>{_text(str(step.get('type', '')))}</small>"
        children = step.get("steps") if step.get("type") == "ForEach" else None
        if children:
            lines.append(f'{indent}subgraph {node}["{label}"]')
            _steps(children, ids, f"{prefix}{key}.", indent + "    ", lines)
            lines.append(f"{indent}end")
        else:
            lines.append(f'{indent}{node}["{label}"]')
    for key, step in steps.items():
        for pred, entry in (step.get("run_after") or {}).items():
            if prefix + pred in ids:
                lines.append(f"{indent}{ids[prefix + pred]} -->|\"{_edge_label(entry)}\"| {ids[prefix + key]}")


def _number(steps: Mapping[str, Any], prefix: str, ids: dict[str, str]) -> None:
    for key, step in steps.items():
        ids[prefix + key] = f"s{len(ids)}"
        if step.get("type") == "ForEach" and step.get("steps"):
            _number(step["steps"], f"{prefix}{key}.", ids)


def to_mermaid(manifest: Mapping[str, Any]) -> str:
    """A ``flowchart TD`` of the manifest's steps: one node per step (key and type), one edge per
    ``run_after`` entry labelled with the statuses it accepts (``any`` for every final status) and its
    condition; a ForEach is a subgraph of its children. Node ids are generated (``s0``, ``s1``, ...),
    so any step key is safe; labels are escaped with Mermaid entity codes.
    """
    steps: Mapping[str, Any] = manifest.get("steps") or {}
    ids: dict[str, str] = {}
    _number(steps, "", ids)
    lines = ["flowchart TD"]
    _steps(steps, ids, "", "    ", lines)
    return "\n".join(lines) + "\n"
