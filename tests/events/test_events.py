"""The change log per organization through gRPC (R22): ListEvents and Watch filtered by
`organization_id`, so one tenant's events (and emails) do not go to a caller asking about another;
events of a partner and its client reach both; the R18 cascade says so in `cause`."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest
from mandate.names import EventType
from mandate.v1 import common_pb2, events_pb2, membership_pb2

from tests.support import reason_of


def list_events(client, **fields) -> list[common_pb2.Event]:
    events, token = [], ""
    while True:
        reply = client.events.ListEvents(events_pb2.ListEventsRequest(page_token=token, **fields))
        events += reply.events
        token = reply.next_page_token
        if not token:
            return events


def concerns(event: common_pb2.Event, organization_id: str) -> bool:
    return organization_id in {event.attributes.get(key) for key in
                               ("organization_id", "other_organization_id", "partner_id", "client_id")}


@pytest.fixture
def tenants(world):
    """Two agencies with members and pending invitations, one of them partner of a client."""
    acme, globex, customer = (world.organization(name=n) for n in ("Acme", "Globex", "Customer"))
    for organization in (acme, globex):
        world.member(organization, "colleague", partner_employee=True)
        world.app.memberships.invite_member(world.owner_of(organization), organization,
                                            f"pending-{organization}@example.com", "colleague")
    world.connect(acme, customer)
    return acme, globex, customer


def test_every_tenants_events_go_to_any_caller_r22_list_events_filters_by_organization(client, world, tenants):
    acme, globex, customer = tenants
    everything = list_events(client, page_size=1000)
    for organization in (acme, globex, customer):
        mine = list_events(client, organization_id=organization, page_size=3)
        assert mine, organization
        assert all(concerns(event, organization) for event in mine)
        # Exactly the events that concern it, in the order of the whole log.
        assert [e.revision for e in mine] == [e.revision for e in everything if concerns(e, organization)]
    acme_events = list_events(client, organization_id=acme)
    assert f"pending-{acme}@example.com" in {e.attributes.get("email") for e in acme_events}
    assert not any(f"pending-{globex}@example.com" in str(e.attributes) for e in acme_events)
    assert all(globex not in str(e) for e in acme_events)
    # A connection is an event of both sides.
    connected = [e for e in everything if e.type == EventType.CLIENT_CONNECTED]
    assert connected and connected[0] in list_events(client, organization_id=acme)
    assert connected[0] in list_events(client, organization_id=customer)
    assert connected[0] not in list_events(client, organization_id=globex)


def test_r22_list_events_of_an_organization_since_a_revision(client, world, tenants):
    acme, globex, _ = tenants
    start = world.app.store.current_revision()
    colleague = world.member(globex, "colleague")
    world.app.memberships.pause_member(world.owner_of(globex), globex, colleague)
    assert list_events(client, organization_id=acme, since_revision=str(start)) == []
    assert [e.type for e in list_events(client, organization_id=globex, since_revision=str(start))] == [
        EventType.MEMBER_INVITED, EventType.MEMBER_JOINED, EventType.MEMBER_PAUSED]


def test_r22_list_events_filter_refusals(client, world):
    with pytest.raises(grpc.RpcError) as caught:
        client.events.ListEvents(events_pb2.ListEventsRequest(organization_id="org_ghost"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "ORGANIZATION_NOT_FOUND"
    for method, request in (("ListEvents", events_pb2.ListEventsRequest(organization_id="org with space")),
                            ("Watch", events_pb2.WatchRequest(organization_id="x" * 500))):
        with pytest.raises(grpc.RpcError) as caught:
            reply = getattr(client.events, method)(request, timeout=20)
            if method == "Watch":
                next(iter(reply))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "organization_id" in caught.value.details()
        assert len(caught.value.details()) < 500


def test_every_tenants_events_go_to_any_caller_r22_watch_filters_by_organization(client, world, tenants):
    acme, globex, _ = tenants
    start = world.app.store.current_revision()
    stream = client.events.Watch(events_pb2.WatchRequest(since_revision=str(start), organization_id=acme),
                                 timeout=60)
    received: queue.Queue = queue.Queue()

    def read():
        try:
            for event in stream:
                received.put(event)
        except grpc.RpcError as error:
            received.put(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Another tenant's changes first, then one of Acme's: the stream yields only Acme's.
        world.app.memberships.invite_member(world.owner_of(globex), globex, "globex-new@example.com", "colleague")
        invitation = world.app.memberships.invite_member(world.owner_of(acme), acme, "acme-new@example.com",
                                                         "colleague")
        event = received.get(timeout=20)
        assert isinstance(event, common_pb2.Event), event
        assert (event.type, event.attributes["invitation_id"]) == (EventType.MEMBER_INVITED, invitation.id)
        assert event.attributes["organization_id"] == acme
    finally:
        stream.cancel()
        reader.join(timeout=20)
    assert not reader.is_alive()
    assert all(not isinstance(e, common_pb2.Event) or concerns(e, acme) for e in received.queue)


def test_r18_cascade_events_say_so(client, world):
    partner, customer = world.organization(name="Partner"), world.organization(name="Customer")
    owner = world.owner_of(partner)
    employee = world.member(partner, "colleague", partner_employee=True)
    other = world.member(partner, "colleague", partner_employee=True)
    world.connect(partner, customer)
    world.assign(partner, customer, employee)
    world.assign(partner, customer, other)
    start = world.app.store.current_revision()
    world.app.partners.unassign_client(owner, partner, customer, other)  # asked for: no cause
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(actor_id=owner, organization_id=partner,
                                                                      user_id=employee))
    events = list_events(client, since_revision=str(start), organization_id=customer)
    assert [(e.type, e.attributes["user_id"], e.cause) for e in events] == [
        (EventType.PARTNER_EMPLOYEE_UNASSIGNED, other, ""),
        (EventType.PARTNER_EMPLOYEE_UNASSIGNED, employee, "cascade"),
    ]
    # The first was asked of the domain directly, the second by a calling service (env-0).
    assert [e.caller for e in events] == ["", "env-0"]
