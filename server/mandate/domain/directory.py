"""Users, organizations, linked accounts and registered resources (R1, R3, R4, R10, R13)."""

from __future__ import annotations

from sqlalchemy import select

from mandate import callers, errors
from mandate.domain import partner
from mandate.domain.authorization import Authorizer, ProjectRef
from mandate.domain.common import get_organization, get_user, new_id, reports_unchanged, unchanged
from mandate.domain.expiry import Lifetimes, pending_invitation
from mandate.names import OrganizationAction, ProjectAction, Reason
from mandate.store import models
from mandate.store.db import Store, utc_now

DEFAULT_SEAT_LIMIT = 5  # R1


class Directory:
    def __init__(self, store: Store, authorizer: Authorizer, lifetimes: Lifetimes | None = None):
        self.store = store
        self.authorizer = authorizer
        self.lifetimes = lifetimes or Lifetimes()

    def register_user(self, email: str, display_name: str) -> tuple[models.User, int]:
        """R4: signing up completes every pending member invitation for the email."""
        with self.store.write() as tx:
            session = tx.session
            if session.execute(select(models.User.id).where(models.User.email == email)).first():
                raise errors.AlreadyExists(f"email: a user with email {email} is already registered",
                                           Reason.EMAIL_TAKEN)
            user = models.User(id=new_id("usr"), email=email, display_name=display_name,
                               created_at=utc_now(), revision=tx.revision)
            session.add(user)
            session.flush()
            tx.actor_id = user.id
            tx.emit("user.registered", user_id=user.id)
            pending = session.execute(
                select(models.Invitation).where(
                    models.Invitation.kind == models.InvitationKind.MEMBER,
                    models.Invitation.email == email,
                    *pending_invitation(self.lifetimes.now()),
                )
            ).scalars()
            for invitation in pending:
                # The pending invitation already holds its seat (R5): joining takes no new one.
                session.merge(models.Membership(
                    organization_id=invitation.organization_id, user_id=user.id, role=invitation.role,
                    status=models.MemberStatus.ACTIVE, partner_employee=False,
                    access_expires_at=invitation.access_expires_at, revision=tx.revision,
                ))
                invitation.status = models.InvitationStatus.FINISHED
                invitation.revision = tx.revision
                tx.emit("member.joined", organization_id=invitation.organization_id, user_id=user.id,
                        role=invitation.role, invitation_id=invitation.id)
        return user, tx.revision

    def create_organization(
        self, actor_id: str, name: str, currency: str, seat_limit: int | None
    ) -> models.Organization:
        """R1, R3: the creator is the owner. R10: pending client invitations for the creator's
        email connect the new organization to its partner at once, as a referral."""
        with self.store.write(actor_id) as tx:
            session = tx.session
            owner = get_user(session, actor_id, "actor_id")
            organization = models.Organization(
                id=new_id("org"), name=name, currency=currency,
                seat_limit=DEFAULT_SEAT_LIMIT if seat_limit is None else seat_limit,
                owner_id=owner.id, created_at=utc_now(), revision=tx.revision,
            )
            session.add(organization)
            session.flush()
            session.add(models.Membership(
                organization_id=organization.id, user_id=owner.id, role=models.Role.OWNER,
                status=models.MemberStatus.ACTIVE, partner_employee=False, revision=tx.revision,
            ))
            tx.emit("organization.created", organization_id=organization.id, owner_id=owner.id,
                    currency=currency, seat_limit=organization.seat_limit)
            partner.connect_referrals(tx, self.authorizer, owner, organization, self.lifetimes.now())
        return organization

    @reports_unchanged
    def link_organizations(self, actor_id: str, organization_id: str, other_id: str) -> int:
        """R13: an owner links two of their master accounts to switch between them."""
        if organization_id == other_id:
            raise errors.InvalidArgument("other_organization_id", "must differ from organization_id")
        with self.store.write(actor_id) as tx:
            self.authorizer.require(actor_id, OrganizationAction.LINK, organization_id)
            self.authorizer.require(actor_id, OrganizationAction.LINK, other_id)
            links = [tx.session.get(models.OrganizationLink, pair)
                     for pair in ((organization_id, other_id), (other_id, organization_id))]
            if all(links):
                unchanged(tx, max(link.revision for link in links))
            for a, b in ((organization_id, other_id), (other_id, organization_id)):
                tx.session.merge(models.OrganizationLink(organization_id=a, other_organization_id=b,
                                                         revision=tx.revision))
            tx.emit("organization.linked", organization_id=organization_id, other_organization_id=other_id)
        return tx.revision

    @reports_unchanged
    def put_resource(self, actor_id: str, resource_type: str, resource_id: str, organization_id: str) -> int:
        with self.store.write(actor_id) as tx:
            resource = tx.session.get(models.Resource, (resource_type, resource_id))
            if resource is not None and not resource.deleted:
                callers.within_scope(resource.organization_id)  # moving it changes the one it leaves
            self.authorizer.require(actor_id, OrganizationAction.PUT_RESOURCE, organization_id)
            if resource is not None and not resource.deleted and resource.organization_id != organization_id:
                # Moving a resource away from its current organization is decided on the resource
                # there (the policy's "move").
                self.authorizer.require_target(actor_id, ProjectAction.MOVE,
                                               ProjectRef(resource_type, resource_id, resource.organization_id))
            if resource is not None and not resource.deleted and resource.organization_id == organization_id:
                unchanged(tx, resource.revision)
            tx.session.merge(models.Resource(type=resource_type, id=resource_id, organization_id=organization_id,
                                             deleted=False, revision=tx.revision))
            tx.emit("resource.put", resource_type=resource_type, resource_id=resource_id,
                    organization_id=organization_id)
        return tx.revision

    def delete_resource(self, actor_id: str, resource_type: str, resource_id: str) -> int:
        with self.store.write(actor_id) as tx:
            resource = tx.session.get(models.Resource, (resource_type, resource_id))
            live = resource is not None and not resource.deleted
            callers.within_scope(resource.organization_id if live else None)  # unknown is outside, too
            if not live:
                raise errors.NotFound(f"resource: no {resource_type} {resource_id!r}", Reason.RESOURCE_NOT_FOUND)
            self.authorizer.require(actor_id, OrganizationAction.DELETE_RESOURCE, resource.organization_id)
            resource.deleted = True
            resource.revision = tx.revision
            tx.emit("resource.deleted", resource_type=resource_type, resource_id=resource_id,
                    organization_id=resource.organization_id)
        return tx.revision

    def get_organization(self, organization_id: str) -> models.Organization:
        with self.store.read() as session:
            return get_organization(session, organization_id)
