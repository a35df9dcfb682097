"""A client that stops reading grows memory: the server keeps every unsent reply. Measured before
the fix, 400 unread ListEvents calls of 269 kB each grew the server by 254 MB. A page now ends
before its reply passes MAX_PAGE_BYTES, whatever page_size asks (AIP-158 lets a page hold fewer),
so each unread reply is bounded; paging through still returns everything once, in order."""

from __future__ import annotations

import pytest
from mandate.names import EventType
from mandate.runtime import validate
from mandate.v1 import events_pb2, membership_pb2, partner_pb2

BUDGET = 4096  # a small budget, so a few dozen rows show what 64 KiB does to thousands


@pytest.fixture
def partner_with_links(world, monkeypatch):
    partner = world.organization(name="Partner")
    owner = world.owner_of(partner)
    for number in range(30):
        world.app.partners.create_invite_link(owner, partner, f"{number:03d} " + "customer name " * 14, "",
                                              "EUR", ["read"])
    monkeypatch.setattr(validate, "MAX_PAGE_BYTES", BUDGET)
    return owner, partner


def pages(call, request_type, **fields):
    token, replies = "", []
    while True:
        reply = call(request_type(page_size=1000, page_token=token, **fields))
        replies.append(reply)
        token = reply.next_page_token
        if not token:
            return replies


def test_the_page_byte_budget_is_about_one_flow_control_window():
    assert 16 * 1024 <= validate.MAX_PAGE_BYTES <= 64 * 1024


def test_a_client_that_stops_reading_grows_memory_r22_list_events_pages_are_bounded_in_bytes(
        client, partner_with_links):
    _, partner = partner_with_links
    replies = pages(client.events.ListEvents, events_pb2.ListEventsRequest, organization_id=partner)
    assert len(replies) > 2
    assert all(r.ByteSize() <= BUDGET + 100 for r in replies)  # the events, plus the next page's token
    events = [e for r in replies for e in r.events]
    assert [e.type for e in events] == [EventType.ORGANIZATION_CREATED] + [EventType.CLIENT_INVITE_LINK_CREATED] * 30
    assert [e.attributes["customer_name"][:3] for e in events[1:]] == [f"{n:03d}" for n in range(30)]


def test_a_client_that_stops_reading_grows_memory_r11_list_invitations_pages_are_bounded_in_bytes(
        client, partner_with_links):
    owner, partner = partner_with_links
    replies = pages(client.membership.ListInvitations, membership_pb2.ListInvitationsRequest, actor_id=owner,
                    organization_id=partner)
    assert len(replies) > 2 and all(r.ByteSize() <= BUDGET + 100 for r in replies)
    assert [i.customer_name[:3] for r in replies for i in r.invitations] == [f"{n:03d}" for n in range(30)]


def test_one_item_larger_than_the_budget_still_makes_a_page(client, partner_with_links, monkeypatch):
    owner, partner = partner_with_links
    monkeypatch.setattr(validate, "MAX_PAGE_BYTES", 10)
    replies = pages(client.partner.ListClients, partner_pb2.ListClientsRequest, actor_id=owner, partner_id=partner)
    assert [len(r.connections) for r in replies] == [0]  # no clients: one empty page
    replies = pages(client.events.ListEvents, events_pb2.ListEventsRequest, organization_id=partner)
    assert [len(r.events) for r in replies] == [1] * 31
