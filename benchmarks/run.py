#!/usr/bin/env python
"""The benchmark harness (see benchmarks/README.md and /work/shared/BENCHMARKS.md).

Runs workloads W1, W1-seq, W2, W3 and W4 on each store with the in-process runtime,
and the plain-asyncio floor for the same shapes in the same invocation, then
prints median / min / max of ``--repeat`` measurements with the ratio to the
floor. ``--json`` writes every sample.

    python benchmarks/run.py
    python benchmarks/run.py --stores memory --workloads W1 --repeat 5
    python benchmarks/run.py --stores sqlite --history 10000 --json out.json
    python benchmarks/run.py --stores memory --workloads W1 --profile w1.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import glob
import importlib.util
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import floworchestrator
from floworchestrator import Flow, ForEach, Orchestrator, RunStatus, Step, StepContext, StepResult

CHAIN_LEN = 10
FAN_WIDTH = 100
CHAIN_FLOW = "bench-chain"
FAN_FLOW = "bench-fan"
FOREACH_ITEMS = 1_000
FOREACH_CONCURRENCY = 50
FOREACH_FLOW = "bench-foreach"
POLL_TIMES = 20
POLL_FLOW = "bench-poll"
HISTORY_BURST = 200

# -- the work itself -------------------------------------------------------------


async def noop() -> dict[str, bool]:
    """Every step's handler: a no-op returning a small dict."""
    return {"ok": True}


async def poll_twenty(inputs: Any, ctx: StepContext) -> StepResult | dict[str, Any]:
    """W4's handler: not done (``pending``, no delay) on attempts 1…20, done on attempt 21."""
    if ctx.attempt <= POLL_TIMES:
        return StepResult.pending(delay=0)
    return {"ok": True, "attempts": ctx.attempt}


def chain_flow() -> Flow:
    """s0 → s1 → … → s9."""
    return Flow(CHAIN_FLOW, {f"s{i}": Step("noop", run_after={f"s{i - 1}": []} if i else {}) for i in range(CHAIN_LEN)})


def fan_flow() -> Flow:
    """start → p0 … p99 (in parallel) → join."""
    steps = {"start": Step("noop")}
    steps.update({f"p{i}": Step("noop", run_after={"start": []}) for i in range(FAN_WIDTH)})
    steps["join"] = Step("noop", run_after={f"p{i}": [] for i in range(FAN_WIDTH)})
    return Flow(FAN_FLOW, steps)


def foreach_flow() -> Flow:
    """One ForEach over the trigger body's ``items``, 50 at a time, one no-op child per item."""
    return Flow(FOREACH_FLOW, {"each": ForEach("@triggerBody()?.items", {"work": Step("noop")},
                                               concurrency=FOREACH_CONCURRENCY)})


def poll_flow() -> Flow:
    """One step that reschedules itself 20 times with a 0 s delay, then succeeds."""
    return Flow(POLL_FLOW, {"poll": Step("poll-twenty")})


@dataclass(frozen=True)
class Workload:
    id: str
    flow_id: str
    steps_per_run: int
    runs: int
    sequential: bool
    description: str
    body: Any = None
    """The trigger body of every run."""
    reschedules_per_run: int = 0
    """W4: how many times each run's step goes back to Pending (the reported unit)."""


WORKLOADS = {
    w.id: w
    for w in (
        Workload("W1", CHAIN_FLOW, CHAIN_LEN, 200, False, "10-step chain, 200 runs triggered at once, then awaited"),
        Workload("W1-seq", CHAIN_FLOW, CHAIN_LEN, 50, True, "10-step chain, 50 runs one at a time"),
        Workload("W2", FAN_FLOW, FAN_WIDTH + 2, 20, False, "1 → 100 parallel → 1 join, 20 runs triggered at once"),
        # Steps per run: the 1,000 children and the ForEach step itself.
        Workload("W3", FOREACH_FLOW, FOREACH_ITEMS + 1, 3, False,
                 "ForEach over 1,000 items, concurrency 50, 3 runs triggered at once",
                 body={"items": list(range(FOREACH_ITEMS))}),
        Workload("W4", POLL_FLOW, 1, 100, False,
                 "a step pending 20 times (delay 0) then done, 100 runs triggered at once",
                 reschedules_per_run=POLL_TIMES),
    )
}

#: What each workload reports, the first being its headline; (key, label, higher is better).
METRICS: dict[str, list[tuple[str, str, bool]]] = {
    "W1": [("steps_per_s", "steps/s", True), ("runs_per_s", "runs/s", True), ("cpu_us_per_step", "CPU µs/step", False)],
    "W1-seq": [("p50_ms", "p50 ms", False), ("p90_ms", "p90 ms", False)],
    "W2": [("steps_per_s", "steps/s", True), ("cpu_us_per_step", "CPU µs/step", False)],
    "W3": [("steps_per_s", "steps/s", True), ("cpu_us_per_step", "CPU µs/step", False)],
    "W4": [("reschedules_per_s", "reschedules/s", True), ("cpu_us_per_reschedule", "CPU µs/resched", False)],
}

#: BENCHMARKS.md "Targets": (minimum, goal) per store and headline metric.
TARGETS: dict[str, dict[str, tuple[float, float]]] = {
    "memory": {"W1": (20_000, 40_000), "W1-seq": (1.0, 0.5), "W2": (20_000, 40_000)},
    "sqlite": {"W1": (3_000, 10_000), "W1-seq": (10.0, 5.0), "W2": (3_000, 10_000)},
    "postgres": {"W1": (2_000, 7_000), "W1-seq": (15.0, 10.0), "W2": (2_000, 7_000)},
}


def _sample(wl: Workload, elapsed: float, cpu: float, latencies: list[float] | None) -> dict[str, float]:
    steps = wl.runs * wl.steps_per_run
    out = {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "steps_per_s": steps / elapsed,
        "runs_per_s": wl.runs / elapsed,
        "cpu_us_per_step": cpu / steps * 1e6,
    }
    if wl.reschedules_per_run:
        n = wl.runs * wl.reschedules_per_run
        out["reschedules_per_s"] = n / elapsed
        out["cpu_us_per_reschedule"] = cpu / n * 1e6
    if latencies is not None:
        ms = sorted(x * 1000 for x in latencies)
        out["p50_ms"] = statistics.median(ms)
        out["p90_ms"] = statistics.quantiles(ms, n=10, method="inclusive")[8]
        out["mean_ms"] = statistics.fmean(ms)
    return out


# -- the plain-asyncio floor ------------------------------------------------------------
# Each step runs as its own task (what any scheduler does at the least), a chain
# awaits them one after another and a fan-out gathers them; a ForEach is a
# semaphore-limited gather; a polling step yields to the loop once per reschedule.
# Nothing is stored.


async def _floor_chain() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(CHAIN_LEN):
        await loop.create_task(noop())


async def _floor_fan() -> None:
    loop = asyncio.get_running_loop()
    await loop.create_task(noop())
    await asyncio.gather(*(noop() for _ in range(FAN_WIDTH)))
    await loop.create_task(noop())


async def _floor_foreach() -> None:
    sem = asyncio.Semaphore(FOREACH_CONCURRENCY)

    async def item() -> dict[str, bool]:
        async with sem:
            return await noop()

    await asyncio.gather(*(item() for _ in range(FOREACH_ITEMS)))


async def _floor_poll() -> None:
    for _ in range(POLL_TIMES):
        await asyncio.sleep(0)


FLOOR_RUN: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
    CHAIN_FLOW: _floor_chain, FAN_FLOW: _floor_fan, FOREACH_FLOW: _floor_foreach, POLL_FLOW: _floor_poll,
}


async def measure_floor(wl: Workload, profiler: cProfile.Profile | None = None) -> dict[str, float]:
    one = FLOOR_RUN[wl.flow_id]
    loop = asyncio.get_running_loop()
    gc.collect()
    if wl.sequential:
        latencies = []
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(wl.runs):
            s = time.perf_counter()
            await loop.create_task(one())
            latencies.append(time.perf_counter() - s)
        return _sample(wl, time.perf_counter() - t0, time.process_time() - c0, latencies)
    c0, t0 = time.process_time(), time.perf_counter()
    tasks = [loop.create_task(one()) for _ in range(wl.runs)]
    await asyncio.gather(*tasks)
    return _sample(wl, time.perf_counter() - t0, time.process_time() - c0, None)


async def measure_queue_floor(wl: Workload, concurrency: int) -> dict[str, float]:
    """The floor of the in-process runtime's shape: an asyncio.Queue feeding ``concurrency`` worker
    tasks, each finished step putting its successors on the queue; still nothing is stored.
    W3: the ForEach step puts the first 50 items, each finished item the next one. W4: each
    execution of the polling step puts it back on the queue until the 21st."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[list[Any], int] | None] = asyncio.Queue()
    put = queue.put_nowait
    shape = wl.flow_id

    async def work() -> None:
        while (item := await queue.get()) is not None:
            # run = [future, counter]; i = position (chain: index; fan: 0 start, 1 parallel, 2 join;
            # foreach: 0 the ForEach step, 1 an item, counter = items not yet started; poll: the attempt)
            run, i = item
            await noop()
            if shape == CHAIN_FLOW:
                if i + 1 < CHAIN_LEN:
                    put((run, i + 1))
                else:
                    run[0].set_result(None)
            elif shape == POLL_FLOW:
                if i <= POLL_TIMES:
                    put((run, i + 1))
                else:
                    run[0].set_result(None)
            elif shape == FOREACH_FLOW:
                if i == 0:
                    for _ in range(min(FOREACH_CONCURRENCY, run[1])):
                        run[1] -= 1
                        put((run, 1))
                    run[2] = FOREACH_ITEMS
                else:
                    run[2] -= 1
                    if run[1]:
                        run[1] -= 1
                        put((run, 1))
                    elif not run[2]:
                        run[0].set_result(None)
            elif i == 0:
                for _ in range(FAN_WIDTH):
                    put((run, 1))
            elif i == 1:
                run[1] -= 1
                if not run[1]:
                    put((run, 2))
            else:
                run[0].set_result(None)

    def trigger() -> asyncio.Future[None]:
        if shape == FOREACH_FLOW:
            run: list[Any] = [loop.create_future(), FOREACH_ITEMS, 0]  # [done, items not started, items unfinished]
        else:
            run = [loop.create_future(), FAN_WIDTH]
        put((run, 1 if shape == POLL_FLOW else 0))
        return run[0]  # type: ignore[no-any-return]

    workers = [loop.create_task(work()) for _ in range(concurrency)]
    gc.collect()
    try:
        latencies: list[float] | None = None
        c0, t0 = time.process_time(), time.perf_counter()
        if wl.sequential:
            latencies = []
            for _ in range(wl.runs):
                s = time.perf_counter()
                await trigger()
                latencies.append(time.perf_counter() - s)
        else:
            await asyncio.gather(*(trigger() for _ in range(wl.runs)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for _ in workers:
            put(None)
        await asyncio.gather(*workers)
    return _sample(wl, elapsed, cpu, latencies)


# -- the engine -------------------------------------------------------------------------------


def sqlite_available() -> bool:
    try:
        return importlib.util.find_spec("floworchestrator.stores.sqlite") is not None
    except ImportError:
        return False


def make_orchestrator(url: str, concurrency: int) -> Orchestrator:
    orch = Orchestrator(store=url, runtime="inprocess", concurrency=concurrency)
    orch.add_handler("noop", noop)
    orch.add_handler("poll-twenty", poll_twenty)
    orch.register(chain_flow(), fan_flow(), foreach_flow(), poll_flow())
    return orch


async def _burst(orch: Orchestrator, flow_id: str, runs: int, body: Any = None) -> list[str]:
    ids = await asyncio.gather(*(orch.trigger(flow_id, body) for _ in range(runs)))
    finished = await asyncio.gather(*(orch.wait(r) for r in ids))
    bad = [r for r in finished if r.status is not RunStatus.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} of {runs} runs did not succeed (first: {bad[0].run_id} {bad[0].status.value})")
    return ids


async def _check_shape(orch: Orchestrator, wl: Workload, run_id: str) -> None:
    """After the timing: the run did the work it was meant to (W3: 1,000 children; W4: 21 attempts)."""
    if wl.flow_id == FOREACH_FLOW:
        steps = await orch.get_steps(run_id)
        done = sum(1 for st in steps if st.status.value == "Succeeded")
        if len(steps) != wl.steps_per_run or done != wl.steps_per_run:
            raise RuntimeError(f"W3 run {run_id}: {done} of {len(steps)} steps succeeded, expected {wl.steps_per_run}")
    elif wl.flow_id == POLL_FLOW:
        (st,) = await orch.get_steps(run_id)
        attempts = (st.output or {}).get("attempts")
        if attempts != wl.reschedules_per_run + 1:
            raise RuntimeError(f"W4 run {run_id}: the step succeeded on attempt {attempts}, expected {wl.reschedules_per_run + 1}")


def postgres_available() -> bool:
    try:
        return importlib.util.find_spec("psycopg") is not None and importlib.util.find_spec("psycopg_pool") is not None
    except ImportError:
        return False


def _pg_admin(base_url: str, *statements: str) -> None:
    """Run statements outside a transaction (CREATE / DROP DATABASE) on the server's admin database."""
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt)


def _pg_url(base_url: str, dbname: str) -> str:
    """``base_url`` (a postgresql:// URL) with its database replaced by ``dbname``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


class Stores:
    """Hands out a fresh store URL per measurement: SQLite files and PostgreSQL databases are copies of
    a template holding history (PostgreSQL: CREATE DATABASE ... TEMPLATE on ``--pg``, dropped after)."""

    def __init__(self, history_steps: int, concurrency: int, pg_url: str = "") -> None:
        self.history_steps = history_steps
        self.concurrency = concurrency
        self.root = tempfile.mkdtemp(prefix="fo-bench-")
        self._template: str | None = None
        self._n = 0
        self.pg_url = pg_url
        self._pg_prefix = f"fo_bench_{os.getpid()}"
        self._pg_template: str | None = None
        self._pg_dbs: dict[str, str] = {}

    async def url(self, store: str) -> str:
        if store == "memory":
            return "memory://"
        if store == "postgres":
            return await self._pg_fresh()
        if store != "sqlite":
            raise ValueError(store)
        if self._template is None:
            self._template = await self._build_template()
        self._n += 1
        d = os.path.join(self.root, f"m{self._n}")
        os.mkdir(d)
        for f in glob.glob(self._template + "*"):  # the db and any -wal / -shm beside it
            shutil.copy(f, os.path.join(d, "bench.db" + f[len(self._template):]))
        return f"sqlite:///{d}/bench.db"

    async def _build_template(self) -> str:
        path = os.path.join(self.root, "template", "bench.db")
        os.mkdir(os.path.dirname(path))
        runs = self.history_steps // CHAIN_LEN
        t0 = time.perf_counter()
        orch = make_orchestrator(f"sqlite:///{path}", self.concurrency)
        async with orch:
            for i in range(0, runs, HISTORY_BURST):
                await _burst(orch, CHAIN_FLOW, min(HISTORY_BURST, runs - i))
        print(f"  sqlite history: {runs} finished runs ({runs * CHAIN_LEN} steps) written in "
              f"{time.perf_counter() - t0:.1f}s (not timed)", flush=True)
        return path

    async def _pg_fresh(self) -> str:
        if self._pg_template is None:
            self._pg_template = await self._build_pg_template()
        self._n += 1
        name = f"{self._pg_prefix}_m{self._n}"
        await asyncio.to_thread(_pg_admin, self.pg_url, f'CREATE DATABASE "{name}" TEMPLATE "{self._pg_template}"')
        url = _pg_url(self.pg_url, name)
        self._pg_dbs[url] = name
        return url

    async def _build_pg_template(self) -> str:
        name = f"{self._pg_prefix}_template"
        await asyncio.to_thread(_pg_admin, self.pg_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        url = _pg_url(self.pg_url, name)
        runs = self.history_steps // CHAIN_LEN
        t0 = time.perf_counter()
        try:
            orch = make_orchestrator(url, self.concurrency)
            async with orch:
                for i in range(0, runs, HISTORY_BURST):
                    await _burst(orch, CHAIN_FLOW, min(HISTORY_BURST, runs - i))
            # Statistics as a long-lived database has them (copied with the template): the planner then
            # believes almost nothing is pending, the case BENCHMARKS.md warns about.
            await asyncio.to_thread(_pg_admin, url, "VACUUM ANALYZE")
        except BaseException:
            await asyncio.to_thread(_pg_admin, self.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            raise
        print(f"  postgres history: {runs} finished runs ({runs * CHAIN_LEN} steps) written in "
              f"{time.perf_counter() - t0:.1f}s (not timed)", flush=True)
        return name

    def release(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            shutil.rmtree(os.path.dirname(url[len("sqlite://"):]), ignore_errors=True)
        name = self._pg_dbs.pop(url, None)
        if name is not None:
            _pg_admin(self.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        names = list(self._pg_dbs.values()) + ([self._pg_template] if self._pg_template else [])
        self._pg_dbs.clear()
        for name in names:
            _pg_admin(self.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure_engine(
    store: str, wl: Workload, stores: Stores, concurrency: int, profiler: cProfile.Profile | None = None
) -> dict[str, float]:
    url = await stores.url(store)
    orch = make_orchestrator(url, concurrency)
    try:
        await orch.start()
        try:
            gc.collect()
            if profiler is not None:
                profiler.enable()
            try:
                if wl.sequential:
                    latencies = []
                    c0, t0 = time.process_time(), time.perf_counter()
                    for _ in range(wl.runs):
                        s = time.perf_counter()
                        run = await orch.wait(await orch.trigger(wl.flow_id))
                        latencies.append(time.perf_counter() - s)
                        if run.status is not RunStatus.SUCCEEDED:
                            raise RuntimeError(f"run {run.run_id} ended {run.status.value}")
                    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
                else:
                    latencies = None
                    c0, t0 = time.process_time(), time.perf_counter()
                    ids = await _burst(orch, wl.flow_id, wl.runs, wl.body)
                    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            finally:
                if profiler is not None:
                    profiler.disable()
            if not wl.sequential:
                await _check_shape(orch, wl, ids[0])
        finally:
            await orch.stop()
    finally:
        stores.release(url)
    return _sample(wl, elapsed, cpu, latencies)


# -- running the series -----------------------------------------------------------------------

Measure = Callable[[Workload, "cProfile.Profile | None"], Awaitable[dict[str, float]]]


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = samples[0].keys()
    return {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
        for k in keys
        for v in [[s[k] for s in samples]]
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    stores = Stores(args.history, args.concurrency, args.pg)
    systems: dict[str, Measure] = {"asyncio": measure_floor}
    if "asyncio-queue" in args.floors:

        async def qf(wl: Workload, prof: cProfile.Profile | None) -> dict[str, float]:
            return await measure_queue_floor(wl, args.concurrency)

        systems["asyncio-queue"] = qf
    skipped: dict[str, str] = {}
    for s in args.stores:
        if s == "sqlite" and not sqlite_available():
            skipped[s] = "sqlite store not available"
            print("sqlite store not available (no floworchestrator.stores.sqlite); skipping sqlite", flush=True)
            continue
        if s == "postgres" and not postgres_available():
            skipped[s] = "psycopg / psycopg-pool not installed"
            print("postgres store not available (no psycopg); skipping postgres", flush=True)
            continue

        async def m(wl: Workload, prof: cProfile.Profile | None, _s: str = s) -> dict[str, float]:
            return await measure_engine(_s, wl, stores, args.concurrency, prof)

        systems[s] = m
    profiler = cProfile.Profile() if args.profile else None
    results: dict[str, Any] = {}
    try:
        for wid in args.workloads:
            wl = WORKLOADS[wid]
            size = (f"{wl.runs * wl.reschedules_per_run} reschedules" if wl.reschedules_per_run
                    else f"{wl.runs * wl.steps_per_run} steps")
            print(f"{wl.id}: {wl.description} ({size})", flush=True)
            series: dict[str, dict[str, Any]] = {name: {"samples": [], "error": None} for name in systems}
            for name, measure in systems.items():  # one untimed warm-up per series
                try:
                    await asyncio.wait_for(measure(wl, None), args.timeout)
                except Exception as exc:
                    series[name]["error"] = f"warm-up failed: {type(exc).__name__}: {exc}"
                    print(f"  {name}: {series[name]['error']}", flush=True)
            # Repeats interleave the systems so that drift on a noisy machine hits them alike.
            for r in range(args.repeat):
                for name, measure in systems.items():
                    if series[name]["error"]:
                        continue
                    prof = profiler if name in args.stores else None
                    try:
                        sample = await asyncio.wait_for(measure(wl, prof), args.timeout)
                    except Exception as exc:
                        series[name]["error"] = f"repeat {r + 1} failed: {type(exc).__name__}: {exc}"
                        print(f"  {name}: {series[name]['error']}", flush=True)
                        continue
                    series[name]["samples"].append(sample)
                    key, label, _ = METRICS[wid][0]
                    print(f"  {name:8} #{r + 1}: {label} {sample[key]:,.2f}  ({sample['elapsed_s'] * 1000:,.1f} ms)", flush=True)
            for s in series.values():
                if s["samples"]:
                    s["summary"] = summarise(s["samples"])
            results[wid] = series
    finally:
        stores.close()
    if profiler is not None:
        profiler.dump_stats(args.profile)
    return {"results": results, "skipped": skipped}


# -- reporting ------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:,.1f}"
    return f"{v:,.3f}"


def _verdict(v: float, target: tuple[float, float], higher: bool) -> str:
    def meets(t: float) -> bool:
        return v >= t if higher else v <= t

    lo, goal = target
    return "goal met" if meets(goal) else "min met" if meets(lo) else "BELOW MIN"


def table(results: dict[str, Any], skipped: dict[str, str]) -> str:
    head = ("workload", "metric", "system", "median", "min", "max", "vs asyncio", "target min→goal", "")
    rows: list[tuple[str, ...]] = [head]
    for wid, series in results.items():
        floor = series.get("asyncio", {}).get("summary")
        for key, label, higher in METRICS[wid]:
            for name, s in series.items():
                if s.get("error") and not s["samples"]:
                    rows.append((wid, label, name, "error", "", "", "", "", ""))
                    continue
                m = s["summary"][key]
                ratio = ""
                if floor is not None and name != "asyncio":
                    ratio = f"{m['median'] / floor[key]['median']:.3f}x"
                target = verdict = ""
                if key == METRICS[wid][0][0] and wid in TARGETS.get(name, {}):
                    lo, goal = TARGETS[name][wid]
                    target = f"{_fmt(lo)} → {_fmt(goal)}"
                    verdict = _verdict(m["median"], (lo, goal), higher)
                if s.get("error"):
                    verdict = (verdict + " (incomplete)").strip()
                rows.append((wid, label, name, _fmt(m["median"]), _fmt(m["min"]), _fmt(m["max"]), ratio, target, verdict))
        for name, why in skipped.items():
            rows.append((wid, METRICS[wid][0][1], name, "skipped", "", "", "", "", why))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {3, 4, 5, 6}
    lines = []
    for i, r in enumerate(rows):
        cells = [c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*cmd: str) -> str:
        try:
            done = subprocess.run(["git", *cmd], capture_output=True, text=True, check=True, cwd=here)
            return done.stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "floworchestrator": floworchestrator.__version__,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "../src")),
        "args": {k: v for k, v in vars(args).items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="memory,sqlite",
                   help="comma-separated: memory, sqlite, postgres (default: memory,sqlite)")
    p.add_argument("--pg", default=os.environ.get("FLOWORCHESTRATOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="postgres: a server's admin database URL; each measurement gets a fresh database "
                   "created from a template holding --history and dropped after (default: $FLOWORCHESTRATOR_BENCH_PG "
                   "or postgresql://postgres@127.0.0.1:5432/postgres)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="timed measurements per series, after one warm-up (default 3)")
    p.add_argument("--floors", default="asyncio,asyncio-queue",
                   help="comparators without persistence: asyncio (tasks, awaits, gather) and asyncio-queue "
                   "(a queue and --concurrency workers, the in-process runtime's shape); default both")
    p.add_argument("--concurrency", type=int, default=64, help="in-process runtime workers (default 64)")
    p.add_argument("--history", type=int, default=10_000,
                   help="SQLite, PostgreSQL: steps of finished runs (10-step chains) in the db before timing (default 10000)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one measurement may take before it counts as failed")
    p.add_argument("--json", metavar="FILE", help="write every sample and the summary as JSON")
    p.add_argument("--profile", metavar="FILE", help="cProfile the timed engine measurements (not the floor) into FILE; "
                   "timings taken under the profiler are not comparable")
    args = p.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.floors = [f.strip() for f in args.floors.split(",") if f.strip()]
    if "asyncio" not in args.floors:
        args.floors.insert(0, "asyncio")  # every ratio is taken against it
    for f in args.floors:
        if f not in ("asyncio", "asyncio-queue"):
            p.error(f"unknown floor {f!r} (known: asyncio, asyncio-queue)")
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for s in args.stores:
        if s not in TARGETS:
            p.error(f"unknown store {s!r} (known: {', '.join(TARGETS)})")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")

    env = environment(args)
    print(f"floworchestrator {env['floworchestrator']} ({env['git_commit']}{', src modified' if env['git_dirty'] else ''}), "
          f"Python {env['python']}, {env['cpus']} CPUs, repeat {args.repeat}, concurrency {args.concurrency}", flush=True)
    t0 = time.perf_counter()
    out = asyncio.run(run_all(args))
    print()
    print(table(out["results"], out["skipped"]))
    print(f"\n{time.perf_counter() - t0:.1f}s in all")
    if args.profile:
        print(f"\nprofile of the timed engine measurements written to {args.profile}; top functions by own time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, **out}, f, indent=2)
        print(f"raw numbers written to {args.json}")
    failed = any(s.get("error") for series in out["results"].values() for s in series.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
