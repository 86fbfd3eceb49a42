"""PostgreSQL specifics: schema creation, versioning, concurrent start-up, two writers, error translation."""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

from floworchestrator._status import StepStatus  # noqa: E402
from floworchestrator.exceptions import ConfigurationError, SchemaVersionError, StoreError, StoreUnavailableError  # noqa: E402
from floworchestrator.flow import Flow, ForEach, Step  # noqa: E402
from floworchestrator.stores import open_store, sql  # noqa: E402
from floworchestrator.stores.base import Applied, ExtendLeases, Grant, RunStarted, Signal  # noqa: E402
from floworchestrator.stores.postgres import PostgresStore  # noqa: E402

from ..conftest import PgServer  # noqa: E402
from .test_contract import DIAMOND, T0, claim, complete, setup_flows, start_op  # noqa: E402

TABLES = {"fo_schema_version", "fo_manifests", "fo_flows", "fo_runs", "fo_steps", "fo_dispatches", "fo_attempts",
          "fo_events", "fo_signals", "fo_cron_fires", "fo_schedules"}


def query(url: str, text: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(text)
        return list(cur.fetchall()) if cur.description else []


async def test_fresh_database_gets_schema_and_version(pg_empty_url: str) -> None:
    store = PostgresStore(pg_empty_url)
    await store.open()
    await store.close()
    assert query(pg_empty_url, "SELECT version FROM fo_schema_version") == [(sql.schema_version("postgres"),)]
    tables = {r[0] for r in query(pg_empty_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == TABLES
    # Opening again neither fails nor adds a second version row.
    again = PostgresStore(pg_empty_url)
    await again.open()
    await again.close()
    assert query(pg_empty_url, "SELECT count(*) FROM fo_schema_version") == [(1,)]


async def test_newer_database_is_refused(pg_url: str) -> None:
    query(pg_url, "UPDATE fo_schema_version SET version = 999")
    store = PostgresStore(pg_url)
    with pytest.raises(SchemaVersionError, match="schema version 999, newer than this floworchestrator understands"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.list_flows()


async def test_older_database_is_migrated(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nxt = sql.schema_version("postgres") + 1  # a migration beyond the current version
    fake = [(nxt, "add_note", "ALTER TABLE fo_runs ADD COLUMN note text;\nCREATE INDEX fo_runs_note ON fo_runs (note);")]
    monkeypatch.setattr(sql, "migrations", lambda dialect: fake)
    monkeypatch.setattr(sql, "schema_version", lambda dialect: nxt)
    store = PostgresStore(pg_url)
    await store.open()
    await store.close()
    assert query(pg_url, "SELECT version FROM fo_schema_version") == [(nxt,)]
    assert query(pg_url, "SELECT 1 FROM information_schema.columns WHERE table_name = 'fo_runs' AND column_name = 'note'")


async def test_instances_starting_together_migrate_once(pg_empty_url: str) -> None:
    stores = [PostgresStore(pg_empty_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # no "relation already exists" from a lost race
    try:
        assert query(pg_empty_url, "SELECT version FROM fo_schema_version") == [(sql.schema_version("postgres"),)]
        assert await asyncio.gather(*(s.list_flows() for s in stores)) == [[]] * 4
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_unreachable_server_is_store_unavailable() -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=2)
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        await store.open()


def admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


def kill_connections(url: str) -> None:
    query(admin_url(url), f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{url.rsplit('/', 1)[1]}'")


async def test_connections_cut_while_idle_are_replaced(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        await asyncio.gather(*(store.apply([start_op(c)]) for _ in range(4)))  # both writers connect
        kill_connections(pg_url)  # as a server restart would
        assert isinstance((await store.apply([start_op(c)]))[0], RunStarted)
        assert await store.count_runs() == 5
        await store.set_flow_enabled("diamond", False, T0)
    finally:
        await store.close()


async def test_a_database_gone_is_store_unavailable(pg_server: PgServer) -> None:
    name = pg_server.create(template=pg_server.template)
    url = pg_server.url(name)
    store = PostgresStore(url, connect_timeout=1, pool_timeout=1)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        pg_server.drop(name)  # cuts every connection, and there is nothing to reconnect to
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            await store.apply([start_op(c)])
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            await store.count_runs()
    finally:
        await store.close()


async def test_constraint_violation_is_a_store_error_and_rolls_back(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        op = start_op(c)
        with pytest.raises(StoreError, match="duplicate key") as info:
            await store.apply([start_op(c), op, op])
        assert not isinstance(info.value, StoreUnavailableError)
        assert await store.count_runs() == 0
    finally:
        await store.close()


async def test_same_idempotency_key_from_both_writers_creates_one_run(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        for i in range(10):
            a, b = await asyncio.gather(store.apply([start_op(c, key=f"k{i}")]), store.apply([start_op(c, key=f"k{i}")]))
            assert isinstance(a[0], RunStarted) and isinstance(b[0], RunStarted)
            assert a[0].run_id == b[0].run_id and a[0].created != b[0].created
        assert await store.count_runs() == 10
    finally:
        await store.close()


async def test_join_completed_by_both_writers_at_once_is_queued_once(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        for _ in range(20):
            started = (await store.apply([start_op(c)]))[0]
            assert isinstance(started, RunStarted) and started.run_id
            rid = started.run_id
            await store.apply([claim(c, rid, "a")])
            await store.apply([complete(c, rid, "a")])
            grants = await store.apply([claim(c, rid, "b"), claim(c, rid, "c")])
            assert all(isinstance(g, Grant) for g in grants)
            done = await asyncio.gather(store.apply([complete(c, rid, "b")]), store.apply([complete(c, rid, "c")]))
            queued = [d.step_key for (res,) in done if isinstance(res, Applied) for d in res.effects.dispatched]
            assert queued == ["d"]
            steps = {s.step_key: s for s in await store.get_steps(rid)}
            assert steps["d"].queued and steps["d"].generation == 1
            assert steps["b"].status is steps["c"].status is StepStatus.SUCCEEDED
    finally:
        await store.close()


def parallel_loop() -> dict[str, object]:
    return Flow("loop", {
        "each": ForEach([1], {"x": Step("T"), "z": Step("T")}),
        "post": Step("T", run_after={"each": ["Succeeded"]}),
    }).to_manifest()


async def test_item_whose_children_finish_on_both_writers_at_once_is_counted(pg_url: str) -> None:
    # Each writer sees its own child final and, without the run lock, its sibling still running.
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, parallel_loop()))["loop"]
        for _ in range(20):
            (res,) = await store.apply([start_op(c)])
            assert isinstance(res, RunStarted) and res.run_id
            rid = res.run_id
            await store.apply([claim(c, rid, "each")])
            op = complete(c, rid, "each", StepStatus.RUNNING)
            op.loop = (["1"], 1)
            await store.apply([op])
            assert all(isinstance(g, Grant) for g in await store.apply([claim(c, rid, "each.0.x"), claim(c, rid, "each.0.z")]))
            done = await asyncio.gather(store.apply([complete(c, rid, "each.0.x")]), store.apply([complete(c, rid, "each.0.z")]))
            queued = [d.step_key for (r,) in done if isinstance(r, Applied) for d in r.effects.dispatched]
            assert queued == ["post"]
    finally:
        await store.close()


async def test_signal_racing_a_step_that_starts_waiting_wakes_it(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        for _ in range(20):
            (res,) = await store.apply([start_op(c)])
            assert isinstance(res, RunStarted) and res.run_id
            rid = res.run_id
            await store.apply([claim(c, rid, "a")])
            park = complete(c, rid, "a", StepStatus.PENDING)
            park.park = "go"
            await asyncio.gather(store.apply([park]), store.apply([Signal(rid, "go", "1", T0)]))
            a = {s.step_key: s for s in await store.get_steps(rid)}["a"]
            assert (a.status, a.queued, a.generation) == (StepStatus.PENDING, True, 2)
    finally:
        await store.close()


async def test_rows_remembered_from_earlier_batches_are_checked_not_trusted(pg_url: str) -> None:
    """A batch that takes rows its store remembers instead of reading them applies only if they did not change
    meanwhile (here: another process, with its own memory, completed the step); else it is applied again."""
    here, there = PostgresStore(pg_url), PostgresStore(pg_url)
    await here.open()
    await there.open()
    try:
        c = (await setup_flows(here, DIAMOND))["diamond"]
        for _ in range(3):
            (res,) = await here.apply([start_op(c)])  # ``here`` remembers every row of the new run
            assert isinstance(res, RunStarted) and res.run_id
            rid = res.run_id
            assert isinstance((await here.apply([claim(c, rid, "a")]))[0], Grant)
            (done,) = await there.apply([complete(c, rid, "a")])
            assert isinstance(done, Applied) and done.applied
            # ``here`` remembers a Running and b, c not queued; neither is so any more.
            (grant,) = await here.apply([claim(c, rid, "b")])
            assert isinstance(grant, Grant)
            (again,) = await here.apply([complete(c, rid, "a")])
            assert isinstance(again, Applied) and not again.applied
            assert [a.step_key for a in await here.get_attempts(rid)] == ["a"]
            kinds = [e.kind for e in await here.get_events(rid)]
            assert kinds.count("StepSucceeded") == 1
        # ``here`` remembers the flow enabled.
        assert await there.set_flow_enabled("diamond", False, T0)
        (res,) = await here.apply([start_op(c)])
        assert isinstance(res, RunStarted) and res.disabled
    finally:
        await here.close()
        await there.close()


async def test_a_batch_on_the_statement_path_forgets_the_rows_remembered_for_its_runs(pg_url: str) -> None:
    """A heartbeat (ExtendLeases: not a fast-path op) changes a remembered row: the store must not offer it to
    the next batch (whose check would fail, costing a wasted transaction and the run's place in memory)."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]
        (res,) = await store.apply([start_op(c)])
        assert isinstance(res, RunStarted) and res.run_id
        rid = res.run_id
        assert isinstance((await store.apply([claim(c, rid, "a")]))[0], Grant)
        assert store._remembered.get(rid) is not None  # the fast path kept the run's rows
        await store.apply([ExtendLeases("w1", ((rid, "a", 1),), T0 + timedelta(hours=1))])
        assert store._remembered.get(rid) is None
        (done,) = await store.apply([complete(c, rid, "a")])
        assert isinstance(done, Applied) and done.applied
        assert store._remembered.get(rid) is not None  # read again, then remembered again
    finally:
        await store.close()


async def test_two_writers_share_the_load(pg_url: str) -> None:
    """Many runs driven concurrently through both writers end as they would with one."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        c = (await setup_flows(store, DIAMOND))["diamond"]

        async def drive() -> None:
            (res,) = await store.apply([start_op(c)])
            assert isinstance(res, RunStarted) and res.run_id
            for wave in (["a"], ["b", "c"], ["d"]):
                grants = await asyncio.gather(*(store.apply([claim(c, res.run_id, k)]) for k in wave))
                assert all(isinstance(g[0], Grant) for g in grants)
                await asyncio.gather(*(store.apply([complete(c, res.run_id, k)]) for k in wave))

        await asyncio.gather(*(drive() for _ in range(30)))
        assert await store.count_runs() == 30
        runs = await store.list_runs(limit=100)
        assert {r.status.value for r in runs} == {"Succeeded"}
    finally:
        await store.close()


def test_every_query_the_store_uses_is_defined() -> None:
    source = (Path(sql.__file__).parent.parent / "postgres.py").read_text()
    used = set(re.findall(r'Q\["(\w+)"\]', source))
    defined = set(sql.queries("postgres"))
    # The runs filters' WHERE fragments are picked by stores/_rows.run_filter, by filter name.
    used |= {f"runs_where_{n}" for n in ("flow_id", "status", "since", "until", "run_id", "search")}
    assert used <= defined, used - defined
    assert defined - used <= {"get_schema_version", "set_schema_version", "insert_schema_version"}


def test_store_urls() -> None:
    s = open_store("postgresql://u@db.example:5433/flows")
    assert isinstance(s, PostgresStore) and s.url == "postgresql://u@db.example:5433/flows"
    assert isinstance(open_store("postgres://u@db.example/flows"), PostgresStore)


def test_missing_driver_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    monkeypatch.delitem(sys.modules, "floworchestrator.stores.postgres")
    with pytest.raises(ConfigurationError, match=r"pip install 'floworchestrator\[postgres\]'"):
        open_store("postgresql://localhost/x")

