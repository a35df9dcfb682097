"""Error conventions of the gRPC contract (api.md), table-driven against a real server:
INVALID_ARGUMENT naming the field, NOT_FOUND, UNAUTHENTICATED (with health and reflection open),
INTERNAL without internals, and the contract checker run against the live server."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from mandate.v1 import (
    authorization_pb2,
    authorization_pb2_grpc,
    common_pb2,
    directory_pb2,
    events_pb2,
    events_pb2_grpc,
    membership_pb2,
    partner_pb2,
)

from tests.conftest import TOKEN
from tests.support import error_info

ROOT = Path(__file__).resolve().parents[2]


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)




def failure(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call(request)
        if not hasattr(result, "SerializeToString"):  # a stream: errors come with the first read
            next(iter(result))
    return caught.value


@pytest.fixture
def ids(world) -> SimpleNamespace:
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    project = world.project(organization)
    pending = world.app.memberships.invite_member(owner, organization, "pending@example.com", "colleague")
    return SimpleNamespace(owner=owner, org=organization, colleague=colleague, project=project,
                           invitation=pending.id, stranger=world.user("stranger"))


def check_request(**overrides) -> authorization_pb2.CheckRequest:
    fields = dict(actor=ref("User", "usr_a"), action="read", resource=ref("Project", "p1"))
    fields.update(overrides)
    return authorization_pb2.CheckRequest(**{k: v for k, v in fields.items() if v is not None})


M, D, A, P, E = (lambda c: c.membership), (lambda c: c.directory), (lambda c: c.authorization), \
    (lambda c: c.partner), (lambda c: c.events)

# (case id, service, method, request(ids), field named in the message, reason)
INVALID = [
    ("register-bad-email", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email="not-an-email", display_name="X"), "email", None),
    ("register-empty-email", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email="", display_name="X"), "email", None),
    ("register-empty-name", D, "RegisterUser",
     lambda i: directory_pb2.RegisterUserRequest(email="ok@example.com", display_name="  "), "display_name", None),
    ("create-org-currency-EURO", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency="EURO"), "currency", None),
    ("create-org-currency-not-iso", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency="QQQ"), "currency", None),
    ("create-org-currency-lower-case", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency="eur"), "currency", None),
    ("create-org-currency-empty", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency=""), "currency", None),
    ("create-org-negative-seats", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="A", currency="EUR", seat_limit=-1),
     "seat_limit", None),
    ("create-org-empty-actor", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id="", name="A", currency="EUR"), "actor_id", None),
    ("create-org-empty-name", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id=i.owner, name="", currency="EUR"), "name", None),
    ("link-same-org", D, "LinkOrganizations",
     lambda i: directory_pb2.LinkOrganizationsRequest(actor_id=i.owner, organization_id=i.org,
                                                      other_organization_id=i.org), "other_organization_id", None),
    ("put-resource-missing-ref", D, "PutResource",
     lambda i: directory_pb2.PutResourceRequest(actor_id=i.owner, organization_id=i.org), "resource", None),
    ("put-resource-organization-type", D, "PutResource",
     lambda i: directory_pb2.PutResourceRequest(actor_id=i.owner, resource=ref("Organization", "x"),
                                                organization_id=i.org), "resource.type", None),
    ("put-resource-empty-id", D, "PutResource",
     lambda i: directory_pb2.PutResourceRequest(actor_id=i.owner, resource=ref("Project", ""),
                                                organization_id=i.org), "resource.id", None),
    ("delete-resource-missing-ref", D, "DeleteResource",
     lambda i: directory_pb2.DeleteResourceRequest(actor_id=i.owner), "resource", None),
    ("invite-bad-email", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=i.org, email="a@@b",
                                                  role="colleague"), "email", None),
    ("invite-bad-role", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=i.org, email="a@example.com",
                                                  role="admin"), "role", None),
    ("invite-empty-role", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=i.org, email="a@example.com"),
     "role", None),
    ("invite-empty-org", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, email="a@example.com", role="colleague"),
     "organization_id", None),
    ("invite-actor-with-space", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id="usr with space", organization_id=i.org,
                                                  email="a@example.com", role="colleague"), "actor_id", None),
    ("cancel-empty-id", M, "CancelInvitation",
     lambda i: membership_pb2.CancelInvitationRequest(actor_id=i.owner), "invitation_id", None),
    ("list-invitations-bad-status", M, "ListInvitations",
     lambda i: membership_pb2.ListInvitationsRequest(actor_id=i.owner, organization_id=i.org, status="open"),
     "status", None),
    ("list-invitations-page-size-5000", M, "ListInvitations",
     lambda i: membership_pb2.ListInvitationsRequest(actor_id=i.owner, organization_id=i.org, page_size=5000),
     "page_size", None),
    ("list-members-page-size-5000", M, "ListMembers",
     lambda i: membership_pb2.ListMembersRequest(actor_id=i.owner, organization_id=i.org, page_size=5000),
     "page_size", None),
    ("list-members-negative-page-size", M, "ListMembers",
     lambda i: membership_pb2.ListMembersRequest(actor_id=i.owner, organization_id=i.org, page_size=-1),
     "page_size", None),
    ("list-members-garbage-token", M, "ListMembers",
     lambda i: membership_pb2.ListMembersRequest(actor_id=i.owner, organization_id=i.org, page_token="garbage!!"),
     "page_token", None),
    ("remove-empty-user", M, "RemoveMember",
     lambda i: membership_pb2.RemoveMemberRequest(actor_id=i.owner, organization_id=i.org), "user_id", None),
    ("pause-empty-actor", M, "PauseMember",
     lambda i: membership_pb2.MemberRequest(organization_id=i.org, user_id=i.colleague), "actor_id", None),
    ("set-role-bad-role", M, "SetMemberRole",
     lambda i: membership_pb2.SetMemberRoleRequest(actor_id=i.owner, organization_id=i.org, user_id=i.colleague,
                                                   role="boss"), "role", None),
    ("tag-empty-org", M, "TagPartnerEmployee",
     lambda i: membership_pb2.TagPartnerEmployeeRequest(actor_id=i.owner, user_id=i.colleague,
                                                        partner_employee=True), "organization_id", None),
    ("check-missing-actor", A, "Check", lambda i: check_request(actor=None), "actor", None),
    ("check-missing-resource", A, "Check", lambda i: check_request(resource=None), "resource", None),
    ("check-empty-action", A, "Check", lambda i: check_request(action=""), "action", None),
    ("check-upper-case-action", A, "Check", lambda i: check_request(action="READ"), "action", None),
    ("check-lower-case-type", A, "Check", lambda i: check_request(actor=ref("user", "usr_a")), "actor.type", None),
    ("check-empty-resource-id", A, "Check", lambda i: check_request(resource=ref("Project", "")), "resource.id",
     None),
    ("check-bad-revision", A, "Check", lambda i: check_request(at_least_revision="latest"), "at_least_revision",
     None),
    # "²" is a digit to str.isdigit() but not to int(): it must be refused, not crash the request.
    ("check-unicode-digit-revision", A, "Check", lambda i: check_request(at_least_revision="²"),
     "at_least_revision", None),
    # A pattern's "$" also matches before a final newline: every value is matched whole.
    ("check-id-with-a-trailing-newline", A, "Check", lambda i: check_request(resource=ref("Project", "p1\n")),
     "resource.id", None),
    ("check-action-with-a-trailing-newline", A, "Check", lambda i: check_request(action="read\n"), "action", None),
    ("check-revision-with-a-trailing-newline", A, "Check", lambda i: check_request(at_least_revision="5\n"),
     "at_least_revision", None),
    ("batch-over-1000", A, "BatchCheck",
     lambda i: authorization_pb2.BatchCheckRequest(checks=[check_request()] * 1001), "checks", None),
    ("batch-bad-item", A, "BatchCheck",
     lambda i: authorization_pb2.BatchCheckRequest(checks=[check_request(), check_request(action="")]),
     "checks[1].action", None),
    ("list-actions-missing-resource", A, "ListActions",
     lambda i: authorization_pb2.ListActionsRequest(actor=ref("User", "usr_a")), "resource", None),
    ("list-resources-unknown-type", A, "ListResources",
     lambda i: authorization_pb2.ListResourcesRequest(actor=ref("User", "usr_a"), action="read",
                                                      resource_type="Widget"), "resource_type",
     "UNKNOWN_RESOURCE_TYPE"),
    ("list-resources-page-size-5000", A, "ListResources",
     lambda i: authorization_pb2.ListResourcesRequest(actor=ref("User", "usr_a"), action="read",
                                                      resource_type="Project", page_size=5000), "page_size", None),
    ("list-actors-garbage-token", A, "ListActors",
     lambda i: authorization_pb2.ListActorsRequest(action="read", resource=ref("Project", "p1"),
                                                   page_token="@@@@"), "page_token", None),
    ("explain-missing-actor", A, "Explain", lambda i: check_request(actor=None), "actor", None),
    ("invite-client-unknown-scope", P, "InviteClient",
     lambda i: partner_pb2.InviteClientRequest(actor_id=i.owner, partner_id=i.org, email="c@example.com",
                                               customer_name="C", currency="EUR", requested_scopes=["read", "fly"]),
     "requested_scopes[1]", "UNKNOWN_SCOPE"),
    ("invite-link-unknown-scope", P, "CreateInviteLink",
     lambda i: partner_pb2.CreateInviteLinkRequest(actor_id=i.owner, partner_id=i.org, customer_name="C",
                                                   currency="EUR", requested_scopes=["admin"]),
     "requested_scopes[0]", "UNKNOWN_SCOPE"),
    ("invite-link-bad-currency", P, "CreateInviteLink",
     lambda i: partner_pb2.CreateInviteLinkRequest(actor_id=i.owner, partner_id=i.org, customer_name="C",
                                                   currency="EURO"), "currency", None),
    ("invite-link-empty-customer", P, "CreateInviteLink",
     lambda i: partner_pb2.CreateInviteLinkRequest(actor_id=i.owner, partner_id=i.org, currency="EUR"),
     "customer_name", None),
    ("update-scopes-unknown-scope", P, "UpdateGrantedScopes",
     lambda i: partner_pb2.UpdateGrantedScopesRequest(actor_id=i.owner, partner_id=i.org, client_id=i.org,
                                                      granted_scopes=["root"]), "granted_scopes[0]", "UNKNOWN_SCOPE"),
    ("accept-neither-id-nor-token", P, "AcceptClientInvitation",
     lambda i: partner_pb2.AcceptClientInvitationRequest(actor_id=i.owner, client_id=i.org), "invitation_id", None),
    ("accept-bad-approval", P, "AcceptClientInvitation",
     lambda i: partner_pb2.AcceptClientInvitationRequest(actor_id=i.owner, token="t", client_id=i.org,
                                                         employee_approval="nobody"), "employee_approval", None),
    ("list-clients-bad-status", P, "ListClients",
     lambda i: partner_pb2.ListClientsRequest(actor_id=i.owner, partner_id=i.org, status="happy"), "status", None),
    ("list-events-bad-since", E, "ListEvents",
     lambda i: events_pb2.ListEventsRequest(since_revision="yesterday"), "since_revision", None),
    ("list-events-page-size-5000", E, "ListEvents",
     lambda i: events_pb2.ListEventsRequest(page_size=5000), "page_size", None),
    ("list-events-garbage-token", E, "ListEvents",
     lambda i: events_pb2.ListEventsRequest(page_token="not-a-token"), "page_token", None),
    ("watch-bad-since", E, "Watch", lambda i: events_pb2.WatchRequest(since_revision="-1"), "since_revision", None),
]


@pytest.mark.parametrize(("service", "method", "build", "field", "reason"),
                         [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_argument_names_the_field(client, ids, world, service, method, build, field, reason):
    before = world.app.store.current_revision()
    error = failure(getattr(service(client), method), build(ids))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info = error_info(error)
    assert info.reason == (reason or "INVALID_ARGUMENT")
    assert info.domain == "mandate.v1"
    assert field in error.details()
    assert info.metadata["field"] == field
    assert info.reason in error.details()  # the reason is written in the message too
    assert world.app.store.current_revision() == before


# (case id, service, method, request(ids), reason)
NOT_FOUND = [
    ("create-org-unknown-actor", D, "CreateOrganization",
     lambda i: directory_pb2.CreateOrganizationRequest(actor_id="usr_ghost", name="A", currency="EUR"),
     "USER_NOT_FOUND"),
    ("invite-unknown-actor", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id="usr_ghost", organization_id=i.org,
                                                  email="a@example.com", role="colleague"), "USER_NOT_FOUND"),
    ("invite-unknown-org", M, "InviteMember",
     lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id="org_ghost",
                                                  email="a@example.com", role="colleague"), "ORGANIZATION_NOT_FOUND"),
    ("cancel-unknown-invitation", M, "CancelInvitation",
     lambda i: membership_pb2.CancelInvitationRequest(actor_id=i.owner, invitation_id="inv_ghost"),
     "INVITATION_NOT_FOUND"),
    ("list-members-unknown-org", M, "ListMembers",
     lambda i: membership_pb2.ListMembersRequest(actor_id=i.owner, organization_id="org_ghost"),
     "ORGANIZATION_NOT_FOUND"),
    ("remove-non-member", M, "RemoveMember",
     lambda i: membership_pb2.RemoveMemberRequest(actor_id=i.owner, organization_id=i.org, user_id=i.stranger),
     "MEMBER_NOT_FOUND"),
    ("pause-unknown-user", M, "PauseMember",
     lambda i: membership_pb2.MemberRequest(actor_id=i.owner, organization_id=i.org, user_id="usr_ghost"),
     "MEMBER_NOT_FOUND"),
    ("set-role-non-member", M, "SetMemberRole",
     lambda i: membership_pb2.SetMemberRoleRequest(actor_id=i.owner, organization_id=i.org, user_id=i.stranger,
                                                   role="client"), "MEMBER_NOT_FOUND"),
    ("delete-unknown-resource", D, "DeleteResource",
     lambda i: directory_pb2.DeleteResourceRequest(actor_id=i.owner, resource=ref("Project", "ghost")),
     "RESOURCE_NOT_FOUND"),
    ("put-resource-unknown-org", D, "PutResource",
     lambda i: directory_pb2.PutResourceRequest(actor_id=i.owner, resource=ref("Project", "p-new"),
                                                organization_id="org_ghost"), "ORGANIZATION_NOT_FOUND"),
]


@pytest.mark.parametrize(("service", "method", "build", "reason"), [case[1:] for case in NOT_FOUND],
                         ids=[case[0] for case in NOT_FOUND])
def test_not_found(client, ids, world, service, method, build, reason):
    before = world.app.store.current_revision()
    error = failure(getattr(service(client), method), build(ids))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    assert error_info(error).reason == reason
    assert world.app.store.current_revision() == before


# -- authentication ----------------------------------------------------------------------------

BAD_METADATA = {
    "no metadata": (),
    "wrong token": (("authorization", "Bearer not-the-token"),),
    "wrong scheme": (("authorization", f"Basic {TOKEN}"),),
    "scheme without token": (("authorization", "Bearer "),),
    "token without scheme": (("authorization", TOKEN),),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_missing_or_invalid_token_is_unauthenticated(server_address, world, case):
    organization = world.organization()
    owner = world.owner_of(organization)
    with grpc.insecure_channel(server_address) as channel:
        authorization = authorization_pb2_grpc.AuthorizationServiceStub(channel)
        request = check_request(actor=ref("User", owner), action="view", resource=ref("Organization", organization))
        with pytest.raises(grpc.RpcError) as caught:
            authorization.Check(request, metadata=BAD_METADATA[case])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(caught.value).reason == "UNAUTHENTICATED"
        assert TOKEN not in caught.value.details()
        # Streams are guarded too.
        events = events_pb2_grpc.EventServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(events.Watch(events_pb2.WatchRequest(), metadata=BAD_METADATA[case])))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # And the right token works on the same channel.
        reply = authorization.Check(request, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert reply.allowed


def test_health_and_reflection_need_no_token(server_address):
    with grpc.insecure_channel(server_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        reply = health.Check(health_pb2.HealthCheckRequest(service="mandate.v1.AuthorizationService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for response in responses for s in response.list_services_response.service}
    assert {"mandate.v1.AuthorizationService", "mandate.v1.DirectoryService", "mandate.v1.MembershipService",
            "mandate.v1.PartnerService", "mandate.v1.EventService", "grpc.health.v1.Health"} <= services


# -- unexpected errors ---------------------------------------------------------------------------


def _explode(*_args, **_kwargs):
    raise RuntimeError("secret detail: /var/lib/mandate password=hunter2")


INTERNAL_CASES = {
    "mutation": ("memberships", "invite_member", M, "InviteMember",
                 lambda i: membership_pb2.InviteMemberRequest(actor_id=i.owner, organization_id=i.org,
                                                              email="new@example.com", role="colleague")),
    "check": ("authorizer", "check", A, "Check",
              lambda i: check_request(actor=ref("User", i.owner), resource=ref("Project", i.project))),
    "list": ("memberships", "list_members", M, "ListMembers",
             lambda i: membership_pb2.ListMembersRequest(actor_id=i.owner, organization_id=i.org)),
    "stream": ("events", "list_events", E, "Watch", lambda i: events_pb2.WatchRequest()),
}


@pytest.mark.parametrize("case", list(INTERNAL_CASES))
def test_unexpected_error_is_internal_without_internals(client, ids, world, monkeypatch, case):
    component, name, service, method, build = INTERNAL_CASES[case]
    monkeypatch.setattr(getattr(world.app, component), name, _explode)
    error = failure(getattr(service(client), method), build(ids))
    assert error.code() == grpc.StatusCode.INTERNAL
    details = error.details() or ""
    assert "secret detail" not in details and "hunter2" not in details and "RuntimeError" not in details
    assert "Traceback" not in details
    assert error_info(error).reason == "INTERNAL"
    assert "incident" in details


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ09_-.: \t\n\x00\x7f\u00e9\u00b2\uff21"), max_size=45)
       | st.text(max_size=3))
def test_the_plain_checks_of_ids_types_and_actions_accept_nothing_their_patterns_refuse(value):
    """Issue 22 item 4: the check plane validates ids, type names and actions with string methods
    first (faster than the patterns); whatever those accept, the pattern accepts too, so a value
    they refuse is still judged by the pattern alone and every answer stays the same."""
    from mandate.runtime import validate

    if value:
        assert validate._plain_id(value) <= bool(validate._ID.fullmatch(value))
        assert validate._plain_type(value) <= bool(validate._TYPE.fullmatch(value))
        assert validate._plain_action(value) <= bool(validate._ACTION.fullmatch(value))
    for accepted in ("User", "Project", "read", "can_read", "user-000123", "p:1/2~x"):
        assert validate._plain_id(accepted)
    assert validate._plain_type("Project") and validate._plain_action("can_read")
