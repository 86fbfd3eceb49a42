"""``when`` conditions (DESIGN §3): parsing, strict evaluation, short-circuiting and traces."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from floworchestrator.conditions import Condition, ConditionResult, parse_condition
from floworchestrator.exceptions import ExpressionError, FlowOrchestratorError
from floworchestrator.expressions import Scope, StepView

BODY: dict[str, Any] = {
    "region": "us",
    "amount": 150,
    "price": 9.5,
    "zero": 0,
    "ok": True,
    "no": False,
    "name": "Ann",
    "none": None,
    "items": [1, 2],
    "obj": {"a": 1},
    "flags": [True],
    "ones": [1],
    "text": "@triggerBody().region",
    "multi": "line1\nline2",
    "city": "Zürich",
    "quote": "it's",
}
HEADERS = {"X-Id": "id-1"}
STEPS = {
    "check": StepView("Succeeded", output={"amount": 150, "ok": True, "label": "big", "nested": {"v": None}}),
    "fail": StepView("Failed", output=None, error="boom"),
    "skip": StepView("Skipped"),
    "odd": StepView("Succeeded", output=datetime(2024, 1, 2)),
}
SCOPE = Scope(trigger_body=BODY, trigger_headers=HEADERS, steps=STEPS)


def run(text: str, scope: Scope = SCOPE) -> ConditionResult:
    return parse_condition(text).evaluate(scope)


# --- results ------------------------------------------------------------------------

RESULT_CASES: list[tuple[str, bool]] = [
    # precedence: || is loosest, then &&, then !, then comparisons
    ("true || false && false", True),  # true || (false && false)
    ("false && false || true", True),  # (false && false) || true
    ("false && true || true && true", True),
    ("false || false || true", True),
    ("true && true && false", False),
    ("!false && false", False),  # (!false) && false
    ("!true || true", True),  # (!true) || true
    ("false || !false", True),
    ("! ! true", True),
    ("!!false", False),
    ("!@triggerBody().amount == 150", False),  # !(150 == 150)
    ("!@triggerBody().amount > 200", True),
    # parentheses
    ("(true || false) && false", False),
    ("true || (false && false)", True),
    ("!(false || true)", False),
    ("!(true && false)", True),
    ("((((true))))", True),
    ("(@triggerBody().amount > 1) == true", True),
    ("(@triggerBody().amount) > 100", True),  # a parenthesised operand is still a value
    ("(1 < 2) != (2 < 1)", True),
    # numbers: every operator, ints and floats alike
    ("@triggerBody().amount > 100", True),
    ("@triggerBody().amount > 150", False),
    ("@triggerBody().amount < 151", True),
    ("@triggerBody().amount < 150", False),
    ("@triggerBody().amount >= 150", True),
    ("@triggerBody().amount >= 150.5", False),
    ("@triggerBody().amount <= 150.0", True),
    ("@triggerBody().amount <= 149", False),
    ("@triggerBody().amount == 150", True),
    ("@triggerBody().amount == 150.0", True),
    ("@triggerBody().amount != 150", False),
    ("@triggerBody().amount != 15", True),
    ("@triggerBody().price < 10", True),
    ("@triggerBody().price == 9.5", True),
    ("@triggerBody().zero == 0", True),
    ("-1 < @triggerBody().zero", True),
    ("-1.5 < -1", True),
    ("1 == 1.0", True),
    ("0 == -0", True),
    # strings: every operator; ordering is by code point, never numeric
    ("@triggerBody().region == 'us'", True),
    ('@triggerBody().region == "us"', True),
    ("@triggerBody().region != 'eu'", True),
    ("@triggerBody().region != 'us'", False),
    ("'a' < 'b'", True),
    ("'b' > 'a'", True),
    ("'abc' >= 'abc'", True),
    ("'abc' <= 'abd'", True),
    ("'abd' <= 'abc'", False),
    ("'B' < 'a'", True),
    ("'10' < '9'", True),
    ("'' < 'a'", True),
    ("@triggerBody().quote == 'it\\'s'", True),
    ('@triggerBody().quote == "it\'s"', True),
    ("@triggerBody().multi == 'line1\\nline2'", True),
    ("@triggerBody().city == 'Zürich'", True),
    ("@triggerBody().text == '@triggerBody().region'", True),  # data is never parsed
    ("'@triggerBody().amount' == '@triggerBody().amount'", True),
    # null: anything may be compared with null
    ("null == null", True),
    ("null != null", False),
    ("@triggerBody().none == null", True),
    ("@triggerBody().none != null", False),
    ("null == @triggerBody().none", True),
    ("1 == null", False),
    ("null != 1", True),
    ("'x' == null", False),
    ("true == null", False),
    ("false != null", True),
    ("@triggerBody().obj != null", True),
    ("null == @triggerBody().items", False),
    ("@steps('check').error == null", True),
    ("@steps('fail').output == null", True),
    # booleans, arrays, objects: equality within a type, never Python's True == 1
    ("true == true", True),
    ("true != false", True),
    ("@triggerBody().ok == true", True),
    ("@triggerBody().no == false", True),
    ("@triggerBody().items == @triggerBody().items", True),
    ("@triggerBody().flags == @triggerBody().ones", False),  # [true] is not [1]
    ("@triggerBody().flags != @triggerBody().ones", True),
    ("@triggerBody().obj == @triggerBody().obj", True),
    ("@steps('check').output.nested == @steps('check').output.nested", True),
    # bare boolean operands
    ("true", True),
    ("false", False),
    ("@triggerBody().ok", True),
    ("@triggerBody().no", False),
    ("!@triggerBody().no", True),
    ("(@triggerBody().no)", False),
    ("@triggerBody().ok && @steps('check').output.ok", True),
    ("@triggerBody().no || @steps('check').output.ok", True),
    ("@triggerBody().ok && !@triggerBody().no && @triggerBody().amount > 1", True),
    # other paths, headers, step status and error, ?. inside conditions
    ("@triggerHeaders()['x-id'] == 'id-1'", True),
    ("@triggerHeaders()?['missing'] == null", True),
    ("@steps('fail').status == 'Failed'", True),
    ("@steps('fail').error == 'boom'", True),
    ("@steps('skip').status == 'Skipped' && @steps('skip').output == null", True),
    ("@steps('check').output.label == 'big'", True),
    ("@steps('check').output['amount'] > 100", True),
    ("@triggerBody()?.missing == null", True),
    ("@triggerBody()?.missing.deep.deeper == null", True),
    ("@triggerBody().none?.x == null", True),
    ("@steps('fail').output?.amount == null", True),
    ("@steps('check').output.nested?.v?.w == null", True),
    ("@triggerBody()?.region == 'eu' || @triggerBody()?.region == 'us'", True),
    # whitespace is free
    ("@triggerBody().amount>100&&@triggerBody().ok", True),
    ("  @triggerBody().amount\n  > 100\n  && true  ", True),
]


@pytest.mark.parametrize(("text", "expected"), RESULT_CASES)
def test_condition_result(text: str, expected: bool) -> None:
    result = run(text)
    assert result.error is None
    assert result.value is expected


def test_a_condition_is_parsed_once_and_evaluated_against_each_scope() -> None:
    cond = parse_condition("@triggerBody()?.region == 'eu' && @steps('a').output.n >= 2")
    assert isinstance(cond, Condition)
    eu = Scope(trigger_body={"region": "eu"}, steps={"a": StepView("Succeeded", output={"n": 2})})
    us = Scope(trigger_body={"region": "us"}, steps={"a": StepView("Succeeded", output={"n": 2})})
    low = Scope(trigger_body={"region": "eu"}, steps={"a": StepView("Succeeded", output={"n": 1})})
    assert [cond.evaluate(s).value for s in (eu, us, low, eu)] == [True, False, False, True]


# --- evaluation errors: no implicit coercion ---------------------------------------------

TYPE_ERRORS: list[tuple[str, str]] = [
    # equality between different types
    ("true == 1", "type mismatch: cannot compare boolean true with number 1 (==)"),
    ("false == 0", "type mismatch: cannot compare boolean false with number 0 (==)"),
    ("false != 0", "type mismatch: cannot compare boolean false with number 0 (!=)"),
    ("@triggerBody().ok == 1", "type mismatch: cannot compare boolean true with number 1 (==)"),
    ("@triggerBody().amount == '150'", "type mismatch: cannot compare number 150 with string '150' (==)"),
    ("'5' != 5", "type mismatch: cannot compare string '5' with number 5 (!=)"),
    ("'true' == true", "type mismatch: cannot compare string 'true' with boolean true (==)"),
    ("@triggerBody().items == 'x'", "type mismatch: cannot compare array [1,2] with string 'x' (==)"),
    ("@triggerBody().obj == 1", 'type mismatch: cannot compare object {"a":1} with number 1 (==)'),
    ("@triggerBody().items != @triggerBody().obj", 'type mismatch: cannot compare array [1,2] with object {"a":1} (!=)'),
    # ordering between different types
    ("1 > '0'", "type mismatch: cannot compare number 1 with string '0' (>)"),
    ("'a' < 1", "type mismatch: cannot compare string 'a' with number 1 (<)"),
    ("@triggerBody().ok > 0", "type mismatch: cannot compare boolean true with number 0 (>)"),
    ("@triggerBody().none > 1", "type mismatch: cannot compare null with number 1 (>)"),
    ("1 <= null", "type mismatch: cannot compare number 1 with null (<=)"),
    ("'a' >= null", "type mismatch: cannot compare string 'a' with null (>=)"),
    # ordering of types that have no order
    ("true >= false", "cannot order boolean true and boolean false (>=): only two numbers or two strings can be ordered"),
    ("null <= null", "cannot order null and null (<=): only two numbers or two strings can be ordered"),
    ("@triggerBody().items > @triggerBody().items", "cannot order array [1,2] and array [1,2] (>)"),
    ("@triggerBody().obj < @triggerBody().obj", 'cannot order object {"a":1} and object {"a":1} (<)'),
    ("(1 < 2) > false", "cannot order boolean true and boolean false (>)"),
    # a mismatch anywhere fails the whole condition, even where the other side would decide it
    ("@triggerBody().amount == '150' || true", "type mismatch: cannot compare number 150 with string '150' (==)"),
    ("!(1 == 'x')", "type mismatch: cannot compare number 1 with string 'x' (==)"),
]


@pytest.mark.parametrize(("text", "message"), TYPE_ERRORS)
def test_type_mismatch_is_an_evaluation_error(text: str, message: str) -> None:
    result = run(text)
    assert result.value is None
    assert result.error is not None
    assert message in result.error


NOT_BOOLEAN: list[tuple[str, str]] = [
    ("@triggerBody().amount", "expected a boolean, but @triggerBody().amount is number 150"),
    ("@triggerBody().zero || true", "expected a boolean, but @triggerBody().zero is number 0"),
    ("false || @triggerBody().zero", "expected a boolean, but @triggerBody().zero is number 0"),
    ("@triggerBody().name && true", "expected a boolean, but @triggerBody().name is string 'Ann'"),
    ("!@triggerBody().none", "expected a boolean, but @triggerBody().none is null"),
    ("(@triggerBody().items)", "expected a boolean, but @triggerBody().items is array [1,2]"),
    ("@triggerBody().obj || true", 'expected a boolean, but @triggerBody().obj is object {"a":1}'),
    ("@triggerBody()?.missing", "expected a boolean, but @triggerBody()?.missing is null"),
    ("@steps('check').output.label", "expected a boolean, but @steps('check').output.label is string 'big'"),
    ("1", "expected a boolean, but 1 is number 1"),
    ("'true'", "expected a boolean, but 'true' is string 'true'"),
    ("null && true", "expected a boolean, but null is null"),
]


@pytest.mark.parametrize(("text", "message"), NOT_BOOLEAN)
def test_a_bare_operand_must_be_a_boolean(text: str, message: str) -> None:
    result = run(text)
    assert result.value is None
    assert result.error is not None
    assert message in result.error
    assert "do not convert values to booleans" in result.error


RESOLUTION_ERRORS: list[tuple[str, str]] = [
    ("@triggerBody().missing == 1", "path @triggerBody().missing: 'missing' not found (use ?. to allow a missing value)"),
    ("@triggerBody().none.x == 1", "path @triggerBody().none.x: cannot read 'x' of null"),
    ("@steps('ghost').output == 1", "path @steps('ghost').output: step 'ghost' has not run in this run"),
    ("@steps('fail').output.amount > 1", "path @steps('fail').output.amount: cannot read 'amount' of null"),
    ("@triggerHeaders()['X-Missing'] == 'a'", "path @triggerHeaders()['X-Missing']: 'x-missing' not found"),
    ("true && @triggerBody().items[5] == 1", "path @triggerBody().items[5]: 5 not found"),
    ("@triggerBody().missing", "path @triggerBody().missing: 'missing' not found"),
]


@pytest.mark.parametrize(("text", "message"), RESOLUTION_ERRORS)
def test_unresolvable_path_is_an_evaluation_error(text: str, message: str) -> None:
    result = run(text)
    assert result.value is None
    assert result.error is not None
    assert result.error.startswith(message)
    assert "<error>" in result.evaluated


def test_evaluate_never_raises_for_unusual_data() -> None:
    # a step output that is not JSON data: compared by type name, never an exception
    result = run("@steps('odd').output > '2020'")
    assert result.value is None
    assert result.error is not None
    assert "type mismatch: cannot compare datetime" in result.error
    assert run("@steps('odd').output == null").value is False


# --- short-circuit --------------------------------------------------------------------------

SHORT_CIRCUIT: list[tuple[str, bool, str]] = [
    # the right-hand side would fail if it were evaluated
    ("false && @triggerBody().missing.x > 1", False, "false && … > …"),
    ("true || @steps('ghost').output", True, "true || …"),
    ("@triggerBody().no && @triggerBody().amount == 'x'", False, "false && … == …"),
    ("@triggerBody().ok || @triggerBody().amount", True, "true || …"),
    ("@triggerBody().amount < 1 && (@triggerBody().missing || 1 == 'x')", False, "150 < 1 && (… || … == …)"),
    ("false && true || true", True, "false && … || true"),
    ("true || false && @triggerBody().missing", True, "true || … && …"),
    ("!true && @triggerBody().missing", False, "!true && …"),
]


@pytest.mark.parametrize(("text", "expected", "evaluated"), SHORT_CIRCUIT)
def test_short_circuit_skips_operands(text: str, expected: bool, evaluated: str) -> None:
    result = run(text)
    assert result.error is None
    assert result.value is expected
    assert result.evaluated == evaluated


# --- traces ---------------------------------------------------------------------------------

TRACES: list[tuple[str, str, bool | None]] = [
    # (condition, evaluated, value)
    ("@triggerBody().amount > 100 && @triggerBody()?.region == 'eu'", "150 > 100 && 'us' == 'eu'", False),
    ("@steps('check').output.amount > 100 && @triggerBody()?.region == 'us'", "150 > 100 && 'us' == 'us'", True),
    ('@triggerBody().region == "us"', "'us' == 'us'", True),  # string literals are re-rendered in single quotes
    ("1.50 == 1.5", "1.5 == 1.5", True),  # so are numbers
    ("@triggerBody().none == null", "null == null", True),
    ("@triggerBody().ok != false", "true != false", True),
    ("!(@triggerBody().amount >= 100.0)", "!(150 >= 100.0)", False),
    ("@triggerBody().price <= -1", "9.5 <= -1", False),
    ("@triggerBody().ok && (@triggerBody().price < 10 || @triggerBody().name == 'Bob')", "true && (9.5 < 10 || … == …)", True),
    ("@triggerBody()?.missing?.deep != null || @triggerBody().zero == 0", "null != null || 0 == 0", True),
    ("@triggerHeaders()['X-Id'] == 'id-1'", "'id-1' == 'id-1'", True),
    ("@steps('check').output.nested == null", '{"v":null} == null', False),
    ("@triggerBody().items != @triggerBody().obj", '[1,2] != {"a":1}', None),
    ("@triggerBody().name == 'it\\'s'", "'Ann' == 'it\\'s'", False),
    ("@triggerBody().quote == 'x'", "'it\\'s' == 'x'", False),
    ("@triggerBody().multi == 'x'", "'line1\\nline2' == 'x'", False),
    ("@triggerBody().city == 'Zurich'", "'Zürich' == 'Zurich'", False),
    ("@triggerBody().text == 'x'", "'@triggerBody().region' == 'x'", False),
    ("@triggerBody().missing > 1 && true", "<error> > … && …", None),
    ("true && @triggerBody().amount > @triggerBody().missing", "true && 150 > <error>", None),
    ("@triggerBody().amount", "150", None),
    ("@triggerBody().amount>100&&@triggerBody().ok", "150>100&&true", True),  # spacing is kept as written
    ("( @triggerBody().ok )", "( true )", True),
    ("@steps('fail').status == 'Failed' && @steps('fail').error == 'boom'", "'Failed' == 'Failed' && 'boom' == 'boom'", True),
]


@pytest.mark.parametrize(("text", "evaluated", "value"), TRACES)
def test_trace_replaces_each_operand_with_its_value(text: str, evaluated: str, value: bool | None) -> None:
    result = run(text)
    assert result.expression == text
    assert result.evaluated == evaluated
    assert result.value is value
    assert (result.error is None) is (value is not None)


def test_trace_line_holds_expression_values_and_result() -> None:
    text = "@triggerBody().amount > 100 && @triggerBody()?.region == 'eu'"
    assert run(text).trace == f"{text} → 150 > 100 && 'us' == 'eu' → false"
    assert run("@triggerBody().ok").trace == "@triggerBody().ok → true → true"
    assert run("1 == '1'").trace == "1 == '1' → 1 == '1' → error: type mismatch: cannot compare number 1 with string '1' (==)"


def test_to_dict_is_the_stored_trace() -> None:
    text = "@triggerBody().amount > 100 && @triggerBody()?.region == 'eu'"
    assert run(text).to_dict() == {
        "expression": text,
        "evaluated": "150 > 100 && 'us' == 'eu'",
        "result": False,
        "error": None,
    }
    failed = run("@triggerBody().missing == 1").to_dict()
    assert failed["result"] is None
    assert failed["evaluated"] == "<error> == …"
    assert failed["error"].startswith("path @triggerBody().missing:")
    assert json.loads(json.dumps(failed)) == failed  # storable as JSON


def test_expression_is_the_stripped_text() -> None:
    cond = parse_condition("  @triggerBody().ok  ")
    assert cond.text == "@triggerBody().ok"
    assert cond.evaluate(SCOPE).expression == "@triggerBody().ok"


# --- what a condition reads -------------------------------------------------------------------

REFS: list[tuple[str, frozenset[str], bool]] = [
    ("true", frozenset(), False),
    ("1 < 2 && 'a' != null", frozenset(), False),
    ("@triggerBody().a == 1", frozenset(), True),
    ("@triggerBody()?.a", frozenset(), True),
    ("@triggerHeaders()['x'] == 'y'", frozenset(), True),
    ("@steps('a').output.x > 1 && @steps(\"b\").status == 'Succeeded'", frozenset({"a", "b"}), False),
    ("@steps('a').output.ok || @triggerBody()?.x == null", frozenset({"a"}), True),
    ("!(@steps('a').error != null) && @steps('a').status == 'Failed'", frozenset({"a"}), False),
    ("(((@steps('deep').output)) == null)", frozenset({"deep"}), False),
    ("'@steps(\"a\").output' == '@triggerBody()'", frozenset(), False),  # string literals are not paths
]


@pytest.mark.parametrize(("text", "refs", "uses_trigger"), REFS)
def test_step_refs_and_uses_trigger(text: str, refs: frozenset[str], uses_trigger: bool) -> None:
    cond = parse_condition(text)
    assert cond.step_refs() == refs
    assert cond.uses_trigger() is uses_trigger


def test_paths_are_listed_in_the_order_written() -> None:
    cond = parse_condition("@steps('b').status == 'x' || @triggerBody()?.a > 1 && @steps('a').output.ok")
    assert [p.text for p in cond.paths] == ["@steps('b').status", "@triggerBody()?.a", "@steps('a').output.ok"]


# --- malformed conditions -----------------------------------------------------------------------

MALFORMED: list[tuple[str, str, int]] = [
    # (condition, text the message must contain, position)
    ("", "empty condition", 0),
    ("   ", "empty condition", 0),
    ("(", "unexpected end, expected an operand", 1),
    ("(true", "unexpected end, expected ')' to close the '(' at position 0", 5),
    ("((true)", "expected ')' to close the '(' at position 0", 7),
    ("(true false)", "expected ')' to close the '(' at position 0 but found 'false'", 6),
    ("true)", "unexpected ')' after a complete condition", 4),
    ("(true))", "unexpected ')' after a complete condition", 6),
    ("()", "expected an operand but found ')'", 1),
    ("true &&", "unexpected end, expected an operand", 7),
    ("&& true", "expected an operand but found '&&'", 0),
    ("true || || false", "expected an operand but found '||'", 8),
    ("!", "unexpected end, expected an operand", 1),
    ("1 ==", "unexpected end, expected an operand", 4),
    ("== 1", "expected an operand but found '=='", 0),
    ("1 <> 2", "expected an operand but found '>'", 3),
    ("1 == !true", "expected an operand but found '!'", 5),
    ("1 < 2 < 3", "comparisons do not chain: '<' after a comparison", 6),
    ("@triggerBody().a == 1 == true", "comparisons do not chain: '=='", 22),
    ("1 = 1", "unexpected character '=' (did you mean '=='?)", 2),
    ("1 === 1", "unexpected character '=' (did you mean '=='?)", 4),
    ("1 =< 2", "unexpected character '='", 2),
    ("true & false", "unexpected character '&' (did you mean '&&'?)", 5),
    ("true | false", "unexpected character '|' (did you mean '||'?)", 5),
    ("1 + 2", "unexpected character '+'", 2),
    ("@triggerBody() ? 1 : 2", "unexpected character '?'", 15),
    ("'unterminated == 1", 'unexpected character "\'"', 0),
    ("true and false", "unexpected 'and' after a complete condition; did you mean '&&'?", 5),
    ("not true", "unknown name 'not'", 0),
    ("True", "did you mean 'true'?", 0),
    ("foo() == 1", "unknown name 'foo'", 0),
    ("a.b > 1", "unknown name 'a'", 0),
    ("@foo() == 1", "unknown function 'foo'", 1),
    ("@triggerbody().a", "unknown function 'triggerbody'", 1),
    ("1 2", "unexpected '2' after a complete condition", 2),
    ("@triggerBody().a @triggerBody().b", "unexpected '@' after a complete condition", 17),
    ("@triggerBody().a !", "unexpected '!' after a complete condition", 17),
    ("@steps('a') == 1", "must be followed by .output, .status or .error", 11),
    ("@triggerBody(). == 1", "expected 'name' but found '=='", 16),
    ("@triggerBody()[0 == 1", "expected ']' but found '=='", 17),
    ("@steps(a).output", "expected 'string' but found 'a'", 7),
    ("  (true  ", "expected ')'", 5),  # positions refer to the stripped text
    ("(" * 101 + "true" + ")" * 101, "nested more than 100 levels deep", 100),
    ("!" * 101 + "true", "nested more than 100 levels deep", 100),
]


@pytest.mark.parametrize(("text", "message", "position"), MALFORMED)
def test_malformed_condition_raises_expression_error(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_condition(text)
    err = info.value
    assert isinstance(err, FlowOrchestratorError)
    assert message in str(err)
    assert err.text == text.strip()
    assert repr(text.strip()) in str(err)  # the message quotes the condition
    assert err.position == position
    assert f"at position {position}" in str(err)


def test_nesting_up_to_the_limit_parses_and_evaluates() -> None:
    assert parse_condition("(" * 100 + "true" + ")" * 100).evaluate(SCOPE).value is True
    assert parse_condition("!" * 100 + "true").evaluate(SCOPE).value is True
    assert parse_condition("!(" * 50 + "1 == 1" + ")" * 50).evaluate(SCOPE).value is True
    long_chain = " && ".join(["@triggerBody().ok"] * 2000)  # long chains are not nesting
    assert parse_condition(long_chain).evaluate(SCOPE).value is True
