"""Tier 3: the partner program (R8 to R22) through gRPC, against a real server on a free port.

Set-up comes from the factories (tests/factories.py); the step under test, and every check of
its effect, goes through `client.partner`, `client.membership`, `client.authorization`, ...
Every refusal also proves that the store did not change: the event log, which records every
committed change with its revision (R22), reads the same before and after."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import grpc
import pytest
from mandate.names import EventType
from mandate.v1 import (
    authorization_pb2,
    common_pb2,
    directory_pb2,
    events_pb2,
    membership_pb2,
    partner_pb2,
)

from tests.conftest import ROOT, TOKEN
from tests.support import reason_of

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

# -- helpers -------------------------------------------------------------------------------




def events(client, since: str = "0") -> list[tuple]:
    """Every event after `since`, as comparable tuples, read page by page."""
    found, token = [], ""
    while True:
        reply = client.events.ListEvents(events_pb2.ListEventsRequest(since_revision=since, page_size=1000,
                                                                      page_token=token))
        found += [(e.revision, e.type, e.actor_id, dict(e.attributes)) for e in reply.events]
        token = reply.next_page_token
        if not token:
            return found


def latest_revision(client) -> str:
    log = events(client)
    return log[-1][0] if log else "0"


def refused(client, call, request, code: grpc.StatusCode, reason: str | None = None) -> grpc.RpcError:
    """Call, expect `code` (and `reason`), and prove the refusal changed nothing."""
    before = events(client)
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    error = caught.value
    assert error.code() == code, error.details()
    if reason is not None:
        assert reason_of(error) == reason, error.details()
    assert events(client) == before, "a refused call changed the store"
    return error


def can(client, user: str, action: str, project: str) -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type="Project", id=project))).allowed


def may(client, user: str, action: str, organization: str) -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type="Organization", id=organization))).allowed


def projects_of(client, user: str, action: str = "read") -> set[str]:
    reply = client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action, resource_type="Project", page_size=1000))
    assert not reply.next_page_token
    return set(reply.resource_ids)


def invite_link(client, actor: str, partner: str, *, name: str = "Customer", number: str = "",
                currency: str = "EUR", scopes=("read", "edit")) -> common_pb2.Invitation:
    return client.partner.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
        actor_id=actor, partner_id=partner, customer_name=name, customer_number=number, currency=currency,
        requested_scopes=list(scopes)))


def invite_client(client, actor: str, partner: str, email: str, *, name: str = "Customer", number: str = "",
                  currency: str = "EUR", scopes=("read", "edit")) -> common_pb2.Invitation:
    return client.partner.InviteClient(partner_pb2.InviteClientRequest(
        actor_id=actor, partner_id=partner, email=email, customer_name=name, customer_number=number,
        currency=currency, requested_scopes=list(scopes)))


def accept(client, actor: str, client_org: str, *, token: str = "", invitation_id: str = "", granted=(),
           approval: str = "") -> common_pb2.Connection:
    return client.partner.AcceptClientInvitation(accept_request(actor, client_org, token=token,
                                                                invitation_id=invitation_id, granted=granted,
                                                                approval=approval))


def accept_request(actor: str, client_org: str, *, token: str = "", invitation_id: str = "", granted=(),
                   approval: str = "") -> partner_pb2.AcceptClientInvitationRequest:
    return partner_pb2.AcceptClientInvitationRequest(
        actor_id=actor, token=token, invitation_id=invitation_id, client_id=client_org,
        granted_scopes=list(granted), employee_approval=approval)


def link_and_accept(client, world, partner: str, client_org: str, *, scopes=("read", "edit"), granted=None,
                    approval: str = "", name: str = "Customer", number: str = "") -> common_pb2.Connection:
    """Accepts granting what was requested, unless `granted` says otherwise."""
    currency = world.app.directory.get_organization(partner).currency
    link = invite_link(client, world.owner_of(partner), partner, name=name, number=number, currency=currency,
                       scopes=scopes)
    return accept(client, world.owner_of(client_org), client_org, token=link.token,
                  granted=scopes if granted is None else granted, approval=approval)


def list_clients(client, actor: str, partner: str, **filters) -> list[common_pb2.Connection]:
    return list(client.partner.ListClients(partner_pb2.ListClientsRequest(
        actor_id=actor, partner_id=partner, page_size=1000, **filters)).connections)


def list_invitations(client, actor: str, organization: str, **filters) -> list[common_pb2.Invitation]:
    """The organization's client invitations and links (its member invitations left out)."""
    reply = client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
        actor_id=actor, organization_id=organization, page_size=1000, **filters))
    assert not reply.next_page_token
    return [i for i in reply.invitations if i.kind == "client"]


def pair(actor: str, partner: str, client_org: str) -> partner_pb2.ConnectionRequest:
    return partner_pb2.ConnectionRequest(actor_id=actor, partner_id=partner, client_id=client_org)


def assignment(actor: str, partner: str, client_org: str, user: str) -> partner_pb2.AssignmentRequest:
    return partner_pb2.AssignmentRequest(actor_id=actor, partner_id=partner, client_id=client_org, user_id=user)


def scopes_update(actor: str, partner: str, client_org: str, scopes) -> partner_pb2.UpdateGrantedScopesRequest:
    return partner_pb2.UpdateGrantedScopesRequest(actor_id=actor, partner_id=partner, client_id=client_org,
                                                  granted_scopes=list(scopes))


class Program:
    """A partner with an owner, a legal representative, a tagged employee and a plain colleague,
    and a client organization with one project, not yet connected."""

    def __init__(self, world, *, currency: str = "EUR"):
        self.world = world
        self.partner_owner = world.user("partner-owner")
        self.partner = world.organization(self.partner_owner, currency=currency, name="Agentur")
        self.rep = world.member(self.partner, "legal_representative")
        self.employee = world.member(self.partner, "colleague", partner_employee=True)
        self.colleague = world.member(self.partner, "colleague")
        self.client_owner = world.user("client-owner")
        self.client = world.organization(self.client_owner, name="Kunde")
        self.project = world.project(self.client)


@pytest.fixture
def program(world) -> Program:
    return Program(world)


# -- R8: who may add clients ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["colleague", "partner_employee", "client", "outsider"])
def test_r8_only_legal_representatives_add_clients(client, world, program, role):
    if role == "outsider":
        actor = world.user("outsider")
    elif role == "partner_employee":
        actor = program.employee
    else:
        actor = world.member(program.partner, role)
    for call, request in (
        (client.partner.CreateInviteLink, partner_pb2.CreateInviteLinkRequest(
            actor_id=actor, partner_id=program.partner, customer_name="Kunde", currency="EUR",
            requested_scopes=["read"])),
        (client.partner.InviteClient, partner_pb2.InviteClientRequest(
            actor_id=actor, partner_id=program.partner, email="kunde@example.com", customer_name="Kunde",
            currency="EUR", requested_scopes=["read"])),
    ):
        refused(client, call, request, PERMISSION_DENIED, "NOT_ALLOWED")
    assert list_invitations(client, program.partner_owner, program.partner) == []


def test_r8_legal_representative_invited_as_such_adds_clients(client, world, program):
    representative = world.user("representative")
    joined = client.membership.InviteMember(membership_pb2.InviteMemberRequest(
        actor_id=program.partner_owner, organization_id=program.partner, email=world.email(representative),
        role="legal_representative"))
    assert joined.status == "finished"
    link = invite_link(client, representative, program.partner, name="Bäckerei Sommer")
    invitation = invite_client(client, representative, program.partner, "neu@example.com", name="Neu GmbH")
    assert link.token and link.status == "pending" and link.invited_by == representative
    assert invitation.kind == "client" and invitation.status == "pending" and invitation.invited_by == representative


def test_r8_owner_is_a_legal_representative_by_default(client, program):
    link = invite_link(client, program.partner_owner, program.partner)
    assert link.status == "pending" and link.kind == "client"


# -- R9: client invitation in the system ---------------------------------------------------------


def test_r9_registered_client_accepts_and_partner_reaches_projects_within_granted_scopes(client, world, program):
    invitation = invite_client(client, program.rep, program.partner, world.email(program.client_owner),
                               scopes=("read", "edit"))
    assert invitation.status == "pending"
    assert not can(client, program.rep, "read", program.project)  # an invitation alone grants nothing

    connection = accept(client, program.client_owner, program.client, invitation_id=invitation.id,
                        granted=("read", "edit"))

    assert connection.status == "active"
    assert (connection.partner_id, connection.client_id) == (program.partner, program.client)
    assert list(connection.granted_scopes) == ["edit", "read"]
    for partner_person in (program.partner_owner, program.rep):
        assert can(client, partner_person, "read", program.project)
        assert can(client, partner_person, "edit", program.project)
        assert not can(client, partner_person, "publish", program.project)
        assert not can(client, partner_person, "delete", program.project)
    assert [i.status for i in list_invitations(client, program.rep, program.partner)] == ["finished"]


def test_r9_accepting_with_another_users_account_is_refused(client, world, program):
    invitation = invite_client(client, program.rep, program.partner, world.email(program.client_owner))
    stranger = world.user("stranger")
    stranger_org = world.organization(stranger)

    refused(client, client.partner.AcceptClientInvitation,
            accept_request(stranger, stranger_org, invitation_id=invitation.id), PERMISSION_DENIED)
    # Nor may the invited person accept for an organization that is not theirs.
    refused(client, client.partner.AcceptClientInvitation,
            accept_request(program.client_owner, stranger_org, invitation_id=invitation.id), PERMISSION_DENIED)

    assert [i.status for i in list_invitations(client, program.rep, program.partner)] == ["pending"]
    assert list_clients(client, program.rep, program.partner) == []
    connection = accept(client, program.client_owner, program.client, invitation_id=invitation.id)
    assert connection.status == "active"


def test_r9_a_colleague_of_the_client_cannot_accept_for_it(client, world, program):
    client_colleague = world.member(program.client, "colleague")
    link = invite_link(client, program.rep, program.partner)
    refused(client, client.partner.AcceptClientInvitation,
            accept_request(client_colleague, program.client, token=link.token), PERMISSION_DENIED, "NOT_ALLOWED")
    assert not can(client, program.rep, "read", program.project)


def test_r9_registered_client_is_connected_only_by_accepting(client, world, program):
    invitation = invite_client(client, program.rep, program.partner, world.email(program.client_owner))
    # A client that already had an account when invited is not connected by creating an organization.
    newer = client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
        actor_id=program.client_owner, name="Kunde Zwei", currency="EUR"))
    assert list_clients(client, program.rep, program.partner) == []
    assert [i.status for i in list_invitations(client, program.rep, program.partner)] == ["pending"]
    assert accept(client, program.client_owner, newer.id, invitation_id=invitation.id).client_id == newer.id


def test_r9_partner_cannot_be_its_own_client(client, program):
    link = invite_link(client, program.rep, program.partner)
    refused(client, client.partner.AcceptClientInvitation,
            accept_request(program.partner_owner, program.partner, token=link.token), grpc.StatusCode.INVALID_ARGUMENT)


# -- R10: client invitation by email -------------------------------------------------------------


def test_r10_unregistered_client_is_connected_at_signup_as_referral(client, program):
    email = "neukunde@example.com"
    invitation = invite_client(client, program.rep, program.partner, email, name="Neukunde AG", number="K-17",
                               scopes=("read", "publish"))
    assert invitation.status == "pending"

    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="Neu"))
    assert list_clients(client, program.rep, program.partner) == []  # an account alone is not a client yet
    organization = client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
        actor_id=user.id, name="Neukunde AG", currency="EUR"))

    [connection] = list_clients(client, program.rep, program.partner)
    assert connection.client_id == organization.id
    assert connection.status == "active"
    assert connection.referral is True
    assert (connection.customer_name, connection.customer_number) == ("Neukunde AG", "K-17")
    assert list(connection.requested_scopes) == ["publish", "read"]
    assert [i.status for i in list_invitations(client, program.rep, program.partner)] == ["finished"]

    client.directory.PutResource(directory_pb2.PutResourceRequest(
        actor_id=user.id, resource=common_pb2.ObjectRef(type="Project", id="neukunde-site"),
        organization_id=organization.id))
    # R12 (decided in the policy): the client has granted nothing yet, so the partner reaches nothing.
    assert list(connection.granted_scopes) == []
    assert not can(client, program.rep, "read", "neukunde-site")
    assert not can(client, program.rep, "publish", "neukunde-site")
    # Once the client grants scopes, the partner works within them.
    granted = client.partner.UpdateGrantedScopes(partner_pb2.UpdateGrantedScopesRequest(
        actor_id=user.id, partner_id=program.partner, client_id=organization.id, granted_scopes=["publish"]))
    assert granted.granted_scopes == ["publish"]
    assert can(client, program.rep, "publish", "neukunde-site")
    assert not can(client, program.rep, "read", "neukunde-site")


def test_r10_cancelled_email_invitation_does_not_connect_at_signup(client, program):
    email = "abgesagt@example.com"
    invitation = invite_client(client, program.rep, program.partner, email)
    client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(
        actor_id=program.rep, invitation_id=invitation.id))
    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="Ab"))
    client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
        actor_id=user.id, name="Abgesagt AG", currency="EUR"))
    assert list_clients(client, program.rep, program.partner) == []


def test_r10_explicitly_accepted_client_is_not_a_referral(client, world, program):
    connection = link_and_accept(client, world, program.partner, program.client)
    assert connection.referral is False


# -- R11: invitation links -----------------------------------------------------------------------


def test_r11_link_token_is_shown_only_once(client, program):
    link = invite_link(client, program.rep, program.partner, name="Kunde Eins", number="K-1")
    assert len(link.token) >= 32
    [listed] = list_invitations(client, program.partner_owner, program.partner)
    assert listed.id == link.id
    assert listed.token == ""
    assert (listed.status, listed.invited_by, listed.customer_name, listed.customer_number, listed.currency) == (
        "pending", program.rep, "Kunde Eins", "K-1", "EUR")
    assert link.token not in str(events(client))  # nor does the event log carry it


def test_r11_link_is_single_use(client, world, program):
    link = invite_link(client, program.rep, program.partner)
    accept(client, program.client_owner, program.client, token=link.token)
    second_owner = world.user("second")
    second = world.organization(second_owner)

    refused(client, client.partner.AcceptClientInvitation, accept_request(second_owner, second, token=link.token),
            FAILED_PRECONDITION, "INVITATION_NOT_PENDING")

    assert [c.client_id for c in list_clients(client, program.rep, program.partner)] == [program.client]
    assert [i.id for i in list_invitations(client, program.rep, program.partner, status="finished")] == [link.id]


def test_r11_link_is_accepted_by_its_token_not_its_listed_id(client, program):
    link = invite_link(client, program.rep, program.partner)
    # The id is listed to the partner's people; only the token, given to the customer, opens the link.
    refused(client, client.partner.AcceptClientInvitation,
            accept_request(program.client_owner, program.client, invitation_id=link.id), grpc.StatusCode.NOT_FOUND)
    assert list_clients(client, program.rep, program.partner) == []


def test_r11_cancelled_link_is_unusable(client, program):
    link = invite_link(client, program.rep, program.partner)
    cancelled = client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(
        actor_id=program.rep, invitation_id=link.id))
    assert cancelled.status == "cancelled"

    refused(client, client.partner.AcceptClientInvitation,
            accept_request(program.client_owner, program.client, token=link.token),
            FAILED_PRECONDITION, "INVITATION_NOT_PENDING")

    assert list_clients(client, program.rep, program.partner) == []
    assert not can(client, program.rep, "read", program.project)


def test_r11_accepting_needs_an_account_and_an_organization(client, world, program):
    link = invite_link(client, program.rep, program.partner)
    refused(client, client.partner.AcceptClientInvitation,
            accept_request("usr_nobody", program.client, token=link.token), grpc.StatusCode.NOT_FOUND)
    refused(client, client.partner.AcceptClientInvitation,
            accept_request(program.client_owner, "org_nowhere", token=link.token), grpc.StatusCode.NOT_FOUND)
    refused(client, client.partner.AcceptClientInvitation,
            accept_request(program.client_owner, program.client, token="not-a-token"),
            grpc.StatusCode.NOT_FOUND)
    # None of that used the link up.
    assert accept(client, program.client_owner, program.client, token=link.token).status == "active"


def test_r11_invitations_searchable_by_customer_name_and_status(client, world, program):
    mueller = invite_link(client, program.rep, program.partner, name="Bäckerei Müller")
    gmbh = invite_link(client, program.partner_owner, program.partner, name="MÜLLER GmbH")
    acme = invite_link(client, program.rep, program.partner, name="Acme")
    client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(
        actor_id=program.rep, invitation_id=acme.id))
    accept(client, program.client_owner, program.client, token=gmbh.token)

    def ids(**filters):
        return {i.id for i in list_invitations(client, program.rep, program.partner, **filters)}

    assert ids(query="müller") == {mueller.id, gmbh.id}
    assert ids(query="Müller") == {mueller.id, gmbh.id}
    assert ids(query="bäckerei") == {mueller.id}
    assert ids(query="acme") == {acme.id}
    assert ids(query="nobody") == set()
    assert ids(status="pending") == {mueller.id}
    assert ids(status="finished") == {gmbh.id}
    assert ids(status="cancelled") == {acme.id}
    assert ids(query="müller", status="finished") == {gmbh.id}
    invited_by = {i.id: i.invited_by for i in list_invitations(client, program.rep, program.partner)}
    assert invited_by == {mueller.id: program.rep, gmbh.id: program.partner_owner, acme.id: program.rep}


def test_r11_client_list_searchable_by_customer_name(client, world, program):
    for name in ("Özdemir Bau", "Bäckerei Özdemir", "Acme"):
        link_and_accept(client, world, program.partner, world.organization(), name=name)
    found = {c.customer_name for c in list_clients(client, program.rep, program.partner, query="özdemir")}
    assert found == {"Özdemir Bau", "Bäckerei Özdemir"}
    assert [c.customer_name for c in list_clients(client, program.rep, program.partner, query="ACME")] == ["Acme"]
    assert list_clients(client, program.rep, program.partner, query="%") == []


def test_r11_colleague_cannot_list_or_cancel_links(client, program):
    link = invite_link(client, program.rep, program.partner)
    refused(client, client.membership.ListInvitations, membership_pb2.ListInvitationsRequest(
        actor_id=program.colleague, organization_id=program.partner), PERMISSION_DENIED)
    refused(client, client.membership.CancelInvitation, membership_pb2.CancelInvitationRequest(
        actor_id=program.colleague, invitation_id=link.id), PERMISSION_DENIED)
    assert [i.status for i in list_invitations(client, program.rep, program.partner)] == ["pending"]


# -- R12: the client decides what to grant ------------------------------------------------------


def test_r12_client_grants_fewer_scopes_than_requested(client, world, program):
    connection = link_and_accept(client, world, program.partner, program.client,
                                 scopes=("read", "edit", "publish"), granted=("read",))
    assert list(connection.requested_scopes) == ["edit", "publish", "read"]
    assert list(connection.granted_scopes) == ["read"]

    [read_back] = list_clients(client, program.rep, program.partner)
    assert list(read_back.granted_scopes) == ["read"]
    assert list(read_back.requested_scopes) == ["edit", "publish", "read"]
    assert can(client, program.rep, "read", program.project)
    assert not can(client, program.rep, "edit", program.project)
    assert not can(client, program.rep, "publish", program.project)


def test_r12_empty_granted_scopes_on_accept_grants_nothing(client, world, program):
    connection = link_and_accept(client, world, program.partner, program.client, scopes=("read", "approve"),
                                 granted=())
    assert list(connection.requested_scopes) == ["approve", "read"]
    assert list(connection.granted_scopes) == []
    assert not can(client, program.rep, "read", program.project)


def test_r12_update_granted_scopes_changes_access_at_once(client, world, program):
    world.connect(program.partner, program.client, scopes=("read",))
    world.assign(program.partner, program.client, program.employee)
    assert not can(client, program.rep, "edit", program.project)

    widened = client.partner.UpdateGrantedScopes(scopes_update(program.client_owner, program.partner,
                                                               program.client, ["read", "edit", "publish"]))
    assert list(widened.granted_scopes) == ["edit", "publish", "read"]
    for person in (program.rep, program.employee):
        assert can(client, person, "edit", program.project)
        assert can(client, person, "publish", program.project)

    narrowed = client.partner.UpdateGrantedScopes(scopes_update(program.client_owner, program.partner,
                                                                program.client, ["edit"]))
    assert list(narrowed.granted_scopes) == ["edit"]
    for person in (program.rep, program.employee):
        assert not can(client, person, "read", program.project)
        assert not can(client, person, "publish", program.project)
        assert can(client, person, "edit", program.project)
    [read_back] = list_clients(client, program.rep, program.partner)
    assert list(read_back.granted_scopes) == ["edit"]


def test_r12_partner_cannot_change_what_the_client_granted(client, world, program):
    world.connect(program.partner, program.client, scopes=("read", "delete"), granted=("read",))
    refused(client, client.partner.UpdateGrantedScopes,
            scopes_update(program.partner_owner, program.partner, program.client, ["read", "delete"]),
            PERMISSION_DENIED, "NOT_ALLOWED")
    assert not can(client, program.partner_owner, "delete", program.project)


def test_r12_unknown_scope_is_invalid_argument(client, world, program):
    link = invite_link(client, program.rep, program.partner)
    for call, request in (
        (client.partner.CreateInviteLink, partner_pb2.CreateInviteLinkRequest(
            actor_id=program.rep, partner_id=program.partner, customer_name="Kunde", currency="EUR",
            requested_scopes=["read", "admin"])),
        (client.partner.InviteClient, partner_pb2.InviteClientRequest(
            actor_id=program.rep, partner_id=program.partner, email="k@example.com", customer_name="Kunde",
            currency="EUR", requested_scopes=["everything"])),
        (client.partner.AcceptClientInvitation,
         accept_request(program.client_owner, program.client, token=link.token, granted=["read", "fly"])),
    ):
        refused(client, call, request, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_SCOPE")
    accept(client, program.client_owner, program.client, token=link.token)
    refused(client, client.partner.UpdateGrantedScopes,
            scopes_update(program.client_owner, program.partner, program.client, ["READ"]),
            grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_SCOPE")


# -- R13: currency -------------------------------------------------------------------------------


def test_r13_invitation_currency_must_be_the_partners(client, program):
    refused(client, client.partner.CreateInviteLink, partner_pb2.CreateInviteLinkRequest(
        actor_id=program.rep, partner_id=program.partner, customer_name="Kunde", currency="USD",
        requested_scopes=["read"]), FAILED_PRECONDITION, "CURRENCY_MISMATCH")
    refused(client, client.partner.InviteClient, partner_pb2.InviteClientRequest(
        actor_id=program.rep, partner_id=program.partner, email="k@example.com", customer_name="Kunde",
        currency="CHF", requested_scopes=["read"]), FAILED_PRECONDITION, "CURRENCY_MISMATCH")
    assert list_invitations(client, program.rep, program.partner) == []


def test_r13_connected_client_works_in_the_partners_currency(client, world, program):
    link = invite_link(client, program.rep, program.partner, currency="EUR")
    usd_owner = world.user("usd-client")
    usd_client = world.organization(usd_owner, currency="USD")
    connection = accept(client, usd_owner, usd_client, token=link.token)
    assert connection.currency == "EUR"
    [listed] = list_clients(client, program.rep, program.partner)
    assert listed.currency == "EUR"


def test_r13_one_owner_links_master_accounts_per_currency_and_switches(client, world):
    owner = world.user("multi")

    def create(name, currency):
        return client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
            actor_id=owner, name=name, currency=currency)).id

    euro, dollar = create("Agentur EUR", "EUR"), create("Agentur USD", "USD")
    client.directory.LinkOrganizations(directory_pb2.LinkOrganizationsRequest(
        actor_id=owner, organization_id=euro, other_organization_id=dollar))
    assert may(client, owner, "switch", euro)
    assert may(client, owner, "switch", dollar)
    rep = world.member(euro, "legal_representative")
    assert not may(client, rep, "switch", dollar)
    # Each master account invites clients in its own currency only.
    assert invite_link(client, owner, dollar, currency="USD").currency == "USD"
    refused(client, client.partner.CreateInviteLink, partner_pb2.CreateInviteLinkRequest(
        actor_id=owner, partner_id=dollar, customer_name="Kunde", currency="EUR", requested_scopes=["read"]),
        FAILED_PRECONDITION, "CURRENCY_MISMATCH")


def test_r13_linking_someone_elses_account_is_refused(client, world):
    owner = world.user("owner")
    mine = world.organization(owner)
    other_owner = world.user("other")
    theirs = world.organization(other_owner, currency="USD")
    refused(client, client.directory.LinkOrganizations, directory_pb2.LinkOrganizationsRequest(
        actor_id=owner, organization_id=mine, other_organization_id=theirs), PERMISSION_DENIED, "NOT_ALLOWED")
    assert not may(client, owner, "switch", theirs)


# -- R14: ending a client relationship ----------------------------------------------------------


def test_r14_disconnect_request_keeps_access_until_the_client_accepts(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)

    requested = client.partner.RequestDisconnect(pair(program.rep, program.partner, program.client))
    assert requested.status == "disconnect_requested"
    assert can(client, program.rep, "read", program.project)
    assert can(client, program.employee, "edit", program.project)

    declined = client.partner.DeclineDisconnect(pair(program.client_owner, program.partner, program.client))
    assert declined.status == "active"
    assert can(client, program.rep, "read", program.project)
    assert [c.status for c in list_clients(client, program.rep, program.partner)] == ["active"]

    client.partner.RequestDisconnect(pair(program.partner_owner, program.partner, program.client))
    accepted = client.partner.AcceptDisconnect(pair(program.client_owner, program.partner, program.client))
    assert accepted.status == "disconnected"
    for person in (program.partner_owner, program.rep, program.employee):
        assert not can(client, person, "read", program.project)
    assert [c.status for c in list_clients(client, program.rep, program.partner, status="disconnected")] == [
        "disconnected"]


def test_r14_client_revokes_partner_at_once(client, world, program):
    world.connect(program.partner, program.client, employee_approval="partner")
    world.assign(program.partner, program.client, program.employee, approve=False)
    assert can(client, program.employee, "read", program.project)

    revoked = client.partner.RevokePartner(pair(program.client_owner, program.partner, program.client))

    assert revoked.status == "disconnected"
    for person in (program.partner_owner, program.rep, program.employee):
        assert not can(client, person, "read", program.project)


def test_r14_client_revokes_while_a_disconnect_is_pending(client, world, program):
    world.connect(program.partner, program.client)
    client.partner.RequestDisconnect(pair(program.rep, program.partner, program.client))
    assert client.partner.RevokePartner(pair(program.client_owner, program.partner, program.client)).status == (
        "disconnected")
    assert not can(client, program.rep, "read", program.project)


@pytest.mark.parametrize("who, rpc", [
    ("partner_owner", "AcceptDisconnect"),
    ("partner_owner", "DeclineDisconnect"),
    ("partner_owner", "RevokePartner"),
    ("rep", "AcceptDisconnect"),
    ("client_owner", "RequestDisconnect"),
    ("colleague", "RequestDisconnect"),
    ("client_colleague", "AcceptDisconnect"),
    ("client_colleague", "RevokePartner"),
])
def test_r14_wrong_party_is_refused(client, world, program, who, rpc):
    world.connect(program.partner, program.client)
    client.partner.RequestDisconnect(pair(program.rep, program.partner, program.client))
    actor = world.member(program.client, "colleague") if who == "client_colleague" else getattr(program, who)

    refused(client, getattr(client.partner, rpc), pair(actor, program.partner, program.client),
            PERMISSION_DENIED, "NOT_ALLOWED")

    assert [c.status for c in list_clients(client, program.rep, program.partner)] == ["disconnect_requested"]
    assert can(client, program.rep, "read", program.project)


def test_r14_client_cannot_accept_a_disconnect_nobody_requested(client, world, program):
    world.connect(program.partner, program.client)
    refused(client, client.partner.AcceptDisconnect, pair(program.client_owner, program.partner, program.client),
            FAILED_PRECONDITION, "CONNECTION_STATE")
    assert can(client, program.rep, "read", program.project)


# -- R15: tagging --------------------------------------------------------------------------------


def test_r15_untagged_colleague_cannot_be_assigned(client, world, program):
    world.connect(program.partner, program.client)
    refused(client, client.partner.AssignClient,
            assignment(program.rep, program.partner, program.client, program.colleague),
            FAILED_PRECONDITION, "NOT_PARTNER_EMPLOYEE")

    tagged = client.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=program.rep, organization_id=program.partner, user_id=program.colleague, partner_employee=True))
    assert tagged.partner_employee is True
    assigned = client.partner.AssignClient(assignment(program.rep, program.partner, program.client,
                                                      program.colleague))
    assert assigned.assigned and not assigned.client_approved


def test_r15_untagging_withdraws_every_assignment(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)
    assert can(client, program.employee, "read", program.project)
    client.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=program.rep, organization_id=program.partner, user_id=program.employee, partner_employee=False))
    assert not can(client, program.employee, "read", program.project)


def test_r15_only_legal_representatives_assign(client, world, program):
    world.connect(program.partner, program.client)
    refused(client, client.partner.AssignClient,
            assignment(program.colleague, program.partner, program.client, program.employee),
            PERMISSION_DENIED, "NOT_ALLOWED")
    refused(client, client.partner.AssignClient,
            assignment(program.client_owner, program.partner, program.client, program.employee),
            PERMISSION_DENIED, "NOT_ALLOWED")


# -- R16: assignment needs the client's consent -------------------------------------------------


def test_r16_assignment_alone_grants_nothing_until_the_client_approves(client, world, program):
    world.connect(program.partner, program.client)
    assigned = client.partner.AssignClient(assignment(program.rep, program.partner, program.client,
                                                      program.employee))
    assert assigned.assigned and not assigned.client_approved
    assert not can(client, program.employee, "read", program.project)

    approved = client.partner.ApprovePartnerEmployee(assignment(program.client_owner, program.partner,
                                                                program.client, program.employee))
    assert approved.client_approved
    assert can(client, program.employee, "read", program.project)
    assert can(client, program.employee, "edit", program.project)


def test_r16_approval_alone_is_impossible_without_assignment(client, world, program):
    world.connect(program.partner, program.client)
    refused(client, client.partner.ApprovePartnerEmployee,
            assignment(program.client_owner, program.partner, program.client, program.employee),
            grpc.StatusCode.NOT_FOUND, "ASSIGNMENT_NOT_FOUND")
    assert not can(client, program.employee, "read", program.project)


def test_r16_only_the_client_approves(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee, approve=False)
    for actor in (program.partner_owner, program.rep, program.employee):
        refused(client, client.partner.ApprovePartnerEmployee,
                assignment(actor, program.partner, program.client, program.employee),
                PERMISSION_DENIED, "NOT_ALLOWED")
    assert not can(client, program.employee, "read", program.project)


def test_r16_partner_delegation_skips_per_person_approval(client, world, program):
    connection = link_and_accept(client, world, program.partner, program.client, approval="partner")
    assert connection.employee_approval == "partner"
    client.partner.AssignClient(assignment(program.rep, program.partner, program.client, program.employee))
    assert can(client, program.employee, "edit", program.project)
    # Delegation covers assigned employees only.
    other = world.member(program.partner, "colleague", partner_employee=True)
    assert not can(client, other, "read", program.project)


def test_r16_default_approval_is_per_person(client, world, program):
    connection = link_and_accept(client, world, program.partner, program.client)
    assert connection.employee_approval == "client"


def test_r16_employee_works_only_within_granted_scopes(client, world, program):
    world.connect(program.partner, program.client, scopes=("read", "edit"), granted=("read",))
    world.assign(program.partner, program.client, program.employee)
    assert can(client, program.employee, "read", program.project)
    assert not can(client, program.employee, "edit", program.project)
    assert not can(client, program.employee, "delete", program.project)


def test_r16_paused_employee_is_denied_and_resumed_one_is_not(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)
    request = membership_pb2.MemberRequest(actor_id=program.partner_owner, organization_id=program.partner,
                                           user_id=program.employee)
    client.membership.PauseMember(request)
    assert not can(client, program.employee, "read", program.project)
    client.membership.ResumeMember(request)
    assert can(client, program.employee, "read", program.project)


def test_r16_paused_legal_representative_is_denied(client, world, program):
    """Nobody pauses a legal representative (R7), but a paused colleague may be made one."""
    world.connect(program.partner, program.client)
    colleague = world.member(program.partner, "colleague")
    client.membership.PauseMember(membership_pb2.MemberRequest(
        actor_id=program.partner_owner, organization_id=program.partner, user_id=colleague))
    promoted = client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=program.partner_owner, organization_id=program.partner, user_id=colleague,
        role="legal_representative"))
    assert (promoted.role, promoted.status) == ("legal_representative", "paused")
    assert not can(client, colleague, "read", program.project)


# -- R17: removing access ------------------------------------------------------------------------


def test_r17_partner_unassigning_ends_access_at_once(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)
    assert can(client, program.employee, "read", program.project)

    withdrawn = client.partner.UnassignClient(assignment(program.rep, program.partner, program.client,
                                                         program.employee))

    assert not withdrawn.assigned and not withdrawn.client_approved
    assert not can(client, program.employee, "read", program.project)
    # Assigning again starts over: the client must approve again.
    client.partner.AssignClient(assignment(program.rep, program.partner, program.client, program.employee))
    assert not can(client, program.employee, "read", program.project)


def test_r17_client_withdrawing_approval_ends_access_at_once(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)
    assert can(client, program.employee, "read", program.project)

    revoked = client.partner.RevokePartnerEmployee(assignment(program.client_owner, program.partner,
                                                              program.client, program.employee))

    assert revoked.assigned and not revoked.client_approved
    assert not can(client, program.employee, "read", program.project)
    assert can(client, program.rep, "read", program.project)  # the partner itself keeps its access


def test_r17_client_trusting_delegation_still_withdraws_a_person_at_once(client, world, program):
    world.connect(program.partner, program.client, employee_approval="partner")
    world.assign(program.partner, program.client, program.employee, approve=False)
    assert can(client, program.employee, "read", program.project)

    revoked = client.partner.RevokePartnerEmployee(assignment(program.client_owner, program.partner,
                                                              program.client, program.employee))

    assert not revoked.assigned and not revoked.client_approved
    assert not can(client, program.employee, "read", program.project)
    assert can(client, program.rep, "read", program.project)


def test_r17_partner_cannot_withdraw_the_clients_approval_nor_the_client_the_assignment(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)
    refused(client, client.partner.RevokePartnerEmployee,
            assignment(program.rep, program.partner, program.client, program.employee), PERMISSION_DENIED)
    refused(client, client.partner.UnassignClient,
            assignment(program.client_owner, program.partner, program.client, program.employee), PERMISSION_DENIED)
    assert can(client, program.employee, "read", program.project)


# -- R18: cascade --------------------------------------------------------------------------------


def test_r18_removing_employee_ends_access_to_every_client(client, world, program):
    second_owner = world.user("second-client")
    second = world.organization(second_owner)
    second_project = world.project(second)
    world.connect(program.partner, program.client)
    world.connect(program.partner, second, employee_approval="partner")
    world.assign(program.partner, program.client, program.employee)
    world.assign(program.partner, second, program.employee, approve=False)
    assert can(client, program.employee, "read", program.project)
    assert can(client, program.employee, "read", second_project)

    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=program.partner_owner, organization_id=program.partner, user_id=program.employee))

    assert not can(client, program.employee, "read", program.project)
    assert not can(client, program.employee, "read", second_project)
    assert projects_of(client, program.employee) == set()

    # Coming back is a fresh start: neither re-inviting nor re-tagging restores a client.
    client.membership.InviteMember(membership_pb2.InviteMemberRequest(
        actor_id=program.partner_owner, organization_id=program.partner, email=world.email(program.employee),
        role="colleague"))
    assert not can(client, program.employee, "read", program.project)
    client.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=program.partner_owner, organization_id=program.partner, user_id=program.employee,
        partner_employee=True))
    assert not can(client, program.employee, "read", program.project)
    assert not can(client, program.employee, "read", second_project)
    assert projects_of(client, program.employee) == set()


def test_r18_removed_legal_representative_loses_every_client(client, world, program):
    world.connect(program.partner, program.client)
    assert can(client, program.rep, "read", program.project)
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=program.partner_owner, organization_id=program.partner, user_id=program.rep))
    assert not can(client, program.rep, "read", program.project)


# -- R19: one partner record per person and client ----------------------------------------------


def test_r19_second_partner_cannot_assign_the_same_person_to_the_same_client(client, world, program):
    other_owner = world.user("other-partner")
    other_partner = world.organization(other_owner, name="Andere Agentur")
    world.member(other_partner, "colleague", program.employee, partner_employee=True)
    world.connect(program.partner, program.client)
    world.connect(other_partner, program.client)
    world.assign(program.partner, program.client, program.employee)

    error = refused(client, client.partner.AssignClient,
                    assignment(other_owner, other_partner, program.client, program.employee),
                    grpc.StatusCode.ALREADY_EXISTS, "PARTNER_RECORD_CONFLICT")
    assert "already associated with another partner record for this client" in error.details()

    # The other partner may still assign them to another client, and to this one once freed.
    elsewhere_owner = world.user("elsewhere")
    elsewhere = world.organization(elsewhere_owner)
    world.connect(other_partner, elsewhere)
    client.partner.AssignClient(assignment(other_owner, other_partner, elsewhere, program.employee))
    client.partner.UnassignClient(assignment(program.rep, program.partner, program.client, program.employee))
    assert client.partner.AssignClient(assignment(other_owner, other_partner, program.client,
                                                  program.employee)).assigned


# -- R20: who reaches which client ---------------------------------------------------------------


def test_r20_legal_representatives_reach_every_client_employees_only_assigned_ones(client, world, program):
    own_project = world.project(program.partner)
    clients = {}
    for name, granted in (("a", ("read", "edit")), ("b", ("read",)), ("c", ("read", "publish"))):
        owner = world.user(f"client-{name}")
        organization = world.organization(owner)
        clients[name] = (organization, world.project(organization), world.project(organization))
        world.connect(program.partner, organization, scopes=("read", "edit", "publish"), granted=granted)
    unconnected = world.organization()
    unconnected_project = world.project(unconnected)
    world.assign(program.partner, clients["a"][0], program.employee)
    world.assign(program.partner, clients["b"][0], program.employee, approve=False)

    for person in (program.partner_owner, program.rep):
        for _organization, *projects in clients.values():
            assert all(can(client, person, "read", p) for p in projects)
        assert not can(client, person, "read", unconnected_project)
        assert can(client, person, "edit", clients["a"][1])
        assert not can(client, person, "edit", clients["b"][1])
        assert can(client, person, "publish", clients["c"][1])
        every_client_project = {p for _, *projects in clients.values() for p in projects}
        assert projects_of(client, person) == every_client_project | {own_project}
        assert projects_of(client, person, "publish") == set(clients["c"][1:]) | {own_project}

    assert projects_of(client, program.employee) == set(clients["a"][1:]) | {own_project}
    assert not can(client, program.employee, "read", clients["b"][1])  # assigned, not approved
    assert not can(client, program.employee, "read", clients["c"][1])  # not assigned
    assert projects_of(client, program.colleague) == {own_project}


# -- R21: client list export ---------------------------------------------------------------------


def export(server_address: str, actor: str, partner: str, output) -> subprocess.CompletedProcess:
    env = {**os.environ, "MANDATE_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "mandate.cli", "export-clients", actor, partner, "--server", server_address,
         "-o", str(output)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_r21_export_clients_writes_one_csv_row_per_client(client, world, program, server_address, tmp_path):
    second_owner = world.user("second-client")
    second = world.organization(second_owner)
    first = link_and_accept(client, world, program.partner, program.client, name="Kunde, Eins", number="K-1",
                            scopes=("read", "edit", "publish"), granted=("read", "publish"))
    other = link_and_accept(client, world, program.partner, second, name="Kunde Zwei", number="K-2",
                            scopes=("read",))
    client.partner.RequestDisconnect(pair(program.rep, program.partner, second))
    output = tmp_path / "clients.csv"

    result = export(server_address, program.rep, program.partner, output)

    assert result.returncode == 0, result.stderr
    with output.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["client", "customer_number", "currency", "status", "granted_scopes", "connected_since"]
    expected = {
        program.client: ["Kunde, Eins", "K-1", "EUR", "active", "publish read", first.connected_at],
        second: ["Kunde Zwei", "K-2", "EUR", "disconnect_requested", "read", other.connected_at],
    }
    listed = [c.client_id for c in list_clients(client, program.rep, program.partner)]
    assert rows[1:] == [expected[client_id] for client_id in listed]


def test_r21_colleague_cannot_export_clients(client, world, program, server_address, tmp_path):
    world.connect(program.partner, program.client)
    request = partner_pb2.ListClientsRequest(actor_id=program.colleague, partner_id=program.partner)
    refused(client, client.partner.ExportClients, request, PERMISSION_DENIED, "NOT_ALLOWED")
    refused(client, client.partner.ListClients, request, PERMISSION_DENIED, "NOT_ALLOWED")

    before = events(client)
    output = tmp_path / "clients.csv"
    result = export(server_address, program.colleague, program.partner, output)
    assert result.returncode != 0
    assert "NOT_ALLOWED" in result.stderr
    assert not output.exists() or len(output.read_text().splitlines()) <= 1  # no client leaked
    assert events(client) == before


# -- R22: notifications --------------------------------------------------------------------------


def test_r22_every_partner_change_records_an_event(client, world, program):
    since = latest_revision(client)
    invitation = invite_client(client, program.rep, program.partner, world.email(program.client_owner))
    link = invite_link(client, program.rep, program.partner)
    connected = accept(client, program.client_owner, program.client, invitation_id=invitation.id)
    steps = [
        (program.rep, EventType.CLIENT_INVITED, invitation.revision),
        (program.rep, EventType.CLIENT_INVITE_LINK_CREATED, link.revision),
        (program.client_owner, EventType.CLIENT_CONNECTED, connected.revision),
    ]

    def step(actor, event, call, request):
        steps.append((actor, event, call(request).revision))

    client_side = (program.client_owner, program.partner, program.client)
    partner_side = (program.rep, program.partner, program.client)
    step(program.client_owner, EventType.CLIENT_SCOPES_UPDATED, client.partner.UpdateGrantedScopes,
         scopes_update(*client_side, ["read"]))
    step(program.rep, EventType.PARTNER_EMPLOYEE_ASSIGNED, client.partner.AssignClient,
         assignment(*partner_side, program.employee))
    step(program.client_owner, EventType.PARTNER_EMPLOYEE_APPROVED, client.partner.ApprovePartnerEmployee,
         assignment(*client_side, program.employee))
    step(program.client_owner, EventType.PARTNER_EMPLOYEE_REVOKED, client.partner.RevokePartnerEmployee,
         assignment(*client_side, program.employee))
    step(program.rep, EventType.PARTNER_EMPLOYEE_UNASSIGNED, client.partner.UnassignClient,
         assignment(*partner_side, program.employee))
    step(program.rep, EventType.CLIENT_DISCONNECT_REQUESTED, client.partner.RequestDisconnect, pair(*partner_side))
    step(program.client_owner, EventType.CLIENT_DISCONNECT_DECLINED, client.partner.DeclineDisconnect,
         pair(*client_side))
    step(program.rep, EventType.CLIENT_DISCONNECT_REQUESTED, client.partner.RequestDisconnect, pair(*partner_side))
    step(program.client_owner, EventType.CLIENT_DISCONNECTED, client.partner.AcceptDisconnect, pair(*client_side))
    step(program.rep, EventType.INVITATION_CANCELLED, client.membership.CancelInvitation,
         membership_pb2.CancelInvitationRequest(actor_id=program.rep, invitation_id=link.id))

    recorded = events(client, since)
    assert [(actor, event, revision) for revision, event, actor, _ in recorded] == steps
    for _, event, _, attributes in recorded:
        named = "partner_id" if event != EventType.INVITATION_CANCELLED else "organization_id"
        assert attributes[named] == program.partner
    by_type = {event: attributes for _, event, _, attributes in recorded}
    assert by_type[EventType.CLIENT_INVITED]["email"] == world.email(program.client_owner)
    assert by_type[EventType.CLIENT_CONNECTED]["client_id"] == program.client
    assert by_type[EventType.CLIENT_CONNECTED]["invitation_id"] == invitation.id
    assert by_type[EventType.PARTNER_EMPLOYEE_ASSIGNED]["user_id"] == program.employee
    assert by_type[EventType.CLIENT_SCOPES_UPDATED]["granted_scopes"] == "read"


def test_r22_revoking_a_partner_records_it_and_the_withdrawn_assignments(client, world, program):
    world.connect(program.partner, program.client)
    world.assign(program.partner, program.client, program.employee)
    since = latest_revision(client)
    revoked = client.partner.RevokePartner(pair(program.client_owner, program.partner, program.client))
    recorded = events(client, since)
    assert {(event, revision) for revision, event, _, _ in recorded} == {
        (EventType.PARTNER_REVOKED, revoked.revision), (EventType.PARTNER_EMPLOYEE_UNASSIGNED, revoked.revision)}
    assert all(actor == program.client_owner for _, _, actor, _ in recorded)


def test_r22_referral_connection_records_its_event(client, program):
    email = "referral@example.com"
    invite_client(client, program.rep, program.partner, email)
    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="Ref"))
    since = latest_revision(client)
    organization = client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
        actor_id=user.id, name="Ref AG", currency="EUR"))
    connected = [attributes for _, event, _, attributes in events(client, since) if event == EventType.CLIENT_CONNECTED]
    assert connected == [{**connected[0], "client_id": organization.id, "referral": "true",
                          "partner_id": program.partner}]
