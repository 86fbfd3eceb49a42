"""Step and run statuses, and the result a handler may return."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class StepStatus(StrEnum):
    """Where a step of a run stands."""

    PENDING = "Pending"
    """Not ready yet (predecessors unfinished), queued for a worker, or waiting to be polled again."""
    RUNNING = "Running"
    """Claimed by a worker; its handler is running."""
    SUCCEEDED = "Succeeded"
    """The handler returned a result; its output is stored."""
    FAILED = "Failed"
    """The handler raised, returned a failure, or its output could not be stored."""
    SKIPPED = "Skipped"
    """Never ran: its predecessors ended in statuses it does not accept."""
    CANCELLED = "Cancelled"
    """Its run was cancelled before it finished."""
    TIMED_OUT = "TimedOut"
    """It ran out of time."""

    @property
    def is_final(self) -> bool:
        """True for every status a step does not leave on its own."""
        return self in FINAL_STEP_STATUSES


FINAL_STEP_STATUSES = frozenset(
    {
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
        StepStatus.TIMED_OUT,
    }
)


class RunStatus(StrEnum):
    """Where a run stands."""

    RUNNING = "Running"
    """At least one reachable step has no final status."""
    SUCCEEDED = "Succeeded"
    """Every step is final and every failure was handled by a successor."""
    FAILED = "Failed"
    """Every step is final and at least one failure was not handled."""
    CANCELLED = "Cancelled"
    """Cancelled by a user; no step starts after that."""
    TIMED_OUT = "TimedOut"
    """The run ran out of time."""

    @property
    def is_final(self) -> bool:
        """True for every status but Running."""
        return self is not RunStatus.RUNNING


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a handler may return to say explicitly how its step ended.

    Returning a plain JSON-serialisable value is the same as
    ``StepResult.succeeded(value)``; raising an exception is the same as
    ``StepResult.failed(str(exc))``.
    """

    status: StepStatus
    output: Any = None
    error: str | None = None
    delay: float = 0.0

    @classmethod
    def succeeded(cls, output: Any = None) -> StepResult:
        """The step succeeded with ``output`` (must be JSON-serialisable)."""
        return cls(StepStatus.SUCCEEDED, output=output)

    @classmethod
    def failed(cls, error: str, output: Any = None) -> StepResult:
        """The step failed with the message ``error``."""
        return cls(StepStatus.FAILED, output=output, error=error)

    @classmethod
    def timed_out(cls, error: str = "the step timed out") -> StepResult:
        """The step ran out of time (a polling step that gave up, for instance)."""
        return cls(StepStatus.TIMED_OUT, error=error)

    @classmethod
    def pending(cls, delay: float = 0.0) -> StepResult:
        """Not done yet: run the handler again after ``delay`` seconds without holding a worker."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        return cls(StepStatus.PENDING, delay=float(delay))
