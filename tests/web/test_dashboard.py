"""Serving the dashboard: the page, its assets, the auth guard, the redirect to the mount's slash, and the
commands that serve it (``demo --keep``, ``serve``)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from floworchestrator import Orchestrator
from floworchestrator.web import BasicAuth, BearerAuth, NoAuth, create_app
from floworchestrator.web.auth import AuthHook
from floworchestrator.web.dashboard import STATIC_DIR

ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "api.js": "text/javascript",
    "views/run.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


def client_for(auth: AuthHook, mount: str = "/flows") -> TestClient:
    orch = Orchestrator(store="memory://", runtime="inprocess")
    app = create_app(orch, auth=auth)
    host = Starlette(routes=[Mount(mount, app=app)]) if mount else app
    return TestClient(host, follow_redirects=False)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with client_for(NoAuth()) as c:
        yield c


def test_the_page_is_served_at_the_mount(client: TestClient) -> None:
    r = client.get("/flows/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="static/app.js">' in r.text  # relative: works under any mount
    assert '<link rel="icon" href="static/favicon.svg" type="image/svg+xml">' in r.text  # no request for a missing /favicon.ico
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_without_the_slash_redirects_to_it(client: TestClient) -> None:
    r = client.get("/flows")
    assert r.status_code in (307, 308)
    assert r.headers["location"].endswith("/flows/")


@pytest.mark.parametrize(("path", "media_type"), ASSETS.items())
def test_assets_are_served_with_their_content_type(client: TestClient, path: str, media_type: str) -> None:
    r = client.get(f"/flows/static/{path}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == media_type
    assert r.content == (STATIC_DIR / path).read_bytes()
    assert r.headers["cache-control"] == "no-cache"
    etag = r.headers["etag"]
    assert client.get(f"/flows/static/{path}", headers={"if-none-match": etag}).status_code == 304


def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    """Walks the import statements from app.js: a module missing from the package would break the page."""
    seen: set[str] = set()
    todo = ["app.js"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        r = client.get(f"/flows/static/{path}")
        assert r.status_code == 200, path
        base = Path(path).parent
        for spec in re.findall(r'^import .* from "(\.[^"]+)";$', r.text, flags=re.M):
            todo.append((base / spec).as_posix().removeprefix("./") if not spec.startswith("../") else
                        (base.parent / spec.removeprefix("../")).as_posix())
    assert {"app.js", "api.js", "dom.js", "live.js", "graph.js", "charts.js", "views/run.js"} <= seen


def test_an_unknown_asset_is_404_and_no_path_escapes(client: TestClient) -> None:
    assert client.get("/flows/static/nope.js").status_code == 404
    assert client.get("/flows/static/../dashboard.py").status_code == 404
    assert client.get("/flows/static/%2e%2e/dashboard.py").status_code == 404


def test_works_served_at_the_root() -> None:
    with client_for(NoAuth(), mount="") as c:
        assert c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        api = c.get("/api/flows")  # the API, not the page (503: the orchestrator is not started here)
        assert api.status_code == 503 and api.json()["error"] == "unavailable"


def test_basic_auth_guards_the_page_and_asks_the_browser() -> None:
    with client_for(BasicAuth("admin", "pw")) as c:
        for path in ("/flows/", "/flows/static/app.js"):
            r = c.get(path)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith('Basic realm="floworchestrator"')
        good = "Basic " + base64.b64encode(b"admin:pw").decode()
        bad = "Basic " + base64.b64encode(b"admin:nope").decode()
        assert c.get("/flows/", headers={"authorization": bad}).status_code == 401
        assert c.get("/flows/", headers={"authorization": good}).status_code == 200
        assert c.get("/flows/static/app.js", headers={"authorization": good}).status_code == 200


def test_a_host_hook_guards_the_page() -> None:
    with client_for(lambda request: request.headers.get("x-user") == "ann") as c:
        assert c.get("/flows/").status_code == 401
        assert c.get("/flows/", headers={"x-user": "ann"}).status_code == 200


def test_with_bearer_auth_pages_need_the_token_and_a_sign_in_form_sets_a_cookie() -> None:
    """A browser cannot send a token on a page load: pages answer 401 with a sign-in form instead."""
    with client_for(BearerAuth("tok")) as c:
        for path in ("/flows/", "/flows/static/app.js"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"].startswith("text/html")
            assert 'action="/flows/signin"' in r.text and 'name="token"' in r.text
        r = c.get("/flows/api/flows")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert c.get("/flows/", headers={"authorization": "Bearer tok"}).status_code == 200
        assert c.get("/flows/api/flows", headers={"authorization": "Bearer tok"}).status_code in (200, 503)
        assert c.get("/flows/signin").status_code == 401  # the form itself

        bad = c.post("/flows/signin", content=b"token=nope", headers={"content-type": "application/x-www-form-urlencoded"},
                     follow_redirects=False)
        assert bad.status_code == 401 and "not valid" in bad.text and "floworchestrator_token" not in c.cookies
        assert c.post("/flows/signin", content=b"x" * 5000, follow_redirects=False).status_code == 401

        good = c.post("/flows/signin", content=b"token=tok", headers={"content-type": "application/x-www-form-urlencoded"},
                      follow_redirects=False)
        assert good.status_code == 303 and good.headers["location"] == "/flows/"
        cookie = good.headers["set-cookie"]
        assert "floworchestrator_token=tok" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/flows/" in cookie
        # The cookie stands in for the header: pages, assets and the API.
        assert c.get("/flows/").status_code == 200
        assert c.get("/flows/static/app.js").status_code == 200
        assert c.get("/flows/api/flows").status_code in (200, 503)

        out = c.post("/flows/signout", follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/flows/signin"
        assert c.get("/flows/").status_code == 401


def test_a_wrong_cookie_is_refused() -> None:
    with client_for(BearerAuth("tok")) as c:
        c.cookies.set("floworchestrator_token", "guess")
        assert c.get("/flows/").status_code == 401
        assert c.get("/flows/api/flows").status_code == 401


def test_unknown_paths_stay_json_404(client: TestClient) -> None:
    r = client.get("/flows/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


# -- the command line serves it -------------------------------------------------------------------


def _start(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    """Starts the installed script and reads stdout up to its "Dashboard: URL" line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWORCHESTRATOR_")} | (env_extra or {})
    exe = Path(sys.executable).parent / "floworchestrator"
    proc = subprocess.Popen([str(exe), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while not (lines and lines[-1].startswith("Dashboard: ")):
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no Dashboard line: {lines}, {proc.communicate()[1]}")
        lines.append(line.rstrip("\n"))
    return proc, lines


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return out


def test_demo_keep_serves_the_dashboard_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc, lines = _start(["demo", "--store", "memory://", "--keep", "--port", "0"], tmp_path)
    try:
        url = lines[-1].split()[1]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/flows/", url), lines[-1]
        assert "no login" in lines[-1]
        assert _get(url)[0] == 200
        status, body = _get(url + "api/runs")
        assert status == 200 and json.loads(body)["total"] >= 5  # the demo's runs (and a heartbeat if a minute began)
        assert proc.stdout is not None
        waiting = proc.stdout.readline().strip()  # one features run left for the user to approve or reject
        assert waiting.startswith(f"A features run waits for approval: {url}#/runs/"), waiting
        run_id = waiting.rsplit("/", 1)[1]
        for _ in range(100):
            steps = json.loads(_get(url + f"api/runs/{run_id}/steps")[1])["steps"]
            if any(s["step_key"] == "approval" and s.get("waiting_signal") == "approval" for s in steps):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the approval step never waited: {steps}")
        assert json.loads(_get(url + f"api/runs/{run_id}")[1])["status"] == "Running"
    finally:
        out = _stop(proc)
    assert out.rstrip().endswith("Stopped.")


def test_demo_without_keep_says_how_to_see_the_dashboard(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from floworchestrator.cli import main

    out = CliRunner().invoke(main, ["demo", "--store", "memory://"]).stdout
    assert "run the demo with --keep: it serves http://127.0.0.1:8000/flows/" in " ".join(out.split())


def test_serve_puts_the_dashboard_behind_basic_auth(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'serve.db'}"
    proc, lines = _start(["serve", "--app", "floworchestrator.demo:orchestrator", "--store", store, "--port", "0"], tmp_path)
    try:
        m = re.fullmatch(r"Dashboard: (\S+)  \(user 'admin', password (\S+) \(made up for this run.*\)\)", lines[-1])
        assert m, lines[-1]
        url, password = m.groups()
        status, _ = _get(url)
        assert status == 401
        assert _get(url, ("admin", password))[0] == 200
        assert _get(url + "api/flows", ("admin", password))[0] == 200
        assert _get(url + "api/flows", ("admin", "wrong"))[0] == 401
    finally:
        _stop(proc)


def test_serve_takes_the_app_as_its_argument(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'serve.db'}"
    args = ["serve", "floworchestrator.demo:orchestrator", "--store", store, "--port", "0", "--no-cron", "--no-auth"]  # no --app
    proc, lines = _start(args, tmp_path)
    try:
        assert lines[0].startswith("Serving floworchestrator.demo:orchestrator (4 flows)"), lines
        status, body = _get(lines[-1].split()[1] + "api/flows")
        assert status == 200 and len(json.loads(body)["flows"]) == 4
    finally:
        _stop(proc)


def test_serve_takes_the_password_from_the_environment_or_no_auth(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'serve.db'}"
    app = ["serve", "--app", "floworchestrator.demo:orchestrator", "--store", store, "--port", "0", "--no-cron"]
    proc, lines = _start(app, tmp_path, {"FLOWORCHESTRATOR_DASHBOARD_USER": "ops", "FLOWORCHESTRATOR_DASHBOARD_PASSWORD": "pw"})
    try:
        assert "user 'ops', password from FLOWORCHESTRATOR_DASHBOARD_PASSWORD" in lines[-1]
        assert "pw" not in lines[-1].replace("password", "")
        assert _get(lines[-1].split()[1], ("ops", "pw"))[0] == 200
    finally:
        _stop(proc)
    proc, lines = _start([*app, "--no-auth"], tmp_path)
    try:
        assert lines[-1].endswith("(no login (--no-auth))")
        assert _get(lines[-1].split()[1])[0] == 200
    finally:
        _stop(proc)


def test_bearer_valid_refuses_what_cannot_be_a_token() -> None:
    auth = BearerAuth(["tok", "other"])
    assert auth.valid("tok") and auth.valid("other")
    assert not auth.valid("tok€") and not auth.valid("") and not auth.valid("to")


def test_an_open_event_stream_does_not_hold_up_the_servers_shutdown(tmp_path: Path) -> None:
    import socket as socket_module

    proc, lines = _start(["demo", "--store", "memory://", "--serve", "--port", "0"], tmp_path)
    try:
        url = lines[-1].split()[1]
        port = int(url.split(":")[2].split("/")[0])
        stream = socket_module.create_connection(("127.0.0.1", port), timeout=10)
        stream.sendall(b"GET /flows/api/events/stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        assert stream.recv(4096).startswith(b"HTTP/1.1 200")  # the stream is open
        started = time.monotonic()
    finally:
        _stop(proc)  # exit code 0, no traceback
    took = time.monotonic() - started
    assert took < 5, f"shutting down took {took:.1f}s with a dashboard open"
    assert proc.stderr is not None
    stream.close()
