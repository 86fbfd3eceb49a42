"""Pure graph evaluation: which steps are ready, which are skipped, how the run ended.

No I/O and no clock: every function takes a compiled :class:`Graph` and the
current step statuses and returns a decision. The stores call :func:`advance`
inside the transaction that records a completion, so the decision and the
dispatch records it leads to are written together.

Rules (DESIGN §4):
- A step is *decidable* when every predecessor has a final status.
- A decidable step runs if each predecessor's status is in the statuses the
  step accepts from it (an empty set means any final status); otherwise it is
  Skipped, and skipping cascades down dead ends in the same pass.
- A run is classified only when every step is final: Failed if some failure
  (Failed or TimedOut) was not handled, i.e. no successor named that status
  explicitly in its run_after and ran; Succeeded otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._status import FINAL_STEP_STATUSES, RunStatus, StepStatus

_FAILURES = frozenset({StepStatus.FAILED, StepStatus.TIMED_OUT})


@dataclass(frozen=True, slots=True)
class Graph:
    """The shape of a flow, as the planner needs it.

    ``preds[k]`` maps each predecessor of ``k`` to the statuses ``k`` accepts
    from it (empty = any final status). ``order`` is a topological order.
    """

    order: tuple[str, ...]
    preds: Mapping[str, Mapping[str, frozenset[StepStatus]]]
    succs: Mapping[str, tuple[str, ...]]
    loops: Mapping[str, Graph] = field(default_factory=dict)
    """For each ForEach step, the graph of its child steps. A child of item ``i`` of
    loop ``p`` has the runtime key ``p.i.child``."""

    def succs_of(self, key: str) -> tuple[str, ...]:
        """Successors of a step, static or a loop child (by runtime key)."""
        found = self.succs.get(key)
        if found is not None:
            return found
        parent, index, child = key.split(".", 2)
        prefix = f"{parent}.{index}."
        return tuple(prefix + s for s in self.loops[parent].succs[child])

    def preds_of(self, key: str) -> Mapping[str, frozenset[StepStatus]]:
        """Predecessors of a step with the statuses it accepts, static or a loop child (by runtime key)."""
        found = self.preds.get(key)
        if found is not None:
            return found
        parent, index, child = key.split(".", 2)
        prefix = f"{parent}.{index}."
        return {prefix + p: allowed for p, allowed in self.loops[parent].preds[child].items()}

    @property
    def entries(self) -> tuple[str, ...]:
        """Steps with no predecessor, in topological order."""
        return tuple(k for k in self.order if not self.preds[k])

    def descendants(self, key: str) -> list[str]:
        """Every step reachable from ``key`` (not including it), in topological order."""
        seen: set[str] = set()
        stack = [key]
        while stack:
            for s in self.succs[stack.pop()]:
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return [k for k in self.order if k in seen]

    @classmethod
    def build(cls, preds: Mapping[str, Mapping[str, frozenset[StepStatus]]], loops: Mapping[str, Graph] | None = None) -> Graph:
        """Build from predecessor maps; raise ValueError naming the steps of a cycle."""
        succs: dict[str, list[str]] = {k: [] for k in preds}
        for k, ps in preds.items():
            for p in ps:
                succs[p].append(k)
        indeg = {k: len(ps) for k, ps in preds.items()}
        ready = [k for k in preds if indeg[k] == 0]
        order: list[str] = []
        while ready:
            k = ready.pop(0)
            order.append(k)
            for s in succs[k]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    ready.append(s)
        if len(order) != len(preds):
            # Left over: the cycles and the steps after them. Trim the steps that
            # lead to nothing left over, so the message names only the cycles.
            rest = {k for k in preds if indeg[k] > 0}
            trimmed = True
            while trimmed:
                trimmed = False
                for k in sorted(rest):
                    if not any(s in rest for s in succs[k]):
                        rest.discard(k)
                        trimmed = True
            raise ValueError(", ".join(sorted(rest)))
        return cls(tuple(order), preds, {k: tuple(v) for k, v in succs.items()}, dict(loops or {}))


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`advance` decided."""

    ready: tuple[str, ...]
    """Steps that are Pending and not dispatched whose predecessors allow them to run."""
    skipped: tuple[str, ...]
    """Steps that must become Skipped, in topological order."""
    outcome: RunStatus | None
    """The run's final status if every step is now final, else None."""


def accepts(graph: Graph, key: str, statuses: Mapping[str, StepStatus]) -> bool | None:
    """None if some predecessor of ``key`` is not final; else whether ``key`` may run."""
    ok = True
    for pred, allowed in graph.preds_of(key).items():
        st = statuses[pred]
        if st not in FINAL_STEP_STATUSES:
            return None
        if allowed and st not in allowed:
            ok = False
    return ok


def advance(
    graph: Graph,
    statuses: Mapping[str, StepStatus],
    dispatched: frozenset[str] | set[str] = frozenset(),
    candidates: Sequence[str] | None = None,
) -> Decision:
    """Decide what follows from ``statuses``.

    ``dispatched`` holds the Pending steps already handed to a runtime; they
    are neither ready nor skippable. ``candidates`` limits the readiness check
    to those steps (typically the successors of the steps that just finished);
    skips still cascade as far as they go. ``None`` checks every step.
    """
    current = dict(statuses)
    ready: list[str] = []
    skipped: list[str] = []
    todo = list(graph.order if candidates is None else candidates)
    seen: set[str] = set()
    while todo:
        key = todo.pop(0)
        if key in seen or current[key] is not StepStatus.PENDING or key in dispatched:
            continue
        verdict = accepts(graph, key, current)
        if verdict is None:
            continue
        seen.add(key)
        if verdict:
            ready.append(key)
        else:
            current[key] = StepStatus.SKIPPED
            skipped.append(key)
            todo.extend(graph.succs[key])
    return Decision(tuple(ready), tuple(skipped), classify(graph, current) if not ready else None)


def classify(graph: Graph, statuses: Mapping[str, StepStatus]) -> RunStatus | None:
    """The run's outcome if every step is final, else None."""
    for k in graph.order:
        if statuses[k] not in FINAL_STEP_STATUSES:
            return None
    # Cancelled wins over failures wherever the steps sit in the order.
    if any(statuses[k] is StepStatus.CANCELLED for k in graph.order):
        return RunStatus.CANCELLED
    for k in graph.order:
        st = statuses[k]
        if st in _FAILURES and not _handled(graph, k, st, statuses):
            return RunStatus.FAILED
    return RunStatus.SUCCEEDED


def _handled(graph: Graph, key: str, status: StepStatus, statuses: Mapping[str, StepStatus]) -> bool:
    # A failure counts as handled when a successor named that status explicitly
    # and actually ran (e.g. an alert step with run_after {"charge": ["Failed"]}).
    for s in graph.succs[key]:
        allowed = graph.preds[s][key]
        if status in allowed and statuses[s] is not StepStatus.SKIPPED:
            return True
    return False
