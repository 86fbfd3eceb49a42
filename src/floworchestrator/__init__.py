"""floworchestrator: a code-first DAG workflow engine that runs inside your application.

Define flows as :class:`Flow` objects of :class:`Step` s, register handlers
with ``@orchestrator.handler("Type")``, and run them with an
:class:`Orchestrator` on a store (memory, SQLite) and a runtime (in-process).
"""

from ._status import RunStatus, StepResult, StepStatus
from .exceptions import (
    FlowDisabledError,
    FlowOrchestratorError,
    FlowValidationError,
    Problem,
    UnknownFlowError,
    UnknownRunError,
)
from .executor import StepContext
from .flow import After, Cron, Flow, ForEach, Manual, Retry, Step, WaitForSignal, Webhook
from .orchestrator import Orchestrator, Schedule
from .polling import poll

__version__ = "0.1.0"

__all__ = [
    "After",
    "Cron",
    "Flow",
    "FlowDisabledError",
    "FlowOrchestratorError",
    "FlowValidationError",
    "ForEach",
    "Manual",
    "Orchestrator",
    "Problem",
    "Retry",
    "RunStatus",
    "Schedule",
    "Step",
    "StepContext",
    "StepResult",
    "StepStatus",
    "UnknownFlowError",
    "UnknownRunError",
    "WaitForSignal",
    "Webhook",
    "__version__",
    "poll",
]
