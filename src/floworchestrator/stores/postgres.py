"""The PostgreSQL store: for several orchestrator processes sharing one database.

Batches are applied by two writer threads, each with its own (synchronous)
psycopg connection, so the group committer may keep two transactions in
flight. A batch runs in pipeline mode (statements whose result is not read
cost no round trip) and first locks the rows of the runs it touches, in run
id order: two batches about the same run are applied one after the other,
exactly as a single writer would apply them, and batches do not deadlock
each other. Should one still fail with a deadlock or serialisation failure,
or lose the race to insert an idempotency key, it is rolled back and applied
again. A batch of only claims, completions and run starts (the engine's
steady traffic) takes the fast path of :mod:`._pgbatch`: its rows are read
once, the algorithm runs in memory, and the changes go back in one statement;
any other batch (or one the fast path gives up on) is applied statement by
statement (:class:`_PgTxn`). Reads and the few writes outside batches go through an async
connection pool. The schema is created or migrated at :meth:`open` under an
advisory lock, so instances starting together migrate once.

Times are epoch seconds (``double precision``) and JSON is text, as in the
SQLite store, so both return identical records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

try:
    import psycopg
    import psycopg.errors
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:
    raise ModuleNotFoundError(
        "the PostgreSQL store needs psycopg and psycopg-pool: pip install 'floworchestrator[postgres]'", name=exc.name
    ) from exc

from .._status import FINAL_STEP_STATUSES, RunStatus, StepStatus
from ..exceptions import SchemaVersionError, StoreError, StoreUnavailableError
from . import _pgbatch, sql
from ._batch import StepState, Txn, apply_ops
from ._rows import (
    RUN_STATUS,
    STEP_STATUS,
    attempt_record,
    dt,
    event_record,
    flow_record,
    loads,
    run_filter,
    run_record,
    run_stats,
    signal_record,
    step_record,
    ts,
)
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

T = TypeVar("T")
Q = sql.queries("postgres")
_STATUS, _RUN_STATUS, _ts, _dt, _loads = STEP_STATUS, RUN_STATUS, ts, dt, loads

Row = tuple[Any, ...]
Conn = psycopg.Connection[Row]
Cursor = psycopg.Cursor[Row]
AsyncConn = psycopg.AsyncConnection[Row]

# Infrastructure statements (not part of the store's data model, so not named queries: every
# dialect's queries.sql must define the same names).
_MIGRATION_LOCK = 0x666C6F776F726368  # pg_advisory_xact_lock key: "floworch"
_TAKE_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_SCHEMA_EXISTS = "SELECT to_regclass('fo_schema_version') IS NOT NULL"
# Lock the runs a batch touches, in one order for every writer (ORDER BY locks rows as it returns them).
_LOCK_RUNS = "SELECT run_id FROM fo_runs WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE"

# Set-based forms of primitives the other dialects run statement by statement (so no named queries: every
# dialect's queries.sql must define the same names). Each replaces several dependent round trips by one.
# Txn.release_close: release the successors (one decrement per occurrence of a key), close the run's
# finished steps, and, only if a successor now waits for nothing, read the given predecessors' statuses
# (release changes no status, so the statement's snapshot has them right).
_RELEASE_CLOSE = """
WITH r AS (
    UPDATE fo_steps s SET waiting = s.waiting - r.n
    FROM (SELECT k, count(*)::integer AS n FROM unnest(%(keys)s::text[]) AS k GROUP BY k) r
    WHERE s.run_id = %(run)s AND s.step_key = r.k
    RETURNING s.step_key, s.waiting, s.status, s.queued, s.generation
), c AS (
    UPDATE fo_runs SET open_steps = open_steps - %(n)s WHERE run_id = %(run)s RETURNING open_steps
)
SELECT 0, step_key, waiting, status, queued, generation FROM r
UNION ALL
SELECT 1, p.step_key, NULL, p.status, NULL, NULL FROM fo_steps p
WHERE p.run_id = %(run)s AND p.step_key = ANY(%(preds)s::text[])
  AND EXISTS (SELECT 1 FROM r WHERE r.waiting = 0 AND r.status = 'Pending' AND NOT r.queued)
UNION ALL
SELECT 2, NULL, open_steps, NULL, NULL, NULL FROM c
"""
# Txn.queue for many items at once: the ledger rows really inserted, and those steps queued.
_QUEUE_MANY = """
WITH d AS (
    INSERT INTO fo_dispatches (run_id, step_key, generation, dispatched_at)
    SELECT %(run)s, t.k, t.g, %(now)s FROM unnest(%(keys)s::text[], %(gens)s::integer[]) AS t(k, g)
    ON CONFLICT DO NOTHING
    RETURNING step_key, generation
), u AS (
    UPDATE fo_steps s SET status = 'Pending', queued = true, generation = d.generation, not_before = %(nb)s,
        queued_at = %(now)s
    FROM d WHERE s.run_id = %(run)s AND s.step_key = d.step_key
)
SELECT step_key, generation FROM d
"""

# A writer connection runs only batches, whose statements all look rows up by key, usually through a set of
# rows given as a parameter (``unnest``, ``jsonb_array_elements``) that the planner takes for 10 or 100 rows
# whatever its size. Against a table it believes small (fresh statistics, little history) it then prefers a
# hash join over a sequential scan, which costs a scan of the whole table per batch. These settings keep it
# on the indexes (a plan with no index to use still gets its scan) and off JIT compilation, which the
# penalty given to disabled plans would otherwise trigger. Its statements are prepared, and planned once
# (generic plans: with parameters like these a custom plan is no better, and planning is a good part of a
# small batch's time).
_WRITER_SETTINGS = (
    b"SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off; SET jit = off;"
    b" SET plan_cache_mode = force_generic_plan"
)

#: How many times a batch is tried when it fails in a way a new transaction may not.
_ATTEMPTS = 5


def _retryable(exc: psycopg.Error) -> bool:
    """A deadlock, a serialisation failure, or another writer committing a run with the same idempotency key first."""
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return exc.diag.constraint_name == "fo_runs_idempotency"
    return isinstance(exc, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure))



def _one(cur: Cursor) -> Row:
    row = cur.fetchone()
    if row is None:
        raise StoreError("the database returned no row where one was expected")
    return row


def _translate(exc: Exception, url: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, PoolTimeout):
        return StoreUnavailableError(f"PostgreSQL at {url} is unavailable: {exc}")
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.TransactionRollback):
        return StoreUnavailableError(f"PostgreSQL at {url} is unavailable: {exc}")
    return StoreError(f"PostgreSQL error at {url}: {exc}")


def _run_ids(ops: Sequence[Op]) -> list[str]:
    ids: set[str] = set()
    for op in ops:
        if isinstance(op, ExtendLeases):
            ids.update(r for r, _, _ in op.steps)
        elif not isinstance(op, StartRun):  # a new run's row does not exist yet
            ids.add(op.run_id)
    return sorted(ids)


class _PgTxn(Txn):
    """Attempts and events (written, never read, by a batch) are kept and inserted together by
    :meth:`flush` before COMMIT: one statement each per batch instead of one per row."""

    __slots__ = ("attempts", "c", "events")

    def __init__(self, cur: Cursor) -> None:
        self.c = cur
        self.attempts: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []

    def flush(self) -> None:
        """Insert the attempts and events kept so far, each set in the order it was recorded."""
        if self.attempts:
            self.c.execute(Q["insert_attempt"], [list(col) for col in zip(*self.attempts, strict=True)])
            self.attempts = []
        if self.events:
            self.c.execute(Q["insert_event"], [list(col) for col in zip(*self.events, strict=True)])
            self.events = []

    def flow_enabled(self, flow_id: str) -> bool:
        row = self.c.execute(Q["flow_enabled"], (flow_id,)).fetchone()
        return bool(row and row[0])

    def find_run_by_key(self, flow_id: str, key: str) -> str | None:
        row = self.c.execute(Q["find_run_by_key"], (flow_id, key)).fetchone()
        return None if row is None else str(row[0])

    def insert_run(self, op: StartRun) -> None:
        self.c.execute(
            Q["insert_run"],
            (op.run_id, op.flow_id, op.manifest_id, op.trigger_key, op.body_json, op.headers_json, op.idempotency_key,
             len(op.step_keys), _ts(op.now), None if op.deadline is None else _ts(op.deadline)),
        )
        self.c.executemany(
            Q["insert_step"], [(op.run_id, k, i, w) for i, (k, w) in enumerate(zip(op.step_keys, op.waiting, strict=True))]
        )

    def run_status(self, run_id: str) -> RunStatus | None:
        row = self.c.execute(Q["run_status"], (run_id,)).fetchone()
        return None if row is None else _RUN_STATUS[row[0]]

    def run_flow(self, run_id: str) -> str:
        return str(_one(self.c.execute(Q["run_flow"], (run_id,)))[0])

    def load_steps(self, run_id: str) -> dict[str, StepState]:
        return {
            k: StepState(_STATUS[st], gen, bool(q), bool(parked))
            for k, st, gen, q, parked in self.c.execute(Q["load_steps"], (run_id,)).fetchall()
        }

    def load_statuses(self, run_id: str, keys: Iterable[str]) -> dict[str, StepStatus]:
        return {k: _STATUS[st] for k, st in self.c.execute(Q["load_statuses"], (run_id, list(keys))).fetchall()}

    def release(self, run_id: str, keys: Sequence[str]) -> dict[str, int]:
        ready = {
            k: gen
            for k, waiting, status, queued, gen in self.c.execute(Q["release_step"], (list(keys), run_id)).fetchall()
            if waiting == 0 and status == "Pending" and not queued
        }
        return {k: ready[k] for k in dict.fromkeys(keys) if k in ready}  # in the order the keys were given

    def close(self, run_id: str, n: int) -> int:
        row = self.c.execute(Q["close_steps"], (n, run_id)).fetchone()
        return int(row[0]) if row is not None else 0

    def release_close(
        self, run_id: str, keys: Sequence[str], preds: Iterable[str], n: int
    ) -> tuple[dict[str, int], dict[str, StepStatus], int]:
        rows = self.c.execute(_RELEASE_CLOSE, {"keys": list(keys), "run": run_id, "n": n, "preds": list(preds)}).fetchall()
        ready: dict[str, int] = {}
        statuses: dict[str, StepStatus] = {}
        remaining = 0
        for kind, k, waiting, status, queued, gen in rows:
            if kind == 0:
                if waiting == 0 and status == "Pending" and not queued:
                    ready[k] = gen
            elif kind == 1:
                statuses[k] = _STATUS[status]
            else:
                remaining = int(waiting)
        zero = {k: ready[k] for k in dict.fromkeys(keys) if k in ready}  # in the order the keys were given
        return zero, (statuses if zero else {}), remaining

    def _send_queue(self, run_id: str, items: Sequence[tuple[str, int]], not_before: datetime | None, now: datetime) -> Cursor:
        t_nb = None if not_before is None else _ts(not_before)
        params = {"run": run_id, "keys": [k for k, _ in items], "gens": [g for _, g in items], "nb": t_nb, "now": _ts(now)}
        return self.c.connection.cursor().execute(_QUEUE_MANY, params)

    @staticmethod
    def _queued(items: Sequence[tuple[str, int]], cur: Cursor) -> list[tuple[str, int]]:
        got = {(k, g) for k, g in cur.fetchall()}
        return [item for item in items if item in got]  # in the order of the items

    def set_counters(self, run_id: str, open_steps: int, waiting: Mapping[str, int]) -> None:
        self.c.execute(Q["set_open_steps"], (open_steps, run_id))
        if waiting:
            self.c.executemany(Q["set_waiting"], [(w, run_id, k) for k, w in waiting.items()])

    def queue(
        self, run_id: str, items: Sequence[tuple[str, int]], not_before: datetime | None, now: datetime
    ) -> list[tuple[str, int]]:
        if len(items) > 1 and len({k for k, _ in items}) == len(items):
            return self._queued(items, self._send_queue(run_id, items, not_before, now))
        out = []
        t_now, t_nb = _ts(now), None if not_before is None else _ts(not_before)
        for key, gen in items:
            if self.c.execute(Q["insert_dispatch"], (run_id, key, gen, t_now)).fetchone() is not None:
                self.c.execute(Q["queue_step"], (gen, t_nb, t_now, run_id, key))
                out.append((key, gen))
        return out

    def queue_claim(
        self, run_id: str, items: Sequence[tuple[str, int]], claim: Claim | None, now: datetime
    ) -> tuple[list[tuple[str, int]], Grant | None]:
        if claim is None or len({k for k, _ in items}) != len(items):
            return super().queue_claim(run_id, items, claim, now)
        # The claim goes out right behind the queueing, without waiting for its answer: one round trip.
        # Conditional on the step being queued at that generation, it matches only if the queueing did
        # it (or an earlier batch did and no worker took it yet: then that dispatch finds it claimed).
        q_cur = self._send_queue(run_id, items, None, now)
        grant_of = self._send_claim(claim)
        queued = self._queued(items, q_cur)
        return queued, grant_of()

    def claim(self, op: Claim) -> Grant | None:
        return self._send_claim(op)()

    def _send_claim(self, op: Claim) -> Callable[[], Grant | None]:
        """Send the claim's statements; return what reads their answers (the first round trip)."""
        # The grant's reads go out right behind the conditional update: one round trip in all.
        t = _ts(op.now)
        conn = self.c.connection
        row_cur = conn.cursor().execute(
            Q["claim_step"], (op.owner, _ts(op.lease_until), t, t, op.run_id, op.step_key, op.generation, t)
        )
        ctx_cur = conn.cursor().execute(Q["claim_context"], (op.run_id,))
        out_curs = [(k, conn.cursor().execute(Q["step_output"], (op.run_id, k))) for k in op.want_outputs]
        return lambda: self._grant(op, row_cur, ctx_cur, out_curs)

    def _grant(self, op: Claim, row_cur: Cursor, ctx_cur: Cursor, out_curs: list[tuple[str, Cursor]]) -> Grant | None:
        conn = self.c.connection
        row = row_cur.fetchone()
        if row is None:
            return None
        name = row[3] or op.signal  # the signal it is parked on, if it is
        sig_cur = None if name is None else conn.cursor().execute(Q["unconsumed_signal"], (op.run_id, name))
        manifest_id, trigger_key, body, headers = _one(ctx_cur)
        outputs = {}
        for k, cur in out_curs:
            r = cur.fetchone()
            if r is not None:
                outputs[k] = (_STATUS[r[0]], r[1], r[2])
        sig = None if sig_cur is None else sig_cur.fetchone()
        signal = None if sig is None else (int(sig[0]), str(sig[1]))
        return Grant(row[0], manifest_id, trigger_key, body, headers, outputs, _dt(row[1]), signal, row[2])

    def finish_step(self, op: Complete, attempt_status: StepStatus) -> bool:
        t = _ts(op.now)
        final = op.status in FINAL_STEP_STATUSES
        row = self.c.execute(
            Q["finish_step"],
            (op.status.value, op.output_json, op.error, op.inputs_json, op.trace_json, t if final else None,
             op.run_id, op.step_key, op.generation, op.owner),
        ).fetchone()
        if row is None:
            return False
        self.attempts.append(
            (op.run_id, op.step_key, row[0], op.generation, attempt_status.value, op.owner, _ts(op.started_at), t, op.error)
        )
        return True

    def set_steps(self, run_id: str, keys: Iterable[str], status: StepStatus, now: datetime, *, reset: bool = False) -> None:
        if reset:
            rows: list[tuple[Any, ...]] = [(status.value, run_id, k) for k in keys]
            query = Q["reset_step"]
        else:
            fin = _ts(now) if status in FINAL_STEP_STATUSES else None
            rows = [(status.value, fin, run_id, k) for k in keys]
            query = Q["set_step_status"]
        if rows:
            self.c.executemany(query, rows)

    def finish_run(self, run_id: str, status: RunStatus, now: datetime) -> bool:
        return self.c.execute(Q["finish_run"], (status.value, _ts(now), run_id)).fetchone() is not None

    def reopen_run(self, run_id: str, deadline: datetime | None) -> None:
        self.c.execute(Q["reopen_run"], (None if deadline is None else _ts(deadline), run_id))

    def take_back(self, op: ExpireLease, status: StepStatus, error: str) -> bool:
        t = _ts(op.now)
        if op.owner is None:
            row = self.c.execute(Q["expiring_step"], (op.run_id, op.step_key, op.generation, t)).fetchone()
        else:
            row = self.c.execute(Q["owned_step"], (op.run_id, op.step_key, op.generation, op.owner)).fetchone()
        if row is None:
            return False
        attempts, owner, started = row
        self.attempts.append(
            (op.run_id, op.step_key, attempts, op.generation, status.value, owner, started if started is not None else t, t,
             error.format(owner=owner))
        )
        self.c.execute(Q["expire_step"], (op.run_id, op.step_key))
        return True

    def extend_leases(self, op: ExtendLeases) -> None:
        t = _ts(op.lease_until)
        if op.steps:
            self.c.executemany(Q["extend_lease"], [(t, r, k, g, op.owner) for r, k, g in op.steps])

    def expand(self, op: Complete, child_keys: Sequence[str], waiting: Sequence[int], per_item: int, started: int) -> bool:
        assert op.loop is not None
        items = op.loop[0]
        updated = self.c.execute(
            Q["expand_loop"],
            ("[" + ",".join(items) + "]", len(items), started, op.run_id, op.step_key, op.generation, op.owner),
        ).fetchone()
        if updated is None:
            return False
        (base,) = _one(self.c.execute(Q["max_seq"], (op.run_id,)))
        if child_keys:
            self.c.executemany(
                Q["insert_child"],
                [(op.run_id, key, base + 1 + i, waiting[i % per_item], items[i // per_item]) for i, key in enumerate(child_keys)],
            )
        self.close(op.run_id, -len(child_keys))
        return True

    def loop_item_done(self, run_id: str, parent: str) -> tuple[int | None, int | None]:
        before = _one(self.c.execute(Q["loop_counters"], (run_id, parent)))
        started, total, done = _one(self.c.execute(Q["loop_item_done"], (run_id, parent)))
        start = before[0] if started > before[0] else None
        return start, total if done >= total else None

    def finish_loop(self, run_id: str, parent: str, status: StepStatus, output_json: str, error: str | None, now: datetime) -> None:
        t = _ts(now)
        attempts, generation, started = _one(self.c.execute(Q["finish_loop"], (status.value, output_json, error, t, run_id, parent)))
        self.attempts.append(
            (run_id, parent, attempts, generation, status.value, None, started if started is not None else t, t, error)
        )

    def load_outputs(self, run_id: str, keys: Sequence[str]) -> dict[str, tuple[StepStatus, str | None, str | None]]:
        rows = self.c.execute(Q["load_outputs"], (run_id, list(keys))).fetchall()
        return {k: (_STATUS[st], out, err) for k, st, out, err in rows}

    def delete_children(self, run_id: str, parent: str) -> None:
        bounds = (run_id, parent + ".", parent + "/")  # every key that starts with "parent." (keys compare byte-wise)
        self.c.execute(Q["delete_children"], bounds)
        self.c.execute(Q["delete_child_dispatches"], bounds)

    def record_fire(self, flow_id: str, trigger: str, fire_time: datetime, run_id: str) -> str | None:
        t = _ts(fire_time)
        if self.c.execute(Q["record_fire"], (flow_id, trigger, t, run_id)).fetchone() is not None:
            return None
        return str(_one(self.c.execute(Q["fire_run"], (flow_id, trigger, t)))[0])

    def insert_signal(self, op: Signal) -> int:
        return int(_one(self.c.execute(Q["insert_signal"], (op.run_id, op.name, op.payload_json, _ts(op.now))))[0])

    def signal_available(self, signal_id: int) -> bool:
        return self.c.execute(Q["signal_available"], (signal_id,)).fetchone() is not None

    def has_signal(self, run_id: str, name: str) -> bool:
        return self.c.execute(Q["unconsumed_signal"], (run_id, name)).fetchone() is not None

    def parked_steps(self, run_id: str, name: str) -> dict[str, int]:
        return {k: g for k, g in self.c.execute(Q["parked_steps"], (run_id, name)).fetchall()}

    def park(self, run_id: str, key: str, name: str) -> None:
        self.c.execute(Q["park_step"], (name, run_id, key))

    def consume_signal(self, signal_id: int, step_key: str, now: datetime) -> None:
        self.c.execute(Q["consume_signal"], (step_key, _ts(now), signal_id))

    def event(self, run_id: str, step_key: str | None, kind: str, data: object, now: datetime) -> None:
        self.events.append((run_id, step_key, kind, None if data is None else json.dumps(data), _ts(now)))


class PostgresStore(Store):
    """A store in a PostgreSQL database, given as a libpq URL (``postgresql://user@host:5432/db``)."""

    writers = 2

    def __init__(self, url: str, *, readers: int = 4, connect_timeout: float = 10.0, pool_timeout: float = 10.0) -> None:
        self.url = url
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {url!r}: {exc}") from exc
        params.setdefault("connect_timeout", max(1, round(connect_timeout)))
        params.setdefault("application_name", "floworchestrator")
        self._conninfo = make_conninfo("", **params)
        self._where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        self._readers = max(1, readers)
        self._pool_timeout = pool_timeout
        self._writer: ThreadPoolExecutor | None = None
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._local = threading.local()
        self._conns: list[Conn] = []
        self._lock = threading.Lock()
        self._remembered = _pgbatch.Remembered()

    # -- connections and threads --------------------------------------------

    def _writer_conn(self) -> Conn:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            conn.execute(_WRITER_SETTINGS)
            conn.prepare_threshold = 0  # a writer runs the same few statements over and over: prepare at first use
            self._local.conn = conn
            with self._lock:
                self._conns = [c for c in self._conns if not c.closed]
                self._conns.append(conn)
        return conn

    async def _write(self, fn: Callable[[], T]) -> T:
        pool = self._writer
        if pool is None:
            raise StoreError("the PostgreSQL store is not open")

        def call() -> T:
            try:
                return fn()
            except psycopg.Error as exc:
                raise _translate(exc, self._where) from exc

        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def _pooled(self, fn: Callable[[AsyncConn], Any]) -> Any:
        """Run ``fn`` on a pooled connection; ``fn`` must be safe to repeat (reads, idempotent writes).

        A connection found dead (the server restarted, an idle connection was cut) is dropped and
        ``fn`` tried again on another one.
        """
        pool = self._pool
        if pool is None:
            raise StoreError("the PostgreSQL store is not open")
        for _ in range(self._readers + 1):
            conn: AsyncConn | None = None
            try:
                async with pool.connection() as conn:
                    return await fn(conn)
            except psycopg.OperationalError as exc:
                if conn is not None and conn.broken:
                    last: Exception = exc
                    continue
                raise _translate(exc, self._where) from exc
            except (psycopg.Error, PoolTimeout) as exc:
                raise _translate(exc, self._where) from exc
        raise _translate(last, self._where) from last

    async def _execute(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        async def go(conn: AsyncConn) -> None:
            await conn.execute(query, params)

        await self._pooled(go)

    async def _fetchall(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Row]:
        async def go(conn: AsyncConn) -> list[Row]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        rows: list[Row] = await self._pooled(go)
        return rows

    async def _fetchone(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Row | None:
        async def go(conn: AsyncConn) -> Row | None:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

        row: Row | None = await self._pooled(go)
        return row

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            await self._migrate()
        except psycopg.Error as exc:
            raise _translate(exc, self._where) from exc
        self._writer = ThreadPoolExecutor(self.writers, thread_name_prefix="floworchestrator-postgres-writer")
        self._pool = AsyncConnectionPool(
            self._conninfo, min_size=1, max_size=self._readers, kwargs={"autocommit": True}, open=False,
            timeout=self._pool_timeout, name="floworchestrator",
        )
        try:
            await self._pool.open(wait=True, timeout=self._pool_timeout)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, (psycopg.Error, PoolTimeout)):
                raise _translate(exc, self._where) from exc
            raise

    async def _migrate(self) -> None:
        target = sql.schema_version("postgres")
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            async with conn.transaction():
                # Instances starting together wait here; the first creates or migrates, the others find it done.
                await conn.execute(_TAKE_MIGRATION_LOCK, (_MIGRATION_LOCK,))
                exists = await (await conn.execute(_SCHEMA_EXISTS)).fetchone()
                if not (exists and exists[0]):
                    await conn.execute(sql.schema("postgres"))
                    await conn.execute(Q["insert_schema_version"], (target,))
                    return
                row = await (await conn.execute(Q["get_schema_version"])).fetchone()
                version = int(row[0]) if row else 0
                if version > target:
                    raise SchemaVersionError(
                        f"the database {self._where!r} has schema version {version}, newer than this floworchestrator "
                        f"understands ({target}); upgrade floworchestrator"
                    )
                for number, _name, script in sql.migrations("postgres"):
                    if number > version:
                        await conn.execute(script)
                if version < target:
                    await conn.execute(Q["set_schema_version"], (target,))
        finally:
            await conn.close()

    async def close(self) -> None:
        pool, writer = self._pool, self._writer
        self._pool = self._writer = None
        if pool is not None:
            await pool.close()
        if writer is not None:
            await asyncio.to_thread(writer.shutdown, True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    # -- writes ----------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[Result]:
        runs = _run_ids(ops)

        def txn() -> list[Result]:
            # Pipeline mode: BEGIN, the run locks and every statement whose result is not read go out
            # without waiting, and COMMIT shares the round trip that ends the pipeline. (BEGIN and
            # COMMIT are plain statements: psycopg's transaction() adds a round trip in a pipeline.)
            # The common ops take the fast path (_pgbatch: rows read once, changes written set-based); a batch
            # with any other op, or one the fast path gives up on, is applied statement by statement.
            # The fast path first takes the rows recent batches left (self._remembered) if they are all it needs:
            # if its write finds them changed, it wrote nothing, and the batch is applied again reading them.
            attempt, reconnected, fast, recall = 0, False, _pgbatch.eligible(ops), True
            while True:
                attempt += 1
                conn = self._writer_conn()
                committing = False
                cached: _pgbatch.CachedTxn | None = None
                try:
                    with conn.pipeline(), conn.cursor() as cur:
                        cur.execute(b"BEGIN")
                        if fast:
                            cached = _pgbatch.CachedTxn(conn, self._remembered, recall=recall)
                            cached.load(ops)
                            results = apply_ops(cached, ops)
                            check = cached.write()
                        else:
                            if runs:
                                cur.execute(_LOCK_RUNS, (runs,))
                            tx = _PgTxn(cur)
                            results = apply_ops(tx, ops)
                            tx.flush()
                        committing = True
                        cur.execute(b"COMMIT")
                    if cached is not None:
                        if check is not None and not _one(check)[0]:
                            raise _pgbatch.Stale
                        cached.keep()
                    elif runs:  # rows remembered for these runs are out of date now: the next batch reads them
                        self._remembered.drop(runs)
                    return results
                except BaseException as exc:
                    if cached is not None:
                        cached.forget()
                    if isinstance(exc, _pgbatch.Stale):
                        recall = False
                        attempt -= 1
                        continue
                    if not conn.broken:
                        # rollback() (not a plain ROLLBACK) also forgets statements psycopg prepared in the
                        # failed pipeline; the error that got us here is the one to report.
                        with contextlib.suppress(psycopg.Error):
                            conn.rollback()
                    if fast and (isinstance(exc, _pgbatch.Fallback) or (isinstance(exc, psycopg.Error) and not conn.broken)):
                        # Whatever stopped the fast path (an op it leaves to the ordinary path, or an error), the
                        # ordinary path applies the batch again from scratch, and reports a real error itself.
                        fast = False
                        attempt -= 1
                        continue
                    if not isinstance(exc, psycopg.Error):
                        raise
                    if conn.broken:
                        conn.close()
                        if not committing and not reconnected:
                            # Lost before COMMIT was sent (typically cut while idle): nothing was written.
                            reconnected = True
                            continue
                        raise
                    if not _retryable(exc):
                        raise
                    if attempt >= _ATTEMPTS:
                        raise StoreError(f"PostgreSQL at {self._where}: the batch failed {attempt} times: {exc}") from exc
                    time.sleep(random.uniform(0, 0.005 * attempt))

        return await self._write(txn)

    async def upsert_flows(self, flows: Sequence[tuple[str, str, str, str, bool]], now: datetime) -> None:
        async def txn(conn: AsyncConn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                for flow_id, version, manifest_id, manifest_json, enabled in sorted(flows):
                    await cur.execute(Q["upsert_manifest"], (manifest_id, flow_id, manifest_json))
                    await cur.execute(Q["upsert_flow"], (flow_id, version, manifest_id, enabled, _ts(now)))

        await self._pooled(txn)

    async def set_flow_enabled(self, flow_id: str, enabled: bool, now: datetime) -> bool:
        async def go(conn: AsyncConn) -> bool:
            cur = await conn.execute(Q["set_flow_enabled"], (enabled, _ts(now), flow_id))
            return cur.rowcount == 1

        return bool(await self._pooled(go))

    async def set_schedule(self, flow_id: str, trigger: str, *, paused: bool | None = None,
                           expression: str | None = None, clear_expression: bool = False, now: datetime) -> None:
        params = {"flow_id": flow_id, "trigger": trigger, "paused": paused,
                  "expression": expression, "clear": clear_expression, "now": _ts(now)}
        await self._execute(Q["upsert_schedule"], params)

    # -- reads -------------------------------------------------------------------

    async def list_flows(self) -> list[FlowRecord]:
        rows = await self._fetchall(Q["list_flows"])
        return [flow_record(r) for r in rows]

    async def get_manifest(self, manifest_id: str) -> dict[str, Any] | None:
        row = await self._fetchone(Q["get_manifest"], (manifest_id,))
        return None if row is None else dict(json.loads(row[0]))

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._fetchone(Q["get_run"], (run_id,))
        return None if row is None else run_record(row)

    async def list_runs(self, where: RunFilter = ALL_RUNS, *, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        clause, params = run_filter(Q, where)
        rows = await self._fetchall(Q["list_runs"].replace("{where}", clause), {**params, "limit": limit, "offset": offset})
        return [run_record(r) for r in rows]

    async def count_runs(self, where: RunFilter = ALL_RUNS) -> int:
        clause, params = run_filter(Q, where)
        row = await self._fetchone(Q["count_runs"].replace("{where}", clause), params)
        return int(row[0]) if row else 0

    async def run_stats(self, since: datetime, bucket_seconds: float, buckets: int) -> RunStats:
        by_status = await self._fetchall(Q["count_runs_by_status"])
        params = {"since": since.timestamp(), "width": bucket_seconds, "n": buckets}
        by_bucket = await self._fetchall(Q["runs_per_bucket"], params)
        return run_stats(by_status, by_bucket)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._fetchall(Q["get_steps"], (run_id,))
        return [step_record(r) for r in rows]

    async def get_attempts(self, run_id: str) -> list[AttemptRecord]:
        return [attempt_record(r) for r in await self._fetchall(Q["get_attempts"], (run_id,))]

    async def get_events(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        params = {"after": after, "run_id": run_id, "limit": limit}
        query = Q["get_events"] if run_id is None else Q["get_run_events"]
        return [event_record(r) for r in await self._fetchall(query, params)]

    async def last_event_id(self) -> int:
        row = await self._fetchone(Q["last_event_id"])
        return int(row[0]) if row else 0

    async def find_expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str, str, int]]:
        rows = await self._fetchall(Q["find_expired_leases"], (_ts(now), limit))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def find_queued(self, now: datetime, due_before: datetime, limit: int = 500) -> list[Dispatch]:
        rows = await self._fetchall(Q["find_queued"], (_ts(due_before), limit))
        t = _ts(now)
        return [Dispatch(r[0], r[1], r[2], r[3], max(0.0, (r[4] or t) - t)) for r in rows]

    async def find_overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        rows = await self._fetchall(Q["find_overdue_runs"], (_ts(now), limit))
        return [str(r[0]) for r in rows]

    async def get_signals(self, run_id: str) -> list[SignalRecord]:
        return [signal_record(r) for r in await self._fetchall(Q["get_signals"], (run_id,))]

    async def get_schedule_overrides(self) -> dict[tuple[str, str], tuple[bool, str | None]]:
        rows = await self._fetchall(Q["get_schedules"])
        return {(r[0], r[1]): (bool(r[2]), r[3]) for r in rows}

    async def find_idle_runs(self, limit: int = 500) -> list[tuple[str, str, str]]:
        rows = await self._fetchall(Q["find_idle_runs"], (limit,))
        return [(r[0], r[1], r[2]) for r in rows]

    # -- retention ---------------------------------------------------------------------

    async def prune(self, older_than: datetime, *, batch_size: int = 500) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        t = _ts(older_than)

        async def batch(conn: AsyncConn, after: str) -> tuple[int, str | None]:
            # One short transaction per batch, on a pooled connection (not a writer's): the
            # engine's batches go on in between, and wait only for the runs this batch holds.
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(Q["prune_candidates"], (after, t, batch_size))
                ids = [str(r[0]) for r in await cur.fetchall()]
                if not ids:
                    return 0, None
                arg = (ids,)
                await cur.execute(Q["prune_steps"], arg)
                await cur.execute(Q["prune_dispatches"], arg)
                await cur.execute(Q["prune_attempts"], arg)
                await cur.execute(Q["prune_events"], arg)
                await cur.execute(Q["prune_signals"], arg)
                await cur.execute(Q["prune_cron_fires"], arg)
                await cur.execute(Q["prune_runs"], arg)
                return cur.rowcount, ids[-1]

        def from_(after: str) -> Callable[[AsyncConn], Any]:
            return lambda conn: batch(conn, after)

        total = 0
        cursor: str | None = ""
        while cursor is not None:
            n, cursor = await self._pooled(from_(cursor))
            total += n
        return total
