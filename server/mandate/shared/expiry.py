"""Things that end by themselves: invitations nobody accepted in time, and access given until a
date (a membership, a client connection, a partner employee's assignment).

When its time comes, an ending is written as a change by the service, in one transaction with a
revision and events whose cause is `expired`, leaving the same trace as the manual change: the
membership is removed (R6, with the R18 cascade), the connection is disconnected (R14), the
assignment ends (R17), the invitation is `expired` (its seat is free again, R5). The facts the
policy sees therefore stay free of time. Until that change is written, an access whose end has
passed is still never granted: decisions see the fact as the change will leave it
(FactIndex.ended), and invitations count as lapsed (`pending_invitation`, `lapses_at`).

Every replica runs a sweeper (`Expiries.run`), but one writer applies each ending: the sweep
re-reads what is due inside its write transaction, which writers take one at a time (the
revision counter), so a second replica finds nothing left and writes nothing. On PostgreSQL the
replicas also elect one sweeper with a session advisory lock; when that replica goes away, its
connection and the lock go with it, and another replica takes over on its next tick.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, exists, or_, select, text
from sqlalchemy.exc import SQLAlchemyError

from mandate import errors
from mandate.clock import SystemClock, as_text, parse
from mandate.names import EventType
from mandate.shared.common import calling_service, end_assignments, end_resource_roles, end_roles_of_member
from mandate.store import history, models
from mandate.store.db import Store, Transaction

log = logging.getLogger(__name__)

NEVER = "never"  # access_expires_at: clear the end
DEFAULT_INVITATION_TTL = datetime.timedelta(days=14)
REQUEST_RETENTION = datetime.timedelta(hours=24)  # how long a request_id's outcome is kept
TICK_SECONDS = 0.25  # a due ending is written within about this long (the promise is 1 s)
LOCK_KEY = 0x6D616E6461746531  # "mandate1": the PostgreSQL advisory lock of the sweeper
Cause = models.EventCause


@dataclass
class Lifetimes:
    """The clock and the invitation lifetime, shared by the domain services (one per App)."""

    clock: SystemClock = field(default_factory=SystemClock)
    invitation_ttl: datetime.timedelta = DEFAULT_INVITATION_TTL
    # How long the access history is kept (None: forever; mandate.checks.history).
    history_retention: datetime.timedelta | None = None

    def now(self) -> str:
        return self.clock.now_text()

    def invitation_expires_at(self) -> str:
        return as_text(self.clock.now() + self.invitation_ttl)

    def access_end(self, requested: str, current: str | None, field_name: str = "access_expires_at") -> str | None:
        """The end of an access after a call: `requested` is "" (keep `current`), `never`
        (no end) or a normalized time, which must lie ahead."""
        if not requested:
            return current
        if requested == NEVER:
            return None
        if requested <= self.now():
            raise errors.InvalidArgument(field_name, f"{requested} has passed; give a time ahead, or '{NEVER}'")
        return requested


def normalize_end(field_name: str, value: str) -> str:
    """Request validation: "", `never`, or an RFC 3339 time (normalized to UTC)."""
    if not value or value == NEVER:
        return value
    if len(value) > 40:
        raise errors.InvalidArgument(field_name, "must be an RFC 3339 time such as 2030-01-31T17:00:00Z, or 'never'")
    try:
        return as_text(parse(value))
    except (ValueError, OverflowError):
        raise errors.InvalidArgument(
            field_name, "must be an RFC 3339 time such as 2030-01-31T17:00:00Z, or 'never'") from None


def pending_invitation(now: str):
    """SQL conditions of an invitation that can still be accepted: pending, and not lapsed even
    if the sweeper has not yet written it down (see `lapses_at`)."""
    invitation = models.Invitation
    return (invitation.status == models.InvitationStatus.PENDING, invitation.expires_at > now,
            or_(invitation.access_expires_at.is_(None), invitation.access_expires_at > now))


def lapsed_invitations(now: str):
    """SQL conditions of the pending invitations that lapsed (see `lapses_at`), one per reason:
    each is a range of one index, where their disjunction would scan every pending invitation."""
    invitation, pending = models.Invitation, models.Invitation.status == models.InvitationStatus.PENDING
    return ((pending, invitation.expires_at <= now), (pending, invitation.access_expires_at <= now))


def _due_statement():
    """Whether any ending is due, one look per kind (each a range of one index), in one round
    trip built once: the sweeper asks it four times a second, busy or not."""
    now = bindparam("now")
    return select(
        *(exists().where(*lapsed) for lapsed in lapsed_invitations(now)),
        exists().where(models.Membership.access_expires_at <= now,
                       models.Membership.status != models.MemberStatus.REMOVED),
        exists().where(models.Connection.access_expires_at <= now,
                       models.Connection.status != models.ConnectionStatus.DISCONNECTED),
        exists().where(models.Assignment.access_expires_at <= now, models.Assignment.assigned.is_(True)),
        exists().where(models.ResourceRole.access_expires_at <= now, models.ResourceRole.granted.is_(True)),
    )


_DUE = _due_statement()


def lapses_at(invitation: models.Invitation) -> str:
    """An invitation lapses at its `expires_at`, or sooner when the access it gives ends before
    (a member invitation's `access_expires_at`): an access whose end has passed is never given."""
    return min(invitation.expires_at, invitation.access_expires_at or invitation.expires_at)


class _NothingDue(Exception):
    """Inside the sweep's transaction: another replica wrote these endings first."""


class Expiries:
    def __init__(self, store: Store, lifetimes: Lifetimes):
        self.store = store
        self.lifetimes = lifetimes
        self._leader = Leadership(store)
        self.chores: list = []  # more upkeep for the one sweeper (the history's retention)

    # -- what is due ----------------------------------------------------------------------

    def _due(self, session, now: str) -> bool:
        return any(session.execute(_DUE, {"now": now}).one())

    def apply_due(self) -> int | None:
        """Write every ending that is due, as one change; its revision, or None if none was due."""
        now = self.lifetimes.now()
        with self.store.read() as session:
            if not self._due(session, now):
                return None
        try:
            with self.store.write(caller=calling_service()) as tx:
                if not self._due(tx.session, now):
                    raise _NothingDue
                self._end_connections(tx, now)
                self._end_memberships(tx, now)
                end_assignments(tx, models.Assignment.access_expires_at <= now, cause=Cause.EXPIRED)
                end_resource_roles(tx, models.ResourceRole.access_expires_at <= now, cause=Cause.EXPIRED)
                self._lapse_invitations(tx, now)
        except _NothingDue:
            return None
        return tx.revision

    def _end_connections(self, tx: Transaction, now: str) -> None:
        due = tx.session.execute(select(models.Connection).where(
            models.Connection.access_expires_at <= now,
            models.Connection.status != models.ConnectionStatus.DISCONNECTED)).scalars().all()
        for connection in due:
            connection.status = models.ConnectionStatus.DISCONNECTED
            connection.access_expires_at = None
            connection.revision = tx.revision
            end_assignments(tx, models.Assignment.partner_id == connection.partner_id,
                            models.Assignment.client_id == connection.client_id, cause=Cause.CASCADE)
            tx.emit(EventType.CLIENT_DISCONNECTED, cause=Cause.EXPIRED, partner_id=connection.partner_id,
                    client_id=connection.client_id)

    def _end_memberships(self, tx: Transaction, now: str) -> None:
        due = tx.session.execute(select(models.Membership).where(
            models.Membership.access_expires_at <= now,
            models.Membership.status != models.MemberStatus.REMOVED)).scalars().all()
        for membership in due:
            if membership.role == models.Role.OWNER:  # never set on an owner; an organization keeps its owner
                membership.access_expires_at = None
                membership.revision = tx.revision
                continue
            membership.status = models.MemberStatus.REMOVED
            membership.partner_employee = False
            membership.access_expires_at = None
            membership.revision = tx.revision
            end_assignments(tx, models.Assignment.partner_id == membership.organization_id,
                            models.Assignment.user_id == membership.user_id, cause=Cause.CASCADE)
            end_roles_of_member(tx, membership.organization_id, membership.user_id, cause=Cause.CASCADE)
            tx.emit(EventType.MEMBER_REMOVED, cause=Cause.EXPIRED, organization_id=membership.organization_id,
                    user_id=membership.user_id)

    def _lapse_invitations(self, tx: Transaction, now: str) -> None:
        due = {invitation.id: invitation for lapsed in lapsed_invitations(now)
               for invitation in tx.session.execute(select(models.Invitation).where(*lapsed)).scalars()}
        for invitation in sorted(due.values(), key=lambda i: i.id):
            invitation.status = models.InvitationStatus.EXPIRED
            invitation.revision = tx.revision
            tx.emit(EventType.INVITATION_EXPIRED, cause=Cause.EXPIRED, organization_id=invitation.organization_id,
                    invitation_id=invitation.id, kind=invitation.kind)

    def purge_request_records(self) -> None:
        """Forget request ids older than the retention (not a change: no revision, no event)."""
        cutoff = as_text(self.lifetimes.clock.now() - REQUEST_RETENTION)
        with self.store.read() as session:
            if not session.execute(select(exists().where(models.RequestRecord.created_at < cutoff))).scalar():
                return
        with self.store.bookkeeping() as session:
            session.execute(delete(models.RequestRecord).where(models.RequestRecord.created_at < cutoff))

    # -- Explain --------------------------------------------------------------------------

    def access_ends(self, user_id: str, organization_id: str, at_revision: int | None = None,
                    chain: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """Explain's sentences on when the user's ways into the organization end by themselves:
        their membership there or in a linked account, and each partner's connection, membership
        and assignment, and their roles on the resource `chain` (the resource and its ancestors);
        now, or as the facts stood at `at_revision`. A read of the store, never part of a decision."""
        M, C, A, L = models.Membership, models.Connection, models.Assignment, models.OrganizationLink
        sentences = []
        with self.store.read() as session:
            def rows(model, *where):
                return history.fact_rows(session, model, at_revision, *where)

            partners = [row.partner_id for row in rows(
                C, C.client_id == organization_id, C.status != models.ConnectionStatus.DISCONNECTED)]
            linked = [row.other_organization_id for row in rows(L, L.organization_id == organization_id)]
            for membership in rows(M, M.user_id == user_id,
                                   M.organization_id.in_([organization_id, *partners, *linked]),
                                   M.status != models.MemberStatus.REMOVED, M.access_expires_at.is_not(None)):
                sentences.append(f"the membership of user {user_id} in organization {membership.organization_id} "
                                 f"ends by itself at {membership.access_expires_at} (R6)")
            for connection in rows(C, C.client_id == organization_id, C.partner_id.in_(partners),
                                   C.access_expires_at.is_not(None)):
                sentences.append(f"the connection of partner {connection.partner_id} to client {organization_id} "
                                 f"ends by itself at {connection.access_expires_at} (R14)")
            for assignment in rows(A, A.user_id == user_id, A.client_id == organization_id, A.assigned.is_(True),
                                   A.access_expires_at.is_not(None)):
                sentences.append(f"the assignment of user {user_id} to client {organization_id} by partner "
                                 f"{assignment.partner_id} ends by itself at {assignment.access_expires_at} (R17)")
            R = models.ResourceRole
            for role in rows(R, R.user_id == user_id, R.granted.is_(True), R.access_expires_at.is_not(None)):
                if (role.resource_type, role.resource_id) in chain:
                    sentences.append(f"the role {role.role} of user {user_id} on {role.resource_type} "
                                     f"{role.resource_id} ends by itself at {role.access_expires_at}")
        return sentences

    # -- the sweeper ----------------------------------------------------------------------

    def sweep(self) -> int | None:
        """One tick: if this replica is the sweeper, write what is due."""
        if not self._leader.held():
            return None
        revision = self.apply_due()
        self.purge_request_records()
        for chore in self.chores:
            chore()
        return revision

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(TICK_SECONDS):
            try:
                self.sweep()
            except errors.DatabaseUnavailable:
                pass  # the store has said so, once; the next tick tries again
            except Exception:  # noqa: BLE001 - the sweeper never dies; the next tick tries again
                log.exception("applying expiries failed; trying again")
        self._leader.release()


class Leadership:
    """On PostgreSQL, one sweeper among the replicas: the holder of a session advisory lock on a
    connection of its own. Elsewhere (SQLite: one file, writers already one at a time) every
    process may sweep."""

    def __init__(self, store: Store):
        self.store = store
        self._connection = None
        self._held = False

    def held(self) -> bool:
        """Whether this replica is the sweeper now. Any failure of the database steps down
        quietly (the store reports a lost database): a connection that failed, its transaction
        dead, is dropped whole, and a later tick connects anew and asks for the lock again."""
        if self.store.engine.dialect.name != "postgresql":
            return True
        try:
            if self._connection is None:
                self._connection = self.store.engine.connect()
                self._held = False
            if self._held:
                self._connection.execute(text("SELECT 1"))  # still there, still ours
            else:
                self._held = bool(self._connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}).scalar())
            self._connection.commit()
            return self._held
        except SQLAlchemyError:
            self._drop()
            return False

    def release(self) -> None:
        if self._connection is not None:
            try:
                if self._held:
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                    self._connection.commit()
                self._connection.close()
            except SQLAlchemyError:
                self._drop()
        self._connection = None
        self._held = False

    def _drop(self) -> None:
        """Let go of the connection without asking the database anything: closing the session
        at the driver gives up the lock, and a lost session holds none."""
        connection, self._connection, self._held = self._connection, None, False
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()
            with contextlib.suppress(Exception):
                connection.close()
