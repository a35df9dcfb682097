"""Users, organizations, linked accounts and registered resources (R1, R3, R4, R10, R13)."""

from __future__ import annotations

from sqlalchemy import select

from mandate import errors
from mandate.engine.authorizer import Authorizer, LinkRef, ProjectRef, RoleGrantRef, page
from mandate.engine.policy import Policy
from mandate.names import EventType, LinkAction, OrganizationAction, Reason, ResourceAction, RoleGrantAction
from mandate.partner import service as partner
from mandate.runtime import callers
from mandate.shared.common import (
    calling_service,
    end_resource_roles,
    get_organization,
    get_user,
    new_id,
    reports_unchanged,
    unchanged,
)
from mandate.shared.expiry import Lifetimes, pending_invitation
from mandate.shared.retrying import retried
from mandate.store import models
from mandate.store.db import Store, utc_now

DEFAULT_SEAT_LIMIT = 5  # R1


class Directory:
    def __init__(self, store: Store, authorizer: Authorizer, lifetimes: Lifetimes | None = None):
        self.store = store
        self.authorizer = authorizer
        self.lifetimes = lifetimes or Lifetimes()

    @retried
    def register_user(self, email: str, display_name: str) -> tuple[models.User, int]:
        """R4: signing up completes every pending member invitation for the email."""
        with self.store.write(caller=calling_service()) as tx:
            session = tx.session
            if session.execute(select(models.User.id).where(models.User.email == email)).first():
                raise errors.AlreadyExists(f"email: a user with email {email} is already registered",
                                           Reason.EMAIL_TAKEN)
            user = models.User(id=new_id("usr"), email=email, display_name=display_name,
                               created_at=utc_now(), revision=tx.revision)
            session.add(user)
            session.flush()
            tx.actor_id = user.id
            tx.emit(EventType.USER_REGISTERED, user_id=user.id)
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
                tx.emit(EventType.MEMBER_JOINED, organization_id=invitation.organization_id, user_id=user.id,
                        role=invitation.role, invitation_id=invitation.id)
        return user, tx.revision

    @retried
    def create_organization(
        self, actor_id: str, name: str, currency: str, seat_limit: int | None
    ) -> models.Organization:
        """R1, R3: the creator is the owner. R10: pending client invitations for the creator's
        email connect the new organization to its partner at once, as a referral."""
        with self.store.write(actor_id, caller=calling_service()) as tx:
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
            tx.emit(EventType.ORGANIZATION_CREATED, organization_id=organization.id, owner_id=owner.id,
                    currency=currency, seat_limit=organization.seat_limit)
            partner.connect_referrals(tx, self.authorizer, owner, organization, self.lifetimes.now())
        return organization

    @retried
    @reports_unchanged
    def link_organizations(self, actor_id: str, organization_id: str, other_id: str) -> int:
        """R13: an owner links two of their master accounts to switch between them."""
        if organization_id == other_id:
            raise errors.InvalidArgument("other_organization_id", "must differ from organization_id")
        with self.store.write(actor_id, caller=calling_service()) as tx:
            self.authorizer.require(actor_id, OrganizationAction.LINK, organization_id)
            if other_id not in self.authorizer.index.organizations:
                raise errors.NotFound(f"organization {other_id!r} does not exist", Reason.ORGANIZATION_NOT_FOUND)
            # R13: linking needs "link" on both accounts: the policy's decision (organization_link.polar).
            self.authorizer.require_target(actor_id, LinkAction.CREATE, LinkRef(organization_id, other_id))
            links = [tx.session.get(models.OrganizationLink, pair)
                     for pair in ((organization_id, other_id), (other_id, organization_id))]
            if all(links):
                unchanged(tx, max(link.revision for link in links))
            for a, b in ((organization_id, other_id), (other_id, organization_id)):
                tx.session.merge(models.OrganizationLink(organization_id=a, other_organization_id=b,
                                                         revision=tx.revision))
            tx.emit(EventType.ORGANIZATION_LINKED, organization_id=organization_id, other_organization_id=other_id)
        return tx.revision

    @retried
    @reports_unchanged
    def put_resource(self, actor_id: str, resource_type: str, resource_id: str, organization_id: str,
                     parent: tuple[str, str] | None = None) -> int:
        """Register a resource of a type the policy declares, at the top of an organization or
        under a parent (then it belongs to its top ancestor's organization). Registering it again
        elsewhere moves it, with its subtree."""
        policy = self.authorizer.policy
        relations = declared_type(policy, "resource.type", resource_type).relations
        if parent is not None:
            declared_type(policy, "parent.type", parent[0])
            if relations.get("parent") != parent[0]:
                allowed = f"a {relations['parent']}" if "parent" in relations else "none"
                raise errors.InvalidArgument("parent.type", f"a {resource_type} has no parent of type {parent[0]} "
                                             f"(its parent: {allowed})")
        elif "organization" not in relations:
            raise errors.InvalidArgument(
                "parent", f"is required: a {resource_type} lives under a {relations['parent']}")
        elif not organization_id:
            raise errors.InvalidArgument("organization_id", "is required (or give parent)")
        with self.store.write(actor_id, caller=calling_service()) as tx:
            session = tx.session
            resource = session.get(models.Resource, (resource_type, resource_id))
            if resource is not None and not resource.deleted:
                callers.within_scope(resource.organization_id)  # moving it changes the one it leaves
            if parent is None:
                self.authorizer.require(actor_id, OrganizationAction.PUT_RESOURCE, organization_id)
            else:
                organization_id = self._parent_organization(session, (resource_type, resource_id), parent,
                                                            organization_id)
                callers.within_scope(organization_id)
                self.authorizer.require(actor_id, OrganizationAction.PUT_RESOURCE, organization_id)
            live = resource is not None and not resource.deleted
            parent_type, parent_id = parent if parent is not None else (None, None)
            if live and (resource.organization_id, resource.parent_type, resource.parent_id) == (
                    organization_id, parent_type, parent_id):
                unchanged(tx, resource.revision)
            moved_out = live and resource.organization_id != organization_id
            if moved_out:
                # Moving a resource away from its current organization is decided on the resource
                # there (the policy's "move", where its type declares it; else who may unregister it).
                if ResourceAction.MOVE in policy.permissions.get(resource_type, ()):
                    self.authorizer.require_target(actor_id, ResourceAction.MOVE,
                                                   ProjectRef(resource_type, resource_id, resource.organization_id))
                else:
                    self.authorizer.require(actor_id, OrganizationAction.DELETE_RESOURCE, resource.organization_id)
            session.merge(models.Resource(type=resource_type, id=resource_id, organization_id=organization_id,
                                          parent_type=parent_type, parent_id=parent_id, deleted=False,
                                          revision=tx.revision))
            if moved_out:  # the subtree moves along: its organization is its top ancestor's
                for child in descendants(session, resource_type, resource_id):
                    child.organization_id = organization_id
                    child.revision = tx.revision
            where = {"parent": f"{parent_type}:{parent_id}"} if parent is not None else {}
            tx.emit(EventType.RESOURCE_PUT, resource_type=resource_type, resource_id=resource_id,
                    organization_id=organization_id, **where)
        return tx.revision

    @staticmethod
    def _parent_organization(session, resource: tuple[str, str], parent: tuple[str, str], organization_id: str) -> str:
        """The organization a resource put under `parent` belongs to (the parent's): NOT_FOUND
        PARENT_NOT_FOUND, or FAILED_PRECONDITION PARENT_CYCLE when the parent is the resource or
        lies under it."""
        row = session.get(models.Resource, parent)
        if row is None or row.deleted:
            raise errors.NotFound(f"parent: no {parent[0]} {parent[1]!r} is registered", Reason.PARENT_NOT_FOUND)
        if organization_id and organization_id != row.organization_id:
            raise errors.InvalidArgument(
                "organization_id", f"the parent {parent[0]} {parent[1]} belongs to organization "
                f"{row.organization_id}, not {organization_id}; leave organization_id empty or give that one")
        at = row
        while at is not None:
            if (at.type, at.id) == resource:
                raise errors.FailedPrecondition(
                    f"parent: {parent[0]} {parent[1]} is {resource[0]} {resource[1]} or lies under it; a resource "
                    "cannot be its own ancestor", Reason.PARENT_CYCLE)
            at = session.get(models.Resource, (at.parent_type, at.parent_id)) if at.parent_type else None
        return row.organization_id

    @retried
    def delete_resource(self, actor_id: str, resource_type: str, resource_id: str) -> int:
        """Unregister a resource. One with children is refused (RESOURCE_HAS_CHILDREN): delete or
        move them first, so that nothing disappears by accident. The roles given on it end."""
        declared_type(self.authorizer.policy, "resource.type", resource_type)
        with self.store.write(actor_id, caller=calling_service()) as tx:
            resource = tx.session.get(models.Resource, (resource_type, resource_id))
            live = resource is not None and not resource.deleted
            callers.within_scope(resource.organization_id if live else None)  # unknown is outside, too
            if not live:
                raise errors.NotFound(f"resource: no {resource_type} {resource_id!r}", Reason.RESOURCE_NOT_FOUND)
            self.authorizer.require(actor_id, OrganizationAction.DELETE_RESOURCE, resource.organization_id)
            children = children_of(tx.session, resource_type, resource_id)
            if children:
                names = ", ".join(f"{child.type}:{child.id}" for child in children[:3])
                raise errors.FailedPrecondition(
                    f"resource: {resource_type} {resource_id} still has {len(children)} "
                    f"child{'ren' if len(children) != 1 else ''} ({names}{', ...' if len(children) > 3 else ''}); "
                    "delete or move them first", Reason.RESOURCE_HAS_CHILDREN)
            resource.deleted = True
            resource.revision = tx.revision
            end_resource_roles(tx, models.ResourceRole.resource_type == resource_type,
                               models.ResourceRole.resource_id == resource_id, cause=models.EventCause.CASCADE)
            tx.emit(EventType.RESOURCE_DELETED, resource_type=resource_type, resource_id=resource_id,
                    organization_id=resource.organization_id)
        return tx.revision

    # -- roles on one resource ---------------------------------------------------------------

    @retried
    @reports_unchanged
    def grant_resource_role(self, actor_id: str, resource_type: str, resource_id: str, user_id: str, role: str,
                            access_expires_at: str = "") -> models.ResourceRole:
        """Give `user_id` the role `role` (declared by the resource's type) on one resource. Who
        may give which role to whom is the policy's (RoleGrant "grant")."""
        self._declared_role(resource_type, role)
        with self.store.write(actor_id, caller=calling_service()) as tx:
            session = tx.session
            resource = live_resource(session, resource_type, resource_id)
            get_user(session, user_id)
            self.authorizer.require_target(actor_id, RoleGrantAction.GRANT,
                                           RoleGrantRef(resource_type, resource_id, user_id, role))
            row = session.get(models.ResourceRole, (resource_type, resource_id, user_id, role))
            current = row.access_expires_at if row is not None and row.granted else None
            end = self.lifetimes.access_end(access_expires_at, current)
            if row is not None and row.granted and row.access_expires_at == end:
                unchanged(tx, row, row)
            if row is None:
                row = models.ResourceRole(resource_type=resource_type, resource_id=resource_id, user_id=user_id,
                                          role=role)
                session.add(row)
            if not row.granted:
                row.granted_by = actor_id
            row.granted = True
            row.access_expires_at = end
            row.revision = tx.revision
            tx.emit(EventType.RESOURCE_ROLE_GRANTED, organization_id=resource.organization_id,
                    resource_type=resource_type, resource_id=resource_id, user_id=user_id, role=role,
                    access_expires_at=end or "")
            session.flush()
        return row

    @retried
    def revoke_resource_role(self, actor_id: str, resource_type: str, resource_id: str, user_id: str,
                             role: str) -> models.ResourceRole:
        self._declared_role(resource_type, role)
        with self.store.write(actor_id, caller=calling_service()) as tx:
            session = tx.session
            resource = live_resource(session, resource_type, resource_id)
            self.authorizer.require_target(actor_id, RoleGrantAction.REVOKE,
                                           RoleGrantRef(resource_type, resource_id, user_id, role))
            row = session.get(models.ResourceRole, (resource_type, resource_id, user_id, role))
            if row is None or not row.granted:
                raise errors.NotFound(f"role: user {user_id} holds no role {role} on {resource_type} {resource_id}",
                                      Reason.NOT_FOUND)
            row.granted = False
            row.access_expires_at = None
            row.revision = tx.revision
            tx.emit(EventType.RESOURCE_ROLE_REVOKED, organization_id=resource.organization_id,
                    resource_type=resource_type, resource_id=resource_id, user_id=user_id, role=role)
            session.flush()
        return row

    @retried
    def list_resource_roles(self, actor_id: str, resource_type: str, resource_id: str, page_size: int,
                            after: str) -> tuple[list[models.ResourceRole], str, int]:
        """The roles given on one resource, by user and role; for who may see the organization's members."""
        declared_type(self.authorizer.policy, "resource.type", resource_type)
        with self.store.read(snapshot=True) as session:
            resource = live_resource(session, resource_type, resource_id)
            revision = session.execute(select(models.RevisionCounter.value)).scalar_one()
        self.authorizer.at_least(revision)
        self.authorizer.require(actor_id, OrganizationAction.LIST_MEMBERS, resource.organization_id)
        with self.store.read() as session:
            rows = session.execute(select(models.ResourceRole).where(
                models.ResourceRole.resource_type == resource_type, models.ResourceRole.resource_id == resource_id,
                models.ResourceRole.granted.is_(True)).order_by(models.ResourceRole.user_id, models.ResourceRole.role)
            ).scalars().all()
        keyed = [(f"{row.user_id} {row.role}", row) for row in rows if f"{row.user_id} {row.role}" > after]
        keys, last = page([key for key, _ in keyed[:page_size + 1]], page_size)
        return [row for _, row in keyed[:len(keys)]], last, revision

    def _declared_role(self, resource_type: str, role: str) -> None:
        policy = self.authorizer.policy
        declared_type(policy, "resource.type", resource_type)
        roles = policy.roles.get(resource_type, ())
        if role not in roles:
            raise errors.InvalidArgument("role", f"a {resource_type} declares no role {role!r}; its roles: "
                                         f"{', '.join(roles) or 'none'}", Reason.UNKNOWN_ROLE)

    @retried
    def get_organization(self, organization_id: str) -> models.Organization:
        with self.store.read() as session:
            return get_organization(session, organization_id)


def declared_type(policy: Policy, field: str, resource_type: str):
    """The policy's declaration of a resource type a caller names; INVALID_ARGUMENT
    UNKNOWN_RESOURCE_TYPE for any other."""
    block = policy.resource_types.get(resource_type)
    if block is None:
        raise errors.InvalidArgument(field, f"the policy declares no resource type {resource_type!r}; it declares: "
                                     f"{', '.join(policy.resource_types) or 'none'}", Reason.UNKNOWN_RESOURCE_TYPE)
    return block


def live_resource(session, resource_type: str, resource_id: str) -> models.Resource:
    """A registered resource, within the caller's scope (callers file: `organizations`)."""
    resource = session.get(models.Resource, (resource_type, resource_id))
    live = resource is not None and not resource.deleted
    callers.within_scope(resource.organization_id if live else None)  # unknown is outside, too
    if not live:
        raise errors.NotFound(f"resource: no {resource_type} {resource_id!r}", Reason.RESOURCE_NOT_FOUND)
    return resource


def children_of(session, resource_type: str, resource_id: str) -> list[models.Resource]:
    return list(session.execute(select(models.Resource).where(
        models.Resource.parent_type == resource_type, models.Resource.parent_id == resource_id,
        models.Resource.deleted.is_(False)).order_by(models.Resource.type, models.Resource.id)).scalars())


def descendants(session, resource_type: str, resource_id: str) -> list[models.Resource]:
    """Every live resource under this one, at any depth."""
    found: list[models.Resource] = []
    pending = [(resource_type, resource_id)]
    while pending:
        for child in children_of(session, *pending.pop()):
            found.append(child)
            pending.append((child.type, child.id))
    return found
