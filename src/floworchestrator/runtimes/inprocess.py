"""The in-process runtime: an asyncio queue and a pool of worker tasks.

Zero infrastructure. Messages live in this process's memory, so a crash loses
the queue; the engine's recovery re-enqueues queued steps from the store on
the next start (``durable = False`` tells it to).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .base import Dispatcher, StepMessage, StepRunner

log = logging.getLogger(__name__)


class InProcessDispatcher(Dispatcher):
    """Runs steps as asyncio tasks in this process, at most ``concurrency`` at once."""

    durable = False

    def __init__(self, concurrency: int = 64) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._queue: asyncio.Queue[StepMessage | None] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._runner: StepRunner | None = None
        self._stopping = False

    async def start(self, runner: StepRunner) -> None:
        self._runner = runner
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"floworchestrator-worker-{i}") for i in range(self.concurrency)]

    async def enqueue(self, messages: Sequence[StepMessage], delay: float = 0.0) -> None:
        if self._stopping or self._runner is None:
            return  # not running here: the store still has them queued, and recovery delivers them
        if delay > 0:
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle

            def fire() -> None:
                self._timers.discard(handle)
                if not self._stopping:
                    for m in messages:
                        self._queue.put_nowait(m)

            handle = loop.call_later(delay, fire)
            self._timers.add(handle)
            return
        put = self._queue.put_nowait
        for m in messages:
            put(m)

    @property
    def queued(self) -> int:
        """Messages waiting for a free worker."""
        return self._queue.qsize()

    async def _work(self) -> None:
        get = self._queue.get
        runner = self._runner
        assert runner is not None
        while True:
            msg = await get()
            if msg is None:
                return
            try:
                await runner(msg)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling() > 0:
                    raise  # we are being stopped
                log.error("step %s of run %s was cancelled from inside", msg.step_key, msg.run_id,
                          extra={"run_id": msg.run_id, "step_key": msg.step_key})
            except Exception:
                # The engine catches handler errors itself; this is a store or
                # engine failure. The step's claim lapses and recovery retries it.
                log.exception("step %s of run %s could not be processed", msg.step_key, msg.run_id,
                              extra={"run_id": msg.run_id, "step_key": msg.step_key})

    async def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        for h in self._timers:
            h.cancel()
        self._timers.clear()
        # Drop what has not started: it is still queued in the store.
        while not self._queue.empty():
            self._queue.get_nowait()
        for _ in self._workers:
            self._queue.put_nowait(None)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("cancelled %d step(s) still running after %.1fs", len(pending), timeout)
                await asyncio.gather(*pending, return_exceptions=True)
        self._workers = []
        self._runner = None
