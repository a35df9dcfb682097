"""The change log as a stream (R22)."""

from __future__ import annotations

from sqlalchemy import or_, select

from mandate.shared.common import get_organization
from mandate.store import models
from mandate.store.db import Store


class Events:
    def __init__(self, store: Store):
        self.store = store

    def require_organization(self, organization_id: str) -> None:
        """A filter naming no organization is a mistake to report, not an empty stream forever."""
        with self.store.read() as session:
            get_organization(session, organization_id)

    def list_events(self, since_revision: int, after_id: int, limit: int,
                    organizations: str | tuple[str, ...] = ()) -> list[models.Event]:
        """Events after `since_revision` (and after the event `after_id`), in order. With
        `organizations` (one id, or several), only the events that concern one of them, as the
        place of the change or as the other party (a partner's client, a linked account)."""
        if isinstance(organizations, str):
            organizations = (organizations,) if organizations else ()
        statement = select(models.Event).where(models.Event.revision > since_revision)
        if after_id:
            statement = statement.where(models.Event.id > after_id)
        if organizations:
            statement = statement.where(or_(models.Event.organization_id.in_(organizations),
                                            models.Event.other_organization_id.in_(organizations)))
        with self.store.read() as session:
            return list(session.execute(statement.order_by(models.Event.id).limit(limit)).scalars())
