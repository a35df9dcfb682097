"""Engine, sessions and the write transaction.

Every write runs in `Store.write()`: one transaction that first takes the next revision
(which also serializes writers on every engine), lets the caller change rows and record
events, and commits on success or rolls back on any error. A refused mutation therefore
changes nothing, and business rules checked inside it cannot race.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from mandate import deadlines
from mandate.store import models

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _unicode_lower(value):
    return value.lower() if isinstance(value, str) else value


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Let SQLAlchemy, not the driver, issue BEGIN (see _sqlite_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # a committed change survives a crash
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # SQLite's own lower() folds ASCII only; searches by customer name are case-insensitive
            # for "MÜLLER" too, as on PostgreSQL.
            dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            # Writers take the lock at BEGIN, so two transactions never interleave.
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@dataclass
class Transaction:
    session: Session
    revision: int
    actor_id: str
    events: list[models.Event] = field(default_factory=list)
    caller: str = ""  # the calling service, once callers are named

    def emit(self, type: str, *, cause: str = "", **attributes: object) -> None:
        """Record an event of this change (R22); values are stored as strings. `cause` says why
        the service made a change that was not asked for (models.EventCause)."""
        text = {k: _as_text(v) for k, v in attributes.items()}
        organization_id, other_organization_id = models.event_organizations(text)
        row = models.Event(
            revision=self.revision,
            type=type,
            actor_id=self.actor_id,
            attributes=text,
            occurred_at=utc_now(),
            organization_id=organization_id,
            other_organization_id=other_organization_id,
            caller=self.caller,
            cause=cause,
        )
        self.session.add(row)
        self.events.append(row)


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(sorted(str(v) for v in value))
    return str(value)


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)
        # Writers of this process queue here, before taking a pooled connection: a writer holding
        # the database lock needs a second connection (the index catches up inside it), and writers
        # waiting on the lock with connections in hand would otherwise exhaust the pool and stall it.
        self._writer = threading.Lock()
        self._after_commit: list = []

    def on_commit(self, callback) -> None:
        """Call `callback(revision)` after every committed write (the fact index catches up)."""
        self._after_commit.append(callback)

    @contextlib.contextmanager
    def read(self, snapshot: bool = False) -> Iterator[Session]:
        """A read session. With `snapshot`, every statement sees the same committed state (SQLite
        read transactions already do; other engines need REPEATABLE READ)."""
        with self._sessions() as session:
            if snapshot and self.engine.dialect.name != "sqlite":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextlib.contextmanager
    def write(self, actor_id: str = "") -> Iterator[Transaction]:
        with self._writer, self._write_sessions() as session:
            revision = self._next_revision(session)
            tx = Transaction(session, revision, actor_id)
            try:
                yield tx
                deadlines.check()  # a caller that gave up while this waited gets no change
                session.commit()
            except BaseException:
                session.rollback()
                raise
        for callback in self._after_commit:
            try:
                callback(revision)
            except Exception:  # the change is committed: report it as done; readers catch up later
                log.exception("after-commit step failed at revision %d", revision)

    def _next_revision(self, session: Session) -> int:
        session.execute(update(models.RevisionCounter).values(value=models.RevisionCounter.value + 1))
        return session.execute(select(models.RevisionCounter.value)).scalar_one()

    def current_revision(self) -> int:
        # A plain connection, not an ORM session: the index asks this before every catch-up.
        with self.engine.connect() as connection:
            return connection.execute(select(models.RevisionCounter.value)).scalar_one()
