"""EventService: the change log, listed in pages or watched as a stream (R22). Each event says
which calling service made the change (`caller`) on whose behalf (`actor_id`); a read-only
caller sees no email addresses in them."""

from __future__ import annotations

import asyncio
import contextlib
import re

from mandate.engine.index import FactIndex
from mandate.errors import InvalidArgument, OutsideCallerScope
from mandate.events.service import Events
from mandate.runtime import callers, convert
from mandate.runtime import validate as v
from mandate.store.db import Store
from mandate.v1 import events_pb2, events_pb2_grpc

WATCH_BATCH = 500
# How often the change feed looks at the fact index for changes written by other processes
# (the index follows the store by itself; commits of this process wake watchers at once).
FEED_TICK_SECONDS = 0.05


def event_cursor(field: str, token: str) -> int:
    key = v.page_token(field, token)
    if key and not re.fullmatch(r"[0-9]{1,18}", key):
        raise InvalidArgument(field, "is not a page token returned by Mandate")
    return int(key or 0)


class ChangeFeed:
    """Wakes every Watch stream of this server when the fact index reaches a newer revision.

    Events are written in the transaction of their change, so once the index has reached a
    revision every event up to it is readable: a watcher queries again only after the index
    moved past the revision it saw before its last query, and an idle stream costs nothing."""

    def __init__(self, index: FactIndex, store: Store):
        self.index = index
        self.store = store
        self._changed: asyncio.Future | None = None
        self._ticker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """On the server's event loop."""
        self._loop = asyncio.get_running_loop()
        self._ticker = self._loop.create_task(self._tick())
        self.store.on_commit(self._committed)

    async def stop(self) -> None:
        self._loop = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def _committed(self, _revision: int) -> None:  # a worker thread, after a local commit
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def _tick(self) -> None:
        seen = self.index.revision
        while True:
            await asyncio.sleep(FEED_TICK_SECONDS)
            if self.index.revision != seen:
                seen = self.index.revision
                self._wake()

    async def wait_beyond(self, revision: int) -> None:
        """Return once the fact index is past `revision`."""
        while self.index.revision <= revision:
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.wait((self._changed,))  # shared by every watcher: never cancel it


class EventService(events_pb2_grpc.EventServiceServicer):
    def __init__(self, events: Events, index: FactIndex, run=None, changes: ChangeFeed | None = None):
        self.events = events
        self.index = index
        self.run = run  # runs blocking work in the server's worker pool (see runtime/pool.py)
        self.changes = changes

    def ListEvents(self, request, context):
        since = v.revision("since_revision", request.since_revision) or 0
        size = v.page_size("page_size", request.page_size)
        organizations = self.organization_filter(request)
        rows = self.events.list_events(since, event_cursor("page_token", request.page_token), size + 1,
                                       organizations)
        without_emails = callers.current_read_only()
        events, last = convert.page(rows, size, lambda row: str(row.id), lambda row: convert.event(row, without_emails))
        return events_pb2.ListEventsResponse(events=events, next_page_token=last)

    def organization_filter(self, request) -> tuple[str, ...]:
        """The organizations whose events the request gets (empty: all): the one it names, within
        those the callers file lets the caller see."""
        organization_id = v.optional_identifier("organization_id", request.organization_id)
        allowed = callers.current_event_organizations()
        if allowed is not None and organization_id and organization_id not in allowed:
            raise OutsideCallerScope(f"organization_id: this caller may see the events of {len(allowed)} "
                                     "organization(s) only (callers file: organizations, event_organizations)")
        if organization_id:
            self.events.require_organization(organization_id)
            return (organization_id,)
        return tuple(sorted(allowed)) if allowed is not None else ()

    async def Watch(self, request, context):
        """Holds no thread: queries run in the worker pool, waiting costs nothing."""
        since = v.revision("since_revision", request.since_revision) or 0
        organizations = await self.run(context, self.organization_filter, request)
        without_emails = callers.current_read_only()
        cursor = 0
        while True:
            seen = self.index.revision
            rows = await self.run(context, self.events.list_events, since, cursor, WATCH_BATCH, organizations)
            for row in rows:
                yield convert.event(row, without_emails)
                cursor = row.id
            if len(rows) < WATCH_BATCH:
                await self.changes.wait_beyond(seen)
