"""The ``floworchestrator`` command line.

Commands load the user's orchestrator the way uvicorn loads an app:
``--app module:attribute`` (or ``FLOWORCHESTRATOR_APP``), with the current
directory on ``sys.path``; the commands whose only subject is the app
(``serve``, ``flows``, ``runs``, ``schedules``, ``prune``) also take it as
their argument (``floworchestrator serve myapp:orchestrator``). Read commands (``runs``, ``run``, ``flows``,
``schedules``) only open the store; they never start the runtime, recovery or
cron, because starting an orchestrator runs steps. Control commands
(``signal``, ``retry``, ``cancel``, ``rerun``, ``schedule ...``) start the
orchestrator as a *client* (``start(workers=False)``): they write to the store
and run no step; an orchestrator running on the same store (``serve``, or any
process with workers) executes what they queue. ``serve`` runs the
orchestrator with its workers and cron behind an HTTP server for webhooks and
the dashboard (``/flows/``).
``prune`` only opens the store, and deletes finished runs older than an age.

Every error the user can cause is one ``Error: ...`` line on stderr with
exit status 1 (2 for a bad option), never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from zoneinfo import ZoneInfo

import click
from click.core import ParameterSource

from . import __version__
from ._status import RunStatus, StepStatus
from .exceptions import FlowOrchestratorError, UnknownRunError
from .flow import Cron, Flow, Manual, Webhook
from .orchestrator import Orchestrator, Schedule
from .stores.base import AttemptRecord, FlowRecord, RunFilter, RunRecord, StepRecord, Store
from .stores.memory import MemoryStore
from .stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from .demo import DemoRun

__all__ = ["load_app", "main", "print_run_summary"]

T = TypeVar("T")
FC = TypeVar("FC", bound=Callable[..., Any])

APP_ENV = "FLOWORCHESTRATOR_APP"
STORE_ENV = "FLOWORCHESTRATOR_STORE"
DASHBOARD_USER_ENV = "FLOWORCHESTRATOR_DASHBOARD_USER"
DASHBOARD_PASSWORD_ENV = "FLOWORCHESTRATOR_DASHBOARD_PASSWORD"
DASHBOARD_PATH = "/flows"


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


def _why_skipped(trace: Any) -> str | None:
    """The conditions that skipped a step, from its trace: ``when <expression>  ->  <values>  ->  false``."""
    conditions = trace.get("conditions") if isinstance(trace, dict) else None
    if not isinstance(conditions, list):
        return None
    parts = []
    for c in conditions:
        if not isinstance(c, dict) or c.get("result") is True:
            continue
        text = f"when {c.get('expression')}  ->  {c.get('evaluated')}  ->  "
        text += f"error: {c['error']}" if c.get("error") else _json(c.get("result"))
        parts.append(text)
    return "; ".join(parts) or None


def _step_result(step: StepRecord, items: Sequence[StepRecord] = ()) -> str:
    """What the step ended with: why it was skipped, its error, or its output (``items``: a ForEach's children)."""
    if step.status is StepStatus.SKIPPED and (why := _why_skipped(step.trace)) is not None:
        return f"skipped: {why}"
    if step.error is not None:
        return f"error: {step.error}"
    if step.waiting_signal is not None and not step.status.is_final:
        return f"waiting for signal {step.waiting_signal!r}"
    if items and isinstance(step.output, list):
        counts: dict[str, int] = {}
        for r in step.output:
            status = str(r.get("status")) if isinstance(r, dict) else "?"
            counts[status] = counts.get(status, 0) + 1
        done = ", ".join(f"{n} {st}" for st, n in counts.items())
        return f"{len(step.output)} item{'s' if len(step.output) != 1 else ''}: {done} (per item below)"
    if step.output is not None:
        return _json(step.output)
    return ""


def _children_of(steps: Sequence[StepRecord]) -> tuple[list[StepRecord], dict[str, list[StepRecord]]]:
    """The steps with each ForEach's children (runtime keys ``loop.i.child``) moved right after their loop."""
    keys = {s.step_key for s in steps}
    top: list[StepRecord] = []
    children: dict[str, list[StepRecord]] = {}
    for s in steps:
        parent, _, rest = s.step_key.partition(".")
        index = rest.partition(".")[0]
        if rest and index.isdigit() and parent in keys:
            children.setdefault(parent, []).append(s)
        else:
            top.append(s)
    for kids in children.values():
        kids.sort(key=lambda c: int(c.step_key.split(".", 2)[1]))  # stable: children keep their order within an item
    return top, children


def _in_order(steps: Sequence[StepRecord]) -> list[tuple[StepRecord, list[StepRecord]]]:
    """(step, its ForEach children) for each step, children listed right after their loop."""
    top, children = _children_of(steps)
    out: list[tuple[StepRecord, list[StepRecord]]] = []
    for s in top:
        kids = children.get(s.step_key, [])
        out.append((s, kids))
        out.extend((k, []) for k in kids)
    return out


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, status_col: int | None = None, clip: bool = True) -> None:
    """Print rows as aligned columns; the last column is clipped to the terminal width (unless ``clip`` is false)."""
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    room = _width() - sum(widths[:-1]) - 2 * (len(headers) - 1)
    if clip:
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
    for s, items in _in_order(steps):
        result = _clip(_step_result(s, items), max(20, room))
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


def _require_database(store: Store) -> None:
    missing = _missing_database(store)
    if missing is not None:
        raise click.ClickException(f"there is no database at {missing!r}: nothing has run on this store yet (check --store)")


async def _reading(orch: Orchestrator, read: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, read, close — without starting the runtime, recovery or cron."""
    _require_database(orch.store)
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


def _app_argument(func: FC) -> FC:
    """An optional positional APP meaning the same as --app (``serve myapp:orch``), for commands with ``_app_options``.

    APP wins over FLOWORCHESTRATOR_APP (like --app); APP and a different --app is an error.
    """

    @functools.wraps(func)
    def with_app(*args: Any, app: str | None = None, **kwargs: Any) -> Any:
        if app is not None:
            option = kwargs.get("app_spec")
            ctx = click.get_current_context()
            if option is not None and option != app and ctx.get_parameter_source("app_spec") is ParameterSource.COMMANDLINE:
                raise BadUsage(f"the app is given twice: {app!r} as the argument and {option!r} as --app; give one")
            kwargs["app_spec"] = app
        return func(*args, **kwargs)

    return cast(FC, click.argument("app", required=False, metavar="[APP]")(with_app))


def _load(app_spec: str | None, store_url: str | None) -> Orchestrator:
    if not app_spec:
        raise AppError(f"no app given: pass --app module:attribute or set {APP_ENV}")
    return load_app(app_spec, store_url)


def _parse_body(text: str | None, option: str = "--body", what: str = "body") -> Any:
    """JSON given as text, ``@file.json`` or ``-`` (stdin); a bad value is a one-line usage error."""
    if text is None:
        return None
    source = option
    if text == "-":
        text, source = sys.stdin.read(), f"the {what} read from stdin"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise BadUsage(f"cannot read the {what} file {str(path)!r}: {exc.strerror}") from None
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
@click.option("--keep", "--serve", "keep", is_flag=True,
              help="Keep running after the summary and serve the dashboard on 127.0.0.1 (no login; Ctrl-C stops);"
              " the cron flow fires every minute.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, metavar="PORT",
              help="The dashboard's port with --keep (0: any free port).")
def demo(db: Path, store_url: str | None, keep: bool, port: int) -> None:
    """Run sample flows on a local SQLite file and show what happened.

    With --keep the orchestrator goes on running and serves the dashboard at
    http://127.0.0.1:PORT/flows/ — on this machine only, without a login.
    """
    from . import demo as sample

    url = store_url or f"sqlite:///{db}"
    orch = sample.build(url, cron=keep)
    sock = _listen("127.0.0.1", port) if keep else None  # a taken port is an error before anything runs
    server = _dashboard_server(orch, _web_auth(no_auth=True), webhooks=False) if keep else None
    click.echo(f"Starting an in-process orchestrator on {click.style(url, bold=True)} with flows: {', '.join(orch.flows)}\n")
    # As in serve: while the dashboard is served, SIGINT and SIGTERM stop the server, which then stops the orchestrator.
    previous: dict[int, Any] = {}
    if server is not None and threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _run(_demo(orch, sample.demo_runs(), url, (server, sock) if server and sock else None, port))
    except KeyboardInterrupt:
        click.echo("\nStopped.")
    else:
        if server is not None:
            click.echo("Stopped.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if sock is not None:
            sock.close()


async def _demo(orch: Orchestrator, runs: Sequence[DemoRun], url: str, serving: tuple[Any, socket.socket] | None, port: int) -> None:
    async with orch:
        ids = [await orch.trigger(r.flow_id, r.body, trigger=r.trigger) for r in runs]
        for r, run_id in zip(runs, ids, strict=True):
            try:
                if r.drive is not None:  # e.g. send the signal the run waits for
                    await asyncio.wait_for(r.drive(orch, run_id), 30)
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
            _hint(f"floworchestrator runs {app}", f"floworchestrator run {ids[-1]} {app}", f"floworchestrator flows {app}",
                  f"floworchestrator schedules {app}")
        if serving is None:
            _echo_wrapped(f"To see them in the dashboard, run the demo with --keep: it serves http://127.0.0.1:{port}{DASHBOARD_PATH}/"
                          " until Ctrl-C.")
            return
        server, sock = serving
        dashboard = f"http://127.0.0.1:{sock.getsockname()[1]}{DASHBOARD_PATH}/"
        click.echo(f"\nDashboard: {click.style(dashboard, bold=True)}  (this machine only, no login)")
        features = next((r for r in runs if r.flow_id == "features"), None)
        if features is not None:  # one run left waiting, to approve or reject from the dashboard
            waiting = await orch.trigger(features.flow_id, features.body)
            ids.append(waiting)
            click.echo(f"A features run waits for approval: {dashboard}#/runs/{waiting}")
        click.echo("Still running: the heartbeat flow fires at the start of every minute. Ctrl-C stops.")
        printer = asyncio.get_running_loop().create_task(_print_new_runs(orch, set(ids)))
        try:
            await server.serve(sockets=[sock])
        finally:
            printer.cancel()


async def _print_new_runs(orch: Orchestrator, seen: set[str]) -> None:
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
@_app_argument
def runs(flow_id: str | None, status: str | None, limit: int, app_spec: str | None, store_url: str | None) -> None:
    """List runs, newest first."""
    orch = _load(app_spec, store_url)
    st = next((s for s in RunStatus if s.value.lower() == status.lower()), None) if status else None

    async def read(store: Store) -> tuple[list[RunRecord], int]:
        where = RunFilter(flow_id=flow_id, status=st)
        return await store.list_runs(where, limit=limit), await store.count_runs(where)

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
        [[s.step_key, str(s.status), str(s.attempts), _took(s.started_at, s.finished_at), _step_result(s, items)]
         for s, items in _in_order(steps)],
        status_col=1,
    )
    if full:
        for s, _items in _in_order(steps):
            click.echo(f"\n{click.style(s.step_key, bold=True)}  {_status(s.status)}")
            if s.attempts == 0:
                click.echo("  (has not run)")
            for label, value in (("inputs", s.inputs), ("output", s.output)):
                if value is not None:
                    click.echo(f"  {label}: " + _json(value, indent=2).replace("\n", "\n  "))
            if s.error is not None:
                click.echo(f"  error:  {s.error}")
            if s.status is StepStatus.SKIPPED and (why := _why_skipped(s.trace)) is not None:
                click.echo(f"  skipped: {why}")
            if s.waiting_signal is not None and not s.status.is_final:
                click.echo(f"  waiting for signal {s.waiting_signal!r}")
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
@_app_argument
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


# --- control: signal, retry, cancel, rerun (client mode) -------------------------------------


async def _as_client(orch: Orchestrator, act: Callable[[Orchestrator], Awaitable[T]], *, create: bool = False) -> T:
    """Start ``orch`` as a client (store open and flows saved; no workers, recovery or cron), act, stop.

    Without ``create`` a SQLite file that does not exist is an error rather
    than a new empty database.
    """
    if not create:
        _require_database(orch.store)
    await orch.start(workers=False)
    try:
        return await act(orch)
    except UnknownRunError as exc:
        if isinstance(orch.store, MemoryStore):
            raise click.ClickException(
                f"{exc} (the store is in memory: runs of other processes are not visible here; pass --store)"
            ) from None
        raise
    finally:
        await orch.stop()


def _pickup(orch: Orchestrator, what: str = "it") -> str:
    """When an orchestrator with workers executes a step a client queued."""
    within = orch.stale_after + orch.recovery_interval
    return (f"an orchestrator running on this store picks {what} up at its next recovery pass (within about {within:g}s),"
            " or at once when one starts")


def _keys(keys: Sequence[str]) -> str:
    return ", ".join(repr(k) for k in keys)


def _echo_wrapped(text: str, err: bool = False) -> None:
    click.echo("\n".join(textwrap.wrap(text, _width(), break_on_hyphens=False, break_long_words=False)), err=err)


@dataclass(frozen=True, slots=True)
class _Sent:
    run: RunRecord
    signal: str
    targets: list[str]
    """The WaitForSignal steps (as written in the flow) that take this signal."""
    resumed: list[str]
    """The steps that were waiting for it, now queued."""


async def _send_signal(orch: Orchestrator, run_id: str, name: str, payload: Any) -> _Sent:
    run = await orch.get_run(run_id)
    if run is None:
        raise UnknownRunError(run_id)
    if run.status.is_final:
        raise click.ClickException(f"run {run_id} has already finished ({run.status}); signals go to Running runs only")
    signals = (await orch.engine.compiled_for(run.manifest_id)).signals
    if not signals:
        raise click.ClickException(f"flow {run.flow_id!r} has no WaitForSignal step: nothing in run {run_id} would take signal {name!r}")
    resolved = signals[name][0] if name in signals else name
    targets = sorted(k for k, (n, _) in signals.items() if n == resolved)
    if not targets:
        waits = ", ".join(f"{n!r} (step {k!r})" for k, (n, _) in sorted(signals.items()))
        raise click.ClickException(f"no step of flow {run.flow_id!r} waits for a signal {name!r}; its steps wait for: {waits}")
    steps = {s.step_key: s for s in await orch.get_steps(run_id)}
    if all("." not in k and k in steps and steps[k].status.is_final for k in targets):
        ended = ", ".join(f"{k!r} ({steps[k].status})" for k in targets)
        raise click.ClickException(f"the step that takes signal {resolved!r} already ended in run {run_id}: {ended}; nothing would take it")
    resumed = [k for k, s in steps.items() if s.waiting_signal == resolved and not s.status.is_final]
    await orch.signal(run_id, name, payload)
    return _Sent(run, resolved, targets, resumed)


@main.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.option("--payload", metavar="JSON",
              help="The signal's payload, which becomes the waiting step's output: JSON text, @file.json, or - for stdin.")
@_app_options
def signal_command(run_id: str, name: str, payload: str | None, app_spec: str | None, store_url: str | None) -> None:
    """Send the signal NAME to a run waiting for it.

    NAME is a signal name or the key of a WaitForSignal step. The signal is recorded in the store and the step waiting for it is
    queued; an orchestrator running on this store resumes it, with the
    payload as its output. A signal sent before its step waits is kept until
    the step gets there.
    """
    data = _parse_body(payload, "--payload", "payload")
    orch = _load(app_spec, store_url)
    sent = _run(_as_client(orch, lambda o: _send_signal(o, run_id, name, data)))
    click.echo(f"Sent signal {sent.signal!r} to run {run_id} (flow {sent.run.flow_id!r}).")
    if sent.resumed:
        one = len(sent.resumed) == 1
        _echo_wrapped(f"Step{'' if one else 's'} {_keys(sent.resumed)} {'was' if one else 'were'} waiting for it and"
                      f" {'is' if one else 'are'} queued: {_pickup(orch, 'it' if one else 'them')}.")
    else:
        _echo_wrapped(f"No step waits for it yet: it is kept, and step {_keys(sent.targets)} takes it when it gets there.")


@main.command()
@click.argument("run_id")
@click.argument("step")
@_app_options
def retry(run_id: str, step: str, app_spec: str | None, store_url: str | None) -> None:
    """Run a Failed, TimedOut or Cancelled STEP of a run again, and the steps after it.

    Earlier steps keep their outputs. The step is queued in the store and the
    run is Running again; an orchestrator running on this store executes it.
    """
    orch = _load(app_spec, store_url)

    async def act(o: Orchestrator) -> tuple[RunRecord | None, list[str]]:
        before = {s.step_key: s.status for s in await o.get_steps(run_id)}
        await o.retry_step(run_id, step)
        after = await o.get_steps(run_id)
        reset = [s.step_key for s in after
                 if s.step_key != step and s.status is StepStatus.PENDING and before.get(s.step_key) is not StepStatus.PENDING]
        return await o.get_run(run_id), reset

    rec, reset = _run(_as_client(orch, act))
    flow = f" (flow {rec.flow_id!r})" if rec is not None else ""
    click.echo(f"Step {step!r} of run {run_id}{flow} is queued to run again; earlier steps keep their outputs.")
    if reset:
        _echo_wrapped(f"The steps after it are Pending again: {_keys(reset)}.")
    _echo_wrapped(f"The run is Running again: {_pickup(orch, 'the step')}.")


@main.command()
@click.argument("run_id")
@_app_options
def cancel(run_id: str, app_spec: str | None, store_url: str | None) -> None:
    """Cancel a Running run: no step of it starts afterwards.

    Its unfinished steps become Cancelled at once. A handler already running
    in an orchestrator finishes, and its result is ignored.
    """
    orch = _load(app_spec, store_url)

    async def act(o: Orchestrator) -> tuple[RunRecord | None, list[StepRecord]]:
        before = await o.get_steps(run_id)
        await o.cancel_run(run_id)
        return await o.get_run(run_id), [s for s in before if not s.status.is_final]

    rec, unfinished = _run(_as_client(orch, act))
    flow = f" (flow {rec.flow_id!r})" if rec is not None else ""
    click.echo(f"Cancelled run {run_id}{flow}: no step of it starts from now on.")
    if unfinished:
        _echo_wrapped(f"Cancelled steps: {_keys([s.step_key for s in unfinished])}.")
    running = [s.step_key for s in unfinished if s.status is StepStatus.RUNNING]
    if running:
        _echo_wrapped(f"{_keys(running)} {'was' if len(running) == 1 else 'were'} running: the handler finishes"
                      " where it runs, and its result is ignored.")


@main.command()
@click.argument("run_id")
@_app_options
def rerun(run_id: str, app_spec: str | None, store_url: str | None) -> None:
    """Start a new run of the same flow with the trigger body and headers of RUN_ID.

    The new run is queued in the store and its id printed; an orchestrator
    running on this store executes it.
    """
    orch = _load(app_spec, store_url)

    async def act(o: Orchestrator) -> tuple[str, RunRecord | None]:
        return await o.rerun(run_id), await o.get_run(run_id)

    new_id, rec = _run(_as_client(orch, act))
    flow = f" of {rec.flow_id!r}" if rec is not None else ""
    _echo_wrapped(f"started run {new_id}{flow} with the trigger data of run {run_id}; it is queued: {_pickup(orch)}", err=True)
    click.echo(new_id)


# --- retention -----------------------------------------------------------------------------

_AGE = re.compile(r"(\d+)([dhms])")
_AGE_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def _parse_age(text: str) -> timedelta:
    """An age given as a whole number and a unit: ``30d``, ``12h``, ``90m``, ``3600s``; BadUsage otherwise."""
    m = _AGE.fullmatch(text.strip())
    if m is None:
        raise BadUsage(f"--older-than must be a number and a unit (d, h, m or s), e.g. 30d, 12h, 90m or 3600s; got {text!r}")
    amount = int(m.group(1))
    if amount == 0:
        raise BadUsage(f"--older-than must be more than zero, got {text!r}")
    try:
        return timedelta(**{_AGE_UNITS[m.group(2)]: amount})
    except OverflowError:
        raise BadUsage(f"--older-than {text!r} is too far back") from None


@main.command()
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete runs that finished longer ago than this: 30d, 12h, 90m or 3600s.")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True, metavar="N",
              help="Runs deleted per transaction.")
@_app_options
@_app_argument
def prune(older_than: str, batch_size: int, app_spec: str | None, store_url: str | None) -> None:
    """Delete finished runs older than AGE, with their steps, attempts, events and signals.

    Only runs that have finished (Succeeded, Failed, Cancelled, TimedOut)
    and whose end is older than AGE go; Running runs stay, however old.
    The store is only opened: nothing runs, and orchestrators working on it
    go on meanwhile (runs are deleted in short transactions of --batch-size).
    """
    age = _parse_age(older_than)
    try:
        cutoff = datetime.now(UTC) - age
    except OverflowError:
        raise BadUsage(f"--older-than {older_than!r} is too far back") from None
    orch = _load(app_spec, store_url)

    async def act(_store: Store) -> int:
        return await orch.prune(cutoff, batch_size=batch_size)

    deleted = _run(_reading(orch, act))
    runs = f"{deleted} run{'' if deleted == 1 else 's'}"
    click.echo(f"Deleted {runs} that finished before {_when(cutoff)} (older than {older_than.strip()}).")
    if isinstance(orch.store, MemoryStore):
        click.echo("(the store is in memory: runs of other processes are not visible here; pass --store)", err=True)


# --- schedules -----------------------------------------------------------------------------


def _zone(sch: Schedule) -> str:
    return sch.timezone or "UTC"


def _fires(sch: Schedule) -> str:
    """The next fire times in the trigger's own timezone (seconds only for six-field expressions)."""
    zone = ZoneInfo(sch.timezone) if sch.timezone else UTC
    fmt = "%Y-%m-%d %H:%M:%S" if len(sch.expression.split()) > 5 else "%Y-%m-%d %H:%M"
    return ", ".join(at.astimezone(zone).strftime(fmt) for at in sch.next_fires)


def _cron_of(orch: Orchestrator, app_spec: str | None, flow_id: str, trigger: str) -> Cron:
    """The flow's Cron trigger ``trigger``; a one-line error naming what exists otherwise."""
    flow = orch.flows.get(flow_id)
    if flow is None:
        known = ", ".join(sorted(f.id for f in orch.flows.values() if any(isinstance(t, Cron) for t in f.triggers.values()))) or "none"
        raise click.ClickException(f"unknown flow {flow_id!r} (flows with a cron trigger in {app_spec}: {known})")
    crons = sorted(name for name, t in flow.triggers.items() if isinstance(t, Cron))
    found = flow.triggers.get(trigger)
    if not isinstance(found, Cron):
        what = "no trigger" if found is None else "no cron trigger"
        raise click.ClickException(f"flow {flow_id!r} has {what} {trigger!r} (its cron triggers: {', '.join(crons) or 'none'})")
    return found


@main.command()
@_app_options
@_app_argument
def schedules(app_spec: str | None, store_url: str | None) -> None:
    """List the cron triggers: expression in force, paused or not, next three fire times."""
    orch = _load(app_spec, store_url)
    if _missing_database(orch.store) is not None:
        orch.use_store(MemoryStore())  # nothing saved yet (no pause, no override): do not create an empty database
    found = _run(_reading(orch, lambda _store: orch.list_schedules(3)))
    if not found:
        click.echo(f"No flow of {app_spec} has a cron trigger.")
        return
    found.sort(key=lambda sch: (sch.flow_id, sch.trigger))
    _table(
        ["FLOW", "TRIGGER", "EXPRESSION", "TIMEZONE", "PAUSED", "OVERRIDDEN", "NEXT FIRES (IN TIMEZONE)"],
        [[sch.flow_id, sch.trigger, sch.expression, _zone(sch), "yes" if sch.paused else "no", "yes" if sch.overridden else "no",
          _fires(sch)] for sch in found],
        clip=False,  # fire times cut short would mislead
    )
    for sch in found:
        if sch.overridden:
            own = _cron_of(orch, app_spec, sch.flow_id, sch.trigger).expression
            click.echo(click.style(f"{sch.flow_id} {sch.trigger}: overridden; the flow's own expression is {own!r}"
                                   f" (schedule set-cron {sch.flow_id} {sch.trigger} --reset restores it)", dim=True))


@main.group()
def schedule() -> None:
    """Pause, resume or re-time a flow's cron trigger.

    The change is saved in the store: every orchestrator on it follows within
    a few seconds, and it outlives restarts.
    """


def _change_schedule(app_spec: str | None, store_url: str | None, flow_id: str, trigger: str,
                     change: Callable[[Orchestrator], Awaitable[None]]) -> tuple[Orchestrator, Cron, Schedule]:
    orch = _load(app_spec, store_url)
    cron = _cron_of(orch, app_spec, flow_id, trigger)

    async def act(o: Orchestrator) -> Schedule:
        await change(o)
        return next(sch for sch in await o.list_schedules(3) if (sch.flow_id, sch.trigger) == (flow_id, trigger))

    now = _run(_as_client(orch, act, create=True))
    if isinstance(orch.store, MemoryStore):
        click.echo("warning: the store is in memory, so this change is lost when this command exits", err=True)
    return orch, cron, now


def _schedule_args(flow_id: str, trigger: str) -> str:
    return f"{shlex.quote(flow_id)} {shlex.quote(trigger)}"


@schedule.command()
@click.argument("flow")
@click.argument("trigger")
@_app_options
def pause(flow: str, trigger: str, app_spec: str | None, store_url: str | None) -> None:
    """Stop FLOW's cron TRIGGER from starting runs, on every orchestrator on this store."""
    _orch, _cron, now = _change_schedule(app_spec, store_url, flow, trigger, lambda o: o.pause_schedule(flow, trigger))
    _echo_wrapped(f"Paused {flow} {trigger} ({now.expression}, {_zone(now)}): it starts no run until it is resumed;"
                  " orchestrators already running notice within a few seconds. Resume it with:")
    _hint(f"floworchestrator schedule resume {_schedule_args(flow, trigger)} {_app_args(app_spec or '', store_url)}")


@schedule.command()
@click.argument("flow")
@click.argument("trigger")
@_app_options
def resume(flow: str, trigger: str, app_spec: str | None, store_url: str | None) -> None:
    """Let FLOW's paused cron TRIGGER fire again.

    Ticks missed while it was paused are not made up.
    """
    _orch, _cron, now = _change_schedule(app_spec, store_url, flow, trigger, lambda o: o.resume_schedule(flow, trigger))
    _echo_wrapped(f"Resumed {flow} {trigger} ({now.expression}, {_zone(now)}); ticks missed while it was paused are not made up.")
    click.echo(f"Next fires ({_zone(now)}): {_fires(now)}")


@schedule.command("set-cron")
@click.argument("flow")
@click.argument("trigger")
@click.argument("expression", required=False)
@click.option("--reset", is_flag=True, help="Go back to the expression the flow itself declares.")
@_app_options
def set_cron(flow: str, trigger: str, expression: str | None, reset: bool, app_spec: str | None, store_url: str | None) -> None:
    """Make FLOW's cron TRIGGER fire on EXPRESSION instead of the flow's own.

    EXPRESSION has five fields, or six with seconds last; quote it, e.g.
    '*/5 * * * *'. --reset goes back to the flow's own expression.
    """
    if reset == (expression is not None):
        raise BadUsage("give either a cron EXPRESSION or --reset, not both" if reset else "give a cron EXPRESSION, or --reset")
    _orch, cron, now = _change_schedule(app_spec, store_url, flow, trigger, lambda o: o.set_cron(flow, trigger, expression))
    if reset:
        click.echo(f"{flow} {trigger} is back on the flow's own expression {now.expression!r} ({_zone(now)}).")
    else:
        _echo_wrapped(f"{flow} {trigger} now fires on {now.expression!r} ({_zone(now)}) instead of the flow's own {cron.expression!r};"
                      " saved in the store, so orchestrators on it follow within a few seconds, also after a restart.")
    if now.paused:
        click.echo(f"It is paused: it fires once resumed (floworchestrator schedule resume {_schedule_args(flow, trigger)}).")
    click.echo(f"Next fires ({_zone(now)}): {_fires(now)}")


# --- serve -----------------------------------------------------------------------------------


def _store_label(store: Store) -> str:
    if isinstance(store, SQLiteStore):
        return f"sqlite:///{store.path}"
    if isinstance(store, MemoryStore):
        return "memory://"
    return type(store).__name__


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is a one-line error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]  # create_server adds the address again
        raise click.ClickException(f"cannot listen on {where}: {reason}") from None


def _serve_banner(orch: Orchestrator, app_spec: str, url: str, path: str, login: str) -> None:
    flows = orch.flows.values()
    parts = "in-process workers, recovery" + (", cron" if orch.cron else " (cron off: --no-cron)")
    click.echo(f"Serving {app_spec} ({len(flows)} flow{'s' if len(flows) != 1 else ''}) on {_store_label(orch.store)}: {parts}")
    if isinstance(orch.store, MemoryStore):
        click.echo("warning: the store is in memory: runs are lost when the server stops, and other commands cannot see them")
    click.echo(f"Listening on {url}")
    hooks = sorted((t.slug, f.id, name, t.secret is not None)
                   for f in flows for name, t in f.triggers.items() if isinstance(t, Webhook))
    for slug, flow_id, name, signed in hooks:
        needs = ", needs its secret or signature" if signed else ""
        click.echo(f"  POST {url}{path.replace('{slug}', slug)}  ->  flow {flow_id!r} (trigger {name!r}{needs})")
    if not hooks:
        click.echo(f"  no flow has a Webhook trigger: POST {url}{path} answers 404")
    crons = sum(isinstance(t, Cron) for f in flows for t in f.triggers.values())
    if orch.cron and crons:
        click.echo(f"  {crons} cron trigger{'s' if crons != 1 else ''} (floworchestrator schedules lists them)")
    click.echo(f"Dashboard: {url}{DASHBOARD_PATH}/  ({login})")
    click.echo(f"Ctrl-C or SIGTERM stops; running steps get up to {orch.shutdown_timeout:g}s to finish.")


async def _announce_stop(server: Any, orch: Orchestrator) -> None:
    # Printed from the loop rather than from the signal handler, which may interrupt another write;
    # should_exit is a plain flag that uvicorn itself polls every 0.1 s.
    while not server.should_exit:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    click.echo(f"Stopping: no new requests; running steps get up to {orch.shutdown_timeout:g}s to finish...", err=True)


async def _serve(orch: Orchestrator, server: Any, sock: socket.socket, banner: Callable[[], None]) -> None:
    # Started here, not by the app's lifespan, so that a failure (the store, its schema) is a
    # one-line error; the lifespan's start is then a no-op, and its shutdown stops the
    # orchestrator after the server has stopped taking requests.
    await orch.start()
    try:
        banner()
        watcher = asyncio.get_running_loop().create_task(_announce_stop(server, orch))
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
    finally:
        await orch.stop()


def _web_auth(no_auth: bool) -> tuple[Any, str]:
    """The dashboard's auth and how the banner describes it: NoAuth only when asked, else Basic with a
    password from the environment or one made up now and printed."""
    from .web import BasicAuth, NoAuth

    if no_auth:
        return NoAuth(), "no login (--no-auth)"
    user = os.environ.get(DASHBOARD_USER_ENV) or "admin"
    password = os.environ.get(DASHBOARD_PASSWORD_ENV)
    if password:
        return BasicAuth(user, password), f"user {user!r}, password from {DASHBOARD_PASSWORD_ENV}"
    password = secrets.token_urlsafe(12)
    made_up = f"made up for this run; set {DASHBOARD_PASSWORD_ENV} to choose it"
    return BasicAuth(user, password), f"user {user!r}, password {password} ({made_up})"


def _dashboard_server(orch: Orchestrator, auth: tuple[Any, str], *, webhooks: bool) -> Any:
    """A uvicorn server for the dashboard at /flows/ (and the webhook receiver at /webhook/{slug} if asked)."""
    import uvicorn
    from starlette.applications import Starlette

    from .web import close_event_streams, create_app, create_webhook_app

    app = create_webhook_app(orch, manage_lifespan=True) if webhooks else Starlette()
    dashboard = create_app(orch, auth=auth[0])
    app.mount(DASHBOARD_PATH, dashboard)  # the same one line a host application writes

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn waits for open responses before the lifespan stops the orchestrator: end the
            # dashboards' event streams first (browsers reconnect to the next server).
            close_event_streams(dashboard)
            await super().shutdown(sockets)

    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level=None, access_log=webhooks, timeout_graceful_shutdown=10)
    return Server(config)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, metavar="HOST", help="The address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, metavar="PORT", help="The port (0: any free port).")
@click.option("--cron/--no-cron", default=True, show_default=True, help="Fire the flows' cron triggers from this process.")
@click.option("--no-auth", is_flag=True,
              help=f"Serve the dashboard and its API without a login (only behind your own protection). Otherwise HTTP Basic:"
              f" user {DASHBOARD_USER_ENV} (default admin), password {DASHBOARD_PASSWORD_ENV} (default: made up and printed).")
@_app_options
@_app_argument
def serve(host: str, port: int, cron: bool, no_auth: bool, app_spec: str | None, store_url: str | None) -> None:
    """Run the orchestrator with its workers and cron, and an HTTP server for webhooks and the dashboard.

    The orchestrator runs in-process workers, recovery and cron. POST /webhook/{slug} starts a run of the flow whose Webhook trigger has
    that slug. The dashboard and its JSON API are at /flows/, behind HTTP
    Basic authentication unless --no-auth. Steps queued by other commands (trigger --no-wait, signal,
    retry, rerun) run here too. Ctrl-C or SIGTERM stops: the server stops
    taking requests, running steps get the orchestrator's shutdown_timeout
    to finish, and queued steps stay in the store for the next start.
    Needs the web extra: pip install 'floworchestrator[web]'. APP (module:attribute) is the same as --app.
    """
    try:
        import uvicorn  # noqa: F401  (imported here only to say what to install when it is missing)

        from .web.webhooks import DEFAULT_PATH
    except ImportError as exc:
        missing = exc.name or getattr(exc.__cause__, "name", None) or "starlette"
        raise click.ClickException(
            f"serve needs Starlette and uvicorn, and {missing!r} is not installed: pip install 'floworchestrator[web]'"
        ) from None
    orch = _load(app_spec, store_url)
    assert app_spec is not None
    orch.cron = cron
    sock = _listen(host, port)
    url = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"

    # The engine's info logs (runs started and finished, webhooks accepted) and one line per request;
    # uvicorn's own start/stop chatter only with -v.
    engine_log = logging.getLogger("floworchestrator")
    verbose = engine_log.level <= logging.INFO
    if engine_log.level > logging.INFO:
        engine_log.setLevel(logging.INFO)
    logging.getLogger("uvicorn.error").setLevel(engine_log.level if verbose else logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    # The access log already says what each request got. (The receiver's info record of an
    # accepted webhook passes extra={"created": ...}, which logging refuses with a KeyError.)
    logging.getLogger("floworchestrator.web").setLevel(logging.WARNING)

    auth = _web_auth(no_auth)
    server = _dashboard_server(orch, auth, webhooks=True)
    # uvicorn catches SIGINT/SIGTERM while it serves and raises them again when it is done; with
    # its own handler in place before and after, a signal at any time means a clean stop, exit 0.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _run(_serve(orch, server, sock, lambda: _serve_banner(orch, app_spec, url, DEFAULT_PATH, auth[1])))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    click.echo("Stopped.")
