# Mandate's access policy: who may do what inside an organization, and how a partner's
# people reach a client's projects. The policy is every .polar file of this directory, one per
# resource block (organization.polar, project.polar, member.polar, client_invitation.polar,
# connection.polar, role_grant.polar, organization_link.polar), and this file: the contract, the actor and the helpers
# the blocks share. A new type is a new file here (docs/policy.md). Every rule block names the domain rule it carries
# (docs/rules.md lists them, with where each one lives). Mandate computes facts (memberships,
# connections, assignments); only this policy turns them into access. Every mutation asks
# this policy, about the organization it acts in or about the target it changes (a Member,
# a ClientInvitation, a Connection, a Project being moved).
#
# The facts the policy sees for one decision are the ones between the acting user and
# the resource's organization: the user's memberships there and in the organization's
# partners and linked accounts, the organization's partner connections, and the user's
# assignments to it; for a target, also the target's own facts. Every attribute it may read:
#   User: memberships, assignments, resource_roles
#   Membership: organization_id, role, status ("active" | "paused"), partner_employee
#   Assignment: partner_id, client_approved
#   Organization: id, partner_connections, linked_organizations
#   Connection: partner, client, status, granted_scopes, employee_approval
#   every resource type (Project, and any block with `organization: Organization` or
#     `parent: <a resource type>`): organization (its top ancestor's), parent (none at the top)
#   ResourceRole (an item of user.resource_roles, GrantResourceRole): resource, role; only the
#     roles on the resource asked about and its ancestors
#   Member: organization, role, status, partner_employee, is_actor, new_role
#   ClientInvitation: client, by_link, sent_to_actor
#   OrganizationLink: organization, other (the user's membership there is among their memberships)
#   RoleGrant: resource, role, grantee (a User), is_actor
#
# THE CONTRACT (checked by `mandate policy check`, at server start and at every reload; a policy
# that breaks it is refused with POLICY_CONTRACT file:line). Mandate remembers each answer per
# situation and lists candidates from the facts, which is exact only if the policy:
#   - reads only the attributes above, of the classes above;
#   - uses no negation (no `not`, no `forall`, no `cut`): a fact the policy does not see must
#     never turn into an allow;
#   - names no literal ids: organizations appear under local labels, so the only string
#     literals allowed are roles, statuses, actions, scopes and the other names of this file;
#   - grants nothing without a fact about the actor: a user with no membership is denied every
#     action on every resource and target;
#   - joins one partner path per rule: a partner's membership, connection and assignment, never
#     one partner's with another's (decisions are made partner by partner).

# R23: every check and every mutation is decided here: allowed only when a permission is granted.
allow(actor, action, resource) if
  has_permission(actor, action, resource);

actor User {}

# R2, R3, R6, R7: a user holds a role only through a membership (which takes an invitation or
# creating the organization); a removed member has none, and a paused member holds no role at all.
has_role(user: User, role: String, org: Organization) if
  membership in user.memberships and
  membership.organization_id = org.id and
  membership.status = "active" and
  membership.role = role;
