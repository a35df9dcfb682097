# The partner program: the connection between a partner and a client, the scopes it grants
# and the people of the partner it lets through (R9 to R17, R20).

# R12: the scopes a client can grant a partner, declared once (any other is UNKNOWN_SCOPE): the
# Project actions a partner may be given.
client_scopes(["read", "edit", "publish", "approve", "delete"]);

# R12, R14: a connection grants the scopes the client chose, from acceptance until the client
# accepts a disconnect request or revokes the partner.
connection_grants(connection: Connection, action: String) if
  connection.status in ["active", "disconnect_requested"] and
  client_scopes(scopes) and
  action in scopes and
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

# R10 with R12 (decided here): a client connected automatically as a referral has granted
# nothing yet; its connection starts active with these granted scopes (none) until the client
# grants some (update_granted_scopes), so connection_grants above allows nothing until then.
referral_scopes([]);

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
