"""Rows of the named queries to records, shared by the SQL stores.

Both dialects return the same columns in the same order for the same named
query (``queries.sql``), times as epoch seconds and JSON as text, so one
conversion serves both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .._status import RunStatus, StepStatus
from .base import AttemptRecord, EventRecord, FlowRecord, RunFilter, RunRecord, RunStats, SignalRecord, StepRecord

STEP_STATUS = {s.value: s for s in StepStatus}
RUN_STATUS = {s.value: s for s in RunStatus}
Row = Sequence[Any]


def ts(dt: datetime) -> float:
    return dt.timestamp()


def dt(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(x, UTC)


def dt_req(x: float) -> datetime:
    return datetime.fromtimestamp(x, UTC)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def flow_record(r: Row) -> FlowRecord:
    """``list_flows``."""
    return FlowRecord(r[0], r[1], r[2], json.loads(r[3]), bool(r[4]), dt(r[5]) or datetime.now(UTC))


def run_record(r: Row) -> RunRecord:
    """``get_run``, ``list_runs``."""
    return RunRecord(
        r[0], r[1], RUN_STATUS[r[2]], r[3], r[4], loads(r[5]), loads(r[6]) or {}, r[7], dt_req(r[8]), dt(r[9]), dt(r[10])
    )


def step_record(r: Row) -> StepRecord:
    """``get_steps``."""
    return StepRecord(
        r[0], r[1], STEP_STATUS[r[2]], r[3], bool(r[4]), r[5], loads(r[6]), loads(r[7]), r[8],
        dt(r[9]), dt(r[10]), r[11], dt(r[12]), dt(r[13]), loads(r[14]), r[15],
    )


def attempt_record(r: Row) -> AttemptRecord:
    """``get_attempts``."""
    return AttemptRecord(r[0], r[1], r[2], r[3], STEP_STATUS[r[4]], r[5], dt_req(r[6]), dt_req(r[7]), r[8])


def event_record(r: Row) -> EventRecord:
    """``get_events``."""
    return EventRecord(r[0], r[1], r[2], r[3], loads(r[4]), dt_req(r[5]))


def signal_record(r: Row) -> SignalRecord:
    """``get_signals``."""
    return SignalRecord(r[0], r[1], r[2], loads(r[3]), dt_req(r[4]), r[5])


RUN_ID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def like_pattern(search: str) -> str:
    """A LIKE pattern matching ``search`` anywhere (``\\``, ``%`` and ``_`` taken literally)."""
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def run_filter(queries: Mapping[str, str], where: RunFilter) -> tuple[str, dict[str, Any]]:
    """The ``{where}`` of ``list_runs`` / ``count_runs`` and its parameters: the ``runs_where_*`` fragments
    of the filters given, so that each filter can use its index (fragments are constants; values are bound)."""
    params: dict[str, Any] = {
        "flow_id": where.flow_id,
        "status": where.status.value if where.status else None,
        "since": None if where.since is None else where.since.timestamp(),
        "until": None if where.until is None else where.until.timestamp(),
    }
    parts = [queries[f"runs_where_{name}"] for name, value in params.items() if value is not None]
    search = where.search
    if search:
        if RUN_ID_SHAPE.fullmatch(search.lower()):
            params["run_id"] = search.lower()
            parts.append(queries["runs_where_run_id"])
        else:
            params["search"] = like_pattern(search)
            parts.append(queries["runs_where_search"])
    return ("WHERE " + " AND ".join(parts)) if parts else "", params


def run_stats(by_status: Sequence[Row], by_bucket: Sequence[Row]) -> RunStats:
    """``count_runs_by_status`` and ``runs_per_bucket``."""
    return RunStats(
        {RUN_STATUS[r[0]]: int(r[1]) for r in by_status},
        [(int(r[0]), RUN_STATUS[r[1]], int(r[2])) for r in by_bucket],
    )
