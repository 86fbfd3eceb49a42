"""Background loops of an orchestrator: lease heartbeat, recovery, cron.

Recovery (DESIGN §4.6) finds work that nobody will do otherwise:
- Running steps whose lease ended (their worker died) are queued again at a
  new generation; the lost execution is recorded as a failed attempt.
- Queued steps that no worker claimed for ``stale_after`` seconds (their
  message was lost with a process) are enqueued again; duplicates are
  harmless because only one claim succeeds.
- Running runs with nothing running or queued are re-evaluated by the planner.
With a non-durable runtime the start-up pass re-enqueues every queued step,
since this process's queue is the only place their messages could be.

Cron: every instance computes the next fire time; the run's idempotency key
``cron:{trigger}:{fire time}`` lets exactly one instance start it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from .engine import Engine, utcnow
from .exceptions import FlowDisabledError
from .stores.base import Applied, Effects, ExpireLease, ExtendLeases

log = logging.getLogger("floworchestrator.scheduler")


async def recover(engine: Engine, *, stale_after: float | None) -> int:
    """One recovery pass; ``stale_after=None`` re-enqueues every queued step. Returns how many were acted on.

    Each kind of work is tried on its own, so one failing does not hold up the others.
    """
    now = utcnow()
    count = 0
    try:
        for flow_id, run_id, key, gen in await engine.store.find_expired_leases(now):
            res = await engine.committer.submit(ExpireLease(flow_id, run_id, key, gen, now))
            if isinstance(res, Applied) and res.applied:
                log.warning("lease of step %s of run %s expired; running it again", key, run_id,
                            extra={"event": "step.lease_expired", "run_id": run_id, "step_key": key})
                await engine.apply_effects(res.effects)
                count += 1
    except Exception:
        log.exception("recovery: could not take back expired leases")
    try:
        due_before = now + timedelta(days=36500) if stale_after is None else now - timedelta(seconds=stale_after)
        queued = await engine.store.find_queued(now, due_before)
        if queued:
            await engine.apply_effects(Effects(tuple(queued)))
            count += len(queued)
    except Exception:
        log.exception("recovery: could not re-deliver queued steps")
    try:
        for flow_id, run_id, manifest_id in await engine.store.find_idle_runs():
            await engine.reconcile(flow_id, run_id, manifest_id)
            count += 1
    except Exception:
        log.exception("recovery: could not re-evaluate idle runs")
    try:
        for run_id in await engine.store.find_overdue_runs(now):
            count += await engine.time_out(run_id)
    except Exception:
        log.exception("recovery: could not time out overdue runs")
    return count


async def recovery_loop(engine: Engine, interval: float, stale_after: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await recover(engine, stale_after=stale_after)
        except Exception:
            log.exception("recovery pass failed; trying again in %.0fs", interval)


async def heartbeat_loop(engine: Engine, interval: float) -> None:
    """Keep the leases of steps running in this process from expiring."""
    while True:
        await asyncio.sleep(interval)
        if engine.running:
            try:
                await engine.committer.submit(ExtendLeases(engine.owner, tuple(engine.running), utcnow() + engine.lease))
            except Exception:
                log.exception("could not extend leases")


def next_fire(expression: str, tz: str | None, after: datetime) -> datetime:
    """The first fire time of a cron expression strictly after ``after`` (UTC in, UTC out).

    When a daylight-saving change turns the clock back, a wall-clock time
    happens twice; an expression with a fixed hour fires only at the first
    (a nightly job runs once that night), while an hourly one fires at both.
    """
    zone = ZoneInfo(tz) if tz else UTC
    start = after.astimezone(zone)
    it = croniter(expression, start)
    fixed_hour = len(expression.split()) >= 2 and expression.split()[1] != "*"
    for _ in range(4):
        nxt = it.get_next(datetime)
        assert isinstance(nxt, datetime)
        if not (fixed_hour and nxt.replace(tzinfo=None) <= start.replace(tzinfo=None)):
            return nxt.astimezone(UTC)
    return nxt.astimezone(UTC)


async def schedules(engine: Engine) -> list[tuple[str, str, str, str | None, bool, bool]]:
    """Every cron trigger of the registered flows: (flow_id, trigger, expression in force, timezone, paused, overridden)."""
    saved = await engine.store.get_schedule_overrides()
    out = []
    for c in engine.flows.values():
        for name, t in c.manifest["triggers"].items():
            if t["kind"] != "cron":
                continue
            paused, override = saved.get((c.flow_id, name), (False, None))
            out.append((c.flow_id, name, override or t["expression"], t.get("timezone"), paused, override is not None))
    return out


async def cron_loop(engine: Engine, poll: float = 5.0) -> None:
    """Fire every cron trigger of every registered flow, once per tick across all instances.

    Pauses and expression overrides are read from the store at least every
    ``poll`` seconds, so a change made by another process takes effect soon.
    """
    last = utcnow()
    while True:
        try:
            active = [(fid, name, expr, tz) for fid, name, expr, tz, paused, _ in await schedules(engine) if not paused]
        except Exception:
            log.exception("could not read schedules; trying again in %.0fs", poll)
            active = []
        due = sorted((next_fire(expr, tz, last), fid, name) for fid, name, expr, tz in active)
        now = utcnow()
        wake = min(due[0][0], now + timedelta(seconds=poll)) if due else now + timedelta(seconds=poll)
        await asyncio.sleep(max(0.0, (wake - now).total_seconds()))
        now = utcnow()
        for at, flow_id, name in due:
            if at > now:
                break
            try:
                res = await engine.trigger(flow_id, {"scheduled_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")}, trigger=name, cron_fire=at)
                if res.created:
                    log.info("cron %s of flow %s fired for %s", name, flow_id, at.isoformat(),
                             extra={"event": "cron.fired", "flow_id": flow_id, "trigger": name, "run_id": res.run_id})
            except FlowDisabledError:
                pass
            except Exception:
                log.exception("cron %s of flow %s could not start a run", name, flow_id)
        last = now
