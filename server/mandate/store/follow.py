"""Following the writes of other processes: replicas on one PostgreSQL, the CLI, a second server.

On PostgreSQL every write transaction sends `NOTIFY mandate_changes, '<revision>'`, delivered
when it commits; `ChangeFeed.wait()` returns as soon as one arrives, so a replica catches up
within milliseconds of another replica's commit. The timeout is the fallback (a lost
notification, a database that came back): the caller catches up after it in any case.
On SQLite there is nothing to listen to and `wait()` is just the timer.
"""

from __future__ import annotations

import contextlib
import threading

from mandate.store.db import CHANNEL, Store


class ChangeFeed:
    def __init__(self, store: Store, stop: threading.Event):
        self.store = store
        self._stop = stop
        self._connection = None

    def wait(self, timeout: float) -> int | None:
        """Until another transaction commits, or `timeout` seconds. Returns the newest revision
        notified (None after the timeout, or for a notification that names none). Raises the
        driver's error when the database is lost (the caller marks it so, and calls again later)."""
        if not self.store.postgres:
            self._stop.wait(timeout)
            return None
        if self._connection is None:
            self._connection = self._listen()
        revisions = []
        try:
            for notification in self._connection.notifies(timeout=timeout, stop_after=1):
                revisions.append(notification.payload)
            # Several commits in a row need one catch-up: take the notifications already here.
            for notification in self._connection.notifies(timeout=0.001):
                revisions.append(notification.payload)
        except Exception:
            self.reset()
            raise
        try:
            return max(int(revision) for revision in revisions) if revisions else None
        except ValueError:
            return None

    def _listen(self):
        import psycopg

        engine = self.store.engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        connection = psycopg.connect(*args, **kwargs, autocommit=True, application_name="mandate-listen",
                                     connect_timeout=self.store.settings.connect_timeout)
        try:
            connection.execute(f"LISTEN {CHANNEL}")
        except Exception:
            connection.close()
            raise
        return connection

    def reset(self) -> None:
        """Drop the listening connection; the next `wait()` opens a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        self.reset()
