"""The dashboard in a real browser: navigation, triggering, live updates, retry, signals, escaping, auth.

Every test drives the page as a user does (clicks, typing) and waits for what
the page shows; nothing reloads the page once it is open, so the updates seen
come from the live stream (or its polling fallback).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from playwright.sync_api import expect

from floworchestrator import RunStatus
from floworchestrator.web import BasicAuth, BearerAuth

from .conftest import LONG_KEYS, XSS, Server, screenshot, serve

RUN_URL = re.compile(r"#/runs/(?P<id>[0-9a-f-]{20,})$")


def run_id_of(page: Any) -> str:
    m = RUN_URL.search(page.url)
    assert m, page.url
    return m.group("id")


def step_row(page: Any, key: str) -> Any:
    return page.locator(f'.steps-table tr[data-step="{key}"]')


def test_overview_flows_and_runs_views(server: Server, page: Any) -> None:
    for body in ({"orderId": "A-17"}, {"orderId": "Z-99"}):
        server.call(server.orch.run("orders", body, timeout=20))
    page.goto(server.url)
    expect(page.locator(".live")).to_have_text(re.compile("live|polling"))
    expect(page.locator(".card").first).to_contain_text("2")
    expect(page.locator(".card-Failed")).to_contain_text("1")
    expect(page.locator("svg.chart rect.fill")).not_to_have_count(0)
    screenshot(page, "01-overview")

    page.get_by_role("link", name="Flows", exact=True).click()
    expect(page.locator('tr[data-flow="features"]')).to_contain_text("WaitForSignal" if False else "features")
    screenshot(page, "02-flows")
    # Disable and enable a flow from the list; the store follows.
    toggle = page.locator('tr[data-flow="heartbeat"] input[type="checkbox"]')
    toggle.uncheck()
    expect(page.locator('tr[data-flow="heartbeat"] .toggle')).to_contain_text("disabled")
    assert server.call(server.orch.store.list_flows()) and not next(
        f for f in server.call(server.orch.store.list_flows()) if f.flow_id == "heartbeat").enabled
    toggle.check()
    expect(page.locator('tr[data-flow="heartbeat"] .toggle')).to_contain_text("enabled")

    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.locator(".runs-table tbody tr")).to_have_count(2)
    page.locator('select[name="status"]').select_option("Failed")
    expect(page.locator(".runs-table tbody tr")).to_have_count(1)
    expect(page.locator(".runs-table tbody tr")).to_contain_text("Failed")
    assert "status=Failed" in page.url
    screenshot(page, "03-runs-filtered")


def test_trigger_from_the_flow_page_and_watch_it_finish_live(server: Server, page: Any) -> None:
    page.goto(server.url + "#/flows/orders")
    expect(page.locator("svg.dag .node")).to_have_count(3)
    editor = page.get_by_label("trigger body (JSON)")
    # Invalid JSON is caught in the page, before anything is sent.
    editor.fill('{"orderId": ')
    expect(page.locator(".trigger-form")).to_contain_text("Not valid JSON")
    expect(page.get_by_role("button", name="Trigger")).to_be_disabled()
    editor.fill(json.dumps({"orderId": "A-17"}))
    screenshot(page, "04-flow-orders")
    page.get_by_role("button", name="Trigger").click()
    page.wait_for_url(RUN_URL)
    run_id = run_id_of(page)
    # No reload from here on: the status changes because the page is told (stream) or polls.
    expect(page.locator(".run-header .badge").first).to_have_text("Succeeded", timeout=20_000)
    expect(step_row(page, "store")).to_contain_text("Succeeded")
    expect(page.locator('svg.dag .node.st-Succeeded')).to_have_count(3)
    run = server.call(server.orch.get_run(run_id))
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.trigger_body == {"orderId": "A-17"}
    screenshot(page, "05-run-succeeded")
    for tab in ("Timeline", "Gantt"):
        page.get_by_role("tab", name=tab).click()
        screenshot(page, f"06-run-{tab.lower()}")
    expect(page.locator(".gantt-row")).to_have_count(3)
    page.get_by_role("tab", name="Timeline").click()
    expect(page.locator(".timeline .event").first).to_contain_text("RunStarted")
    expect(page.locator('.timeline .event[data-kind="RunSucceeded"]')).to_have_count(1)


def test_trigger_error_from_the_api_is_shown(server: Server, page: Any) -> None:
    server.call(server.orch.set_enabled("orders", False))
    page.goto(server.url + "#/flows/orders")
    page.get_by_role("button", name="Trigger").click()
    expect(page.locator(".trigger-form .notice-error")).to_contain_text("409")
    expect(page.locator(".trigger-form .notice-error")).to_contain_text("disabled")
    assert "#/flows/orders" in page.url


def test_retry_a_failed_step(server: Server, page: Any) -> None:
    run_id = server.call(server.orch.trigger("flaky", None))
    run = server.call(server.orch.wait(run_id, timeout=20))
    assert run.status is RunStatus.FAILED
    page.goto(server.url + f"#/runs/{run_id}")
    expect(page.locator(".run-header .badge").first).to_have_text("Failed")
    page.locator('svg.dag .node[data-step="call"]').click()
    panel = page.locator(".step-panel")
    expect(panel).to_contain_text("the partner is down")
    expect(step_row(page, "after")).to_contain_text("Skipped")
    screenshot(page, "07-run-failed")
    step_row(page, "after").click()  # skipped because its predecessor failed: the panel says so
    expect(panel.locator(".why-skipped")).to_contain_text("call")
    expect(panel.locator(".why-skipped")).to_contain_text("Failed not accepted")
    expect(panel.get_by_role("button", name="Retry")).to_have_count(0)  # Skipped is not retried on its own
    page.locator('svg.dag .node[data-step="call"]').click()
    server.switches.flaky_ok = True
    panel.get_by_role("button", name="Retry").click()
    expect(page.locator(".run-header .badge").first).to_have_text("Succeeded", timeout=20_000)
    expect(step_row(page, "call")).to_contain_text("Succeeded")
    expect(step_row(page, "after")).to_contain_text("Succeeded")
    expect(panel.locator(".step-output")).to_contain_text('"ok": true')
    assert server.switches.calls["flaky"] == 2
    screenshot(page, "08-run-retried")


def test_step_output_with_html_is_shown_as_text(server: Server, page: Any) -> None:
    run_id = server.call(server.orch.run("xss", {"note": XSS}, timeout=20)).run_id
    page.goto(server.url + "#/flows/xss")
    expect(page.locator("main")).to_contain_text(XSS)  # the description
    page.goto(server.url + f"#/runs/{run_id}")
    page.locator('svg.dag .node[data-step="render"]').click()
    output = page.locator(".step-panel .step-output")
    as_json = json.dumps(XSS)  # JSON blocks show the string with its quotes escaped
    expect(output).to_contain_text(as_json)
    expect(page.locator(".run-header")).to_contain_text(as_json)  # the trigger body
    page.get_by_role("tab", name="Timeline").click()
    screenshot(page, "09-escaped-output")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, main script").count() == 0


def test_approve_a_step_waiting_for_a_signal(server: Server, page: Any) -> None:
    page.goto(server.url + "#/flows/features")
    page.get_by_label("trigger body (JSON)").fill(json.dumps({"amount": 30, "items": [{"sku": "mug", "qty": 4}]}))
    page.get_by_role("button", name="Trigger").click()
    page.wait_for_url(RUN_URL)
    run_id = run_id_of(page)
    form = page.locator('.waiting[data-step="approval"]')
    expect(form).to_be_visible(timeout=20_000)
    expect(step_row(page, "approval")).to_contain_text("waiting for approval")
    expect(page.locator('svg.dag .node[data-step="approval"]')).to_have_class(re.compile("st-Waiting"))
    form.get_by_label("payload of signal approval").fill(json.dumps({"by": "alice", "comment": "ok <b>ship</b>"}))
    screenshot(page, "10-waiting-for-signal")
    form.get_by_role("button", name="Approve").click()
    expect(page.locator(".run-header .badge").first).to_have_text("Succeeded", timeout=20_000)
    expect(form).to_have_count(0)
    page.locator('.steps-table tr[data-step="release"]').click()
    expect(page.locator(".step-panel .step-output")).to_contain_text('"approved_by": "alice"')
    steps = {s.step_key: s for s in server.call(server.orch.get_steps(run_id))}
    assert steps["approval"].output == {"approved": True, "by": "alice", "comment": "ok <b>ship</b>"}
    screenshot(page, "11-approved")


def test_the_approve_button_wins_over_the_editors_approved(server: Server, page: Any) -> None:
    run_id = server.call(server.orch.trigger("features", {"amount": 5, "items": []}))
    page.goto(server.url + f"#/runs/{run_id}")
    form = page.locator('.waiting[data-step="approval"]')
    expect(form).to_be_visible(timeout=20_000)
    form.get_by_label("payload of signal approval").fill(json.dumps({"by": "bob", "approved": False}))
    form.get_by_role("button", name="Approve").click()
    expect(form).to_have_count(0, timeout=20_000)
    steps = {s.step_key: s for s in server.call(server.orch.get_steps(run_id))}
    assert steps["approval"].output == {"approved": True, "by": "bob"}


def test_cancel_and_rerun(server: Server, page: Any) -> None:
    run_id = server.call(server.orch.trigger("features", {"amount": 5, "items": []}))
    page.goto(server.url + f"#/runs/{run_id}")
    expect(page.locator('.waiting[data-step="approval"]')).to_be_visible(timeout=20_000)
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".run-header .badge").first).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    page.get_by_role("button", name="Re-run").click()
    page.wait_for_url(lambda url: RUN_URL.search(url) is not None and run_id not in url)
    new_id = run_id_of(page)
    rerun = server.call(server.orch.get_run(new_id))
    assert rerun is not None and rerun.trigger_body == {"amount": 5, "items": []}


def test_basic_auth_guards_the_page_and_the_browser_logs_in(browser: Any, tmp_path: Any) -> None:
    for srv in serve(tmp_path, BasicAuth("admin", "s3cret")):
        anonymous = browser.new_context()
        response = anonymous.request.get(srv.url)
        assert response.status == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        anonymous.close()
        context = browser.new_context(http_credentials={"username": "admin", "password": "s3cret"})
        page = context.new_page()
        page.goto(srv.url + "#/flows")
        expect(page.locator('tr[data-flow="orders"]')).to_be_visible()
        expect(page.locator(".live")).to_have_text("live", timeout=10_000)
        screenshot(page, "12-basic-auth")
        context.close()


def test_bearer_token_sign_in_then_the_page_streams(browser: Any, tmp_path: Any) -> None:
    for srv in serve(tmp_path, BearerAuth("t0ken")):
        context = browser.new_context()
        page = context.new_page()
        response = page.goto(srv.url + "#/flows")
        assert response is not None and response.status == 401  # the page itself refuses: a sign-in form
        page.get_by_label("Access token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not valid")
        page.get_by_label("Access token").fill("t0ken")
        page.get_by_role("button", name="Sign in").click()
        page.goto(srv.url + "#/flows")
        expect(page.locator('tr[data-flow="orders"]')).to_be_visible()
        expect(page.locator(".live")).to_have_text("live")  # the cookie authenticates the event stream too
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["floworchestrator_token"]["httpOnly"] and cookies["floworchestrator_token"]["sameSite"] == "Strict"
        run_id = srv.call(srv.orch.trigger("orders", {"orderId": "A-17"}))
        page.goto(srv.url + f"#/runs/{run_id}")
        expect(page.locator(".run-header .badge").first).to_have_text("Succeeded")
        screenshot(page, "13-bearer-token")
        context.clear_cookies()
        page.reload()
        expect(page.get_by_label("Access token")).to_be_visible()
        context.close()


def test_the_runs_list_follows_the_event_stream(server: Server, page: Any) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "#/runs")
    expect(page.locator(".live")).to_have_text("live")
    expect(page.locator(".muted", has_text="No run matches.")).to_be_visible()
    before = sum("/api/runs?" in url for url in requests)
    run_id = server.call(server.orch.trigger("orders", {"orderId": "A-17"}))
    expect(page.locator(f'.runs-table tr[data-run="{run_id}"]')).to_contain_text("Succeeded")
    assert page.locator(".live").get_attribute("data-mode") == "live"
    page.wait_for_timeout(2500)  # a polling page would have asked again by now; a streaming one asked once per burst
    assert sum("/api/runs?" in url for url in requests) - before <= 3


def test_without_the_event_stream_the_page_polls(server: Server, page: Any) -> None:
    page.route("**/api/events/stream*", lambda route: route.fulfill(status=503, content_type="application/json", body="{}"))
    page.goto(server.url + "#/runs")
    expect(page.locator(".live")).to_have_text("polling")
    expect(page.locator(".runs-table")).to_have_count(0)
    run_id = server.call(server.orch.trigger("orders", {"orderId": "A-17"}))
    row = page.locator(f'.runs-table tr[data-run="{run_id}"]')
    expect(row).to_contain_text("Succeeded", timeout=10_000)  # without a reload: polled


def test_views_degrade_when_endpoints_are_missing(server: Server, page: Any) -> None:
    missing = json.dumps({"error": "not_found", "detail": "no such endpoint"})
    for pattern in ("**/api/runs/stats*", "**/api/runs/active*"):
        page.route(pattern, lambda route: route.fulfill(status=404, content_type="application/json", body=missing))
    run_id = server.call(server.orch.trigger("features", {"amount": 1, "items": []}))
    page.goto(server.url)
    expect(page.locator("main")).to_contain_text("Run counts are unavailable (404: no such endpoint)")
    expect(page.locator("main")).to_contain_text("The runs-over-time chart is unavailable (404: no such endpoint)")
    expect(page.locator("main")).to_contain_text("Active runs")
    # the active runs come from GET /api/runs?status=Running instead
    expect(page.locator(f'main a[href="#/runs/{run_id}"]')).to_be_visible()
    screenshot(page, "14-overview-degraded")
    page.route("**/api/flows/orders", lambda route: route.fulfill(status=500, content_type="application/json", body=missing))
    page.route("**/api/schedules*", lambda route: route.fulfill(status=500, content_type="application/json", body=missing))
    page.goto(server.url + "#/flows/orders")
    expect(page.locator("main")).to_contain_text("This flow is unavailable (500: no such endpoint)")
    expect(page.locator("main")).to_contain_text("Schedules are unavailable (500: no such endpoint)")
    page.goto(server.url + "#/runs/no-such-run")
    expect(page.locator(".run-header")).to_contain_text("No such run.")
    page.goto(server.url + "#/nowhere")
    expect(page.locator("main h1")).to_have_text("Not found")


def test_cron_schedule_pause_edit_and_copy_mermaid(server: Server, page: Any) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(server.url + "#/flows/heartbeat")
    row = page.locator('tr[data-trigger="every_minute"]')
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused")
    row.get_by_label("cron expression of every_minute").fill("*/5 * * * *")
    row.get_by_role("button", name="Save").click()
    expect(row.get_by_role("button", name="Reset")).to_be_visible()
    (sched,) = server.call(server.orch.list_schedules())
    assert sched.paused and sched.overridden and sched.expression == "*/5 * * * *"
    row.get_by_label("cron expression of every_minute").fill("not a cron")
    row.get_by_role("button", name="Save").click()
    expect(row.locator(".error-text")).to_contain_text("invalid cron expression")
    row.get_by_role("button", name="Resume").click()
    expect(row).to_contain_text("active")
    screenshot(page, "15-flow-heartbeat-schedules")
    page.get_by_role("button", name="Copy Mermaid").click()
    expect(page.locator("main")).to_contain_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()").startswith("flowchart TD")


def test_runs_search_and_paging(server: Server, page: Any) -> None:
    for i in range(30):
        server.call(server.orch.trigger("heartbeat", {"scheduled_at": f"tick-{i}"}))
    server.call(server.orch.trigger("orders", {"orderId": "needle-42"}))
    page.goto(server.url + "#/runs")
    expect(page.locator(".pager")).to_contain_text("1\N{EN DASH}25 of 31")
    page.get_by_role("button", name=re.compile("^Older")).click()
    expect(page.locator(".pager")).to_contain_text("26\N{EN DASH}31 of 31")
    expect(page.locator(".runs-table tbody tr")).to_have_count(6)
    page.get_by_label("search").fill("needle-42")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".runs-table tbody tr")).to_have_count(1)
    expect(page.locator(".runs-table tbody tr")).to_contain_text("orders")
    assert "search=needle-42" in page.url and "offset" not in page.url
    screenshot(page, "16-runs-search")


def test_the_page_stays_live_across_the_streams_planned_reconnects(server: Server, page: Any, monkeypatch: Any) -> None:
    from floworchestrator.web import events

    monkeypatch.setattr(events, "LIFETIME", 1.0)  # every stream ends after a second; the browser reconnects
    modes: list[str] = []
    page.expose_function("recordMode", lambda mode: modes.append(mode))
    page.goto(server.url + "#/runs")
    expect(page.locator(".live")).to_have_text("live")
    page.evaluate("""() => new MutationObserver(() => window.recordMode(document.querySelector('.live').dataset.mode))
        .observe(document.querySelector('.live'), {attributes: true})""")
    page.wait_for_timeout(3500)  # three reconnects or so
    run_id = server.call(server.orch.trigger("orders", {"orderId": "A-17"}))
    expect(page.locator(f'.runs-table tr[data-run="{run_id}"]')).to_contain_text("Succeeded")
    assert "polling" not in modes, modes  # a planned end is not a failure
    assert page.locator(".live").get_attribute("data-mode") == "live"


def node_overflow(page: Any, settle: float = 3.0) -> list[str]:
    """The DAG's node labels wider than their box, as "key: label" — once the graph has settled (a live refresh
    redraws it, and labels are cut to fit just after drawing): asked again for up to ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        found = _node_overflow(page)
        if not found or time.monotonic() > deadline:
            return found
        page.wait_for_timeout(100)


def _node_overflow(page: Any) -> list[str]:
    return list(page.evaluate("""() => [...document.querySelectorAll('svg.dag .node')].flatMap((node) => {
        const box = node.querySelector('rect').getBBox();
        return [...node.querySelectorAll('text')].filter((t) => t.getBBox().x + t.getBBox().width > box.width - 4)
            .map((t) => `${node.dataset.step}: ${t.textContent}`);
    })"""))


def test_long_step_keys_are_cut_to_their_box_with_the_full_key_in_the_tooltip(server: Server, page: Any) -> None:
    page.goto(server.url + "#/flows/longnames")
    for key in LONG_KEYS:
        node = page.locator(f'svg.dag .node[data-step="{key}"]')
        expect(node.locator("text.node-key")).to_have_text(re.compile("…$"))
        assert node.locator("title").text_content().startswith(key)  # the tooltip
    assert node_overflow(page) == []
    run_id = server.call(server.orch.run("longnames", None, timeout=20)).run_id
    page.goto(server.url + f"#/runs/{run_id}")
    expect(page.locator(".run-header .badge").first).to_have_text("Succeeded")
    expect(page.locator(f'svg.dag .node[data-step="{LONG_KEYS[0]}"] text.node-key')).to_have_text(re.compile("^W+…$"))
    assert node_overflow(page) == []
    screenshot(page, "17-long-step-keys")


def test_a_narrow_window_scrolls_the_dag_not_the_page(server: Server, page: Any) -> None:
    page.set_viewport_size({"width": 420, "height": 900})
    run_id = server.call(server.orch.trigger("features", {"amount": 5, "items": []}))
    for url in ("#/flows/features", f"#/runs/{run_id}"):
        page.goto(server.url + url)
        if url.startswith("#/runs/"):
            expect(page.locator(".run-header")).to_contain_text(run_id)  # the run's page, not the flow's still
        expect(page.locator("svg.dag .node")).to_have_count(8)
        # The graph is wider than the window: its box scrolls to every node (waited for: the page may still be
        # redrawing the graph from the run's own manifest).
        page.wait_for_function("""() => { const w = document.querySelector('.dag-wrap');
            return w && w.scrollWidth > w.clientWidth && getComputedStyle(w).overflowX === 'auto'; }""", timeout=5000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 420, url  # nothing sticks out of the page
        # Scrolled to the end, the last node is inside the box (scroll and measure in one go: a live refresh of
        # the running run may redraw the graph in between).
        page.wait_for_function("""() => { const w = document.querySelector('.dag-wrap');
            w.scrollLeft = w.scrollWidth;
            const right = Math.max(...[...w.querySelectorAll('.node rect')].map((r) => r.getBoundingClientRect().right));
            return right <= w.getBoundingClientRect().right + 1; }""", timeout=5000)
    screenshot(page, "18-narrow-run")


def test_the_page_has_a_favicon(server: Server, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    failed: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and failed.append(msg.text))
    page.goto(server.url)
    expect(page.locator(".live")).to_have_text("live")
    href = page.locator('link[rel="icon"]').get_attribute("href")
    assert href == "static/favicon.svg"
    icon = page.evaluate("async (href) => { const r = await fetch(href); return [r.status, r.headers.get('content-type')]; }", href)
    assert icon == [200, "image/svg+xml"]
    page.wait_for_timeout(300)  # the browser asks for the icon once the page has loaded
    assert failed == []  # a missing /favicon.ico shows as "Failed to load resource" (404)
    context.close()
