"""The policy contract (header of policies/shared.polar, docs/policy.md): a policy that could
make the remembered decisions or the lists wrong is refused at load, by `mandate policy check`,
at server start and at every reload, and the old policy keeps serving (R24: fail closed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mandate.engine import facts
from mandate.engine.facts import ConnectionFact, MembershipFact, Subject
from mandate.engine.policy import Policy, PolicyError
from mandate.runtime.app import App

from tests.conftest import POLICY_DIR, ROOT
from tests.support import copy_policy

# A client member approving wherever the client did not delegate approval: the Subject of a
# client member carries no connections, so the negation would be true and allow (R24).
NEGATION = '''
approval_delegated(org: Organization) if
  connection in org.partner_connections and
  connection.employee_approval = "partner";
has_permission(user: User, "approve", project: Project) if
  membership in user.memberships and
  membership.role = "colleague" and
  not approval_delegated(project.organization);
'''
# A grant that needs no fact about the actor: Check would allow it, the lists would not.
FACT_FREE = '''
has_permission(_user: User, "read", _project: Project);
'''
# A literal id: organizations are local labels, so this would grant by accident of labelling.
ID_LITERAL = '''
has_permission(user: User, "delete", project: Project) if
  membership in user.memberships and
  membership.organization_id = "o" and
  project.organization.id = "org_0123456789";
'''
UNKNOWN_ATTRIBUTE = '''
has_permission(user: User, "delete", project: Project) if
  membership in user.memberships and
  membership.is_admin = true and
  project.organization = project.organization;
'''


def copy_with(tmp_path: Path, extra: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    copy_policy(directory)
    (directory / "zz_extra.polar").write_text("# added for the test\n" + extra)
    return directory


def refusal(directory: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        Policy(directory)
    return caught.value.problems


def test_r24_the_shipped_policy_keeps_the_contract():
    assert Policy(POLICY_DIR).contract_problems() == []


def test_r24_the_contract_lists_exactly_the_attributes_the_policy_objects_have():
    """The attributes the contract allows are the ones the facts carry (no drift either way)."""
    home = facts.Organization("o", partner_connections=(), linked_organizations=())
    connection = facts.Connection(ConnectionFact("p0", "active", frozenset(), "client"), home, home)
    objects = {
        "User": facts.User([], []), "Organization": home, "Connection": connection,
        "Resource": facts.resource_class("Project")("r0", home),
        "ResourceRole": facts.ResourceRole(facts.resource_class("Project")("r0", home), "editor"),
        "RoleGrant": facts.RoleGrant(facts.RoleGrantTarget("editor"), facts.resource_class("Project")("r0", home),
                                     facts.User([], [])),
        "Membership": MembershipFact("o", "owner", "active", False),
        "Assignment": facts.AssignmentFact("p0", True),
        "Member": facts.Member(facts.MemberTarget("colleague", "active", False, False), home),
        "ClientInvitation": facts.ClientInvitation(facts.InvitationTarget(True, False), home),
        "OrganizationLink": facts.OrganizationLink(home, facts.Organization(facts.OTHER)),
    }
    assert set(objects) == set(facts.ATTRIBUTES)
    for name, attributes in facts.ATTRIBUTES.items():
        for attribute in attributes:
            assert hasattr(objects[name], attribute), f"{name}.{attribute}"


def test_r24_negation_is_refused_with_its_line(tmp_path):
    directory = copy_with(tmp_path, NEGATION)
    problems = refusal(directory)
    assert problems == ["POLICY_CONTRACT zz_extra.polar:9: negation (not) is not allowed: a fact the policy "
                        "does not see would turn into an allow"]


def test_r24_without_the_contract_the_negation_would_allow_a_colleague_to_approve(tmp_path, monkeypatch):
    """The harm the contract prevents is real: a colleague's Subject carries no partner
    connections, so `not approval_delegated(...)` is true and the policy allows (R2 says no)."""
    monkeypatch.setattr(Policy, "contract_problems", lambda self: [])
    monkeypatch.setattr("mandate.engine.policy._contract_verdicts", {})  # the refusal above is remembered
    unchecked = Policy(copy_with(tmp_path, NEGATION))
    colleague = Subject(memberships=(MembershipFact("o", "colleague", "active", False),))
    assert unchecked.is_allowed(colleague, "Project", "approve")


def test_r24_a_grant_without_any_fact_is_refused_with_its_line(tmp_path):
    problems = refusal(copy_with(tmp_path, FACT_FREE))
    assert problems == ["POLICY_CONTRACT zz_extra.polar:3: grants 'read' on a Project to a user with no "
                        "membership (no target); every grant needs a fact"]


def test_r24_an_id_literal_is_refused_with_its_line(tmp_path):
    problems = refusal(copy_with(tmp_path, ID_LITERAL))
    assert [p.split(":")[1] for p in problems] == ["5", "6"], problems
    assert all(p.startswith("POLICY_CONTRACT zz_extra.polar:") and "literal" in p for p in problems)
    assert '"org_0123456789"' in problems[1]


def test_r24_an_attribute_the_facts_do_not_have_is_refused(tmp_path):
    problems = refusal(copy_with(tmp_path, UNKNOWN_ATTRIBUTE))
    assert problems == ["POLICY_CONTRACT zz_extra.polar:5: .is_admin is not a fact the policy sees"]


def test_r24_a_fact_free_grant_on_a_target_is_refused(tmp_path):
    """Target facts are not facts about the actor: pausing any colleague, by anyone, is refused."""
    problems = refusal(copy_with(tmp_path, 'has_permission(_user: User, "pause", member: Member) if\n'
                                           '  member.role = "colleague";\n'))
    assert len(problems) == 1 and problems[0].startswith("POLICY_CONTRACT zz_extra.polar:2: grants 'pause' on a "
                                                         "Member"), problems


@pytest.mark.parametrize("extra", [NEGATION, FACT_FREE, ID_LITERAL], ids=["negation", "fact-free", "id-literal"])
def test_r24_policy_check_exits_1_and_prints_each_violation(tmp_path, extra):
    directory = copy_with(tmp_path, extra)
    result = subprocess.run([sys.executable, "-m", "mandate.cli", "policy", "check", "--policy-dir", str(directory)],
                            capture_output=True, text=True, cwd=ROOT / "tests", env=dict(os.environ), timeout=120)
    assert result.returncode == 1, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("POLICY_CONTRACT zz_extra.polar:")]
    assert lines, result.stderr
    assert "Traceback" not in result.stderr


def test_r24_a_reload_that_breaks_the_contract_is_refused_and_the_old_policy_serves(tmp_path, database_url):
    directory = tmp_path / "live"
    directory.mkdir()
    copy_policy(directory)
    app = App(database_url, directory)
    try:
        serving = app.authorizer.policy
        colleague = Subject(memberships=(MembershipFact("o", "colleague", "active", False),))
        assert not serving.is_allowed(colleague, "Project", "approve")
        (directory / "zz_extra.polar").write_text(NEGATION)
        with pytest.raises(PolicyError, match="POLICY_CONTRACT"):
            app.reload_policy()
        assert app.authorizer.policy is serving
        assert not app.authorizer.policy.is_allowed(colleague, "Project", "approve")
    finally:
        app.close()


def test_r24_the_server_refuses_to_start_on_a_policy_that_breaks_the_contract(tmp_path):
    directory = copy_with(tmp_path, NEGATION)
    env = {**os.environ, "MANDATE_API_TOKENS": "contract-test-token-0123", "MANDATE_POLICY_DIR": str(directory),
           "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db"}
    result = subprocess.run([sys.executable, "-m", "mandate.cli", "serve", "--listen", "127.0.0.1:0"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "POLICY_CONTRACT zz_extra.polar:9: negation" in result.stderr


NO_RELATION = '''
resource Widget {
  permissions = ["read"];
}
'''
UNKNOWN_PARENT = '''
resource Gadget {
  permissions = ["read"];
  relations = { parent: Widget };
}
'''
NESTED = '''
# R2: a page of the organization.
resource Page {
  permissions = ["read"];
  relations = { organization: Organization };
  "read" if "colleague" on "organization";
}
# R2: a page belongs to its organization.
has_relation(org: Organization, "organization", page: Page) if
  org = page.organization;
# R2: a post reads through its page, and its author marks.
has_permission(user: User, "read", page: Page) if
  page.parent.author = user;
'''


def test_issue20_a_type_with_neither_relation_is_refused_with_its_line(tmp_path):
    """issue 20 item 1: a resource block that is neither the service's own nor registrable."""
    assert refusal(copy_with(tmp_path, NO_RELATION)) == [
        "POLICY_CONTRACT zz_extra.polar:3: resource Widget cannot be registered: it declares neither "
        "`organization: Organization` nor `parent: <a declared type>`"]


def test_issue20_a_parent_that_is_no_resource_type_is_refused(tmp_path):
    assert refusal(copy_with(tmp_path, UNKNOWN_PARENT)) == [
        "POLICY_CONTRACT zz_extra.polar:3: resource Gadget cannot be registered: its parent type Widget is "
        "not a resource type"]


def test_issue20_an_attribute_of_a_declared_type_the_facts_do_not_carry_is_refused(tmp_path):
    """issue 20 item 1: a declared resource carries its relations (organization, parent) only."""
    problems = refusal(copy_with(tmp_path, NESTED))
    assert "POLICY_CONTRACT zz_extra.polar:14: .author is not a fact the policy sees" in problems, problems


def test_issue20_the_declared_types_and_scopes_come_from_the_policy():
    policy = Policy(POLICY_DIR)
    assert list(policy.resource_types) == ["Project"]
    assert policy.scopes == ("read", "edit", "publish", "approve", "delete")
    assert policy.roles["Project"] == ("viewer", "editor")
