"""The ``floworchestrator`` command line.

Commands load the user's orchestrator the way uvicorn loads an app:
``--app module:attribute`` (or ``FLOWORCHESTRATOR_APP``), with the current
directory on ``sys.path``. Read commands (``runs``, ``run``, ``flows``) only
open the store; they never start the runtime, recovery or cron, because
starting an orchestrator runs steps.

Every error the user can cause is one ``Error: ...`` line on stderr with
exit status 1 (2 for a bad option), never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import shlex
import shutil
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from ._status import RunStatus, StepStatus
from .exceptions import FlowOrchestratorError, UnknownRunError
from .flow import Cron, Flow, Manual, Webhook
from .orchestrator import Orchestrator
from .stores.base import AttemptRecord, FlowRecord, RunRecord, StepRecord, Store
from .stores.memory import MemoryStore
from .stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from .demo import DemoRun

__all__ = ["load_app", "main", "print_run_summary"]

T = TypeVar("T")
FC = TypeVar("FC", bound=Callable[..., Any])

APP_ENV = "FLOWORCHESTRATOR_APP"
STORE_ENV = "FLOWORCHESTRATOR_STORE"


class BadUsage(click.ClickException):
    """A bad option value, reported as one line with exit status 2 (click's UsageError would add the usage text)."""

    exit_code = 2


class AppError(BadUsage):
    """``--app`` does not name an Orchestrator."""


# --- loading the user's orchestrator -------------------------------------------------


def load_app(spec: str, store_url: str | None = None) -> Orchestrator:
    """Import ``module:attribute`` (attribute may be dotted) and return the Orchestrator it names.

    ``store_url`` (``--store``) replaces the store the app configures; it is
    also exported as ``FLOWORCHESTRATOR_STORE`` before the import, for apps
    that build their Orchestrator from it (``floworchestrator.demo`` does).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppError(f"--app must look like 'module:attribute' (e.g. 'myapp.flows:orchestrator'), got {spec!r}")
    if store_url:
        os.environ[STORE_ENV] = store_url
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise AppError(f"could not import {module_name!r} (from --app {spec!r}): no module named {missing!r}") from None
        raise  # the app itself failed to import something: its traceback is what helps
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no attribute {attr!r} (from --app {spec!r})") from None
    if not isinstance(obj, Orchestrator):
        raise AppError(f"--app {spec!r} is a {type(obj).__name__}, not an Orchestrator")
    if store_url:
        try:
            obj.use_store(store_url)
        except FlowOrchestratorError as exc:
            raise BadUsage(f"--store {store_url!r}: {exc}") from None
    return obj


# --- output ----------------------------------------------------------------------------

_STATUS_COLOURS = {
    "Succeeded": "green",
    "Failed": "red",
    "TimedOut": "red",
    "Skipped": "yellow",
    "Cancelled": "magenta",
    "Running": "cyan",
    "Pending": "blue",
}


def _status(status: StepStatus | RunStatus | str) -> str:
    return click.style(str(status), fg=_STATUS_COLOURS.get(str(status)))


def _when(at: datetime | None) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"


def _took(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    s = (end - start).total_seconds()
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, indent=indent)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def _width() -> int:
    return max(60, shutil.get_terminal_size((100, 24)).columns)


def _step_result(step: StepRecord) -> str:
    if step.error is not None:
        return f"error: {step.error}"
    if step.output is not None:
        return _json(step.output)
    return ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, status_col: int | None = None) -> None:
    """Print rows as aligned columns; the last column is clipped to the terminal width."""
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    room = _width() - sum(widths[:-1]) - 2 * (len(headers) - 1)
    widths[-1] = min(widths[-1], max(len(headers[-1]), room, 20))

    def line(cells: Sequence[str], header: bool = False) -> str:
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            text = _clip(cell, widths[i]) if last else cell
            pad = "" if last else " " * (widths[i] - len(text))
            if header:
                text = click.style(text, bold=True)
            elif i == status_col:
                text = _status(text)
            out.append(text + pad)
        return "  ".join(out).rstrip()

    click.echo(line(headers, header=True))
    for r in rows:
        click.echo(line(r))


def print_run_summary(run: RunRecord, steps: Sequence[StepRecord], note: str | None = None) -> None:
    """A run in a few lines: flow, status, duration, then each step with its output or error."""
    head = (
        f"{click.style(run.flow_id, bold=True)}  {_status(run.status)}  in {_took(run.created_at, run.finished_at)}"
        f"  run {run.run_id}"
    )
    if run.trigger_key != "manual":
        head += f"  (trigger: {run.trigger_key})"
    click.echo(head)
    if note:
        for line in textwrap.wrap(note, _width() - 4):
            click.echo(click.style(f"  # {line}", dim=True))
    if not steps:
        return
    key_w = max(len(s.step_key) for s in steps)
    status_w = max(len(str(s.status)) for s in steps)
    room = _width() - key_w - status_w - 6
    for s in steps:
        result = _clip(_step_result(s), max(20, room))
        pad = " " * (status_w - len(str(s.status)))
        click.echo(f"  {s.step_key.ljust(key_w)}  {_status(s.status)}{pad}  {result}".rstrip())


def _hint(*commands: str) -> None:
    for c in commands:
        click.echo("  " + click.style(c, fg="cyan"))


def _app_args(spec: str, store_url: str | None) -> str:
    args = f"--app {shlex.quote(spec)}"
    if store_url:
        args += f" --store {shlex.quote(store_url)}"
    return args


def _trigger_summary(flow: Flow) -> str:
    parts = []
    for name, t in flow.triggers.items():
        if isinstance(t, Cron):
            tz = f" {t.timezone}" if t.timezone else ""
            parts.append(f"{name} (cron {t.expression}{tz})")
        elif isinstance(t, Webhook):
            parts.append(f"{name} (webhook /{t.slug})")
        elif isinstance(t, Manual):
            parts.append(name)
    return ", ".join(parts)


# --- plumbing -----------------------------------------------------------------------------


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the package's own errors into one-line click errors (FlowValidationError keeps its list)."""
    try:
        yield
    except FlowOrchestratorError as exc:
        raise click.ClickException(str(exc)) from None


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        with _errors():
            return super().invoke(ctx)


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def _missing_database(store: Store) -> str | None:
    """The path of a SQLite store whose file does not exist (opening it would create an empty one)."""
    if isinstance(store, SQLiteStore) and not store.path.startswith("file:") and not os.path.exists(store.path):
        return store.path
    return None


async def _reading(orch: Orchestrator, read: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, read, close — without starting the runtime, recovery or cron."""
    missing = _missing_database(orch.store)
    if missing is not None:
        raise click.ClickException(f"there is no database at {missing!r}: nothing has run on this store yet (check --store)")
    await orch.store.open()
    try:
        return await read(orch.store)
    finally:
        await orch.store.close()


def _app_options(func: FC) -> FC:
    func = click.option(
        "--store", "store_url", envvar=STORE_ENV, metavar="URL",
        help=f"Store URL (memory://, sqlite:///path.db) [env: {STORE_ENV}]. Exported to the app before it is imported;"
        " the app must build its Orchestrator from it.",
    )(func)
    func = click.option(
        "--app", "app_spec", envvar=APP_ENV, metavar="MODULE:ATTR",
        help=f"Where the Orchestrator is, e.g. myapp.flows:orchestrator [env: {APP_ENV}].",
    )(func)
    return func


def _load(app_spec: str | None, store_url: str | None) -> Orchestrator:
    if not app_spec:
        raise AppError(f"no app given: pass --app module:attribute or set {APP_ENV}")
    return load_app(app_spec, store_url)


def _parse_body(text: str | None) -> Any:
    if text is None:
        return None
    source = "--body"
    if text == "-":
        text, source = sys.stdin.read(), "the body read from stdin"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise BadUsage(f"cannot read the body file {str(path)!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadUsage(f"{source} is not valid JSON: {exc}") from None


# --- commands -----------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="floworchestrator")
@click.option("-v", "--verbose", count=True, help="Show the engine's logs (-v: info, -vv: debug).")
def main(verbose: int) -> None:
    """floworchestrator: run code-first DAG workflows inside your application.

    Try `floworchestrator demo`, then point the other commands at your own
    orchestrator with --app module:attribute.
    """
    level = logging.ERROR if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("floworchestrator").setLevel(level)


@main.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("floworchestrator-demo.db"),
              show_default=True, help="The SQLite file to keep the demo's runs in.")
@click.option("--store", "store_url", metavar="URL", help="Use this store URL instead of --db (e.g. memory://).")
@click.option("--keep", is_flag=True, help="Keep running after the summary, so the cron flow fires every minute (Ctrl-C stops).")
def demo(db: Path, store_url: str | None, keep: bool) -> None:
    """Run sample flows on a local SQLite file and show what happened."""
    from . import demo as sample

    url = store_url or f"sqlite:///{db}"
    orch = sample.build(url, cron=keep)
    click.echo(f"Starting an in-process orchestrator on {click.style(url, bold=True)} with flows: {', '.join(orch.flows)}\n")
    try:
        _run(_demo(orch, sample.demo_runs(), url, keep))
    except KeyboardInterrupt:
        click.echo("\nStopped.")


async def _demo(orch: Orchestrator, runs: Sequence[DemoRun], url: str, keep: bool) -> None:
    async with orch:
        ids = [await orch.trigger(r.flow_id, r.body, trigger=r.trigger) for r in runs]
        for r, run_id in zip(runs, ids, strict=True):
            try:
                run = await orch.wait(run_id, timeout=30)
            except TimeoutError:
                raise click.ClickException(f"the demo's run {run_id} of {r.flow_id!r} did not finish within 30s") from None
            print_run_summary(run, await orch.get_steps(run_id), note=r.note)
            click.echo()
        if isinstance(orch.store, MemoryStore):
            click.echo("These runs were kept in memory and are gone when the demo exits; use --db PATH to keep them.")
        else:
            app = _app_args("floworchestrator.demo:orchestrator", url)
            click.echo(f"The runs are stored in {click.style(url, bold=True)}. Look at them with:")
            _hint(f"floworchestrator runs {app}", f"floworchestrator run {ids[0]} {app}", f"floworchestrator flows {app}")
        if not keep:
            return
        click.echo("\nStill running: the heartbeat flow fires at the start of every minute. Ctrl-C stops.")
        seen = set(ids)
        while True:
            await asyncio.sleep(1.0)
            for run in reversed(await orch.list_runs(limit=20)):
                if run.run_id not in seen and run.status.is_final:
                    seen.add(run.run_id)
                    print_run_summary(run, await orch.get_steps(run.run_id))


@main.command()
@click.argument("flow")
@click.option("--body", metavar="JSON", help="The trigger body: JSON text, @file.json, or - for stdin.")
@click.option("--idempotency-key", metavar="KEY", help="A second trigger with the same key returns the first run.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Run the flow here and wait for it, or only queue it for a running orchestrator.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop waiting after this long.")
@_app_options
def trigger(flow: str, body: str | None, idempotency_key: str | None, wait: bool, timeout: float | None,
            app_spec: str | None, store_url: str | None) -> None:
    """Start a run of FLOW.

    With --wait (the default) this process starts the orchestrator (without
    cron), runs the flow, prints what happened and exits with status 0 if
    the run succeeded, 1 otherwise. While it waits it is a worker like any
    other: it may also run queued steps of other runs.

    With --no-wait the run is only written to the store and its id printed;
    an orchestrator running on the same store starts it (its recovery picks
    up queued steps).
    """
    data = _parse_body(body)
    orch = _load(app_spec, store_url)
    if flow not in orch.flows:
        known = ", ".join(sorted(orch.flows)) or "none"
        raise click.ClickException(f"unknown flow {flow!r} (flows in {app_spec}: {known})")
    assert app_spec is not None
    if not wait:
        run_id, created = _run(_queue_only(orch, flow, data, idempotency_key))
        if not created:
            click.echo(f"idempotency key {idempotency_key!r} was used before: this is its run; no new run started", err=True)
        elif isinstance(orch.store, MemoryStore):
            click.echo("warning: the store is in memory, so this queued run is lost when this command exits", err=True)
        else:
            click.echo(f"queued run of {flow!r}; an orchestrator running on this store will start it", err=True)
        click.echo(run_id)
        return
    try:
        status = _run(_trigger_and_wait(orch, flow, data, idempotency_key, timeout, _app_args(app_spec, store_url)))
    except KeyboardInterrupt:
        sys.exit(130)
    if status is not RunStatus.SUCCEEDED:
        sys.exit(1)


async def _queue_only(orch: Orchestrator, flow: str, body: Any, key: str | None) -> tuple[str, bool]:
    # A client start: the store is opened and flows saved, but this short-lived
    # process runs no step; the run waits, queued, for a process with workers.
    await orch.start(workers=False)
    try:
        res = await orch.engine.trigger(flow, body, idempotency_key=key)
    finally:
        await orch.stop()
    assert res.run_id is not None
    return res.run_id, res.created


async def _trigger_and_wait(
    orch: Orchestrator, flow: str, body: Any, key: str | None, wait_for: float | None, app_args: str
) -> RunStatus:
    orch.cron = False  # a CLI call must not fire schedules
    async with orch:
        res = await orch.engine.trigger(flow, body, idempotency_key=key)
        run_id = res.run_id
        assert run_id is not None
        if not res.created:
            click.echo(f"idempotency key {key!r} was used before: showing its run; no new run started", err=True)
        later = f"floworchestrator run {run_id} {app_args}"
        loop = asyncio.get_running_loop()
        deadline = None if wait_for is None else loop.time() + wait_for
        try:
            try:
                run = await orch.wait(run_id, 1.0 if deadline is None else min(1.0, wait_for or 0.0))
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise
                click.echo(f"run {run_id} of {flow!r} is running; waiting for it (Ctrl-C stops waiting)...", err=True)
                run = await orch.wait(run_id, None if deadline is None else max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise click.ClickException(
                f"run {run_id} did not finish within {wait_for:g}s; it stays in the store (see: {later})"
            ) from None
        except asyncio.CancelledError:  # Ctrl-C
            click.echo(f"\nStopped waiting; steps already running get up to {orch.shutdown_timeout:g}s to finish."
                       f" Run {run_id} stays in the store (see: {later})", err=True)
            raise
        steps = await orch.get_steps(run_id)
    print_run_summary(run, steps)
    return run.status


@main.command()
@click.option("--flow", "flow_id", metavar="FLOW", help="Only runs of this flow.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus], case_sensitive=False), metavar="STATUS",
              help=f"Only runs in this status: {', '.join(RunStatus)}.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="At most this many runs, newest first.")
@_app_options
def runs(flow_id: str | None, status: str | None, limit: int, app_spec: str | None, store_url: str | None) -> None:
    """List runs, newest first."""
    orch = _load(app_spec, store_url)
    st = next((s for s in RunStatus if s.value.lower() == status.lower()), None) if status else None

    async def read(store: Store) -> tuple[list[RunRecord], int]:
        return (await store.list_runs(flow_id=flow_id, status=st, limit=limit),
                await store.count_runs(flow_id=flow_id, status=st))

    found, total = _run(_reading(orch, read))
    if not found:
        click.echo("No runs" + (" match these filters." if flow_id or st else " yet."))
        if isinstance(orch.store, MemoryStore):
            click.echo("(the store is in memory: runs of other processes are not visible here)")
        return
    _table(
        ["RUN", "FLOW", "STATUS", "CREATED", "FINISHED", "TOOK"],
        [[r.run_id, r.flow_id, str(r.status), _when(r.created_at), _when(r.finished_at), _took(r.created_at, r.finished_at)]
         for r in found],
        status_col=2,
    )
    if total > len(found):
        click.echo(click.style(f"{len(found)} of {total} runs; --limit shows more", dim=True))


@main.command()
@click.argument("run_id")
@click.option("--full", is_flag=True, help="Show every step's inputs, output and error in full.")
@_app_options
def run(run_id: str, full: bool, app_spec: str | None, store_url: str | None) -> None:
    """Show one run: its steps and their attempts."""
    orch = _load(app_spec, store_url)

    async def read(store: Store) -> tuple[RunRecord | None, list[StepRecord], list[AttemptRecord]]:
        r = await store.get_run(run_id)
        if r is None:
            return None, [], []
        return r, await store.get_steps(run_id), await store.get_attempts(run_id)

    rec, steps, attempts = _run(_reading(orch, read))
    if rec is None:
        raise UnknownRunError(run_id)
    click.echo(f"{click.style('Run', bold=True)}       {rec.run_id}")
    click.echo(f"{click.style('Flow', bold=True)}      {rec.flow_id}")
    click.echo(f"{click.style('Status', bold=True)}    {_status(rec.status)}")
    click.echo(f"{click.style('Trigger', bold=True)}   {rec.trigger_key}"
               + (f"  (idempotency key {rec.idempotency_key!r})" if rec.idempotency_key else ""))
    click.echo(f"{click.style('Created', bold=True)}   {_when(rec.created_at)}")
    took = f"  (took {_took(rec.created_at, rec.finished_at)})" if rec.finished_at else ""
    click.echo(f"{click.style('Finished', bold=True)}  {_when(rec.finished_at)}{took}")
    click.echo(f"{click.style('Body', bold=True)}      {_clip(_json(rec.trigger_body), _width() - 10)}")
    click.echo()
    _table(
        ["STEP", "STATUS", "ATTEMPTS", "TOOK", "OUTPUT / ERROR"],
        [[s.step_key, str(s.status), str(s.attempts), _took(s.started_at, s.finished_at), _step_result(s)] for s in steps],
        status_col=1,
    )
    if full:
        for s in steps:
            click.echo(f"\n{click.style(s.step_key, bold=True)}  {_status(s.status)}")
            if s.attempts == 0:
                click.echo("  (has not run)")
            for label, value in (("inputs", s.inputs), ("output", s.output)):
                if value is not None:
                    click.echo(f"  {label}: " + _json(value, indent=2).replace("\n", "\n  "))
            if s.error is not None:
                click.echo(f"  error:  {s.error}")
    if attempts:
        click.echo()
        _table(
            ["STEP", "ATTEMPT", "STATUS", "STARTED", "TOOK", "ERROR"],
            [[a.step_key, str(a.attempt), str(a.status), _when(a.started_at), _took(a.started_at, a.finished_at), a.error or ""]
             for a in attempts],
            status_col=2,
        )


@main.command()
@_app_options
def flows(app_spec: str | None, store_url: str | None) -> None:
    """List the app's flows: enabled, triggers, steps."""
    orch = _load(app_spec, store_url)
    stored: dict[str, FlowRecord] = {}
    if _missing_database(orch.store) is None:
        stored = {f.flow_id: f for f in _run(_reading(orch, lambda s: s.list_flows()))}
    registered = orch.flows
    if not registered and not stored:
        click.echo(f"{app_spec} registers no flows.")
        return
    rows = []
    for fid in sorted(registered.keys() | stored.keys()):
        flow = registered.get(fid)
        rec = stored.get(fid)
        enabled = rec.enabled if rec is not None else flow is not None and flow.enabled
        if flow is not None:
            rows.append([fid, "yes" if enabled else "no", _trigger_summary(flow), str(len(flow.steps)), flow.description or ""])
        else:
            assert rec is not None
            rows.append([fid, "yes" if enabled else "no", ", ".join(rec.manifest.get("triggers", {})),
                         str(len(rec.manifest.get("steps", {}))), "(in the store only: not registered by this app)"])
    _table(["FLOW", "ENABLED", "TRIGGERS", "STEPS", "DESCRIPTION"], rows)
