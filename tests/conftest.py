"""Shared fixtures: one parametrised store fixture over every backend (apscheduler's pattern).

PostgreSQL tests run against ``FLOWORCHESTRATOR_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, used only to create and drop
databases). Each test gets its own database, cloned from a template that holds
the schema and is created once per session (procrastinate's pattern); without
a reachable server (or psycopg) the postgres variants are skipped, unless
``FLOWORCHESTRATOR_TEST_PG`` is set, then they fail.
``FLOWORCHESTRATOR_TEST_STORES=memory,sqlite`` limits the backends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from floworchestrator import Orchestrator
from floworchestrator.stores.base import Store
from floworchestrator.stores.memory import MemoryStore
from floworchestrator.stores.sqlite import SQLiteStore

STORES = [s for s in os.environ.get("FLOWORCHESTRATOR_TEST_STORES", "memory,sqlite,postgres").split(",") if s]

PG_BASE_URL = os.environ.get("FLOWORCHESTRATOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_PG_URLS: dict[Path, str] = {}
"""The database of each running postgres test, by its tmp_path (what make_store and store_url get)."""


def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "test.db")
    if kind == "postgres":
        from floworchestrator.stores.postgres import PostgresStore

        return PostgresStore(pg_url_for(tmp_path))
    raise ValueError(kind)


def store_url(kind: str, tmp_path: Path) -> str:
    if kind == "postgres":
        return pg_url_for(tmp_path)
    return "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'test.db'}"


def pg_url_for(tmp_path: Path) -> str:
    try:
        return _PG_URLS[tmp_path]
    except KeyError:
        raise LookupError("a postgres store needs the test's database: request the store_kind (or pg_url) fixture") from None


# --- PostgreSQL: a template database per session, a clone per test ----------------


class PgServer:
    """Creates and drops this session's databases through one admin connection."""

    def __init__(self, base_url: str) -> None:
        import psycopg

        self._base = urlsplit(base_url)
        if self._base.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"FLOWORCHESTRATOR_TEST_PG must be a postgresql:// URL, not {base_url!r}")
        self.conn = psycopg.connect(base_url, autocommit=True, connect_timeout=5)
        # Unique per session: several sessions (or people) may share the server.
        self.prefix = f"fo_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._n = itertools.count(1)
        self.template: str | None = None

    def url(self, dbname: str) -> str:
        return urlunsplit(self._base._replace(path="/" + dbname))

    def create(self, template: str | None = None, name: str | None = None) -> str:
        """A new database: empty, or a copy of ``template``."""
        name = name or f"{self.prefix}_{next(self._n)}"
        self.conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop(self, name: str) -> None:
        """Drop a database, cutting the connections a test left open."""
        self.conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def make_template(self) -> str:
        from floworchestrator.stores.postgres import PostgresStore

        name = self.create(name=f"{self.prefix}_template")

        async def migrate() -> None:
            store = PostgresStore(self.url(name))
            await store.open()
            await store.close()

        # A fresh event loop in a thread of its own: the session may already be inside one.
        errors: list[BaseException] = []
        t = threading.Thread(target=lambda: _catch(errors, lambda: asyncio.run(migrate())))
        t.start()
        t.join()
        if errors:
            raise errors[0]
        self.conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true')
        self.template = name
        return name

    def close(self) -> None:
        if self.template is not None:
            self.conn.execute(f'ALTER DATABASE "{self.template}" WITH IS_TEMPLATE false')
            self.drop(self.template)
        self.conn.close()


def _catch(errors: list[BaseException], fn: Callable[[], Any]) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server the postgres tests use (skipped when there is none)."""
    try:
        server = PgServer(PG_BASE_URL)
    except Exception as exc:  # no driver, no server
        if "FLOWORCHESTRATOR_TEST_PG" in os.environ:
            pytest.fail(f"PostgreSQL at FLOWORCHESTRATOR_TEST_PG is not usable: {exc}")
        pytest.skip(f"PostgreSQL not available ({PG_BASE_URL}): {exc}")
    server.make_template()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: PgServer, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, cloned from the session's template (schema applied)."""
    assert pg_server.template is not None
    name = pg_server.create(template=pg_server.template)
    url = pg_server.url(name)
    _PG_URLS[tmp_path] = url
    yield url
    del _PG_URLS[tmp_path]
    pg_server.drop(name)


@pytest.fixture
def pg_empty_url(pg_server: PgServer) -> Iterator[str]:
    """An empty database of this test's own (no schema)."""
    name = pg_server.create()
    yield pg_server.url(name)
    pg_server.drop(name)


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind == "postgres":
        request.getfixturevalue("pg_url")  # this test's own database, dropped after the test
    return kind


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
