"""The single-page dashboard: ``GET /`` (the page) and ``/static/...`` (its scripts and styles).

The files live in ``static/`` beside this module and ship in the wheel. They
are plain ES modules, HTML and CSS — no third-party code, no build step. The
page talks to the JSON API with relative URLs (``api/runs``, ...), so it
works under any mount path; a host mounting the app at ``/flows`` redirects
``/flows`` to ``/flows/`` (Starlette's ``redirect_slashes``) so that those
relative URLs resolve under the mount.

The page and its assets sit behind the same authentication as the API. With
:class:`~floworchestrator.web.BearerAuth` a browser cannot send the token on a
page load or an event stream, so a request without it gets a sign-in form
(401); ``POST signin`` checks the token and keeps it in an HttpOnly,
``SameSite=Strict`` cookie that the guard accepts in place of the header, and
``POST signout`` clears it.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .auth import TOKEN_COOKIE, BearerAuth, SameOriginWrites

__all__ = ["STATIC_DIR", "dashboard_routes", "signin_page", "signin_routes"]

STATIC_DIR = Path(__file__).parent / "static"

# Not left to the platform's mimetypes table: some map .js to text/plain, and browsers refuse
# to run an ES module served so.
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

# Defence in depth against injection: only our own scripts and styles run, and nothing loads from elsewhere.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change with the package version: a browser revalidates (ETag) rather than run stale code.
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = _MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type is not None and response.status_code != 304:
            response.headers["content-type"] = media_type
        response.headers.update(_SECURITY_HEADERS)
        return response


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_SECURITY_HEADERS)


def dashboard_routes() -> list[BaseRoute]:
    """The page at ``/`` and its assets under ``/static``, relative to where the app is mounted."""
    return [
        Route("/", _index, methods=["GET", "HEAD"], name="dashboard"),
        Mount("/static", app=_Assets(directory=STATIC_DIR, check_dir=False), name="static"),
    ]


# -- bearer-token sign-in ---------------------------------------------------------------------------------

_SIGNIN_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_MAX_FORM = 4096


def _base(request: Request) -> str:
    """The app's mount path (``/flows``; empty at the root)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def signin_page(request: Request, message: str | None = None) -> Response:
    """The 401 answer to a page request without a valid token: a form that posts the token to ``signin``."""
    note = f'<p role="alert"><strong>{html.escape(message)}</strong></p>' if message else ""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>floworchestrator — sign in</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
        f"<main><h1>floworchestrator</h1><p>This dashboard needs an access token.</p>{note}"
        f'<form method="post" action="{html.escape(_base(request))}/signin">'
        '<label>Access token <input name="token" type="password" autocomplete="current-password" required autofocus></label> '
        "<button>Sign in</button></form></main></body></html>"
    )
    headers = {**_SIGNIN_HEADERS, "WWW-Authenticate": BearerAuth.challenge}
    return HTMLResponse(body, status_code=401, headers=headers)


def signin_routes(auth: BearerAuth, trusted_origins: Iterable[str] = ()) -> list[BaseRoute]:
    """``GET/POST /signin`` and ``POST /signout`` (outside the guard; their posts only from the dashboard's own pages)."""

    async def form(request: Request) -> Response:
        return signin_page(request)

    async def signin(request: Request) -> Response:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > _MAX_FORM:
                return signin_page(request, "The form is too large.")
        token = (parse_qs(raw.decode("latin-1")).get("token") or [""])[0].strip()
        if not token or not auth.valid(token):
            return signin_page(request, "That token is not valid.")
        response = RedirectResponse(f"{_base(request)}/", status_code=303, headers=_SIGNIN_HEADERS)
        response.set_cookie(TOKEN_COOKIE, token, path=f"{_base(request)}/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def signout(request: Request) -> Response:
        response = RedirectResponse(f"{_base(request)}/signin", status_code=303, headers=_SIGNIN_HEADERS)
        response.delete_cookie(TOKEN_COOKIE, path=f"{_base(request)}/", httponly=True, samesite="strict")
        return response

    return [
        Route("/signin", form, methods=["GET"], name="signin_form"),
        Route("/signin", SameOriginWrites(request_response(signin), trusted_origins), methods=["POST"], name="signin"),
        Route("/signout", SameOriginWrites(request_response(signout), trusted_origins), methods=["POST"], name="signout"),
    ]
