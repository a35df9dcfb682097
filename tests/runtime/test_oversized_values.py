"""Oversized invalid values keep the error contract (api.md): INVALID_ARGUMENT naming the field,
with the usual ErrorInfo, and a message that echoes at most a bounded prefix of the value. An
echoed 20,000-character value used to exceed the transport's trailer limit and come back as
RESOURCE_EXHAUSTED "metadata size exceeds hard limit", with no ErrorInfo."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from mandate.runtime import validate
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2, events_pb2, membership_pb2, partner_pb2

from tests.support import error_info

BIG = "Z" * 20_000
WIDE = "é" * 5_000  # two bytes each in UTF-8, and percent-encoded in the status message
SCOPE = "s" * 5_000
MAX_DETAILS = 600  # characters of the status message: a bounded prefix, never the value


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


@pytest.fixture
def ids(world) -> SimpleNamespace:
    organization = world.organization()
    return SimpleNamespace(owner=world.owner_of(organization), org=organization)


D, M, A, P, E = (lambda c: c.directory), (lambda c: c.membership), (lambda c: c.authorization), \
    (lambda c: c.partner), (lambda c: c.events)


def link(i, **fields):
    fields = {"actor_id": i.owner, "partner_id": i.org, "customer_name": "C", "currency": "EUR", **fields}
    return partner_pb2.CreateInviteLinkRequest(**fields)


def accept(i, **fields):
    fields = {"actor_id": i.owner, "token": "t", "client_id": i.org, **fields}
    return partner_pb2.AcceptClientInvitationRequest(**fields)


def check(**fields):
    fields = {"actor": ref("User", "usr_a"), "action": "read", "resource": ref("Project", "p1"), **fields}
    return authorization_pb2.CheckRequest(**fields)


# (case id, service, method, request(ids), field, reason)
OVERSIZED = [
    ("currency-Z*20000", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency=BIG), "currency", None),
    ("currency-é*5000", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency=WIDE), "currency", None),
    ("link-currency", P, "CreateInviteLink", lambda i: link(i, currency=BIG), "currency", None),
    ("link-scope-5000", P, "CreateInviteLink", lambda i: link(i, requested_scopes=["read", SCOPE]),
     "requested_scopes[1]", "UNKNOWN_SCOPE"),
    ("invite-client-scope-é", P, "InviteClient",
     lambda i: partner_pb2.InviteClientRequest(actor_id=i.owner, partner_id=i.org, email="c@example.com",
                                               customer_name="C", currency="EUR", requested_scopes=[WIDE]),
     "requested_scopes[0]", "UNKNOWN_SCOPE"),
    ("update-scopes-5000", P, "UpdateGrantedScopes",
     lambda i: partner_pb2.UpdateGrantedScopesRequest(actor_id=i.owner, partner_id=i.org, client_id=i.org,
                                                      granted_scopes=[SCOPE]), "granted_scopes[0]", "UNKNOWN_SCOPE"),
    ("accept-scope-5000", P, "AcceptClientInvitation", lambda i: accept(i, granted_scopes=[SCOPE]),
     "granted_scopes[0]", "UNKNOWN_SCOPE"),
    ("accept-token", P, "AcceptClientInvitation", lambda i: accept(i, token=BIG), "token", None),
    ("accept-approval", P, "AcceptClientInvitation", lambda i: accept(i, employee_approval=WIDE),
     "employee_approval", None),
    ("link-customer-name", P, "CreateInviteLink", lambda i: link(i, customer_name=WIDE), "customer_name", None),
    ("link-customer-number", P, "CreateInviteLink", lambda i: link(i, customer_number=BIG), "customer_number",
     None),
    ("list-clients-query", P, "ListClients",
     lambda i: partner_pb2.ListClientsRequest(actor_id=i.owner, partner_id=i.org, query=BIG), "query", None),
    ("register-email-long", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email=BIG + "@example.com", display_name="X"), "email", None),
    ("register-email-é", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email=WIDE, display_name="X"), "email", None),
    ("register-email-bad-characters", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email="".join(map(chr, range(0x100, 0x100 + 240))) + "@x.com",
                                                 display_name="X"), "email", None),
    ("register-name", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email="ok@example.com", display_name=WIDE), "display_name", None),
    ("invite-email", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=i.org, email=WIDE + "@x.com",
                                                  role="colleague"), "email", None),
    ("invite-role", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=i.org, email="a@example.com",
                                                  role=BIG), "role", None),
    ("invite-organization-id", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=BIG, email="a@example.com",
                                                  role="colleague"), "organization_id", None),
    ("list-invitations-status", M, "ListInvitations",
     lambda i: membership_pb2.ListInvitationsRequest(actor_id=i.owner, organization_id=i.org, status=WIDE),
     "status", None),
    ("list-members-page-token", M, "ListMembers",
     lambda i: membership_pb2.ListMembersRequest(actor_id=i.owner, organization_id=i.org, page_token=BIG),
     "page_token", None),
    ("set-role", M, "SetMemberRole",
     lambda i: membership_pb2.SetMemberRoleRequest(actor_id=i.owner, organization_id=i.org, user_id=i.owner,
                                                   role=WIDE), "role", None),
    ("check-actor-id", A, "Check", lambda i: check(actor=ref("User", WIDE)), "actor.id", None),
    ("check-resource-type", A, "Check", lambda i: check(resource=ref(BIG, "p1")), "resource.type", None),
    ("check-action", A, "Check", lambda i: check(action=BIG), "action", None),
    ("check-revision", A, "Check", lambda i: check(at_least_revision="9" * 20_000), "at_least_revision", None),
    ("list-resources-type", A, "ListResources",
     lambda i: authorization_pb2.ListResourcesRequest(actor=ref("User", "usr_a"), action="read",
                                                      resource_type=WIDE), "resource_type", None),
    ("put-resource-id", D, "PutResource",
     lambda i: directory_pb2.PutResourceRequest(actor_id=i.owner, resource=ref("Project", WIDE),
                                                organization_id=i.org), "resource.id", None),
    ("list-events-since", E, "ListEvents", lambda i: events_pb2.ListEventsRequest(since_revision=WIDE),
     "since_revision", None),
    ("list-events-organization", E, "ListEvents", lambda i: events_pb2.ListEventsRequest(organization_id=BIG),
     "organization_id", None),
    ("watch-since", E, "Watch", lambda i: events_pb2.WatchRequest(since_revision=BIG), "since_revision", None),
]


@pytest.mark.parametrize(("service", "method", "build", "field", "reason"),
                         [case[1:] for case in OVERSIZED], ids=[case[0] for case in OVERSIZED])
def test_oversized_invalid_values_keep_the_error_contract(client, ids, world, service, method, build, field,
                                                          reason):
    before = world.app.store.current_revision()
    with pytest.raises(grpc.RpcError) as caught:
        reply = getattr(service(client), method)(build(ids), timeout=30)
        if method == "Watch":
            next(iter(reply))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert info.reason == (reason or "INVALID_ARGUMENT")
    assert info.metadata["field"] == field
    assert f"{field}:" in error.details()
    assert len(error.details()) < MAX_DETAILS, error.details()
    assert world.app.store.current_revision() == before


def test_rejected_values_are_echoed_as_a_bounded_prefix():
    assert validate.echo("EURO") == "'EURO'"
    shown = validate.echo("Z" * 20_000)
    assert shown.startswith("'" + "Z" * validate.ECHO_LIMIT + "'") and "20000 characters" in shown
    assert len(shown) < 100
    with pytest.raises(validate.InvalidArgument) as caught:
        validate.currency("currency", WIDE)
    assert "é" * validate.ECHO_LIMIT in caught.value.message and len(caught.value.message) < 200
