"""Step semantics on every store: conditions, retries, timeouts, polling, signals, cron ledger, schedules."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from floworchestrator import (
    After,
    Cron,
    Flow,
    Orchestrator,
    Retry,
    RunStatus,
    Step,
    StepContext,
    StepResult,
    StepStatus,
    WaitForSignal,
    poll,
)
from floworchestrator.exceptions import InvalidOperationError, UnknownRunError

from ..conftest import OrchFactory, make_store

S = StepStatus


async def steps_of(orch: Orchestrator, run_id: str) -> dict[str, Any]:
    return {s.step_key: s for s in await orch.get_steps(run_id)}


# --- when conditions ---------------------------------------------------------------------------


async def test_branch_and_join_with_opposite_conditions(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("route", {
        "check": Step("Echo", inputs={"amount": "@triggerBody()?.amount"}),
        "big": Step("Echo", run_after={"check": After(["Succeeded"], when="@steps('check').output.amount > 100")}),
        "small": Step("Echo", run_after={"check": After(["Succeeded"], when="@steps('check').output.amount <= 100")}),
        "join": Step("Echo", run_after={"big": ["Succeeded", "Skipped"], "small": ["Succeeded", "Skipped"]}),
    }))
    async with orch:
        for amount, ran, skipped in ((150, "big", "small"), (20, "small", "big")):
            run = await orch.run("route", {"amount": amount}, timeout=10)
            assert run.status is RunStatus.SUCCEEDED
            steps = await steps_of(orch, run.run_id)
            assert steps[ran].status is S.SUCCEEDED and steps[skipped].status is S.SKIPPED
            assert steps["join"].status is S.SUCCEEDED
            (trace,) = steps[skipped].trace["conditions"]
            assert trace["result"] is False
            assert trace["expression"].startswith("@steps('check').output.amount")
            assert str(amount) in trace["evaluated"]
            assert steps[ran].trace is None


async def test_type_mismatch_skips_with_the_error_recorded(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {"gate": Step("Echo", when="@triggerBody()?.n > 5"), "after": Step("Echo", run_after={"gate": []})}))
    async with orch:
        run = await orch.run("f", {"n": "7"}, timeout=10)
        steps = await steps_of(orch, run.run_id)
        assert steps["gate"].status is S.SKIPPED
        assert "string" in steps["gate"].error and "number" in steps["gate"].error
        assert steps["gate"].trace["conditions"][0]["result"] is None
        assert steps["after"].status is S.SUCCEEDED  # [] accepts any final status, Skipped included
        ok = await orch.run("f", {"n": 9}, timeout=10)
        assert (await steps_of(orch, ok.run_id))["gate"].status is S.SUCCEEDED


async def test_skip_by_condition_propagates_to_dead_ends(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {
        "a": Step("Echo", when="@triggerBody()?.go == true"),
        "b": Step("Echo", run_after={"a": ["Succeeded"]}),
        "c": Step("Echo", run_after={"b": ["Succeeded"]}),
    }))
    async with orch:
        run = await orch.run("f", {"go": False}, timeout=10)
        assert run.status is RunStatus.SUCCEEDED
        assert {k: s.status for k, s in (await steps_of(orch, run.run_id)).items()} == {"a": S.SKIPPED, "b": S.SKIPPED, "c": S.SKIPPED}


# --- retries and timeouts -----------------------------------------------------------------------


async def test_retry_policy_with_backoff_records_every_attempt(make_orch: OrchFactory) -> None:
    orch = make_orch()
    calls: list[float] = []

    @orch.handler("Flaky")
    async def flaky(inputs: Any, ctx: StepContext) -> str:
        calls.append(time.monotonic())
        if ctx.attempt < 3:
            raise ConnectionError(f"try {ctx.attempt}")
        return "ok"

    orch.register(Flow("f", {"s": Step("Flaky", retry=Retry(max_attempts=3, backoff=0.05, multiplier=2, jitter=0))}))
    async with orch:
        run = await orch.run("f", timeout=10)
        attempts = await orch.get_attempts(run.run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert [(a.attempt, a.status, a.error) for a in attempts] == [
        (1, S.FAILED, "ConnectionError: try 1"), (2, S.FAILED, "ConnectionError: try 2"), (3, S.SUCCEEDED, None)]
    assert all(a.finished_at >= a.started_at for a in attempts)
    assert calls[1] - calls[0] >= 0.045 and calls[2] - calls[1] >= 0.095


async def test_retry_only_on_listed_exceptions_and_gives_up_after_max(make_orch: OrchFactory) -> None:
    orch = make_orch()
    counts: Counter[str] = Counter()

    @orch.handler("Boom")
    async def boom(inputs: Any, ctx: StepContext) -> None:
        counts[ctx.step_key] += 1
        raise (ValueError if ctx.step_key == "value" else ConnectionError)("nope")

    policy = Retry(max_attempts=3, backoff=0, jitter=0, retry_on=[ConnectionError])
    orch.register(Flow("f", {"value": Step("Boom", retry=policy), "conn": Step("Boom", retry=policy)}))
    async with orch:
        run = await orch.run("f", timeout=10)
    assert run.status is RunStatus.FAILED
    assert counts == {"value": 1, "conn": 3}


async def test_step_timeout_cancels_the_handler_and_may_be_retried(make_orch: OrchFactory) -> None:
    orch = make_orch()
    cancelled: list[int] = []

    @orch.handler("Slow")
    async def slow(inputs: Any, ctx: StepContext) -> str:
        if ctx.attempt == 1:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise
        return "fast enough"

    orch.register(Flow("f", {
        "once": Step("Slow", timeout=0.1),
        "twice": Step("Slow", timeout=0.1, retry=Retry(max_attempts=2, backoff=0, jitter=0)),
    }))
    async with orch:
        run = await orch.run("f", timeout=10)
        steps = await steps_of(orch, run.run_id)
        attempts = await orch.get_attempts(run.run_id)
    assert steps["once"].status is S.TIMED_OUT and "timed out after 0.1s" in steps["once"].error
    assert steps["twice"].status is S.SUCCEEDED and steps["twice"].output == "fast enough"
    assert [(a.step_key, a.status) for a in attempts if a.step_key == "twice"] == [("twice", S.TIMED_OUT), ("twice", S.SUCCEEDED)]
    assert cancelled == [1, 1]
    assert run.status is RunStatus.FAILED


async def test_run_timeout_ends_the_run_and_starts_nothing_more(make_orch: OrchFactory) -> None:
    orch = make_orch()
    ran: list[str] = []

    @orch.handler("Slow")
    async def slow(inputs: Any, ctx: StepContext) -> None:
        ran.append(ctx.step_key)
        await asyncio.sleep(0.5)

    orch.register(Flow("f", {"a": Step("Slow"), "b": Step("Slow", run_after={"a": []})}, timeout=0.2))
    async with orch:
        run = await orch.run("f", timeout=10)
        await asyncio.sleep(0.5)
        steps = await steps_of(orch, run.run_id)
    assert run.status is RunStatus.TIMED_OUT
    assert steps["a"].status is S.TIMED_OUT and steps["b"].status is S.CANCELLED
    assert ran == ["a"]


# --- polling ------------------------------------------------------------------------------------------


async def test_polling_step_succeeds_on_its_fourth_attempt(make_orch: OrchFactory) -> None:
    orch = make_orch()
    seen: list[int] = []

    @orch.handler("AwaitJob")
    @poll(interval=0.02, timeout=30, until="state", equals=["done"])
    async def await_job(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        seen.append(ctx.attempt)
        return {"state": "done" if ctx.attempt == 4 else "running", "job": inputs["job"]}

    orch.register(Flow("f", {"wait": Step("AwaitJob", inputs={"job": "@triggerBody()?.job"})}))
    async with orch:
        run = await orch.run("f", {"job": 7}, timeout=10)
        steps = await steps_of(orch, run.run_id)
        attempts = await orch.get_attempts(run.run_id)
    assert run.status is RunStatus.SUCCEEDED and seen == [1, 2, 3, 4]
    assert steps["wait"].output == {"state": "done", "job": 7}
    assert [a.status for a in attempts] == [S.PENDING, S.PENDING, S.PENDING, S.SUCCEEDED]


async def test_polling_times_out_but_not_before_min_attempts_and_fails_on_bad_state(make_orch: OrchFactory) -> None:
    orch = make_orch()

    @orch.handler("Never")
    @poll(interval=0.01, timeout=0.01, min_attempts=5, until="state", equals=["done"], fails_on=["lost"])
    def never(inputs: dict[str, Any]) -> dict[str, Any]:  # a sync fetcher works too
        return {"state": inputs["state"]}

    orch.register(Flow("f", {"p": Step("Never", inputs={"state": "@triggerBody()"})}))
    async with orch:
        run = await orch.run("f", "running", timeout=10)
        p = (await steps_of(orch, run.run_id))["p"]
        assert p.status is S.TIMED_OUT and p.attempts == 5 and "gave up polling after 5 attempts" in p.error
        lost = await orch.run("f", "lost", timeout=10)
        q = (await steps_of(orch, lost.run_id))["p"]
        assert q.status is S.FAILED and q.attempts == 1 and "state is 'lost'" in q.error


async def test_polling_state_survives_a_restart(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    attempts: list[int] = []

    def build() -> Orchestrator:
        orch = Orchestrator(store=store, runtime="inprocess", cron=False)

        @orch.handler("P")
        @poll(interval=0.3, timeout=60)
        async def p(inputs: Any, ctx: StepContext) -> Any:
            attempts.append(ctx.attempt)
            return "ready" if ctx.attempt >= 3 else None

        orch.register(Flow("f", {"p": Step("P")}))
        return orch

    first = build()
    await first.start()
    rid = await first.trigger("f")
    for _ in range(200):
        if len(attempts) >= 2:
            break
        await asyncio.sleep(0.02)
    await first.stop()
    second = build()
    async with second:
        run = await second.wait(rid, timeout=10)
        (step,) = await second.get_steps(rid)
    assert run.status is RunStatus.SUCCEEDED and attempts == [1, 2, 3] and step.output == "ready"


# --- signals --------------------------------------------------------------------------------------------


async def test_signal_resumes_a_waiting_step_with_its_payload(make_orch: OrchFactory) -> None:
    orch = make_orch(concurrency=1)
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("approve", {
        "prepare": Step("Echo", inputs={"x": 1}),
        "approval": WaitForSignal("approved", run_after={"prepare": ["Succeeded"]}),
        "ship": Step("Echo", inputs="@steps('approval').output.by", run_after={"approval": ["Succeeded"]}),
    }))
    async with orch:
        rid = await orch.trigger("approve")
        for _ in range(100):
            if (await steps_of(orch, rid))["approval"].waiting_signal == "approved":
                break
            await asyncio.sleep(0.02)
        # With one worker, the waiting step holds none: another run still gets through.
        other = await orch.trigger("approve")
        assert (await orch.get_run(rid)).status is RunStatus.RUNNING  # type: ignore[union-attr]
        await orch.signal(rid, "approval", {"by": "alice"})  # by step key
        run = await orch.wait(rid, timeout=10)
        steps = await steps_of(orch, rid)
        assert run.status is RunStatus.SUCCEEDED
        assert steps["approval"].output == {"by": "alice"} and steps["ship"].output == "alice"
        await orch.signal(other, "approved", {"by": "bob"})  # by signal name
        assert (await orch.wait(other, timeout=10)).status is RunStatus.SUCCEEDED
        with pytest.raises(InvalidOperationError, match="Running runs only"):
            await orch.signal(rid, "approved", {})
        with pytest.raises(UnknownRunError):
            await orch.signal("ghost", "approved", {})


async def test_early_signal_is_kept_until_the_step_waits(make_orch: OrchFactory) -> None:
    orch = make_orch()
    gate = asyncio.Event()

    @orch.handler("Gate")
    async def wait_gate(inputs: Any) -> None:
        await gate.wait()

    orch.register(Flow("f", {"first": Step("Gate"), "w": WaitForSignal("go", run_after={"first": []})}))
    async with orch:
        rid = await orch.trigger("f")
        await orch.signal(rid, "go", "early")
        gate.set()
        run = await orch.wait(rid, timeout=10)
        assert run.status is RunStatus.SUCCEEDED
        assert (await steps_of(orch, rid))["w"].output == "early"
        (sig,) = await orch.store.get_signals(rid)
        assert sig.consumed_by == "w"


async def test_signal_wait_times_out(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.register(Flow("f", {"w": WaitForSignal("go", timeout=0.2)}))
    async with orch:
        run = await orch.run("f", timeout=10)
        w = (await steps_of(orch, run.run_id))["w"]
    assert run.status is RunStatus.FAILED and w.status is S.TIMED_OUT and "no signal 'go' arrived within 0.2s" in w.error


async def test_signal_resumes_the_run_after_an_orchestrator_restart(store_kind: str, tmp_path: Path) -> None:
    if store_kind == "memory":
        store = make_store(store_kind, tmp_path)  # shared object: the "restart" keeps its memory
    else:
        store = None

    def build() -> Orchestrator:
        orch = Orchestrator(store=store or make_store(store_kind, tmp_path), runtime="inprocess", cron=False)
        orch.add_handler("Echo", lambda inputs: inputs)
        orch.register(Flow("f", {"w": WaitForSignal("approved"), "done": Step("Echo", inputs="@steps('w').output",
                                                                              run_after={"w": ["Succeeded"]})}))
        return orch

    first = build()
    await first.start()
    rid = await first.trigger("f")
    for _ in range(100):
        if (await steps_of(first, rid))["w"].waiting_signal:
            break
        await asyncio.sleep(0.02)
    await first.stop()
    second = build()
    async with second:
        await second.signal(rid, "approved", {"ok": True})
        run = await second.wait(rid, timeout=10)
        assert run.status is RunStatus.SUCCEEDED
        assert (await steps_of(second, rid))["done"].output == {"ok": True}


# --- cron ---------------------------------------------------------------------------------------------


async def test_three_orchestrators_on_one_sqlite_file_start_one_run_per_tick(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cron.db'}"
    orchs = []
    for _ in range(3):
        o = Orchestrator(store=url, runtime="inprocess")
        o.add_handler("Echo", lambda inputs: inputs)
        o.register(Flow("tick", {"s": Step("Echo", inputs="@triggerBody()")}, triggers={"sec": Cron("* * * * * *")}))
        orchs.append(o)
    await asyncio.gather(*(o.start() for o in orchs))
    try:
        await asyncio.sleep(3.3)
    finally:
        for o in orchs:
            await o.stop()
    await orchs[0].store.open()
    try:
        runs = await orchs[0].list_runs(flow_id="tick", limit=100)
    finally:
        await orchs[0].store.close()
    fires = Counter(r.trigger_body["scheduled_at"] for r in runs)
    assert len(runs) >= 2
    assert set(fires.values()) == {1}, fires


async def test_schedule_pause_resume_and_override(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("nightly", {"s": Step("Echo")}, triggers={"n": Cron("0 2 * * *"), "manual": Cron("0 3 * * *")}))
    async with orch:
        (first, second) = sorted(await orch.list_schedules(count=2), key=lambda s: s.trigger)
        assert (second.trigger, second.expression, second.paused) == ("n", "0 2 * * *", False)
        assert [f.hour for f in second.next_fires] == [2, 2] and second.next_fires[1] > second.next_fires[0]
        await orch.pause_schedule("nightly", "n")
        await orch.set_cron("nightly", "n", "*/5 * * * *")
        (s,) = [x for x in await orch.list_schedules() if x.trigger == "n"]
        assert (s.paused, s.expression, s.overridden) == (True, "*/5 * * * *", True)
        assert all(f.minute % 5 == 0 for f in s.next_fires)
        await orch.resume_schedule("nightly", "n")
        await orch.set_cron("nightly", "n", None)
        (s,) = [x for x in await orch.list_schedules() if x.trigger == "n"]
        assert (s.paused, s.expression, s.overridden) == (False, "0 2 * * *", False)
        with pytest.raises(InvalidOperationError, match="invalid cron expression"):
            await orch.set_cron("nightly", "n", "every day")
        with pytest.raises(InvalidOperationError, match="no cron trigger"):
            await orch.pause_schedule("nightly", "nope")
        assert first.trigger == "manual"


async def test_paused_and_overridden_cron_persist_across_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sched.db'}"

    def build() -> Orchestrator:
        o = Orchestrator(store=url, runtime="inprocess")
        o.add_handler("Echo", lambda inputs: inputs)
        o.register(Flow("f", {"s": Step("Echo")}, triggers={"sec": Cron("* * * * * *"), "other": Cron("0 0 1 1 *")}))
        return o

    first = build()
    async with first:
        await first.pause_schedule("f", "sec")
        await first.set_cron("f", "other", "* * * * * */2")
    second = build()
    async with second:
        await asyncio.sleep(2.5)
        runs = await second.list_runs(flow_id="f")
        scheds = {s.trigger: s for s in await second.list_schedules()}
    assert scheds["sec"].paused and scheds["other"].expression == "* * * * * */2"
    assert runs and {r.trigger_key for r in runs} == {"other"}


async def test_disabling_a_flow_stops_its_cron(make_orch: OrchFactory) -> None:
    orch = make_orch(cron=True)
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("tick", {"s": Step("Echo")}, triggers={"sec": Cron("* * * * * *")}, enabled=False))
    async with orch:
        await asyncio.sleep(1.5)
        assert await orch.list_runs() == []


def test_step_result_helpers() -> None:
    assert StepResult.timed_out("late").status is S.TIMED_OUT
