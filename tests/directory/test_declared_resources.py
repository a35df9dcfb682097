"""Resources the policy declares (issue 20): a platform adds its own types, parents and roles on
one resource by changing `policies/` alone, and every RPC takes them from the policy."""

from __future__ import annotations

import shutil

import grpc
import pytest
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.app import App
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2, partner_pb2

from tests.conftest import POLICY_DIR, ROOT, TOKEN
from tests.factories import World
from tests.support import FOLDERS_POLAR, edit_policy, reason_of

PLATFORM = ROOT / "examples" / "platform" / "platform.polar"


def ref(text: str) -> common_pb2.ObjectRef:
    kind, _, ident = text.partition(":")
    return common_pb2.ObjectRef(type=kind, id=ident)


@pytest.fixture
def platform(database_url, tmp_path):
    """A server on a copy of the shipped policy; the test adds the platform's file and reloads."""
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for path in POLICY_DIR.glob("*.polar"):
        shutil.copy(path, policy_dir)
    app = App(database_url, policy_dir)
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=policy_dir, api_tokens=[TOKEN])
    server, port = build_server(app, config)
    server.start()
    client = MandateClient(f"127.0.0.1:{port}", TOKEN)
    try:
        yield app, client, policy_dir
    finally:
        client.close()
        server.stop(grace=None)
        app.close()


def refused(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value.code(), reason_of(caught.value)


def test_issue20_a_new_type_with_a_parent_and_a_role_needs_only_the_policy(platform):
    """issue 20, done when: copy the policy, add a type with a parent and a role (no Python
    changed), reload, and every RPC of the check plane and the directory takes it (R2, R6, R7, R23)."""
    app, client, policy_dir = platform
    world = World(app)
    owner = world.user("owner")
    acme = world.organization(owner, name="Acme")
    colleague = world.member(acme, "colleague")
    writer = world.member(acme, "client")
    outsider = world.user("outsider")
    directory = client.directory

    # Before the platform's file: the policy declares no Page.
    put_page = directory_pb2.PutResourceRequest(actor_id=owner, resource=ref("Page:home"), organization_id=acme)
    assert refused(directory.PutResource, put_page) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_RESOURCE_TYPE")
    assert not client.check(("User", owner), "read", "Page:home")

    shutil.copy(PLATFORM, policy_dir)
    app.reload_policy()

    directory.PutResource(put_page)
    revision = directory.PutResource(directory_pb2.PutResourceRequest(
        actor_id=colleague, resource=ref("Post:hello"), parent=ref("Page:home"))).revision
    directory.PutResource(directory_pb2.PutResourceRequest(actor_id=owner, resource=ref("Invoice:inv-1"),
                                                           organization_id=acme))

    # Parents: read follows the chain; a client member reads posts but edits none.
    assert client.check(("User", colleague), "edit", "Post:hello", at_least_revision=revision)
    assert client.check(("User", writer), "read", "Post:hello")
    assert not client.check(("User", writer), "edit", "Post:hello")
    assert not client.check(("User", outsider), "read", "Post:hello")

    # A role on one post, given by the organization's owner to its client member.
    granted = directory.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=writer, role="editor", request_id="grant-1"))
    assert (granted.user_id, granted.role, granted.granted_by) == (writer, "editor", owner)
    again = directory.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=writer, role="editor", request_id="grant-1"))
    assert again.revision == granted.revision  # the retry gets the first reply
    assert client.check(("User", writer), "edit", "Post:hello", at_least_revision=granted.revision)
    batch = client.authorization.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
        authorization_pb2.CheckRequest(actor=ref(f"User:{writer}"), action=action, resource=ref(resource))
        for action, resource in (("edit", "Post:hello"), ("edit", "Page:home"), ("read", "Invoice:inv-1"))]))
    assert [r.allowed for r in batch.results] == [True, False, False]
    assert client.list_resources(("User", writer), "edit", "Post") == ["hello"]
    assert client.list_resources(("User", colleague), "read", "Invoice") == ["inv-1"]
    actors = client.authorization.ListActors(authorization_pb2.ListActorsRequest(
        action="edit", resource=ref("Post:hello"))).user_ids
    assert set(actors) == {owner, colleague, writer}
    actions = client.authorization.ListActions(authorization_pb2.ListActionsRequest(
        actor=ref(f"User:{writer}"), resource=ref("Post:hello"))).actions
    assert list(actions) == ["edit", "read"]
    explained = client.authorization.Explain(authorization_pb2.CheckRequest(
        actor=ref(f"User:{writer}"), action="edit", resource=ref("Post:hello")))
    assert explained.allowed
    assert any("editor of Post hello" in reason for reason in explained.reasons), explained.reasons
    assert any("platform.polar:" in reason for reason in explained.reasons), explained.reasons
    review = client.access_review(acme)
    paths = {(e.user_id, e.resource.type, e.resource.id): e.path for e in review.entries}
    assert "editor of Post hello" in paths[(writer, "Post", "hello")]
    listed = directory.ListResourceRoles(directory_pb2.ListResourceRolesRequest(
        actor_id=owner, resource=ref("Post:hello")))
    assert [(r.user_id, r.role) for r in listed.roles] == [(writer, "editor")]

    # Bad input names the field; a grant the policy does not allow changes nothing.
    assert refused(directory.GrantResourceRole, directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=writer, role="owner")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ROLE")
    assert refused(directory.GrantResourceRole, directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=outsider, role="editor")) == (
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert refused(directory.GrantResourceRole, directory_pb2.GrantResourceRoleRequest(
        actor_id=colleague, resource=ref("Post:hello"), user_id=writer, role="editor")) == (
        grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED")
    assert refused(directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=owner, resource=ref("Post:x"), parent=ref("Page:missing"))) == (
        grpc.StatusCode.NOT_FOUND, "PARENT_NOT_FOUND")
    assert refused(directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=owner, resource=ref("Post:x"), organization_id=acme)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert refused(directory.DeleteResource, directory_pb2.DeleteResourceRequest(
        actor_id=owner, resource=ref("Page:home"))) == (grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_HAS_CHILDREN")

    # R7: paused, the role gives nothing; resumed, it is back. R6: removed, it ends.
    app.memberships.pause_member(owner, acme, writer)
    assert not client.check(("User", writer), "edit", "Post:hello", at_least_revision=str(app.index.catch_up()))
    app.memberships.resume_member(owner, acme, writer)
    assert client.check(("User", writer), "edit", "Post:hello", at_least_revision=str(app.index.catch_up()))
    before_removal = str(app.index.catch_up())
    app.memberships.remove_member(owner, acme, writer)
    assert not client.check(("User", writer), "read", "Post:hello", at_least_revision=str(app.index.catch_up()))
    assert client.check(("User", writer), "edit", "Post:hello", at_revision=before_removal)  # the history
    events = [e for e in app.events.list_events(0, 0, 1000, acme) if e.type.startswith("resource.role")]
    assert [(e.type, e.cause, e.attributes["user_id"]) for e in events] == [
        (EventType.RESOURCE_ROLE_GRANTED, "", writer), (EventType.RESOURCE_ROLE_REVOKED, "cascade", writer)]

    # A role given for a while: Explain says when it ends.
    directory.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=colleague, role="editor",
        access_expires_at="2099-01-01T00:00:00Z"))
    explained = client.authorization.Explain(authorization_pb2.CheckRequest(
        actor=ref(f"User:{colleague}"), action="edit", resource=ref("Post:hello"),
        at_least_revision=str(app.index.catch_up())))
    assert any("editor" in r and "ends by itself at 2099-01-01" in r for r in explained.reasons), explained.reasons

    # Revoke, and delete a leaf then its parent.
    directory.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=colleague, role="editor"))
    directory.RevokeResourceRole(directory_pb2.RevokeResourceRoleRequest(
        actor_id=owner, resource=ref("Post:hello"), user_id=colleague, role="editor"))
    assert not directory.ListResourceRoles(directory_pb2.ListResourceRolesRequest(
        actor_id=owner, resource=ref("Post:hello"))).roles
    directory.DeleteResource(directory_pb2.DeleteResourceRequest(actor_id=owner, resource=ref("Post:hello")))
    directory.DeleteResource(directory_pb2.DeleteResourceRequest(actor_id=owner, resource=ref("Page:home")))
    assert not client.check(("User", colleague), "read", "Page:home", at_least_revision=str(app.index.catch_up()))


def test_issue20_parents_move_subtrees_and_refuse_cycles(platform):
    """issue 20 item 2: a resource belongs to its top ancestor's organization; moving it moves its
    subtree; a cycle is PARENT_CYCLE; a parent in another organization than the one given is
    refused naming organization_id; a type without a parent relation takes no parent."""
    app, client, policy_dir = platform
    shutil.copy(PLATFORM, policy_dir)
    app.reload_policy()
    world = World(app)
    owner = world.user("owner")
    acme, other = world.organization(owner, name="Acme"), world.organization(owner, name="Other")
    reader = world.member(other, "client")
    directory = client.directory

    def put(resource: str, **where) -> str:
        fields = {"parent": ref(where["parent"])} if "parent" in where else {"organization_id": where["organization"]}
        return directory.PutResource(directory_pb2.PutResourceRequest(actor_id=owner, resource=ref(resource),
                                                                      **fields)).revision

    put("Page:home", organization=acme)
    put("Post:p1", parent="Page:home")
    assert refused(directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=owner, resource=ref("Post:p2"), parent=ref("Page:home"), organization_id=other)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert refused(directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=owner, resource=ref("Page:x"), parent=ref("Post:p1"))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert refused(directory.PutResource, directory_pb2.PutResourceRequest(
        actor_id=owner, resource=ref("Nope:x"), organization_id=acme)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_RESOURCE_TYPE")
    assert not client.check(("User", reader), "read", "Post:p1")

    # Moving the page to the other organization moves its post along (R2 there now decides).
    revision = put("Page:home", organization=other)
    assert client.check(("User", reader), "read", "Post:p1", at_least_revision=revision)
    assert client.list_resources(("User", reader), "read", "Post") == ["p1"]
    assert app.index.organization_of("Post", "p1") == other


def test_issue20_a_cycle_is_refused(platform, tmp_path):
    """issue 20 item 2: a folder cannot be put under itself or under its own descendant (PARENT_CYCLE),
    and a type with both relations is top-level with an organization, nested with a parent."""
    app, client, policy_dir = platform
    (policy_dir / "folders.polar").write_text(FOLDERS_POLAR)
    app.reload_policy()
    world = World(app)
    owner = world.user("owner")
    acme = world.organization(owner, name="Acme")
    colleague = world.member(acme, "colleague")
    directory = client.directory
    directory.PutResource(directory_pb2.PutResourceRequest(actor_id=owner, resource=ref("Folder:a"),
                                                           organization_id=acme))
    for child, parent in (("b", "a"), ("c", "b"), ("d", "c")):
        revision = directory.PutResource(directory_pb2.PutResourceRequest(
            actor_id=owner, resource=ref(f"Folder:{child}"), parent=ref(f"Folder:{parent}"))).revision
    assert client.check(("User", colleague), "read", "Folder:d", at_least_revision=revision)  # four levels deep
    for parent in ("a", "d"):
        assert refused(directory.PutResource, directory_pb2.PutResourceRequest(
            actor_id=owner, resource=ref("Folder:a"), parent=ref(f"Folder:{parent}"))) == (
            grpc.StatusCode.FAILED_PRECONDITION, "PARENT_CYCLE")

    # A role on the top folder reaches four levels down, and the review says through which parent.
    viewer = world.member(acme, "client")
    granted = directory.GrantResourceRole(directory_pb2.GrantResourceRoleRequest(
        actor_id=owner, resource=ref("Folder:a"), user_id=viewer, role="viewer"))
    assert client.check(("User", viewer), "read", "Folder:d", at_least_revision=granted.revision)
    assert client.list_resources(("User", viewer), "read", "Folder") == ["a", "b", "c", "d"]
    paths = {e.resource.id: e.path for e in client.access_review(acme).entries if e.user_id == viewer}
    assert paths["a"] == "viewer of Folder a" and paths["d"] == "viewer via parent Folder a", paths


def test_issue20_the_pytest_plugin_serves_a_world_with_nested_resources_and_roles(tmp_path):
    """issue 20 item 1: world files carry `resources` (with parents) and `resource_roles`, and the
    pytest plugin's server (mandate.testing) answers about them from the policy it is given."""
    from mandate.testing import RunningMandate

    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for path in [*POLICY_DIR.glob("*.polar"), PLATFORM]:
        shutil.copy(path, policy_dir)
    world = {"users": ["olga", "kim", "nora"], "organizations": {"acme": {"owner": "olga"}},
             "members": [{"organization": "acme", "user": "kim", "role": "client"}],
             "resources": [{"type": "Page", "id": "home", "organization": "acme"},
                           {"type": "Post", "id": "hello", "parent": "Page:home"}],
             "resource_roles": [{"resource": "Post:hello", "user": "kim", "role": "editor"},
                                {"resource": "Post:hello", "user": "nora", "role": "editor"}]}
    with RunningMandate(world, policy_dir) as running:
        assert running.client.check("kim", "edit", "Post:hello")
        assert not running.client.check("kim", "edit", "Page:home")
        assert not running.client.check("nora", "read", "Post:hello")  # a role, but no membership (R2)


def test_issue20_the_platform_example_is_tested_and_every_rule_of_it_is_needed(tmp_path):
    """issue 20 items 3 and 5: the example's policy tests pass on the shipped policy plus the
    example, and deleting any rule of platform.polar makes one of them fail (mutation run)."""
    from mandate.engine import policytest
    from mandate.engine.policy import Policy
    from mandate.engine.policytools import DELETED, mutation_run

    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    for path in [*POLICY_DIR.glob("*.polar"), PLATFORM]:
        shutil.copy(path, policy_dir)
    tests = [str(PLATFORM.parent / "tests")]
    outcomes = policytest.run(tests, Policy(policy_dir))
    assert outcomes and all(o.passed for o in outcomes), [o.title for o in outcomes if not o.passed]
    mutants = mutation_run(policy_dir, tests, kinds=(DELETED,), select=lambda m: m.rule.file.name == "platform.polar")
    assert len(mutants) == 12 and all(m.killed for m in mutants), [
        f"{m.rule.line}: {m.rule.text}" for m in mutants if not m.killed]


def test_issue20_the_scopes_a_client_grants_are_the_policys(platform):
    """issue 20 item 4: the scopes are declared once in the policy (client_scopes): a policy that
    declares fewer makes UNKNOWN_SCOPE name the others, after a reload, with no Python changed (R12)."""
    app, client, policy_dir = platform
    world = World(app)
    partner = world.organization(name="Agency")
    owner = world.owner_of(partner)
    link = partner_pb2.CreateInviteLinkRequest(actor_id=owner, partner_id=partner, customer_name="Shop",
                                               currency="EUR", requested_scopes=["read", "delete"])
    assert client.partner.CreateInviteLink(link).requested_scopes == ["delete", "read"]
    edit_policy(policy_dir, 'client_scopes(["read", "edit", "publish", "approve", "delete"]);',
                'client_scopes(["read", "edit"]);')
    app.reload_policy()
    assert refused(client.partner.CreateInviteLink, link) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_SCOPE")


def test_r6_r7_r18_a_partner_employees_role_on_a_client_project_follows_their_membership(app, world):
    """issue 20 item 3 (R7, R6, R18, R9): a partner's legal representative gives their tagged
    employee a role on one client project (R9: delegated to colleagues). Paused in the partner, the
    role gives nothing (R7); resumed, it is back; removed from the partner, the role ends with the
    membership (R6, R18: a cascaded `resource.role_revoked`) and does not come back when the person
    returns."""
    agency, shop = world.organization(name="Agency"), world.organization(name="Shop")
    lena = world.member(agency, "legal_representative")
    emma = world.member(agency, "colleague", partner_employee=True)
    world.connect(agency, shop, scopes=("read", "edit"), employee_approval="partner")
    site = world.project(shop, "partner-site")
    owner = world.owner_of(agency)
    assert not world.allowed(emma, "edit", "Project", site)
    app.directory.grant_resource_role(lena, "Project", site, emma, "editor")
    app.index.catch_up()
    assert world.allowed(emma, "edit", "Project", site)

    app.memberships.pause_member(owner, agency, emma)  # R7
    app.index.catch_up()
    assert not world.allowed(emma, "edit", "Project", site)
    assert not world.allowed(emma, "read", "Project", site)
    app.memberships.resume_member(owner, agency, emma)
    app.index.catch_up()
    assert world.allowed(emma, "edit", "Project", site)

    app.memberships.remove_member(owner, agency, emma)  # R6, R18
    app.index.catch_up()
    assert not world.allowed(emma, "read", "Project", site)
    roles, _, _ = app.directory.list_resource_roles(world.owner_of(shop), "Project", site, 10, "")
    assert roles == []
    events = [e for e in app.events.list_events(0, 0, 1000, shop) if e.type.startswith("resource.role")]
    assert [(e.type, e.cause, e.attributes["user_id"]) for e in events] == [
        ("resource.role_granted", "", emma), ("resource.role_revoked", "cascade", emma)]
    world.member(agency, "colleague", emma, partner_employee=True)  # back in the partner: no role
    app.index.catch_up()
    assert not world.allowed(emma, "edit", "Project", site)
