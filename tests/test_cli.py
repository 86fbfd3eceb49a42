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
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
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

from floworchestrator import Cron, Flow, Manual, Orchestrator, Step, WaitForSignal

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
    Flow(id="nightly", triggers={"manual": Manual(), "at_two": Cron("0 2 * * *"), "paris": Cron("30 6 * * 1-5", timezone="Europe/Paris")},
         steps={"x": Step("Echo")}),
    Flow(id="slow", steps={"z": Step("Sleep", inputs={"seconds": "@triggerBody()?.seconds"})}),
    Flow(id="off", enabled=False, steps={"x": Step("Echo")}),
    Flow(id="approve", steps={
        "wait": WaitForSignal("go", timeout=60),
        "after": Step("Echo", run_after={"wait": ["Succeeded"]}, inputs={"got": "@steps('wait').output"}),
    }),
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
        (["trigger", "nope"], 1, ["unknown flow 'nope'", "approve, hello, nightly, off, pair, slow"]),
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
    assert rows.keys() == {"approve", "hello", "nightly", "off", "pair", "slow"}
    assert rows["hello"].split() == ["hello", "yes", "manual", "1", "Says", "hello."]
    assert "manual, at_two (cron 0 2 * * *), paris (cron 30 6 * * 1-5 Europe/Paris)" in rows["nightly"]
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


@pytest.mark.parametrize("command", [["flows"], ["runs"], ["schedules"], ["prune", "--older-than", "30d"]])
def test_the_app_as_the_commands_argument(cli: Cli, command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`floworchestrator flows myapp:orch` is `flows --app myapp:orch` (before or after the options)."""
    assert cli("trigger", "hello").exit_code == 0  # a database to read
    expected = cli(*command)
    assert expected.exit_code == 0, expected.output
    assert cli(*command, cli.app, "--store", cli.store, app=False).stdout == expected.stdout
    assert cli(command[0], "--store", cli.store, cli.app, *command[1:], app=False).stdout == expected.stdout
    # The same app both ways is fine; the argument wins over FLOWORCHESTRATOR_APP, as --app does.
    assert cli(*command, cli.app, "--app", cli.app, "--store", cli.store, app=False).stdout == expected.stdout
    monkeypatch.setenv("FLOWORCHESTRATOR_APP", f"{cli.module}:not_an_orchestrator")
    assert cli(*command, cli.app, "--store", cli.store, app=False).stdout == expected.stdout


def test_the_app_as_argument_and_a_different_app_option_is_an_error(cli: Cli) -> None:
    r = cli("flows", f"{cli.module}:other", "--app", cli.app, "--store", cli.store, app=False)
    one_line_error(r, 2, f"the app is given twice: '{cli.module}:other' as the argument and '{cli.app}' as --app; give one")
    one_line_error(cli("serve", "a:b", "--app", "c:d", app=False), 2, "the app is given twice")


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


# --- signal, retry, cancel, rerun (client mode) -------------------------------------------------


def status_of(cli: Cli, run_id: str) -> str:
    shown = cli("run", run_id)
    assert shown.exit_code == 0, shown.output
    return shown.stdout.split("Status    ")[1].split()[0]


def drain(cli: Cli, run_id: str) -> str:
    """Start orchestrators (each recovers queued steps at start) until the run is final; its status."""
    for _ in range(10):
        status = status_of(cli, run_id)
        if status != "Running":
            return status
        cli("trigger", "slow", "--body", '{"seconds": 0.1}')
    return status_of(cli, run_id)


def test_signal_resumes_the_step_waiting_for_it(cli: Cli) -> None:
    waiting = cli("trigger", "approve", "--timeout", "0.5")  # gives up waiting; the run stays, its step waiting
    one_line_error(waiting, 1, "did not finish within 0.5s")
    run_id = waiting.stderr.split("run ")[1].split()[0]
    assert "wait   Pending  1         -     waiting for signal 'go'" in cli("run", run_id).stdout
    r = cli("signal", run_id, "wait", "--payload", '{"ok": true}')  # by step key
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"Sent signal 'go' to run {run_id} (flow 'approve').\nStep 'wait' was waiting for it and is queued: ")
    assert "an orchestrator running on this store picks it up at its next recovery pass (within about 70s)" in " ".join(r.stdout.split())
    assert status_of(cli, run_id) == "Running"  # nothing ran here
    assert drain(cli, run_id) == "Succeeded"
    shown = cli("run", run_id).stdout
    assert 'wait   Succeeded  2' in shown and '{"ok": true}' in shown and '{"got": {"ok": true}}' in shown


def test_a_signal_sent_before_its_step_waits_is_kept(cli: Cli) -> None:
    run_id = cli("trigger", "approve", "--no-wait").stdout.strip()
    r = cli("signal", run_id, "go", "--payload", "-", input='"early"')  # by signal name, payload from stdin
    assert r.exit_code == 0, r.output
    assert "No step waits for it yet: it is kept, and step 'wait' takes it when it gets there." in r.stdout
    assert drain(cli, run_id) == "Succeeded"
    assert '{"got": "early"}' in cli("run", run_id).stdout


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["signal", "no-such-run", "go"], 1, ["unknown run 'no-such-run'"]),
        (["signal", "FINISHED", "go"], 1, ["has already finished (Succeeded); signals go to Running runs only"]),
        (["signal", "WAITING", "stop", "--payload", "{nope"], 2, ["--payload is not valid JSON"]),
        (["signal", "WAITING", "stop"], 1, ["no step of flow 'approve' waits for a signal 'stop'", "'go' (step 'wait')"]),
        (["signal", "WAITING", "go", "--payload", "@nope.json"], 2, ["cannot read the payload file 'nope.json'"]),
        (["retry", "FINISHED", "say"], 1, ["step 'say' is Succeeded; only a Failed, TimedOut or Cancelled step can be retried"]),
        (["retry", "FINISHED", "zz"], 1, ["has no step 'zz'"]),
        (["retry", "no-such-run", "a"], 1, ["unknown run 'no-such-run'"]),
        (["cancel", "FINISHED"], 1, ["is already Succeeded; only a Running run can be cancelled"]),
        (["cancel", "no-such-run"], 1, ["unknown run 'no-such-run'"]),
        (["rerun", "no-such-run"], 1, ["unknown run 'no-such-run'"]),
    ],
)
def test_control_errors_are_one_line(cli: Cli, args: list[str], code: int, fragments: list[str]) -> None:
    waiting = cli("trigger", "approve", "--no-wait").stdout.strip()
    finished = run_id_of(cli("trigger", "hello"))
    args = [{"WAITING": waiting, "FINISHED": finished}.get(a, a) for a in args]
    one_line_error(cli(*args), code, *fragments)


def test_control_commands_need_the_database(cli: Cli) -> None:
    for args in (["signal", "x", "go"], ["retry", "x", "a"], ["cancel", "x"], ["rerun", "x"]):
        one_line_error(cli(*args), 1, "there is no database at", "cli.db")
    assert not (cli.dir / "cli.db").exists()
    cli.store = "memory://"
    one_line_error(cli("cancel", "x"), 1, "unknown run 'x' (the store is in memory: runs of other processes are not visible here")


def test_retry_queues_the_step_again_for_a_running_orchestrator(cli: Cli) -> None:
    run_id = run_id_of(cli("trigger", "pair"))
    r = cli("retry", run_id, "b")
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert out.startswith(f"Step 'b' of run {run_id} (flow 'pair') is queued to run again; earlier steps keep their outputs.")
    assert "The steps after it are Pending again: 'c'." in out
    assert "The run is Running again: an orchestrator running on this store picks the step up at its next recovery pass" in out
    shown = cli("run", run_id).stdout
    assert "Status    Running" in shown and "b     Pending    1" in shown and "c     Pending    0" in shown
    assert drain(cli, run_id) == "Failed"  # it ran again (and failed again)
    assert "b     Failed     2" in cli("run", run_id).stdout


def test_cancel_stops_a_run(cli: Cli) -> None:
    run_id = cli("trigger", "slow", "--no-wait", "--body", '{"seconds": 5}').stdout.strip()
    r = cli("cancel", run_id)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"Cancelled run {run_id} (flow 'slow'): no step of it starts from now on.", "Cancelled steps: 'z'."]
    shown = cli("run", run_id).stdout
    assert "Status    Cancelled" in shown and "z     Cancelled  0" in shown
    cli("trigger", "hello")  # an orchestrator starts: nothing of the cancelled run runs
    assert "z     Cancelled  0" in cli("run", run_id).stdout


def test_rerun_queues_a_new_run_with_the_same_trigger_data(cli: Cli) -> None:
    first = run_id_of(cli("trigger", "hello", "--body", '{"name": "Ada"}'))
    r = cli("rerun", first)
    assert r.exit_code == 0, r.output
    new = r.stdout.strip()
    assert len(new) == 36 and new != first
    assert f"started run {new} of 'hello' with the trigger data of run {first}; it is queued" in " ".join(r.stderr.split())
    assert status_of(cli, new) == "Running"
    assert drain(cli, new) == "Succeeded"
    assert '{"name": "Ada"}' in cli("run", new).stdout


# --- schedules ----------------------------------------------------------------------------------


def schedule_rows(cli: Cli) -> dict[str, list[str]]:
    r = cli("schedules")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    headers = ["FLOW", "TRIGGER", "EXPRESSION", "TIMEZONE", "PAUSED", "OVERRIDDEN", "NEXT FIRES (IN TIMEZONE)"]
    assert re.split(r"\s{2,}", lines[0]) == headers
    return {f"{cells[0]} {cells[1]}": cells for ln in lines[1:] if len(cells := re.split(r"\s{2,}", ln)) == 7}


def test_schedules_lists_cron_triggers_with_their_next_fires(cli: Cli) -> None:
    rows = schedule_rows(cli)
    assert not (cli.dir / "cli.db").exists()  # a read: no empty database is created
    assert rows.keys() == {"nightly at_two", "nightly paris"}
    assert rows["nightly at_two"][2:6] == ["0 2 * * *", "UTC", "no", "no"]
    assert rows["nightly paris"][2:6] == ["30 6 * * 1-5", "Europe/Paris", "no", "no"]
    fires = rows["nightly paris"][6].split(", ")
    assert len(fires) == 3 and all(f.endswith(" 06:30") for f in fires)  # in the trigger's own timezone
    assert all(f.endswith(" 02:00") for f in rows["nightly at_two"][6].split(", "))


def test_pause_resume_and_set_cron_are_saved_in_the_store(cli: Cli) -> None:
    r = cli("schedule", "pause", "nightly", "at_two")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Paused nightly at_two (0 2 * * *, UTC): it starts no run until it is resumed")
    assert f"floworchestrator schedule resume nightly at_two --app {cli.app} --store {cli.store}" in r.stdout
    assert schedule_rows(cli)["nightly at_two"][4] == "yes"

    r = cli("schedule", "set-cron", "nightly", "at_two", "*/5 * * * *")
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "nightly at_two now fires on '*/5 * * * *' (UTC) instead of the flow's own '0 2 * * *'" in out
    assert "It is paused: it fires once resumed" in out
    row = schedule_rows(cli)["nightly at_two"]
    assert row[2:6] == ["*/5 * * * *", "UTC", "yes", "yes"]
    assert all(int(f[-2:]) % 5 == 0 for f in row[6].split(", "))
    listing = cli("schedules").stdout
    assert "nightly at_two: overridden; the flow's own expression is '0 2 * * *'" in listing

    r = cli("schedule", "resume", "nightly", "at_two")
    assert r.exit_code == 0 and "Resumed nightly at_two (*/5 * * * *, UTC)" in r.stdout and "Next fires (UTC): " in r.stdout
    r = cli("schedule", "set-cron", "nightly", "at_two", "--reset")
    assert r.exit_code == 0 and "nightly at_two is back on the flow's own expression '0 2 * * *' (UTC)." in r.stdout
    assert schedule_rows(cli)["nightly at_two"][2:6] == ["0 2 * * *", "UTC", "no", "no"]


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["schedule", "pause", "nope", "at_two"], 1, ["unknown flow 'nope' (flows with a cron trigger in", ": nightly)"]),
        (["schedule", "resume", "nightly", "manual"], 1, ["has no cron trigger 'manual'", "(its cron triggers: at_two, paris)"]),
        (["schedule", "pause", "hello", "x"], 1, ["flow 'hello' has no trigger 'x' (its cron triggers: none)"]),
        (["schedule", "set-cron", "nightly", "at_two", "every day"], 1, ["invalid cron expression 'every day'"]),
        (["schedule", "set-cron", "nightly", "at_two"], 2, ["give a cron EXPRESSION, or --reset"]),
        (["schedule", "set-cron", "nightly", "at_two", "* * * * *", "--reset"], 2, ["not both"]),
    ],
)
def test_schedule_errors_are_one_line(cli: Cli, args: list[str], code: int, fragments: list[str]) -> None:
    one_line_error(cli(*args), code, *fragments)


# --- serve --------------------------------------------------------------------------------------

SERVE_APP = """
import os

from floworchestrator import Flow, Orchestrator, Step, Webhook

orch = Orchestrator(store=os.environ["FLOWORCHESTRATOR_STORE"], runtime="inprocess", shutdown_timeout=2)

@orch.handler("Echo")
async def echo(inputs):
    return {"got": inputs, "pid": os.getpid()}

orch.register(Flow(id="hooked", triggers={"incoming": Webhook("incoming")}, steps={"echo": Step("Echo", inputs="@triggerBody()")}))
"""


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_webhook_triggers_and_stops_cleanly(cli: Cli, stop_with: signal.Signals) -> None:
    module = cli.write(SERVE_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWORCHESTRATOR_")}
    exe = Path(sys.executable).parent / "floworchestrator"
    with (cli.dir / "serve.err").open("w+") as err:
        proc = subprocess.Popen(
            [str(exe), "serve", "--app", f"{module}:orch", "--store", cli.store, "--port", "0"],
            cwd=cli.dir, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )
        watchdog = threading.Timer(20, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            banner = []
            while not banner or not banner[-1].startswith("Listening on "):
                line = proc.stdout.readline()
                assert line, (banner, (cli.dir / "serve.err").read_text())
                banner.append(line)
            url = banner[-1].split()[-1]
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            hook = proc.stdout.readline().split()
            assert hook == ["POST", f"{url}/webhook/incoming", "->", "flow", "'hooked'", "(trigger", "'incoming')"]

            request = urllib.request.Request(f"{url}/webhook/incoming", data=b'{"n": 1}', method="POST")
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy from the environment
            with direct.open(request, timeout=5) as response:
                assert response.status == 202
                run_id = json.loads(response.read())["run_id"]
            deadline = time.monotonic() + 5
            while status_of(cli, run_id) == "Running" and time.monotonic() < deadline:
                time.sleep(0.05)
            shown = cli("run", run_id).stdout
            assert "Status    Succeeded" in shown and f'{{"got": {{"n": 1}}, "pid": {proc.pid}}}' in shown  # ran in the server

            proc.send_signal(stop_with)
            out, _ = proc.communicate(timeout=15)
        finally:
            watchdog.cancel()
            proc.kill()
        err.seek(0)
        log = err.read()
    assert proc.returncode == 0, log
    assert out.rstrip().endswith("Stopped.")
    assert "Traceback" not in log and "ERROR" not in log, log
    assert '"POST /webhook/incoming HTTP/1.1" 202' in log
    assert "Stopping: no new requests" in log and "orchestrator stopped" in log


def test_serve_without_the_web_extra_says_what_to_install(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    one_line_error(cli("serve"), 1, "serve needs Starlette and uvicorn, and 'uvicorn' is not installed",
                   "pip install 'floworchestrator[web]'")
    monkeypatch.delitem(sys.modules, "uvicorn")
    for name in [m for m in sys.modules if m.startswith("floworchestrator.web")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    one_line_error(cli("serve"), 1, "'starlette' is not installed: pip install 'floworchestrator[web]'")


def test_serve_on_a_taken_port_is_a_one_line_error(cli: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        one_line_error(cli("serve", "--port", str(port)), 1, f"cannot listen on 127.0.0.1:{port}: ")
    assert not (cli.dir / "cli.db").exists()  # nothing was started


# --- demo and the installed script -------------------------------------------------------


def test_demo_in_memory(cli: Cli) -> None:
    started = time.monotonic()
    r = cli("demo", "--store", "memory://", app=False)
    assert r.exit_code == 0, r.output
    assert time.monotonic() - started < 5
    out = r.stdout
    assert "orders  Succeeded" in out and "orders  Failed" in out
    assert "diamond  Succeeded" in out and "heartbeat  Succeeded" in out
    assert "credit  Failed     error: ConnectionError" in out
    assert "ship    Skipped" in out and "alert   Succeeded" in out
    assert '"total": 77.4' in out
    assert "kept in memory" in out


def test_demo_shows_the_features_flow_end_to_end(cli: Cli) -> None:
    out = cli("demo", "--store", "memory://", app=False).stdout
    features = out[out.index("features  Succeeded"):]
    lines = {ln.split()[0]: " ".join(ln.split()[1:]) for ln in features.splitlines()[1:] if ln.startswith("  ") and "#" not in ln}
    # the when branch: review ran, fast was skipped with the trace of its condition, the join ran after both
    assert lines["review"] == 'Succeeded {"lane": "manual review"}'
    assert lines["fast"] == "Skipped skipped: when @steps('check').output.amount <= 100 -> 120 <= 100 -> false"
    assert lines["join"] == 'Succeeded {"review": "Succeeded", "fast": "Skipped"}'
    # the ForEach: one child per item, each reading its loop_item, listed right after the loop
    assert lines["pack"] == "Succeeded 3 items: 3 Succeeded (per item below)"
    assert lines["pack.0.pack"] == 'Succeeded {"sku": "kettle", "box": "small", "parcel": 1}'
    assert lines["pack.1.pack"] == 'Succeeded {"sku": "mug", "box": "large", "parcel": 2}'
    assert lines["pack.2.pack"] == 'Succeeded {"sku": "teapot", "box": "small", "parcel": 3}'
    assert [k for k in lines if k.startswith("pack")] == ["pack", "pack.0.pack", "pack.1.pack", "pack.2.pack"]
    # polling succeeded on its third check; the approval took the demo's signal
    assert lines["track"] == 'Succeeded {"state": "done", "checks": 3, "parcels": 3}'
    assert lines["approval"] == 'Succeeded {"by": "demo", "comment": "looks good"}'
    assert lines["release"] == 'Succeeded {"released": true, "approved_by": "demo"}'


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
    assert len(suggested) == 4
    for line in suggested:
        argv = shlex.split(line)
        res = run(str(exe), *argv[1:])
        assert res.returncode == 0, (line, res.stderr)
        assert res.stdout
    runs = run(str(exe), *shlex.split(suggested[0])[1:]).stdout
    assert runs.count("orders") == 2 and "diamond" in runs and "heartbeat" in runs and "features" in runs
    detail = run(sys.executable, "-m", "floworchestrator", *shlex.split(suggested[1])[1:])
    assert detail.returncode == 0 and "Flow      features" in detail.stdout
    assert "track        Succeeded  3" in detail.stdout  # polled three times
    assert "skipped: when @steps('check').output.amount <= 100" in detail.stdout
    schedules = run(str(exe), *shlex.split(suggested[3])[1:]).stdout
    assert schedules.splitlines()[1].split()[:6] == ["heartbeat", "every_minute", "*", "*", "*", "*"]


def test_help_and_version() -> None:
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for command in ("demo", "trigger", "runs", "run", "flows", "signal", "retry", "cancel", "rerun", "schedules", "schedule",
                    "serve"):
        assert f"  {command} " in r.stdout, command
    v = CliRunner().invoke(main, ["--version"])
    assert v.stdout.startswith("floworchestrator, version ")


def test_demo_module_builds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import floworchestrator.demo as sample

    monkeypatch.delitem(sample.__dict__, "orchestrator", raising=False)
    monkeypatch.setenv("FLOWORCHESTRATOR_STORE", "memory://")
    orch = sample.orchestrator
    assert sorted(orch.flows) == ["diamond", "features", "heartbeat", "orders"]
    assert sample.orchestrator is orch
    assert json.loads(json.dumps(orch.flows["orders"].to_manifest()))["steps"]["price"]["run_after"] == {"fetch": ["Succeeded"]}
