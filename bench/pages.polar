# The bench's own resource types (bench/dataset.py), served beside the shipped policy: pages nest in
# pages, posts sit on pages, so a post may be four levels deep (page, page, page, post); one post may
# be given an editor. They measure a Check down a chain and ListResources over roles on one resource.

# R2: a page belongs to an organization, or sits in a page; who reads the organization's pages, or
# the page it sits in, reads it.
resource Page {
  permissions = ["read"];
  relations = { organization: Organization, parent: Page };

  "read" if "colleague" on "organization";
  "read" if "read" on "parent";
}

# R2: a top page belongs to the organization it was registered in.
has_relation(org: Organization, "organization", page: Page) if
  org = page.organization;

# R2: a nested page sits in its parent page.
has_relation(parent: Page, "parent", page: Page) if
  parent = page.parent;

# R2: a post sits on a page and is read as its page; an editor given on one post edits it.
resource Post {
  permissions = ["read", "edit"];
  roles = ["editor"];
  relations = { parent: Page };

  "read" if "read" on "parent";
  "edit" if "editor";
}

# R2: a post's parent is its page.
has_relation(page: Page, "parent", post: Post) if
  page = post.parent;

# R2: a role given on one post (GrantResourceRole) is the holder's role on it.
has_role(user: User, role: String, post: Post) if
  grant in user.resource_roles and
  grant.resource = post and
  grant.role = role;
