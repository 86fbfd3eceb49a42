"""Exceptions raised by floworchestrator.

    FlowOrchestratorError
    ├── FlowValidationError      a flow (or several) failed registration checks
    ├── ExpressionError          an ``@`` expression does not parse
    ├── UnknownFlowError         no flow has this id
    ├── UnknownRunError          no run has this id
    ├── UnknownStepError         the run has no step with this key
    ├── InvalidOperationError    the operation does not apply in the current state
    │   └── FlowDisabledError    the flow is disabled, so no run was started
    ├── InputValidationError     a step's inputs do not fit its handler's model
    ├── ConfigurationError       the orchestrator was set up wrongly
    └── StoreError               the store failed
        ├── StoreUnavailableError     the store cannot be reached
        └── SchemaVersionError        the database schema does not fit this code
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FlowOrchestratorError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a flow definition."""

    flow_id: str
    message: str
    step: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"flow {self.flow_id!r}"
        if self.step is not None:
            where += f", step {self.step!r}"
        if self.field is not None:
            where += f", {self.field}"
        return f"{where}: {self.message}"


class FlowValidationError(FlowOrchestratorError):
    """One or more flows failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in flow definitions:\n{lines}")


class ExpressionError(FlowOrchestratorError):
    """An expression does not parse."""

    def __init__(self, message: str, text: str, position: int | None = None) -> None:
        self.text = text
        self.position = position
        at = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{at} in {text!r}")


class UnknownFlowError(FlowOrchestratorError):
    """No flow is registered under this id."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        super().__init__(f"unknown flow {flow_id!r}")


class UnknownRunError(FlowOrchestratorError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"unknown run {run_id!r}")


class UnknownStepError(FlowOrchestratorError):
    """The run has no step with this key."""

    def __init__(self, run_id: str, step_key: str) -> None:
        self.run_id = run_id
        self.step_key = step_key
        super().__init__(f"run {run_id!r} has no step {step_key!r}")


class InvalidOperationError(FlowOrchestratorError):
    """The operation does not apply to the run or step in its current state."""


class InputValidationError(FlowOrchestratorError):
    """A step's resolved inputs do not fit the pydantic model of its handler."""


class ConfigurationError(FlowOrchestratorError):
    """The orchestrator was configured wrongly (store, runtime, handlers)."""


class StoreError(FlowOrchestratorError):
    """The store failed; the message says what it was doing."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached."""


class SchemaVersionError(StoreError):
    """The database schema version does not fit this version of floworchestrator."""


class FlowDisabledError(InvalidOperationError):
    """The flow is disabled, so no run was started."""

    def __init__(self, flow_id: str) -> None:
        self.flow_id = flow_id
        super().__init__(f"flow {flow_id!r} is disabled; no run was started")
