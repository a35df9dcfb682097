# -- targets of mutations ------------------------------------------------------------------------
# A mutation that changes one membership asks about that target (the Member), so that whom an
# action may touch is decided here too (as gitclub's OrgRole resources do).

resource Member {
  permissions = ["invite", "remove", "pause", "resume", "set_role", "tag", "untag", "assign"];
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

# R15 (decided here): whoever may tag partner employees tags colleagues only (a legal
# representative, an owner or a client member is never a partner employee), and takes the tag
# from anyone who carries it.
has_permission(user: User, "tag", member: Member) if
  member.role = "colleague" and
  has_permission(user, "tag_partner_employee", member.organization);
has_permission(user: User, "untag", member: Member) if
  has_permission(user, "tag_partner_employee", member.organization);

# R15 (decided here): whoever may assign the partner's employees to clients assigns only a
# member the partner tagged as a partner employee (the Member is the assignee's membership in
# the partner; "assign" on the Connection decides who assigns to that client).
has_permission(user: User, "assign", member: Member) if
  member.partner_employee = true and
  has_permission(user, "assign_client", member.organization);
