"""Explain: a decision in plain words, derived from the policy, never restated in Python.

Every statement comes from asking the policy:
- for an allow, the smallest set of the user's facts that still allows (each fact removed in
  turn, kept out while the policy still allows), and the rules without which it would not
  (each rule deleted in turn, `Policy.rules_behind`), named by the policy's own comments;
- for a deny, each single change of one fact that would make the policy allow (a membership
  that is not paused, a tag, an approval, a granted scope, an active connection, a role), with
  the rules that would then allow it.
The facts are written with the real ids behind the Subject's labels.
"""

from __future__ import annotations

from dataclasses import replace

from mandate import deadlines
from mandate.engine.authorizer import Authorizer
from mandate.engine.facts import HOME, PATH, AssignmentFact, ConnectionFact, MembershipFact, Subject, partner_paths
from mandate.engine.policy import Policy
from mandate.store.models import Role

ROLES = [role.value for role in Role]
# Stands for a partner's id in the changes of a path, written once for all equal paths (ids
# never hold spaces).
ANY_PARTNER = "<any partner>"


def explain(authorizer: Authorizer, actor_type: str, actor_id: str, action: str, resource_type: str,
            resource_id: str, policy: Policy | None = None) -> tuple[bool, list[str]]:
    index, policy = authorizer.index, policy or authorizer.policy
    resource = f"{resource_type} {resource_id}"
    # R24: who or what the service does not know is denied before the policy is asked.
    if actor_type != "User":
        return False, [f"denied: actors are Users, not {actor_type} (R24)"]
    if actor_id not in index.users:
        return False, [f"denied: there is no user {actor_id} (R24: unknown actors are denied)"]
    if not policy.is_resource_type(resource_type):
        return False, [f"denied: the policy knows no resource type {resource_type} (R24)"]
    where = authorizer.where(actor_id, resource_type, resource_id, policy)
    if where is None:
        return False, [f"denied: there is no {resource} (R24: unknown resources are denied)"]
    organization_id = where.organization_id
    known = policy.permissions.get(resource_type, ())
    if action not in known:
        return False, [f"denied: {action!r} is not an action on {resource_type}; "
                       f"the policy declares: {', '.join(known)}"]
    labels: dict[str, str] = {}
    subject = where.subject(index.subject(actor_id, organization_id, labels))
    chain = index.chain(resource_type, resource_id) if where.chain else ()
    words = Words(actor_id, organization_id, labels, chain)
    words.scopes = policy.scopes
    allowed = policy.is_allowed(subject, resource_type, action)
    where = "" if resource_type == "Organization" else f" (in organization {organization_id})"
    reasons = [f"{'allowed' if allowed else 'denied'}: user {actor_id} {action} on {resource}{where}, "
               f"policy {policy.version}"]
    paths = partner_pieces(subject)
    if allowed:
        # Through one path, as the policy decides (the first one that allows on its own).
        piece, piece_words = subject, words
        for label, path in paths or ():
            deadlines.check("the explanation was not finished")
            if policy.is_allowed(path, resource_type, action):
                piece, piece_words = path, words.on_path(label)
                break
        needed = smallest_allowing(policy, piece, resource_type, action)
        reasons += [f"because {piece_words.fact(fact)}" for fact in facts_of(needed)]
        reasons += [f"by the rule {note}" for note in policy.rules_behind(needed, resource_type, action)]
        return True, reasons
    if not subject.memberships:
        reasons.append(f"user {actor_id} has no membership in organization {organization_id}, in any of its "
                       "partners or in any account linked to it")
    changes = list(allowing_changes(policy, subject, paths, action, resource_type, words))
    for text, changed in changes:
        rules = "; ".join(note.short() for note in policy.rules_behind(changed, resource_type, action))
        reasons.append(f"would be allowed if {text}, by the rules {rules}")
    if not changes:
        reasons.append("no change of a single fact would allow it")
    return False, reasons


def partner_pieces(subject: Subject) -> list[tuple[str, Subject]] | None:
    """The subject as one piece per partner path, as the policy decides it (facts.partner_paths):
    (the path's label, the piece with the path relabelled p0); None when it has no paths to cut."""
    if partner_paths(subject) is None:
        return None
    partners = {c.partner_id for c in subject.connections}
    shared = tuple(m for m in subject.memberships if m.organization_id not in partners)
    member = {m.organization_id: m for m in subject.memberships if m.organization_id in partners}
    assigned = {a.partner_id: a for a in subject.assignments}
    pieces = []
    for connection in subject.connections:
        label = connection.partner_id
        m, a = member.get(label), assigned.get(label)
        pieces.append((label, Subject(
            shared + ((MembershipFact(PATH, m.role, m.status, m.partner_employee),) if m else ()),
            (ConnectionFact(PATH, connection.status, connection.granted_scopes, connection.employee_approval),),
            (AssignmentFact(PATH, a.client_approved),) if a else (),
            subject.linked, None, subject.chain, subject.resource_roles)))
    return pieces


def allowing_changes(policy: Policy, subject: Subject, paths, action: str, resource_type: str, words: Words):
    """(what would change, the subject or path with that change) for each single change of a fact
    that makes the policy allow. Path by path, as the policy decides: a change of one partner
    path's fact is decided on that path alone (every other path denies as before), a change of a
    fact every path shares (the membership in the organization or a linked account) on each
    distinct path, so the work grows with the paths, not with their square."""
    if paths is None:
        for text, changed in single_changes(subject, action, words):
            deadlines.check("the explanation was not finished")
            if policy.is_allowed(changed, resource_type, action):
                yield text, changed
        return
    distinct = partner_paths(subject)
    found: dict[str, Subject | None] = {}
    for piece in distinct:
        for text, changed in single_changes(piece, action, words, shared=True):
            deadlines.check("the explanation was not finished")
            if found.get(text) is None:
                found[text] = changed if policy.is_allowed(changed, resource_type, action) else None
    yield from ((text, changed) for text, changed in found.items() if changed is not None)
    # Equal paths have equal changes: worked out once, then written with each partner's id.
    by_piece: dict[Subject, list[tuple[str, Subject]]] = {}
    any_partner = words.on_path(ANY_PARTNER)
    for label, piece in paths:
        deadlines.check("the explanation was not finished")
        changes = by_piece.get(piece)
        if changes is None:
            changes = by_piece[piece] = [
                (text, changed) for text, changed in single_changes(piece, action, any_partner, shared=False)
                if policy.is_allowed(changed, resource_type, action)]
        partner = words.labels[label]
        for text, changed in changes:
            yield text.replace(ANY_PARTNER, partner), changed


def facts_of(subject: Subject) -> list:
    return [*subject.memberships, *subject.connections, *subject.assignments, *subject.linked,
            *subject.resource_roles]


def without(subject: Subject, fact) -> Subject:
    return Subject(
        memberships=tuple(m for m in subject.memberships if m is not fact),
        connections=tuple(c for c in subject.connections if c is not fact),
        assignments=tuple(a for a in subject.assignments if a is not fact),
        linked=tuple(label for label in subject.linked if label is not fact),
        target=subject.target,
        chain=subject.chain,
        resource_roles=tuple(r for r in subject.resource_roles if r is not fact),
    )


def smallest_allowing(policy: Policy, subject: Subject, resource_type: str, action: str) -> Subject:
    """Remove the facts one at a time, keeping each out while the policy still allows."""
    for fact in facts_of(subject):
        smaller = without(subject, fact)
        if policy.is_allowed(smaller, resource_type, action):
            subject = smaller
    return subject


def single_changes(subject: Subject, action: str, words: Words, shared: bool | None = None):
    """(what would change, the Subject with that one change) for every fact of the subject, and
    for the memberships the user does not hold in the resource's organization. `shared`: only the
    changes of facts every partner path shares (True), or only those of the path p0 (False)."""
    for number, membership in enumerate(subject.memberships):
        if shared is not None and shared == (membership.organization_id == PATH):
            continue
        def changed_membership(new: MembershipFact, number=number) -> Subject:
            memberships = list(subject.memberships)
            memberships[number] = new
            return replace(subject, memberships=tuple(memberships))

        where = words.organization(membership.organization_id)
        if membership.status != "active":
            yield (f"the membership of user {words.user} in {where} were active, not {membership.status}",
                   changed_membership(replace(membership, status="active")))
        if not membership.partner_employee:
            yield (f"user {words.user} were tagged as a partner employee of {where}",
                   changed_membership(replace(membership, partner_employee=True)))
        for role in ROLES:
            if role != membership.role:
                yield (f"user {words.user} were {role} of {where}, not {membership.role}",
                       changed_membership(replace(membership, role=role)))
    if shared is False:
        yield from path_changes(subject, action, words)
        return
    if not any(m.organization_id == HOME for m in subject.memberships):
        for role in ROLES:
            yield (f"user {words.user} were an active {role} of {words.organization(HOME)}",
                   replace(subject, memberships=(*subject.memberships, MembershipFact(HOME, role, "active", False))))
    if shared is None:
        yield from path_changes(subject, action, words)


def path_changes(subject: Subject, action: str, words: Words):
    """The single changes of the subject's connections and assignments."""
    for number, connection in enumerate(subject.connections):
        def changed_connection(new: ConnectionFact, number=number) -> Subject:
            connections = list(subject.connections)
            connections[number] = new
            return replace(subject, connections=tuple(connections))

        partner = words.organization(connection.partner_id)
        if connection.status != "active":
            yield (f"the connection of {partner} to {words.organization(HOME)} were active, not {connection.status}",
                   changed_connection(replace(connection, status="active")))
        if action in words.scopes and action not in connection.granted_scopes:
            yield (f"{words.organization(HOME)} granted {action!r} to {partner}",
                   changed_connection(replace(connection, granted_scopes=connection.granted_scopes | {action})))
        if connection.employee_approval != "partner":
            yield (f"{words.organization(HOME)} trusted the delegation of {partner} instead of approving each person",
                   changed_connection(replace(connection, employee_approval="partner")))
        assigned = [a for a in subject.assignments if a.partner_id == connection.partner_id]
        if not assigned:
            for approved in (False, True):
                yield (f"{partner} assigned user {words.user} to {words.organization(HOME)}"
                       + (" and the client approved them" if approved else ""),
                       replace(subject, assignments=(*subject.assignments,
                                                     AssignmentFact(connection.partner_id, approved))))
    for number, assignment in enumerate(subject.assignments):
        if not assignment.client_approved:
            assignments = list(subject.assignments)
            assignments[number] = replace(assignment, client_approved=True)
            yield (f"{words.organization(HOME)} approved user {words.user} (assigned by "
                   f"{words.organization(assignment.partner_id)})", replace(subject, assignments=tuple(assignments)))


class Words:
    """Facts in plain words, with the real ids behind the Subject's labels."""

    def __init__(self, user: str, organization_id: str, labels: dict[str, str], chain=()):
        self.user = user
        self.labels = {HOME: organization_id, **labels}
        self.chain = chain  # the resource's (type, id), its parent's, ...
        self.scopes: tuple[str, ...] = ()  # the scopes a client can grant (the policy's)
        self.path = ""  # the organization behind the label p0 of a piece (partner_pieces)

    def on_path(self, label: str) -> Words:
        """These words for the piece of the partner path `label` (relabelled p0)."""
        words = object.__new__(Words)
        words.__dict__.update(self.__dict__, path=self.labels.get(label, label))
        return words

    def organization(self, label: str) -> str:
        ident = self.path if label == PATH and self.path else self.labels.get(label, label)
        if label == HOME:
            return f"organization {ident}"
        if label.startswith("p"):
            return f"partner {ident}"
        return f"linked account {ident}"

    def fact(self, fact) -> str:
        if isinstance(fact, MembershipFact):
            tag = ", tagged partner employee" if fact.partner_employee else ""
            return (f"user {self.user} is {fact.role} of {self.organization(fact.organization_id)}{tag} "
                    f"(membership {fact.status})")
        if isinstance(fact, ConnectionFact):
            scopes = ", ".join(sorted(fact.granted_scopes)) or "nothing"
            approval = "trusts the partner's delegation" if fact.employee_approval == "partner" else \
                "approves each partner employee"
            return (f"{self.organization(HOME)} is a client of {self.organization(fact.partner_id)}: connection "
                    f"{fact.status}, granted {scopes}, {approval}")
        if isinstance(fact, AssignmentFact):
            consent = "approved by the client" if fact.client_approved else "not approved by the client"
            return (f"{self.organization(fact.partner_id)} assigned user {self.user} to "
                    f"{self.organization(HOME)}, {consent}")
        if isinstance(fact, tuple):  # a role on the resource or one of its ancestors
            position, role = fact
            resource_type, resource_id = self.chain[position]
            via = f" (via parent {resource_type} {resource_id})" if position else ""
            return f"user {self.user} is {role} of {resource_type} {resource_id}{via}"
        return f"{self.organization(HOME)} is linked to {self.organization(fact)}"
