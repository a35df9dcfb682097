# -- roles on one resource -------------------------------------------------------------------------
# GrantResourceRole and RevokeResourceRole ask about the role being given or taken: its resource,
# the role, and the grantee's facts about the resource's organization (their membership there, or in
# a partner of it the actor belongs to).
resource RoleGrant {
  permissions = ["grant", "revoke"];
}

# R2, R4: the organization's managers give roles on its resources to its members.
has_permission(user: User, "grant", grant: RoleGrant) if
  has_role(user, "legal_representative", grant.resource.organization) and
  membership in grant.grantee.memberships and
  membership.organization_id = grant.resource.organization.id;

# R9, R15, R16: a partner's legal representatives give roles on a connected client's resources to
# their tagged partner employees, for a role that grants something the connection grants.
has_permission(user: User, "grant", grant: RoleGrant) if
  connection in grant.resource.organization.partner_connections and
  has_role(user, "legal_representative", connection.partner) and
  membership in grant.grantee.memberships and
  membership.organization_id = connection.partner.id and
  membership.partner_employee = true and
  project_role_grants(grant.role, action) and
  connection_grants(connection, action);

# R2, R6: the organization's managers take back any role on its resources.
has_permission(user: User, "revoke", grant: RoleGrant) if
  has_role(user, "legal_representative", grant.resource.organization);

# R9, R17: a partner's legal representatives take back the roles of their own people.
has_permission(user: User, "revoke", grant: RoleGrant) if
  connection in grant.resource.organization.partner_connections and
  has_role(user, "legal_representative", connection.partner) and
  membership in grant.grantee.memberships and
  membership.organization_id = connection.partner.id;
