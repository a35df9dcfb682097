"""No-op writes through gRPC: a mutation that would change nothing (tagging twice, approving
twice, granting the same scopes, ...) reports success, with the state and revision of the
unchanged rows, and takes no new revision and records no event (R22: events name changes).
It is still a decision of the policy (R23): a caller who may not make the change is refused."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from mandate.v1 import common_pb2, directory_pb2, events_pb2, membership_pb2, partner_pb2

from tests.support import reason_of


@pytest.fixture
def ids(world) -> SimpleNamespace:
    partner, customer = world.organization(name="Partner"), world.organization(name="Customer")
    owner = world.owner_of(partner)
    employee = world.member(partner, "colleague", partner_employee=True)
    world.connect(partner, customer, scopes=("read", "edit"), granted=("read", "edit"))
    world.assign(partner, customer, employee, approve=False)
    return SimpleNamespace(partner=partner, customer=customer, owner=owner, employee=employee,
                           client_owner=world.owner_of(customer), colleague=world.member(partner, "colleague"),
                           project=world.project(partner))


def tag(i, tagged):
    return lambda c: c.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=i.owner, organization_id=i.partner, user_id=i.employee, partner_employee=tagged))


def approval(i, method):
    return lambda c: getattr(c.partner, method)(partner_pb2.AssignmentRequest(
        actor_id=i.client_owner, partner_id=i.partner, client_id=i.customer, user_id=i.employee))


def scopes(i, granted):
    return lambda c: c.partner.UpdateGrantedScopes(partner_pb2.UpdateGrantedScopesRequest(
        actor_id=i.client_owner, partner_id=i.partner, client_id=i.customer, granted_scopes=granted))


def role(i, user, value):
    return lambda c: c.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=i.owner, organization_id=i.partner, user_id=user, role=value))


def put(i):
    return lambda c: c.directory.PutResource(directory_pb2.PutResourceRequest(
        actor_id=i.owner, resource=common_pb2.ObjectRef(type="Project", id=i.project), organization_id=i.partner))


# (case id, change(ids), the same change again, or the request that asks for what already holds)
NO_OPS = {
    "tag-twice": lambda i: (tag(i, True), tag(i, True)),
    "untag-twice": lambda i: (tag(i, False), tag(i, False)),
    "approve-twice": lambda i: (approval(i, "ApprovePartnerEmployee"), approval(i, "ApprovePartnerEmployee")),
    "revoke-approval-twice": lambda i: (lambda c: (approval(i, "ApprovePartnerEmployee")(c),
                                                   approval(i, "RevokePartnerEmployee")(c))[1],
                                       approval(i, "RevokePartnerEmployee")),
    "same-scopes": lambda i: (scopes(i, ["read"]), scopes(i, ["read"])),
    "same-scopes-other-order-and-repeated": lambda i: (scopes(i, ["publish", "read"]),
                                                       scopes(i, ["read", "publish", "read"])),
    "same-role": lambda i: (role(i, i.colleague, "legal_representative"),
                            role(i, i.colleague, "legal_representative")),
    "put-resource-again": lambda i: (lambda c: None, put(i)),
}


def events_since(client, revision: int) -> list[common_pb2.Event]:
    return list(client.events.ListEvents(events_pb2.ListEventsRequest(since_revision=str(revision))).events)


@pytest.mark.parametrize("case", list(NO_OPS))
def test_no_op_writes_take_no_revision_and_record_no_event(client, world, ids, case):
    change, again = NO_OPS[case](ids)
    first = change(client)
    before = world.app.store.current_revision()
    reply = again(client)
    assert world.app.store.current_revision() == before
    assert events_since(client, before) == []
    if first is not None:
        assert reply == first  # the same answer: the rows and their revisions are as they were
    assert 0 < int(reply.revision) <= before


def test_no_op_link_organizations_r13(client, world):
    first, second = world.organization(name="EUR"), world.organization(name="USD", currency="USD")
    owner = world.owner_of(first)
    world.app.memberships.invite_member(world.owner_of(second), second, world.email(owner), "owner")
    request = directory_pb2.LinkOrganizationsRequest(actor_id=owner, organization_id=first,
                                                     other_organization_id=second)
    linked = client.directory.LinkOrganizations(request)
    before = world.app.store.current_revision()
    again = client.directory.LinkOrganizations(directory_pb2.LinkOrganizationsRequest(
        actor_id=owner, organization_id=second, other_organization_id=first))
    assert again.revision == linked.revision
    assert world.app.store.current_revision() == before
    assert events_since(client, before) == []


def test_r23_a_no_op_write_is_still_refused_to_whoever_may_not_make_it(client, world, ids):
    """Otherwise a colleague could probe state (is this person tagged?) by asking to set it."""
    for call in (lambda c: c.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
                     actor_id=ids.colleague, organization_id=ids.partner, user_id=ids.employee,
                     partner_employee=True)),
                 lambda c: c.partner.UpdateGrantedScopes(partner_pb2.UpdateGrantedScopesRequest(
                     actor_id=ids.owner, partner_id=ids.partner, client_id=ids.customer,
                     granted_scopes=["read", "edit"])),
                 lambda c: c.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
                     actor_id=ids.colleague, organization_id=ids.partner, user_id=ids.colleague, role="colleague"))):
        with pytest.raises(grpc.RpcError) as caught:
            call(client)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(caught.value) == "NOT_ALLOWED"
