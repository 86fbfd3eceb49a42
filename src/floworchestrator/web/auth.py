"""Authentication of the dashboard API: who may read runs and start, cancel or retry them.

``create_app`` takes ``auth=`` and refuses to build an app without one: there
is no silent "open" default. Give one of

- :class:`BasicAuth` ``(username, password)`` — HTTP Basic;
- :class:`BearerAuth` ``(tokens)`` — ``Authorization: Bearer <token>``, any of several tokens;
- any callable ``(request) -> bool`` or ``(request) -> Awaitable[bool]`` — the host
  application's own check (a session cookie, an SSO header set by a proxy, ...);
  only a result that ``is True`` lets the request through;
- :class:`NoAuth` ``()`` — authentication off, said out loud.

Secrets are compared in constant time: both sides are hashed with SHA-256
first, so neither the content nor the length of a secret leaks through
timing, and every configured token is compared on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TOKEN_COOKIE", "AuthGuard", "AuthHook", "BasicAuth", "BearerAuth", "NoAuth", "SameOriginWrites"]

AuthHook = Callable[[Request], bool | Awaitable[bool]]
"""What ``create_app(auth=...)`` takes: True lets the request through."""


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


def _credentials(request: Request, scheme: str) -> str | None:
    """The credentials after ``Authorization: <scheme> ``, or None (the scheme is case-insensitive)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    given, _, rest = header.strip().partition(" ")
    if given.lower() != scheme.lower():
        return None
    return rest.strip() or None


class NoAuth:
    """Authentication off: every request is let through. Only for a host that protects the mount itself."""

    def __call__(self, request: Request) -> bool:
        return True

    def __repr__(self) -> str:
        return "NoAuth()"


class BasicAuth:
    """HTTP Basic authentication with one username and password."""

    def __init__(self, username: str, password: str, *, realm: str = "floworchestrator") -> None:
        if not username or not password:
            raise ValueError("BasicAuth needs a non-empty username and password")
        if ":" in username:
            raise ValueError("a Basic username cannot contain ':'")
        self._username = _digest(username)
        self._password = _digest(password)
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def __call__(self, request: Request) -> bool:
        encoded = _credentials(request, "Basic")
        if encoded is None:
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        username, sep, password = decoded.partition(b":")
        if not sep:
            return False
        # Both comparisons always run: which of the two was wrong does not show in the time taken.
        user_ok = hmac.compare_digest(_digest(username), self._username)
        password_ok = hmac.compare_digest(_digest(password), self._password)
        return user_ok & password_ok

    def __repr__(self) -> str:  # never show the credentials
        return "BasicAuth(...)"


TOKEN_COOKIE = "floworchestrator_token"
"""The cookie the dashboard's sign-in page sets to the bearer token (HttpOnly, SameSite=Strict)."""


class BearerAuth:
    """``Authorization: Bearer <token>`` where the token is one of ``tokens`` (a string or several).

    A browser cannot add that header to a page load or an ``EventSource``, so the
    dashboard has a sign-in page that checks the token and keeps it in an
    HttpOnly, ``SameSite=Strict`` cookie (never sent by other sites' pages); the
    cookie is accepted in place of the header.
    """

    challenge = 'Bearer realm="floworchestrator"'

    def __init__(self, tokens: str | Iterable[str]) -> None:
        listed = [tokens] if isinstance(tokens, str) else list(tokens)
        if not listed or not all(isinstance(t, str) and t for t in listed):
            raise ValueError("BearerAuth needs at least one non-empty token")
        self._tokens = [_digest(t) for t in listed]

    def __call__(self, request: Request) -> bool:
        token = _credentials(request, "Bearer") or request.cookies.get(TOKEN_COOKIE)
        return token is not None and self.valid(token)

    def valid(self, token: str) -> bool:
        """Whether ``token`` is one of the tokens (in constant time)."""
        try:
            given = _digest(token.encode("latin-1"))
        except UnicodeEncodeError:
            return False
        found = False
        for expected in self._tokens:  # no early exit: the time taken does not say which token matched
            found |= hmac.compare_digest(given, expected)
        return found

    def __repr__(self) -> str:
        return f"BearerAuth(<{len(self._tokens)} token(s)>)"


class AuthGuard:
    """ASGI middleware: answers 401 (JSON, or ``refusal(request)``) unless ``auth(request)`` is True."""

    def __init__(self, app: ASGIApp, auth: AuthHook, refusal: Callable[[Request], Response] | None = None) -> None:
        self.app = app
        self.auth = auth
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        verdict = self.auth(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is True:
            await self.app(scope, receive, send)
            return
        challenge: str | None = getattr(self.auth, "challenge", None)
        if self.refusal is not None:
            await self.refusal(request)(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "unauthorized", "detail": "missing or invalid credentials"},
            status_code=401,
            headers={"WWW-Authenticate": challenge} if challenge else None,
        )
        await response(scope, receive, send)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SameOriginWrites:
    """ASGI middleware: refuses (403) a write (POST, PUT, PATCH, DELETE) that a browser sent from another site.

    A browser attaches Basic credentials and cookies to requests that other
    sites' pages make (a form posted to the dashboard's API), so a write must
    show it comes from the dashboard itself: ``Sec-Fetch-Site`` (sent by every
    current browser) must be ``same-origin`` or ``none`` (typed by the user);
    without it, an ``Origin`` header must name this host. A request with
    neither — curl, another server, a script — carries no ambient browser
    credentials and is let through to the authentication check.
    ``trusted_origins`` (``"https://admin.example.com"``) may write from
    elsewhere, e.g. a host application's own pages on another origin.
    """

    def __init__(self, app: ASGIApp, trusted_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = frozenset(o.rstrip("/").lower() for o in trusted_origins)

    def allowed(self, headers: Headers) -> bool:
        origin = (headers.get("origin") or "").rstrip("/").lower()
        if origin and origin in self.trusted:
            return True
        site = headers.get("sec-fetch-site")
        if site is not None:
            return site.lower() in ("same-origin", "none")
        if not origin:
            return True
        host = (headers.get("host") or "").lower()
        return origin != "null" and bool(host) and urlsplit(origin).netloc == host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS and not self.allowed(Headers(scope=scope)):
            response = JSONResponse(
                {"error": "forbidden", "detail": "a write from another site's page is refused (Sec-Fetch-Site / Origin)"},
                status_code=403,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
