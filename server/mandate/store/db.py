"""Engine, sessions and the write transaction.

Every write runs in `Store.write()`: one transaction that first takes the next revision
(which also serializes writers on every engine), lets the caller change rows and record
events, and commits on success or rolls back on any error. A refused mutation therefore
changes nothing, and business rules checked inside it cannot race.

On PostgreSQL the revision counter's row lock serializes writers across processes and hosts.
Writers run at READ COMMITTED, so every statement after that lock sees every change committed
before it: the transaction decides against the newest state. The same transaction sends a
NOTIFY that wakes the other replicas (see mandate.store.follow). Losing the database is
reported as `errors.DatabaseUnavailable`, never as an unexpected error.

Group commit. Writers of one process that arrive together share one transaction: one counter
update and one commit (one fsync) for the group. Each mutation still runs alone in its turn (after
the first kept, inside a SAVEPOINT), with its own revision, history, events and time; a refused
one rolls back (to its savepoint) and changes nothing, and the others go on. Nobody is answered
before the group commits, so a crash loses no acknowledged write. Mutations decide with the fact
index, which holds only committed facts, so a member after the first could decide on facts an
earlier member of the same group just changed. The rule that keeps every decision exact: a later
member is kept only if it succeeded and the ids it names (its actor, and every organization and
`*_id` of its events) are disjoint from those of the members before it; otherwise it rolls back
to its savepoint and runs again as the first member of a new group (`Regroup`), deciding on the
committed state. Its refusal is therefore only ever given by a run that saw everything committed
before it. Only writes that can run again join groups: a domain service's methods marked
`mandate.shared.retrying.retried` (see `grouping`).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import datetime
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import bindparam, create_engine, event, exc, func, insert, literal_column, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from mandate import clock, deadlines, errors, tracing
from mandate.runtime.config import DatabaseSettings
from mandate.store import history, models

log = logging.getLogger(__name__)


# The write transaction open in this thread (and context), so that a write inside another joins
# it: a request with a request_id runs its mutation and records its reply in one transaction.
_open: contextvars.ContextVar[tuple[Store, Transaction] | None] = contextvars.ContextVar(
    "mandate_open_write", default=None)


# How a write started in this context commits (see the module's docstring), set by the callers
# that run a write again, whole, when it raises `Regroup`: ALONE, JOIN (the open group, or a new
# one) or LEAD (first of a new group: it decides on the committed state, as a write alone does).
ALONE, JOIN, LEAD = "alone", "join", "lead"
_grouping: contextvars.ContextVar[tuple[str, frozenset[str]]] = contextvars.ContextVar(
    "mandate_grouping", default=(ALONE, frozenset()))
# The most mutations one group commits together.
GROUP_LIMIT = 64


@contextlib.contextmanager
def grouping(mode: str, hint: frozenset[str] = frozenset()) -> Iterator[None]:
    """Writes started inside commit ALONE, JOIN a group or LEAD a new one; the caller runs the
    whole operation again when one raises `Regroup`. `hint`: ids the write will likely name
    (those its call names: mandate.shared.retrying): a write whose hint meets those of the
    group open now leads a new group at once instead of running in vain. Only an economy: the
    overlap rule decides."""
    token = _grouping.set((mode, hint))
    try:
        yield
    finally:
        _grouping.reset(token)


def in_write() -> bool:
    """Whether a write transaction is open in this context (a write inside it joins it)."""
    return _open.get() is not None


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _unicode_lower(value):
    return value.lower() if isinstance(value, str) else value


# The NOTIFY channel on which every write transaction announces its revision.
CHANNEL = "mandate_changes"
# SQLSTATEs after which the whole transaction can simply run again: serialization failure, deadlock.
RETRYABLE = frozenset({"40001", "40P01"})
# While the database is known to be lost, writes are refused at once; after this long, one tries again.
RECHECK_SECONDS = 1.0


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3, the driver Mandate ships with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, settings: DatabaseSettings | None = None) -> Engine:
    url = normalize_url(url)
    settings = settings or DatabaseSettings()
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
            # What is deleted or overwritten is zeroed in the file: an erased person's bytes leave it.
            cursor.execute("PRAGMA secure_delete=ON")
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
    connect_args = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": settings.connect_timeout,
            "application_name": "mandate",
            # A database host that vanished without closing the connection is noticed in seconds.
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        }
    engine = create_engine(url, pool_size=settings.pool_size, max_overflow=settings.max_overflow,
                           pool_timeout=settings.pool_timeout, pool_recycle=1800, connect_args=connect_args)
    _ping_when_idle(engine)
    return engine


# A pooled connection idle for longer than this is tried (a round trip) before it is used again.
IDLE_PING_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """A connection that waited in the pool a while is pinged before use, and replaced (with every
    other pooled one) when the database is gone: a database that restarted costs no call. One in
    steady use is not: a ping on every checkout was a round trip per write and per catch-up. A
    connection lost meanwhile fails its statement, which reports the database unavailable and
    empties the pool (see database_error)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError(str(error)) from error
            raise


class Conflict(Exception):
    """The database aborted the transaction to keep transactions serializable (serialization
    failure, deadlock): nothing was written, and the whole operation may run again."""


class Regroup(Conflict):
    """A mutation of a group commit could not be kept in it (it was refused or changed nothing
    after another member, or it names what an earlier member changed, or the group failed):
    nothing of it was written, and it runs again on its own (not in a group)."""


def database_error(error: Exception) -> Exception | None:
    """What a database error means to the service: `Conflict` (run it again),
    `errors.DatabaseUnavailable` (the database is lost or overloaded), or None (a bug: unexpected)."""
    if isinstance(error, exc.TimeoutError):  # no free connection in the pool in time
        return errors.DatabaseUnavailable("no database connection is free; retry")
    if not isinstance(error, exc.DBAPIError):
        return None
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in RETRYABLE:
        return Conflict(str(error.orig))
    if error.connection_invalidated:
        return errors.DatabaseUnavailable("the connection to the database was lost; retry")
    if isinstance(error, exc.OperationalError) and error.orig.__class__.__module__.startswith("psycopg"):
        # Connection failures carry no SQLSTATE; admin shutdown (57P01..57P03), too many connections (53300).
        if sqlstate is None or sqlstate.startswith(("08", "57P", "53")):
            return errors.DatabaseUnavailable("the database cannot be reached; retry")
    return None


@dataclass
class Transaction:
    session: Session
    revision: int
    actor_id: str
    events: list[dict] = field(default_factory=list)  # rows of models.Event, but occurred_at
    caller: str = ""  # the calling service (named callers), as the domain told `Store.write`
    # A bulk write (an import): its history is recorded by set-based statements, and readers
    # read its rows back from the store instead of being handed them.
    bulk: bool = False
    # Readers of this process catch up in the background, as replicas do (a big import's reply
    # does not wait for the whole world to be indexed).
    announce_later: bool = False
    # Called once the transaction committed (the outermost one, when writes joined it).
    after_commit: list = field(default_factory=list)
    # The first revision of the group commit this write is part of (its own revision when it
    # is alone): every revision below it is committed.
    group_base: int = 0

    def execute(self, statement, parameters=None):
        """A Core statement in this transaction, after any change still held as objects: one
        round trip, no ORM objects loaded or kept (the hot mutations use it)."""
        session = self.session
        if session.new or session.dirty or session.deleted:
            session.flush()
        return session.connection().execute(statement, parameters)

    def emit(self, type: str, *, cause: str = "", **attributes: object) -> None:
        """Record an event of this change (R22); values are stored as strings. `cause` says why
        the service made a change that was not asked for (models.EventCause)."""
        text = {k: _as_text(v) for k, v in attributes.items()}
        organization_id, other_organization_id = models.event_organizations(text)
        # Plain rows, written together in one statement just before the change commits.
        self.events.append({
            "revision": self.revision, "type": type, "actor_id": self.actor_id, "attributes": text,
            "organization_id": organization_id, "other_organization_id": other_organization_id,
            "caller": self.caller, "cause": cause,
        })


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(sorted(str(v) for v in value))
    return str(value)


# The time of a write, in the store's format, from PostgreSQL's clock (clock_timestamp: the time
# it is asked, not the start of the transaction).
_PG_NOW = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_NEWEST_TIME = select(func.max(models.Event.__table__.c.occurred_at))
_TICK = datetime.timedelta(microseconds=1)
# The last look of a write, in one round trip: which fact tables it wrote (history.record) and
# its time (Store._stamp), with on PostgreSQL the NOTIFY of its revision.
_WRITTEN_AND_STAMP = {
    False: history.NEWEST.add_columns(_NEWEST_TIME.scalar_subquery()),
    True: history.NEWEST.add_columns(func.pg_notify(bindparam("channel"), bindparam("notified")),
                                     literal_column(_PG_NOW), _NEWEST_TIME.scalar_subquery()),
}
_FACT_TABLES = len(history.FACT_MODELS)

# Built once: every write runs it first.
_COUNTER = models.RevisionCounter.__table__
_NEXT_REVISION = update(_COUNTER).values(value=_COUNTER.c.value + 1).returning(_COUNTER.c.value)
_INSERT_EVENTS = insert(models.Event.__table__)
_SET_REVISION = update(_COUNTER).values(value=bindparam("value"))


def _named(tx: Transaction) -> set[str]:
    """What a mutation names: its actor, and every organization and `*_id` of its events. Two
    mutations naming nothing in common commute (the overlap rule of a group commit)."""
    names = {tx.actor_id}
    for change in tx.events:
        names.update(v for k, v in change["attributes"].items() if k.endswith("_id") or k == "actor")
        names.update((change["organization_id"], change["other_organization_id"]))
    names.discard(None)
    names.discard("")
    return names


class _Group:
    """One group commit: its transaction, the revisions it hands out and its members' outcomes."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.holding = False  # it holds the writers' lock of this process
        self.counted = False  # its transaction took the revision (`Store._count`)
        self.base = 0  # the revision its counter update took: its first member's
        self.next = 0  # the revision the next member takes (a member rolled back gives its own back)
        self.size = 1
        self.waiting: deque[threading.Event] = deque()  # members waiting for their turn
        self.kept: list[tuple[Transaction, list | None]] = []  # in revision order, with their fact rows
        self.named: set[str] = set()  # what the kept members name (`_named`)
        self.hinted: set[str] = set()  # what its members are likely to name (`grouping`)
        self.failed: BaseException | None = None  # the transaction is lost: every member runs again
        self.error: BaseException | None = None  # the commit's own error, for every kept member
        self.committed = threading.Event()


class Store:
    def __init__(self, url: str, settings: DatabaseSettings | None = None):
        self.url = normalize_url(url)
        self.settings = settings or DatabaseSettings()
        self.engine = make_engine(self.url, self.settings)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)
        # Writers of this process queue here, before taking a pooled connection: a writer holding
        # the database lock needs a second connection (the index catches up inside it), and writers
        # waiting on the lock with connections in hand would otherwise exhaust the pool and stall it.
        self._writer = threading.Lock()
        # Group commit (see the module's docstring): the group that writers arriving now join.
        self.group_commit = self.settings.group_commit
        self.group_hints = True  # tests turn them off to put overlapping writes in one group
        self._groups = threading.Lock()
        self._open_group: _Group | None = None
        # Counts of this process: group commits, mutations they kept, mutations sent to run alone.
        self.group_counts = {"groups": 0, "kept": 0, "regrouped": 0}
        self._after_commit: list = []
        self._written: tuple[int, list] = (0, [])  # the last local commit's revision and fact rows
        # The revisions the last group commit of this process made, and its end (once it told the
        # readers of this process): the follower needs no catch-up for their notifications.
        self._group_revisions: tuple[int, int, threading.Event | None] = (0, 0, None)
        self._available = True
        self._checked_at = 0.0
        self._availability_listeners: list = []

    # -- is the database there -----------------------------------------------------------

    @property
    def available(self) -> bool:
        """False from the moment a call or the follower lost the database until one reaches it again."""
        return self._available

    def on_availability(self, callback) -> None:
        """Call `callback(available)` whenever the database is lost or found again."""
        self._availability_listeners.append(callback)

    def mark_available(self) -> None:
        if not self._available:
            log.warning("the database is reachable again")
            self._available = True
            self._tell_availability(True)

    def mark_unavailable(self) -> None:
        self._checked_at = time.monotonic()
        if self._available:
            log.warning("the database cannot be reached: mutations are refused, checks answer from memory")
            self._available = False
            self._tell_availability(False)

    def _tell_availability(self, available: bool) -> None:
        for callback in self._availability_listeners:
            try:
                callback(available)
            except Exception:  # noqa: BLE001 - a listener never breaks the store
                log.exception("availability listener failed")

    @contextlib.contextmanager
    def _reporting(self) -> Iterator[None]:
        """Database errors become what they mean (see `database_error`)."""
        try:
            yield
        except (exc.DBAPIError, exc.TimeoutError) as error:
            meaning = database_error(error)
            if meaning is None:
                raise
            if isinstance(meaning, errors.DatabaseUnavailable):
                self.mark_unavailable()
            raise meaning from error

    def on_commit(self, callback) -> None:
        """Call `callback(revision)` after every committed write (the fact index catches up)."""
        self._after_commit.append(callback)

    @contextlib.contextmanager
    def read(self, snapshot: bool = False) -> Iterator[Session]:
        """A read session. With `snapshot`, every statement sees the same committed state (SQLite
        read transactions already do; other engines need REPEATABLE READ)."""
        with tracing.span("mandate.store.read"), self._reporting(), self._sessions() as session:
            if snapshot and self.engine.dialect.name != "sqlite":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextlib.contextmanager
    def write(self, actor_id: str = "", caller: str = "") -> Iterator[Transaction]:
        """One read-write transaction. Raises `errors.DatabaseUnavailable` at once while the
        database is lost, and `Conflict` when the database aborted it (the caller runs it again:
        see mandate.runtime.app). A write inside an open write of this store joins it (one transaction:
        a request with a request_id runs its mutation and records its reply together). Inside
        `grouping(JOIN)` or `grouping(LEAD)` it may share a group commit with writes that arrive
        with it (`Regroup`: run it again, leading a new group). `caller`: the calling service,
        recorded on the events (the store does not look for it)."""
        joined = _open.get()
        if joined is not None and joined[0] is self:
            if actor_id:
                joined[1].actor_id = actor_id
            if caller and not joined[1].caller:
                joined[1].caller = caller
            yield joined[1]
            return
        if not self._available and time.monotonic() - self._checked_at < RECHECK_SECONDS:
            raise errors.DatabaseUnavailable("the database cannot be reached; retry")
        mode, hint = _grouping.get()
        if self.group_commit and mode != ALONE:
            with self._grouped(actor_id, caller, mode == LEAD, hint) as tx:
                yield tx
            return
        with tracing.span("mandate.store.write") as span, self._writer:
            with self._reporting(), self._write_sessions() as session:
                token = _open.set((self, None))
                try:
                    revision = self._next_revision(session)
                    if span is not None:
                        span.set_attribute("mandate.revision", str(revision))
                    tx = Transaction(session, revision, actor_id, caller=caller, group_base=revision)
                    _open.set((self, tx))
                    yield tx
                    deadlines.check()  # a caller that gave up while this waited gets no change
                    written = self._seal(tx)
                    session.commit()
                    self._written = (revision, written)
                except BaseException:
                    with contextlib.suppress(exc.DBAPIError):  # a lost connection has nothing to roll back
                        session.rollback()
                    raise
                finally:
                    _open.reset(token)
            self.mark_available()
            if tx.announce_later:
                threading.Thread(target=self.announce, args=(revision,), name="bulk-announce", daemon=True).start()
            else:
                # Before the next writer of this process starts: the fact index applies the rows
                # just written, so that writer's decisions (made on the index) need no look at the store.
                self.announce(revision)
        for callback in tx.after_commit:
            callback()

    def _seal(self, tx: Transaction) -> list | None:
        """The end of one mutation, after its changes: its history, its time and its events.
        Returns the fact rows it wrote (None for a bulk write)."""
        session, revision = tx.session, tx.revision
        last_look = tx.execute(_WRITTEN_AND_STAMP[self.postgres],  # after every change
                               {"channel": CHANNEL, "notified": str(revision)} if self.postgres else {}).one()
        # The versions this change made (access history); the time of the commit.
        written = (history.record_bulk(session, revision) if tx.bulk
                   else history.record(session, revision, tuple(last_look[:_FACT_TABLES])))
        committed_at = self._stamp(tuple(last_look[_FACT_TABLES:]))
        if tx.events:
            session.connection().execute(_INSERT_EVENTS, [dict(e, occurred_at=committed_at) for e in tx.events])
        return written

    # -- group commit (see the module's docstring) -----------------------------------------

    @contextlib.contextmanager
    def _grouped(self, actor_id: str, caller: str, lead: bool, hint: frozenset[str]) -> Iterator[Transaction]:
        """One mutation of a group commit: it waits for its turn (the first opens the group),
        runs inside a savepoint, hands the session to the next member, and returns once the
        whole group committed."""
        turn = threading.Event()
        with self._groups:
            group = self._open_group
            opening = (lead or group is None or group.size >= GROUP_LIMIT
                       or (self.group_hints and not hint.isdisjoint(group.hinted)))
            if opening:  # writers arriving from now on join this group, behind the one open now
                group = self._open_group = _Group()
            group.hinted |= hint
            if not opening:
                group.size += 1
                group.waiting.append(turn)
        if not opening:
            turn.wait()
            if group.failed is not None:  # the group ended without this member's turn
                raise Regroup("the group this write joined failed; it runs on its own") from group.failed
        tx = None
        token = _open.set((self, None))
        try:
            with tracing.span("mandate.store.write") as span, self._reporting():
                if opening:
                    self._begin(group)
                if not group.counted:
                    self._count(group)
                tx = Transaction(group.session, group.next, actor_id, caller=caller, group_base=group.base)
                if span is not None:
                    span.set_attribute("mandate.revision", str(tx.revision))
                _open.set((self, tx))
                yield from self._member(group, tx)
        finally:
            _open.reset(token)
            if self._pass_on(group):
                self._end(group)
            else:
                group.committed.wait()
        if group.failed is not None:
            raise Regroup("the group this write was part of failed; it runs on its own") from group.failed
        if group.error is not None:
            raise copy.copy(group.error) from group.error
        for callback in tx.after_commit:
            callback()

    def _begin(self, group: _Group) -> None:
        """Open the group's transaction: the writers' lock of this process, then the session."""
        try:
            self._writer.acquire()
            group.holding = True
            group.session = self._write_sessions()
        except BaseException as error:
            group.failed = error
            raise

    def _count(self, group: _Group) -> None:
        """Take the group's revision: the counter update, whose row lock queues the other replicas."""
        try:
            group.base = group.next = self._next_revision(group.session)
            group.counted = True
        except BaseException as error:
            group.failed = error
            raise

    def _member(self, group: _Group, tx: Transaction) -> Iterator[Transaction]:
        """Run one member; keep it, or roll it back. A member after a kept one runs inside a
        savepoint; the first kept runs without one (a write alone costs no more statements than
        without groups), and its refusal rolls the whole transaction back, counter included.

        The savepoint is plain SQL on the group's connection, not the session's nested
        transaction (whose machinery, and the compiling of its statements, cost more than the
        statement): the session never learns of it, which is safe because every member's
        changes are flushed by `_seal` before the next member begins, the session forgets
        every object after each member (expunge_all), and a database error fails the whole
        group rather than rolling back to a savepoint. A kept member's savepoint is never
        released: the group's commit ends them all (one statement less per member). A refused
        member's name is taken again by the next (same revision): both engines roll back to
        the newest savepoint of a name."""
        first = not group.kept
        session = group.session
        savepoint = None if first else f"member_{tx.revision}"
        if savepoint is not None:
            session.connection().exec_driver_sql(f"SAVEPOINT {savepoint}")
        try:
            yield tx
            deadlines.check()
            named = _named(tx)
            if not first and (not tx.events or named & group.named):
                raise Regroup("this write names what an earlier write of its group changed; it runs on its own")
            written = self._seal(tx)
        except BaseException as error:
            if isinstance(error, exc.SQLAlchemyError | Conflict) and not isinstance(error, Regroup):
                group.failed = error  # the transaction itself may be lost: nobody of the group is kept
            else:
                try:
                    if savepoint is not None:
                        session.connection().exec_driver_sql(f"ROLLBACK TO SAVEPOINT {savepoint}")
                    else:  # nothing kept yet: the next member takes the revision again
                        session.rollback()
                        group.counted = False
                except BaseException as lost:
                    group.failed = lost
                    raise
            session.expunge_all()  # the next member loads its own rows; this one's stay as they were
            if isinstance(error, Regroup):
                self.group_counts["regrouped"] += 1
            if first or isinstance(error, Regroup | errors.DeadlineExceeded) or group.failed is not None:
                raise
            self.group_counts["regrouped"] += 1
            # A refusal (or no change) after another member may come from facts that member changed,
            # which the fact index does not hold yet: it is decided again, on its own.
            raise Regroup("a refusal inside a group is decided again on its own") from error
        session.expunge_all()  # the answer's rows stay as this member left them
        group.kept.append((tx, written))
        group.named |= named
        group.next += 1

    def _pass_on(self, group: _Group) -> bool:
        """Wake the next member of the group; True when there is none (the caller ends the group)."""
        with self._groups:
            if group.failed is None and group.waiting:
                following = group.waiting.popleft()
            else:
                following = None
                if self._open_group is group:
                    self._open_group = None  # writers arriving from now on open the next group
        if following is None:
            return True
        following.set()
        return False

    def _end(self, group: _Group) -> None:
        """Commit the group (one counter update and one commit for all its members) and tell the
        readers of this process every revision it made, then let the next group begin."""
        session = group.session
        try:
            if session is None:
                return
            if group.failed is not None or not group.kept:
                with contextlib.suppress(exc.DBAPIError):
                    session.rollback()
                return
            last = group.kept[-1][0].revision
            try:
                with self._reporting():
                    if last != group.base:
                        session.connection().execute(_SET_REVISION, {"value": last})
                    self._group_revisions = (group.base, last, group.committed)
                    session.commit()
            except BaseException as error:
                group.error = error
                with contextlib.suppress(exc.DBAPIError):
                    session.rollback()
                return
            self.mark_available()
            self.group_counts["groups"] += 1
            self.group_counts["kept"] += len(group.kept)
            for tx, written in group.kept:
                self._written = (tx.revision, written)
                if tx.announce_later:
                    threading.Thread(target=self.announce, args=(tx.revision,), name="bulk-announce",
                                     daemon=True).start()
                else:
                    self.announce(tx.revision)
        finally:
            if session is not None:
                session.close()
            if group.holding:
                self._writer.release()
            group.committed.set()
            for waiting in group.waiting:  # a failed group: they run on their own
                waiting.set()

    def _stamp(self, looked: tuple) -> str:
        """The time of a write, taken under the revision lock: the store's clock (PostgreSQL's,
        the same for every replica), and always later than the time of every revision before it,
        so the times of revisions rise with them (`as_of` relies on it). `looked`: the write's
        last look (_WRITTEN_AND_STAMP), which on PostgreSQL also sent the NOTIFY that wakes the
        other replicas at commit (mandate.store.follow)."""
        if self.postgres:
            _notified, now, newest = looked
        else:
            now, (newest,) = utc_now(), looked
        return now if newest is None or now > newest else clock.as_text(clock.parse(newest) + _TICK)

    def now(self, session: Session) -> str:
        """The store's clock, as revisions are stamped with it (`_stamp`)."""
        return session.execute(text(f"SELECT {_PG_NOW}")).scalar_one() if self.postgres else utc_now()

    @contextlib.contextmanager
    def settled(self) -> Iterator[Session]:
        """A read session that first waits for the write in flight, if any, to commit: every
        revision committed after this session began is stamped later than it began. It holds
        off writers (of every process) while it runs: keep it to a statement or two."""
        with self._writer, self._reporting():
            if self.postgres:
                with self._sessions() as session:
                    session.execute(select(models.RevisionCounter.value).with_for_update(read=True)).all()
                    yield session
                    session.rollback()
            else:
                with self._write_sessions() as session:  # BEGIN IMMEDIATE: the write lock
                    session.connection()
                    yield session
                    session.rollback()

    def made_here(self, revision: int, timeout: float) -> bool:
        """Whether `revision` is one the last group commit of this process made; then wait
        (bounded) until that group ended, having told the readers of this process of it."""
        first, last, ended = self._group_revisions
        return ended is not None and first <= revision <= last and ended.wait(timeout)

    def written_at(self, revision: int) -> list | None:
        """The fact rows the local commit of `revision` wrote, per fact model, while they are the
        last ones committed here (None otherwise: read them from the store)."""
        last, written = self._written
        return written if last == revision else None

    def announce(self, revision: int) -> None:
        """Tell every listener that `revision` is committed (by this process, or another one)."""
        for callback in self._after_commit:
            try:
                callback(revision)
            except Exception:  # the change is committed: report it as done; readers catch up later
                log.exception("after-commit step failed at revision %d", revision)

    @contextlib.contextmanager
    def bookkeeping(self) -> Iterator[Session]:
        """A write that changes no access (the outcome of a refused request, forgetting old
        request ids): no revision, no event, nothing for readers to catch up on."""
        with self._writer, self._reporting(), self._write_sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def _next_revision(self, session: Session) -> int:
        # One round trip: the lock, the increment and the new value (SQLite 3.35+ has RETURNING too).
        return session.connection().execute(_NEXT_REVISION).scalar_one()

    def writing_revision(self) -> int | None:
        """The first revision of the write transaction open in this context, if any (of its
        group commit: see the module's docstring). Writers take revisions one at a time, so
        every revision below it is committed."""
        joined = _open.get()
        if joined is None or joined[0] is not self or joined[1] is None:
            return None
        return joined[1].group_base or joined[1].revision

    def current_revision(self) -> int:
        # A plain connection, not an ORM session: the index asks this before every catch-up.
        with self._reporting(), self.engine.connect() as connection:
            return connection.execute(select(models.RevisionCounter.value)).scalar_one()
