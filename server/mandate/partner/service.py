"""The partner program: client invitations and links, connections, scopes, disconnects and
partner employees (R8 to R21)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, select, update

from mandate import errors
from mandate.engine.authorizer import Authorizer, ConnectionRef, InvitationRef, MemberRef
from mandate.engine.facts import HOME, InvitationTarget, MembershipFact, Subject
from mandate.membership.service import escape_like, require_pending
from mandate.names import ConnectionAction, EventType, InvitationAction, MemberAction, OrganizationAction, Reason
from mandate.runtime import callers
from mandate.shared.common import (
    calling_service,
    end_assignments,
    get_connection,
    get_organization,
    get_user,
    new_id,
    reports_unchanged,
    unchanged,
)
from mandate.shared.expiry import Lifetimes, pending_invitation
from mandate.shared.retrying import retried
from mandate.store import models
from mandate.store.db import Store, Transaction, utc_now

Live = (models.ConnectionStatus.ACTIVE, models.ConnectionStatus.DISCONNECT_REQUESTED)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedLink:
    invitation: models.Invitation
    token: str  # shown once, in the reply that created the link


class Partners:
    def __init__(self, store: Store, authorizer: Authorizer, lifetimes: Lifetimes | None = None):
        self.store = store
        self.authorizer = authorizer
        self.lifetimes = lifetimes or Lifetimes()

    # -- inviting clients ------------------------------------------------------------------

    @retried
    def invite_client(self, actor_id: str, partner_id: str, email: str, customer_name: str,
                      customer_number: str, currency: str, scopes: list[str]) -> models.Invitation:
        """R9, R10: a registered client accepts; an unregistered one is connected when it
        signs up and creates its organization."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            invitation = self._new_client_invitation(tx, actor_id, partner_id, customer_name, customer_number,
                                                     currency, scopes, email=email)
            tx.emit(EventType.CLIENT_INVITED, partner_id=partner_id, invitation_id=invitation.id, email=email,
                    customer_name=customer_name)
        return invitation

    @retried
    def create_invite_link(self, actor_id: str, partner_id: str, customer_name: str, customer_number: str,
                           currency: str, scopes: list[str]) -> CreatedLink:
        """R11: one link, one customer, single use. Only the token's hash is stored."""
        token = secrets.token_urlsafe(32)  # 256 bits
        with self.store.write(actor_id, caller=calling_service()) as tx:
            invitation = self._new_client_invitation(tx, actor_id, partner_id, customer_name, customer_number,
                                                     currency, scopes, token_hash=hash_token(token))
            tx.emit(EventType.CLIENT_INVITE_LINK_CREATED, partner_id=partner_id, invitation_id=invitation.id,
                    customer_name=customer_name)
        return CreatedLink(invitation, token)

    def _new_client_invitation(self, tx: Transaction, actor_id, partner_id, customer_name, customer_number,
                               currency, scopes, email="", token_hash=None) -> models.Invitation:
        self.authorizer.require(actor_id, OrganizationAction.ADD_CLIENT, partner_id)  # R8
        partner = get_organization(tx.session, partner_id, "partner_id")
        if currency != partner.currency:
            raise errors.CurrencyMismatch(
                f"currency: the invitation's currency {currency} must be the partner's currency "
                f"{partner.currency} (R13)"
            )
        invitation = models.Invitation(
            id=new_id("inv"), kind=models.InvitationKind.CLIENT, organization_id=partner_id, email=email,
            role="", status=models.InvitationStatus.PENDING, invited_by=actor_id, customer_name=customer_name,
            customer_number=customer_number, currency=currency, requested_scopes=sorted(set(scopes)),
            token_hash=token_hash, created_at=utc_now(), expires_at=self.lifetimes.invitation_expires_at(),
            revision=tx.revision,
        )
        tx.session.add(invitation)
        return invitation

    @retried
    def accept_client_invitation(self, actor_id: str, invitation_id: str, token: str, client_id: str,
                                 granted_scopes: list[str], employee_approval: str,
                                 access_expires_at: str = "") -> models.Connection:
        """R9, R11, R12: the client accepts, granting exactly the scopes it lists.
        A link is single use: the first acceptance finishes it, inside the transaction."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            # Permission first: someone who may not accept learns nothing about the token.
            self.authorizer.require(actor_id, OrganizationAction.ACCEPT_CLIENT_INVITATION, client_id)
            invitation = self._find_client_invitation(tx, invitation_id, token)
            # R9 to R11: who may accept this invitation (its addressee, or whoever holds the link).
            addressee = get_user(tx.session, actor_id, "actor_id").email == invitation.email
            self.authorizer.require_target(actor_id, InvitationAction.ACCEPT,
                                           InvitationRef(client_id, bool(invitation.token_hash), addressee))
            require_pending(invitation, self.lifetimes.now())
            ends = self.lifetimes.access_end(access_expires_at, None)
            return connect(tx, invitation, client_id, granted_scopes, employee_approval, referral=False,
                           access_expires_at=ends)

    def _find_client_invitation(self, tx: Transaction, invitation_id, token) -> models.Invitation:
        if token:
            digest = hash_token(token)
            invitation = tx.session.execute(
                select(models.Invitation).where(models.Invitation.token_hash == digest)
            ).scalar_one_or_none()
            # The look-up is by hash; compare again in constant time before trusting it.
            if invitation is not None and not hmac.compare_digest(invitation.token_hash or "", digest):
                invitation = None
            # A caller limited to some organizations: the inviting partner must be one of them.
            callers.within_scope(invitation.organization_id if invitation is not None else None)
            if invitation is None:
                raise errors.NotFound("token: no invitation link matches this token", Reason.INVITATION_NOT_FOUND)
        else:
            invitation = tx.session.get(models.Invitation, invitation_id)
            callers.within_scope(invitation.organization_id if invitation is not None else None)
            if invitation is None or invitation.kind != models.InvitationKind.CLIENT or invitation.token_hash:
                raise errors.NotFound(f"invitation_id: no client invitation {invitation_id!r}",
                                      Reason.INVITATION_NOT_FOUND)
        return invitation

    # -- reading connections ----------------------------------------------------------------

    @retried
    def list_clients(self, actor_id: str, partner_id: str, query: str, status: str, page_size: int,
                     after: str, permission: str = OrganizationAction.LIST_CLIENTS) -> list[models.Connection]:
        """The partner's clients; R21's export reads the same list under `export_clients`."""
        self.authorizer.require(actor_id, permission, partner_id)
        statement = select(models.Connection).where(models.Connection.partner_id == partner_id)
        if status:
            statement = statement.where(models.Connection.status == status)
        if query:
            statement = statement.where(
                func.lower(models.Connection.customer_name).like(f"%{escape_like(query.lower())}%", escape="\\")
            )
        if after:
            statement = statement.where(models.Connection.client_id > after)
        statement = statement.order_by(models.Connection.client_id).limit(page_size + 1)
        with self.store.read() as session:
            return list(session.execute(statement).scalars())

    @retried
    def list_partners(self, actor_id: str, client_id: str, page_size: int, after: str) -> list[models.Connection]:
        self.authorizer.require(actor_id, OrganizationAction.LIST_PARTNERS, client_id)
        statement = select(models.Connection).where(models.Connection.client_id == client_id)
        if after:
            statement = statement.where(models.Connection.partner_id > after)
        statement = statement.order_by(models.Connection.partner_id).limit(page_size + 1)
        with self.store.read() as session:
            return list(session.execute(statement).scalars())

    # -- changing a connection ----------------------------------------------------------------

    @retried
    @reports_unchanged
    def update_granted_scopes(self, actor_id: str, partner_id: str, client_id: str,
                              scopes: list[str], access_expires_at: str = "") -> models.Connection:
        """R12: the client changes what it grants, at any time, and until when (empty
        `access_expires_at` keeps the current end, `never` clears it)."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require_target(actor_id, ConnectionAction.UPDATE_GRANTED_SCOPES,
                                           ConnectionRef(partner_id, client_id))
            connection = get_connection(tx.session, partner_id, client_id)
            ends = self.lifetimes.access_end(access_expires_at, connection.access_expires_at)
            if sorted(connection.granted_scopes) == sorted(set(scopes)) and connection.access_expires_at == ends:
                unchanged(tx, connection, connection)
            if connection.access_expires_at != ends:
                tx.emit(EventType.CLIENT_ACCESS_EXPIRY_CHANGED, partner_id=partner_id, client_id=client_id,
                        access_expires_at=ends or "never")
            connection.granted_scopes = sorted(set(scopes))
            connection.access_expires_at = ends
            connection.revision = tx.revision
            tx.emit(EventType.CLIENT_SCOPES_UPDATED, partner_id=partner_id, client_id=client_id,
                    granted_scopes=connection.granted_scopes)
            return connection

    @retried
    def request_disconnect(self, actor_id: str, partner_id: str, client_id: str) -> models.Connection:
        """R14: the partner asks; access continues until the client accepts."""
        return self._move(actor_id, partner_id, client_id, ConnectionAction.REQUEST_DISCONNECT,
                          (models.ConnectionStatus.ACTIVE,), models.ConnectionStatus.DISCONNECT_REQUESTED,
                          EventType.CLIENT_DISCONNECT_REQUESTED)

    @retried
    def accept_disconnect(self, actor_id: str, partner_id: str, client_id: str) -> models.Connection:
        return self._move(actor_id, partner_id, client_id, ConnectionAction.ACCEPT_DISCONNECT,
                          (models.ConnectionStatus.DISCONNECT_REQUESTED,), models.ConnectionStatus.DISCONNECTED,
                          EventType.CLIENT_DISCONNECTED)

    @retried
    def decline_disconnect(self, actor_id: str, partner_id: str, client_id: str) -> models.Connection:
        return self._move(actor_id, partner_id, client_id, ConnectionAction.DECLINE_DISCONNECT,
                          (models.ConnectionStatus.DISCONNECT_REQUESTED,), models.ConnectionStatus.ACTIVE,
                          EventType.CLIENT_DISCONNECT_DECLINED)

    @retried
    def revoke_partner(self, actor_id: str, partner_id: str, client_id: str) -> models.Connection:
        """R14: the client, who owns its data, ends the relationship at once."""
        return self._move(actor_id, partner_id, client_id, ConnectionAction.REVOKE, Live,
                          models.ConnectionStatus.DISCONNECTED, EventType.PARTNER_REVOKED)

    def _move(self, actor_id, partner_id, client_id, action, from_states, to_state, event):
        with self.store.write(actor_id, caller=calling_service()) as tx:
            # R14: which side may make this move is the policy's (resource Connection).
            self.authorizer.require_target(actor_id, action, ConnectionRef(partner_id, client_id))
            connection = get_connection(tx.session, partner_id, client_id, live=False)
            if connection.status not in from_states:
                raise errors.FailedPrecondition(
                    f"the connection is {connection.status}; this needs it to be {' or '.join(from_states)} (R14)",
                    Reason.CONNECTION_STATE,
                )
            connection.status = to_state
            connection.revision = tx.revision
            if to_state == models.ConnectionStatus.DISCONNECTED:
                # A disconnected client keeps no partner employees: a new connection starts afresh.
                end_assignments(tx, models.Assignment.partner_id == partner_id,
                                models.Assignment.client_id == client_id, cause=models.EventCause.CASCADE)
            tx.emit(event, partner_id=partner_id, client_id=client_id)
            return connection

    # -- partner employees ------------------------------------------------------------------

    @retried
    def assign_client(self, actor_id: str, partner_id: str, client_id: str, user_id: str,
                      access_expires_at: str = "") -> models.Assignment:
        """R15, R16, R19: only tagged employees; one partner record per person and client.
        With `access_expires_at`, the assignment ends by itself then; assigning someone already
        assigned with `access_expires_at` moves (or, with `never`, clears) that end."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require_target(actor_id, ConnectionAction.ASSIGN, ConnectionRef(partner_id, client_id))
            pair = {"partner_id": partner_id, "client_id": client_id}
            connection = tx.execute(_CONNECTION_STATUS, pair).first()
            if connection is None or connection.status == models.ConnectionStatus.DISCONNECTED:
                raise errors.NotFound(
                    f"client_id: organization {client_id!r} is not a connected client of partner {partner_id!r}",
                    Reason.CONNECTION_NOT_FOUND,
                )
            membership = tx.execute(_MEMBER_STATUS, {"organization_id": partner_id, "user_id": user_id}).first()
            if membership is None or membership.status == models.MemberStatus.REMOVED:
                raise errors.NotFound(
                    f"user_id: user {user_id!r} is not a member of organization {partner_id!r}",
                    Reason.MEMBER_NOT_FOUND,
                )
            # R15: whom the manager may assign is the policy's decision, on the assignee's
            # membership in the partner (only tagged partner employees).
            if not self.authorizer.check_target(actor_id, MemberAction.ASSIGN, MemberRef(partner_id, user_id)):
                raise errors.NotPartnerEmployee(
                    f"user_id: user {user_id} is not tagged as a partner employee of {partner_id} "
                    "(R15, the policy's member.polar)"
                )
            # Every partner record of this person at this client, in one look-up (R19).
            records = tx.execute(_RECORDS_AT_CLIENT, {"user_id": user_id, "client_id": client_id}).all()
            if any(r.partner_id != partner_id and r.assigned for r in records):
                raise errors.PartnerRecordConflict(
                    f"user_id: user {user_id} is already associated with another partner record for this client (R19)"
                )
            own = next((r for r in records if r.partner_id == partner_id), None)
            key = {"key_partner_id": partner_id, "key_client_id": client_id, "key_user_id": user_id}
            if own is not None and own.assigned:
                if not access_expires_at:
                    raise errors.AlreadyExists(f"user_id: user {user_id} is already assigned to this client",
                                               Reason.ALREADY_ASSIGNED)
                ends = self.lifetimes.access_end(access_expires_at, own.access_expires_at)
                tx.execute(_MOVE_ASSIGNMENT_END, {**key, "new_end": ends, "new_revision": tx.revision})
                tx.emit(EventType.PARTNER_EMPLOYEE_ACCESS_EXPIRY_CHANGED, partner_id=partner_id, client_id=client_id,
                        user_id=user_id, access_expires_at=ends or "never")
                return _assignment(own, access_expires_at=ends, revision=tx.revision)
            values = {"assigned": True, "client_approved": False,
                      "access_expires_at": self.lifetimes.access_end(access_expires_at, None), "revision": tx.revision}
            if own is None:
                tx.execute(_INSERT_ASSIGNMENT, {"partner_id": partner_id, "client_id": client_id, "user_id": user_id,
                                                **values})
            else:
                tx.execute(_REASSIGN, {**key, **{f"new_{k}": v for k, v in values.items()}})
            tx.emit(EventType.PARTNER_EMPLOYEE_ASSIGNED, partner_id=partner_id, client_id=client_id, user_id=user_id)
            return models.Assignment(partner_id=partner_id, client_id=client_id, user_id=user_id, **values)

    @retried
    def unassign_client(self, actor_id: str, partner_id: str, client_id: str, user_id: str) -> models.Assignment:
        """R17: the partner withdraws the employee from this client."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require_target(actor_id, ConnectionAction.UNASSIGN, ConnectionRef(partner_id, client_id))
            ended = tx.execute(_UNASSIGN, {"key_partner_id": partner_id, "key_client_id": client_id,
                                           "key_user_id": user_id, "new_revision": tx.revision}).first()
            if ended is None:
                raise errors.NotFound(
                    f"user_id: user {user_id} is not assigned to client {client_id} by partner {partner_id}",
                    Reason.ASSIGNMENT_NOT_FOUND,
                )
            tx.emit(EventType.PARTNER_EMPLOYEE_UNASSIGNED, partner_id=partner_id, client_id=client_id, user_id=user_id)
            return _assignment(ended)

    @retried
    def approve_partner_employee(self, actor_id: str, client_id: str, partner_id: str,
                                 user_id: str) -> models.Assignment:
        """R16: the client adds the assigned person; only then do they reach the client."""
        return self._consent(actor_id, client_id, partner_id, user_id, ConnectionAction.APPROVE_EMPLOYEE, True,
                             EventType.PARTNER_EMPLOYEE_APPROVED)

    @retried
    def revoke_partner_employee(self, actor_id: str, client_id: str, partner_id: str,
                                user_id: str) -> models.Assignment:
        """R17: the client withdraws its approval."""
        return self._consent(actor_id, client_id, partner_id, user_id, ConnectionAction.REVOKE_EMPLOYEE, False,
                             EventType.PARTNER_EMPLOYEE_REVOKED)

    @reports_unchanged
    def _consent(self, actor_id, client_id, partner_id, user_id, action, approved, event) -> models.Assignment:
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require_target(actor_id, action, ConnectionRef(partner_id, client_id))
            assignment = get_assignment(tx, partner_id, client_id, user_id)
            connection = get_connection(tx.session, partner_id, client_id)
            ends_assignment = not approved and connection.employee_approval == models.EmployeeApproval.PARTNER
            if assignment.client_approved == approved and not ends_assignment:
                unchanged(tx, assignment, assignment)
            if ends_assignment:
                # R17: a client that trusts the partner's delegation withdraws a person by ending
                # the assignment itself (an approval would not be asked for, so revoking it could not).
                end_assignments(tx, models.Assignment.partner_id == partner_id,
                                models.Assignment.client_id == client_id, models.Assignment.user_id == user_id)
            assignment.client_approved = approved
            assignment.revision = tx.revision
            tx.emit(event, partner_id=partner_id, client_id=client_id, user_id=user_id)
            return assignment


# Assigning and unassigning, frequent mutations, in plain statements built once.
_CONNECTIONS, _MEMBERSHIPS, _ASSIGNMENTS = (models.Connection.__table__, models.Membership.__table__,
                                            models.Assignment.__table__)
_CONNECTION_STATUS = select(_CONNECTIONS.c.status).where(_CONNECTIONS.c.partner_id == bindparam("partner_id"),
                                                         _CONNECTIONS.c.client_id == bindparam("client_id"))
_MEMBER_STATUS = select(_MEMBERSHIPS.c.status, _MEMBERSHIPS.c.partner_employee).where(
    _MEMBERSHIPS.c.organization_id == bindparam("organization_id"), _MEMBERSHIPS.c.user_id == bindparam("user_id"))
_RECORDS_AT_CLIENT = select(_ASSIGNMENTS).where(_ASSIGNMENTS.c.user_id == bindparam("user_id"),
                                                _ASSIGNMENTS.c.client_id == bindparam("client_id"))
_ONE_ASSIGNMENT = (_ASSIGNMENTS.c.partner_id == bindparam("key_partner_id"),
                   _ASSIGNMENTS.c.client_id == bindparam("key_client_id"),
                   _ASSIGNMENTS.c.user_id == bindparam("key_user_id"))
_INSERT_ASSIGNMENT = insert(_ASSIGNMENTS)
_REASSIGN = update(_ASSIGNMENTS).where(*_ONE_ASSIGNMENT).values(
    assigned=bindparam("new_assigned"), client_approved=bindparam("new_client_approved"),
    access_expires_at=bindparam("new_access_expires_at"), revision=bindparam("new_revision"))
_MOVE_ASSIGNMENT_END = update(_ASSIGNMENTS).where(*_ONE_ASSIGNMENT).values(
    access_expires_at=bindparam("new_end"), revision=bindparam("new_revision"))
# R17: a withdrawn assignment is kept, unassigned and unapproved; only a live one can be withdrawn.
_UNASSIGN = (update(_ASSIGNMENTS).where(*_ONE_ASSIGNMENT, _ASSIGNMENTS.c.assigned.is_(True))
             .values(assigned=False, client_approved=False, revision=bindparam("new_revision"))
             .returning(*_ASSIGNMENTS.c))


def _assignment(row, **changed) -> models.Assignment:
    """An assignment as the reply shows it, from a plain row (not kept in any session)."""
    return models.Assignment(**{**row._asdict(), **changed})


def get_assignment(tx: Transaction, partner_id: str, client_id: str, user_id: str) -> models.Assignment:
    assignment = tx.session.get(models.Assignment, (partner_id, client_id, user_id))
    if assignment is None or not assignment.assigned:
        raise errors.NotFound(
            f"user_id: user {user_id} is not assigned to client {client_id} by partner {partner_id}",
            Reason.ASSIGNMENT_NOT_FOUND,
        )
    return assignment


def connect(tx: Transaction, invitation: models.Invitation, client_id: str, scopes: list[str],
            employee_approval: str, referral: bool, access_expires_at: str | None = None) -> models.Connection:
    """Connect a client to the partner that invited it, finishing the invitation (R9 to R12)."""
    session = tx.session
    get_organization(session, client_id, "client_id")
    if client_id == invitation.organization_id:
        raise errors.InvalidArgument("client_id", "an organization cannot be its own client")
    existing = session.get(models.Connection, (invitation.organization_id, client_id))
    if existing is not None and existing.status != models.ConnectionStatus.DISCONNECTED:
        raise errors.AlreadyExists("client_id: this organization is already a client of the partner",
                                   Reason.ALREADY_CONNECTED)
    connection = session.merge(models.Connection(
        partner_id=invitation.organization_id, client_id=client_id, status=models.ConnectionStatus.ACTIVE,
        customer_name=invitation.customer_name, customer_number=invitation.customer_number,
        currency=invitation.currency, requested_scopes=list(invitation.requested_scopes),
        granted_scopes=sorted(set(scopes)), employee_approval=employee_approval, referral=referral,
        connected_at=utc_now(), access_expires_at=access_expires_at, invitation_id=invitation.id,
        revision=tx.revision,
    ))
    invitation.status = models.InvitationStatus.FINISHED
    invitation.revision = tx.revision
    tx.emit(EventType.CLIENT_CONNECTED, partner_id=invitation.organization_id, client_id=client_id,
            invitation_id=invitation.id, granted_scopes=connection.granted_scopes, referral=referral,
            employee_approval=employee_approval)
    return connection


def connect_referrals(tx: Transaction, authorizer: Authorizer, owner: models.User,
                      organization: models.Organization, now: str) -> None:
    """R10: a client invited by email who signs up and creates an organization is connected to
    the partner automatically, as its referral. R12 (decided in the policy, `referral_scopes` in
    connection.polar): the connection starts with the scopes the policy gives a referral (none:
    the referral grants nothing until the client grants scopes)."""
    # The organization is created in this transaction, so the fact index does not know it yet:
    # its facts are the creator's new ownership and nothing else.
    creator = Subject(memberships=(MembershipFact(HOME, models.Role.OWNER, models.MemberStatus.ACTIVE, False),),
                      target=InvitationTarget(by_link=False, sent_to_actor=True))
    if not authorizer.policy.is_allowed(creator, "ClientInvitation", InvitationAction.ACCEPT):
        return  # the invitations stay pending; the client may accept one explicitly
    # Only invitations sent before the user signed up: a client who already had an account
    # when invited accepts explicitly (R9).
    pending = tx.session.execute(select(models.Invitation).where(
        models.Invitation.kind == models.InvitationKind.CLIENT,
        models.Invitation.email == owner.email,
        *pending_invitation(now),
        models.Invitation.created_at < owner.created_at,
    ).order_by(models.Invitation.id)).scalars()
    for invitation in pending:
        existing = tx.session.get(models.Connection, (invitation.organization_id, organization.id))
        if existing is None or existing.status == models.ConnectionStatus.DISCONNECTED:
            connect(tx, invitation, organization.id, list(authorizer.policy.referral_scopes or ()),
                    models.EmployeeApproval.CLIENT, referral=True)
