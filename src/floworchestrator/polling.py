"""The polling helper: turn "fetch the state of something" into a step that waits for it.

    @orchestrator.handler("AwaitShipment")
    @poll(interval=30, timeout=3600, until="state", equals=["delivered"], fails_on=["lost"])
    async def shipment(inputs: dict, ctx: StepContext) -> dict:
        return await carrier.get(inputs["tracking"])      # e.g. {"state": "in_transit", ...}

Each call of the handler is one attempt. While the result is not a success
the step goes back to Pending and is run again after ``interval`` seconds,
without holding a worker. Its state — when the first attempt started and how
many attempts ran — lives in the store, so it survives restarts and moves
between workers.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ._status import StepResult
from .executor import Handler, HandlerFunc, StepContext

__all__ = ["poll"]

_MISSING = object()


def _get(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def poll(
    *,
    interval: float,
    timeout: float | None = None,
    min_attempts: int = 1,
    until: str | None = None,
    equals: Sequence[Any] = (True,),
    fails_on: Sequence[Any] = (),
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Make a handler that fetches a result into one that polls until the result is a success.

    - ``until``: a dotted path into the result (``"job.state"``, ``"items.0.ok"``);
      the result is a success when the value there is one of ``equals``
      (default ``True``). Without ``until``, any result but ``None`` is a success.
    - ``fails_on``: values at ``until`` that end the step as Failed at once.
    - ``timeout``: seconds since the first attempt after which the step ends
      TimedOut — but never before ``min_attempts`` attempts were made.
    - The step's output is the successful result.
    """
    if interval < 0:
        raise ValueError("interval must be >= 0")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0")
    if min_attempts < 1:
        raise ValueError("min_attempts must be >= 1")

    def decorate(func: HandlerFunc) -> HandlerFunc:
        inner = Handler.inspect(getattr(func, "__name__", "poll"), func)

        @functools.wraps(func)
        async def polled(inputs: Any, ctx: StepContext) -> StepResult:
            args = (inputs, ctx)[: inner.arity]
            result = await func(*args) if inner.is_async else await asyncio.to_thread(func, *args)
            if isinstance(result, StepResult):
                return result  # the handler decided for itself
            value = result if until is None else _get(result, until)
            if until is not None and value in fails_on:
                return StepResult.failed(f"polling stopped: {until} is {value!r}", output=result)
            if (until is None and result is not None) or (until is not None and value in equals):
                return StepResult.succeeded(result)
            started = ctx.first_started_at or datetime.now(UTC)
            elapsed = (datetime.now(UTC) - started).total_seconds()
            if timeout is not None and elapsed >= timeout and ctx.attempt >= min_attempts:
                seen = "no result" if value is _MISSING or value is None else f"{until or 'result'} = {value!r}"
                return StepResult.timed_out(f"gave up polling after {ctx.attempt} attempts in {elapsed:.0f}s ({seen})")
            return StepResult.pending(interval)

        # The engine reads the signature: keep the input model, always pass the context.
        del polled.__wrapped__
        polled.__annotations__ = {"inputs": inner.input_model or Any, "ctx": StepContext, "return": StepResult}
        return polled

    return decorate
