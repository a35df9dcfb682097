# Mandate's access policy: who may do what inside an organization, and how a partner's
# people reach a client's projects. Every rule block names the domain rule it carries
# (docs/rules.md lists them, with where each one lives). Mandate computes facts (memberships,
# connections, assignments); only this policy turns them into access. Every mutation asks
# this policy, about the organization it acts in or about the target it changes (a Member,
# a ClientInvitation, a Connection, a Project being moved).
#
# The facts the policy sees for one decision are the ones between the acting user and
# the resource's organization: the user's memberships there and in the organization's
# partners and linked accounts, the organization's partner connections, and the user's
# assignments to it; for a target, also the target's own facts. Every attribute it may read:
#   User: memberships, assignments
#   Membership: organization_id, role, status ("active" | "paused"), partner_employee
#   Assignment: partner_id, client_approved
#   Organization: id, partner_connections, linked_organizations
#   Connection: partner, client, status, granted_scopes, employee_approval
#   Project: organization
#   Member: organization, role, status, partner_employee, is_actor, new_role
#   ClientInvitation: client, by_link, sent_to_actor
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
#     action on every resource and target.

# R23: every check and every mutation is decided here: allowed only when a permission is granted.
allow(actor, action, resource) if
  has_permission(actor, action, resource);

actor User {}

resource Organization {
  roles = ["owner", "legal_representative", "colleague", "client"];
  permissions = [
    # R2: seeing the organization and its people
    "view", "list_members",
    # R4 to R7, R15: managing people
    "invite_member", "cancel_invitation", "list_invitations", "remove_member",
    "pause_member", "resume_member", "set_member_role", "tag_partner_employee",
    # registering the resources (projects) that live in the organization
    "put_resource", "delete_resource",
    # R13: linked master accounts
    "link", "switch",
    # R8, R11, R14, R16, R21: the partner's side of the partner program
    "add_client", "list_clients", "export_clients", "assign_client", "request_disconnect",
    # R9, R12, R14, R16, R17: the client's side of the partner program
    "accept_client_invitation", "list_partners", "update_granted_scopes",
    "respond_disconnect", "revoke_partner", "approve_partner_employee"
  ];

  # R8: the default policy makes every owner a legal representative.
  "legal_representative" if "owner";
  # R2: owners and legal representatives may do everything a colleague may.
  "colleague" if "legal_representative";

  # R2: every member sees the organization; colleagues also see who belongs to it.
  "view" if "client";
  "view" if "colleague";
  "list_members" if "colleague";

  # R2, R4, R6, R7, R15: owners and legal representatives manage people; colleagues do not.
  "invite_member" if "legal_representative";
  "cancel_invitation" if "legal_representative";
  "list_invitations" if "legal_representative";
  "remove_member" if "legal_representative";
  "pause_member" if "legal_representative";
  "resume_member" if "legal_representative";
  "set_member_role" if "legal_representative";
  "tag_partner_employee" if "legal_representative";

  # R2: colleagues work on projects, so they register them; removing one is for the managers.
  "put_resource" if "colleague";
  "delete_resource" if "legal_representative";

  # R13: only an owner links master accounts.
  "link" if "owner";

  # R8, R11, R14, R16, R21: only legal representatives add and manage clients.
  "add_client" if "legal_representative";
  "list_clients" if "legal_representative";
  "export_clients" if "legal_representative";
  "assign_client" if "legal_representative";
  "request_disconnect" if "legal_representative";

  # R9, R12, R14, R16, R17: the client, who owns its data, decides about its partners.
  "accept_client_invitation" if "legal_representative";
  "list_partners" if "legal_representative";
  "update_granted_scopes" if "legal_representative";
  "respond_disconnect" if "legal_representative";
  "revoke_partner" if "legal_representative";
  "approve_partner_employee" if "legal_representative";
}

# R2, R3, R6, R7: a user holds a role only through a membership (which takes an invitation or
# creating the organization); a removed member has none, and a paused member holds no role at all.
has_role(user: User, role: String, org: Organization) if
  membership in user.memberships and
  membership.organization_id = org.id and
  membership.status = "active" and
  membership.role = role;

# R13: one user owns several master accounts and links them; they may switch into an account
# they own from another linked account they own, without signing in again.
has_permission(user: User, "switch", org: Organization) if
  has_role(user, "owner", org) and
  linked in org.linked_organizations and
  has_role(user, "owner", linked);

resource Project {
  # The scopes a client grants (read ... delete), and moving the project to another organization.
  permissions = ["read", "edit", "publish", "approve", "delete", "move"];
  relations = { organization: Organization };

  # R2: a client member sees the work and approves the content plan, nothing more.
  "read" if "client" on "organization";
  "approve" if "client" on "organization";

  # R2: colleagues work on the organization's projects: read, edit, publish.
  "read" if "colleague" on "organization";
  "edit" if "colleague" on "organization";
  "publish" if "colleague" on "organization";

  # R2: owners and legal representatives may do everything.
  "approve" if "legal_representative" on "organization";
  "delete" if "legal_representative" on "organization";

  # Moving a project takes it away from its organization: only who may unregister projects there
  # may move one out (registering it in the new organization needs "put_resource" there).
  "move" if "delete_resource" on "organization";
}

# R2: a project belongs to the organization that registered it.
has_relation(org: Organization, "organization", project: Project) if
  org = project.organization;

# R9, R12, R14, R20: the owners and legal representatives of a partner reach every connected
# client's projects, within the scopes the client granted.
has_permission(user: User, action: String, project: Project) if
  connection in project.organization.partner_connections and
  connection_grants(connection, action) and
  has_role(user, "legal_representative", connection.partner);

# R15 to R18, R20: any other partner person reaches a client's projects only while all of this
# holds: the connection grants the action, they are an active member of the partner tagged as a
# partner employee, the partner assigned them to this client, and the client approved them (or
# chose to trust the partner's own delegation when it accepted).
has_permission(user: User, action: String, project: Project) if
  connection in project.organization.partner_connections and
  connection_grants(connection, action) and
  has_role(user, "colleague", connection.partner) and
  is_partner_employee(user, connection.partner) and
  assignment in user.assignments and
  assignment.partner_id = connection.partner.id and
  client_consents(connection, assignment);

# R12, R14: a connection grants the scopes the client chose, from acceptance until the client
# accepts a disconnect request or revokes the partner.
connection_grants(connection: Connection, action: String) if
  connection.status in ["active", "disconnect_requested"] and
  action in connection.granted_scopes;

# R15: the partner tags the users it may assign to clients.
is_partner_employee(user: User, partner: Organization) if
  membership in user.memberships and
  membership.organization_id = partner.id and
  membership.partner_employee = true;

# R16, R17: the client approved this person, or trusts the partner's delegation.
client_consents(connection: Connection, _assignment: Assignment) if
  connection.employee_approval = "partner";
client_consents(_connection: Connection, assignment: Assignment) if
  assignment.client_approved = true;

# -- targets of mutations ------------------------------------------------------------------------
# A mutation that changes one membership, invitation or connection asks about that target, so
# that whom an action may touch is decided here too (as gitclub's OrgRole resources do).

resource Member {
  permissions = ["invite", "remove", "pause", "resume", "set_role"];
}

# R4, R2: whoever may invite members invites anyone as legal representative, colleague or
# client; only an owner invites a new owner.
has_permission(user: User, "invite", member: Member) if
  member.new_role in ["legal_representative", "colleague", "client"] and
  has_permission(user, "invite_member", member.organization);
has_permission(user: User, "invite", member: Member) if
  member.new_role = "owner" and
  has_role(user, "owner", member.organization);

# R6: whoever may remove members removes anyone but an owner; only an owner removes an owner.
# (That the last owner stays is a rule of the data, not of who acts: the membership service.)
has_permission(user: User, "remove", member: Member) if
  member.role in ["legal_representative", "colleague", "client"] and
  has_permission(user, "remove_member", member.organization);
has_permission(user: User, "remove", member: Member) if
  member.role = "owner" and
  has_role(user, "owner", member.organization);

# R7 (decided here): owners and legal representatives pause colleagues and client members.
# Nobody pauses an owner, a legal representative, or themself.
has_permission(user: User, "pause", member: Member) if
  member.role in ["colleague", "client"] and
  member.is_actor = false and
  has_permission(user, "pause_member", member.organization);

# R7: the same people resume colleagues and client members; a member paused as a colleague and
# made owner or legal representative meanwhile is resumed by an owner.
has_permission(user: User, "resume", member: Member) if
  member.role in ["colleague", "client"] and
  member.is_actor = false and
  has_permission(user, "resume_member", member.organization);
has_permission(user: User, "resume", member: Member) if
  member.role in ["owner", "legal_representative"] and
  has_role(user, "owner", member.organization);

# R2: whoever may set roles moves members among legal representative, colleague and client;
# making or unmaking an owner is an owner's decision.
has_permission(user: User, "set_role", member: Member) if
  member.role in ["legal_representative", "colleague", "client"] and
  member.new_role in ["legal_representative", "colleague", "client"] and
  has_permission(user, "set_member_role", member.organization);
has_permission(user: User, "set_role", member: Member) if
  member.new_role = "owner" and
  has_role(user, "owner", member.organization);
has_permission(user: User, "set_role", member: Member) if
  member.role = "owner" and
  has_role(user, "owner", member.organization);

resource ClientInvitation {
  permissions = ["accept"];
}

# R9, R10: an invitation sent by email is accepted only by its addressee, for an organization
# where they may accept client invitations.
has_permission(user: User, "accept", invitation: ClientInvitation) if
  invitation.sent_to_actor = true and
  has_permission(user, "accept_client_invitation", invitation.client);
# R11: an individual link is accepted by whoever holds it and may accept client invitations for
# their organization.
has_permission(user: User, "accept", invitation: ClientInvitation) if
  invitation.by_link = true and
  has_permission(user, "accept_client_invitation", invitation.client);

# R10 with R12 (decided here): a client connected automatically as a referral has granted
# nothing yet; its connection is active with no granted scopes until the client grants them
# (update_granted_scopes), so connection_grants above allows nothing until then.

# R12, R14, R16, R17: which side acts on a connection. The partner (its legal representatives)
# asks to end it and assigns its employees; the client (its legal representatives), who owns
# its data, grants scopes, answers a disconnect request, revokes the partner and approves or
# withdraws the partner's employees.
resource Connection {
  permissions = ["update_granted_scopes", "request_disconnect", "accept_disconnect", "decline_disconnect",
                 "revoke", "assign", "unassign", "approve_employee", "revoke_employee"];
  relations = { partner: Organization, client: Organization };

  # R14: the partner asks to end the relationship; it cannot end it alone.
  "request_disconnect" if "request_disconnect" on "partner";
  # R15, R17: the partner assigns its tagged employees to this client, and withdraws them.
  "assign" if "assign_client" on "partner";
  "unassign" if "assign_client" on "partner";

  # R12: the client changes the scopes it granted, at any time.
  "update_granted_scopes" if "update_granted_scopes" on "client";
  # R14: the client answers the partner's request to disconnect, accepting or declining it.
  "accept_disconnect" if "respond_disconnect" on "client";
  "decline_disconnect" if "respond_disconnect" on "client";
  # R14: the client, who owns its data, revokes the partner at once.
  "revoke" if "revoke_partner" on "client";
  # R16, R17: the client approves a partner's employee, and withdraws its approval.
  "approve_employee" if "approve_partner_employee" on "client";
  "revoke_employee" if "approve_partner_employee" on "client";
}

# R12, R14: a connection joins a partner and a client.
has_relation(partner: Organization, "partner", connection: Connection) if
  partner = connection.partner;
has_relation(client: Organization, "client", connection: Connection) if
  client = connection.client;
