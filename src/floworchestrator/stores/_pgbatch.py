"""PostgreSQL's fast path for the common batch: the whole batch in one or two round trips.

The ordinary path (:class:`floworchestrator.stores.postgres._PgTxn`) sends one
statement per primitive per op, so the writer thread's CPU grows with the
batch. This path applies the same algorithm (:func:`._batch.apply_ops`) to a
copy of the rows in memory instead (:class:`CachedTxn`), and writes the result
back set-based:

1. ``BEGIN``; lock the batch's runs (in run id order, as the ordinary path
   does) and read them; read the step rows the batch's ops are known to need
   (each op's step, its successors, their predecessors when few, the outputs
   a claim will hand over, and every step of a run the batch may finish);
   read the flows of the runs started. One round trip.
2. Run the algorithm against those rows. A row it needs that was not read is
   read then (one more round trip; rare).
3. Write what changed in one statement (each table's rows given as one JSON
   parameter, which psycopg sends far faster than an array per column): new
   runs and steps, changed runs and steps, dispatch ledger rows, attempts and
   events; ``COMMIT``. One round trip.

Every writer locks a run's row before it reads or writes the run's steps, so
while the batch holds its locks the rows it read cannot change under it.

A small batch (one run's next step: latency, not throughput) skips step 1's
wait when the rows it needs are those an earlier batch of this store
committed (:class:`Remembered`): it sends the locks without waiting for them,
and its write first checks, under the locks, that the remembered rows it took
are still exactly so; if not, nothing is written and the batch is applied
again reading them (:class:`Stale`).

Dispatch ledger rows are inserted without ``ON CONFLICT``: the algorithm
queues a step only at a generation above the step's current one, which no
ledger row can have (a step's generation is the highest it was queued at).
Should that ever not hold, the insert fails and the batch is applied again the
ordinary way. The same happens (:class:`Fallback`) for ops this path does not
handle — signals, ForEach, idempotency keys, cron fires, cancel, retry,
reconcile, lease changes — so those keep exactly the ordinary path's
behaviour.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from .._status import FINAL_STEP_STATUSES, RunStatus, StepStatus
from ._batch import StepState, Txn
from ._rows import RUN_STATUS, STEP_STATUS, dt, ts
from .base import Claim, Complete, ExpireLease, ExtendLeases, Grant, Op, Signal, StartRun

Row = tuple[Any, ...]
Conn = psycopg.Connection[Row]
Cursor = psycopg.Cursor[Row]

_FINAL = FINAL_STEP_STATUSES
#: Only a batch of at most this many ops takes and leaves remembered rows (:class:`Remembered`). Such a batch
#: waits for its round trips (one run's steps one after another); a bigger one has company enough to keep the
#: machine busy while it waits, and checking and remembering its rows would cost more than reading them (and
#: the two writers, busy with the same runs, would often find each other's remembered rows changed).
_RECALL_OPS = 8
#: A successor's predecessors are read up front only if it has at most this many (a join of many
#: steps is read when it becomes ready, once, rather than with every completion of its run).
_FEW_PREDS = 8

_STEP_COLUMNS = """s.run_id, s.step_key, s.status, s.waiting, s.generation, s.queued, s.attempts, s.attempt_base,
    s.owner, s.lease_until, s.not_before, s.queued_at, s.started_at, s.finished_at, s.first_started_at,
    s.waiting_signal, s.loop_item"""

# Lock the batch's runs in one order for every writer (ORDER BY locks rows as it returns them) and read them.
_LOCK_RUNS = """
SELECT run_id, status, open_steps, flow_id, manifest_id, trigger_key, trigger_body, trigger_headers
FROM fo_runs WHERE run_id = ANY(%s::text[]) ORDER BY run_id FOR UPDATE
"""
# Step rows: the named ones (with h, also their output and error), and every step of the runs with at most c
# open steps (the batch may finish them). Each input is a JSON array of rows (one text parameter: psycopg
# dumps that far faster than an array per column).
_LOAD_STEPS = f"""
SELECT {_STEP_COLUMNS}, (u->>2)::boolean, CASE WHEN (u->>2)::boolean THEN s.output END,
    CASE WHEN (u->>2)::boolean THEN s.error END
FROM jsonb_array_elements(%s::jsonb) AS u
JOIN fo_steps s ON s.run_id = u->>0 AND s.step_key = u->>1
UNION ALL
SELECT {_STEP_COLUMNS}, false, NULL, NULL
FROM jsonb_array_elements(%s::jsonb) AS u
JOIN fo_runs r ON r.run_id = u->>0 AND r.open_steps <= (u->>1)::integer
JOIN fo_steps s ON s.run_id = r.run_id
"""
_LOAD_RUN_STEPS = f"SELECT {_STEP_COLUMNS}, false, NULL, NULL FROM fo_steps s WHERE s.run_id = %s"
_LOAD_FLOWS = "SELECT flow_id, enabled FROM fo_flows WHERE flow_id = ANY(%s::text[])"

# Everything a batch changed, in one statement. Each part is a JSON array of rows (or empty). The parts touch
# different rows (new runs and steps are not among the changed ones), so the order they run in does not matter;
# attempts and events are inserted in the order they were recorded (their ids are that order). "ok" checks the
# rows the batch took from the rows it remembered from earlier batches instead of reading them: only if they
# are still exactly so does anything get written (else the caller applies the batch again, reading them).
# Changed steps get every column the fast path may change; output, error, inputs and trace only where the step
# finished (fin). Dispatches have no ON CONFLICT: a conflict means the batch's idea of the ledger was wrong
# (see the module docstring). Kept under psycopg's 4 kB limit for caching a statement's parsing.
_WRITE = " ".join("""
WITH ok AS (
    SELECT (SELECT count(*) FROM jsonb_array_elements(%(seen_runs)s::jsonb) e
            JOIN fo_runs r ON r.run_id = e->>0 AND r.status = e->>1 AND r.open_steps = (e->>2)::int)
           = jsonb_array_length(%(seen_runs)s::jsonb)
       AND (SELECT count(*) FROM jsonb_array_elements(%(seen_steps)s::jsonb) e
            JOIN fo_steps s ON s.run_id = e->>0 AND s.step_key = e->>1
            WHERE (s.status, s.waiting, s.generation, s.queued, s.attempts, s.attempt_base, s.owner, s.lease_until,
                   s.not_before, s.queued_at, s.started_at, s.finished_at, s.first_started_at, s.waiting_signal,
                   s.loop_item)
              IS NOT DISTINCT FROM (e->>2, (e->>3)::int, (e->>4)::int, (e->>5)::bool, (e->>6)::int, (e->>7)::int,
                   e->>8, (e->>9)::float8, (e->>10)::float8, (e->>11)::float8, (e->>12)::float8, (e->>13)::float8,
                   (e->>14)::float8, e->>15, e->>16))
           = jsonb_array_length(%(seen_steps)s::jsonb) AS ok
), new_runs AS (
    INSERT INTO fo_runs (run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers,
        idempotency_key, open_steps, created_at, finished_at, deadline)
    SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, e->>7, (e->>8)::int, (e->>9)::float8, (e->>10)::float8,
        (e->>11)::float8
    FROM jsonb_array_elements(%(new_runs)s::jsonb) e WHERE (SELECT ok FROM ok)
), new_steps AS (
    INSERT INTO fo_steps (run_id, step_key, seq, status, waiting, generation, queued, attempts, owner, lease_until,
        not_before, queued_at, started_at, finished_at, first_started_at, output, error, inputs, trace)
    SELECT e->>0, e->>1, (e->>2)::int, e->>3, (e->>4)::int, (e->>5)::int, (e->>6)::bool, (e->>7)::int, e->>8,
        (e->>9)::float8, (e->>10)::float8, (e->>11)::float8, (e->>12)::float8, (e->>13)::float8, (e->>14)::float8,
        e->>15, e->>16, e->>17, e->>18
    FROM jsonb_array_elements(%(new_steps)s::jsonb) e WHERE (SELECT ok FROM ok)
), runs AS (
    UPDATE fo_runs r SET status = e->>1, open_steps = (e->>2)::int, finished_at = (e->>3)::float8
    FROM jsonb_array_elements(%(runs)s::jsonb) e WHERE r.run_id = e->>0 AND (SELECT ok FROM ok)
), steps AS (
    UPDATE fo_steps s SET status = e->>2, waiting = (e->>3)::int, generation = (e->>4)::int, queued = (e->>5)::bool,
        attempts = (e->>6)::int, owner = e->>7, lease_until = (e->>8)::float8, not_before = (e->>9)::float8,
        queued_at = (e->>10)::float8, started_at = (e->>11)::float8, finished_at = (e->>12)::float8,
        first_started_at = (e->>13)::float8, waiting_signal = e->>14,
        output = CASE WHEN (e->>15)::bool THEN e->>16 ELSE s.output END,
        error = CASE WHEN (e->>15)::bool THEN e->>17 ELSE s.error END,
        inputs = CASE WHEN (e->>15)::bool THEN e->>18 ELSE s.inputs END,
        trace = CASE WHEN (e->>15)::bool THEN e->>19 ELSE s.trace END
    FROM jsonb_array_elements(%(steps)s::jsonb) e
    WHERE s.run_id = e->>0 AND s.step_key = e->>1 AND (SELECT ok FROM ok)
), dispatches AS (
    INSERT INTO fo_dispatches (run_id, step_key, generation, dispatched_at)
    SELECT e->>0, e->>1, (e->>2)::int, (e->>3)::float8 FROM jsonb_array_elements(%(dispatches)s::jsonb) e
    WHERE (SELECT ok FROM ok)
), attempts AS (
    INSERT INTO fo_attempts (run_id, step_key, attempt, generation, status, owner, started_at, finished_at, error)
    SELECT e->>0, e->>1, (e->>2)::int, (e->>3)::int, e->>4, e->>5, (e->>6)::float8, (e->>7)::float8, e->>8
    FROM jsonb_array_elements(%(attempts)s::jsonb) WITH ORDINALITY AS t(e, i) WHERE (SELECT ok FROM ok) ORDER BY i
), events AS (
    INSERT INTO fo_events (run_id, step_key, kind, data, at)
    SELECT e->>0, e->>1, e->>2, e->>3, (e->>4)::float8
    FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS t(e, i) WHERE (SELECT ok FROM ok) ORDER BY i
)
SELECT ok FROM ok
""".split())


class Stale(Exception):
    """Rows the batch remembered from earlier batches had changed: nothing was written; apply it again."""


class Remembered:
    """The rows of the runs recent batches of this store touched, as they committed them.

    A batch whose every row it needs is here skips reading them (a round trip) and has its write check them
    instead: a row another process or writer changed since is caught by the check, so what is here is never
    trusted, only verified. Bounded: runs that ended are forgotten, the oldest go first, and a run with many
    steps or much data (trigger, outputs) is not kept. Shared by the writer threads.
    """

    def __init__(self, runs: int = 1024, rows: int = 32768, run_chars: int = 65536) -> None:
        self._runs: dict[str, tuple[tuple[Any, ...], dict[str, Row]]] = {}
        self._max_runs, self._max_rows, self._max_chars = runs, rows, run_chars
        self._rows = 0
        self._lock = threading.Lock()

    def get(self, run_id: str) -> tuple[tuple[Any, ...], dict[str, Row]] | None:
        return self._runs.get(run_id)

    def drop(self, run_ids: Iterable[str]) -> None:
        with self._lock:
            for r in run_ids:
                self._pop(r)

    def _pop(self, run_id: str) -> None:
        entry = self._runs.pop(run_id, None)
        if entry is not None:
            self._rows -= len(entry[1])

    def keep(self, runs: Iterable[_Run]) -> None:
        """After a commit: remember the runs still Running, forget the others."""
        with self._lock:
            for run in runs:
                self._pop(run.run_id)  # re-inserted last: the oldest go first
                if run.status != "Running":
                    continue
                rows = dict(run.recalled) if run.recalled else {}  # not taken: as remembered (checked when taken)
                rows.update((k, s.row(run.run_id, k)) for k, s in run.steps.items())
                chars = len(run.trigger_body) + len(run.headers) + sum(
                    len(r[16] or "") + len(r[18] or "") + len(r[19] or "") for r in rows.values())
                if len(rows) > self._max_rows // 8 or chars > self._max_chars:
                    continue
                self._runs[run.run_id] = ((run.run_id, run.status, run.open, run.flow_id, run.manifest_id,
                                           run.trigger_key, run.trigger_body, run.headers), rows)
                self._rows += len(rows)
            while self._runs and (len(self._runs) > self._max_runs or self._rows > self._max_rows):
                self._pop(next(iter(self._runs)))


class Fallback(Exception):
    """The batch needs what the fast path does not do; apply it the ordinary way."""


def eligible(ops: Sequence[Op]) -> bool:
    """True if every op is of a kind the fast path applies (the rest go the ordinary way)."""
    for op in ops:
        if isinstance(op, Complete):
            if op.loop is not None or op.park is not None or op.consume_signal is not None or op.graph.loops:
                return False
        elif isinstance(op, Claim):
            if op.signal is not None:
                return False
        elif isinstance(op, StartRun):
            if op.idempotency_key is not None or op.cron_fire is not None:
                return False
        else:
            return False
    return True


class _Step:
    """A step row as the batch sees it."""

    __slots__ = ("attempt_base", "attempts", "dirty", "error", "fin", "finished_at", "first_started_at", "generation",
                 "heavy", "inputs", "lease_until", "loop_item", "not_before", "output", "owner", "queued", "queued_at",
                 "seq", "started_at", "status", "trace", "waiting", "waiting_signal")

    def __init__(self, r: Row) -> None:
        (_, _, self.status, self.waiting, self.generation, self.queued, self.attempts, self.attempt_base, self.owner,
         self.lease_until, self.not_before, self.queued_at, self.started_at, self.finished_at, self.first_started_at,
         self.waiting_signal, self.loop_item, self.heavy, self.output, self.error) = r
        self.inputs: str | None = None
        self.trace: str | None = None
        self.fin = False  # output, error, inputs and trace were set by this batch
        self.dirty = False
        self.seq = 0

    def row(self, run_id: str, key: str) -> Row:
        """As read from the database (what :meth:`__init__` takes)."""
        return (run_id, key, self.status, self.waiting, self.generation, self.queued, self.attempts, self.attempt_base,
                self.owner, self.lease_until, self.not_before, self.queued_at, self.started_at, self.finished_at,
                self.first_started_at, self.waiting_signal, self.loop_item, self.heavy, self.output, self.error)


class _Run:
    """A run row as the batch sees it, with the step rows read so far."""

    __slots__ = ("absent", "created_at", "deadline", "dirty", "finished_at", "flow_id", "full", "headers", "idempotency_key",
                 "manifest_id", "new", "open", "recalled", "run_id", "status", "steps", "trigger_body", "trigger_key")

    def __init__(self, run_id: str, status: str, open_steps: int, flow_id: str, manifest_id: str, trigger_key: str,
                 body: str, headers: str) -> None:
        self.run_id, self.status, self.open, self.flow_id = run_id, status, open_steps, flow_id
        self.manifest_id, self.trigger_key, self.trigger_body, self.headers = manifest_id, trigger_key, body, headers
        self.steps: dict[str, _Step] = {}
        self.absent: set[str] = set()  # keys read and not found
        self.full = False  # every step row is in ``steps``
        self.recalled: dict[str, Row] | None = None  # rows recent batches left, not taken yet
        self.new = False
        self.dirty = False
        self.finished_at: float | None = None
        self.idempotency_key: str | None = None
        self.created_at = 0.0
        self.deadline: float | None = None


def _default_state(seq: int, waiting: int) -> _Step:
    s = _Step(("", "", "Pending", waiting, 0, False, 0, 0, None, None, None, None, None, None, None, None, None, True,
               None, None))
    s.seq = seq
    return s


class CachedTxn(Txn):
    """The primitives over rows held in memory; :meth:`write` sends the changes."""

    def __init__(self, conn: Conn, remembered: Remembered | None = None, *, recall: bool = True) -> None:
        self.conn = conn
        self.remembered = remembered
        self.recall = recall  # False: read every row (the remembered ones were found changed), remember after
        self.runs: dict[str, _Run] = {}
        self.seen_runs: list[tuple[str, str, int]] = []  # taken from ``remembered``: the write checks them
        self.small = True  # few enough ops to use ``remembered``
        self.seen_steps: list[Row] = []
        self.flows: dict[str, bool] = {}
        self.dispatches: list[tuple[str, str, int, float]] = []
        self.attempts: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []

    # -- reading ---------------------------------------------------------------

    def load(self, ops: Sequence[Op]) -> None:
        """Lock and read what ``ops`` are known to need (one round trip), or, if the rows recent batches left
        are all it needs, lock and take those (no round trip: the write checks them)."""
        run_ids: set[str] = set()
        want: dict[tuple[str, str], bool] = {}  # (run, key) -> with output
        finishing: dict[str, int] = {}
        flows: set[str] = set()
        for op in ops:
            if isinstance(op, Complete):
                run, key = op.run_id, op.step_key
                run_ids.add(run)
                want.setdefault((run, key), False)
                if op.status in _FINAL:
                    finishing[run] = finishing.get(run, 0) + 1
                    self._want_next(op, want)
            elif isinstance(op, Claim):
                run_ids.add(op.run_id)
                want.setdefault((op.run_id, op.step_key), False)
                for w in op.want_outputs:
                    want[(op.run_id, w)] = True
            elif isinstance(op, StartRun):
                flows.add(op.flow_id)
        conn = self.conn
        ordered = sorted(run_ids)
        self.small = len(ops) <= _RECALL_OPS
        if self.small and ordered and not flows and self._recall(ordered, want, finishing):
            conn.cursor().execute(_LOCK_RUNS, (ordered,))  # what it returns is not waited for
            return
        run_cur = conn.cursor().execute(_LOCK_RUNS, (ordered,)) if ordered else None
        step_cur = flow_cur = None
        if want or finishing:
            named = _json([(r, k, h) for (r, k), h in want.items()])
            step_cur = conn.cursor().execute(_LOAD_STEPS, (named, _json(finishing.items())))
        if flows:
            flow_cur = conn.cursor().execute(_LOAD_FLOWS, (list(flows),))
        if run_cur is not None:
            for row in run_cur.fetchall():
                self.runs[row[0]] = _Run(*row)
        if step_cur is not None:
            self._add(step_cur.fetchall())
            for r, k in want:
                got = self.runs.get(r)
                if got is not None and k not in got.steps:
                    got.absent.add(k)
            for r, n in finishing.items():
                got = self.runs.get(r)
                if got is not None and got.open <= n:
                    got.full = True
        if flow_cur is not None:
            self.flows.update((f, bool(e)) for f, e in flow_cur.fetchall())

    def _recall(self, run_ids: Sequence[str], want: Mapping[tuple[str, str], bool], finishing: Mapping[str, int]) -> bool:
        """Take the runs from the rows recent batches left, if every one and every wanted row is there."""
        mem = self.remembered
        if mem is None or not self.recall:
            return False
        got = {}
        for r in run_ids:
            entry = mem.get(r)
            if entry is None or (r in finishing and entry[0][2] <= finishing[r]):
                return False  # not there, or the batch may finish the run (that reads all of its steps)
            got[r] = entry
        for (r, k), h in want.items():
            row = got[r][1].get(k)
            if row is None or (h and not row[17]):
                return False
        for r, (fields, rows) in got.items():
            run = self.runs[r] = _Run(*fields)
            run.recalled = dict(rows)
            self.seen_runs.append((r, run.status, run.open))
        return True

    @staticmethod
    def _want_next(op: Complete, want: dict[tuple[str, str], bool]) -> None:
        """Add what the completion will likely read: its successors, their predecessors if few, and the
        outputs a folded claim of a successor hands over. Only a guess: whatever else is needed is read then."""
        run, graph = op.run_id, op.graph
        fold = op.fold_wants if op.fold_lease_until is not None else None
        try:
            for s in graph.succs_of(op.step_key):
                want.setdefault((run, s), False)
                preds = graph.preds_of(s)
                if len(preds) <= _FEW_PREDS:
                    for p in preds:
                        want.setdefault((run, p), False)
                if fold:
                    for w in fold.get(s, ()):
                        want[(run, w)] = True
        except (KeyError, ValueError):  # a key the graph does not know: the algorithm will say what it makes of it
            pass

    def _add(self, rows: Iterable[Row]) -> None:
        """Keep rows read from the database, unless the batch has the row already (it may have changed it);
        an output read now completes a row read without it (a row's output changes only with ``fin``)."""
        runs = self.runs
        for r in rows:
            run = runs.get(r[0])
            if run is None:
                continue
            s = run.steps.get(r[1])
            if s is None:
                run.steps[r[1]] = _Step(r)
                if run.recalled:
                    run.recalled.pop(r[1], None)  # read now: the remembered row is not needed (nor checked)
            elif r[17] and not s.heavy:
                s.heavy, s.output, s.error = True, r[18], r[19]

    def _steps(self, run: _Run, keys: Iterable[str]) -> dict[str, _Step]:
        """The rows of those of ``keys`` that exist, reading the ones not read yet."""
        steps = run.steps
        rec = run.recalled
        if rec:
            for k in keys:
                if k not in steps:
                    row = rec.pop(k, None)
                    if row is not None:
                        steps[k] = _Step(row)
                        self.seen_steps.append(row[:17])
        missing = [k for k in keys if k not in steps and k not in run.absent]
        if missing and not run.full:
            missing = list(dict.fromkeys(missing))
            rows = self.conn.cursor().execute(_LOAD_STEPS, (_json([(run.run_id, k, False) for k in missing]), "[]"))
            self._add(rows.fetchall())
            run.absent.update(k for k in missing if k not in steps)
        return steps

    def _all_steps(self, run: _Run) -> dict[str, _Step]:
        if not run.full:
            self._add(self.conn.cursor().execute(_LOAD_RUN_STEPS, (run.run_id,)).fetchall())
            run.full = True
            run.recalled = None
        return run.steps

    def _step(self, run: _Run, key: str) -> _Step | None:
        s = run.steps.get(key)
        if s is None:
            s = self._steps(run, (key,)).get(key)
        return s

    def _outputs(self, run: _Run, keys: Sequence[str]) -> dict[str, tuple[StepStatus, str | None, str | None]]:
        steps = self._steps(run, keys)
        need = [k for k in keys if k in steps and not steps[k].heavy]
        if need:
            self._add(self.conn.cursor().execute(_LOAD_STEPS, (_json([(run.run_id, k, True) for k in need]), "[]")).fetchall())
        return {k: (STEP_STATUS[steps[k].status], steps[k].output, steps[k].error) for k in keys if k in steps}

    # -- primitives --------------------------------------------------------------

    def flow_enabled(self, flow_id: str) -> bool:
        if flow_id not in self.flows:
            row = self.conn.cursor().execute(_LOAD_FLOWS, ([flow_id],)).fetchone()
            self.flows[flow_id] = bool(row and row[1])
        return self.flows[flow_id]

    def find_run_by_key(self, flow_id: str, key: str) -> str | None:
        raise Fallback

    def insert_run(self, op: StartRun) -> None:
        if op.run_id in self.runs:
            raise Fallback  # a duplicate: the ordinary path reports it
        run = _Run(op.run_id, "Running", len(op.step_keys), op.flow_id, op.manifest_id, op.trigger_key, op.body_json,
                   op.headers_json)
        run.new = run.full = True
        run.idempotency_key = op.idempotency_key
        run.created_at = ts(op.now)
        run.deadline = None if op.deadline is None else ts(op.deadline)
        run.steps = {k: _default_state(i, w) for i, (k, w) in enumerate(zip(op.step_keys, op.waiting, strict=True))}
        self.runs[op.run_id] = run

    def run_status(self, run_id: str) -> RunStatus | None:
        run = self.runs.get(run_id)
        return None if run is None else RUN_STATUS[run.status]

    def run_flow(self, run_id: str) -> str:
        return self.runs[run_id].flow_id

    def load_steps(self, run_id: str) -> dict[str, StepState]:
        run = self.runs.get(run_id)
        if run is None:
            return {}
        return {k: StepState(STEP_STATUS[s.status], s.generation, s.queued, s.waiting_signal is not None)
                for k, s in self._all_steps(run).items()}

    def load_statuses(self, run_id: str, keys: Iterable[str]) -> dict[str, StepStatus]:
        run = self.runs.get(run_id)
        if run is None:
            return {}
        keys = list(keys)
        steps = self._steps(run, keys)
        return {k: STEP_STATUS[steps[k].status] for k in keys if k in steps}

    def release(self, run_id: str, keys: Sequence[str]) -> dict[str, int]:
        run = self.runs.get(run_id)
        if run is None:
            return {}
        steps = self._steps(run, keys)
        out: dict[str, int] = {}
        for k in keys:
            s = steps.get(k)
            if s is not None:
                s.waiting -= 1
                s.dirty = True
        for k in keys:
            s = steps.get(k)
            if s is not None and s.waiting == 0 and s.status == "Pending" and not s.queued:
                out[k] = s.generation
        return out

    def close(self, run_id: str, n: int) -> int:
        run = self.runs.get(run_id)
        if run is None:
            return 0
        if n:
            run.open -= n
            run.dirty = True
        return run.open

    def set_counters(self, run_id: str, open_steps: int, waiting: Mapping[str, int]) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        run.open, run.dirty = open_steps, True
        steps = self._steps(run, waiting)
        for k, w in waiting.items():
            s = steps.get(k)
            if s is not None:
                s.waiting, s.dirty = w, True

    def queue(
        self, run_id: str, items: Sequence[tuple[str, int]], not_before: datetime | None, now: datetime
    ) -> list[tuple[str, int]]:
        run = self.runs.get(run_id)
        if run is None:
            raise Fallback
        steps = self._steps(run, [k for k, _ in items])
        t, nb = ts(now), None if not_before is None else ts(not_before)
        for key, gen in items:
            s = steps.get(key)
            if s is None or gen <= s.generation:
                raise Fallback  # whether the ledger has that row is not known here
            s.status, s.queued, s.generation, s.not_before, s.queued_at, s.dirty = "Pending", True, gen, nb, t, True
            self.dispatches.append((run_id, key, gen, t))
        return list(items)

    def claim(self, op: Claim) -> Grant | None:
        run = self.runs.get(op.run_id)
        if run is None or run.status != "Running":
            return None
        s = self._step(run, op.step_key)
        t = ts(op.now)
        if (s is None or s.status != "Pending" or not s.queued or s.generation != op.generation
                or (s.not_before is not None and s.not_before > t)):
            return None
        if s.waiting_signal is not None:
            raise Fallback
        s.status, s.queued, s.owner, s.lease_until, s.started_at = "Running", False, op.owner, ts(op.lease_until), t
        s.attempts += 1
        if s.first_started_at is None:
            s.first_started_at = t
        s.dirty = True
        outputs = self._outputs(run, op.want_outputs) if op.want_outputs else {}
        return Grant(s.attempts - s.attempt_base, run.manifest_id, run.trigger_key, run.trigger_body, run.headers, outputs,
                     dt(s.first_started_at), None, s.loop_item)

    def finish_step(self, op: Complete, attempt_status: StepStatus) -> bool:
        run = self.runs.get(op.run_id)
        if run is None:
            return False
        s = self._step(run, op.step_key)
        if s is None or s.status != "Running" or s.generation != op.generation or s.owner != op.owner:
            return False
        t = ts(op.now)
        s.status, s.owner, s.lease_until, s.waiting_signal = op.status.value, None, None, None
        s.output, s.error, s.inputs, s.trace = op.output_json, op.error, op.inputs_json, op.trace_json
        s.finished_at = t if op.status in _FINAL else None
        s.heavy = s.fin = s.dirty = True
        self.attempts.append(
            (op.run_id, op.step_key, s.attempts, op.generation, attempt_status.value, op.owner, ts(op.started_at), t, op.error)
        )
        return True

    def set_steps(self, run_id: str, keys: Iterable[str], status: StepStatus, now: datetime, *, reset: bool = False) -> None:
        if reset:
            raise Fallback
        run = self.runs.get(run_id)
        if run is None:
            return
        keys = list(keys)
        steps = self._steps(run, keys)
        fin = ts(now) if status in _FINAL else None
        for k in keys:
            s = steps.get(k)
            if s is not None:
                s.status, s.queued, s.finished_at, s.dirty = status.value, False, fin, True

    def finish_run(self, run_id: str, status: RunStatus, now: datetime) -> bool:
        run = self.runs.get(run_id)
        if run is None or run.status != "Running":
            return False
        run.status, run.finished_at, run.dirty = status.value, ts(now), True
        return True

    def event(self, run_id: str, step_key: str | None, kind: str, data: object, now: datetime) -> None:
        self.events.append((run_id, step_key, kind, None if data is None else json.dumps(data), ts(now)))

    # What the fast path leaves to the ordinary one (eligible() keeps such ops out; these are the backstop).

    def reopen_run(self, run_id: str, deadline: datetime | None) -> None:
        raise Fallback

    def take_back(self, op: ExpireLease, status: StepStatus, error: str) -> bool:
        raise Fallback

    def extend_leases(self, op: ExtendLeases) -> None:
        raise Fallback

    def record_fire(self, flow_id: str, trigger: str, fire_time: datetime, run_id: str) -> str | None:
        raise Fallback

    def insert_signal(self, op: Signal) -> int:
        raise Fallback

    def has_signal(self, run_id: str, name: str) -> bool:
        raise Fallback

    def parked_steps(self, run_id: str, name: str) -> dict[str, int]:
        raise Fallback

    def park(self, run_id: str, key: str, name: str) -> None:
        raise Fallback

    def consume_signal(self, signal_id: int, step_key: str, now: datetime) -> None:
        raise Fallback

    def signal_available(self, signal_id: int) -> bool:
        raise Fallback

    def expand(self, op: Complete, child_keys: Sequence[str], waiting: Sequence[int], per_item: int, started: int) -> bool:
        raise Fallback

    def loop_item_done(self, run_id: str, parent: str) -> tuple[int | None, int | None]:
        raise Fallback

    def finish_loop(self, run_id: str, parent: str, status: StepStatus, output_json: str, error: str | None, now: datetime) -> None:
        raise Fallback

    def load_outputs(self, run_id: str, keys: Sequence[str]) -> dict[str, tuple[StepStatus, str | None, str | None]]:
        raise Fallback

    def delete_children(self, run_id: str, parent: str) -> None:
        raise Fallback

    # -- writing -----------------------------------------------------------------

    def write(self) -> Cursor | None:
        """Send every change (the caller commits). Returns the cursor whose one row says whether the batch
        applied (False: remembered rows it took had changed, and it wrote nothing), or None if it sent nothing."""
        new_runs: list[tuple[Any, ...]] = []
        new_steps: list[tuple[Any, ...]] = []
        runs: list[tuple[Any, ...]] = []
        steps: list[tuple[Any, ...]] = []
        for r in self.runs.values():
            rid = r.run_id
            if r.new:
                new_runs.append((rid, r.flow_id, r.status, r.manifest_id, r.trigger_key, r.trigger_body, r.headers,
                                 r.idempotency_key, r.open, r.created_at, r.finished_at, r.deadline))
                new_steps.extend(
                    (rid, k, s.seq, s.status, s.waiting, s.generation, s.queued, s.attempts, s.owner, s.lease_until,
                     s.not_before, s.queued_at, s.started_at, s.finished_at, s.first_started_at, s.output, s.error,
                     s.inputs, s.trace) for k, s in r.steps.items())
                continue
            if r.dirty:
                runs.append((rid, r.status, r.open, r.finished_at))
            steps.extend(
                (rid, k, s.status, s.waiting, s.generation, s.queued, s.attempts, s.owner, s.lease_until, s.not_before,
                 s.queued_at, s.started_at, s.finished_at, s.first_started_at, s.waiting_signal, s.fin, s.output, s.error,
                 s.inputs, s.trace) for k, s in r.steps.items() if s.dirty)
        if not (new_runs or runs or steps or self.dispatches or self.attempts or self.events or self.seen_runs):
            return None
        return self.conn.cursor().execute(_WRITE, {
            "seen_runs": _json(self.seen_runs), "seen_steps": _json(self.seen_steps), "new_runs": _json(new_runs),
            "new_steps": _json(new_steps), "runs": _json(runs), "steps": _json(steps),
            "dispatches": _json(self.dispatches), "attempts": _json(self.attempts), "events": _json(self.events)})

    def keep(self) -> None:
        """After the commit: remember the rows of this batch's runs for the next batches."""
        if self.remembered is not None:
            if self.small:
                self.remembered.keep(self.runs.values())
            else:
                self.remembered.drop(self.runs)

    def forget(self) -> None:
        """After a failure: forget what is remembered of this batch's runs."""
        if self.remembered is not None:
            self.remembered.drop(self.runs)


def _json(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as a JSON array of arrays (the SQL takes them apart with ``->>``)."""
    return json.dumps(list(rows) if not isinstance(rows, list) else rows, separators=(",", ":"), allow_nan=False)
