"""The dashboard in a real browser: navigation, triggering, live updates, retry, signals, escaping, auth.

Every test drives the page as a user does (clicks, typing) and waits for what
the page shows; nothing reloads the page once it is open, so the updates seen
come from the live stream (or its polling fallback).
"""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import expect

from floworchestrator import RunStatus
from floworchestrator.web import BasicAuth

from .conftest import XSS, Server, screenshot, serve

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
