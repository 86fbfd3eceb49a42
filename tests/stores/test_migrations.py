"""Migrations: a database migrated step by step ends with the schema a new database gets.

For each dialect, a database is created with the version-1 schema (frozen in
``schema_v1/``: what every database created before the first migration has),
then every migration of ``migrations/`` is applied in order; its tables,
columns and indexes must be those of a database created from the current
``schema.sql``. So a change to ``schema.sql`` without its migration (or a
migration that ``schema.sql`` does not reflect) fails here. Written for any
number of migrations, none included.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floworchestrator.stores import sql
from floworchestrator.stores.sqlite import SQLiteStore

from ..conftest import PgServer

V1 = Path(__file__).parent / "schema_v1"
DIALECTS = ("sqlite", "postgres")


def v1_schema(dialect: str) -> str:
    return (V1 / f"{dialect}.sql").read_text(encoding="utf-8")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_are_numbered_from_2_without_gaps(dialect: str) -> None:
    numbers = [n for n, _name, _script in sql.migrations(dialect)]
    assert numbers == list(range(2, len(numbers) + 2)), numbers
    assert sql.schema_version(dialect) == len(numbers) + 1


def test_every_dialect_has_the_same_migrations() -> None:
    assert len({tuple((n, name) for n, name, _ in sql.migrations(d)) for d in DIALECTS}) == 1


def test_the_dashboard_index_is_migration_2() -> None:
    # The first real migration: proves the step-by-step comparison below runs over something.
    for dialect in DIALECTS:
        assert (2, "runs_dashboard_index") in [(n, name) for n, name, _ in sql.migrations(dialect)]
        assert "fo_runs_flow_status" in sql.schema(dialect)
        assert sql.schema_version(dialect) >= 2


# --- SQLite: sqlite_master, with the SQL normalised ---------------------------------------


def normalise(text: str | None) -> str | None:
    """SQL without comments, case or layout (SQLite keeps a table's CREATE text as written, ALTER-ed in place)."""
    if text is None:
        return None
    text = re.sub(r"--[^\n]*", " ", text)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = " ".join(text.split()).lower()
    text = re.sub(r"\s*([(),;])\s*", r"\1", text)
    return text.replace(" if not exists ", " ")


def sqlite_schema(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        master = {
            name: (kind, table, normalise(text))
            for kind, name, table, text in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
        }
        tables = [name for name, (kind, _, _) in master.items() if kind == "table"]
        columns = {t: conn.execute(f'PRAGMA table_info("{t}")').fetchall() for t in sorted(tables)}
        return {"sqlite_master": master, "columns": columns}
    finally:
        conn.close()


def sqlite_v1(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(v1_schema("sqlite"))
    conn.execute("INSERT INTO fo_schema_version (version) VALUES (1)")
    return conn


def test_sqlite_migrated_step_by_step_equals_a_new_database(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    conn = sqlite3.connect(fresh, isolation_level=None)
    conn.executescript(sql.schema("sqlite"))
    conn.close()

    stepped = tmp_path / "stepped.db"
    conn = sqlite_v1(stepped)
    for number, name, script in sql.migrations("sqlite"):
        try:
            conn.executescript(f"BEGIN;\n{script}\n;UPDATE fo_schema_version SET version = {number};\nCOMMIT;")
        except sqlite3.Error as exc:
            pytest.fail(f"sqlite migration {number:04d}_{name} does not apply: {exc}")
    conn.close()

    assert sqlite_schema(stepped) == sqlite_schema(fresh)


async def test_sqlite_store_migrates_a_version_1_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite_v1(path)
    conn.execute(
        "INSERT INTO fo_runs (run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers, created_at,"
        " finished_at) VALUES ('r1', 'f', 'Succeeded', 'm', 'manual', '{\"n\": 1}', '{}', 1.0, 2.0)"
    )
    conn.close()
    fresh = tmp_path / "fresh.db"
    for p in (path, fresh):
        store = SQLiteStore(p)
        await store.open()
        await store.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        run = await store.get_run("r1")
        assert run is not None and run.trigger_body == {"n": 1}
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM fo_schema_version").fetchall() == [(sql.schema_version("sqlite"),)]
    conn.close()
    assert sqlite_schema(path) == sqlite_schema(fresh)


# --- PostgreSQL: information_schema.columns, pg_indexes and constraints -----------------------

COLUMNS = """
SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default, collation_name,
       is_identity, identity_generation
FROM information_schema.columns WHERE table_schema = 'public'
ORDER BY table_name, ordinal_position
"""
INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname"
CONSTRAINTS = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace = 'public'::regnamespace ORDER BY conname
"""


def pg_schema(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for table, column, _position, *rest in conn.execute(COLUMNS).fetchall():
            # The order of the columns, not their attnum: a dropped column leaves a gap in those.
            columns.setdefault(table, []).append((column, *rest))
        return {
            "columns": columns,
            "indexes": conn.execute(INDEXES).fetchall(),
            "constraints": conn.execute(CONSTRAINTS).fetchall(),
        }


@pytest.fixture
def pg_dbs(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """Two empty databases of this test's own."""
    names = [pg_server.create(), pg_server.create()]
    yield pg_server.url(names[0]), pg_server.url(names[1])
    for name in names:
        pg_server.drop(name)


def pg_v1(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(v1_schema("postgres"))
        conn.execute("INSERT INTO fo_schema_version (version) VALUES (1)")


def test_postgres_migrated_step_by_step_equals_a_new_database(pg_dbs: tuple[str, str]) -> None:
    import psycopg

    fresh, stepped = pg_dbs
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(sql.schema("postgres"))

    pg_v1(stepped)
    with psycopg.connect(stepped, autocommit=True) as conn:
        for number, name, script in sql.migrations("postgres"):
            try:
                with conn.transaction():
                    conn.execute(script)
                    conn.execute("UPDATE fo_schema_version SET version = %s", (number,))
            except psycopg.Error as exc:
                pytest.fail(f"postgres migration {number:04d}_{name} does not apply: {exc}")

    assert pg_schema(stepped) == pg_schema(fresh)


async def test_postgres_store_migrates_a_version_1_database(pg_dbs: tuple[str, str]) -> None:
    import psycopg

    from floworchestrator.stores.postgres import PostgresStore

    old, fresh = pg_dbs
    pg_v1(old)
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO fo_runs (run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers, created_at,"
            " finished_at) VALUES ('r1', 'f', 'Succeeded', 'm', 'manual', '{\"n\": 1}', '{}', 1.0, 2.0)"
        )
    for url in (old, fresh):
        store = PostgresStore(url)
        await store.open()
        try:
            if url == old:
                run = await store.get_run("r1")
                assert run is not None and run.trigger_body == {"n": 1}
        finally:
            await store.close()
    with psycopg.connect(old, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM fo_schema_version").fetchall() == [(sql.schema_version("postgres"),)]
    assert pg_schema(old) == pg_schema(fresh)
