"""Dispatch many, execute once; and recovery of work a dead worker held (DESIGN §4.2, §4.6)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from floworchestrator import Flow, Orchestrator, RunStatus, Step, StepContext, StepStatus
from floworchestrator._ids import new_id
from floworchestrator.engine import utcnow
from floworchestrator.runtimes.base import StepMessage
from floworchestrator.runtimes.inprocess import InProcessDispatcher
from floworchestrator.stores.base import Claim, Grant, StartRun, Store

from ..conftest import make_store


class Duplicating(InProcessDispatcher):
    """Delivers every message ``copies`` times, all at once."""

    def __init__(self, copies: int, concurrency: int = 64) -> None:
        super().__init__(concurrency)
        self.copies = copies
        self.delivered = 0

    async def enqueue(self, messages: Sequence[StepMessage], delay: float = 0.0) -> None:
        self.delivered += len(messages) * self.copies
        await super().enqueue([m for m in messages for _ in range(self.copies)], delay)


def diamond() -> Flow:
    return Flow("d", {
        "a": Step("Count"),
        **{f"b{i}": Step("Count", run_after={"a": ["Succeeded"]}) for i in range(5)},
        "join": Step("Count", run_after={f"b{i}": ["Succeeded"] for i in range(5)}),
    })


async def test_step_delivered_50_times_concurrently_runs_once(store_kind: str, tmp_path: Path) -> None:
    dispatcher = Duplicating(50)
    orch = Orchestrator(store=make_store(store_kind, tmp_path), runtime=dispatcher, cron=False)
    calls: Counter[tuple[str, str]] = Counter()

    @orch.handler("Count")
    async def count(inputs: Any, ctx: StepContext) -> None:
        calls[(ctx.run_id, ctx.step_key)] += 1
        await asyncio.sleep(0.01)  # keep the claim open while the duplicates arrive

    orch.register(diamond())
    async with orch:
        runs = await asyncio.gather(*(orch.run("d", timeout=20) for _ in range(5)))
        assert all(r.status is RunStatus.SUCCEEDED for r in runs)
        # And the same message handed straight to the engine 50 times at once, after the fact:
        msg = StepMessage("d", runs[0].run_id, "join", 1)
        await asyncio.gather(*(orch.engine.run_step(msg) for _ in range(50)))
        for r in runs:
            attempts = await orch.get_attempts(r.run_id)
            assert len(attempts) == 7
    # Each run's "a" completion claims one "b" for its own worker in the same transaction (no message);
    # every other step's message was delivered 50 times.
    assert dispatcher.delivered == 5 * (7 - 2) * 50
    assert len(calls) == 5 * 7 and set(calls.values()) == {1}


async def test_two_orchestrators_on_one_sqlite_file_each_step_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    calls: Counter[tuple[str, str]] = Counter()
    orchs = [Orchestrator(store=url, runtime=InProcessDispatcher(8), cron=False) for _ in range(2)]
    for o in orchs:
        o.add_handler("Count", lambda inputs, ctx: calls.update([(ctx.run_id, ctx.step_key)]))
        o.register(diamond())

    # Every message either orchestrator dispatches is delivered to both.
    async def both(messages: Sequence[StepMessage], delay: float = 0.0) -> None:
        for o in orchs:
            await InProcessDispatcher.enqueue(o.dispatcher, messages, delay)  # type: ignore[arg-type]

    for o in orchs:
        o.dispatcher.enqueue = both  # type: ignore[method-assign]
    for o in orchs:
        await o.start()
    try:
        ids = [await orchs[i % 2].trigger("d") for i in range(10)]
        runs = [await orchs[0].wait(i, timeout=30) for i in ids]
    finally:
        for o in orchs:
            await o.stop()
    assert all(r.status is RunStatus.SUCCEEDED for r in runs)
    assert len(calls) == 10 * 7 and set(calls.values()) == {1}


async def _start_run_directly(store: Store, orch: Orchestrator, flow_id: str) -> str:
    """Write a run the way a process that died right after committing it would leave it: queued, never delivered."""
    compiled = orch.engine.flows[flow_id]
    await store.upsert_flows([(flow_id, "1", compiled.manifest_id, json.dumps(compiled.manifest), True)], utcnow())
    run_id = new_id()
    await store.apply([StartRun(run_id, flow_id, compiled.manifest_id, compiled.graph.order, compiled.waiting,
                                "manual", "null", "{}", None, utcnow())])
    return run_id


async def test_dead_workers_claim_is_recovered_after_its_lease(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    orch = Orchestrator(store=store, runtime="inprocess", cron=False, recovery_interval=0.05, lease_seconds=5)
    calls: list[tuple[str, int]] = []
    orch.add_handler("Count", lambda inputs, ctx: calls.append((ctx.step_key, ctx.attempt)))
    orch.register(Flow("f", {"a": Step("Count"), "b": Step("Count", run_after={"a": ["Succeeded"]})}))
    await store.open()
    run_id = await _start_run_directly(store, orch, "f")
    # A worker claims "a" and dies: its lease runs out in 0.3 s and nobody extends it.
    now = utcnow()
    (grant,) = await store.apply([Claim("f", run_id, "a", 1, "dead-worker", now + timedelta(seconds=0.3), now)])
    assert isinstance(grant, Grant)
    await store.close()
    async with orch:
        run = await orch.wait(run_id, timeout=15)
        attempts = await orch.get_attempts(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert calls == [("a", 2), ("b", 1)]
    lost, retried, b = attempts
    assert (lost.step_key, lost.attempt, lost.status, lost.owner) == ("a", 1, StepStatus.FAILED, "dead-worker")
    assert "lease expired" in (lost.error or "")
    assert (retried.step_key, retried.attempt, retried.status) == ("a", 2, StepStatus.SUCCEEDED)
    assert b.step_key == "b"


async def test_ready_but_never_dispatched_steps_run_on_start(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    orch = Orchestrator(store=store, runtime="inprocess", cron=False)
    orch.add_handler("Count", lambda inputs: "done")
    orch.register(Flow("f", {"a": Step("Count"), "b": Step("Count", run_after={"a": []})}))
    await store.open()
    run_ids = [await _start_run_directly(store, orch, "f") for _ in range(3)]
    await store.close()
    async with orch:
        for rid in run_ids:
            assert (await orch.wait(rid, timeout=10)).status is RunStatus.SUCCEEDED


async def test_a_long_step_keeps_its_lease_alive(store_kind: str, tmp_path: Path) -> None:
    # Lease 0.3 s, step 1 s: without the heartbeat, recovery would run the step a second time.
    orch = Orchestrator(store=make_store(store_kind, tmp_path), runtime="inprocess", cron=False,
                        lease_seconds=0.3, recovery_interval=0.05)
    calls: list[int] = []

    @orch.handler("Long")
    async def long(inputs: Any, ctx: StepContext) -> None:
        calls.append(ctx.attempt)
        await asyncio.sleep(1.0)

    orch.register(Flow("f", {"a": Step("Long")}))
    async with orch:
        run = await orch.run("f", timeout=10)
    assert run.status is RunStatus.SUCCEEDED and calls == [1]
