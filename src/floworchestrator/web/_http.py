"""Plumbing of the JSON API: error answers, request parsing and record serialisation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NoReturn

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from .._status import RunStatus
from ..orchestrator import Schedule
from ..stores.base import AttemptRecord, EventRecord, RunRecord, StepRecord

MAX_IDEMPOTENCY_KEY_LENGTH = 255


class ApiError(Exception):
    """An error answer: raised in an endpoint, answered as ``{"error": code, "detail": detail}``."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default`` for API answers: datetimes as ISO 8601, enums as their values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


class ApiResponse(JSONResponse):
    """JSON with datetimes as ISO 8601 strings; never cached (run data changes), never sniffed as another type."""

    def __init__(self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.headers.setdefault("cache-control", "no-store")
        self.headers.setdefault("x-content-type-options", "nosniff")

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=json_default).encode()


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


# -- request parsing ----------------------------------------------------------------


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, max_body_size: int) -> Any:
    """The body parsed as JSON (an empty body is None); 400 if it is not JSON, 413 if too large."""
    too_large = ApiError(413, "payload_too_large", f"the body is larger than {max_body_size} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > max_body_size:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_size:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "the client disconnected before sending the whole body") from None
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def query_int(request: Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be a whole number, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be at least {minimum}{upper}, not {value}")
    return value


def query_run_status(request: Request) -> RunStatus | None:
    raw = request.query_params.get("status")
    if raw is None or raw == "":
        return None
    for status in RunStatus:
        if status.value.lower() == raw.lower():
            return status
    allowed = ", ".join(s.value for s in RunStatus)
    raise ApiError(400, "bad_request", f"unknown run status {raw!r} (one of {allowed})")


def query_datetime(request: Request, name: str) -> datetime | None:
    """An ISO 8601 date or date-time query parameter (UTC when it names no offset); 400 if malformed."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace(" ", "+"))  # a '+' in a URL query decodes to a space
    except ValueError:
        raise ApiError(400, "bad_request", f"query parameter {name!r} must be an ISO 8601 date-time, not {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key:
        raise ApiError(400, "bad_request", "the Idempotency-Key header is empty")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ApiError(400, "bad_request", f"the Idempotency-Key header is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return key


# -- records as JSON ------------------------------------------------------------------


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 6)


def run_json(run: RunRecord, *, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "flow_id": run.flow_id,
        "status": run.status,
        "trigger": run.trigger_key,
        "idempotency_key": run.idempotency_key,
        "manifest_id": run.manifest_id,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "deadline": run.deadline,
        "duration_seconds": _seconds(run.created_at, run.finished_at),
    }
    if detail:
        out["trigger_body"] = run.trigger_body
        out["trigger_headers"] = run.trigger_headers
    return out


def attempt_json(a: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "generation": a.generation,
        "status": a.status,
        "owner": a.owner,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "duration_seconds": _seconds(a.started_at, a.finished_at),
        "error": a.error,
    }


def step_json(s: StepRecord, attempts: list[AttemptRecord]) -> dict[str, Any]:
    return {
        "step_key": s.step_key,
        "status": s.status,
        "inputs": s.inputs,
        "output": s.output,
        "error": s.error,
        "trace": s.trace,
        "attempt_count": s.attempts,
        "attempts": [attempt_json(a) for a in attempts],
        "generation": s.generation,
        "queued": s.queued,
        "waiting_signal": s.waiting_signal,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "duration_seconds": _seconds(s.started_at, s.finished_at),
        "not_before": s.not_before,
        "owner": s.owner,
        "lease_until": s.lease_until,
    }


def event_json(e: EventRecord) -> dict[str, Any]:
    return {"event_id": e.event_id, "run_id": e.run_id, "step_key": e.step_key, "kind": e.kind, "data": e.data, "at": e.at}


def schedule_json(s: Schedule) -> dict[str, Any]:
    return {
        "flow_id": s.flow_id,
        "trigger": s.trigger,
        "expression": s.expression,
        "timezone": s.timezone,
        "paused": s.paused,
        "overridden": s.overridden,
        "next_fires": list(s.next_fires),
    }
