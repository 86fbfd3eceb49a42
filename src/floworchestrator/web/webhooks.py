"""The webhook receiver: ``POST /webhook/{slug}`` starts a run of the flow whose Webhook trigger has that slug.

Mount :func:`webhook_routes` into any Starlette app (the dashboard serves them
under ``/api``), or serve :func:`create_webhook_app` on its own.

A request is checked in this order, and every answer is JSON
(``{"error": code, "detail": text}`` for errors, never HTML):

=====  ======================  ==================================================
202    (none)                  a run was started: ``{"run_id", "flow_id", "created": true}``
200    (none)                  the ``Idempotency-Key`` was seen before for this flow:
                               the first run's id, ``"created": false``; nothing started
405    ``method_not_allowed``  not a POST (``Allow: POST``)
404    ``not_found``           no registered flow has a Webhook trigger with this slug
503    ``unavailable``         the orchestrator is not started, or the store failed
413    ``payload_too_large``   the body is larger than ``max_body_size`` bytes
401    ``unauthorized``        the webhook has a secret, and the request carries neither
                               ``X-Webhook-Secret: <secret>`` nor a valid
                               ``X-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``
                               (``X-Hub-Signature-256``, GitHub's name, is accepted too)
400    ``bad_request``         the body is not JSON, or the ``Idempotency-Key`` is empty
                               or longer than 255 characters
409    ``flow_disabled``       the flow is disabled; no run was started
409    ``conflict``            the engine refused the trigger (the flow was re-registered
                               without this trigger meanwhile)
=====  ======================  ==================================================

The body is parsed as JSON whatever the ``Content-Type`` says (senders often
label JSON ``text/plain``); an empty body is a ``null`` trigger body. The
secret is never echoed, logged or stored; both comparisons take constant time.

The request headers become the run's trigger headers, names lower-cased and
repeated headers joined with ``", "``, except :data:`DROPPED_HEADERS`:
credentials (:func:`~floworchestrator.engine.is_credential_header`: the
usual names and any name containing ``auth``, ``token``, ``secret``, ``key``,
``session``, ``cookie``, ``signature``..., plus the orchestrator's
``redact_headers``), the webhook secret and signature headers,
and transport headers (``Host``, ``Content-Length``, ``Connection`` and the
other hop-by-hop ones). Everything else is kept, ``Content-Type``,
``User-Agent`` and other ``X-...`` headers included.

The slug is looked up in ``orchestrator.flows`` on every request, so flows
registered after the app was built are served too.
"""

from __future__ import annotations

import hashlib
import hmac
import http
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from ..engine import CREDENTIAL_HEADERS, is_credential_header
from ..exceptions import FlowDisabledError, InvalidOperationError, StoreError, UnknownFlowError
from ..flow import Webhook
from ..orchestrator import Orchestrator

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PATH",
    "DROPPED_HEADERS",
    "WebhookReceiver",
    "WebhookTarget",
    "create_webhook_app",
    "find_webhook",
    "trigger_headers",
    "webhook_routes",
]

log = logging.getLogger("floworchestrator.web")

DEFAULT_PATH = "/webhook/{slug}"
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255

SECRET_HEADER = "x-webhook-secret"
SIGNATURE_HEADERS = ("x-signature-256", "x-hub-signature-256")
IDEMPOTENCY_HEADER = "idempotency-key"

_HOP_BY_HOP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"}
)
#: Request headers never copied into the trigger headers (lower-case names).
DROPPED_HEADERS = CREDENTIAL_HEADERS | {SECRET_HEADER, *SIGNATURE_HEADERS, "x-hub-signature"} | _HOP_BY_HOP


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What a slug resolves to: the flow, the name of its Webhook trigger, and the secret (if any)."""

    flow_id: str
    trigger: str
    secret: str | None

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookTarget(flow_id={self.flow_id!r}, trigger={self.trigger!r}, signed={self.secret is not None})"


def find_webhook(orchestrator: Orchestrator, slug: str) -> WebhookTarget | None:
    """The registered Webhook trigger with this slug, or None (slugs are unique across flows)."""
    for flow in orchestrator.flows.values():
        for name, trig in flow.triggers.items():
            if isinstance(trig, Webhook) and trig.slug == slug:
                return WebhookTarget(flow.id, name, trig.secret)
    return None


class _Reject(Exception):
    """An error answer, raised inside the receiver and turned into a JSON response."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers

    def response(self) -> Response:
        return _error(self.status, self.code, self.detail, self.headers)


def _error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class WebhookReceiver:
    """The ASGI endpoint behind ``POST {path}``; see the module docstring for what it answers.

    It is an ASGI app rather than a request function so that Starlette routes
    every method to it and the 405 is JSON whatever app it is mounted in.
    """

    def __init__(self, orchestrator: Orchestrator, *, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> None:
        if max_body_size < 0:
            raise ValueError("max_body_size must be >= 0")
        self.orchestrator = orchestrator
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.handle(request)
        except _Reject as rej:
            slug = request.path_params.get("slug")
            level = logging.WARNING if rej.status == 401 else logging.INFO
            log.log(
                level,
                "webhook %r rejected: %s %s",
                slug,
                rej.status,
                rej.code,
                extra={"event": "webhook.rejected", "slug": slug, "status": rej.status, "reason": rej.code},
            )
            response = rej.response()
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        """Answer one request; raises _Reject for every error answer."""
        if request.method != "POST":
            raise _Reject(405, "method_not_allowed", f"use POST, not {request.method}", {"Allow": "POST"})
        slug = str(request.path_params.get("slug", ""))
        target = find_webhook(self.orchestrator, slug)
        if target is None:
            raise _Reject(404, "not_found", f"no webhook {slug!r}")
        self._require_started()
        raw = await self._read_body(request)
        _authenticate(target, request.headers, raw)
        body = _parse_json(raw)
        key = _idempotency_key(request.headers)
        try:
            started = await self.orchestrator.engine.trigger(
                target.flow_id, body, headers=trigger_headers(request.headers), idempotency_key=key, trigger=target.trigger
            )
        except FlowDisabledError:
            raise _Reject(409, "flow_disabled", f"flow {target.flow_id!r} is disabled; no run was started") from None
        except UnknownFlowError:  # the flow went away between the lookup and the trigger
            raise _Reject(404, "not_found", f"no webhook {slug!r}") from None
        except InvalidOperationError as exc:
            raise _Reject(409, "conflict", str(exc)) from None
        except StoreError:
            log.exception("webhook %r: the store failed", slug, extra={"event": "webhook.store_failed", "slug": slug})
            raise _Reject(503, "unavailable", "the store is unavailable; try again later") from None
        assert started.run_id is not None  # only None when disabled, which raised above
        log.info(
            "webhook %r: run %s of flow %s (%s)",
            slug,
            started.run_id,
            target.flow_id,
            "new" if started.created else "existing",
            extra={
                "event": "webhook.accepted",
                "slug": slug,
                "flow_id": target.flow_id,
                "run_id": started.run_id,
                "run_created": started.created,
            },
        )
        return JSONResponse(
            {"run_id": started.run_id, "flow_id": target.flow_id, "created": started.created},
            status_code=202 if started.created else 200,
        )

    def _require_started(self) -> None:
        if not self.orchestrator.started:
            raise _Reject(503, "unavailable", "the orchestrator is not started")

    async def _read_body(self, request: Request) -> bytes:
        too_large = _Reject(413, "payload_too_large", f"the body is larger than {self.max_body_size} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _Reject(400, "bad_request", "Content-Length is not a number")
            if int(declared) > self.max_body_size:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_size:  # a chunked body has no Content-Length to check up front
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            raise _Reject(400, "bad_request", "the client disconnected before sending the whole body") from None
        return b"".join(chunks)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _authenticate(target: WebhookTarget, headers: Headers, raw: bytes) -> None:
    """Return if the request proves it knows the secret (or there is none); raise a 401 otherwise."""
    if target.secret is None:
        return
    secret = target.secret.encode()
    presented = False
    given = headers.get(SECRET_HEADER)
    if given is not None:
        presented = True
        # Header values arrive as latin-1 text; compare the raw bytes, hashed so that
        # the time taken does not depend on the secret's length either.
        if hmac.compare_digest(_digest(given.strip().encode("latin-1")), _digest(secret)):
            return
    expected: bytes | None = None
    for name in SIGNATURE_HEADERS:
        signature = headers.get(name)
        if signature is None:
            continue
        presented = True
        scheme, _, hexdigest = signature.strip().partition("=")
        if scheme.lower() != "sha256":
            continue
        if expected is None:
            expected = hmac.new(secret, raw, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(hexdigest.strip().lower().encode("latin-1", "replace"), expected):
            return
    if presented:
        raise _Reject(401, "unauthorized", "the webhook secret or signature does not match")
    raise _Reject(401, "unauthorized", "this webhook needs an X-Webhook-Secret header or an X-Signature-256 signature")


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Reject(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def _idempotency_key(headers: Headers) -> str | None:
    key = headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key:
        raise _Reject(400, "bad_request", "the Idempotency-Key header is empty")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise _Reject(400, "bad_request", f"the Idempotency-Key header is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return key


def trigger_headers(headers: Headers) -> dict[str, str]:
    """The request headers a run keeps: lower-case names, repeats joined with ``", "``, no DROPPED_HEADERS."""
    kept: dict[str, str] = {}
    for raw_name, raw_value in headers.raw:
        name = raw_name.decode("latin-1").lower()
        if name in DROPPED_HEADERS or is_credential_header(name):
            continue
        value = raw_value.decode("latin-1")
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


def webhook_routes(orchestrator: Orchestrator, *, path: str = DEFAULT_PATH, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> list[BaseRoute]:
    """The receiver's routes, to mount in another Starlette app (``path`` must contain ``{slug}``).

    They do not start the orchestrator: whoever owns it starts it (see
    ``create_webhook_app(..., manage_lifespan=True)`` for a standalone app).
    """
    if "{slug}" not in path:
        raise ValueError(f"the webhook path must contain '{{slug}}', got {path!r}")
    return [Route(path, WebhookReceiver(orchestrator, max_body_size=max_body_size), name="webhook")]


def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - only registered for HTTPException
        raise exc
    code = http.HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return _error(exc.status_code, code, str(exc.detail), exc.headers)


def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal_error", "the server failed to handle the request")


def create_webhook_app(
    orchestrator: Orchestrator,
    *,
    manage_lifespan: bool = False,
    path: str = DEFAULT_PATH,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> Starlette:
    """A Starlette app serving ``POST {path}`` (default ``/webhook/{slug}``) for ``orchestrator``.

    By default the host application owns the orchestrator and starts it
    (requests answer 503 until it does). ``manage_lifespan=True`` makes the
    app start the orchestrator on startup and stop it on shutdown, for
    standalone use. The orchestrator is kept on ``app.state.orchestrator``.
    Every error, unknown paths included, is answered in JSON.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not manage_lifespan:
            yield
            return
        await orchestrator.start()
        try:
            yield
        finally:
            await orchestrator.stop()

    app = Starlette(
        routes=webhook_routes(orchestrator, path=path, max_body_size=max_body_size),
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.orchestrator = orchestrator
    return app
