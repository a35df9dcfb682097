"""Access review (issue 10): every person who can do anything to an organization or to one of
its resources, with the actions, the path that grants them in plain words, and when, at which
revision and by whom that path took its current form.

Who may do what comes from the policy alone, decided once per (person, resource type): the
policy sees only the `Subject` between a person and the organization, so every resource of one
type in the organization gets the same answer (as `Authorizer.list_actors` relies on). The path
is derived from the policy too, never restated here: the person's facts are cut into groups
(their membership in the organization; each partner path: their membership in the partner, the
partner's connection, their assignment; each linked account: their membership there and the
link), and a path is a group, or failing that a pair of groups, that the policy alone allows
something, with every fact it does not need left out.

One entry per person and resource (api.md). A person who reaches the organization by several
paths (a colleague who is also a partner's legal representative; a partner employee assigned
through two partners) gets one entry whose `path` names every path, separated by "; ", so
partner employees are still listed per partner. `granted_revision` is the newest revision
among the fact rows behind the entry's paths, as they are now: the moment the entry's access
took its current form (a new path, a path changed or widened). `granted_at` and `granted_by`
are the time and the actor of the events written at that revision ("" for the service itself,
e.g. an expiry). The resource's own row does not count: the path is the person's access, not
the resource's registration.

Fact rows are read only through `store.history.fact_rows`, at the authorizer's revision: pass a
historical authorizer and `at_revision` and the same code reviews the past.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from sqlalchemy import select

from mandate import deadlines, errors
from mandate.engine.authorizer import Authorizer
from mandate.engine.facts import HOME, AssignmentFact, ConnectionFact, MembershipFact, Subject
from mandate.engine.policy import Policy
from mandate.names import Reason
from mandate.store import models
from mandate.store.db import Store
from mandate.store.history import fact_rows, horizon

# Pairs of groups are tried only for actions no single group allows (R13: switching takes the
# ownership of both accounts), and only up to this many groups; past it, one smallest pair or
# set per action is found greedily instead.
MAX_GROUPS_FOR_PAIRS = 32
# A present review whose rows changed under it (a write between reading the index and the
# store) is computed again, at most this many times.
ATTEMPTS = 5

Key = tuple[str, str, str]  # (user id, resource type, resource id): the review's order


@dataclass(frozen=True)
class Entry:
    user_id: str
    email: str
    resource_type: str
    resource_id: str
    actions: tuple[str, ...]
    path: str
    granted_revision: int
    granted_at: str
    granted_by: str


@dataclass(frozen=True)
class Review:
    entries: list[Entry]
    last: Key | None  # the key of the last entry when more follow, else None
    revision: int
    policy_version: str


@dataclass(frozen=True)
class _Grant:
    """What one person may do to the resources of one type, and the paths (each a tuple of
    facts, with the organization id behind each label) that grant it."""

    actions: tuple[str, ...]
    paths: tuple[tuple[tuple[object, str], ...], ...]


def access_review(authorizer: Authorizer, store: Store, organization_id: str, page_size: int,
                  after: Key | None = None, at_revision: int | None = None,
                  policy: Policy | None = None) -> Review:
    """One page of the review of `organization_id`, in (user id, resource type, resource id)
    order, after the key `after`. `authorizer` decides and knows the facts at the review's
    revision: the present one, or a historical one at `at_revision`."""
    policy = policy or authorizer.policy
    for _ in range(ATTEMPTS):
        index = authorizer.index
        with index.one_state():
            revision = index.revision if at_revision is None else at_revision
            if organization_id not in index.organizations:
                raise errors.NotFound(f"organization_id: no organization {organization_id!r}",
                                      Reason.ORGANIZATION_NOT_FOUND)
            pending = _page(authorizer, policy, organization_id, page_size, after)
        entries = _with_rows(store, organization_id, pending[:page_size], revision, at_revision)
        if entries is not None:
            last = _key(pending[page_size - 1]) if len(pending) > page_size else None
            return Review(entries, last, revision, policy.version)
        if at_revision is not None:  # the history and the historical index disagree: a bug
            raise RuntimeError(f"fact rows at revision {at_revision} differ from the authorizer's facts")
        index.catch_up()
    raise errors.Unavailable(f"organization {organization_id} changed throughout the review; retry")


def _key(pending) -> Key:
    user_id, resource_type, resource_id, _ = pending
    return user_id, resource_type, resource_id


def _page(authorizer: Authorizer, policy: Policy, organization_id: str, page_size: int, after: Key | None):
    """Up to page_size + 1 entries after `after`, without their rows yet: (user, type, id, grant)."""
    index = authorizer.index
    after_user = after[0] if after else ""
    types = sorted(["Organization", *policy.resource_types])
    resources = {t: sorted(index.resources_of(t, organization_id)) for t in types}
    chains = {(t, i): index.chain(t, i) for t, ids in resources.items() if t != "Organization" for i in ids}
    grants: dict[tuple[Subject, str], tuple] = {}  # equal situations are worked out once
    found = []
    candidates = index.candidate_users(organization_id) | index.role_holders_in(organization_id)
    for user_id in sorted(u for u in candidates if u >= after_user):
        deadlines.check("the review was not finished")
        labels: dict[str, str] = {}
        base = index.subject(user_id, organization_id, labels)
        own: dict[tuple, tuple] = {}  # this person's situations, by the resource's shape
        for resource_type, ids in resources.items():
            for resource_id in ids:
                if after is not None and (user_id, resource_type, resource_id) <= after:
                    continue
                chain = chains.get((resource_type, resource_id), ())
                shape = (resource_type, tuple(t for t, _ in chain), index.roles_on(user_id, chain) if chain else ())
                if shape not in own:
                    subject = replace(base, chain=shape[1], resource_roles=shape[2]) if chain else base
                    situation = (subject, resource_type)
                    if situation not in grants:
                        grants[situation] = grant_paths(policy, subject, resource_type)
                    own[shape] = grants[situation]
                actions, paths = own[shape]
                if not actions:
                    continue
                where = {**labels, **{f"r{n}": f"{t}:{i}" for n, (t, i) in enumerate(chain)}}
                grant = _Grant(actions, tuple(tuple((fact, _organization(fact, where)) for fact in path)
                                              for path in paths))
                found.append((user_id, resource_type, resource_id, grant))
                if len(found) > page_size:
                    return found
    return found


def _organization(fact, labels: dict[str, str]) -> str:
    """The organization id behind a fact's label ("Type:id" of the resource, for a role on one)."""
    if isinstance(fact, tuple):
        return labels[f"r{fact[0]}"]
    label = fact if isinstance(fact, str) else fact.partner_id if isinstance(fact, ConnectionFact | AssignmentFact) \
        else fact.organization_id
    return labels[label]


# -- paths, from the policy ----------------------------------------------------------------


def fact_groups(subject: Subject) -> list[tuple]:
    """The person's facts cut into the pieces a path is made of: the membership in the
    organization, each partner path (membership, connection, assignment) and each linked
    account (membership, link)."""
    member = {m.organization_id: m for m in subject.memberships}
    assigned = {a.partner_id: a for a in subject.assignments}
    groups: list[tuple] = []
    if HOME in member:
        groups.append((member[HOME],))
    for connection in subject.connections:
        label = connection.partner_id
        groups.append(tuple(f for f in (member.get(label), connection, assigned.get(label)) if f is not None))
    for label in subject.linked:
        groups.append(tuple(f for f in (member.get(label), label) if f is not None))
    groups.extend((role,) for role in subject.resource_roles)  # each a (position in the chain, role)
    return groups


def subject_of(facts, chain: tuple[str, ...] = ()) -> Subject:
    facts = tuple(facts)
    return Subject(tuple(f for f in facts if isinstance(f, MembershipFact)),
                   tuple(f for f in facts if isinstance(f, ConnectionFact)),
                   tuple(f for f in facts if isinstance(f, AssignmentFact)),
                   tuple(f for f in facts if isinstance(f, str)), None, chain,
                   tuple(sorted(f for f in facts if isinstance(f, tuple))))


def grant_paths(policy: Policy, subject: Subject, resource_type: str) -> tuple[tuple[str, ...], list[tuple]]:
    """(the sorted actions the policy allows, the paths that allow them), each path the facts
    it needs: a group of facts the policy allows something on its own, then a pair of groups
    that allows what neither allows alone. Together the paths allow exactly the actions."""
    everything = policy.actions(subject, resource_type)
    if not everything:
        return (), []
    groups = fact_groups(subject)
    chain = subject.chain
    alone = [policy.actions(subject_of(group, chain), resource_type) for group in groups]
    paths = [(group, actions) for group, actions in zip(groups, alone, strict=True) if actions]
    covered = frozenset().union(*alone)
    if covered != everything and len(groups) <= MAX_GROUPS_FOR_PAIRS:
        for i, j in itertools.combinations(range(len(groups)), 2):
            deadlines.check("the review was not finished")
            more = policy.actions(subject_of(groups[i] + groups[j], chain), resource_type) - alone[i] - alone[j]
            if more:
                paths.append((groups[i] + groups[j], more))
                covered |= more
    for action in sorted(everything - covered):  # what takes more than two groups: one smallest set
        needed = list(groups)
        for group in list(needed):
            rest = [g for g in needed if g is not group]
            if policy.is_allowed(subject_of(itertools.chain(*rest), chain), resource_type, action):
                needed = rest
        paths.append((tuple(itertools.chain(*needed)), frozenset({action})))
    return tuple(sorted(everything)), [smallest(policy, facts, actions, resource_type, chain)
                                       for facts, actions in paths]


def smallest(policy: Policy, facts: tuple, actions: frozenset[str], resource_type: str,
             chain: tuple[str, ...] = ()) -> tuple:
    """The path without the facts it does not need for its actions (a partner's legal
    representative who is also assigned needs no assignment)."""
    facts = tuple(facts)
    for fact in facts:
        fewer = tuple(f for f in facts if f is not fact)
        if actions <= policy.actions(subject_of(fewer, chain), resource_type):
            facts = fewer
    return facts


# -- rows behind the paths, and the words ---------------------------------------------------


def _rows_of(fact, organization_id: str, user_id: str, home: str) -> tuple:
    """The key of the fact row behind a fact of `user_id` about organization `home`;
    `organization_id` is the organization behind the fact's label ("Type:id" for a role)."""
    if isinstance(fact, tuple):
        return ("role", organization_id, user_id, fact[1])
    if isinstance(fact, MembershipFact):
        return ("membership", organization_id, user_id)
    if isinstance(fact, ConnectionFact):
        return ("connection", organization_id, home)
    if isinstance(fact, AssignmentFact):
        return ("assignment", organization_id, home, user_id)
    return ("link", home, organization_id)


def _with_rows(store: Store, organization_id: str, pending, revision: int, at_revision: int | None):
    """The entries with their words and granted_*, or None when a row behind a path is newer
    than the review's revision (the store moved on after the index was read)."""
    if not pending:
        return []
    users = sorted({user_id for user_id, *_ in pending})
    others = {other for *_, grant in pending for path in grant.paths for _, other in path}
    organizations = sorted(others | {organization_id})
    with store.read(snapshot=True) as session:
        if at_revision is not None and at_revision < (kept_from := horizon(session)):
            # The retention let go of versions of this revision since the question was accepted.
            raise errors.RevisionUnavailable(f"at_revision: the history now starts at revision {kept_from} "
                                             "(the history retention let go of older ones)")
        rows: dict[tuple, int] = {}
        for row in fact_rows(session, models.Membership, at_revision, models.Membership.user_id.in_(users),
                             models.Membership.organization_id.in_(organizations)):
            rows[("membership", row.organization_id, row.user_id)] = row.revision
        for row in fact_rows(session, models.Connection, at_revision,
                             models.Connection.client_id == organization_id):
            rows[("connection", row.partner_id, row.client_id)] = row.revision
        for row in fact_rows(session, models.Assignment, at_revision, models.Assignment.client_id == organization_id,
                             models.Assignment.user_id.in_(users)):
            rows[("assignment", row.partner_id, row.client_id, row.user_id)] = row.revision
        for row in fact_rows(session, models.OrganizationLink, at_revision,
                             models.OrganizationLink.organization_id == organization_id):
            rows[("link", row.organization_id, row.other_organization_id)] = row.revision
        R = models.ResourceRole
        for row in fact_rows(session, R, at_revision, R.user_id.in_(users), R.granted.is_(True)):
            rows[("role", f"{row.resource_type}:{row.resource_id}", row.user_id, row.role)] = row.revision
        names = {row.id: row.name for row in fact_rows(session, models.Organization, at_revision,
                                                       models.Organization.id.in_(organizations))}
        emails = {row.id: row.email for row in fact_rows(session, models.User, at_revision,
                                                         models.User.id.in_(users))}
        behind: dict[int, tuple] = {}  # entry number -> the revision of the newest row behind it
        needed: set[int] = set()
        for number, (user_id, _, _, grant) in enumerate(pending):
            newest = -1
            for path in grant.paths:
                for fact, other in path:
                    found = rows.get(_rows_of(fact, other, user_id, organization_id))
                    if found is None or found > revision:
                        return None
                    newest = max(newest, found)
            behind[number] = newest
            needed.add(newest)
        made = _events_at(session, sorted(needed))
    entries = []
    for number, (user_id, resource_type, resource_id, grant) in enumerate(pending):
        occurred_at, actor_id = made.get(behind[number], ("", ""))
        entries.append(Entry(user_id, emails.get(user_id, ""), resource_type, resource_id, grant.actions,
                             "; ".join(describe(path, names, organization_id) for path in grant.paths),
                             behind[number], occurred_at, actor_id))
    return entries


def _events_at(session, revisions: list[int]) -> dict[int, tuple[str, str]]:
    """(time, actor) of the change written at each revision: its first event. Events are never
    changed, so the present table also answers about the past."""
    made: dict[int, tuple[str, str]] = {}
    for start in range(0, len(revisions), 500):
        for row in session.execute(select(models.Event.revision, models.Event.occurred_at, models.Event.actor_id)
                                   .where(models.Event.revision.in_(revisions[start:start + 500]))
                                   .order_by(models.Event.id)):
            made.setdefault(row.revision, (row.occurred_at, row.actor_id))
    return made


def describe(path: tuple, names: dict[str, str], organization_id: str) -> str:
    """A path in plain words: "owner of Acme", "legal_representative of partner Acme via
    connection (read, edit)", "partner employee of Acme, assigned and approved",
    "owner of Acme and owner of linked account Acme USD"."""
    facts = {(type(fact), other): fact for fact, other in path}
    phrases = []
    for fact, other in path:
        name = names.get(other, other)
        if isinstance(fact, tuple):  # a role on the resource (position 0) or on an ancestor
            position, role = fact
            link = other.replace(":", " ", 1)
            phrases.append(f"{role} of {link}" if position == 0 else f"{role} via parent {link}")
        elif isinstance(fact, MembershipFact) and fact.organization_id == HOME:
            phrases.append(f"{fact.role} of {name}")
        elif isinstance(fact, MembershipFact) and (ConnectionFact, other) in facts:
            connection, assignment = facts[(ConnectionFact, other)], facts.get((AssignmentFact, other))
            if assignment is not None:
                consent = "assigned and approved" if assignment.client_approved else \
                    "assigned (the client trusts the partner's delegation)"
                phrases.append(f"partner employee of {name}, {consent}")
            else:
                scopes = ", ".join([s for s in models.SCOPES if s in connection.granted_scopes]
                                   + sorted(set(connection.granted_scopes) - set(models.SCOPES)))
                ending = ", disconnect requested" if connection.status == "disconnect_requested" else ""
                phrases.append(f"{fact.role} of partner {name} via connection ({scopes}){ending}")
        elif isinstance(fact, MembershipFact):
            phrases.append(f"{fact.role} of linked account {name}")
        elif isinstance(fact, ConnectionFact) and (MembershipFact, other) not in facts:
            phrases.append(f"the connection of partner {name}")
        elif isinstance(fact, AssignmentFact) and (MembershipFact, other) not in facts:
            phrases.append(f"an assignment by partner {name}")
    return " and ".join(phrases) or f"a fact about {names.get(organization_id, organization_id)}"
