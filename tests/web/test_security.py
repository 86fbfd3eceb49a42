"""Cross-site writes: a browser attaches Basic credentials and cookies to requests other sites' pages make,
so every write to the API (and the bearer sign-in) must come from the dashboard's own origin."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from floworchestrator import Orchestrator
from floworchestrator.web import BasicAuth, BearerAuth, NoAuth, create_app
from floworchestrator.web.auth import AuthHook

from .test_api import make_orchestrator

BASIC = {"authorization": "Basic " + base64.b64encode(b"ann:pw").decode()}


def client(orch: Orchestrator, auth: AuthHook, **kwargs: object) -> TestClient:
    return TestClient(create_app(orch, auth=auth, manage_lifespan=True, **kwargs), base_url="http://dash.test")  # type: ignore[arg-type]


@pytest.fixture
def orch(tmp_path: Path) -> Orchestrator:
    return make_orchestrator("memory", tmp_path)


@pytest.fixture
def basic(orch: Orchestrator) -> Iterator[TestClient]:
    with client(orch, BasicAuth("ann", "pw")) as c:
        yield c


CROSS = [
    {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
    {"sec-fetch-site": "same-site", "origin": "http://other.dash.test"},  # another port or subdomain: another origin
    {"sec-fetch-site": "cross-site"},
    {"origin": "https://evil.example"},  # an older browser: no Sec-Fetch-Site, but an Origin
    {"origin": "null"},  # a sandboxed frame or a data: page
]


@pytest.mark.parametrize("headers", CROSS)
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/flows/orders/disable"),
    ("POST", "/api/flows/orders/trigger"),
    ("PUT", "/api/schedules/orders/nightly/cron"),
])
def test_writes_from_another_site_are_refused_even_with_credentials(
    basic: TestClient, orch: Orchestrator, method: str, path: str, headers: dict[str, str]
) -> None:
    r = basic.request(method, path, headers={**BASIC, **headers, "content-type": "text/plain"}, content=b"{}")
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert orch.flows["orders"].enabled and basic.get("/api/runs", headers=BASIC).json()["total"] == 0  # nothing happened


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "same-origin", "origin": "http://dash.test"},  # the dashboard's own fetch
    {"sec-fetch-site": "none"},  # typed or bookmarked by the user
    {"origin": "http://dash.test"},  # an older browser on the dashboard's page
    {},  # curl, another server, a script: no ambient credentials to abuse
])
def test_writes_from_the_dashboard_itself_or_from_non_browsers_pass(basic: TestClient, headers: dict[str, str]) -> None:
    r = basic.post("/api/flows/orders/trigger", headers={**BASIC, **headers}, json={"orderId": "A-1", "amount": 1})
    assert r.status_code == 202, r.text


def test_the_auth_check_still_applies_to_same_origin_writes(basic: TestClient) -> None:
    assert basic.post("/api/flows/orders/disable", headers={"sec-fetch-site": "same-origin"}).status_code == 401


def test_reads_from_another_site_are_left_to_auth_and_cors(basic: TestClient) -> None:
    assert basic.get("/api/flows", headers={**BASIC, "sec-fetch-site": "cross-site"}).status_code == 200


def test_trusted_origins_may_write(orch: Orchestrator) -> None:
    with client(orch, NoAuth(), trusted_origins=["https://Admin.Example.com/"]) as c:
        ok = {"sec-fetch-site": "cross-site", "origin": "https://admin.example.com"}
        assert c.post("/api/flows/orders/disable", headers=ok).status_code == 200
        bad = {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}
        assert c.post("/api/flows/orders/enable", headers=bad).status_code == 403


def test_no_auth_dashboards_are_protected_too(orch: Orchestrator) -> None:
    """A demo on 127.0.0.1 without a login must not be driven by a page on the internet."""
    with client(orch, NoAuth()) as c:
        assert c.post("/api/flows/orders/disable", headers={"sec-fetch-site": "cross-site"}).status_code == 403


def test_the_webhook_receiver_takes_deliveries_from_anywhere(basic: TestClient) -> None:
    r = basic.post("/api/webhook/orders-hook", headers={"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
                   json={"orderId": "A-1", "amount": 1})
    assert r.status_code == 202, r.text  # the demo's webhook has no secret: only the flow decides


def test_bearer_sign_in_and_out_only_from_the_dashboard(orch: Orchestrator) -> None:
    with client(orch, BearerAuth("tok")) as c:
        form = {"content-type": "application/x-www-form-urlencoded"}
        cross = {**form, "sec-fetch-site": "cross-site", "origin": "https://evil.example"}
        assert c.post("/signin", content=b"token=tok", headers=cross, follow_redirects=False).status_code == 403
        assert "floworchestrator_token" not in c.cookies  # login CSRF: no cookie planted
        ok = c.post("/signin", content=b"token=tok", headers={**form, "sec-fetch-site": "same-origin"}, follow_redirects=False)
        assert ok.status_code == 303
        assert c.post("/signout", headers={"sec-fetch-site": "cross-site"}, follow_redirects=False).status_code == 403
        assert c.get("/api/flows").status_code == 200  # still signed in
        assert c.get("/signin").status_code == 401 and c.request("PUT", "/signin").status_code in (404, 405)


def test_api_answers_are_not_cached_or_sniffed(basic: TestClient) -> None:
    for r in (basic.get("/api/flows", headers=BASIC), basic.get("/api/runs/nope", headers=BASIC)):
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_openapi_description_names_the_mount_as_its_server(orch: Orchestrator) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    host = Starlette(routes=[Mount("/flows", app=create_app(orch, auth=NoAuth()))])
    with TestClient(host) as c:
        assert c.get("/flows/api/openapi.json").json()["servers"] == [{"url": "/flows"}]
    with TestClient(create_app(orch, auth=NoAuth())) as c:
        assert c.get("/api/openapi.json").json()["servers"] == [{"url": "/"}]
