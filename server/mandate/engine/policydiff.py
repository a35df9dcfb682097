"""`mandate policy diff`: whose access a policy change changes, on real grants.

A decision depends only on the `Subject` (facts.py): the facts between a user and the
resource's organization. So the diff groups every (user, organization) pair that has any fact
by its Subject, asks both policies once per distinct (Subject, resource type), and expands
each action whose answer flips to the (user, action, resource) triples the pairs cover: the
organization itself, or each of its projects. A user with no fact about an organization is
denied by both policies (the contract: no grant without a fact), so no other pair can change.

The base policy comes from a directory, or from a git ref (the policy directory's .polar
files at that ref, read with `git show`). The facts come from a database (read only) or from
a world file, loaded into a `FactIndex` as the server loads them.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from mandate.engine.authorizer import Authorizer
from mandate.engine.explain import explain
from mandate.engine.facts import (
    HOME,
    OTHER,
    PATH,
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
from mandate.engine.policy import Policy, PolicyError, rules
from mandate.store import models

ALLOW, DENY = "allow", "deny"


class DiffUsageError(Exception):
    """Bad arguments, an unreadable base, a policy that does not load, facts that cannot be
    read: `mandate policy diff` exits 2 with this message."""


# -- the two policies --------------------------------------------------------------------------


@dataclass
class PolicySide:
    policy: Policy
    source: str  # what the reviewer named: a directory, or "REF:path" in a git repository


def load_policy(policy_dir: Path, what: str) -> Policy:
    try:
        return Policy(policy_dir)
    except PolicyError as error:
        raise DiffUsageError(f"the {what} policy does not load: " + "; ".join(error.problems)) from error


def base_policy(base: str, policy_dir: Path, scratch: Path) -> PolicySide:
    """The base: a directory of .polar files if `base` names one, else a git ref whose version
    of the policy directory's .polar files is written into `scratch` and loaded from there."""
    if Path(base).is_dir():
        return PolicySide(load_policy(Path(base), "base"), str(base))
    if not policy_dir.is_dir():
        raise DiffUsageError(f"no policy directory at {policy_dir} (needed to read the base {base!r} from git)")
    prefix = _git(policy_dir, "rev-parse", "--show-prefix",
                  missing=f"--base {base!r} is not a directory, and {policy_dir} is not in a git repository").strip()
    # `--end-of-options`: a base that starts with "-" is a ref, never an option of git.
    commit = _git(policy_dir, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{base}^{{commit}}",
                  missing=f"--base {base!r} is neither a directory nor a git ref").strip()
    listing = _git(policy_dir, "ls-tree", "--full-tree", "--name-only", "-z", f"{commit}:{prefix}",
                   missing=f"the policy directory {prefix or './'} does not exist at {base}")
    names = [name for name in listing.split("\0") if name.endswith(".polar")]
    if not names:
        raise DiffUsageError(f"no .polar files in {prefix or '.'} at {base}")
    for name in names:
        text = _git(policy_dir, "show", f"{commit}:{prefix}{name}")
        (scratch / name).write_text(text, encoding="utf-8")
    return PolicySide(load_policy(scratch, "base"), f"{base}:{prefix or './'}")


def _git(cwd: Path, *args: str, missing: str | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, encoding="utf-8", check=False)
    except OSError as error:  # no git at all
        raise DiffUsageError(f"cannot run git: {error}") from error
    except UnicodeDecodeError as error:  # as Policy reads a file: UTF-8 or nothing
        raise DiffUsageError(f"git {args[-1]}: not UTF-8: {error}") from error
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"git {args[0]} failed"
        raise DiffUsageError(missing or f"git {args[0]}: {why}")
    return done.stdout


# -- the diff ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Cell:
    """In one organization: users in one situation, and what each of them acts on. `targets`
    are ids put into `shape` ("Project:{target}", "Member:acme/{target} to owner", ...); with
    `own`, a user never acts on the target named by their own id (their own membership is
    another situation); with `targets` None, each user acts on their own only."""

    users: list[str]
    targets: list[str] | None
    shape: str
    own: bool = False

    def count(self) -> int:
        if self.targets is None:
            return len(self.users)
        mine = len(set(self.users) & set(self.targets)) if self.own else 0
        return len(self.users) * len(self.targets) - mine

    def triples(self, action: str) -> Iterator[tuple[str, str, str]]:
        for user_id in sorted(self.users):
            for target in [user_id] if self.targets is None else sorted(self.targets):
                if not (self.own and target == user_id):
                    yield user_id, action, self.shape.format(target=target)


@dataclass(slots=True)
class GrantCell:
    """In one organization: actors in one situation giving (or taking back) one role on resources
    of one chain shape to grantees in one situation. With `own`, an actor is never their own
    grantee here (that is another situation); with `grantees` None, each actor is their own
    grantee. `shape` is "RoleGrant:Type/{resource}/{grantee}/role", as `policy test` names it."""

    users: list[str]
    resources: list[str]
    grantees: list[str] | None
    shape: str
    own: bool = False

    def count(self) -> int:
        if self.grantees is None:
            return len(self.users) * len(self.resources)
        mine = len(set(self.users) & set(self.grantees)) if self.own else 0
        return (len(self.users) * len(self.grantees) - mine) * len(self.resources)

    def triples(self, action: str) -> Iterator[tuple[str, str, str]]:
        for user_id in sorted(self.users):
            for resource_id in sorted(self.resources):
                for grantee in [user_id] if self.grantees is None else sorted(self.grantees):
                    if not (self.own and grantee == user_id):
                        yield user_id, action, self.shape.format(resource=resource_id, grantee=grantee)


@dataclass
class Group:
    """Every decision that flips the same way for one situation: one Subject (with the target's
    facts, for a target of a mutation), one resource type, one action. `cells` holds, per
    organization, the users in that situation there and what they act on."""

    subject: Subject
    resource_type: str
    action: str
    before: str  # ALLOW or DENY, under the base policy
    after: str
    cells: dict[str, list[Cell]]
    count: int  # the triples
    example: tuple[str, str, str]  # (user, action, "Type:id")
    explain_base: list[str] = field(default_factory=list)
    explain_new: list[str] = field(default_factory=list)

    @property
    def users(self) -> int:
        return len(set().union(*(cell.users for cells in self.cells.values() for cell in cells)))


@dataclass
class Diff:
    base: PolicySide
    new: PolicySide
    facts_source: str
    revision: int
    subjects: int  # distinct Subjects, each decided once per resource type under both policies
    pairs: int  # (user, organization) pairs with a fact
    groups: list[Group]
    index: FactIndex

    @property
    def identical(self) -> bool:
        return self.base.policy.version == self.new.policy.version

    @property
    def changed(self) -> int:
        return sum(group.count for group in self.groups)

    def triples(self, group: Group) -> Iterator[tuple[str, str, str]]:
        """Every (user, action, "Type:id") of the group, by organization, user and resource."""
        for organization_id in sorted(group.cells):
            for cell in group.cells[organization_id]:
                yield from cell.triples(group.action)


def situations(index: FactIndex) -> dict[Subject, dict[str, list[str]]]:
    """Every (user, organization) pair with a fact, by the Subject the policy would see: for
    each distinct Subject, the organizations and, per organization, the users in it.

    The Subjects are those `FactIndex.subject` builds (a test holds them equal), built once
    per kind of pair rather than once per pair: most pairs of a large store are a partner's
    people and one of its clients, and a user whose only facts about the client are their
    membership in one partner (and their assignment by it) has the Subject that membership,
    that connection and that assignment make. Only the pairs with more than one path (a home
    membership and a partner's, two partners, a linked account) are asked one by one."""
    by_subject: dict[Subject, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    by_kind: dict[tuple, dict[str, list[str]]] = {}  # a kind of pair -> its entry of by_subject

    def entry(kind: tuple, build) -> dict[str, list[str]]:
        found = by_kind.get(kind)
        if found is None:
            found = by_kind[kind] = by_subject[build()]
        return found

    memberships, members = index.memberships, index.members
    with index.one_state():
        assigned_to: dict[str, dict[str, dict[str, bool]]] = defaultdict(dict)  # client -> user -> partner -> approved
        for (user_id, client_id), by_partner in index.assignments.items():
            if by_partner:
                assigned_to[client_id][user_id] = by_partner
        kinds_of: dict[str, dict[tuple, set[str]]] = {}  # organization -> kind of member -> users

        def kinds(organization_id: str) -> dict[tuple, set[str]]:
            if organization_id not in kinds_of:
                grouped: dict[tuple, set[str]] = defaultdict(set)
                for user_id in members.get(organization_id, ()):
                    member = memberships[user_id][organization_id]
                    grouped[(member.role, member.status, member.partner_employee)].add(user_id)
                kinds_of[organization_id] = grouped
            return kinds_of[organization_id]

        for organization_id in sorted(index.organizations):
            home = members.get(organization_id, set())
            partners = index.partners.get(organization_id, {})
            through = [members.get(partner_id, set()) for partner_id in partners]
            # Users with more than one path to the organization: asked one by one.
            several = set().union(*(a & b for i, a in enumerate(through) for b in through[i + 1:]),
                                  *(home & b for b in through))
            for linked in index.links.get(organization_id, ()):
                several |= members.get(linked, set())
            for user_id in sorted(several):
                by_subject[index.subject(user_id, organization_id)][organization_id].append(user_id)
            for (role, status, tagged), users in kinds(organization_id).items():
                alone = users - several
                if alone:
                    home_fact = MembershipFact(HOME, role, status, tagged)
                    entry(("home", role, status, tagged), lambda f=home_fact: Subject((f,)))[
                        organization_id].extend(alone)
            assigned = assigned_to.get(organization_id, {})
            for partner_id, link in partners.items():
                assigned_by = {user_id for user_id, by_partner in assigned.items() if partner_id in by_partner}
                for (role, status, tagged), users in kinds(partner_id).items():
                    alone = users - several
                    if not alone:
                        continue
                    path = (MembershipFact("p0", role, status, tagged),
                            (ConnectionFact("p0", link.status, link.granted_scopes, link.employee_approval),))
                    kind = ("path", role, status, tagged, link.status, link.granted_scopes, link.employee_approval)
                    unassigned = alone - assigned_by
                    if unassigned:
                        entry(kind, lambda p=path: Subject((p[0],), p[1]))[organization_id].extend(unassigned)
                    for user_id in alone & assigned_by:
                        approved = assigned[user_id][partner_id]
                        entry((*kind, approved), lambda p=path, a=approved: Subject(
                            (p[0],), p[1], (AssignmentFact("p0", a),)))[organization_id].append(user_id)
    return by_subject


def diff(index: FactIndex, store, base: PolicySide, new: PolicySide, facts_source: str) -> Diff:
    """Decide each situation once under both policies and group what flips: on the check
    plane's resources, then on the targets of mutations."""
    by_subject = situations(index)
    groups = []
    # The same files (the version hashes them): no decision can change, none is asked.
    same = base.policy.version == new.policy.version
    types = resource_types(base.policy, new.policy)
    shapes = _shapes(index, types)
    holders = _role_holders(index)
    for subject, where in ({} if same else by_subject).items():
        for resource_type in types:
            by_shape: dict[tuple[str, ...], dict[str, list[Cell]]] = defaultdict(dict)
            for organization_id, users in where.items():
                # A user with a role on a resource of the organization is decided resource by resource.
                users = [user_id for user_id in users if organization_id not in holders.get(user_id, ())]
                for shape, ids in shapes.get((resource_type, organization_id), {}).items():
                    if users:
                        by_shape[shape][organization_id] = [Cell(users, ids, f"{resource_type}:{{target}}")]
            for shape, cells in by_shape.items():
                situation = subject if shape == (resource_type,) else replace(subject, chain=shape)
                groups += _flips(base.policy, new.policy, situation, resource_type, cells)
    if not same:
        for (situation, resource_type), cells in _with_roles(index, types, holders).items():
            groups += _flips(base.policy, new.policy, situation, resource_type, cells)
    if not same:
        # A target type none of whose rules the change can reach is not decided at all.
        types = [target for target in TARGET_TYPES if _reaches(base.policy, new.policy, target)]
        for subject, resource_type, actions, cells in target_situations(index, by_subject, types):
            before = _asked(base.policy, subject, resource_type, actions)
            after = _asked(new.policy, subject, resource_type, actions)
            for action in sorted(before ^ after):
                groups += _group(subject, resource_type, action, before, after, cells())
        if "RoleGrant" in types:
            roles = _declared_roles(base.policy, new.policy)
            answers = {}
            for subject in grant_situations(index, by_subject, roles, holders, keep=SITUATIONS_ONLY):
                before = _asked(base.policy, subject, "RoleGrant", None)
                after = _asked(new.policy, subject, "RoleGrant", None)
                if before != after:
                    answers[subject] = (before, after)
            if answers:
                for subject, cells in grant_situations(index, by_subject, roles, holders, keep=answers).items():
                    before, after = answers[subject]
                    for action in sorted(before ^ after):
                        groups += _group(subject, "RoleGrant", action, before, after, cells)
        if "OrganizationLink" in types:
            groups += _link_groups(index, by_subject, base.policy, new.policy)
    groups.sort(key=lambda g: (-g.count, g.resource_type, g.action, g.before, g.example))
    authorizer = Authorizer(store, index, new.policy)
    for group in groups:
        if group.subject.target is not None:
            group.explain_base = _target_reasons(base.policy, group)
            group.explain_new = _target_reasons(new.policy, group)
            continue
        user_id, action, resource = group.example
        resource_type, _, resource_id = resource.partition(":")
        _, group.explain_base = explain(authorizer, "User", user_id, action, resource_type, resource_id,
                                        policy=base.policy)
        _, group.explain_new = explain(authorizer, "User", user_id, action, resource_type, resource_id,
                                       policy=new.policy)
    pairs = sum(len(users) for where in by_subject.values() for users in where.values())
    return Diff(base, new, facts_source, index.revision, len(by_subject), pairs, groups, index)


def resource_types(base: Policy, new: Policy) -> list[str]:
    """The resources of the check plane: organizations, and every type either policy declares."""
    return ["Organization", *sorted(set(base.resource_types) | set(new.resource_types))]


def _flips(base: Policy, new: Policy, situation: Subject, resource_type: str,
           cells: dict[str, list[Cell]]) -> list[Group]:
    before = _actions(base, situation, resource_type)
    after = _actions(new, situation, resource_type)
    groups = []
    for action in sorted(before ^ after):
        groups += _group(situation, resource_type, action, before, after, cells)
    return groups


def _shapes(index: FactIndex, types: list[str]) -> dict[tuple[str, str], dict[tuple[str, ...], list[str]]]:
    """Per (resource type, organization), its resources by the types of their chain: a top-level
    one's is its own type, a nested one's its type, its parent's, ... up to the top one."""
    found: dict[tuple[str, str], dict[tuple[str, ...], list[str]]] = defaultdict(lambda: defaultdict(list))
    with index.one_state():
        for organization_id in index.organizations:
            found[("Organization", organization_id)][("Organization",)] = [organization_id]
        for (resource_type, organization_id), ids in index.by_organization.items():
            if resource_type not in types:
                continue
            for resource_id in sorted(ids):
                key = (resource_type, resource_id)
                chain_types = index.nested_chain(key)[1] if key in index.parents else (resource_type,)
                if chain_types:  # a chain that does not reach an organization decides nothing
                    found[(resource_type, organization_id)][chain_types].append(resource_id)
    return found


def _role_holders(index: FactIndex) -> dict[str, set[str]]:
    """Per user with a role on a resource (GrantResourceRole), the organizations of those resources."""
    with index.one_state():
        return {user_id: {index.resources[key] for key in held if key in index.resources}
                for user_id, held in index.resource_roles.items() if held}


def _with_roles(index: FactIndex, types: list[str], holders: dict[str, set[str]]):
    """The decisions of users with roles on resources, in the organizations of those resources:
    one by one, per resource of each type, with the roles they hold on its chain (a user whose
    only fact there is such a role included)."""
    found: dict[tuple[Subject, str], dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    with index.one_state():
        for user_id in sorted(holders):
            for organization_id in sorted(holders[user_id]):
                subject = index.subject(user_id, organization_id)
                found[(subject, "Organization")][organization_id].append(
                    Cell([user_id], [organization_id], "Organization:{target}"))
                for resource_type in types[1:]:
                    for resource_id in sorted(index.resources_of(resource_type, organization_id)):
                        key = (resource_type, resource_id)
                        chain, chain_types = (index.nested_chain(key) if key in index.parents
                                              else ((key,), (resource_type,)))
                        if not chain:
                            continue
                        situation = replace(subject, chain=chain_types, resource_roles=index.roles_on(user_id, chain))
                        found[(situation, resource_type)][organization_id].append(
                            Cell([user_id], [resource_id], f"{resource_type}:{{target}}"))
    return found


def _group(subject: Subject, resource_type: str, action: str, before: frozenset[str], after: frozenset[str],
           cells: dict[str, list[Cell]]) -> list[Group]:
    """The group of one flipping action, or none when it flips on no decision there is."""
    cells = {organization_id: [cell for cell in found if cell.count()] for organization_id, found in cells.items()}
    cells = {organization_id: found for organization_id, found in cells.items() if found}
    count = sum(cell.count() for found in cells.values() for cell in found)
    if not count:
        return []  # the decision flips, but on nothing there is
    first = next(cell for organization_id in sorted(cells) for cell in cells[organization_id])
    example = next(first.triples(action))  # the first of the triples, as `Diff.triples` lists them
    return [Group(subject, resource_type, action, ALLOW if action in before else DENY,
                  ALLOW if action in after else DENY, cells, count, example)]


def _target_reasons(policy: Policy, group: Group) -> list[str]:
    """What a policy says about a target's decision: the answer, and when it allows, the rules
    without which it would not (Explain's rules)."""
    user_id, action, resource = group.example
    allowed = policy.is_allowed(group.subject, group.resource_type, action)
    reasons = [f"{'allowed' if allowed else 'denied'}: user {user_id} {action} on {resource}, policy {policy.version}"]
    if allowed:
        reasons += [f"by the rule {note}" for note in policy.rules_behind(group.subject, group.resource_type, action)]
    return reasons


# -- the targets of mutations ------------------------------------------------------------------
# The membership and partner services ask about a target as follows (their service.py): remove,
# pause and resume about an existing membership with no new role; set_role about an existing
# membership with the new role; invite with the role given (the invitee is not a member yet);
# accept about a client invitation by link, or by email (to the actor or to someone else); every
# Connection action about a connection of the organization, as the client; grant and revoke
# about a role on one resource, with the grantee's facts (RoleGrant, see `grant_situations`); and
# the directory service asks create about a link of two master accounts, with the actor's
# membership in the other one (OrganizationLink, see `link_situations`).

TARGET_TYPES = ("Member", "ClientInvitation", "Connection", "RoleGrant", "OrganizationLink")
ROLES = tuple(role.value for role in models.Role)
WITH_A_NEW_ROLE = {"invite", "set_role"}  # the Member actions asked with the role given


def target_situations(index: FactIndex, by_subject: dict[Subject, dict[str, list[str]]], types=TARGET_TYPES):
    """(Subject with a target, target type, the actions asked about it, a function giving its
    cells) for every target decision the facts hold: each (user, organization) pair with a fact
    (by its Subject) with every membership of the organization, every connection, a client
    invitation of each kind, and an invitation as each role."""
    members_by_kind: dict[tuple, dict[str, list[str]]] = defaultdict(dict)  # kind -> organization -> users
    for organization_id, users in index.members.items():
        grouped: dict[tuple, list[str]] = defaultdict(list)
        for user_id in users:
            member = index.memberships[user_id][organization_id]
            grouped[(member.role, member.status, member.partner_employee)].append(user_id)
        for kind, found in grouped.items():
            members_by_kind[kind][organization_id] = found
    kinds_of: dict[str, list[tuple]] = defaultdict(list)
    for kind, where in members_by_kind.items():
        for organization_id in where:
            kinds_of[organization_id].append(kind)

    member_cells: dict[MemberTarget, dict[Subject, dict[str, list[Cell]]]] = defaultdict(lambda: defaultdict(dict))
    connection_cells: dict[tuple[Subject, ConnectionFact], dict[str, list[Cell]]] = defaultdict(
        lambda: defaultdict(list))
    with index.one_state():
        for subject, where in by_subject.items():
            home = next((m for m in subject.memberships if m.organization_id == HOME), None)
            for organization_id, users in where.items():
                shape = f"Member:{organization_id}/{{target}}"
                for kind in kinds_of.get(organization_id, ()) if "Member" in types else ():
                    member_cells[MemberTarget(*kind, False)][subject][organization_id] = [
                        Cell(users, members_by_kind[kind][organization_id], shape, own=True)]
                if home is not None and "Member" in types:
                    own = MemberTarget(home.role, home.status, home.partner_employee, True)
                    member_cells[own][subject][organization_id] = [Cell(users, None, shape)]
                partners = index.partners.get(organization_id, {}) if "Connection" in types else {}
                for partner_id, link in partners.items():
                    by_label = _connection_labels(index, subject, organization_id, partner_id, users)
                    for label, labelled in by_label.items():
                        target = ConnectionFact(label, link.status, link.granted_scopes, link.employee_approval)
                        connection_cells[(subject, target)][organization_id].append(
                            Cell(labelled, [partner_id], f"Connection:{{target}}/{organization_id}"))

    def with_role(cells: dict[str, list[Cell]], role: str):
        return lambda: {o: [replace(c, shape=f"{c.shape} to {role}") for c in found] for o, found in cells.items()}

    for target, by_situation in member_cells.items():
        for subject, cells in by_situation.items():
            situation = replace(subject, target=target)
            yield situation, "Member", None, (lambda c=cells: c)  # None: every action asked without a new role
            for role in ROLES:
                yield replace(situation, target=replace(target, new_role=role)), "Member", {"set_role"}, \
                    with_role(cells, role)
    for subject, where in by_subject.items() if {"Member", "ClientInvitation"} & set(types) else ():
        invitee = {organization_id: [Cell(users, ["(someone not a member)"], f"Member:{organization_id}/{{target}}")]
                   for organization_id, users in where.items()}
        for role in ROLES if "Member" in types else ():
            yield replace(subject, target=MemberTarget("", "", False, False, role)), "Member", {"invite"}, \
                with_role(invitee, role)
        for by_link, to_actor, name in ((True, False, ["link"]), (False, True, None),
                                        (False, False, ["(someone else)"])) if "ClientInvitation" in types else ():
            yield replace(subject, target=InvitationTarget(by_link, to_actor)), "ClientInvitation", None, (
                lambda n=name, w=where: {o: [Cell(users, n, f"ClientInvitation:{o}/{{target}}")]
                                         for o, users in w.items()})
    for (subject, target), cells in connection_cells.items():
        yield replace(subject, target=target), "Connection", None, (lambda c=cells: c)


class _SituationsOnly:
    """`keep` for grant_situations that keeps no cell (the answer's keys are every situation)."""

    def __contains__(self, _situation) -> bool:
        return False


SITUATIONS_ONLY = _SituationsOnly()
ANYONE_ELSE = "(anyone else)"  # a grantee with no fact about the organization under the actor's labels


def _declared_roles(base: Policy, new: Policy) -> dict[str, tuple[str, ...]]:
    """Per resource type either policy declares, the roles either declares on it."""
    found: dict[str, tuple[str, ...]] = {}
    for policy in (base, new):
        for resource_type in policy.resource_types:
            roles = policy.roles.get(resource_type, ())
            found[resource_type] = tuple(dict.fromkeys((*found.get(resource_type, ()), *roles)))
    return {resource_type: roles for resource_type, roles in found.items() if roles}


def _grantee_facts(index: FactIndex, user_id: str, organization_id: str,
                   labels: tuple[tuple[str, str], ...]) -> tuple[tuple, tuple]:
    """A grantee's facts about the organization under the actor's labels, as the server builds
    them (Authorizer.target_subject): their memberships there, and their assignments to it by a
    partner the actor belongs to."""
    memberships = tuple(MembershipFact(label, m.role, m.status, m.partner_employee)
                        for label, ident in labels if (m := index.member(user_id, ident)) is not None)
    assigned = index.assignments.get((user_id, organization_id), {})
    assignments = tuple(AssignmentFact(label, assigned[ident]) for label, ident in labels
                        if label != HOME and ident in assigned)
    return memberships, assignments


def _actor_labels(index: FactIndex, subject: Subject, organization_id: str,
                  users: list[str]) -> dict[tuple[tuple[str, str], ...], list[str]]:
    """The actors of one situation by the organizations behind their labels (sorted label, id
    pairs): a home member's only label is the organization; a partner's person with one path has
    that partner as p0; anyone else is asked (index.subject)."""
    found: dict[tuple, list[str]] = defaultdict(list)
    if not subject.connections and not subject.linked:
        found[((HOME, organization_id),)] = list(users)
        return found
    home = any(m.organization_id == HOME for m in subject.memberships)
    partners = index.partners.get(organization_id, {})
    for user_id in users:
        own = index.memberships.get(user_id, {})
        if len(subject.connections) == 1 and not subject.linked and not home:
            partner_id = next(p for p in partners if p in own)
            found[((HOME, organization_id), (PATH, partner_id))].append(user_id)
            continue
        labels: dict[str, str] = {}
        index.subject(user_id, organization_id, labels)
        labels.setdefault(HOME, organization_id)
        found[tuple(sorted(labels.items()))].append(user_id)
    return found


def grant_situations(index: FactIndex, by_subject: dict[Subject, dict[str, list[str]]],
                     roles: dict[str, tuple[str, ...]], holders: dict[str, set[str]], keep=None):
    """Every decision about giving or taking back a role on one resource that the facts hold, by
    situation: each (user, organization) pair with a fact (a role on one of its resources
    included), with each resource of the organization of a type that declares roles (by the
    shape of its chain), each role, and each grantee: every user with a fact about the
    organization or a role on one of its resources (by their facts under the actor's labels), the
    actor themselves, and anyone else (one triple, ANYONE_ELSE: every other registered user is
    in that situation). Services ask grant and revoke with these facts (GrantResourceRole,
    RevokeResourceRole); the actor's roles on the resource's chain are facts too, so an actor
    holding roles in the organization is decided resource by resource.

    With `keep`, only the cells of the situations it holds are kept: a large store has millions
    of cells, of which a change flips few, so the diff first lists the situations alone (keep
    SITUATIONS_ONLY: the keys of the answer are every situation), decides them, and then keeps
    the cells of those that flip."""
    found: dict[Subject, dict[str, list[GrantCell]]] = defaultdict(lambda: defaultdict(list))

    def put(situation: Subject, organization_id: str, *cell, own: bool = False) -> None:
        if keep is None or situation in keep:
            found[situation][organization_id].append(GrantCell(*cell, own=own))
        elif keep is SITUATIONS_ONLY:
            found.setdefault(situation, {})
    shapes = _shapes(index, list(roles))
    grantee_kinds: dict[tuple, dict[tuple, list[str]]] = {}
    holding_in: dict[str, set[str]] = defaultdict(set)  # organization -> users holding a role there
    for user_id, organization_ids in holders.items():
        for organization_id in organization_ids:
            holding_in[organization_id].add(user_id)
    related: dict[str, set[str]] = {}
    assigned_to: dict[str, dict[str, dict]] = defaultdict(dict)  # client -> user -> partner -> approved

    def kinds(organization_id: str, labels: tuple) -> dict[tuple, list[str]]:
        """The grantees named one by one (everyone with a fact about the organization, or a role
        there, or a fact under the actor's labels), by their facts under the labels."""
        key = (organization_id, labels)
        if key not in grantee_kinds:
            if organization_id not in related:
                related[organization_id] = index.candidate_users(organization_id) | holding_in[organization_id]
            grouped: dict[tuple, list[str]] = defaultdict(list)
            # Only a member of a labelled organization, or someone a labelled partner assigned to
            # the organization, has a fact under the labels: the others are asked nothing.
            idents = {ident for _, ident in labels}
            labelled = set().union(*(index.members.get(ident, set()) for ident in idents))
            labelled |= {user_id for user_id, partners in assigned_to.get(organization_id, {}).items()
                         if idents.intersection(partners)}
            for user_id in sorted(labelled):
                grouped[_grantee_facts(index, user_id, organization_id, labels)].append(user_id)
            factless = related[organization_id] - labelled
            if factless:
                grouped[((), ())] += sorted(factless)
            grantee_kinds[key] = grouped
        return grantee_kinds[key]

    def own_facts(organization_id: str, actors: list[str], labels: tuple) -> dict[tuple, list[str]]:
        """The actors by their own facts as grantees (giving a role to themselves)."""
        own: dict[tuple, list[str]] = defaultdict(list)
        for user_id in actors:
            own[_grantee_facts(index, user_id, organization_id, labels)].append(user_id)
        return own

    def add(subject: Subject, organization_id: str, actors: list[str], labels: tuple, own: dict,
            resource_type: str, chain: tuple[str, ...], resource_ids: list[str], actor_roles: tuple = ()) -> None:
        base = replace(subject, chain=chain, resource_roles=actor_roles)
        for role in roles[resource_type]:
            shape = f"RoleGrant:{resource_type}/{{resource}}/{{grantee}}/{role}"
            for (memberships, assignments), grantees in kinds(organization_id, labels).items():
                situation = replace(base, target=RoleGrantTarget(role, memberships, assignments, False))
                put(situation, organization_id, actors, resource_ids, grantees, shape, own=True)
            situation = replace(base, target=RoleGrantTarget(role, (), (), False))
            put(situation, organization_id, actors, resource_ids, [ANYONE_ELSE], shape)
            for (memberships, assignments), mine in own.items():
                situation = replace(base, target=RoleGrantTarget(role, memberships, assignments, True))
                put(situation, organization_id, mine, resource_ids, None, shape)

    def decide(subject: Subject, organization_id: str, users: list[str]) -> None:
        by_type = {t: shapes[(t, organization_id)] for t in roles if (t, organization_id) in shapes}
        if not by_type:
            return
        plain = [user_id for user_id in users if organization_id not in holders.get(user_id, ())]
        holding = [user_id for user_id in users if organization_id in holders.get(user_id, ())]
        for labels, actors in _actor_labels(index, subject, organization_id, plain).items():
            own = own_facts(organization_id, actors, labels)
            for resource_type, by_chain in by_type.items():
                for chain, resource_ids in by_chain.items():
                    add(subject, organization_id, actors, labels, own, resource_type, chain, resource_ids)
        for labels, actors in _actor_labels(index, subject, organization_id, holding).items():
            for user_id in actors:
                own = own_facts(organization_id, [user_id], labels)
                for resource_type, by_chain in by_type.items():
                    for chain_types, resource_ids in by_chain.items():
                        by_roles: dict[tuple, list[str]] = defaultdict(list)
                        for resource_id in resource_ids:
                            key = (resource_type, resource_id)
                            chain = index.nested_chain(key)[0] if key in index.parents else (key,)
                            by_roles[index.roles_on(user_id, chain)].append(resource_id)
                        for actor_roles, ids in by_roles.items():
                            add(subject, organization_id, [user_id], labels, own, resource_type, chain_types,
                                ids, actor_roles)

    with index.one_state():
        for (user_id, client_id), by_partner in index.assignments.items():
            if by_partner:
                assigned_to[client_id][user_id] = by_partner
        for subject, where in by_subject.items():
            for organization_id, users in where.items():
                decide(subject, organization_id, users)
        # Users whose only fact about an organization is a role on one of its resources.
        for user_id in sorted(holders):
            for organization_id in sorted(holders[user_id]):
                subject = index.subject(user_id, organization_id)
                if not subject.memberships:
                    decide(subject, organization_id, [user_id])
    return found


ANY_OTHER = "(any other)"  # an organization the user is not a member of (they are all one situation)


def link_situations(index: FactIndex, by_subject: dict[Subject, dict[str, list[str]]],
                    keep=None) -> dict[Subject, dict[str, list[Cell]]]:
    """Every decision about linking two master accounts that the facts hold, by situation, as the
    directory service asks it (LinkOrganizations, Authorizer.target_subject): the actor's facts
    about the organization, with their membership in the other one under the label OTHER. The
    organization: each one the user has a fact about (the service asks about the link only once
    the actor may "link" the organization, which the contract denies without a fact). The other:
    each organization the user is a member of (that membership is the only fact the decision holds
    about it), and ANY_OTHER: one decision standing for every organization they are not a member
    of, all in the same situation (a policy that asks "link" on one side only grants those too).
    Users are members of few organizations, so the pairs are few per user.

    With `keep` (a function of a situation), only the cells of the situations it keeps are
    collected: the diff decides each situation as it first meets it, and keeps those that flip."""
    found: dict[Subject, dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    with index.one_state():
        organizations = index.organizations
        others: dict[str, tuple] = {}  # user -> (organization, kind of membership) per membership
        # Users who are members of every organization but one, or of all: whether some organization
        # is left for ANY_OTHER depends on which one they link from. Few, if any.
        everywhere = set()
        for subject, where in by_subject.items():
            kept: dict[tuple | None, Subject | None] = {}  # kind of membership in the other (None: none)
            for organization_id, users in where.items():
                shape = f"OrganizationLink:{organization_id}/{{target}}"
                by_other: dict[tuple[str, tuple], list[str]] = defaultdict(list)
                for user_id in users:
                    mine = others.get(user_id)
                    if mine is None:
                        mine = others[user_id] = tuple(
                            (other_id, (member.role, member.status, member.partner_employee))
                            for other_id in index.memberships.get(user_id, ())
                            if other_id in organizations and (member := index.member(user_id, other_id)))
                        if len(mine) >= len(organizations) - 1:
                            everywhere.add(user_id)
                    for other in mine:
                        if other[0] != organization_id:
                            by_other[other].append(user_id)
                strangers = users if not everywhere or everywhere.isdisjoint(users) else [
                    user_id for user_id in users
                    if sum(other[0] != organization_id for other in others[user_id]) < len(organizations) - 1]
                if strangers:
                    by_other[(ANY_OTHER, None)] = strangers
                for (other_id, kind), members in by_other.items():
                    if kind not in kept:
                        situation = _link_situation(subject, kind)
                        kept[kind] = situation if keep is None or keep(situation) else None
                    if kept[kind] is not None:
                        found[kept[kind]][organization_id].append(Cell(members, [other_id], shape))
    return found


def _link_situation(subject: Subject, kind: tuple | None) -> Subject:
    """The subject linking its organization with another where the user is a member of that kind
    (role, status, tagged), or of none."""
    other = (MembershipFact(OTHER, *kind),) if kind else ()
    return replace(subject, memberships=(*subject.memberships, *other), target=LinkTarget())


def _link_groups(index: FactIndex, by_subject: dict[Subject, dict[str, list[str]]], base: Policy,
                 new: Policy) -> list[Group]:
    """The groups of the link decisions that flip: each situation decided once, as it is met."""
    answers: dict[Subject, tuple[frozenset[str], frozenset[str]]] = {}

    def flips(situation: Subject) -> bool:
        answers[situation] = (_asked(base, situation, "OrganizationLink", None),
                              _asked(new, situation, "OrganizationLink", None))
        return answers[situation][0] != answers[situation][1]

    groups = []
    for situation, cells in link_situations(index, by_subject, keep=flips).items():
        before, after = answers[situation]
        for action in sorted(before ^ after):
            groups += _group(situation, "OrganizationLink", action, before, after, cells)
    return groups


def _connection_labels(index: FactIndex, subject: Subject, organization_id: str, partner_id: str,
                       users: list[str]) -> dict[str, list[str]]:
    """The users, by the label their Subject gives the partner of this connection: "p0" and
    so on when they belong to it, else the label of a partner they do not belong to."""
    if not subject.connections:
        return {UNKNOWN_PARTNER: users}
    if len(subject.connections) == 1:  # they belong to one partner of the organization: p0
        inside = [u for u in users if partner_id in index.memberships.get(u, {})]
        outside = [u for u in users if partner_id not in index.memberships.get(u, {})]
        return {label: found for label, found in ((PATH, inside), (UNKNOWN_PARTNER, outside)) if found}
    by_label: dict[str, list[str]] = defaultdict(list)
    for user_id in users:
        labels: dict[str, str] = {}
        index.subject(user_id, organization_id, labels)
        label = next((name for name, ident in labels.items() if ident == partner_id and name != HOME), UNKNOWN_PARTNER)
        by_label[label].append(user_id)
    return by_label


def _actions(policy: Policy, subject: Subject, resource_type: str) -> frozenset[str]:
    if resource_type not in policy.permissions:  # a resource type one side does not declare
        return frozenset()
    return policy.actions(subject, resource_type)


def _asked(policy: Policy, subject: Subject, resource_type: str, actions: set[str] | None) -> frozenset[str]:
    """The actions allowed of those the services ask about this target (None: every action
    asked without a new role). One action at a time when few are asked: cheaper than all."""
    if resource_type not in policy.permissions:
        return frozenset()
    declared = policy.permissions[resource_type]
    asked = [a for a in declared if a not in WITH_A_NEW_ROLE] if actions is None and resource_type == "Member" else \
        declared if actions is None else [a for a in declared if a in actions]
    if len(asked) > 3:
        return policy.actions(subject, resource_type) & frozenset(asked)
    return frozenset(action for action in asked if policy.is_allowed(subject, resource_type, action))


def _reaches(base: Policy, new: Policy, target_type: str) -> bool:
    """Whether a rule the change adds or deletes can take part in a decision about the target
    type (if not, no such decision can change, and none is asked): a rule of its resource block
    or naming it; a role's rule; a rule granting a permission its rules name; a rule of a
    predicate its rules call (transitively); the allow rule. Rules about other resource types
    only (a Project's) cannot."""
    sides = [_rule_texts(policy) for policy in (base, new)]
    changed = set(sides[0]) ^ set(sides[1])
    every = {**sides[0], **sides[1]}
    named = re.compile(rf"\b{target_type}\b")
    own = [text for text, block in every.items() if block == target_type or (not block and named.search(text))]
    literals = {literal for text in own for literal in re.findall(r'"(\w+)"', text)}
    grown = True
    while grown:  # a permission granted through another ("move" if "delete_resource" on ...)
        grown = False
        for text, block in every.items():
            found = re.findall(r'"(\w+)"', text) if block else []
            if found and found[0] in literals and not set(found[1:]) <= literals:
                literals |= set(found[1:])
                grown = True
    roles = {role for policy in (base, new) for roles in policy.roles.values() for role in roles}
    called, todo = set(), [text for text in own]
    while todo:
        for name in re.findall(r"\b(\w+)\s*\(", todo.pop().split(" if ", 1)[-1]):
            if name not in called:
                called.add(name)
                if name in ("has_permission", "allow"):
                    continue  # its rules count by the permission they grant, below
                todo += [text for text, block in every.items() if not block and text.startswith(name + "(")]
    for text in changed:
        block, head = every[text], text.split("(", 1)[0]
        if block:
            action = re.match(r'\s*"(\w+)"', text)
            if block == target_type or (action and (action.group(1) in literals or action.group(1) in roles)):
                return True
        elif named.search(text) or head in ("allow", "has_role") or (head in called and head != "has_permission"):
            return True
        elif head == "has_permission":
            match = re.match(r'has_permission\([^,]*,\s*(?:"(\w+)"|[^,]*),\s*\w+\s*:\s*(\w+)\)', text)
            granted = match.group(1) if match else None
            if match is None or (match.group(2) == "Organization" and (not granted or granted in literals)):
                return True
    return False


def _rule_texts(policy: Policy) -> dict[str, str]:
    """Every rule of the policy, by its text (spacing normalized), with the resource block it
    is in ("" at the top level)."""
    found = {}
    for source in policy.sources:
        blocks = [(m.start(), m.end(), m.group(1)) for m in re.finditer(
            r"^\s*resource\s+(\w+)\s*\{.*?^\}", source.text, re.S | re.M)]
        for rule in rules(source.path, source.text):
            found[rule.text] = next((name for start, end, name in blocks if start <= rule.start < end), "")
    return found


# -- the facts ---------------------------------------------------------------------------------


class Facts:
    """A fact index over a database (read only) or over a world file (a throwaway SQLite
    database filled from it); close() releases it."""

    def __init__(self, database_url: str | None, world_file: str | None, policy: Policy):
        from sqlalchemy.exc import SQLAlchemyError

        from mandate import errors

        self._ephemeral = None
        if world_file is not None:
            from mandate.runtime.world import EphemeralApp, WorldError, read_yaml

            try:
                world = read_yaml(world_file).get("world")
                self._ephemeral = EphemeralApp(policy.directory, world or {}, policy=policy)
            except (WorldError, OSError) as error:
                raise DiffUsageError(f"cannot load the world: {error}") from error
            self.store, self.index = self._ephemeral.app.store, self._ephemeral.app.index
            self.source = f"world {world_file}"
            return
        from sqlalchemy.engine import make_url

        from mandate.store.db import Store

        try:
            self.source = f"database {make_url(database_url).render_as_string(hide_password=True)}"
            # Only reads: the index loads the fact tables as the server does at start.
            self.store = Store(database_url)
            self.index = FactIndex(self.store)
            self.index.catch_up()
        except (SQLAlchemyError, errors.DomainError, ValueError) as error:
            raise DiffUsageError(f"cannot read the facts from {database_url!r} (a Mandate database at the "
                                 f"newest schema, see `mandate migrate`): {str(error).splitlines()[0]}") from error

    def close(self) -> None:
        if self._ephemeral is not None:
            self._ephemeral.close()
        else:
            self.store.engine.dispose()


def run(base: str, policy_dir: Path, database_url: str | None, world_file: str | None) -> Diff:
    """Load both policies and the facts, and diff. Raises DiffUsageError."""
    new = PolicySide(load_policy(policy_dir, "new"), str(policy_dir))
    with tempfile.TemporaryDirectory(prefix="mandate-base-") as scratch:
        base_side = base_policy(base, policy_dir, Path(scratch))
        facts = Facts(database_url, world_file, new.policy)
        try:
            return diff(facts.index, facts.store, base_side, new, facts.source)
        finally:
            facts.close()


# -- output ------------------------------------------------------------------------------------


def situation_words(subject: Subject) -> list[str]:
    """The Subject in plain words, organizations by their local labels: "the organization" is
    the resource's, "partner p0" one of its partners, "linked account l0" an account linked to it."""

    def where(label: str) -> str:
        if label == HOME:
            return "the organization"
        if label == UNKNOWN_PARTNER:
            return "a partner the user does not belong to"
        if label == OTHER:
            return "the other organization"
        return f"partner {label}" if label.startswith("p") else f"linked account {label}"

    words = []
    for fact in subject.memberships:
        assert isinstance(fact, MembershipFact)
        tag = ", tagged partner employee" if fact.partner_employee else ""
        words.append(f"{fact.role} of {where(fact.organization_id)} ({fact.status}{tag})")
    for fact in subject.connections:
        assert isinstance(fact, ConnectionFact)
        scopes = ", ".join(sorted(fact.granted_scopes)) or "nothing"
        approval = "trusts the partner's delegation" if fact.employee_approval == "partner" else \
            "approves each partner employee"
        words.append(f"the organization is a client of {where(fact.partner_id)}: connection {fact.status}, "
                     f"granted {scopes}, {approval}")
    for fact in subject.assignments:
        assert isinstance(fact, AssignmentFact)
        consent = "approved by the client" if fact.client_approved else "not approved by the client"
        words.append(f"assigned to the organization by {where(fact.partner_id)}, {consent}")
    if not words:
        words.append("no fact about the organization")
    target = subject.target
    if isinstance(target, MemberTarget):
        whose = "the user's own membership" if target.is_actor else "another user's membership"
        if not target.role:
            words.append(f"the target: someone not a member yet, invited as {target.new_role}")
        else:
            tag = ", tagged partner employee" if target.partner_employee else ""
            change = f", to be made {target.new_role}" if target.new_role else ""
            words.append(f"the target: {whose}, {target.role} ({target.status}{tag}){change}")
    elif isinstance(target, InvitationTarget):
        how = "by link" if target.by_link else "by email to the user" if target.sent_to_actor else \
            "by email to someone else"
        words.append(f"the target: a client invitation for the organization, {how}")
    elif isinstance(target, RoleGrantTarget):
        chain = " in ".join(subject.chain) or "a resource"
        if target.is_actor:
            whom = "the user themselves"
        elif not target.grantee_memberships and not target.grantee_assignments:
            whom = "someone with no fact about the organization"
        else:
            facts = [f"{m.role} of {where(m.organization_id)} ({m.status}"
                     f"{', tagged partner employee' if m.partner_employee else ''})"
                     for m in target.grantee_memberships]
            facts += [f"assigned by {where(a.partner_id)}" + ("" if a.client_approved else ", not approved")
                      for a in target.grantee_assignments]
            whom = "someone who is " + "; ".join(facts)
        words.append(f"the target: the role {target.role} on a {chain}, for {whom}")
        if subject.resource_roles:
            held = ", ".join(f"{role} on {subject.chain[position]}" for position, role in subject.resource_roles)
            words.append(f"the user holds: {held}")
    elif isinstance(target, ConnectionFact):
        scopes = ", ".join(sorted(target.granted_scopes)) or "nothing"
        words.append(f"the target: the connection of the organization with {where(target.partner_id)} "
                     f"({target.status}, granted {scopes}, approval by {target.employee_approval})")
    elif isinstance(target, LinkTarget):
        other = where(OTHER) if any(m.organization_id == OTHER for m in subject.memberships) else \
            "an organization the user is not a member of"
        words.append(f"the target: a link of the organization with {other}")
    return words


def as_json(result: Diff, every_triple: bool = False) -> str:
    """The documented shape (docs/policy.md, "Reviewing a policy change")."""
    groups = []
    for number, group in enumerate(result.groups, 1):
        user_id, action, resource = group.example
        entry = {
            "group": number,
            "resource_type": group.resource_type,
            "action": group.action,
            "before": group.before,
            "after": group.after,
            "count": group.count,
            "users": group.users,
            "situation": situation_words(group.subject),
            "example": {"user": user_id, "action": action, "resource": resource},
            "explain": {"base": group.explain_base, "new": group.explain_new},
        }
        if every_triple:
            entry["triples"] = [{"user": u, "action": a, "resource": r} for u, a, r in result.triples(group)]
        groups.append(entry)
    return json.dumps({
        "base": {"source": result.base.source, "policy_version": result.base.policy.version},
        "new": {"source": result.new.source, "policy_version": result.new.policy.version},
        "facts": {"source": result.facts_source, "revision": result.revision},
        "situations": result.subjects,
        "pairs": result.pairs,
        "changed": result.changed,
        "groups": groups,
    }, indent=2) + "\n"


def as_markdown(result: Diff, every_triple: bool = False) -> str:
    lines = [
        f"# Policy diff: {result.changed} decision{'s' if result.changed != 1 else ''} change",
        "",
        f"- base: `{result.base.source}` (policy {result.base.policy.version})",
        f"- new: `{result.new.source}` (policy {result.new.policy.version})",
        f"- facts: {result.facts_source} at revision {result.revision}: {result.pairs} (user, organization) "
        f"pairs with a fact, in {result.subjects} distinct situations, "
        + ("not decided: the policies are the same" if result.identical else
           "each decided once per resource type under both policies"),
        "",
    ]
    if result.identical:
        lines.append("No decision changes: the two policies are the same files.")
        return "\n".join(lines) + "\n"
    if not result.groups:
        lines.append("No decision changes.")
        return "\n".join(lines) + "\n"
    lines += ["| # | action | on | change | decisions | users | example |",
              "|---|---|---|---|---|---|---|"]
    for number, group in enumerate(result.groups, 1):
        user_id, action, resource = group.example
        lines.append(f"| {number} | {group.action} | {group.resource_type} | {group.before} → {group.after} | "
                     f"{group.count} | {group.users} | `{user_id} {action} {resource}` |")
    for number, group in enumerate(result.groups, 1):
        user_id, action, resource = group.example
        lines += ["", f"## {number}. {group.action} on {group.resource_type}: {group.before} → {group.after} "
                      f"({group.count} decision{'s' if group.count != 1 else ''}, {group.users} "
                      f"user{'s' if group.users != 1 else ''})", "",
                  "The situation (the user's facts about the resource's organization):", ""]
        lines += [f"- {words}" for words in situation_words(group.subject)]
        lines += ["", f"Example: user `{user_id}`, `{action}`, `{resource}`.", "",
                  f"Base policy ({result.base.policy.version}):", ""]
        lines += [f"    {reason}" for reason in group.explain_base]
        lines += ["", f"New policy ({result.new.policy.version}):", ""]
        lines += [f"    {reason}" for reason in group.explain_new]
        if every_triple:
            lines += ["", "Every decision of this group:", ""]
            lines += [f"- `{u} {a} {r}`" for u, a, r in result.triples(group)]
    return "\n".join(lines) + "\n"
