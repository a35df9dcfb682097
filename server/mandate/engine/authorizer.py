"""The check plane: decisions, lists and explanations, all decided by the policy."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mandate import deadlines, errors
from mandate.engine.facts import (
    HOME,
    OTHER,
    UNKNOWN_PARTNER,
    AssignmentFact,
    ConnectionFact,
    InvitationTarget,
    LinkTarget,
    MembershipFact,
    MemberTarget,
    RoleGrantTarget,
    Subject,
)
from mandate.engine.index import FactIndex
from mandate.engine.policy import Policy
from mandate.names import Reason
from mandate.store.db import Store


@dataclass(frozen=True)
class MemberRef:
    """The membership of `user_id` in `organization_id` (which need not exist yet: an invitation)."""

    organization_id: str
    user_id: str
    new_role: str = ""


@dataclass(frozen=True)
class InvitationRef:
    """A client invitation being accepted for the client `client_id`."""

    client_id: str
    by_link: bool
    sent_to_actor: bool


@dataclass(frozen=True)
class ConnectionRef:
    partner_id: str
    client_id: str


@dataclass(frozen=True)
class ProjectRef:
    """A registered resource, in the organization it belongs to now (moving it, R23)."""

    resource_type: str
    resource_id: str
    organization_id: str


@dataclass(frozen=True)
class RoleGrantRef:
    """The role `role` on a registered resource, given to or taken from `user_id`."""

    resource_type: str
    resource_id: str
    user_id: str
    role: str


@dataclass(frozen=True)
class LinkRef:
    """Two master accounts being linked (R13): `organization_id` and `other_id`."""

    organization_id: str
    other_id: str


TargetRef = MemberRef | InvitationRef | ConnectionRef | ProjectRef | RoleGrantRef | LinkRef
TARGET_TYPE = {MemberRef: "Member", InvitationRef: "ClientInvitation", ConnectionRef: "Connection",
               RoleGrantRef: "RoleGrant", LinkRef: "OrganizationLink"}


def target_type(target: TargetRef) -> str:
    return target.resource_type if isinstance(target, ProjectRef) else TARGET_TYPE[type(target)]


# Decisions remembered per (actor, organization, resource type, action) for one policy at one
# index revision: at most this many, and every change of the facts or of the policy starts afresh,
# as does the passing of an access's end (FactIndex.ended).
MEMO_LIMIT = 200_000


class Authorizer:
    def __init__(self, store: Store, index: FactIndex, policy: Policy):
        self.store = store
        self.index = index
        self.policy = policy  # replaced whole on reload; read once per request
        self._memo: tuple[Policy | None, int, frozenset, dict] = (None, -1, frozenset(), {})
        # Decisions made, and those the memo could not answer (plain counts: the metrics read
        # them now and then, so the hot path takes no lock for them).
        self.decisions = 0
        self.memo_misses = 0

    def swap_policy(self, policy: Policy) -> None:
        self.policy = policy

    # -- freshness -----------------------------------------------------------------------

    def at_least(self, revision: int | None) -> int:
        """The index revision, after catching up to `revision` if it is newer than ours."""
        if revision is not None and revision > self.index.revision:
            if self.index.catch_up() < revision:
                raise errors.RevisionUnavailable(
                    f"at_least_revision: revision {revision} is newer than the store's"
                )
        return self.index.revision

    # -- decisions -------------------------------------------------------------------------

    def where(self, actor_id: str, resource_type: str, resource_id: str, policy: Policy) -> Where | None:
        """Where a decision about the resource is made: its organization, its chain of types up to
        the top one, and the actor's roles on that chain. None when the resource is unknown, or of
        a type the policy does not declare (a deny, R24)."""
        if resource_type == "Organization":
            return Where(resource_id, (), ()) if resource_id in self.index.organizations else None
        found = self._place(actor_id, resource_type, resource_id, policy)
        return None if found is None else Where(*found)

    def _place(self, actor_id: str, resource_type: str, resource_id: str, policy: Policy):
        """(organization, chain types, roles) of a resource of a declared type, or None. The hot
        path of Check: a top-level resource costs two look-ups, a nested one its remembered chain."""
        if resource_type not in policy.resource_types:
            return None
        index = self.index
        key = (resource_type, resource_id)
        organization_id = index.resources.get(key)
        if organization_id is None:
            return None
        if key in index.parents:
            chain, types = index.nested_chain(key)
            if not chain:
                return None
        else:
            chain, types = (key,), (resource_type,)
        roles = index.roles_on(actor_id, chain) if actor_id in index.resource_roles else ()
        return organization_id, types, roles

    def subject(self, actor_id: str, resource_type: str, resource_id: str, policy: Policy | None = None,
                labels: dict[str, str] | None = None) -> Subject | None:
        """The facts about actor and resource, or None when either is unknown (a deny)."""
        if actor_id not in self.index.users:
            return None
        where = self.where(actor_id, resource_type, resource_id, policy or self.policy)
        if where is None:
            return None
        return where.subject(self.index.subject(actor_id, where.organization_id, labels))

    def check(self, actor_type: str, actor_id: str, action: str, resource_type: str, resource_id: str,
              policy: Policy | None = None) -> bool:
        """The decision. `policy` pins one policy for a whole request (reloads swap the attribute)."""
        if actor_type != "User" or actor_id not in self.index.users:
            return False
        policy = policy or self.policy
        if resource_type == "Organization":
            if resource_id not in self.index.organizations:
                return False
            return self.decide(actor_id, resource_id, resource_type, action, policy)
        found = self._place(actor_id, resource_type, resource_id, policy)
        if found is None:
            return False
        return self.decide(actor_id, found[0], resource_type, action, policy, found[1], found[2])

    def decide(self, actor_id: str, organization_id: str, resource_type: str, action: str, policy: Policy,
               chain: tuple[str, ...] = (), roles: tuple[tuple[int, str], ...] = ()) -> bool:
        """The policy's answer for the actor and a resource of the organization (with its `chain`
        of types and the actor's `roles` on it), remembered until the index moves to another
        revision or the policy is replaced.

        Every entry of a memo was computed after the index had reached the memo's revision (the
        revision is read first), so a remembered answer is never older than the revision a
        caller was promised; a memo left behind by a change is simply dropped."""
        revision = self.index.revision
        ended = self.index.ended()  # facts whose end passed, not yet swept: decided as ended
        memo_policy, memo_revision, memo_ended, memo = self._memo
        if memo_policy is not policy or memo_revision != revision or memo_ended is not ended:
            memo = {}
            self._memo = (policy, revision, ended, memo)
        key = (actor_id, organization_id, chain or resource_type, roles, action)
        self.decisions += 1
        answer = memo.get(key)
        if answer is None:
            self.memo_misses += 1
            subject = self.index.subject(actor_id, organization_id)
            if chain:
                subject = replace(subject, chain=chain, resource_roles=roles)
            answer = policy.is_allowed(subject, resource_type, action)
            if len(memo) < MEMO_LIMIT:
                memo[key] = answer
        return answer

    def list_actions(self, actor_type: str, actor_id: str, resource_type: str, resource_id: str,
                     policy: Policy | None = None) -> list[str]:
        policy = policy or self.policy
        subject = self.subject(actor_id, resource_type, resource_id, policy) if actor_type == "User" else None
        if subject is None:
            return []
        return sorted(policy.actions(subject, resource_type))

    def require(self, actor_id: str, action: str, organization_id: str) -> None:
        """R23: a mutation is allowed only when the policy allows the actor `action` on the
        organization. Call inside the write transaction: the index is caught up first, and
        writers are serialized, so the decision sees the state the mutation will change."""
        self._newest()
        if actor_id not in self.index.users:
            raise errors.NotFound(f"actor_id: no user {actor_id!r}", Reason.USER_NOT_FOUND)
        if organization_id not in self.index.organizations:
            raise errors.NotFound(f"organization {organization_id!r} does not exist", Reason.ORGANIZATION_NOT_FOUND)
        subject = self.index.subject(actor_id, organization_id)
        if not self.policy.is_allowed(subject, "Organization", action):
            raise errors.PermissionDenied(
                f"the policy does not allow user {actor_id} to {action} on organization {organization_id} (R23)"
            )

    def require_target(self, actor_id: str, action: str, target: TargetRef) -> None:
        """R23 for a mutation that changes one membership, invitation or connection: the policy
        decides with the target's facts (its role and status, its addressee, which side the
        actor is on). Call inside the write transaction, like `require`."""
        self._newest()
        if actor_id not in self.index.users:
            raise errors.NotFound(f"actor_id: no user {actor_id!r}", Reason.USER_NOT_FOUND)
        organization_id, subject = self.target_subject(actor_id, target)
        if organization_id not in self.index.organizations:
            raise errors.NotFound(f"organization {organization_id!r} does not exist", Reason.ORGANIZATION_NOT_FOUND)
        if not self.policy.is_allowed(subject, target_type(target), action):
            raise errors.PermissionDenied(
                f"the policy does not allow user {actor_id} to {action} {describe_target(target)} (R23)"
            )

    def _newest(self) -> None:
        """Catch the index up with every committed change. Inside a write of revision R, every
        revision below R is committed, so an index at R - 1 needs no look at the store."""
        writing = self.store.writing_revision()
        if writing is None or self.index.revision < writing - 1:
            self.index.catch_up()

    def check_target(self, actor_id: str, action: str, target: TargetRef, policy: Policy | None = None) -> bool:
        """The decision `require_target` enforces, as a yes or no (policy tests, the matrix)."""
        if actor_id not in self.index.users:
            return False
        organization_id, subject = self.target_subject(actor_id, target)
        if organization_id not in self.index.organizations:
            return False
        return (policy or self.policy).is_allowed(subject, target_type(target), action)

    def target_subject(self, actor_id: str, target: TargetRef) -> tuple[str, Subject]:
        """The organization a target lives in, and the facts of actor and target there."""
        index = self.index
        if isinstance(target, ProjectRef):
            subject = index.subject(actor_id, target.organization_id)
            chain = index.chain(target.resource_type, target.resource_id)
            return target.organization_id, replace(subject, chain=tuple(t for t, _ in chain),
                                                   resource_roles=index.roles_on(actor_id, chain))
        if isinstance(target, RoleGrantRef):
            chain = index.chain(target.resource_type, target.resource_id)
            organization_id = index.resources.get(chain[0]) if chain else None
            if organization_id is None:
                return "", Subject()
            labels: dict[str, str] = {}
            subject = index.subject(actor_id, organization_id, labels)
            labels.setdefault(HOME, organization_id)
            memberships = tuple(MembershipFact(label, m.role, m.status, m.partner_employee)
                                for label, ident in sorted(labels.items())
                                if (m := index.member(target.user_id, ident)) is not None)
            assigned = index.assignments.get((target.user_id, organization_id), {})
            assignments = tuple(AssignmentFact(label, assigned[ident]) for label, ident in sorted(labels.items())
                                if label != HOME and ident in assigned)
            fact = RoleGrantTarget(target.role, memberships, assignments, target.user_id == actor_id)
            return organization_id, replace(subject, chain=tuple(t for t, _ in chain),
                                            resource_roles=index.roles_on(actor_id, chain), target=fact)
        if isinstance(target, MemberRef):
            member = index.member(target.user_id, target.organization_id)
            fact = MemberTarget(member.role if member else "", member.status if member else "",
                                bool(member and member.partner_employee), target.user_id == actor_id,
                                target.new_role)
            return target.organization_id, replace(index.subject(actor_id, target.organization_id), target=fact)
        if isinstance(target, LinkRef):
            subject = index.subject(actor_id, target.organization_id)
            other = index.member(actor_id, target.other_id)
            if other is not None:
                subject = replace(subject, memberships=(*subject.memberships, MembershipFact(
                    OTHER, other.role, other.status, other.partner_employee)))
            return target.organization_id, replace(subject, target=LinkTarget())
        if isinstance(target, InvitationRef):
            fact = InvitationTarget(target.by_link, target.sent_to_actor)
            return target.client_id, replace(index.subject(actor_id, target.client_id), target=fact)
        labels: dict[str, str] = {}
        subject = index.subject(actor_id, target.client_id, labels)
        label = next((name for name, ident in labels.items() if ident == target.partner_id and name != "o"),
                     UNKNOWN_PARTNER)
        link = index.connection(target.partner_id, target.client_id)
        # No such connection: the policy still decides who may act on one (permission first, so a
        # refused caller learns nothing); the service then reports it missing.
        fact = ConnectionFact(label, link.status, link.granted_scopes, link.employee_approval) if link else \
            ConnectionFact(label, "disconnected", frozenset(), "client")
        return target.client_id, replace(subject, target=fact)

    # -- lists -----------------------------------------------------------------------------

    def list_resources(
        self, actor_id: str, action: str, resource_type: str, page_size: int, after: str,
        policy: Policy | None = None, organizations: frozenset[str] | None = None,
    ) -> tuple[list[str], str]:
        """Resource ids the actor may `action`, from the same index state as `Check` (no SQL);
        with `organizations` (a caller's scope), only the resources of those.

        Access to a resource depends only on the facts between the actor and the resource's
        organization, the resource's chain of types and the actor's roles on it, so the policy
        decides per organization the actor has any fact about (and per shape of chain there);
        the index knows the resources of each organization."""
        policy = policy or self.policy
        if actor_id not in self.index.users or not policy.is_resource_type(resource_type):
            return [], ""
        index = self.index
        with index.one_state():
            ids = []
            held = index.resource_roles.get(actor_id, {})
            held_in = {index.resources.get(key) for key in held}
            for organization_id in index.reachable_organizations(actor_id):
                deadlines.check("the list was not finished")
                if organizations is not None and organization_id not in organizations:
                    continue
                if resource_type == "Organization":
                    if organization_id > after and self.decide(actor_id, organization_id, resource_type, action,
                                                               policy):
                        ids.append(organization_id)
                    continue
                if organization_id not in held_in and not index.nested_in.get((resource_type, organization_id)):
                    # Every resource here is top-level and the actor holds no role on any: one decision.
                    if self.decide(actor_id, organization_id, resource_type, action, policy, (resource_type,)):
                        ids.extend(i for i in index.resources_of(resource_type, organization_id) if i > after)
                    continue
                # Top-level resources on which the actor holds no role are all alike: decided once.
                plain = None
                for resource_id in index.resources_of(resource_type, organization_id):
                    if resource_id <= after:
                        continue
                    key = (resource_type, resource_id)
                    if key not in index.parents and key not in held:
                        if plain is None:
                            plain = self.decide(actor_id, organization_id, resource_type, action, policy,
                                                (resource_type,))
                        if plain:
                            ids.append(resource_id)
                        continue
                    found = self._place(actor_id, resource_type, resource_id, policy)
                    if found is not None and self.decide(actor_id, organization_id, resource_type, action, policy,
                                                         found[1], found[2]):
                        ids.append(resource_id)
            ids.sort()
        return page(ids[:page_size + 1], page_size)

    def list_actors(self, action: str, resource_type: str, resource_id: str, page_size: int, after: str,
                    policy: Policy | None = None):
        """User ids who may `action` on the resource: the policy decides for every user with a
        fact about the resource's organization (or a role on the resource or its ancestors), in id
        order, until the page is full."""
        policy = policy or self.policy
        found: list[str] = []
        index = self.index
        with index.one_state():
            where = self.where("", resource_type, resource_id, policy)
            if where is None:
                return [], ""
            chain = index.chain(resource_type, resource_id) if where.chain else ()
            for user_id in sorted(u for u in index.candidate_users(where.organization_id, chain) if u > after):
                deadlines.check("the list was not finished")
                if self.decide(user_id, where.organization_id, resource_type, action, policy, where.chain,
                               index.roles_on(user_id, chain)):
                    found.append(user_id)
                    if len(found) > page_size:
                        break
        return page(found, page_size)


@dataclass(frozen=True)
class Where:
    """Where a decision about one resource is made (see Authorizer.where)."""

    organization_id: str
    chain: tuple[str, ...]  # the resource's type, its parent's, ... (empty for an Organization)
    roles: tuple[tuple[int, str], ...]  # the actor's roles on that chain

    def subject(self, subject: Subject) -> Subject:
        return replace(subject, chain=self.chain, resource_roles=self.roles) if self.chain else subject


def page(ids: list[str], page_size: int) -> tuple[list[str], str]:
    """A page of at most page_size ids (one more was fetched to know whether more follow)."""
    if len(ids) > page_size:
        return ids[:page_size], ids[page_size - 1]
    return ids, ""



def describe_target(target: TargetRef) -> str:
    if isinstance(target, MemberRef):
        change = f" (to {target.new_role})" if target.new_role else ""
        return f"the membership of user {target.user_id} in organization {target.organization_id}{change}"
    if isinstance(target, ProjectRef):
        return f"{target.resource_type} {target.resource_id} of organization {target.organization_id}"
    if isinstance(target, RoleGrantRef):
        return f"the role {target.role} on {target.resource_type} {target.resource_id} of user {target.user_id}"
    if isinstance(target, LinkRef):
        return f"the link of organizations {target.organization_id} and {target.other_id}"
    if isinstance(target, InvitationRef):
        kind = "link" if target.by_link else "invitation by email"
        return f"a client {kind} for organization {target.client_id}"
    return f"the connection of partner {target.partner_id} and client {target.client_id}"
