"""``create_app``: the dashboard, the API and the webhook receiver as one Starlette app to mount (default ``/flows``)."""

from __future__ import annotations

import http
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Router

from ..exceptions import (
    ConfigurationError,
    FlowDisabledError,
    InvalidOperationError,
    StoreError,
    UnknownFlowError,
    UnknownRunError,
    UnknownStepError,
)
from ..orchestrator import Orchestrator
from ._http import ApiError, error_response
from .api import api_routes
from .auth import AuthGuard, AuthHook, BearerAuth, NoAuth, SameOriginWrites
from .dashboard import dashboard_routes, signin_page, signin_routes
from .events import EventFeed
from .webhooks import DEFAULT_MAX_BODY_SIZE, webhook_routes

__all__ = ["create_app"]

log = logging.getLogger("floworchestrator.web")


def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = http.HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", str(exc))


def _disabled(request: Request, exc: Exception) -> Response:
    return error_response(409, "flow_disabled", str(exc))


def _conflict(request: Request, exc: Exception) -> Response:
    return error_response(409, "conflict", str(exc))


def _unavailable(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreError):
        log.error("API request %s %s: the store failed: %s", request.method, request.url.path, exc, extra={"event": "web.store_failed"})
        return error_response(503, "unavailable", "the store is unavailable; try again later")
    return error_response(503, "unavailable", str(exc))


def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "the server failed to handle the request")


def create_app(
    orchestrator: Orchestrator,
    *,
    auth: AuthHook | None = None,
    manage_lifespan: bool = False,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    trusted_origins: Iterable[str] = (),
) -> Starlette:
    """The dashboard's Starlette app: the page at ``/`` (assets under ``/static``), the JSON API under ``/api``
    and the webhook receiver at ``/api/webhook/{slug}``.

    ``auth`` must be given: :class:`~floworchestrator.web.BasicAuth`,
    :class:`~floworchestrator.web.BearerAuth`, a callable ``(request) -> bool``
    (or an awaitable bool) for the host application's own check, or
    :class:`~floworchestrator.web.NoAuth` to turn authentication off
    explicitly. Every route but the webhook receiver (which checks each
    webhook's own secret) then answers 401 without valid credentials — the
    page too, with a ``WWW-Authenticate`` challenge for Basic so the browser
    asks for a password. With ``BearerAuth`` a page request without the
    token gets a sign-in form (``/signin``), which keeps a valid token in an
    HttpOnly, SameSite=Strict cookie accepted in place of the header, so the
    page and its event stream work in a browser.

    Mount it anywhere (``host.mount("/flows", create_app(orch, auth=...))``).
    It does not start the orchestrator unless ``manage_lifespan=True``: by
    default the host owns it, and the API answers 503 until it is started
    (Starlette runs the lifespan of the app it serves, not of mounted ones,
    so ``manage_lifespan=True`` is for serving this app on its own).
    ``max_body_size`` limits request bodies (trigger bodies, signal payloads,
    webhook deliveries).

    Writes (POST, PUT) that a browser sends from another site's page are
    refused with 403, whatever the authentication (a browser attaches Basic
    credentials and cookies to them on its own); ``trusted_origins`` lists
    origins (``"https://admin.example.com"``) that may write all the same. The
    webhook receiver is exempt: other sites are its callers.
    """
    if auth is None:
        raise ConfigurationError(
            "create_app needs auth=: BasicAuth(username, password), BearerAuth(tokens), a callable "
            "(request) -> bool for your own check, or NoAuth() to turn authentication off explicitly"
        )
    if not callable(auth):
        raise ConfigurationError(f"auth must be NoAuth(), BasicAuth, BearerAuth or a callable (request) -> bool, not {auth!r}")

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

    feed = EventFeed()
    api = Router(routes=api_routes(orchestrator, max_body_size=max_body_size, feed=feed))
    guarded = SameOriginWrites(api if isinstance(auth, NoAuth) else AuthGuard(api, auth), trusted_origins)
    pages = Router(routes=dashboard_routes())
    # Bearer: a page request without the token (or its sign-in cookie) gets the sign-in form.
    guarded_pages = pages if isinstance(auth, NoAuth) else AuthGuard(pages, auth, signin_page if isinstance(auth, BearerAuth) else None)
    signin = signin_routes(auth, trusted_origins) if isinstance(auth, BearerAuth) else []
    app = Starlette(
        # The receiver comes first and outside the guard: senders prove themselves with the webhook's secret.
        routes=[*webhook_routes(orchestrator, path="/api/webhook/{slug}", max_body_size=max_body_size), Mount("/api", app=guarded),
                *signin, Mount("", app=guarded_pages)],
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            UnknownFlowError: _not_found,
            UnknownRunError: _not_found,
            UnknownStepError: _not_found,
            FlowDisabledError: _disabled,
            InvalidOperationError: _conflict,
            ConfigurationError: _unavailable,
            StoreError: _unavailable,
            Exception: _internal_error,
        },
    )
    app.state.orchestrator = orchestrator
    app.state.floworchestrator_event_feed = feed
    app.state.floworchestrator_auth = auth
    return app
