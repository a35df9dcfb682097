"""PartnerService: clients, invitation links, scopes, disconnects and partner employees."""

from __future__ import annotations

from mandate.engine.authorizer import Authorizer
from mandate.errors import InvalidArgument
from mandate.partner.service import Partners
from mandate.runtime import convert
from mandate.runtime import validate as v
from mandate.runtime.requests import RequestIds
from mandate.runtime.retries import idempotent
from mandate.store import models
from mandate.v1 import common_pb2, partner_pb2, partner_pb2_grpc

CONNECTION_STATUSES = [s.value for s in models.ConnectionStatus]
APPROVALS = [a.value for a in models.EmployeeApproval]


def pair(request) -> tuple[str, str, str]:
    return (v.identifier("actor_id", request.actor_id), v.identifier("partner_id", request.partner_id),
            v.identifier("client_id", request.client_id))


def customer(request, scopes: tuple[str, ...]) -> tuple[str, str, str, list[str]]:
    """`scopes`: the ones the policy declares a client can grant (UNKNOWN_SCOPE names any other)."""
    return (v.text("customer_name", request.customer_name),
            v.text("customer_number", request.customer_number, required=False, max_length=100),
            v.currency("currency", request.currency),
            v.scopes("requested_scopes", request.requested_scopes, scopes))


class PartnerService(partner_pb2_grpc.PartnerServiceServicer):
    def __init__(self, partners: Partners, authorizer: Authorizer, requests: RequestIds):
        self.partners = partners
        self.authorizer = authorizer  # its policy declares the scopes
        self.requests = requests

    @idempotent(common_pb2.Invitation)
    def InviteClient(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        partner_id = v.identifier("partner_id", request.partner_id)
        email = v.email("email", request.email)
        scopes = self.authorizer.policy.scopes
        return convert.invitation(self.partners.invite_client(actor_id, partner_id, email,
                                                              *customer(request, scopes)))

    @idempotent(common_pb2.Invitation, forget=("token",))
    def CreateInviteLink(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        partner_id = v.identifier("partner_id", request.partner_id)
        created = self.partners.create_invite_link(actor_id, partner_id,
                                                   *customer(request, self.authorizer.policy.scopes))
        return convert.invitation(created.invitation, token=created.token)

    @idempotent(common_pb2.Connection)
    def AcceptClientInvitation(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        if bool(request.invitation_id) == bool(request.token):
            raise InvalidArgument("invitation_id", "give exactly one of invitation_id and token")
        invitation_id = v.optional_identifier("invitation_id", request.invitation_id)
        token = v.text("token", request.token, required=False, max_length=200)
        client_id = v.identifier("client_id", request.client_id)
        # The client grants exactly what it lists (R12); an empty list grants nothing (fail closed).
        granted = v.scopes("granted_scopes", request.granted_scopes, self.authorizer.policy.scopes)
        approval = v.choice("employee_approval", request.employee_approval, APPROVALS,
                            default=models.EmployeeApproval.CLIENT.value)
        ends = v.access_expires_at("access_expires_at", request.access_expires_at)
        return convert.connection(self.partners.accept_client_invitation(
            actor_id, invitation_id, token, client_id, granted, approval, ends))

    def ListClients(self, request, context, permission="list_clients"):
        size = v.page_size("page_size", request.page_size)
        rows = self.partners.list_clients(
            v.identifier("actor_id", request.actor_id), v.identifier("partner_id", request.partner_id),
            v.text("query", request.query, required=False),
            v.optional_choice("status", request.status, CONNECTION_STATUSES),
            size, v.page_token("page_token", request.page_token), permission)
        connections, last = convert.page(rows, size, lambda row: row.client_id, convert.connection)
        return partner_pb2.ListConnectionsResponse(connections=connections, next_page_token=last)

    def ExportClients(self, request, context):
        return self.ListClients(request, context, permission="export_clients")

    def ListPartners(self, request, context):
        size = v.page_size("page_size", request.page_size)
        rows = self.partners.list_partners(
            v.identifier("actor_id", request.actor_id), v.identifier("client_id", request.client_id),
            size, v.page_token("page_token", request.page_token))
        connections, last = convert.page(rows, size, lambda row: row.partner_id, convert.connection)
        return partner_pb2.ListConnectionsResponse(connections=connections, next_page_token=last)

    @idempotent(common_pb2.Connection)
    def UpdateGrantedScopes(self, request, context):
        scopes = v.scopes("granted_scopes", request.granted_scopes, self.authorizer.policy.scopes)
        ends = v.access_expires_at("access_expires_at", request.access_expires_at)
        return convert.connection(self.partners.update_granted_scopes(*pair(request), scopes, ends))

    @idempotent(common_pb2.Connection)
    def RequestDisconnect(self, request, context):
        return convert.connection(self.partners.request_disconnect(*pair(request)))

    @idempotent(common_pb2.Connection)
    def AcceptDisconnect(self, request, context):
        return convert.connection(self.partners.accept_disconnect(*pair(request)))

    @idempotent(common_pb2.Connection)
    def DeclineDisconnect(self, request, context):
        return convert.connection(self.partners.decline_disconnect(*pair(request)))

    @idempotent(common_pb2.Connection)
    def RevokePartner(self, request, context):
        return convert.connection(self.partners.revoke_partner(*pair(request)))

    @idempotent(common_pb2.Assignment)
    def AssignClient(self, request, context):
        ends = v.access_expires_at("access_expires_at", request.access_expires_at)
        return convert.assignment(self.partners.assign_client(*pair(request), user(request, assigning=True), ends))

    @idempotent(common_pb2.Assignment)
    def UnassignClient(self, request, context):
        return convert.assignment(self.partners.unassign_client(*pair(request), user(request)))

    @idempotent(common_pb2.Assignment)
    def ApprovePartnerEmployee(self, request, context):
        actor_id, partner_id, client_id = pair(request)
        return convert.assignment(
            self.partners.approve_partner_employee(actor_id, client_id, partner_id, user(request)))

    @idempotent(common_pb2.Assignment)
    def RevokePartnerEmployee(self, request, context):
        actor_id, partner_id, client_id = pair(request)
        return convert.assignment(
            self.partners.revoke_partner_employee(actor_id, client_id, partner_id, user(request)))


def user(request, assigning: bool = False) -> str:
    """The person of an assignment; only AssignClient takes an access_expires_at."""
    if request.access_expires_at and not assigning:
        raise InvalidArgument("access_expires_at", "only AssignClient takes an access_expires_at")
    return v.identifier("user_id", request.user_id)
