"""The single-page dashboard: ``GET /`` (the page) and ``/static/...`` (its scripts and styles).

The files live in ``static/`` beside this module and ship in the wheel. They
are plain ES modules, HTML and CSS — no third-party code, no build step. The
page talks to the JSON API with relative URLs (``api/runs``, ...), so it
works under any mount path; a host mounting the app at ``/flows`` redirects
``/flows`` to ``/flows/`` (Starlette's ``redirect_slashes``) so that those
relative URLs resolve under the mount.

The page and its assets hold no data, yet they sit behind the same
authentication as the API — with one exception: with
:class:`~floworchestrator.web.BearerAuth` a browser cannot send the token on
a page load, so the shell is served to anyone and asks for the token, which
it then sends with every API request (the API stays guarded).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC_DIR", "dashboard_routes"]

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
