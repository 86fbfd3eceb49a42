"""Retention: Store.prune (the contract in stores/base.py) on every store, and Orchestrator.prune."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from floworchestrator import Flow, Orchestrator, Step
from floworchestrator._status import RunStatus, StepStatus
from floworchestrator.exceptions import InvalidOperationError
from floworchestrator.flow import CompiledFlow
from floworchestrator.stores.base import Applied, CancelRun, Grant, RetryStep, RunStarted, Signal, Store
from floworchestrator.stores.memory import MemoryStore
from floworchestrator.stores.sqlite import SQLiteStore

from ..conftest import OrchFactory
from .test_contract import DIAMOND, LINEAR, T0, claim, complete, one, setup_flows, start_op

S = StepStatus
OLD = T0 + timedelta(hours=1)
CUTOFF = T0 + timedelta(days=1)
NEW = T0 + timedelta(days=2)

TABLES = ("fo_runs", "fo_steps", "fo_dispatches", "fo_attempts", "fo_events", "fo_signals", "fo_cron_fires")


def rows_of(store: Store, run_ids: set[str]) -> dict[str, int]:
    """How many rows (or entries, in memory) each table holds for these runs: what prune must leave at 0."""
    if isinstance(store, MemoryStore):
        d = store._d
        return {
            "fo_runs": sum(r in d.runs for r in run_ids),
            "fo_steps": sum(len(d.steps.get(r, {})) for r in run_ids),
            "fo_dispatches": sum(e[0] in run_ids for e in d.ledger),
            "fo_attempts": sum(len(d.attempts.get(r, [])) for r in run_ids),
            "fo_events": sum(e.run_id in run_ids for e in d.events),
            "fo_signals": sum(s.run_id in run_ids for s in d.signals.values()),
            "fo_cron_fires": sum(r in run_ids for r in d.fires.values()),
            "idempotency_keys": sum(r in run_ids for r in d.run_keys.values()),
        }
    ids = sorted(run_ids)
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        try:
            marks = ",".join("?" * len(ids))
            return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE run_id IN ({marks})", ids).fetchone()[0] for t in TABLES}
        finally:
            conn.close()
    import psycopg

    from floworchestrator.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.url, autocommit=True) as pg:
        counts = {}
        for t in TABLES:
            row = pg.execute(f"SELECT count(*) FROM {t} WHERE run_id = ANY(%s)", (ids,)).fetchone()
            assert row is not None
            counts[t] = row[0]
        return counts


async def finished_run(store: Store, c: CompiledFlow, at: datetime, *, key: str | None = None,
                       cron: tuple[str, datetime] | None = None, signal: bool = False) -> str:
    """A run of LINEAR that ends Succeeded at ``at``, with attempts, events, dispatches and, if asked, a signal."""
    op = start_op(c, key=key, now=at - timedelta(minutes=5))
    op.cron_fire = cron
    res = await one(store, op)
    assert isinstance(res, RunStarted) and res.run_id and res.created
    rid = res.run_id
    if signal:
        await one(store, Signal(rid, "go", '"payload"', at - timedelta(minutes=4)))
    for key_ in c.graph.order:
        g = await one(store, claim(c, rid, key_, now=at - timedelta(minutes=1)))
        assert isinstance(g, Grant), key_
        done = await one(store, complete(c, rid, key_, now=at))
        assert isinstance(done, Applied) and done.applied
    run = await store.get_run(rid)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.finished_at == at
    return rid


async def cancelled_run(store: Store, c: CompiledFlow, at: datetime) -> str:
    res = await one(store, start_op(c, now=at - timedelta(minutes=5)))
    assert isinstance(res, RunStarted) and res.run_id
    assert isinstance(await one(store, claim(c, res.run_id, "a", now=at - timedelta(minutes=1))), Grant)
    cancelled = await one(store, CancelRun(res.run_id, at))
    assert isinstance(cancelled, Applied) and cancelled.applied
    return res.run_id


async def running_run(store: Store, c: CompiledFlow, started: datetime) -> str:
    """A run started long ago that is still Running: its first step done, the second running."""
    res = await one(store, start_op(c, now=started))
    assert isinstance(res, RunStarted) and res.run_id
    rid = res.run_id
    await one(store, Signal(rid, "later", "1", started))
    assert isinstance(await one(store, claim(c, rid, "a", now=started)), Grant)
    assert isinstance(await one(store, complete(c, rid, "a", now=started)), Applied)
    assert isinstance(await one(store, claim(c, rid, "b", now=started, lease=10**9)), Grant)
    return rid


async def snapshot(store: Store, run_id: str) -> tuple[Any, ...]:
    return (await store.get_run(run_id), await store.get_steps(run_id), await store.get_attempts(run_id),
            await store.get_events(run_id), await store.get_signals(run_id))


# --- what goes and what stays ------------------------------------------------------------


async def test_prune_deletes_old_finished_runs_with_everything_of_theirs(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    old = {
        await finished_run(store, c, OLD, key="k-old", signal=True),
        await finished_run(store, c, OLD, cron=("nightly", OLD - timedelta(minutes=5))),
        await cancelled_run(store, c, OLD),
    }
    assert all(n > 0 for t, n in rows_of(store, old).items() if t not in ("fo_signals", "fo_cron_fires", "idempotency_keys"))
    assert rows_of(store, old)["fo_signals"] == rows_of(store, old)["fo_cron_fires"] == 1

    assert await store.prune(CUTOFF) == 3

    assert all(n == 0 for n in rows_of(store, old).values()), rows_of(store, old)
    for rid in old:
        assert await snapshot(store, rid) == (None, [], [], [], [])
    assert await store.count_runs() == 0
    assert all(e.run_id not in old for e in await store.get_events())


async def test_prune_keeps_running_runs_newer_runs_flows_and_manifests(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    ancient_running = await running_run(store, c, T0 - timedelta(days=365))
    new = await finished_run(store, c, NEW, signal=True)
    at_cutoff = await finished_run(store, c, CUTOFF)  # finished exactly then: not *before* it
    gone = await finished_run(store, c, OLD)
    kept = {rid: await snapshot(store, rid) for rid in (ancient_running, new, at_cutoff)}
    flows = await store.list_flows()

    assert await store.prune(CUTOFF) == 1

    assert await store.get_run(gone) is None
    assert {rid: await snapshot(store, rid) for rid in kept} == kept
    assert await store.list_flows() == flows
    assert await store.get_manifest(c.manifest_id) == c.manifest
    assert rows_of(store, {ancient_running})["fo_signals"] == 1
    # The running run still works: its step completes and the run goes on.
    done = await one(store, complete(c, ancient_running, "b", now=T0 - timedelta(days=365)))
    assert isinstance(done, Applied) and done.applied
    assert [d.step_key for d in done.effects.dispatched] == ["c"]


async def test_a_run_retried_back_to_running_is_not_pruned(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    res = await one(store, start_op(c, now=OLD - timedelta(minutes=5)))
    assert isinstance(res, RunStarted) and res.run_id
    rid = res.run_id
    assert isinstance(await one(store, claim(c, rid, "a", now=OLD)), Grant)
    failed = await one(store, complete(c, rid, "a", S.FAILED, error="boom", now=OLD))
    assert isinstance(failed, Applied)
    run = await store.get_run(rid)
    assert run is not None and run.status is RunStatus.FAILED
    assert isinstance(await one(store, RetryStep(c.flow_id, rid, "a", c.graph, OLD)), Applied)
    assert await store.prune(CUTOFF) == 0
    again = await store.get_run(rid)
    assert again is not None and again.status is RunStatus.RUNNING


async def test_prune_with_nothing_to_delete(store: Store) -> None:
    assert await store.prune(CUTOFF) == 0
    c = (await setup_flows(store, LINEAR))["linear"]
    await finished_run(store, c, NEW)
    assert await store.prune(CUTOFF) == 0
    assert await store.count_runs() == 1


# --- batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 5, 500])
async def test_prune_deletes_every_match_whatever_the_batch_size(store: Store, batch_size: int) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    old = {await cancelled_run(store, c, OLD + timedelta(seconds=i)) for i in range(5)}
    running = await running_run(store, (await setup_flows(store, LINEAR))["linear"], T0)
    new = await cancelled_run(store, c, NEW)
    assert await store.prune(CUTOFF, batch_size=batch_size) == 5
    assert all(n == 0 for n in rows_of(store, old).values())
    assert {r.run_id for r in await store.list_runs()} == {running, new}


@pytest.mark.parametrize("batch_size", [0, -1])
async def test_batch_size_must_be_positive(store: Store, batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await store.prune(CUTOFF, batch_size=batch_size)


async def test_engine_writes_go_on_while_prune_runs(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    old = {await cancelled_run(store, c, OLD) for _ in range(20)}

    async def work() -> str:
        return await finished_run(store, c, NEW)

    pruned, *fresh = await asyncio.gather(store.prune(CUTOFF, batch_size=3), *(work() for _ in range(5)))
    assert pruned == 20
    assert all(n == 0 for n in rows_of(store, old).values())
    assert {r.run_id for r in await store.list_runs()} == set(fresh)


# --- what pruning frees ------------------------------------------------------------------


async def test_a_pruned_runs_idempotency_key_and_cron_fire_are_free_again(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    fire = ("nightly", OLD - timedelta(minutes=5))
    first = await finished_run(store, c, OLD, key="k", cron=fire)
    same = await one(store, start_op(c, key="k"))
    assert isinstance(same, RunStarted) and (same.run_id, same.created) == (first, False)

    assert await store.prune(CUTOFF) == 1

    again = await one(store, start_op(c, key="k", now=NEW))
    assert isinstance(again, RunStarted) and again.created and again.run_id != first
    op = start_op(c, now=NEW)
    op.cron_fire = fire
    refired = await one(store, op)
    assert isinstance(refired, RunStarted) and refired.created


async def test_event_and_signal_ids_are_not_reused_after_prune(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    kept = await running_run(store, c, NEW)
    await finished_run(store, c, OLD, signal=True)  # the newest events and signal are the pruned run's
    last_event = max(e.event_id for e in await store.get_events())
    last_signal = max([s.signal_id for r in await store.list_runs() for s in await store.get_signals(r.run_id)])
    assert await store.prune(CUTOFF) == 1
    remaining = await store.get_events()
    assert remaining and {e.run_id for e in remaining} == {kept}
    assert await store.get_events(after=last_event) == []
    await one(store, Signal(kept, "more", "2", NEW))
    (received,) = await store.get_events(after=last_event)  # a new id, past every id the pruned run had
    assert (received.run_id, received.kind) == (kept, "SignalReceived") and received.event_id > last_event
    assert max(s.signal_id for s in await store.get_signals(kept)) > last_signal


# --- Orchestrator.prune ------------------------------------------------------------------


def echo_app(make_orch: OrchFactory) -> Orchestrator:
    orch = make_orch()

    @orch.handler("Echo")
    async def echo(inputs: Any) -> Any:
        return inputs

    orch.register(Flow("f", {"a": Step("Echo", inputs={"n": 1}), "b": Step("Echo", run_after={"a": ["Succeeded"]})}))
    return orch


async def test_orchestrator_prune_by_age_or_by_time(make_orch: OrchFactory) -> None:
    orch = echo_app(make_orch)
    async with orch:
        done = await orch.run("f", timeout=10)
        assert done.status is RunStatus.SUCCEEDED
        assert await orch.prune(timedelta(hours=1)) == 0  # finished just now
        assert await orch.get_run(done.run_id) is not None
        assert await orch.prune(datetime.now(UTC)) == 1
        assert await orch.get_run(done.run_id) is None
        assert await orch.get_steps(done.run_id) == []
        assert await orch.get_events(done.run_id) == []
        assert (await orch.run("f", timeout=10)).status is RunStatus.SUCCEEDED  # the engine goes on


@pytest.mark.parametrize(
    ("older_than", "message"),
    [
        (timedelta(0), "positive age"),
        (timedelta(days=-1), "positive age"),
        (datetime(2026, 1, 1), "timezone-aware"),
        (datetime.now(UTC) + timedelta(days=1), "future"),
    ],
)
async def test_orchestrator_prune_rejects_what_would_delete_the_wrong_runs(
    make_orch: OrchFactory, older_than: timedelta | datetime, message: str
) -> None:
    orch = echo_app(make_orch)
    async with orch:
        with pytest.raises(InvalidOperationError, match=message):
            await orch.prune(older_than)
        with pytest.raises(InvalidOperationError, match="batch_size"):
            await orch.prune(timedelta(days=1), batch_size=0)
