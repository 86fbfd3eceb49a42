"""SQLite specifics: schema creation, versioning, migrations, named queries, durability settings."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from floworchestrator.exceptions import SchemaVersionError, StoreUnavailableError
from floworchestrator.stores import open_store, sql
from floworchestrator.stores.sqlite import SQLiteStore


async def test_fresh_database_gets_schema_and_version(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM fo_schema_version").fetchall() == [(sql.schema_version("sqlite"),)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"fo_flows", "fo_runs", "fo_steps", "fo_dispatches", "fo_attempts", "fo_events", "fo_manifests"} <= tables
    # Opening again neither fails nor adds a second version row.
    await SQLiteStore(path).open()
    assert conn.execute("SELECT count(*) FROM fo_schema_version").fetchone() == (1,)


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE fo_schema_version SET version = 999")
    conn.commit()
    with pytest.raises(SchemaVersionError, match="schema version 999, newer than this floworchestrator understands"):
        await SQLiteStore(path).open()


async def test_older_database_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    nxt = sql.schema_version("sqlite") + 1  # a migration beyond the current version
    fake = [(nxt, "add_note", "ALTER TABLE fo_runs ADD COLUMN note TEXT;\nCREATE INDEX fo_runs_note ON fo_runs (note);")]
    monkeypatch.setattr(sql, "migrations", lambda dialect: fake)
    monkeypatch.setattr(sql, "schema_version", lambda dialect: nxt)
    await SQLiteStore(path).open()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM fo_schema_version").fetchone() == (nxt,)
    assert "note" in [r[1] for r in conn.execute("PRAGMA table_info(fo_runs)")]


async def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await SQLiteStore(tmp_path / "nope" / "f.db").open()


def test_every_query_the_store_uses_is_defined() -> None:
    source = (Path(sql.__file__).parent.parent / "sqlite.py").read_text()
    used = set(re.findall(r'Q\["(\w+)"\]', source))
    defined = set(sql.queries("sqlite"))
    # The runs filters' WHERE fragments are picked by stores/_rows.run_filter, by filter name.
    used |= {f"runs_where_{n}" for n in ("flow_id", "status", "since", "until", "run_id", "search")}
    assert used <= defined, used - defined
    assert defined - used <= {"get_schema_version", "set_schema_version", "insert_schema_version"} | used


def test_every_dialect_defines_the_same_queries() -> None:
    dialects = [p.name for p in Path(sql.__file__).parent.iterdir() if p.is_dir() and (p / "queries.sql").exists()]
    names = {d: set(sql.queries(d)) for d in dialects}
    first = next(iter(names.values()))
    assert all(n == first for n in names.values()), names


def test_store_urls() -> None:
    assert isinstance(open_store("sqlite:///relative.db"), SQLiteStore)
    s = open_store("sqlite:////abs/path.db")
    assert isinstance(s, SQLiteStore) and s.path == "/abs/path.db"
    assert isinstance(open_store("sqlite:///:memory:"), SQLiteStore)
