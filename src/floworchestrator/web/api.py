"""The JSON API under ``/api``: flows, runs, steps, schedules, handlers and health.

Every answer is JSON with snake_case keys; every error is
``{"error": code, "detail": text}`` with a 4xx status for a request that
cannot be served as asked (unknown flow, run or step: 404; bad JSON or query
parameters: 400; a state that does not allow the operation: 409) and 503
while the orchestrator is not started or the store fails. The endpoints are
listed once, in :data:`ENDPOINTS`, which also yields the OpenAPI description
(``GET /api/openapi.json``). :func:`floworchestrator.web.create_app` mounts
them, with authentication, beside the webhook receiver.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._status import RunStatus, StepStatus
from ..engine import utcnow
from ..exceptions import FlowOrchestratorError
from ..flow import Cron
from ..orchestrator import Orchestrator
from ..planner import Graph
from ..stores.base import AttemptRecord, FlowRecord, RunFilter, RunRecord
from ._http import (
    ApiError,
    ApiResponse,
    event_json,
    idempotency_key,
    query_datetime,
    query_int,
    query_run_status,
    read_json,
    run_json,
    schedule_json,
    step_json,
)
from .events import EventFeed, stream_events
from .mermaid import to_mermaid
from .webhooks import trigger_headers

__all__ = ["ENDPOINTS", "Endpoint", "api_routes"]

log = logging.getLogger("floworchestrator.web")

MAX_PAGE = 500
MAX_SEARCH = 200
MAX_BUCKETS = 366
HEALTH_TIMEOUT = 5.0

EndpointFunc = Callable[[Request, "Api"], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route of the API, with what the OpenAPI description says about it."""

    method: str
    path: str
    func: EndpointFunc
    summary: str
    status: int = 200
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, str], ...] = ()
    """(name, OpenAPI type, description) of each query parameter."""
    body: str | None = None
    """What the JSON body holds, if the endpoint reads one."""
    headers: tuple[str, ...] = ()
    """Request headers the endpoint reads."""
    media: str = "application/json"
    """What a successful answer is."""


@dataclass(slots=True)
class Api:
    """What the endpoints share: the orchestrator and the limits."""

    orchestrator: Orchestrator
    max_body_size: int
    feed: EventFeed

    def started(self) -> Orchestrator:
        if not self.orchestrator.started:
            raise ApiError(503, "unavailable", "the orchestrator is not started")
        return self.orchestrator


def _param(request: Request, name: str) -> str:
    return str(request.path_params[name])


def _created(run_id: str, created: bool) -> ApiResponse:
    return ApiResponse({"run_id": run_id, "created": created}, status_code=202 if created else 200)


# -- flows -------------------------------------------------------------------------------


async def _flow_records(api: Api) -> dict[str, FlowRecord]:
    return {f.flow_id: f for f in await api.started().list_flows()}


def _manifest(api: Api, flow_id: str, record: FlowRecord | None) -> tuple[dict[str, Any], str | None]:
    """(manifest, manifest id) of a flow: this process's registration first, else what the store has."""
    compiled = api.orchestrator.engine.flows.get(flow_id)
    if compiled is not None:
        return compiled.manifest, compiled.manifest_id
    return (record.manifest, record.manifest_id) if record is not None else ({}, None)


def _flow_summary(api: Api, flow_id: str, record: FlowRecord | None) -> dict[str, Any]:
    flow = api.orchestrator.flows.get(flow_id)
    manifest, manifest_id = _manifest(api, flow_id, record)
    return {
        "flow_id": flow_id,
        "version": manifest.get("version"),
        "description": manifest.get("description"),
        # The store's flag is the one in force (it may have been switched from the dashboard).
        "enabled": record.enabled if record is not None else bool(flow and flow.enabled),
        "registered": flow is not None,
        "manifest_id": manifest_id,
        "triggers": manifest.get("triggers") or {},
        "step_count": len(manifest.get("steps") or {}),
        "updated_at": record.updated_at if record is not None else None,
    }


async def list_flows(request: Request, api: Api) -> Response:
    records = await _flow_records(api)
    ids = sorted(set(records) | set(api.orchestrator.flows))
    return ApiResponse({"flows": [_flow_summary(api, i, records.get(i)) for i in ids]})


async def get_flow(request: Request, api: Api) -> Response:
    flow_id = _param(request, "flow_id")
    record = (await _flow_records(api)).get(flow_id)
    if record is None and flow_id not in api.orchestrator.flows:
        raise ApiError(404, "not_found", f"unknown flow {flow_id!r}")
    out = _flow_summary(api, flow_id, record)
    manifest, _ = _manifest(api, flow_id, record)
    out["steps"] = manifest.get("steps") or {}
    out["timeout"] = manifest.get("timeout")
    out["manifest"] = manifest
    out["mermaid"] = to_mermaid(manifest)
    return ApiResponse(out)


async def get_manifest(request: Request, api: Api) -> Response:
    manifest_id = _param(request, "manifest_id")
    manifest = await api.started().store.get_manifest(manifest_id)
    if manifest is None:
        raise ApiError(404, "not_found", f"unknown manifest {manifest_id!r}")
    return ApiResponse({"manifest_id": manifest_id, "flow_id": manifest.get("id"), "version": manifest.get("version"),
                        "steps": manifest.get("steps") or {}, "manifest": manifest, "mermaid": to_mermaid(manifest)})


async def trigger_flow(request: Request, api: Api) -> Response:
    orch = api.started()
    flow_id = _param(request, "flow_id")
    if flow_id not in orch.flows:
        raise ApiError(404, "not_found", f"unknown flow {flow_id!r}")
    key = idempotency_key(request)
    body = await read_json(request, api.max_body_size)
    started = await orch.engine.trigger(flow_id, body, headers=trigger_headers(request.headers), idempotency_key=key)
    assert started.run_id is not None  # None only for a disabled flow, which raised
    return _created(started.run_id, started.created)


async def _set_enabled(request: Request, api: Api, enabled: bool) -> Response:
    flow_id = _param(request, "flow_id")
    await api.started().set_enabled(flow_id, enabled)
    return ApiResponse({"flow_id": flow_id, "enabled": enabled})


async def enable_flow(request: Request, api: Api) -> Response:
    return await _set_enabled(request, api, True)


async def disable_flow(request: Request, api: Api) -> Response:
    return await _set_enabled(request, api, False)


async def list_handlers(request: Request, api: Api) -> Response:
    used: dict[str, list[str]] = defaultdict(list)
    for flow_id, compiled in sorted(api.orchestrator.engine.flows.items()):
        for step_type in sorted(set(compiled.step_types.values())):
            used[step_type].append(flow_id)
    handlers = []
    for name, handler in sorted(api.orchestrator.engine.handlers.items()):
        model = handler.input_model
        handlers.append({
            "type": name,
            "function": f"{getattr(handler.func, '__module__', '?')}.{getattr(handler.func, '__qualname__', repr(handler.func))}",
            "is_async": handler.is_async,
            "input_model": None if model is None else f"{model.__module__}.{model.__qualname__}",
            "input_schema": None if model is None else model.model_json_schema(),
            "used_by": used.get(name, []),
        })
    return ApiResponse({"handlers": handlers})


# -- runs ----------------------------------------------------------------------------------


async def list_runs(request: Request, api: Api) -> Response:
    flow_id = request.query_params.get("flow_id") or None
    status = query_run_status(request)
    search = (request.query_params.get("search") or "").strip() or None
    since, until = query_datetime(request, "since"), query_datetime(request, "until")
    if search is not None and len(search) > MAX_SEARCH:
        raise ApiError(400, "bad_request", f"query parameter 'search' is longer than {MAX_SEARCH} characters")
    offset = query_int(request, "offset", 0, minimum=0)
    limit = query_int(request, "limit", 50, minimum=1, maximum=MAX_PAGE)
    where = RunFilter(flow_id=flow_id, status=status, search=search, since=since, until=until)
    store = api.started().store
    runs = await store.list_runs(where, limit=limit, offset=offset)
    total = await store.count_runs(where)
    return ApiResponse({"runs": [run_json(r) for r in runs], "total": total, "offset": offset, "limit": limit})


async def active_runs(request: Request, api: Api) -> Response:
    limit = query_int(request, "limit", 100, minimum=1, maximum=MAX_PAGE)
    store = api.started().store
    running = RunFilter(status=RunStatus.RUNNING)
    runs = await store.list_runs(running, limit=limit)
    total = await store.count_runs(running)
    return ApiResponse({"runs": [run_json(r) for r in runs], "total": total})


BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}


async def run_stats(request: Request, api: Api) -> Response:
    bucket = request.query_params.get("bucket") or "hour"
    if bucket not in BUCKETS:
        raise ApiError(400, "bad_request", f"query parameter 'bucket' must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    count = query_int(request, "buckets", 24, minimum=1, maximum=MAX_BUCKETS)
    width = BUCKETS[bucket]
    # Buckets are aligned to whole minutes/hours/days (UTC); the last one holds now.
    now = utcnow()
    current = math.floor(now.timestamp() / width) * width
    since = datetime.fromtimestamp(current - (count - 1) * width, UTC)
    stats = await api.started().store.run_stats(since, width, count)
    series: list[dict[str, Any]] = [
        {"start": since + timedelta(seconds=i * width), "counts": {}, "total": 0} for i in range(count)
    ]
    for i, status, n in stats.buckets:
        if 0 <= i < count:
            series[i]["counts"][status.value] = n
            series[i]["total"] += n
    totals = {s.value: stats.totals.get(s, 0) for s in RunStatus}
    return ApiResponse({"totals": totals, "total": sum(totals.values()), "bucket": bucket, "series": series})


async def _run(api: Api, request: Request) -> RunRecord:
    run_id = _param(request, "run_id")
    run = await api.started().get_run(run_id)
    if run is None:
        raise ApiError(404, "not_found", f"unknown run {run_id!r}")
    return run


async def get_run(request: Request, api: Api) -> Response:
    return ApiResponse(run_json(await _run(api, request), detail=True))


def _skipped_because(graph: Graph | None, key: str, statuses: dict[str, StepStatus]) -> dict[str, Any] | None:
    """Why a step without a ``when`` trace was skipped: its ``run_after`` predecessors, how each ended and what
    the step accepts from it (a failure or skip upstream that this step does not take)."""
    if graph is None:
        return None
    try:
        preds = graph.preds_of(key)
    except (KeyError, ValueError):  # not a step of the pinned graph
        return None
    rows = []
    reasons = []
    for pred, allowed in sorted(preds.items()):
        status = statuses.get(pred)
        accepts = sorted(a.value for a in allowed)
        satisfied = status is not None and (not allowed or status in allowed)
        rows.append({"step_key": pred, "status": status, "accepts": accepts or None, "satisfied": satisfied})  # None: any
        if not satisfied:
            ended = status.value if status is not None else "nowhere"
            reasons.append(f"{pred} ended {ended}, and this step runs after it only when it is {' or '.join(accepts or ['final'])}")
    text = "; ".join(reasons)
    return {"run_after": rows, "text": text or None}


async def get_steps(request: Request, api: Api) -> Response:
    run = await _run(api, request)
    steps = await api.orchestrator.get_steps(run.run_id)
    by_step: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in await api.orchestrator.get_attempts(run.run_id):
        by_step[a.step_key].append(a)
    graph: Graph | None = None
    if any(s.status is StepStatus.SKIPPED and s.trace is None for s in steps):
        try:
            graph = (await api.orchestrator.engine.compiled_for(run.manifest_id)).graph
        except FlowOrchestratorError:  # the manifest is gone: say nothing rather than fail the page
            graph = None
    statuses = {s.step_key: s.status for s in steps}
    out = []
    for s in steps:
        item = step_json(s, by_step.get(s.step_key, []))
        if s.status is StepStatus.SKIPPED and s.trace is None:
            item["skipped_because"] = _skipped_because(graph, s.step_key, statuses)
        elif s.status is StepStatus.SKIPPED:
            item["skipped_because"] = {"when": s.trace, "text": "its when condition was false"}
        out.append(item)
    return ApiResponse({"run_id": run.run_id, "steps": out})


async def get_events(request: Request, api: Api) -> Response:
    after = query_int(request, "after", 0, minimum=0)
    limit = query_int(request, "limit", 1000, minimum=1, maximum=1000)
    run = await _run(api, request)
    events = await api.orchestrator.store.get_events(run.run_id, after, limit)
    return ApiResponse({"run_id": run.run_id, "events": [event_json(e) for e in events]})


async def cancel_run(request: Request, api: Api) -> Response:
    run_id = _param(request, "run_id")
    await api.started().cancel_run(run_id)
    return ApiResponse({"run_id": run_id, "cancelled": True})


async def rerun(request: Request, api: Api) -> Response:
    run_id = _param(request, "run_id")
    started = await api.started().engine.rerun(run_id)
    assert started.run_id is not None
    return ApiResponse({"run_id": started.run_id, "created": started.created, "rerun_of": run_id}, status_code=202)


async def retry_step(request: Request, api: Api) -> Response:
    run_id, step_key = _param(request, "run_id"), _param(request, "step_key")
    await api.started().retry_step(run_id, step_key)
    return ApiResponse({"run_id": run_id, "step_key": step_key, "retried": True}, status_code=202)


async def send_signal(request: Request, api: Api) -> Response:
    run_id, name = _param(request, "run_id"), _param(request, "name")
    orch = api.started()
    payload = await read_json(request, api.max_body_size)
    await orch.signal(run_id, name, payload)
    return ApiResponse({"run_id": run_id, "signal": name, "accepted": True}, status_code=202)


async def event_stream(request: Request, api: Api) -> Response:
    orch = api.started()
    return await stream_events(request, api.feed, orch.store, alive=lambda: orch.started)


# -- schedules --------------------------------------------------------------------------------


async def list_schedules(request: Request, api: Api) -> Response:
    count = query_int(request, "count", 3, minimum=0, maximum=50)
    schedules = await api.started().list_schedules(count)
    return ApiResponse({"schedules": [schedule_json(s) for s in schedules]})


def _cron(api: Api, request: Request) -> tuple[str, str]:
    flow_id, trigger = _param(request, "flow_id"), _param(request, "trigger")
    flow = api.started().flows.get(flow_id)
    if flow is None:
        raise ApiError(404, "not_found", f"unknown flow {flow_id!r}")
    if not isinstance(flow.triggers.get(trigger), Cron):
        raise ApiError(404, "not_found", f"flow {flow_id!r} has no cron trigger {trigger!r}")
    return flow_id, trigger


async def _schedule(api: Api, flow_id: str, trigger: str) -> ApiResponse:
    for s in await api.orchestrator.list_schedules():
        if (s.flow_id, s.trigger) == (flow_id, trigger):
            return ApiResponse(schedule_json(s))
    raise ApiError(404, "not_found", f"flow {flow_id!r} has no cron trigger {trigger!r}")  # pragma: no cover - checked first


async def fire_schedule(request: Request, api: Api) -> Response:
    flow_id, trigger = _cron(api, request)
    started = await api.orchestrator.engine.trigger(flow_id, None, trigger=trigger)
    assert started.run_id is not None
    return _created(started.run_id, started.created)


async def pause_schedule(request: Request, api: Api) -> Response:
    flow_id, trigger = _cron(api, request)
    await api.orchestrator.pause_schedule(flow_id, trigger)
    return await _schedule(api, flow_id, trigger)


async def resume_schedule(request: Request, api: Api) -> Response:
    flow_id, trigger = _cron(api, request)
    await api.orchestrator.resume_schedule(flow_id, trigger)
    return await _schedule(api, flow_id, trigger)


async def set_cron(request: Request, api: Api) -> Response:
    flow_id, trigger = _cron(api, request)
    body = await read_json(request, api.max_body_size)
    if not isinstance(body, dict) or "expression" not in body:
        raise ApiError(400, "bad_request", 'the body must be {"expression": "<cron expression>"} or {"expression": null}')
    expression = body["expression"]
    if expression is not None and not isinstance(expression, str):
        raise ApiError(400, "bad_request", "expression must be a string or null")
    if expression is not None and not croniter.is_valid(expression):
        raise ApiError(400, "bad_request", f"invalid cron expression {expression!r}")
    await api.orchestrator.set_cron(flow_id, trigger, expression)
    return await _schedule(api, flow_id, trigger)


# -- health and description ----------------------------------------------------------------------


async def health(request: Request, api: Api) -> Response:
    orch = api.orchestrator
    running = orch.started
    store_ok = False
    store_detail = "the orchestrator is not started"
    if running:
        try:
            # The flows table is small: a cheap read that still goes through the store's pool and schema.
            await asyncio.wait_for(orch.store.list_flows(), HEALTH_TIMEOUT)
            store_ok, store_detail = True, "reachable"
        except Exception as exc:  # a health check reports a failure, it does not fail
            log.warning("health: the store is not reachable: %s", exc, extra={"event": "web.health_store_failed"})
            store_detail = "unreachable"
    ok = running and store_ok
    return ApiResponse(
        {
            "status": "ok" if ok else "unavailable",
            "runtime": {"running": running},
            "store": {"reachable": store_ok, "detail": store_detail},
        },
        status_code=200 if ok else 503,
    )


async def openapi(request: Request, api: Api) -> Response:
    from .openapi import openapi_document

    # The API router sits in a Mount("/api") of the app: the app's own mount is the root path without it.
    mount = str(request.scope.get("root_path", "")).removesuffix("/api")
    return ApiResponse(openapi_document(request.app.state.floworchestrator_auth, mount))


# -- the table -----------------------------------------------------------------------------------------

_RUN_Q = (
    ("flow_id", "string", "only runs of this flow"),
    ("status", "string", "only runs in this status (Running, Succeeded, Failed, Cancelled, TimedOut)"),
    ("search", "string", "only runs whose id, flow id or trigger body contains this text (ASCII case ignored)"),
    ("since", "string", "only runs created at or after this ISO 8601 date-time"),
    ("until", "string", "only runs created before this ISO 8601 date-time"),
    ("offset", "integer", "how many runs to skip (default 0)"),
    ("limit", "integer", f"how many runs to return, 1 to {MAX_PAGE} (default 50)"),
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/flows", list_flows, "Every flow: triggers, enabled, step count"),
    Endpoint("GET", "/flows/{flow_id}", get_flow, "One flow: manifest, triggers, steps, enabled and Mermaid text", errors=(404,)),
    Endpoint("POST", "/flows/{flow_id}/trigger", trigger_flow, "Start a run with the JSON body as trigger body", status=202,
             errors=(400, 404, 409, 413), body="the trigger body (any JSON; empty: null)", headers=("Idempotency-Key",)),
    Endpoint("POST", "/flows/{flow_id}/enable", enable_flow, "Enable a flow", errors=(404,)),
    Endpoint("POST", "/flows/{flow_id}/disable", disable_flow, "Disable a flow (no trigger starts a run)", errors=(404,)),
    Endpoint("GET", "/manifests/{manifest_id}", get_manifest,
             "A flow definition as a run pinned it (runs keep the manifest they started on)", errors=(404,)),
    Endpoint("GET", "/handlers", list_handlers, "Registered handler types and the flows using them"),
    Endpoint("GET", "/runs", list_runs, "Runs, newest first, with the total count", errors=(400,), query=_RUN_Q),
    Endpoint("GET", "/runs/active", active_runs, "Running runs, newest first, with their count", errors=(400,),
             query=(("limit", "integer", f"how many runs to return, 1 to {MAX_PAGE} (default 100)"),)),
    Endpoint("GET", "/runs/stats", run_stats, "Runs per status, and runs per time bucket (for a chart)", errors=(400,),
             query=(("bucket", "string", "minute, hour (default) or day"),
                    ("buckets", "integer", f"how many buckets, the last one holding now, 1 to {MAX_BUCKETS} (default 24)"))),
    Endpoint("GET", "/runs/{run_id}", get_run, "One run with its trigger body and headers", errors=(404,)),
    Endpoint("GET", "/runs/{run_id}/steps", get_steps, "The steps of a run: status, inputs, output, error, attempts, timings, trace",
             errors=(404,)),
    Endpoint("GET", "/runs/{run_id}/events", get_events, "The events of a run, oldest first", errors=(400, 404),
             query=(("after", "integer", "only events with a greater id"), ("limit", "integer", "at most this many, 1 to 1000"))),
    Endpoint("POST", "/runs/{run_id}/cancel", cancel_run, "Cancel a Running run", errors=(404, 409)),
    Endpoint("POST", "/runs/{run_id}/rerun", rerun, "Start a new run with the same trigger data", status=202, errors=(404, 409)),
    Endpoint("POST", "/runs/{run_id}/steps/{step_key}/retry", retry_step, "Retry a Failed, TimedOut or Cancelled step and those after it",
             status=202, errors=(404, 409)),
    Endpoint("POST", "/runs/{run_id}/signals/{name}", send_signal, "Send a signal with the JSON body as payload", status=202,
             errors=(400, 404, 409, 413), body="the signal payload (any JSON; empty: null)"),
    Endpoint("GET", "/schedules", list_schedules, "Every cron trigger with its next fire times", errors=(400,),
             query=(("count", "integer", "how many next fire times (default 3)"),)),
    Endpoint("POST", "/schedules/{flow_id}/{trigger}/trigger", fire_schedule, "Start a run of a cron trigger now", status=202,
             errors=(404, 409)),
    Endpoint("POST", "/schedules/{flow_id}/{trigger}/pause", pause_schedule, "Pause a cron trigger", errors=(404,)),
    Endpoint("POST", "/schedules/{flow_id}/{trigger}/resume", resume_schedule, "Resume a paused cron trigger", errors=(404,)),
    Endpoint("PUT", "/schedules/{flow_id}/{trigger}/cron", set_cron, "Override a cron expression, or restore the flow's own with null",
             errors=(400, 404), body='{"expression": "<cron expression>" | null}'),
    Endpoint("GET", "/events/stream", event_stream,
             "Server-Sent Events: run and step events as they are recorded (by any process sharing the store)",
             errors=(400, 404), query=(("run_id", "string", "only this run's events"),
                                       ("after", "integer", "first send the events after this id (like Last-Event-ID)")),
             headers=("Last-Event-ID",), media="text/event-stream"),
    Endpoint("GET", "/health", health, "Whether the runtime runs and the store answers (503 if not)", errors=(503,)),
    Endpoint("GET", "/openapi.json", openapi, "This description"),
)


def _wrap(endpoint: Endpoint, api: Api) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        return await endpoint.func(request, api)

    handle.__name__ = endpoint.func.__name__
    return handle


def api_routes(
    orchestrator: Orchestrator, *, max_body_size: int, endpoints: Sequence[Endpoint] = ENDPOINTS, feed: EventFeed | None = None
) -> list[BaseRoute]:
    """The API's routes, relative to ``/api``; errors are raised as ApiError or the package's exceptions."""
    api = Api(orchestrator, max_body_size, feed or EventFeed())
    return [Route(e.path, _wrap(e, api), methods=[e.method], name=e.func.__name__) for e in endpoints]
