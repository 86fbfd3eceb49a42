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
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ._committer import GroupCommitter
from ._ids import new_id
from ._status import RunStatus, StepResult, StepStatus
from .exceptions import (
    FlowDisabledError,
    FlowOrchestratorError,
    InvalidOperationError,
    UnknownFlowError,
    UnknownRunError,
)
from .executor import Handler, StepContext, call_handler, to_result
from .expressions import ResolutionError, Scope, StepView
from .flow import CompiledFlow
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
    RetryStep,
    RunRecord,
    RunStarted,
    StartRun,
    Store,
)

log = logging.getLogger("floworchestrator.engine")

#: Trigger headers that carry credentials and are never stored (compared case-insensitively).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token", "proxy-authorization"})


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    ) -> RunStarted:
        compiled = self.flows.get(flow_id)
        if compiled is None:
            raise UnknownFlowError(flow_id)
        if trigger != "manual" and trigger not in compiled.manifest["triggers"]:
            raise InvalidOperationError(f"flow {flow_id!r} has no trigger {trigger!r}")
        try:
            body_json = json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidOperationError(f"the trigger body is not JSON-serialisable: {exc}") from None
        kept = {str(k): str(v) for k, v in (headers or {}).items() if str(k).lower() not in self.redact}
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
            now=utcnow(),
        )
        result = await self.committer.submit(op)
        assert isinstance(result, RunStarted)
        if result.disabled:
            raise FlowDisabledError(flow_id)
        if result.created:
            log.info("run %s of flow %s started", result.run_id, flow_id,
                     extra={"event": "run.started", "run_id": result.run_id, "flow_id": flow_id, "trigger": trigger})
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
        want = compiled.wants.get(msg.step_key, ()) if compiled is not None else ()
        now = utcnow()
        grant = await self.committer.submit(
            Claim(msg.flow_id, msg.run_id, msg.step_key, msg.generation, self.owner, now + self.lease, now, want)
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
                    result, output_json, inputs_json = await self._execute(compiled, msg.flow_id, msg.run_id, step_key, grant)
                except asyncio.CancelledError:
                    # Shut down mid-step: give the claim back so the next start runs the step at once
                    # instead of waiting for the lease to run out.
                    await asyncio.shield(self._give_back(msg.flow_id, msg.run_id, step_key, generation))
                    raise
                finished = utcnow()
                done = await self.committer.submit(
                    Complete(
                        msg.flow_id, msg.run_id, step_key, generation, self.owner, result.status, output_json, result.error,
                        inputs_json, now, finished, compiled.graph, result.delay,
                        finished + self.lease if self.accepting else None, compiled.wants,
                    )
                )
            finally:
                self.running.discard(key)
            assert isinstance(done, Applied)
            if not done.applied:
                return
            if result.status is StepStatus.FAILED:
                log.warning("step %s of run %s failed: %s", step_key, msg.run_id, result.error,
                            extra={"event": "step.failed", "run_id": msg.run_id, "step_key": step_key})
            if done.effects.dispatched or done.effects.finished:
                await self.apply_effects(done.effects)
            if done.claimed is None:
                return
            step_key, generation, grant = done.claimed
            now = finished

    async def _give_back(self, flow_id: str, run_id: str, step_key: str, generation: int) -> None:
        try:
            await self.committer.submit(ExpireLease(flow_id, run_id, step_key, generation, utcnow(), owner=self.owner))
        except Exception:
            log.exception("could not give back step %s of run %s; its lease will expire", step_key, run_id)

    async def _execute(
        self, compiled: CompiledFlow, flow_id: str, run_id: str, step_key: str, grant: Grant
    ) -> tuple[StepResult, str | None, str | None]:
        step_type = compiled.step_types.get(step_key)
        handler = self.handlers.get(step_type) if step_type is not None else None
        if handler is None:
            return StepResult.failed(f"no handler is registered for type {step_type!r} in this process"), None, None
        template = compiled.templates[step_key]
        inputs: Any = None
        inputs_json: str | None = None
        if not template.is_constant:
            missing = template.step_refs - grant.outputs.keys()
            outputs = dict(grant.outputs)
            if missing:  # the run pinned an older manifest whose inputs read other steps
                for rec in await self.store.get_steps(run_id):
                    if rec.step_key in missing:
                        outputs[rec.step_key] = (rec.status, json.dumps(rec.output), rec.error)
            scope = Scope(
                json.loads(grant.trigger_body_json) if template.uses_trigger else None,
                json.loads(grant.trigger_headers_json) if template.uses_trigger else {},
                {k: StepView(st.value, json.loads(out) if out is not None else None, err) for k, (st, out, err) in outputs.items()},
            )
            try:
                inputs = template.resolve(scope)
            except ResolutionError as exc:
                return StepResult.failed(f"could not resolve inputs: {exc}"), None, None
        else:
            inputs = template.resolve(Scope())
        if inputs is not None:
            inputs_json = json.dumps(inputs)
        ctx = StepContext(run_id, flow_id, step_key, grant.attempt, grant.trigger_key)
        try:
            value = await call_handler(handler, inputs, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("handler of step %s raised", step_key, exc_info=True)
            return StepResult.failed(f"{type(exc).__name__}: {exc}"), None, inputs_json
        result, output_json = to_result(value)
        return result, output_json, inputs_json

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

    async def _run_or_raise(self, run_id: str) -> RunRecord:
        run = await self.store.get_run(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        return run

    async def retry_step(self, run_id: str, step_key: str) -> None:
        run = await self._run_or_raise(run_id)
        compiled = await self.compiled_for(run.manifest_id)
        res = await self.committer.submit(RetryStep(run.flow_id, run_id, step_key, compiled.graph, utcnow()))
        assert isinstance(res, Applied)
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
