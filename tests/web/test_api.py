"""The REST API end to end: Starlette's TestClient against a real orchestrator on every store.

As in ``test_webhooks``, the app starts the orchestrator in its lifespan
(``manage_lifespan=True``) so it lives in the TestClient's event loop; the
tests reach it through ``client.portal``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

from floworchestrator import Cron, Flow, ForEach, Manual, Orchestrator, RunStatus, Step, StepContext, WaitForSignal, Webhook
from floworchestrator.exceptions import ConfigurationError, StoreUnavailableError
from floworchestrator.stores.base import RunRecord
from floworchestrator.web import BasicAuth, BearerAuth, NoAuth, create_app, to_mermaid
from floworchestrator.web.api import ENDPOINTS

from ..conftest import store_url


class ChargeIn(BaseModel):
    amount: float = 0.0
    fail: bool = False


def make_orchestrator(store_kind: str, tmp_path: Path) -> Orchestrator:
    return make_orchestrator_for_url(store_url(store_kind, tmp_path))


def make_orchestrator_for_url(url: str) -> Orchestrator:
    orch = Orchestrator(store=url, runtime="inprocess", cron=False)

    @orch.handler("Echo")
    async def echo(inputs: dict[str, Any], ctx: StepContext) -> Any:
        return inputs

    @orch.handler("Charge")
    def charge(inputs: ChargeIn, ctx: StepContext) -> dict[str, Any]:
        if inputs.fail:
            raise RuntimeError("card declined")
        return {"charged": inputs.amount}

    orch.register(
        Flow(
            id="orders",
            description="charge an order",
            triggers={"manual": Manual(), "nightly": Cron("0 2 * * *"), "hook": Webhook("orders-hook")},
            steps={
                "fetch": Step("Echo", inputs={"order": "@triggerBody()?.orderId"}),
                "charge": Step("Charge", run_after={"fetch": ["Succeeded"]},
                               inputs={"amount": "@triggerBody()?.amount", "fail": "@triggerBody()?.fail"}),
                "alert": Step("Echo", run_after={"charge": ["Failed"]}, inputs={"why": "@steps('charge').error"}),
            },
        ),
        Flow(id="off", enabled=False, steps={"echo": Step("Echo")}),
        Flow(
            id="approval",
            steps={
                "wait": WaitForSignal("approve"),
                "done": Step("Echo", run_after={"wait": ["Succeeded"]}, inputs={"by": "@steps('wait').output.by"}),
            },
        ),
        Flow(id="loop", steps={"each": ForEach([1, 2], {"echo": Step("Echo", inputs={"x": 1})})}),
    )
    return orch


@pytest.fixture
def orch(store_kind: str, tmp_path: Path) -> Orchestrator:
    return make_orchestrator(store_kind, tmp_path)


@pytest.fixture
def client(orch: Orchestrator) -> Iterator[TestClient]:
    with TestClient(create_app(orch, auth=NoAuth(), manage_lifespan=True), base_url="http://test") as c:
        yield c


def call(client: TestClient, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    assert client.portal is not None
    return client.portal.call(functools.partial(fn, *args, **kwargs))


def wait(client: TestClient, orch: Orchestrator, run_id: str) -> RunRecord:
    run = call(client, orch.wait, run_id, 10)
    assert isinstance(run, RunRecord)
    return run


def wait_for_step(client: TestClient, orch: Orchestrator, run_id: str, key: str, predicate: Callable[[Any], bool]) -> None:
    async def poll() -> None:
        for _ in range(500):
            steps = {s.step_key: s for s in await orch.get_steps(run_id)}
            if key in steps and predicate(steps[key]):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"step {key} never got there")

    call(client, poll)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    data: dict[str, Any] = response.json()
    assert data["error"] == code, data
    assert isinstance(data["detail"], str) and data["detail"]
    return data


def trigger(client: TestClient, flow_id: str = "orders", body: Any = None, **kwargs: Any) -> str:
    response = client.post(f"/api/flows/{flow_id}/trigger", json=body, **kwargs)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def failed_run(client: TestClient, orch: Orchestrator) -> str:
    run_id = trigger(client, body={"orderId": "A-1", "amount": 5, "fail": True})
    assert wait(client, orch, run_id).status is RunStatus.SUCCEEDED  # the failure is handled by "alert"
    return run_id


# -- flows ------------------------------------------------------------------------------------


def test_list_flows(client: TestClient) -> None:
    response = client.get("/api/flows")
    assert response.status_code == 200
    flows = {f["flow_id"]: f for f in response.json()["flows"]}
    assert list(flows) == ["approval", "loop", "off", "orders"]
    orders = flows["orders"]
    assert orders["enabled"] is True and orders["registered"] is True
    assert orders["description"] == "charge an order"
    assert orders["step_count"] == 3
    assert orders["triggers"]["nightly"] == {"kind": "cron", "expression": "0 2 * * *", "timezone": None}
    assert orders["triggers"]["hook"] == {"kind": "webhook", "slug": "orders-hook", "signed": False}
    assert flows["off"]["enabled"] is False


def test_get_flow_has_manifest_steps_and_mermaid(client: TestClient) -> None:
    data = client.get("/api/flows/orders").json()
    assert data["flow_id"] == "orders"
    assert set(data["steps"]) == {"fetch", "charge", "alert"}
    assert data["steps"]["charge"]["run_after"] == {"fetch": ["Succeeded"]}
    assert data["manifest"]["id"] == "orders"
    assert data["mermaid"].startswith("flowchart TD\n")
    assert '-->|"Failed"|' in data["mermaid"]


def test_every_name_registration_accepts_round_trips_through_the_api_paths() -> None:
    """Registration refuses '/' and dot segments; every other flow id, step key or cron name round-trips, percent-encoded."""
    from urllib.parse import quote

    orch = make_orchestrator_for_url("memory://")
    fid, key, cron = "Bestellungen über 100 € ?#%;", "prüfen & senden", "jeden Tag um 2 (100%)"
    orch.register(Flow(id=fid, triggers={cron: Cron("0 2 * * *")}, steps={key: Step("Echo", inputs={"x": 1})}))
    with TestClient(create_app(orch, auth=NoAuth(), manage_lifespan=True)) as client:
        f, c = quote(fid, safe=""), quote(cron, safe="")
        assert client.get(f"/api/flows/{f}").json()["flow_id"] == fid
        run_id = trigger(client, f)
        assert wait(client, orch, run_id).status is RunStatus.SUCCEEDED
        assert client.post(f"/api/runs/{run_id}/steps/{quote(key, safe='')}/retry").status_code == 409  # found; Succeeded
        assert client.post(f"/api/schedules/{f}/{c}/pause").json()["paused"] is True


def test_unknown_flow_is_404(client: TestClient) -> None:
    assert_error(client.get("/api/flows/nope"), 404, "not_found")
    assert_error(client.post("/api/flows/nope/trigger", json={}), 404, "not_found")
    assert_error(client.post("/api/flows/nope/enable"), 404, "not_found")
    assert_error(client.post("/api/flows/nope/disable"), 404, "not_found")


def test_trigger_starts_a_run(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/api/flows/orders/trigger", json={"orderId": "A-17", "amount": 12.5}, headers={"X-Source": "api"})
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["created"] is True
    run = wait(client, orch, data["run_id"])
    assert run.status is RunStatus.SUCCEEDED
    assert run.trigger_body == {"orderId": "A-17", "amount": 12.5}
    assert run.trigger_headers["x-source"] == "api"


def test_trigger_with_an_empty_body_is_a_null_body(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/api/flows/loop/trigger")
    assert response.status_code == 202, response.text
    assert wait(client, orch, response.json()["run_id"]).trigger_body is None


def test_trigger_idempotency_key(client: TestClient, orch: Orchestrator) -> None:
    first = client.post("/api/flows/orders/trigger", json={"amount": 1}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202 and first.json()["created"] is True
    again = client.post("/api/flows/orders/trigger", json={"amount": 2}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200
    assert again.json() == {"run_id": first.json()["run_id"], "created": False}
    assert_error(client.post("/api/flows/orders/trigger", json={}, headers={"Idempotency-Key": " "}), 400, "bad_request")
    assert_error(client.post("/api/flows/orders/trigger", json={}, headers={"Idempotency-Key": "k" * 256}), 400, "bad_request")


@pytest.mark.parametrize("content", [b'{"a": ', b"[1,]", b'{"x": NaN}', b"\xff\xfe", b"[" * 100_000, b"hello"])
def test_trigger_with_bad_json_is_400(client: TestClient, orch: Orchestrator, content: bytes) -> None:
    response = client.post("/api/flows/orders/trigger", content=content, headers={"Content-Type": "application/json"})
    assert assert_error(response, 400, "bad_request")["detail"].startswith("the body is not valid JSON")
    assert call(client, orch.list_runs) == []


def test_trigger_of_a_disabled_flow_is_409(client: TestClient, orch: Orchestrator) -> None:
    data = assert_error(client.post("/api/flows/off/trigger", json={}), 409, "flow_disabled")
    assert "run_id" not in data
    assert call(client, orch.list_runs, flow_id="off") == []


def test_enable_and_disable(client: TestClient) -> None:
    response = client.post("/api/flows/orders/disable")
    assert response.status_code == 200 and response.json() == {"flow_id": "orders", "enabled": False}
    assert client.get("/api/flows/orders").json()["enabled"] is False
    assert_error(client.post("/api/flows/orders/trigger", json={}), 409, "flow_disabled")
    assert client.post("/api/flows/orders/enable").json() == {"flow_id": "orders", "enabled": True}
    assert client.post("/api/flows/orders/trigger", json={}).status_code == 202


def test_a_body_over_the_limit_is_413(orch: Orchestrator) -> None:
    with TestClient(create_app(orch, auth=NoAuth(), manage_lifespan=True, max_body_size=16)) as client:
        assert_error(client.post("/api/flows/orders/trigger", json={"text": "x" * 64}), 413, "payload_too_large")


def test_handlers(client: TestClient) -> None:
    handlers = {h["type"]: h for h in client.get("/api/handlers").json()["handlers"]}
    assert set(handlers) == {"Echo", "Charge"}
    assert handlers["Echo"]["is_async"] is True
    assert handlers["Charge"]["is_async"] is False
    assert handlers["Charge"]["input_model"].endswith("ChargeIn")
    assert handlers["Charge"]["input_schema"]["properties"]["amount"]["type"] == "number"
    assert handlers["Charge"]["used_by"] == ["orders"]
    assert handlers["Echo"]["used_by"] == ["approval", "loop", "off", "orders"]


# -- runs -----------------------------------------------------------------------------------------


def test_list_runs_newest_first_with_filters_and_paging(client: TestClient, orch: Orchestrator) -> None:
    ids = [trigger(client, body={"amount": i}) for i in range(3)]
    for run_id in ids:
        wait(client, orch, run_id)
    loop_id = trigger(client, "loop")
    wait(client, orch, loop_id)
    data = client.get("/api/runs").json()
    assert data["total"] == 4 and data["offset"] == 0 and data["limit"] == 50
    listed = [r["run_id"] for r in data["runs"]]
    assert set(listed) == {*ids, loop_id}
    created = [r["created_at"] for r in data["runs"]]
    assert created == sorted(created, reverse=True)
    page = client.get("/api/runs", params={"flow_id": "orders", "limit": 2, "offset": 1}).json()
    assert page["total"] == 3 and len(page["runs"]) == 2
    assert all(r["flow_id"] == "orders" for r in page["runs"])
    assert client.get("/api/runs", params={"status": "succeeded"}).json()["total"] == 4
    assert client.get("/api/runs", params={"status": "Failed"}).json() == {"runs": [], "total": 0, "offset": 0, "limit": 50}


@pytest.mark.parametrize(
    "params",
    [{"limit": "abc"}, {"limit": "0"}, {"limit": "501"}, {"offset": "-1"}, {"offset": "1.5"}, {"status": "Bogus"}],
)
def test_bad_run_query_params_are_400(client: TestClient, params: dict[str, str]) -> None:
    assert_error(client.get("/api/runs", params=params), 400, "bad_request")


def test_get_run_has_trigger_body_and_headers(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, body={"orderId": "B"}, headers={"X-Tag": "t", "Authorization": "Bearer secret"})
    wait(client, orch, run_id)
    data = client.get(f"/api/runs/{run_id}").json()
    assert data["run_id"] == run_id and data["flow_id"] == "orders"
    assert data["status"] == "Succeeded" and data["trigger"] == "manual"
    assert data["trigger_body"] == {"orderId": "B"}
    assert data["trigger_headers"]["x-tag"] == "t"
    assert "authorization" not in data["trigger_headers"]
    assert data["finished_at"] is not None and data["duration_seconds"] >= 0


def test_unknown_run_is_404_everywhere(client: TestClient) -> None:
    for path in ("/api/runs/nope", "/api/runs/nope/steps", "/api/runs/nope/events"):
        assert_error(client.get(path), 404, "not_found")
    for path in ("/api/runs/nope/cancel", "/api/runs/nope/rerun", "/api/runs/nope/steps/fetch/retry", "/api/runs/nope/signals/go"):
        assert_error(client.post(path, json={}), 404, "not_found")


def test_steps_have_status_inputs_output_error_attempts_and_trace(client: TestClient, orch: Orchestrator) -> None:
    run_id = failed_run(client, orch)
    data = client.get(f"/api/runs/{run_id}/steps").json()
    steps = {s["step_key"]: s for s in data["steps"]}
    assert steps["fetch"]["status"] == "Succeeded"
    assert steps["fetch"]["output"] == {"order": "A-1"}
    assert steps["fetch"]["inputs"] == {"order": "A-1"}
    charge = steps["charge"]
    assert charge["status"] == "Failed"
    assert "card declined" in charge["error"]
    assert charge["attempt_count"] == 1
    [attempt] = charge["attempts"]
    assert attempt["status"] == "Failed" and "card declined" in attempt["error"]
    assert attempt["duration_seconds"] >= 0
    assert charge["started_at"] is not None and charge["finished_at"] is not None
    assert steps["alert"]["status"] == "Succeeded"
    assert "trace" in charge


def test_events(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, body={"amount": 1})
    wait(client, orch, run_id)
    events = client.get(f"/api/runs/{run_id}/events").json()["events"]
    assert events and all(e["run_id"] == run_id for e in events)
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids)
    later = client.get(f"/api/runs/{run_id}/events", params={"after": ids[0]}).json()["events"]
    assert [e["event_id"] for e in later] == ids[1:]
    assert len(client.get(f"/api/runs/{run_id}/events", params={"limit": 1}).json()["events"]) == 1
    assert_error(client.get(f"/api/runs/{run_id}/events", params={"after": "x"}), 400, "bad_request")


def test_cancel_a_running_run_then_cancel_again_is_409(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, "approval")
    wait_for_step(client, orch, run_id, "wait", lambda s: s.waiting_signal is not None)
    response = client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json() == {"run_id": run_id, "cancelled": True}
    assert wait(client, orch, run_id).status is RunStatus.CANCELLED
    assert "Cancelled" in assert_error(client.post(f"/api/runs/{run_id}/cancel"), 409, "conflict")["detail"]


def test_rerun(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, body={"orderId": "R", "amount": 3})
    wait(client, orch, run_id)
    response = client.post(f"/api/runs/{run_id}/rerun")
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["rerun_of"] == run_id and data["created"] is True and data["run_id"] != run_id
    assert wait(client, orch, data["run_id"]).trigger_body == {"orderId": "R", "amount": 3}


def test_rerun_of_a_disabled_flow_is_409(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, body={"amount": 1})
    wait(client, orch, run_id)
    client.post("/api/flows/orders/disable")
    assert_error(client.post(f"/api/runs/{run_id}/rerun"), 409, "flow_disabled")


def test_retry_a_failed_step(client: TestClient, orch: Orchestrator) -> None:
    run_id = failed_run(client, orch)
    response = client.post(f"/api/runs/{run_id}/steps/charge/retry")
    assert response.status_code == 202, response.text
    assert response.json() == {"run_id": run_id, "step_key": "charge", "retried": True}
    wait(client, orch, run_id)
    steps = {s["step_key"]: s for s in client.get(f"/api/runs/{run_id}/steps").json()["steps"]}
    assert steps["charge"]["status"] == "Failed"
    assert len(steps["charge"]["attempts"]) == 2


def test_retry_of_a_step_that_did_not_fail_is_409_with_the_reason(client: TestClient, orch: Orchestrator) -> None:
    run_id = failed_run(client, orch)
    data = assert_error(client.post(f"/api/runs/{run_id}/steps/fetch/retry"), 409, "conflict")
    assert "Succeeded" in data["detail"] and "only a Failed" in data["detail"]


def test_retry_of_an_unknown_step_is_404(client: TestClient, orch: Orchestrator) -> None:
    run_id = failed_run(client, orch)
    assert_error(client.post(f"/api/runs/{run_id}/steps/nope/retry"), 404, "not_found")


def test_signal_resumes_a_waiting_step(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, "approval")
    response = client.post(f"/api/runs/{run_id}/signals/approve", json={"by": "ann"})
    assert response.status_code == 202, response.text
    assert response.json() == {"run_id": run_id, "signal": "approve", "accepted": True}
    assert wait(client, orch, run_id).status is RunStatus.SUCCEEDED
    steps = {s["step_key"]: s for s in client.get(f"/api/runs/{run_id}/steps").json()["steps"]}
    assert steps["done"]["output"] == {"by": "ann"}
    # The run has finished: no more signals.
    assert_error(client.post(f"/api/runs/{run_id}/signals/approve", json={}), 409, "conflict")


def test_signal_with_bad_json_is_400(client: TestClient) -> None:
    run_id = trigger(client, "approval")
    assert_error(client.post(f"/api/runs/{run_id}/signals/approve", content=b"{oops"), 400, "bad_request")


# -- schedules --------------------------------------------------------------------------------------


def test_list_schedules(client: TestClient) -> None:
    [s] = client.get("/api/schedules").json()["schedules"]
    assert s["flow_id"] == "orders" and s["trigger"] == "nightly"
    assert s["expression"] == "0 2 * * *" and s["paused"] is False and s["overridden"] is False
    assert len(s["next_fires"]) == 3
    assert len(client.get("/api/schedules", params={"count": 1}).json()["schedules"][0]["next_fires"]) == 1
    assert_error(client.get("/api/schedules", params={"count": "many"}), 400, "bad_request")


def test_pause_resume_and_set_cron(client: TestClient) -> None:
    assert client.post("/api/schedules/orders/nightly/pause").json()["paused"] is True
    assert client.get("/api/schedules").json()["schedules"][0]["paused"] is True
    assert client.post("/api/schedules/orders/nightly/resume").json()["paused"] is False
    data = client.put("/api/schedules/orders/nightly/cron", json={"expression": "*/5 * * * *"}).json()
    assert data["expression"] == "*/5 * * * *" and data["overridden"] is True
    data = client.put("/api/schedules/orders/nightly/cron", json={"expression": None}).json()
    assert data["expression"] == "0 2 * * *" and data["overridden"] is False


@pytest.mark.parametrize(
    "kwargs",
    [{"json": {"expression": "not a cron"}}, {"json": {"expression": 5}}, {"json": {}}, {"json": ["x"]}, {"content": b"{bad"}],
)
def test_set_cron_with_a_bad_body_is_400(client: TestClient, kwargs: dict[str, Any]) -> None:
    assert_error(client.put("/api/schedules/orders/nightly/cron", **kwargs), 400, "bad_request")
    assert client.get("/api/schedules").json()["schedules"][0]["expression"] == "0 2 * * *"


def test_fire_a_schedule_now(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/api/schedules/orders/nightly/trigger")
    assert response.status_code == 202, response.text
    run = wait(client, orch, response.json()["run_id"])
    assert run.trigger_key == "nightly"


@pytest.mark.parametrize("path", ["/api/schedules/nope/nightly/pause", "/api/schedules/orders/manual/pause",
                                  "/api/schedules/orders/nope/resume", "/api/schedules/orders/hook/trigger"])
def test_unknown_schedule_is_404(client: TestClient, path: str) -> None:
    assert_error(client.post(path), 404, "not_found")
    assert_error(client.put("/api/schedules/orders/nope/cron", json={"expression": None}), 404, "not_found")


# -- webhook, health, description, errors -----------------------------------------------------------------


def test_webhook_receiver_is_mounted_under_api(client: TestClient, orch: Orchestrator) -> None:
    response = client.post("/api/webhook/orders-hook", json={"amount": 2})
    assert response.status_code == 202, response.text
    assert wait(client, orch, response.json()["run_id"]).trigger_key == "hook"
    assert_error(client.post("/api/webhook/nope", json={}), 404, "not_found")


def test_health(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "runtime": {"running": True}, "store": {"reachable": True, "detail": "reachable"}}


def test_openapi(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert "post" in paths["/api/flows/{flow_id}/trigger"]
    assert "put" in paths["/api/schedules/{flow_id}/{trigger}/cron"]
    assert "/api/webhook/{slug}" in paths
    names = {p["name"] for p in paths["/api/runs"]["get"]["parameters"]}
    assert names == {"flow_id", "status", "search", "since", "until", "offset", "limit"}
    assert "security" not in doc


def test_unknown_path_and_wrong_method_are_json(client: TestClient) -> None:
    assert_error(client.get("/api/nope"), 404, "not_found")
    assert_error(client.delete("/api/flows"), 405, "method_not_allowed")
    assert_error(client.get("/api/flows/orders/trigger"), 405, "method_not_allowed")


def test_not_started_answers_503_and_health_says_why(orch: Orchestrator) -> None:
    with TestClient(create_app(orch, auth=NoAuth())) as client:  # the host never starts it
        response = client.get("/api/health")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "runtime": {"running": False},
            "store": {"reachable": False, "detail": "the orchestrator is not started"},
        }
        assert_error(client.get("/api/runs"), 503, "unavailable")
        assert_error(client.post("/api/flows/orders/trigger", json={}), 503, "unavailable")
        assert client.get("/api/handlers").status_code == 200


def test_mounted_in_a_host_app_that_owns_the_orchestrator(orch: Orchestrator) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with orch:
            yield

    host = Starlette(routes=[Mount("/flows", app=create_app(orch, auth=BearerAuth("tok")))], lifespan=lifespan)
    with TestClient(host) as client:
        headers = {"Authorization": "Bearer tok"}
        response = client.post("/flows/api/flows/loop/trigger", headers=headers)
        assert response.status_code == 202, response.text
        assert wait(client, orch, response.json()["run_id"]).status is RunStatus.SUCCEEDED
        assert client.get("/flows/api/health", headers=headers).status_code == 200
        assert_error(client.get("/flows/api/runs"), 401, "unauthorized")
        assert client.post("/flows/api/webhook/orders-hook", json={}).status_code == 202


# -- authentication -----------------------------------------------------------------------------------------


def test_auth_must_be_explicit(orch: Orchestrator) -> None:
    with pytest.raises(ConfigurationError, match="NoAuth"):
        create_app(orch, auth=None)
    with pytest.raises(ConfigurationError, match="auth"):
        create_app(orch)
    with pytest.raises(ConfigurationError):
        create_app(orch, auth="secret")  # type: ignore[arg-type]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# Path parameters filled with names the test orchestrator has (or plausible ones), so that a route
# left unguarded would answer something else than 401.
PATH_VALUES = {"flow_id": "orders", "trigger": "nightly", "run_id": "x", "step_key": "fetch", "name": "approve", "manifest_id": "x"}


def _filled(path: str) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        assert name in PATH_VALUES, f"no dummy value for the path parameter {name!r} of {path}: add one to PATH_VALUES"
        return PATH_VALUES[name]

    return re.sub(r"\{([^}]+)\}", value, path)


# Every route of the API, present and future (the webhook receiver, outside ENDPOINTS, checks its own secret),
# and a path no route has.
PROTECTED = [(e.method, "/api" + _filled(e.path)) for e in ENDPOINTS if not e.path.startswith("/webhook")] + [("GET", "/api/nope")]


def test_the_auth_matrix_covers_every_api_route(client: TestClient) -> None:
    assert len(PROTECTED) >= 26
    for endpoint in ENDPOINTS:
        if endpoint.path.startswith("/webhook"):
            continue
        path = "/api" + _filled(endpoint.path)
        assert (endpoint.method, path) in PROTECTED
        if endpoint.path == "/events/stream":  # never ends by itself; its path has no parameter
            continue
        # Without a guard, the request reaches the endpoint: no router 404 or 405.
        response = client.request(endpoint.method, path, json={})
        assert response.status_code != 405 and response.json().get("detail") != "Not Found", (endpoint.method, path, response.text)


def assert_protected(client: TestClient, good: dict[str, str], bad: list[dict[str, str]], challenge: str | None) -> None:
    for method, path in PROTECTED:
        for headers in [{}, *bad]:
            response = client.request(method, path, headers=headers)
            assert_error(response, 401, "unauthorized")
            if challenge is not None:
                assert response.headers["www-authenticate"].startswith(challenge), (method, path)
    assert client.get("/api/flows", headers=good).status_code == 200
    assert client.post("/api/flows/loop/trigger", headers=good).status_code == 202
    # The webhook receiver checks its own secret, not the API's credentials.
    assert client.post("/api/webhook/orders-hook", json={}).status_code == 202


def test_basic_auth(orch: Orchestrator) -> None:
    with TestClient(create_app(orch, auth=BasicAuth("admin", "pässword"), manage_lifespan=True)) as client:
        bad = [
            basic("admin", "wrong"), basic("root", "pässword"), basic("admin", ""),
            {"Authorization": "Basic !!!notbase64"}, {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
            {"Authorization": "Bearer p"}, {"Authorization": "Basic"},
        ]
        assert_protected(client, basic("admin", "pässword"), bad, "Basic")
        assert client.get("/api/openapi.json", headers=basic("admin", "pässword")).json()["security"] == [{"basic": []}]


def test_bearer_auth(orch: Orchestrator) -> None:
    with TestClient(create_app(orch, auth=BearerAuth(["t1", "t2"]), manage_lifespan=True)) as client:
        bad = [{"Authorization": "Bearer t3"}, {"Authorization": "Bearer t1x"}, {"Authorization": "Basic dDE6dDE="},
               {"Authorization": "Bearer "}, {"Authorization": "t1"}]
        assert_protected(client, {"Authorization": "Bearer t1"}, bad, "Bearer")
        assert client.get("/api/flows", headers={"Authorization": "bearer t2"}).status_code == 200


def test_sync_hook(orch: Orchestrator) -> None:
    seen: list[str] = []

    def hook(request: Request) -> bool:
        seen.append(request.url.path)
        return request.headers.get("x-user") == "ann"

    with TestClient(create_app(orch, auth=hook, manage_lifespan=True)) as client:
        assert_protected(client, {"X-User": "ann"}, [{"X-User": "bob"}], None)
    assert "/api/flows" in seen


def test_async_hook_and_non_bool_results_deny(orch: Orchestrator) -> None:
    async def hook(request: Request) -> bool:
        await asyncio.sleep(0)
        value = request.cookies.get("session")
        return True if value == "ok" else value  # type: ignore[return-value]  # a truthy non-bool must not pass

    with TestClient(create_app(orch, auth=hook, manage_lifespan=True)) as client:
        assert_protected(client, {"Cookie": "session=ok"}, [{"Cookie": "session=yes"}], None)


def test_auth_constructors_refuse_empty_secrets() -> None:
    with pytest.raises(ValueError):
        BasicAuth("", "p")
    with pytest.raises(ValueError):
        BasicAuth("a:b", "p")
    with pytest.raises(ValueError):
        BearerAuth([])
    with pytest.raises(ValueError):
        BearerAuth(["ok", ""])
    assert "s3cret" not in repr(BearerAuth("s3cret")) and "s3cret" not in repr(BasicAuth("u", "s3cret"))


# -- mermaid ---------------------------------------------------------------------------------------------------------


def test_to_mermaid_escapes_labels_and_draws_loops() -> None:
    manifest = {
        "steps": {
            "a": {"type": "Echo", "run_after": {}},
            'b"<x>': {"type": "Echo", "run_after": {"a": {"statuses": ["Succeeded"], "when": "@steps('a').output.n > 1 || x"}}},
            "c": {"type": "Echo", "run_after": {"a": []}},
            "loop": {"type": "ForEach", "run_after": {"c": ["Failed", "Skipped"]},
                     "steps": {"x": {"type": "Echo", "run_after": {}}, "y": {"type": "Echo", "run_after": {"x": ["Succeeded"]}}}},
        }
    }
    text = to_mermaid(manifest)
    assert text.splitlines()[0] == "flowchart TD"
    assert 's1["b#quot;#lt;x#gt;<br/><small>Echo</small>"]' in text
    assert 's0 -->|"Succeeded if @steps(\'a\').output.n #gt; 1 #124;#124; x"| s1' in text
    assert 's0 -->|"any"| s2' in text
    assert 'subgraph s3["loop<br/><small>ForEach</small>"]' in text
    assert 's4 -->|"Succeeded"| s5' in text
    assert 's2 -->|"Failed, Skipped"| s3' in text


# -- failures -------------------------------------------------------------------------------------------------------


def test_a_failing_store_is_503_and_health_says_so(client: TestClient, orch: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("connection refused to db.internal:5432")

    monkeypatch.setattr(orch.store, "list_runs", broken)
    monkeypatch.setattr(orch.store, "count_runs", broken)
    monkeypatch.setattr(orch.store, "list_flows", broken)
    data = assert_error(client.get("/api/runs"), 503, "unavailable")
    assert "db.internal" not in data["detail"]  # the store's own message stays in the log
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["store"] == {"reachable": False, "detail": "unreachable"}


def test_a_hook_that_raises_is_a_json_500(orch: Orchestrator) -> None:
    def hook(request: Request) -> bool:
        raise RuntimeError("the host's bug")

    with TestClient(create_app(orch, auth=hook, manage_lifespan=True), raise_server_exceptions=False) as client:
        assert_error(client.get("/api/flows"), 500, "internal_error")
        assert client.post("/api/webhook/orders-hook", json={}).status_code == 202
