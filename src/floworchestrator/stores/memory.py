"""The in-memory store: everything in dicts, nothing survives the process.

For tests, demos and benchmarks. It runs the same batch algorithm as the SQL
stores (``_batch.apply_ops``) and rolls a failed batch back with an undo log,
so it passes the same contract suite.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from .._status import FINAL_STEP_STATUSES, RunStatus, StepStatus
from ..exceptions import StoreError
from ._batch import StepState, Txn, apply_ops
from .base import (
    ALL_RUNS,
    AttemptRecord,
    Claim,
    Complete,
    Dispatch,
    EventRecord,
    ExpireLease,
    ExtendLeases,
    FlowRecord,
    Grant,
    Op,
    Result,
    RunFilter,
    RunRecord,
    RunStats,
    Signal,
    SignalRecord,
    StartRun,
    StepRecord,
    Store,
)


@dataclass(slots=True)
class _Run:
    rec: RunRecord
    body_json: str
    headers_json: str
    open: int = 0


@dataclass(slots=True)
class _Step:
    status: StepStatus
    waiting: int = 0
    generation: int = 0
    queued: bool = False
    attempts: int = 0
    inputs_json: str | None = None
    output_json: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    owner: str | None = None
    lease_until: datetime | None = None
    not_before: datetime | None = None
    queued_at: datetime | None = None
    trace_json: str | None = None
    first_started_at: datetime | None = None
    waiting_signal: str | None = None
    loop_item_json: str | None = None
    attempt_base: int = 0
    loop_total: int = 0
    loop_started: int = 0
    loop_done: int = 0


@dataclass(slots=True)
class _Data:
    flows: dict[str, FlowRecord] = field(default_factory=dict)
    manifests: dict[str, str] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)
    run_keys: dict[tuple[str, str], str] = field(default_factory=dict)
    steps: dict[str, dict[str, _Step]] = field(default_factory=dict)
    ledger: set[tuple[str, str, int]] = field(default_factory=set)
    attempts: dict[str, list[AttemptRecord]] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    """In id order; ids are never reused, also after prune() removed some."""
    event_seq: int = 0
    fires: dict[tuple[str, str, datetime], str] = field(default_factory=dict)
    signals: dict[int, _Signal] = field(default_factory=dict)
    signal_seq: int = 0
    schedules: dict[tuple[str, str], tuple[bool, str | None]] = field(default_factory=dict)


@dataclass(slots=True)
class _Signal:
    signal_id: int
    run_id: str
    name: str
    payload_json: str
    created_at: datetime
    consumed_by: str | None = None
    consumed_at: datetime | None = None


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_STEP_FIELDS = _Step.__slots__
_snapshot = operator.attrgetter(*_STEP_FIELDS)


class _MemoryTxn(Txn):
    def __init__(self, data: _Data) -> None:
        self.d = data
        self.undo: list[Callable[[], object]] = []
        self.saved: dict[int, tuple[_Step, tuple[Any, ...]]] = {}

    def rollback(self) -> None:
        for row, values in self.saved.values():
            for name, value in zip(_STEP_FIELDS, values, strict=True):
                setattr(row, name, value)
        for undo in reversed(self.undo):
            undo()

    def _step(self, run_id: str, key: str) -> _Step | None:
        steps = self.d.steps.get(run_id)
        return None if steps is None else steps.get(key)

    def _save(self, row: _Step) -> None:
        # One snapshot per row per batch is enough to roll the batch back.
        if id(row) not in self.saved:
            self.saved[id(row)] = (row, _snapshot(row))

    def flow_enabled(self, flow_id: str) -> bool:
        flow = self.d.flows.get(flow_id)
        return flow is not None and flow.enabled

    def find_run_by_key(self, flow_id: str, key: str) -> str | None:
        return self.d.run_keys.get((flow_id, key))

    def insert_run(self, op: StartRun) -> None:
        d = self.d
        if op.run_id in d.runs:
            raise StoreError(f"a run with id {op.run_id!r} already exists")
        rec = RunRecord(
            op.run_id, op.flow_id, RunStatus.RUNNING, op.manifest_id, op.trigger_key, None, {},
            op.idempotency_key, op.now, None, op.deadline,
        )
        d.runs[op.run_id] = _Run(rec, op.body_json, op.headers_json, len(op.step_keys))
        d.steps[op.run_id] = {k: _Step(StepStatus.PENDING, w) for k, w in zip(op.step_keys, op.waiting, strict=True)}
        if op.idempotency_key is not None:
            d.run_keys[(op.flow_id, op.idempotency_key)] = op.run_id

        def restore() -> None:
            d.runs.pop(op.run_id, None)
            d.steps.pop(op.run_id, None)
            if op.idempotency_key is not None:
                d.run_keys.pop((op.flow_id, op.idempotency_key), None)

        self.undo.append(restore)

    def run_status(self, run_id: str) -> RunStatus | None:
        run = self.d.runs.get(run_id)
        return None if run is None else run.rec.status

    def run_flow(self, run_id: str) -> str:
        return self.d.runs[run_id].rec.flow_id

    def load_steps(self, run_id: str) -> dict[str, StepState]:
        return {
            k: StepState(s.status, s.generation, s.queued, s.waiting_signal is not None)
            for k, s in self.d.steps.get(run_id, {}).items()
        }

    def load_statuses(self, run_id: str, keys: Iterable[str]) -> dict[str, StepStatus]:
        steps = self.d.steps.get(run_id, {})
        return {k: steps[k].status for k in keys if k in steps}

    def release(self, run_id: str, keys: Sequence[str]) -> dict[str, int]:
        steps = self.d.steps.get(run_id, {})
        out: dict[str, int] = {}
        for k in keys:
            row = steps.get(k)
            if row is None:
                continue
            self._save(row)
            row.waiting -= 1
            if row.waiting == 0 and row.status is StepStatus.PENDING and not row.queued:
                out[k] = row.generation
        return out

    def close(self, run_id: str, n: int) -> int:
        run = self.d.runs[run_id]
        old = run.open
        run.open = old - n
        self.undo.append(functools.partial(setattr, run, "open", old))
        return run.open

    def set_counters(self, run_id: str, open_steps: int, waiting: Mapping[str, int]) -> None:
        self.close(run_id, self.d.runs[run_id].open - open_steps)
        steps = self.d.steps[run_id]
        for k, w in waiting.items():
            row = steps[k]
            self._save(row)
            row.waiting = w

    def queue(
        self, run_id: str, items: Sequence[tuple[str, int]], not_before: datetime | None, now: datetime
    ) -> list[tuple[str, int]]:
        out = []
        for key, gen in items:
            entry = (run_id, key, gen)
            row = self._step(run_id, key)
            if entry in self.d.ledger or row is None:
                continue
            self.d.ledger.add(entry)
            self.undo.append(functools.partial(self.d.ledger.discard, entry))
            self._save(row)
            row.status, row.queued, row.generation = StepStatus.PENDING, True, gen
            row.not_before, row.queued_at = not_before, now
            out.append((key, gen))
        return out

    def claim(self, op: Claim) -> Grant | None:
        run = self.d.runs.get(op.run_id)
        row = self._step(op.run_id, op.step_key)
        if (
            run is None or row is None or run.rec.status is not RunStatus.RUNNING
            or row.status is not StepStatus.PENDING or not row.queued or row.generation != op.generation
            or (row.not_before is not None and row.not_before > op.now)
        ):
            return None
        self._save(row)
        row.status, row.queued, row.owner, row.lease_until = StepStatus.RUNNING, False, op.owner, op.lease_until
        row.attempts += 1
        row.started_at = op.now
        if row.first_started_at is None:
            row.first_started_at = op.now
        steps = self.d.steps[op.run_id]
        outputs = {k: (steps[k].status, steps[k].output_json, steps[k].error) for k in op.want_outputs if k in steps}
        signal = None
        name = row.waiting_signal or op.signal
        if name is not None:
            sig = self._unconsumed(op.run_id, name)
            signal = None if sig is None else (sig.signal_id, sig.payload_json)
        return Grant(row.attempts - row.attempt_base, run.rec.manifest_id, run.rec.trigger_key, run.body_json, run.headers_json, outputs,
                     row.first_started_at, signal, row.loop_item_json)

    def _unconsumed(self, run_id: str, name: str) -> _Signal | None:
        for sig in self.d.signals.values():
            if sig.run_id == run_id and sig.name == name and sig.consumed_by is None:
                return sig
        return None

    def finish_step(self, op: Complete, attempt_status: StepStatus) -> bool:
        row = self._step(op.run_id, op.step_key)
        if row is None or row.status is not StepStatus.RUNNING or row.generation != op.generation or row.owner != op.owner:
            return False
        self._save(row)
        row.status, row.owner, row.lease_until = op.status, None, None
        row.output_json, row.error, row.inputs_json = op.output_json, op.error, op.inputs_json
        row.trace_json, row.waiting_signal = op.trace_json, None
        if op.status in FINAL_STEP_STATUSES:
            row.finished_at = op.now
        self._attempt(
            AttemptRecord(op.run_id, op.step_key, row.attempts, op.generation, attempt_status, op.owner, op.started_at, op.now, op.error)
        )
        return True

    def _attempt(self, rec: AttemptRecord) -> None:
        lst = self.d.attempts.setdefault(rec.run_id, [])
        lst.append(rec)
        self.undo.append(lst.pop)

    def set_steps(self, run_id: str, keys: Iterable[str], status: StepStatus, now: datetime, *, reset: bool = False) -> None:
        for k in keys:
            row = self._step(run_id, k)
            if row is None:
                continue
            self._save(row)
            row.status, row.queued = status, False
            if reset:
                row.attempt_base = row.attempts
                row.output_json = row.error = row.inputs_json = row.trace_json = row.waiting_signal = None
                row.started_at = row.finished_at = row.owner = row.lease_until = row.not_before = row.first_started_at = None
            elif status in FINAL_STEP_STATUSES:
                row.finished_at = now

    def _set_run(self, run_id: str, rec: RunRecord) -> None:
        run = self.d.runs[run_id]
        old = run.rec
        run.rec = rec
        self.undo.append(lambda: setattr(run, "rec", old))

    def finish_run(self, run_id: str, status: RunStatus, now: datetime) -> bool:
        run = self.d.runs.get(run_id)
        if run is None or run.rec.status is not RunStatus.RUNNING:
            return False
        self._set_run(run_id, replace(run.rec, status=status, finished_at=now))
        return True

    def reopen_run(self, run_id: str, deadline: datetime | None) -> None:
        run = self.d.runs[run_id]
        self._set_run(run_id, replace(run.rec, status=RunStatus.RUNNING, finished_at=None, deadline=deadline))

    def take_back(self, op: ExpireLease, status: StepStatus, error: str) -> bool:
        row = self._step(op.run_id, op.step_key)
        if row is None or row.status is not StepStatus.RUNNING or row.generation != op.generation:
            return False
        if op.owner is not None:
            if row.owner != op.owner:
                return False
        elif row.lease_until is None or row.lease_until >= op.now:
            return False
        self._save(row)
        self._attempt(AttemptRecord(
            op.run_id, op.step_key, row.attempts, op.generation, status, row.owner,
            row.started_at or op.now, op.now, error.format(owner=row.owner),
        ))
        row.status, row.owner, row.lease_until = StepStatus.PENDING, None, None
        return True

    def extend_leases(self, op: ExtendLeases) -> None:
        for run_id, key, gen in op.steps:
            row = self._step(run_id, key)
            if row is not None and row.status is StepStatus.RUNNING and row.generation == gen and row.owner == op.owner:
                self._save(row)
                row.lease_until = op.lease_until

    def expand(self, op: Complete, child_keys: Sequence[str], waiting: Sequence[int], per_item: int, started: int) -> bool:
        row = self._step(op.run_id, op.step_key)
        if row is None or row.status is not StepStatus.RUNNING or row.generation != op.generation or row.owner != op.owner:
            return False
        assert op.loop is not None
        items = op.loop[0]
        self._save(row)
        row.owner = row.lease_until = None
        row.inputs_json = "[" + ",".join(items) + "]"
        row.loop_total, row.loop_started, row.loop_done = len(items), started, 0
        steps = self.d.steps[op.run_id]
        for i, key in enumerate(child_keys):
            steps[key] = _Step(StepStatus.PENDING, waiting[i % per_item], loop_item_json=items[i // per_item])
        self.undo.append(lambda: [steps.pop(k, None) for k in child_keys])
        self.close(op.run_id, -len(child_keys))
        return True

    def loop_item_done(self, run_id: str, parent: str) -> tuple[int | None, int | None]:
        row = self.d.steps[run_id][parent]
        self._save(row)
        row.loop_done += 1
        start = None
        if row.loop_started < row.loop_total:
            start = row.loop_started
            row.loop_started += 1
        return start, row.loop_total if row.loop_done >= row.loop_total else None

    def finish_loop(self, run_id: str, parent: str, status: StepStatus, output_json: str, error: str | None, now: datetime) -> None:
        row = self.d.steps[run_id][parent]
        self._save(row)
        row.status, row.output_json, row.error, row.finished_at = status, output_json, error, now
        self._attempt(AttemptRecord(run_id, parent, row.attempts, row.generation, status, None, row.started_at or now, now, error))

    def load_outputs(self, run_id: str, keys: Sequence[str]) -> dict[str, tuple[StepStatus, str | None, str | None]]:
        steps = self.d.steps.get(run_id, {})
        return {k: (steps[k].status, steps[k].output_json, steps[k].error) for k in keys if k in steps}

    def delete_children(self, run_id: str, parent: str) -> None:
        steps = self.d.steps[run_id]
        prefix = parent + "."
        gone = {k: v for k, v in steps.items() if k.startswith(prefix)}
        for k in gone:
            del steps[k]
        entries = {e for e in self.d.ledger if e[0] == run_id and e[1].startswith(prefix)}
        self.d.ledger -= entries

        def restore() -> None:
            steps.update(gone)
            self.d.ledger |= entries

        self.undo.append(restore)

    def record_fire(self, flow_id: str, trigger: str, fire_time: datetime, run_id: str) -> str | None:
        key = (flow_id, trigger, fire_time)
        if key in self.d.fires:
            return self.d.fires[key]
        self.d.fires[key] = run_id
        self.undo.append(functools.partial(self.d.fires.pop, key, None))
        return None

    def insert_signal(self, op: Signal) -> int:
        d = self.d
        d.signal_seq += 1
        sig = _Signal(d.signal_seq, op.run_id, op.name, op.payload_json, op.now)
        d.signals[sig.signal_id] = sig

        def restore() -> None:
            del d.signals[sig.signal_id]
            d.signal_seq -= 1

        self.undo.append(restore)
        return sig.signal_id

    def signal_available(self, signal_id: int) -> bool:
        sig = self.d.signals.get(signal_id)
        return sig is not None and sig.consumed_by is None

    def has_signal(self, run_id: str, name: str) -> bool:
        return self._unconsumed(run_id, name) is not None

    def parked_steps(self, run_id: str, name: str) -> dict[str, int]:
        return {
            k: s.generation for k, s in self.d.steps.get(run_id, {}).items()
            if s.waiting_signal == name and s.status is StepStatus.PENDING
        }

    def park(self, run_id: str, key: str, name: str) -> None:
        row = self._step(run_id, key)
        if row is not None:
            self._save(row)
            row.waiting_signal = name

    def consume_signal(self, signal_id: int, step_key: str, now: datetime) -> None:
        sig = self.d.signals[signal_id]
        old = (sig.consumed_by, sig.consumed_at)
        sig.consumed_by, sig.consumed_at = step_key, now

        def restore() -> None:
            sig.consumed_by, sig.consumed_at = old

        self.undo.append(restore)

    def event(self, run_id: str, step_key: str | None, kind: str, data: object, now: datetime) -> None:
        d = self.d
        d.event_seq += 1
        d.events.append(EventRecord(d.event_seq, run_id, step_key, kind, data, now))

        def restore() -> None:
            d.events.pop()
            d.event_seq -= 1

        self.undo.append(restore)


class MemoryStore(Store):
    """A store that keeps everything in this process's memory."""

    def __init__(self) -> None:
        self._d = _Data()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def apply(self, ops: Sequence[Op]) -> list[Result]:
        tx = _MemoryTxn(self._d)
        try:
            return apply_ops(tx, ops)
        except BaseException:
            tx.rollback()
            raise

    async def upsert_flows(self, flows: Sequence[tuple[str, str, str, str, bool]], now: datetime) -> None:
        for flow_id, version, manifest_id, manifest_json, enabled in flows:
            old = self._d.flows.get(flow_id)
            self._d.manifests.setdefault(manifest_id, manifest_json)
            self._d.flows[flow_id] = FlowRecord(
                flow_id, version, manifest_id, json.loads(manifest_json), enabled if old is None else old.enabled, now
            )

    async def list_flows(self) -> list[FlowRecord]:
        return [self._d.flows[k] for k in sorted(self._d.flows)]

    async def set_flow_enabled(self, flow_id: str, enabled: bool, now: datetime) -> bool:
        old = self._d.flows.get(flow_id)
        if old is None:
            return False
        self._d.flows[flow_id] = replace(old, enabled=enabled, updated_at=now)
        return True

    async def get_manifest(self, manifest_id: str) -> dict[str, Any] | None:
        text = self._d.manifests.get(manifest_id)
        return None if text is None else dict(json.loads(text))

    def _run(self, run: _Run) -> RunRecord:
        return replace(run.rec, trigger_body=_loads(run.body_json), trigger_headers=_loads(run.headers_json) or {})

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self._d.runs.get(run_id)
        return None if run is None else self._run(run)

    def _filter(self, where: RunFilter) -> list[_Run]:
        needle = where.search.lower() if where.search else None
        return [
            r for r in self._d.runs.values()
            if (where.flow_id is None or r.rec.flow_id == where.flow_id) and (where.status is None or r.rec.status is where.status)
            and (where.since is None or r.rec.created_at >= where.since) and (where.until is None or r.rec.created_at < where.until)
            and (needle is None or needle in r.rec.run_id.lower() or needle in r.rec.flow_id.lower()
                 or needle in r.body_json.lower())
        ]

    async def list_runs(self, where: RunFilter = ALL_RUNS, *, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        runs = self._filter(where)
        runs.sort(key=lambda r: r.rec.run_id, reverse=True)
        return [self._run(r) for r in runs[offset : offset + limit]]

    async def count_runs(self, where: RunFilter = ALL_RUNS) -> int:
        return len(self._filter(where))

    async def run_stats(self, since: datetime, bucket_seconds: float, buckets: int) -> RunStats:
        totals: Counter[RunStatus] = Counter()
        counts: Counter[tuple[int, RunStatus]] = Counter()
        start = since.timestamp()
        for r in self._d.runs.values():
            totals[r.rec.status] += 1
            i = int((r.rec.created_at.timestamp() - start) // bucket_seconds)
            if 0 <= i < buckets:
                counts[i, r.rec.status] += 1
        return RunStats(dict(totals), [(i, st, n) for (i, st), n in sorted(counts.items())])

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        return [
            StepRecord(
                run_id, k, s.status, s.generation, s.queued, s.attempts, _loads(s.inputs_json), _loads(s.output_json),
                s.error, s.started_at, s.finished_at, s.owner, s.lease_until, s.not_before,
                _loads(s.trace_json), s.waiting_signal,
            )
            for k, s in self._d.steps.get(run_id, {}).items()
        ]

    async def get_attempts(self, run_id: str) -> list[AttemptRecord]:
        return list(self._d.attempts.get(run_id, []))

    async def get_events(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        evs = self._d.events
        start = bisect.bisect_right(evs, after, key=operator.attrgetter("event_id"))
        return [e for e in evs[start:] if run_id is None or e.run_id == run_id][:limit]

    async def last_event_id(self) -> int:
        return self._d.events[-1].event_id if self._d.events else 0

    async def find_expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str, str, int]]:
        out = []
        for run_id, steps in self._d.steps.items():
            for k, s in steps.items():
                if s.status is StepStatus.RUNNING and s.lease_until is not None and s.lease_until < now:
                    out.append((self._d.runs[run_id].rec.flow_id, run_id, k, s.generation))
        return out[:limit]

    async def find_queued(self, now: datetime, due_before: datetime, limit: int = 500) -> list[Dispatch]:
        found: list[tuple[datetime, Dispatch]] = []
        for run_id, steps in self._d.steps.items():
            run = self._d.runs[run_id].rec
            if run.status is not RunStatus.RUNNING:
                continue
            for k, s in steps.items():
                due = s.not_before or s.queued_at
                if s.queued and due is not None and due < due_before:
                    delay = max(0.0, (s.not_before - now).total_seconds()) if s.not_before else 0.0
                    found.append((due, Dispatch(run.flow_id, run_id, k, s.generation, delay)))
        found.sort(key=lambda x: x[0])
        return [d for _, d in found[:limit]]

    async def find_overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        return [
            r.rec.run_id for r in self._d.runs.values()
            if r.rec.status is RunStatus.RUNNING and r.rec.deadline is not None and r.rec.deadline < now
        ][:limit]

    async def get_signals(self, run_id: str) -> list[SignalRecord]:
        return [
            SignalRecord(s.signal_id, s.run_id, s.name, _loads(s.payload_json), s.created_at, s.consumed_by)
            for s in self._d.signals.values() if s.run_id == run_id
        ]

    async def get_schedule_overrides(self) -> dict[tuple[str, str], tuple[bool, str | None]]:
        return dict(self._d.schedules)

    async def set_schedule(self, flow_id: str, trigger: str, *, paused: bool | None = None,
                           expression: str | None = None, clear_expression: bool = False, now: datetime) -> None:
        old_paused, old_expr = self._d.schedules.get((flow_id, trigger), (False, None))
        self._d.schedules[(flow_id, trigger)] = (
            old_paused if paused is None else paused,
            None if clear_expression else (expression if expression is not None else old_expr),
        )

    async def find_idle_runs(self, limit: int = 500) -> list[tuple[str, str, str]]:
        out = []
        for run_id, run in self._d.runs.items():
            if run.rec.status is RunStatus.RUNNING and not any(
                s.queued or s.status is StepStatus.RUNNING or s.waiting_signal is not None for s in self._d.steps[run_id].values()
            ):
                out.append((run.rec.flow_id, run_id, run.rec.manifest_id))
        return out[:limit]

    # -- retention ---------------------------------------------------------------------

    async def prune(self, older_than: datetime, *, batch_size: int = 500) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        candidates = sorted(run_id for run_id, run in self._d.runs.items() if self._prunable(run, older_than))
        deleted = 0
        for i in range(0, len(candidates), batch_size):
            if i:
                await asyncio.sleep(0)  # a batch at a time: the engine's writes go on in between
            # Checked again: a run may have been retried (Running again) since the list was made.
            gone = {r for r in candidates[i : i + batch_size] if (run := self._d.runs.get(r)) and self._prunable(run, older_than)}
            self._delete_runs(gone)
            deleted += len(gone)
        return deleted

    @staticmethod
    def _prunable(run: _Run, older_than: datetime) -> bool:
        rec = run.rec
        return rec.status is not RunStatus.RUNNING and rec.finished_at is not None and rec.finished_at < older_than

    def _delete_runs(self, gone: set[str]) -> None:
        if not gone:
            return
        d = self._d
        for run_id in gone:
            rec = d.runs.pop(run_id).rec
            d.steps.pop(run_id, None)
            d.attempts.pop(run_id, None)
            key = (rec.flow_id, rec.idempotency_key or "")
            if rec.idempotency_key is not None and d.run_keys.get(key) == run_id:
                del d.run_keys[key]
        d.ledger.difference_update([e for e in d.ledger if e[0] in gone])
        d.events[:] = [e for e in d.events if e.run_id not in gone]
        for signal_id in [i for i, s in d.signals.items() if s.run_id in gone]:
            del d.signals[signal_id]
        for fire in [f for f, run_id in d.fires.items() if run_id in gone]:
            del d.fires[fire]
