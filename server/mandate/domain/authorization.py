"""The check plane: decisions, lists and explanations, all decided by the policy."""

from __future__ import annotations

from sqlalchemy import select

from mandate import errors
from mandate.facts import RESOURCE_TYPES, Subject
from mandate.index import FactIndex
from mandate.policy import Policy
from mandate.store import models
from mandate.store.db import Store

# Decisions remembered per (actor, organization, resource type, action) for one policy at one
# index revision: at most this many, and every change of the facts or of the policy starts afresh.
MEMO_LIMIT = 200_000


class Authorizer:
    def __init__(self, store: Store, index: FactIndex, policy: Policy):
        self.store = store
        self.index = index
        self.policy = policy  # replaced whole on reload; read once per request
        self._memo: tuple[Policy | None, int, dict] = (None, -1, {})

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

    def subject(self, actor_id: str, resource_type: str, resource_id: str) -> Subject | None:
        """The facts about actor and resource, or None when either is unknown (a deny)."""
        if actor_id not in self.index.users or resource_type not in RESOURCE_TYPES:
            return None
        organization_id = self.index.organization_of(resource_type, resource_id)
        if organization_id is None:
            return None
        return self.index.subject(actor_id, organization_id)

    def check(self, actor_type: str, actor_id: str, action: str, resource_type: str, resource_id: str,
              policy: Policy | None = None) -> bool:
        """The decision. `policy` pins one policy for a whole request (reloads swap the attribute)."""
        if actor_type != "User":
            return False
        if actor_id not in self.index.users or resource_type not in RESOURCE_TYPES:
            return False
        organization_id = self.index.organization_of(resource_type, resource_id)
        if organization_id is None:
            return False
        return self.decide(actor_id, organization_id, resource_type, action, policy or self.policy)

    def decide(self, actor_id: str, organization_id: str, resource_type: str, action: str, policy: Policy) -> bool:
        """The policy's answer for the actor and a resource of the organization, remembered until
        the index moves to another revision or the policy is replaced.

        Every entry of a memo was computed after the index had reached the memo's revision (the
        revision is read first), so a remembered answer is never older than the revision a
        caller was promised; a memo left behind by a change is simply dropped."""
        revision = self.index.revision
        memo_policy, memo_revision, memo = self._memo
        if memo_policy is not policy or memo_revision != revision:
            memo = {}
            self._memo = (policy, revision, memo)
        key = (actor_id, organization_id, resource_type, action)
        answer = memo.get(key)
        if answer is None:
            answer = policy.is_allowed(self.index.subject(actor_id, organization_id), resource_type, action)
            if len(memo) < MEMO_LIMIT:
                memo[key] = answer
        return answer

    def list_actions(self, actor_type: str, actor_id: str, resource_type: str, resource_id: str,
                     policy: Policy | None = None) -> list[str]:
        subject = self.subject(actor_id, resource_type, resource_id) if actor_type == "User" else None
        if subject is None:
            return []
        return sorted((policy or self.policy).actions(subject, resource_type))

    def require(self, actor_id: str, action: str, organization_id: str) -> None:
        """R23: a mutation is allowed only when the policy allows the actor `action` on the
        organization. Call inside the write transaction: the index is caught up first, and
        writers are serialized, so the decision sees the state the mutation will change."""
        self.index.catch_up()
        if actor_id not in self.index.users:
            raise errors.NotFound(f"actor_id: no user {actor_id!r}", "USER_NOT_FOUND")
        if organization_id not in self.index.organizations:
            raise errors.NotFound(f"organization {organization_id!r} does not exist", "ORGANIZATION_NOT_FOUND")
        subject = self.index.subject(actor_id, organization_id)
        if not self.policy.is_allowed(subject, "Organization", action):
            raise errors.PermissionDenied(
                f"the policy does not allow user {actor_id} to {action} on organization {organization_id} (R23)"
            )

    # -- lists -----------------------------------------------------------------------------

    def list_resources(
        self, actor_id: str, action: str, resource_type: str, page_size: int, after: str,
        policy: Policy | None = None,
    ) -> tuple[list[str], str]:
        """Resource ids the actor may `action`, as a paged SQL query.

        Access to a resource depends only on the facts between the actor and the resource's
        organization, so the policy decides per organization the actor has any fact about;
        the store then pages through the resources of the allowed organizations."""
        if actor_id not in self.index.users or resource_type not in RESOURCE_TYPES:
            return [], ""
        policy = policy or self.policy
        allowed = sorted(
            organization_id
            for organization_id in self.index.reachable_organizations(actor_id)
            if self.decide(actor_id, organization_id, resource_type, action, policy)
        )
        if not allowed:
            return [], ""
        if resource_type == "Organization":
            query = select(models.Organization.id).where(models.Organization.id.in_(allowed))
            column = models.Organization.id
        else:
            query = select(models.Resource.id).where(
                models.Resource.type == resource_type,
                models.Resource.organization_id.in_(allowed),
                models.Resource.deleted.is_(False),
            )
            column = models.Resource.id
        if after:
            query = query.where(column > after)
        query = query.order_by(column).limit(page_size + 1)
        with self.store.read() as session:
            ids = list(session.execute(query).scalars())
        return page(ids, page_size)

    def list_actors(self, action: str, resource_type: str, resource_id: str, page_size: int, after: str,
                    policy: Policy | None = None):
        """User ids who may `action` on the resource: the policy decides for every user with a
        fact about the resource's organization, in id order, until the page is full."""
        organization_id = self.index.organization_of(resource_type, resource_id)
        if organization_id is None:
            return [], ""
        policy = policy or self.policy
        found: list[str] = []
        for user_id in sorted(u for u in self.index.candidate_users(organization_id) if u > after):
            if self.decide(user_id, organization_id, resource_type, action, policy):
                found.append(user_id)
                if len(found) > page_size:
                    break
        return page(found, page_size)


def page(ids: list[str], page_size: int) -> tuple[list[str], str]:
    """A page of at most page_size ids (one more was fetched to know whether more follow)."""
    if len(ids) > page_size:
        return ids[:page_size], ids[page_size - 1]
    return ids, ""

