"""``@`` expressions over the trigger data and earlier steps (DESIGN §3).

A value expression starts with ``@`` and is one path:

    @triggerBody()                     the whole trigger body
    @triggerBody()?.order.items[0].sku  a path; ``?.`` is null-safe
    @triggerHeaders()['X-Id']          header names are case-insensitive
    @steps('fetch').output.total       an earlier step's output (also .status, .error)

Any string not starting with ``@`` is a literal; ``@@text`` is the literal
``@text``. Values that arrive at run time (trigger bodies, step outputs) are
data and are never parsed, even when they start with ``@``.

``a.b`` on a null value, or on a missing key, is an error that fails the step;
``a?.b`` yields null instead and null-safety carries through the rest of the
path, as in JavaScript.

Expressions are parsed once, when a flow is registered; ``resolve`` runs just
before the handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ExpressionError

__all__ = [
    "InputTemplate",
    "Path",
    "ResolutionError",
    "Scope",
    "StepView",
    "compile_inputs",
    "parse_value",
]


class ResolutionError(Exception):
    """An expression could not be evaluated against a run's data."""


@dataclass(frozen=True, slots=True)
class StepView:
    """What an expression may see of an earlier step."""

    status: str
    output: Any = None
    error: str | None = None


@dataclass(slots=True)
class Scope:
    """The data expressions resolve against."""

    trigger_body: Any = None
    trigger_headers: Mapping[str, str] = field(default_factory=dict)
    steps: Mapping[str, StepView] = field(default_factory=dict)


# --- tokenizer -------------------------------------------------------------

_TOKEN_SOURCE = r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\?\.|\?\[|[.\[\]()@])
"""
_TOKEN = re.compile(_TOKEN_SOURCE, re.VERBOSE)
# Conditions (conditions.py) also have comparison and logical operators; a
# value expression keeps rejecting them as unexpected characters.
_CONDITION_TOKEN = re.compile(r"(?P<operator>==|!=|>=|<=|&&|\|\||[<>!])|" + _TOKEN_SOURCE, re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    value: str
    pos: int


def _tokenize(text: str, pattern: re.Pattern[str] = _TOKEN) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = pattern.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", text, pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return toks


# --- paths -----------------------------------------------------------------

_ROOTS = {"triggerBody": 0, "triggerHeaders": 0, "steps": 1}
_STEP_FIELDS = ("output", "status", "error")


@dataclass(frozen=True, slots=True)
class _Access:
    key: str | int
    safe: bool


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed value expression: a root and a list of accesses."""

    text: str
    root: str
    step: str | None
    accesses: tuple[_Access, ...]

    def evaluate(self, scope: Scope) -> Any:
        """Evaluate against ``scope``; raise ResolutionError when the path does not exist."""
        value: Any
        accesses = self.accesses
        if self.root == "triggerBody":
            value = scope.trigger_body
        elif self.root == "triggerHeaders":
            value = {k.lower(): v for k, v in scope.trigger_headers.items()}
            if accesses and isinstance(accesses[0].key, str):
                # Header names are case-insensitive, so look them up as such.
                accesses = (_Access(accesses[0].key.lower(), accesses[0].safe), *accesses[1:])
        else:
            assert self.step is not None
            view = scope.steps.get(self.step)
            if view is None:
                raise ResolutionError(f"{self.text}: step {self.step!r} has not run in this run")
            if not accesses:
                value = {"status": view.status, "output": view.output, "error": view.error}
            else:
                first = accesses[0].key
                value = getattr(view, str(first))
                accesses = accesses[1:]
        for acc in accesses:
            if value is None:
                if acc.safe:
                    return None
                raise ResolutionError(f"{self.text}: cannot read {acc.key!r} of null (use ?. to allow null)")
            try:
                if isinstance(acc.key, int):
                    if not isinstance(value, list):
                        raise ResolutionError(f"{self.text}: cannot index {type(value).__name__} with [{acc.key}]")
                    value = value[acc.key]
                else:
                    if not isinstance(value, dict):
                        raise ResolutionError(f"{self.text}: cannot read {acc.key!r} of {type(value).__name__}")
                    value = value[acc.key]
            except (KeyError, IndexError):
                if acc.safe:
                    return None
                raise ResolutionError(f"{self.text}: {acc.key!r} not found (use ?. to allow a missing value)") from None
        return value


class _Parser:
    def __init__(self, text: str, pattern: re.Pattern[str] = _TOKEN) -> None:
        self.text = text
        self.toks = _tokenize(text, pattern)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str | None = None, value: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None:
            expected = value or kind or "more"
            raise ExpressionError(f"unexpected end, expected {expected!r}", self.text, len(self.text))
        if (kind is not None and tok.kind != kind) or (value is not None and tok.value != value):
            expected = value or kind or "more"
            raise ExpressionError(f"expected {expected!r} but found {tok.value!r}", self.text, tok.pos)
        self.i += 1
        return tok

    def path(self) -> Path:
        """Parse one path from the current token on; its ``text`` is the part of ``self.text`` it spans."""
        start = self.take("op", "@").pos
        name = self.take("name")
        if name.value not in _ROOTS:
            roots = ", ".join(f"{r}()" for r in _ROOTS)
            raise ExpressionError(f"unknown function {name.value!r} (expected one of {roots})", self.text, name.pos)
        self.take("op", "(")
        step: str | None = None
        if _ROOTS[name.value]:
            step = _unquote(self.take("string").value)
            if not step:
                raise ExpressionError("steps() needs a step key", self.text, name.pos)
        close = self.take("op", ")")
        accesses: list[_Access] = []
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.value in (".", "?.", "[", "?["):
            self.i += 1
            safe = tok.value.startswith("?")
            if tok.value in (".", "?.") and (nxt := self.peek()) is not None and nxt.value == "[":
                self.i += 1  # `?.[0]` is the same as `?[0]`
                tok = _Tok("op", "[", nxt.pos)
            if tok.value.endswith("["):
                inner = self.take()
                if inner.kind == "string":
                    key: str | int = _unquote(inner.value)
                elif inner.kind == "number" and re.fullmatch(r"\d+", inner.value):
                    key = int(inner.value)
                else:
                    raise ExpressionError("an index must be a quoted name or a whole number", self.text, inner.pos)
                self.take("op", "]")
            else:
                key = self.take("name").value
            accesses.append(_Access(key, safe))
        if step is not None:
            if not accesses or accesses[0].key not in _STEP_FIELDS:
                raise ExpressionError(
                    f"steps({step!r}) must be followed by .output, .status or .error", self.text, close.pos + 1
                )
        last = self.toks[self.i - 1]
        return Path(self.text[start : last.pos + len(last.value)], name.value, step, tuple(accesses))


def parse_value(text: str) -> Path:
    """Parse one value expression such as ``@triggerBody()?.a.b[0]``; raise ExpressionError."""
    text = text.strip()  # positions in errors refer to this text
    parser = _Parser(text)
    path = parser.path()
    if (extra := parser.peek()) is not None:
        raise ExpressionError(f"unexpected {extra.value!r} after the expression", text, extra.pos)
    return path


# --- input templates ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lit:
    value: Any


@dataclass(frozen=True, slots=True)
class _Dict:
    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[Any, ...]


_Node = Path | _Lit | _Dict | _List


def _compile(value: Any, where: str, problems: list[tuple[str, str]]) -> _Node:
    if isinstance(value, str):
        if value.startswith("@@"):
            return _Lit(value[1:])
        if value.startswith("@"):
            try:
                return parse_value(value)
            except ExpressionError as exc:
                problems.append((where, str(exc)))
                return _Lit(None)
        return _Lit(value)
    if isinstance(value, Mapping):
        return _Dict(tuple((str(k), _compile(v, f"{where}.{k}", problems)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return _List(tuple(_compile(v, f"{where}[{i}]", problems) for i, v in enumerate(value)))
    return _Lit(value)


def _resolve(node: _Node, scope: Scope) -> Any:
    if isinstance(node, _Lit):
        return node.value
    if isinstance(node, Path):
        return node.evaluate(scope)
    if isinstance(node, _Dict):
        return {k: _resolve(v, scope) for k, v in node.items}
    return [_resolve(v, scope) for v in node.items]


def _walk(node: _Node) -> list[Path]:
    if isinstance(node, Path):
        return [node]
    if isinstance(node, _Dict):
        return [p for _, v in node.items for p in _walk(v)]
    if isinstance(node, _List):
        return [p for v in node.items for p in _walk(v)]
    return []


@dataclass(frozen=True, slots=True)
class InputTemplate:
    """A step's ``inputs`` with every expression parsed; ``resolve`` builds a fresh value each time."""

    root: _Node
    paths: tuple[Path, ...]

    @property
    def step_refs(self) -> frozenset[str]:
        """Keys of the steps whose data the inputs read."""
        return frozenset(p.step for p in self.paths if p.step is not None)

    @property
    def uses_trigger(self) -> bool:
        """True when the inputs read the trigger body or headers."""
        return any(p.step is None for p in self.paths)

    @property
    def is_constant(self) -> bool:
        """True when the inputs hold no expression."""
        return not self.paths

    def resolve(self, scope: Scope) -> Any:
        """Evaluate every expression against ``scope``; raise ResolutionError."""
        return _resolve(self.root, scope)


def compile_inputs(value: Any, where: str = "inputs") -> tuple[InputTemplate, list[tuple[str, str]]]:
    """Compile a literal/expression tree; return the template and a list of (where, problem)."""
    problems: list[tuple[str, str]] = []
    root = _compile(value, where, problems)
    return InputTemplate(root, tuple(_walk(root))), problems
