"""The webhook receiver end to end: Starlette's TestClient against a real orchestrator on every store.

The app starts the orchestrator in its lifespan (``manage_lifespan=True``),
so it runs in the TestClient's event loop thread; the tests reach it there
through ``client.portal`` to wait for runs and read the store.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

from floworchestrator import Flow, Manual, Orchestrator, RunStatus, Step, StepContext, StepStatus, Webhook
from floworchestrator.stores.base import RunRecord
from floworchestrator.web import DROPPED_HEADERS, WebhookTarget, create_webhook_app, find_webhook, webhook_routes
from floworchestrator.web.webhooks import trigger_headers

from ..conftest import store_url

SECRET = "s3cret-value"
INTL_SECRET = "sécrèt-ünïcode"
T = TypeVar("T")


def make_orchestrator(store_kind: str, tmp_path: Path) -> Orchestrator:
    orch = Orchestrator(store=store_url(store_kind, tmp_path), runtime="inprocess", cron=False)

    @orch.handler("Echo")
    async def echo(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return inputs

    orch.register(
        Flow(
            id="orders",
            triggers={"manual": Manual(), "github": Webhook("orders-hook", secret=SECRET)},
            steps={"echo": Step("Echo", inputs={"order": "@triggerBody()?.orderId", "source": "@triggerHeaders()['X-Source']"})},
        ),
        Flow(id="open", triggers={"hook": Webhook("open-hook")}, steps={"echo": Step("Echo", inputs={"body": "@triggerBody()"})}),
        Flow(id="intl", triggers={"hook": Webhook("intl-hook", secret=INTL_SECRET)}, steps={"echo": Step("Echo", inputs={})}),
        Flow(id="off", enabled=False, triggers={"hook": Webhook("off-hook")}, steps={"echo": Step("Echo", inputs={})}),
    )
    return orch


@pytest.fixture
def orch(store_kind: str, tmp_path: Path) -> Orchestrator:
    return make_orchestrator(store_kind, tmp_path)


@pytest.fixture
def client(orch: Orchestrator) -> Iterator[TestClient]:
    with TestClient(create_webhook_app(orch, manage_lifespan=True)) as c:
        yield c


def call(client: TestClient, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` (sync or async) in the client's event loop, where the orchestrator lives."""
    assert client.portal is not None
    return client.portal.call(functools.partial(fn, *args, **kwargs))


def wait(client: TestClient, orch: Orchestrator, run_id: str) -> RunRecord:
    run = call(client, orch.wait, run_id, 10)
    assert isinstance(run, RunRecord)
    return run


def runs_of(client: TestClient, orch: Orchestrator, flow_id: str) -> list[RunRecord]:
    runs: list[RunRecord] = call(client, orch.list_runs, flow_id=flow_id)
    return runs


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secret_header(secret: str = SECRET) -> dict[str, str]:
    return {"X-Webhook-Secret": secret}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    data: dict[str, Any] = response.json()
    assert data["error"] == code
    assert isinstance(data["detail"], str) and data["detail"]
    return data


# -- accepted -------------------------------------------------------------------------------


def test_post_starts_a_run_with_the_body_and_the_safe_headers(client: TestClient, orch: Orchestrator) -> None:
    body = {"orderId": "A-17", "items": [1, 2]}
    response = client.post(
        "/webhook/orders-hook",
        json=body,
        headers={
            **secret_header(),
            "X-Source": "shop",
            "Authorization": "Bearer token",
            "Cookie": "session=abc",
            "X-Api-Key": "key",
            "User-Agent": "tests/1.0",
        },
    )
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["flow_id"] == "orders" and data["created"] is True
    run = wait(client, orch, data["run_id"])
    assert run.status is RunStatus.SUCCEEDED
    assert run.trigger_key == "github"
    assert run.trigger_body == body
    headers = run.trigger_headers
    assert headers["x-source"] == "shop"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "tests/1.0"
    for dropped in ("authorization", "cookie", "x-api-key", "x-webhook-secret", "host", "content-length", "connection"):
        assert dropped not in headers
    assert not any(SECRET in v for v in headers.values())
    steps = call(client, orch.get_steps, data["run_id"])
    assert steps[0].status is StepStatus.SUCCEEDED
    assert steps[0].output == {"order": "A-17", "source": "shop"}


def test_an_empty_body_is_a_null_trigger_body(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/webhook/open-hook")
    assert response.status_code == 202, response.text
    run = wait(client, orch, response.json()["run_id"])
    assert run.trigger_body is None
    assert run.status is RunStatus.SUCCEEDED


def test_a_json_body_is_accepted_whatever_its_content_type(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/webhook/open-hook", content=b'{"a": [1, "@x"]}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text
    run = wait(client, orch, response.json()["run_id"])
    assert run.trigger_body == {"a": [1, "@x"]}


def test_repeated_headers_are_joined(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/webhook/open-hook", json={}, headers=[("X-Tag", "a"), ("X-Tag", "b")])
    assert response.status_code == 202, response.text
    run = wait(client, orch, response.json()["run_id"])
    assert run.trigger_headers["x-tag"] == "a, b"


def test_the_same_idempotency_key_returns_the_same_run(client: TestClient, orch: Orchestrator) -> None:
    first = client.post("/webhook/open-hook", json={"n": 1}, headers={"Idempotency-Key": "delivery-1"})
    assert first.status_code == 202, first.text
    assert first.json()["created"] is True
    again = client.post("/webhook/open-hook", json={"n": 2}, headers={"Idempotency-Key": "delivery-1"})
    assert again.status_code == 200, again.text
    assert again.json() == {"run_id": first.json()["run_id"], "flow_id": "open", "created": False}
    other = client.post("/webhook/open-hook", json={"n": 3}, headers={"Idempotency-Key": "delivery-2"})
    assert other.status_code == 202
    assert other.json()["run_id"] != first.json()["run_id"]
    runs = runs_of(client, orch, "open")
    assert len(runs) == 2
    run = wait(client, orch, first.json()["run_id"])
    assert run.idempotency_key == "delivery-1"
    assert run.trigger_body == {"n": 1}


def test_an_empty_idempotency_key_is_a_bad_request(client: TestClient, orch: Orchestrator) -> None:
    assert_error(client.post("/webhook/open-hook", json={}, headers={"Idempotency-Key": " "}), 400, "bad_request")
    assert_error(client.post("/webhook/open-hook", json={}, headers={"Idempotency-Key": "k" * 256}), 400, "bad_request")
    assert runs_of(client, orch, "open") == []


# -- secrets and signatures --------------------------------------------------------------------


def test_a_wrong_secret_is_unauthorized(client: TestClient, orch: Orchestrator) -> None:
    data = assert_error(
        client.post("/webhook/orders-hook", json={"orderId": "A"}, headers={"X-Webhook-Secret": "guess"}), 401, "unauthorized"
    )
    assert "guess" not in data["detail"] and "s3cret" not in data["detail"]
    assert runs_of(client, orch, "orders") == []


def test_a_missing_secret_is_unauthorized(client: TestClient, orch: Orchestrator) -> None:
    data = assert_error(client.post("/webhook/orders-hook", json={"orderId": "A"}), 401, "unauthorized")
    assert "X-Webhook-Secret" in data["detail"]
    assert runs_of(client, orch, "orders") == []


def test_a_non_ascii_secret_is_compared_as_utf8_bytes(client: TestClient, orch: Orchestrator) -> None:
    good = client.post("/webhook/intl-hook", content=b"{}", headers=[(b"X-Webhook-Secret", INTL_SECRET.encode())])
    assert good.status_code == 202, good.text
    bad = client.post("/webhook/intl-hook", content=b"{}", headers=[(b"X-Webhook-Secret", "sécrèt".encode())])
    assert_error(bad, 401, "unauthorized")
    raw = b'{"n": 1}'
    signed = client.post("/webhook/intl-hook", content=raw, headers={"X-Signature-256": sign(raw, INTL_SECRET)})
    assert signed.status_code == 202, signed.text
    assert len(runs_of(client, orch, "intl")) == 2


def test_a_valid_hmac_signature_is_accepted(client: TestClient, orch: Orchestrator) -> None:
    raw = json.dumps({"orderId": "B-2"}).encode()
    response = client.post(
        "/webhook/orders-hook",
        content=raw,
        headers={"Content-Type": "application/json", "X-Signature-256": sign(raw), "X-Source": "github"},
    )
    assert response.status_code == 202, response.text
    run = wait(client, orch, response.json()["run_id"])
    assert run.status is RunStatus.SUCCEEDED
    assert run.trigger_body == {"orderId": "B-2"}
    assert "x-signature-256" not in run.trigger_headers


def test_githubs_signature_header_is_accepted_too(client: TestClient, orch: Orchestrator) -> None:
    raw = b'{"orderId": "C-3"}'
    response = client.post("/webhook/orders-hook", content=raw, headers={"X-Hub-Signature-256": sign(raw), "X-Source": "gh"})
    assert response.status_code == 202, response.text
    assert "x-hub-signature-256" not in wait(client, orch, response.json()["run_id"]).trigger_headers


@pytest.mark.parametrize(
    "signature",
    [
        sign(b'{"orderId": "other"}'),  # signs another body
        sign(b'{"orderId": "D-4"}', secret="wrong"),  # signed with another secret
        sign(b'{"orderId": "D-4"}').removeprefix("sha256="),  # no scheme
        "sha1=" + hmac.new(SECRET.encode(), b'{"orderId": "D-4"}', hashlib.sha1).hexdigest(),
        "",
    ],
)
def test_a_wrong_hmac_signature_is_unauthorized(client: TestClient, orch: Orchestrator, signature: str) -> None:
    raw = b'{"orderId": "D-4"}'
    assert_error(client.post("/webhook/orders-hook", content=raw, headers={"X-Signature-256": signature}), 401, "unauthorized")
    assert runs_of(client, orch, "orders") == []


def test_the_signature_is_checked_before_the_body_is_parsed(client: TestClient, orch: Orchestrator) -> None:
    assert_error(client.post("/webhook/orders-hook", content=b"{not json"), 401, "unauthorized")
    raw = b"{not json"
    assert_error(client.post("/webhook/orders-hook", content=raw, headers={"X-Signature-256": sign(raw)}), 400, "bad_request")


# -- refused -----------------------------------------------------------------------------------


def test_an_unknown_slug_is_not_found(client: TestClient) -> None:
    response = client.post("/webhook/nope", json={})
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no webhook 'nope'"}


def test_a_disabled_flow_is_a_conflict_and_starts_nothing(client: TestClient, orch: Orchestrator) -> None:
    data = assert_error(client.post("/webhook/off-hook", json={}, headers={"Idempotency-Key": "k1"}), 409, "flow_disabled")
    assert "off" in data["detail"]
    assert "run_id" not in data
    assert runs_of(client, orch, "off") == []


def test_a_flow_disabled_while_running_is_a_conflict(client: TestClient, orch: Orchestrator) -> None:
    first = client.post("/webhook/open-hook", json={}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    wait(client, orch, first.json()["run_id"])
    call(client, orch.set_enabled, "open", False)
    assert_error(client.post("/webhook/open-hook", json={}), 409, "flow_disabled")
    assert_error(client.post("/webhook/open-hook", json={}, headers={"Idempotency-Key": "k1"}), 409, "flow_disabled")
    assert len(runs_of(client, orch, "open")) == 1
    call(client, orch.set_enabled, "open", True)
    assert client.post("/webhook/open-hook", json={}).status_code == 202


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"orderId": ', "application/json"),
        (b"[1, 2,]", "application/json"),
        (b'{"x": NaN}', "application/json"),
        (b"\xff\xfe\xfa", "application/json"),
        (b"a=1&b=2", "application/x-www-form-urlencoded"),
        (b"hello", "text/plain"),
        (b"[" * 100_000, "application/json"),
    ],
)
def test_a_body_that_is_not_json_is_a_bad_request(client: TestClient, orch: Orchestrator, content: bytes, content_type: str) -> None:
    response = client.post("/webhook/open-hook", content=content, headers={"Content-Type": content_type})
    data = assert_error(response, 400, "bad_request")
    assert data["detail"].startswith("the body is not valid JSON")
    assert runs_of(client, orch, "open") == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_not_allowed(client: TestClient, method: str) -> None:
    response = client.request(method, "/webhook/open-hook")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_an_unknown_path_is_a_json_404(client: TestClient) -> None:
    assert_error(client.get("/elsewhere"), 404, "not_found")


def test_a_body_over_the_limit_is_refused(orch: Orchestrator) -> None:
    with TestClient(create_webhook_app(orch, manage_lifespan=True, max_body_size=16)) as client:
        assert_error(client.post("/webhook/open-hook", json={"text": "x" * 64}), 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is checked while reading
            yield b'{"text": "'
            yield b"x" * 64
            yield b'"}'

        assert_error(client.post("/webhook/open-hook", content=chunks()), 413, "payload_too_large")
        assert client.post("/webhook/open-hook", json={"n": 1}).status_code == 202
        assert len(runs_of(client, orch, "open")) == 1


# -- lifecycle and mounting --------------------------------------------------------------------


def test_by_default_the_app_does_not_start_the_orchestrator(orch: Orchestrator) -> None:
    app = create_webhook_app(orch)
    assert app.state.orchestrator is orch
    with TestClient(app) as client:
        data = assert_error(client.post("/webhook/open-hook", json={}), 503, "unavailable")
        assert "not started" in data["detail"]
        assert_error(client.post("/webhook/nope", json={}), 404, "not_found")


def test_routes_mount_in_a_host_app_that_owns_the_orchestrator(orch: Orchestrator) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with orch:
            yield

    host = Starlette(routes=[Mount("/api", routes=webhook_routes(orch))], lifespan=lifespan)
    with TestClient(host) as client:
        response = client.post("/api/webhook/open-hook", json={"via": "host"})
        assert response.status_code == 202, response.text
        assert wait(client, orch, response.json()["run_id"]).trigger_body == {"via": "host"}
        # The host app has no JSON error handlers; the receiver answers 405 itself.
        assert_error(client.get("/api/webhook/open-hook"), 405, "method_not_allowed")


def test_flows_registered_later_are_served(client: TestClient, orch: Orchestrator) -> None:
    assert_error(client.post("/webhook/late-hook", json={}), 404, "not_found")

    def register() -> None:
        orch.register(Flow(id="late", triggers={"hook": Webhook("late-hook")}, steps={"echo": Step("Echo", inputs={})}))

    call(client, register)
    # A live registration saves the flow in a background task; until it lands the store
    # answers as for a disabled flow, so wait for it.
    for _ in range(200):
        if any(f.flow_id == "late" for f in call(client, orch.list_flows)):
            break
        time.sleep(0.01)
    else:
        pytest.fail("the late flow was never saved")
    response = client.post("/webhook/late-hook", json={})
    assert response.status_code == 202, response.text
    assert wait(client, orch, response.json()["run_id"]).status is RunStatus.SUCCEEDED


# -- pieces ------------------------------------------------------------------------------------


def test_find_webhook_resolves_slugs_without_showing_the_secret(orch: Orchestrator) -> None:
    target = find_webhook(orch, "orders-hook")
    assert target == WebhookTarget("orders", "github", SECRET)
    assert SECRET not in repr(target)
    assert find_webhook(orch, "nope") is None


def test_webhook_routes_need_a_slug_in_the_path(orch: Orchestrator) -> None:
    with pytest.raises(ValueError, match="slug"):
        webhook_routes(orch, path="/hooks")


def test_credential_and_transport_headers_are_dropped() -> None:
    for name in ("authorization", "cookie", "x-api-key", "x-webhook-secret", "x-signature-256", "host", "content-length"):
        assert name in DROPPED_HEADERS
    assert "content-type" not in DROPPED_HEADERS


@pytest.mark.parametrize("name", [
    "Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key", "X-Goog-Api-Key", "X-Amz-Security-Token",
    "X-Access-Token", "X-Session-Token", "X-Session-Id", "X-CSRF-Token", "X-XSRF-TOKEN", "X-Upstream-Secret",
    "X-Password", "X-Client-Credentials", "X-Auth-User", "X-Hub-Signature-256",
])
def test_credential_like_headers_are_never_stored(name: str) -> None:
    from floworchestrator.engine import is_credential_header

    assert is_credential_header(name)
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [(name.lower().encode(), b"s3cret"),
                                                                                   (b"x-order", b"A-17")]})
    assert trigger_headers(request.headers) == {"x-order": "A-17"}


@pytest.mark.parametrize("name", ["Content-Type", "User-Agent", "X-Order", "X-Request-Id", "Accept", "X-Forwarded-For"])
def test_ordinary_headers_are_kept(name: str) -> None:
    from floworchestrator.engine import is_credential_header

    assert not is_credential_header(name)


def test_accepted_webhook_logs_at_info_without_breaking(caplog: pytest.LogCaptureFixture) -> None:
    # A reserved LogRecord attribute name in `extra` would turn an accepted request into a 500.
    import logging

    from starlette.testclient import TestClient

    from floworchestrator import Flow, Orchestrator, Step, Webhook
    from floworchestrator.web import create_webhook_app

    orch = Orchestrator(store="memory://", runtime="inprocess", cron=False)
    orch.add_handler("Echo", lambda inputs: inputs)
    orch.register(Flow("f", {"s": Step("Echo")}, triggers={"in": Webhook("logged")}))
    with caplog.at_level(logging.INFO, logger="floworchestrator"), TestClient(create_webhook_app(orch, manage_lifespan=True)) as client:
        resp = client.post("/webhook/logged", json={"a": 1})
    assert resp.status_code == 202
    assert any(getattr(r, "event", None) == "webhook.accepted" for r in caplog.records)
