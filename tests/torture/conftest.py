"""Fixtures of the torture tests: a harness database and worker processes that are always cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from .harness import install

ROOT = Path(__file__).resolve().parents[2]  # the repository: workers run `python -m tests.torture.worker` from here


class Db:
    """The test's database, through one autocommit connection of the test process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def value(self, query: str, params: Any = None) -> Any:
        return self.rows(query, params)[0][0]

    def cut_store_connections(self) -> int:
        """pg_terminate_backend every connection of the workers' stores; return how many were cut."""
        return int(self.value(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'torture-store-%%'"
        ))

    async def wait_for(self, query: str, params: Any = None, *, until: Any = True, timeout: float = 60.0,
                       what: str = "") -> Any:
        """Poll ``query`` (its first value) until ``until(value)`` (or value == until); return the value."""
        check = until if callable(until) else (lambda v: v == until)
        end = time.monotonic() + timeout
        while True:
            v = self.value(query, params)
            if check(v):
                return v
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or query!r}; last value {v!r}")
            await asyncio.sleep(0.1)

    async def wait_runs_finished(self, count: int, timeout: float = 60.0) -> None:
        try:
            await self.wait_for("SELECT count(*) FROM fo_runs WHERE status <> 'Running'", until=lambda v: v >= count,
                                timeout=timeout, what=f"{count} finished runs")
        except AssertionError as exc:
            stuck = self.rows(
                "SELECT s.run_id, s.step_key, s.status, s.queued, s.generation, s.owner, s.lease_until - extract(epoch FROM now()) "
                "FROM fo_steps s JOIN fo_runs r USING (run_id) WHERE r.status = 'Running' AND s.status NOT IN "
                "('Succeeded', 'Failed', 'Skipped', 'Cancelled', 'TimedOut') ORDER BY 1, 2 LIMIT 20"
            )
            queue = self.rows("SELECT run_id, step_key, generation, not_before, source FROM torture_queue LIMIT 20")
            raise AssertionError(f"{exc}\nunfinished steps: {stuck}\nqueue: {queue}") from None

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def torture_db(pg_url: str) -> Iterator[Db]:
    """This test's own database (store schema from the template) with the harness's tables and trigger."""
    db = Db(pg_url)
    install(db.conn, copies=1)
    yield db
    db.close()


class Workers:
    """Worker processes of one test. Whatever is still alive at teardown is killed."""

    def __init__(self, db: Db, logdir: Path) -> None:
        self.db = db
        self.logdir = logdir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # by pid
        self._files: list[IO[bytes]] = []
        self._n = 0

    def spawn(self, n: int, **options: float | int) -> list[int]:
        pids = []
        for _ in range(n):
            i = self._n
            self._n += 1
            args = [sys.executable, "-m", "tests.torture.worker", self.db.url, "--index", str(i)]
            for k, v in options.items():
                args += [f"--{k.replace('_', '-')}", str(v)]
            out = open(self.logdir / f"worker-{i}.log", "wb")  # closed in close()
            self._files.append(out)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
            self.procs[proc.pid] = proc
            pids.append(proc.pid)
        return pids

    async def wait_ready(self, pids: list[int], timeout: float = 60.0) -> None:
        """Wait until each of ``pids`` has started its orchestrator (it records itself in torture_workers)."""
        end = time.monotonic() + timeout
        while True:
            ready = {r[0] for r in self.db.rows("SELECT pid FROM torture_workers")}
            if set(pids) <= ready:
                return
            dead = {p: self.procs[p].returncode for p in pids if self.procs[p].poll() is not None}
            if dead or time.monotonic() > end:
                raise AssertionError(f"workers not ready (exited: {dead})\n{self.logs()}")
            await asyncio.sleep(0.1)

    async def terminate(self, pid: int, timeout: float = 30.0) -> int:
        """SIGTERM one worker (a graceful stop) and return its exit code."""
        proc = self.procs[pid]
        proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(proc.wait, timeout)

    def kill(self, pid: int) -> None:
        """SIGKILL one worker: no shutdown, no clean-up, connections dropped by the kernel."""
        proc = self.procs[pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    async def stop_all(self, timeout: float = 30.0) -> dict[int, int]:
        """SIGTERM every live worker (a graceful stop) and return each one's exit code."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        for p in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(p.wait, max(0.1, end - time.monotonic()))
        return {p.pid: (p.returncode if p.returncode is not None else -999) for p in live}

    def logs(self) -> str:
        parts = []
        for path in sorted(self.logdir.glob("worker-*.log")):
            text = path.read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {path.name} ---\n{text[-6000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for f in self._files:
            f.close()


@pytest.fixture
def workers(torture_db: Db, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    pool = Workers(torture_db, tmp_path)
    yield pool
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(pool.logs())
    pool.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
