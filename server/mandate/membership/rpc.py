"""MembershipService: invitations and members of an organization."""

from __future__ import annotations

from mandate.membership.service import Memberships
from mandate.runtime import callers, convert
from mandate.runtime import validate as v
from mandate.runtime.requests import RequestIds
from mandate.runtime.retries import idempotent
from mandate.store import models
from mandate.v1 import common_pb2, directory_pb2, membership_pb2, membership_pb2_grpc

INVITATION_STATUSES = [s.value for s in models.InvitationStatus]


class MembershipService(membership_pb2_grpc.MembershipServiceServicer):
    def __init__(self, memberships: Memberships, requests: RequestIds):
        self.memberships = memberships
        self.requests = requests

    @idempotent(common_pb2.Invitation)
    def InviteMember(self, request, context):
        invitation = self.memberships.invite_member(
            v.identifier("actor_id", request.actor_id),
            v.identifier("organization_id", request.organization_id),
            v.email("email", request.email),
            v.member_role("role", request.role),
            v.access_expires_at("access_expires_at", request.access_expires_at),
        )
        return convert.invitation(invitation)

    @idempotent(common_pb2.Invitation)
    def CancelInvitation(self, request, context):
        return convert.invitation(self.memberships.cancel_invitation(
            v.identifier("actor_id", request.actor_id), v.identifier("invitation_id", request.invitation_id)))

    def ListInvitations(self, request, context):
        size = v.page_size("page_size", request.page_size)
        rows = self.memberships.list_invitations(
            v.identifier("actor_id", request.actor_id),
            v.identifier("organization_id", request.organization_id),
            v.text("query", request.query, required=False),
            v.optional_choice("status", request.status, INVITATION_STATUSES),
            size, v.page_token("page_token", request.page_token), by_email=not callers.current_read_only(),
        )
        invitations, last = convert.page(rows, size, lambda row: row.id, convert.invitation)
        return membership_pb2.ListInvitationsResponse(invitations=invitations, next_page_token=last)

    def ListMembers(self, request, context):
        size = v.page_size("page_size", request.page_size)
        members = self.memberships.list_members(
            v.identifier("actor_id", request.actor_id),
            v.identifier("organization_id", request.organization_id),
            size, v.page_token("page_token", request.page_token),
        )
        members, last = convert.page(members, size, lambda m: m.membership.user_id, convert.membership)
        return membership_pb2.ListMembersResponse(members=members, next_page_token=last)

    @idempotent(directory_pb2.WriteResponse)
    def RemoveMember(self, request, context):
        revision = self.memberships.remove_member(*member_fields(request))
        return directory_pb2.WriteResponse(revision=str(revision))

    @idempotent(common_pb2.Membership)
    def PauseMember(self, request, context):
        return convert.membership(self.memberships.pause_member(*member_fields(request)))

    @idempotent(common_pb2.Membership)
    def ResumeMember(self, request, context):
        return convert.membership(self.memberships.resume_member(*member_fields(request)))

    @idempotent(common_pb2.Membership)
    def SetMemberRole(self, request, context):
        role = v.member_role("role", request.role)
        ends = v.access_expires_at("access_expires_at", request.access_expires_at)
        return convert.membership(self.memberships.set_member_role(*member_fields(request), role, ends))

    @idempotent(common_pb2.Membership)
    def TagPartnerEmployee(self, request, context):
        return convert.membership(
            self.memberships.tag_partner_employee(*member_fields(request), request.partner_employee))


def member_fields(request) -> tuple[str, str, str]:
    return (v.identifier("actor_id", request.actor_id), v.identifier("organization_id", request.organization_id),
            v.identifier("user_id", request.user_id))
