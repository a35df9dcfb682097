"""Explain: a decision in plain words, naming the rule and the grant behind it.

The policy decides which facts allow the action: each way the user is connected to the
resource's organization (their own membership, each partner, each linked account) is put
to the policy alone. The words then describe the facts of the ways that allow it, or, on a
deny, what each way lacks.
"""

from __future__ import annotations

from mandate.domain.authorization import Authorizer
from mandate.facts import HOME, RESOURCE_TYPES, Subject
from mandate.policy import Policy


def explain(authorizer: Authorizer, actor_type: str, actor_id: str, action: str, resource_type: str,
            resource_id: str, policy: Policy | None = None) -> tuple[bool, list[str]]:
    index, policy = authorizer.index, policy or authorizer.policy
    resource = f"{resource_type} {resource_id}"
    if actor_type != "User":
        return False, [f"denied: actors are Users, not {actor_type} (R24)"]
    if actor_id not in index.users:
        return False, [f"denied: there is no user {actor_id} (R24: unknown actors are denied)"]
    if resource_type not in RESOURCE_TYPES:
        return False, [f"denied: the policy knows no resource type {resource_type} (R24)"]
    organization_id = index.organization_of(resource_type, resource_id)
    if organization_id is None:
        return False, [f"denied: there is no {resource} (R24: unknown resources are denied)"]
    labels: dict[str, str] = {}
    subject = index.subject(actor_id, organization_id, labels)
    allowed = policy.is_allowed(subject, resource_type, action)
    where = "" if resource_type == "Organization" else f" (in organization {organization_id})"
    known = policy.permissions.get(resource_type, ())
    if action not in known:
        return False, [f"denied: {action!r} is not an action on {resource_type}; "
                       f"the policy declares: {', '.join(known)}"]

    reasons: list[str] = []
    for way in _ways(subject):
        alone = policy.is_allowed(way, resource_type, action)
        words = _describe(way, labels, action, organization_id)
        if allowed and alone:
            reasons.append(f"granted through: {words}")
        elif not allowed:
            reasons.append(f"no access through: {words}")
    if not subject.memberships:
        reasons.append(f"user {actor_id} has no membership in organization {organization_id}, in any of its "
                       "partners or in any account linked to it (R3)")
    if allowed and not reasons:
        reasons.append("allowed by the facts together: " + "; ".join(_describe(w, labels, action, organization_id)
                                                                    for w in _ways(subject)))
    verdict = "allowed" if allowed else "denied"
    return allowed, [f"{verdict}: user {actor_id} {action} on {resource}{where}, policy {policy.version}"] + reasons


def _ways(subject: Subject) -> list[Subject]:
    """The subject split into the separate ways the user is connected to the organization."""
    ways = []
    home = [m for m in subject.memberships if m.organization_id == HOME]
    if home:
        ways.append(Subject(memberships=tuple(home)))
    for connection in subject.connections:
        label = connection.partner_id
        ways.append(Subject(
            memberships=tuple(m for m in subject.memberships if m.organization_id == label),
            connections=(connection,),
            assignments=tuple(a for a in subject.assignments if a.partner_id == label),
        ))
    for label in subject.linked:
        ways.append(Subject(memberships=tuple(m for m in subject.memberships if m.organization_id == label),
                            linked=(label,)))
    return ways


def _describe(way: Subject, labels: dict[str, str], action: str, organization_id: str) -> str:
    membership = way.memberships[0]
    org = labels.get(membership.organization_id, membership.organization_id)
    state = "paused (R7: a paused member holds no role and is denied everything)" \
        if membership.status == "paused" else "active"
    role = membership.role + (", tagged partner employee" if membership.partner_employee else "")
    if way.connections:
        connection = way.connections[0]
        scopes = ", ".join(sorted(connection.granted_scopes)) or "nothing"
        parts = [f"{role} of partner {org} (membership {state})",
                 f"connection to client {organization_id} is {connection.status}"
                 + (" (R14: ended)" if connection.status == "disconnected" else ""),
                 f"the client granted: {scopes}"
                 + ("" if action in connection.granted_scopes else f" (R12: {action!r} not granted)")]
        if membership.role not in ("owner", "legal_representative"):
            if not membership.partner_employee:
                parts.append("not tagged as a partner employee (R15)")
            if not way.assignments:
                parts.append("not assigned to this client by the partner (R16)")
            elif connection.employee_approval == "partner":
                parts.append("assigned; the client trusts the partner's delegation (R16)")
            elif way.assignments[0].client_approved:
                parts.append("assigned and approved by the client (R16)")
            else:
                parts.append("assigned, but the client has not approved them (R16)")
        else:
            parts.append("legal representatives and owners reach every connected client (R20)")
        return "; ".join(parts)
    if way.linked:
        return f"{role} of linked account {org} (membership {state}) (R13)"
    return f"{role} of organization {org} (membership {state}) (R2)"
