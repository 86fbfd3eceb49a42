"""The storage contract: records, write operations, and the :class:`Store` interface.

Every store implements one batch write method, :meth:`Store.apply`, plus
ordinary reads. The engine never writes any other way: the group committer
(``floworchestrator._committer``) collects the operations that concurrent
steps submit and hands them to ``apply`` together, so every store gets group
commit by implementing the batch once. The shared contract test suite
(``tests/stores``) is these docstrings made executable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._status import RunStatus, StepStatus
from ..planner import Graph

# --- records (what reads return; frozen, JSON values already decoded) -------


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A registered flow as the store knows it."""

    flow_id: str
    version: str
    manifest_id: str
    manifest: dict[str, Any]
    enabled: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a flow."""

    run_id: str
    flow_id: str
    status: RunStatus
    manifest_id: str
    trigger_key: str
    trigger_body: Any
    trigger_headers: dict[str, str]
    idempotency_key: str | None
    created_at: datetime
    finished_at: datetime | None
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """A signal sent to a run."""

    signal_id: int
    run_id: str
    name: str
    payload: Any
    created_at: datetime
    consumed_by: str | None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of one run."""

    run_id: str
    step_key: str
    status: StepStatus
    generation: int
    """How many times the step was dispatched (0: never)."""
    queued: bool
    """Dispatched and waiting for a worker to claim it."""
    attempts: int
    inputs: Any
    output: Any
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None
    lease_until: datetime | None
    not_before: datetime | None
    trace: Any = None
    """Why the step ended as it did, e.g. the traces of the conditions that skipped it."""
    waiting_signal: str | None = None
    """The signal a WaitForSignal step is waiting for."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One execution of a step's handler (or a lost one, found by recovery)."""

    run_id: str
    step_key: str
    attempt: int
    generation: int
    status: StepStatus
    owner: str | None
    started_at: datetime
    finished_at: datetime
    error: str | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A lifecycle event of a run, in the order the store recorded it."""

    event_id: int
    run_id: str
    step_key: str | None
    kind: str
    data: Any
    at: datetime


# --- write operations (the input of Store.apply) ----------------------------


@dataclass(slots=True)
class StartRun:
    """Create a run with every step Pending and queue its entry steps.

    If the flow is disabled (or unknown to the store), nothing is written
    and the result says ``disabled``. If ``idempotency_key`` is set and the
    flow already has a run with that key, nothing is written and the existing
    run id is returned. The manifest must already be saved (``upsert_flows``).
    """

    run_id: str
    flow_id: str
    manifest_id: str
    step_keys: tuple[str, ...]
    waiting: tuple[int, ...]
    """For each step in ``step_keys``, how many predecessors it waits for; entry steps (0) are queued."""
    trigger_key: str
    body_json: str
    headers_json: str
    idempotency_key: str | None
    now: datetime
    deadline: datetime | None = None
    """When the run times out (the flow's ``timeout``), or None."""
    cron_fire: tuple[str, datetime] | None = None
    """(trigger name, fire time) for a cron run: recorded in the fire ledger, and if that fire is
    already recorded nothing is written and the run it started is returned."""


@dataclass(slots=True)
class Claim:
    """Take a queued step for ``owner`` until ``lease_until``.

    Succeeds only if the step is Pending, queued, at ``generation``, its run is
    Running and ``not_before`` has passed; then the step becomes Running and
    its attempt counter goes up by one. ``want_outputs`` names steps whose
    status, output and error the grant should carry.
    """

    flow_id: str
    run_id: str
    step_key: str
    generation: int
    owner: str
    lease_until: datetime
    now: datetime
    want_outputs: tuple[str, ...] = ()
    signal: str | None = None
    """For a step waiting for a signal: the oldest unconsumed signal of that name comes with the grant."""


@dataclass(slots=True)
class Complete:
    """Record how a claimed step ended and advance its run, in one transaction.

    Applies only if the step is still Running at ``generation`` for ``owner``
    (a cancelled run, an expired lease that was recovered, or a duplicate
    completion leave it unapplied). ``status`` Pending means "run me again
    after ``delay`` seconds": the step is queued at the next generation.
    Otherwise the step becomes final, an attempt is recorded, and
    ``planner.advance`` over the run's ``graph`` decides which successors are
    queued, which are skipped and whether the run ends.
    """

    flow_id: str
    run_id: str
    step_key: str
    generation: int
    owner: str
    status: StepStatus
    output_json: str | None
    error: str | None
    inputs_json: str | None
    started_at: datetime
    now: datetime
    graph: Graph
    delay: float = 0.0
    fold_lease_until: datetime | None = None
    """If set, claim one of the steps this completion makes ready for the same owner, in the same
    transaction (the worker runs it next, without a queue round trip); ``fold_wants`` gives each
    step's ``want_outputs`` for that claim."""
    fold_wants: Mapping[str, tuple[str, ...]] | None = None
    attempt_status: StepStatus | None = None
    """Status of the attempt record when it differs from ``status`` (a failure that will be retried
    is recorded as a Failed attempt of a step that goes back to Pending)."""
    trace_json: str | None = None
    """Why the step ended as it did (condition traces of a skipped step), kept with the step."""
    park: str | None = None
    """With status Pending: wait for the signal of this name instead of polling; ``delay`` > 0 then
    sets a timeout wake-up, 0 waits for ever. A matching unconsumed signal re-queues it at once."""
    consume_signal: int | None = None
    """The id of the signal this completion used up."""
    loop: tuple[list[str], int] | None = None
    """For a ForEach step, with status Running: (the items as JSON, concurrency). The step's children
    (``graph.loops[step_key]``) are created for every item, the first ``concurrency`` items' entry
    children are queued, and the step stays Running, owned by nobody, until every item is done."""


@dataclass(slots=True)
class RetryStep:
    """Queue a failed, timed-out or cancelled step again and reset every step after it to Pending.

    Earlier steps keep their outputs; the run becomes Running again. Raises
    InvalidOperationError if the step is not in one of those statuses or a
    step after it is still running.
    """

    flow_id: str
    run_id: str
    step_key: str
    graph: Graph
    now: datetime
    deadline: datetime | None = None
    """The run's new deadline (now + the flow's timeout), or None for no timeout."""


@dataclass(slots=True)
class CancelRun:
    """Cancel a Running run: the run and each non-final step become Cancelled.

    With ``timed_out`` (its deadline passed), the run ends TimedOut instead,
    its Running steps TimedOut and the others Cancelled; for a run that is
    already final nothing is written and the result is not applied.
    """

    run_id: str
    now: datetime
    timed_out: bool = False


@dataclass(slots=True)
class Signal:
    """Record a signal for a Running run and wake the steps waiting for it.

    A signal that arrives before its step waits is kept and used when the
    step gets there. Raises UnknownRunError or, for a run that is not
    Running, InvalidOperationError.
    """

    run_id: str
    name: str
    payload_json: str
    now: datetime


@dataclass(slots=True)
class Reconcile:
    """Re-evaluate a Running run from scratch: queue ready steps, skip dead ends, end it if every step is final."""

    flow_id: str
    run_id: str
    graph: Graph
    now: datetime


@dataclass(slots=True)
class ExpireLease:
    """Take back a Running step whose lease ended before ``now`` — or, when ``owner`` is given, that
    this owner gives up (a worker shutting down), whatever its lease.

    Records the lost execution as an attempt (Failed for an expired lease,
    Cancelled for one given up) and queues the step at the next generation,
    so a late completion from the old owner is ignored.
    """

    flow_id: str
    run_id: str
    step_key: str
    generation: int
    now: datetime
    owner: str | None = None


@dataclass(slots=True)
class ExtendLeases:
    """Move ``lease_until`` forward for Running steps still owned by ``owner``."""

    owner: str
    steps: tuple[tuple[str, str, int], ...]
    lease_until: datetime


Op = StartRun | Claim | Complete | RetryStep | CancelRun | Reconcile | ExpireLease | ExtendLeases | Signal


# --- results ------------------------------------------------------------------


@dataclass(slots=True)
class Dispatch:
    """A step the store queued (its ledger row was inserted by this batch)."""

    flow_id: str
    run_id: str
    step_key: str
    generation: int
    delay: float = 0.0


@dataclass(slots=True)
class Effects:
    """What a write caused that the engine must act on."""

    dispatched: tuple[Dispatch, ...] = ()
    finished: tuple[tuple[str, RunStatus], ...] = ()


@dataclass(slots=True)
class RunStarted:
    """Result of StartRun."""

    run_id: str | None
    """The new run, the existing run with the same idempotency key, or None when disabled."""
    created: bool
    disabled: bool = False
    effects: Effects = field(default_factory=Effects)


@dataclass(slots=True)
class Grant:
    """Result of a successful Claim: what the worker needs to run the handler."""

    attempt: int
    """1 for the first execution of the step since it started or was last retried from the API."""
    manifest_id: str
    trigger_key: str
    trigger_body_json: str
    trigger_headers_json: str
    outputs: Mapping[str, tuple[StepStatus, str | None, str | None]]
    """For each wanted step that exists: (status, output JSON, error)."""
    first_started_at: datetime | None = None
    """When the step's first execution started (since the last retry from the API)."""
    signal: tuple[int, str] | None = None
    """(signal id, payload JSON) of the signal the claim asked for, if one is waiting."""
    loop_item_json: str | None = None
    """For a ForEach child: its item, as JSON."""


@dataclass(slots=True)
class Applied:
    """Result of Complete, RetryStep, CancelRun, Reconcile, ExpireLease, ExtendLeases."""

    applied: bool
    effects: Effects = field(default_factory=Effects)
    claimed: tuple[str, int, Grant] | None = None
    """A step claimed by a folded completion: (step_key, generation, grant)."""


Result = RunStarted | Grant | Applied | None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs :meth:`Store.list_runs` and :meth:`Store.count_runs` take; the filters combine with AND.

    ``flow_id`` and ``status`` match exactly; ``search`` (non-empty) matches a
    run whose id, flow id or trigger body (its stored JSON text) contains it,
    ignoring ASCII case (``%`` and ``_`` are plain characters); ``since`` /
    ``until`` bound the creation time (``since <= created_at < until``).
    """

    flow_id: str | None = None
    status: RunStatus | None = None
    search: str | None = None
    since: datetime | None = None
    until: datetime | None = None


ALL_RUNS = RunFilter()


@dataclass(frozen=True, slots=True)
class RunStats:
    """What :meth:`Store.run_stats` counts (the dashboard's overview)."""

    totals: dict[RunStatus, int]
    """Every stored run, by status (statuses without runs left out)."""
    buckets: list[tuple[int, RunStatus, int]]
    """(bucket index, status, runs created in that bucket with that status)."""


# --- the interface --------------------------------------------------------------


class Store(ABC):
    """Where flows, runs, steps, attempts, the dispatch ledger and events live.

    Lifecycle: ``await open()`` before anything else (it creates or migrates
    the schema, and raises SchemaVersionError for a database newer than this
    code), ``await close()`` at the end. Methods may be called concurrently
    from one event loop; the store serialises what must be serialised.
    Errors from the database driver are raised as StoreError subclasses.
    """

    #: How many ``apply`` calls the group committer may have in flight at once.
    writers: int = 1

    @abstractmethod
    async def open(self) -> None:
        """Connect, then create or migrate the schema."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads; pending writes are finished first."""

    @abstractmethod
    async def apply(self, ops: Sequence[Op]) -> list[Result]:
        """Apply ``ops`` in order in exactly one transaction; return one result per op.

        A Claim that does not succeed yields None. An op that raises
        InvalidOperationError or UnknownRunError is reported by returning the
        exception in its place (the others still apply); any other error
        rolls back the whole batch and is raised.
        """

    @abstractmethod
    async def upsert_flows(self, flows: Sequence[tuple[str, str, str, str, bool]], now: datetime) -> None:
        """Insert or update flows given as (flow_id, version, manifest_id, manifest JSON, enabled).

        ``enabled`` applies to a new flow only; an existing flow keeps its flag
        (it may have been switched from the dashboard).
        Manifests are also saved under their id for runs to pin.
        """

    @abstractmethod
    async def list_flows(self) -> list[FlowRecord]:
        """Every flow, ordered by id."""

    @abstractmethod
    async def set_flow_enabled(self, flow_id: str, enabled: bool, now: datetime) -> bool:
        """Enable or disable a flow; False if the store has no such flow."""

    @abstractmethod
    async def get_manifest(self, manifest_id: str) -> dict[str, Any] | None:
        """The manifest saved under ``manifest_id``, or None."""

    @abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or None."""

    @abstractmethod
    async def list_runs(self, where: RunFilter = ALL_RUNS, *, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        """Runs matching ``where``, newest first."""

    @abstractmethod
    async def count_runs(self, where: RunFilter = ALL_RUNS) -> int:
        """How many runs match ``where``."""

    @abstractmethod
    async def run_stats(self, since: datetime, bucket_seconds: float, buckets: int) -> RunStats:
        """Every run counted by status, and the runs created in each of ``buckets`` time buckets
        ``bucket_seconds`` wide from ``since`` (bucket ``i`` holds ``since + i * bucket_seconds <=
        created_at < since + (i + 1) * bucket_seconds``) counted per status; empty ones left out."""

    @abstractmethod
    async def get_steps(self, run_id: str) -> list[StepRecord]:
        """Every step of a run (empty for an unknown run), in creation order."""

    @abstractmethod
    async def get_attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every attempt of every step of a run, oldest first."""

    @abstractmethod
    async def get_events(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Events with id greater than ``after``, oldest first, optionally for one run."""

    @abstractmethod
    async def last_event_id(self) -> int:
        """The greatest event id recorded so far (0 if none): where a live feed starts."""

    @abstractmethod
    async def find_expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str, str, int]]:
        """(flow_id, run_id, step_key, generation) of Running steps whose lease ended before ``now``."""

    @abstractmethod
    async def find_queued(self, now: datetime, due_before: datetime, limit: int = 500) -> list[Dispatch]:
        """Unclaimed queued steps of Running runs that were due (``not_before``, or when queued if it
        has none) before ``due_before``, the longest overdue first.

        Each Dispatch's delay is how long until the step's ``not_before``
        (0 if already due), measured from ``now``. Recovery passes
        ``now - stale_after`` to find messages that were lost; a start-up
        pass of a non-durable runtime passes a far future to re-deliver all.
        """

    @abstractmethod
    async def find_overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        """Ids of Running runs whose deadline is before ``now``."""

    @abstractmethod
    async def get_signals(self, run_id: str) -> list[SignalRecord]:
        """Every signal sent to a run, oldest first."""

    @abstractmethod
    async def get_schedule_overrides(self) -> dict[tuple[str, str], tuple[bool, str | None]]:
        """(flow_id, trigger) → (paused, cron expression override or None), for every trigger with saved state."""

    @abstractmethod
    async def set_schedule(self, flow_id: str, trigger: str, *, paused: bool | None = None,
                           expression: str | None = None, clear_expression: bool = False, now: datetime) -> None:
        """Save a cron trigger's pause flag and/or expression override (``clear_expression`` removes it)."""

    @abstractmethod
    async def find_idle_runs(self, limit: int = 500) -> list[tuple[str, str, str]]:
        """(flow_id, run_id, manifest_id) of Running runs with no Running, queued or signal-waiting step.

        Such a run is stuck unless something re-evaluates it (a crash between
        a completion and its successors can not leave one, but a lost write of
        an older version or a manual database edit could).
        """

    @abstractmethod
    async def prune(self, older_than: datetime, *, batch_size: int = 500) -> int:
        """Delete finished runs whose ``finished_at`` is before ``older_than``; return how many.

        A run goes with everything of its own: its steps, attempts, dispatch
        ledger rows, events, signals and the cron fire ledger row that points at
        it. Running runs are never touched (nor is any part of them), whatever
        their age, and neither are flows, manifests (a run still running, or
        another instance, may use one) or schedules. An idempotency key whose
        run is pruned is free again: a later trigger with it starts a new run.

        Runs are deleted in batches of at most ``batch_size`` (> 0), each batch
        in a transaction of its own, so no lock is held for long and the
        engine's writes go on in between. A run that is busy when its batch is
        taken (one that a concurrent write is retrying) may be left for the
        next prune. Since a cron run's fire ledger row goes with it,
        ``older_than`` should be well before any cron tick still to be fired
        (minutes at least): the orchestrator never prunes into the future.
        """
