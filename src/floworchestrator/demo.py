"""Sample flows and handlers for ``floworchestrator demo``.

Three flows show the main ideas:

- ``orders`` — a linear pipeline (fetch → transform → store) whose inputs
  read the trigger body and earlier steps' outputs through ``@`` expressions;
- ``diamond`` — two branches where one fails: the join after them is
  Skipped, and an alert step that runs only after a failure handles it;
- ``heartbeat`` — a flow on a cron schedule (every minute).

``build(store_url)`` makes a fresh Orchestrator with all three. The
module-level ``orchestrator`` is built from ``FLOWORCHESTRATOR_STORE``
(default ``sqlite:///floworchestrator-demo.db``) the first time it is read,
so the other commands can load it::

    floworchestrator runs --app floworchestrator.demo:orchestrator --store sqlite:///floworchestrator-demo.db
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import Cron, Flow, Manual, Orchestrator, Step, StepContext

__all__ = ["DEFAULT_STORE", "FLOWS", "DemoRun", "build", "demo_runs", "orchestrator"]

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


HANDLERS: dict[str, Callable[..., Any]] = {
    "FetchOrder": fetch_order,
    "PriceOrder": price_order,
    "SaveInvoice": save_invoice,
    "CheckStock": check_stock,
    "CheckCredit": check_credit,
    "Ship": ship,
    "Alert": alert,
    "Heartbeat": heartbeat,
}


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
)


@dataclass(frozen=True, slots=True)
class DemoRun:
    """A run the ``demo`` command starts, and what it shows."""

    flow_id: str
    body: Any
    note: str
    trigger: str = "manual"


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
    ]


def build(store_url: str, **options: Any) -> Orchestrator:
    """A new in-process Orchestrator on ``store_url`` with the demo's handlers and flows."""
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
