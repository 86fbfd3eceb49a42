"""The runtime contract: how the engine hands a step to something that runs it.

The engine calls a :class:`Dispatcher` and nothing else. A runtime (in-process
asyncio, Celery, RabbitMQ) implements it and, for every message it delivers,
calls ``engine.run_step(message)`` in some process that has the same
orchestrator (flows and handlers) loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepMessage:
    """What travels to a worker: identifiers only.

    Everything else (inputs, trigger data, earlier outputs, the run's
    manifest) the worker reads from the store when it claims the step, so a
    message is valid in any process and stale copies are harmless: the claim
    accepts only the current ``generation`` once.
    """

    flow_id: str
    run_id: str
    step_key: str
    generation: int

    def to_dict(self) -> dict[str, str | int]:
        return {"flow_id": self.flow_id, "run_id": self.run_id, "step_key": self.step_key, "generation": self.generation}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> StepMessage:
        return cls(str(d["flow_id"]), str(d["run_id"]), str(d["step_key"]), int(str(d["generation"])))


StepRunner = Callable[[StepMessage], Awaitable[None]]


class Dispatcher(ABC):
    """Delivers step messages to workers.

    Contract:
    - ``start(runner)`` is called once, before any ``enqueue``; from then on
      the runtime calls ``await runner(message)`` for each message it
      delivers, at most ``concurrency`` at a time per process. ``runner``
      never raises for a step's own failure; if it raises, the runtime may
      deliver the message again (the engine makes redelivery harmless).
    - ``enqueue(messages, delay)`` hands messages over for delivery after
      ``delay`` seconds (0: now). It must not block on the step running. A
      message may be delivered more than once and in any order; it must not
      be lost once ``enqueue`` has returned, unless the process dies (the
      engine's recovery re-enqueues what a dead process held).
    - ``stop(timeout)`` stops taking new messages, lets running ones finish
      for up to ``timeout`` seconds, then cancels the rest; a cancelled
      step's claim lapses and recovery runs it again.
    - The runtime must not pass anything but the message to the runner: no
      shared objects, so that a worker in another process behaves the same.
    """

    #: True when messages survive the enqueuing process (a broker); False for in-memory queues.
    durable: bool = False

    @abstractmethod
    async def start(self, runner: StepRunner) -> None:
        """Begin delivering messages to ``runner``."""

    @abstractmethod
    async def enqueue(self, messages: Sequence[StepMessage], delay: float = 0.0) -> None:
        """Deliver ``messages`` after ``delay`` seconds."""

    @abstractmethod
    async def stop(self, timeout: float = 30.0) -> None:
        """Stop delivering; wait up to ``timeout`` for running steps, then cancel them."""
