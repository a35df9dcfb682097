"""Callers and tenants (issue 18, items 7, 8 and 9), through gRPC against the real store on both
engines: a caller limited to some organizations (callers file: `organizations`) sees and changes
only those, everywhere, and learns nothing about the others; a read-only caller gets no email
address from any reply; a reload of the callers file ends the streams a caller lost."""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager

import grpc
import pytest
from mandate.client import MandateClient
from mandate.runtime.config import Config
from mandate.runtime.server import SERVICES, build_server
from mandate.v1 import (
    authorization_pb2,
    common_pb2,
    directory_pb2,
    events_pb2,
    membership_pb2,
    partner_pb2,
)

from tests.conftest import POLICY_DIR, TOKEN
from tests.support import reason_of, wait_until

SCOPED = "scoped-caller-token-not-secret"
READER = "reader-caller-token-not-secret"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def callers_file(mine: str, *, reader_scope: str = "") -> str:
    return (f'[callers.scoped]\ntoken_sha256 = "{digest(SCOPED)}"\norganizations = ["{mine}"]\n\n'
            f'[callers.reader]\ntoken_sha256 = "{digest(READER)}"\nread_only = true\n{reader_scope}')


@contextmanager
def running(app, path):
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN],
                    callers_file=path)
    server, port = build_server(app, config)
    server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


class Tenants:
    """Two organizations, each with an owner, a colleague, a project, a pending invitation and an
    invitation link; `both` is a colleague of each; `mine` is a partner of `theirs`."""

    def __init__(self, world):
        self.mine, self.theirs = world.organization(name="Mine"), world.organization(name="Theirs")
        self.my_owner, self.their_owner = world.owner_of(self.mine), world.owner_of(self.theirs)
        self.both = world.member(self.mine)
        world.member(self.theirs, user_id=self.both)
        self.my_project, self.their_project = world.project(self.mine), world.project(self.theirs)
        app = world.app
        self.their_invitation = app.memberships.invite_member(
            self.their_owner, self.theirs, "their-invitee@example.com", "colleague").id
        self.my_invitation = app.memberships.invite_member(
            self.my_owner, self.mine, "my-invitee@example.com", "colleague").id
        self.their_link = app.partners.create_invite_link(self.their_owner, self.theirs, "Shop", "", "EUR",
                                                          ["read"]).token
        world.connect(self.mine, self.theirs)
        self.world = world


@pytest.fixture
def tenants(world) -> Tenants:
    return Tenants(world)


@pytest.fixture
def served(app, tenants, tmp_path):
    path = tmp_path / "callers.toml"
    path.write_text(callers_file(tenants.mine))
    with running(app, path) as (server, address):
        yield server, address, path


def refused_outside(call) -> str:
    """The call is PERMISSION_DENIED, OUTSIDE_CALLER_SCOPE; its message."""
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
    assert reason_of(refused.value) == "OUTSIDE_CALLER_SCOPE", refused.value.details()
    return refused.value.details()


def check(actor: str, action: str, kind: str, ident: str, **when) -> authorization_pb2.CheckRequest:
    return authorization_pb2.CheckRequest(actor=ref("User", actor), action=action, resource=ref(kind, ident), **when)


def test_every_rpc_says_which_organizations_it_names():
    """issue 18 item 7: every Mandate method is classified for limited callers (a new one is
    refused to them until it is), and each field it names exists on its request."""
    from mandate.runtime.scope import NAMED_BY, UNSCOPED, method_key

    for module, name, _, _ in SERVICES:
        service = module.DESCRIPTOR.services_by_name[name]
        for method in service.methods:
            key = method_key(f"/{service.full_name}/{method.name}")
            assert (key in NAMED_BY) != (key in UNSCOPED), key
            for field in NAMED_BY.get(key, ()):
                assert field in method.input_type.fields_by_name, (key, field)


def test_a_scoped_caller_reads_only_its_organizations(served, tenants):
    """issue 18 item 7: the check plane, reviews (now and past), lists and events of another
    organization are PERMISSION_DENIED OUTSIDE_CALLER_SCOPE; what does not exist is refused with
    the same message (no existence oracle); its own organization answers as before."""
    _, address, _ = served
    t = tenants
    past = str(t.world.app.store.current_revision())
    with MandateClient(address, SCOPED, retries=0) as scoped:
        az, members, partners, events = scoped.authorization, scoped.membership, scoped.partner, scoped.events
        # Its own organization: answered.
        assert az.Check(check(t.both, "read", "Project", t.my_project)).allowed
        assert az.Check(check(t.both, "read", "Project", t.my_project, at_revision=past)).allowed
        assert [r.allowed for r in az.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
            check(t.both, "read", "Project", t.my_project)])).results] == [True]
        assert "read" in az.ListActions(authorization_pb2.ListActionsRequest(
            actor=ref("User", t.both), resource=ref("Project", t.my_project))).actions
        assert t.both in az.ListActors(authorization_pb2.ListActorsRequest(
            action="read", resource=ref("Project", t.my_project))).user_ids
        assert az.Explain(check(t.both, "read", "Project", t.my_project)).allowed
        assert az.AccessReview(authorization_pb2.AccessReviewRequest(organization_id=t.mine)).entries
        assert members.ListMembers(membership_pb2.ListMembersRequest(
            actor_id=t.my_owner, organization_id=t.mine)).members
        # ListResources: a person of both organizations, seen through this caller, has only its own.
        assert az.ListResources(authorization_pb2.ListResourcesRequest(
            actor=ref("User", t.both), action="read", resource_type="Project")).resource_ids == [t.my_project]
        # Events: its own organization's only (as the place of the change or the other party).
        seen = list(events.ListEvents(events_pb2.ListEventsRequest(page_size=1000)).events)
        assert seen and all(t.mine in e.attributes.values() for e in seen)

        # Another organization, in every way in.
        unknown = refused_outside(lambda: az.Check(check(t.both, "read", "Project", "no-such-project")))
        messages = {unknown}
        for call in (
            lambda: az.Check(check(t.both, "read", "Project", t.their_project)),
            lambda: az.Check(check(t.both, "read", "Organization", t.theirs)),
            lambda: az.Check(check(t.both, "read", "Project", t.their_project, at_revision=past)),
            lambda: az.Check(check(t.both, "read", "Organization", t.theirs, as_of="2999-01-01T00:00:00Z")),
            lambda: az.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
                check(t.both, "read", "Project", t.my_project), check(t.both, "read", "Project", t.their_project)])),
            lambda: az.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
                check(t.both, "read", "Project", t.their_project, at_revision=past)])),
            lambda: az.ListActions(authorization_pb2.ListActionsRequest(
                actor=ref("User", t.both), resource=ref("Project", t.their_project))),
            lambda: az.ListActors(authorization_pb2.ListActorsRequest(
                action="read", resource=ref("Organization", t.theirs), at_revision=past)),
            lambda: az.Explain(check(t.both, "read", "Project", t.their_project)),
            lambda: az.AccessReview(authorization_pb2.AccessReviewRequest(organization_id=t.theirs)),
            lambda: az.AccessReview(authorization_pb2.AccessReviewRequest(organization_id=t.theirs,
                                                                          at_revision=past)),
            lambda: az.AccessReview(authorization_pb2.AccessReviewRequest(organization_id="org_nonexistent")),
            lambda: members.ListMembers(membership_pb2.ListMembersRequest(
                actor_id=t.their_owner, organization_id=t.theirs)),
            lambda: members.ListInvitations(membership_pb2.ListInvitationsRequest(
                actor_id=t.their_owner, organization_id=t.theirs)),
            lambda: partners.ListClients(partner_pb2.ListClientsRequest(actor_id=t.their_owner, partner_id=t.theirs)),
            lambda: partners.ExportClients(partner_pb2.ListClientsRequest(actor_id=t.their_owner,
                                                                          partner_id=t.theirs)),
            lambda: partners.ListPartners(partner_pb2.ListPartnersRequest(actor_id=t.their_owner, client_id=t.theirs)),
            lambda: events.ListEvents(events_pb2.ListEventsRequest(organization_id=t.theirs)),
            lambda: next(iter(events.Watch(events_pb2.WatchRequest(organization_id=t.theirs), timeout=10))),
        ):
            messages.add(refused_outside(call))
        # No message names the other organization, or tells it from one that does not exist.
        assert not any(t.theirs in m or t.their_project in m for m in messages)
        assert len({m for m in messages if "organization(s)" in m and "events" not in m}) == 1


def test_a_scoped_caller_changes_only_its_organizations(served, tenants):
    """issue 18 item 7: every mutation that would change another organization (or that names
    something of none of its organizations) is PERMISSION_DENIED OUTSIDE_CALLER_SCOPE and
    changes nothing; a request about two organizations needs both; within its own, it writes."""
    _, address, _ = served
    t = tenants
    app = t.world.app
    my_link = app.partners.create_invite_link(t.my_owner, t.mine, "Shop", "", "EUR", ["read"]).token
    before = app.store.current_revision()
    with MandateClient(address, SCOPED, retries=0) as scoped:
        d, m, p = scoped.directory, scoped.membership, scoped.partner
        member = dict(actor_id=t.their_owner, organization_id=t.theirs, user_id=t.both)
        pair = dict(actor_id=t.my_owner, partner_id=t.mine, client_id=t.theirs)
        cancel_theirs = refused_outside(lambda: m.CancelInvitation(membership_pb2.CancelInvitationRequest(
            actor_id=t.their_owner, invitation_id=t.their_invitation)))
        cancel_unknown = refused_outside(lambda: m.CancelInvitation(membership_pb2.CancelInvitationRequest(
            actor_id=t.their_owner, invitation_id="inv_nonexistent")))
        delete_theirs = refused_outside(lambda: d.DeleteResource(directory_pb2.DeleteResourceRequest(
            actor_id=t.their_owner, resource=ref("Project", t.their_project))))
        delete_unknown = refused_outside(lambda: d.DeleteResource(directory_pb2.DeleteResourceRequest(
            actor_id=t.their_owner, resource=ref("Project", "no-such-project"))))
        accept = partner_pb2.AcceptClientInvitationRequest(actor_id=t.my_owner, token=t.their_link, client_id=t.mine,
                                                           granted_scopes=["read"])
        accept_theirs = refused_outside(lambda: p.AcceptClientInvitation(accept))
        accept.token = "no-such-link-token"
        accept_unknown = refused_outside(lambda: p.AcceptClientInvitation(accept))
        # No existence oracle: another organization's things and things that do not exist alike.
        assert cancel_theirs == cancel_unknown and delete_theirs == delete_unknown and accept_theirs == accept_unknown
        for call in (
            lambda: d.RegisterUser(directory_pb2.RegisterUserRequest(email="their-invitee@example.com",
                                                                     display_name="Invitee")),
            lambda: d.CreateOrganization(directory_pb2.CreateOrganizationRequest(
                actor_id=t.my_owner, name="New", currency="EUR")),
            lambda: d.LinkOrganizations(directory_pb2.LinkOrganizationsRequest(
                actor_id=t.my_owner, organization_id=t.mine, other_organization_id=t.theirs)),
            lambda: d.PutResource(directory_pb2.PutResourceRequest(
                actor_id=t.their_owner, resource=ref("Project", "new-project"), organization_id=t.theirs)),
            lambda: d.PutResource(directory_pb2.PutResourceRequest(  # moving their project into mine
                actor_id=t.their_owner, resource=ref("Project", t.their_project), organization_id=t.mine)),
            lambda: m.InviteMember(membership_pb2.InviteMemberRequest(
                actor_id=t.their_owner, organization_id=t.theirs, email="x@example.com", role="colleague")),
            lambda: m.RemoveMember(membership_pb2.RemoveMemberRequest(**member)),
            lambda: m.PauseMember(membership_pb2.MemberRequest(**member)),
            lambda: m.SetMemberRole(membership_pb2.SetMemberRoleRequest(**member, role="legal_representative")),
            lambda: m.TagPartnerEmployee(membership_pb2.TagPartnerEmployeeRequest(**member, partner_employee=True)),
            lambda: p.InviteClient(partner_pb2.InviteClientRequest(
                actor_id=t.their_owner, partner_id=t.theirs, email="c@example.com", customer_name="C",
                currency="EUR", requested_scopes=["read"])),
            lambda: p.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
                actor_id=t.their_owner, partner_id=t.theirs, customer_name="C", currency="EUR",
                requested_scopes=["read"])),
            lambda: p.AcceptClientInvitation(partner_pb2.AcceptClientInvitationRequest(  # my link, their client
                actor_id=t.their_owner, token=my_link, client_id=t.theirs, granted_scopes=["read"])),
            lambda: p.UpdateGrantedScopes(partner_pb2.UpdateGrantedScopesRequest(
                actor_id=t.their_owner, partner_id=t.mine, client_id=t.theirs, granted_scopes=["read"])),
            lambda: p.RequestDisconnect(partner_pb2.ConnectionRequest(**pair)),
            lambda: p.RevokePartner(partner_pb2.ConnectionRequest(**{**pair, "actor_id": t.their_owner})),
            lambda: p.AssignClient(partner_pb2.AssignmentRequest(**pair, user_id=t.both)),
        ):
            refused_outside(call)
        assert app.store.current_revision() == before  # a refused mutation changes nothing
        # Within its own organization, it writes.
        m.InviteMember(membership_pb2.InviteMemberRequest(
            actor_id=t.my_owner, organization_id=t.mine, email="welcome@example.com", role="colleague"))
        d.DeleteResource(directory_pb2.DeleteResourceRequest(actor_id=t.my_owner,
                                                              resource=ref("Project", t.my_project)))
        m.CancelInvitation(membership_pb2.CancelInvitationRequest(actor_id=t.my_owner,
                                                                  invitation_id=t.my_invitation))
    assert app.store.current_revision() > before


def test_a_read_only_caller_gets_no_email_from_any_reply(app, tenants, tmp_path):
    """issue 18 item 8: members, invitations (to people who never signed up too), the access
    review and events reach a read-only caller without a single email address, and its search
    of invitations does not match addresses (which would spell them out letter by letter)."""
    t = tenants
    path = tmp_path / "callers.toml"
    path.write_text(f'[callers.reader]\ntoken_sha256 = "{digest(READER)}"\nread_only = true\n')
    with running(app, path) as (_, address), MandateClient(address, READER, retries=0) as reader:
        replies = [
            reader.membership.ListMembers(membership_pb2.ListMembersRequest(
                actor_id=t.their_owner, organization_id=t.theirs)),
            reader.membership.ListInvitations(membership_pb2.ListInvitationsRequest(
                actor_id=t.their_owner, organization_id=t.theirs)),
            reader.authorization.AccessReview(authorization_pb2.AccessReviewRequest(organization_id=t.theirs)),
            reader.events.ListEvents(events_pb2.ListEventsRequest(page_size=1000)),
            reader.partner.ListClients(partner_pb2.ListClientsRequest(actor_id=t.my_owner, partner_id=t.mine)),
        ]
        stream = reader.events.Watch(events_pb2.WatchRequest(), timeout=10)
        replies.append(next(iter(stream)))
        stream.cancel()
        search = membership_pb2.ListInvitationsRequest(actor_id=t.their_owner, organization_id=t.theirs,
                                                       query="their-invitee@")
        assert not reader.membership.ListInvitations(search).invitations
        with MandateClient(address, TOKEN) as writer:  # a writer still gets them, and finds them so
            assert "their-invitee@example.com" in str(writer.membership.ListInvitations(search))
    assert replies[0].members and replies[1].invitations and replies[2].entries
    assert any(i.id == t.their_invitation for i in replies[1].invitations)
    assert not any("@" in str(reply) for reply in replies)


class Watching:
    """A Watch stream read on a thread until it ends; its events and how it ended."""

    def __init__(self, client: MandateClient, request: events_pb2.WatchRequest):
        self.stream = client.events.Watch(request, timeout=30)
        self.events: list = []
        self.error: grpc.RpcError | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.first.wait(10), "the stream delivered nothing"

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.append(event)
                self.first.set()
        except grpc.RpcError as error:
            self.error = error
        self.first.set()

    def ended(self, seconds: float = 10) -> grpc.RpcError | None:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.error


OTHER = "other-caller-token-not-secret"


def test_a_reload_ends_the_streams_of_a_revoked_or_narrowed_caller(app, tenants, tmp_path):
    """issue 18 item 9: after a reload of the callers file, a revoked caller's streams end
    (UNAUTHENTICATED); a stream of a caller that now sees fewer organizations' events ends
    (UNAVAILABLE: reconnecting opens it with the rights the caller has now) and delivers nothing
    more; a stream whose caller's rights did not change goes on."""
    t = tenants
    path = tmp_path / "callers.toml"
    reader = f'[callers.reader]\ntoken_sha256 = "{digest(READER)}"\nread_only = true\n'
    other = f'[callers.other]\ntoken_sha256 = "{digest(OTHER)}"\n'
    path.write_text(reader + other)
    with running(app, path) as (server, address), MandateClient(address, READER, retries=0) as reading, \
            MandateClient(address, OTHER, retries=0) as revoked:
        everything = Watching(reading, events_pb2.WatchRequest())
        gone = Watching(revoked, events_pb2.WatchRequest())
        path.write_text(reader + f'event_organizations = ["{t.mine}"]\n')
        server.reload()
        assert gone.ended().code() == grpc.StatusCode.UNAUTHENTICATED
        assert everything.ended().code() == grpc.StatusCode.UNAVAILABLE
        delivered = len(everything.events)
        again = Watching(reading, events_pb2.WatchRequest())  # reconnected: its own organization's only
        server.reload()  # the same file: nothing changes for it
        invited = app.memberships.invite_member(t.my_owner, t.mine, "after@example.com", "colleague")
        assert wait_until(lambda: any(e.revision == str(invited.revision) for e in again.events), 10)
        assert again.error is None and len(everything.events) == delivered
        assert all(t.mine in e.attributes.values() for e in again.events)
        again.stream.cancel()


def test_a_reload_ends_a_stream_of_an_organization_the_caller_lost(app, tenants, tmp_path):
    """issue 18 item 9: a Watch of one organization ends with PERMISSION_DENIED
    OUTSIDE_CALLER_SCOPE once the callers file takes that organization from its caller."""
    t = tenants
    path = tmp_path / "callers.toml"
    path.write_text(callers_file(t.mine))
    with running(app, path) as (server, address), MandateClient(address, SCOPED, retries=0) as scoped:
        named = Watching(scoped, events_pb2.WatchRequest(organization_id=t.mine))
        path.write_text(callers_file(t.theirs))
        server.reload()
        assert named.ended().code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(named.error) == "OUTSIDE_CALLER_SCOPE"


def test_issue20_a_scoped_caller_gives_roles_only_on_its_organizations_resources(served, tenants):
    """issue 20 item 3 with issue 18 item 7: GrantResourceRole, RevokeResourceRole and
    ListResourceRoles on another organization's resource (or one that does not exist) are
    PERMISSION_DENIED OUTSIDE_CALLER_SCOPE and change nothing; on its own, they work."""
    _, address, _ = served
    t = tenants
    app = t.world.app
    before = app.store.current_revision()
    with MandateClient(address, SCOPED, retries=0) as scoped:
        d = scoped.directory
        for project in (t.their_project, "no-such-project"):
            resource = ref("Project", project)
            refused_outside(lambda r=resource: d.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
                actor_id=t.their_owner, resource=r, user_id=t.both, role="editor")))
            refused_outside(lambda r=resource: d.RevokeResourceRole(directory_pb2.RevokeResourceRoleRequest(
                actor_id=t.their_owner, resource=r, user_id=t.both, role="editor")))
            refused_outside(lambda r=resource: d.ListResourceRoles(directory_pb2.ListResourceRolesRequest(
                actor_id=t.their_owner, resource=r)))
        assert app.store.current_revision() == before
        granted = d.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
            actor_id=t.my_owner, resource=ref("Project", t.my_project), user_id=t.both, role="editor"))
        assert granted.role == "editor"
