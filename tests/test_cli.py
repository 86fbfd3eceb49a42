"""The command line: each command, each error path, and the demo end to end.

Most tests call the CLI in-process with click's CliRunner. The app module is
imported afresh for every call (as a new process would), so state carries
from one call to the next only through the SQLite file. A few tests run the
installed script as a subprocess, the way a user does.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from floworchestrator.cli import main

APP = '''
import asyncio
import os

from floworchestrator import Cron, Flow, Manual, Orchestrator, Step

orch = Orchestrator(store=os.environ["FLOWORCHESTRATOR_STORE"], runtime="inprocess", shutdown_timeout=0.5)

@orch.handler("Echo")
async def echo(inputs):
    return inputs

@orch.handler("Boom")
def boom(inputs):
    raise ValueError("boom")

@orch.handler("Sleep")
async def sleep(inputs):
    await asyncio.sleep(inputs["seconds"])
    return {"slept": inputs["seconds"]}

orch.register(
    Flow(id="hello", description="Says hello.", steps={"say": Step("Echo", inputs={"name": "@triggerBody()?.name"})}),
    Flow(id="pair", steps={
        "a": Step("Echo", inputs={"n": 1}),
        "b": Step("Boom", run_after={"a": ["Succeeded"]}),
        "c": Step("Echo", run_after={"b": ["Succeeded"]}),
    }),
    Flow(id="nightly", triggers={"manual": Manual(), "at_two": Cron("0 2 * * *")}, steps={"x": Step("Echo")}),
    Flow(id="slow", steps={"z": Step("Sleep", inputs={"seconds": "@triggerBody()?.seconds"})}),
    Flow(id="off", enabled=False, steps={"x": Step("Echo")}),
)

not_an_orchestrator = 42
'''

MEMORY_APP = '''
from floworchestrator import Flow, Orchestrator, Step

orch = Orchestrator(store="memory://", runtime="inprocess")

@orch.handler("Echo")
async def echo(inputs):
    return inputs

orch.register(Flow(id="hello", steps={"say": Step("Echo")}))
'''

BROKEN_APP = '''
from floworchestrator import Flow, Orchestrator, Step

orch = Orchestrator(store="memory://", runtime="inprocess")
orch.register(Flow(id="bad", steps={"a": Step("Nope"), "b": Step("Echo", run_after={"zz": []})}))
'''


@dataclass
class Cli:
    runner: CliRunner
    dir: Path
    module: str
    store: str

    @property
    def app(self) -> str:
        return f"{self.module}:orch"

    def __call__(self, *args: str, input: str | None = None, app: bool = True) -> Result:
        # A fresh import per call, as in a new process.
        for name in [m for m in sys.modules if m == self.module or m.startswith("cliapp_")]:
            del sys.modules[name]
        full = list(args) + (["--app", self.app, "--store", self.store] if app else [])
        # What the CLI exports (--store) is undone after the call, as it would be with a process.
        env = {"FLOWORCHESTRATOR_STORE": os.environ.get("FLOWORCHESTRATOR_STORE")}
        return self.runner.invoke(main, full, input=input, env=env)

    def write(self, source: str, name: str | None = None) -> str:
        name = name or f"cliapp_{uuid.uuid4().hex[:8]}"
        (self.dir / f"{name}.py").write_text(source)
        return name


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # The CLI exports --store to the environment; make sure that is undone.
    for var in ("FLOWORCHESTRATOR_STORE", "FLOWORCHESTRATOR_APP"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    logger = logging.getLogger("floworchestrator")
    level = logger.level
    c = Cli(CliRunner(), tmp_path, "", f"sqlite:///{tmp_path / 'cli.db'}")
    c.module = c.write(APP)
    yield c
    logger.setLevel(level)


def one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("Error: "), err
    for f in fragments:
        assert f in err, (f, err)


def run_id_of(result: Result) -> str:
    assert result.exit_code in (0, 1) and result.stderr == "", result.output
    return result.stdout.strip().splitlines()[0].split("run ")[1].split()[0]


# --- trigger ----------------------------------------------------------------------


def test_trigger_waits_and_prints_the_run(cli: Cli) -> None:
    r = cli("trigger", "hello", "--body", '{"name": "Ada"}')
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("hello  Succeeded  in ")
    assert lines[1].split() == ["say", "Succeeded", '{"name":', '"Ada"}']


def test_trigger_of_a_failing_flow_exits_1_and_shows_the_error_and_skips(cli: Cli) -> None:
    r = cli("trigger", "pair")
    assert r.exit_code == 1
    assert "pair  Failed" in r.stdout
    assert "b  Failed     error: ValueError: boom" in r.stdout
    assert "c  Skipped" in r.stdout
    assert r.stderr == ""


def test_trigger_body_from_a_file_and_from_stdin(cli: Cli) -> None:
    (cli.dir / "body.json").write_text('{"name": "file"}')
    assert '{"name": "file"}' in cli("trigger", "hello", "--body", "@body.json").stdout
    assert '{"name": "stdin"}' in cli("trigger", "hello", "--body", "-", input='{"name": "stdin"}').stdout


def test_trigger_no_wait_queues_the_run_without_running_it(cli: Cli) -> None:
    r = cli("trigger", "hello", "--no-wait")
    assert r.exit_code == 0, r.output
    run_id = r.stdout.strip()
    assert len(run_id) == 36
    assert "an orchestrator running on this store will start it" in r.stderr
    shown = cli("run", run_id)
    assert "Running" in shown.stdout
    assert "say   Pending  0" in shown.stdout


def test_a_queued_run_is_picked_up_by_the_next_orchestrator_that_starts(cli: Cli) -> None:
    queued = cli("trigger", "hello", "--no-wait", "--body", '{"name": "later"}').stdout.strip()
    cli("trigger", "hello")  # starts the orchestrator: its recovery runs the queued steps
    shown = cli("run", queued)
    assert "Succeeded" in shown.stdout and '{"name": "later"}' in shown.stdout


def test_trigger_with_an_idempotency_key_returns_the_first_run(cli: Cli) -> None:
    first = cli("trigger", "hello", "--idempotency-key", "k-1", "--no-wait")
    again = cli("trigger", "hello", "--idempotency-key", "k-1", "--no-wait")
    assert first.stdout == again.stdout
    assert "idempotency key 'k-1' was used before" in again.stderr
    waited = cli("trigger", "hello", "--idempotency-key", "k-1")
    assert waited.exit_code == 0 and first.stdout.strip() in waited.stdout


def test_trigger_no_wait_on_a_memory_store_warns_that_the_run_is_lost(cli: Cli) -> None:
    cli.store = "memory://"
    r = cli("trigger", "hello", "--no-wait")
    assert r.exit_code == 0
    assert "the store is in memory" in r.stderr


def test_trigger_timeout(cli: Cli) -> None:
    r = cli("trigger", "slow", "--body", '{"seconds": 5}', "--timeout", "0.3")
    one_line_error(r, 1, "did not finish within 0.3s", "floworchestrator run ")


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["trigger", "nope"], 1, ["unknown flow 'nope'", "hello, nightly, off, pair, slow"]),
        (["trigger", "off"], 1, ["flow 'off' is disabled; no run was started"]),
        (["trigger", "hello", "--body", "{nope"], 2, ["--body is not valid JSON"]),
        (["trigger", "hello", "--body", "@missing.json"], 2, ["cannot read the body file 'missing.json'"]),
        (["run", "no-such-run"], 1, ["unknown run 'no-such-run'"]),
    ],
)
def test_errors_are_one_line(cli: Cli, args: list[str], code: int, fragments: list[str]) -> None:
    cli("trigger", "hello")  # so the database exists
    one_line_error(cli(*args), code, *fragments)


# --- runs / run / flows ---------------------------------------------------------------


def test_runs_lists_newest_first_and_filters(cli: Cli) -> None:
    ok = run_id_of(cli("trigger", "hello"))
    bad = run_id_of(cli("trigger", "pair"))
    r = cli("runs")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["RUN", "FLOW", "STATUS", "CREATED", "FINISHED", "TOOK"]
    assert lines[1].startswith(bad) and lines[2].startswith(ok)
    assert lines[1].split()[1:3] == ["pair", "Failed"]
    assert [ln.split()[0] for ln in cli("runs", "--flow", "hello").stdout.splitlines()[1:]] == [ok]
    assert [ln.split()[0] for ln in cli("runs", "--status", "failed").stdout.splitlines()[1:]] == [bad]
    limited = cli("runs", "--limit", "1").stdout.splitlines()
    assert len(limited) == 3 and limited[-1] == "1 of 2 runs; --limit shows more"
    assert cli("runs", "--flow", "nightly").stdout == "No runs match these filters.\n"


def test_runs_rejects_an_unknown_status(cli: Cli) -> None:
    r = cli("runs", "--status", "Sleeping")
    assert r.exit_code == 2 and "'Sleeping' is not one of" in r.stderr


def test_run_shows_steps_and_attempts(cli: Cli) -> None:
    run_id = run_id_of(cli("trigger", "pair"))
    r = cli("run", run_id)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert f"Run       {run_id}" in out
    assert "Flow      pair" in out and "Status    Failed" in out
    steps = out.split("STEP  STATUS     ATTEMPTS")[1]
    assert "a     Succeeded  1" in steps and '{"n": 1}' in steps
    assert "b     Failed     1" in steps and "error: ValueError: boom" in steps
    assert "c     Skipped    0" in steps
    attempts = out.split("STEP  ATTEMPT")[1]
    assert "b     1        Failed" in attempts and "ValueError: boom" in attempts
    full = cli("run", run_id, "--full").stdout
    assert '  inputs: {\n    "n": 1\n  }' in full and "(has not run)" in full


def test_flows_lists_enabled_triggers_and_steps(cli: Cli) -> None:
    r = cli("flows")
    assert r.exit_code == 0, r.output
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert rows.keys() == {"hello", "nightly", "off", "pair", "slow"}
    assert rows["hello"].split() == ["hello", "yes", "manual", "1", "Says", "hello."]
    assert "manual, at_two (cron 0 2 * * *)" in rows["nightly"]
    assert rows["pair"].split()[:4] == ["pair", "yes", "manual", "3"]
    assert rows["off"].split()[1] == "no"


def test_read_commands_do_not_run_anything(cli: Cli) -> None:
    queued = cli("trigger", "hello", "--no-wait").stdout.strip()
    for args in (["runs"], ["run", queued], ["flows"]):
        assert cli(*args).exit_code == 0
    runs = cli("runs").stdout
    assert "Running" in runs and "Succeeded" not in runs


def test_read_commands_do_not_create_a_missing_database(cli: Cli) -> None:
    one_line_error(cli("runs"), 1, "there is no database at", "cli.db")
    one_line_error(cli("run", "x"), 1, "there is no database at")
    assert cli("flows").exit_code == 0  # the flows come from the code
    assert not (cli.dir / "cli.db").exists()


# --- loading the app ------------------------------------------------------------------------


def test_app_from_the_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWORCHESTRATOR_APP", cli.app)
    monkeypatch.setenv("FLOWORCHESTRATOR_STORE", cli.store)
    r = cli("trigger", "hello", app=False)
    assert r.exit_code == 0 and "hello  Succeeded" in r.stdout


@pytest.mark.parametrize(
    ("app", "fragments"),
    [
        (None, ["no app given: pass --app module:attribute or set FLOWORCHESTRATOR_APP"]),
        ("justamodule", ["--app must look like 'module:attribute'", "got 'justamodule'"]),
        ("no_such_module:orch", ["could not import 'no_such_module'", "no module named 'no_such_module'"]),
        ("APPMOD:nothing", ["module 'APPMOD' has no attribute 'nothing'"]),
        ("APPMOD:not_an_orchestrator", ["is a int, not an Orchestrator"]),
    ],
)
def test_bad_app(cli: Cli, app: str | None, fragments: list[str]) -> None:
    args = ["flows", "--store", cli.store] + ([] if app is None else ["--app", app.replace("APPMOD", cli.module)])
    one_line_error(cli(*args, app=False), 2, *[f.replace("APPMOD", cli.module) for f in fragments])


def test_an_app_whose_flows_do_not_validate_lists_every_problem(cli: Cli) -> None:
    module = cli.write(BROKEN_APP)
    r = cli("flows", "--app", f"{module}:orch", app=False)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "Error: 3 problems in flow definitions:",
        "  - flow 'bad', step 'a', type: no handler is registered for type 'Nope'",
        "  - flow 'bad', step 'b', type: no handler is registered for type 'Echo'",
        "  - flow 'bad', step 'b', run_after: run_after names unknown step 'zz'",
    ]


def test_an_import_error_inside_the_app_is_not_disguised(cli: Cli) -> None:
    module = cli.write("import a_dependency_that_is_not_installed\n")
    r = cli("flows", "--app", f"{module}:orch", app=False)
    assert isinstance(r.exception, ModuleNotFoundError)
    assert r.exception.name == "a_dependency_that_is_not_installed"


def test_store_option_replaces_the_apps_own_store(cli: Cli) -> None:
    module = cli.write(MEMORY_APP)
    r = cli("runs", "--app", f"{module}:orch", "--store", cli.store, app=False)
    one_line_error(r, 1, "there is no database at", "check --store")
    r = cli("runs", "--app", f"{module}:orch", "--store", "mongodb://x", app=False)
    one_line_error(r, 2, "--store 'mongodb://x'", "unknown store URL scheme")
    r = cli("runs", "--app", f"{module}:orch", app=False)
    assert r.exit_code == 0 and "the store is in memory" in r.stdout


# --- demo and the installed script -------------------------------------------------------


def test_demo_in_memory(cli: Cli) -> None:
    r = cli("demo", "--store", "memory://", app=False)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "orders  Succeeded" in out and "orders  Failed" in out
    assert "diamond  Succeeded" in out and "heartbeat  Succeeded" in out
    assert "credit  Failed     error: ConnectionError" in out
    assert "ship    Skipped" in out and "alert   Succeeded" in out
    assert '"total": 77.4' in out
    assert "kept in memory" in out


def test_demo_on_sqlite_prints_commands_that_work(tmp_path: Path) -> None:
    """The acceptance path: run the installed script, then each command the demo suggests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWORCHESTRATOR_")}
    env["COLUMNS"] = "200"
    exe = Path(sys.executable).parent / "floworchestrator"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)

    demo = run(str(exe), "demo", "--db", "demo.db")
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr == ""
    assert (tmp_path / "demo.db").exists()
    suggested = [ln.strip() for ln in demo.stdout.splitlines() if ln.strip().startswith("floworchestrator ")]
    assert len(suggested) == 3
    for line in suggested:
        argv = shlex.split(line)
        res = run(str(exe), *argv[1:])
        assert res.returncode == 0, (line, res.stderr)
        assert res.stdout
    runs = run(str(exe), *shlex.split(suggested[0])[1:]).stdout
    assert runs.count("orders") == 2 and "diamond" in runs and "heartbeat" in runs
    detail = run(sys.executable, "-m", "floworchestrator", *shlex.split(suggested[1])[1:])
    assert detail.returncode == 0 and "store  " in detail.stdout and "INV-A-17" in detail.stdout


def test_help_and_version() -> None:
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for command in ("demo", "trigger", "runs", "run", "flows"):
        assert f"  {command} " in r.stdout
    v = CliRunner().invoke(main, ["--version"])
    assert v.stdout.startswith("floworchestrator, version ")


def test_demo_module_builds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import floworchestrator.demo as sample

    monkeypatch.delitem(sample.__dict__, "orchestrator", raising=False)
    monkeypatch.setenv("FLOWORCHESTRATOR_STORE", "memory://")
    orch = sample.orchestrator
    assert sorted(orch.flows) == ["diamond", "heartbeat", "orders"]
    assert sample.orchestrator is orch
    assert json.loads(json.dumps(orch.flows["orders"].to_manifest()))["steps"]["price"]["run_after"] == {"fetch": ["Succeeded"]}
