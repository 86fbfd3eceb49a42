"""Sample flows and handlers for ``floworchestrator demo``.

Four flows show the main ideas:

- ``orders`` — a linear pipeline (fetch → transform → store) whose inputs
  read the trigger body and earlier steps' outputs through ``@`` expressions;
- ``diamond`` — two branches where one fails: the join after them is
  Skipped, and an alert step that runs only after a failure handles it;
- ``heartbeat`` — a flow on a cron schedule (every minute);
- ``features`` — the step features in one run: a ``when`` branch (two
  branches with opposite conditions and a join that accepts either being
  skipped), a ``ForEach`` over the trigger body's items, a polling step
  (``@poll``) and an approval step that waits for a signal
  (``WaitForSignal``), which the demo sends with ``orchestrator.signal``;
  it also has a Webhook trigger, served by ``floworchestrator serve`` at
  ``POST /webhook/features``.

``build(store_url)`` makes a fresh Orchestrator with all four. The
module-level ``orchestrator`` is built from ``FLOWORCHESTRATOR_STORE``
(default ``sqlite:///floworchestrator-demo.db``) the first time it is read,
so the other commands can load it::

    floworchestrator runs --app floworchestrator.demo:orchestrator --store sqlite:///floworchestrator-demo.db

The demo's orchestrator runs recovery every second and re-delivers steps
queued for more than two seconds, so a signal sent from another process
(``floworchestrator signal RUN_ID approval ...``) resumes a waiting run of
``features`` within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import After, Cron, Flow, ForEach, Manual, Orchestrator, Step, StepContext, WaitForSignal, Webhook, poll

__all__ = ["APPROVAL", "DEFAULT_STORE", "FLOWS", "DemoRun", "approve_when_waiting", "build", "demo_runs", "orchestrator"]

orchestrator: Orchestrator
"""Built from ``FLOWORCHESTRATOR_STORE`` on first access (see ``__getattr__`` below)."""

DEFAULT_STORE = "sqlite:///floworchestrator-demo.db"

_CATALOGUE = {
    "A-17": [{"sku": "kettle", "qty": 1, "price": 39.5}, {"sku": "mug", "qty": 4, "price": 6.25}],
    "B-42": [{"sku": "teapot", "qty": 1, "price": 54.0}],
}


# --- handlers -------------------------------------------------------------------


async def fetch_order(inputs: dict[str, Any]) -> dict[str, Any]:
    """Look an order up (in a dict standing in for a database or an API)."""
    order_id = inputs["order_id"]
    if order_id not in _CATALOGUE:
        raise LookupError(f"no order {order_id!r}")
    return {"order_id": order_id, "lines": _CATALOGUE[order_id]}


def price_order(inputs: dict[str, Any]) -> dict[str, Any]:
    """A plain (sync) handler: it runs in a worker thread."""
    lines = inputs["lines"]
    subtotal = sum(line["qty"] * line["price"] for line in lines)
    vat = round(subtotal * inputs["vat_rate"], 2)
    return {"items": sum(line["qty"] for line in lines), "subtotal": subtotal, "vat": vat, "total": round(subtotal + vat, 2)}


async def save_invoice(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    ctx.logger.info("saving invoice for %s", inputs["order_id"])
    return {"invoice": f"INV-{inputs['order_id']}", "total": inputs["total"]}


async def check_stock(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"in_stock": True, "warehouse": inputs["warehouse"]}


async def check_credit(inputs: dict[str, Any]) -> dict[str, Any]:
    raise ConnectionError(f"credit bureau {inputs['bureau']!r} did not answer")


async def ship(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"shipped": True}


async def alert(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    ctx.logger.warning("run %s: %s", ctx.run_id, inputs["error"])
    return {"paged": "on-call", "about": inputs["error"]}


async def heartbeat(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"ok": True, "trigger": ctx.trigger_key, "scheduled_at": inputs.get("scheduled_at")}


async def check_order(inputs: dict[str, Any]) -> dict[str, Any]:
    items = inputs["items"] or []
    return {"amount": inputs["amount"], "items": len(items)}


async def route(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"lane": inputs["lane"]}


async def merge(inputs: dict[str, Any]) -> dict[str, Any]:
    """The join: it runs whichever branch was skipped, and sees their statuses."""
    return {"review": inputs["review"], "fast": inputs["fast"]}


async def pack_item(inputs: dict[str, Any]) -> dict[str, Any]:
    """A ForEach child: ``loop_item`` is this iteration's item, ``loop_index`` its position."""
    item = inputs["loop_item"]
    await asyncio.sleep(0.05)  # long enough for the two concurrent iterations to overlap
    return {"sku": item["sku"], "box": "large" if item["qty"] > 2 else "small", "parcel": inputs["loop_index"] + 1}


@poll(interval=0.2, timeout=30, until="state", equals=["done"])
async def track_parcels(inputs: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Ask a (pretend) carrier how the parcels are doing; it says done on the third call."""
    state = "done" if ctx.attempt >= 3 else "in_transit"
    return {"state": state, "checks": ctx.attempt, "parcels": len(inputs["parcels"] or [])}


async def release(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"released": True, "approved_by": inputs["approved_by"]}


HANDLERS: dict[str, Callable[..., Any]] = {
    "FetchOrder": fetch_order,
    "PriceOrder": price_order,
    "SaveInvoice": save_invoice,
    "CheckStock": check_stock,
    "CheckCredit": check_credit,
    "Ship": ship,
    "Alert": alert,
    "Heartbeat": heartbeat,
    "CheckOrder": check_order,
    "Route": route,
    "Merge": merge,
    "PackItem": pack_item,
    "TrackParcels": track_parcels,
    "Release": release,
}

#: The signal the ``features`` flow's approval step waits for.
APPROVAL = "approval"


# --- flows ------------------------------------------------------------------------

FLOWS = (
    Flow(
        id="orders",
        description="A linear pipeline: fetch an order, price it, save the invoice.",
        steps={
            "fetch": Step("FetchOrder", inputs={"order_id": "@triggerBody()?.orderId"}),
            "price": Step(
                "PriceOrder",
                run_after={"fetch": ["Succeeded"]},
                inputs={"lines": "@steps('fetch').output.lines", "vat_rate": 0.2},
            ),
            "store": Step(
                "SaveInvoice",
                run_after={"price": ["Succeeded"]},
                inputs={"order_id": "@steps('fetch').output.order_id", "total": "@steps('price').output.total"},
            ),
        },
    ),
    Flow(
        id="diamond",
        description="Two branches, one fails: the join is skipped and the alert runs.",
        steps={
            "start": Step("CheckStock", inputs={"warehouse": "@triggerBody()?.warehouse"}),
            "stock": Step("CheckStock", run_after={"start": ["Succeeded"]}, inputs={"warehouse": "north"}),
            "credit": Step("CheckCredit", run_after={"start": ["Succeeded"]}, inputs={"bureau": "acme"}),
            "ship": Step("Ship", run_after={"stock": ["Succeeded"], "credit": ["Succeeded"]}),
            "alert": Step("Alert", run_after={"credit": ["Failed"]}, inputs={"error": "@steps('credit').error"}),
        },
    ),
    Flow(
        id="heartbeat",
        description="Runs every minute while an orchestrator is up.",
        triggers={"manual": Manual(), "every_minute": Cron("* * * * *")},
        steps={"beat": Step("Heartbeat", inputs={"scheduled_at": "@triggerBody()?.scheduled_at"})},
    ),
    Flow(
        id="features",
        description="A when branch, a ForEach, a polling step and an approval that waits for a signal.",
        # `floworchestrator serve --app floworchestrator.demo:orchestrator` serves POST /webhook/features.
        triggers={"manual": Manual(), "webhook": Webhook("features")},
        steps={
            "check": Step("CheckOrder", inputs={"amount": "@triggerBody()?.amount", "items": "@triggerBody()?.items"}),
            # Two branches with opposite conditions: exactly one runs, the other is Skipped with a trace of why.
            "review": Step(
                "Route",
                run_after={"check": After(["Succeeded"], when="@steps('check').output.amount > 100")},
                inputs={"lane": "manual review"},
            ),
            "fast": Step(
                "Route",
                run_after={"check": After(["Succeeded"], when="@steps('check').output.amount <= 100")},
                inputs={"lane": "fast lane"},
            ),
            "join": Step(
                "Merge",
                run_after={"review": ["Succeeded", "Skipped"], "fast": ["Succeeded", "Skipped"]},
                inputs={"review": "@steps('review').status", "fast": "@steps('fast').status"},
            ),
            # One "pack" child per item of the trigger body, two at a time.
            "pack": ForEach("@triggerBody()?.items", {"pack": Step("PackItem")}, concurrency=2, run_after={"join": ["Succeeded"]}),
            # Polled every 0.2 s, without holding a worker, until the carrier says done.
            "track": Step("TrackParcels", run_after={"pack": ["Succeeded"]}, inputs={"parcels": "@steps('pack').output"}),
            # Waits (without holding a worker) for orchestrator.signal(run_id, "approval", payload).
            "approval": WaitForSignal(APPROVAL, timeout=600, run_after={"track": ["Succeeded"]}),
            "release": Step("Release", run_after={"approval": ["Succeeded"]}, inputs={"approved_by": "@steps('approval').output.by"}),
        },
    ),
)


async def approve_when_waiting(orch: Orchestrator, run_id: str, timeout: float = 20.0) -> None:
    """What an approver does: wait until the run's approval step waits for its signal, then send it.

    Returns without sending if the run ends first; TimeoutError if the step
    does not get there within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        steps = await orch.get_steps(run_id)
        if any(s.step_key == "approval" and s.waiting_signal == APPROVAL for s in steps):
            break
        run = await orch.get_run(run_id)
        if run is None or run.status.is_final:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"the approval step of run {run_id} did not wait for its signal within {timeout:g}s")
        await asyncio.sleep(0.05)
    await orch.signal(run_id, APPROVAL, {"by": "demo", "comment": "looks good"})


@dataclass(frozen=True, slots=True)
class DemoRun:
    """A run the ``demo`` command starts, and what it shows."""

    flow_id: str
    body: Any
    note: str
    trigger: str = "manual"
    drive: Callable[[Orchestrator, str], Awaitable[None]] | None = None
    """Run while the demo waits for this run (``features`` uses it to send the approval signal)."""


def demo_runs() -> list[DemoRun]:
    """The runs the ``demo`` command starts, in order."""
    tick = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00Z")
    return [
        DemoRun("orders", {"orderId": "A-17"}, "each step reads the trigger body or an earlier step's output"),
        DemoRun("orders", {"orderId": "Z-99"}, "fetch fails and nothing handles that: the steps after it are skipped"),
        DemoRun(
            "diamond",
            {"warehouse": "south"},
            "credit fails, so ship (it needs both branches) is skipped and alert (run_after credit: Failed) runs;"
            " that handles the failure, so the run succeeds",
        ),
        DemoRun(
            "heartbeat",
            {"scheduled_at": tick},
            "started through its cron trigger, as the scheduler does every minute",
            trigger="every_minute",
        ),
        DemoRun(
            "features",
            {"amount": 120, "items": [{"sku": "kettle", "qty": 1}, {"sku": "mug", "qty": 4}, {"sku": "teapot", "qty": 1}]},
            "amount 120 > 100: review runs and fast is skipped (its trace says why); join accepts either;"
            " pack runs once per item, two at a time; track polls until the third check says done;"
            " approval waits until the demo calls orchestrator.signal(run_id, 'approval', {'by': 'demo', ...})",
            drive=approve_when_waiting,
        ),
    ]


def build(store_url: str, **options: Any) -> Orchestrator:
    """A new in-process Orchestrator on ``store_url`` with the demo's handlers and flows.

    Recovery runs every second and re-delivers steps queued for more than two
    seconds (unless ``options`` say otherwise), so work queued by another
    process — a signal, a retry, a rerun — is picked up quickly.
    """
    options.setdefault("recovery_interval", 1.0)
    options.setdefault("stale_after", 2.0)
    orch = Orchestrator(store=store_url, runtime="inprocess", **options)
    for type_name, func in HANDLERS.items():
        orch.add_handler(type_name, func)
    orch.register(*FLOWS)
    return orch


def __getattr__(name: str) -> Any:
    # ``orchestrator`` is built on first access, so importing this module for
    # ``build`` alone neither reads the environment nor creates a store.
    if name == "orchestrator":
        orch = build(os.environ.get("FLOWORCHESTRATOR_STORE") or DEFAULT_STORE)
        globals()["orchestrator"] = orch
        return orch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
