"""DirectoryService: users, organizations, linked accounts, registered resources."""

from __future__ import annotations

from mandate.directory.service import Directory
from mandate.errors import InvalidArgument
from mandate.runtime import convert
from mandate.runtime import validate as v
from mandate.runtime.requests import RequestIds
from mandate.runtime.retries import idempotent
from mandate.v1 import directory_pb2 as pb
from mandate.v1 import directory_pb2_grpc


class DirectoryService(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(self, directory: Directory, requests: RequestIds):
        self.directory = directory
        self.requests = requests

    @idempotent(pb.User)
    def RegisterUser(self, request, context):
        email = v.email("email", request.email)
        name = v.text("display_name", request.display_name)
        user, revision = self.directory.register_user(email, name)
        return convert.user(user, revision)

    @idempotent(pb.Organization)
    def CreateOrganization(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        name = v.text("name", request.name)
        currency = v.currency("currency", request.currency)
        seat_limit = v.seat_limit("seat_limit", request.seat_limit) if request.HasField("seat_limit") else None
        return convert.organization(self.directory.create_organization(actor_id, name, currency, seat_limit))

    @idempotent(pb.WriteResponse)
    def LinkOrganizations(self, request, context):
        revision = self.directory.link_organizations(
            v.identifier("actor_id", request.actor_id),
            v.identifier("organization_id", request.organization_id),
            v.identifier("other_organization_id", request.other_organization_id),
        )
        return pb.WriteResponse(revision=str(revision))

    @idempotent(pb.WriteResponse)
    def PutResource(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        resource_type, resource_id = registered_resource(request)
        parent = v.object_ref("parent", request.parent, True) if request.HasField("parent") else None
        organization_id = v.optional_identifier("organization_id", request.organization_id)
        revision = self.directory.put_resource(actor_id, resource_type, resource_id, organization_id, parent)
        return pb.WriteResponse(revision=str(revision))

    @idempotent(pb.WriteResponse)
    def DeleteResource(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        resource_type, resource_id = registered_resource(request)
        return pb.WriteResponse(revision=str(self.directory.delete_resource(actor_id, resource_type, resource_id)))

    @idempotent(pb.ResourceRole)
    def GrantResourceRole(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        resource_type, resource_id = registered_resource(request)
        row = self.directory.grant_resource_role(
            actor_id, resource_type, resource_id, v.identifier("user_id", request.user_id),
            v.text("role", request.role, max_length=100), v.access_expires_at("access_expires_at",
                                                                              request.access_expires_at))
        return convert.resource_role(row)

    @idempotent(pb.ResourceRole)
    def RevokeResourceRole(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        resource_type, resource_id = registered_resource(request)
        row = self.directory.revoke_resource_role(actor_id, resource_type, resource_id,
                                                  v.identifier("user_id", request.user_id),
                                                  v.text("role", request.role, max_length=100))
        return convert.resource_role(row)

    def ListResourceRoles(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        resource_type, resource_id = registered_resource(request)
        size = v.page_size("page_size", request.page_size)
        after = v.page_token("page_token", request.page_token)
        rows, last, revision = self.directory.list_resource_roles(actor_id, resource_type, resource_id, size, after)
        return pb.ListResourceRolesResponse(roles=[convert.resource_role(row) for row in rows],
                                            next_page_token=v.encode_page_token(last), revision=str(revision))


def registered_resource(request) -> tuple[str, str]:
    """A resource a caller registers (Organizations are made by CreateOrganization); whether the
    policy declares its type is the directory's to say (UNKNOWN_RESOURCE_TYPE)."""
    resource_type, resource_id = v.object_ref("resource", request.resource, request.HasField("resource"))
    if resource_type == "Organization":
        raise InvalidArgument("resource.type", "organizations are created with CreateOrganization, not registered")
    return resource_type, resource_id
