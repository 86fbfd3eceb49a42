"""The Store contract for step semantics (cron ledger, deadlines, signals, retries, traces, schedules,
ForEach), run against every store at the store level — no engine involved."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from floworchestrator._status import RunStatus
from floworchestrator.exceptions import InvalidOperationError, StoreError, UnknownRunError
from floworchestrator.flow import CompiledFlow, Flow, ForEach, Step
from floworchestrator.stores.base import (
    Applied,
    CancelRun,
    Complete,
    Effects,
    ExpireLease,
    Grant,
    Reconcile,
    RetryStep,
    RunStarted,
    Signal,
    StartRun,
    StepRecord,
    Store,
)

from .test_contract import DIAMOND, LINEAR, T0, S, claim, complete, one, run_step, setup_flows, start, start_op, statuses

R = RunStatus


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def steps_by_key(store: Store, run_id: str) -> dict[str, StepRecord]:
    return {s.step_key: s for s in await store.get_steps(run_id)}


async def step(store: Store, run_id: str, key: str) -> StepRecord:
    return (await steps_by_key(store, run_id))[key]


def dispatched(res: object) -> list[tuple[str, int]]:
    assert isinstance(res, Applied | RunStarted), res
    return [(d.step_key, d.generation) for d in res.effects.dispatched]


async def started_run(store: Store, manifest: dict[str, object], **kw: object) -> tuple[CompiledFlow, str]:
    c = next(iter((await setup_flows(store, manifest)).values()))
    res = await start(store, c, **kw)
    assert res.run_id
    return c, res.run_id


# --- cron fire ledger ------------------------------------------------------------------


def cron_op(c: CompiledFlow, fire: datetime, trigger: str = "nightly") -> StartRun:
    op = start_op(c, now=fire)
    op.trigger_key = trigger
    op.cron_fire = (trigger, fire)
    return op


async def test_cron_fire_starts_one_run_per_flow_trigger_and_fire_time(store: Store) -> None:
    flows = await setup_flows(store, LINEAR, DIAMOND)
    c = flows["linear"]
    first = await one(store, cron_op(c, at(60)))
    assert isinstance(first, RunStarted) and first.created and first.run_id
    dup_op = cron_op(c, at(60))
    dup = await one(store, dup_op)
    assert isinstance(dup, RunStarted)
    assert (dup.run_id, dup.created, dup.disabled, dup.effects.dispatched) == (first.run_id, False, False, ())
    # Nothing of the duplicate was written.
    assert await store.get_run(dup_op.run_id) is None and await store.get_steps(dup_op.run_id) == []
    assert await store.get_events(dup_op.run_id) == []
    # Another fire time, another trigger or another flow is another fire.
    later = await one(store, cron_op(c, at(120)))
    other_trigger = await one(store, cron_op(c, at(60), trigger="hourly"))
    other_flow = await one(store, cron_op(flows["diamond"], at(60)))
    ids = {first.run_id}
    for res in (later, other_trigger, other_flow):
        assert isinstance(res, RunStarted) and res.created and res.run_id not in ids
        ids.add(res.run_id)
    assert await store.count_runs() == 4
    rec = await store.get_run(first.run_id)
    assert rec is not None and rec.trigger_key == "nightly"


async def test_cron_fire_twice_in_one_batch_starts_one_run(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    a, b, other = await store.apply([cron_op(c, at(60)), cron_op(c, at(60)), cron_op(c, at(61))])
    assert isinstance(a, RunStarted) and isinstance(b, RunStarted) and isinstance(other, RunStarted)
    assert a.created and not b.created and b.run_id == a.run_id
    assert other.created and other.run_id != a.run_id
    assert await store.count_runs() == 2


async def test_cron_fire_of_a_disabled_flow_is_not_recorded(store: Store) -> None:
    c = (await setup_flows(store, LINEAR, enabled=False))["linear"]
    off = await one(store, cron_op(c, at(60)))
    assert isinstance(off, RunStarted) and off.disabled and off.run_id is None
    assert await store.set_flow_enabled("linear", True, T0)
    res = await one(store, cron_op(c, at(60)))
    assert isinstance(res, RunStarted) and res.created


# --- run deadlines -----------------------------------------------------------------------


async def test_deadline_is_stored_and_overdue_running_runs_are_found(store: Store) -> None:
    c = (await setup_flows(store, LINEAR))["linear"]
    ids = {}
    for name, deadline in [("soon", at(10)), ("late", at(100)), ("never", None), ("cancelled", at(5))]:
        op = start_op(c)
        op.deadline = deadline
        res = await one(store, op)
        assert isinstance(res, RunStarted) and res.run_id
        ids[name] = res.run_id
    await one(store, CancelRun(ids["cancelled"], T0))
    rec = await store.get_run(ids["soon"])
    assert rec is not None and rec.deadline == at(10)
    never = await store.get_run(ids["never"])
    assert never is not None and never.deadline is None
    listed = {r.run_id: r.deadline for r in await store.list_runs()}
    assert listed[ids["late"]] == at(100)
    assert await store.find_overdue_runs(at(9)) == []
    assert await store.find_overdue_runs(at(10)) == []  # due, not yet past
    assert await store.find_overdue_runs(at(50)) == [ids["soon"]]
    assert sorted(await store.find_overdue_runs(at(1000))) == sorted([ids["soon"], ids["late"]])
    assert len(await store.find_overdue_runs(at(1000), limit=1)) == 1
    # A run that ended is no longer overdue.
    await one(store, CancelRun(ids["soon"], at(50), timed_out=True))
    assert await store.find_overdue_runs(at(1000)) == [ids["late"]]


# --- CancelRun(timed_out=True) -------------------------------------------------------------


async def test_timed_out_run_times_out_running_steps_and_cancels_the_rest(store: Store) -> None:
    c, rid = await started_run(store, DIAMOND)
    await run_step(store, c, rid, "a")
    assert isinstance(await one(store, claim(c, rid, "b")), Grant)
    res = await one(store, CancelRun(rid, at(30), timed_out=True))
    assert isinstance(res, Applied) and res.applied
    assert res.effects.finished == ((rid, R.TIMED_OUT),) and res.effects.dispatched == ()
    assert await statuses(store, rid) == {"a": S.SUCCEEDED, "b": S.TIMED_OUT, "c": S.CANCELLED, "d": S.CANCELLED}
    steps = await steps_by_key(store, rid)
    assert steps["b"].finished_at == at(30) and not steps["c"].queued and steps["a"].finished_at == T0
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is R.TIMED_OUT and rec.finished_at == at(30)
    assert (await store.get_events(rid))[-1].kind == "RunTimedOut"
    late = await one(store, complete(c, rid, "b"))
    assert isinstance(late, Applied) and not late.applied
    assert await one(store, claim(c, rid, "c")) is None


async def test_timing_out_a_finished_run_is_not_applied_and_is_no_error(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    for k in ("a", "b", "c"):
        await run_step(store, c, rid, k)
    _, cancelled = await started_run(store, LINEAR)
    await one(store, CancelRun(cancelled, T0))
    events = len(await store.get_events())
    done, gone, ghost = await store.apply(
        [CancelRun(rid, at(9), timed_out=True), CancelRun(cancelled, at(9), timed_out=True), CancelRun("ghost", at(9), timed_out=True)]
    )
    assert isinstance(done, Applied) and not done.applied and done.effects.finished == ()
    assert isinstance(gone, Applied) and not gone.applied
    assert isinstance(ghost, UnknownRunError)
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is R.SUCCEEDED and rec.finished_at == T0
    other = await store.get_run(cancelled)
    assert other is not None and other.status is R.CANCELLED
    assert set((await statuses(store, rid)).values()) == {S.SUCCEEDED}
    assert len(await store.get_events()) == events


# --- signals ---------------------------------------------------------------------------------


def signal(run_id: str, name: str, payload: object, now: datetime = T0) -> Signal:
    return Signal(run_id, name, json.dumps(payload), now)


def park(c: CompiledFlow, run_id: str, key: str, name: str, gen: int = 1, delay: float = 0.0, now: datetime = T0) -> Complete:
    op = complete(c, run_id, key, S.PENDING, gen, now=now, delay=delay)
    op.park = name
    return op


async def test_early_signals_are_kept_and_a_claim_gets_the_oldest_unconsumed_one(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    _, other = await started_run(store, LINEAR)
    r1, r2, r3, r4 = await store.apply([
        signal(rid, "go", {"n": 1}), signal(rid, "go", {"n": 2}, at(1)), signal(rid, "stop", None, at(2)),
        signal(other, "go", {"n": 9}),
    ])
    for r in (r1, r2, r3, r4):
        assert isinstance(r, Applied) and r.applied and r.effects.dispatched == ()
    sigs = await store.get_signals(rid)
    assert [(s.run_id, s.name, s.payload, s.created_at, s.consumed_by) for s in sigs] == [
        (rid, "go", {"n": 1}, T0, None), (rid, "go", {"n": 2}, at(1), None), (rid, "stop", None, at(2), None)]
    assert [s.payload for s in await store.get_signals(other)] == [{"n": 9}]
    assert await store.get_signals("ghost") == []

    g = await one(store, replace(claim(c, rid, "a"), signal="go"))
    assert isinstance(g, Grant) and g.signal is not None
    assert g.signal[0] == sigs[0].signal_id and json.loads(g.signal[1]) == {"n": 1}
    done = complete(c, rid, "a", output={"n": 1})
    done.consume_signal = g.signal[0]
    res = await one(store, done)
    assert isinstance(res, Applied) and res.applied
    assert [s.consumed_by for s in await store.get_signals(rid)] == ["a", None, None]
    assert [s.consumed_by for s in await store.get_signals(other)] == [None]
    # The next claim for that signal gets the next one; a claim that asks for none gets none.
    g2 = await one(store, replace(claim(c, rid, "b"), signal="go"))
    assert isinstance(g2, Grant) and g2.signal is not None
    assert (g2.signal[0], json.loads(g2.signal[1])) == (sigs[1].signal_id, {"n": 2})
    g3 = await one(store, replace(claim(c, other, "a")))
    assert isinstance(g3, Grant) and g3.signal is None
    g4 = await one(store, replace(claim(c, other, "a"), signal="nothing"))
    assert g4 is None  # already claimed: not a second grant
    nothing = await one(store, replace(claim(c, rid, "b", gen=1, owner="w9"), signal="go"))
    assert nothing is None


async def test_claim_for_a_signal_that_did_not_come_gets_none(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, signal(rid, "other", 1))
    g = await one(store, replace(claim(c, rid, "a"), signal="go"))
    assert isinstance(g, Grant) and g.signal is None


async def test_parking_without_timeout_waits_unqueued_until_the_signal_requeues_it(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    assert isinstance(await one(store, replace(claim(c, rid, "a"), signal="go")), Grant)
    res = await one(store, park(c, rid, "a", "go"))
    assert isinstance(res, Applied) and res.applied and res.effects.dispatched == () and res.effects.finished == ()
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.generation, a.waiting_signal, a.owner) == (S.PENDING, False, 1, "go", None)
    assert await store.find_idle_runs() == []  # waiting for a signal is not idle
    assert await store.find_queued(at(1000), at(1000)) == []
    assert await one(store, claim(c, rid, "a", gen=1)) is None
    assert await one(store, claim(c, rid, "a", gen=2)) is None
    # A signal of another name does not wake it.
    assert dispatched(await one(store, signal(rid, "other", 0, at(5)))) == []
    assert (await step(store, rid, "a")).queued is False
    woke = await one(store, signal(rid, "go", {"ok": True}, at(5)))
    assert dispatched(woke) == [("a", 2)]
    assert isinstance(woke, Applied) and woke.effects.dispatched[0].flow_id == "linear"
    assert woke.effects.dispatched[0].delay == 0
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.generation) == (S.PENDING, True, 2)
    g = await one(store, replace(claim(c, rid, "a", gen=2, now=at(5)), signal="go"))
    assert isinstance(g, Grant) and g.signal is not None and json.loads(g.signal[1]) == {"ok": True}
    done = complete(c, rid, "a", gen=2, output={"ok": True}, now=at(6))
    done.consume_signal = g.signal[0]
    fin = await one(store, done)
    assert dispatched(fin) == [("b", 1)]
    a = await step(store, rid, "a")
    assert (a.status, a.output, a.waiting_signal) == (S.SUCCEEDED, {"ok": True}, None)
    assert [(x.attempt, x.generation, x.status) for x in await store.get_attempts(rid)] == [(1, 1, S.PENDING), (2, 2, S.SUCCEEDED)]
    assert [s.consumed_by for s in await store.get_signals(rid) if s.name == "go"] == ["a"]


async def test_parking_when_the_signal_already_came_requeues_at_once(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    g = await one(store, replace(claim(c, rid, "a"), signal="go"))
    assert isinstance(g, Grant) and g.signal is None
    await one(store, signal(rid, "go", "late"))  # arrives while the step runs
    res = await one(store, park(c, rid, "a", "go", delay=300))
    assert dispatched(res) == [("a", 2)]
    assert isinstance(res, Applied) and res.effects.dispatched[0].delay == 0
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.generation, a.waiting_signal, a.not_before) == (S.PENDING, True, 2, None, None)
    g2 = await one(store, replace(claim(c, rid, "a", gen=2), signal="go"))
    assert isinstance(g2, Grant) and g2.signal is not None and json.loads(g2.signal[1]) == "late"


async def test_parking_with_a_timeout_queues_a_wake_up_and_a_signal_comes_first(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, replace(claim(c, rid, "a"), signal="go"))
    res = await one(store, park(c, rid, "a", "go", delay=30))
    assert isinstance(res, Applied)
    assert [(d.step_key, d.generation, d.delay) for d in res.effects.dispatched] == [("a", 2, 30.0)]
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.generation, a.waiting_signal, a.not_before) == (S.PENDING, True, 2, "go", at(30))
    assert await one(store, claim(c, rid, "a", gen=2, now=at(10))) is None
    # The signal comes before the wake-up: the step goes again now, at the next generation.
    woke = await one(store, signal(rid, "go", 1, at(12)))
    assert dispatched(woke) == [("a", 3)]
    assert await one(store, claim(c, rid, "a", gen=2, now=at(31))) is None  # the wake-up is stale
    g = await one(store, replace(claim(c, rid, "a", gen=3, now=at(12)), signal="go"))
    assert isinstance(g, Grant) and g.signal is not None and g.attempt == 2


async def test_parking_with_a_timeout_wakes_up_without_a_signal(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, replace(claim(c, rid, "a"), signal="go"))
    await one(store, park(c, rid, "a", "go", delay=30))
    g = await one(store, replace(claim(c, rid, "a", gen=2, now=at(31)), signal="go"))
    assert isinstance(g, Grant) and g.signal is None and g.first_started_at == T0
    timed_out = complete(c, rid, "a", S.TIMED_OUT, gen=2, error="no signal", now=at(31))
    res = await one(store, timed_out)
    assert isinstance(res, Applied) and res.effects.finished == ((rid, R.FAILED),)
    a = await step(store, rid, "a")
    assert (a.status, a.waiting_signal, a.error) == (S.TIMED_OUT, None, "no signal")


async def test_signal_to_unknown_or_finished_run_is_an_error_in_place(store: Store) -> None:
    _, rid = await started_run(store, LINEAR)
    _, done = await started_run(store, LINEAR)
    await one(store, CancelRun(done, T0))
    unknown, finished, ok = await store.apply([signal("ghost", "go", 1), signal(done, "go", 1), signal(rid, "go", 1)])
    assert isinstance(unknown, UnknownRunError)
    assert isinstance(finished, InvalidOperationError) and "Cancelled" in str(finished)
    assert isinstance(ok, Applied) and ok.applied
    assert await store.get_signals(done) == [] and await store.get_signals("ghost") == []
    assert [s.payload for s in await store.get_signals(rid)] == [1]


async def test_retrying_a_cancelled_parked_step_forgets_the_wait(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, claim(c, rid, "a"))
    await one(store, park(c, rid, "a", "go"))
    await one(store, CancelRun(rid, T0))
    assert (await step(store, rid, "a")).status is S.CANCELLED
    res = await one(store, RetryStep(c.flow_id, rid, "a", c.graph, at(1)))
    assert dispatched(res) == [("a", 2)]
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.waiting_signal) == (S.PENDING, True, None)
    # A signal now finds no parked step to wake.
    assert dispatched(await one(store, signal(rid, "go", 1, at(2)))) == []


# --- attempt_status, trace_json, first_started_at ---------------------------------------------


async def test_a_failure_that_will_be_retried_is_a_failed_attempt_of_a_pending_step(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, claim(c, rid, "a"))
    op = complete(c, rid, "a", S.PENDING, error="boom", now=at(1), delay=5)
    op.attempt_status = S.FAILED
    res = await one(store, op)
    assert isinstance(res, Applied) and res.applied and res.effects.finished == ()
    assert [(d.step_key, d.generation, d.delay) for d in res.effects.dispatched] == [("a", 2, 5.0)]
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.generation, a.not_before, a.owner) == (S.PENDING, True, 2, at(6), None)
    (att,) = await store.get_attempts(rid)
    assert (att.attempt, att.generation, att.status, att.error, att.owner) == (1, 1, S.FAILED, "boom", "w1")
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is R.RUNNING
    assert await statuses(store, rid) == {"a": S.PENDING, "b": S.PENDING, "c": S.PENDING}
    assert await one(store, claim(c, rid, "a", gen=2, now=at(5))) is None
    g = await one(store, claim(c, rid, "a", gen=2, now=at(6)))
    assert isinstance(g, Grant) and g.attempt == 2
    fin = await one(store, complete(c, rid, "a", gen=2, now=at(7)))
    assert dispatched(fin) == [("b", 1)]
    assert [(x.attempt, x.status) for x in await store.get_attempts(rid)] == [(1, S.FAILED), (2, S.SUCCEEDED)]


async def test_attempt_status_may_differ_from_a_final_status(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, claim(c, rid, "a"))
    op = complete(c, rid, "a", S.FAILED, error="gave up")
    op.attempt_status = S.TIMED_OUT
    await one(store, op)
    assert (await step(store, rid, "a")).status is S.FAILED
    assert [x.status for x in await store.get_attempts(rid)] == [S.TIMED_OUT]


async def test_trace_is_kept_with_the_step_and_cleared_by_retry(store: Store) -> None:
    c, rid = await started_run(store, DIAMOND)
    await run_step(store, c, rid, "a")
    trace = {"conditions": [{"expression": "@x", "value": False}]}
    await one(store, claim(c, rid, "b"))
    skip = complete(c, rid, "b", S.SKIPPED)
    skip.trace_json = json.dumps(trace)
    await one(store, skip)
    await one(store, claim(c, rid, "c"))
    fail = complete(c, rid, "c", S.FAILED, error="boom")
    fail.trace_json = json.dumps({"why": "c"})
    fin = await one(store, fail)
    assert isinstance(fin, Applied) and fin.effects.finished == ((rid, R.FAILED),)
    steps = await steps_by_key(store, rid)
    assert steps["b"].trace == trace and steps["b"].status is S.SKIPPED
    assert steps["c"].trace == {"why": "c"}
    assert steps["a"].trace is None and steps["d"].trace is None  # d was skipped by the planner
    await one(store, RetryStep(c.flow_id, rid, "c", c.graph, at(1)))
    steps = await steps_by_key(store, rid)
    assert steps["c"].trace is None and steps["c"].error is None
    assert steps["b"].trace == trace  # not after the retried step: kept


async def test_first_started_at_survives_polls_and_lost_leases_and_resets_on_retry(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    g1 = await one(store, claim(c, rid, "a", now=T0))
    assert isinstance(g1, Grant) and g1.first_started_at == T0
    await one(store, complete(c, rid, "a", S.PENDING, now=at(1), delay=9))  # poll again in 9s
    g2 = await one(store, claim(c, rid, "a", gen=2, now=at(10), lease=5))
    assert isinstance(g2, Grant) and g2.first_started_at == T0
    assert (await step(store, rid, "a")).started_at == at(10)
    await one(store, ExpireLease(c.flow_id, rid, "a", 2, at(20)))
    g3 = await one(store, claim(c, rid, "a", gen=3, now=at(20)))
    assert isinstance(g3, Grant) and g3.first_started_at == T0 and g3.attempt == 3
    await one(store, complete(c, rid, "a", S.FAILED, gen=3, error="x", now=at(21)))
    await one(store, RetryStep(c.flow_id, rid, "a", c.graph, at(100)))
    assert (await step(store, rid, "a")).started_at is None
    g4 = await one(store, claim(c, rid, "a", gen=4, now=at(100)))
    assert isinstance(g4, Grant) and g4.first_started_at == at(100)


# --- ExpireLease(owner=...) -------------------------------------------------------------------------


async def test_giving_back_a_claim_needs_the_owner_and_the_generation(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, claim(c, rid, "a", owner="w1", lease=1))
    stale, foreign = await store.apply([
        ExpireLease(c.flow_id, rid, "a", 2, at(100), owner="w1"), ExpireLease(c.flow_id, rid, "a", 1, at(100), owner="w2")])
    assert isinstance(stale, Applied) and not stale.applied
    assert isinstance(foreign, Applied) and not foreign.applied
    # Given back even though its lease has also run out: recorded as given back, not as lost.
    res = await one(store, ExpireLease(c.flow_id, rid, "a", 1, at(100), owner="w1"))
    assert dispatched(res) == [("a", 2)]
    again = await one(store, ExpireLease(c.flow_id, rid, "a", 1, at(100), owner="w1"))
    assert isinstance(again, Applied) and not again.applied
    (att,) = await store.get_attempts(rid)
    assert (att.status, att.owner, att.generation) == (S.CANCELLED, "w1", 1)
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.owner, a.generation) == (S.PENDING, True, None, 2)
    assert [e.kind for e in await store.get_events(rid)][-1] == "StepInterrupted"


# --- schedules -----------------------------------------------------------------------------------


async def test_schedule_pause_resume_override_and_clear(store: Store) -> None:
    assert await store.get_schedule_overrides() == {}
    await store.set_schedule("f", "nightly", paused=True, now=T0)
    assert await store.get_schedule_overrides() == {("f", "nightly"): (True, None)}
    await store.set_schedule("f", "nightly", expression="*/5 * * * *", now=T0)
    assert await store.get_schedule_overrides() == {("f", "nightly"): (True, "*/5 * * * *")}
    await store.set_schedule("f", "nightly", paused=False, now=T0)
    assert await store.get_schedule_overrides() == {("f", "nightly"): (False, "*/5 * * * *")}
    await store.set_schedule("f", "nightly", now=T0)  # nothing given: nothing changes
    assert await store.get_schedule_overrides() == {("f", "nightly"): (False, "*/5 * * * *")}
    await store.set_schedule("f", "hourly", expression="0 * * * *", now=T0)
    await store.set_schedule("g", "nightly", paused=True, now=T0)
    assert await store.get_schedule_overrides() == {
        ("f", "nightly"): (False, "*/5 * * * *"), ("f", "hourly"): (False, "0 * * * *"), ("g", "nightly"): (True, None)}
    await store.set_schedule("f", "nightly", paused=True, clear_expression=True, now=T0)
    await store.set_schedule("f", "hourly", expression="30 * * * *", now=T0)
    assert await store.get_schedule_overrides() == {
        ("f", "nightly"): (True, None), ("f", "hourly"): (False, "30 * * * *"), ("g", "nightly"): (True, None)}


# --- ForEach at the store level --------------------------------------------------------------------


def loop_flow(concurrency: int, *, chain: bool = True) -> dict[str, object]:
    children = {"x": Step("T")}
    if chain:
        children["y"] = Step("T", run_after={"x": ["Succeeded"]})
    return Flow("loop", {
        "each": ForEach([1, 2, 3], children, concurrency=concurrency),
        "post": Step("T", run_after={"each": ["Succeeded"]}),
    }).to_manifest()


def expand(c: CompiledFlow, run_id: str, items: list[object], concurrency: int, gen: int = 1, now: datetime = T0) -> Complete:
    op = complete(c, run_id, "each", S.RUNNING, gen, now=now)
    op.loop = ([json.dumps(x) for x in items], concurrency)
    return op


async def loop_run(store: Store, concurrency: int, items: list[object], *, chain: bool = True) -> tuple[CompiledFlow, str, Applied]:
    c, rid = await started_run(store, loop_flow(concurrency, chain=chain))
    assert "each" in c.graph.loops
    assert isinstance(await one(store, claim(c, rid, "each")), Grant)
    res = await one(store, expand(c, rid, items, concurrency))
    assert isinstance(res, Applied) and res.applied
    return c, rid, res


async def test_for_each_creates_every_child_and_queues_the_first_items(store: Store) -> None:
    c, rid, res = await loop_run(store, 2, ["a", "b", "c"])
    assert dispatched(res) == [("each.0.x", 1), ("each.1.x", 1)] and res.effects.finished == ()
    steps = await steps_by_key(store, rid)
    assert list(steps) == ["each", "post", *(f"each.{i}.{k}" for i in range(3) for k in ("x", "y"))]
    each = steps["each"]
    assert (each.status, each.owner, each.lease_until, each.queued, each.inputs) == (S.RUNNING, None, None, False, ["a", "b", "c"])
    assert {k: (s.status, s.queued) for k, s in steps.items() if k.startswith("each.")} == {
        "each.0.x": (S.PENDING, True), "each.0.y": (S.PENDING, False), "each.1.x": (S.PENDING, True),
        "each.1.y": (S.PENDING, False), "each.2.x": (S.PENDING, False), "each.2.y": (S.PENDING, False)}
    assert await store.find_idle_runs() == []
    # The ForEach step is nobody's now: a second completion from its worker does nothing.
    again = await one(store, complete(c, rid, "each"))
    assert isinstance(again, Applied) and not again.applied
    assert await one(store, claim(c, rid, "each.2.x")) is None  # its item has not started
    g = await one(store, claim(c, rid, "each.1.x"))
    assert isinstance(g, Grant) and json.loads(g.loop_item_json or "null") == "b"
    g0 = await one(store, claim(c, rid, "each"))
    assert g0 is None


async def test_finishing_items_starts_the_next_and_the_loop_ends_with_per_item_outputs(store: Store) -> None:
    c, rid, _ = await loop_run(store, 2, [10, 20, 30])
    assert dispatched(await run_step(store, c, rid, "each.1.x", output=1)) == [("each.1.y", 1)]
    # Item 1 done: item 2 starts while item 0 is still going.
    assert dispatched(await run_step(store, c, rid, "each.1.y", output={"i": 1})) == [("each.2.x", 1)]
    await run_step(store, c, rid, "each.0.x")
    assert dispatched(await run_step(store, c, rid, "each.0.y", output={"i": 0})) == []
    assert (await step(store, rid, "each")).status is S.RUNNING
    await run_step(store, c, rid, "each.2.x")
    g = await one(store, claim(c, rid, "each.2.y"))
    assert isinstance(g, Grant) and json.loads(g.loop_item_json or "null") == 30
    last = await one(store, complete(c, rid, "each.2.y", output={"i": 2}, now=at(5)))
    assert dispatched(last) == [("post", 1)]
    each = await step(store, rid, "each")
    assert (each.status, each.error, each.finished_at) == (S.SUCCEEDED, None, at(5))
    assert each.output == [{"index": i, "status": "Succeeded", "output": {"i": i}} for i in range(3)]
    loop_attempts = [(a.attempt, a.status) for a in await store.get_attempts(rid) if a.step_key == "each"]
    assert loop_attempts == [(1, S.SUCCEEDED)]
    g_post = await one(store, claim(c, rid, "post", now=at(5), want=("each",)))
    assert isinstance(g_post, Grant) and [r["index"] for r in json.loads(g_post.outputs["each"][1] or "[]")] == [0, 1, 2]
    fin = await one(store, complete(c, rid, "post", now=at(6)))
    assert isinstance(fin, Applied) and fin.effects.finished == ((rid, R.SUCCEEDED),)


async def test_for_each_over_an_empty_list_succeeds_at_once(store: Store) -> None:
    c, rid, res = await loop_run(store, 2, [])
    assert dispatched(res) == [("post", 1)]
    steps = await steps_by_key(store, rid)
    assert list(steps) == ["each", "post"]
    assert (steps["each"].status, steps["each"].output, steps["each"].owner) == (S.SUCCEEDED, [], None)
    fin = await run_step(store, c, rid, "post")
    assert fin.effects.finished == ((rid, R.SUCCEEDED),)


async def test_a_failed_item_is_counted_once_even_when_its_children_are_skipped(store: Store) -> None:
    # Item 0's "x" fails, so its "y" is skipped in the same completion: the item is done once, not twice.
    c, rid, res = await loop_run(store, 1, [1, 2])
    assert dispatched(res) == [("each.0.x", 1)]
    step_res = await run_step(store, c, rid, "each.0.x", S.FAILED, error="bad item")
    assert dispatched(step_res) == [("each.1.x", 1)] and step_res.effects.finished == ()
    assert (await step(store, rid, "each")).status is S.RUNNING
    assert await statuses(store, rid) == {
        "each": S.RUNNING, "post": S.PENDING, "each.0.x": S.FAILED, "each.0.y": S.SKIPPED, "each.1.x": S.PENDING, "each.1.y": S.PENDING}
    await run_step(store, c, rid, "each.1.x")
    fin = await run_step(store, c, rid, "each.1.y", output="ok")
    assert fin.effects.finished == ((rid, R.FAILED),)
    each = await step(store, rid, "each")
    assert (each.status, each.error) == (S.FAILED, "1 of 2 items failed")
    assert each.output == [
        {"index": 0, "status": "Failed", "output": None, "error": "bad item"},
        {"index": 1, "status": "Succeeded", "output": "ok"},
    ]
    assert (await step(store, rid, "post")).status is S.SKIPPED


async def test_folded_completion_of_a_for_each_claims_its_first_child(store: Store) -> None:
    c, rid = await started_run(store, loop_flow(2, chain=False))
    await one(store, claim(c, rid, "each"))
    op = expand(c, rid, ["p", "q"], 2)
    op.fold_lease_until = at(60)
    res = await one(store, op)
    assert isinstance(res, Applied) and res.claimed is not None
    key, gen, grant = res.claimed
    assert (key, gen, json.loads(grant.loop_item_json or "null")) == ("each.0.x", 1, "p")
    assert dispatched(res) == [("each.1.x", 1)]
    x0 = await step(store, rid, "each.0.x")
    assert (x0.status, x0.owner) == (S.RUNNING, "w1")


async def test_retrying_a_for_each_deletes_and_recreates_its_children(store: Store) -> None:
    c, rid, _ = await loop_run(store, 2, [1, 2], chain=False)
    await run_step(store, c, rid, "each.0.x", output="one")
    fin = await run_step(store, c, rid, "each.1.x", S.FAILED, error="two")
    assert fin.effects.finished == ((rid, R.FAILED),)
    child_retry = await one(store, RetryStep(c.flow_id, rid, "each.1.x", c.graph, at(1)))
    assert isinstance(child_retry, InvalidOperationError)
    res = await one(store, RetryStep(c.flow_id, rid, "each", c.graph, at(1)))
    assert dispatched(res) == [("each", 2)]
    steps = await steps_by_key(store, rid)
    assert list(steps) == ["each", "post"]
    assert (steps["each"].status, steps["each"].queued, steps["each"].output, steps["each"].inputs) == (S.PENDING, True, None, None)
    assert steps["post"].status is S.PENDING
    rec = await store.get_run(rid)
    assert rec is not None and rec.status is R.RUNNING
    # Run again over other items: fresh children under the same keys, dispatched from generation 1.
    assert isinstance(await one(store, claim(c, rid, "each", gen=2, now=at(2))), Grant)
    again = await one(store, expand(c, rid, ["z"], 2, gen=2, now=at(2)))
    assert dispatched(again) == [("each.0.x", 1)]
    steps = await steps_by_key(store, rid)
    assert list(steps) == ["each", "post", "each.0.x"]
    x0 = steps["each.0.x"]
    assert (x0.status, x0.output, x0.attempts, x0.generation, x0.queued) == (S.PENDING, None, 0, 1, True)
    g = await one(store, claim(c, rid, "each.0.x", now=at(2)))
    assert isinstance(g, Grant) and g.attempt == 1 and json.loads(g.loop_item_json or "null") == "z"
    done = await one(store, complete(c, rid, "each.0.x", output="zz", now=at(3)))
    assert dispatched(done) == [("post", 1)]
    each = await step(store, rid, "each")
    assert (each.status, each.output) == (S.SUCCEEDED, [{"index": 0, "status": "Succeeded", "output": "zz"}])
    assert [(a.attempt, a.generation, a.status) for a in await store.get_attempts(rid) if a.step_key == "each"] == [
        (1, 1, S.FAILED), (2, 2, S.SUCCEEDED)]
    assert isinstance(await one(store, claim(c, rid, "post", now=at(3))), Grant)
    post = await one(store, complete(c, rid, "post", now=at(4)))
    assert isinstance(post, Applied) and post.effects.finished == ((rid, R.SUCCEEDED),)


async def test_cancelling_a_run_reaches_the_for_each_children(store: Store) -> None:
    c, rid, _ = await loop_run(store, 1, [1, 2])
    await one(store, claim(c, rid, "each.0.x"))
    res = await one(store, CancelRun(rid, at(3), timed_out=True))
    assert isinstance(res, Applied) and res.effects.finished == ((rid, R.TIMED_OUT),)
    assert await statuses(store, rid) == {
        "each": S.TIMED_OUT, "post": S.CANCELLED, "each.0.x": S.TIMED_OUT, "each.0.y": S.CANCELLED,
        "each.1.x": S.CANCELLED, "each.1.y": S.CANCELLED}
    late = await one(store, complete(c, rid, "each.0.x"))
    assert isinstance(late, Applied) and not late.applied


async def test_retrying_a_step_before_a_for_each_deletes_the_loops_children(store: Store) -> None:
    manifest = Flow("loop", {
        "pre": Step("T"),
        "each": ForEach([1], {"x": Step("T")}, run_after={"pre": ["Failed"]}),
    }).to_manifest()
    c, rid = await started_run(store, manifest)
    await run_step(store, c, rid, "pre", S.FAILED, error="first")
    assert isinstance(await one(store, claim(c, rid, "each")), Grant)
    assert dispatched(await one(store, expand(c, rid, ["a", "b"], 1))) == [("each.0.x", 1)]
    busy = await one(store, RetryStep(c.flow_id, rid, "pre", c.graph, at(1)))
    assert isinstance(busy, InvalidOperationError)  # the loop is still running
    await run_step(store, c, rid, "each.0.x")
    fin = await run_step(store, c, rid, "each.1.x")
    assert fin.effects.finished == ((rid, R.SUCCEEDED),)  # the failure of "pre" was handled
    res = await one(store, RetryStep(c.flow_id, rid, "pre", c.graph, at(1)))
    assert dispatched(res) == [("pre", 2)]
    assert await statuses(store, rid) == {"pre": S.PENDING, "each": S.PENDING}
    # "pre" succeeds this time: the loop is skipped and the run ends.
    assert isinstance(await one(store, claim(c, rid, "pre", gen=2, now=at(1))), Grant)
    done = await one(store, complete(c, rid, "pre", gen=2, now=at(2)))
    assert isinstance(done, Applied) and done.effects.finished == ((rid, R.SUCCEEDED),)
    assert await statuses(store, rid) == {"pre": S.SUCCEEDED, "each": S.SKIPPED}


async def test_a_for_each_step_holds_no_lease_while_its_items_run(store: Store) -> None:
    c, rid, _ = await loop_run(store, 1, [1], chain=False)
    assert await store.find_expired_leases(at(10_000)) == []
    lost, given = await store.apply([
        ExpireLease(c.flow_id, rid, "each", 1, at(10_000)), ExpireLease(c.flow_id, rid, "each", 1, at(10_000), owner="w1")])
    assert isinstance(lost, Applied) and not lost.applied
    assert isinstance(given, Applied) and not given.applied
    assert (await step(store, rid, "each")).status is S.RUNNING


async def test_reconcile_leaves_a_parked_step_and_a_running_loop_alone(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, claim(c, rid, "a"))
    await one(store, park(c, rid, "a", "go"))
    res = await one(store, Reconcile(c.flow_id, rid, c.graph, at(1)))
    assert isinstance(res, Applied) and res.applied and res.effects == Effects()
    a = await step(store, rid, "a")
    assert (a.status, a.queued, a.generation, a.waiting_signal) == (S.PENDING, False, 1, "go")

    lc, lrid, _ = await loop_run(store, 1, [1, 2])
    res = await one(store, Reconcile(lc.flow_id, lrid, lc.graph, at(1)))
    assert isinstance(res, Applied) and res.effects == Effects()
    # The counters it rebuilt still let the loop and the run end.
    for k in ("each.0.x", "each.0.y", "each.1.x"):
        await run_step(store, lc, lrid, k)
    last = await run_step(store, lc, lrid, "each.1.y")
    assert dispatched(last) == [("post", 1)]
    assert (await run_step(store, lc, lrid, "post")).effects.finished == ((lrid, R.SUCCEEDED),)


async def test_a_signal_wakes_only_its_own_runs_parked_steps(store: Store) -> None:
    c, r1 = await started_run(store, LINEAR)
    _, r2 = await started_run(store, LINEAR)
    for rid in (r1, r2):
        await one(store, claim(c, rid, "a"))
        await one(store, park(c, rid, "a", "go"))
    res = await one(store, signal(r1, "go", 1))
    assert isinstance(res, Applied) and [(d.run_id, d.step_key, d.generation) for d in res.effects.dispatched] == [(r1, "a", 2)]
    assert (await step(store, r2, "a")).queued is False


async def test_a_failed_batch_rolls_back_fires_signals_consumptions_and_loops(store: Store) -> None:
    c, rid = await started_run(store, LINEAR)
    await one(store, signal(rid, "go", "kept"))
    g = await one(store, replace(claim(c, rid, "a"), signal="go"))
    assert isinstance(g, Grant) and g.signal is not None
    lc, lrid = await started_run(store, loop_flow(1, chain=False))
    await one(store, claim(lc, lrid, "each"))
    events = len(await store.get_events())
    consume = complete(c, rid, "a")
    consume.consume_signal = g.signal[0]
    dup = start_op(c)
    bad = [cron_op(c, at(60)), signal(rid, "go", "lost"), consume, expand(lc, lrid, [1, 2], 1), dup, dup]
    with pytest.raises(StoreError):
        await store.apply(bad)  # the duplicate run id fails the batch
    assert [(s.payload, s.consumed_by) for s in await store.get_signals(rid)] == [("kept", None)]
    a = await step(store, rid, "a")
    assert (a.status, a.owner) == (S.RUNNING, "w1")
    assert list(await steps_by_key(store, lrid)) == ["each", "post"]
    each = await step(store, lrid, "each")
    assert (each.status, each.owner, each.inputs) == (S.RUNNING, "w1", None)
    assert len(await store.get_events()) == events
    assert await store.count_runs() == 2
    # The same ops apply once the bad op is gone: the fire was not recorded, the loop expands.
    fire, sig, done, loop = await store.apply(bad[:4])
    assert isinstance(fire, RunStarted) and fire.created
    assert isinstance(sig, Applied) and isinstance(done, Applied) and done.applied
    assert dispatched(loop) == [("each.0.x", 1)]
    assert [(s.payload, s.consumed_by) for s in await store.get_signals(rid)] == [("kept", "a"), ("lost", None)]


async def test_clearing_an_override_wins_over_one_given_with_it(store: Store) -> None:
    # Whether the trigger has saved state yet or not.
    await store.set_schedule("f", "new", expression="1 * * * *", clear_expression=True, now=T0)
    await store.set_schedule("f", "old", expression="2 * * * *", now=T0)
    await store.set_schedule("f", "old", expression="3 * * * *", clear_expression=True, now=T0)
    assert await store.get_schedule_overrides() == {("f", "new"): (False, None), ("f", "old"): (False, None)}
