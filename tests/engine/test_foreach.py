"""ForEach: children per item, concurrency, results, failures; on every store."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from floworchestrator import Flow, FlowValidationError, ForEach, Orchestrator, RunStatus, Step, StepContext, StepStatus

from ..conftest import OrchFactory, make_store
from .test_invariants import Duplicating

S = StepStatus


async def steps_of(orch: Orchestrator, run_id: str) -> dict[str, Any]:
    return {s.step_key: s for s in await orch.get_steps(run_id)}


async def test_concurrency_3_over_10_items_never_runs_more_than_3(make_orch: OrchFactory) -> None:
    orch = make_orch()
    active = 0
    peak = 0
    order: list[int] = []

    @orch.handler("Work")
    async def work(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        order.append(inputs["loop_index"])
        await asyncio.sleep(0.02)
        active -= 1
        return {"doubled": inputs["loop_item"] * 2, "key": ctx.step_key}

    orch.add_handler("Sum", lambda inputs: sum(r["output"]["doubled"] for r in inputs))
    orch.register(Flow("loop", {
        "each": ForEach("@triggerBody()?.numbers", {"work": Step("Work")}, concurrency=3),
        "total": Step("Sum", inputs="@steps('each').output", run_after={"each": ["Succeeded"]}),
    }))
    async with orch:
        run = await orch.run("loop", {"numbers": list(range(10))}, timeout=20)
        steps = await steps_of(orch, run.run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert peak == 3 and sorted(order) == list(range(10))
    each = steps["each"]
    assert each.status is S.SUCCEEDED and each.inputs == list(range(10))
    assert [r["index"] for r in each.output] == list(range(10))
    assert each.output[4] == {"index": 4, "status": "Succeeded", "output": {"doubled": 8, "key": "each.4.work"}}
    assert steps["total"].output == 90
    assert steps["each.7.work"].status is S.SUCCEEDED and steps["each.7.work"].inputs == {"loop_item": 7, "loop_index": 7}


async def test_children_with_their_own_graph_and_sequential_items(make_orch: OrchFactory) -> None:
    orch = make_orch()
    seen: list[str] = []

    @orch.handler("Fetch")
    async def fetch(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        seen.append(ctx.step_key)
        return {"name": inputs["loop_item"]["name"], "prefix": inputs["prefix"]}

    @orch.handler("Greet")
    async def greet(inputs: dict[str, Any], ctx: StepContext) -> str:
        seen.append(ctx.step_key)
        return f"{inputs['prefix']} {inputs['name']} #{inputs['loop_index']}"

    orch.register(Flow("people", {
        "start": Step("Fetch", inputs={"prefix": "hi", "loop_item": {"name": "start"}}),
        "each": ForEach(
            [{"name": "ann"}, {"name": "bob"}],
            {
                "fetch": Step("Fetch", inputs={"prefix": "@steps('start').output.prefix"}),
                "greet": Step("Greet", inputs={"name": "@steps('fetch').output.name", "prefix": "@steps('fetch').output.prefix"},
                              run_after={"fetch": ["Succeeded"]}),
            },
            concurrency=1,
            run_after={"start": ["Succeeded"]},
        ),
    }))
    async with orch:
        run = await orch.run("people", timeout=20)
        each = (await steps_of(orch, run.run_id))["each"]
    assert run.status is RunStatus.SUCCEEDED
    assert seen == ["start", "each.0.fetch", "each.0.greet", "each.1.fetch", "each.1.greet"]
    assert [r["output"] for r in each.output] == ["hi ann #0", "hi bob #1"]


@pytest.mark.parametrize("items", [None, []])
async def test_null_or_empty_succeeds_with_no_iterations(make_orch: OrchFactory, items: Any) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {
        "each": ForEach("@triggerBody()?.items", {"x": Step("Echo")}),
        "after": Step("Echo", inputs="@steps('each').output", run_after={"each": ["Succeeded"]}),
    }))
    async with orch:
        run = await orch.run("f", {"items": items}, timeout=10)
        steps = await steps_of(orch, run.run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert steps["each"].status is S.SUCCEEDED and steps["each"].output == [] and steps["after"].output == []
    assert list(steps) == ["each", "after"]


async def test_a_failed_item_fails_the_loop_unless_its_children_handle_it(make_orch: OrchFactory) -> None:
    orch = make_orch()

    @orch.handler("Check")
    async def check(inputs: dict[str, Any]) -> int:
        if inputs["loop_item"] < 0:
            raise ValueError(f"negative: {inputs['loop_item']}")
        return int(inputs["loop_item"])

    orch.add_handler("Note", lambda inputs: "handled")
    orch.register(
        Flow("strict", {"each": ForEach("@triggerBody()", {"check": Step("Check")}, concurrency=2),
                        "after": Step("Note", run_after={"each": ["Succeeded"]})}),
        Flow("lenient", {"each": ForEach("@triggerBody()", {
            "check": Step("Check"),
            "note": Step("Note", run_after={"check": ["Failed"]}),
        }, concurrency=2)}),
    )
    async with orch:
        strict = await orch.run("strict", [1, -2, 3], timeout=10)
        lenient = await orch.run("lenient", [1, -2, 3], timeout=10)
        s = await steps_of(orch, strict.run_id)
        ln = await steps_of(orch, lenient.run_id)
    assert strict.status is RunStatus.FAILED
    assert s["each"].status is S.FAILED and s["each"].error == "1 of 3 items failed"
    assert [r["status"] for r in s["each"].output] == ["Succeeded", "Failed", "Succeeded"]
    assert s["each"].output[1]["error"] == "ValueError: negative: -2"
    assert s["each.2.check"].status is S.SUCCEEDED  # the other items still ran
    assert s["after"].status is S.SKIPPED
    assert lenient.status is RunStatus.SUCCEEDED and ln["each"].status is S.SUCCEEDED
    assert ln["each"].output[1] == {"index": 1, "status": "Succeeded", "output": "handled"}  # the output of the leaf child


async def test_for_each_that_is_not_a_list_fails_clearly(make_orch: OrchFactory) -> None:
    orch = make_orch()
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {"each": ForEach("@triggerBody()", {"x": Step("Echo")})}))
    async with orch:
        run = await orch.run("f", {"not": "a list"}, timeout=10)
        each = (await steps_of(orch, run.run_id))["each"]
    assert run.status is RunStatus.FAILED and each.error == "for_each must give a list, not dict"


async def test_spawned_steps_go_through_the_ledger_and_claim(store_kind: str, tmp_path: Path) -> None:
    orch = Orchestrator(store=make_store(store_kind, tmp_path), runtime=Duplicating(20), cron=False)
    calls: Counter[str] = Counter()

    @orch.handler("Count")
    async def count(inputs: Any, ctx: StepContext) -> None:
        calls[ctx.step_key] += 1
        await asyncio.sleep(0.005)

    orch.register(Flow("f", {"each": ForEach(list(range(8)), {"a": Step("Count"), "b": Step("Count", run_after={"a": []})},
                                             concurrency=4)}))
    async with orch:
        run = await orch.run("f", timeout=20)
    assert run.status is RunStatus.SUCCEEDED
    assert len(calls) == 16 and set(calls.values()) == {1}


async def test_cancel_reaches_the_children(make_orch: OrchFactory) -> None:
    orch = make_orch()
    started = asyncio.Event()

    @orch.handler("Block")
    async def block(inputs: Any) -> None:
        started.set()
        await asyncio.sleep(5)

    orch.register(Flow("f", {"each": ForEach([1, 2, 3], {"x": Step("Block")})}))
    async with orch:
        rid = await orch.trigger("f")
        await started.wait()
        await orch.cancel_run(rid)
        steps = await steps_of(orch, rid)
    assert {s.status for s in steps.values()} == {S.CANCELLED}


async def test_retrying_a_failed_for_each_runs_its_items_again(make_orch: OrchFactory) -> None:
    orch = make_orch()
    failures = {"left": 1}

    @orch.handler("Flaky")
    async def flaky(inputs: dict[str, Any]) -> int:
        if inputs["loop_item"] == 2 and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("once")
        return int(inputs["loop_item"])

    orch.register(Flow("f", {"each": ForEach([1, 2, 3], {"x": Step("Flaky")}, concurrency=3)}))
    async with orch:
        run = await orch.run("f", timeout=10)
        assert run.status is RunStatus.FAILED
        with pytest.raises(Exception, match="inside a ForEach"):
            await orch.retry_step(run.run_id, "each.1.x")
        await orch.retry_step(run.run_id, "each")
        again = await orch.wait(run.run_id, timeout=10)
        each = (await steps_of(orch, run.run_id))["each"]
    assert again.status is RunStatus.SUCCEEDED
    assert [r["output"] for r in each.output] == [1, 2, 3]


def test_for_each_validation_lists_every_problem() -> None:
    orch = Orchestrator(store="memory://", runtime="inprocess")
    orch.add_handler("Echo", lambda inputs: inputs)
    with pytest.raises(FlowValidationError) as err:
        orch.register(Flow("bad", {
            "a": Step("Echo"),
            "each": ForEach("@steps('later').output", {
                "x": Step("Nope"),
                "y": Step("Echo", run_after={"ghost": []}),
                "z": ForEach([1], {"q": Step("Echo")}),
            }, concurrency=0, run_after={"a": []}),
            "later": Step("Echo", run_after={"each": []}),
            "lit": ForEach("not an expression", {"x": Step("Echo")}),
        }))
    text = str(err.value)
    for fragment in [
        "step 'each', concurrency: concurrency must be a whole number >= 1",
        "for_each reads step 'later', which does not run before this step",
        "step 'each.x', type: no handler is registered for type 'Nope'",
        "step 'each.y', run_after: run_after names unknown step 'ghost'",
        "step 'each.z', type: a ForEach inside a ForEach is not supported",
        "step 'lit', for_each: for_each must be a list or an @ expression",
    ]:
        assert fragment in text, (fragment, text)
