"""A reference model of the domain rules, written from docs/rules.md alone (no
Authorizer, no fact index, no policy), compared through gRPC with Check, BatchCheck,
ListActions, ListResources, ListActors and Explain's verdict on hypothesis-generated worlds.

The worlds include the hard shapes: two partners of one client, a user with their own
membership plus a partner path, linked accounts, paused members, disconnected (revoked or
accepted) and disconnect-requested connections, untagged or unapproved employees, and the
client's trust in the partner's delegation. Each world gets its own id prefix, so many worlds
share one store and one server."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mandate.runtime.world import load_world
from mandate.v1 import authorization_pb2, common_pb2

ROLES = ("owner", "legal_representative", "colleague", "client")
SCOPES = ("read", "edit", "publish", "approve", "delete")
PROJECT_ACTIONS = (*SCOPES, "move")
# R2, R4 to R8, R11, R13 to R17, R21, R23: what only owners and legal representatives may do.
MANAGING = ("invite_member", "cancel_invitation", "list_invitations", "remove_member", "pause_member",
            "resume_member", "set_member_role", "tag_partner_employee", "delete_resource", "add_client",
            "list_clients", "export_clients", "assign_client", "request_disconnect", "accept_client_invitation",
            "list_partners", "update_granted_scopes", "respond_disconnect", "revoke_partner",
            "approve_partner_employee")
ORGANIZATION_ACTIONS = ("view", "list_members", "put_resource", "link", "switch", *MANAGING)
USERS = [f"u{n}" for n in range(5)]
ORGANIZATIONS = [f"o{n}" for n in range(4)]
_worlds = itertools.count()


@dataclass
class World:
    """A state of the domain, in the words of the spec."""

    owners: dict[str, str]  # organization -> the user who created it
    members: dict[tuple[str, str], tuple[str, bool, bool]]  # (org, user) -> (role, paused, tagged)
    # (partner, client) -> (status, granted scopes, employee approval)
    connections: dict[tuple[str, str], tuple[str, frozenset[str], str]]
    assignments: dict[tuple[str, str, str], bool]  # (partner, client, user) -> approved by the client
    links: set[frozenset[str]] = field(default_factory=set)
    # (organization, user) -> the role given to the user on the organization's project (issue 20)
    project_roles: dict[tuple[str, str], str] = field(default_factory=dict)

    def membership(self, organization: str, user: str):
        if self.owners[organization] == user and (organization, user) not in self.members:
            return ("owner", False, False)
        return self.members.get((organization, user))


# -- the model (domain-rules.md) -------------------------------------------------------------------


def role_in(world: World, organization: str, user: str) -> str | None:
    """R3, R6, R7: a role only through a membership, and a paused member holds none."""
    member = world.membership(organization, user)
    if member is None or member[1]:
        return None
    return member[0]


def manages(role: str | None) -> bool:
    """R2, R8: owners (every owner is a legal representative) and legal representatives."""
    return role in ("owner", "legal_representative")


def may_on_organization(world: World, user: str, action: str, organization: str) -> bool:
    role = role_in(world, organization, user)
    if action == "view":  # R2: every member sees the organization
        return role is not None
    if action in ("list_members", "put_resource"):  # R2: colleagues see members and register projects
        return role in ("owner", "legal_representative", "colleague")
    if action in MANAGING:
        return manages(role)
    if action == "link":  # R13: an owner links master accounts
        return role == "owner"
    if action == "switch":  # R13: into an account they own, from a linked account they also own
        return role == "owner" and any(
            pair == frozenset((organization, other)) and role_in(world, other, user) == "owner"
            for pair in world.links for other in pair if other != organization)
    return False


# Issue 20: what a role given on one project grants (the shipped policy's project roles).
PROJECT_ROLES = {"viewer": ("read",), "editor": ("read", "edit", "publish")}


def may_by_project_role(world: World, user: str, action: str, organization: str) -> bool:
    """R2, R7: a role on the project counts for an active member of its organization; R9, R16:
    for an active, tagged employee of a partner the client trusts, within the granted scopes."""
    given = world.project_roles.get((organization, user))
    if given is None or action not in PROJECT_ROLES[given]:
        return False
    if role_in(world, organization, user) is not None:
        return True
    for (partner, client), (status, granted, approval) in world.connections.items():
        member = world.membership(partner, user)
        if (client == organization and status != "disconnected" and action in granted and approval == "partner"
                and role_in(world, partner, user) is not None and role_in(world, partner, user) != "client"
                and member is not None and member[2]):
            return True
    return False


def may_on_project(world: World, user: str, action: str, organization: str) -> bool:
    if may_by_project_role(world, user, action, organization):
        return True
    role = role_in(world, organization, user)
    if role == "client" and action in ("read", "approve"):  # R2
        return True
    if role == "colleague" and action in ("read", "edit", "publish"):  # R2
        return True
    if manages(role):  # R2: everything; R23: moving takes the right to unregister it here
        return True
    for (partner, client), (status, granted, approval) in world.connections.items():
        if client != organization or status == "disconnected" or action not in granted:  # R12, R14
            continue
        partner_role = role_in(world, partner, user)
        if manages(partner_role):  # R20
            return True
        tagged = world.membership(partner, user) is not None and world.membership(partner, user)[2]
        assigned = (partner, client, user) in world.assignments
        consent = approval == "partner" or world.assignments.get((partner, client, user), False)
        if partner_role == "colleague" and tagged and assigned and consent:  # R15 to R17, R20
            return True
    return False


def may(world: World, user: str, action: str, kind: str, organization: str) -> bool:
    if kind == "Organization":
        return may_on_organization(world, user, action, organization)
    return may_on_project(world, user, action, organization)


# -- worlds ----------------------------------------------------------------------------------------


@st.composite
def worlds(draw) -> World:
    owners = {org: draw(st.sampled_from(USERS)) for org in ORGANIZATIONS}
    members = {}
    for org, user in itertools.product(ORGANIZATIONS, USERS):
        if user != owners[org] and draw(st.integers(0, 2)) == 0:
            continue
        role = draw(st.sampled_from(ROLES))
        members[(org, user)] = (role, draw(st.integers(0, 4)) == 0, role == "colleague" and draw(st.booleans()))
    connections = {}
    for partner, client in itertools.permutations(ORGANIZATIONS, 2):
        if draw(st.integers(0, 2)) == 0:
            connections[(partner, client)] = (
                draw(st.sampled_from(["active", "active", "disconnect_requested", "disconnected"])),
                frozenset(draw(st.sets(st.sampled_from(SCOPES)))),
                draw(st.sampled_from(["client", "partner"])))
    assignments = {}
    for (partner, client), user in itertools.product(connections, USERS):
        if draw(st.integers(0, 2)) == 0:
            assignments[(partner, client, user)] = draw(st.booleans())
    links = {frozenset(pair) for pair in itertools.combinations(ORGANIZATIONS, 2) if draw(st.integers(0, 4)) == 0}
    project_roles = {(org, user): draw(st.sampled_from(sorted(PROJECT_ROLES)))
                     for org, user in itertools.product(ORGANIZATIONS, USERS) if draw(st.integers(0, 3)) == 0}
    return World(owners, members, connections, assignments, links, project_roles)


# Two partners of one client; a user who is a colleague of the client and an approved employee of
# one partner, paused in the other; a linked account; a revoked and a requested connection.
HARD = World(
    owners={"o0": "u0", "o1": "u1", "o2": "u2", "o3": "u0"},
    members={("o0", "u3"): ("colleague", False, False), ("o1", "u3"): ("colleague", False, True),
             ("o2", "u3"): ("colleague", True, True), ("o2", "u4"): ("legal_representative", False, False),
             ("o1", "u4"): ("client", False, False)},
    connections={("o1", "o0"): ("active", frozenset({"read", "edit"}), "client"),
                 ("o2", "o0"): ("disconnect_requested", frozenset({"read", "delete"}), "partner"),
                 ("o1", "o3"): ("disconnected", frozenset({"read"}), "partner")},
    assignments={("o1", "o0", "u3"): True, ("o2", "o0", "u3"): True, ("o1", "o3", "u3"): True},
    links={frozenset({"o0", "o3"})},
    # A client member editor; a paused one; an employee of the trusted partner; a stranger.
    project_roles={("o0", "u4"): "editor", ("o1", "u4"): "editor", ("o0", "u3"): "viewer",
                   ("o3", "u2"): "editor", ("o2", "u1"): "viewer"},
)


def yaml_world(world: World, prefix: str) -> dict:
    def ident(name: str) -> str:
        return f"{prefix}{name}"

    return {
        "users": [ident(u) for u in USERS],
        "organizations": {ident(o): {"owner": ident(owner)} for o, owner in world.owners.items()},
        "members": [{"organization": ident(o), "user": ident(u), "role": role, "paused": paused,
                     "partner_employee": tagged} for (o, u), (role, paused, tagged) in world.members.items()],
        "connections": [{"partner": ident(p), "client": ident(c), "status": status, "granted": sorted(granted),
                         "employee_approval": approval} for (p, c), (status, granted, approval)
                        in world.connections.items()],
        "assignments": [{"partner": ident(p), "client": ident(c), "user": ident(u), "approved": approved}
                        for (p, c, u), approved in world.assignments.items()],
        "links": [[ident(o) for o in sorted(pair)] for pair in world.links],
        "projects": [{"id": ident(f"{o}-project"), "organization": ident(o)} for o in ORGANIZATIONS],
        "resource_roles": [{"resource": f"Project:{ident(o)}-project", "user": ident(u), "role": role}
                           for (o, u), role in world.project_roles.items()],
    }


# -- the comparison ----------------------------------------------------------------------------------


def ref(kind: str, ident: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=kind, id=ident)


def all_pages(call, request) -> list[str]:
    found, token = [], ""
    while True:
        request.page_token = token
        reply = call(request)
        found += list(reply.resource_ids if hasattr(reply, "resource_ids") else reply.user_ids)
        token = reply.next_page_token
        if not token:
            return found


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@example(world=HARD, explained=[(3, "read", "Project", 0), (3, "delete", "Project", 0), (4, "read", "Project", 0)])
@given(world=worlds(), explained=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(PROJECT_ACTIONS),
                                                    st.just("Project"), st.integers(0, 3)), max_size=3))
def test_r2_r24_the_service_answers_as_the_domain_rules_say(app, client, world, explained):
    prefix = f"w{next(_worlds)}-"
    load_world(app.store, yaml_world(world, prefix))
    app.index.catch_up()
    auth = client.authorization
    resources = [("Project", f"{prefix}{o}-project", o) for o in ORGANIZATIONS] + \
                [("Organization", f"{prefix}{o}", o) for o in ORGANIZATIONS]
    cases = [(user, action, kind, ident, org) for user in USERS for kind, ident, org in resources
             for action in (PROJECT_ACTIONS if kind == "Project" else ORGANIZATION_ACTIONS)]
    expected = {case: may(world, case[0], case[1], case[2], case[4]) for case in cases}

    # BatchCheck and Check
    batch = auth.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
        authorization_pb2.CheckRequest(actor=ref("User", prefix + u), action=a, resource=ref(k, i))
        for u, a, k, i, _ in cases]))
    assert [r.allowed for r in batch.results] == [expected[c] for c in cases]
    for case in cases:
        if case[2] == "Project":
            user, action, kind, ident, _ = case
            reply = auth.Check(authorization_pb2.CheckRequest(actor=ref("User", prefix + user), action=action,
                                                              resource=ref(kind, ident)))
            assert reply.allowed is expected[case], case

    # ListActions
    for user, (kind, ident, _) in itertools.product(USERS, resources):
        actions = auth.ListActions(authorization_pb2.ListActionsRequest(actor=ref("User", prefix + user),
                                                                        resource=ref(kind, ident))).actions
        wanted = {c[1] for c in cases if c[0] == user and c[3] == ident and expected[c]}
        assert set(actions) == wanted, (user, ident)

    # ListResources
    for user, kind in itertools.product(USERS, ("Project", "Organization")):
        for action in (PROJECT_ACTIONS if kind == "Project" else ORGANIZATION_ACTIONS):
            listed = all_pages(auth.ListResources, authorization_pb2.ListResourcesRequest(
                actor=ref("User", prefix + user), action=action, resource_type=kind, page_size=3))
            wanted = sorted(c[3] for c in cases if c[0] == user and c[1] == action and c[2] == kind and expected[c])
            assert listed == wanted, (user, action, kind)

    # ListActors
    for kind, ident, _ in resources:
        for action in (PROJECT_ACTIONS if kind == "Project" else ORGANIZATION_ACTIONS):
            listed = all_pages(auth.ListActors, authorization_pb2.ListActorsRequest(
                action=action, resource=ref(kind, ident), page_size=3))
            wanted = sorted(prefix + c[0] for c in cases if c[1] == action and c[3] == ident and expected[c])
            assert listed == wanted, (action, ident)

    # Explain's verdict
    for user_number, action, kind, org_number in explained:
        user, org = USERS[user_number], ORGANIZATIONS[org_number]
        ident = f"{prefix}{org}-project"
        reply = auth.Explain(authorization_pb2.CheckRequest(actor=ref("User", prefix + user), action=action,
                                                            resource=ref(kind, ident)), timeout=120)
        assert reply.allowed is may(world, user, action, kind, org), (user, action, ident, list(reply.reasons))


# -- resources the policy declares (issue 20): the platform example's pages, posts and invoices --------

PLATFORM_ACTIONS = {"Page": ("read", "edit"), "Post": ("read", "edit"), "Invoice": ("read", "pay")}


def may_on_platform(world: World, editors: set[tuple[str, str]], user: str, action: str, kind: str,
                    organization: str, post: str = "") -> bool:
    """R2: members read pages and colleagues edit them; a post follows its page, and an editor of
    one post (an active member: R7) reads and edits it; colleagues read invoices, owners pay."""
    role = role_in(world, organization, user)
    if kind == "Invoice":
        return role in ("owner", "legal_representative", "colleague") if action == "read" else role == "owner"
    on_page = role is not None if action == "read" else role in ("owner", "legal_representative", "colleague")
    if kind == "Page":
        return on_page
    return on_page or ((post, user) in editors and role is not None)


@pytest.fixture
def platform_client(database_url, tmp_path):
    import shutil

    from mandate.client import MandateClient
    from mandate.runtime.app import App
    from mandate.runtime.config import Config
    from mandate.runtime.server import build_server

    from tests.conftest import POLICY_DIR, ROOT, TOKEN

    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for path in [*POLICY_DIR.glob("*.polar"), ROOT / "examples" / "platform" / "platform.polar"]:
        shutil.copy(path, policy_dir)
    application = App(database_url, policy_dir)
    server, port = build_server(application, Config(listen="127.0.0.1:0", database_url=application.store.url,
                                                    policy_dir=policy_dir, api_tokens=[TOKEN]))
    server.start()
    try:
        with MandateClient(f"127.0.0.1:{port}", TOKEN) as mandate_client:
            yield application, mandate_client
    finally:
        server.stop(grace=None)
        application.close()


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds(), editors=st.sets(st.tuples(st.sampled_from([f"{o}-post{n}" for o in ORGANIZATIONS
                                                                  for n in range(2)]), st.sampled_from(USERS))))
def test_r2_r7_issue20_parents_and_roles_on_one_resource_as_the_rules_say(platform_client, world, editors):
    """issue 20: nested resources and roles on one resource, through gRPC, against the model."""
    app, client = platform_client
    prefix = f"p{next(_worlds)}-"
    spec = yaml_world(world, prefix)
    spec["resource_roles"] = [{"resource": f"Post:{prefix}{post}", "user": prefix + user, "role": "editor"}
                              for post, user in sorted(editors)]
    spec["resources"] = [item for o in ORGANIZATIONS for item in (
        {"type": "Page", "id": f"{prefix}{o}-page", "organization": prefix + o},
        {"type": "Invoice", "id": f"{prefix}{o}-invoice", "organization": prefix + o},
        *({"type": "Post", "id": f"{prefix}{o}-post{n}", "parent": f"Page:{prefix}{o}-page"} for n in range(2)))]
    load_world(app.store, spec, app.authorizer.policy)
    app.index.catch_up()
    auth = client.authorization
    resources = [(kind, f"{prefix}{o}-{name}", o, f"{o}-{name}") for o in ORGANIZATIONS for kind, name in
                 (("Page", "page"), ("Invoice", "invoice"), ("Post", "post0"), ("Post", "post1"))]
    cases = [(user, action, kind, ident, org, name) for user in USERS for kind, ident, org, name in resources
             for action in PLATFORM_ACTIONS[kind]]
    expected = {case: may_on_platform(world, editors, case[0], case[1], case[2], case[4], case[5]) for case in cases}
    batch = auth.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
        authorization_pb2.CheckRequest(actor=ref("User", prefix + u), action=a, resource=ref(k, i))
        for u, a, k, i, _, _ in cases]))
    assert [r.allowed for r in batch.results] == [expected[c] for c in cases]
    for user, kind in itertools.product(USERS, PLATFORM_ACTIONS):
        for action in PLATFORM_ACTIONS[kind]:
            listed = all_pages(auth.ListResources, authorization_pb2.ListResourcesRequest(
                actor=ref("User", prefix + user), action=action, resource_type=kind, page_size=3))
            wanted = sorted(c[3] for c in cases if c[0] == user and c[1] == action and c[2] == kind and expected[c])
            assert listed == wanted, (user, action, kind)
    for kind, ident, _, _ in resources:
        for action in PLATFORM_ACTIONS[kind]:
            listed = all_pages(auth.ListActors, authorization_pb2.ListActorsRequest(
                action=action, resource=ref(kind, ident), page_size=3))
            wanted = sorted(prefix + c[0] for c in cases if c[1] == action and c[3] == ident and expected[c])
            assert listed == wanted, (action, ident)
