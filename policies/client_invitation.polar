# A client invitation being accepted: the target of AcceptClientInvitation (R9 to R11).

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
