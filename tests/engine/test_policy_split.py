"""The policy split per resource block (issue 19 step 4): the policy is every .polar file of its
directory, a type is added by dropping a file there, and decisions that used to be made in
Python are made by the policy files (R15: whom a manager may tag, and whom assign to a client)."""

from __future__ import annotations

import pytest
from mandate import errors
from mandate.engine.policy import Policy, PolicyError, policy_files
from mandate.names import Reason
from mandate.runtime.app import App

from tests.conftest import POLICY_DIR
from tests.factories import World
from tests.support import copy_policy, edit_policy

BLOCK_FILES = {"Organization": "organization.polar", "Project": "project.polar", "Member": "member.polar",
               "ClientInvitation": "client_invitation.polar", "Connection": "connection.polar",
               "RoleGrant": "role_grant.polar", "OrganizationLink": "organization_link.polar"}


def test_r23_the_shipped_policy_has_one_file_per_resource_block_and_the_shared_helpers():
    policy = Policy(POLICY_DIR)
    assert {name: block.file for name, block in policy.blocks.items()} == BLOCK_FILES
    assert sorted(path.name for path in policy.files) == sorted([*BLOCK_FILES.values(), "shared.polar"])
    shared = (POLICY_DIR / "shared.polar").read_text()
    assert "actor User {}" in shared and "has_role(user: User" in shared and "THE CONTRACT" in shared


def test_r23_every_rule_of_every_file_names_its_domain_rules():
    """Explain cites a rule by the R-rules of its comment: none may be without one."""
    for variant_note, _ in Policy(POLICY_DIR)._variants():
        assert variant_note.names, f"{variant_note.file}:{variant_note.line} has no comment naming an R-rule"


def test_r2_a_file_dropped_in_the_directory_adds_a_type(tmp_path):
    """Issue 20: adding a type takes a change to policies/ and nothing else."""
    directory = copy_policy(tmp_path / "policies")
    (directory / "folder.polar").write_text(
        "# R2: a folder of an organization, read by its colleagues.\n"
        "resource Folder {\n"
        '  permissions = ["read"];\n'
        "  relations = { organization: Organization };\n"
        '  "read" if "colleague" on "organization";\n'
        "}\n"
        "# R2: a folder belongs to the organization that registered it.\n"
        'has_relation(org: Organization, "organization", folder: Folder) if\n'
        "  org = folder.organization;\n")
    policy = Policy(directory)
    assert "Folder" in policy.resource_types and policy.blocks["Folder"].file == "folder.polar"
    notes = {note.file for note, _ in policy._variants()}
    assert "folder.polar" in notes and "project.polar" in notes


def test_r23_a_contract_problem_names_the_file_it_is_in(tmp_path):
    directory = copy_policy(tmp_path / "policies")
    edit_policy(directory, '  "list_members" if "colleague";\n',
                '  "list_members" if "colleague";\n  "view" if "guest";\n')
    with pytest.raises(Exception) as caught:
        Policy(directory)
    assert "organization.polar" in str(caught.value)


@pytest.fixture
def tagging(database_url):
    app = App(database_url, POLICY_DIR)
    world = World(app)
    partner = world.organization()
    yield app, world, partner, world.owner_of(partner)
    app.close()


def test_r15_the_policy_decides_whom_a_manager_tags(tagging):
    """R15: only colleagues are tagged (member.polar, "tag" on the Member), and the refusal keeps
    its reason NOT_A_COLLEAGUE; untagging needs "untag" on the Member."""
    app, world, partner, owner = tagging
    colleague, client_member = world.member(partner, "colleague"), world.member(partner, "client")
    assert app.memberships.tag_partner_employee(owner, partner, colleague, True).membership.partner_employee
    with pytest.raises(errors.FailedPrecondition) as refused:
        app.memberships.tag_partner_employee(owner, partner, client_member, True)
    assert refused.value.reason == Reason.NOT_A_COLLEAGUE
    assert not app.memberships.tag_partner_employee(owner, partner, colleague, False).membership.partner_employee


def test_r15_a_policy_that_lets_clients_be_tagged_is_obeyed(database_url, tmp_path):
    """The decision is the policy's: change the rule, and the service follows."""
    directory = copy_policy(tmp_path / "policies")
    edit_policy(directory, '  member.role = "colleague" and\n  has_permission(user, "tag_partner_employee"',
                '  member.role in ["colleague", "client"] and\n  has_permission(user, "tag_partner_employee"')
    app = App(database_url, directory)
    try:
        world = World(app)
        partner = world.organization()
        owner, client_member = world.owner_of(partner), world.member(partner, "client")
        assert app.memberships.tag_partner_employee(owner, partner, client_member, True).membership.partner_employee
    finally:
        app.close()


def test_r15_the_policy_decides_whom_a_manager_assigns(tagging):
    """R15: only tagged partner employees are assigned to a client (member.polar, "assign" on the
    assignee's Member), and the refusal keeps its reason NOT_PARTNER_EMPLOYEE."""
    app, world, partner, owner = tagging
    client = world.organization()
    world.connect(partner, client)
    tagged, untagged = world.member(partner, partner_employee=True), world.member(partner)
    assert app.partners.assign_client(owner, partner, client, tagged).assigned
    with pytest.raises(errors.FailedPrecondition) as refused:
        app.partners.assign_client(owner, partner, client, untagged)
    assert refused.value.reason == Reason.NOT_PARTNER_EMPLOYEE


def test_r15_a_policy_that_lets_untagged_colleagues_be_assigned_is_obeyed(database_url, tmp_path):
    """The decision is the policy's: drop the tag from the rule, and the service follows; a
    policy that refuses every assignee refuses the tagged one too, with NOT_PARTNER_EMPLOYEE."""
    lenient = copy_policy(tmp_path / "lenient")
    edit_policy(lenient, '  member.partner_employee = true and\n  has_permission(user, "assign_client"',
                '  member.role = "colleague" and\n  has_permission(user, "assign_client"')
    strict = copy_policy(tmp_path / "strict")
    edit_policy(strict, '  member.partner_employee = true and\n  has_permission(user, "assign_client"',
                '  member.partner_employee = true and member.is_actor = true and\n'
                '  has_permission(user, "assign_client"')
    for directory, expected in ((lenient, True), (strict, False)):
        app = App(database_url, directory)
        try:
            world = World(app)
            partner, client = world.organization(), world.organization()
            world.connect(partner, client)
            owner = world.owner_of(partner)
            assignee = world.member(partner, partner_employee=not expected)
            if expected:
                assert app.partners.assign_client(owner, partner, client, assignee).assigned
            else:
                with pytest.raises(errors.FailedPrecondition) as refused:
                    app.partners.assign_client(owner, partner, client, assignee)
                assert refused.value.reason == Reason.NOT_PARTNER_EMPLOYEE
        finally:
            app.close()


def referral(app: App, world: World) -> tuple[object, str]:
    """A partner invites a client by email; the client signs up and creates its organization:
    the connection made for it as a referral (R10), and the new organization."""
    partner = world.organization()
    rep = world.member(partner, "legal_representative")
    app.partners.invite_client(rep, partner, "referral@example.com", "Referral AG", "K-1", "EUR", ["read", "edit"])
    user, _ = app.directory.register_user("referral@example.com", "Referral")
    organization = app.directory.create_organization(user.id, "Referral AG", "EUR", None)
    [connection] = app.partners.list_clients(rep, partner, "", "", 10, "")
    return connection, organization.id


def test_r10_r12_the_policy_gives_a_referral_no_scopes(app):
    """R10 with R12, decided by `referral_scopes([]);` (connection.polar): the referral starts
    with nothing granted."""
    assert Policy(POLICY_DIR).referral_scopes == ()
    connection, client_id = referral(app, World(app))
    assert connection.referral and connection.client_id == client_id and list(connection.granted_scopes) == []


def test_r10_r12_a_policy_that_gives_referrals_a_scope_is_obeyed(database_url, tmp_path):
    directory = copy_policy(tmp_path / "policies")
    edit_policy(directory, "referral_scopes([]);", 'referral_scopes(["read"]);')
    app = App(database_url, directory)
    try:
        connection, _ = referral(app, World(app))
        assert connection.referral and list(connection.granted_scopes) == ["read"]
    finally:
        app.close()


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("referral_scopes([]);", "", "declares no scopes a referral connection starts with"),
    ("referral_scopes([]);", 'referral_scopes(["move"]);', "the referral scope 'move' is not a scope a client"),
])
def test_r10_r12_a_policy_must_say_what_a_referral_starts_with(tmp_path, old, new, problem):
    directory = copy_policy(tmp_path / "policies")
    edit_policy(directory, old, new)
    with pytest.raises(PolicyError) as refused:
        Policy(directory)
    assert any(problem in line for line in refused.value.problems), refused.value.problems


CROSS_PATH_RULE = '''
# R20: (a rule that breaks the contract) a partner's manager reaching a client's projects through
# the scopes another partner was granted.
has_permission(user: User, action: String, project: Project) if
  mine in project.organization.partner_connections and
  theirs in project.organization.partner_connections and
  has_role(user, "legal_representative", mine.partner) and
  connection_grants(theirs, action);
'''


def test_r20_r24_a_rule_joining_two_partners_facts_breaks_the_contract(tmp_path):
    """Decisions are made one partner path at a time (facts.partner_paths): a rule that joins one
    partner's membership with another partner's connection would be decided wrongly, so the
    contract refuses it (R24: fail closed rather than answer differently than the policy says)."""
    assert Policy(POLICY_DIR)._cross_path_grants() == []
    directory = copy_policy(tmp_path / "policies")
    (directory / "zz_cross.polar").write_text(CROSS_PATH_RULE)
    with pytest.raises(PolicyError) as refused:
        Policy(directory)
    assert any("only by joining the facts of two partners" in line and "Project" in line
               for line in refused.value.problems), refused.value.problems


def test_r13_linking_needs_link_on_both_accounts_by_the_policy(app):
    """R13 (organization_link.polar): the link is a target, OrganizationLink, with both accounts."""
    world = World(app)
    olga = world.user()
    shop, shop_usd = world.organization(olga), world.organization(olga, currency="USD")
    other = world.organization()
    assert app.directory.link_organizations(olga, shop, shop_usd) > 0
    with pytest.raises(errors.PermissionDenied):
        app.directory.link_organizations(olga, shop, other)
    with pytest.raises(errors.NotFound) as missing:
        app.directory.link_organizations(olga, shop, "no-such-organization")
    assert missing.value.reason == Reason.ORGANIZATION_NOT_FOUND


def test_r13_a_policy_that_links_on_one_account_is_obeyed(database_url, tmp_path):
    directory = copy_policy(tmp_path / "policies")
    edit_policy(directory, ' and\n  has_permission(user, "link", link.other);', ";")
    app = App(database_url, directory)
    try:
        world = World(app)
        olga = world.user()
        shop, other = world.organization(olga), world.organization()
        assert app.directory.link_organizations(olga, shop, other) > 0
    finally:
        app.close()


def test_r23_one_file_holding_the_whole_policy_still_loads(tmp_path):
    """`--policy-dir`/MANDATE_POLICY_DIR names a directory of .polar files, or one .polar file
    that holds the whole policy: both decide alike."""
    whole = tmp_path / "mandate.polar"
    whole.write_text("\n".join(path.read_text() for path in sorted(POLICY_DIR.glob("*.polar"))))
    assert policy_files(whole) == [whole]
    assert [path.name for path in policy_files(POLICY_DIR)] == sorted(path.name for path in POLICY_DIR.glob("*.polar"))
    one, split = Policy(whole), Policy(POLICY_DIR)
    assert one.permissions == split.permissions and one.referral_scopes == split.referral_scopes == ()
    assert one.blocks["Member"].file == "mandate.polar"
    assert policy_files(tmp_path / "missing.polar") == []
    with pytest.raises(PolicyError, match="no .polar files"):
        Policy(tmp_path / "missing.polar")
