"""``when`` conditions over the trigger data and earlier steps (DESIGN §3).

A condition is plain text whose operands are value expressions (see
``expressions``) or literals::

    @steps('check').output.amount > 100 && @triggerBody()?.region == 'eu'

From the loosest binding to the tightest:

    a || b            or, short-circuit
    a && b            and, short-circuit
    ! a               not; ``!@x == 1`` reads as ``!(@x == 1)``
    a == b  a != b  a > b  a < b  a >= b  a <= b
                      comparisons do not chain: ``a < b < c`` is a parse error
    ( ... )  operands  @paths, numbers (``-1.5``), 'strings' or "strings",
                       true, false, null

There is no implicit conversion. ``==`` and ``!=`` need two values of the same
type (ints and floats are both numbers), except that anything may be compared
with null. ``> < >= <=`` need two numbers or two strings. An operand standing
alone where a boolean is needed (``@steps('a').output.ok && ...``) must be a
boolean. Breaking these rules, or a path that cannot be resolved, is an
evaluation error: ``Condition.evaluate`` reports it in its result, never as an
exception.

Each evaluation keeps a trace for the "why skipped" panel: the expression, the
same text with each operand replaced by its value (``…`` for an operand that
short-circuiting skipped, ``<error>`` for a path that failed), and the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ExpressionError
from .expressions import _CONDITION_TOKEN, Path, ResolutionError, Scope, _Parser, _Tok, _unquote

__all__ = ["Condition", "ConditionResult", "parse_condition"]

_COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
# Written by people used to other languages; the hint names our spelling.
_WORD_HINTS = {"and": "&&", "or": "||", "not": "!", "True": "true", "False": "false", "None": "null", "TRUE": "true", "FALSE": "false"}
_CHAR_HINTS = {"=": "==", "&": "&&", "|": "||"}
_MAX_DEPTH = 100  # nested parentheses and `!`; keeps parsing and evaluation off Python's recursion limit

UNEVALUATED = "…"
FAILED = "<error>"


# --- syntax tree -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Operand:
    index: int  # position among the condition's operands, for the trace
    start: int  # span in the condition text
    end: int
    path: Path | None  # None for a literal
    literal: Any = None


@dataclass(frozen=True, slots=True)
class _Not:
    inner: _Node


@dataclass(frozen=True, slots=True)
class _And:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    left: _Node
    right: _Node


_Node = _Operand | _Not | _And | _Or | _Compare


class _ConditionParser(_Parser):
    def __init__(self, text: str) -> None:
        try:
            super().__init__(text, _CONDITION_TOKEN)
        except ExpressionError as exc:
            pos = exc.position
            if pos is not None and text[pos] in _CHAR_HINTS:
                ch = text[pos]
                raise ExpressionError(f"unexpected character {ch!r} (did you mean {_CHAR_HINTS[ch]!r}?)", text, pos) from None
            raise
        self.operands: list[_Operand] = []
        self.depth = 0

    def fail(self, message: str, tok: _Tok | None) -> ExpressionError:
        """An error at ``tok``, or at the end of the text when there is no token left."""
        if tok is None:
            return ExpressionError(f"unexpected end, expected {message}", self.text, len(self.text))
        return ExpressionError(f"expected {message} but found {tok.value!r}", self.text, tok.pos)

    def is_operator(self, *values: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "operator" and tok.value in values

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ExpressionError(f"condition nested more than {_MAX_DEPTH} levels deep", self.text, pos)

    def condition(self) -> _Node:
        node = self.or_()
        if (extra := self.peek()) is not None:
            hint = f"; did you mean {_WORD_HINTS[extra.value]!r}?" if extra.kind == "name" and extra.value in _WORD_HINTS else ""
            raise ExpressionError(f"unexpected {extra.value!r} after a complete condition{hint}", self.text, extra.pos)
        return node

    def or_(self) -> _Node:
        items = [self.and_()]
        while self.is_operator("||"):
            self.i += 1
            items.append(self.and_())
        return items[0] if len(items) == 1 else _Or(tuple(items))

    def and_(self) -> _Node:
        items = [self.not_()]
        while self.is_operator("&&"):
            self.i += 1
            items.append(self.not_())
        return items[0] if len(items) == 1 else _And(tuple(items))

    def not_(self) -> _Node:
        if not self.is_operator("!"):
            return self.comparison()
        self.nest(self.take().pos)
        inner = self.not_()
        self.depth -= 1
        return _Not(inner)

    def comparison(self) -> _Node:
        left = self.primary()
        if not self.is_operator(*_COMPARISONS):
            return left
        op = self.take().value
        right = self.primary()
        if self.is_operator(*_COMPARISONS):
            tok = self.take()
            raise ExpressionError(
                f"comparisons do not chain: {tok.value!r} after a comparison (use && to combine them)", self.text, tok.pos
            )
        return _Compare(op, left, right)

    def primary(self) -> _Node:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.value == "(":
            self.i += 1
            self.nest(tok.pos)
            inner = self.or_()
            self.depth -= 1
            closing = self.peek()
            if closing is None or closing.value != ")":
                raise self.fail(f"')' to close the '(' at position {tok.pos}", closing)
            self.i += 1
            return inner
        return self.operand()

    def operand(self) -> _Operand:
        tok = self.peek()
        start = len(self.text) if tok is None else tok.pos
        path: Path | None = None
        literal: Any = None
        if tok is None:
            raise self.fail("an operand", tok)
        if tok.kind == "op" and tok.value == "@":
            path = self.path()
            end = start + len(path.text)
        else:
            self.i += 1
            end = start + len(tok.value)
            if tok.kind == "string":
                literal = _unquote(tok.value)
            elif tok.kind == "number":
                literal = float(tok.value) if "." in tok.value else int(tok.value)
            elif tok.kind == "name" and tok.value in _LITERALS:
                literal = _LITERALS[tok.value]
            elif tok.kind == "name":
                hint = f"; did you mean {_WORD_HINTS[tok.value]!r}?" if tok.value in _WORD_HINTS else ""
                raise ExpressionError(
                    f"unknown name {tok.value!r}: an operand is an @ expression, a number, a quoted string, true, false or null{hint}",
                    self.text,
                    tok.pos,
                )
            else:
                raise self.fail("an operand", tok)
        node = _Operand(len(self.operands), start, end, path, literal)
        self.operands.append(node)
        return node


# --- values ------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _render(value: Any) -> str:
    """A value as the trace shows it: JSON, except strings in single quotes as they are written in conditions."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
        return f"'{escaped}'"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _describe(value: Any) -> str:
    return "null" if value is None else f"{_kind(value)} {_render(value)}"


def _same(a: Any, b: Any) -> bool:
    """Equality without Python's coercions (``True == 1``), also inside arrays and objects."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        kind = _kind(x)
        if kind != _kind(y):
            return False
        if kind == "array":
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif kind == "object":
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


class _Failed(Exception):
    """Evaluation stopped; the message is the condition's error."""


def _compare(op: str, left: Any, right: Any) -> bool:
    lk, rk = _kind(left), _kind(right)
    if op in ("==", "!="):
        if left is None or right is None:
            equal = left is None and right is None
        elif lk != rk:
            raise _Failed(f"type mismatch: cannot compare {_describe(left)} with {_describe(right)} ({op})")
        else:
            equal = _same(left, right)
        return equal if op == "==" else not equal
    if lk != rk:
        raise _Failed(f"type mismatch: cannot compare {_describe(left)} with {_describe(right)} ({op})")
    if lk not in ("number", "string"):
        raise _Failed(f"cannot order {_describe(left)} and {_describe(right)} ({op}): only two numbers or two strings can be ordered")
    if op == ">":
        return bool(left > right)
    if op == "<":
        return bool(left < right)
    if op == ">=":
        return bool(left >= right)
    return bool(left <= right)


class _Evaluation:
    def __init__(self, text: str, scope: Scope) -> None:
        self.text = text
        self.scope = scope
        self.shown: dict[int, str] = {}

    def value(self, node: _Node) -> Any:
        if not isinstance(node, _Operand):
            return self.truth(node)
        if node.path is None:
            value = node.literal
        else:
            try:
                value = node.path.evaluate(self.scope)
            except ResolutionError as exc:
                self.shown[node.index] = FAILED
                raise _Failed(f"path {exc}") from None
        self.shown[node.index] = _render(value)
        return value

    def truth(self, node: _Node) -> bool:
        if isinstance(node, _Operand):
            value = self.value(node)
            if not isinstance(value, bool):
                source = self.text[node.start : node.end]
                raise _Failed(f"expected a boolean, but {source} is {_describe(value)} (conditions do not convert values to booleans)")
            return value
        if isinstance(node, _Not):
            return not self.truth(node.inner)
        if isinstance(node, _And):
            return all(self.truth(item) for item in node.items)  # all() stops at the first false
        if isinstance(node, _Or):
            return any(self.truth(item) for item in node.items)
        return _compare(node.op, self.value(node.left), self.value(node.right))


# --- public API --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionResult:
    """The outcome of one evaluation; ``value`` is None when evaluation failed, and ``error`` says why."""

    expression: str
    """The condition as written."""
    evaluated: str
    """The condition with each operand replaced by its value (``…`` unevaluated, ``<error>`` failed)."""
    value: bool | None
    error: str | None = None

    @property
    def trace(self) -> str:
        """One line: expression → evaluated → result."""
        result = f"error: {self.error}" if self.value is None else _render(self.value)
        return f"{self.expression} → {self.evaluated} → {result}"

    def to_dict(self) -> dict[str, Any]:
        """The stored form of the trace."""
        return {"expression": self.expression, "evaluated": self.evaluated, "result": self.value, "error": self.error}


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; parse once with :func:`parse_condition`, evaluate per run."""

    text: str
    _root: _Node = field(repr=False)
    _operands: tuple[_Operand, ...] = field(repr=False)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The value expressions the condition reads, in the order written."""
        return tuple(o.path for o in self._operands if o.path is not None)

    def step_refs(self) -> frozenset[str]:
        """Keys of the steps whose data the condition reads."""
        return frozenset(p.step for p in self.paths if p.step is not None)

    def uses_trigger(self) -> bool:
        """True when the condition reads the trigger body or headers."""
        return any(p.step is None for p in self.paths)

    def evaluate(self, scope: Scope) -> ConditionResult:
        """Evaluate against ``scope``. Data problems (a missing path, mismatched types) become ``error``, never exceptions."""
        run = _Evaluation(self.text, scope)
        value: bool | None
        error: str | None = None
        try:
            value = run.truth(self._root)
        except _Failed as exc:
            value, error = None, str(exc)
        pieces: list[str] = []
        at = 0
        for o in self._operands:
            pieces += [self.text[at : o.start], run.shown.get(o.index, UNEVALUATED)]
            at = o.end
        pieces.append(self.text[at:])
        return ConditionResult(self.text, "".join(pieces), value, error)


def parse_condition(text: str) -> Condition:
    """Parse a ``when`` condition; raise ExpressionError, with the position, if it is malformed.

    Surrounding whitespace is ignored, and positions refer to the stripped text.
    """
    text = text.strip()
    if not text:
        raise ExpressionError("empty condition", text, 0)
    parser = _ConditionParser(text)
    root = parser.condition()
    return Condition(text, root, tuple(parser.operands))
