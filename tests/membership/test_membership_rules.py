"""Membership rules through gRPC against the real store (tier 3): R1 to R7, R22 to R24, and the
membership, directory and freshness RPCs around them. Every test names the rule it proves."""

from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from mandate.names import EventType, OrganizationAction, ProjectAction
from mandate.runtime.app import App
from mandate.v1 import (
    authorization_pb2,
    common_pb2,
    directory_pb2,
    events_pb2,
    membership_pb2,
    partner_pb2,
)

from tests.conftest import POLICY_DIR
from tests.factories import World
from tests.support import reason_of

_numbers = itertools.count(1)

PROJECT_ACTIONS = sorted(ProjectAction)
ORGANIZATION_ACTIONS = sorted(OrganizationAction)
OWNER_ONLY = {"link", "switch"}


# -- helpers ---------------------------------------------------------------------------------


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


def new_email(name: str = "person") -> str:
    return f"{name}-{next(_numbers)}@example.com"


def failure(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value




def assert_refused(call, request, code: grpc.StatusCode, reason: str) -> grpc.RpcError:
    error = failure(call, request)
    assert error.code() == code, error.details()
    assert reason_of(error) == reason
    return error


def check(client, user_id: str, action: str, kind: str, ident: str, revision: str = "") -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=ref("User", user_id), action=action, resource=ref(kind, ident), at_least_revision=revision)).allowed


def list_actions(client, user_id: str, kind: str, ident: str) -> list[str]:
    return list(client.authorization.ListActions(authorization_pb2.ListActionsRequest(
        actor=ref("User", user_id), resource=ref(kind, ident))).actions)


def register(client, name: str = "person") -> directory_pb2.User:
    return client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=new_email(name),
                                                                            display_name=name.title()))


def create_organization(client, owner_id: str, **fields) -> directory_pb2.Organization:
    fields.setdefault("currency", "EUR")
    return client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
        actor_id=owner_id, name="Agency", **fields))


def invite(client, actor_id: str, organization_id: str, email: str, role: str = "colleague"):
    return client.membership.InviteMember(membership_pb2.InviteMemberRequest(
        actor_id=actor_id, organization_id=organization_id, email=email, role=role))


def member_request(actor_id: str, organization_id: str, user_id: str) -> membership_pb2.MemberRequest:
    return membership_pb2.MemberRequest(actor_id=actor_id, organization_id=organization_id, user_id=user_id)


def members(client, actor_id: str, organization_id: str) -> dict[str, common_pb2.Membership]:
    reply = client.membership.ListMembers(membership_pb2.ListMembersRequest(
        actor_id=actor_id, organization_id=organization_id, page_size=1000))
    return {m.user_id: m for m in reply.members}


def pending_invitations(client, actor_id: str, organization_id: str) -> list[common_pb2.Invitation]:
    return list(client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
        actor_id=actor_id, organization_id=organization_id, status="pending", page_size=1000)).invitations)


def events_since(client, revision: int | str) -> list[common_pb2.Event]:
    return list(client.events.ListEvents(events_pb2.ListEventsRequest(since_revision=str(revision),
                                                                      page_size=1000)).events)


def current_revision(app) -> int:
    return app.store.current_revision()


# -- R1 Organization ------------------------------------------------------------------------


def test_r1_creator_is_owner_with_fixed_currency_and_default_seat_limit(client):
    owner = register(client, "founder")
    organization = create_organization(client, owner.id, currency="CHF")
    assert organization.owner_id == owner.id
    assert organization.currency == "CHF"
    assert organization.seat_limit == 5
    assert int(organization.revision) > 0
    listed = members(client, owner.id, organization.id)
    assert list(listed) == [owner.id]
    assert listed[owner.id].role == "owner" and listed[owner.id].status == "active"
    assert check(client, owner.id, "invite_member", "Organization", organization.id)


def test_r1_currency_cannot_be_changed_afterwards(client):
    # No RPC of the contract changes an organization, so its currency stays what it was created with;
    # an invitation in another currency is refused rather than converting the account (R13).
    from mandate.v1 import authorization_pb2 as a
    from mandate.v1 import directory_pb2 as d
    from mandate.v1 import membership_pb2 as m
    from mandate.v1 import partner_pb2 as p

    methods = [method.name for module, name in ((a, "AuthorizationService"), (d, "DirectoryService"),
                                                (m, "MembershipService"), (p, "PartnerService"))
               for method in module.DESCRIPTOR.services_by_name[name].methods]
    assert not [name for name in methods if "Currency" in name or name.startswith("UpdateOrganization")]
    owner = register(client, "founder")
    organization = create_organization(client, owner.id, currency="EUR")
    assert_refused(client.partner.CreateInviteLink, partner_pb2.CreateInviteLinkRequest(
        actor_id=owner.id, partner_id=organization.id, customer_name="Acme", currency="USD",
        requested_scopes=["read"]), grpc.StatusCode.FAILED_PRECONDITION, "CURRENCY_MISMATCH")


def test_r1_seat_limit_zero_means_unlimited(client):
    owner = register(client, "founder")
    organization = create_organization(client, owner.id, seat_limit=0)
    assert organization.seat_limit == 0
    for _ in range(7):
        assert invite(client, owner.id, organization.id, new_email()).status == "pending"
    assert len(pending_invitations(client, owner.id, organization.id)) == 7


def test_r1_explicit_seat_limit_counts_the_owner(client):
    owner = register(client, "founder")
    organization = create_organization(client, owner.id, seat_limit=2)
    assert organization.seat_limit == 2
    invite(client, owner.id, organization.id, new_email())
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner.id, organization_id=organization.id, email=new_email(), role="colleague"),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SEAT_LIMIT_REACHED")


# -- R2 Roles --------------------------------------------------------------------------------

ROLE_ACCESS = {
    # "switch" needs a linked account the owner also owns (R13): not in an unlinked organization.
    "owner": (PROJECT_ACTIONS, sorted(set(ORGANIZATION_ACTIONS) - {"switch"})),
    "legal_representative": (PROJECT_ACTIONS, sorted(set(ORGANIZATION_ACTIONS) - OWNER_ONLY)),
    "colleague": (["edit", "publish", "read"], ["list_members", "put_resource", "view"]),
    "client": (["approve", "read"], ["view"]),
}


@pytest.mark.parametrize("role", list(ROLE_ACCESS))
def test_r2_role_permissions(client, world, role):
    organization = world.organization()
    project = world.project(organization)
    user = world.owner_of(organization) if role == "owner" else world.member(organization, role)
    project_actions, organization_actions = ROLE_ACCESS[role]
    assert sorted(list_actions(client, user, "Project", project)) == project_actions
    assert sorted(list_actions(client, user, "Organization", organization)) == organization_actions
    for action in PROJECT_ACTIONS:
        assert check(client, user, action, "Project", project) is (action in project_actions), action
    for action in ORGANIZATION_ACTIONS:
        assert check(client, user, action, "Organization", organization) is (action in organization_actions), action


def test_r2_colleague_does_not_manage_people(client, world):
    organization = world.organization()
    colleague = world.member(organization, "colleague")
    assert_refused(client.membership.ListInvitations, membership_pb2.ListInvitationsRequest(
        actor_id=colleague, organization_id=organization), grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    # ... but sees who belongs to the organization.
    assert colleague in members(client, colleague, organization)


def test_r2_roles_give_nothing_in_another_organization(client, world):
    organization, other = world.organization(), world.organization()
    legal = world.member(organization, "legal_representative")
    project = world.project(other)
    assert list_actions(client, legal, "Project", project) == []
    assert list_actions(client, legal, "Organization", other) == []


# -- R3 Joining takes an invitation ----------------------------------------------------------


def test_r3_registered_non_member_is_denied(client, world):
    organization = world.organization()
    project = world.project(organization)
    stranger = register(client, "stranger").id
    for action in PROJECT_ACTIONS:
        assert not check(client, stranger, action, "Project", project)
    assert list_actions(client, stranger, "Organization", organization) == []
    assert_refused(client.membership.ListMembers, membership_pb2.ListMembersRequest(
        actor_id=stranger, organization_id=organization), grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    explained = client.authorization.Explain(authorization_pb2.CheckRequest(
        actor=ref("User", stranger), action="read", resource=ref("Project", project)), timeout=120)
    assert not explained.allowed
    assert any("no membership" in reason for reason in explained.reasons)
    # The policy's rule about where roles come from (R3: only through a membership) is what would allow.
    assert any(reason.startswith("would be allowed if") and "R3" in reason for reason in explained.reasons)


def test_r3_a_stranger_cannot_invite_themselves(client, world):
    organization = world.organization()
    stranger = register(client, "stranger")
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=stranger.id, organization_id=organization, email=stranger.email, role="colleague"),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert stranger.id not in members(client, world.owner_of(organization), organization)


# -- R4 Invite by email ----------------------------------------------------------------------


def test_r4_registered_user_joins_at_once(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    project = world.project(organization)
    user = register(client, "colleague")
    invitation = invite(client, owner, organization, user.email, "colleague")
    assert invitation.status == "finished"
    assert invitation.kind == "member" and invitation.role == "colleague" and invitation.invited_by == owner
    listed = members(client, owner, organization)
    assert listed[user.id].role == "colleague" and listed[user.id].status == "active"
    assert check(client, user.id, "read", "Project", project, invitation.revision)


def test_r4_unregistered_email_is_pending_until_sign_up(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    project = world.project(organization)
    email = new_email("newcomer")
    invitation = invite(client, owner, organization, email, "client")
    assert invitation.status == "pending" and invitation.email == email
    assert [i.id for i in pending_invitations(client, owner, organization)] == [invitation.id]
    assert len(members(client, owner, organization)) == 1

    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="New"))
    listed = members(client, owner, organization)
    assert listed[user.id].role == "client" and listed[user.id].status == "active"
    assert pending_invitations(client, owner, organization) == []
    finished = client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
        actor_id=owner, organization_id=organization, status="finished")).invitations
    assert [i.id for i in finished] == [invitation.id]
    assert check(client, user.id, "approve", "Project", project, user.revision)
    assert not check(client, user.id, "edit", "Project", project, user.revision)
    joined = [e for e in events_since(client, invitation.revision) if e.type == EventType.MEMBER_JOINED]
    assert [(e.attributes["user_id"], e.attributes["invitation_id"]) for e in joined] == [(user.id, invitation.id)]


def test_r4_invitation_email_matches_sign_up_whatever_the_case(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    email = new_email("casey")
    invitation = invite(client, owner, organization, email.upper())
    assert invitation.status == "pending" and invitation.email == email
    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="Casey"))
    assert members(client, owner, organization)[user.id].role == "colleague"


def test_r4_existing_member_cannot_be_invited_again(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email=world.email(colleague), role="client"),
        grpc.StatusCode.ALREADY_EXISTS, "ALREADY_MEMBER")


# -- R5 Seat limit ---------------------------------------------------------------------------


def test_r5_default_limit_lets_the_owner_add_four(client):
    owner = register(client, "founder").id
    organization = create_organization(client, owner).id  # default seat limit 5
    registered = [register(client) for _ in range(2)]
    for user in registered:
        assert invite(client, owner, organization, user.email).status == "finished"
    for _ in range(2):
        assert invite(client, owner, organization, new_email()).status == "pending"
    error = assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email=new_email(), role="colleague"),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SEAT_LIMIT_REACHED")
    assert "SEAT_LIMIT_REACHED" in error.details()
    # A registered user is refused the same way: the seat count includes pending invitations.
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email=register(client).email, role="colleague"),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SEAT_LIMIT_REACHED")
    assert len(members(client, owner, organization)) + len(pending_invitations(client, owner, organization)) == 5


def test_r5_pending_invitation_holds_a_seat_until_cancelled(client):
    owner = register(client, "founder").id
    organization = create_organization(client, owner, seat_limit=2).id
    pending = invite(client, owner, organization, new_email())
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email=new_email(), role="colleague"),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SEAT_LIMIT_REACHED")
    client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(actor_id=owner,
                                                                              invitation_id=pending.id))
    assert invite(client, owner, organization, new_email()).status == "pending"


def test_r5_sign_up_of_a_pending_invitee_takes_no_extra_seat(client):
    owner = register(client, "founder").id
    organization = create_organization(client, owner, seat_limit=2).id
    email = new_email()
    invite(client, owner, organization, email)
    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="Joiner"))
    assert set(members(client, owner, organization)) == {owner, user.id}
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email=new_email(), role="colleague"),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SEAT_LIMIT_REACHED")


def test_r5_removing_a_member_frees_the_seat(client):
    owner = register(client, "founder").id
    organization = create_organization(client, owner, seat_limit=2).id
    user = register(client)
    invite(client, owner, organization, user.email)
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(actor_id=owner, organization_id=organization,
                                                                      user_id=user.id))
    assert invite(client, owner, organization, user.email).status == "finished"


def test_r5_concurrent_invitations_never_overfill_the_organization(client):
    owner = register(client, "founder").id
    organization = create_organization(client, owner).id  # default seat limit 5
    invite(client, owner, organization, register(client).email)
    free = 5 - 2
    # Half the invitees are registered (they would join at once), half are not (pending).
    emails = [register(client).email if n % 2 else new_email("racer") for n in range(20)]
    start = threading.Barrier(len(emails))

    def attempt(email: str) -> grpc.StatusCode:
        start.wait()
        try:
            invite(client, owner, organization, email)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=len(emails)) as pool:
        outcomes = list(pool.map(attempt, emails))
    assert outcomes.count(grpc.StatusCode.OK) == free
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == len(emails) - free
    taken = len(members(client, owner, organization)) + len(pending_invitations(client, owner, organization))
    assert taken == 5


# -- R6 Disconnect a member ------------------------------------------------------------------


def test_r6_removed_member_loses_access_at_once(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    project = world.project(organization)
    colleague = world.member(organization, "colleague")
    assert check(client, colleague, "read", "Project", project)
    reply = client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=owner, organization_id=organization, user_id=colleague))
    assert list_actions(client, colleague, "Project", project) == []
    assert not check(client, colleague, "read", "Project", project, reply.revision)
    assert not check(client, colleague, "view", "Organization", organization, reply.revision)
    assert colleague not in members(client, owner, organization)
    assert [e.attributes["user_id"] for e in events_since(client, int(reply.revision) - 1)
            if e.type == EventType.MEMBER_REMOVED] == [colleague]


def test_r6_removed_member_loses_access_to_clients_reached_through_the_organization(client, world):
    partner, customer = world.organization(name="Partner"), world.organization(name="Client")
    project = world.project(customer)
    world.connect(partner, customer, scopes=("read", "edit"))
    legal = world.member(partner, "legal_representative")
    employee = world.member(partner, "colleague", partner_employee=True)
    world.assign(partner, customer, employee)
    assert check(client, legal, "edit", "Project", project)
    assert check(client, employee, "read", "Project", project)
    owner = world.owner_of(partner)
    for user in (legal, employee):
        reply = client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
            actor_id=owner, organization_id=partner, user_id=user))
        assert list_actions(client, user, "Project", project) == []
        assert not check(client, user, "read", "Project", project, reply.revision)


def test_r6_last_owner_cannot_be_removed(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    before = current_revision(world.app)
    assert_refused(client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
        actor_id=owner, organization_id=organization, user_id=owner), grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_OWNER")
    assert current_revision(world.app) == before
    assert members(client, owner, organization)[owner].role == "owner"


def test_r6_an_owner_may_be_removed_while_another_owner_remains(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    second = world.member(organization, "owner")
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=second, organization_id=organization, user_id=owner))
    assert set(members(client, second, organization)) == {second}
    assert_refused(client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
        actor_id=second, organization_id=organization, user_id=second), grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_OWNER")


def test_r6_only_an_owner_removes_an_owner(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    world.member(organization, "owner")
    legal = world.member(organization, "legal_representative")
    before = current_revision(world.app)
    assert_refused(client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
        actor_id=legal, organization_id=organization, user_id=owner), grpc.StatusCode.PERMISSION_DENIED,
        "NOT_ALLOWED")
    assert current_revision(world.app) == before
    assert members(client, owner, organization)[owner].role == "owner"


def test_a_committed_change_is_reported_done_even_if_the_index_fails_to_catch_up(client, world, monkeypatch):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")

    real_catch_up = world.app.index.catch_up
    before = current_revision(world.app)

    def failing_after_commit():
        if current_revision(world.app) == before:  # the decisions inside the transaction still see the store
            return real_catch_up()
        raise RuntimeError("index unavailable")  # the catch-up after the commit fails

    monkeypatch.setattr(world.app.index, "catch_up", failing_after_commit)
    reply = client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=owner, organization_id=organization, user_id=colleague))
    monkeypatch.undo()
    assert int(reply.revision) == current_revision(world.app)  # committed, and said so
    assert colleague not in members(client, owner, organization)


# -- R7 Pause and resume ---------------------------------------------------------------------


@pytest.fixture
def paused_world(world):
    """A colleague of an agency who also works, as an approved partner employee, on a client."""
    agency, customer = world.organization(name="Agency"), world.organization(name="Client")
    colleague = world.member(agency, "colleague", partner_employee=True)
    world.connect(agency, customer, scopes=("read", "edit", "publish"))
    world.assign(agency, customer, colleague)
    resources = [("Organization", agency), ("Project", world.project(agency)), ("Project", world.project(customer))]
    return world.owner_of(agency), agency, colleague, resources


def test_r7_paused_colleague_loses_all_access(client, paused_world):
    owner, agency, colleague, resources = paused_world
    assert all(list_actions(client, colleague, kind, ident) for kind, ident in resources)
    paused = client.membership.PauseMember(member_request(owner, agency, colleague))
    assert paused.status == "paused" and paused.role == "colleague" and paused.partner_employee
    checks = [authorization_pb2.CheckRequest(actor=ref("User", colleague), action=action, resource=ref(kind, ident),
                                             at_least_revision=paused.revision)
              for kind, ident in resources
              for action in (ORGANIZATION_ACTIONS if kind == "Organization" else PROJECT_ACTIONS)]
    results = client.authorization.BatchCheck(authorization_pb2.BatchCheckRequest(checks=checks)).results
    assert len(results) == len(checks) and not any(r.allowed for r in results)
    for kind, ident in resources:
        assert list_actions(client, colleague, kind, ident) == []
    listed = client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
        actor=ref("User", colleague), action="read", resource_type="Project"))
    assert list(listed.resource_ids) == []
    explained = client.authorization.Explain(authorization_pb2.CheckRequest(
        actor=ref("User", colleague), action="read", resource=ref(*resources[1])), timeout=120)
    assert not explained.allowed
    assert any("paused" in reason for reason in explained.reasons)
    # The membership (and its partner-employee tag) is kept.
    assert members(client, owner, agency)[colleague].status == "paused"


def test_r7_resume_restores_exactly_the_previous_access(client, paused_world):
    owner, agency, colleague, resources = paused_world
    before = {resource: list_actions(client, colleague, *resource) for resource in resources}
    client.membership.PauseMember(member_request(owner, agency, colleague))
    resumed = client.membership.ResumeMember(member_request(owner, agency, colleague))
    assert resumed.status == "active" and resumed.partner_employee
    after = {resource: list_actions(client, colleague, *resource) for resource in resources}
    assert after == before
    assert check(client, colleague, "publish", "Project", resources[2][1], resumed.revision)


def test_r7_pause_and_resume_notify_the_colleague(client, paused_world, world):
    owner, agency, colleague, _ = paused_world
    start = current_revision(world.app)
    client.membership.PauseMember(member_request(owner, agency, colleague))
    client.membership.ResumeMember(member_request(owner, agency, colleague))
    events = events_since(client, start)
    assert [e.type for e in events] == [EventType.MEMBER_PAUSED, EventType.MEMBER_RESUMED]
    for event in events:
        assert event.attributes["user_id"] == colleague
        assert event.attributes["organization_id"] == agency
        assert event.actor_id == owner


def test_r7_pause_refusals(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    assert_refused(client.membership.PauseMember, member_request(owner, organization, owner),
                   grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert_refused(client.membership.ResumeMember, member_request(owner, organization, colleague),
                   grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_ALREADY_ACTIVE")
    client.membership.PauseMember(member_request(owner, organization, colleague))
    assert_refused(client.membership.PauseMember, member_request(owner, organization, colleague),
                   grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_ALREADY_PAUSED")


# -- R22 Notifications -----------------------------------------------------------------------


def test_r22_list_events_pages_through_the_change_log(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    start = current_revision(world.app)
    emails = [new_email() for _ in range(5)]
    for email in emails:
        invite(client, owner, organization, email)
    everything = events_since(client, start)
    assert [e.type for e in everything] == [EventType.MEMBER_INVITED] * 5
    assert [e.attributes["email"] for e in everything] == emails
    revisions = [int(e.revision) for e in everything]
    assert revisions == sorted(revisions) and len(set(revisions)) == 5
    assert all(e.actor_id == owner and e.occurred_at for e in everything)

    paged, token, pages = [], "", 0
    while True:
        reply = client.events.ListEvents(events_pb2.ListEventsRequest(since_revision=str(start), page_size=2,
                                                                      page_token=token))
        paged += reply.events
        pages += 1
        token = reply.next_page_token
        if not token:
            break
        assert len(reply.events) == 2
    assert pages == 3
    assert [e.revision for e in paged] == [e.revision for e in everything]


def test_r22_event_types_name_the_change(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    start = current_revision(world.app)
    pending = invite(client, owner, organization, new_email())
    user = register(client)
    invite(client, owner, organization, user.email)
    client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(actor_id=owner,
                                                                              invitation_id=pending.id))
    client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=owner, organization_id=organization, user_id=user.id, role="client"))
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(actor_id=owner, organization_id=organization,
                                                                      user_id=user.id))
    types = [e.type for e in events_since(client, start)]
    assert types == [EventType.MEMBER_INVITED, EventType.USER_REGISTERED, EventType.MEMBER_INVITED,
                     EventType.MEMBER_JOINED, EventType.INVITATION_CANCELLED, EventType.MEMBER_ROLE_CHANGED,
                     EventType.MEMBER_REMOVED]


def test_r22_watch_streams_history_then_new_changes(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    start = current_revision(world.app)
    earlier = invite(client, owner, organization, new_email("earlier"))
    stream = client.events.Watch(events_pb2.WatchRequest(since_revision=str(start)))
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
        first = received.get(timeout=20)
        assert isinstance(first, common_pb2.Event), first
        assert first.type == EventType.MEMBER_INVITED and first.attributes["invitation_id"] == earlier.id
        later = invite(client, owner, organization, new_email("later"))
        second = received.get(timeout=20)
        assert isinstance(second, common_pb2.Event), second
        assert (second.type, second.attributes["invitation_id"]) == (EventType.MEMBER_INVITED, later.id)
        assert second.revision == later.revision
    finally:
        stream.cancel()
        reader.join(timeout=20)
    assert not reader.is_alive()


# -- R23 Everything is checked by the policy ---------------------------------------------------

def _colleague_mutation(client, rpc: str, colleague: str, organization: str, target: str):
    if rpc == "InviteMember":
        return client.membership.InviteMember, membership_pb2.InviteMemberRequest(
            actor_id=colleague, organization_id=organization, email=new_email(), role="colleague")
    if rpc == "RemoveMember":
        return client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
            actor_id=colleague, organization_id=organization, user_id=target)
    if rpc == "SetMemberRole":
        return client.membership.SetMemberRole, membership_pb2.SetMemberRoleRequest(
            actor_id=colleague, organization_id=organization, user_id=colleague, role="legal_representative")
    if rpc == "TagPartnerEmployee":
        return client.membership.TagPartnerEmployee, membership_pb2.TagPartnerEmployeeRequest(
            actor_id=colleague, organization_id=organization, user_id=target, partner_employee=True)
    if rpc == "DeleteResource":
        return client.directory.DeleteResource, directory_pb2.DeleteResourceRequest(
            actor_id=colleague, resource=ref("Project", target))
    return getattr(client.membership, rpc), member_request(colleague, organization, target)


@pytest.mark.parametrize("rpc", ["InviteMember", "RemoveMember", "PauseMember", "ResumeMember", "SetMemberRole",
                                 "TagPartnerEmployee", "DeleteResource"])
def test_r23_colleague_mutation_is_denied_and_changes_nothing(client, world, rpc):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    target = world.member(organization, "colleague")
    if rpc == "ResumeMember":
        world.app.memberships.pause_member(owner, organization, target)
    if rpc == "DeleteResource":
        target = world.project(organization)
    before_members = members(client, owner, organization)
    before = current_revision(world.app)
    call, request = _colleague_mutation(client, rpc, colleague, organization, target)
    error = assert_refused(call, request, grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert "NOT_ALLOWED" in error.details()
    assert current_revision(world.app) == before
    assert events_since(client, before) == []
    assert members(client, owner, organization) == before_members
    if rpc == "DeleteResource":
        assert check(client, colleague, "read", "Project", target)


def test_r23_owner_of_another_organization_is_denied(client, world):
    organization, other = world.organization(), world.organization()
    colleague = world.member(organization, "colleague")
    before = current_revision(world.app)
    assert_refused(client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
        actor_id=world.owner_of(other), organization_id=organization, user_id=colleague),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert current_revision(world.app) == before


# -- R24 Fail closed -------------------------------------------------------------------------

UNKNOWN_CASES = {
    "unknown actor": ("User", "usr_nobody", "read", "Project", None),
    "unknown resource": ("User", None, "read", "Project", "no-such-project"),
    "unknown action": ("User", None, "fly", "Project", None),
    "unknown organization": ("User", None, "view", "Organization", "org_nowhere"),
    "unknown resource type": ("User", None, "read", "Widget", None),
    "actor that is not a user": ("Organization", "ORG", "read", "Project", None),
}


@pytest.mark.parametrize("case", list(UNKNOWN_CASES))
def test_r24_unknown_things_are_denied_not_errors(client, world, case):
    organization = world.organization()
    project = world.project(organization)
    owner = world.owner_of(organization)
    actor_type, actor_id, action, resource_type, resource_id = UNKNOWN_CASES[case]
    actor_id = organization if actor_id == "ORG" else actor_id or owner
    resource_id = resource_id or project
    request = authorization_pb2.CheckRequest(actor=ref(actor_type, actor_id), action=action,
                                             resource=ref(resource_type, resource_id))
    assert client.authorization.Check(request).allowed is False
    batch = client.authorization.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[request]))
    assert [r.allowed for r in batch.results] == [False]
    explained = client.authorization.Explain(request, timeout=120)
    assert explained.allowed is False and explained.reasons
    actions = client.authorization.ListActions(authorization_pb2.ListActionsRequest(
        actor=ref(actor_type, actor_id), resource=ref(resource_type, resource_id))).actions
    assert action not in actions


def test_r24_policy_runtime_error_is_an_error_never_an_allow(client, world, monkeypatch):
    organization = world.organization()
    project = world.project(organization)
    owner = world.owner_of(organization)
    assert check(client, owner, "read", "Project", project)
    policy = world.app.authorizer.policy

    def broken(*_args, **_kwargs):
        raise RuntimeError("policy blew up")

    # Forget remembered answers so the (now broken) policy engine is asked again.
    monkeypatch.setattr(policy, "_allowed", {})
    monkeypatch.setattr(policy, "_actions", {})
    monkeypatch.setattr(world.app.authorizer, "_memo", (None, -1, {}))
    monkeypatch.setattr(policy._oso, "is_allowed", broken)
    request = authorization_pb2.CheckRequest(actor=ref("User", owner), action="read", resource=ref("Project", project))
    for call, message in ((client.authorization.Check, request),
                          (client.authorization.BatchCheck, authorization_pb2.BatchCheckRequest(checks=[request])),
                          (client.authorization.Explain, request)):
        error = failure(call, message)
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "policy blew up" not in (error.details() or "")
    # A mutation decided by the broken policy is refused and changes nothing.
    before = current_revision(world.app)
    error = failure(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email=new_email(), role="colleague"))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert current_revision(world.app) == before


def test_r24_store_failure_while_deciding_is_an_error(client, world, monkeypatch):
    organization = world.organization()
    project = world.project(organization)
    owner = world.owner_of(organization)

    def broken(*_args, **_kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(world.app.index, "subject", broken)
    error = failure(client.authorization.Check, authorization_pb2.CheckRequest(
        actor=ref("User", owner), action="read", resource=ref("Project", project)))
    assert error.code() == grpc.StatusCode.INTERNAL


# -- Freshness: at_least_revision --------------------------------------------------------------


def test_at_least_revision_answers_from_fresh_data(client, world, database_url):
    organization = world.organization()
    project = world.project(organization)
    # Another process (another replica) writes to the same store; this server learns of it only
    # when a check asks for the newer revision.
    other = App(database_url, POLICY_DIR)
    try:
        user = World(other).user("remote")
        invitation = other.memberships.invite_member(world.owner_of(organization), organization,
                                                     World(other).email(user), "colleague")
    finally:
        other.close()
    reply = client.authorization.Check(authorization_pb2.CheckRequest(
        actor=ref("User", user), action="edit", resource=ref("Project", project),
        at_least_revision=str(invitation.revision)))
    assert reply.allowed
    assert int(reply.revision) >= invitation.revision


def test_at_least_revision_beyond_the_store_is_failed_precondition(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    future = str(current_revision(world.app) + 1000)
    request = authorization_pb2.CheckRequest(actor=ref("User", owner), action="view",
                                             resource=ref("Organization", organization), at_least_revision=future)
    error = assert_refused(client.authorization.Check, request, grpc.StatusCode.FAILED_PRECONDITION,
                           "REVISION_UNAVAILABLE")
    assert "at_least_revision" in error.details()
    assert_refused(client.authorization.ListActions, authorization_pb2.ListActionsRequest(
        actor=request.actor, resource=request.resource, at_least_revision=future),
        grpc.StatusCode.FAILED_PRECONDITION, "REVISION_UNAVAILABLE")
    assert_refused(client.authorization.BatchCheck, authorization_pb2.BatchCheckRequest(checks=[request]),
                   grpc.StatusCode.FAILED_PRECONDITION, "REVISION_UNAVAILABLE")


# -- Invitations: cancel and list ------------------------------------------------------------


def test_cancel_invitation_only_once(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    invitation = invite(client, owner, organization, new_email())
    request = membership_pb2.CancelInvitationRequest(actor_id=owner, invitation_id=invitation.id)
    cancelled = client.membership.CancelInvitation(request)
    assert cancelled.id == invitation.id and cancelled.status == "cancelled"
    assert int(cancelled.revision) > int(invitation.revision)
    assert_refused(client.membership.CancelInvitation, request, grpc.StatusCode.FAILED_PRECONDITION,
                   "INVITATION_NOT_PENDING")
    # A cancelled invitation is not completed by signing up.
    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=invitation.email,
                                                                           display_name="Late"))
    assert user.id not in members(client, owner, organization)


def test_cancel_finished_invitation_is_refused(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    finished = invite(client, owner, organization, register(client).email)
    assert_refused(client.membership.CancelInvitation, membership_pb2.CancelInvitationRequest(
        actor_id=owner, invitation_id=finished.id), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_NOT_PENDING")


def test_cancel_invitation_link(client, world):
    partner = world.organization()
    owner = world.owner_of(partner)
    link = client.partner.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
        actor_id=owner, partner_id=partner, customer_name="Acme", currency="EUR", requested_scopes=["read"]))
    assert link.token and link.kind == "client"
    cancelled = client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(
        actor_id=owner, invitation_id=link.id))
    assert cancelled.status == "cancelled" and cancelled.kind == "client" and not cancelled.token


def test_list_invitations_search_status_and_paging(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    alices = [invite(client, owner, organization, f"alice.{n}-{next(_numbers)}@example.com") for n in range(3)]
    bobs = [invite(client, owner, organization, f"bob.{n}-{next(_numbers)}@example.com") for n in range(2)]
    link = client.partner.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
        actor_id=owner, partner_id=organization, customer_name="Bäckerei Müller", currency="EUR"))
    client.membership.CancelInvitation(membership_pb2.CancelInvitationRequest(actor_id=owner,
                                                                              invitation_id=bobs[0].id))

    def listed(**fields) -> list[str]:
        reply = client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
            actor_id=owner, organization_id=organization, **fields))
        return [i.id for i in reply.invitations]

    every = [i.id for i in alices + bobs] + [link.id]
    assert listed() == every
    assert listed(query="ALICE") == [i.id for i in alices]
    assert listed(query="müller") == [link.id]
    assert listed(status="cancelled") == [bobs[0].id]
    assert listed(query="bob", status="pending") == [bobs[1].id]
    assert listed(query="nobody-matches") == []

    paged, token = [], ""
    while True:
        reply = client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
            actor_id=owner, organization_id=organization, page_size=2, page_token=token))
        assert len(reply.invitations) <= 2
        paged += [i.id for i in reply.invitations]
        token = reply.next_page_token
        if not token:
            break
    assert paged == every


def test_list_members_pages(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    for _ in range(4):
        world.member(organization, "colleague")
    paged, token = [], ""
    while True:
        reply = client.membership.ListMembers(membership_pb2.ListMembersRequest(
            actor_id=owner, organization_id=organization, page_size=2, page_token=token))
        paged += [m.user_id for m in reply.members]
        token = reply.next_page_token
        if not token:
            break
    assert sorted(paged) == sorted(members(client, owner, organization)) and len(paged) == 5


# -- Roles and tags --------------------------------------------------------------------------


def test_set_member_role_changes_access(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    assert not check(client, colleague, "invite_member", "Organization", organization)
    promoted = client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=owner, organization_id=organization, user_id=colleague, role="legal_representative"))
    assert promoted.role == "legal_representative" and promoted.status == "active"
    assert check(client, colleague, "invite_member", "Organization", organization, promoted.revision)
    # A legal representative manages people but does not make owners.
    assert_refused(client.membership.SetMemberRole, membership_pb2.SetMemberRoleRequest(
        actor_id=colleague, organization_id=organization, user_id=colleague, role="owner"),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert_refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(
        actor_id=colleague, organization_id=organization, email=new_email(), role="owner"),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")


def test_set_member_role_keeps_the_last_owner(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    assert_refused(client.membership.SetMemberRole, membership_pb2.SetMemberRoleRequest(
        actor_id=owner, organization_id=organization, user_id=owner, role="colleague"),
        grpc.StatusCode.FAILED_PRECONDITION, "LAST_OWNER")
    second = world.member(organization, "colleague")
    client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=owner, organization_id=organization, user_id=second, role="owner"))
    demoted = client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=owner, organization_id=organization, user_id=owner, role="colleague"))
    assert demoted.role == "colleague"
    assert not check(client, owner, "invite_member", "Organization", organization, demoted.revision)


def test_tag_partner_employee(client, world):
    partner, customer = world.organization(), world.organization()
    owner = world.owner_of(partner)
    project = world.project(customer)
    world.connect(partner, customer, employee_approval="partner")
    colleague = world.member(partner, "colleague")
    assert_refused(client.partner.AssignClient, partner_pb2.AssignmentRequest(
        actor_id=owner, partner_id=partner, client_id=customer, user_id=colleague),
        grpc.StatusCode.FAILED_PRECONDITION, "NOT_PARTNER_EMPLOYEE")
    tagged = client.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=owner, organization_id=partner, user_id=colleague, partner_employee=True))
    assert tagged.partner_employee and tagged.role == "colleague"
    assert members(client, owner, partner)[colleague].partner_employee
    client.partner.AssignClient(partner_pb2.AssignmentRequest(actor_id=owner, partner_id=partner,
                                                              client_id=customer, user_id=colleague))
    assert check(client, colleague, "read", "Project", project)
    untagged = client.membership.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(
        actor_id=owner, organization_id=partner, user_id=colleague, partner_employee=False))
    assert not untagged.partner_employee
    assert not check(client, colleague, "read", "Project", project, untagged.revision)
    # Only colleagues carry the tag.
    client_member = world.member(partner, "client")
    assert_refused(client.membership.TagPartnerEmployee, membership_pb2.TagPartnerEmployeeRequest(
        actor_id=owner, organization_id=partner, user_id=client_member, partner_employee=True),
        grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_COLLEAGUE")


# -- Linked organizations (R13) ------------------------------------------------------------------


def test_link_organizations_lets_an_owner_switch(client, world):
    owner = world.user("owner")
    euro = world.organization(owner, currency="EUR", name="Euro")
    dollar = world.organization(owner, currency="USD", name="Dollar")
    assert not check(client, owner, "switch", "Organization", dollar)  # not linked yet
    reply = client.directory.LinkOrganizations(directory_pb2.LinkOrganizationsRequest(
        actor_id=owner, organization_id=euro, other_organization_id=dollar))
    assert int(reply.revision) > 0
    # The owner of both linked accounts switches between them.
    assert check(client, owner, "switch", "Organization", dollar, reply.revision)
    assert check(client, owner, "switch", "Organization", euro)
    # A second owner of the euro account only owns one side: no switch, and nothing else either.
    co_owner = world.member(euro, "owner")
    assert not check(client, co_owner, "switch", "Organization", dollar)
    assert list_actions(client, co_owner, "Organization", dollar) == []
    assert not check(client, co_owner, "read", "Project", world.project(dollar))
    legal = world.member(euro, "legal_representative")
    assert not check(client, legal, "switch", "Organization", dollar)
    stranger = world.user("stranger")
    assert not check(client, stranger, "switch", "Organization", dollar)
    # Removed from one side, the owner no longer switches into it (R6).
    client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=co_owner, organization_id=euro, user_id=owner))
    assert not check(client, owner, "switch", "Organization", dollar)
    assert not check(client, owner, "switch", "Organization", euro)


def test_link_organizations_needs_ownership_of_both(client, world):
    owner = world.user("owner")
    mine = world.organization(owner)
    theirs = world.organization()
    before = current_revision(world.app)
    assert_refused(client.directory.LinkOrganizations, directory_pb2.LinkOrganizationsRequest(
        actor_id=owner, organization_id=mine, other_organization_id=theirs),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert current_revision(world.app) == before
    assert not check(client, owner, "switch", "Organization", theirs)
    # A legal representative of an account is not its owner: linking it is refused too.
    legal = world.member(mine, "legal_representative")
    other_of_legal = world.organization(legal)
    before = current_revision(world.app)
    assert_refused(client.directory.LinkOrganizations, directory_pb2.LinkOrganizationsRequest(
        actor_id=legal, organization_id=other_of_legal, other_organization_id=mine),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert current_revision(world.app) == before
    assert not check(client, legal, "switch", "Organization", other_of_legal)  # owns it, but nothing linked
    assert not check(client, legal, "switch", "Organization", mine)


# -- Resources ---------------------------------------------------------------------------------


def test_put_and_delete_resource(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    client_member = world.member(organization, "client")
    put = client.directory.PutResource(directory_pb2.PutResourceRequest(
        actor_id=colleague, resource=ref("Project", "launch-campaign"), organization_id=organization))
    assert check(client, colleague, "edit", "Project", "launch-campaign", put.revision)
    assert check(client, client_member, "approve", "Project", "launch-campaign", put.revision)
    assert_refused(client.directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=client_member, resource=ref("Project", "sneaky"), organization_id=organization),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert not check(client, owner, "read", "Project", "sneaky")
    deleted = client.directory.DeleteResource(directory_pb2.DeleteResourceRequest(
        actor_id=owner, resource=ref("Project", "launch-campaign")))
    assert int(deleted.revision) > int(put.revision)
    assert not check(client, owner, "read", "Project", "launch-campaign", deleted.revision)
    assert_refused(client.directory.DeleteResource, directory_pb2.DeleteResourceRequest(
        actor_id=owner, resource=ref("Project", "launch-campaign")), grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND")


def test_put_resource_cannot_move_a_project_out_of_another_organization(client, world):
    organization, other = world.organization(), world.organization()
    project = world.project(organization)
    intruder = world.owner_of(other)
    assert_refused(client.directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=intruder, resource=ref("Project", project), organization_id=other),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert check(client, world.owner_of(organization), "read", "Project", project)
    assert not check(client, intruder, "read", "Project", project)
