"""Regression tests from a correctness review of the engine and the stores (one test per finding).

Each test states the behaviour DESIGN.md or a contract docstring asks for; each failed before its fix.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from floworchestrator import (
    Flow,
    ForEach,
    Orchestrator,
    Retry,
    RunStatus,
    Step,
    StepContext,
    StepResult,
    StepStatus,
    WaitForSignal,
)
from floworchestrator._ids import new_id
from floworchestrator.engine import utcnow
from floworchestrator.exceptions import InvalidOperationError
from floworchestrator.flow import CompiledFlow
from floworchestrator.runtimes.base import StepMessage
from floworchestrator.runtimes.inprocess import InProcessDispatcher
from floworchestrator.scheduler import next_fire
from floworchestrator.stores.base import Applied, Claim, Complete, Grant, RunStarted, Signal, StartRun, Store

from ..conftest import OrchFactory, make_store

S = StepStatus


async def steps_of(orch: Orchestrator, run_id: str) -> dict[str, Any]:
    return {s.step_key: s for s in await orch.get_steps(run_id)}


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        if loop.time() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


# --- 1. retry_step of a Cancelled step ignores its predecessors -----------------------------------


async def test_retrying_a_cancelled_step_does_not_run_it_after_a_predecessor_that_never_succeeded(
    make_orch: OrchFactory,
) -> None:
    orch = make_orch()
    started = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    @orch.handler("Slow")
    async def slow(inputs: Any, ctx: StepContext) -> str:
        ran.append(ctx.step_key)
        started.set()
        await release.wait()
        return "a-done"

    @orch.handler("Charge")
    async def charge(inputs: Any, ctx: StepContext) -> str:
        ran.append(ctx.step_key)
        return "charged"

    # "charge" may only run after "a" Succeeded.
    orch.register(Flow("f", {"a": Step("Slow"), "charge": Step("Charge", run_after={"a": ["Succeeded"]})}))
    async with orch:
        rid = await orch.trigger("f")
        await started.wait()
        await orch.cancel_run(rid)  # a: Cancelled while running, charge: Cancelled (never ran)
        release.set()
        try:
            await orch.retry_step(rid, "charge")
        except InvalidOperationError:
            pass  # refusing is a fine answer too
        await asyncio.sleep(0.3)
        steps = await steps_of(orch, rid)
    assert steps["a"].status is S.CANCELLED
    assert ran == ["a"], f"'charge' ran although its predecessor 'a' never succeeded: {ran}"


# --- 2. retry_step of a run whose flow has a timeout: the old deadline kills the retry -------------


async def test_retrying_a_step_after_the_runs_deadline_passed_is_not_timed_out_at_once(make_orch: OrchFactory) -> None:
    orch = make_orch(recovery_interval=0.05)
    calls: list[int] = []

    @orch.handler("Flaky")
    async def flaky(inputs: Any, ctx: StepContext) -> str:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise RuntimeError("downstream was down")
        await asyncio.sleep(0.3)
        return "ok"

    orch.register(Flow("f", {"a": Step("Flaky")}, timeout=0.5))
    async with orch:
        run = await orch.run("f", timeout=5)
        assert run.status is RunStatus.FAILED
        await asyncio.sleep(0.6)  # the operator fixes the outage; the run's original deadline is now past
        await orch.retry_step(run.run_id, "a")
        again = await orch.wait(run.run_id, timeout=5)
        steps = await steps_of(orch, run.run_id)
    assert again.status is RunStatus.SUCCEEDED, (again.status, steps["a"].status, steps["a"].error)


# --- 3. a signal renamed in a new version of the flow: the pinned run spins for ever ---------------


async def test_a_run_waiting_for_a_signal_finishes_after_the_flow_renames_that_signal(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    v1 = Flow("f", {"w": WaitForSignal("approve"), "after": Step("Echo", inputs={"x": 1}, run_after={"w": ["Succeeded"]})})
    v2 = Flow("f", {"w": WaitForSignal("approved"), "after": Step("Echo", inputs={"x": 1}, run_after={"w": ["Succeeded"]})},
              version="2")
    orch.register(v1)
    async with orch:
        rid = await orch.trigger("f")

        async def parked() -> bool:
            return (await steps_of(orch, rid))["w"].waiting_signal == "approve"

        await _until(parked)
        orch.register(v2)  # deploy a new version; the run keeps the manifest it started on (DESIGN §4.1)
        await orch.signal(rid, "approve", {"by": "alice"})  # the signal of the run's own (pinned) manifest
        try:
            run = await orch.wait(rid, timeout=3)
        except TimeoutError:
            attempts = await orch.get_attempts(rid)
            await orch.cancel_run(rid)
            raise AssertionError(
                f"the run never finished; step 'w' was claimed and re-parked {len(attempts)} times in 3 s"
            ) from None
        assert run.status is RunStatus.SUCCEEDED


# --- 4. a handler result with a non-final status leaves the run stuck for ever ----------------------


async def test_a_handler_returning_a_running_status_does_not_leave_the_run_stuck(make_orch: OrchFactory) -> None:
    orch = make_orch(recovery_interval=0.05)

    @orch.handler("Odd")
    async def odd(inputs: Any) -> StepResult:
        return StepResult(StepStatus.RUNNING)  # a public constructor; nothing rejects it

    orch.add_handler("Echo", lambda inputs: "ok")
    orch.register(Flow("f", {"a": Step("Odd"), "b": Step("Echo", run_after={"a": []})}))
    async with orch:
        rid = await orch.trigger("f")
        try:
            run = await orch.wait(rid, timeout=2)
        except TimeoutError:
            steps = await steps_of(orch, rid)
            raise AssertionError(
                f"run stuck Running: a={steps['a'].status} owner={steps['a'].owner} lease={steps['a'].lease_until}, "
                f"b={steps['b'].status} queued={steps['b'].queued}"
            ) from None
    assert run.status.is_final


# --- 5. recovery re-enqueues long-delayed steps on every pass: unbounded timers ---------------------


class CountingDispatcher(InProcessDispatcher):
    def __init__(self) -> None:
        super().__init__(8)
        self.delayed: list[tuple[str, float]] = []

    async def enqueue(self, messages: Sequence[StepMessage], delay: float = 0.0) -> None:
        if delay > 0:
            self.delayed.extend((m.step_key, delay) for m in messages)
        await super().enqueue(messages, delay)


async def test_a_step_waiting_a_long_time_is_not_re_enqueued_on_every_recovery_pass(store_kind: str, tmp_path: Path) -> None:
    dispatcher = CountingDispatcher()
    orch = Orchestrator(store=make_store(store_kind, tmp_path), runtime=dispatcher, cron=False,
                        recovery_interval=0.02, stale_after=0.05)
    orch.register(Flow("f", {"w": WaitForSignal("go", timeout=3600)}))
    async with orch:
        rid = await orch.trigger("f")

        async def parked() -> bool:
            return (await steps_of(orch, rid))["w"].waiting_signal == "go"

        await _until(parked)
        await asyncio.sleep(1.0)
        timers = len(dispatcher._timers)
        delayed = len(dispatcher.delayed)
        await orch.cancel_run(rid)
    # One wake-up timer is needed; recovery adds another one (an hour ahead) every pass.
    assert delayed <= 3 and timers <= 3, f"{delayed} delayed enqueues, {timers} live timers for one waiting step"


# --- 6. a claim refused only because of clock skew drops the message --------------------------------


async def test_a_step_queued_by_a_process_whose_clock_is_slightly_ahead_is_not_dropped(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    orch = Orchestrator(store=store, runtime="inprocess", cron=False, recovery_interval=0.05)
    orch.add_handler("Echo", lambda inputs: "ok")
    orch.register(Flow("f", {"a": Step("Echo")}))
    async with orch:
        compiled = orch.engine.flows["f"]
        run_id = new_id()
        ahead = utcnow() + timedelta(seconds=0.5)  # another machine, its clock 0.5 s ahead of ours, starts the run
        (started,) = await store.apply([StartRun(run_id, "f", compiled.manifest_id, compiled.graph.order, compiled.waiting,
                                                 "manual", "null", "{}", None, ahead)])
        assert isinstance(started, RunStarted) and started.created
        # Its broker delivers the (delay 0) message to a worker of ours at once:
        await orch.engine.apply_effects(started.effects)
        run = await orch.wait(run_id, timeout=3)
    assert run.status is RunStatus.SUCCEEDED


# --- 7. cron: a daily schedule fires twice on the DST fall-back day ---------------------------------


def test_a_daily_cron_fires_once_per_local_day_across_the_dst_fall_back() -> None:
    zone = "America/New_York"  # 2024-11-03 01:00-02:00 local happens twice
    at = datetime(2024, 11, 1, 12, tzinfo=UTC)
    fires = []
    for _ in range(4):
        at = next_fire("30 1 * * *", zone, at)
        fires.append(at)
    days = [f.astimezone(ZoneInfo(zone)).date().isoformat() for f in fires]
    assert len(set(days)) == len(days), f"'30 1 * * *' fired twice on one day: {[f.isoformat() for f in fires]}"


# --- 8. one signal, two waiting steps: the outcome depends on how the claims were batched -----------


async def _two_waiters(store: Store) -> tuple[CompiledFlow, str]:
    flow = Flow("sig", {"w1": WaitForSignal("go"), "w2": WaitForSignal("go")})
    c = CompiledFlow.from_manifest(flow.to_manifest())
    await store.upsert_flows([("sig", "1", c.manifest_id, json.dumps(c.manifest), True)], utcnow())
    rid = new_id()
    now = utcnow()
    await store.apply([StartRun(rid, "sig", c.manifest_id, c.graph.order, c.waiting, "manual", "null", "{}", None, now)])
    lease = now + timedelta(seconds=60)
    for key in ("w1", "w2"):  # both run, find no signal and park
        (g,) = await store.apply([Claim("sig", rid, key, 1, "w", lease, now, (), "go")])
        assert isinstance(g, Grant) and g.signal is None
        (done,) = await store.apply([Complete("sig", rid, key, 1, "w", S.PENDING, None, None, None, now, now, c.graph,
                                              park="go")])
        assert isinstance(done, Applied) and done.applied
    (sent,) = await store.apply([Signal(rid, "go", '"payload"', now)])
    assert isinstance(sent, Applied) and {d.step_key for d in sent.effects.dispatched} == {"w1", "w2"}  # both woken
    return c, rid


async def _finish(store: Store, c: CompiledFlow, rid: str, key: str, grant: Grant) -> None:
    """What the engine does with the grant of a WaitForSignal step: succeed with the signal, or park again."""
    now = utcnow()
    if grant.signal is not None:
        op = Complete("sig", rid, key, 2, "w", S.SUCCEEDED, grant.signal[1], None, None, now, now, c.graph,
                      consume_signal=grant.signal[0])
    else:
        op = Complete("sig", rid, key, 2, "w", S.PENDING, None, None, None, now, now, c.graph, park="go")
    (done,) = await store.apply([op])
    assert isinstance(done, Applied) and done.applied


async def test_one_signal_wakes_two_waiting_steps_the_same_way_whatever_the_batching(store: Store) -> None:
    # Interleaving A: both woken steps claim before either completes (one batch, or a fast second worker).
    c, ra = await _two_waiters(store)
    now = utcnow()
    lease = now + timedelta(seconds=60)
    g1, g2 = await store.apply([Claim("sig", ra, "w1", 2, "w", lease, now, (), "go"),
                                Claim("sig", ra, "w2", 2, "w", lease, now, (), "go")])
    assert isinstance(g1, Grant) and isinstance(g2, Grant)
    await _finish(store, c, ra, "w1", g1)
    await _finish(store, c, ra, "w2", g2)
    # Interleaving B: the same, but w1 completes before w2's claim is written.
    c, rb = await _two_waiters(store)
    now = utcnow()
    (h1,) = await store.apply([Claim("sig", rb, "w1", 2, "w", lease, now, (), "go")])
    assert isinstance(h1, Grant)
    await _finish(store, c, rb, "w1", h1)
    (h2,) = await store.apply([Claim("sig", rb, "w2", 2, "w", lease, now, (), "go")])
    assert isinstance(h2, Grant)
    await _finish(store, c, rb, "w2", h2)
    outcome_a = {s.step_key: s.status for s in await store.get_steps(ra)}
    outcome_b = {s.step_key: s.status for s in await store.get_steps(rb)}
    signals_a = [(s.signal_id, s.consumed_by) for s in await store.get_signals(ra)]
    assert outcome_a == outcome_b, (
        f"same signal, same waiting steps, different result: A={outcome_a} (signals {signals_a}) B={outcome_b}"
    )


async def test_in_a_for_each_each_signal_is_used_by_one_waiting_item(make_orch: OrchFactory) -> None:
    # The same race end to end: two items of a ForEach wait for "go"; the woken claims land in one batch.
    orch = make_orch()
    orch.register(Flow("fe", {"each": ForEach([1, 2, 3], {"w": WaitForSignal("go")}, concurrency=2)}))
    async with orch:
        rid = await orch.trigger("fe")

        async def two_parked() -> bool:
            steps = await steps_of(orch, rid)
            return all(k in steps and steps[k].waiting_signal == "go" for k in ("each.0.w", "each.1.w"))

        await _until(two_parked)
        await orch.signal(rid, "go", "first")
        await asyncio.sleep(0.3)
        steps = await steps_of(orch, rid)
        signals = await orch.store.get_signals(rid)
        await orch.cancel_run(rid) if (await orch.get_run(rid)).status is RunStatus.RUNNING else None  # type: ignore[union-attr]
    used = [k for k, st in steps.items() if k.endswith(".w") and st.status is S.SUCCEEDED]
    consumed = [sg.signal_id for sg in signals if sg.consumed_by is not None]
    assert len(used) == len(consumed), (
        f"one signal {[(sg.signal_id, sg.consumed_by) for sg in signals]} completed {len(used)} steps: {used}"
    )


# --- 9. a manual retry does not restart the step's retry policy ---------------------------------------


async def test_a_manual_retry_gets_the_steps_retry_policy_again(make_orch: OrchFactory) -> None:
    orch = make_orch()
    calls: list[int] = []

    @orch.handler("Flaky")
    async def flaky(inputs: Any, ctx: StepContext) -> str:
        calls.append(ctx.attempt)
        if len(calls) <= 3:  # two failures exhaust the policy; after the manual retry one more transient failure
            raise ConnectionError("transient")
        return "ok"

    orch.register(Flow("f", {"a": Step("Flaky", retry=Retry(max_attempts=2, backoff=0.01, jitter=0))}))
    async with orch:
        run = await orch.run("f", timeout=5)
        assert run.status is RunStatus.FAILED and calls == [1, 2]
        await orch.retry_step(run.run_id, "a")
        again = await orch.wait(run.run_id, timeout=5)
    assert again.status is RunStatus.SUCCEEDED, f"attempts seen by the handler: {calls}"


# --- 10. graceful shutdown stops the heartbeat before the running steps finish ------------------------


async def test_graceful_shutdown_does_not_let_another_worker_run_the_step_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    calls: list[str] = []

    async def long(inputs: Any, ctx: StepContext) -> str:
        calls.append(ctx.run_id)
        await asyncio.sleep(1.2)
        return "done"

    flow = Flow("f", {"a": Step("Long")})
    a = Orchestrator(store=url, runtime="inprocess", cron=False, lease_seconds=0.6, shutdown_timeout=5)
    b = Orchestrator(store=url, runtime="inprocess", cron=False, lease_seconds=0.6, recovery_interval=0.05)
    for o in (a, b):
        o.add_handler("Long", long)
        o.register(flow)
    await b.start()
    await a.start()
    try:
        rid = await a.trigger("f")
        await _until(lambda: asyncio.sleep(0, bool(calls)))
        await a.stop()  # graceful: lets the running step finish
        run = await b.wait(rid, timeout=5)
    finally:
        await a.stop()
        await b.stop()
    assert run.status is RunStatus.SUCCEEDED
    assert len(calls) == 1, f"the step ran {len(calls)} times although no worker crashed"


# --- 11. recovery's find_queued always returns the same 500 oldest rows: later lost steps starve -----


async def test_recovery_delivers_a_lost_step_even_when_many_steps_wait_on_long_timers(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    orch = Orchestrator(store=store, runtime="inprocess", cron=False, recovery_interval=0.05, stale_after=0.05)
    orch.add_handler("Echo", lambda inputs: "ok")
    orch.register(Flow("wait", {"w": WaitForSignal("go", timeout=3600)}), Flow("work", {"a": Step("Echo")}))
    async with orch:
        # 501 runs wait (queued, with an hour-long timeout wake-up) for an approval: an ordinary production day.
        waiting = await asyncio.gather(*(orch.trigger("wait") for _ in range(501)))

        async def all_parked() -> bool:
            for rid in waiting[-3:]:
                if (await steps_of(orch, rid))["w"].waiting_signal != "go":
                    return False
            return True

        await _until(all_parked, timeout=30)
        # A run whose message was lost (its process died right after committing it):
        compiled = orch.engine.flows["work"]
        lost = new_id()
        await store.apply([StartRun(lost, "work", compiled.manifest_id, compiled.graph.order, compiled.waiting,
                                    "manual", "null", "{}", None, utcnow())])
        try:
            run = await orch.wait(lost, timeout=3)
        except TimeoutError:
            raise AssertionError("recovery never re-delivered the lost step: every pass re-enqueues the same 500 "
                                 "long-delayed steps") from None
    assert run.status is RunStatus.SUCCEEDED


# --- 12. a handler that raises CancelledError kills the worker task (and is re-run on the next one) ---


async def test_a_handler_raising_cancelled_error_fails_its_step_and_does_not_kill_the_worker(make_orch: OrchFactory) -> None:
    orch = make_orch(concurrency=1)

    @orch.handler("Poison")
    async def poison(inputs: Any) -> None:
        # e.g. it awaited a task that someone else cancelled; this step's own task is not being cancelled
        task = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        task.cancel()
        await task

    orch.add_handler("Echo", lambda inputs: "ok")
    orch.register(Flow("poison", {"p": Step("Poison")}), Flow("fine", {"a": Step("Echo")}))
    async with orch:
        bad = await orch.trigger("poison")
        await asyncio.sleep(0.2)
        alive = [w for w in orch.dispatcher._workers if not w.done()]  # type: ignore[attr-defined]
        try:
            good = await orch.run("fine", timeout=3)
        except TimeoutError:
            raise AssertionError(f"no run can finish any more: {len(alive)} of 1 worker task(s) left alive") from None
        assert good.status is RunStatus.SUCCEEDED
        assert (await orch.wait(bad, timeout=3)).status is RunStatus.FAILED


# --- 13. a completion whose store connection drops is lost: the step re-runs only after its lease expires ---


async def test_a_completion_that_meets_a_lost_connection_is_saved_on_a_later_try_and_the_step_runs_once() -> None:
    from floworchestrator.exceptions import StoreUnavailableError
    from floworchestrator.stores.memory import MemoryStore

    class DropsTwice(MemoryStore):
        """Like a PostgreSQL store whose connection is cut under the first two batches holding a completion."""

        drops = 2

        async def apply(self, ops: Sequence[Any]) -> list[Any]:
            if self.drops and any(isinstance(op, Complete) for op in ops):
                self.drops -= 1
                raise StoreUnavailableError("PostgreSQL at postgresql://db is unavailable: server closed the connection")
            return await super().apply(ops)

    store = DropsTwice()
    calls: list[str] = []
    orch = Orchestrator(store=store, runtime="inprocess", cron=False, lease_seconds=60)

    @orch.handler("Once")
    async def once(inputs: Any, ctx: StepContext) -> str:
        calls.append(ctx.step_key)
        return ctx.step_key

    orch.register(Flow("two", {"a": Step("Once"), "b": Step("Once", run_after={"a": ["Succeeded"]})}))
    async with orch:
        run = await orch.run("two", timeout=5)  # without the retry: stuck Running until the 60 s lease expires
    assert run.status is RunStatus.SUCCEEDED
    assert calls == ["a", "b"] and store.drops == 0
    attempts = await store.get_attempts(run.run_id)
    assert [(a.step_key, a.status) for a in attempts] == [("a", S.SUCCEEDED), ("b", S.SUCCEEDED)]


# --- 14. a signal name the run never waits for was accepted and kept forever (a typo went unnoticed) ---


async def test_a_signal_the_run_never_waits_for_is_refused(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: "ok")
    orch.register(Flow("approve", {"wait": WaitForSignal("approval"), "done": Step("Echo", run_after={"wait": ["Succeeded"]})}),
                  Flow("plain", {"a": Step("Echo")}))
    async with orch:
        run_id = await orch.trigger("approve")
        try:
            await orch.signal(run_id, "aproval", {"ok": True})
        except InvalidOperationError as exc:
            assert "never waits for a signal 'aproval'" in str(exc) and "'approval'" in str(exc)
        else:
            raise AssertionError("a misspelt signal was accepted")
        assert await orch.store.get_signals(run_id) == []
        await orch.signal(run_id, "approval", {"ok": True})  # the right name, or the step's key, still works
        assert (await orch.wait(run_id, timeout=5)).status is RunStatus.SUCCEEDED
        plain = await orch.run("plain", timeout=5)
        try:
            await orch.signal(plain.run_id, "approval")
        except InvalidOperationError as exc:
            assert "no WaitForSignal step" in str(exc)
        else:
            raise AssertionError("a signal to a flow without WaitForSignal was accepted")


# --- 15. an exception text with a NUL made PostgreSQL refuse the whole batch (other runs' completions too) ---


async def test_a_nul_in_an_error_text_fails_only_its_own_step(make_orch: OrchFactory) -> None:
    orch = make_orch()

    @orch.handler("Bad")
    async def bad(inputs: Any) -> None:
        raise ValueError("bad \x00 byte")

    orch.add_handler("Echo", lambda inputs: "ok")
    orch.register(Flow("bad", {"a": Step("Bad")}), Flow("good", {"a": Step("Echo"), "b": Step("Echo", run_after={"a": ["Succeeded"]})}))
    async with orch:
        ids = [await orch.trigger("bad" if i % 2 else "good") for i in range(20)]  # completions share batches
        runs = [await orch.wait(run_id, timeout=10) for run_id in ids]
        assert [r.status for r in runs] == [RunStatus.FAILED if i % 2 else RunStatus.SUCCEEDED for i in range(20)]
        step = (await steps_of(orch, ids[1]))["a"]
        assert step.error == "ValueError: bad \\x00 byte"  # the same on every store
        attempts = await orch.get_attempts(ids[1])
        assert [a.error for a in attempts] == ["ValueError: bad \\x00 byte"]
