"""Flow definitions: :class:`Flow`, :class:`Step` and the trigger kinds.

A flow is plain data. ``Orchestrator.register`` validates it (every problem
at once, see :func:`validate_flows`) and compiles it into a
:class:`CompiledFlow` whose JSON *manifest* is what each run pins.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from ._status import FINAL_STEP_STATUSES, StepStatus
from .conditions import Condition, parse_condition
from .exceptions import ExpressionError, Problem
from .expressions import InputTemplate, compile_inputs
from .planner import Graph

__all__ = [
    "FOR_EACH",
    "WAIT_FOR_SIGNAL",
    "After",
    "CompiledFlow",
    "Cron",
    "Flow",
    "ForEach",
    "Loop",
    "Manual",
    "Retry",
    "RuntimeWants",
    "Step",
    "Trigger",
    "WaitForSignal",
    "Webhook",
    "validate_flows",
]


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
class After:
    """A ``run_after`` entry with a condition: ``run_after={"check": After(["Succeeded"], when="...")}``.

    The step runs only if the predecessor ended in one of ``statuses`` (empty:
    any final status) *and* ``when`` evaluates to true (see ``conditions``).
    """

    statuses: Sequence[StepStatus | str] = (StepStatus.SUCCEEDED,)
    when: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a failed step again: up to ``max_attempts`` executions in all, waiting
    ``backoff * multiplier**(n-1)`` seconds (at most ``max_delay``, ± ``jitter`` of it) before the n-th retry.

    ``retry_on`` limits retries to these exception types (classes or
    ``"module.QualName"`` strings, subclasses included); empty means any
    exception, including the step's timeout. A ``StepResult.failed(...)``
    returned on purpose is never retried.
    """

    max_attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1
    retry_on: Sequence[type[BaseException] | str] = ()

    def to_manifest(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts, "backoff": self.backoff, "multiplier": self.multiplier,
            "max_delay": self.max_delay, "jitter": self.jitter,
            "retry_on": [x if isinstance(x, str) else f"{x.__module__}.{x.__qualname__}" for x in self.retry_on],
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One node of a flow.

    ``type`` names a handler registered with ``@orchestrator.handler(type)``.
    ``inputs`` may hold literals and ``@`` expressions at any depth.
    ``run_after`` maps each predecessor's key to the statuses this step
    accepts from it (an empty list means any final status), or to an
    :class:`After` with a ``when`` condition. No ``run_after`` makes an entry
    step. ``when`` is a condition of the step itself (for entry steps, or in
    addition to the entries'). A step whose condition is false or cannot be
    evaluated is Skipped, and the trace of the evaluation is kept with it.
    ``retry`` and ``timeout`` (seconds per execution) are optional.
    """

    type: str
    inputs: Any = None
    run_after: Mapping[str, Sequence[StepStatus | str] | After] = field(default_factory=dict)
    description: str | None = None
    when: str | None = None
    retry: Retry | None = None
    timeout: float | None = None
    for_each: Any = None
    """ForEach steps only (see :func:`ForEach`): the items, a list or an ``@`` expression."""
    concurrency: int = 1
    """ForEach steps only: how many items run at once."""
    steps: Mapping[str, Step] | None = None
    """ForEach steps only: the child steps run for each item."""


#: The built-in step type that waits for a signal; see :func:`WaitForSignal`.
WAIT_FOR_SIGNAL = "WaitForSignal"
#: The built-in step type that runs child steps for each item of a list; see :func:`ForEach`.
FOR_EACH = "ForEach"


def ForEach(
    items: Any,
    steps: Mapping[str, Step],
    *,
    concurrency: int = 1,
    run_after: Mapping[str, Sequence[StepStatus | str] | After] | None = None,
    when: str | None = None,
    description: str | None = None,
) -> Step:
    """A step that runs its child ``steps`` once per item of ``items`` (a list, or an expression giving one).

    Children may have ``run_after`` among themselves; each gets the inputs
    ``loop_item`` and ``loop_index`` in addition to its own, and runs under
    the key ``<this step>.<index>.<child>``. At most ``concurrency`` items
    run at once (1: one after the other). The ForEach step ends when every
    item has: Succeeded, with a list of per-item results as its output, or
    Failed if some item failed (a failure its own children handle does not
    count). A null or empty list succeeds at once with no iterations.
    """
    return Step(FOR_EACH, run_after=dict(run_after or {}), when=when, description=description,
                for_each=items, concurrency=concurrency, steps=dict(steps))


def WaitForSignal(
    signal: str,
    *,
    timeout: float | None = None,
    run_after: Mapping[str, Sequence[StepStatus | str] | After] | None = None,
    when: str | None = None,
    description: str | None = None,
) -> Step:
    """A step that waits, without holding a worker, until ``orchestrator.signal(run_id, signal, payload)``.

    The payload becomes the step's output. With ``timeout`` (seconds from when
    the step starts waiting) the step ends TimedOut if no signal came. A
    signal sent before the step waits is kept and used when it gets there.
    """
    inputs: dict[str, Any] = {"signal": signal}
    if timeout is not None:
        inputs["timeout"] = timeout
    return Step(WAIT_FOR_SIGNAL, inputs=inputs, run_after=dict(run_after or {}), when=when, description=description)


@dataclass(frozen=True, slots=True)
class Flow:
    """A named DAG of steps with the triggers that start it."""

    id: str
    steps: Mapping[str, Step]
    triggers: Mapping[str, Trigger] = field(default_factory=lambda: {"manual": Manual()})
    version: str = "1"
    description: str | None = None
    enabled: bool = True
    timeout: float | None = None
    """Seconds a run may take; then it ends TimedOut and its pending steps never start."""

    def to_manifest(self) -> dict[str, Any]:
        """The JSON-able definition a run pins (secrets left out)."""
        return {
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "timeout": self.timeout,
            "triggers": {name: t.to_manifest() for name, t in self.triggers.items()},
            "steps": {key: _step_manifest(s) for key, s in self.steps.items()},
        }


def _step_manifest(s: Step) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": s.type,
        "inputs": s.inputs,
        "run_after": {p: _after_manifest(v) for p, v in s.run_after.items()},
        "description": s.description,
    }
    if s.when is not None:
        out["when"] = s.when
    if s.retry is not None:
        out["retry"] = s.retry.to_manifest()
    if s.timeout is not None:
        out["timeout"] = s.timeout
    if s.type == FOR_EACH:
        out["for_each"] = s.for_each
        out["concurrency"] = s.concurrency
        out["steps"] = {k: _step_manifest(c) for k, c in (s.steps or {}).items()}
    return out


def _after_manifest(v: Sequence[StepStatus | str] | After) -> Any:
    if isinstance(v, After):
        statuses = [str(_status(x)) for x in v.statuses]
        return statuses if v.when is None else {"statuses": statuses, "when": v.when}
    return [str(_status(x)) for x in v]


def _after_parts(v: Any) -> tuple[list[Any], str | None]:
    """(statuses, when) of a manifest run_after entry."""
    if isinstance(v, dict):
        return list(v.get("statuses") or []), v.get("when")
    return list(v or []), None


def _status(value: StepStatus | str) -> StepStatus:
    if isinstance(value, StepStatus):
        return value
    for st in StepStatus:
        if st.value.lower() == str(value).lower():
            return st
    raise ValueError(value)


@dataclass(frozen=True, slots=True)
class Loop:
    """A compiled ForEach step: where its items come from and the shape of its children."""

    items: InputTemplate
    concurrency: int
    graph: Graph
    waiting: tuple[int, ...]
    """Predecessor count of each child, in ``graph.order``."""

    def child_keys(self, parent: str, index: int) -> list[str]:
        return [f"{parent}.{index}.{c}" for c in self.graph.order]


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    """A validated flow, ready to run: its manifest, graph and parsed inputs.

    Per-step tables are keyed by the step's key, or ``loop.child`` for the
    children of a ForEach; :meth:`spec_key` maps a runtime key
    (``loop.3.child``) to that.
    """

    flow_id: str
    manifest: dict[str, Any]
    manifest_id: str
    graph: Graph
    step_types: Mapping[str, str]
    templates: Mapping[str, InputTemplate]
    waiting: tuple[int, ...]
    """Predecessor count of each step, in ``graph.order``."""
    wants: Mapping[str, tuple[str, ...]]
    """For each step, the steps (as written) whose outputs its inputs or conditions read."""
    conditions: Mapping[str, tuple[Condition, ...]]
    """Conditions each step must pass to run (its own ``when`` and its run_after entries')."""
    retries: Mapping[str, Mapping[str, Any]]
    """Retry policy (manifest form) of the steps that have one."""
    timeouts: Mapping[str, float]
    """Per-execution timeout of the steps that have one."""
    run_timeout: float | None
    signals: Mapping[str, tuple[str, float | None]]
    """For each WaitForSignal step: (signal name, timeout in seconds or None)."""
    loops: Mapping[str, Loop]
    """The ForEach steps."""

    def has_step(self, key: str) -> bool:
        """True for a step of the flow or a well-formed runtime key of a ForEach child."""
        if key in self.step_types:
            return True
        parts = key.split(".", 2)
        return len(parts) == 3 and parts[1].isdigit() and f"{parts[0]}.{parts[2]}" in self.step_types

    def spec_key(self, key: str) -> str:
        """The key of a step's definition: itself, or ``loop.child`` for the runtime key ``loop.i.child``."""
        if key in self.step_types:
            return key
        parent, _, child = key.split(".", 2)
        return f"{parent}.{child}"

    def runtime_refs(self, key: str) -> dict[str, str]:
        """{name as written: runtime key} of the steps a step reads (siblings of a loop child get its prefix)."""
        spec = self.spec_key(key)
        refs = self.wants.get(spec, ())
        if spec == key:
            return {r: r for r in refs}
        parent, index, _ = key.split(".", 2)
        children = self.loops[parent].graph.preds
        return {r: f"{parent}.{index}.{r}" if r in children else r for r in refs}

    def needs_trigger(self, key: str) -> bool:
        """True when the step's inputs or conditions read the trigger data."""
        spec = self.spec_key(key)
        loop = self.loops.get(key)
        return (
            self.templates[spec].uses_trigger
            or any(c.uses_trigger() for c in self.conditions.get(spec, ()))
            or (loop is not None and loop.items.uses_trigger)
        )

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> CompiledFlow:
        """Compile a manifest; raise ValueError if it is not valid (validate flows first)."""
        steps: Mapping[str, Any] = manifest["steps"]
        specs: dict[str, Mapping[str, Any]] = {}
        loops: dict[str, Loop] = {}
        loop_graphs: dict[str, Graph] = {}
        for key, s in steps.items():
            specs[key] = s
            if s["type"] == FOR_EACH:
                children: Mapping[str, Any] = s.get("steps") or {}
                for ck, cs in children.items():
                    specs[f"{key}.{ck}"] = cs
                g = Graph.build(_preds(children))
                items, problems = compile_inputs(s.get("for_each"), "for_each")
                if problems:
                    raise ValueError(f"step {key!r}: {problems[0][1]}")
                loops[key] = Loop(items, int(s.get("concurrency") or 1), g, tuple(len(g.preds[k]) for k in g.order))
                loop_graphs[key] = g
        templates: dict[str, InputTemplate] = {}
        conditions: dict[str, tuple[Condition, ...]] = {}
        for key, s in specs.items():
            template, problems = compile_inputs(s.get("inputs"), "inputs")
            if problems:
                raise ValueError(f"step {key!r}: {problems[0][1]}")
            templates[key] = template
            texts = [s["when"]] if s.get("when") else []
            texts += [w for v in (s.get("run_after") or {}).values() if (w := _after_parts(v)[1])]
            if texts:
                try:
                    conditions[key] = tuple(parse_condition(t) for t in texts)
                except ExpressionError as exc:
                    raise ValueError(f"step {key!r}: {exc}") from None
        canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
        graph = Graph.build(_preds(steps), loop_graphs)
        wants = {k: tuple(sorted(t.step_refs.union(*(c.step_refs() for c in conditions.get(k, ()))))) for k, t in templates.items()}
        for key, loop in loops.items():
            wants[key] = tuple(sorted(set(wants[key]) | loop.items.step_refs))
        return cls(
            flow_id=str(manifest["id"]),
            manifest=dict(manifest),
            manifest_id=hashlib.sha256(canonical.encode()).hexdigest()[:32],
            graph=graph,
            step_types={key: str(s["type"]) for key, s in specs.items()},
            templates=templates,
            waiting=tuple(len(graph.preds[k]) for k in graph.order),
            wants=wants,
            conditions=conditions,
            retries={k: s["retry"] for k, s in specs.items() if s.get("retry")},
            timeouts={k: float(s["timeout"]) for k, s in specs.items() if s.get("timeout")},
            run_timeout=float(manifest["timeout"]) if manifest.get("timeout") else None,
            signals={
                k: (str(s["inputs"]["signal"]), float(s["inputs"]["timeout"]) if s["inputs"].get("timeout") else None)
                for k, s in specs.items() if s["type"] == WAIT_FOR_SIGNAL
            },
            loops=loops,
        )


class RuntimeWants(Mapping[str, tuple[str, ...]]):
    """``runtime key → runtime keys it reads``, for the store to fetch with a folded claim."""

    def __init__(self, compiled: CompiledFlow) -> None:
        self._c = compiled

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return tuple(self._c.runtime_refs(key).values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._c.step_types)

    def __len__(self) -> int:
        return len(self._c.step_types)


def _preds(steps: Mapping[str, Any]) -> dict[str, dict[str, frozenset[StepStatus]]]:
    return {
        key: {p: frozenset(_status(x) for x in _after_parts(v)[0]) for p, v in (s.get("run_after") or {}).items()}
        for key, s in steps.items()
    }


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


def _validate_one(
    flow: Flow, fid: str, handler_types: Collection[str], outer: Collection[str] = (), prefix: str = ""
) -> list[Problem]:
    """Problems of one flow; for the children of a ForEach, ``outer`` are the steps outside the
    loop they may read and ``prefix`` ("loop.") names them in messages."""
    out: list[Problem] = []
    if not isinstance(flow.id, str) or not flow.id.strip():
        out.append(Problem(fid, "the flow id must be a non-empty string", field="id"))
    elif not prefix and (why := _not_a_path_segment(flow.id)):
        out.append(Problem(fid, f"the flow id {why}: it must fit in one URL path segment (/api/flows/{{flow_id}})", field="id"))
    if not flow.steps:
        out.append(Problem(fid, "a flow needs at least one step", field="steps"))
    for name, trig in flow.triggers.items():
        where = f"triggers.{name}"
        if isinstance(trig, Cron):
            if why := _not_a_path_segment(name):
                msg = f"the name of a cron trigger {why}: it must fit in one URL path segment (/api/schedules/{{flow_id}}/{{trigger}})"
                out.append(Problem(fid, msg, field=where))
            if not croniter.is_valid(trig.expression):
                out.append(Problem(fid, f"invalid cron expression {trig.expression!r}", field=where))
            if trig.timezone is not None:
                try:
                    from zoneinfo import ZoneInfo

                    ZoneInfo(trig.timezone)
                except Exception:
                    out.append(Problem(fid, f"unknown time zone {trig.timezone!r}", field=where))
        elif isinstance(trig, Webhook):
            if not trig.slug or not all(c.isalnum() or c in "-_." for c in trig.slug) or trig.slug in (".", ".."):
                msg = (f"webhook slug {trig.slug!r} must be non-empty letters, digits, '-', '_' or '.',"
                       " and not '.' or '..' (/webhook/{slug})")
                out.append(Problem(fid, msg, field=where))
        elif not isinstance(trig, Manual):
            out.append(Problem(fid, f"{type(trig).__name__} is not a trigger (use Manual, Cron or Webhook)", field=where))
    preds: dict[str, dict[str, frozenset[StepStatus]]] = {}
    cond_refs: dict[str, list[tuple[str, frozenset[str]]]] = {k: [] for k in flow.steps}
    for key, step in flow.steps.items():
        if not isinstance(step, Step):
            out.append(Problem(fid, f"expected a Step, got {type(step).__name__}", step=str(key)))
            continue
        if not key or "." in key:
            out.append(Problem(fid, "a step key must be non-empty and contain no '.'", step=key))
        elif why := _not_a_path_segment(key):
            msg = f"a step key {why}: it must fit in one URL path segment (/api/runs/{{run_id}}/steps/{{step_key}}/retry)"
            out.append(Problem(fid, msg, step=key))
        if step.type == WAIT_FOR_SIGNAL:
            out.extend(_check_signal_step(fid, key, step))
        elif step.type == FOR_EACH:
            if prefix:
                out.append(Problem(fid, "a ForEach inside a ForEach is not supported", step=key, field="type"))
        elif step.type not in handler_types:
            out.append(Problem(fid, f"no handler is registered for type {step.type!r}", step=key, field="type"))
        preds[key] = {}
        conds: list[tuple[str, str]] = [("when", step.when)] if step.when is not None else []
        out.extend(_check_options(fid, key, step))
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
            when: str | None = None
            if isinstance(allowed, After):
                when = allowed.when
                allowed = allowed.statuses
                if when is not None:
                    conds.append((f"run_after[{pred!r}].when", when))
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
        for where, text in conds:
            try:
                cond_refs[key].append((where, parse_condition(text).step_refs()))
            except ExpressionError as exc:
                out.append(Problem(fid, f"bad condition: {exc}", step=key, field=where))
    if flow.timeout is not None and not (isinstance(flow.timeout, (int, float)) and flow.timeout > 0):
        out.append(Problem(fid, f"timeout must be a positive number of seconds, not {flow.timeout!r}", field="timeout"))
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
        ancestors = _ancestors(preds, key) | set(outer)
        if step.type == FOR_EACH and not prefix:
            out.extend(_check_loop(fid, key, step, handler_types, ancestors))
        for ref in sorted(template.step_refs):
            if ref not in flow.steps and ref not in outer:
                out.append(Problem(fid, f"inputs read unknown step {ref!r}", step=key, field="inputs"))
            elif ref not in ancestors or ref == key:
                msg = f"inputs read step {ref!r}, which does not run before this step (add it to run_after)"
                out.append(Problem(fid, msg, step=key, field="inputs"))
        for where, refs in cond_refs[key]:
            for ref in sorted(refs):
                if ref not in flow.steps and ref not in outer:
                    out.append(Problem(fid, f"condition reads unknown step {ref!r}", step=key, field=where))
                elif ref not in ancestors or ref == key:
                    msg = f"condition reads step {ref!r}, which does not run before this step (add it to run_after)"
                    out.append(Problem(fid, msg, step=key, field=where))
    return out


def _check_loop(fid: str, key: str, step: Step, handler_types: Collection[str], ancestors: set[str]) -> list[Problem]:
    out: list[Problem] = []
    if not (isinstance(step.concurrency, int) and step.concurrency >= 1):
        out.append(Problem(fid, f"concurrency must be a whole number >= 1, not {step.concurrency!r}", step=key, field="concurrency"))
    items = step.for_each
    if isinstance(items, str):
        template, problems = compile_inputs(items, "for_each")
        out.extend(Problem(fid, msg, step=key, field="for_each") for _, msg in problems)
        if template.is_constant and not problems:
            out.append(Problem(fid, "for_each must be a list or an @ expression", step=key, field="for_each"))
        for ref in sorted(template.step_refs):
            if ref not in ancestors:
                msg = f"for_each reads step {ref!r}, which does not run before this step (add it to run_after)"
                out.append(Problem(fid, msg, step=key, field="for_each"))
    elif items is not None and not isinstance(items, (list, tuple)):
        out.append(Problem(fid, f"for_each must be a list or an @ expression, not {type(items).__name__}", step=key, field="for_each"))
    if not step.steps:
        out.append(Problem(fid, "a ForEach needs at least one child step", step=key, field="steps"))
        return out
    for p in _validate_one(Flow(fid, step.steps, triggers={}), fid, handler_types, outer=ancestors, prefix=f"{key}."):
        out.append(Problem(p.flow_id, p.message, step=f"{key}.{p.step}" if p.step else key, field=p.field))
    return out


def _check_signal_step(fid: str, key: str, step: Step) -> list[Problem]:
    inputs = step.inputs if isinstance(step.inputs, Mapping) else {}
    name, timeout = inputs.get("signal"), inputs.get("timeout")
    out = []
    if not isinstance(name, str) or not name or name.startswith("@"):
        out.append(Problem(fid, "a WaitForSignal step needs a literal signal name in inputs['signal']", step=key, field="inputs"))
    elif why := _not_a_path_segment(name):
        msg = f"the signal name {why}: it must fit in one URL path segment (/api/runs/{{run_id}}/signals/{{name}})"
        out.append(Problem(fid, msg, step=key, field="inputs"))
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        out.append(Problem(fid, f"inputs['timeout'] must be a positive number of seconds, not {timeout!r}", step=key, field="inputs"))
    return out


def _not_a_path_segment(text: str) -> str | None:
    """Why ``text`` (a flow id, step key, ...) cannot be one segment of an API path, or None if it can.

    A client percent-encodes it, but the server decodes ``%2F`` before routing (so ``a/b`` never reaches
    ``/api/flows/{flow_id}``), and clients resolve the segments ``.`` and ``..`` (even as ``%2E``) away.
    """
    if "/" in text:
        return f"{text!r} contains '/'"
    if text in (".", ".."):
        return f"{text!r} is a dot segment, which URLs resolve away"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{text!r} is not valid Unicode (a lone surrogate cannot be percent-encoded)"
    return None


def _check_options(fid: str, key: str, step: Step) -> list[Problem]:
    out: list[Problem] = []
    if step.timeout is not None and not (isinstance(step.timeout, (int, float)) and step.timeout > 0):
        out.append(Problem(fid, f"timeout must be a positive number of seconds, not {step.timeout!r}", step=key, field="timeout"))
    r = step.retry
    if r is not None:
        if not isinstance(r, Retry):
            out.append(Problem(fid, f"retry must be a Retry(...), not {type(r).__name__}", step=key, field="retry"))
            return out
        if not (isinstance(r.max_attempts, int) and r.max_attempts >= 1):
            out.append(Problem(fid, f"max_attempts must be a whole number >= 1, not {r.max_attempts!r}", step=key, field="retry"))
        for name in ("backoff", "max_delay", "jitter"):
            value = getattr(r, name)
            if not isinstance(value, (int, float)) or value < 0:
                out.append(Problem(fid, f"{name} must be a number >= 0, not {value!r}", step=key, field="retry"))
        if not isinstance(r.multiplier, (int, float)) or r.multiplier < 1:
            out.append(Problem(fid, f"multiplier must be a number >= 1, not {r.multiplier!r}", step=key, field="retry"))
        for x in r.retry_on:
            if not (isinstance(x, str) or (isinstance(x, type) and issubclass(x, BaseException))):
                out.append(Problem(fid, f"retry_on must hold exception classes or names, not {x!r}", step=key, field="retry"))
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
