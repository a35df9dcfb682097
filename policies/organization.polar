# The organization: its roles and what each may do there (R2, R4 to R8, R13 to R17).

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

# R13: one user owns several master accounts and links them; they may switch into an account
# they own from another linked account they own, without signing in again.
has_permission(user: User, "switch", org: Organization) if
  has_role(user, "owner", org) and
  linked in org.linked_organizations and
  has_role(user, "owner", linked);
