"""Browser tests of the dashboard: Playwright driving Debian's Chromium against a live server.

Each test gets a fresh orchestrator (the demo's flows plus three made for these
tests) on a SQLite file in its tmp_path, served by uvicorn in a background
thread, mounted at ``/flows`` in a host Starlette app the way a user mounts it.
``playwright install`` needs the internet, so the tests use the system's
Chromium (``/usr/bin/chromium``, or ``FLOWORCHESTRATOR_CHROMIUM``); without it
they fail, saying how to install it — they never skip.

Screenshots go to ``FLOWORCHESTRATOR_ARTIFACTS`` (default
``artifacts/browser/`` at the repository root), which is not committed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from floworchestrator import Flow, Orchestrator, Step, StepContext
from floworchestrator.demo import build
from floworchestrator.web import AuthHook, NoAuth, create_app

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("FLOWORCHESTRATOR_ARTIFACTS") or REPO / "artifacts" / "browser")
CHROMIUM = os.environ.get("FLOWORCHESTRATOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]

LONG_KEYS = ("W" * 48, "validate_incoming_purchase_order_against_the_partner_catalogue")
"""The ``longnames`` flow's step keys: wider than a DAG node, in any font."""

XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
"""What the ``xss`` flow's step outputs: the page must show it as text."""

_shots: list[Path] = []


@dataclass
class Switches:
    """Flags the test flows' handlers read, flipped by the tests."""

    flaky_ok: bool = False
    calls: dict[str, int] = field(default_factory=dict)


def _orchestrator(db: Path, switches: Switches) -> Orchestrator:
    orch = build(f"sqlite:///{db}", cron=False)

    async def flaky(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        switches.calls["flaky"] = switches.calls.get("flaky", 0) + 1
        if not switches.flaky_ok:
            raise ConnectionError("the partner is down (it comes back once the test flips the flag)")
        return {"ok": True, "attempt": ctx.attempt}

    async def hostile(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"html": XSS, "note": inputs.get("note")}

    orch.add_handler("Flaky", flaky)
    orch.add_handler("Hostile", hostile)
    orch.register(
        Flow(
            id="flaky",
            description="Fails until the partner comes back; retry it from the dashboard.",
            steps={
                "prepare": Step("Hostile", inputs={"note": "prepared"}),
                "call": Step("Flaky", run_after={"prepare": ["Succeeded"]}),
                "after": Step("Hostile", run_after={"call": ["Succeeded"]}, inputs={"note": "@steps('call').output.ok"}),
            },
        ),
        Flow(id="xss", description=XSS, steps={"render": Step("Hostile", inputs={"note": XSS})}),
        Flow(id="longnames", steps={
            LONG_KEYS[0]: Step("Hostile", inputs={"note": "long"}),
            LONG_KEYS[1]: Step("Hostile", run_after={LONG_KEYS[0]: ["Succeeded"]}, inputs={"note": "long"}),
        }),
    )
    return orch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running dashboard: ``url`` is the page (``http://127.0.0.1:PORT/flows/``)."""

    orch: Orchestrator
    switches: Switches
    origin: str
    url: str
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` in the server's event loop (where the orchestrator lives) and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)


def serve(tmp_path: Path, auth: AuthHook) -> Iterator[Server]:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    switches = Switches()
    orch = _orchestrator(tmp_path / "dashboard.db", switches)
    loops: list[asyncio.AbstractEventLoop] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loops.append(asyncio.get_running_loop())
        async with orch:  # the host owns the orchestrator; the dashboard is mounted with one line
            yield

    host = Starlette(routes=[Mount("/flows", app=create_app(orch, auth=auth))], lifespan=lifespan)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="dashboard-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.02)
    origin = f"http://127.0.0.1:{port}"
    try:
        yield Server(orch, switches, origin, f"{origin}/flows/", loops[0])
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path, NoAuth())


# Module scope, not session: while Playwright's sync API is running, asyncio.run() fails in this thread,
# which the tests collected after these (the CLI's, pytest-asyncio's) need.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium is not installed (looked for {CHROMIUM}): the browser tests need it. "
            "Install it with `apt-get install -y chromium` (scripts/test does), or point FLOWORCHESTRATOR_CHROMIUM at a Chromium binary.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install '.[test]'", pytrace=False)
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)  # generous for a loaded CI machine; a passing check returns at once
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(msg: Any) -> None:
        # An error answer of the API is logged by the browser as "Failed to load resource"; the page handles those.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    page.on("console", console)
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page logged errors: {errors}"


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # a full-page shot of a scrolled page draws the sticky bar mid-page
    page.screenshot(path=str(path), full_page=True)
    _shots.append(path)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _shots:
        terminalreporter.write_line(f"dashboard screenshots ({len(_shots)}) in {ARTIFACTS}")
