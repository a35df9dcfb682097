# Projects: the resources an organization registers, and how a partner's people reach a
# client's projects (R2, R9, R12, R15 to R18, R20).

resource Project {
  # The scopes a client grants (read ... delete), and moving the project to another organization.
  permissions = ["read", "edit", "publish", "approve", "delete", "move"];
  # Roles given on one project (GrantResourceRole): what each grants is `project_role_grants`.
  roles = ["viewer", "editor"];
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

  # R23: moving a project takes it away from its organization: only who may unregister projects there
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

# R2, R6, R7: a role given on one project grants its actions to a member of the project's
# organization while that membership is active: a paused member's roles give nothing, and a
# removed member's roles end with the membership.
has_permission(user: User, action: String, project: Project) if
  grant in user.resource_roles and
  grant.resource = project and
  project_role_grants(grant.role, action) and
  membership in user.memberships and
  membership.organization_id = project.organization.id and
  membership.status = "active";

# R9, R16, R20: a partner employee given a role on one client project (by the partner's legal
# representatives) acts on it within the scopes the connection grants, while they are an active,
# tagged member of the partner, where the client trusts the partner's delegation. (Where the client
# approves each person, it approves their assignment, which reaches every project within the scopes.)
has_permission(user: User, action: String, project: Project) if
  grant in user.resource_roles and
  grant.resource = project and
  project_role_grants(grant.role, action) and
  connection in project.organization.partner_connections and
  connection.employee_approval = "partner" and
  connection_grants(connection, action) and
  has_role(user, "colleague", connection.partner) and
  is_partner_employee(user, connection.partner);

# R2: a viewer of one project reads it; an editor also edits and publishes it (a colleague's work).
project_role_grants("viewer", "read");
project_role_grants("editor", action: String) if
  action in ["read", "edit", "publish"];
