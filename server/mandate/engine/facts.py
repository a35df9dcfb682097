"""The facts a decision may use, as immutable values.

A `Subject` holds everything the policy may know about one (user, organization) pair:
the user's memberships there and in the organization's partners and linked accounts,
the organization's partner connections, and the user's assignments to it. When the decision is
about the target of a mutation (a membership being changed, an invitation being accepted, a
connection being changed, a role being given on one resource), the `Subject` also holds that
target's facts. For a resource of a type the policy declares, it holds the types of its chain
(the resource, its parent, ... up to the top one) and the user's roles on that chain, by
position: resources appear as links of the chain, never under their ids. Organizations
appear under local labels ("o" for the resource's organization, "p0", "p1", ... for
partners, "l0", ... for linked accounts), never under their ids, so two pairs in the same
situation share one `Subject` and the policy's answer can be reused (see policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

HOME = "o"


@dataclass(frozen=True, slots=True)
class MembershipFact:
    organization_id: str  # a local label
    role: str
    status: str  # "active" or "paused"
    partner_employee: bool


@dataclass(frozen=True, slots=True)
class ConnectionFact:
    partner_id: str  # a local label
    status: str
    granted_scopes: frozenset[str]
    employee_approval: str


@dataclass(frozen=True, slots=True)
class AssignmentFact:
    partner_id: str  # a local label
    client_approved: bool


@dataclass(frozen=True, slots=True)
class MemberTarget:
    """The membership a mutation changes (R4 to R7): in the decision's organization."""

    role: str  # "" when the person is not a member yet (an invitation)
    status: str  # "active", "paused", or "" when not a member yet
    partner_employee: bool
    is_actor: bool  # the acting user changes their own membership
    new_role: str = ""  # the role an invitation or a change of role gives


@dataclass(frozen=True, slots=True)
class InvitationTarget:
    """A client invitation being accepted for the decision's organization (R9 to R11)."""

    by_link: bool  # an individual link (R11): whoever holds it
    sent_to_actor: bool  # an invitation by email addressed to the acting user's email (R9, R10)


@dataclass(frozen=True, slots=True)
class RoleGrantTarget:
    """A role being given or taken on one resource (GrantResourceRole, RevokeResourceRole): the
    role, and the grantee's facts about the resource's organization under the actor's labels
    (their membership there, in the partners the actor belongs to, their assignments)."""

    role: str
    grantee_memberships: tuple[MembershipFact, ...] = ()
    grantee_assignments: tuple[AssignmentFact, ...] = ()
    is_actor: bool = False


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """Two master accounts being linked (R13): the decision's organization and another one, whose
    fact is the user's membership there, among the subject's memberships under the label OTHER."""


OTHER = "x"  # the label of the other organization of a LinkTarget

Target = MemberTarget | InvitationTarget | ConnectionFact | RoleGrantTarget | LinkTarget


@dataclass(frozen=True, slots=True)
class Subject:
    memberships: tuple[MembershipFact, ...] = ()
    connections: tuple[ConnectionFact, ...] = ()
    assignments: tuple[AssignmentFact, ...] = ()
    linked: tuple[str, ...] = ()  # labels of the linked organizations
    # The target of a mutation (a connection target names its partner by label; "t" when the
    # user belongs to no such partner). None for decisions about an Organization or a resource.
    target: Target | None = None
    # A resource of a type the policy declares: its type, its parent's, ... up to the top one
    # (whose organization is "o"). Empty for an Organization.
    chain: tuple[str, ...] = ()
    # The user's roles on the resource and its ancestors (GrantResourceRole): (position in
    # `chain`, role), in order. Roles on other resources are not facts of this decision.
    resource_roles: tuple[tuple[int, str], ...] = ()


# What the policy sees: plain objects built from a Subject, one per class the policy names.
# They carry no ids and no way back to the store, so the policy's answer depends on the
# Subject alone.


class User:
    def __init__(self, memberships: list[MembershipFact], assignments: list[AssignmentFact], resource_roles=()):
        self.memberships = memberships
        self.assignments = assignments
        self.resource_roles = list(resource_roles)


class Organization:
    def __init__(self, id: str, partner_connections=(), linked_organizations=()):
        self.id = id
        self.partner_connections = list(partner_connections)
        self.linked_organizations = list(linked_organizations)

    def __repr__(self) -> str:
        return f"Organization({self.id})"


class Connection:
    """A partner connection of the client `client`: a fact on the client's organization, and the
    target of the partner program's mutations (R12, R14, R16, R17)."""

    def __init__(self, fact: ConnectionFact, partner: Organization, client: Organization):
        self.partner = partner
        self.client = client
        self.status = fact.status
        self.granted_scopes = sorted(fact.granted_scopes)
        self.employee_approval = fact.employee_approval


class Resource:
    """A resource of a type the policy declares (each type is a subclass named after it, see
    `resource_class`): its relations, `organization` (the top ancestor's) and `parent` (None for
    a top-level one). Equal when it is the same link of the decision's chain."""

    __slots__ = ("label", "organization", "parent")

    def __init__(self, label: str, organization: Organization, parent: Resource | None = None):
        self.label = label
        self.organization = organization
        self.parent = parent

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.label == self.label

    def __hash__(self) -> int:
        return hash(self.label)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label})"


_resource_classes: dict[str, type[Resource]] = {}


def resource_class(name: str) -> type[Resource]:
    """The class the policy knows a declared type by (one per name for the whole process)."""
    cls = _resource_classes.get(name)
    if cls is None:
        cls = _resource_classes[name] = type(name, (Resource,), {"__slots__": ()})
    return cls


class ResourceRole:
    """A role the user holds on one resource of the decision's chain (GrantResourceRole)."""

    def __init__(self, resource: Resource, role: str):
        self.resource = resource
        self.role = role


class RoleGrant:
    """A role being given or taken on `resource` (see RoleGrantTarget): `grantee` is the person
    who receives or loses it, as a User with their facts about the resource's organization."""

    def __init__(self, target: RoleGrantTarget, resource: Resource, grantee: User):
        self.resource = resource
        self.role = target.role
        self.grantee = grantee
        self.is_actor = target.is_actor


class Member:
    """The membership a mutation changes, in `organization` (see MemberTarget)."""

    def __init__(self, target: MemberTarget, organization: Organization):
        self.organization = organization
        self.role = target.role
        self.status = target.status
        self.partner_employee = target.partner_employee
        self.is_actor = target.is_actor
        self.new_role = target.new_role


class ClientInvitation:
    """A client invitation being accepted for `client` (see InvitationTarget)."""

    def __init__(self, target: InvitationTarget, client: Organization):
        self.client = client
        self.by_link = target.by_link
        self.sent_to_actor = target.sent_to_actor


class OrganizationLink:
    """Two master accounts being linked (see LinkTarget): `organization` and `other`."""

    def __init__(self, organization: Organization, other: Organization):
        self.organization = organization
        self.other = other


Membership = MembershipFact
Assignment = AssignmentFact

POLICY_CLASSES = (User, Organization, Connection, Membership, Assignment, Member, ClientInvitation, ResourceRole,
                  RoleGrant, OrganizationLink)
# Targets of mutations, and the fact type each one carries.
TARGET_TYPES = {"Member": MemberTarget, "ClientInvitation": InvitationTarget, "Connection": ConnectionFact,
                "RoleGrant": RoleGrantTarget, "OrganizationLink": LinkTarget}
# The names the service gives its own classes: a declared resource type cannot take one.
RESERVED_TYPES = frozenset({"User", "Organization", "Membership", "Assignment", "ResourceRole", *TARGET_TYPES})
UNKNOWN_PARTNER = "t"  # the label of a target connection's partner the user does not belong to

# Every attribute the policy may read, per class: the contract (policy.py) refuses any other.
ATTRIBUTES = {
    "User": {"memberships", "assignments", "resource_roles"},
    "Organization": {"id", "partner_connections", "linked_organizations"},
    "Connection": {"partner", "client", "status", "granted_scopes", "employee_approval"},
    "Resource": {"organization", "parent"},  # every declared type
    "ResourceRole": {"resource", "role"},
    "RoleGrant": {"resource", "role", "grantee", "is_actor"},
    "Membership": {"organization_id", "role", "status", "partner_employee"},
    "Assignment": {"partner_id", "client_approved"},
    "Member": {"organization", "role", "status", "partner_employee", "is_actor", "new_role"},
    "ClientInvitation": {"client", "by_link", "sent_to_actor"},
    "OrganizationLink": {"organization", "other"},
}


PATH = "p0"  # the label of the one partner path of a piece


def partner_paths(subject: Subject) -> list[Subject] | None:
    """A subject with several partner paths, as one subject per path (or None when there is
    nothing to split): each piece holds the memberships that are not partner paths (home,
    linked accounts) and one partner's membership, connection and assignment, relabelled p0.

    Deciding piece by piece keeps the policy's work linear in the number of partners (the
    policy joins memberships, connections and assignments by label: on the whole subject that
    is quadratic), and equal pieces are one memo entry. It is exact for rules that each join one
    partner path, which the policy contract checks (`Policy._cross_path_grants`, at every load);
    it can only deny more, never allow more: the policy
    has no negation (its contract), so an answer on fewer facts never grants what the whole
    would not."""
    connections = subject.connections
    if not connections or subject.target is not None:
        return None
    if len(connections) == 1 and connections[0].partner_id == PATH:
        return None
    partners = {c.partner_id for c in connections}
    shared = tuple(m for m in subject.memberships if m.organization_id not in partners)
    member = {m.organization_id: m for m in subject.memberships if m.organization_id in partners}
    assigned = {a.partner_id: a for a in subject.assignments}
    distinct = {}  # paths that differ only in their label are one piece, decided once
    for connection in connections:
        label = connection.partner_id
        m, a = member.get(label), assigned.get(label)
        key = ((m.role, m.status, m.partner_employee) if m else None,
               (connection.status, connection.granted_scopes, connection.employee_approval),
               a.client_approved if a else None)
        if key not in distinct:
            distinct[key] = Subject(
                shared + ((MembershipFact(PATH, m.role, m.status, m.partner_employee),) if m else ()),
                (ConnectionFact(PATH, connection.status, connection.granted_scopes, connection.employee_approval),),
                (AssignmentFact(PATH, a.client_approved),) if a else (),
                subject.linked, None, subject.chain, subject.resource_roles)
    return list(distinct.values())


def views(subject: Subject, resource_type: str):
    """The actor and resource objects the policy is asked about."""
    home = Organization(HOME, linked_organizations=[Organization(label) for label in subject.linked])
    home.partner_connections = [Connection(c, Organization(c.partner_id), home) for c in subject.connections]
    target = subject.target
    chain = subject.chain or ((resource_type,) if target is None and resource_type != "Organization" else ())
    links: list[Resource] = []
    parent = None
    for position in reversed(range(len(chain))):
        parent = resource_class(chain[position])(f"r{position}", home, parent)
        links.insert(0, parent)
    user = User(list(subject.memberships), list(subject.assignments),
                [ResourceRole(links[position], role) for position, role in subject.resource_roles])
    if resource_type == "Organization" and target is None:
        return user, home
    if target is None and links and chain[0] == resource_type:
        return user, links[0]
    if resource_type in TARGET_TYPES and isinstance(target, TARGET_TYPES[resource_type]):
        if isinstance(target, MemberTarget):
            return user, Member(target, home)
        if isinstance(target, InvitationTarget):
            return user, ClientInvitation(target, home)
        if isinstance(target, RoleGrantTarget) and links:
            grantee = User(list(target.grantee_memberships), list(target.grantee_assignments))
            return user, RoleGrant(target, links[0], grantee)
        if isinstance(target, ConnectionFact):
            return user, Connection(target, Organization(target.partner_id), home)
        if isinstance(target, LinkTarget):
            return user, OrganizationLink(home, Organization(OTHER))
    raise ValueError(f"the policy is not asked about a {resource_type!r} with target {target!r}")  # R24
