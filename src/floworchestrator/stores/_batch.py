"""The write algorithm every store shares, over a small set of primitives.

A store opens one transaction per batch, wraps it in a :class:`Txn` and calls
:func:`apply_ops`. The algorithm (what to check, what to write, in what
order) lives here once; a store only says how to read and write rows.

Advancing a run is incremental, so a completion costs the same whatever the
size of its run: every step row counts the predecessors it still ``waits``
for, and every run counts its ``open`` (non-final) steps. A completion
decrements its successors' counters; only a successor that reaches zero has
its predecessors' statuses read (once) for the planner's accept-or-skip
decision, and the run is classified only when its open count reaches zero.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .. import planner
from .._status import FINAL_STEP_STATUSES, RunStatus, StepStatus
from ..exceptions import InvalidOperationError, UnknownRunError, UnknownStepError
from .base import (
    Applied,
    CancelRun,
    Claim,
    Complete,
    Dispatch,
    Effects,
    ExpireLease,
    ExtendLeases,
    Grant,
    Op,
    Reconcile,
    Result,
    RetryStep,
    RunStarted,
    Signal,
    StartRun,
)

_RETRYABLE = frozenset({StepStatus.FAILED, StepStatus.TIMED_OUT, StepStatus.CANCELLED})
_NO_EFFECTS = Effects()


@dataclass(slots=True)
class StepState:
    """The columns of a step row the algorithm decides on."""

    status: StepStatus
    generation: int
    queued: bool
    parked: bool = False


class Txn(ABC):
    """Row-level primitives inside one open transaction. Conditional writes return whether they matched."""

    @abstractmethod
    def flow_enabled(self, flow_id: str) -> bool:
        """False for a disabled flow or one the store does not know."""

    @abstractmethod
    def find_run_by_key(self, flow_id: str, key: str) -> str | None: ...

    @abstractmethod
    def insert_run(self, op: StartRun) -> None:
        """Insert the run (status Running, ``open`` = number of steps) and every step Pending, unqueued,
        generation 0, waiting for ``op.waiting[i]`` predecessors."""

    @abstractmethod
    def run_status(self, run_id: str) -> RunStatus | None: ...

    @abstractmethod
    def run_flow(self, run_id: str) -> str: ...

    @abstractmethod
    def load_steps(self, run_id: str) -> dict[str, StepState]:
        """Every step of the run."""

    @abstractmethod
    def load_statuses(self, run_id: str, keys: Iterable[str]) -> dict[str, StepStatus]:
        """The status of each of ``keys`` that exists."""

    @abstractmethod
    def release(self, run_id: str, keys: Sequence[str]) -> dict[str, int]:
        """Decrement ``waiting`` once per occurrence of each key; return {key: generation} of the
        steps that now wait for nothing and are Pending and unqueued."""

    @abstractmethod
    def close(self, run_id: str, n: int) -> int:
        """Subtract ``n`` (may be negative) from the run's open-step count; return the new count."""

    def release_close(
        self, run_id: str, keys: Sequence[str], preds: Iterable[str], n: int
    ) -> tuple[dict[str, int], dict[str, StepStatus], int]:
        """:meth:`release` ``keys``, then, if some step now waits for nothing, :meth:`load_statuses` of
        ``preds``, and :meth:`close` ``n``; return the three results (the statuses empty if no step is
        ready). A store may do it all in one statement (one round trip)."""
        zero = self.release(run_id, keys) if keys else {}
        statuses = self.load_statuses(run_id, preds) if zero else {}
        return zero, statuses, self.close(run_id, n)

    @abstractmethod
    def set_counters(self, run_id: str, open_steps: int, waiting: Mapping[str, int]) -> None:
        """Overwrite the run's open-step count and the given steps' ``waiting``."""

    @abstractmethod
    def queue(
        self, run_id: str, items: Sequence[tuple[str, int]], not_before: datetime | None, now: datetime
    ) -> list[tuple[str, int]]:
        """Insert ledger rows (run, key, generation); for each row really inserted, set the step
        Pending, queued, at that generation, claimable from ``not_before`` (None: at once — not
        compared with any clock, so a worker whose clock lags a little still takes it). Return the
        (key, generation) pairs inserted."""

    def queue_claim(
        self, run_id: str, items: Sequence[tuple[str, int]], claim: Claim | None, now: datetime
    ) -> tuple[list[tuple[str, int]], Grant | None]:
        """:meth:`queue` ``items`` at once, then, if ``claim`` names one of the items really queued,
        :meth:`claim` it. A store may send the claim without waiting for the queue's answer."""
        queued = self.queue(run_id, items, None, now)
        if claim is None or (claim.step_key, claim.generation) not in queued:
            return queued, None
        return queued, self.claim(claim)

    @abstractmethod
    def claim(self, op: Claim) -> Grant | None:
        """The conditional update of Claim plus the grant's reads, or None. The signal looked up
        is the one the step is parked on, if it is, else ``op.signal``."""

    @abstractmethod
    def finish_step(self, op: Complete, attempt_status: StepStatus) -> bool:
        """If the step is Running at op.generation for op.owner: write its final status (or, for
        Pending, unqueued Pending), output, error, inputs, trace and finished time, stop it waiting
        for a signal, and insert the attempt with ``attempt_status``."""

    @abstractmethod
    def set_steps(self, run_id: str, keys: Iterable[str], status: StepStatus, now: datetime, *, reset: bool = False) -> None:
        """Set steps' status and unqueue them; ``reset`` also clears output, error, inputs and times."""

    @abstractmethod
    def finish_run(self, run_id: str, status: RunStatus, now: datetime) -> bool:
        """Conditional on the run being Running."""

    @abstractmethod
    def reopen_run(self, run_id: str, deadline: datetime | None) -> None:
        """Make a finished run Running again, with a new deadline."""

    @abstractmethod
    def take_back(self, op: ExpireLease, status: StepStatus, error: str) -> bool:
        """If the step is Running at op.generation and either op.owner owns it or (op.owner None) its
        lease ended before op.now: record an attempt with ``status`` and ``error`` (the text may
        contain ``{owner}``) and leave the step Pending, unqueued."""

    @abstractmethod
    def extend_leases(self, op: ExtendLeases) -> None: ...

    @abstractmethod
    def record_fire(self, flow_id: str, trigger: str, fire_time: datetime, run_id: str) -> str | None:
        """Insert (flow, trigger, fire time) → run into the cron fire ledger; if that fire is already
        there, insert nothing and return the run id recorded with it."""

    @abstractmethod
    def insert_signal(self, op: Signal) -> int:
        """Store an unconsumed signal; return its id."""

    @abstractmethod
    def has_signal(self, run_id: str, name: str) -> bool:
        """True if the run has an unconsumed signal of that name."""

    @abstractmethod
    def parked_steps(self, run_id: str, name: str) -> dict[str, int]:
        """{key: generation} of the Pending steps waiting for the signal ``name``."""

    @abstractmethod
    def park(self, run_id: str, key: str, name: str) -> None:
        """Mark a Pending step as waiting for the signal ``name``."""

    @abstractmethod
    def consume_signal(self, signal_id: int, step_key: str, now: datetime) -> None: ...

    @abstractmethod
    def signal_available(self, signal_id: int) -> bool:
        """True if the signal exists and no step has used it yet."""

    @abstractmethod
    def expand(self, op: Complete, child_keys: Sequence[str], waiting: Sequence[int], per_item: int, started: int) -> bool:
        """If the ForEach step is Running at op.generation for op.owner: make it owned by nobody (no
        lease), store its items (``op.loop``) as its inputs and loop counters (total, ``started``, done 0),
        and insert ``child_keys`` (``per_item`` per item, in item order) Pending with ``waiting`` (one
        per child of an item) and their item; add them to the run's open count."""

    @abstractmethod
    def loop_item_done(self, run_id: str, parent: str) -> tuple[int | None, int | None]:
        """Count one more finished item of a ForEach; if items remain unstarted, mark the next one
        started. Returns (index of the item to start or None, the number of items if all are done)."""

    @abstractmethod
    def finish_loop(self, run_id: str, parent: str, status: StepStatus, output_json: str, error: str | None, now: datetime) -> None:
        """End a ForEach step with ``status`` and record its attempt."""

    @abstractmethod
    def load_outputs(self, run_id: str, keys: Sequence[str]) -> dict[str, tuple[StepStatus, str | None, str | None]]:
        """(status, output JSON, error) of each of ``keys`` that exists."""

    @abstractmethod
    def delete_children(self, run_id: str, parent: str) -> None:
        """Remove a ForEach step's children and their dispatch records (before it runs again)."""

    @abstractmethod
    def event(self, run_id: str, step_key: str | None, kind: str, data: object, now: datetime) -> None: ...


def apply_ops(tx: Txn, ops: Sequence[Op]) -> list[Result]:
    """Apply ``ops`` in order through ``tx``; the caller commits."""
    out: list[Result] = []
    for op in ops:
        try:
            out.append(_apply(tx, op))
        except (InvalidOperationError, UnknownRunError, UnknownStepError) as exc:
            out.append(exc)  # type: ignore[arg-type]
    return out


def _apply(tx: Txn, op: Op) -> Result:
    if isinstance(op, Claim):
        return tx.claim(op)
    if isinstance(op, Complete):
        return _complete(tx, op)
    if isinstance(op, StartRun):
        return _start(tx, op)
    if isinstance(op, ExtendLeases):
        tx.extend_leases(op)
        return Applied(True)
    if isinstance(op, CancelRun):
        return _cancel(tx, op)
    if isinstance(op, RetryStep):
        return _retry(tx, op)
    if isinstance(op, Reconcile):
        return _reconcile(tx, op)
    if isinstance(op, Signal):
        return _signal(tx, op)
    if isinstance(op, ExpireLease):
        if op.owner is None:
            taken = tx.take_back(op, StepStatus.FAILED, "lease expired: worker {owner} stopped responding")
        else:
            taken = tx.take_back(op, StepStatus.CANCELLED, "interrupted: worker {owner} shut down before the step finished")
        if not taken:
            return Applied(False)
        queued = tx.queue(op.run_id, [(op.step_key, op.generation + 1)], None, op.now)
        kind = "StepLeaseExpired" if op.owner is None else "StepInterrupted"
        tx.event(op.run_id, op.step_key, kind, {"generation": op.generation}, op.now)
        return Applied(True, Effects(_dispatches(op.flow_id, op.run_id, queued)))
    raise TypeError(f"unknown op {op!r}")


def _dispatches(flow_id: str, run_id: str, items: Iterable[tuple[str, int]], delay: float = 0.0) -> tuple[Dispatch, ...]:
    return tuple(Dispatch(flow_id, run_id, k, g, delay) for k, g in items)


def _start(tx: Txn, op: StartRun) -> RunStarted:
    if not tx.flow_enabled(op.flow_id):
        return RunStarted(None, False, disabled=True)
    if op.idempotency_key is not None:
        existing = tx.find_run_by_key(op.flow_id, op.idempotency_key)
        if existing is not None:
            return RunStarted(existing, False)
    if op.cron_fire is not None:
        earlier = tx.record_fire(op.flow_id, op.cron_fire[0], op.cron_fire[1], op.run_id)
        if earlier is not None:
            return RunStarted(earlier, False)
    tx.insert_run(op)
    tx.event(op.run_id, None, "RunStarted", {"flow_id": op.flow_id, "trigger": op.trigger_key}, op.now)
    entries = [(k, 1) for k, w in zip(op.step_keys, op.waiting, strict=True) if w == 0]
    queued = tx.queue(op.run_id, entries, None, op.now)
    return RunStarted(op.run_id, True, effects=Effects(_dispatches(op.flow_id, op.run_id, queued)))


def _complete(tx: Txn, op: Complete) -> Applied:
    if op.consume_signal is not None and not tx.signal_available(op.consume_signal):
        # Another waiting step used this signal first: wait again (for the next one).
        op.status, op.output_json, op.consume_signal, op.delay = StepStatus.PENDING, None, None, 0.0
    if op.status is StepStatus.PENDING:
        if not tx.finish_step(op, op.attempt_status or StepStatus.PENDING):
            return Applied(False)
        delay = op.delay
        if op.park is not None:
            if tx.has_signal(op.run_id, op.park):
                delay = 0.0  # it arrived while the step was running: go again now
            else:
                tx.park(op.run_id, op.step_key, op.park)
                tx.event(op.run_id, op.step_key, "StepWaitingForSignal", {"signal": op.park}, op.now)
                if delay <= 0:
                    return Applied(True)
        not_before = op.now + timedelta(seconds=delay) if delay > 0 else None
        queued = tx.queue(op.run_id, [(op.step_key, op.generation + 1)], not_before, op.now)
        return Applied(True, Effects(_dispatches(op.flow_id, op.run_id, queued, delay)))
    if op.loop is None and op.status not in FINAL_STEP_STATUSES:
        raise ValueError(f"a completion must end the step (Pending, or a final status), not {op.status.value}")
    if op.loop is not None:
        expanded = _expand(tx, op)
        if expanded is None:
            return Applied(False)
        ready, outcome = expanded
    else:
        if not tx.finish_step(op, op.attempt_status or op.status):
            return Applied(False)
        if op.consume_signal is not None:
            tx.consume_signal(op.consume_signal, op.step_key, op.now)
        tx.event(op.run_id, op.step_key, "Step" + op.status.value, {"error": op.error} if op.error else None, op.now)
        ready, outcome = _propagate(tx, op.run_id, op.graph, [op.step_key], op.now)
    claimed = None
    queued = []
    if ready and op.fold_lease_until is None:
        queued = tx.queue(op.run_id, ready, None, op.now)
    elif ready and op.fold_lease_until is not None:
        # Claim the first ready step for this worker in the same transaction (sent with the queueing).
        key, gen = ready[0]
        wants = op.fold_wants.get(key, ()) if op.fold_wants else ()
        fold = Claim(op.flow_id, op.run_id, key, gen, op.owner, op.fold_lease_until, op.now, wants)
        queued, grant = tx.queue_claim(op.run_id, ready, fold, op.now)
        if grant is not None:
            claimed = (key, gen, grant)
            queued = [q for q in queued if q != (key, gen)]
    finished = _finish(tx, op.run_id, outcome, op.now)
    if not queued and not finished:
        return Applied(True, _NO_EFFECTS, claimed)
    return Applied(True, Effects(_dispatches(op.flow_id, op.run_id, queued), finished), claimed)


def _expand(tx: Txn, op: Complete) -> tuple[list[tuple[str, int]], RunStatus | None] | None:
    """Create a ForEach step's children and queue its first items; None if the step was not ours."""
    assert op.loop is not None
    items, concurrency = op.loop
    lg = op.graph.loops[op.step_key]
    n = len(items)
    started = min(concurrency, n)
    keys = [f"{op.step_key}.{i}.{c}" for i in range(n) for c in lg.order]
    if not tx.expand(op, keys, [len(lg.preds[c]) for c in lg.order], len(lg.order), started):
        return None
    tx.event(op.run_id, op.step_key, "LoopStarted", {"items": n, "concurrency": concurrency}, op.now)
    if n == 0:
        tx.finish_loop(op.run_id, op.step_key, StepStatus.SUCCEEDED, "[]", None, op.now)
        tx.event(op.run_id, op.step_key, "StepSucceeded", None, op.now)
        return _propagate(tx, op.run_id, op.graph, [op.step_key], op.now)
    return [(f"{op.step_key}.{i}.{c}", 1) for i in range(started) for c in lg.entries], None


def _propagate(
    tx: Txn, run_id: str, graph: planner.Graph, finished: Sequence[str], now: datetime
) -> tuple[list[tuple[str, int]], RunStatus | None]:
    """Release the successors of steps that just became final, and finish ForEach items and steps
    whose children all did; return (ready steps with their next generation, the run's outcome if it
    has no open step left)."""
    ready: list[tuple[str, int]] = []
    closed = 0  # steps made final after the first pass, not yet subtracted from the run's open count
    remaining: int | None = None
    settled: set[tuple[str, int]] = set()
    frontier: Sequence[str] = finished
    while frontier:
        after: list[str] = []
        succs = [s for k in frontier for s in graph.succs_of(k)]
        if remaining is None:
            # The first pass (usually the only one): release, read and close in one go.
            preds = {p for s in dict.fromkeys(succs) for p in graph.preds_of(s)}
            zero, statuses, remaining = tx.release_close(run_id, succs, preds, len(frontier))
        else:
            closed += len(frontier)
            zero = tx.release(run_id, succs) if succs else {}
            statuses = tx.load_statuses(run_id, {p for z in zero for p in graph.preds_of(z)}) if zero else {}
        if zero:
            for key, gen in zero.items():
                verdict = planner.accepts(graph, key, statuses)
                if verdict:
                    ready.append((key, gen + 1))
                elif verdict is not None:
                    after.append(key)
            if after:
                tx.set_steps(run_id, after, StepStatus.SKIPPED, now)
                for k in after:
                    tx.event(run_id, k, "StepSkipped", None, now)
        if graph.loops:
            after.extend(_settle_items(tx, run_id, graph, frontier, ready, settled, now))
        frontier = after
    if remaining is None or closed:
        remaining = tx.close(run_id, closed)
    if remaining > 0 or ready:
        return ready, None
    steps = tx.load_steps(run_id)
    return ready, planner.classify(graph, {k: s.status for k, s in steps.items()})


def _settle_items(
    tx: Txn, run_id: str, graph: planner.Graph, finished: Sequence[str], ready: list[tuple[str, int]],
    settled: set[tuple[str, int]], now: datetime,
) -> list[str]:
    """For ForEach children that just became final: count their items done when all siblings are
    final, start the next items, and end the ForEach steps whose items are all done (returned).

    ``settled`` holds the items already counted in this propagation: an item's last children may be
    skipped in a later pass of the same propagation, and the item must not be counted again then."""
    items = sorted({(p, int(i)) for k in finished if k.count(".") >= 2 for p, i, _ in [k.split(".", 2)]})
    ended = []
    for parent, index in items:
        if (parent, index) in settled:
            continue
        lg = graph.loops[parent]
        statuses = tx.load_statuses(run_id, [f"{parent}.{index}.{c}" for c in lg.order])
        if any(st not in FINAL_STEP_STATUSES for st in statuses.values()):
            continue
        settled.add((parent, index))
        start, total = tx.loop_item_done(run_id, parent)
        if start is not None:
            ready.extend((f"{parent}.{start}.{c}", 1) for c in lg.entries)
        if total is not None:
            status, output_json, error = _loop_result(tx, run_id, parent, lg, total)
            tx.finish_loop(run_id, parent, status, output_json, error, now)
            tx.event(run_id, parent, "Step" + status.value, {"error": error} if error else None, now)
            ended.append(parent)
    return ended


def _loop_result(tx: Txn, run_id: str, parent: str, lg: planner.Graph, total: int) -> tuple[StepStatus, str, str | None]:
    """Status, output (a list with one entry per item) and error of a finished ForEach step."""
    leaves = [c for c in lg.order if not lg.succs[c]]
    prefix = parent + "."
    got = tx.load_outputs(run_id, [f"{prefix}{i}.{c}" for i in range(total) for c in lg.order])
    results: list[dict[str, object]] = []
    failed = 0
    for index in range(total):
        item_status = planner.classify(lg, {c: got[f"{prefix}{index}.{c}"][0] for c in lg.order}) or RunStatus.FAILED
        outs = {c: json.loads(got[f"{prefix}{index}.{c}"][1] or "null") for c in leaves}
        entry: dict[str, object] = {"index": index, "status": item_status.value,
                                    "output": outs[leaves[0]] if len(leaves) == 1 else outs}
        if item_status is not RunStatus.SUCCEEDED:
            failed += 1
            errors = [got[f"{prefix}{index}.{c}"][2] for c in lg.order if got[f"{prefix}{index}.{c}"][2]]
            entry["error"] = errors[0] if errors else item_status.value
        results.append(entry)
    if failed:
        return StepStatus.FAILED, json.dumps(results), f"{failed} of {len(results)} items failed"
    return StepStatus.SUCCEEDED, json.dumps(results), None


def _finish(tx: Txn, run_id: str, outcome: RunStatus | None, now: datetime) -> tuple[tuple[str, RunStatus], ...]:
    if outcome is None or not tx.finish_run(run_id, outcome, now):
        return ()
    tx.event(run_id, None, "Run" + outcome.value, None, now)
    return ((run_id, outcome),)


def _recount(tx: Txn, run_id: str, graph: planner.Graph, statuses: Mapping[str, StepStatus]) -> None:
    """Rebuild the run's counters from the statuses it will have once this transaction commits."""
    final = FINAL_STEP_STATUSES
    waiting = {
        k: sum(1 for p in graph.preds[k] if statuses[p] not in final)
        for k, st in statuses.items()
        if st is StepStatus.PENDING and k in graph.preds
    }
    tx.set_counters(run_id, sum(1 for st in statuses.values() if st not in final), waiting)


def _reconcile(tx: Txn, op: Reconcile) -> Applied:
    if tx.run_status(op.run_id) is not RunStatus.RUNNING:
        return Applied(False)
    steps = tx.load_steps(op.run_id)
    statuses = {k: s.status for k, s in steps.items()}
    dispatched = {k for k, s in steps.items() if s.queued or s.status is StepStatus.RUNNING or s.parked}
    decision = planner.advance(op.graph, statuses, dispatched, None)
    if decision.skipped:
        tx.set_steps(op.run_id, decision.skipped, StepStatus.SKIPPED, op.now)
        for k in decision.skipped:
            tx.event(op.run_id, k, "StepSkipped", None, op.now)
            statuses[k] = StepStatus.SKIPPED
    _recount(tx, op.run_id, op.graph, statuses)
    queued = tx.queue(op.run_id, [(k, steps[k].generation + 1) for k in decision.ready], None, op.now)
    finished = _finish(tx, op.run_id, decision.outcome, op.now)
    return Applied(True, Effects(_dispatches(op.flow_id, op.run_id, queued), finished))


def _cancel(tx: Txn, op: CancelRun) -> Applied:
    status = tx.run_status(op.run_id)
    if status is None:
        raise UnknownRunError(op.run_id)
    if status is not RunStatus.RUNNING:
        if op.timed_out:
            return Applied(False)
        raise InvalidOperationError(f"run {op.run_id!r} is already {status.value}; only a Running run can be cancelled")
    steps = tx.load_steps(op.run_id)
    running = [k for k, s in steps.items() if s.status is StepStatus.RUNNING]
    waiting = [k for k, s in steps.items() if s.status not in FINAL_STEP_STATUSES and s.status is not StepStatus.RUNNING]
    outcome = RunStatus.TIMED_OUT if op.timed_out else RunStatus.CANCELLED
    tx.set_steps(op.run_id, running, StepStatus.TIMED_OUT if op.timed_out else StepStatus.CANCELLED, op.now)
    tx.set_steps(op.run_id, waiting, StepStatus.CANCELLED, op.now)
    tx.set_counters(op.run_id, 0, {})
    tx.finish_run(op.run_id, outcome, op.now)
    tx.event(op.run_id, None, "Run" + outcome.value, None, op.now)
    return Applied(True, Effects(finished=((op.run_id, outcome),)))


def _signal(tx: Txn, op: Signal) -> Applied:
    status = tx.run_status(op.run_id)
    if status is None:
        raise UnknownRunError(op.run_id)
    if status is not RunStatus.RUNNING:
        raise InvalidOperationError(f"run {op.run_id!r} is {status.value}; signals go to Running runs only")
    tx.insert_signal(op)
    tx.event(op.run_id, None, "SignalReceived", {"signal": op.name}, op.now)
    parked = tx.parked_steps(op.run_id, op.name)
    queued = tx.queue(op.run_id, [(k, g + 1) for k, g in parked.items()], None, op.now) if parked else []
    flow_id = tx.run_flow(op.run_id)
    return Applied(True, Effects(_dispatches(flow_id, op.run_id, queued)))


def _retry(tx: Txn, op: RetryStep) -> Applied:
    if tx.run_status(op.run_id) is None:
        raise UnknownRunError(op.run_id)
    steps = tx.load_steps(op.run_id)
    state = steps.get(op.step_key)
    if state is None:
        raise UnknownStepError(op.run_id, op.step_key)
    if state.status not in _RETRYABLE:
        raise InvalidOperationError(
            f"step {op.step_key!r} is {state.status.value}; only a Failed, TimedOut or Cancelled step can be retried"
        )
    if op.step_key not in op.graph.succs:
        raise InvalidOperationError(f"{op.step_key!r} is a step inside a ForEach; retry the ForEach step instead")
    after = op.graph.descendants(op.step_key)
    busy = [k for k in after if steps[k].status is StepStatus.RUNNING or steps[k].queued]
    if busy:
        raise InvalidOperationError(f"steps after {op.step_key!r} are still running ({', '.join(busy)}); retry when they finish")
    statuses = {k: s.status for k, s in steps.items()}
    if not planner.accepts(op.graph, op.step_key, statuses):
        waiting = ", ".join(f"{p} ({statuses[p].value})" for p in op.graph.preds[op.step_key])
        raise InvalidOperationError(
            f"step {op.step_key!r} cannot run after {waiting}; retry the step before it instead"
        )
    reset = [op.step_key, *after]
    for k in reset:
        if k in op.graph.loops:
            tx.delete_children(op.run_id, k)
            for child in [c for c in steps if c.startswith(k + ".")]:
                del steps[child]
    tx.set_steps(op.run_id, reset, StepStatus.PENDING, op.now, reset=True)
    statuses = {k: s.status for k, s in steps.items()}
    statuses.update(dict.fromkeys(reset, StepStatus.PENDING))
    _recount(tx, op.run_id, op.graph, statuses)
    tx.reopen_run(op.run_id, op.deadline)
    tx.event(op.run_id, op.step_key, "StepRetried", None, op.now)
    queued = tx.queue(op.run_id, [(op.step_key, state.generation + 1)], None, op.now)
    return Applied(True, Effects(_dispatches(op.flow_id, op.run_id, queued)))
