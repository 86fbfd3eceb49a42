#!/usr/bin/env python
"""The dashboard-facing queries with 100,000 stored runs (issue 4 item 4, issue 5 item 5).

Seeds a fresh database per store (SQLite file in a temp dir; PostgreSQL database
``fo_bench_<random>`` created and dropped here) with real runs of five flows and
then ``--runs`` clones of them, and times the JSON API's read endpoints (the
app from ``create_app`` driven in-process over ASGI) and, for diagnosis, the
store methods behind them. See benchmarks/README.md, "Dashboard queries".

    python benchmarks/dashboard.py
    python benchmarks/dashboard.py --stores sqlite --runs 20000 --repeat 10
    python benchmarks/dashboard.py --stores postgres --json dash.json --explain
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import floworchestrator
from floworchestrator import Flow, Orchestrator, RunStatus, Step, StepContext, StepResult
from floworchestrator.flow import Retry
from floworchestrator.stores import sql
from floworchestrator.stores._rows import run_filter
from floworchestrator.stores.base import RunFilter
from floworchestrator.web import NoAuth, create_app

TARGET_MS = 100.0
DAYS = 30
RUNNING_RUNS = 300
RUNNING_WITHIN = 2 * 3600.0  # Running runs were started in the last two hours
FLOW_TIMEOUT = 3.0  # every flow has a timeout, so that a real run can time out while templates are made
CUSTOMERS = 5_000
CHUNK = 5_000  # clones generated and inserted at a time

# -- the flows: five shapes, 3 to 10 steps -----------------------------------------------------------

#: (flow id, share of the runs, {step: predecessors})
FLOWS: list[tuple[str, float, dict[str, list[str]]]] = [
    ("orders-sync", 0.35, {"fetch": [], "validate": ["fetch"], "store": ["validate"]}),
    ("invoice-render", 0.25, {"load": [], "render_pdf": ["load"], "render_html": ["load"],
                              "archive": ["render_pdf", "render_html"], "notify": ["archive"]}),
    ("email-campaign", 0.15, {"segment": [], "personalise": ["segment"], "send": ["personalise"], "report": ["send"]}),
    ("customer-import", 0.15, {"download": [], "unpack": ["download"], "parse": ["unpack"], "dedupe": ["parse"],
                               "enrich": ["parse"], "upsert": ["dedupe", "enrich"], "summary": ["upsert"]}),
    ("etl-nightly", 0.10, {"extract_a": [], "extract_b": [], "extract_c": [], "clean_a": ["extract_a"],
                           "clean_b": ["extract_b"], "clean_c": ["extract_c"], "join": ["clean_a", "clean_b", "clean_c"],
                           "aggregate": ["join"], "publish": ["aggregate"], "notify": ["publish"]}),
]
FILTER_FLOW = "invoice-render"  # the ?flow_id= of the runs list rows
DETAIL_FLOW = "etl-nightly"  # run detail: runs of the biggest flow (10 steps)

REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"]
NOTES = ["standard order", "repeat customer", "gift wrap requested", "express shipping", "invoice by post",
         "partial delivery allowed", "weekend delivery", "b2b account", "new customer", "loyalty discount"]
RARE_NOTE = "escalated by support"  # in about 1 % of the trigger bodies
RARE_SHARE = 0.01


def _flow(flow_id: str, graph: dict[str, list[str]]) -> Flow:
    steps = {}
    for key, preds in graph.items():
        inputs: dict[str, Any] = {"order": "@triggerBody()?.order_id", "customer": "@triggerBody()?.customer",
                                  "region": "@triggerBody()?.region"}
        if preds:
            inputs["upstream"] = {p: f"@steps('{p}').output.rows" for p in preds}
        steps[key] = Step("work", inputs=inputs, run_after={p: ["Succeeded"] for p in preds},
                          retry=Retry(max_attempts=3, backoff=0.0, jitter=0.0), description=f"{flow_id}: {key}")
    return Flow(flow_id, steps, timeout=FLOW_TIMEOUT, description=f"benchmark flow {flow_id}")


# -- templates: real runs through the engine ------------------------------------------------------------


@dataclass
class Plan:
    """What the handler does for one template run (found by the run's order id)."""

    flaky: frozenset[str] = frozenset()  # fail on attempt 1, then succeed (2 attempts)
    fail: str | None = None  # always raise (3 attempts, then Failed)
    fail_once: str | None = None  # return StepResult.failed (1 attempt, no retry)
    block: str | None = None  # wait for RELEASE (the run is Running meanwhile)
    reached: asyncio.Event = field(default_factory=asyncio.Event)


PLANS: dict[str, Plan] = {}
RELEASE: asyncio.Event | None = None


async def work(inputs: dict[str, Any], ctx: StepContext) -> Any:
    plan = PLANS.get(str(inputs.get("order")), Plan())
    key = ctx.step_key
    if key == plan.block:
        plan.reached.set()
        assert RELEASE is not None
        await RELEASE.wait()
    if key == plan.fail:
        raise RuntimeError(f"{key}: upstream service answered 503 (attempt {ctx.attempt})")
    if key == plan.fail_once:
        return StepResult.failed(f"{key}: validation failed: amount exceeds the customer's credit limit")
    if key in plan.flaky and ctx.attempt == 1:
        raise ConnectionError(f"{key}: connection reset by peer")
    rows = 10 + sum(map(ord, key + str(inputs.get("order")))) % 990
    return {"step": key, "rows": rows, "order": inputs.get("order"), "checksum": f"{hash((key, rows)) & 0xFFFFFFFF:08x}",
            "attempt": ctx.attempt}


def make_orchestrator(url: str) -> Orchestrator:
    orch = Orchestrator(store=url, runtime="inprocess", concurrency=64)  # > the 20 handlers blocked at once
    orch.add_handler("work", work)
    orch.register(*(_flow(fid, g) for fid, _, g in FLOWS))
    return orch


#: Template kinds: (name, final run status, share within that status)
SUCCEEDED_KINDS = [("ok", 0.45), ("flaky-some", 0.25), ("flaky-many", 0.10), ("flaky-first", 0.20)]
FAILED_KINDS = [("fail-retried", 0.5), ("fail-once", 0.5)]
STATUS_SHARE = {"Succeeded": 0.885, "Failed": 0.07, "Cancelled": 0.02, "TimedOut": 0.025}


def _plan(kind: str, keys: list[str], rng: random.Random) -> Plan:
    mid = keys[len(keys) // 2]
    if kind == "ok":
        return Plan()
    if kind == "flaky-some":
        return Plan(flaky=frozenset(k for i, k in enumerate(keys) if i % 3 == 1))
    if kind == "flaky-many":
        return Plan(flaky=frozenset(k for i, k in enumerate(keys) if i % 3 != 0))
    if kind == "flaky-first":
        return Plan(flaky=frozenset(keys[:1]))
    if kind == "fail-retried":
        return Plan(fail=mid)
    if kind == "fail-once":
        return Plan(fail_once=keys[-1], flaky=frozenset(keys[:1]))
    if kind in ("cancel", "timeout", "running-mid"):
        return Plan(block=mid, flaky=frozenset(keys[:1]))
    if kind == "running-first":
        return Plan(block=keys[0])
    raise ValueError(kind)


def _body(rng: random.Random, order_id: str) -> dict[str, Any]:
    note = RARE_NOTE + ": " + rng.choice(["late delivery", "damaged parcel", "wrong item"]) if rng.random() < RARE_SHARE \
        else rng.choice(NOTES)
    return {"order_id": order_id, "customer": f"cust-{rng.randrange(CUSTOMERS):05d}", "amount": round(rng.uniform(5, 2500), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]), "region": rng.choice(REGIONS), "note": note,
            "items": rng.randrange(1, 12)}


@dataclass
class Template:
    flow_id: str
    kind: str
    status: str  # the clone's run status
    order_id: str
    customer: str
    run_id: str = ""
    rows: dict[str, list[list[Any]]] = field(default_factory=dict)  # table -> rows (columns as in TABLES)
    created_at: float = 0.0


#: Tables a run owns: (table, ORDER BY, time columns). Identity columns (PostgreSQL) are left out.
TABLES = [
    ("fo_runs", "run_id", ("created_at", "finished_at", "deadline")),
    ("fo_steps", "seq", ("started_at", "finished_at", "lease_until", "not_before", "queued_at", "first_started_at")),
    ("fo_dispatches", "step_key, generation", ("dispatched_at",)),
    ("fo_attempts", "{order}", ("started_at", "finished_at")),
    ("fo_events", "event_id", ("at",)),
]
IDENTITY = {"attempt_id", "event_id"}


class Db:
    """A plain DB-API connection to the benchmark database (not the store's): capture, seeding, EXPLAIN."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.conn: Any = sqlite3.connect(target, isolation_level=None, timeout=30)
        else:
            import psycopg

            self.conn = psycopg.connect(target, autocommit=True)
        self.p = "?" if kind == "sqlite" else "%s"
        self.columns: dict[str, list[str]] = {}

    def query(self, q: str, params: Any = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(q, params)
        return list(cur.fetchall())

    def table_columns(self, table: str) -> list[str]:
        if table not in self.columns:
            cur = self.conn.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            self.columns[table] = [d[0] for d in cur.description if d[0] not in IDENTITY]
        return self.columns[table]

    def capture(self, run_id: str) -> dict[str, list[list[Any]]]:
        out = {}
        for table, order, _ in TABLES:
            cols = self.table_columns(table)
            order = order.format(order="rowid" if self.kind == "sqlite" else "attempt_id")
            rows = self.query(f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = {self.p} ORDER BY {order}", (run_id,))
            out[table] = [list(r) for r in rows]
        return out

    def close(self) -> None:
        self.conn.close()


async def make_templates(url: str, kind: str, db_target: str, rng: random.Random) -> list[Template]:
    """Real runs of every flow and outcome through a real Orchestrator; their rows are the templates."""
    global RELEASE
    RELEASE = asyncio.Event()
    logging.getLogger("floworchestrator").setLevel(logging.CRITICAL)  # the templates' failures are on purpose
    PLANS.clear()
    templates: list[Template] = []
    orch = make_orchestrator(url)
    db: Db | None = None
    async with orch:
        db = Db(kind, db_target)
        try:
            started: list[tuple[Template, Plan]] = []
            for fid, _, graph in FLOWS:
                keys = list(graph)
                specs = [(k, "Succeeded") for k, _ in SUCCEEDED_KINDS] + [(k, "Failed") for k, _ in FAILED_KINDS] + [
                    ("cancel", "Cancelled"), ("timeout", "TimedOut"), ("running-first", "Running"), ("running-mid", "Running")]
                for k, status in specs:
                    order_id = f"TPL-{fid}-{k}"
                    body = _body(rng, order_id)
                    plan = _plan(k, keys, rng)
                    PLANS[order_id] = plan
                    t = Template(fid, k, status, order_id, body["customer"])
                    t.run_id = await orch.trigger(fid, body)
                    started.append((t, plan))
            blocked = [(t, p) for t, p in started if p.block is not None]
            await asyncio.wait_for(asyncio.gather(*(p.reached.wait() for _, p in blocked)), 30)
            await asyncio.sleep(0.2)  # let the flaky first steps' retries settle
            for t, _ in blocked:
                if t.kind.startswith("running"):
                    t.rows = db.capture(t.run_id)  # a snapshot while it runs
                elif t.kind == "cancel":
                    await orch.cancel_run(t.run_id)
            # The timeout kind ends TimedOut at its deadline; then every blocked handler may go on.
            timed_out = [t for t, _ in blocked if t.kind == "timeout"]
            for t in timed_out:
                await orch.wait(t.run_id, timeout=FLOW_TIMEOUT + 30)
            RELEASE.set()
            for t, _ in started:
                run = await orch.wait(t.run_id, timeout=60)
                if not t.kind.startswith("running"):
                    if run.status.value != t.status:
                        raise RuntimeError(f"template {t.flow_id}/{t.kind} ended {run.status.value}, expected {t.status}")
                    t.rows = db.capture(t.run_id)
                t.created_at = float(t.rows["fo_runs"][0][db.table_columns("fo_runs").index("created_at")])
                templates.append(t)
        finally:
            RELEASE.set()
            db.close()
    return templates


# -- clones ------------------------------------------------------------------------------------------


def uuid7_at(ms: int, rng: random.Random) -> str:
    """A UUIDv7 for the given Unix time in ms, laid out as floworchestrator._ids.new_id lays it out."""
    seq = rng.getrandbits(10)
    rand_b = rng.getrandbits(62)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class SeedInfo:
    runs: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    templates_s: float = 0.0
    insert_s: float = 0.0
    analyze_s: float = 0.0
    db_bytes: int = 0
    picks: dict[str, Any] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.templates_s + self.insert_s + self.analyze_s


class Cloner:
    """Turns templates into clone rows: new run ids (UUIDv7 at the clone's time), times shifted, new trigger bodies."""

    def __init__(self, templates: list[Template], db: Db, n: int, now: float, rng: random.Random) -> None:
        self.rng = rng
        self.n = n
        self.now = now
        self.cols = {t: db.table_columns(t) for t, _, _ in TABLES}
        self.time_idx = {t: [self.cols[t].index(c) for c in tc if c in self.cols[t]] for t, _, tc in TABLES}
        self.run_idx = {t: self.cols[t].index("run_id") for t, _, _ in TABLES}
        rc = self.cols["fo_runs"]
        self.body_idx, self.key_idx = rc.index("trigger_body"), rc.index("idempotency_key")
        self.deadline_idx = rc.index("deadline")
        self.lease_idx = self.cols["fo_steps"].index("lease_until")
        self.text_idx = {"fo_steps": [self.cols["fo_steps"].index(c) for c in ("inputs", "output")],
                         "fo_events": [self.cols["fo_events"].index("data")]}
        self.by: dict[tuple[str, str], list[Template]] = {}
        for t in templates:
            self.by.setdefault((t.flow_id, t.status), []).append(t)
        self.kind_weight = dict(SUCCEEDED_KINDS + FAILED_KINDS)
        self.flows = [f for f, _, _ in FLOWS]
        self.flow_w = [w for _, w, _ in FLOWS]

    def _template(self, flow_id: str, status: str) -> Template:
        options = self.by[(flow_id, status)]
        if len(options) == 1:
            return options[0]
        return self.rng.choices(options, [self.kind_weight.get(t.kind, 1.0) for t in options])[0]

    def schedule(self) -> list[tuple[float, str, str]]:
        """(created_at, flow id, status) of every clone, in time order."""
        rng, out = self.rng, []
        start = self.now - DAYS * 86400
        statuses, weights = list(STATUS_SHARE), list(STATUS_SHARE.values())
        running = min(RUNNING_RUNS, self.n // 100)
        for _ in range(self.n - running):
            out.append((rng.uniform(start, self.now - RUNNING_WITHIN), rng.choices(self.flows, self.flow_w)[0],
                        rng.choices(statuses, weights)[0]))
        for _ in range(running):
            out.append((rng.uniform(self.now - RUNNING_WITHIN, self.now - 60), rng.choices(self.flows, self.flow_w)[0], "Running"))
        out.sort()
        return out

    def chunks(self, schedule: list[tuple[float, str, str]]) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
        rng = self.rng
        far = self.now + 86400  # Running clones: leases and deadlines ahead, as a live process keeps them
        for base in range(0, len(schedule), CHUNK):
            out: dict[str, list[tuple[Any, ...]]] = {t: [] for t, _, _ in TABLES}
            for i, (created, flow_id, status) in enumerate(schedule[base:base + CHUNK], start=base):
                tpl = self._template(flow_id, status)
                run_id = uuid7_at(int(created * 1000), rng)
                delta = created - tpl.created_at
                order_id = f"ORD-{i:07d}"
                body = _body(rng, order_id)
                subst = ((tpl.order_id, order_id), (tpl.customer, body["customer"]))
                for table, _, _ in TABLES:
                    ri, tix, txt = self.run_idx[table], self.time_idx[table], self.text_idx.get(table, ())
                    dest = out[table]
                    for row in tpl.rows[table]:
                        new = list(row)
                        new[ri] = run_id
                        for j in tix:
                            if new[j] is not None:
                                new[j] += delta
                        for j in txt:
                            if new[j] is not None:
                                for a, b in subst:
                                    new[j] = new[j].replace(a, b)
                        if table == "fo_runs":
                            new[self.body_idx] = json.dumps(body)
                            new[self.key_idx] = None
                            if status == "Running" and new[self.deadline_idx] is not None:
                                new[self.deadline_idx] = far
                        elif table == "fo_steps" and status == "Running" and new[self.lease_idx] is not None:
                            new[self.lease_idx] = far
                        dest.append(tuple(new))
            yield out


def _pick(db: Db, info: SeedInfo, rng: random.Random) -> None:
    """Parameters of the timed queries: run ids for the detail rows, a search hit."""
    p = db.p
    ids = [r[0] for r in db.query(f"SELECT run_id FROM fo_runs WHERE flow_id = {p} AND trigger_key = {p}", (DETAIL_FLOW, "manual"))]
    rng.shuffle(ids)
    info.picks["detail_runs"] = ids[:64]
    info.picks["search_run_id"] = ids[64] if len(ids) > 64 else ids[0]
    info.picks["search_customer"] = "cust-04217"


def seed_sqlite(path: str, templates: list[Template], n: int, now: float, rng: random.Random, info: SeedInfo) -> None:
    db = Db("sqlite", path)
    try:
        cloner = Cloner(templates, db, n, now, rng)
        t0 = time.perf_counter()
        db.conn.execute("BEGIN IMMEDIATE")
        for chunk in cloner.chunks(cloner.schedule()):
            for table, rows in chunk.items():
                cols = cloner.cols[table]
                db.conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
                info.rows[table] = info.rows.get(table, 0) + len(rows)
        db.conn.execute("COMMIT")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        info.insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        db.conn.execute("ANALYZE")
        info.analyze_s = time.perf_counter() - t0
        info.runs = db.query("SELECT count(*) FROM fo_runs")[0][0]
        _pick(db, info, rng)
    finally:
        db.close()
    info.db_bytes = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def seed_postgres(url: str, templates: list[Template], n: int, now: float, rng: random.Random, info: SeedInfo) -> None:
    db = Db("postgres", url)
    try:
        cloner = Cloner(templates, db, n, now, rng)
        t0 = time.perf_counter()
        with db.conn.transaction(), db.conn.cursor() as cur:
            for chunk in cloner.chunks(cloner.schedule()):
                for table, rows in chunk.items():
                    with cur.copy(f"COPY {table} ({', '.join(cloner.cols[table])}) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                    info.rows[table] = info.rows.get(table, 0) + len(rows)
        info.insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # A long-lived database has been vacuumed and analysed by autovacuum: visibility map and statistics.
        db.conn.execute("VACUUM ANALYZE")
        info.analyze_s = time.perf_counter() - t0
        info.runs = db.query("SELECT count(*) FROM fo_runs")[0][0]
        info.db_bytes = db.query("SELECT pg_database_size(current_database())")[0][0]
        _pick(db, info, rng)
    finally:
        db.close()


# -- PostgreSQL databases ----------------------------------------------------------------------------------


def _pg_admin(base_url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt)


def _pg_url(base_url: str, dbname: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


# -- driving the app over ASGI -------------------------------------------------------------------------------


async def asgi_get(app: Any, path: str, query: str = "") -> tuple[int, bytes]:
    """One GET through the ASGI app, in-process; (status, body)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("bench", 80),
    }
    sent = False
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


# -- the queries ---------------------------------------------------------------------------------------------


@dataclass
class Query:
    id: str
    label: str
    requests: Callable[[int], list[tuple[str, str]]]  # round -> [(path, query string)]
    store_parts: Callable[[int], list[tuple[str, Callable[[], Awaitable[Any]]]]]  # round -> [(name, call)]
    headline: bool = False


def queries(orch: Orchestrator, picks: dict[str, Any], now: datetime) -> list[Query]:
    store = orch.store
    detail = picks["detail_runs"]
    since = (now - timedelta(days=7)).replace(microsecond=0)
    until = (now - timedelta(days=DAYS - 1)).replace(microsecond=0)

    def runs_list(label: str, qid: str, headline: bool = False, **params: Any) -> Query:
        qs = urlencode({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in params.items()})
        filt: dict[str, Any] = {k: v for k, v in params.items() if k in ("flow_id", "status", "search", "since", "until")}
        if "status" in filt:
            filt["status"] = RunStatus(filt["status"])
        page: dict[str, Any] = {"offset": int(params.get("offset", 0)), "limit": int(params.get("limit", 50))}
        return Query(qid, label, lambda r: [("/api/runs", qs)], lambda r: [
            ("list_runs", lambda: store.list_runs(RunFilter(**filt), **page)), ("count_runs", lambda: store.count_runs(RunFilter(**filt)))],
            headline)

    def run_of(r: int) -> str:
        return str(detail[r % len(detail)])

    def stats(bucket: str, n: int, width: int) -> Callable[[int], list[tuple[str, Callable[[], Awaitable[Any]]]]]:
        def parts(r: int) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
            t = datetime.now(UTC).timestamp()
            first = datetime.fromtimestamp((t // width) * width - (n - 1) * width, UTC)
            return [("run_stats", lambda: store.run_stats(first, width, n))]

        return parts

    return [
        runs_list("GET /api/runs (first page, 50) = runs list", "runs", headline=True),
        runs_list(f"GET /api/runs?flow_id={FILTER_FLOW}", "runs_flow", flow_id=FILTER_FLOW),
        runs_list("GET /api/runs?status=Failed", "runs_failed", status="Failed"),
        runs_list(f"GET /api/runs?flow_id={FILTER_FLOW}&status=Running", "runs_flow_running", flow_id=FILTER_FLOW, status="Running"),
        runs_list("GET /api/runs?since=<7 days ago>", "runs_since", since=since),
        runs_list("GET /api/runs?until=<29 days ago> (old page)", "runs_until", until=until),
        runs_list(f"GET /api/runs?search={RARE_NOTE.split()[0]} (~1% of bodies)", "runs_search_text", search=RARE_NOTE.split()[0]),
        runs_list(f"GET /api/runs?search={picks['search_customer']} (~20 runs)", "runs_search_rare", search=picks["search_customer"]),
        runs_list("GET /api/runs?search=<a run id>", "runs_search_id", search=picks["search_run_id"]),
        runs_list("GET /api/runs?offset=5000 (deep page)", "runs_deep", offset=5000),
        Query("detail", "GET /api/runs/{id} + /steps = run detail", lambda r: [
            (f"/api/runs/{run_of(r)}", ""), (f"/api/runs/{run_of(r)}/steps", "")], lambda r: [
            ("get_run", lambda: store.get_run(run_of(r))), ("get_steps", lambda: store.get_steps(run_of(r))),
            ("get_attempts", lambda: store.get_attempts(run_of(r)))], headline=True),
        Query("events", "GET /api/runs/{id}/events", lambda r: [(f"/api/runs/{run_of(r)}/events", "")], lambda r: [
            ("get_run", lambda: store.get_run(run_of(r))), ("get_events", lambda: store.get_events(run_of(r), 0, 1000))]),
        Query("active", "GET /api/runs/active", lambda r: [("/api/runs/active", "")], lambda r: [
            ("list_runs", lambda: store.list_runs(RunFilter(status=RunStatus.RUNNING), limit=100)),
            ("count_runs", lambda: store.count_runs(RunFilter(status=RunStatus.RUNNING)))]),
        Query("stats_hour", "GET /api/runs/stats (hour, 24)", lambda r: [("/api/runs/stats", "bucket=hour&buckets=24")],
              stats("hour", 24, 3600)),
        Query("stats_day", "GET /api/runs/stats?bucket=day&buckets=30", lambda r: [("/api/runs/stats", "bucket=day&buckets=30")],
              stats("day", 30, 86400)),
    ]


def summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    p90 = statistics.quantiles(s, n=10, method="inclusive")[8] if len(s) > 1 else s[0]
    return {"median": statistics.median(s), "p90": p90, "max": s[-1], "min": s[0]}


async def measure(url: str, picks: dict[str, Any], repeat: int, warmup: int) -> dict[str, Any]:
    """Time every query through the API and the store methods behind it; rounds interleave the queries."""
    orch = make_orchestrator(url)
    # A client start (no workers, no recovery, no cron): only the timed reads touch the database, and the
    # seeded Running runs stay as they are from one repeat to the next.
    await orch.start(workers=False)
    try:
        app = create_app(orch, auth=NoAuth())
        qs = queries(orch, picks, datetime.now(UTC))
        api: dict[str, list[float]] = {q.id: [] for q in qs}
        parts: dict[str, dict[str, list[float]]] = {q.id: {} for q in qs}
        checks: dict[str, Any] = {}
        for r in range(warmup + repeat):
            for q in qs:
                gc.collect()
                total = 0.0
                for path, query in q.requests(r):
                    t0 = time.perf_counter()
                    status, body = await asgi_get(app, path, query)
                    total += time.perf_counter() - t0
                    if status != 200:
                        raise RuntimeError(f"{q.id}: GET {path}?{query} answered {status}: {body[:300]!r}")
                    if r == warmup:  # what the answers hold, to check the data is there
                        doc = json.loads(body)
                        if "total" in doc:
                            checks[q.id] = doc["total"]
                        for key in ("steps", "events"):
                            if key in doc:
                                checks[f"{q.id} {key}"] = len(doc[key])
                if r >= warmup:
                    api[q.id].append(total * 1000)
                for name, call in q.store_parts(r):
                    t0 = time.perf_counter()
                    await call()
                    elapsed = (time.perf_counter() - t0) * 1000
                    if r >= warmup:
                        parts[q.id].setdefault(name, []).append(elapsed)
    finally:
        await orch.stop()
    return {
        "queries": {q.id: {"label": q.label, "headline": q.headline, "api": {"samples_ms": api[q.id], **summary(api[q.id])},
                           "store": {n: {"samples_ms": v, **summary(v)} for n, v in parts[q.id].items()}} for q in qs},
        "checks": checks,
    }


# -- EXPLAIN ---------------------------------------------------------------------------------------------------


def explain(kind: str, target: str, picks: dict[str, Any]) -> str:
    """Plans of the named queries behind the runs list and the other rows, with this benchmark's parameters."""
    Q = sql.queries(kind)
    db = Db(kind, target)
    now = datetime.now(UTC)
    cases: list[tuple[str, str, Any]] = []
    filters: list[tuple[str, dict[str, Any]]] = [
        ("runs", {}), ("runs_flow", {"flow_id": FILTER_FLOW}), ("runs_failed", {"status": RunStatus.FAILED}),
        ("runs_flow_running", {"flow_id": FILTER_FLOW, "status": RunStatus.RUNNING}),
        ("runs_since", {"since": now - timedelta(days=7)}), ("runs_until", {"until": now - timedelta(days=DAYS - 1)}),
        ("runs_search_text", {"search": RARE_NOTE.split()[0]}), ("runs_search_id", {"search": picks["search_run_id"]})]
    for label, f in filters:
        clause, params = run_filter(Q, RunFilter(**f))
        cases.append((f"{label}: list_runs", Q["list_runs"].replace("{where}", clause), {**params, "limit": 50, "offset": 0}))
        cases.append((f"{label}: count_runs", Q["count_runs"].replace("{where}", clause), params))
    cases.append(("runs_deep: list_runs", Q["list_runs"].replace("{where}", ""), {"limit": 50, "offset": 5000}))
    run_id = picks["detail_runs"][0]
    one = (run_id,)
    cases += [("detail: get_steps", Q["get_steps"], one), ("detail: get_attempts", Q["get_attempts"], one),
              ("events: get_run_events", Q["get_run_events"], {"after": 0, "run_id": run_id, "limit": 1000}),
              ("stats: count_runs_by_status", Q["count_runs_by_status"], ()),
              ("stats_day: runs_per_bucket", Q["runs_per_bucket"], {"since": now.timestamp() - 30 * 86400, "width": 86400, "n": 30})]
    out = []
    try:
        for label, q, params in cases:
            if kind == "sqlite":
                rows = db.query("EXPLAIN QUERY PLAN " + q, params)
                plan = "\n".join(f"    {'  ' * (0 if r[1] == 0 else 1)}{r[3]}" for r in rows)
            else:
                rows = db.query("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + q, params)
                plan = "\n".join("    " + r[0] for r in rows)
            out.append(f"  {label}\n{plan}")
    finally:
        db.close()
    return "\n".join(out)


# -- one store ------------------------------------------------------------------------------------------------


async def run_store(kind: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    info = SeedInfo()
    root = tempfile.mkdtemp(prefix="fo-dash-")
    pg_name = f"fo_bench_{os.urandom(4).hex()}"
    target = ""
    try:
        if kind == "sqlite":
            target = os.path.join(root, "dash.db")
            url = "sqlite:///" + target
        else:
            await asyncio.to_thread(_pg_admin, args.pg, f'CREATE DATABASE "{pg_name}"')
            target = url = _pg_url(args.pg, pg_name)
        t0 = time.perf_counter()
        templates = await make_templates(url, kind, target, rng)
        info.templates_s = time.perf_counter() - t0
        print(f"  {kind}: {len(templates)} template runs through the engine in {info.templates_s:.1f}s", flush=True)
        seed = seed_sqlite if kind == "sqlite" else seed_postgres
        await asyncio.to_thread(seed, target, templates, args.runs, time.time(), rng, info)
        print(f"  {kind}: seeded {info.runs:,} runs ({', '.join(f'{t} {n:,}' for t, n in info.rows.items())}) "
              f"in {info.insert_s:.1f}s + {'ANALYZE' if kind == 'sqlite' else 'VACUUM ANALYZE'} {info.analyze_s:.1f}s; "
              f"database {info.db_bytes / 2**20:,.0f} MiB", flush=True)
        t0 = time.perf_counter()
        res = await measure(url, info.picks, args.repeat, args.warmup)
        print(f"  {kind}: {len(res['queries'])} queries x {args.repeat} rounds in {time.perf_counter() - t0:.1f}s; "
              f"totals: {json.dumps(res['checks'])}", flush=True)
        if args.explain:
            res["explain"] = await asyncio.to_thread(explain, kind, target, info.picks)
        res["seed"] = {"runs": info.runs, "rows": info.rows, "templates_s": info.templates_s, "insert_s": info.insert_s,
                       "analyze_s": info.analyze_s, "total_s": info.total_s, "db_bytes": info.db_bytes}
        return res
    finally:
        if args.keep and target:
            print(f"  {kind}: kept the database for inspection: {target}", flush=True)
        if not (args.keep and kind == "sqlite"):
            shutil.rmtree(root, ignore_errors=True)
        if kind == "postgres" and not args.keep:
            await asyncio.to_thread(_pg_admin, args.pg, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


# -- reporting ---------------------------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return f"{v:,.1f}" if v >= 10 else f"{v:,.2f}"


def table(results: dict[str, Any], part: str) -> str:
    stores = [s for s in results if "queries" in results[s]]
    if not stores:
        return ""
    head = ["query" if part == "api" else "store method (diagnosis)"]
    for s in stores:
        head += [f"{s} median", "p90", "max"] + ([f"<{TARGET_MS:.0f}ms"] if part == "api" else [])
    rows = [head]
    first = results[stores[0]]["queries"]
    for qid, q in first.items():
        if part == "api":
            line = [q["label"]]
            for s in stores:
                m = results[s]["queries"][qid]["api"]
                verdict = ("✓" if m["median"] < TARGET_MS else "✗") if q["headline"] else ""
                line += [_ms(m["median"]), _ms(m["p90"]), _ms(m["max"]), verdict]
            rows.append(line)
        else:
            for name in q["store"]:
                line = [f"{qid}: {name}"]
                for s in stores:
                    m = results[s]["queries"][qid]["store"].get(name)
                    line += [_ms(m["median"]), _ms(m["p90"]), _ms(m["max"])] if m else ["", "", ""]
                rows.append(line)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True, cwd=here).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version, "platform": platform.platform(), "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(), "floworchestrator": floworchestrator.__version__,
        "git_commit": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain", "--", "../src")),
        "args": dict(vars(args)),
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in args.stores:
        if kind == "postgres":
            try:
                import psycopg  # noqa: F401
            except ImportError:
                results[kind] = {"error": "psycopg not installed"}
                print("  postgres: skipped (psycopg not installed)", flush=True)
                continue
        try:
            results[kind] = await run_store(kind, args, random.Random(args.seed))
        except Exception as exc:
            results[kind] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  {kind}: failed: {results[kind]['error']}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres (default both)")
    p.add_argument("--runs", type=int, default=100_000, help="cloned runs to store (default 100000)")
    p.add_argument("--repeat", type=int, default=20, help="timed rounds over every query (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--pg", default=os.environ.get("FLOWORCHESTRATOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="postgres: an admin database URL; a database fo_bench_<random> is created there and dropped after")
    p.add_argument("--seed", type=int, default=1, help="random seed of the data (default 1)")
    p.add_argument("--explain", action="store_true", help="print the query plans (SQLite: EXPLAIN QUERY PLAN; "
                   "PostgreSQL: EXPLAIN ANALYZE) of the named queries behind the rows")
    p.add_argument("--keep", action="store_true", help="keep the seeded databases (SQLite file, PostgreSQL database) "
                   "and print where they are, to try indexes or query plans on them; drop them yourself")
    p.add_argument("--json", metavar="FILE", help="write every sample, the seeding figures and the plans as JSON")
    args = p.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in args.stores:
        if s not in ("sqlite", "postgres"):
            p.error(f"unknown store {s!r} (known: sqlite, postgres)")
    if args.repeat < 1 or args.runs < 1000:
        p.error("--repeat must be at least 1 and --runs at least 1000")

    env = environment(args)
    print(f"floworchestrator {env['floworchestrator']} ({env['git_commit']}{', src modified' if env['git_dirty'] else ''}), "
          f"Python {env['python']}, SQLite {env['sqlite']}, {env['cpus']} CPUs, load {env['load_avg'][0]:.2f}; "
          f"{args.runs:,} runs, repeat {args.repeat} (+{args.warmup} warm-up)", flush=True)
    t0 = time.perf_counter()
    results = asyncio.run(run_all(args))
    print()
    print("Through the API (ms, in-process ASGI; run detail = GET run + GET steps):")
    print(table(results, "api"))
    print()
    print("Store methods directly (ms):")
    print(table(results, "store"))
    for kind, r in results.items():
        if "error" in r:
            print(f"\n{kind}: {r['error']}")
        elif "seed" in r:
            s = r["seed"]
            print(f"\n{kind} seeding: {s['total_s']:.1f}s (template runs {s['templates_s']:.1f}s, clones {s['insert_s']:.1f}s, "
                  f"analyze {s['analyze_s']:.1f}s), {s['runs']:,} runs, {s['db_bytes'] / 2**20:,.0f} MiB")
        if r.get("explain"):
            print(f"\n{kind} plans:\n{r['explain']}")
    print(f"\n{time.perf_counter() - t0:.1f}s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2, default=str)
        print(f"raw numbers written to {args.json}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
