"""The OpenAPI 3.1 description of the API, built from :data:`~floworchestrator.web.api.ENDPOINTS`."""

from __future__ import annotations

import http
import re
from typing import Any

from .. import __version__
from .api import ENDPOINTS
from .auth import AuthHook, BasicAuth, BearerAuth, NoAuth

_ERROR = {"$ref": "#/components/responses/Error"}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _security(auth: AuthHook) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    if isinstance(auth, NoAuth):
        return {}, []
    if isinstance(auth, BasicAuth):
        return {"basic": {"type": "http", "scheme": "basic"}}, [{"basic": []}]
    if isinstance(auth, BearerAuth):
        return {"bearer": {"type": "http", "scheme": "bearer"}}, [{"bearer": []}]
    # The host's own check: its scheme is not ours to describe.
    return {"host": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "the host application's own check"}}, [
        {"host": []}
    ]


def openapi_document(auth: AuthHook, mount: str = "") -> dict[str, Any]:
    """The description; paths are relative to the app's mount point, which ``servers`` names (``/flows``)."""
    schemes, security = _security(auth)
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in re.findall(r"{(\w+)}", e.path)
        ]
        params += [{"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d} for n, t, d in e.query]
        params += [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}} for h in e.headers]
        responses: dict[str, Any] = {
            str(e.status): {"description": http.HTTPStatus(e.status).phrase,
                            "content": _JSON_OBJECT if e.media == "application/json" else {e.media: {"schema": {"type": "string"}}}}
        }
        if e.status == 202 and e.path.endswith(("/trigger", "/rerun")):
            responses["200"] = {"description": "the Idempotency-Key was seen before: the existing run, created false"}
        for code in (*e.errors, *((401,) if security else ())):
            responses[str(code)] = _ERROR
        op: dict[str, Any] = {"summary": e.summary, "operationId": e.func.__name__, "parameters": params, "responses": responses}
        if e.body is not None:
            op["requestBody"] = {"required": False, "description": e.body, "content": {"application/json": {"schema": {}}}}
        paths.setdefault("/api" + e.path, {})[e.method.lower()] = op
    paths["/api/webhook/{slug}"] = {
        "post": {
            "summary": "Start a run of the flow with this webhook slug (authenticated by the webhook's own secret)",
            "operationId": "webhook",
            "security": [],
            "parameters": [{"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}},
            "responses": {"202": {"description": "a run was started"}, "200": {"description": "idempotent repeat"},
                          **{str(c): _ERROR for c in (400, 401, 404, 409, 413, 503)}},
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "floworchestrator", "version": __version__},
        "servers": [{"url": mount.rstrip("/") or "/"}],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                }
            },
            "responses": {"Error": {"description": "an error", "content": _ERROR_CONTENT}},
            "securitySchemes": schemes,
        },
    }
    if security:
        doc["security"] = security
    return doc
