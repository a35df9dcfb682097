"""Invitations that lapse and access that ends by itself (R5, R6, R11, R14, R17, R18), through
gRPC on every engine. Time is a ManualClock moved by the test; the sweeper's tick is called
directly (`app.expiries.sweep()`), except where the background sweeper itself is under test."""

from __future__ import annotations

import datetime
import threading

import grpc
import pytest
from mandate.clock import ManualClock, as_text
from mandate.names import EventType
from mandate.runtime.app import App
from mandate.runtime.config import Config
from mandate.shared.expiry import Lifetimes
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2, events_pb2, membership_pb2, partner_pb2

from tests.conftest import POLICY_DIR
from tests.support import reason_of, wait_until


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(database_url, clock):
    application = App(database_url, POLICY_DIR, lifetimes=Lifetimes(clock=clock))
    yield application
    application.close()


def later(clock: ManualClock, **delta) -> str:
    return as_text(clock.now() + datetime.timedelta(**delta))


def refused(call, request, code: grpc.StatusCode, reason: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    assert (caught.value.code(), reason_of(caught.value)) == (code, reason), caught.value.details()
    return caught.value


def allowed(client, user: str, action: str, kind: str, ident: str) -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type=kind, id=ident))).allowed


def expiry_events(client, since: str) -> list[tuple]:
    reply = client.events.ListEvents(events_pb2.ListEventsRequest(since_revision=since, page_size=1000))
    return sorted((e.type, e.cause) for e in reply.events if e.cause)


def test_r5_r11_invitations_lapse_after_the_ttl_free_their_seat_and_cannot_be_accepted(client, world, app, clock):
    owner = world.user("owner")
    agency = world.organization(owner, seat_limit=2)  # the owner and one pending invitation
    invitation = client.membership.InviteMember(membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=agency, email="late@example.com", role="colleague"))
    assert invitation.expires_at == later(clock, days=14)
    link = client.partner.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
        actor_id=owner, partner_id=agency, customer_name="Shop", currency="EUR", requested_scopes=["read"]))
    shop = world.organization()
    revision = str(app.store.current_revision())

    clock.advance(days=14, seconds=1)
    # Lapsed before the sweeper wrote it down: the seat is already free (R5), the link refused (R11).
    client.membership.InviteMember(membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=agency, email="next@example.com", role="colleague"))
    error = refused(client.partner.AcceptClientInvitation, partner_pb2.AcceptClientInvitationRequest(
        actor_id=world.owner_of(shop), token=link.token, client_id=shop, granted_scopes=["read"]),
        grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_NOT_PENDING")
    assert "expired" in error.details()

    app.expiries.sweep()
    expired = client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
        actor_id=owner, organization_id=agency, status="expired")).invitations
    assert sorted(i.id for i in expired) == sorted([invitation.id, link.id])
    assert {i.status for i in expired} == {"expired"}
    assert expiry_events(client, revision) == [(EventType.INVITATION_EXPIRED, "expired")] * 2
    # Signing up later does not complete a lapsed invitation (R4).
    late = world.app.directory.register_user("late@example.com", "Late")[0].id
    assert not allowed(client, late, "view", "Organization", agency)
    error = refused(client.membership.CancelInvitation, membership_pb2.CancelInvitationRequest(
        actor_id=owner, invitation_id=invitation.id), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_NOT_PENDING")
    assert "expired" in error.details()


def test_r6_r14_r17_r18_access_ends_by_itself_with_the_trace_of_the_manual_change(client, world, app, clock):
    partner = world.organization()
    owner = world.owner_of(partner)
    shop, other_shop = world.organization(), world.organization()
    site, other_site = world.project(shop), world.project(other_shop)
    world.connect(partner, shop)
    employee = world.member(partner, partner_employee=True)
    temp = world.member(partner, partner_employee=True)
    world.assign(partner, shop, employee)
    world.assign(partner, shop, temp)
    # The temp's membership ends in an hour; the connection to other_shop in two; the employee's
    # assignment to shop in three.
    client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=owner, organization_id=partner, user_id=temp, role="colleague",
        access_expires_at=later(clock, hours=1)))
    connection = client.partner.AcceptClientInvitation(partner_pb2.AcceptClientInvitationRequest(
        actor_id=world.owner_of(other_shop), client_id=other_shop, granted_scopes=["read"],
        token=world.app.partners.create_invite_link(owner, partner, "Other", "", "EUR", ["read"]).token,
        access_expires_at=later(clock, hours=2)))
    assert connection.access_expires_at == later(clock, hours=2)
    assigned = client.partner.AssignClient(partner_pb2.AssignmentRequest(
        actor_id=owner, partner_id=partner, client_id=shop, user_id=employee,
        access_expires_at=later(clock, hours=3)))  # already assigned: moves the end
    assert assigned.access_expires_at == later(clock, hours=3)
    explained = client.authorization.Explain(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=temp), action="read",
        resource=common_pb2.ObjectRef(type="Project", id=site)))
    assert explained.allowed and any(f"{partner} ends by itself at {later(clock, hours=1)}" in reason
                                     for reason in explained.reasons), explained.reasons
    assert allowed(client, temp, "read", "Project", site) and allowed(client, owner, "read", "Project", other_site)
    revision = str(app.store.current_revision())

    clock.advance(hours=1)
    assert app.expiries.sweep() is not None
    assert not allowed(client, temp, "read", "Project", site)  # R6, and R18 for the assignment
    assert allowed(client, employee, "read", "Project", site)
    clock.advance(hours=1)
    app.expiries.sweep()
    assert not allowed(client, owner, "read", "Project", other_site)  # R14
    clock.advance(hours=1)
    app.expiries.sweep()
    assert not allowed(client, employee, "read", "Project", site)  # R17
    assert app.expiries.sweep() is None  # nothing left: no empty change

    assert expiry_events(client, revision) == sorted([
        (EventType.MEMBER_REMOVED, "expired"), (EventType.PARTNER_EMPLOYEE_UNASSIGNED, "cascade"),
        (EventType.CLIENT_DISCONNECTED, "expired"), (EventType.PARTNER_EMPLOYEE_UNASSIGNED, "expired")])
    listed = client.partner.ListClients(partner_pb2.ListClientsRequest(actor_id=owner, partner_id=partner))
    assert {c.client_id: c.status for c in listed.connections}[other_shop] == "disconnected"


def test_r6_an_end_is_moved_kept_or_cleared_and_must_lie_ahead(client, world, app, clock):
    organization = world.organization()
    owner = world.owner_of(organization)
    member = world.member(organization)

    def set_role(ends: str, role: str = "colleague", user: str = member):
        return client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
            actor_id=owner, organization_id=organization, user_id=user, role=role, access_expires_at=ends))

    assert set_role(later(clock, hours=1)).access_expires_at == later(clock, hours=1)
    assert set_role("2030-06-01T12:00:00+02:00").access_expires_at == "2030-06-01T10:00:00.000000Z"
    assert set_role("", role="legal_representative").access_expires_at == "2030-06-01T10:00:00.000000Z"
    assert set_role("never").access_expires_at == ""
    for bad in ("tomorrow", "2030-06-01", "2030-06-01T10:00:00", "x" * 300):
        error = refused(lambda r, bad=bad: set_role(bad), None, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert "access_expires_at:" in error.details()
    refused(lambda r: set_role(later(clock, seconds=-1)), None, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    refused(lambda r: set_role(later(clock, hours=1), role="owner"), None, grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT")
    refused(client.partner.UnassignClient, partner_pb2.AssignmentRequest(
        actor_id=owner, partner_id=organization, client_id=organization, user_id=member,
        access_expires_at=later(clock, hours=1)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    clock.advance(days=365)
    assert app.expiries.sweep() is None  # cleared: nothing ends
    assert member in {m.user_id for m in client.membership.ListMembers(membership_pb2.ListMembersRequest(
        actor_id=owner, organization_id=organization)).members}


def test_r6_the_sweeper_ends_access_within_a_second_and_replicas_write_it_once(database_url, world, app, clock):
    organization = world.organization()
    owner = world.owner_of(organization)
    member = world.member(organization)
    world.app.memberships.set_member_role(owner, organization, member, "colleague", later(clock, minutes=5))
    replica = App(database_url, POLICY_DIR, lifetimes=Lifetimes(clock=clock))
    try:
        clock.advance(minutes=5)
        # Two replicas sweeping at the same moment write the ending once.
        results = []
        sweepers = [threading.Thread(target=lambda a=a: results.append(a.expiries.apply_due()))
                    for a in (app, replica)]
        for sweeper in sweepers:
            sweeper.start()
        for sweeper in sweepers:
            sweeper.join()
        assert sorted(results, key=str) == sorted([None, results[0] or results[1]], key=str)
        removals = [e for e in app.events.list_events(0, 0, 1000) if e.cause == "expired"]
        assert [e.type for e in removals] == [EventType.MEMBER_REMOVED]
        # On PostgreSQL one replica holds the sweeper's lock, and another takes over when it goes.
        assert app.expiries._leader.held()
        assert replica.expiries._leader.held() == (app.store.engine.dialect.name != "postgresql")
        app.expiries._leader.release()
        assert replica.expiries._leader.held()
        replica.expiries._leader.release()

        # The background sweeper: an invitation lapses without anyone calling.
        invitation = world.app.memberships.invite_member(owner, organization, "gone@example.com", "colleague")
        replica.start_expiring()
        clock.advance(days=15)
        assert wait_until(lambda: replica.memberships.list_invitations(
            owner, organization, "", "expired", 10, "")[0].id == invitation.id if replica.memberships.list_invitations(
            owner, organization, "", "expired", 10, "") else False)
    finally:
        replica.close()


def test_invitation_ttl_setting():
    assert Config.from_env({}).invitation_ttl == datetime.timedelta(days=14)
    assert Config.from_env({"MANDATE_INVITATION_TTL": "36h"}).invitation_ttl == datetime.timedelta(hours=36)
    for bad in ("14", "0d", "1w", "-3d"):
        with pytest.raises(ValueError, match="MANDATE_INVITATION_TTL"):
            Config.from_env({"MANDATE_INVITATION_TTL": bad})


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test alone: it is stopped and started under a running app."""
    from mandate.store.localpg import LocalPostgres
    from mandate.store.migrate import upgrade

    server = LocalPostgres()
    try:
        server.start()
        url = server.create_database("sweeper")
        upgrade(url)
        yield server, url
    finally:
        server.close()


def test_r6_the_sweeper_survives_a_postgresql_restart(own_postgres, clock, caplog):
    """issue 18 item 14: after PostgreSQL restarts under a running replica that leads the sweeper,
    an end due after the restart is still written within the sweep interval, and the log has one
    line for the loss and one for the recovery, nothing else (no traceback every tick)."""
    from mandate.store import models

    from tests.factories import World

    server, url = own_postgres
    replica = App(url, POLICY_DIR, lifetimes=Lifetimes(clock=clock))
    try:
        world = World(replica)
        organization = world.organization()
        owner = world.owner_of(organization)
        member = world.member(organization)
        replica.memberships.set_member_role(owner, organization, member, "colleague", later(clock, minutes=5))
        replica.start_polling()
        replica.start_expiring()
        assert wait_until(lambda: replica.expiries._leader._held, 10)  # this replica leads the sweeper
        caplog.clear()
        caplog.set_level("WARNING")

        server.stop("immediate")  # every connection drops at once, the sweeper's lock with it
        assert wait_until(lambda: not replica.store.available, 10)
        server.start()
        assert wait_until(lambda: replica.store.available, 10)
        clock.advance(minutes=5)

        def removed() -> bool:
            with replica.store.read() as session:
                return session.get(models.Membership, (organization, member)).status == models.MemberStatus.REMOVED

        assert wait_until(removed, 3)  # a tick is 0.25 s; the promise is about a second
        lines = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert [level for level, _ in lines] == ["WARNING", "WARNING"], lines
        assert "cannot be reached" in lines[0][1] and "reachable again" in lines[1][1], lines
        assert not any(r.exc_info for r in caplog.records)
    finally:
        replica.close()


def test_r4_r5_r6_an_invitation_whose_access_has_ended_makes_no_member_at_sign_up(client, world, app, clock):
    """issue 18 item 15: a pending invitation whose `access_expires_at` has passed (the invitation
    itself has not lapsed yet) makes no member when its addressee signs up, before any sweep; its
    seat is free again (R5), cancelling it says it expired, and the sweeper writes it down."""
    owner = world.user("owner")
    organization = world.organization(owner, seat_limit=2)  # the owner and one pending invitation
    invitation = client.membership.InviteMember(membership_pb2.InviteMemberRequest(
        actor_id=owner, organization_id=organization, email="brief@example.com", role="colleague",
        access_expires_at=later(clock, hours=1)))
    revision = str(app.store.current_revision())

    clock.advance(hours=1)
    user = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(
        email="brief@example.com", display_name="Brief")).id
    members = client.membership.ListMembers(membership_pb2.ListMembersRequest(
        actor_id=owner, organization_id=organization)).members
    assert user not in {m.user_id for m in members}
    assert not allowed(client, user, "view", "Organization", organization)
    error = refused(client.membership.CancelInvitation, membership_pb2.CancelInvitationRequest(
        actor_id=owner, invitation_id=invitation.id), grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_NOT_PENDING")
    assert "ended" in error.details()
    client.membership.InviteMember(membership_pb2.InviteMemberRequest(  # its seat is free (R5)
        actor_id=owner, organization_id=organization, email="next@example.com", role="colleague"))

    assert app.expiries.sweep() is not None
    expired = client.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
        actor_id=owner, organization_id=organization, status="expired")).invitations
    assert [i.id for i in expired] == [invitation.id]
    assert (EventType.INVITATION_EXPIRED, "expired") in expiry_events(client, revision)
    assert EventType.MEMBER_JOINED not in {e.type for e in client.events.ListEvents(
        events_pb2.ListEventsRequest(since_revision=revision, page_size=1000)).events}


def test_r6_r14_r17_an_access_whose_end_has_passed_is_never_granted_before_the_sweep(client, world, app, clock):
    """issue 18 item 15: a membership, a connection and an assignment whose end has passed grant
    nothing from that moment, in every decision (Check, lists, Explain, AccessReview, a mutation's
    own permission), though the sweeper has not written the ending yet; answers given before
    the end are not reused after it."""
    partner = world.organization()
    owner = world.owner_of(partner)
    shop, other_shop = world.organization(), world.organization()
    site, other_site = world.project(shop), world.project(other_shop)
    world.connect(partner, shop)
    employee = world.member(partner, partner_employee=True)
    temp = world.member(partner, "legal_representative")  # reads the partner's clients (R12)
    world.assign(partner, shop, employee)
    world.app.memberships.set_member_role(owner, partner, temp, "legal_representative", later(clock, hours=1))
    world.app.partners.accept_client_invitation(
        world.owner_of(other_shop), "", world.app.partners.create_invite_link(
            owner, partner, "Other", "", "EUR", ["read"]).token, other_shop, ["read"], "client",
        access_expires_at=later(clock, hours=1))
    world.app.partners.assign_client(owner, partner, shop, employee, later(clock, hours=1))

    def actors(resource: str) -> set[str]:
        return set(client.authorization.ListActors(authorization_pb2.ListActorsRequest(
            action="read", resource=common_pb2.ObjectRef(type="Project", id=resource), page_size=100)).user_ids)

    def reviewed(organization: str) -> set[str]:
        return {e.user_id for e in client.authorization.AccessReview(authorization_pb2.AccessReviewRequest(
            organization_id=organization, page_size=1000)).entries}

    # Asked before the end: allowed (and remembered).
    assert allowed(client, temp, "read", "Project", site) and allowed(client, employee, "read", "Project", site)
    assert allowed(client, owner, "read", "Project", other_site)
    assert {temp, employee} <= actors(site) and temp in reviewed(shop) and owner in reviewed(other_shop)
    revision = app.store.current_revision()

    clock.advance(hours=1)  # every end passes; nothing sweeps
    assert app.store.current_revision() == revision
    assert not allowed(client, temp, "read", "Project", site)  # R6: the membership ended
    assert not allowed(client, temp, "view", "Organization", partner)
    assert not allowed(client, employee, "read", "Project", site)  # R17: the assignment ended
    assert allowed(client, employee, "view", "Organization", partner)  # the membership goes on
    assert not allowed(client, owner, "read", "Project", other_site)  # R14: the connection ended
    assert not {temp, employee} & actors(site)
    assert temp not in reviewed(shop) and owner not in reviewed(other_shop)
    listed = client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
        actor=common_pb2.ObjectRef(type="User", id=temp), action="read", resource_type="Project", page_size=100))
    assert site not in listed.resource_ids
    assert not client.authorization.ListActions(authorization_pb2.ListActionsRequest(
        actor=common_pb2.ObjectRef(type="User", id=temp),
        resource=common_pb2.ObjectRef(type="Organization", id=partner))).actions
    assert not client.authorization.Explain(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=owner), action="read",
        resource=common_pb2.ObjectRef(type="Project", id=other_site))).allowed
    refused(client.membership.InviteMember, membership_pb2.InviteMemberRequest(  # a mutation's own decision
        actor_id=temp, organization_id=partner, email="new@example.com", role="colleague"),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")

    # The sweep writes what the decisions already said.
    assert app.expiries.sweep() is not None
    assert not allowed(client, temp, "read", "Project", site)
    assert not allowed(client, employee, "read", "Project", site)
    assert not allowed(client, owner, "read", "Project", other_site)
    assert allowed(client, employee, "view", "Organization", partner)


def test_r6_a_moved_or_cleared_end_counts_from_its_new_time_before_any_sweep(world, app, clock):
    """issue 18 item 15: decisions go by the end a fact has now: one moved later, or cleared,
    grants on past its former time; one moved sooner ends at its new time."""
    organization = world.organization()
    owner = world.owner_of(organization)
    moved, cleared, sooner = world.member(organization), world.member(organization), world.member(organization)
    project = world.project(organization)
    for member, hours in ((moved, 1), (cleared, 1), (sooner, 5)):
        app.memberships.set_member_role(owner, organization, member, "colleague", later(clock, hours=hours))
    app.memberships.set_member_role(owner, organization, moved, "colleague", later(clock, hours=3))
    app.memberships.set_member_role(owner, organization, cleared, "colleague", "never")
    app.memberships.set_member_role(owner, organization, sooner, "colleague", later(clock, hours=2))

    def readers() -> set[str]:
        return {m for m in (moved, cleared, sooner) if world.allowed(m, "read", "Project", project)}

    assert readers() == {moved, cleared, sooner}
    clock.advance(hours=2)
    assert readers() == {moved, cleared}
    clock.advance(hours=1)
    assert readers() == {cleared}
    app.expiries.sweep()
    assert readers() == {cleared}


def test_issue20_a_role_on_one_project_ends_by_itself(client, world, app, clock):
    """issue 20 item 3: GrantResourceRole takes access_expires_at like every grant; the sweeper
    ends the role then (event resource.role_revoked, cause expired), and a time passed is refused."""
    from mandate.v1 import directory_pb2

    owner = world.user("owner")
    shop = world.organization(owner)
    kim = world.member(shop, "client")
    site = world.project(shop)
    resource = common_pb2.ObjectRef(type="Project", id=site)
    refused(client.directory.GrantResourceRole, directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=resource, user_id=kim, role="editor", access_expires_at=later(clock, hours=-1)),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    granted = client.directory.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=resource, user_id=kim, role="editor", access_expires_at=later(clock, hours=1)))
    assert granted.access_expires_at == later(clock, hours=1)
    assert allowed(client, kim, "edit", "Project", site)
    clock.advance(hours=1)
    assert not allowed(client, kim, "edit", "Project", site)  # its end passed: never granted, even before the sweep
    assert app.expiries.sweep() is not None
    assert not allowed(client, kim, "edit", "Project", site)
    assert (EventType.RESOURCE_ROLE_REVOKED, "expired") in expiry_events(client, granted.revision)
