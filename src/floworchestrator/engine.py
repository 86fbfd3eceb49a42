"""The engine: trigger, run_step, retry_step, cancel_run, rerun.

It talks to storage only through the group committer and the Store's reads,
and to workers only through the Dispatcher. ``run_step`` is what a runtime
calls for each message it delivers, in whichever process that is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ._committer import GroupCommitter
from ._ids import new_id
from ._status import RunStatus, StepStatus
from .exceptions import (
    FlowDisabledError,
    FlowOrchestratorError,
    InvalidOperationError,
    StoreUnavailableError,
    UnknownFlowError,
    UnknownRunError,
)
from .executor import Handler, StepContext, call_handler, to_result
from .expressions import ResolutionError, Scope, StepView
from .flow import WAIT_FOR_SIGNAL, CompiledFlow, Loop, RuntimeWants
from .runtimes.base import Dispatcher, StepMessage
from .stores.base import (
    Applied,
    CancelRun,
    Claim,
    Complete,
    Effects,
    ExpireLease,
    Grant,
    Reconcile,
    Result,
    RetryStep,
    RunRecord,
    RunStarted,
    Signal,
    StartRun,
    Store,
)

log = logging.getLogger("floworchestrator.engine")

COMPLETE_ATTEMPTS = 4
"""How many times a step's result is submitted when the store's connection is lost (0.1 s, 0.3 s, 0.9 s apart)."""

#: Trigger headers that carry credentials and are never stored (compared case-insensitively).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token", "proxy-authorization"})
#: Parts of a header name that mark it as a credential too (``X-Amz-Security-Token``, ``Api-Key``,
#: ``X-Session-Id``, ``X-Upstream-Secret``, ``X-CSRF-Token``...): dropping a harmless header costs
#: little, storing a secret a lot.
CREDENTIAL_NAME_PARTS = ("auth", "token", "secret", "passw", "pwd", "cookie", "session", "signature", "credential", "key",
                         "csrf", "xsrf")


def is_credential_header(name: str) -> bool:
    """Whether a trigger header is a credential, never stored: one of :data:`CREDENTIAL_HEADERS` or a name
    containing one of :data:`CREDENTIAL_NAME_PARTS` (case-insensitive)."""
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or any(part in lowered for part in CREDENTIAL_NAME_PARTS)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Outcome:
    """How one execution of a step ended, as the completion will record it."""

    status: StepStatus
    output_json: str | None = None
    error: str | None = None
    inputs_json: str | None = None
    delay: float = 0.0
    attempt_status: StepStatus | None = None
    trace_json: str | None = None
    park: str | None = None
    consume_signal: int | None = None
    loop: tuple[list[str], int] | None = None


def _being_cancelled() -> bool:
    """True when the current task itself was asked to stop (shutdown), not when an awaited thing was cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _retryable(policy: Mapping[str, Any], exc: BaseException) -> bool:
    names = policy.get("retry_on") or []
    if not names:
        return True
    mro = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__} | {c.__qualname__ for c in type(exc).__mro__}
    return any(n in mro for n in names)


def _backoff(policy: Mapping[str, Any], attempt: int) -> float:
    base = min(float(policy["max_delay"]), float(policy["backoff"]) * float(policy["multiplier"]) ** (attempt - 1))
    jitter = float(policy["jitter"]) * base
    return max(0.0, base + random.uniform(-jitter, jitter))


class Engine:
    """Executes flows against a Store through a Dispatcher."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        handlers: Mapping[str, Handler],
        *,
        lease_seconds: float = 60.0,
        redact_headers: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.handlers = handlers
        self.committer = GroupCommitter(store)
        self.flows: dict[str, CompiledFlow] = {}
        self._by_manifest: dict[str, CompiledFlow] = {}
        self.lease = timedelta(seconds=lease_seconds)
        self.redact = CREDENTIAL_HEADERS | {h.lower() for h in redact_headers}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-12:]}"
        #: Steps this process is executing: (run_id, step_key, generation); the heartbeat extends their leases.
        self.running: set[tuple[str, str, int]] = set()
        self._waiters: dict[str, list[asyncio.Future[RunStatus]]] = {}
        #: False while shutting down: a finishing step then claims no successor for this worker.
        self.accepting = True
        self._timers: set[asyncio.Task[bool]] = set()
        self._timer_handles: set[asyncio.TimerHandle] = set()
        self._wants_cache: dict[str, RuntimeWants] = {}
        #: Flows registered while running, still being saved to the store.
        self.syncing: set[asyncio.Task[None]] = set()

    def use_store(self, store: Store) -> None:
        """Point the engine at another store (only while nothing is running)."""
        self.store = store
        self.committer = GroupCommitter(store)

    # -- flows -------------------------------------------------------------

    def add_flow(self, compiled: CompiledFlow) -> None:
        self.flows[compiled.flow_id] = compiled
        self._by_manifest[compiled.manifest_id] = compiled

    async def compiled_for(self, manifest_id: str) -> CompiledFlow:
        """The compiled flow a run pinned (from cache, else from the store)."""
        compiled = self._by_manifest.get(manifest_id)
        if compiled is None:
            manifest = await self.store.get_manifest(manifest_id)
            if manifest is None:
                raise FlowOrchestratorError(f"the store has no manifest {manifest_id!r}")
            compiled = CompiledFlow.from_manifest(manifest)
            self._by_manifest[manifest_id] = compiled
        return compiled

    # -- trigger -----------------------------------------------------------

    async def trigger(
        self,
        flow_id: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        trigger: str = "manual",
        cron_fire: datetime | None = None,
    ) -> RunStarted:
        compiled = self.flows.get(flow_id)
        if compiled is None:
            raise UnknownFlowError(flow_id)
        if self.syncing:
            await asyncio.gather(*list(self.syncing))
        if trigger != "manual" and trigger not in compiled.manifest["triggers"]:
            raise InvalidOperationError(f"flow {flow_id!r} has no trigger {trigger!r}")
        try:
            body_json = json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidOperationError(f"the trigger body is not JSON-serialisable: {exc}") from None
        kept = {str(k): str(v) for k, v in (headers or {}).items()
                if str(k).lower() not in self.redact and not is_credential_header(str(k))}
        now = utcnow()
        timeout = compiled.run_timeout
        op = StartRun(
            run_id=new_id(),
            flow_id=flow_id,
            manifest_id=compiled.manifest_id,
            step_keys=compiled.graph.order,
            waiting=compiled.waiting,
            trigger_key=trigger,
            body_json=body_json,
            headers_json=json.dumps(kept),
            idempotency_key=idempotency_key,
            now=now,
            deadline=None if timeout is None else now + timedelta(seconds=timeout),
            cron_fire=None if cron_fire is None else (trigger, cron_fire),
        )
        result = await self.committer.submit(op)
        assert isinstance(result, RunStarted)
        if result.disabled:
            raise FlowDisabledError(flow_id)
        if result.created:
            log.info("run %s of flow %s started", result.run_id, flow_id,
                     extra={"event": "run.started", "run_id": result.run_id, "flow_id": flow_id, "trigger": trigger})
            if timeout is not None and result.run_id is not None:
                self._time_out_later(result.run_id, timeout)
        await self.apply_effects(result.effects)
        return result

    # -- executing a step ----------------------------------------------------

    async def run_step(self, msg: StepMessage) -> None:
        """Claim the step named by ``msg``, run its handler, record the result and dispatch what follows.

        A message for a step that is not claimable (already claimed, finished,
        cancelled, an old generation) does nothing: that is how duplicates die.
        When the completion makes further steps ready, it claims one of them
        for this worker in the same transaction and the worker runs it next;
        the others go to the runtime.
        """
        compiled = self.flows.get(msg.flow_id)
        want: tuple[str, ...] = ()
        signal = None
        if compiled is not None and compiled.has_step(msg.step_key):
            want = tuple(compiled.runtime_refs(msg.step_key).values())
            signal = compiled.signals.get(compiled.spec_key(msg.step_key))
        now = utcnow()
        grant = await self.committer.submit(
            Claim(msg.flow_id, msg.run_id, msg.step_key, msg.generation, self.owner, now + self.lease, now, want,
                  signal[0] if signal else None)
        )
        if grant is None:
            return
        assert isinstance(grant, Grant)
        if compiled is None or grant.manifest_id != compiled.manifest_id:
            compiled = await self.compiled_for(grant.manifest_id)
        step_key, generation = msg.step_key, msg.generation
        while True:
            key = (msg.run_id, step_key, generation)
            self.running.add(key)
            try:
                try:
                    out = await self._execute(compiled, msg.flow_id, msg.run_id, step_key, grant)
                except asyncio.CancelledError:
                    # Shut down mid-step: give the claim back so the next start runs the step at once
                    # instead of waiting for the lease to run out.
                    await asyncio.shield(self._give_back(msg.flow_id, msg.run_id, step_key, generation))
                    raise
                finished = utcnow()
                done = await self._complete(
                    Complete(
                        msg.flow_id, msg.run_id, step_key, generation, self.owner, out.status, out.output_json, out.error,
                        out.inputs_json, now, finished, compiled.graph, out.delay,
                        finished + self.lease if self.accepting else None, self._wants(compiled),
                        out.attempt_status, out.trace_json, out.park, out.consume_signal, out.loop,
                    )
                )
            finally:
                self.running.discard(key)
            assert isinstance(done, Applied)
            if not done.applied:
                return
            if out.status in (StepStatus.FAILED, StepStatus.TIMED_OUT) or out.attempt_status is not None:
                log.warning("step %s of run %s: %s%s", step_key, msg.run_id, out.error,
                            f" (retrying in {out.delay:.1f}s)" if out.attempt_status is not None else "",
                            extra={"event": "step.failed", "run_id": msg.run_id, "step_key": step_key})
            if done.effects.dispatched or done.effects.finished:
                await self.apply_effects(done.effects)
            if done.claimed is None:
                return
            step_key, generation, grant = done.claimed
            now = finished

    async def _complete(self, op: Complete) -> Result:
        """Submit a completion; if the store's connection was lost, try again a few times (the heartbeat keeps
        the claim meanwhile). Safe: a completion applies once, for this owner and generation only — if the lost
        attempt had committed after all, the next one is not applied and recovery dispatches what followed."""
        if op.error is not None and "\x00" in op.error:
            # An exception text may hold a NUL, which PostgreSQL cannot store: one such step would fail every
            # completion committed with it. Written out instead, the same on every store.
            op.error = op.error.replace("\x00", "\\x00")
        for attempt in range(COMPLETE_ATTEMPTS):
            try:
                return await self.committer.submit(op)
            except StoreUnavailableError as exc:
                if attempt == COMPLETE_ATTEMPTS - 1:
                    raise
                log.warning("step %s of run %s: saving its result failed (%s); trying again", op.step_key, op.run_id, exc,
                            extra={"event": "step.complete_retry", "run_id": op.run_id, "step_key": op.step_key})
                await asyncio.sleep(0.1 * 3**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _give_back(self, flow_id: str, run_id: str, step_key: str, generation: int) -> None:
        try:
            res = await self.committer.submit(ExpireLease(flow_id, run_id, step_key, generation, utcnow(), owner=self.owner))
            # Dispatch the step's next generation: a durable runtime hands it to a worker still running now
            # (the in-process one, stopping, ignores it; its next start re-enqueues every queued step).
            if isinstance(res, Applied) and res.applied:
                await self.apply_effects(res.effects)
        except Exception:
            log.exception("could not give back step %s of run %s; its lease will expire", step_key, run_id)

    def _wants(self, compiled: CompiledFlow) -> RuntimeWants:
        wants = self._wants_cache.get(compiled.manifest_id)
        if wants is None:
            wants = self._wants_cache[compiled.manifest_id] = RuntimeWants(compiled)
        return wants

    async def _scope(self, compiled: CompiledFlow, run_id: str, step_key: str, grant: Grant) -> Scope:
        refs = compiled.runtime_refs(step_key)  # name as written -> runtime key
        outputs = dict(grant.outputs)
        missing = set(refs.values()) - outputs.keys()
        if missing:  # the run pinned an older manifest whose inputs read other steps
            for rec in await self.store.get_steps(run_id):
                if rec.step_key in missing:
                    outputs[rec.step_key] = (rec.status, json.dumps(rec.output), rec.error)
        trigger = compiled.needs_trigger(step_key)
        views = {}
        for name, key in refs.items():
            if key in outputs:
                st, out, err = outputs[key]
                views[name] = StepView(st.value, json.loads(out) if out is not None else None, err)
        return Scope(
            json.loads(grant.trigger_body_json) if trigger else None,
            json.loads(grant.trigger_headers_json) if trigger else {},
            views,
        )

    async def _execute(self, compiled: CompiledFlow, flow_id: str, run_id: str, step_key: str, grant: Grant) -> _Outcome:
        if not compiled.has_step(step_key):
            return _Outcome(StepStatus.FAILED, error=f"the run's flow has no step {step_key!r}")
        spec = compiled.spec_key(step_key)
        step_type = compiled.step_types.get(spec)
        template = compiled.templates[spec]
        conditions = compiled.conditions.get(spec, ())
        loop = compiled.loops.get(step_key)
        reads = conditions or not template.is_constant or (loop is not None and not loop.items.is_constant)
        scope = await self._scope(compiled, run_id, step_key, grant) if reads else Scope()
        if conditions:
            traces = []
            for cond in conditions:
                res = cond.evaluate(scope)
                traces.append(res.to_dict())
                if res.value is not True:
                    return _Outcome(StepStatus.SKIPPED, error=res.error, trace_json=json.dumps({"conditions": traces}))
        if loop is not None:
            return self._for_each(loop, scope)
        try:
            inputs = template.resolve(scope)
        except ResolutionError as exc:
            return _Outcome(StepStatus.FAILED, error=f"could not resolve inputs: {exc}")
        if grant.loop_item_json is not None:
            item = {"loop_item": json.loads(grant.loop_item_json), "loop_index": int(step_key.split(".", 2)[1])}
            inputs = {**inputs, **item} if isinstance(inputs, dict) else item if inputs is None else {"inputs": inputs, **item}
        inputs_json = json.dumps(inputs) if inputs is not None else None
        if step_type == WAIT_FOR_SIGNAL:
            return self._wait_for_signal(compiled, spec, grant, inputs_json)
        handler = self.handlers.get(step_type) if step_type is not None else None
        if handler is None:
            return _Outcome(StepStatus.FAILED, error=f"no handler is registered for type {step_type!r} in this process")
        ctx = StepContext(run_id, flow_id, step_key, grant.attempt, grant.trigger_key, grant.first_started_at)
        timeout = compiled.timeouts.get(spec)
        deadline = asyncio.timeout(timeout) if timeout is not None else None
        try:
            if deadline is None:
                value = await call_handler(handler, inputs, ctx)
            else:
                async with deadline:
                    value = await call_handler(handler, inputs, ctx)
        except TimeoutError as exc:
            if deadline is not None and deadline.expired():
                # A sync handler's thread cannot be stopped: it runs on, but its result is no longer awaited.
                return self._failure(compiled, spec, grant, exc, StepStatus.TIMED_OUT,
                                     f"the step timed out after {timeout:g}s", inputs_json)
            return self._failure(compiled, spec, grant, exc, StepStatus.FAILED, f"{type(exc).__name__}: {exc}", inputs_json)
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            # The handler let a CancelledError out of something it awaited: its failure, not a shutdown.
            return self._failure(compiled, spec, grant, exc, StepStatus.FAILED, "CancelledError: the handler was cancelled", inputs_json)
        except Exception as exc:
            log.debug("handler of step %s raised", step_key, exc_info=True)
            return self._failure(compiled, spec, grant, exc, StepStatus.FAILED, f"{type(exc).__name__}: {exc}", inputs_json)
        result, output_json = to_result(value)
        return _Outcome(result.status, output_json, result.error, inputs_json, result.delay)

    def _failure(
        self, compiled: CompiledFlow, step_key: str, grant: Grant, exc: BaseException, status: StepStatus, error: str,
        inputs_json: str | None,
    ) -> _Outcome:
        """A failed or timed-out execution: retried (back to Pending after a backoff) if the step's policy says so."""
        policy = compiled.retries.get(step_key)
        if policy is not None and grant.attempt < int(policy["max_attempts"]) and _retryable(policy, exc):
            delay = _backoff(policy, grant.attempt)
            return _Outcome(StepStatus.PENDING, None, error, inputs_json, delay, attempt_status=status)
        return _Outcome(status, None, error, inputs_json)

    @staticmethod
    def _for_each(loop: Loop, scope: Scope) -> _Outcome:
        try:
            items = loop.items.resolve(scope)
        except ResolutionError as exc:
            return _Outcome(StepStatus.FAILED, error=f"could not resolve for_each: {exc}")
        if items is None:
            items = []
        if not isinstance(items, list):
            return _Outcome(StepStatus.FAILED, error=f"for_each must give a list, not {type(items).__name__}")
        encoded = [json.dumps(x) for x in items]
        return _Outcome(StepStatus.RUNNING, inputs_json="[" + ",".join(encoded) + "]", loop=(encoded, loop.concurrency))

    def _wait_for_signal(self, compiled: CompiledFlow, step_key: str, grant: Grant, inputs_json: str | None) -> _Outcome:
        name, timeout = compiled.signals[step_key]
        if grant.signal is not None:
            signal_id, payload = grant.signal
            # park= too: if another step used this signal first, the store parks this one again.
            return _Outcome(StepStatus.SUCCEEDED, payload, None, inputs_json, park=name, consume_signal=signal_id)
        delay = 0.0
        if timeout is not None:
            started = grant.first_started_at or utcnow()
            delay = timeout - (utcnow() - started).total_seconds()
            if delay <= 0:
                return _Outcome(StepStatus.TIMED_OUT, None, f"no signal {name!r} arrived within {timeout:g}s", inputs_json)
        return _Outcome(StepStatus.PENDING, None, None, inputs_json, delay, park=name)

    async def apply_effects(self, effects: Effects) -> None:
        """Hand dispatched steps to the runtime and wake whoever waits on finished runs."""
        if effects.dispatched:
            by_delay: dict[float, list[StepMessage]] = {}
            for d in effects.dispatched:
                by_delay.setdefault(d.delay, []).append(StepMessage(d.flow_id, d.run_id, d.step_key, d.generation))
            for delay, msgs in by_delay.items():
                await self.dispatcher.enqueue(msgs, delay)
        for run_id, status in effects.finished:
            log.info("run %s finished: %s", run_id, status.value,
                     extra={"event": "run.finished", "run_id": run_id, "status": status.value})
            for fut in self._waiters.pop(run_id, ()):
                if not fut.done():
                    fut.set_result(status)

    # -- control -----------------------------------------------------------

    def _time_out_later(self, run_id: str, seconds: float) -> None:
        # A timer in this process for punctuality; recovery also finds overdue runs, whoever started them.
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timer_handles.discard(handle)
            task = loop.create_task(self.time_out(run_id))
            self._timers.add(task)
            task.add_done_callback(self._timers.discard)

        handle = loop.call_later(seconds, fire)
        self._timer_handles.add(handle)

    async def stop_timers(self) -> None:
        """Cancel run-timeout timers (recovery times out overdue runs after the next start)."""
        for handle in self._timer_handles:
            handle.cancel()
        self._timer_handles.clear()
        if self._timers:
            await asyncio.gather(*list(self._timers), return_exceptions=True)

    async def time_out(self, run_id: str) -> bool:
        """End a Running run whose deadline passed: TimedOut; its pending steps never start."""
        try:
            res = await self.committer.submit(CancelRun(run_id, utcnow(), timed_out=True))
        except Exception:
            log.exception("could not time out run %s", run_id)
            return False
        assert isinstance(res, Applied)
        if res.applied:
            log.warning("run %s timed out", run_id, extra={"event": "run.timed_out", "run_id": run_id})
            await self.apply_effects(res.effects)
        return res.applied

    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Deliver the signal ``name`` (or the signal of the WaitForSignal step keyed ``name``) to a run."""
        run = await self._run_or_raise(run_id)
        compiled = await self.compiled_for(run.manifest_id)
        if name in compiled.signals:
            name = compiled.signals[name][0]
        expected = sorted({signal for signal, _ in compiled.signals.values()})
        if name not in expected:  # a typo would otherwise be kept forever, waited for by nothing
            waits = f"it waits for {', '.join(map(repr, expected))}" if expected else "it has no WaitForSignal step"
            raise InvalidOperationError(f"run {run_id} of flow {run.flow_id!r} never waits for a signal {name!r}: {waits}")
        try:
            payload_json = json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidOperationError(f"the signal payload is not JSON-serialisable: {exc}") from None
        res = await self.committer.submit(Signal(run_id, name, payload_json, utcnow()))
        assert isinstance(res, Applied)
        log.info("signal %s sent to run %s", name, run_id, extra={"event": "run.signal", "run_id": run_id, "signal": name})
        await self.apply_effects(res.effects)

    async def _run_or_raise(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        return run

    async def retry_step(self, run_id: str, step_key: str) -> None:
        run = await self._run_or_raise(run_id)
        compiled = await self.compiled_for(run.manifest_id)
        now = utcnow()
        timeout = compiled.run_timeout
        deadline = None if timeout is None else now + timedelta(seconds=timeout)
        res = await self.committer.submit(RetryStep(run.flow_id, run_id, step_key, compiled.graph, now, deadline))
        assert isinstance(res, Applied)
        if timeout is not None:
            self._time_out_later(run_id, timeout)  # the retried run gets the flow's timeout afresh
        await self.apply_effects(res.effects)

    async def cancel_run(self, run_id: str) -> None:
        res = await self.committer.submit(CancelRun(run_id, utcnow()))
        assert isinstance(res, Applied)
        # Handlers already running finish on their own; their completions are
        # then ignored because the steps are no longer Running (cancel wins).
        await self.apply_effects(res.effects)

    async def rerun(self, run_id: str) -> RunStarted:
        run = await self._run_or_raise(run_id)
        return await self.trigger(run.flow_id, run.trigger_body, headers=run.trigger_headers, trigger=run.trigger_key)

    async def reconcile(self, flow_id: str, run_id: str, manifest_id: str) -> None:
        compiled = await self.compiled_for(manifest_id)
        res = await self.committer.submit(Reconcile(flow_id, run_id, compiled.graph, utcnow()))
        assert isinstance(res, Applied)
        await self.apply_effects(res.effects)

    async def wait(self, run_id: str, timeout: float | None = None, poll: float = 0.5) -> RunRecord:
        """Wait until the run is final; also notices runs finished by other processes (polling every ``poll`` s)."""
        run = await self._run_or_raise(run_id)
        if run.status.is_final:
            return run
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        fut: asyncio.Future[RunStatus] = loop.create_future()
        waiters = self._waiters.setdefault(run_id, [])
        waiters.append(fut)
        try:
            while True:
                wait_for = poll if deadline is None else min(poll, deadline - loop.time())
                if wait_for <= 0:
                    raise TimeoutError(f"run {run_id} did not finish within {timeout}s")
                await asyncio.wait((fut,), timeout=wait_for)
                if fut.done():
                    break
                run = await self._run_or_raise(run_id)
                if run.status.is_final:
                    return run
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self._waiters.get(run_id) is waiters:
                del self._waiters[run_id]
        return await self._run_or_raise(run_id)
