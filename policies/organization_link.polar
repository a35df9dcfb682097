# Linking two master accounts (LinkOrganizations) asks about the link: both accounts (R13).

resource OrganizationLink {
  permissions = ["create"];
}

# R13 (decided here): only who may link both accounts links them: an owner of both.
has_permission(user: User, "create", link: OrganizationLink) if
  has_permission(user, "link", link.organization) and
  has_permission(user, "link", link.other);
