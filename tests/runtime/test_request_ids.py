"""Mutations that are safe to retry (`request_id`), through gRPC on every engine: a lost reply,
racing retries (in one server, and on two replicas of one database), a key reused with other
fields or on another RPC, a recorded refusal, the invitation link's token, the 24 h retention."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from mandate.clock import ManualClock
from mandate.membership.rpc import MembershipService
from mandate.names import EventType
from mandate.runtime import callers
from mandate.runtime.app import App
from mandate.shared.expiry import Lifetimes
from mandate.v1 import events_pb2, membership_pb2, partner_pb2

from tests.conftest import POLICY_DIR
from tests.support import reason_of


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(database_url, clock):
    application = App(database_url, POLICY_DIR, lifetimes=Lifetimes(clock=clock))
    yield application
    application.close()


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value


def event_types(client, since: int) -> list[str]:
    return [e.type for e in client.events.ListEvents(events_pb2.ListEventsRequest(
        since_revision=str(since), page_size=1000)).events]


def test_r5_r22_a_retried_invitation_returns_the_first_reply_and_changes_nothing(client, world, app):
    owner = world.user("owner")
    agency = world.organization(owner, seat_limit=3)
    request = membership_pb2.InviteMemberRequest(actor_id=owner, organization_id=agency, email="bob@example.com",
                                                 role="colleague", request_id="invite-bob-1")
    before = app.store.current_revision()
    first = client.membership.InviteMember(request)  # committed; say its reply was lost
    retried = client.membership.InviteMember(request)
    assert retried == first
    assert event_types(client, before) == [EventType.MEMBER_INVITED]  # one change, one seat (R5)
    assert app.store.current_revision() == before + 1

    other = membership_pb2.InviteMemberRequest()
    other.CopyFrom(request)
    other.role = "legal_representative"
    error = refused(client.membership.InviteMember, other)
    assert (error.code(), reason_of(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    error = refused(client.membership.CancelInvitation, membership_pb2.CancelInvitationRequest(
        actor_id=owner, invitation_id=first.id, request_id="invite-bob-1"))
    assert (error.code(), reason_of(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    error = refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=agency, email="x@example.com", role="colleague", request_id="k" * 129))
    assert (error.code(), reason_of(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "request_id" in error.details()
    assert app.store.current_revision() == before + 1


def test_r6_a_refusal_is_returned_again_even_after_the_world_changed(client, world, app):
    organization = world.organization()
    owner = world.owner_of(organization)
    member = world.member(organization)
    request = membership_pb2.InviteMemberRequest(actor_id=owner, organization_id=organization,
                                                 email=world.email(member), role="colleague", request_id="again")
    first = refused(client.membership.InviteMember, request)
    assert reason_of(first) == "ALREADY_MEMBER"
    world.app.memberships.remove_member(owner, organization, member)
    before = app.store.current_revision()
    again = refused(client.membership.InviteMember, request)
    assert (again.code(), reason_of(again), again.details()) == (first.code(), "ALREADY_MEMBER", first.details())
    assert app.store.current_revision() == before


def test_r11_the_retry_of_an_invitation_link_returns_it_without_its_token(client, world):
    partner = world.organization()
    request = partner_pb2.CreateInviteLinkRequest(actor_id=world.owner_of(partner), partner_id=partner,
                                                  customer_name="Shop", currency="EUR", requested_scopes=["read"],
                                                  request_id="link-1")
    first = client.partner.CreateInviteLink(request)
    retried = client.partner.CreateInviteLink(request)
    assert first.token and not retried.token
    assert retried.id == first.id and retried.revision == first.revision


def test_r5_racing_retries_produce_one_change_in_one_server_and_across_replicas(client, world, app, database_url):
    owner = world.user("owner")
    agency = world.organization(owner, seat_limit=0)
    request = membership_pb2.InviteMemberRequest(actor_id=owner, organization_id=agency,
                                                 email="race@example.com", role="colleague", request_id="race-1")
    replica = App(database_url, POLICY_DIR)
    try:
        # the same handler a second replica serves
        other_server = MembershipService(replica.memberships, replica.requests)
        before = app.store.current_revision()

        def on_the_replica():  # called by the same service (env-0): request ids belong to their caller
            token = callers.current.set(callers.Caller("env-0"))
            try:
                return other_server.InviteMember(request, None)
            finally:
                callers.current.reset(token)

        calls = [lambda: client.membership.InviteMember(request)] * 3 + [on_the_replica] * 3
        with ThreadPoolExecutor(len(calls)) as pool:
            replies = list(pool.map(lambda call: call(), calls))
        assert len({reply.SerializeToString(deterministic=True) for reply in replies}) == 1
        assert event_types(client, before) == [EventType.MEMBER_INVITED]
    finally:
        replica.close()


def test_r5_a_request_id_is_kept_24_hours(client, world, app, clock):
    owner = world.user("owner")
    agency = world.organization(owner)
    request = membership_pb2.InviteMemberRequest(actor_id=owner, organization_id=agency, email="c@example.com",
                                                 role="colleague", request_id="daily")
    first = client.membership.InviteMember(request)
    client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(actor_id=owner,
                                                                              invitation_id=first.id))
    clock.advance(hours=23)
    assert client.membership.InviteMember(request).id == first.id
    clock.advance(hours=2)
    app.expiries.purge_request_records()
    assert client.membership.InviteMember(request).id != first.id  # a new day, a new request


def as_caller(name: str, call):
    """Run `call()` as the calling service `name` (the handler reads the caller from its context)."""
    token = callers.current.set(callers.Caller(name))
    try:
        return call()
    finally:
        callers.current.reset(token)


def test_r5_request_ids_of_two_callers_are_independent(world, app):
    owner = world.user("owner")
    agency = world.organization(owner, seat_limit=5)
    handler = MembershipService(app.memberships, app.requests)

    def invite(email: str):
        return handler.InviteMember(membership_pb2.InviteMemberRequest(
            actor_id=owner, organization_id=agency, email=email, role="colleague", request_id="shared-key"), None)

    billing = as_caller("billing", lambda: invite("one@example.com"))
    crm = as_caller("crm", lambda: invite("two@example.com"))  # another service's key: no REQUEST_ID_REUSED
    assert billing.id != crm.id and (billing.email, crm.email) == ("one@example.com", "two@example.com")
    assert as_caller("billing", lambda: invite("one@example.com")) == billing
    assert as_caller("crm", lambda: invite("two@example.com")) == crm


def test_r15_a_no_op_with_a_request_id_takes_no_revision_and_keeps_its_key(client, world, app):
    organization = world.organization()
    owner = world.owner_of(organization)
    employee = world.member(organization, "colleague", partner_employee=True)
    request = membership_pb2.TagPartnerEmployeeRequest(actor_id=owner, organization_id=organization,
                                                       user_id=employee, partner_employee=True, request_id="tag-1")
    before = app.store.current_revision()
    first = client.membership.TagPartnerEmployee(request)  # already tagged: nothing to change
    assert app.store.current_revision() == before and event_types(client, before) == []
    assert client.membership.TagPartnerEmployee(request) == first
    other = membership_pb2.TagPartnerEmployeeRequest()
    other.CopyFrom(request)
    other.partner_employee = False
    error = refused(client.membership.TagPartnerEmployee, other)
    assert (error.code(), reason_of(error)) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    assert app.store.current_revision() == before
