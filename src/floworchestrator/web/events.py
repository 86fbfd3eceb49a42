"""Live run and step events as Server-Sent Events (``GET /api/events/stream``).

One :class:`EventFeed` per app reads the store's event log (``Store.get_events``)
every ``poll_interval`` seconds while at least one client listens, and fans the
new events out to every connected stream; a stream for one run
(``?run_id=``) gets that run's events only. Reading the store rather than
listening to this process means a stream sees the events of every process
that shares the store (workers elsewhere, the CLI), within about
``poll_interval`` seconds.

Out-of-order commits: with several writer connections (PostgreSQL), event
ids are taken in one order and committed in another, so an event with a
smaller id can become visible after a larger one was read. The feed reads
again from the first id it has not seen (a gap), at most ``LOOKBACK`` ids
below the greatest, and delivers any id it has not delivered yet, so such a
late event is still sent (unless it is more than ``LOOKBACK`` ids late).

Each message is ``id: <event id>`` plus ``data: <event as JSON>`` (the shape
of ``GET /api/runs/{run_id}/events``). A client that reconnects sends the
standard ``Last-Event-ID`` header (browsers' ``EventSource`` does) and first
receives what it missed, read from the store; the first thing a stream sends
is an ``id:`` line without data, so even a quiet stream has a resume point.
Comment lines keep idle connections open. A stream ends by itself after
``LIFETIME`` seconds (the browser reconnects and resumes) and when the
orchestrator stops, so a server shutting down gracefully is not held up by
open dashboards.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..stores.base import EventRecord, Store
from ._http import ApiError, event_json, json_default

__all__ = ["EventFeed", "close_event_streams", "stream_events"]

log = logging.getLogger("floworchestrator.web")

LOOKBACK = 256
"""How many ids below the cursor the feed re-reads for events committed late."""
BATCH = 500
HEARTBEAT = 15.0
"""Seconds of silence after which a stream sends a comment line (keeps proxies from closing it)."""
LIFETIME = 15.0
"""Seconds after which a stream ends by itself (the browser reconnects and resumes; no event is lost)."""
CHECK_EVERY = 1.0
"""How often a quiet stream checks whether to end (lifetime, orchestrator stopped)."""
QUEUE_LIMIT = 5000
"""Events a slow client may have waiting; beyond that its stream ends and the browser reconnects and catches up."""


@dataclass(eq=False)
class _Listener:
    run_id: str | None
    queue: asyncio.Queue[EventRecord | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))


class _Seen:
    """Which event ids were delivered: every id up to ``floor``, and those in ``_ids`` above it.

    ``after`` is where the next read starts: just past the first id not seen
    yet (an id taken by a transaction that has not committed, or rolled back),
    but never more than ``LOOKBACK`` below the greatest id seen.
    """

    def __init__(self, floor: int) -> None:
        self.floor = self.cursor = self._contiguous = floor
        self._ids: set[int] = set()

    def fresh(self, events: list[EventRecord]) -> list[EventRecord]:
        out = []
        for e in events:
            i = e.event_id
            if i <= self.floor or i in self._ids:
                continue
            self._ids.add(i)
            out.append(e)
            self.cursor = max(self.cursor, i)
        self._contiguous = max(self._contiguous, self.cursor - LOOKBACK)
        while self._contiguous + 1 in self._ids or self._contiguous + 1 <= self.floor:
            self._contiguous += 1
        if len(self._ids) > 2 * LOOKBACK:
            self.floor = self.cursor - LOOKBACK
            self._ids = {i for i in self._ids if i > self.floor}
        return out

    @property
    def after(self) -> int:
        return max(0, self._contiguous)


async def _read_new(store: Store, seen: _Seen, run_id: str | None) -> list[EventRecord]:
    """Every event not delivered yet (re-reading the lookback window), oldest first."""
    out: list[EventRecord] = []
    after = seen.after
    while True:
        batch = await store.get_events(run_id, after, BATCH)
        out.extend(seen.fresh(batch))
        if len(batch) < BATCH:
            return out
        after = batch[-1].event_id


class EventFeed:
    """Polls the store's event log for the app's live streams (one reader however many clients)."""

    def __init__(self, *, poll_interval: float = 0.2) -> None:
        self._store: Store | None = None
        self.poll_interval = poll_interval
        self._listeners: set[_Listener] = set()
        self._task: asyncio.Task[None] | None = None
        self._seen: _Seen | None = None
        self.ended = False

    async def subscribe(self, store: Store, run_id: str | None) -> _Listener:
        self._store = store
        listener = _Listener(run_id)
        if self.ended:  # the server is shutting down: the stream ends at once
            listener.queue.put_nowait(None)
            return listener
        if self._task is None or self._task.done():
            self._seen = _Seen(await store.last_event_id())
            self._task = asyncio.create_task(self._poll(), name="floworchestrator-event-feed")
        self._listeners.add(listener)
        return listener

    @property
    def cursor(self) -> int:
        """The greatest event id the feed has delivered or started after."""
        return self._seen.cursor if self._seen else 0

    def unsubscribe(self, listener: _Listener) -> None:
        self._listeners.discard(listener)

    def end_streams(self) -> None:
        """End every open stream now, and any opened later (a server shutting down calls this)."""
        self.ended = True
        for listener in list(self._listeners):
            self._listeners.discard(listener)
            _end(listener)

    async def _poll(self) -> None:
        assert self._store is not None and self._seen is not None
        while self._listeners:
            try:
                events = await _read_new(self._store, self._seen, None)
            except Exception as exc:  # the store is down for a moment: keep the streams, try again
                log.warning("event stream: reading events failed: %s", exc, extra={"event": "web.events_read_failed"})
                events = []
            for e in events:
                for listener in list(self._listeners):
                    if listener.run_id is None or listener.run_id == e.run_id:
                        try:
                            listener.queue.put_nowait(e)
                        except asyncio.QueueFull:  # a client that does not read: end its stream
                            self._listeners.discard(listener)
                            _end(listener)
            await asyncio.sleep(self.poll_interval)


def _end(listener: _Listener) -> None:
    """Make the listener's stream end after what it was already given (at once if its queue is full)."""
    try:
        listener.queue.put_nowait(None)
    except asyncio.QueueFull:
        listener.queue = asyncio.Queue(1)
        listener.queue.put_nowait(None)


def close_event_streams(app: Starlette) -> None:
    """End the open event streams of an app made by :func:`~floworchestrator.web.create_app` (and refuse new
    ones), e.g. when the server starts a graceful shutdown; browsers reconnect to the next server. Without
    it, a stream ends by itself within ``LIFETIME`` seconds."""
    feed = getattr(app.state, "floworchestrator_event_feed", None)
    if not isinstance(feed, EventFeed):
        raise TypeError("close_event_streams needs an app made by floworchestrator.web.create_app")
    feed.end_streams()


def _message(e: EventRecord) -> str:
    data = json.dumps(event_json(e), ensure_ascii=False, separators=(",", ":"), default=json_default)
    return f"id: {e.event_id}\ndata: {data}\n\n"


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return None
    if not raw.strip().isdigit():
        raise ApiError(400, "bad_request", f"Last-Event-ID (or after) must be a whole number, not {raw!r}")
    return int(raw)


async def stream_events(
    request: Request, feed: EventFeed, store: Store, *, alive: Callable[[], bool] = lambda: True, heartbeat: float | None = None
) -> Response:
    """The SSE response: missed events (after ``Last-Event-ID``) from the store, then live ones from ``feed``.

    A stream ends by itself after ``LIFETIME`` seconds, and as soon as ``alive()`` is False (the
    orchestrator stopped): the browser reconnects on its own and resumes after the last id it got,
    and a server shutting down gracefully does not wait for open dashboards.
    """
    run_id = request.query_params.get("run_id") or None
    if run_id is not None and await store.get_run(run_id) is None:
        raise ApiError(404, "not_found", f"unknown run {run_id!r}")
    resume = _last_event_id(request)
    listener = await feed.subscribe(store, run_id)
    every = HEARTBEAT if heartbeat is None else heartbeat
    lifetime = LIFETIME

    async def body() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + lifetime
        try:
            # An id without data sets the browser's resume point without an event: a reconnect (after
            # LIFETIME, or a dropped connection) then replays from here even if no event came meanwhile.
            start = resume if resume is not None else feed.cursor
            yield f"retry: 1000\nid: {start}\n: floworchestrator events{' of run ' + run_id if run_id else ''}\n\n"
            delivered = _Seen(resume or 0)
            if resume is not None:  # catch up from the store; what the live feed also brings is sent once
                for e in await _read_new(store, delivered, run_id):
                    yield _message(e)
            quiet_since = loop.time()
            while alive():
                now = loop.time()
                if now >= ends_at:
                    return
                try:
                    item = await asyncio.wait_for(listener.queue.get(), min(CHECK_EVERY, every, ends_at - now))
                except TimeoutError:
                    if loop.time() - quiet_since >= every:
                        quiet_since = loop.time()
                        yield ": keepalive\n\n"
                    continue
                if item is None:
                    return
                if delivered.fresh([item]):
                    quiet_since = loop.time()
                    yield _message(item)
        finally:
            feed.unsubscribe(listener)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
