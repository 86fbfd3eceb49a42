"""Shared fixtures: one parametrised store fixture over every backend (apscheduler's pattern)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from floworchestrator import Orchestrator
from floworchestrator.stores.base import Store
from floworchestrator.stores.memory import MemoryStore
from floworchestrator.stores.sqlite import SQLiteStore

STORES = ["memory", "sqlite"]


def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "test.db")
    raise ValueError(kind)


def store_url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = make_store(store_kind, tmp_path)
    await s.open()
    yield s
    await s.close()


OrchFactory = Callable[..., Orchestrator]


@pytest.fixture
async def make_orch(store_kind: str, tmp_path: Path) -> AsyncIterator[OrchFactory]:
    """Build orchestrators on this test's store; each is stopped at the end of the test."""
    made: list[Orchestrator] = []

    def factory(**kwargs: object) -> Orchestrator:
        kwargs.setdefault("cron", False)
        orch = Orchestrator(store=store_url(store_kind, tmp_path), runtime="inprocess", **kwargs)  # type: ignore[arg-type]
        made.append(orch)
        return orch

    yield factory
    for o in made:
        await o.stop()


Started = Callable[[Orchestrator], Awaitable[Orchestrator]]
