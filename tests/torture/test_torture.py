"""Concurrency and crash invariants (issue 4) with real worker processes on a real PostgreSQL.

Each test gets its own database (the store's schema, plus the harness's queue,
delivery log, side-effect table and trigger, see ``harness.py``), worker
processes running ``tests.torture.worker``, and a client orchestrator in the
test process (``start(workers=False)``) that triggers runs through the same
queue dispatcher. Nothing is mocked: workers claim, run, complete and recover
through the engine and the PostgreSQL store exactly as an application would.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import psycopg
import pytest

from floworchestrator import Orchestrator, RunStatus, StepStatus
from floworchestrator.stores import sql
from floworchestrator.stores.base import AttemptRecord

from ..conftest import PgServer
from .conftest import ROOT, Db, Workers
from .harness import QueueDispatcher, build, diamond_result, with_app_name

pytestmark = pytest.mark.slow


@pytest.fixture
async def client(torture_db: Db) -> AsyncIterator[Orchestrator]:
    """A client orchestrator in the test process: it triggers runs and reads them, and runs no step."""
    dispatcher = QueueDispatcher(with_app_name(torture_db.url, "torture-client-queue"))
    orch = build(with_app_name(torture_db.url, "torture-client"), dispatcher)
    await orch.start(workers=False)
    yield orch
    await orch.stop()
    await dispatcher.close()  # the orchestrator does not stop the dispatcher of a client


def owner_pid(owner: str | None) -> int:
    """The pid in an engine owner id (``host:pid:random``)."""
    assert owner is not None
    return int(owner.split(":")[1])


def effects_by_step(db: Db) -> Counter[tuple[str, str]]:
    return Counter({(r, k): n for r, k, n in db.rows("SELECT run_id, step_key, count(*) FROM torture_effects GROUP BY 1, 2")})


async def check_runs(client: Orchestrator, db: Db, runs: dict[str, tuple[str, int]]) -> dict[str, list[AttemptRecord]]:
    """Every run Succeeded with the right outputs; every step Succeeded once, with exactly one Succeeded
    attempt; each step's handler ran at least once and never more often than the engine recorded
    attempts of it (no execution the engine does not know about). Returns the attempts by run."""
    effects = effects_by_step(db)
    all_attempts = {}
    for run_id, (flow_id, n) in runs.items():
        run = await client.get_run(run_id)
        assert run is not None and run.status is RunStatus.SUCCEEDED, (run_id, run)
        steps = {s.step_key: s for s in await client.get_steps(run_id)}
        assert all(s.status is StepStatus.SUCCEEDED for s in steps.values()), steps
        if flow_id == "diamond":
            assert steps["d"].output == {"n": diamond_result(n)}, (run_id, steps)
        else:
            assert steps["z"].output == {"n": n + 3}, (run_id, steps)
        attempts = await client.get_attempts(run_id)
        all_attempts[run_id] = attempts
        for key in steps:
            mine = [a for a in attempts if a.step_key == key]
            assert [a.status for a in mine].count(StepStatus.SUCCEEDED) == 1, (run_id, key, mine)
            assert 1 <= effects[(run_id, key)] <= len(mine), (run_id, key, effects[(run_id, key)], mine)
    return all_attempts


async def trigger_many(client: Orchestrator, flow_id: str, ns: Sequence[int], **body: object) -> dict[str, tuple[str, int]]:
    ids = await asyncio.gather(*(client.trigger(flow_id, {"n": n, **body}) for n in ns))
    return {run_id: (flow_id, n) for run_id, n in zip(ids, ns, strict=True)}


# --- (a) duplicate delivery: dispatch many, execute once ------------------------------------------------------


async def test_eight_workers_every_step_delivered_three_times_run_each_handler_once(
    torture_db: Db, workers: Workers, client: Orchestrator
) -> None:
    db = torture_db
    db.rows("UPDATE torture_config SET copies = 3")  # inline claims: three copies from the ledger trigger
    assert isinstance(client.dispatcher, QueueDispatcher)
    client.dispatcher.copies = 3  # entry steps: three copies of each message the client enqueues
    pids = workers.spawn(8, copies=3, concurrency=4, lease=30, stale_after=30, recovery_interval=1)
    await workers.wait_ready(pids)

    runs = await trigger_many(client, "diamond", range(200))
    await db.wait_runs_finished(200, timeout=90)
    # The copies of steps claimed inline are still being delivered (and turned away) after the runs end.
    await db.wait_for("SELECT count(*) FROM torture_queue", until=0, what="the queue to drain")

    # Every step of every run was delivered exactly three times (no nack, no recovery re-send)...
    deliveries = db.rows("SELECT run_id, step_key, count(*), count(DISTINCT pid) FROM torture_deliveries GROUP BY 1, 2")
    assert len(deliveries) == 200 * 4
    assert {n for _, _, n, _ in deliveries} == {3}, sorted(deliveries, key=lambda r: r[2])[:5]
    # ...the copies of a message raced on different workers (not promised by the queue, but with 2,400
    # deliveries to 8 workers anything else would mean the harness is broken)...
    assert sum(1 for *_, spread in deliveries if spread > 1) > 0
    # ...and each handler ran exactly once, with one attempt, and the run came out right.
    effects = effects_by_step(db)
    assert len(effects) == 200 * 4 and set(effects.values()) == {1}
    attempts = await check_runs(client, db, runs)
    assert all(len(a) == 4 for a in attempts.values())
    ran_on = {r[0] for r in db.rows("SELECT DISTINCT pid FROM torture_effects")}
    assert ran_on <= set(pids) and len(ran_on) >= 2

    codes = await workers.stop_all()
    logs = workers.logs()
    assert set(codes.values()) == {0}, logs
    assert " ERROR " not in logs and "Traceback" not in logs, logs


# --- (b) a worker killed in the middle of a step: at-least-once, recorded, nothing lost -----------------------


async def test_worker_killed_mid_step_is_recovered_by_another_and_nothing_is_lost(
    torture_db: Db, workers: Workers, client: Orchestrator
) -> None:
    db = torture_db
    # Lease 2 s (heartbeat every 0.67 s), recovery every 0.2 s, queued steps nobody took re-sent after 1 s.
    pids = workers.spawn(3, concurrency=4, lease=2, recovery_interval=0.2, stale_after=1)
    await workers.wait_ready(pids)

    victim_run = await client.trigger("hold", {"n": 100, "hold": "forever"})  # "h" hangs on its first attempt
    victim = await db.wait_for(
        "SELECT max(pid) FROM torture_effects WHERE run_id = %s AND step_key = 'h'", (victim_run,),
        until=lambda v: v is not None, timeout=30, what="step h to start",
    )
    # More work in flight, some of it surely in the victim's hands (taken messages, claims) when it dies.
    runs = await trigger_many(client, "diamond", range(60))
    runs.update(await trigger_many(client, "hold", range(20)))
    workers.kill(victim)

    runs[victim_run] = ("hold", 100)
    await db.wait_runs_finished(len(runs), timeout=60)
    await db.wait_for("SELECT count(*) FROM torture_queue", until=0, what="the queue to drain")

    attempts = await check_runs(client, db, runs)
    # The step the victim was running ran again elsewhere, and both executions are on record:
    h = [a for a in attempts[victim_run] if a.step_key == "h"]
    assert len(h) == 2, h
    lost, redone = h
    assert (lost.attempt, lost.status, owner_pid(lost.owner)) == (1, StepStatus.FAILED, victim)
    assert "lease expired" in (lost.error or ""), lost
    assert redone.attempt == 2 and redone.status is StepStatus.SUCCEEDED and owner_pid(redone.owner) != victim
    assert redone.generation > lost.generation
    ran = db.rows("SELECT attempt, pid FROM torture_effects WHERE run_id = %s AND step_key = 'h' ORDER BY id", (victim_run,))
    assert ran == [(1, victim), (2, owner_pid(redone.owner))]

    codes = await workers.stop_all()
    assert set(codes.values()) == {0}, workers.logs()



async def test_workers_killed_at_random_moments_under_load_lose_nothing(
    torture_db: Db, workers: Workers, client: Orchestrator
) -> None:
    """Four workers; while 150 runs go through, SIGKILL a worker (whichever is busiest: it has run the
    most handlers) four times, 0.3 s apart, starting a replacement each time. Whatever each one held
    (messages taken, claims, handlers half done, completions in flight) is recovered; every run ends
    Succeeded with the right outputs; no step ran without an attempt on record."""
    db = torture_db
    options = {"concurrency": 4, "lease": 2, "recovery_interval": 0.2, "stale_after": 1}
    live = workers.spawn(4, **options)
    await workers.wait_ready(live)
    runs = await trigger_many(client, "diamond", range(150))
    killed = []
    for _ in range(4):
        await asyncio.sleep(0.3)
        busy = dict(db.rows("SELECT pid, count(*) FROM torture_effects WHERE pid = ANY(%s) GROUP BY 1", (live,)))
        victim = max(live, key=lambda p: busy.get(p, 0))
        workers.kill(victim)
        killed.append(victim)
        live.remove(victim)
        live += workers.spawn(1, **options)
    await db.wait_runs_finished(len(runs), timeout=60)
    await db.wait_for("SELECT count(*) FROM torture_queue", until=0, what="the queue to drain")

    attempts = await check_runs(client, db, runs)
    lost = [a for al in attempts.values() for a in al if a.status is StepStatus.FAILED]
    assert all("lease expired" in (a.error or "") and owner_pid(a.owner) in killed for a in lost), lost
    codes = await workers.stop_all()
    assert set(codes.values()) == {0}, workers.logs()


# --- (c) orchestrators in two processes starting at once on a fresh database -------------------------------------


def test_two_processes_starting_at_once_on_a_fresh_database_migrate_once(pg_server: PgServer, tmp_path: Path) -> None:
    """Three rounds, each on a new empty database: both processes start a full orchestrator within a
    millisecond of each other. One creates the schema, the other waits for it (advisory lock) and
    finds it done: no 'relation already exists', one schema version row, both runs succeed."""
    rounds = 3
    names = [pg_server.create() for _ in range(rounds)]
    urls = [pg_server.url(n) for n in names]
    procs: list[subprocess.Popen[bytes]] = []

    def outputs() -> list[str]:
        for p in procs:
            if p.poll() is None:
                p.kill()
        return [p.communicate()[0].decode() for p in procs]

    try:
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.torture.starter", str(tmp_path), *urls],
                                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for r in range(rounds):
            end = time.monotonic() + 60
            while len(list(tmp_path.glob(f"ready-{r}-*"))) < 2:
                if any(p.poll() is not None for p in procs) or time.monotonic() > end:
                    raise AssertionError(f"a starter died or hung before round {r}:\n" + "\n".join(outputs()))
                time.sleep(0.01)
            (tmp_path / f"go-{r}").touch()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=60)
        out = outputs()
        assert [p.returncode for p in procs] == [0, 0], out
        for text in out:
            assert "Traceback" not in text and all(f"round {r}: ok" in text for r in range(rounds)), text
        target = sql.schema_version("postgres")
        for url in urls:
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute("SELECT version FROM fo_schema_version").fetchall() == [(target,)]
                assert conn.execute("SELECT status, count(*) FROM fo_runs GROUP BY 1").fetchall() == [("Succeeded", 2)]
                assert conn.execute("SELECT flow_id FROM fo_flows").fetchall() == [("hello",)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
        for n in names:
            pg_server.drop(n)


# --- a lost connection during a step ------------------------------------------------------------------------------


async def test_store_connections_cut_while_steps_run_do_not_corrupt_runs(
    torture_db: Db, workers: Workers, client: Orchestrator
) -> None:
    """pg_terminate_backend on every connection of the workers' stores (both writers and the read pool)
    while handlers are running, then again and again while runs flow. The stores reconnect, each step
    is completed, retried or recovered, and every run ends Succeeded with the right outputs."""
    db = torture_db
    pids = workers.spawn(2, concurrency=8, lease=2, recovery_interval=0.2, stale_after=1)
    await workers.wait_ready(pids)

    # Six runs whose step "h" is running (its handler waits for a gate) when the connections go.
    held = await trigger_many(client, "hold", range(6), hold="gate")
    await db.wait_for("SELECT count(DISTINCT run_id) FROM torture_effects WHERE step_key = 'h'", until=6, what="6 held steps")
    assert db.cut_store_connections() > 0
    db.rows("INSERT INTO torture_gates (run_id) SELECT unnest(%s::text[])", (list(held),))

    # And while 60 more runs go through, cut them five more times.
    runs = {**held, **await trigger_many(client, "diamond", range(60))}
    for _ in range(5):
        await asyncio.sleep(0.15)
        db.cut_store_connections()
    await db.wait_runs_finished(len(runs), timeout=60)
    await db.wait_for("SELECT count(*) FROM torture_queue", until=0, what="the queue to drain")

    # And once the cutting stops, the workers go on as before.
    runs.update(await trigger_many(client, "diamond", range(100, 120)))
    await db.wait_runs_finished(len(runs), timeout=60)
    await db.wait_for("SELECT count(*) FROM torture_queue", until=0, what="the queue to drain")

    await check_runs(client, db, runs)
    codes = await workers.stop_all()
    assert set(codes.values()) == {0}, workers.logs()


async def test_store_connections_cut_while_idle_do_not_let_a_running_steps_lease_lapse(
    torture_db: Db, workers: Workers, client: Orchestrator
) -> None:
    """A worker whose only store traffic is the heartbeat of one long step: cut its store's connections
    while they are idle (a server restart, a proxy's idle timeout), three times. Each time the next
    heartbeat must reconnect and extend the lease, or another worker would run the step a second time
    while the first is still at it."""
    db = torture_db
    lease = 3.0
    pids = workers.spawn(2, concurrency=4, lease=lease, recovery_interval=0.2, stale_after=1)
    await workers.wait_ready(pids)
    run_id = await client.trigger("hold", {"n": 1, "hold": "gate"})
    await db.wait_for("SELECT count(*) FROM torture_effects WHERE run_id = %s AND step_key = 'h'", (run_id,), until=1,
                      what="step h to start")
    ((owner, generation),) = db.rows("SELECT owner, generation FROM fo_steps WHERE run_id = %s AND step_key = 'h'", (run_id,))
    for _ in range(3):
        cut_at = db.value("SELECT extract(epoch FROM clock_timestamp())::float8")
        assert db.cut_store_connections() > 0
        # The same claim's heartbeat went through after the cut: its lease now ends a full lease after it.
        await db.wait_for(
            "SELECT lease_until > %s AND owner = %s AND generation = %s AND status = 'Running' FROM fo_steps "
            "WHERE run_id = %s AND step_key = 'h'", (cut_at + lease, owner, generation, run_id),
            timeout=20, what="a heartbeat of the same claim after the cut",
        )
    db.rows("INSERT INTO torture_gates (run_id) VALUES (%s)", (run_id,))
    await db.wait_runs_finished(1, timeout=30)
    attempts = await check_runs(client, db, {run_id: ("hold", 1)})
    assert [(a.step_key, a.status) for a in attempts[run_id]] == [
        ("a", StepStatus.SUCCEEDED), ("h", StepStatus.SUCCEEDED), ("z", StepStatus.SUCCEEDED)], workers.logs()
    codes = await workers.stop_all()
    assert set(codes.values()) == {0}, workers.logs()


# --- a worker stopped gracefully in the middle of a step --------------------------------------------------------


async def test_worker_stopped_mid_step_gives_it_back_to_the_other_workers_at_once(
    torture_db: Db, workers: Workers, client: Orchestrator
) -> None:
    """SIGTERM a worker whose handler outlives the shutdown timeout: it cancels the handler and gives
    the claim back (a Cancelled attempt), and a worker still running takes the step over at once. With
    a 30 s lease and stale_after 600 s, nothing but the give-back's own dispatch can bring the step to
    the other worker within the test's time."""
    db = torture_db
    pids = workers.spawn(2, concurrency=4, lease=30, recovery_interval=0.2, stale_after=600, shutdown_timeout=0.5)
    await workers.wait_ready(pids)
    run_id = await client.trigger("hold", {"n": 5, "hold": "gate"})
    stopping = await db.wait_for("SELECT max(pid) FROM torture_effects WHERE run_id = %s AND step_key = 'h'", (run_id,),
                                 until=lambda v: v is not None, timeout=30, what="step h to start")
    assert await workers.terminate(stopping) == 0, workers.logs()
    db.rows("INSERT INTO torture_gates (run_id) VALUES (%s)", (run_id,))
    await db.wait_runs_finished(1, timeout=20)

    attempts = await check_runs(client, db, {run_id: ("hold", 5)})
    given_back, redone = [a for a in attempts[run_id] if a.step_key == "h"]
    assert (given_back.status, owner_pid(given_back.owner)) == (StepStatus.CANCELLED, stopping)
    assert "shut down" in (given_back.error or "")
    assert redone.status is StepStatus.SUCCEEDED and owner_pid(redone.owner) != stopping
    codes = await workers.stop_all()
    assert set(codes.values()) == {0}, workers.logs()
