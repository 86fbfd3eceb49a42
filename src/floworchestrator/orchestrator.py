"""The Orchestrator: what user code creates, registers flows and handlers with, and starts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from croniter import croniter

from . import scheduler
from ._status import RunStatus
from .engine import Engine, utcnow
from .exceptions import ConfigurationError, FlowValidationError, InvalidOperationError, UnknownFlowError
from .executor import Handler, HandlerFunc
from .flow import CompiledFlow, Cron, Flow, Webhook, validate_flows
from .runtimes.base import Dispatcher
from .stores import open_store
from .stores.base import AttemptRecord, EventRecord, FlowRecord, RunFilter, RunRecord, StepRecord, Store

__all__ = ["Orchestrator", "Schedule"]

log = logging.getLogger("floworchestrator")
F = TypeVar("F", bound=HandlerFunc)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron trigger as it stands now."""

    flow_id: str
    trigger: str
    expression: str
    """The expression in force (the saved override, or the flow's own)."""
    timezone: str | None
    paused: bool
    overridden: bool
    next_fires: tuple[datetime, ...]
    """The next fire times (UTC), paused or not."""


def _make_runtime(runtime: str | Dispatcher, concurrency: int) -> Dispatcher:
    if isinstance(runtime, Dispatcher):
        return runtime
    if runtime == "inprocess":
        from .runtimes.inprocess import InProcessDispatcher

        return InProcessDispatcher(concurrency=concurrency)
    raise ConfigurationError(f"unknown runtime {runtime!r} (available: 'inprocess', or a Dispatcher instance)")


class Orchestrator:
    """Holds the flows and handlers of an application and runs them.

    Both ``store`` and ``runtime`` must be given: there is no default store
    to fall back on silently. ``store`` is a URL (``memory://``,
    ``sqlite:///path/to/file.db``) or a Store; ``runtime`` is ``"inprocess"``
    or a Dispatcher.

    Use it as ``async with orchestrator: ...`` or call ``start()``/``stop()``.
    """

    def __init__(
        self,
        store: str | Store,
        runtime: str | Dispatcher,
        *,
        concurrency: int = 64,
        lease_seconds: float = 60.0,
        recovery_interval: float = 10.0,
        stale_after: float = 60.0,
        shutdown_timeout: float = 30.0,
        redact_headers: Iterable[str] = (),
        cron: bool = True,
    ) -> None:
        if store is None or runtime is None:
            raise ConfigurationError("an Orchestrator needs an explicit store and runtime")
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.dispatcher: Dispatcher = _make_runtime(runtime, concurrency)
        self._handlers: dict[str, Handler] = {}
        self._flows: dict[str, Flow] = {}
        self.engine = Engine(self.store, self.dispatcher, self._handlers, lease_seconds=lease_seconds, redact_headers=redact_headers)
        self.recovery_interval = recovery_interval
        self.stale_after = stale_after
        self.shutdown_timeout = shutdown_timeout
        self.cron = cron
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._workers = True

    # -- registration ---------------------------------------------------------

    def handler(self, type_name: str) -> Callable[[F], F]:
        """Register the decorated function as the handler of steps of type ``type_name``."""

        def register(func: F) -> F:
            self.add_handler(type_name, func)
            return func

        return register

    def add_handler(self, type_name: str, func: HandlerFunc) -> None:
        """Register ``func`` as the handler of ``type_name`` (the decorator's plain form)."""
        if not type_name:
            raise ConfigurationError("a handler type name must be a non-empty string")
        if type_name in self._handlers and self._handlers[type_name].func is not func:
            raise ConfigurationError(f"a handler for type {type_name!r} is already registered")
        self._handlers[type_name] = Handler.inspect(type_name, func)

    @property
    def handler_types(self) -> list[str]:
        return sorted(self._handlers)

    def register(self, *flows: Flow) -> None:
        """Validate and add flows; raise FlowValidationError listing every problem of every flow.

        Registering a flow whose id is already registered replaces it (runs
        already started keep the definition they started on).
        """
        taken = {
            t.slug: f.id for f in self._flows.values() if f.id not in {x.id for x in flows}
            for t in f.triggers.values() if isinstance(t, Webhook)
        }
        problems = validate_flows(list(flows), self._handlers.keys(), taken)
        if problems:
            raise FlowValidationError(problems)
        for flow in flows:
            self._flows[flow.id] = flow
            self.engine.add_flow(CompiledFlow.from_manifest(flow.to_manifest()))
        if self._started:
            # Saved in the background (register is sync); triggers wait for it, see Engine.trigger.
            task = asyncio.get_running_loop().create_task(self._sync_flows(flows))
            self.engine.syncing.add(task)
            task.add_done_callback(self.engine.syncing.discard)

    @property
    def flows(self) -> dict[str, Flow]:
        """The registered flows by id."""
        return dict(self._flows)

    async def _sync_flows(self, flows: Sequence[Flow]) -> None:
        rows = []
        for f in flows:
            c = self.engine.flows[f.id]
            rows.append((f.id, f.version, c.manifest_id, json.dumps(c.manifest, sort_keys=True), f.enabled))
        await self.store.upsert_flows(rows, utcnow())

    def use_store(self, store: str | Store) -> None:
        """Replace the store (a URL or a Store) before ``start()``; the CLI's ``--store`` uses this."""
        if self._started:
            raise ConfigurationError("the store cannot be changed while the orchestrator is running")
        self.store = open_store(store) if isinstance(store, str) else store
        self.engine.use_store(self.store)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, *, workers: bool = True) -> None:
        """Open the store, save every flow, recover unfinished work, start the runtime and cron.

        ``workers=False`` starts a *client*: the store is opened and flows are
        saved so runs can be triggered, controlled and read, but this process
        runs no step, no recovery and no cron. Runs it triggers wait, queued in
        the store, for a process with workers (with the in-process runtime,
        that process's recovery picks them up within ``stale_after`` seconds).
        """
        if self._started:
            return
        await self.store.open()
        self._workers = workers
        if not workers:
            try:
                await self._sync_flows(list(self._flows.values()))
            except BaseException:
                await self.store.close()
                raise
            self._started = True
            return
        try:
            await self._sync_flows(list(self._flows.values()))
            self.engine.accepting = True
            await self.dispatcher.start(self.engine.run_step)
            self._started = True
            # Only this process's memory held the queue of a non-durable runtime.
            await scheduler.recover(self.engine, stale_after=None if not self.dispatcher.durable else self.stale_after)
        except BaseException:
            await self.dispatcher.stop(0)
            await self.store.close()
            self._started = False
            raise
        loop = asyncio.get_running_loop()
        lease = self.engine.lease.total_seconds()
        self._tasks = [
            loop.create_task(scheduler.heartbeat_loop(self.engine, max(0.05, lease / 3)), name="floworchestrator-heartbeat"),
            loop.create_task(
                scheduler.recovery_loop(self.engine, self.recovery_interval, self.stale_after), name="floworchestrator-recovery"
            ),
        ]
        if self.cron:
            self._tasks.append(loop.create_task(scheduler.cron_loop(self.engine), name="floworchestrator-cron"))
        log.info("orchestrator started with %d flow(s)", len(self._flows), extra={"event": "orchestrator.started"})

    async def stop(self) -> None:
        """Stop cron and recovery, let running steps finish (up to ``shutdown_timeout``), close the store."""
        if not self._started:
            return
        self._started = False
        # The heartbeat goes last: the steps still finishing must keep their leases meanwhile.
        heartbeat = [t for t in self._tasks if t.get_name() == "floworchestrator-heartbeat"]
        others = [t for t in self._tasks if t not in heartbeat]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.engine.stop_timers()
        if self._workers:
            self.engine.accepting = False
            await self.dispatcher.stop(self.shutdown_timeout)
        for t in heartbeat:
            t.cancel()
        await asyncio.gather(*heartbeat, return_exceptions=True)
        self._tasks = []
        await self.engine.committer.drain()
        await self.store.close()
        log.info("orchestrator stopped", extra={"event": "orchestrator.stopped"})

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # -- runs ----------------------------------------------------------------------

    async def trigger(
        self,
        flow_id: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        trigger: str = "manual",
    ) -> str:
        """Start a run and return its id.

        The same ``idempotency_key`` for the same flow returns the first run's
        id and starts nothing. Raises FlowDisabledError for a disabled flow,
        UnknownFlowError for an unknown one. Credential headers are dropped.
        """
        self._require_started()
        res = await self.engine.trigger(flow_id, body, headers=headers, idempotency_key=idempotency_key, trigger=trigger)
        assert res.run_id is not None
        return res.run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Wait for a run to finish and return it; TimeoutError after ``timeout`` seconds."""
        return await self.engine.wait(run_id, timeout)

    async def run(self, flow_id: str, body: Any = None, *, timeout: float | None = None, **kwargs: Any) -> RunRecord:
        """Trigger a run and wait for it to finish."""
        return await self.wait(await self.trigger(flow_id, body, **kwargs), timeout)

    async def retry_step(self, run_id: str, step_key: str) -> None:
        """Run a Failed (or TimedOut, Cancelled) step again, and the steps after it; earlier outputs are kept."""
        self._require_started()
        await self.engine.retry_step(run_id, step_key)

    async def cancel_run(self, run_id: str) -> None:
        """Cancel a Running run; no step of it starts afterwards."""
        await self.engine.cancel_run(run_id)

    async def rerun(self, run_id: str) -> str:
        """Start a new run of the same flow with the same trigger data; return its id."""
        self._require_started()
        res = await self.engine.rerun(run_id)
        assert res.run_id is not None
        return res.run_id

    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` with ``payload`` to a run.

        ``name`` is a signal name or the key of a WaitForSignal step. A step
        waiting for it resumes with ``payload`` as its output; a signal that
        arrives before its step waits is kept and used when it does. Raises
        UnknownRunError, or InvalidOperationError for a run that has finished.
        """
        self._require_started()
        await self.engine.signal(run_id, name, payload)

    # -- schedules -------------------------------------------------------------------

    async def list_schedules(self, count: int = 3) -> list[Schedule]:
        """Every cron trigger: expression in force, paused or not, and its next ``count`` fire times."""
        now = utcnow()
        out = []
        for flow_id, trig, expr, tz, paused, overridden in await scheduler.schedules(self.engine):
            fires: list[datetime] = []
            at = now
            for _ in range(count):
                at = scheduler.next_fire(expr, tz, at)
                fires.append(at)
            out.append(Schedule(flow_id, trig, expr, tz, paused, overridden, tuple(fires)))
        return out

    def _cron_trigger(self, flow_id: str, trigger: str) -> None:
        flow = self._flows.get(flow_id)
        if flow is None:
            raise UnknownFlowError(flow_id)
        if not isinstance(flow.triggers.get(trigger), Cron):
            raise InvalidOperationError(f"flow {flow_id!r} has no cron trigger {trigger!r}")

    async def pause_schedule(self, flow_id: str, trigger: str) -> None:
        """Stop a cron trigger from firing (on every instance) until ``resume_schedule``."""
        self._cron_trigger(flow_id, trigger)
        await self.store.set_schedule(flow_id, trigger, paused=True, now=utcnow())

    async def resume_schedule(self, flow_id: str, trigger: str) -> None:
        """Let a paused cron trigger fire again (ticks missed while paused are not made up)."""
        self._cron_trigger(flow_id, trigger)
        await self.store.set_schedule(flow_id, trigger, paused=False, now=utcnow())

    async def set_cron(self, flow_id: str, trigger: str, expression: str | None) -> None:
        """Override a cron trigger's expression (saved in the store, kept across restarts); None restores the flow's own."""
        self._cron_trigger(flow_id, trigger)
        if expression is not None and not croniter.is_valid(expression):
            raise InvalidOperationError(f"invalid cron expression {expression!r}")
        await self.store.set_schedule(flow_id, trigger, expression=expression, clear_expression=expression is None, now=utcnow())

    async def set_enabled(self, flow_id: str, enabled: bool) -> None:
        """Enable or disable a flow (a disabled flow starts no run from any trigger)."""
        if flow_id not in self._flows or not await self.store.set_flow_enabled(flow_id, enabled, utcnow()):
            raise UnknownFlowError(flow_id)

    # -- retention ---------------------------------------------------------------------

    async def prune(self, older_than: timedelta | datetime, *, batch_size: int = 500) -> int:
        """Delete the runs that finished more than ``older_than`` ago (a timedelta) or before it (an
        aware datetime), with their steps, attempts, events and signals; return how many.

        Running runs are never deleted, however old. The work is done in
        transactions of ``batch_size`` runs, so the engine keeps running
        meanwhile; it may be called on a started orchestrator or on one whose
        store is merely open. Raises InvalidOperationError for a timedelta that
        is not positive, or a datetime that is naive or in the future.
        """
        now = utcnow()
        if isinstance(older_than, timedelta):
            if older_than <= timedelta(0):
                raise InvalidOperationError(f"prune needs a positive age, got {older_than}")
            cutoff = now - older_than
        elif isinstance(older_than, datetime):
            if older_than.tzinfo is None or older_than.utcoffset() is None:
                raise InvalidOperationError(f"prune needs a timezone-aware datetime, got naive {older_than.isoformat()}")
            if older_than > now:
                raise InvalidOperationError(f"prune cannot delete runs finished before a future time ({older_than.isoformat()})")
            cutoff = older_than
        else:
            raise InvalidOperationError(f"prune needs a timedelta or a datetime, got {type(older_than).__name__}")
        if batch_size < 1:
            raise InvalidOperationError(f"batch_size must be at least 1, got {batch_size}")
        deleted = await self.store.prune(cutoff, batch_size=batch_size)
        log.info("pruned %d run(s) finished before %s", deleted, cutoff.isoformat(),
                 extra={"event": "runs.pruned", "deleted": deleted})
        return deleted

    # -- reads -------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.store.get_run(run_id)

    async def list_runs(
        self,
        *,
        flow_id: str | None = None,
        status: RunStatus | None = None,
        search: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; the filters are those of :class:`~floworchestrator.stores.base.RunFilter`."""
        where = RunFilter(flow_id=flow_id, status=status, search=search, since=since, until=until)
        return await self.store.list_runs(where, limit=limit, offset=offset)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        return await self.store.get_steps(run_id)

    async def get_attempts(self, run_id: str) -> list[AttemptRecord]:
        return await self.store.get_attempts(run_id)

    async def get_events(self, run_id: str | None = None, after: int = 0) -> list[EventRecord]:
        return await self.store.get_events(run_id, after)

    async def list_flows(self) -> list[FlowRecord]:
        return await self.store.list_flows()

    @property
    def started(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._started

    def _require_started(self) -> None:
        if not self._started:
            raise ConfigurationError("the orchestrator is not started: use 'async with orchestrator:' or 'await orchestrator.start()'")


