"""The group committer: batches, writer slots, and the split of a long queue between free writers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from floworchestrator._committer import GroupCommitter


@dataclass(frozen=True)
class _Op:
    run_id: str
    n: int


class _FakeStore:
    """Records each batch; answers every op with itself. ``writers`` batches may be in flight."""

    def __init__(self, writers: int) -> None:
        self.writers = writers
        self.batches: list[list[Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def apply(self, ops: Sequence[Any]) -> list[Any]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.batches.append(list(ops))
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return list(ops)


async def _submit_all(store: _FakeStore, ops: list[_Op]) -> list[Any]:
    committer = GroupCommitter(store)  # type: ignore[arg-type]
    results = await asyncio.gather(*(committer.submit(op) for op in ops))  # type: ignore[arg-type]
    await committer.drain()
    return list(results)


async def test_a_long_queue_is_split_by_run_between_free_writers() -> None:
    store = _FakeStore(writers=2)
    ops = [_Op(f"r{i % 4}", i) for i in range(40)]
    assert await _submit_all(store, ops) == ops
    assert store.most_in_flight == 2
    assert len(store.batches) >= 2
    for batch in store.batches:
        for run in {op.run_id for op in batch}:
            mine = [op.n for op in batch if op.run_id == run]
            assert mine == sorted(mine)  # a run's ops keep their order
    # Each run's ops went to one writer, not both.
    homes = {run: {i for i, b in enumerate(store.batches) if any(op.run_id == run for op in b)} for run in ("r0", "r1", "r2", "r3")}
    assert all(len(h) == 1 for h in homes.values()), homes


async def test_one_writer_takes_the_whole_queue() -> None:
    store = _FakeStore(writers=1)
    ops = [_Op(f"r{i % 4}", i) for i in range(40)]
    assert await _submit_all(store, ops) == ops
    assert store.most_in_flight == 1
    assert [op for b in store.batches for op in b] == ops


async def test_a_short_queue_is_not_split() -> None:
    store = _FakeStore(writers=2)
    ops = [_Op(f"r{i}", i) for i in range(3)]
    assert await _submit_all(store, ops) == ops
    assert [len(b) for b in store.batches] == [3]
