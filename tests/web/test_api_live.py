"""The dashboard's read side: runs search and time filters, active runs, stats, and the SSE event stream.

The stream is tested against a real uvicorn server (an endless response
cannot go through the TestClient), in the test's own event loop, and against
events written by another process sharing the store.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from floworchestrator import Orchestrator
from floworchestrator.web import BasicAuth, NoAuth, close_event_streams, create_app
from floworchestrator.web import events as events_module

from ..conftest import store_url
from .test_api import assert_error, make_orchestrator, trigger, wait, wait_for_step

# -- runs: search, time filters, active, stats -------------------------------------------------------------


def test_runs_search_and_time_filters(client: TestClient, orch: Orchestrator) -> None:
    a = trigger(client, body={"orderId": "ACME-17", "amount": 1})
    b = trigger(client, body={"orderId": "globex_9", "amount": 2})
    c = trigger(client, "approval")
    for run_id in (a, b):
        wait(client, orch, run_id)

    def ids(**params: Any) -> tuple[list[str], int]:
        r = client.get("/api/runs", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        return [x["run_id"] for x in body["runs"]], body["total"]

    assert ids(search="acme") == ([a], 1)  # the trigger body, ignoring case
    assert ids(search="  GLOBEX_9 ") == ([b], 1)  # trimmed; _ is a plain character
    assert ids(search="approv") == ([c], 1)  # the flow id
    assert ids(search=c) == ([c], 1)  # the run id
    assert ids(search="no such thing") == ([], 0)
    assert ids(search="") == ([c, b, a], 3)
    assert ids(search="a", flow_id="orders", status="succeeded", limit=1) == ([b], 2)

    created = {r["run_id"]: r["created_at"] for r in client.get("/api/runs").json()["runs"]}
    assert ids(since=created[b]) == ([c, b], 2)  # inclusive
    assert ids(until=created[b]) == ([a], 1)  # exclusive
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()  # naive: UTC
    assert ids(since=hour_ago)[1] == 3
    assert ids(until=hour_ago)[1] == 0
    assert ids(since="2026-01-01")[1] == 3  # a date alone is midnight UTC
    # A '+' offset arrives as a space when the client did not encode it.
    plus = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert "+00:00" in plus
    assert client.get(f"/api/runs?until={plus}").json()["total"] == 3

    assert "since" in assert_error(client.get("/api/runs", params={"since": "yesterday"}), 400, "bad_request")["detail"]
    assert "until" in assert_error(client.get("/api/runs", params={"until": "2026-13-01"}), 400, "bad_request")["detail"]
    assert "search" in assert_error(client.get("/api/runs", params={"search": "x" * 201}), 400, "bad_request")["detail"]


def test_active_runs(client: TestClient, orch: Orchestrator) -> None:
    waiting = trigger(client, "approval")
    done = trigger(client, body={"orderId": "A-1", "amount": 1})
    wait(client, orch, done)
    wait_for_step(client, orch, waiting, "wait", lambda s: s.waiting_signal == "approve")

    body = client.get("/api/runs/active").json()
    assert [r["run_id"] for r in body["runs"]] == [waiting] and body["total"] == 1
    assert body["runs"][0]["status"] == "Running"

    assert client.post(f"/api/runs/{waiting}/signals/approve", json={"by": "ann"}).status_code == 202
    wait(client, orch, waiting)
    assert client.get("/api/runs/active").json() == {"runs": [], "total": 0}
    assert_error(client.get("/api/runs/active?limit=0"), 400, "bad_request")


def test_run_stats_totals_and_series(client: TestClient, orch: Orchestrator) -> None:
    ok = trigger(client, body={"orderId": "A-1", "amount": 1})
    waiting = trigger(client, "approval")
    wait(client, orch, ok)
    assert client.post(f"/api/runs/{waiting}/cancel").status_code == 200

    body = client.get("/api/runs/stats").json()
    assert body["totals"] == {"Running": 0, "Succeeded": 1, "Failed": 0, "Cancelled": 1, "TimedOut": 0}
    assert body["total"] == 2 and body["bucket"] == "hour"
    series = body["series"]
    assert len(series) == 24
    starts = [datetime.fromisoformat(s["start"]) for s in series]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= datetime.now(UTC) < starts[-1] + timedelta(hours=1)  # the last bucket holds now
    assert series[-1]["counts"] == {"Succeeded": 1, "Cancelled": 1} and series[-1]["total"] == 2
    assert all(s["total"] == 0 and s["counts"] == {} for s in series[:-1])

    minutes = client.get("/api/runs/stats", params={"bucket": "minute", "buckets": 5}).json()
    assert len(minutes["series"]) == 5 and sum(s["total"] for s in minutes["series"]) == 2
    assert len(client.get("/api/runs/stats?bucket=day&buckets=1").json()["series"]) == 1

    assert "bucket" in assert_error(client.get("/api/runs/stats?bucket=week"), 400, "bad_request")["detail"]
    assert_error(client.get("/api/runs/stats?buckets=0"), 400, "bad_request")
    assert_error(client.get("/api/runs/stats?buckets=367"), 400, "bad_request")


# -- the event stream ---------------------------------------------------------------------------------------


class Stream:
    """A raw SSE client: reads messages (id + data) and comments off a real socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
        self.reader, self.writer, self.status, self.headers = reader, writer, status, headers
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_id: int | None = None

    @classmethod
    async def open(cls, port: int, path: str, headers: dict[str, str] | None = None) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        await writer.drain()
        status_line = (await reader.readline()).decode()
        status = int(status_line.split()[1])
        head: dict[str, str] = {}
        while (line := (await reader.readline()).decode().rstrip("\r\n")) != "":
            k, _, v = line.partition(":")
            head[k.strip().lower()] = v.strip()
        return cls(reader, writer, status, head)

    async def _line(self) -> str:
        # Chunked transfer encoding: a size line, the chunk, CRLF. Keep a buffer of decoded body lines.
        while not getattr(self, "_lines", None):
            size = int((await self.reader.readline()).strip() or b"0", 16)
            if size == 0:
                raise EOFError("the stream ended")
            chunk = await self.reader.readexactly(size + 2)
            self._buf = getattr(self, "_buf", "") + chunk[:-2].decode()
            *complete, self._buf = self._buf.split("\n")
            self._lines = complete
        return self._lines.pop(0)

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message with data, as {"id": int, "data": event}; comments are collected on the way."""

        async def read() -> dict[str, Any]:
            msg: dict[str, Any] = {}
            while True:
                line = await self._line()
                if line == "":
                    if "data" in msg:
                        return msg
                    msg = {}
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line.startswith("id: "):
                    msg["id"] = self.last_id = int(line[4:])
                elif line.startswith("data: "):
                    msg["data"] = json.loads(line[6:])
                elif line.startswith("retry: "):
                    self.retry = int(line[7:])

        return await asyncio.wait_for(read(), timeout)

    async def until(self, predicate: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Messages up to and including the first whose event matches ``predicate``."""
        seen: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            msg = await self.message(max(0.1, deadline - asyncio.get_running_loop().time()))
            seen.append(msg)
            if predicate(msg["data"]):
                return seen

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


class Served:
    def __init__(self, orch: Orchestrator, port: int, app: Any) -> None:
        self.orch, self.port, self.app = orch, port, app

    async def get_json(self, path: str) -> tuple[int, Any]:
        s = await Stream.open(self.port, path, {"Connection": "close"})
        body = await s.reader.read()
        await s.close()
        text = body.decode()
        if s.headers.get("transfer-encoding") == "chunked":
            text = "".join(text.split("\r\n")[1::2])
        return s.status, json.loads(text)


@pytest.fixture
async def served(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The app on a real uvicorn server in this loop; the orchestrator started by the app's lifespan."""
    orch = make_orchestrator(store_kind, tmp_path)
    auth = getattr(request, "param", None) or NoAuth()
    app = create_app(orch, auth=auth, manage_lifespan=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(orch, port, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def parked(orch: Orchestrator, run_id: str) -> None:
    for _ in range(1000):
        if any(s.waiting_signal for s in await orch.get_steps(run_id)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never waited for its signal")


def ends(run_id: str) -> Any:
    return lambda e: e["run_id"] == run_id and e["kind"].startswith("Run") and e["kind"] != "RunStarted"


async def test_stream_delivers_every_event_of_a_run_live(served: Served) -> None:
    stream = await Stream.open(served.port, "/api/events/stream")
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        run_id = await served.orch.trigger("orders", {"orderId": "A-1", "amount": 3, "fail": False})
        msgs = await stream.until(ends(run_id))
        assert stream.retry == 1000
        events = [m["data"] for m in msgs if m["data"]["run_id"] == run_id]
        assert [e["kind"] for e in events] == ["RunStarted", "StepSucceeded", "StepSucceeded", "StepSkipped", "RunSucceeded"]
        assert [e["step_key"] for e in events] == [None, "fetch", "charge", "alert", None]
        assert all(m["id"] == m["data"]["event_id"] for m in msgs)
        assert [m["id"] for m in msgs] == sorted({m["id"] for m in msgs})  # increasing, no duplicates
        # Exactly what the per-run events endpoint has.
        stored = [e.event_id for e in await served.orch.get_events(run_id)]
        assert [e["event_id"] for e in events] == stored
    finally:
        await stream.close()


async def test_stream_for_one_run_and_resume_after_last_event_id(served: Served) -> None:
    other = await served.orch.trigger("approval")
    mine = await served.orch.trigger("approval")
    for run_id in (other, mine):  # both parked before the stream opens
        await parked(served.orch, run_id)
    stream = await Stream.open(served.port, f"/api/events/stream?run_id={mine}")
    try:
        assert stream.status == 200
        await served.orch.signal(other, "approve", {"by": "bob"})
        await served.orch.signal(mine, "approve", {"by": "ann"})
        msgs = await stream.until(ends(mine))
        assert {m["data"]["run_id"] for m in msgs} == {mine}
        assert msgs[0]["data"]["kind"] == "SignalReceived"  # the stream starts now, not at the run's beginning
    finally:
        await stream.close()

    # Reconnecting with Last-Event-ID first replays what came after it (from the store), then goes live.
    all_mine = await served.orch.get_events(mine)
    again = await Stream.open(served.port, f"/api/events/stream?run_id={mine}",
                              {"Last-Event-ID": str(all_mine[0].event_id)})
    try:
        replay = [await again.message() for _ in all_mine[1:]]
        assert [m["id"] for m in replay] == [e.event_id for e in all_mine[1:]]
    finally:
        await again.close()


async def test_stream_heartbeats_and_errors(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "HEARTBEAT", 0.2)
    stream = await Stream.open(served.port, "/api/events/stream")
    try:
        # No event: only comments, the greeting and then keep-alives.
        with pytest.raises(TimeoutError):
            await stream.message(timeout=0.7)
        assert stream.comments[0].startswith("floworchestrator events")
        assert "keepalive" in stream.comments[1:]
    finally:
        await stream.close()

    status, body = await served.get_json("/api/events/stream?run_id=ghost")
    assert status == 404 and body["error"] == "not_found"
    status, body = await served.get_json("/api/events/stream?after=soon")
    assert status == 400 and body["error"] == "bad_request"


async def test_a_stream_ends_after_its_lifetime_and_a_reconnect_misses_nothing(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "LIFETIME", 0.6)
    before = await served.orch.trigger("approval")  # events before the stream: not sent
    await parked(served.orch, before)
    stream = await Stream.open(served.port, "/api/events/stream")
    try:
        with pytest.raises(EOFError):  # no event, then the stream ends by itself
            await stream.message(timeout=5)
        start = stream.last_id  # the id line sent first: where a reconnect resumes
        assert start is not None and start >= (await served.orch.get_events(before))[0].event_id
    finally:
        await stream.close()
    # Between the end and the browser's reconnect a run starts and finishes: the reconnect gets all of it.
    run_id = await served.orch.trigger("orders", {"orderId": "A-1", "amount": 3, "fail": False})
    await served.orch.wait(run_id, 10)
    again = await Stream.open(served.port, "/api/events/stream", {"Last-Event-ID": str(start)})
    try:
        msgs = await again.until(ends(run_id))
        assert next(m["data"]["kind"] for m in msgs if m["data"]["run_id"] == run_id) == "RunStarted"
    finally:
        await again.close()


async def test_close_event_streams_ends_open_streams_and_refuses_new_ones(served: Served) -> None:
    stream = await Stream.open(served.port, "/api/events/stream")
    try:
        close_event_streams(served.app)
        with pytest.raises(EOFError):
            await stream.message(timeout=5)
    finally:
        await stream.close()
    late = await Stream.open(served.port, "/api/events/stream")
    try:
        assert late.status == 200
        with pytest.raises(EOFError):
            await late.message(timeout=5)
    finally:
        await late.close()
    with pytest.raises(TypeError, match="create_app"):
        close_event_streams(Starlette())


async def test_streams_end_when_the_orchestrator_stops(served: Served) -> None:
    stream = await Stream.open(served.port, "/api/events/stream")
    try:
        await served.orch.stop()
        with pytest.raises(EOFError):
            await stream.message(timeout=5)
    finally:
        await stream.close()


@pytest.mark.parametrize("served", [BasicAuth("ann", "secret")], indirect=True)
async def test_stream_needs_credentials_when_auth_is_on(served: Served) -> None:
    status, body = await served.get_json("/api/events/stream")
    assert status == 401 and body["error"] == "unauthorized"
    token = base64.b64encode(b"ann:secret").decode()
    stream = await Stream.open(served.port, "/api/events/stream", {"Authorization": f"Basic {token}"})
    try:
        assert stream.status == 200
        run_id = await served.orch.trigger("orders", {"orderId": "A-1", "amount": 3, "fail": False})
        await stream.until(ends(run_id))
    finally:
        await stream.close()


ROOT = str(Path(__file__).resolve().parents[2])
WORKER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from tests.web.test_api import make_orchestrator_for_url

    async def main() -> None:
        orch = make_orchestrator_for_url({url!r})
        await orch.start()
        try:
            run_id = await orch.trigger("orders", {{"orderId": "from-another-process", "amount": 1, "fail": False}})
            print(run_id, flush=True)
            run = await orch.wait(run_id, 30)
            print(run.status.value, flush=True)
        finally:
            await orch.stop()

    asyncio.run(main())
    """
)


async def test_stream_sees_events_written_by_another_process(served: Served, store_kind: str, tmp_path: Path) -> None:
    if store_kind == "memory":
        pytest.skip("a memory store is not shared between processes")
    stream = await Stream.open(served.port, "/api/events/stream")
    try:
        root = ROOT
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER.format(root=root, url=store_url(store_kind, tmp_path)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": root},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        run_id, status = out.decode().split()
        assert status == "Succeeded"
        msgs = await stream.until(ends(run_id))
        kinds = [m["data"]["kind"] for m in msgs if m["data"]["run_id"] == run_id]
        assert kinds[0] == "RunStarted" and kinds[-1] == "RunSucceeded"
    finally:
        await stream.close()


def test_stream_is_in_the_openapi_description(client: TestClient, orch: Orchestrator) -> None:
    doc = client.get("/api/openapi.json").json()
    op = doc["paths"]["/api/events/stream"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {p["name"] for p in op["parameters"]} == {"run_id", "after", "Last-Event-ID"}
    assert {"/api/runs/active", "/api/runs/stats"} <= set(doc["paths"])
    assert any(p["name"] == "search" for p in doc["paths"]["/api/runs"]["get"]["parameters"])


@pytest.fixture
def client(orch: Orchestrator) -> Any:
    with TestClient(create_app(orch, auth=NoAuth(), manage_lifespan=True), base_url="http://test") as c:
        yield c


@pytest.fixture
def orch(store_kind: str, tmp_path: Path) -> Orchestrator:
    return make_orchestrator(store_kind, tmp_path)



def test_a_runs_pinned_manifest(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, body={"orderId": "A-1", "amount": 1})
    run = client.get(f"/api/runs/{run_id}").json()
    body = client.get(f"/api/manifests/{run['manifest_id']}").json()
    assert body["manifest_id"] == run["manifest_id"] and body["flow_id"] == "orders"
    assert set(body["steps"]) == {"fetch", "charge", "alert"}
    assert body["steps"]["charge"]["run_after"] == {"fetch": ["Succeeded"]}
    assert body["mermaid"].startswith("flowchart") and body["manifest"]["id"] == "orders"
    assert_error(client.get("/api/manifests/nope"), 404, "not_found")


def test_a_signal_nobody_waits_for_is_409(client: TestClient, orch: Orchestrator) -> None:
    run_id = trigger(client, "approval")
    detail = assert_error(client.post(f"/api/runs/{run_id}/signals/aprove", json={"by": "ann"}), 409, "conflict")["detail"]
    assert "'approve'" in detail


def test_steps_say_why_they_were_skipped(client: TestClient, orch: Orchestrator) -> None:
    ok = trigger(client, body={"orderId": "A-1", "amount": 1, "fail": False})
    failed = trigger(client, body={"orderId": "A-2", "amount": 1, "fail": True})
    for run_id in (ok, failed):
        wait(client, orch, run_id)

    steps = {s["step_key"]: s for s in client.get(f"/api/runs/{ok}/steps").json()["steps"]}
    because = steps["alert"]["skipped_because"]  # alert runs only if charge fails; it succeeded
    assert because["run_after"] == [{"step_key": "charge", "status": "Succeeded", "accepts": ["Failed"], "satisfied": False}]
    assert because["text"] == "charge ended Succeeded, and this step runs after it only when it is Failed"
    assert "skipped_because" not in steps["charge"]  # only skipped steps say why

    steps = {s["step_key"]: s for s in client.get(f"/api/runs/{failed}/steps").json()["steps"]}
    assert steps["charge"]["status"] == "Failed" and steps["alert"]["status"] == "Succeeded"
