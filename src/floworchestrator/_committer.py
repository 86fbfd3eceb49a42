"""Group commit: many concurrent single writes become one store batch.

Callers ``await committer.submit(op)``. Whenever a writer slot is free,
everything waiting goes to ``Store.apply`` as one batch — no timer, so a
lone write is never delayed, and under load each commit carries as many
operations as arrived while the previous one was being written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .stores.base import Op, Result, Store

_MAX_BATCH = 512


class GroupCommitter:
    """Turns awaited single ops into batches, with at most ``store.writers`` batches in flight."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: list[tuple[Op, asyncio.Future[Result]]] = []
        self._free = max(1, store.writers)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, op: Op) -> Result:
        """Apply one op in the next batch; return its result or raise what the batch raised."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((op, fut))
        if self._free:
            self._spawn()
        return await fut

    async def submit_many(self, ops: Sequence[Op]) -> list[Result]:
        """Apply several ops (possibly across batches); results in order."""
        return list(await asyncio.gather(*(self.submit(op) for op in ops)))

    def _spawn(self) -> None:
        self._free -= 1
        task = asyncio.get_running_loop().create_task(self._write())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:_MAX_BATCH]
                del self._waiting[:_MAX_BATCH]
                try:
                    results = await self._store.apply([op for op, _ in batch])
                except BaseException as exc:  # the whole batch rolled back: every caller learns why
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                        raise
                    continue
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        if isinstance(res, Exception):
                            fut.set_exception(res)
                        else:
                            fut.set_result(res)
        finally:
            self._free += 1

    async def drain(self) -> None:
        """Wait until every submitted op has been written."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
