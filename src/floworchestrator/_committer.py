"""Group commit: many concurrent single writes become one store batch.

Callers ``await committer.submit(op)``. Whenever a writer slot is free,
everything waiting goes to ``Store.apply`` as one batch — no timer, so a
lone write is never delayed, and under load each commit carries as many
operations as arrived while the previous one was being written. A store with
several writers (PostgreSQL) gets a long queue split between its free
writers, by run, so that they work in parallel instead of one taking
everything while the others idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .stores.base import Op, Result, Store

_MAX_BATCH = 512
#: A queue at least this long is split between free writers.
_SPLIT_MIN = 8


def _run_of(op: Op) -> str | None:
    """The run an op is about, if it is about one."""
    run = getattr(op, "run_id", None)
    return run if isinstance(run, str) else None


class GroupCommitter:
    """Turns awaited single ops into batches, with at most ``store.writers`` batches in flight."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: list[tuple[Op, asyncio.Future[Result]]] = []
        self._free = max(1, store.writers)
        self._starting = 0  # writer tasks spawned that have not taken a batch yet
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
        self._starting += 1
        task = asyncio.get_running_loop().create_task(self._write())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self) -> None:
        fresh = True
        try:
            while self._waiting:
                if fresh:
                    self._starting -= 1
                    fresh = False
                batch = self._take()
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
            if fresh:
                self._starting -= 1
            self._free += 1

    def _take(self) -> list[tuple[Op, asyncio.Future[Result]]]:
        """The next batch off the queue: all of it (up to the cap), or, while another writer is free and
        the queue is long, a share of it by run (an op on a run goes with the run's other ops, in order;
        an op about no one run goes with the first share), leaving the rest to that writer."""
        waiting = self._waiting
        n = min(len(waiting), _MAX_BATCH)
        others = self._free + self._starting  # writers that would take the rest
        share = n // (others + 1)
        if not others or n < _SPLIT_MIN:
            whole = waiting[:n]
            del waiting[:n]
            return whole
        sizes: dict[str | None, int] = {}
        for op, _ in waiting:
            run = _run_of(op)
            sizes[run] = sizes.get(run, 0) + 1
        taken: set[str | None] = set()
        count = 0
        for run, size in sizes.items():  # whole runs, in the order they first appear, up to the share
            if run is None or count < share:
                taken.add(run)
                count += size
        batch = [item for item in waiting if _run_of(item[0]) in taken]
        rest = [item for item in waiting if _run_of(item[0]) not in taken]
        if len(batch) > _MAX_BATCH:  # one long run's queue: keep the order, cap the batch
            rest = batch[_MAX_BATCH:] + rest
            batch = batch[:_MAX_BATCH]
        self._waiting = rest
        if rest and not self._starting:
            self._spawn()
        return batch

    async def drain(self) -> None:
        """Wait until every submitted op has been written."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
