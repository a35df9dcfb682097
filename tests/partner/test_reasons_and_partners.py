"""Reasons no other test reaches (EMAIL_TAKEN, INVITATION_PENDING, ALREADY_CONNECTED,
ALREADY_ASSIGNED) and ListPartners, through gRPC against the real store. Every refusal changes
nothing: the event log reads the same before and after (R22, R23)."""

from __future__ import annotations

import grpc
import pytest
from mandate.v1 import directory_pb2, events_pb2, membership_pb2, partner_pb2

from tests.support import reason_of


def events(client) -> list[tuple]:
    found, token = [], ""
    while True:
        reply = client.events.ListEvents(events_pb2.ListEventsRequest(since_revision="0", page_size=1000,
                                                                      page_token=token))
        found += [(e.revision, e.type) for e in reply.events]
        token = reply.next_page_token
        if not token:
            return found


def refused(client, call, request, code: grpc.StatusCode, reason: str) -> None:
    before = events(client)
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    assert caught.value.code() == code, caught.value.details()
    assert reason_of(caught.value) == reason
    assert events(client) == before, "a refused call changed the store"


def test_r4_registering_a_taken_email_is_email_taken(client):
    request = directory_pb2.RegisterUserRequest(email="taken@example.com", display_name="First")
    client.directory.RegisterUser(request)
    refused(client, client.directory.RegisterUser,
            directory_pb2.RegisterUserRequest(email="taken@example.com", display_name="Second"),
            grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")


def test_r4_r5_a_second_pending_invitation_for_one_email_is_invitation_pending(client, world):
    organization = world.organization(seat_limit=10)
    owner = world.owner_of(organization)
    request = membership_pb2.InviteMemberRequest(actor_id=owner, organization_id=organization,
                                                 email="later@example.com", role="colleague")
    assert client.membership.InviteMember(request).status == "pending"
    refused(client, client.membership.InviteMember, request, grpc.StatusCode.ALREADY_EXISTS, "INVITATION_PENDING")


def test_r9_accepting_a_second_invitation_of_the_same_partner_is_already_connected(client, world):
    partner, customer = world.organization(name="Agency"), world.organization(name="Shop")
    world.connect(partner, customer)
    link = client.partner.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
        actor_id=world.owner_of(partner), partner_id=partner, customer_name="Shop", currency="EUR",
        requested_scopes=["read"]))
    refused(client, client.partner.AcceptClientInvitation, partner_pb2.AcceptClientInvitationRequest(
        actor_id=world.owner_of(customer), token=link.token, client_id=customer, granted_scopes=["read"]),
        grpc.StatusCode.ALREADY_EXISTS, "ALREADY_CONNECTED")


def test_r16_assigning_twice_is_already_assigned(client, world):
    partner, customer = world.organization(name="Agency"), world.organization(name="Shop")
    employee = world.member(partner, "colleague", partner_employee=True)
    world.connect(partner, customer)
    request = partner_pb2.AssignmentRequest(actor_id=world.owner_of(partner), partner_id=partner,
                                            client_id=customer, user_id=employee)
    client.partner.AssignClient(request)
    refused(client, client.partner.AssignClient, request, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_ASSIGNED")


def test_r14_list_partners_shows_the_client_its_partners_page_by_page(client, world):
    customer = world.organization(name="Shop")
    owner = world.owner_of(customer)
    partners = sorted(world.organization(name=f"Agency {n}") for n in range(3))
    for number, partner in enumerate(partners):
        world.connect(partner, customer, scopes=("read",), granted=("read",) if number else ())
    found, token = [], ""
    while True:
        reply = client.partner.ListPartners(partner_pb2.ListPartnersRequest(
            actor_id=owner, client_id=customer, page_size=2, page_token=token))
        assert len(reply.connections) <= 2
        found += list(reply.connections)
        token = reply.next_page_token
        if not token:
            break
    assert [c.partner_id for c in found] == partners
    assert all(c.client_id == customer and c.status == "active" for c in found)
    assert [list(c.granted_scopes) for c in found] == [[], ["read"], ["read"]]


def test_r14_r23_only_the_clients_managers_list_its_partners(client, world):
    partner, customer = world.organization(name="Agency"), world.organization(name="Shop")
    world.connect(partner, customer)
    colleague = world.member(customer, "colleague")
    for actor in (colleague, world.owner_of(partner)):
        refused(client, client.partner.ListPartners, partner_pb2.ListPartnersRequest(
            actor_id=actor, client_id=customer), grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
