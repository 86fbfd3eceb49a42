"""Handlers: registration, the step context, and calling a handler safely.

A handler is ``async def`` or plain ``def`` (plain ones run in a worker
thread) taking up to two positional parameters: the step's inputs and a
:class:`StepContext`. If the first parameter is annotated with a pydantic
model, the resolved inputs are validated into it first.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from ._status import StepResult, StepStatus
from .exceptions import ConfigurationError, InputValidationError

__all__ = ["Handler", "HandlerFunc", "StepContext", "call_handler", "to_result"]

HandlerFunc = Callable[..., Any]
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
_RESULT_STATUSES = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.TIMED_OUT, StepStatus.PENDING)
log = logging.getLogger("floworchestrator.steps")


class StepContext:
    """What a handler knows about the step it is running."""

    __slots__ = ("_logger", "attempt", "first_started_at", "flow_id", "run_id", "step_key", "trigger_key")

    def __init__(
        self, run_id: str, flow_id: str, step_key: str, attempt: int, trigger_key: str, first_started_at: datetime | None = None
    ) -> None:
        self.run_id = run_id
        self.flow_id = flow_id
        self.step_key = step_key
        self.attempt = attempt
        """1 for the first execution of this step (since it started or was last retried from the API), 2 for the next..."""
        self.trigger_key = trigger_key
        """The name of the trigger that started the run (e.g. "manual", "nightly")."""
        self.first_started_at = first_started_at
        """When this step's first execution started (kept across polls, retries and restarts)."""
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry run_id, flow_id, step_key and attempt in ``extra``."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                log, {"run_id": self.run_id, "flow_id": self.flow_id, "step_key": self.step_key, "attempt": self.attempt}
            )
        return self._logger

    def __repr__(self) -> str:
        return f"StepContext(run_id={self.run_id!r}, step_key={self.step_key!r}, attempt={self.attempt})"


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and what we learnt from its signature."""

    type_name: str
    func: HandlerFunc
    is_async: bool
    arity: int
    input_model: type[BaseModel] | None

    @classmethod
    def inspect(cls, type_name: str, func: HandlerFunc) -> Handler:
        if not callable(func):
            raise ConfigurationError(f"handler for {type_name!r} is not callable")
        sig = inspect.signature(func)
        params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in params if p.default is p.empty]
        if len(required) > 2 or any(p.kind in (p.KEYWORD_ONLY,) and p.default is p.empty for p in sig.parameters.values()):
            raise ConfigurationError(f"handler for {type_name!r} must take (inputs, ctx), (inputs) or no parameters")
        model: type[BaseModel] | None = None
        if params:
            try:
                hints = typing.get_type_hints(func)
            except Exception:
                hints = {}
            ann = hints.get(params[0].name)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
        return cls(type_name, func, inspect.iscoroutinefunction(func), min(len(params), 2), model)


async def call_handler(handler: Handler, inputs: Any, ctx: StepContext) -> Any:
    """Validate inputs and call the handler; exceptions propagate to the caller."""
    if handler.input_model is not None:
        try:
            inputs = handler.input_model.model_validate(inputs if inputs is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or '(inputs)'}: {e['msg']}" for e in exc.errors()
            )
            raise InputValidationError(
                f"step {ctx.step_key!r}: inputs do not fit {handler.input_model.__name__}: {problems}"
            ) from None
    args = (inputs, ctx)[: handler.arity]
    if handler.is_async:
        return await handler.func(*args)
    return await asyncio.to_thread(functools.partial(handler.func, *args))


def to_result(value: Any) -> tuple[StepResult, str | None]:
    """Normalise a handler's return value; return it with its output as JSON.

    Plain values mean success; pydantic models are dumped to JSON-able data.
    A value that is not JSON-serialisable turns into a failure that says so.
    """
    result = value if isinstance(value, StepResult) else StepResult(StepStatus.SUCCEEDED, output=value)
    if result.status not in _RESULT_STATUSES:
        allowed = ", ".join(s.value for s in _RESULT_STATUSES)
        return StepResult.failed(f"a handler may end a step as {allowed}, not {result.status.value}"), None
    output = result.output
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json")
    if output is None:
        return result, None
    try:
        return result, _encode(output)
    except (TypeError, ValueError) as exc:
        return StepResult.failed(f"the step's output is not JSON-serialisable: {exc}"), None
