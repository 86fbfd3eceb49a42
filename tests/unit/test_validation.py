"""Registration checks (DESIGN §2, §4): every problem of every flow, reported at once."""

from __future__ import annotations

from typing import Any

import pytest

from floworchestrator import (
    Cron,
    Flow,
    FlowOrchestratorError,
    FlowValidationError,
    Manual,
    Orchestrator,
    Problem,
    Step,
    StepStatus,
    WaitForSignal,
    Webhook,
)
from floworchestrator.flow import validate_flows

TYPES = ["T", "Other"]


@pytest.fixture
def orch() -> Orchestrator:
    o = Orchestrator(store="memory://", runtime="inprocess")

    @o.handler("T")
    async def t(inputs: Any, ctx: Any) -> Any:
        return inputs

    @o.handler("Other")
    def other(inputs: Any, ctx: Any) -> Any:
        return None

    return o


def flow(fid: str = "f", steps: dict[str, Any] | None = None, **kwargs: Any) -> Flow:
    return Flow(id=fid, steps=steps if steps is not None else {"a": Step("T")}, **kwargs)


def problems_of(*flows: Flow, others: dict[str, str] | None = None) -> list[Problem]:
    return validate_flows(list(flows), TYPES, others)


def where(problems: list[Problem]) -> set[tuple[str, str | None, str | None]]:
    return {(p.flow_id, p.step, p.field) for p in problems}


def find(problems: list[Problem], flow_id: str, step: str | None, field: str | None, text: str) -> Problem:
    for p in problems:
        if (p.flow_id, p.step, p.field) == (flow_id, step, field) and text in p.message:
            return p
    raise AssertionError(f"no problem ({flow_id!r}, {step!r}, {field!r}, {text!r}) in:\n" + "\n".join(map(repr, problems)))


# --- valid flows ----------------------------------------------------------------------

VALID_FLOWS: list[Flow] = [
    flow(),
    flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": []})}),
    flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": ["Succeeded", "failed", StepStatus.TIMED_OUT]})}),
    flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": ("Skipped",)})}),  # any sequence of statuses
    flow(
        steps={
            "a": Step("T", inputs={"id": "@triggerBody()?.id", "h": "@triggerHeaders()['X-Id']"}),
            "b": Step("T", run_after={"a": ["Succeeded"]}, inputs={"x": "@steps('a').output.x"}),
            "c": Step("Other", run_after={"b": ["Failed"]}, inputs=["@steps('a').status", "@steps('b').error", "@@lit"]),
        }
    ),
    flow(triggers={"m": Manual(), "c": Cron("0 2 * * *"), "p": Cron("*/5 * * * *", timezone="Europe/Paris")}),
    flow(triggers={"c": Cron("@daily", timezone="UTC"), "w": Webhook("orders-in_v1.2", secret="s")}),
    flow(triggers={}),  # no trigger at all: only started from code
    flow(steps={"x": Step("T"), "y": Step("T"), "j": Step("T", run_after={"x": [], "y": ["Succeeded"]})}),
    # Anything but '/' and dot segments fits in a URL path segment (percent-encoded).
    flow("Bestellungen über 100 € ?#%", steps={"prüfen & senden": Step("T"), "w": WaitForSignal("ok? ja!")},
         triggers={"jeden Tag %": Cron("0 2 * * *"), "w": Webhook("ü.v2")}),
]


@pytest.mark.parametrize("f", VALID_FLOWS)
def test_valid_flows_have_no_problems(f: Flow, orch: Orchestrator) -> None:
    assert problems_of(f) == []
    orch.register(f)
    assert orch.flows[f.id] is f


# --- one problem at a time -------------------------------------------------------------

SINGLE_PROBLEMS: list[tuple[str, Flow, tuple[str | None, str | None, str]]] = [
    # (id, flow, (step, field, message text)); the flow id is always "f"
    (
        "cycle",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": [], "c": []}), "c": Step("T", run_after={"b": []})}),
        (None, "run_after", "the steps form a cycle: b, c"),
    ),
    (
        "unknown-predecessor",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"ghost": ["Succeeded"]})}),
        ("b", "run_after", "run_after names unknown step 'ghost'"),
    ),
    (
        "self-predecessor",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"b": []})}),
        ("b", "run_after", "a step cannot run after itself"),
    ),
    (
        "unknown-handler-type",
        flow(steps={"a": Step("T"), "b": Step("Missing", run_after={"a": []})}),
        ("b", "type", "no handler is registered for type 'Missing'"),
    ),
    (
        "handler-type-is-case-sensitive",
        flow(steps={"a": Step("t")}),
        ("a", "type", "no handler is registered for type 't'"),
    ),
    (
        "malformed-expression",
        flow(steps={"a": Step("T", inputs={"x": "@triggerBody("})}),
        ("a", "inputs.x", "expected ')'"),
    ),
    (
        "malformed-expression-deep",
        flow(steps={"a": Step("T", inputs={"x": [1, {"y": "@nope()"}]})}),
        ("a", "inputs.x[1].y", "unknown function 'nope'"),
    ),
    (
        "malformed-expression-whole-inputs",
        flow(steps={"a": Step("T", inputs="@steps('a')")}),
        ("a", "inputs", "must be followed by .output, .status or .error"),
    ),
    (
        "malformed-cron",
        flow(triggers={"nightly": Cron("0 25 * * *")}),
        (None, "triggers.nightly", "invalid cron expression '0 25 * * *'"),
    ),
    (
        "cron-words",
        flow(triggers={"nightly": Cron("every day at 2")}),
        (None, "triggers.nightly", "invalid cron expression"),
    ),
    (
        "cron-too-few-fields",
        flow(triggers={"c": Cron("* * *")}),
        (None, "triggers.c", "invalid cron expression '* * *'"),
    ),
    (
        "cron-empty",
        flow(triggers={"c": Cron("")}),
        (None, "triggers.c", "invalid cron expression ''"),
    ),
    (
        "unknown-timezone",
        flow(triggers={"c": Cron("0 2 * * *", timezone="Mars/Olympus_Mons")}),
        (None, "triggers.c", "unknown time zone 'Mars/Olympus_Mons'"),
    ),
    (
        "empty-timezone",
        flow(triggers={"c": Cron("0 2 * * *", timezone="")}),
        (None, "triggers.c", "unknown time zone ''"),
    ),
    (
        "bad-webhook-slug",
        flow(triggers={"w": Webhook("has space")}),
        (None, "triggers.w", "webhook slug 'has space'"),
    ),
    (
        "empty-webhook-slug",
        flow(triggers={"w": Webhook("")}),
        (None, "triggers.w", "webhook slug ''"),
    ),
    (
        "not-a-trigger",
        flow(triggers={"x": "manual"}),  # type: ignore[dict-item]
        (None, "triggers.x", "str is not a trigger"),
    ),
    (
        "no-steps",
        flow(steps={}),
        (None, "steps", "a flow needs at least one step"),
    ),
    (
        "not-a-step",
        flow(steps={"a": Step("T"), "b": {"type": "T"}}),
        ("b", None, "expected a Step, got dict"),
    ),
    (
        "dotted-step-key",
        flow(steps={"a.b": Step("T")}),
        ("a.b", None, "contain no '.'"),
    ),
    (
        "empty-step-key",
        flow(steps={"": Step("T")}),
        ("", None, "a step key must be non-empty"),
    ),
    (
        "inputs-read-a-later-step",
        flow(steps={"a": Step("T", inputs="@steps('b').output"), "b": Step("T", run_after={"a": []})}),
        ("a", "inputs", "inputs read step 'b', which does not run before this step"),
    ),
    (
        "inputs-read-a-parallel-step",
        flow(steps={"a": Step("T"), "b": Step("T"), "c": Step("T", run_after={"a": []}, inputs={"x": "@steps('b').status"})}),
        ("c", "inputs", "inputs read step 'b', which does not run before this step (add it to run_after)"),
    ),
    (
        "inputs-read-itself",
        flow(steps={"a": Step("T", inputs={"me": "@steps('a').output"})}),
        ("a", "inputs", "inputs read step 'a', which does not run before this step"),
    ),
    (
        "inputs-read-unknown-step",
        flow(steps={"a": Step("T", inputs=["@steps('ghost').error"])}),
        ("a", "inputs", "inputs read unknown step 'ghost'"),
    ),
    (
        "bad-status-name",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": ["Succeded"]})}),
        ("b", "run_after", "unknown status 'Succeded' in run_after['a']"),
    ),
    (
        "bad-status-among-good",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": ["Succeeded", "Done"]})}),
        ("b", "run_after", "unknown status 'Done'"),
    ),
    (
        "non-final-status-running",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": ["Running"]})}),
        ("b", "run_after", "may only list final statuses, not Running"),
    ),
    (
        "non-final-status-pending",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": [StepStatus.PENDING]})}),
        ("b", "run_after", "may only list final statuses, not Pending"),
    ),
    (
        "string-instead-of-list",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": "Succeeded"})}),
        ("b", "run_after", "run_after['a'] must be a list of statuses, not a string"),
    ),
    (
        "none-instead-of-list",
        flow(steps={"a": Step("T"), "b": Step("T", run_after={"a": None})}),  # type: ignore[dict-item]
        ("b", "run_after", "run_after['a'] must be a list of statuses, not NoneType"),
    ),
    (
        "run-after-is-a-list",
        flow(steps={"a": Step("T"), "b": Step("T", run_after=["a"])}),  # type: ignore[arg-type]
        ("b", "run_after", "run_after must map step keys to lists of statuses"),
    ),
]


@pytest.mark.parametrize(("f", "expected"), [pytest.param(c[1], c[2], id=c[0]) for c in SINGLE_PROBLEMS])
def test_single_problem(f: Flow, expected: tuple[str | None, str | None, str], orch: Orchestrator) -> None:
    step, fld, text = expected
    problems = problems_of(f)
    find(problems, "f", step, fld, text)
    with pytest.raises(FlowValidationError) as info:
        orch.register(f)
    err = info.value
    assert isinstance(err, FlowOrchestratorError)
    find(err.problems, "f", step, fld, text)
    assert err.problems == problems
    # the message names the flow, the step and the field of each problem
    line = next(line for line in str(err).splitlines() if text in line)
    assert "flow 'f'" in line
    if step is not None:
        assert f"step {step!r}" in line
    if fld is not None:
        assert fld in line
    assert "f" not in orch.flows  # nothing was registered


# --- no entry step ---------------------------------------------------------------------


def test_no_entry_step_when_every_step_runs_after_another() -> None:
    f = flow(steps={"a": Step("T", run_after={"b": []}), "b": Step("T", run_after={"a": []})})
    problems = problems_of(f)
    find(problems, "f", None, "steps", "no entry step")
    find(problems, "f", None, "run_after", "the steps form a cycle: a, b")


def test_no_entry_step_when_run_after_only_names_unknown_steps() -> None:
    f = flow(steps={"a": Step("T", run_after={"ghost": []}), "b": Step("T", run_after={"a": ["Succeeded"]})})
    problems = problems_of(f)
    find(problems, "f", None, "steps", "no entry step")
    find(problems, "f", "a", "run_after", "unknown step 'ghost'")


def test_no_entry_step_with_only_a_self_loop() -> None:
    problems = problems_of(flow(steps={"a": Step("T", run_after={"a": []})}))
    find(problems, "f", None, "steps", "no entry step")
    find(problems, "f", "a", "run_after", "cannot run after itself")


# --- cycles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "named", "not_named"),
    [
        pytest.param(
            {"a": Step("T"), "b": Step("T", run_after={"a": [], "c": []}), "c": Step("T", run_after={"b": []})},
            ["b", "c"],
            ["a"],
            id="two",
        ),
        pytest.param(
            {
                "start": Step("T"),
                "x": Step("T", run_after={"start": [], "z": []}),
                "y": Step("T", run_after={"x": []}),
                "z": Step("T", run_after={"y": []}),
                "tail": Step("T", run_after={"z": []}),
            },
            ["x", "y", "z"],
            ["start", "tail"],
            id="three-with-tail",
        ),
    ],
)
def test_cycle_names_its_steps(steps: dict[str, Step], named: list[str], not_named: list[str]) -> None:
    problems = problems_of(flow(steps=steps))
    cycle = find(problems, "f", None, "run_after", "cycle")
    listed = {s.strip() for s in cycle.message.split(":", 1)[1].split(",")}
    assert listed == set(named)
    assert not listed & set(not_named)


# --- every problem at once -------------------------------------------------------------------


def test_every_problem_of_a_flow_is_reported_at_once(orch: Orchestrator) -> None:
    f = Flow(
        id="orders",
        triggers={"nightly": Cron("99 * * * *"), "tz": Cron("0 2 * * *", timezone="Nowhere/City"), "hook": Webhook("a b")},
        steps={
            "fetch": Step("FetchOrder", inputs={"id": "@triggerBody()?.orderId", "bad": "@triggerBody()["}),
            "charge": Step("T", run_after={"fetch": ["Succeeded"], "ghost": []}, inputs={"t": "@steps('ship').output"}),
            "ship": Step("T", run_after={"charge": "Succeeded"}),
            "alert": Step("T", run_after={"charge": ["Failled"]}),
            "loop1": Step("T", run_after={"loop2": []}),
            "loop2": Step("T", run_after={"loop1": []}),
        },
    )
    expected = {
        ("orders", None, "triggers.nightly"),
        ("orders", None, "triggers.tz"),
        ("orders", None, "triggers.hook"),
        ("orders", "fetch", "type"),
        ("orders", "fetch", "inputs.bad"),
        ("orders", "charge", "run_after"),
        ("orders", "charge", "inputs"),  # reads "ship", which runs after it; reported despite the cycle
        ("orders", "ship", "run_after"),
        ("orders", "alert", "run_after"),
        ("orders", None, "run_after"),  # the cycle
    }
    problems = problems_of(f)
    assert where(problems) == expected
    with pytest.raises(FlowValidationError) as info:
        orch.register(f)
    assert where(info.value.problems) == expected
    assert f"{len(info.value.problems)} problems in flow definitions" in str(info.value)
    for text in ["FetchOrder", "'ghost'", "'99 * * * *'", "Nowhere/City", "'Failled'", "not a string", "loop1, loop2", "'a b'"]:
        assert text in str(info.value)


def test_inputs_reading_a_later_step_are_reported_alongside_other_problems() -> None:
    f = flow(
        steps={
            "a": Step("T", inputs="@steps('b').output"),
            "b": Step("Nope", run_after={"a": ["Bogus"]}),
        }
    )
    problems = problems_of(f)
    assert where(problems) == {("f", "a", "inputs"), ("f", "b", "type"), ("f", "b", "run_after")}


def test_inputs_are_checked_even_when_the_flow_has_a_cycle_or_a_bad_step() -> None:
    f = flow(
        steps={
            "a": Step("T"),
            "x": Step("T", run_after={"a": [], "y": []}),
            "y": Step("T", run_after={"x": []}),
            "reader": Step("T", run_after={"a": []}, inputs={"v": "@steps('x').output", "w": "@steps('nope').output"}),
            "junk": "not a step",
        }
    )
    problems = problems_of(f)
    find(problems, "f", "junk", None, "expected a Step, got str")
    find(problems, "f", "reader", "inputs", "inputs read step 'x', which does not run before this step")
    find(problems, "f", "reader", "inputs", "inputs read unknown step 'nope'")
    g = flow(steps={**f.steps, "junk": Step("T")})
    find(problems_of(g), "f", None, "run_after", "the steps form a cycle: x, y")
    find(problems_of(g), "f", "reader", "inputs", "inputs read step 'x'")


def test_every_flow_is_checked_in_one_register_call(orch: Orchestrator) -> None:
    good = flow("good")
    bad1 = flow("bad1", steps={"a": Step("Nope")})
    bad2 = flow("bad2", triggers={"c": Cron("nope")})
    with pytest.raises(FlowValidationError) as info:
        orch.register(good, bad1, bad2)
    assert where(info.value.problems) == {("bad1", "a", "type"), ("bad2", None, "triggers.c")}
    assert orch.flows == {}  # all or nothing
    orch.register(good)
    assert set(orch.flows) == {"good"}


def test_handler_registered_later_makes_the_flow_valid(orch: Orchestrator) -> None:
    f = flow(steps={"a": Step("Late")})
    with pytest.raises(FlowValidationError, match="no handler is registered for type 'Late'"):
        orch.register(f)

    @orch.handler("Late")
    async def late(inputs: Any, ctx: Any) -> None:
        return None

    orch.register(f)
    assert "f" in orch.flows


# --- flow ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fid", ["", "   "])
def test_empty_flow_id(fid: str, orch: Orchestrator) -> None:
    problems = problems_of(flow(fid))
    find(problems, fid, None, "id", "the flow id must be a non-empty string")
    with pytest.raises(FlowValidationError, match="flow id must be a non-empty string"):
        orch.register(flow(fid))


def test_non_string_flow_id() -> None:
    find(problems_of(flow(7)), "7", None, "id", "non-empty string")  # type: ignore[arg-type]


@pytest.mark.parametrize("fid", ["a/b", "/", "orders/", ".", "..", "bad\ud800"])
def test_a_flow_id_must_fit_in_one_url_path_segment(fid: str, orch: Orchestrator) -> None:
    """/api/flows/a%2Fb is routed as /api/flows/a/b (404), and clients resolve /api/flows/.. to /api/."""
    problems = problems_of(flow(fid))
    p = find(problems, fid, None, "id", f"the flow id {fid!r} ")
    assert p.message.endswith("it must fit in one URL path segment (/api/flows/{flow_id})"), p.message
    assert len(problems) == 1
    with pytest.raises(FlowValidationError, match="one URL path segment"):
        orch.register(flow(fid))
    assert fid not in orch.flows


@pytest.mark.parametrize(
    ("f", "step", "field", "text"),
    [
        pytest.param(flow(steps={"a/b": Step("T")}), "a/b", None, "a step key 'a/b' contains '/': it must fit in one URL path segment "
                     "(/api/runs/{run_id}/steps/{step_key}/retry)", id="step-key"),
        pytest.param(flow(steps={"loop": Step("ForEach", for_each=[1], steps={"x/y": Step("T")})}), "loop.x/y", None,
                     "a step key 'x/y' contains '/'", id="foreach-child-key"),
        pytest.param(flow(triggers={"daily/2am": Cron("0 2 * * *")}), None, "triggers.daily/2am",
                     "the name of a cron trigger 'daily/2am' contains '/': it must fit in one URL path segment "
                     "(/api/schedules/{flow_id}/{trigger})", id="cron-trigger-name"),
        pytest.param(flow(triggers={"c": Cron("0 2 * * *"), "..": Cron("0 3 * * *")}), None, "triggers...",
                     "the name of a cron trigger '..' is a dot segment", id="cron-trigger-dots"),
        pytest.param(flow(triggers={"w": Webhook("..")}), None, "triggers.w", "webhook slug '..' must be", id="webhook-dots"),
        pytest.param(flow(triggers={"w": Webhook("a/b")}), None, "triggers.w", "webhook slug 'a/b' must be", id="webhook-slash"),
        pytest.param(flow(steps={"w": WaitForSignal("yes/no")}), "w", "inputs",
                     "the signal name 'yes/no' contains '/': it must fit in one URL path segment (/api/runs/{run_id}/signals/{name})",
                     id="signal-name"),
    ],
)
def test_names_in_url_paths_must_fit_in_one_segment(f: Flow, step: str | None, field: str | None, text: str,
                                                    orch: Orchestrator) -> None:
    problems = problems_of(f)
    find(problems, "f", step, field, text)
    assert len(problems) == 1, problems
    with pytest.raises(FlowValidationError, match="must"):
        orch.register(f)


def test_names_in_url_paths_are_reported_with_the_other_problems(orch: Orchestrator) -> None:
    f = flow("a/b", steps={"x/y": Step("Nope")}, triggers={"c/d": Cron("not cron")})
    problems = problems_of(f)
    assert sorted((p.step or "", p.field or "") for p in problems) == [
        ("", "id"), ("", "triggers.c/d"), ("", "triggers.c/d"), ("x/y", ""), ("x/y", "type")]
    assert sum("URL path segment" in p.message for p in problems) == 3
    with pytest.raises(FlowValidationError) as info:
        orch.register(f)
    assert str(info.value).startswith("5 problems in flow definitions:")


def test_same_flow_id_twice_in_one_call(orch: Orchestrator) -> None:
    problems = problems_of(flow("dup"), flow("dup"))
    find(problems, "dup", None, None, "registered twice")
    with pytest.raises(FlowValidationError, match="registered twice"):
        orch.register(flow("dup"), flow("dup"))


def test_registering_an_existing_id_again_replaces_it(orch: Orchestrator) -> None:
    first = flow("f", triggers={"w": Webhook("hook")})
    second = flow("f", triggers={"w": Webhook("hook")}, version="2")
    orch.register(first)
    orch.register(second)  # same slug, same flow: not a clash
    assert orch.flows["f"] is second


# --- webhook slugs -------------------------------------------------------------------------------


def test_duplicate_webhook_slug_across_flows_in_one_call(orch: Orchestrator) -> None:
    a = flow("a", triggers={"w": Webhook("orders")})
    b = flow("b", triggers={"in": Webhook("orders")})
    problems = problems_of(a, b)
    p = find(problems, "b", None, "triggers.in", "webhook slug 'orders' is already used by flow 'a'")
    assert problems == [p]
    with pytest.raises(FlowValidationError, match="already used by flow 'a'"):
        orch.register(a, b)
    assert orch.flows == {}


def test_duplicate_webhook_slug_against_already_registered_flows(orch: Orchestrator) -> None:
    orch.register(flow("first", triggers={"w": Webhook("shared")}))
    with pytest.raises(FlowValidationError) as info:
        orch.register(flow("second", triggers={"hook": Webhook("shared"), "m": Manual()}))
    find(info.value.problems, "second", None, "triggers.hook", "webhook slug 'shared' is already used by flow 'first'")
    assert set(orch.flows) == {"first"}


def test_webhook_slug_freed_when_its_flow_is_replaced_in_the_same_call(orch: Orchestrator) -> None:
    orch.register(flow("first", triggers={"w": Webhook("shared")}))
    # "first" moves to another slug while "second" takes the old one
    orch.register(flow("first", triggers={"w": Webhook("moved")}), flow("second", triggers={"w": Webhook("shared")}))
    assert set(orch.flows) == {"first", "second"}


def test_validate_flows_other_webhooks() -> None:
    f = flow("mine", triggers={"w": Webhook("taken")})
    find(problems_of(f, others={"taken": "theirs"}), "mine", None, "triggers.w", "already used by flow 'theirs'")
    assert problems_of(f, others={"taken": "mine"}) == []
    assert problems_of(f, others={"free": "theirs"}) == []


def test_distinct_webhook_slugs_are_fine(orch: Orchestrator) -> None:
    orch.register(flow("a", triggers={"w": Webhook("one")}), flow("b", triggers={"w": Webhook("two")}))
    orch.register(flow("c", triggers={"w": Webhook("three")}))
    assert set(orch.flows) == {"a", "b", "c"}


# --- the FlowValidationError itself ----------------------------------------------------------------


def test_problem_str_names_flow_step_and_field() -> None:
    assert str(Problem("f", "boom", step="s", field="inputs.x")) == "flow 'f', step 's', inputs.x: boom"
    assert str(Problem("f", "boom", field="triggers.c")) == "flow 'f', triggers.c: boom"
    assert str(Problem("f", "boom")) == "flow 'f': boom"


def test_flow_validation_error_lists_every_problem() -> None:
    ps = [Problem("f", "one", step="a", field="type"), Problem("g", "two")]
    err = FlowValidationError(ps)
    assert err.problems == ps
    assert str(err).splitlines() == [
        "2 problems in flow definitions:",
        "  - flow 'f', step 'a', type: one",
        "  - flow 'g': two",
    ]
    assert str(FlowValidationError(ps[:1])).startswith("1 problem in flow definitions:")


def test_same_webhook_slug_twice_in_one_flow_is_reported() -> None:
    from floworchestrator.flow import Flow, Step, Webhook, validate_flows

    flow = Flow("f", {"s": Step("T")}, triggers={"a": Webhook("x"), "b": Webhook("x")})
    (problem,) = validate_flows([flow], {"T"})
    assert problem.field == "triggers.b" and "also used by trigger 'a'" in problem.message
