"""Members of an organization: invitations, seats, removal, pause, roles, tags (R2 to R7, R15, R18)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, insert, or_, select, update

from mandate import errors
from mandate.engine.authorizer import Authorizer, MemberRef
from mandate.names import EventType, MemberAction, OrganizationAction, Reason
from mandate.runtime import callers
from mandate.shared.common import (
    calling_service,
    email_of,
    end_assignments,
    end_roles_of_member,
    get_member,
    new_id,
    reports_unchanged,
    unchanged,
)
from mandate.shared.expiry import Lifetimes, lapses_at, pending_invitation
from mandate.shared.retrying import retried
from mandate.store import models
from mandate.store.db import Store, Transaction, utc_now

Status = models.MemberStatus


@dataclass(frozen=True)
class Member:
    membership: models.Membership
    email: str


class Memberships:
    def __init__(self, store: Store, authorizer: Authorizer, lifetimes: Lifetimes | None = None):
        self.store = store
        self.authorizer = authorizer
        self.lifetimes = lifetimes or Lifetimes()

    @retried
    def invite_member(self, actor_id: str, organization_id: str, email: str, role: str,
                      access_expires_at: str = "") -> models.Invitation:
        """R4: a registered user joins at once; anyone else gets a pending invitation. R5: either
        takes a seat, checked inside the transaction so racing invitations cannot overfill.
        With `access_expires_at`, the membership ends by itself then (mandate.shared.expiry)."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require(actor_id, OrganizationAction.INVITE_MEMBER, organization_id)
            ends = self.lifetimes.access_end(access_expires_at, None)
            if ends and role == models.Role.OWNER:
                raise errors.InvalidArgument("access_expires_at", "an owner's membership does not end by itself (R6)")
            now = self.lifetimes.now()
            seat_limit = tx.execute(_SEAT_LIMIT, {"organization_id": organization_id}).scalar_one_or_none()
            if seat_limit is None:
                raise errors.NotFound(f"organization_id: no organization {organization_id!r}",
                                      Reason.ORGANIZATION_NOT_FOUND)
            user = tx.execute(_INVITEE, {"organization_id": organization_id, "email": email}).first()
            # R4, R2: whom the actor may invite as what (only an owner invites an owner) is the policy's.
            invitee = MemberRef(organization_id, user.id if user is not None else "", role)
            self.authorizer.require_target(actor_id, MemberAction.INVITE, invitee)
            if user is not None and user.status is not None and user.status != Status.REMOVED:
                raise errors.AlreadyMember(f"email: {email} is already a member of this organization")
            pending = {"organization_id": organization_id, "email": email, "now": now}
            if tx.execute(_PENDING_INVITATION, pending).first():
                raise errors.AlreadyExists(f"email: {email} already has a pending invitation",
                                           Reason.INVITATION_PENDING)
            check_seat_available(tx, organization_id, seat_limit, now)
            invitation = models.Invitation(
                id=new_id("inv"), kind=models.InvitationKind.MEMBER, organization_id=organization_id,
                email=email, role=role, invited_by=actor_id, customer_name="", customer_number="", currency="",
                requested_scopes=[], token_hash=None, created_at=utc_now(),
                expires_at=self.lifetimes.invitation_expires_at(), access_expires_at=ends, revision=tx.revision,
                status=models.InvitationStatus.PENDING if user is None else models.InvitationStatus.FINISHED,
            )
            tx.execute(_INSERT_INVITATION, {c: getattr(invitation, c) for c in _INVITATION_COLUMNS})
            tx.emit(EventType.MEMBER_INVITED, organization_id=organization_id, invitation_id=invitation.id,
                    email=email, role=role, registered=user is not None)
            if user is not None:
                joined = {"role": role, "status": Status.ACTIVE, "partner_employee": False,
                          "access_expires_at": ends, "revision": tx.revision}
                if user.status is None:
                    tx.execute(_INSERT_MEMBERSHIP, {"organization_id": organization_id, "user_id": user.id, **joined})
                else:
                    tx.execute(_REJOIN, {"key_organization_id": organization_id, "key_user_id": user.id, **joined})
                tx.emit(EventType.MEMBER_JOINED, organization_id=organization_id, user_id=user.id, role=role,
                        invitation_id=invitation.id)
        return invitation

    @retried
    def cancel_invitation(self, actor_id: str, invitation_id: str) -> models.Invitation:
        with self.store.write(actor_id, caller=calling_service()) as tx:
            invitation = tx.session.get(models.Invitation, invitation_id)
            callers.within_scope(invitation.organization_id if invitation is not None else None)
            if invitation is None:
                raise errors.NotFound(f"invitation_id: no invitation {invitation_id!r}", Reason.INVITATION_NOT_FOUND)
            self.authorizer.require(actor_id, OrganizationAction.CANCEL_INVITATION, invitation.organization_id)
            require_pending(invitation, self.lifetimes.now(), "invitation_id: ")
            invitation.status = models.InvitationStatus.CANCELLED
            invitation.revision = tx.revision
            tx.emit(EventType.INVITATION_CANCELLED, organization_id=invitation.organization_id,
                    invitation_id=invitation.id, kind=invitation.kind)
        return invitation

    @retried
    def list_invitations(self, actor_id: str, organization_id: str, query: str, status: str,
                         page_size: int, after: str, by_email: bool = True) -> list[models.Invitation]:
        """R11: searchable by customer name (or email, unless `by_email` is false: a read-only
        caller, who may not learn an address letter by letter), filtered by status, in creation order."""
        self.authorizer.require(actor_id, OrganizationAction.LIST_INVITATIONS, organization_id)
        statement = select(models.Invitation).where(models.Invitation.organization_id == organization_id)
        if status:
            statement = statement.where(models.Invitation.status == status)
        if query:
            pattern = f"%{escape_like(query.lower())}%"
            fields = [models.Invitation.customer_name] + ([models.Invitation.email] if by_email else [])
            statement = statement.where(or_(*(func.lower(field).like(pattern, escape="\\") for field in fields)))
        if after:
            statement = statement.where(models.Invitation.id > after)
        with self.store.read() as session:
            return list(session.execute(statement.order_by(models.Invitation.id).limit(page_size + 1)).scalars())

    @retried
    def list_members(self, actor_id: str, organization_id: str, page_size: int, after: str) -> list[Member]:
        self.authorizer.require(actor_id, OrganizationAction.LIST_MEMBERS, organization_id)
        statement = (
            select(models.Membership, models.User.email)
            .join(models.User, models.User.id == models.Membership.user_id)
            .where(models.Membership.organization_id == organization_id,
                   models.Membership.status != Status.REMOVED)
        )
        if after:
            statement = statement.where(models.Membership.user_id > after)
        statement = statement.order_by(models.Membership.user_id).limit(page_size + 1)
        with self.store.read() as session:
            return [Member(m, email) for m, email in session.execute(statement)]

    @retried
    def remove_member(self, actor_id: str, organization_id: str, user_id: str) -> int:
        """R6: the member loses every access through the organization at once, including every
        client they were assigned to (R18). The last active owner stays."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require(actor_id, OrganizationAction.REMOVE_MEMBER, organization_id)
            membership = get_member(tx.session, organization_id, user_id)
            # R6: whom the actor may remove (only an owner removes an owner) is the policy's.
            self.authorizer.require_target(actor_id, MemberAction.REMOVE, MemberRef(organization_id, user_id))
            end_membership(tx, membership)
        return tx.revision

    @retried
    def pause_member(self, actor_id: str, organization_id: str, user_id: str) -> Member:
        """R7: a paused member keeps membership, assignments and grants, but every check denies."""
        return self._set_status(actor_id, organization_id, user_id, OrganizationAction.PAUSE_MEMBER,
                                MemberAction.PAUSE, Status.PAUSED, EventType.MEMBER_PAUSED)

    @retried
    def resume_member(self, actor_id: str, organization_id: str, user_id: str) -> Member:
        """R7: resuming restores exactly the access the member had, whatever their role now (a
        paused member may have been made owner since)."""
        return self._set_status(actor_id, organization_id, user_id, OrganizationAction.RESUME_MEMBER,
                                MemberAction.RESUME, Status.ACTIVE, EventType.MEMBER_RESUMED)

    def _set_status(self, actor_id, organization_id, user_id, action, target_action, status, event) -> Member:
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require(actor_id, action, organization_id)
            found = tx.execute(_MEMBER_AND_EMAIL, {"organization_id": organization_id, "user_id": user_id}).first()
            if found is None or found.status == Status.REMOVED:
                raise errors.NotFound(f"user_id: user {user_id!r} is not a member of organization {organization_id!r}",
                                      Reason.MEMBER_NOT_FOUND)
            # R7: whom the actor may pause or resume (nobody pauses an owner, a legal
            # representative or themself) is the policy's.
            self.authorizer.require_target(actor_id, target_action, MemberRef(organization_id, user_id))
            if found.status == status:
                already = Reason.MEMBER_ALREADY_PAUSED if status == Status.PAUSED else Reason.MEMBER_ALREADY_ACTIVE
                raise errors.FailedPrecondition(f"user_id: the member is already {status}", already)
            if status == Status.PAUSED and found.role == models.Role.OWNER:
                check_keeps_an_active_owner(tx, organization_id, user_id)
            tx.execute(_SET_STATUS, {"key_organization_id": organization_id, "key_user_id": user_id,
                                     "new_status": status, "new_revision": tx.revision})
            # R22: the notification goes to the member; the email is resolved by the relay.
            tx.emit(event, organization_id=organization_id, user_id=user_id)
            membership = models.Membership(**{c: getattr(found, c) for c in _MEMBERSHIP_COLUMNS})
            membership.status, membership.revision = status, tx.revision
            return Member(membership, found.email)

    @retried
    @reports_unchanged
    def set_member_role(self, actor_id: str, organization_id: str, user_id: str, role: str,
                        access_expires_at: str = "") -> Member:
        """Also moves or clears the end of the membership: `access_expires_at` empty keeps it,
        `never` clears it. An owner's membership has no end (R6: making an owner clears it). The
        same role with the same end changes nothing."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require(actor_id, OrganizationAction.SET_MEMBER_ROLE, organization_id)
            membership = get_member(tx.session, organization_id, user_id)
            # R2: who may give or take which role (making or unmaking an owner) is the policy's.
            self.authorizer.require_target(actor_id, MemberAction.SET_ROLE, MemberRef(organization_id, user_id, role))
            ends = self.lifetimes.access_end(access_expires_at, membership.access_expires_at)
            if role == models.Role.OWNER:
                if ends and access_expires_at:
                    raise errors.InvalidArgument("access_expires_at",
                                                 "an owner's membership does not end by itself (R6)")
                ends = None
            if membership.role == role and membership.access_expires_at == ends:
                unchanged(tx, Member(membership, email_of(tx.session, user_id)), membership)
            if membership.role == models.Role.OWNER and role != models.Role.OWNER:
                check_keeps_an_active_owner(tx, organization_id, user_id)
            if membership.partner_employee and role != models.Role.COLLEAGUE:
                # Only colleagues carry the partner-employee tag: it ends with its assignments, as in
                # the R18 cascade, so becoming a colleague again grants nothing until re-tagged,
                # re-assigned and re-approved.
                membership.partner_employee = False
                withdraw_assignments(tx, organization_id, user_id)
                tx.emit(EventType.MEMBER_UNTAGGED, organization_id=organization_id, user_id=user_id)
            if membership.role != role:
                tx.emit(EventType.MEMBER_ROLE_CHANGED, organization_id=organization_id, user_id=user_id, role=role)
            if membership.access_expires_at != ends:
                tx.emit(EventType.MEMBER_ACCESS_EXPIRY_CHANGED, organization_id=organization_id, user_id=user_id,
                        access_expires_at=ends or "never")
            membership.role = role
            membership.access_expires_at = ends
            membership.revision = tx.revision
            return Member(membership, email_of(tx.session, user_id))

    @retried
    @reports_unchanged
    def tag_partner_employee(self, actor_id: str, organization_id: str, user_id: str, tagged: bool) -> Member:
        """R15: only tagged users can be assigned to clients; removing the tag withdraws every
        assignment at once."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require(actor_id, OrganizationAction.TAG_PARTNER_EMPLOYEE, organization_id)
            membership = get_member(tx.session, organization_id, user_id)
            # R15: whom the manager may tag is the policy's decision, on the member (only colleagues).
            target = MemberRef(organization_id, user_id)
            if not tagged:
                self.authorizer.require_target(actor_id, MemberAction.UNTAG, target)
            elif not self.authorizer.check_target(actor_id, MemberAction.TAG, target):
                raise errors.FailedPrecondition(
                    f"user_id: only colleagues can be partner employees; this member is {membership.role} "
                    "(R15, the policy's member.polar)",
                    Reason.NOT_A_COLLEAGUE,
                )
            if membership.partner_employee == tagged:
                unchanged(tx, Member(membership, email_of(tx.session, user_id)), membership)
            membership.partner_employee = tagged
            membership.revision = tx.revision
            if not tagged:
                withdraw_assignments(tx, organization_id, user_id)
            tx.emit(EventType.MEMBER_TAGGED if tagged else EventType.MEMBER_UNTAGGED, organization_id=organization_id,
                    user_id=user_id)
            return Member(membership, email_of(tx.session, user_id))


# Pause and resume, the most frequent mutations, in plain statements built once: the membership
# with its email in one round trip, and the change in another.
_MEMBERSHIPS, _USERS = models.Membership.__table__, models.User.__table__
_MEMBERSHIP_COLUMNS = tuple(c.name for c in _MEMBERSHIPS.columns)
_MEMBER_AND_EMAIL = (select(_MEMBERSHIPS, _USERS.c.email).join(_USERS, _USERS.c.id == _MEMBERSHIPS.c.user_id)
                     .where(_MEMBERSHIPS.c.organization_id == bindparam("organization_id"),
                            _MEMBERSHIPS.c.user_id == bindparam("user_id")))
_SET_STATUS = (update(_MEMBERSHIPS)
               .where(_MEMBERSHIPS.c.organization_id == bindparam("key_organization_id"),
                      _MEMBERSHIPS.c.user_id == bindparam("key_user_id"))
               .values(status=bindparam("new_status"), revision=bindparam("new_revision")))


# An invitation, the most frequent mutation after pause and resume, in plain statements built once
# too: the organization's seat limit; the invitee with their membership, if any; a pending
# invitation of the same email; the seats taken (R5); the writes.
_ORGANIZATIONS, _INVITATIONS = models.Organization.__table__, models.Invitation.__table__
_INVITATION_COLUMNS = tuple(c.name for c in _INVITATIONS.columns)
_SEAT_LIMIT = select(_ORGANIZATIONS.c.seat_limit).where(_ORGANIZATIONS.c.id == bindparam("organization_id"))
_INVITEE = (select(_USERS.c.id, _MEMBERSHIPS.c.status)
            .select_from(_USERS.outerjoin(_MEMBERSHIPS, and_(
                _MEMBERSHIPS.c.user_id == _USERS.c.id, _MEMBERSHIPS.c.organization_id == bindparam("organization_id"))))
            .where(_USERS.c.email == bindparam("email")))
_MEMBER_INVITATIONS = (_INVITATIONS.c.organization_id == bindparam("organization_id"),
                       _INVITATIONS.c.kind == models.InvitationKind.MEMBER)
_PENDING_INVITATION = (select(_INVITATIONS.c.id)
                       .where(*_MEMBER_INVITATIONS, _INVITATIONS.c.email == bindparam("email"),
                              *pending_invitation(bindparam("now")))
                       .limit(1))
_SEATS_TAKEN = select(
    select(func.count()).select_from(_MEMBERSHIPS)
    .where(_MEMBERSHIPS.c.organization_id == bindparam("organization_id"), _MEMBERSHIPS.c.status != Status.REMOVED)
    .scalar_subquery()
    + select(func.count()).select_from(_INVITATIONS)
    .where(*_MEMBER_INVITATIONS, *pending_invitation(bindparam("now"))).scalar_subquery())
_INSERT_INVITATION = insert(_INVITATIONS)
_INSERT_MEMBERSHIP = insert(_MEMBERSHIPS)
_REJOIN = (update(_MEMBERSHIPS)  # a removed member invited again: the same row, active again
           .where(_MEMBERSHIPS.c.organization_id == bindparam("key_organization_id"),
                  _MEMBERSHIPS.c.user_id == bindparam("key_user_id")))


def seats_taken(tx: Transaction, organization_id: str, now: str) -> int:
    """R5: members (active or paused) plus pending member invitations (an expired one frees its seat)."""
    return tx.execute(_SEATS_TAKEN, {"organization_id": organization_id, "now": now}).scalar_one()


def require_pending(invitation: models.Invitation, now: str, field: str = "") -> None:
    """An invitation can be accepted or cancelled while pending: an expired one no longer, even
    in the moment before the sweeper writes it down (R5, R11)."""
    if invitation.status == models.InvitationStatus.PENDING and lapses_at(invitation) <= now:
        if invitation.expires_at <= now:
            raise errors.InvitationNotPending(f"{field}the invitation expired at {invitation.expires_at}; "
                                              "it can no longer be accepted")
        raise errors.InvitationNotPending(f"{field}the invitation expired: the access it gives ended at "
                                          f"{invitation.access_expires_at}")
    if invitation.status != models.InvitationStatus.PENDING:
        raise errors.InvitationNotPending(f"{field}the invitation is {invitation.status}, not pending")


def check_seat_available(tx: Transaction, organization_id: str, seat_limit: int, now: str) -> None:
    if seat_limit and seats_taken(tx, organization_id, now) >= seat_limit:
        raise errors.SeatLimitReached(
            f"organization {organization_id} has reached its seat limit of {seat_limit} "
            "(members and pending invitations) (R5)"
        )


def check_keeps_an_active_owner(tx: Transaction, organization_id: str, user_id: str) -> None:
    """R6: an organization always keeps an owner who can act. An owner who is removed, demoted or
    paused must leave another active owner behind; paused owners do not count, they cannot act.
    Checked inside the write transaction, so two owners leaving at once cannot both pass."""
    others = tx.session.execute(select(func.count()).select_from(models.Membership).where(
        models.Membership.organization_id == organization_id,
        models.Membership.role == models.Role.OWNER,
        models.Membership.status == Status.ACTIVE,
        models.Membership.user_id != user_id,
    )).scalar_one()
    if not others:
        raise errors.LastOwner("user_id: the last active owner of an organization cannot be removed, demoted "
                               "or paused (R6)")


def end_membership(tx: Transaction, membership: models.Membership) -> None:
    """A removal (R6, R18): the membership ends, with its tag and every client assignment of the
    person under this organization. The last active owner stays (LAST_OWNER). Erasing a person
    ends each of their memberships the same way (mandate.admin.service)."""
    organization_id, user_id = membership.organization_id, membership.user_id
    if membership.role == models.Role.OWNER:
        check_keeps_an_active_owner(tx, organization_id, user_id)
    membership.status = Status.REMOVED
    membership.partner_employee = False
    membership.revision = tx.revision
    withdraw_assignments(tx, organization_id, user_id)
    end_roles_of_member(tx, organization_id, user_id, cause=models.EventCause.CASCADE)
    tx.emit(EventType.MEMBER_REMOVED, organization_id=organization_id, user_id=user_id)


def withdraw_assignments(tx: Transaction, partner_id: str, user_id: str) -> None:
    """R18: every client assignment of the user under this partner ends."""
    end_assignments(tx, models.Assignment.partner_id == partner_id, models.Assignment.user_id == user_id,
                    cause=models.EventCause.CASCADE)


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


