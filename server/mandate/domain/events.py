"""The change log as a stream (R22)."""

from __future__ import annotations

import threading

from sqlalchemy import select

from mandate.store import models
from mandate.store.db import Store


class Events:
    def __init__(self, store: Store):
        self.store = store
        self._changed = threading.Condition()
        store.on_commit(self._notify)

    def _notify(self, _revision: int) -> None:
        with self._changed:
            self._changed.notify_all()

    def list_events(self, since_revision: int, after_id: int, limit: int) -> list[models.Event]:
        statement = select(models.Event).where(models.Event.revision > since_revision)
        if after_id:
            statement = statement.where(models.Event.id > after_id)
        with self.store.read() as session:
            return list(session.execute(statement.order_by(models.Event.id).limit(limit)).scalars())

    def wait_for_change(self, timeout: float) -> None:
        """Block until a local commit or the timeout (writes by other processes show up by polling)."""
        with self._changed:
            self._changed.wait(timeout)
