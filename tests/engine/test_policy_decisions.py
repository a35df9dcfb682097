"""Tier 3: the access decisions moved from Python into the policy, through gRPC against the real
store. Each refusal is PERMISSION_DENIED with reason NOT_ALLOWED and changes nothing (the event
log, which records every committed change, reads the same before and after).

- R7: nobody pauses an owner, a legal representative or themself;
- R6, R2: only an owner removes, demotes or makes an owner; an owner resumes a paused member
  made owner;
- R9: an emailed client invitation is accepted only by its addressee;
- R23: moving a project needs the right to unregister it in its current organization;
- R14, R16: which side acts on a connection;
- R15, R18: the tag and its assignments end when the holder stops being a colleague;
- R10, R12: a referral connection grants nothing until the client grants scopes
  (tests/partner/test_partner_rules.py::test_r10_unregistered_client_is_connected_at_signup_as_referral).
"""

from __future__ import annotations

import grpc
import pytest
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2, events_pb2, membership_pb2, partner_pb2

from tests.support import reason_of

NOT_ALLOWED = "NOT_ALLOWED"


def events(client) -> list[tuple]:
    found, token = [], ""
    while True:
        reply = client.events.ListEvents(events_pb2.ListEventsRequest(since_revision="0", page_size=1000,
                                                                      page_token=token))
        found += [(e.revision, e.type, e.actor_id, dict(e.attributes)) for e in reply.events]
        token = reply.next_page_token
        if not token:
            return found


def denied(client, call, request) -> None:
    """The policy refuses the mutation, and nothing changes (R23)."""
    before = events(client)
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    assert reason_of(caught.value) == NOT_ALLOWED
    assert events(client) == before, "a refused call changed the store"


def member(actor: str, organization: str, user: str) -> membership_pb2.MemberRequest:
    return membership_pb2.MemberRequest(actor_id=actor, organization_id=organization, user_id=user)


def set_role(actor: str, organization: str, user: str, role: str) -> membership_pb2.SetMemberRoleRequest:
    return membership_pb2.SetMemberRoleRequest(actor_id=actor, organization_id=organization, user_id=user,
                                               role=role)


def can(client, user: str, action: str, kind: str, ident: str) -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type=kind, id=ident))).allowed


def roster(client, actor: str, organization: str) -> dict[str, tuple[str, str, bool]]:
    reply = client.membership.ListMembers(membership_pb2.ListMembersRequest(
        actor_id=actor, organization_id=organization, page_size=1000))
    return {m.user_id: (m.role, m.status, m.partner_employee) for m in reply.members}


@pytest.fixture
def shop(world):
    """An organization with a second owner, two legal representatives, a colleague and a client."""
    organization = world.organization(name="Shop")
    people = {"owner": world.owner_of(organization)}
    people["owner2"] = world.member(organization, "owner")
    people["rep"] = world.member(organization, "legal_representative")
    people["rep2"] = world.member(organization, "legal_representative")
    people["colleague"] = world.member(organization, "colleague")
    people["client"] = world.member(organization, "client")
    return organization, people


# -- R7: who pauses whom ---------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "target"), [
    ("rep", "rep2"), ("rep", "rep"), ("rep", "owner"), ("owner", "rep"), ("owner", "owner2"), ("owner", "owner"),
    ("colleague", "client"),
])
def test_r7_nobody_pauses_an_owner_a_legal_representative_or_themself(client, shop, actor, target):
    organization, people = shop
    denied(client, client.membership.PauseMember, member(people[actor], organization, people[target]))
    assert roster(client, people["owner"], organization)[people[target]][1] == "active"


@pytest.mark.parametrize("actor", ["owner", "rep"])
@pytest.mark.parametrize("target", ["colleague", "client"])
def test_r7_owners_and_legal_representatives_pause_colleagues_and_client_members(client, shop, actor, target):
    organization, people = shop
    paused = client.membership.PauseMember(member(people[actor], organization, people[target]))
    assert paused.status == "paused"
    resumed = client.membership.ResumeMember(member(people[actor], organization, people[target]))
    assert resumed.status == "active"


def test_r7_a_paused_member_made_owner_is_resumed_by_an_owner_only(client, shop):
    organization, people = shop
    colleague = people["colleague"]
    client.membership.PauseMember(member(people["rep"], organization, colleague))
    made = client.membership.SetMemberRole(set_role(people["owner"], organization, colleague, "owner"))
    assert (made.role, made.status) == ("owner", "paused")
    denied(client, client.membership.ResumeMember, member(people["rep"], organization, colleague))
    resumed = client.membership.ResumeMember(member(people["owner"], organization, colleague))
    assert (resumed.role, resumed.status) == ("owner", "active")


# -- R6, R2: owners are an owner's matter ------------------------------------------------------------


def test_r6_a_legal_representative_cannot_remove_demote_or_make_an_owner(client, shop):
    organization, people = shop
    rep, owner2 = people["rep"], people["owner2"]
    denied(client, client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
        actor_id=rep, organization_id=organization, user_id=owner2))
    denied(client, client.membership.SetMemberRole, set_role(rep, organization, owner2, "colleague"))
    denied(client, client.membership.SetMemberRole, set_role(rep, organization, people["colleague"], "owner"))
    denied(client, client.membership.SetMemberRole, set_role(rep, organization, rep, "owner"))
    denied(client, client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=rep, organization_id=organization, email="new-owner@example.com", role="owner"))
    assert roster(client, people["owner"], organization)[owner2][0] == "owner"
    # ... what the legal representative may do: people who are not owners.
    assert client.membership.SetMemberRole(set_role(rep, organization, people["rep2"], "colleague")).role == \
        "colleague"
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=rep, organization_id=organization, user_id=people["client"]))
    # ... and an owner may do all of it.
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=people["owner"], organization_id=organization, user_id=owner2))
    assert owner2 not in roster(client, people["owner"], organization)


# -- R15, R18: the tag ends with being a colleague ------------------------------------------------------


def test_r15_r18_demoting_a_tagged_colleague_ends_tag_and_assignments(client, world):
    partner, customer = world.organization(name="Agency"), world.organization(name="Client")
    owner = world.owner_of(partner)
    employee = world.member(partner, "colleague", partner_employee=True)
    project = world.project(customer)
    world.connect(partner, customer, scopes=("read",))
    world.assign(partner, customer, employee)
    assert can(client, employee, "read", "Project", project)

    demoted = client.membership.SetMemberRole(set_role(owner, partner, employee, "client"))
    assert (demoted.role, demoted.partner_employee) == ("client", False)
    assert not can(client, employee, "read", "Project", project)
    # Made a colleague again, they reach nothing until tagged, assigned and approved anew.
    again = client.membership.SetMemberRole(set_role(owner, partner, employee, "colleague"))
    assert (again.role, again.partner_employee) == ("colleague", False)
    assert not can(client, employee, "read", "Project", project)
    client.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=owner, organization_id=partner, user_id=employee, partner_employee=True))
    assert not can(client, employee, "read", "Project", project)  # the old assignment ended
    world.assign(partner, customer, employee, approve=False)
    assert not can(client, employee, "read", "Project", project)  # the old approval ended too
    world.app.partners.approve_partner_employee(world.owner_of(customer), customer, partner, employee)
    assert can(client, employee, "read", "Project", project)


# -- R9: an emailed invitation is for its addressee -------------------------------------------------


def test_r9_an_emailed_client_invitation_is_accepted_only_by_its_addressee(client, world):
    partner = world.organization(name="Agency")
    customer_owner = world.user("customer")
    customer = world.organization(customer_owner, name="Customer")
    rep = world.member(customer, "legal_representative")
    invitation = client.partner.InviteClient(partner_pb2.InviteClientRequest(
        actor_id=world.owner_of(partner), partner_id=partner, email=world.email(customer_owner),
        customer_name="Customer", currency="EUR", requested_scopes=["read"]))
    accept = partner_pb2.AcceptClientInvitationRequest(invitation_id=invitation.id, client_id=customer,
                                                       granted_scopes=["read"])
    accept.actor_id = rep  # may accept invitations for the customer, but this one is not theirs
    denied(client, client.partner.AcceptClientInvitation, accept)
    accept.actor_id = customer_owner
    assert client.partner.AcceptClientInvitation(accept).status == "active"


# -- R23: moving a project ---------------------------------------------------------------------------


def test_r23_moving_a_project_needs_the_right_to_unregister_it_where_it_is(client, world):
    here, there = world.organization(name="Here"), world.organization(name="There")
    mover = world.user("mover")
    world.member(here, "colleague", mover)  # may register projects here, not unregister them
    world.member(there, "colleague", mover)
    project = world.project(here)
    move = directory_pb2.PutResourceRequest(actor_id=mover, resource=common_pb2.ObjectRef(type="Project", id=project),
                                            organization_id=there)
    denied(client, client.directory.PutResource, move)
    assert can(client, world.owner_of(here), "read", "Project", project)
    client.membership.SetMemberRole(set_role(world.owner_of(here), here, mover, "legal_representative"))
    client.directory.PutResource(move)
    assert can(client, world.owner_of(there), "read", "Project", project)
    assert not can(client, world.owner_of(here), "read", "Project", project)


# -- R14, R16, R17: which side acts on a connection -------------------------------------------------------


def test_r14_r16_each_side_acts_only_on_its_own_side_of_a_connection(client, world):
    partner, customer = world.organization(name="Agency"), world.organization(name="Client")
    partner_owner, customer_owner = world.owner_of(partner), world.owner_of(customer)
    employee = world.member(partner, "colleague", partner_employee=True)
    world.connect(partner, customer, scopes=("read",))

    def connection(actor: str) -> partner_pb2.ConnectionRequest:
        return partner_pb2.ConnectionRequest(actor_id=actor, partner_id=partner, client_id=customer)

    def assignment(actor: str) -> partner_pb2.AssignmentRequest:
        return partner_pb2.AssignmentRequest(actor_id=actor, partner_id=partner, client_id=customer,
                                             user_id=employee)

    # The partner does not act for the client ...
    denied(client, client.partner.RevokePartner, connection(partner_owner))
    denied(client, client.partner.UpdateGrantedScopes, partner_pb2.UpdateGrantedScopesRequest(
        actor_id=partner_owner, partner_id=partner, client_id=customer, granted_scopes=["read", "edit"]))
    # ... nor the client for the partner.
    denied(client, client.partner.RequestDisconnect, connection(customer_owner))
    denied(client, client.partner.AssignClient, assignment(customer_owner))
    client.partner.AssignClient(assignment(partner_owner))
    denied(client, client.partner.ApprovePartnerEmployee, assignment(partner_owner))
    client.partner.ApprovePartnerEmployee(assignment(customer_owner))
    requested = client.partner.RequestDisconnect(connection(partner_owner))
    assert requested.status == "disconnect_requested"
    denied(client, client.partner.AcceptDisconnect, connection(partner_owner))
    assert client.partner.DeclineDisconnect(connection(customer_owner)).status == "active"
