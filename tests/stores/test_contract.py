"""The Store contract (stores/base.py docstrings), run against every store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from floworchestrator._ids import new_id
from floworchestrator._status import RunStatus, StepStatus
from floworchestrator.exceptions import InvalidOperationError, StoreError, UnknownRunError, UnknownStepError
from floworchestrator.flow import CompiledFlow
from floworchestrator.planner import Graph
from floworchestrator.stores.base import (
    Applied,
    CancelRun,
    Claim,
    Complete,
    ExpireLease,
    ExtendLeases,
    Grant,
    Reconcile,
    RetryStep,
    RunFilter,
    RunStarted,
    StartRun,
    Store,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = StepStatus

LINEAR = {"id": "linear", "version": "1", "triggers": {"manual": {"kind": "manual"}}, "steps": {
    "a": {"type": "T", "inputs": None, "run_after": {}},
    "b": {"type": "T", "inputs": None, "run_after": {"a": ["Succeeded"]}},
    "c": {"type": "T", "inputs": None, "run_after": {"b": ["Succeeded"]}},
}}
DIAMOND = {"id": "diamond", "version": "1", "triggers": {"manual": {"kind": "manual"}}, "steps": {
    "a": {"type": "T", "inputs": None, "run_after": {}},
    "b": {"type": "T", "inputs": None, "run_after": {"a": ["Succeeded"]}},
    "c": {"type": "T", "inputs": None, "run_after": {"a": ["Succeeded"]}},
    "d": {"type": "T", "inputs": None, "run_after": {"b": ["Succeeded"], "c": ["Succeeded"]}},
}}


def compiled(manifest: dict[str, object]) -> CompiledFlow:
    return CompiledFlow.from_manifest(manifest)


async def setup_flows(store: Store, *manifests: dict[str, object], enabled: bool = True) -> dict[str, CompiledFlow]:
    out = {}
    rows = []
    for m in manifests:
        c = compiled(m)
        out[c.flow_id] = c
        rows.append((c.flow_id, "1", c.manifest_id, json.dumps(c.manifest), enabled))
    await store.upsert_flows(rows, T0)
    return out


def start_op(c: CompiledFlow, *, key: str | None = None, body: object = None, now: datetime = T0) -> StartRun:
    return StartRun(new_id(), c.flow_id, c.manifest_id, c.graph.order, c.waiting, "manual",
                    json.dumps(body), json.dumps({"x-id": "7"}), key, now)


async def one(store: Store, op: object) -> object:
    (res,) = await store.apply([op])  # type: ignore[list-item]
    return res


async def start(store: Store, c: CompiledFlow, **kw: object) -> RunStarted:
    res = await one(store, start_op(c, **kw))  # type: ignore[arg-type]
    assert isinstance(res, RunStarted)
    return res


def claim(c: CompiledFlow, run_id: str, key: str, gen: int = 1, owner: str = "w1", now: datetime = T0,
          lease: float = 60, want: tuple[str, ...] = ()) -> Claim:
    return Claim(c.flow_id, run_id, key, gen, owner, now + timedelta(seconds=lease), now, want)


def complete(c: CompiledFlow, run_id: str, key: str, status: StepStatus = S.SUCCEEDED, gen: int = 1, owner: str = "w1",
             output: object = None, error: str | None = None, now: datetime = T0, delay: float = 0.0) -> Complete:
    return Complete(c.flow_id, run_id, key, gen, owner, status, None if output is None else json.dumps(output), error,
                    None, now, now, c.graph, delay)


async def run_step(store: Store, c: CompiledFlow, run_id: str, key: str, status: StepStatus = S.SUCCEEDED,
                   gen: int = 1, output: object = None, error: str | None = None) -> Applied:
    g = await one(store, claim(c, run_id, key, gen))
    assert isinstance(g, Grant), f"claim of {key} failed"
    res = await one(store, complete(c, run_id, key, status, gen, output=output, error=error))
    assert isinstance(res, Applied)
    return res


async def statuses(store: Store, run_id: str) -> dict[str, StepStatus]:
    return {s.step_key: s.status for s in await store.get_steps(run_id)}


# --- flows ------------------------------------------------------------------


async def test_upsert_flows_keeps_enabled_flag_of_existing_flow(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    assert await store.set_flow_enabled("linear", False, T0)
    await store.upsert_flows([("linear", "2", c.manifest_id, json.dumps(c.manifest), True)], T0)
    (flow,) = await store.list_flows()
    assert (flow.flow_id, flow.version, flow.enabled) == ("linear", "2", False)
    assert flow.manifest["steps"].keys() == {"a", "b", "c"}
    assert await store.get_manifest(c.manifest_id) == c.manifest
    assert await store.get_manifest("nope") is None
    assert not await store.set_flow_enabled("nope", True, T0)


async def test_new_flow_may_start_disabled(store: Store) -> None:
    await setup_flows(store, LINEAR, enabled=False)
    assert [f.enabled for f in await store.list_flows()] == [False]


# --- starting runs -------------------------------------------------------------


async def test_start_run_creates_pending_steps_and_queues_entries(store: Store) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    res = await start(store, c, body={"n": 1})
    assert res.created and not res.disabled and res.run_id
    assert [(d.step_key, d.generation) for d in res.effects.dispatched] == [("a", 1)]
    run = await store.get_run(res.run_id)
    assert run is not None
    assert (run.status, run.flow_id, run.trigger_body, run.trigger_headers, run.manifest_id) == (
        RunStatus.RUNNING, "diamond", {"n": 1}, {"x-id": "7"}, c.manifest_id)
    steps = await store.get_steps(res.run_id)
    assert [(s.step_key, s.status, s.queued, s.generation) for s in steps] == [
        ("a", S.PENDING, True, 1), ("b", S.PENDING, False, 0), ("c", S.PENDING, False, 0), ("d", S.PENDING, False, 0)]


async def test_start_run_of_disabled_or_unknown_flow_writes_nothing(store: Store) -> None:
    c = (await setup_flows(store, LINEAR, enabled=False))["linear"]
    res = await start(store, c)
    assert res.disabled and res.run_id is None and not res.created
    unknown = compiled({**LINEAR, "id": "ghost"})
    assert (await start(store, unknown)).disabled
    assert await store.count_runs() == 0


async def test_same_idempotency_key_returns_existing_run(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    first = await start(store, c, key="k1")
    again = await start(store, c, key="k1")
    other = await start(store, c, key="k2")
    assert again.run_id == first.run_id and not again.created and not again.effects.dispatched
    assert other.run_id != first.run_id and other.created
    assert await store.count_runs() == 2


async def test_same_idempotency_key_in_one_batch_creates_one_run(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    res = await store.apply([start_op(c, key="k"), start_op(c, key="k")])
    assert isinstance(res[0], RunStarted) and isinstance(res[1], RunStarted)
    assert res[0].created and not res[1].created and res[1].run_id == res[0].run_id
    assert await store.count_runs() == 1


async def test_failing_op_rolls_back_whole_batch(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    op = start_op(c)
    with pytest.raises(StoreError):
        await store.apply([start_op(c), op, op])  # the duplicate run id fails the batch
    assert await store.count_runs() == 0


# --- claims ----------------------------------------------------------------------


async def test_claim_succeeds_once(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c, body={"b": 2})
    assert run.run_id
    results = await store.apply([claim(c, run.run_id, "a", owner=f"w{i}") for i in range(5)])
    grants = [r for r in results if r is not None]
    assert len(grants) == 1
    g = grants[0]
    assert isinstance(g, Grant)
    assert (g.attempt, g.manifest_id, g.trigger_key, json.loads(g.trigger_body_json)) == (1, c.manifest_id, "manual", {"b": 2})
    assert json.loads(g.trigger_headers_json) == {"x-id": "7"}
    (a,) = [s for s in await store.get_steps(run.run_id) if s.step_key == "a"]
    assert (a.status, a.owner, a.queued, a.attempts) == (S.RUNNING, "w0", False, 1)
    assert await one(store, claim(c, run.run_id, "a")) is None


async def test_claim_refuses_wrong_generation_unqueued_step_and_unknown_run(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    assert run.run_id
    assert await one(store, claim(c, run.run_id, "a", gen=2)) is None
    assert await one(store, claim(c, run.run_id, "b", gen=0)) is None
    assert await one(store, claim(c, run.run_id, "b", gen=1)) is None
    assert await one(store, claim(c, "no-such-run", "a")) is None
    assert await one(store, claim(c, run.run_id, "zz")) is None


async def test_grant_carries_wanted_outputs(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    assert run.run_id
    await run_step(store, c, run.run_id, "a", output={"total": 3})
    g = await one(store, claim(c, run.run_id, "b", want=("a", "missing")))
    assert isinstance(g, Grant)
    assert set(g.outputs) == {"a"}
    st, out, err = g.outputs["a"]
    assert (st, json.loads(out or "null"), err) == (S.SUCCEEDED, {"total": 3}, None)


# --- completions ---------------------------------------------------------------------


async def test_linear_run_completes_with_attempts_and_events(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    r1 = await run_step(store, c, rid, "a", output={"x": 1})
    assert [(d.step_key, d.generation) for d in r1.effects.dispatched] == [("b", 1)] and not r1.effects.finished
    await run_step(store, c, rid, "b")
    r3 = await run_step(store, c, rid, "c", output=[1, 2])
    assert r3.effects.finished == ((rid, RunStatus.SUCCEEDED),)
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is RunStatus.SUCCEEDED and rec.finished_at is not None
    steps = {s.step_key: s for s in await store.get_steps(rid)}
    assert steps["a"].output == {"x": 1} and steps["c"].output == [1, 2] and steps["c"].finished_at is not None
    attempts = await store.get_attempts(rid)
    assert [(a.step_key, a.attempt, a.status) for a in attempts] == [("a", 1, S.SUCCEEDED), ("b", 1, S.SUCCEEDED), ("c", 1, S.SUCCEEDED)]
    kinds = [e.kind for e in await store.get_events(rid)]
    assert kinds == ["RunStarted", "StepSucceeded", "StepSucceeded", "StepSucceeded", "RunSucceeded"]


async def test_duplicate_or_foreign_completion_is_not_applied(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    assert isinstance(await one(store, claim(c, rid, "a", owner="w1")), Grant)
    wrong_owner = await one(store, complete(c, rid, "a", owner="w2"))
    assert isinstance(wrong_owner, Applied) and not wrong_owner.applied
    first, dup = await store.apply([complete(c, rid, "a"), complete(c, rid, "a")])
    assert isinstance(first, Applied) and first.applied and len(first.effects.dispatched) == 1
    assert isinstance(dup, Applied) and not dup.applied and not dup.effects.dispatched
    assert len(await store.get_attempts(rid)) == 1


async def test_join_is_queued_once_when_branches_complete_in_one_batch(store: Store) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await run_step(store, c, rid, "a")
    await store.apply([claim(c, rid, "b"), claim(c, rid, "c")])
    rb, rc = await store.apply([complete(c, rid, "b"), complete(c, rid, "c")])
    assert isinstance(rb, Applied) and isinstance(rc, Applied)
    dispatched = [d.step_key for d in rb.effects.dispatched + rc.effects.dispatched]
    assert dispatched == ["d"]
    fin = await run_step(store, c, rid, "d")
    assert fin.effects.finished == ((rid, RunStatus.SUCCEEDED),)


async def test_failure_skips_dead_end_and_fails_run(store: Store) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await run_step(store, c, rid, "a")
    await run_step(store, c, rid, "b", S.FAILED, error="boom")
    res = await run_step(store, c, rid, "c")
    assert res.effects.finished == ((rid, RunStatus.FAILED),)
    assert await statuses(store, rid) == {"a": S.SUCCEEDED, "b": S.FAILED, "c": S.SUCCEEDED, "d": S.SKIPPED}
    (b,) = [s for s in await store.get_steps(rid) if s.step_key == "b"]
    assert b.error == "boom"


async def test_pending_result_requeues_next_generation_after_delay(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await one(store, claim(c, rid, "a"))
    res = await one(store, complete(c, rid, "a", S.PENDING, delay=30))
    assert isinstance(res, Applied) and res.applied
    assert [(d.step_key, d.generation, d.delay) for d in res.effects.dispatched] == [("a", 2, 30.0)]
    (a,) = [s for s in await store.get_steps(rid) if s.step_key == "a"]
    assert (a.status, a.queued, a.generation) == (S.PENDING, True, 2)
    assert await one(store, claim(c, rid, "a", gen=2, now=T0 + timedelta(seconds=10))) is None
    g = await one(store, claim(c, rid, "a", gen=2, now=T0 + timedelta(seconds=31)))
    assert isinstance(g, Grant) and g.attempt == 2
    assert [(a.attempt, a.status) for a in await store.get_attempts(rid)] == [(1, S.PENDING)]


# --- cancel, retry, reconcile ---------------------------------------------------------------


async def test_cancel_wins_over_running_and_queued_steps(store: Store) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await run_step(store, c, rid, "a")
    assert isinstance(await one(store, claim(c, rid, "b")), Grant)
    res = await one(store, CancelRun(rid, T0))
    assert isinstance(res, Applied) and res.effects.finished == ((rid, RunStatus.CANCELLED),)
    assert await statuses(store, rid) == {"a": S.SUCCEEDED, "b": S.CANCELLED, "c": S.CANCELLED, "d": S.CANCELLED}
    late = await one(store, complete(c, rid, "b"))
    assert isinstance(late, Applied) and not late.applied
    assert await one(store, claim(c, rid, "c")) is None
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is RunStatus.CANCELLED
    (again,) = await store.apply([CancelRun(rid, T0)])
    assert isinstance(again, InvalidOperationError) and "already Cancelled" in str(again)
    (unknown,) = await store.apply([CancelRun("ghost", T0)])
    assert isinstance(unknown, UnknownRunError)


async def test_retry_failed_step_resets_what_follows_and_keeps_earlier_outputs(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await run_step(store, c, rid, "a", output={"kept": True})
    fin = await run_step(store, c, rid, "b", S.FAILED, error="boom")
    assert fin.effects.finished == ((rid, RunStatus.FAILED),)
    assert await statuses(store, rid) == {"a": S.SUCCEEDED, "b": S.FAILED, "c": S.SKIPPED}
    res = await one(store, RetryStep(c.flow_id, rid, "b", c.graph, T0))
    assert isinstance(res, Applied) and [(d.step_key, d.generation) for d in res.effects.dispatched] == [("b", 2)]
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is RunStatus.RUNNING and rec.finished_at is None
    steps = {s.step_key: s for s in await store.get_steps(rid)}
    assert steps["a"].output == {"kept": True} and steps["b"].error is None and steps["c"].status is S.PENDING
    await run_step(store, c, rid, "b", gen=2)
    done = await run_step(store, c, rid, "c")
    assert done.effects.finished == ((rid, RunStatus.SUCCEEDED),)
    assert [(a.step_key, a.attempt, a.status) for a in await store.get_attempts(rid)] == [
        ("a", 1, S.SUCCEEDED), ("b", 1, S.FAILED), ("b", 2, S.SUCCEEDED), ("c", 1, S.SUCCEEDED)]


async def test_retry_refuses_steps_that_did_not_fail(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await run_step(store, c, rid, "a")
    ok, missing, ghost = await store.apply([
        RetryStep(c.flow_id, rid, "a", c.graph, T0), RetryStep(c.flow_id, rid, "zz", c.graph, T0),
        RetryStep(c.flow_id, "ghost", "a", c.graph, T0)])
    assert isinstance(ok, InvalidOperationError) and "Succeeded" in str(ok)
    assert isinstance(missing, UnknownStepError)
    assert isinstance(ghost, UnknownRunError)


async def test_reconcile_dispatches_ready_steps_of_an_idle_run(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    assert await store.find_idle_runs() == []
    # Complete "a" under a graph in which nothing follows it: "b" is never queued and the run sits idle.
    lonely = Graph.build({"a": {}, "b": {}, "c": {}})
    await one(store, claim(c, rid, "a"))
    await one(store, Complete(c.flow_id, rid, "a", 1, "w1", S.SUCCEEDED, None, None, None, T0, T0, lonely))
    assert [r[1] for r in await store.find_idle_runs()] == [rid]
    res = await one(store, Reconcile(c.flow_id, rid, c.graph, T0))
    assert isinstance(res, Applied)
    assert [(d.step_key, d.generation) for d in res.effects.dispatched] == [("b", 1)]
    assert await store.find_idle_runs() == []
    assert lonely.entries == ("a", "b", "c")


# --- leases and recovery queries ------------------------------------------------------


async def test_expired_lease_is_taken_back_and_old_owner_is_ignored(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await one(store, claim(c, rid, "a", owner="dead", lease=10))
    assert await store.find_expired_leases(T0 + timedelta(seconds=5)) == []
    not_yet = await one(store, ExpireLease(c.flow_id, rid, "a", 1, T0 + timedelta(seconds=5)))
    assert isinstance(not_yet, Applied) and not not_yet.applied
    later = T0 + timedelta(seconds=11)
    assert await store.find_expired_leases(later) == [("linear", rid, "a", 1)]
    res = await one(store, ExpireLease(c.flow_id, rid, "a", 1, later))
    assert isinstance(res, Applied) and [(d.step_key, d.generation) for d in res.effects.dispatched] == [("a", 2)]
    zombie = await one(store, complete(c, rid, "a", owner="dead"))
    assert isinstance(zombie, Applied) and not zombie.applied
    g = await one(store, claim(c, rid, "a", gen=2, owner="alive", now=later))
    assert isinstance(g, Grant) and g.attempt == 2
    (lost,) = await store.get_attempts(rid)
    assert (lost.attempt, lost.status, lost.owner) == (1, S.FAILED, "dead") and "lease expired" in (lost.error or "")


async def test_extend_leases_only_for_own_running_steps(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await one(store, claim(c, rid, "a", owner="w1", lease=10))
    await one(store, ExtendLeases("w2", ((rid, "a", 1),), T0 + timedelta(hours=1)))
    assert await store.find_expired_leases(T0 + timedelta(seconds=11)) != []
    await one(store, ExtendLeases("w1", ((rid, "a", 1),), T0 + timedelta(hours=1)))
    assert await store.find_expired_leases(T0 + timedelta(seconds=11)) == []


async def test_find_queued_reports_unclaimed_steps_with_remaining_delay(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    r1 = await start(store, c)
    r2 = await start(store, c, now=T0 + timedelta(seconds=100))
    assert r1.run_id and r2.run_id
    found = await store.find_queued(T0, T0 + timedelta(seconds=50))
    assert [(d.run_id, d.step_key, d.generation) for d in found] == [(r1.run_id, "a", 1)]
    await one(store, claim(c, r1.run_id, "a"))
    await one(store, complete(c, r1.run_id, "a", S.PENDING, delay=20))
    (d,) = await store.find_queued(T0 + timedelta(seconds=5), T0 + timedelta(seconds=50))
    assert (d.step_key, d.generation) == ("a", 2) and d.delay == pytest.approx(15, abs=0.01)
    await one(store, CancelRun(r1.run_id, T0))
    assert await store.find_queued(T0, T0 + timedelta(seconds=50)) == []


# --- reads ------------------------------------------------------------------------------


async def test_list_and_count_runs_newest_first_with_filters(store: Store) -> None:
    flows = await setup_flows(store, LINEAR, DIAMOND)
    ids = []
    for i in range(5):
        res = await start(store, flows["linear" if i % 2 == 0 else "diamond"])
        assert res.run_id
        ids.append(res.run_id)
    await one(store, CancelRun(ids[0], T0))
    assert [r.run_id for r in await store.list_runs()] == ids[::-1]
    assert [r.run_id for r in await store.list_runs(limit=2, offset=1)] == ids[::-1][1:3]
    assert [r.run_id for r in await store.list_runs(RunFilter(flow_id="diamond"))] == [ids[3], ids[1]]
    assert [r.run_id for r in await store.list_runs(RunFilter(status=RunStatus.CANCELLED))] == [ids[0]]
    assert await store.count_runs() == 5
    assert await store.count_runs(RunFilter(flow_id="linear")) == 3
    assert await store.count_runs(RunFilter(flow_id="linear", status=RunStatus.RUNNING)) == 2
    assert await store.get_run("ghost") is None
    assert await store.get_steps("ghost") == []


async def test_search_and_time_filters(store: Store) -> None:
    flows = await setup_flows(store, LINEAR, DIAMOND)
    a = await start(store, flows["linear"], body={"customer": "ACME_corp", "sku": "A-1"}, now=T0)
    b = await start(store, flows["diamond"], body={"customer": "Globex 100%"}, now=T0 + timedelta(minutes=5))
    c = await start(store, flows["linear"], body=None, now=T0 + timedelta(minutes=10))
    assert a.run_id and b.run_id and c.run_id

    async def found(**kw: object) -> list[str]:
        where = RunFilter(**kw)  # type: ignore[arg-type]
        runs = [r.run_id for r in await store.list_runs(where)]
        assert await store.count_runs(where) == len(runs)
        return runs

    assert await found(search="acme") == [a.run_id]  # the trigger body, ignoring case
    assert await found(search="DIAM") == [b.run_id]  # the flow id
    assert await found(search=c.run_id) == [c.run_id]  # a run id
    assert await found(search=c.run_id[-12:].upper()) == [c.run_id]  # part of one
    assert await found(search="100%") == [b.run_id]  # % and _ are plain characters
    assert await found(search="E_c") == [a.run_id]
    assert await found(search="%") == [b.run_id]
    assert await found(search="nothing like it") == []
    assert await found(search="") == [c.run_id, b.run_id, a.run_id]  # empty: no filter
    assert await found(search="linear", since=T0 + timedelta(minutes=1)) == [c.run_id]
    assert await found(since=T0 + timedelta(minutes=5)) == [c.run_id, b.run_id]  # since is inclusive
    assert await found(until=T0 + timedelta(minutes=5)) == [a.run_id]  # until is exclusive
    assert await found(flow_id="linear", status=RunStatus.RUNNING, search="sku", until=T0 + timedelta(hours=1)) == [a.run_id]


async def test_run_stats_totals_and_buckets(store: Store) -> None:
    flows = await setup_flows(store, LINEAR)
    ids = []
    for minutes in (0, 1, 59, 60, 61, 185):
        res = await start(store, flows["linear"], now=T0 + timedelta(minutes=minutes))
        assert res.run_id
        ids.append(res.run_id)
    await one(store, CancelRun(ids[1], T0))
    await one(store, CancelRun(ids[4], T0))
    stats = await store.run_stats(T0 + timedelta(minutes=1), 3600, 4)
    assert stats.totals == {RunStatus.RUNNING: 4, RunStatus.CANCELLED: 2}
    # bucket 0: [0:01, 1:01) holds 0:01 (Cancelled), 0:59, 1:00; bucket 1: 1:01 (Cancelled); bucket 3: 3:05.
    assert sorted(stats.buckets) == sorted([
        (0, RunStatus.CANCELLED, 1), (0, RunStatus.RUNNING, 2), (1, RunStatus.CANCELLED, 1), (3, RunStatus.RUNNING, 1),
    ])
    empty = await store.run_stats(T0 + timedelta(days=1), 60, 10)
    assert [b for b in (await store.run_stats(T0 + timedelta(minutes=1), 3600, 2)).buckets if b[0] >= 2] == []
    assert empty.buckets == [] and sum(empty.totals.values()) == 6


async def test_events_after_and_per_run(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    r1 = await start(store, c)
    r2 = await start(store, c)
    assert r1.run_id and r2.run_id
    await run_step(store, c, r1.run_id, "a")
    every = await store.get_events()
    assert [e.kind for e in every] == ["RunStarted", "RunStarted", "StepSucceeded"]
    assert [e.event_id for e in every] == sorted(e.event_id for e in every)
    after = await store.get_events(after=every[0].event_id)
    assert [e.run_id for e in after] == [r2.run_id, r1.run_id]
    assert [e.kind for e in await store.get_events(r1.run_id)] == ["RunStarted", "StepSucceeded"]
    assert every[2].step_key == "a"


async def test_graph_is_taken_from_the_completion(store: Store) -> None:
    # The store decides with the graph the engine passes (the run's pinned manifest).
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    g = Graph.build({"a": {}, "b": {"a": frozenset({S.FAILED})}, "c": {"b": frozenset({S.SUCCEEDED})}})
    await one(store, claim(c, rid, "a"))
    res = await one(store, Complete(c.flow_id, rid, "a", 1, "w1", S.SUCCEEDED, None, None, None, T0, T0, g))
    assert isinstance(res, Applied) and res.effects.finished == ((rid, RunStatus.SUCCEEDED),)
    assert await statuses(store, rid) == {"a": S.SUCCEEDED, "b": S.SKIPPED, "c": S.SKIPPED}


async def test_folded_completion_claims_one_ready_step_for_the_same_worker(store: Store) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await one(store, claim(c, rid, "a"))
    op = complete(c, rid, "a", output={"v": 1})
    op.fold_lease_until = T0 + timedelta(seconds=60)
    op.fold_wants = {"b": ("a",)}
    res = await one(store, op)
    assert isinstance(res, Applied) and res.claimed is not None
    key, gen, grant = res.claimed
    assert (key, gen, grant.attempt) == ("b", 1, 1)
    assert json.loads(grant.outputs["a"][1] or "null") == {"v": 1}
    assert [(d.step_key, d.generation) for d in res.effects.dispatched] == [("c", 1)]
    steps = {s.step_key: s for s in await store.get_steps(rid)}
    assert (steps["b"].status, steps["b"].owner, steps["b"].queued) == (S.RUNNING, "w1", False)
    assert (steps["c"].status, steps["c"].queued) == (S.PENDING, True)
    # The folded claim is a claim like any other: a stray message for it does nothing.
    assert await one(store, claim(c, rid, "b", owner="w2")) is None


async def test_counters_survive_retry_of_a_branch_while_the_join_waits(store: Store) -> None:
    c = (await setup_flows(store, DIAMOND))["diamond"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await run_step(store, c, rid, "a")
    await run_step(store, c, rid, "b", S.FAILED, error="x")
    # "c" is still queued: the join must not be decided yet, and retrying "b" must keep it waiting for both.
    await one(store, RetryStep(c.flow_id, rid, "b", c.graph, T0))
    await run_step(store, c, rid, "b", gen=2)
    assert await statuses(store, rid) == {"a": S.SUCCEEDED, "b": S.SUCCEEDED, "c": S.PENDING, "d": S.PENDING}
    res = await run_step(store, c, rid, "c")
    assert [d.step_key for d in res.effects.dispatched] == ["d"]
    fin = await run_step(store, c, rid, "d")
    assert fin.effects.finished == ((rid, RunStatus.SUCCEEDED),)


async def test_owner_may_give_back_its_claim_before_the_lease_ends(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    run = await start(store, c)
    rid = run.run_id
    assert rid
    await one(store, claim(c, rid, "a", owner="w1", lease=600))
    other = await one(store, ExpireLease(c.flow_id, rid, "a", 1, T0, owner="w2"))
    assert isinstance(other, Applied) and not other.applied
    res = await one(store, ExpireLease(c.flow_id, rid, "a", 1, T0, owner="w1"))
    assert isinstance(res, Applied) and [(d.step_key, d.generation) for d in res.effects.dispatched] == [("a", 2)]
    (att,) = await store.get_attempts(rid)
    assert (att.status, att.owner) == (S.CANCELLED, "w1") and "shut down" in (att.error or "")
