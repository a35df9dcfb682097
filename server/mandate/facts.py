"""The facts a decision may use, as immutable values.

A `Subject` holds everything the policy may know about one (user, organization) pair:
the user's memberships there and in the organization's partners and linked accounts,
the organization's partner connections, and the user's assignments to it. Organizations
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
class Subject:
    memberships: tuple[MembershipFact, ...] = ()
    connections: tuple[ConnectionFact, ...] = ()
    assignments: tuple[AssignmentFact, ...] = ()
    linked: tuple[str, ...] = ()  # labels of the linked organizations


# What the policy sees: plain objects built from a Subject, one per class the policy names.
# They carry no ids and no way back to the store, so the policy's answer depends on the
# Subject alone.


class User:
    def __init__(self, memberships: list[MembershipFact], assignments: list[AssignmentFact]):
        self.memberships = memberships
        self.assignments = assignments


class Organization:
    def __init__(self, id: str, partner_connections=(), linked_organizations=()):
        self.id = id
        self.partner_connections = list(partner_connections)
        self.linked_organizations = list(linked_organizations)

    def __repr__(self) -> str:
        return f"Organization({self.id})"


class Connection:
    def __init__(self, fact: ConnectionFact, partner: Organization):
        self.partner = partner
        self.status = fact.status
        self.granted_scopes = sorted(fact.granted_scopes)
        self.employee_approval = fact.employee_approval


class Project:
    def __init__(self, organization: Organization):
        self.organization = organization


Membership = MembershipFact
Assignment = AssignmentFact

POLICY_CLASSES = (User, Organization, Project, Connection, Membership, Assignment)
RESOURCE_TYPES = ("Organization", "Project")


def views(subject: Subject, resource_type: str):
    """The actor and resource objects the policy is asked about."""
    home = Organization(
        HOME,
        partner_connections=[Connection(c, Organization(c.partner_id)) for c in subject.connections],
        linked_organizations=[Organization(label) for label in subject.linked],
    )
    user = User(list(subject.memberships), list(subject.assignments))
    if resource_type == "Organization":
        return user, home
    if resource_type == "Project":
        return user, Project(home)
    raise ValueError(f"the policy knows no resource type {resource_type!r}")  # R24: never guess
