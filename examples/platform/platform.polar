# A platform's own resource types, declared beside Mandate's shipped policy: copy policies/, add this
# file, serve the copy (docs/policy.md, "Adding a resource type"). Pages hold posts; one post may be
# given an editor; invoices belong to the organization. No Python changes for any of it.

# R2: a page belongs to an organization; its members read it and its colleagues edit it.
resource Page {
  permissions = ["read", "edit"];
  relations = { organization: Organization };

  "read" if "client" on "organization";
  "read" if "colleague" on "organization";
  "edit" if "colleague" on "organization";
}

# R2: a top-level page belongs to the organization it was registered in.
has_relation(org: Organization, "organization", page: Page) if
  org = page.organization;

# R2: a post lives on a page: who reads or edits the page reads or edits its posts; an editor given
# on one post (GrantResourceRole) edits that post (they read it through its page, as every member).
resource Post {
  permissions = ["read", "edit"];
  roles = ["editor"];
  relations = { parent: Page };

  "read" if "read" on "parent";
  "edit" if "edit" on "parent";
  "edit" if "editor";
}

# R2: a post's parent is its page.
has_relation(page: Page, "parent", post: Post) if
  page = post.parent;

# R6, R7: a role on one post counts while its holder is an active member of the post's
# organization: paused, it gives nothing; removed, it ended with the membership.
has_role(user: User, role: String, post: Post) if
  grant in user.resource_roles and
  grant.resource = post and
  grant.role = role and
  membership in user.memberships and
  membership.organization_id = post.organization.id and
  membership.status = "active";

# R2: colleagues read the organization's invoices; only an owner pays them.
resource Invoice {
  permissions = ["read", "pay"];
  relations = { organization: Organization };

  "read" if "colleague" on "organization";
  "pay" if "owner" on "organization";
}

# R2: an invoice belongs to the organization it was registered in.
has_relation(org: Organization, "organization", invoice: Invoice) if
  org = invoice.organization;
