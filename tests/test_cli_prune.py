"""``floworchestrator prune``: deletes finished runs older than an age; one-line errors for bad ages."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from floworchestrator.cli import BadUsage, _parse_age

from .test_cli import APP, Cli, one_line_error, run_id_of


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    # As test_cli's fixture: a fresh app module per call, state only in the SQLite file.
    from click.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("FLOWORCHESTRATOR_STORE", "FLOWORCHESTRATOR_APP"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    c = Cli(CliRunner(), tmp_path, "", f"sqlite:///{tmp_path / 'cli.db'}")
    c.module = c.write(APP)
    yield c


def backdate(cli: Cli, run_id: str, days: float) -> None:
    """Move a run's times ``days`` into the past, as if it had run then."""
    conn = sqlite3.connect(cli.dir / "cli.db")
    with conn:
        conn.execute(
            "UPDATE fo_runs SET created_at = created_at - :s, finished_at = finished_at - :s WHERE run_id = :r",
            {"s": days * 86400, "r": run_id},
        )
    conn.close()


def listed(cli: Cli) -> set[str]:
    r = cli("runs", "--limit", "100")
    assert r.exit_code == 0, r.output
    return {line.split()[0] for line in r.stdout.splitlines()[1:] if line and not line.startswith("No runs")}


def test_prune_deletes_finished_runs_older_than_the_age(cli: Cli) -> None:
    old_ok = run_id_of(cli("trigger", "hello"))
    old_failed = run_id_of(cli("trigger", "pair"))
    recent = run_id_of(cli("trigger", "hello"))
    queued = cli("trigger", "hello", "--no-wait").stdout.strip()  # Running: never pruned
    for rid in (old_ok, old_failed, queued):
        backdate(cli, rid, 40)

    r = cli("prune", "--older-than", "30d")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Deleted 2 runs that finished before ") and "(older than 30d)" in r.stdout
    assert listed(cli) == {recent, queued}
    one_line_error(cli("run", old_ok), 1, f"unknown run '{old_ok}'")

    again = cli("prune", "--older-than", "30d")
    assert again.exit_code == 0 and again.stdout.startswith("Deleted 0 runs ")


@pytest.mark.parametrize("age", ["30d", "12h", "90m", "3600s", " 1d "])
def test_prune_accepts_days_hours_minutes_and_seconds(cli: Cli, age: str) -> None:
    run_id_of(cli("trigger", "hello"))  # so the database exists; it finished just now, so it stays
    r = cli("prune", "--older-than", age)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Deleted 0 runs")


@pytest.mark.parametrize("age", ["30", "d", "30w", "-1d", "1.5h", "30 d", "", "0d", "0s", "999999d", "99999999999999d"])
def test_a_bad_age_is_a_one_line_usage_error(cli: Cli, age: str) -> None:
    one_line_error(cli("prune", "--older-than", age), 2, "--older-than")


def test_prune_needs_the_database(cli: Cli) -> None:
    one_line_error(cli("prune", "--older-than", "30d"), 1, "there is no database at")
    assert not (cli.dir / "cli.db").exists()


def test_prune_needs_an_app(cli: Cli) -> None:
    one_line_error(cli("prune", "--older-than", "30d", app=False), 2, "no app given")


def test_parse_age() -> None:
    assert _parse_age("30d") == timedelta(days=30)
    assert _parse_age("12h") == timedelta(hours=12)
    assert _parse_age("90m") == timedelta(minutes=90)
    assert _parse_age("3600s") == timedelta(hours=1)
    with pytest.raises(BadUsage, match=r"e\.g\. 30d, 12h, 90m or 3600s"):
        _parse_age("1y")
