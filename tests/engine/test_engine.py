"""The engine end to end on every store, through the in-process runtime."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from floworchestrator import (
    Flow,
    FlowDisabledError,
    Orchestrator,
    RunStatus,
    Step,
    StepContext,
    StepResult,
    StepStatus,
    UnknownFlowError,
    UnknownRunError,
)
from floworchestrator.exceptions import ConfigurationError, InvalidOperationError

from ..conftest import OrchFactory

S = StepStatus


def chain(flow_id: str, n: int, type_name: str = "Echo") -> Flow:
    return Flow(flow_id, {f"s{i}": Step(type_name, run_after={f"s{i - 1}": ["Succeeded"]} if i else {}) for i in range(n)})


async def steps_of(orch: Orchestrator, run_id: str) -> dict[str, Any]:
    return {s.step_key: s for s in await orch.get_steps(run_id)}


async def test_linear_flow_passes_data_through_expressions(make_orch: OrchFactory) -> None:
    orch = make_orch()
    seen: list[tuple[Any, str]] = []

    @orch.handler("Fetch")
    async def fetch(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        seen.append((inputs, ctx.trigger_key))
        return {"total": inputs["amount"] * 2, "id": inputs["id"]}

    @orch.handler("Charge")
    async def charge(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"charged": inputs["amount"], "ref": inputs["ref"]}

    orch.register(Flow("orders", {
        "fetch": Step("Fetch", inputs={"amount": "@triggerBody()?.amount", "id": "@triggerHeaders()['X-Order']"}),
        "charge": Step("Charge", inputs={"amount": "@steps('fetch').output.total", "ref": ["@steps('fetch').status", "lit"]},
                       run_after={"fetch": ["Succeeded"]}),
    }))
    async with orch:
        run = await orch.run("orders", {"amount": 21}, headers={"X-Order": "A-17", "Authorization": "Bearer secret",
                                                             "X-Amz-Security-Token": "t", "X-Session-Id": "s"}, timeout=10)
        assert run.status is RunStatus.SUCCEEDED
        steps = await steps_of(orch, run.run_id)
        assert steps["charge"].output == {"charged": 42, "ref": ["Succeeded", "lit"]}
        assert steps["charge"].inputs == {"amount": 42, "ref": ["Succeeded", "lit"]}
        assert seen == [({"amount": 21, "id": "A-17"}, "manual")]
        stored = await orch.get_run(run.run_id)
        assert stored is not None
        assert stored.trigger_headers == {"X-Order": "A-17"}  # the credential header was never stored
        assert stored.trigger_body == {"amount": 21}


async def test_step_context_and_sync_handlers_in_threads(make_orch: OrchFactory) -> None:
    orch = make_orch()
    info: dict[str, Any] = {}

    @orch.handler("Sync")
    def sync(inputs: None, ctx: StepContext) -> str:
        info.update(run=ctx.run_id, flow=ctx.flow_id, key=ctx.step_key, attempt=ctx.attempt, trigger=ctx.trigger_key,
                    thread=threading.current_thread() is threading.main_thread())
        ctx.logger.info("hello from %s", ctx.step_key)
        return "ok"

    orch.register(Flow("f", {"only": Step("Sync")}))
    async with orch:
        run = await orch.run("f", timeout=10)
    assert run.status is RunStatus.SUCCEEDED
    assert info == {"run": run.run_id, "flow": "f", "key": "only", "attempt": 1, "trigger": "manual", "thread": False}


class ChargeIn(BaseModel):
    order_id: str
    amount: float


async def test_pydantic_inputs_are_validated_with_a_clear_error(make_orch: OrchFactory) -> None:
    orch = make_orch()
    got: list[ChargeIn] = []

    @orch.handler("Charge")
    async def charge(inputs: ChargeIn, ctx: StepContext) -> dict[str, float]:
        got.append(inputs)
        return {"charged": inputs.amount}

    orch.register(Flow("f", {"charge": Step("Charge", inputs={"order_id": "@triggerBody()?.id", "amount": "@triggerBody()?.amount"})}))
    async with orch:
        ok = await orch.run("f", {"id": "A", "amount": "12.5"}, timeout=10)
        bad = await orch.run("f", {"id": "A", "amount": "lots"}, timeout=10)
        assert ok.status is RunStatus.SUCCEEDED and got == [ChargeIn(order_id="A", amount=12.5)]
        assert bad.status is RunStatus.FAILED
        err = (await steps_of(orch, bad.run_id))["charge"].error
        assert "step 'charge'" in err and "ChargeIn" in err and "amount" in err


async def test_failures_are_recorded_not_raised(make_orch: OrchFactory) -> None:
    orch = make_orch()

    @orch.handler("Raise")
    async def boom(inputs: Any) -> None:
        raise ValueError("no such order")

    @orch.handler("Explicit")
    async def explicit(inputs: Any) -> StepResult:
        return StepResult.failed("card declined")

    @orch.handler("NotJson")
    async def not_json(inputs: Any) -> Any:
        return {"when": object()}

    @orch.handler("BadPath")
    async def fine(inputs: Any) -> Any:
        return inputs

    orch.register(Flow("f", {
        "a": Step("Raise"), "b": Step("Explicit"), "c": Step("NotJson"),
        "d": Step("BadPath", inputs={"x": "@triggerBody().missing"}),
    }))
    async with orch:
        run = await orch.run("f", {}, timeout=10)
        assert run.status is RunStatus.FAILED
        steps = await steps_of(orch, run.run_id)
        assert steps["a"].error == "ValueError: no such order"
        assert steps["b"].error == "card declined"
        assert "not JSON-serialisable" in steps["c"].error
        assert "could not resolve inputs" in steps["d"].error and "'missing' not found" in steps["d"].error
        assert {k: s.status for k, s in steps.items()} == {k: S.FAILED for k in "abcd"}


async def test_diamond_with_failing_branch_and_handled_failure(make_orch: OrchFactory) -> None:
    orch = make_orch()
    ran: list[str] = []

    @orch.handler("Ok")
    async def ok(inputs: Any, ctx: StepContext) -> None:
        ran.append(ctx.step_key)

    @orch.handler("Fail")
    async def fail(inputs: Any) -> None:
        raise RuntimeError("down")

    orch.register(
        Flow("diamond", {
            "a": Step("Ok"), "b": Step("Fail", run_after={"a": ["Succeeded"]}), "c": Step("Ok", run_after={"a": ["Succeeded"]}),
            "join": Step("Ok", run_after={"b": ["Succeeded"], "c": ["Succeeded"]}),
            "after_join": Step("Ok", run_after={"join": ["Succeeded"]}),
        }),
        Flow("handled", {
            "charge": Step("Fail"), "alert": Step("Ok", run_after={"charge": ["Failed"]}),
            "ship": Step("Ok", run_after={"charge": ["Succeeded"]}),
        }),
    )
    async with orch:
        d = await orch.run("diamond", timeout=10)
        h = await orch.run("handled", timeout=10)
        assert d.status is RunStatus.FAILED
        assert {k: s.status for k, s in (await steps_of(orch, d.run_id)).items()} == {
            "a": S.SUCCEEDED, "b": S.FAILED, "c": S.SUCCEEDED, "join": S.SKIPPED, "after_join": S.SKIPPED}
        assert h.status is RunStatus.SUCCEEDED
        assert {k: s.status for k, s in (await steps_of(orch, h.run_id)).items()} == {
            "charge": S.FAILED, "alert": S.SUCCEEDED, "ship": S.SKIPPED}


async def test_pending_result_polls_again_without_holding_a_worker(make_orch: OrchFactory) -> None:
    orch = make_orch(concurrency=1)
    calls: list[int] = []

    @orch.handler("Poll")
    async def poll(inputs: Any, ctx: StepContext) -> Any:
        calls.append(ctx.attempt)
        return StepResult.pending(delay=0.05) if ctx.attempt < 3 else {"done": ctx.attempt}

    @orch.handler("Quick")
    async def quick(inputs: Any) -> str:
        return "quick"

    orch.register(Flow("poll", {"p": Step("Poll")}), Flow("quick", {"q": Step("Quick")}))
    async with orch:
        rid = await orch.trigger("poll")
        # With one worker, a quick run still gets through while the poller waits.
        quick_run = await orch.run("quick", timeout=10)
        assert quick_run.status is RunStatus.SUCCEEDED
        run = await orch.wait(rid, timeout=10)
        assert run.status is RunStatus.SUCCEEDED
        assert calls == [1, 2, 3]
        assert (await steps_of(orch, rid))["p"].output == {"done": 3}
        attempts = await orch.get_attempts(rid)
        assert [(a.attempt, a.status) for a in attempts] == [(1, S.PENDING), (2, S.PENDING), (3, S.SUCCEEDED)]
        assert (attempts[1].started_at - attempts[0].finished_at).total_seconds() >= 0.04


async def test_disabled_flow_starts_no_run(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(chain("f", 1), Flow("off", {"s": Step("Echo")}, enabled=False))
    async with orch:
        with pytest.raises(FlowDisabledError, match="'off' is disabled"):
            await orch.trigger("off")
        await orch.set_enabled("f", False)
        with pytest.raises(FlowDisabledError):
            await orch.trigger("f")
        await orch.set_enabled("f", True)
        assert (await orch.run("f", timeout=10)).status is RunStatus.SUCCEEDED
        assert len(await orch.list_runs()) == 1
        with pytest.raises(UnknownFlowError):
            await orch.trigger("ghost")
        with pytest.raises(UnknownFlowError):
            await orch.set_enabled("ghost", True)


async def test_idempotency_key_returns_the_existing_run(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(chain("f", 2))
    async with orch:
        ids = await asyncio.gather(*(orch.trigger("f", {"n": i}, idempotency_key="order-17") for i in range(10)))
        assert len(set(ids)) == 1
        run = await orch.wait(ids[0], timeout=10)
        assert run.status is RunStatus.SUCCEEDED and run.idempotency_key == "order-17"
        assert len(await orch.list_runs()) == 1


async def test_a_run_keeps_the_manifest_it_started_on(make_orch: OrchFactory) -> None:
    orch = make_orch()
    gate = asyncio.Event()

    @orch.handler("Wait")
    async def wait(inputs: Any) -> None:
        await gate.wait()

    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {"a": Step("Wait"), "b": Step("Echo", run_after={"a": []})}))
    async with orch:
        rid = await orch.trigger("f")
        await asyncio.sleep(0.05)
        orch.register(Flow("f", {"a": Step("Wait"), "x": Step("Echo", run_after={"a": []}), "y": Step("Echo", run_after={"x": []})}))
        gate.set()
        run = await orch.wait(rid, timeout=10)
        assert run.status is RunStatus.SUCCEEDED
        assert list(await steps_of(orch, rid)) == ["a", "b"]
        new = await orch.run("f", timeout=10)
        assert list(await steps_of(orch, new.run_id)) == ["a", "x", "y"]
        assert new.manifest_id != run.manifest_id


async def test_retry_failed_step_runs_it_and_what_follows(make_orch: OrchFactory) -> None:
    orch = make_orch()
    calls: dict[str, int] = {}

    @orch.handler("Count")
    async def count(inputs: Any, ctx: StepContext) -> dict[str, int]:
        calls[ctx.step_key] = calls.get(ctx.step_key, 0) + 1
        if ctx.step_key == "flaky" and calls["flaky"] == 1:
            raise ConnectionError("try later")
        return {"n": calls[ctx.step_key]}

    orch.register(Flow("f", {
        "first": Step("Count"),
        "flaky": Step("Count", run_after={"first": ["Succeeded"]}),
        "last": Step("Count", run_after={"flaky": ["Succeeded"]}),
    }))
    async with orch:
        run = await orch.run("f", timeout=10)
        assert run.status is RunStatus.FAILED
        with pytest.raises(InvalidOperationError, match="only a Failed"):
            await orch.retry_step(run.run_id, "first")
        await orch.retry_step(run.run_id, "flaky")
        again = await orch.wait(run.run_id, timeout=10)
        assert again.status is RunStatus.SUCCEEDED
        assert calls == {"first": 1, "flaky": 2, "last": 1}
        steps = await steps_of(orch, run.run_id)
        assert steps["first"].output == {"n": 1} and steps["last"].output == {"n": 1}
        with pytest.raises(UnknownRunError):
            await orch.retry_step("ghost", "flaky")


async def test_cancel_stops_the_run_and_wins_over_a_finishing_step(make_orch: OrchFactory) -> None:
    orch = make_orch()
    started = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    @orch.handler("Slow")
    async def slow(inputs: Any, ctx: StepContext) -> str:
        ran.append(ctx.step_key)
        started.set()
        await release.wait()
        return "late"

    orch.register(Flow("f", {"a": Step("Slow"), "b": Step("Slow", run_after={"a": []})}))
    async with orch:
        rid = await orch.trigger("f")
        await started.wait()
        await orch.cancel_run(rid)
        release.set()
        await asyncio.sleep(0.1)
        run = await orch.wait(rid, timeout=5)
        assert run.status is RunStatus.CANCELLED
        assert {k: s.status for k, s in (await steps_of(orch, rid)).items()} == {"a": S.CANCELLED, "b": S.CANCELLED}
        assert ran == ["a"]
        with pytest.raises(InvalidOperationError, match="already Cancelled"):
            await orch.cancel_run(rid)


async def test_rerun_starts_a_new_run_with_the_same_trigger_data(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {"s": Step("Echo", inputs="@triggerBody()")}))
    async with orch:
        first = await orch.run("f", {"k": [1, "@notcode"]}, headers={"X-Trace": "t"}, timeout=10)
        new_id = await orch.rerun(first.run_id)
        second = await orch.wait(new_id, timeout=10)
        assert new_id != first.run_id
        assert second.trigger_body == {"k": [1, "@notcode"]} and second.trigger_headers == {"X-Trace": "t"}
        assert (await steps_of(orch, new_id))["s"].output == {"k": [1, "@notcode"]}


async def test_concurrency_limit_is_respected(make_orch: OrchFactory) -> None:
    orch = make_orch(concurrency=3)
    now = 0
    peak = 0

    @orch.handler("Busy")
    async def busy(inputs: Any) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.02)
        now -= 1

    orch.register(Flow("fan", {"root": Step("Busy"), **{f"p{i}": Step("Busy", run_after={"root": []}) for i in range(12)}}))
    async with orch:
        run = await orch.run("fan", timeout=10)
    assert run.status is RunStatus.SUCCEEDED and peak == 3


async def test_graceful_shutdown_lets_running_steps_finish(make_orch: OrchFactory) -> None:
    orch = make_orch(shutdown_timeout=5)
    started = asyncio.Event()

    @orch.handler("Slow")
    async def slow(inputs: Any) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    orch.register(Flow("f", {"a": Step("Slow"), "b": Step("Slow", run_after={"a": []})}))
    await orch.start()
    rid = await orch.trigger("f")
    await started.wait()
    await orch.stop()
    await orch.store.open()
    try:
        steps = {s.step_key: s for s in await orch.store.get_steps(rid)}
        assert steps["a"].status is S.SUCCEEDED and steps["a"].output == "finished"
        assert steps["b"].status is S.PENDING and steps["b"].queued  # recorded as queued, not lost
    finally:
        await orch.store.close()


async def test_orchestrator_requires_start_and_explicit_backends(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(chain("f", 1))
    with pytest.raises(ConfigurationError, match="not started"):
        await orch.trigger("f")
    with pytest.raises(ConfigurationError, match="explicit store and runtime"):
        Orchestrator(store=None, runtime="inprocess")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown runtime"):
        Orchestrator(store="memory://", runtime="threads")
    with pytest.raises(ConfigurationError, match="unknown store URL scheme"):
        Orchestrator(store="mongodb://x", runtime="inprocess")
    with pytest.raises(ConfigurationError, match="already registered"):
        orch.add_handler("Echo", lambda inputs: None)


async def test_trigger_body_must_be_json(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(chain("f", 1))
    async with orch:
        with pytest.raises(InvalidOperationError, match="not JSON-serialisable"):
            await orch.trigger("f", {"x": {1, 2}})
        with pytest.raises(InvalidOperationError, match="has no trigger 'nightly'"):
            await orch.trigger("f", trigger="nightly")
        assert await orch.list_runs() == []


async def test_cron_trigger_fires(make_orch: OrchFactory) -> None:
    from floworchestrator import Cron

    orch = make_orch(cron=True)
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("tick", {"s": Step("Echo", inputs="@triggerBody()?.scheduled_at")}, triggers={"every_second": Cron("* * * * * *")}))
    async with orch:
        for _ in range(40):
            runs = await orch.list_runs(flow_id="tick")
            if runs and runs[-1].status is RunStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.1)
        run = runs[-1]
        assert run.trigger_key == "every_second" and run.trigger_body["scheduled_at"].endswith("Z")
        assert run.status is RunStatus.SUCCEEDED


def test_json_manifest_has_no_secrets(tmp_path: Path) -> None:
    from floworchestrator import Webhook

    flow = Flow("hook", {"s": Step("Echo")}, triggers={"in": Webhook("orders", secret="s3cret")})
    assert "s3cret" not in json.dumps(flow.to_manifest())


async def test_concurrent_completions_share_a_commit(store_kind: str, tmp_path: Path) -> None:
    from ..conftest import make_store

    store = make_store(store_kind, tmp_path)
    sizes: list[int] = []
    real_apply = store.apply

    async def counting_apply(ops: Any) -> Any:
        sizes.append(len(ops))
        return await real_apply(ops)

    store.apply = counting_apply  # type: ignore[method-assign]
    orch = Orchestrator(store=store, runtime="inprocess", cron=False)
    orch.add_handler("Echo", lambda inputs: None)

    @orch.handler("Async")
    async def noop(inputs: Any) -> None:
        return None

    orch.register(Flow("fan", {"root": Step("Async"), **{f"p{i}": Step("Async", run_after={"root": []}) for i in range(50)}}))
    async with orch:
        run = await orch.run("fan", timeout=10)
    assert run.status is RunStatus.SUCCEEDED
    # ~100 claims and completions (one claim rides in the root's completion) went through a handful of transactions.
    assert sum(sizes) >= 100 and max(sizes) > 10 and len(sizes) < 60


async def test_step_cut_off_by_shutdown_is_given_back_and_runs_on_next_start(store_kind: str, tmp_path: Path) -> None:
    from ..conftest import make_store

    store = make_store(store_kind, tmp_path)
    calls: list[int] = []
    started = asyncio.Event()

    def build() -> Orchestrator:
        orch = Orchestrator(store=store, runtime="inprocess", cron=False, shutdown_timeout=0.1)

        @orch.handler("Slow")
        async def slow(inputs: Any, ctx: StepContext) -> str:
            calls.append(ctx.attempt)
            started.set()
            if ctx.attempt == 1:
                await asyncio.sleep(30)
            return "second time lucky"

        orch.register(Flow("f", {"a": Step("Slow")}))
        return orch

    first = build()
    await first.start()
    rid = await first.trigger("f")
    await started.wait()
    await first.stop()  # the handler is still sleeping: it is cancelled after 0.1 s
    second = build()
    async with second:
        run = await second.wait(rid, timeout=5)  # no lease to wait out
        attempts = await second.get_attempts(rid)
    assert run.status is RunStatus.SUCCEEDED and calls == [1, 2]
    assert [(a.attempt, a.status) for a in attempts] == [(1, S.CANCELLED), (2, S.SUCCEEDED)]
    assert "shut down before the step finished" in (attempts[0].error or "")
