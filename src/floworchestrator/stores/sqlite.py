"""The SQLite store: the embedded default.

One writer thread owns the only writing connection and applies each batch in
one ``BEGIN IMMEDIATE`` transaction (WAL mode, ``synchronous=FULL`` by
default, so a committed step survives power loss). Reads go through a small
pool of reader threads with their own connections; WAL lets them run while
the writer writes. Several processes may share one database file: SQLite's
lock and ``busy_timeout`` serialise their writers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .._status import FINAL_STEP_STATUSES, RunStatus, StepStatus
from ..exceptions import SchemaVersionError, StoreError, StoreUnavailableError
from . import sql
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
Q = sql.queries("sqlite")
_STATUS, _RUN_STATUS, _ts, _dt, _loads = STEP_STATUS, RUN_STATUS, ts, dt, loads



def _wal(conn: sqlite3.Connection, patience: float) -> None:
    # Switching to WAL needs a moment of exclusive access, and SQLite answers "database is locked"
    # at once (without its busy handler) while another process sets up the same file: wait it out.
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction first; run statement by statement instead.
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip() and not all(x.strip().startswith("--") for x in buf.splitlines() if x.strip()):
        raise StoreError(f"incomplete SQL statement in schema script: {buf.strip()[:80]!r}")


class _SQLiteTxn(Txn):
    __slots__ = ("c",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

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
        return str(self.c.execute(Q["run_flow"], (run_id,)).fetchone()[0])

    def load_steps(self, run_id: str) -> dict[str, StepState]:
        return {
            k: StepState(_STATUS[st], gen, bool(q), bool(parked))
            for k, st, gen, q, parked in self.c.execute(Q["load_steps"], (run_id,))
        }

    def load_statuses(self, run_id: str, keys: Iterable[str]) -> dict[str, StepStatus]:
        return {k: _STATUS[st] for k, st in self.c.execute(Q["load_statuses"], (run_id, json.dumps(list(keys))))}

    def release(self, run_id: str, keys: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        execute, q = self.c.execute, Q["release_step"]
        for k in keys:
            row = execute(q, (run_id, k)).fetchone()
            if row is not None and row[0] == 0 and row[1] == "Pending" and not row[2]:
                out[k] = row[3]
        return out

    def close(self, run_id: str, n: int) -> int:
        row = self.c.execute(Q["close_steps"], (n, run_id)).fetchone()
        return int(row[0]) if row is not None else 0

    def set_counters(self, run_id: str, open_steps: int, waiting: Mapping[str, int]) -> None:
        self.c.execute(Q["set_open_steps"], (open_steps, run_id))
        self.c.executemany(Q["set_waiting"], [(w, run_id, k) for k, w in waiting.items()])

    def queue(
        self, run_id: str, items: Sequence[tuple[str, int]], not_before: datetime | None, now: datetime
    ) -> list[tuple[str, int]]:
        out = []
        t_now, t_nb = _ts(now), None if not_before is None else _ts(not_before)
        for key, gen in items:
            if self.c.execute(Q["insert_dispatch"], (run_id, key, gen, t_now)).rowcount == 1:
                self.c.execute(Q["queue_step"], (gen, t_nb, t_now, run_id, key))
                out.append((key, gen))
        return out

    def claim(self, op: Claim) -> Grant | None:
        t = _ts(op.now)
        row = self.c.execute(
            Q["claim_step"], (op.owner, _ts(op.lease_until), t, t, op.run_id, op.step_key, op.generation, t)
        ).fetchone()
        if row is None:
            return None
        manifest_id, trigger_key, body, headers = self.c.execute(Q["claim_context"], (op.run_id,)).fetchone()
        outputs = {}
        for k in op.want_outputs:
            r = self.c.execute(Q["step_output"], (op.run_id, k)).fetchone()
            if r is not None:
                outputs[k] = (_STATUS[r[0]], r[1], r[2])
        signal = None
        name = row[3] or op.signal  # the signal it is parked on, if it is
        if name is not None:
            sig = self.c.execute(Q["unconsumed_signal"], (op.run_id, name)).fetchone()
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
        self.c.execute(
            Q["insert_attempt"],
            (op.run_id, op.step_key, row[0], op.generation, attempt_status.value, op.owner, _ts(op.started_at), t, op.error),
        )
        return True

    def set_steps(self, run_id: str, keys: Iterable[str], status: StepStatus, now: datetime, *, reset: bool = False) -> None:
        if reset:
            self.c.executemany(Q["reset_step"], [(status.value, run_id, k) for k in keys])
        else:
            fin = _ts(now) if status in FINAL_STEP_STATUSES else None
            self.c.executemany(Q["set_step_status"], [(status.value, fin, run_id, k) for k in keys])

    def finish_run(self, run_id: str, status: RunStatus, now: datetime) -> bool:
        return self.c.execute(Q["finish_run"], (status.value, _ts(now), run_id)).rowcount == 1

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
        self.c.execute(
            Q["insert_attempt"],
            (op.run_id, op.step_key, attempts, op.generation, status.value, owner, started if started is not None else t, t,
             error.format(owner=owner)),
        )
        self.c.execute(Q["expire_step"], (op.run_id, op.step_key))
        return True

    def extend_leases(self, op: ExtendLeases) -> None:
        t = _ts(op.lease_until)
        self.c.executemany(Q["extend_lease"], [(t, r, k, g, op.owner) for r, k, g in op.steps])

    def expand(self, op: Complete, child_keys: Sequence[str], waiting: Sequence[int], per_item: int, started: int) -> bool:
        assert op.loop is not None
        items = op.loop[0]
        updated = self.c.execute(
            Q["expand_loop"],
            ("[" + ",".join(items) + "]", len(items), started, op.run_id, op.step_key, op.generation, op.owner),
        ).rowcount
        if updated != 1:
            return False
        (base,) = self.c.execute(Q["max_seq"], (op.run_id,)).fetchone()
        self.c.executemany(
            Q["insert_child"],
            [(op.run_id, key, base + 1 + i, waiting[i % per_item], items[i // per_item]) for i, key in enumerate(child_keys)],
        )
        self.close(op.run_id, -len(child_keys))
        return True

    def loop_item_done(self, run_id: str, parent: str) -> tuple[int | None, int | None]:
        before = self.c.execute(Q["loop_counters"], (run_id, parent)).fetchone()
        started, total, done = self.c.execute(Q["loop_item_done"], (run_id, parent)).fetchone()
        start = before[0] if started > before[0] else None
        return start, total if done >= total else None

    def finish_loop(self, run_id: str, parent: str, status: StepStatus, output_json: str, error: str | None, now: datetime) -> None:
        t = _ts(now)
        attempts, generation, started = self.c.execute(
            Q["finish_loop"], (status.value, output_json, error, t, run_id, parent)
        ).fetchone()
        self.c.execute(
            Q["insert_attempt"], (run_id, parent, attempts, generation, status.value, None, started if started is not None else t, t, error)
        )

    def load_outputs(self, run_id: str, keys: Sequence[str]) -> dict[str, tuple[StepStatus, str | None, str | None]]:
        rows = self.c.execute(Q["load_outputs"], (run_id, json.dumps(list(keys))))
        return {k: (_STATUS[st], out, err) for k, st, out, err in rows}

    def delete_children(self, run_id: str, parent: str) -> None:
        bounds = (run_id, parent + ".", parent + "/")  # every key that starts with "parent."
        self.c.execute(Q["delete_children"], bounds)
        self.c.execute(Q["delete_child_dispatches"], bounds)

    def record_fire(self, flow_id: str, trigger: str, fire_time: datetime, run_id: str) -> str | None:
        t = _ts(fire_time)
        if self.c.execute(Q["record_fire"], (flow_id, trigger, t, run_id)).rowcount == 1:
            return None
        return str(self.c.execute(Q["fire_run"], (flow_id, trigger, t)).fetchone()[0])

    def insert_signal(self, op: Signal) -> int:
        return int(self.c.execute(Q["insert_signal"], (op.run_id, op.name, op.payload_json, _ts(op.now))).fetchone()[0])

    def signal_available(self, signal_id: int) -> bool:
        return self.c.execute(Q["signal_available"], (signal_id,)).fetchone() is not None

    def has_signal(self, run_id: str, name: str) -> bool:
        return self.c.execute(Q["unconsumed_signal"], (run_id, name)).fetchone() is not None

    def parked_steps(self, run_id: str, name: str) -> dict[str, int]:
        return {k: g for k, g in self.c.execute(Q["parked_steps"], (run_id, name))}

    def park(self, run_id: str, key: str, name: str) -> None:
        self.c.execute(Q["park_step"], (name, run_id, key))

    def consume_signal(self, signal_id: int, step_key: str, now: datetime) -> None:
        self.c.execute(Q["consume_signal"], (step_key, _ts(now), signal_id))

    def event(self, run_id: str, step_key: str | None, kind: str, data: object, now: datetime) -> None:
        self.c.execute(Q["insert_event"], (run_id, step_key, kind, None if data is None else json.dumps(data), _ts(now)))


class SQLiteStore(Store):
    """A store in one SQLite database file (``":memory:"`` keeps it in this process)."""

    writers = 1

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", readers: int = 2, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError("synchronous must be FULL, NORMAL, EXTRA or OFF")
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self._readers = readers
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if self.path == ":memory:":
            # Every connection must see the same in-memory database.
            self.path = f"file:floworchestrator-{id(self)}?mode=memory&cache=shared"
            self._uri = True
        else:
            self._uri = self.path.startswith("file:")

    # -- connections and threads --------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, uri=self._uri, check_same_thread=False)
                _wal(conn, self.busy_timeout)
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute("PRAGMA foreign_keys=OFF")
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def _run(self, pool: ThreadPoolExecutor | None, fn: Callable[[sqlite3.Connection], T]) -> T:
        if pool is None:
            raise StoreError("the SQLite store is not open")

        def call() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreUnavailableError(f"SQLite error on {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"SQLite error on {self.path!r}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._reader, fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._writer, fn)

    async def open(self) -> None:
        if self._writer is not None:
            return
        if not self._uri:
            parent = Path(self.path).parent
            if not parent.exists():
                raise StoreUnavailableError(f"cannot open SQLite database {self.path!r}: folder {str(parent)!r} does not exist")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="floworchestrator-sqlite-writer")
        self._reader = ThreadPoolExecutor(self._readers, thread_name_prefix="floworchestrator-sqlite-reader")
        try:
            await self._write(self._migrate)
        except BaseException:
            await self.close()
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        target = sql.schema_version("sqlite")
        conn.execute("BEGIN IMMEDIATE")
        try:
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='fo_schema_version'").fetchone()
            if not exists:
                _script(conn, sql.schema("sqlite"))
                conn.execute(Q["insert_schema_version"], (target,))
            else:
                (version,) = conn.execute(Q["get_schema_version"]).fetchone()
                if version > target:
                    raise SchemaVersionError(
                        f"the database {self.path!r} has schema version {version}, newer than this floworchestrator "
                        f"understands ({target}); upgrade floworchestrator"
                    )
                for number, _name, script in sql.migrations("sqlite"):
                    if number > version:
                        _script(conn, script)
                if version < target:
                    conn.execute(Q["set_schema_version"], (target,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        pools = [p for p in (self._writer, self._reader) if p is not None]
        self._writer = self._reader = None
        for pool in pools:
            pool.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    # -- writes ----------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[Result]:
        def txn(conn: sqlite3.Connection) -> list[Result]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = apply_ops(_SQLiteTxn(conn), ops)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return results

        return await self._write(txn)

    async def upsert_flows(self, flows: Sequence[tuple[str, str, str, str, bool]], now: datetime) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for flow_id, version, manifest_id, manifest_json, enabled in flows:
                    conn.execute(Q["upsert_manifest"], (manifest_id, flow_id, manifest_json))
                    conn.execute(Q["upsert_flow"], (flow_id, version, manifest_id, int(enabled), _ts(now)))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._write(txn)

    async def set_flow_enabled(self, flow_id: str, enabled: bool, now: datetime) -> bool:
        return await self._write(lambda c: c.execute(Q["set_flow_enabled"], (int(enabled), _ts(now), flow_id)).rowcount == 1)

    # -- reads -------------------------------------------------------------------

    async def list_flows(self) -> list[FlowRecord]:
        rows = await self._read(lambda c: c.execute(Q["list_flows"]).fetchall())
        return [flow_record(r) for r in rows]

    async def get_manifest(self, manifest_id: str) -> dict[str, Any] | None:
        row = await self._read(lambda c: c.execute(Q["get_manifest"], (manifest_id,)).fetchone())
        return None if row is None else dict(json.loads(row[0]))

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._read(lambda c: c.execute(Q["get_run"], (run_id,)).fetchone())
        return None if row is None else run_record(row)

    async def list_runs(self, where: RunFilter = ALL_RUNS, *, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        clause, params = run_filter(Q, where)
        query = Q["list_runs"].replace("{where}", clause)
        rows = await self._read(lambda c: c.execute(query, {**params, "limit": limit, "offset": offset}).fetchall())
        return [run_record(r) for r in rows]

    async def count_runs(self, where: RunFilter = ALL_RUNS) -> int:
        clause, params = run_filter(Q, where)
        query = Q["count_runs"].replace("{where}", clause)
        row = await self._read(lambda c: c.execute(query, params).fetchone())
        return int(row[0])

    async def run_stats(self, since: datetime, bucket_seconds: float, buckets: int) -> RunStats:
        params = {"since": since.timestamp(), "width": bucket_seconds, "n": buckets}

        def read(c: sqlite3.Connection) -> RunStats:
            return run_stats(c.execute(Q["count_runs_by_status"]).fetchall(), c.execute(Q["runs_per_bucket"], params).fetchall())

        return await self._read(read)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._read(lambda c: c.execute(Q["get_steps"], (run_id,)).fetchall())
        return [step_record(r) for r in rows]

    async def get_attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = await self._read(lambda c: c.execute(Q["get_attempts"], (run_id,)).fetchall())
        return [attempt_record(r) for r in rows]

    async def get_events(self, run_id: str | None = None, after: int = 0, limit: int = 1000) -> list[EventRecord]:
        params = {"after": after, "run_id": run_id, "limit": limit}
        query = Q["get_events"] if run_id is None else Q["get_run_events"]
        rows = await self._read(lambda c: c.execute(query, params).fetchall())
        return [event_record(r) for r in rows]

    async def last_event_id(self) -> int:
        row = await self._read(lambda c: c.execute(Q["last_event_id"]).fetchone())
        return int(row[0])

    async def find_expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str, str, int]]:
        rows = await self._read(lambda c: c.execute(Q["find_expired_leases"], (_ts(now), limit)).fetchall())
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def find_queued(self, now: datetime, due_before: datetime, limit: int = 500) -> list[Dispatch]:
        rows = await self._read(lambda c: c.execute(Q["find_queued"], (_ts(due_before), limit)).fetchall())
        t = _ts(now)
        return [Dispatch(r[0], r[1], r[2], r[3], max(0.0, (r[4] or t) - t)) for r in rows]

    async def find_overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        rows = await self._read(lambda c: c.execute(Q["find_overdue_runs"], (_ts(now), limit)).fetchall())
        return [str(r[0]) for r in rows]

    async def get_signals(self, run_id: str) -> list[SignalRecord]:
        rows = await self._read(lambda c: c.execute(Q["get_signals"], (run_id,)).fetchall())
        return [signal_record(r) for r in rows]

    async def get_schedule_overrides(self) -> dict[tuple[str, str], tuple[bool, str | None]]:
        rows = await self._read(lambda c: c.execute(Q["get_schedules"]).fetchall())
        return {(r[0], r[1]): (bool(r[2]), r[3]) for r in rows}

    async def set_schedule(self, flow_id: str, trigger: str, *, paused: bool | None = None,
                           expression: str | None = None, clear_expression: bool = False, now: datetime) -> None:
        params = {"flow_id": flow_id, "trigger": trigger, "paused": None if paused is None else int(paused),
                  "expression": expression, "clear": int(clear_expression), "now": _ts(now)}
        await self._write(lambda c: c.execute(Q["upsert_schedule"], params))

    async def find_idle_runs(self, limit: int = 500) -> list[tuple[str, str, str]]:
        rows = await self._read(lambda c: c.execute(Q["find_idle_runs"], (limit,)).fetchall())
        return [(r[0], r[1], r[2]) for r in rows]

    # -- retention ---------------------------------------------------------------------

    async def prune(self, older_than: datetime, *, batch_size: int = 500) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        t = _ts(older_than)

        def batch(conn: sqlite3.Connection, after: str) -> tuple[int, str | None]:
            # One short write transaction per batch: the group committer's batches run in between.
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [r[0] for r in conn.execute(Q["prune_candidates"], (after, t, batch_size))]
                deleted = 0
                if ids:
                    arg = (json.dumps(ids),)
                    conn.execute(Q["prune_steps"], arg)
                    conn.execute(Q["prune_dispatches"], arg)
                    conn.execute(Q["prune_attempts"], arg)
                    conn.execute(Q["prune_events"], arg)
                    conn.execute(Q["prune_signals"], arg)
                    conn.execute(Q["prune_cron_fires"], arg)
                    deleted = conn.execute(Q["prune_runs"], arg).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return deleted, ids[-1] if ids else None

        total = 0
        after: str | None = ""
        while after is not None:
            n, after = await self._write(functools.partial(batch, after=after))
            total += n
        return total
