"""EventService: the change log, listed in pages or watched as a stream (R22)."""

from __future__ import annotations

import re

from mandate.api import convert
from mandate.api import validate as v
from mandate.app import App
from mandate.errors import InvalidArgument
from mandate.v1 import events_pb2, events_pb2_grpc

WATCH_BATCH = 500
WATCH_WAIT_SECONDS = 0.5


def event_cursor(field: str, token: str) -> int:
    key = v.page_token(field, token)
    if key and not re.fullmatch(r"[0-9]{1,18}", key):
        raise InvalidArgument(field, "is not a page token returned by Mandate")
    return int(key or 0)


class EventService(events_pb2_grpc.EventServiceServicer):
    def __init__(self, app: App):
        self.events = app.events

    def ListEvents(self, request, context):
        since = v.revision("since_revision", request.since_revision) or 0
        size = v.page_size("page_size", request.page_size)
        organization_id = self.organization_filter(request)
        rows = self.events.list_events(since, event_cursor("page_token", request.page_token), size + 1,
                                       organization_id)
        last = ""
        if len(rows) > size:
            rows = rows[:size]
            last = v.encode_page_token(str(rows[-1].id))
        return events_pb2.ListEventsResponse(events=[convert.event(r) for r in rows], next_page_token=last)

    def organization_filter(self, request) -> str:
        organization_id = v.optional_identifier("organization_id", request.organization_id)
        if organization_id:
            self.events.require_organization(organization_id)
        return organization_id

    def Watch(self, request, context):
        since = v.revision("since_revision", request.since_revision) or 0
        organization_id = self.organization_filter(request)
        cursor = 0
        while context.is_active():
            rows = self.events.list_events(since, cursor, WATCH_BATCH, organization_id)
            for row in rows:
                yield convert.event(row)
                cursor = row.id
            if len(rows) < WATCH_BATCH:
                self.events.wait_for_change(WATCH_WAIT_SECONDS)
