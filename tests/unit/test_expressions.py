"""Value expressions (DESIGN §3): parsing, compiling input trees and resolving them."""

from __future__ import annotations

from typing import Any

import pytest

from floworchestrator.exceptions import ExpressionError, FlowOrchestratorError
from floworchestrator.expressions import (
    InputTemplate,
    Path,
    ResolutionError,
    Scope,
    StepView,
    compile_inputs,
    parse_value,
)

BODY: dict[str, Any] = {
    "orderId": "A-17",
    "a": {"b": [{"c": 1}, {"c": 2, "d": None}], "n": None, "zero": 0, "empty": "", "f": False},
    "items": [10, 20, 30],
    "nested": [[1, 2], [3, 4]],
    "weird key": "spaced",
    "it's": "quoted",
    'dq"key': "double",
    "text": "@triggerHeaders()['X-Id']",
    "null": None,
}
HEADERS = {"X-Id": "id-1", "Content-Type": "application/json", "x-lower": "low"}
STEPS = {
    "fetch": StepView("Succeeded", output={"total": 42.0, "lines": [{"sku": "S1"}], "none": None, "at": "@steps('x').output"}),
    "charge": StepView("Failed", output=None, error="card declined"),
    "scalar": StepView("Succeeded", output=7),
    "skipped": StepView("Skipped"),
}
SCOPE = Scope(trigger_body=BODY, trigger_headers=HEADERS, steps=STEPS)


def resolve(expr: str, scope: Scope = SCOPE) -> Any:
    return parse_value(expr).evaluate(scope)


# --- successful evaluation ------------------------------------------------------

VALUE_CASES: list[tuple[str, Any]] = [
    # trigger body
    ("@triggerBody()", BODY),
    ("@triggerBody().orderId", "A-17"),
    ("@triggerBody()?.orderId", "A-17"),
    ("@triggerBody().a.b[0].c", 1),
    ("@triggerBody()?.a.b[0].c", 1),
    ("@triggerBody().a.b[1].c", 2),
    ("@triggerBody().a.b[1].d", None),  # present and null is not "missing"
    ("@triggerBody().a.n", None),
    ("@triggerBody().a.zero", 0),
    ("@triggerBody().a.empty", ""),
    ("@triggerBody().a.f", False),
    ("@triggerBody().items", [10, 20, 30]),
    ("@triggerBody().items[2]", 30),
    ("@triggerBody().nested[1][0]", 3),
    ("@triggerBody()['weird key']", "spaced"),
    ('@triggerBody()["weird key"]', "spaced"),
    ("@triggerBody()['a']['b'][0]['c']", 1),
    ('@triggerBody()["a"]["b"][1]["c"]', 2),
    ("@triggerBody()['it\\'s']", "quoted"),
    ('@triggerBody()["it\'s"]', "quoted"),
    ("@triggerBody()['dq\"key']", "double"),
    ('@triggerBody()["dq\\"key"]', "double"),
    ("@triggerBody().a['b'][0].c", 1),
    ("  @triggerBody().orderId  ", "A-17"),  # surrounding whitespace is ignored
    # trigger headers: names are case-insensitive, values are not
    ("@triggerHeaders()['X-Id']", "id-1"),
    ("@triggerHeaders()['x-id']", "id-1"),
    ("@triggerHeaders()['X-ID']", "id-1"),
    ('@triggerHeaders()["x-ID"]', "id-1"),
    ("@triggerHeaders()['X-LOWER']", "low"),
    ("@triggerHeaders()['content-type']", "application/json"),
    ("@triggerHeaders()?['missing']", None),
    ("@triggerHeaders()?.['missing']", None),
    # steps
    ("@steps('fetch').output", STEPS["fetch"].output),
    ("@steps('fetch').output.total", 42.0),
    ('@steps("fetch").output.total', 42.0),
    ("@steps('fetch').output.lines[0].sku", "S1"),
    ("@steps('fetch').output['lines'][0]['sku']", "S1"),
    ("@steps('fetch')['output'].total", 42.0),
    ("@steps('fetch').status", "Succeeded"),
    ("@steps('fetch').error", None),
    ("@steps('charge').status", "Failed"),
    ("@steps('charge').error", "card declined"),
    ("@steps('charge').output", None),
    ("@steps('charge').output?.total", None),
    ("@steps('scalar').output", 7),
    ("@steps('skipped').status", "Skipped"),
    ("@steps('fetch').output.none", None),
    ("@steps('fetch').output?.missing", None),
]


@pytest.mark.parametrize(("expr", "expected"), VALUE_CASES)
def test_value_expression(expr: str, expected: Any) -> None:
    assert resolve(expr) == expected


def test_parse_value_records_root_step_and_text() -> None:
    p = parse_value("@steps('fetch').output.total")
    assert isinstance(p, Path)
    assert (p.root, p.step) == ("steps", "fetch")
    assert p.text == "@steps('fetch').output.total"
    q = parse_value('@triggerBody()?.a["b"][0]')
    assert (q.root, q.step) == ("triggerBody", None)
    assert [(a.key, a.safe) for a in q.accesses] == [("a", True), ("b", False), (0, False)]
    assert parse_value("@triggerHeaders()").root == "triggerHeaders"


# --- null safety -----------------------------------------------------------------

NULL_SAFE_CASES: list[tuple[str, Any, Any]] = [
    # (expression, trigger body, expected)
    ("@triggerBody()?.a", None, None),
    ("@triggerBody()?.a.b.c", None, None),  # short-circuits the rest, as in JavaScript
    ("@triggerBody()?.a[0].c", None, None),
    ("@triggerBody()?[0]", None, None),
    ("@triggerBody()?.[0]", None, None),
    ("@triggerBody()?[0].x.y", None, None),
    ("@triggerBody()?.a", {}, None),  # missing key
    ("@triggerBody()?.a.b", {}, None),
    ("@triggerBody().a?.b", {"a": None}, None),  # second position
    ("@triggerBody().a?.b.c.d", {"a": None}, None),
    ("@triggerBody().a?.b", {"a": {}}, None),
    ("@triggerBody().a.b?.c", {"a": {"b": None}}, None),  # third position
    ("@triggerBody().a.b?.c", {"a": {"b": {}}}, None),
    ("@triggerBody().a.b?[0]", {"a": {"b": []}}, None),  # index out of range
    ("@triggerBody().a.b?.[3]", {"a": {"b": [1]}}, None),
    ("@triggerBody().a.b[0]?.c", {"a": {"b": [None]}}, None),  # after an index
    ("@triggerBody().a.b[0]?.c", {"a": {"b": [{}]}}, None),
    ("@triggerBody().a.b[0]?['c']", {"a": {"b": [{}]}}, None),
    ("@triggerBody()?.a?.b?.c", {"a": {"b": {"c": 5}}}, 5),  # ?. does not change found values
    ("@triggerBody()?.a?.b?.c", {"a": {"b": {"c": None}}}, None),
    ("@triggerBody()?.a?.b?.c", {"a": {"b": {"c": 0}}}, 0),
    ("@triggerBody()?.a?.b?.c", {"a": {"b": {"c": False}}}, False),
    ("@triggerBody()?.a?.b?.c", {"a": None}, None),
]


@pytest.mark.parametrize(("expr", "body", "expected"), NULL_SAFE_CASES)
def test_null_safe_access_at_every_position(expr: str, body: Any, expected: Any) -> None:
    assert resolve(expr, Scope(trigger_body=body)) == expected


RESOLUTION_ERRORS: list[tuple[str, Any, str]] = [
    # (expression, trigger body, text the message must contain)
    ("@triggerBody().a", None, "cannot read 'a' of null"),
    ("@triggerBody()[0]", None, "cannot read 0 of null"),
    ("@triggerBody().a", {}, "'a' not found"),
    ("@triggerBody().a.b", {"a": None}, "cannot read 'b' of null"),
    ("@triggerBody()?.a.b", {"a": None}, "cannot read 'b' of null"),  # ?. guards only its own step
    ("@triggerBody().a?.b.c", {"a": {"b": None}}, "cannot read 'c' of null"),
    ("@triggerBody().a.b", {"a": {}}, "'b' not found"),
    ("@triggerBody().a[1]", {"a": [0]}, "1 not found"),
    ("@triggerBody().a[0]", {"a": {"0": 1}}, "cannot index dict with [0]"),
    ("@triggerBody().a.b", {"a": [1]}, "cannot read 'b' of list"),
    ("@triggerBody().a.b", {"a": "text"}, "cannot read 'b' of str"),
    ("@triggerBody().a[0]", {"a": "text"}, "cannot index str with [0]"),
    ("@triggerBody().a.b", {"a": 3}, "cannot read 'b' of int"),
]


@pytest.mark.parametrize(("expr", "body", "message"), RESOLUTION_ERRORS)
def test_resolution_errors_are_clear(expr: str, body: Any, message: str) -> None:
    with pytest.raises(ResolutionError) as info:
        resolve(expr, Scope(trigger_body=body))
    text = str(info.value)
    assert message in text
    assert expr in text  # says which expression failed
    assert not isinstance(info.value, ExpressionError)


def test_missing_value_message_suggests_null_safe_access() -> None:
    with pytest.raises(ResolutionError, match=r"use \?\."):
        resolve("@triggerBody().a", Scope(trigger_body=None))
    with pytest.raises(ResolutionError, match=r"use \?\."):
        resolve("@triggerBody().a", Scope(trigger_body={}))


def test_missing_header_without_null_safety_is_an_error() -> None:
    with pytest.raises(ResolutionError, match="'x-missing' not found"):
        resolve("@triggerHeaders()['X-Missing']")


@pytest.mark.parametrize("expr", ["@steps('ghost').output", "@steps('ghost')?.output", "@steps('ghost').status"])
def test_step_not_in_scope_is_a_resolution_error(expr: str) -> None:
    with pytest.raises(ResolutionError, match="step 'ghost' has not run"):
        resolve(expr)


def test_step_output_missing_key_is_a_resolution_error() -> None:
    with pytest.raises(ResolutionError, match="'missing' not found"):
        resolve("@steps('fetch').output.missing")
    with pytest.raises(ResolutionError, match="cannot read 'total' of null"):
        resolve("@steps('charge').output.total")


# --- data is never code --------------------------------------------------------------


def test_trigger_body_value_starting_with_at_is_data() -> None:
    assert resolve("@triggerBody().text") == "@triggerHeaders()['X-Id']"
    template, problems = compile_inputs({"v": "@triggerBody()?.text", "whole": "@triggerBody()"})
    assert problems == []
    out = template.resolve(SCOPE)
    assert out["v"] == "@triggerHeaders()['X-Id']"
    assert out["whole"]["text"] == "@triggerHeaders()['X-Id']"


def test_whole_trigger_body_that_is_an_expression_string_is_data() -> None:
    scope = Scope(trigger_body="@triggerHeaders()['X-Id']", trigger_headers={"X-Id": "secret"})
    template, _ = compile_inputs("@triggerBody()")
    assert template.resolve(scope) == "@triggerHeaders()['X-Id']"
    scope = Scope(trigger_body=["@@x", "@steps('a').output"])
    assert compile_inputs(["@triggerBody()[0]", "@triggerBody()[1]"])[0].resolve(scope) == ["@@x", "@steps('a').output"]


def test_step_output_starting_with_at_is_data() -> None:
    assert resolve("@steps('fetch').output.at") == "@steps('x').output"
    scope = Scope(steps={"s": StepView("Succeeded", output="@triggerBody()")}, trigger_body={"never": "read"})
    assert compile_inputs({"x": "@steps('s').output"})[0].resolve(scope) == {"x": "@triggerBody()"}


# --- input templates --------------------------------------------------------------------

LITERAL_CASES: list[Any] = [
    None,
    0,
    42,
    -7,
    3.5,
    True,
    False,
    "",
    "plain text",
    "an @ in the middle",
    " @triggerBody()",  # does not start with @
    "email@example.com",
    [],
    {},
    [1, "two", None, 3.0, False],
    {"a": 1, "b": {"c": [1, {"d": None}]}, "e": True},
    {"@triggerBody()": "keys are never expressions"},
]


@pytest.mark.parametrize("value", LITERAL_CASES)
def test_literals_pass_through_unchanged(value: Any) -> None:
    template, problems = compile_inputs(value)
    assert problems == []
    assert template.is_constant
    assert template.step_refs == frozenset()
    assert template.uses_trigger is False
    out = template.resolve(SCOPE)
    assert out == value
    assert type(out) is type(value)


def test_literal_tuple_becomes_a_list() -> None:
    template, _ = compile_inputs({"t": (1, "@triggerBody().orderId")})
    assert template.resolve(SCOPE) == {"t": [1, "A-17"]}


ESCAPE_CASES: list[tuple[str, str]] = [
    ("@@", "@"),
    ("@@text", "@text"),
    ("@@triggerBody()", "@triggerBody()"),
    ("@@@triggerBody()", "@@triggerBody()"),
    ("@@steps('x').output", "@steps('x').output"),
]


@pytest.mark.parametrize(("value", "expected"), ESCAPE_CASES)
def test_double_at_escape(value: str, expected: str) -> None:
    template, problems = compile_inputs({"v": value, "nested": [value]})
    assert problems == []
    assert template.is_constant
    assert template.resolve(Scope()) == {"v": expected, "nested": [expected]}


def test_nested_tree_with_expression_leaves() -> None:
    tree = {
        "id": "@triggerBody()?.orderId",
        "count": 3,
        "flag": True,
        "nothing": None,
        "ratio": 0.5,
        "lines": [
            {"sku": "@steps('fetch').output.lines[0].sku", "qty": 1},
            "@steps('fetch').output.total",
            "literal",
            "@@escaped",
        ],
        "meta": {"hdr": "@triggerHeaders()['x-id']", "deep": {"status": "@steps('charge').status"}},
    }
    template, problems = compile_inputs(tree)
    assert problems == []
    assert not template.is_constant
    assert template.resolve(SCOPE) == {
        "id": "A-17",
        "count": 3,
        "flag": True,
        "nothing": None,
        "ratio": 0.5,
        "lines": [{"sku": "S1", "qty": 1}, 42.0, "literal", "@escaped"],
        "meta": {"hdr": "id-1", "deep": {"status": "Failed"}},
    }
    assert template.step_refs == frozenset({"fetch", "charge"})
    assert template.uses_trigger is True


def test_resolve_builds_a_fresh_value_each_time() -> None:
    template, _ = compile_inputs({"a": {"b": [1, 2]}, "x": "@triggerBody().orderId"})
    first = template.resolve(SCOPE)
    first["a"]["b"].append(3)
    first["new"] = 1
    assert template.resolve(SCOPE) == {"a": {"b": [1, 2]}, "x": "A-17"}


def test_resolve_uses_the_scope_it_is_given() -> None:
    template, _ = compile_inputs({"x": "@triggerBody()?.v"})
    assert template.resolve(Scope(trigger_body={"v": 1})) == {"x": 1}
    assert template.resolve(Scope(trigger_body={"v": 2})) == {"x": 2}
    assert template.resolve(Scope(trigger_body=None)) == {"x": None}


def test_resolution_error_propagates_from_a_nested_leaf() -> None:
    template, problems = compile_inputs({"a": [{"b": "@triggerBody().missing"}]})
    assert problems == []
    with pytest.raises(ResolutionError, match="'missing' not found"):
        template.resolve(SCOPE)


REFS_CASES: list[tuple[Any, frozenset[str], bool]] = [
    # (inputs, step_refs, uses_trigger)
    (None, frozenset(), False),
    ({"a": 1}, frozenset(), False),
    ("@@steps('a').output", frozenset(), False),
    ("@triggerBody()", frozenset(), True),
    ({"h": "@triggerHeaders()['x']"}, frozenset(), True),
    ("@steps('a').output", frozenset({"a"}), False),
    ({"x": "@steps('a').status", "y": ["@steps('b').error", "@steps('a').output.z"]}, frozenset({"a", "b"}), False),
    ({"x": "@steps('a').output", "y": {"z": "@triggerBody()?.q"}}, frozenset({"a"}), True),
    (['@steps("dq").output'], frozenset({"dq"}), False),
]


@pytest.mark.parametrize(("inputs", "refs", "uses_trigger"), REFS_CASES)
def test_step_refs_and_uses_trigger(inputs: Any, refs: frozenset[str], uses_trigger: bool) -> None:
    template, problems = compile_inputs(inputs)
    assert problems == []
    assert isinstance(template, InputTemplate)
    assert template.step_refs == refs
    assert template.uses_trigger is uses_trigger
    assert template.is_constant is (not refs and not uses_trigger)


# --- malformed expressions --------------------------------------------------------

MALFORMED: list[tuple[str, str]] = [
    # (expression, text the message must contain)
    ("@", "unexpected end"),
    ("@triggerBody", "expected '('"),
    ("@triggerBody(", "expected ')'"),
    ("@triggerBody(1)", "expected ')' but found '1'"),
    ("@triggerBody()()", "unexpected '(' after the expression"),
    ("@triggerbody()", "unknown function 'triggerbody'"),
    ("@foo()", "unknown function 'foo'"),
    ("@body()", "expected one of triggerBody(), triggerHeaders(), steps()"),
    ("@steps()", "expected 'string' but found ')'"),
    ("@steps(fetch).output", "expected 'string' but found 'fetch'"),
    ("@steps(1).output", "expected 'string' but found '1'"),
    ("@steps('').output", "steps() needs a step key"),
    ("@steps('a')", "must be followed by .output, .status or .error"),
    ("@steps('a').outputs", "must be followed by .output, .status or .error"),
    ("@steps('a')[0]", "must be followed by .output, .status or .error"),
    ("@steps('a', 'b').output", "unexpected character ','"),
    ("@triggerBody().", "unexpected end, expected 'name'"),
    ("@triggerBody()..a", "expected 'name' but found '.'"),
    ("@triggerBody().0", "expected 'name' but found '0'"),
    ("@triggerBody()?", "unexpected character '?'"),
    ("@triggerBody()?.", "unexpected end"),
    ("@triggerBody()[", "unexpected end"),
    ("@triggerBody()[0", "expected ']'"),
    ("@triggerBody()['a'", "expected ']'"),
    ("@triggerBody()['a]", "unexpected character"),
    ("@triggerBody()[]", "an index must be a quoted name or a whole number"),
    ("@triggerBody()[-1]", "an index must be a quoted name or a whole number"),
    ("@triggerBody()[1.5]", "an index must be a quoted name or a whole number"),
    ("@triggerBody()[a]", "an index must be a quoted name or a whole number"),
    ("@triggerBody() x", "unexpected 'x' after the expression"),
    ("@triggerBody().a b", "unexpected 'b' after the expression"),
    ("@triggerBody() == 1", "unexpected character '='"),
    ("@triggerBody()#", "unexpected character '#'"),
    ("@triggerBody().a-b", "unexpected character '-' at position 16"),
    ("@triggerBody().über", "unexpected character 'ü'"),
    ("@triggerHeaders('x')", "expected ')' but found"),
    ("@@@", "expected 'name' but found '@'"),  # parse_value does not know about the @@ escape
    ("@'text'", "expected 'name'"),
    ("triggerBody()", "expected '@'"),
    ("", "unexpected end, expected '@'"),
]


@pytest.mark.parametrize(("expr", "message"), MALFORMED)
def test_malformed_expression_raises_expression_error(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_value(expr)
    err = info.value
    assert isinstance(err, FlowOrchestratorError)
    assert message in str(err)
    assert repr(expr.strip()) in str(err)  # the message quotes the expression
    assert err.text == expr.strip()
    if err.position is not None:
        assert 0 <= err.position <= len(err.text)


@pytest.mark.parametrize(
    ("expr", "position"),
    [
        ("@foo()", 1),
        ("@triggerBody()#", 14),
        ("@triggerBody() x", 15),
        ("   @triggerBody() x", 15),  # relative to the expression, not the surrounding blanks
        ("@triggerBody()[-1]", 15),
        ("@triggerBody().", 15),
    ],
)
def test_expression_error_position(expr: str, position: int) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_value(expr)
    assert info.value.position == position
    assert f"at position {position}" in str(info.value)
    assert info.value.text[position:].startswith(expr.strip()[position:])


@pytest.mark.parametrize(("expr", "message"), [(e, m) for e, m in MALFORMED if e.startswith("@") and not e.startswith("@@")])
def test_compile_inputs_collects_every_problem_with_its_location(expr: str, message: str) -> None:
    tree = {"ok": "@triggerBody()", "bad": expr, "list": [1, {"deep": expr}], "esc": "@@" + expr}
    template, problems = compile_inputs(tree, "inputs")
    assert [where for where, _ in problems] == ["inputs.bad", "inputs.list[1].deep"]
    for _, msg in problems:
        assert message in msg
    # the well-formed part still compiles
    assert template.uses_trigger


def test_compile_inputs_reports_problems_in_order_with_custom_prefix() -> None:
    _, problems = compile_inputs(["@nope()", {"a": "@steps('x')", "b": "fine"}, "@triggerBody()["], "step.inputs")
    assert [w for w, _ in problems] == ["step.inputs[0]", "step.inputs[1].a", "step.inputs[2]"]
    assert "unknown function 'nope'" in problems[0][1]
    assert "must be followed by" in problems[1][1]
    assert "unexpected end" in problems[2][1]


def test_compile_inputs_of_a_single_bad_string() -> None:
    _, problems = compile_inputs("@triggerBody(")
    assert len(problems) == 1
    assert problems[0][0] == "inputs"
