"""Flow definitions: :class:`Flow`, :class:`Step` and the trigger kinds.

A flow is plain data. ``Orchestrator.register`` validates it (every problem
at once, see :func:`validate_flows`) and compiles it into a
:class:`CompiledFlow` whose JSON *manifest* is what each run pins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from ._status import FINAL_STEP_STATUSES, StepStatus
from .exceptions import Problem
from .expressions import InputTemplate, compile_inputs
from .planner import Graph

__all__ = ["CompiledFlow", "Cron", "Flow", "Manual", "Step", "Trigger", "Webhook", "validate_flows"]


@dataclass(frozen=True, slots=True)
class Manual:
    """Started by a call: ``orchestrator.trigger``, the CLI or the API."""

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": "manual"}


@dataclass(frozen=True, slots=True)
class Cron:
    """Started on a schedule, e.g. ``Cron("0 2 * * *")`` or ``Cron("*/5 * * * *", timezone="Europe/Paris")``."""

    expression: str
    timezone: str | None = None

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": "cron", "expression": self.expression, "timezone": self.timezone}


@dataclass(frozen=True, slots=True)
class Webhook:
    """Started by an HTTP POST to ``/webhook/{slug}``; ``secret`` is never stored or shown."""

    slug: str
    secret: str | None = field(default=None, repr=False)

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": "webhook", "slug": self.slug, "signed": self.secret is not None}


Trigger = Manual | Cron | Webhook


@dataclass(frozen=True, slots=True)
class Step:
    """One node of a flow.

    ``type`` names a handler registered with ``@orchestrator.handler(type)``.
    ``inputs`` may hold literals and ``@`` expressions at any depth.
    ``run_after`` maps each predecessor's key to the statuses this step
    accepts from it; an empty list means any final status. No ``run_after``
    makes an entry step.
    """

    type: str
    inputs: Any = None
    run_after: Mapping[str, Sequence[StepStatus | str]] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Flow:
    """A named DAG of steps with the triggers that start it."""

    id: str
    steps: Mapping[str, Step]
    triggers: Mapping[str, Trigger] = field(default_factory=lambda: {"manual": Manual()})
    version: str = "1"
    description: str | None = None
    enabled: bool = True

    def to_manifest(self) -> dict[str, Any]:
        """The JSON-able definition a run pins (secrets left out)."""
        return {
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "triggers": {name: t.to_manifest() for name, t in self.triggers.items()},
            "steps": {
                key: {
                    "type": s.type,
                    "inputs": s.inputs,
                    "run_after": {p: [str(_status(x)) for x in v] for p, v in s.run_after.items()},
                    "description": s.description,
                }
                for key, s in self.steps.items()
            },
        }


def _status(value: StepStatus | str) -> StepStatus:
    if isinstance(value, StepStatus):
        return value
    for st in StepStatus:
        if st.value.lower() == str(value).lower():
            return st
    raise ValueError(value)


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    """A validated flow, ready to run: its manifest, graph and parsed inputs."""

    flow_id: str
    manifest: dict[str, Any]
    manifest_id: str
    graph: Graph
    step_types: Mapping[str, str]
    templates: Mapping[str, InputTemplate]
    waiting: tuple[int, ...]
    """Predecessor count of each step, in ``graph.order``."""
    wants: Mapping[str, tuple[str, ...]]
    """For each step, the steps whose outputs its inputs read."""

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> CompiledFlow:
        """Compile a manifest; raise ValueError if it is not valid (validate flows first)."""
        steps: Mapping[str, Any] = manifest["steps"]
        preds = {
            key: {p: frozenset(_status(x) for x in v) for p, v in (s.get("run_after") or {}).items()}
            for key, s in steps.items()
        }
        templates: dict[str, InputTemplate] = {}
        for key, s in steps.items():
            template, problems = compile_inputs(s.get("inputs"), "inputs")
            if problems:
                raise ValueError(f"step {key!r}: {problems[0][1]}")
            templates[key] = template
        canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
        graph = Graph.build(preds)
        return cls(
            flow_id=str(manifest["id"]),
            manifest=dict(manifest),
            manifest_id=hashlib.sha256(canonical.encode()).hexdigest()[:32],
            graph=graph,
            step_types={key: str(s["type"]) for key, s in steps.items()},
            templates=templates,
            waiting=tuple(len(graph.preds[k]) for k in graph.order),
            wants={k: tuple(sorted(t.step_refs)) for k, t in templates.items()},
        )


def validate_flows(
    flows: Sequence[Flow],
    handler_types: Collection[str],
    other_webhooks: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem with ``flows``; an empty list means they may be registered.

    ``handler_types`` are the registered handler names (plus built-in types);
    ``other_webhooks`` maps webhook slugs already taken to their flow ids.
    """
    problems: list[Problem] = []
    slugs: dict[str, str] = dict(other_webhooks or {})
    seen_ids: set[str] = set()
    for flow in flows:
        fid = flow.id if isinstance(flow.id, str) else repr(flow.id)
        problems.extend(_validate_one(flow, fid, handler_types))
        if fid in seen_ids:
            problems.append(Problem(fid, "the same flow id is registered twice"))
        seen_ids.add(fid)
        own: dict[str, str] = {}
        for name, trig in flow.triggers.items():
            if isinstance(trig, Webhook):
                owner = slugs.get(trig.slug)
                if owner is not None and owner != fid:
                    problems.append(
                        Problem(fid, f"webhook slug {trig.slug!r} is already used by flow {owner!r}", field=f"triggers.{name}")
                    )
                if trig.slug in own:
                    problems.append(
                        Problem(fid, f"webhook slug {trig.slug!r} is also used by trigger {own[trig.slug]!r}", field=f"triggers.{name}")
                    )
                own[trig.slug] = name
                slugs[trig.slug] = fid
    return problems


def _validate_one(flow: Flow, fid: str, handler_types: Collection[str]) -> list[Problem]:
    out: list[Problem] = []
    if not isinstance(flow.id, str) or not flow.id.strip():
        out.append(Problem(fid, "the flow id must be a non-empty string", field="id"))
    if not flow.steps:
        out.append(Problem(fid, "a flow needs at least one step", field="steps"))
    for name, trig in flow.triggers.items():
        where = f"triggers.{name}"
        if isinstance(trig, Cron):
            if not croniter.is_valid(trig.expression):
                out.append(Problem(fid, f"invalid cron expression {trig.expression!r}", field=where))
            if trig.timezone is not None:
                try:
                    from zoneinfo import ZoneInfo

                    ZoneInfo(trig.timezone)
                except Exception:
                    out.append(Problem(fid, f"unknown time zone {trig.timezone!r}", field=where))
        elif isinstance(trig, Webhook):
            if not trig.slug or not all(c.isalnum() or c in "-_." for c in trig.slug):
                msg = f"webhook slug {trig.slug!r} must be non-empty letters, digits, '-', '_' or '.'"
                out.append(Problem(fid, msg, field=where))
        elif not isinstance(trig, Manual):
            out.append(Problem(fid, f"{type(trig).__name__} is not a trigger (use Manual, Cron or Webhook)", field=where))
    preds: dict[str, dict[str, frozenset[StepStatus]]] = {}
    for key, step in flow.steps.items():
        if not isinstance(step, Step):
            out.append(Problem(fid, f"expected a Step, got {type(step).__name__}", step=str(key)))
            continue
        if not key or "." in key:
            out.append(Problem(fid, "a step key must be non-empty and contain no '.'", step=key))
        if step.type not in handler_types:
            out.append(Problem(fid, f"no handler is registered for type {step.type!r}", step=key, field="type"))
        preds[key] = {}
        run_after = step.run_after if isinstance(step.run_after, Mapping) else {}
        if run_after is not step.run_after:
            out.append(Problem(fid, "run_after must map step keys to lists of statuses", step=key, field="run_after"))
        for pred, allowed in run_after.items():
            if pred not in flow.steps:
                out.append(Problem(fid, f"run_after names unknown step {pred!r}", step=key, field="run_after"))
                continue
            if pred == key:
                out.append(Problem(fid, "a step cannot run after itself", step=key, field="run_after"))
                continue
            if isinstance(allowed, str) or not isinstance(allowed, Collection):
                what = "a string" if isinstance(allowed, str) else type(allowed).__name__
                msg = f"run_after[{pred!r}] must be a list of statuses, not {what}"
                out.append(Problem(fid, msg, step=key, field="run_after"))
                continue
            sts: set[StepStatus] = set()
            for x in allowed:
                try:
                    st = _status(x)
                except ValueError:
                    out.append(Problem(fid, f"unknown status {x!r} in run_after[{pred!r}]", step=key, field="run_after"))
                    continue
                if st not in FINAL_STEP_STATUSES:
                    msg = f"run_after[{pred!r}] may only list final statuses, not {st}"
                    out.append(Problem(fid, msg, step=key, field="run_after"))
                sts.add(st)
            preds[key][pred] = frozenset(sts)
        _, expr_problems = compile_inputs(step.inputs, "inputs")
        out.extend(Problem(fid, msg, step=key, field=where) for where, msg in expr_problems)
    if flow.steps and not any(isinstance(s, Step) and not s.run_after for s in flow.steps.values()):
        out.append(Problem(fid, "the flow has no entry step (a step with no run_after)", field="steps"))
    if len(preds) == len(flow.steps) and flow.steps:
        try:
            Graph.build(preds)
        except ValueError as exc:
            out.append(Problem(fid, f"the steps form a cycle: {exc}", field="run_after"))
    # Checked even when there is a cycle, so that every problem shows at once.
    for key, step in flow.steps.items():
        if not isinstance(step, Step):
            continue
        template, _ = compile_inputs(step.inputs, "inputs")
        ancestors = _ancestors(preds, key)
        for ref in sorted(template.step_refs):
            if ref not in flow.steps:
                out.append(Problem(fid, f"inputs read unknown step {ref!r}", step=key, field="inputs"))
            elif ref not in ancestors or ref == key:
                msg = f"inputs read step {ref!r}, which does not run before this step (add it to run_after)"
                out.append(Problem(fid, msg, step=key, field="inputs"))
    return out


def _ancestors(preds: Mapping[str, Mapping[str, object]], key: str) -> set[str]:
    seen: set[str] = set()
    stack = [key]
    while stack:
        for p in preds.get(stack.pop(), {}):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen
