"""A test-only runtime on a PostgreSQL queue table, and the flows and handlers the torture tests run.

Nothing here is part of the package. ``QueueDispatcher`` follows the
:class:`~floworchestrator.runtimes.base.Dispatcher` contract the way a broker
runtime (Celery, RabbitMQ) would:

- ``enqueue`` inserts every message ``copies`` times into ``torture_queue`` in
  the same database as the store (``not_before`` = now + delay). It works
  without ``start`` (a client orchestrator, ``start(workers=False)``, enqueues
  the entry steps of the runs it triggers) and is durable: messages outlive the
  process that enqueued them.
- ``start(runner)`` starts a fetcher that takes one due message at a time
  (``DELETE ... FOR UPDATE SKIP LOCKED``: at most one consumer gets a given
  row, but the copies of a message are separate rows, so they race on
  different workers) and runs ``runner(message)`` in a task, at most
  ``concurrency`` at once. Every message taken is logged in
  ``torture_deliveries`` with the taking process's pid. If ``runner`` raises,
  the message goes back to the queue (a broker's nack), 0.1 s later.
- A step the engine claims inline (a completion claims the next ready step for
  its own worker in the same transaction, without a message) is delivered
  ``copies`` times too: a deferred constraint trigger on the dispatch ledger
  queues copies of every ledger row whose step is already Running (claimed) at
  commit. So every dispatch of every step, inline or not, gets ``copies``
  deliveries.

Handlers record each execution in ``torture_effects`` (run, step, attempt,
pid): an outside side effect whose count the tests compare with the engine's
attempt records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from floworchestrator import Flow, Orchestrator, Step, StepContext
from floworchestrator.runtimes.base import Dispatcher, StepMessage, StepRunner
from floworchestrator.stores.postgres import PostgresStore

log = logging.getLogger("torture.harness")

HARNESS_SCHEMA = """
CREATE TABLE torture_config (copies integer NOT NULL);
CREATE TABLE torture_queue (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow_id    text NOT NULL,
    run_id     text NOT NULL,
    step_key   text NOT NULL,
    generation integer NOT NULL,
    not_before timestamptz NOT NULL,
    source     text NOT NULL
);
CREATE INDEX torture_queue_due ON torture_queue (not_before, id);
CREATE TABLE torture_deliveries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     text NOT NULL,
    step_key   text NOT NULL,
    generation integer NOT NULL,
    source     text NOT NULL,
    pid        integer NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE torture_effects (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   text NOT NULL,
    step_key text NOT NULL,
    attempt  integer NOT NULL,
    pid      integer NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE torture_workers (pid integer PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE torture_gates (run_id text PRIMARY KEY);

-- A step claimed inline (in the transaction that recorded its dispatch) gets no message from the
-- engine: deliver copies of it anyway, so that every dispatch is delivered `copies` times.
CREATE FUNCTION torture_copy_inline_claims() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO torture_queue (flow_id, run_id, step_key, generation, not_before, source)
    SELECT r.flow_id, NEW.run_id, NEW.step_key, NEW.generation, clock_timestamp(), 'inline'
    FROM fo_steps s JOIN fo_runs r ON r.run_id = s.run_id,
         generate_series(1, (SELECT copies FROM torture_config)) AS g
    WHERE s.run_id = NEW.run_id AND s.step_key = NEW.step_key AND s.generation = NEW.generation
      AND s.status = 'Running' AND NOT s.queued;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER torture_copy_inline_claims AFTER INSERT ON fo_dispatches
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION torture_copy_inline_claims();
"""

_TAKE = """
WITH taken AS (
    DELETE FROM torture_queue WHERE id = (
        SELECT id FROM torture_queue WHERE not_before <= clock_timestamp()
        ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING flow_id, run_id, step_key, generation, source
), logged AS (
    INSERT INTO torture_deliveries (run_id, step_key, generation, source, pid)
    SELECT run_id, step_key, generation, source, %s FROM taken
)
SELECT flow_id, run_id, step_key, generation FROM taken
"""

_PUT = """
INSERT INTO torture_queue (flow_id, run_id, step_key, generation, not_before, source)
SELECT f, r, k, g, clock_timestamp() + make_interval(secs => %(delay)s), %(source)s
FROM unnest(%(flows)s::text[], %(runs)s::text[], %(keys)s::text[], %(gens)s::integer[]) WITH ORDINALITY AS t(f, r, k, g, i),
     generate_series(1, %(copies)s) AS c
ORDER BY c, i
"""


def with_app_name(url: str, name: str) -> str:
    """``url`` with ``application_name=name``: the tests tell connections apart by it in pg_stat_activity."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"] + [("application_name", name)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def install(conn: psycopg.Connection[Any], copies: int) -> None:
    """Create the harness's tables and trigger in a database that already has the store's schema."""
    conn.execute(HARNESS_SCHEMA)
    conn.execute("INSERT INTO torture_config (copies) VALUES (%s)", (copies,))


class _Conn:
    """One lazily opened autocommit connection, replaced when it breaks (one retry per call)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> psycopg.AsyncConnection[Any]:
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                if self._conn is not None:
                    await self._conn.close()
                self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            return self._conn

    async def fetchall(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            conn = await self.get()
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if attempt == 2 or not conn.broken:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class QueueDispatcher(Dispatcher):
    """A durable runtime on the ``torture_queue`` table that delivers every message ``copies`` times."""

    durable = True

    def __init__(self, url: str, *, copies: int = 1, concurrency: int = 4, poll: float = 0.05) -> None:
        self.copies = copies
        self.concurrency = concurrency
        self.poll = poll
        self._put = _Conn(url)
        self._take = _Conn(url)
        self._runner: StepRunner | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    async def start(self, runner: StepRunner) -> None:
        self._runner = runner
        self._fetcher = asyncio.get_running_loop().create_task(self._fetch(), name="torture-fetcher")

    async def enqueue(self, messages: Sequence[StepMessage], delay: float = 0.0) -> None:
        await self._insert(messages, delay, self.copies, "enqueue")

    async def _insert(self, messages: Sequence[StepMessage], delay: float, copies: int, source: str) -> None:
        if not messages:
            return
        await self._put.fetchall(_PUT, {
            "delay": max(0.0, delay), "source": source, "copies": copies,
            "flows": [m.flow_id for m in messages], "runs": [m.run_id for m in messages],
            "keys": [m.step_key for m in messages], "gens": [m.generation for m in messages],
        })

    async def _fetch(self) -> None:
        pid = os.getpid()
        idle = 0.005
        while True:
            await self._slots.acquire()
            try:
                rows = await self._take.fetchall(_TAKE, (pid,))
            except Exception:
                self._slots.release()
                log.exception("could not take a message; trying again")
                await asyncio.sleep(0.1)
                continue
            if not rows:
                self._slots.release()
                await asyncio.sleep(idle)
                idle = min(self.poll, idle * 2)
                continue
            idle = 0.005
            flow_id, run_id, step_key, generation = rows[0]
            task = asyncio.get_running_loop().create_task(self._deliver(StepMessage(flow_id, run_id, step_key, generation)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, msg: StepMessage) -> None:
        assert self._runner is not None
        try:
            await self._runner(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A broker would redeliver an unacknowledged message: put it back.
            log.warning("step %s of run %s could not be processed; redelivering it", msg.step_key, msg.run_id, exc_info=True)
            try:
                await self._insert([msg], 0.1, 1, "nack")
            except Exception:
                log.exception("could not put step %s of run %s back; recovery will find it", msg.step_key, msg.run_id)
        finally:
            self._slots.release()

    async def stop(self, timeout: float = 30.0) -> None:
        if self._fetcher is not None:
            self._fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetcher
            self._fetcher = None
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._runner = None
        await self.close()

    async def close(self) -> None:
        """Close the connections (a client orchestrator never calls ``stop`` on its dispatcher)."""
        await self._take.close()
        await self._put.close()


# --- the application: flows and handlers (the same in the test process and in every worker) -------------


class Effects:
    """The handlers' outside world: a row per execution in ``torture_effects``, and gates to wait on."""

    def __init__(self) -> None:
        self.conn: _Conn | None = None

    def open(self, url: str) -> None:
        self.conn = _Conn(url)

    async def record(self, ctx: StepContext) -> None:
        assert self.conn is not None, "Effects.open() was not called in this process"
        await self.conn.fetchall(
            "INSERT INTO torture_effects (run_id, step_key, attempt, pid) VALUES (%s, %s, %s, %s)",
            (ctx.run_id, ctx.step_key, ctx.attempt, os.getpid()),
        )

    async def wait_gate(self, run_id: str, timeout: float = 120.0) -> None:
        assert self.conn is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not await self.conn.fetchall("SELECT 1 FROM torture_gates WHERE run_id = %s", (run_id,)):
            if loop.time() > end:
                raise TimeoutError(f"the gate of run {run_id} never opened")
            await asyncio.sleep(0.05)


effects = Effects()


def diamond_result(n: int) -> int:
    """What the diamond's ``d`` step outputs for a trigger body ``{"n": n}``."""
    return (n + 2) + 2 * (n + 1)


FLOWS = [
    # a -> (b, c) -> d, each reading what came before: a run whose data got mixed up shows in d's output.
    Flow("diamond", {
        "a": Step("Add", inputs={"n": "@triggerBody()?.n"}),
        "b": Step("Add", inputs={"n": "@steps('a').output.n"}, run_after={"a": ["Succeeded"]}),
        "c": Step("Double", inputs={"n": "@steps('a').output.n"}, run_after={"a": ["Succeeded"]}),
        "d": Step("Sum", inputs={"x": "@steps('b').output.n", "y": "@steps('c').output.n"},
                  run_after={"b": ["Succeeded"], "c": ["Succeeded"]}),
    }),
    # a -> h -> z, where h can be told (by the trigger body) to hang on its first attempt, or wait for a gate.
    Flow("hold", {
        "a": Step("Add", inputs={"n": "@triggerBody()?.n"}),
        "h": Step("Hold", inputs={"n": "@steps('a').output.n", "hold": "@triggerBody()?.hold"}, run_after={"a": ["Succeeded"]}),
        "z": Step("Add", inputs={"n": "@steps('h').output.n"}, run_after={"h": ["Succeeded"]}),
    }),
]


def build(store: PostgresStore | str, runtime: Dispatcher | str, **options: Any) -> Orchestrator:
    """The torture application: the same flows and handlers wherever it runs."""
    options.setdefault("cron", False)
    orch = Orchestrator(store=store, runtime=runtime, **options)

    @orch.handler("Add")
    async def add(inputs: dict[str, Any], ctx: StepContext) -> dict[str, int]:
        await effects.record(ctx)
        return {"n": int(inputs["n"]) + 1}

    @orch.handler("Double")
    async def double(inputs: dict[str, Any], ctx: StepContext) -> dict[str, int]:
        await effects.record(ctx)
        return {"n": int(inputs["n"]) * 2}

    @orch.handler("Sum")
    async def total(inputs: dict[str, Any], ctx: StepContext) -> dict[str, int]:
        await effects.record(ctx)
        return {"n": int(inputs["x"]) + int(inputs["y"])}

    @orch.handler("Hold")
    async def hold(inputs: dict[str, Any], ctx: StepContext) -> dict[str, int]:
        await effects.record(ctx)
        if inputs.get("hold") == "forever" and ctx.attempt == 1:
            await asyncio.sleep(600)  # until the test kills this process
        elif inputs.get("hold") == "gate":
            await effects.wait_gate(ctx.run_id)
        return {"n": int(inputs["n"]) + 1}

    orch.register(*FLOWS)
    return orch
