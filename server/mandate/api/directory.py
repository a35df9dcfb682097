"""DirectoryService: users, organizations, linked accounts, registered resources."""

from __future__ import annotations

from mandate.api import convert
from mandate.api import validate as v
from mandate.api.retries import idempotent
from mandate.app import App
from mandate.errors import InvalidArgument
from mandate.facts import RESOURCE_TYPES
from mandate.v1 import directory_pb2 as pb
from mandate.v1 import directory_pb2_grpc

# Types a caller registers with PutResource; Organizations are made by CreateOrganization.
REGISTERED_TYPES = [t for t in RESOURCE_TYPES if t != "Organization"]


class DirectoryService(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(self, app: App):
        self.directory = app.directory
        self.requests = app.requests

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
        organization_id = v.identifier("organization_id", request.organization_id)
        revision = self.directory.put_resource(actor_id, resource_type, resource_id, organization_id)
        return pb.WriteResponse(revision=str(revision))

    @idempotent(pb.WriteResponse)
    def DeleteResource(self, request, context):
        actor_id = v.identifier("actor_id", request.actor_id)
        resource_type, resource_id = registered_resource(request)
        return pb.WriteResponse(revision=str(self.directory.delete_resource(actor_id, resource_type, resource_id)))


def registered_resource(request) -> tuple[str, str]:
    resource_type, resource_id = v.object_ref("resource", request.resource, request.HasField("resource"))
    if resource_type not in REGISTERED_TYPES:
        raise InvalidArgument("resource.type", f"must be one of: {', '.join(REGISTERED_TYPES)}")
    return resource_type, resource_id
