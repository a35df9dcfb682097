"""The names of the gRPC API that client services and outside harnesses are written against.

This is the project's own statement of its public contract: every service, RPC, request field and
response field listed here must exist on a running server, with the type given, as read through
server reflection (the way `grpcurl` or a client generator sees it). Names are only ever added to
this table, never renamed or removed: removing a line is breaking a client. The table follows
`protos/mandate/v1/` as it was released, round by round.

`problems(address)` lists every name the server at that address lacks or types differently.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

TEXT, FLAG, INT32, INT64, MESSAGE = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL,
                                     FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64,
                                     FieldDescriptor.TYPE_MESSAGE)


def many(kind: int) -> tuple[str, int]:
    """A repeated field of that kind."""
    return ("repeated", kind)


PAGING = {"page_size": INT32, "page_token": TEXT}
PAST = {"at_revision": TEXT, "as_of": TEXT}
CHECK = {"actor": MESSAGE, "action": TEXT, "resource": MESSAGE, "at_least_revision": TEXT, **PAST}
WRITE = {"request_id": TEXT}
PAIR = {"actor_id": TEXT, "partner_id": TEXT, "client_id": TEXT, **WRITE}

INVITATION = {"id": TEXT, "kind": TEXT, "organization_id": TEXT, "email": TEXT, "role": TEXT, "status": TEXT,
              "invited_by": TEXT, "customer_name": TEXT, "customer_number": TEXT, "currency": TEXT,
              "requested_scopes": many(TEXT), "token": TEXT, "created_at": TEXT, "revision": TEXT,
              "expires_at": TEXT}
MEMBERSHIP = {"organization_id": TEXT, "user_id": TEXT, "email": TEXT, "role": TEXT, "status": TEXT,
              "partner_employee": FLAG, "revision": TEXT, "access_expires_at": TEXT}
CONNECTION = {"partner_id": TEXT, "client_id": TEXT, "status": TEXT, "customer_name": TEXT,
              "customer_number": TEXT, "currency": TEXT, "requested_scopes": many(TEXT),
              "granted_scopes": many(TEXT), "employee_approval": TEXT, "referral": FLAG, "connected_at": TEXT,
              "revision": TEXT, "access_expires_at": TEXT}
ASSIGNMENT = {"partner_id": TEXT, "client_id": TEXT, "user_id": TEXT, "client_approved": FLAG, "revision": TEXT,
              "access_expires_at": TEXT}
EVENT = {"revision": TEXT, "type": TEXT, "actor_id": TEXT, "attributes": MESSAGE, "occurred_at": TEXT,
         "caller": TEXT, "cause": TEXT}
ACCESS_ENTRY = {"user_id": TEXT, "email": TEXT, "resource": MESSAGE, "actions": many(TEXT), "path": TEXT,
                "granted_at": TEXT, "granted_revision": TEXT, "granted_by": TEXT}
MEMBER = {"actor_id": TEXT, "organization_id": TEXT, "user_id": TEXT, **WRITE}
# third round: roles on one resource
RESOURCE_ROLE = {"resource": MESSAGE, "user_id": TEXT, "role": TEXT, "granted_by": TEXT, "access_expires_at": TEXT,
                 "revision": TEXT}

# service -> RPC -> (request fields, response fields)
CONTRACT: dict[str, dict[str, tuple[dict, dict]]] = {
    "AuthorizationService": {
        "Check": (CHECK, {"allowed": FLAG, "revision": TEXT}),
        "BatchCheck": ({"checks": many(MESSAGE)}, {"results": many(MESSAGE)}),
        "ListActions": ({"actor": MESSAGE, "resource": MESSAGE, **PAST}, {"actions": many(TEXT), "revision": TEXT}),
        "ListResources": ({"actor": MESSAGE, "action": TEXT, "resource_type": TEXT, **PAGING, **PAST},
                          {"resource_ids": many(TEXT), "next_page_token": TEXT, "revision": TEXT}),
        "ListActors": ({"action": TEXT, "resource": MESSAGE, **PAGING, **PAST},
                       {"user_ids": many(TEXT), "next_page_token": TEXT, "revision": TEXT}),
        "Explain": (CHECK, {"allowed": FLAG, "reasons": many(TEXT)}),
        "AccessReview": ({"organization_id": TEXT, **PAST, **PAGING},
                         {"entries": many(MESSAGE), "next_page_token": TEXT, "revision": TEXT}),
    },
    "DirectoryService": {
        "RegisterUser": ({"email": TEXT, "display_name": TEXT, **WRITE},
                         {"id": TEXT, "email": TEXT, "display_name": TEXT}),
        "CreateOrganization": ({"actor_id": TEXT, "name": TEXT, "currency": TEXT, "seat_limit": INT32, **WRITE},
                               {"id": TEXT, "name": TEXT, "currency": TEXT, "seat_limit": INT32, "owner_id": TEXT,
                                "revision": TEXT}),
        "LinkOrganizations": ({"actor_id": TEXT, "organization_id": TEXT, "other_organization_id": TEXT, **WRITE},
                              {"revision": TEXT}),
        "PutResource": ({"actor_id": TEXT, "resource": MESSAGE, "organization_id": TEXT, **WRITE,
                         "parent": MESSAGE},  # third round: `parent`
                        {"revision": TEXT}),
        "DeleteResource": ({"actor_id": TEXT, "resource": MESSAGE, **WRITE}, {"revision": TEXT}),
        # third round: resources the policy declares
        "GrantResourceRole": ({"actor_id": TEXT, "resource": MESSAGE, "user_id": TEXT, "role": TEXT,
                               "access_expires_at": TEXT, **WRITE}, RESOURCE_ROLE),
        "RevokeResourceRole": ({"actor_id": TEXT, "resource": MESSAGE, "user_id": TEXT, "role": TEXT, **WRITE},
                               RESOURCE_ROLE),
        "ListResourceRoles": ({"actor_id": TEXT, "resource": MESSAGE, **PAGING},
                              {"roles": many(MESSAGE), "next_page_token": TEXT, "revision": TEXT}),
    },
    "MembershipService": {
        "InviteMember": ({"actor_id": TEXT, "organization_id": TEXT, "email": TEXT, "role": TEXT,
                          "access_expires_at": TEXT, **WRITE}, INVITATION),
        "CancelInvitation": ({"actor_id": TEXT, "invitation_id": TEXT, **WRITE}, INVITATION),
        "ListInvitations": ({"actor_id": TEXT, "organization_id": TEXT, "query": TEXT, "status": TEXT, **PAGING},
                            {"invitations": many(MESSAGE), "next_page_token": TEXT}),
        "ListMembers": ({"actor_id": TEXT, "organization_id": TEXT, **PAGING},
                        {"members": many(MESSAGE), "next_page_token": TEXT}),
        "RemoveMember": (MEMBER, {"revision": TEXT}),
        "PauseMember": (MEMBER, MEMBERSHIP),
        "ResumeMember": (MEMBER, MEMBERSHIP),
        "SetMemberRole": ({**MEMBER, "role": TEXT, "access_expires_at": TEXT}, MEMBERSHIP),
        "TagPartnerEmployee": ({**MEMBER, "partner_employee": FLAG}, MEMBERSHIP),
    },
    "PartnerService": {
        "InviteClient": ({"actor_id": TEXT, "partner_id": TEXT, "email": TEXT, "customer_name": TEXT,
                          "customer_number": TEXT, "currency": TEXT, "requested_scopes": many(TEXT), **WRITE},
                         INVITATION),
        "CreateInviteLink": ({"actor_id": TEXT, "partner_id": TEXT, "customer_name": TEXT, "customer_number": TEXT,
                              "currency": TEXT, "requested_scopes": many(TEXT), **WRITE}, INVITATION),
        "AcceptClientInvitation": ({"actor_id": TEXT, "invitation_id": TEXT, "token": TEXT, "client_id": TEXT,
                                    "granted_scopes": many(TEXT), "employee_approval": TEXT,
                                    "access_expires_at": TEXT, **WRITE}, CONNECTION),
        "ListClients": ({"actor_id": TEXT, "partner_id": TEXT, "query": TEXT, "status": TEXT, **PAGING},
                        {"connections": many(MESSAGE), "next_page_token": TEXT}),
        "ListPartners": ({"actor_id": TEXT, "client_id": TEXT, **PAGING},
                         {"connections": many(MESSAGE), "next_page_token": TEXT}),
        "UpdateGrantedScopes": ({**PAIR, "granted_scopes": many(TEXT), "access_expires_at": TEXT}, CONNECTION),
        "RequestDisconnect": (PAIR, CONNECTION),
        "AcceptDisconnect": (PAIR, CONNECTION),
        "DeclineDisconnect": (PAIR, CONNECTION),
        "RevokePartner": (PAIR, CONNECTION),
        "AssignClient": ({**PAIR, "user_id": TEXT, "access_expires_at": TEXT}, ASSIGNMENT),
        "UnassignClient": ({**PAIR, "user_id": TEXT}, ASSIGNMENT),
        "ApprovePartnerEmployee": ({**PAIR, "user_id": TEXT}, ASSIGNMENT),
        "RevokePartnerEmployee": ({**PAIR, "user_id": TEXT}, ASSIGNMENT),
    },
    "AdminService": {  # third round: data in and out
        "Import": ({"records": many(MESSAGE)}, {"records": INT64, "revision": TEXT}),
        "Export": (PAST, {"records": many(TEXT), "revision": TEXT}),
        "ErasePerson": ({"user_id": TEXT, **WRITE}, {"revision": TEXT}),
    },
    "EventService": {
        "ListEvents": ({"since_revision": TEXT, "organization_id": TEXT, **PAGING},
                       {"events": many(MESSAGE), "next_page_token": TEXT}),
        "Watch": ({"since_revision": TEXT, "organization_id": TEXT}, EVENT),
    },
}

# (service, RPC, repeated message field of the response) -> the shape of each element
ELEMENTS = {
    ("AuthorizationService", "BatchCheck", "results"): {"allowed": FLAG, "revision": TEXT},
    ("AuthorizationService", "AccessReview", "entries"): ACCESS_ENTRY,
    ("MembershipService", "ListInvitations", "invitations"): INVITATION,
    ("MembershipService", "ListMembers", "members"): MEMBERSHIP,
    ("DirectoryService", "ListResourceRoles", "roles"): RESOURCE_ROLE,
    ("PartnerService", "ListClients", "connections"): CONNECTION,
    ("PartnerService", "ListPartners", "connections"): CONNECTION,
    ("EventService", "ListEvents", "events"): EVENT,
}
SERVER_STREAMS = {("EventService", "Watch"), ("AdminService", "Export")}
CLIENT_STREAMS = {("AdminService", "Import")}


def _field_problems(where: str, message, wanted: dict) -> list[str]:
    found = []
    for name, spec in wanted.items():
        repeated, kind = spec if isinstance(spec, tuple) else (None, spec)
        field = message.fields_by_name.get(name)
        if field is None:
            found.append(f"{where}: no field {name}")
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        is_repeated = (field.is_repeated if hasattr(field, "is_repeated")  # protobuf 6 dropped `label`
                       else field.label == FieldDescriptor.LABEL_REPEATED)
        if (repeated is not None) != (is_repeated and not is_map):
            found.append(f"{where}.{name}: {'should' if repeated else 'should not'} be repeated")
        if field.type != kind:
            found.append(f"{where}.{name}: type {field.type}, the contract says {kind}")
    return found


def problems(address: str) -> tuple[int, list[str]]:
    """(RPCs checked, every difference between the contract and the server at `address`)."""
    with grpc.insecure_channel(address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        checked, found = 0, []
        for service_name, rpcs in CONTRACT.items():
            try:
                service = pool.FindServiceByName(f"mandate.v1.{service_name}")
            except KeyError:
                found.append(f"no service mandate.v1.{service_name}")
                continue
            for rpc, (request, response) in rpcs.items():
                method = service.methods_by_name.get(rpc)
                if method is None:
                    found.append(f"{service_name}: no RPC {rpc}")
                    continue
                checked += 1
                found += _field_problems(f"{service_name}.{rpc} request", method.input_type, request)
                found += _field_problems(f"{service_name}.{rpc} response", method.output_type, response)
                if ((service_name, rpc) in SERVER_STREAMS) != method.server_streaming:
                    found.append(f"{service_name}.{rpc}: server streaming should be "
                                 f"{(service_name, rpc) in SERVER_STREAMS}")
                if ((service_name, rpc) in CLIENT_STREAMS) != method.client_streaming:
                    found.append(f"{service_name}.{rpc}: client streaming should be "
                                 f"{(service_name, rpc) in CLIENT_STREAMS}")
                for (element_service, element_rpc, field_name), shape in ELEMENTS.items():
                    if (element_service, element_rpc) == (service_name, rpc):
                        element = method.output_type.fields_by_name[field_name].message_type
                        found += _field_problems(f"{service_name}.{rpc} {field_name}[]", element, shape)
        return checked, found
