"""`mandate policy diff`: a policy change with a known effect, diffed on a fixture world, gives
exactly that effect (the groups, their counts and every triple); identical policies change
nothing; a bad base is a usage error; the base may be a git ref; the facts may come from a
database, which is only read (issue 10, part 3)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from mandate.cli import main
from mandate.engine import policydiff
from mandate.engine.authorizer import ConnectionRef, InvitationRef, LinkRef, MemberRef, RoleGrantRef
from mandate.engine.index import FactIndex
from mandate.engine.policy import Policy
from mandate.runtime.world import EphemeralApp, load_world, read_yaml
from mandate.store.db import Store
from mandate.store.migrate import upgrade

from tests.support import edit_policy

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "policies"

# acme is a client of agency. alice owns acme, bob is its colleague, carol its client member.
# ann owns agency; dan and erin are its tagged colleagues; only dan is assigned to acme and
# approved. acme has two projects, agency none.
WORLD = """\
world:
  users: [alice, bob, carol, ann, dan, erin]
  organizations:
    acme: {owner: alice}
    agency: {owner: ann}
  members:
    - {organization: acme, user: bob, role: colleague}
    - {organization: acme, user: carol, role: client}
    - {organization: agency, user: dan, role: colleague, partner_employee: true}
    - {organization: agency, user: erin, role: colleague, partner_employee: true}
  connections:
    - {partner: agency, client: acme, granted: [read, edit, publish], employee_approval: client}
  assignments:
    - {partner: agency, client: acme, user: dan, approved: true}
  projects:
    - {id: spring, organization: acme}
    - {id: summer, organization: acme}
"""

# Every path a user can have to an organization, for the Subject equivalence below: two
# partners of one client sharing people, a person who is a member of both the client and its
# partner, linked accounts, a paused membership, a disconnected connection, an assignment by a
# partner the person does not belong to, an unapproved assignment.
RICH_WORLD = """\
world:
  users: [o1, o2, o3, o4, p1, p2, p3, q1, x1, x2, l1]
  organizations:
    client: {owner: o1}
    client2: {owner: o2}
    usd: {owner: o1}
    agency: {owner: p1}
    other: {owner: q1}
  members:
    - {organization: client, user: o3, role: colleague}
    - {organization: client, user: o4, role: client, paused: true}
    - {organization: client, user: x1, role: colleague}
    - {organization: agency, user: x1, role: colleague, partner_employee: true}
    - {organization: agency, user: p2, role: colleague, partner_employee: true}
    - {organization: agency, user: p3, role: legal_representative}
    - {organization: agency, user: x2, role: colleague, partner_employee: true}
    - {organization: other, user: x2, role: legal_representative}
    - {organization: other, user: p2, role: colleague, paused: true}
    - {organization: usd, user: l1, role: colleague}
    - {organization: client, user: l1, role: client}
  connections:
    - {partner: agency, client: client, granted: [read, edit], employee_approval: client}
    - {partner: other, client: client, granted: [read], employee_approval: partner}
    - {partner: agency, client: client2, granted: [read], status: disconnected}
    - {partner: other, client: client2, granted: [read, publish], employee_approval: partner}
  assignments:
    - {partner: agency, client: client, user: p2, approved: true}
    - {partner: agency, client: client, user: x2, approved: false}
    - {partner: other, client: client, user: p2, approved: true}
    - {partner: agency, client: client2, user: q1, approved: true}
  links: [[client, usd]]
  projects:
    - {id: a, organization: client}
    - {id: b, organization: client2}
    - {id: c, organization: usd}
"""


@pytest.fixture
def world_file(tmp_path) -> Path:
    path = tmp_path / "world.yaml"
    path.write_text(WORLD)
    return path


def policy_with(tmp_path: Path, old: str, new: str, name: str = "changed") -> Path:
    """A copy of the shipped policy files with one edit."""
    directory = tmp_path / name
    directory.mkdir()
    for path in POLICY_DIR.glob("*.polar"):
        shutil.copy(path, directory)
    edit_policy(directory, old, new)
    return directory


def diff_json(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(["policy", "diff", *args, "--format", "json", "--all"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def effect(report: dict) -> list[tuple]:
    """(resource type, action, before, after, count, every triple) per group, in the report's order."""
    return [(g["resource_type"], g["action"], g["before"], g["after"], g["count"],
             sorted((t["user"], t["action"], t["resource"]) for t in g["triples"])) for g in report["groups"]]


PUBLISH_RULE = '  "publish" if "colleague" on "organization";\n'
DELEGATION_RULE = ('client_consents(connection: Connection, _assignment: Assignment) if\n'
                   '  connection.employee_approval = "partner";\n')
APPROVAL_RULE = ('client_consents(_connection: Connection, assignment: Assignment) if\n'
                 '  assignment.client_approved = true;\n')


def triples(user: str, action: str) -> list[tuple[str, str, str]]:
    return [(user, action, "Project:spring"), (user, action, "Project:summer")]


# -- a change with a known effect gives exactly that effect ---------------------------------------


@pytest.mark.parametrize(("old", "new", "expected"), [
    # Colleagues no longer publish: alice (an owner is a colleague too) and bob lose it, one
    # situation each; dan and ann still publish through the partner connection.
    pytest.param(PUBLISH_RULE, "", [
        ("Project", "publish", "allow", "deny", 2, triples("alice", "publish")),
        ("Project", "publish", "allow", "deny", 2, triples("bob", "publish")),
    ], id="rule-removed"),
    # Colleagues also delete projects: only bob gains it (alice already could, as an owner).
    pytest.param(PUBLISH_RULE, PUBLISH_RULE + '  "delete" if "colleague" on "organization";\n', [
        ("Project", "delete", "deny", "allow", 2, triples("bob", "delete")),
    ], id="permission-added"),
    # The client's approval no longer counts: dan, the one approved partner employee, loses
    # every scope acme granted, one group per action of his one situation.
    pytest.param(APPROVAL_RULE, "", [
        ("Project", "edit", "allow", "deny", 2, triples("dan", "edit")),
        ("Project", "publish", "allow", "deny", 2, triples("dan", "publish")),
        ("Project", "read", "allow", "deny", 2, triples("dan", "read")),
    ], id="partner-path"),
    # A rule that grants nothing on these grants (nobody here relies on the partner's
    # delegation) changes nothing.
    pytest.param(DELEGATION_RULE, "", [], id="rule-unused-here"),
])
def test_a_policy_change_gives_exactly_its_effect(tmp_path, capsys, world_file, old, new, expected):
    changed = policy_with(tmp_path, old, new)
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                                  "--world", str(world_file))
    assert (code, err) == (1 if expected else 0, "")
    assert effect(report) == expected
    if not expected:
        assert main(["policy", "diff", "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                     "--world", str(world_file)]) == 0
        assert capsys.readouterr().out.endswith("\nNo decision changes.\n")
    assert report["changed"] == sum(group[4] for group in expected)
    for group in report["groups"]:
        # The example is one of the group's triples, and each side's Explain says so.
        assert group["example"] == group["triples"][0]
        assert group["explain"]["base"][0].startswith(f"{'allowed' if group['before'] == 'allow' else 'denied'}: "
                                                      f"user {group['example']['user']} {group['action']} on "
                                                      f"{group['resource_type']} ")
        assert group["explain"]["new"][0].startswith("allowed" if group["after"] == "allow" else "denied")
        assert report["base"]["policy_version"] in group["explain"]["base"][0]
        assert report["new"]["policy_version"] in group["explain"]["new"][0]


def test_the_groups_follow_the_situation_and_the_markdown_names_them(tmp_path, capsys, world_file):
    changed = policy_with(tmp_path, PUBLISH_RULE, "")
    code = main(["policy", "diff", "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                 "--world", str(world_file)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("# Policy diff: 4 decisions change\n")
    assert "| 1 | publish | Project | allow → deny | 2 | 1 | `alice publish Project:spring` |" in out
    assert "| 2 | publish | Project | allow → deny | 2 | 1 | `bob publish Project:spring` |" in out
    assert "- owner of the organization (active)" in out
    assert "- colleague of the organization (active)" in out
    assert "by the rule R2 (project.polar:" in out  # the base side's Explain cites the removed rule
    assert "`bob publish Project:summer`" not in out  # without --all, one example per group


def test_identical_policies_change_nothing(capsys, world_file, monkeypatch):
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(POLICY_DIR),
                                  "--world", str(world_file))
    assert (code, err, report["groups"], report["changed"]) == (0, "", [], 0)
    assert report["base"]["policy_version"] == report["new"]["policy_version"]
    # Without --policy-dir, the policy `mandate policy check` loads: here the same files.
    monkeypatch.delenv("MANDATE_POLICY_DIR", raising=False)
    assert main(["policy", "diff", "--base", str(POLICY_DIR), "--world", str(world_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Policy diff: 0 decisions change\n")
    assert out.endswith("\nNo decision changes: the two policies are the same files.\n") and "| # |" not in out


# -- usage errors ---------------------------------------------------------------------------------


def test_a_bad_base_is_a_usage_error(tmp_path, capsys, world_file):
    outside_git = tmp_path / "not-a-repo"
    shutil.copytree(POLICY_DIR, outside_git, ignore=shutil.ignore_patterns("tests"))
    broken = policy_with(tmp_path, "actor User {}", "actor User {", name="broken")
    empty = tmp_path / "empty"
    empty.mkdir()
    for base, policy_dir, message in [
        ("HEAD", outside_git, "is not in a git repository"),
        (str(broken), POLICY_DIR, "the base policy does not load"),
        (str(empty), POLICY_DIR, "no .polar files"),
        ("no-such-ref-or-directory", POLICY_DIR, "neither a directory nor a git ref"),
    ]:
        code, report, err = diff_json(capsys, "--base", base, "--policy-dir", str(policy_dir),
                                      "--world", str(world_file))
        assert (code, report) == (2, None), base
        assert err.startswith("mandate: ") and message in err, err


@pytest.mark.parametrize("args", [
    pytest.param(["--world", "w.yaml", "--database", "sqlite://"], id="both-world-and-database"),
    pytest.param(["--base", "policies"], id="no-grants"),
    pytest.param(["--world", "w.yaml"], id="no-base"),
    pytest.param(["--base", "policies", "--world", "w.yaml", "--format", "csv"], id="bad-format"),
])
def test_bad_arguments_are_a_usage_error(capsys, args):
    with pytest.raises(SystemExit) as exit_:
        main(["policy", "diff", *args])
    assert exit_.value.code == 2


def test_unreadable_facts_are_a_usage_error(tmp_path, capsys):
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--world", str(tmp_path / "missing.yaml"))
    assert (code, report) == (2, None) and "cannot load the world" in err
    never_migrated = tmp_path / "never-migrated.db"
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--database", f"sqlite:///{never_migrated}")
    assert (code, report) == (2, None) and "cannot read the facts" in err


# -- the base at a git ref ------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=Reviewer", "-c", "user.email=reviewer@example.test", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_the_base_may_be_a_git_ref(tmp_path, capsys, world_file):
    repository = tmp_path / "repo"
    policies = repository / "deploy" / "policies"
    shutil.copytree(POLICY_DIR, policies)
    git(repository, "init", "-q")
    git(repository, "add", ".")
    git(repository, "commit", "-qm", "the policy as it serves")
    git(repository, "tag", "serving")
    edit_policy(policies, PUBLISH_RULE, "")
    git(repository, "commit", "-qam", "colleagues stop publishing")

    code, report, err = diff_json(capsys, "--base", "HEAD~1", "--policy-dir", str(policies),
                                  "--world", str(world_file))
    assert (code, err) == (1, "")
    assert [(g["action"], g["count"], g["example"]["user"]) for g in report["groups"]] == [
        ("publish", 2, "alice"), ("publish", 2, "bob")]
    assert report["base"]["source"] == "HEAD~1:deploy/policies/"
    # A tag is a ref too; the same commit as the working files: nothing changes.
    assert diff_json(capsys, "--base", "serving", "--policy-dir", str(policies), "--world", str(world_file))[0] == 1
    assert diff_json(capsys, "--base", "HEAD", "--policy-dir", str(policies), "--world", str(world_file))[0] == 0
    # An unknown ref, and a ref at which the policy directory did not exist yet.
    code, _, err = diff_json(capsys, "--base", "no-such-ref", "--policy-dir", str(policies),
                             "--world", str(world_file))
    assert code == 2 and "neither a directory nor a git ref" in err
    git(repository, "mv", "deploy/policies", "policies")
    git(repository, "commit", "-qm", "moved")
    code, _, err = diff_json(capsys, "--base", "HEAD~2", "--policy-dir", str(repository / "policies"),
                             "--world", str(world_file))
    assert code == 2 and "does not exist at HEAD~2" in err


# -- the facts from a database --------------------------------------------------------------------


def test_a_database_gives_the_same_diff_and_is_only_read(tmp_path, capsys, world_file):
    database = tmp_path / "mandate.db"
    upgrade(f"sqlite:///{database}")
    store = Store(f"sqlite:///{database}")
    load_world(store, read_yaml(world_file)["world"])
    store.engine.dispose()
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    changed = policy_with(tmp_path, PUBLISH_RULE, "")

    code, from_database, _ = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                                       "--database", f"sqlite:///{database}")
    _, from_world, _ = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                                 "--world", str(world_file))
    assert code == 1
    assert effect(from_database) == effect(from_world)
    assert from_database["facts"]["source"] == f"database sqlite:///{database}"
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before


# -- each situation decided once: the Subjects are the server's --------------------------------------


def test_the_situations_are_the_subjects_the_server_decides_on(tmp_path):
    """The diff builds the Subjects of the pairs in bulk; they must be exactly those that
    `FactIndex.subject` builds for a check, for every (user, organization) pair with a fact."""
    with EphemeralApp(POLICY_DIR, read_yaml_text(tmp_path, RICH_WORLD)) as app:
        index: FactIndex = app.index
        bulk = {(user_id, organization_id): subject
                for subject, where in policydiff.situations(index).items()
                for organization_id, users in where.items() for user_id in users}
        one_by_one = {(user_id, organization_id): index.subject(user_id, organization_id)
                      for organization_id in index.organizations
                      for user_id in index.candidate_users(organization_id)}
        assert bulk == one_by_one
        shapes = defaultdict(int)
        for subject in bulk.values():
            shapes[(len(subject.memberships), len(subject.connections), len(subject.assignments),
                    len(subject.linked))] += 1
        # The world has every shape the bulk path must get right: several partners, home and
        # partner at once, a linked account, an assignment.
        assert any(c >= 2 for _, c, _, _ in shapes) and any(a for _, _, a, _ in shapes)
        assert any(linked for *_, linked in shapes) and any(m >= 2 and c == 1 for m, c, _, _ in shapes)


def read_yaml_text(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "rich.yaml"
    path.write_text(text)
    return read_yaml(path)["world"]


# -- the targets of mutations (issue 18 item 18) -----------------------------------------------------

# shop is a client of agency. olga owns shop; lars is its legal representative, lia a paused
# one, cole a colleague, kim a client member. ann owns agency, lena is its legal representative.
TARGET_WORLD = """\
world:
  users: [olga, lars, lia, cole, kim, ann, lena]
  organizations:
    shop: {owner: olga}
    agency: {owner: ann}
  members:
    - {organization: shop, user: lars, role: legal_representative}
    - {organization: shop, user: lia, role: legal_representative, paused: true}
    - {organization: shop, user: cole, role: colleague}
    - {organization: shop, user: kim, role: client}
    - {organization: agency, user: lena, role: legal_representative}
  connections:
    - {partner: agency, client: shop, granted: [read], employee_approval: client}
  projects:
    - {id: site, organization: shop}
"""
RESUME_RULE = ('has_permission(user: User, "resume", member: Member) if\n'
               '  member.role in ["colleague", "client"] and')
INVITE_OWNER_RULE = ('  member.new_role = "owner" and\n  has_role(user, "owner", member.organization);\n\n'
                     '# R6:')
SENT_TO_ACTOR = '  invitation.sent_to_actor = true and\n'
UNASSIGN_RULE = '  "unassign" if "assign_client" on "partner";\n'


@pytest.fixture
def target_world(tmp_path) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(TARGET_WORLD)
    return path


@pytest.mark.parametrize(("old", "new", "expected"), [
    # The issue's change: legal representatives resume paused legal representatives. Only lars
    # gains it (lia herself is paused; olga could already): one decision, on lia.
    pytest.param(RESUME_RULE, RESUME_RULE.replace('"client"]', '"client", "legal_representative"]'), [
        ("Member", "resume", "deny", "allow", 1, [("lars", "resume", "Member:shop/lia")]),
    ], id="member-resume"),
    # Legal representatives invite owners: lars (in shop) and lena (in agency), one situation.
    pytest.param(INVITE_OWNER_RULE, INVITE_OWNER_RULE.replace('"owner", member', '"legal_representative", member'), [
        ("Member", "invite", "deny", "allow", 2, [("lars", "invite", "Member:shop/(someone not a member) to owner"),
                                                  ("lena", "invite", "Member:agency/(someone not a member) to owner")]),
    ], id="member-invite-as-owner"),
    # An invitation emailed to someone else is accepted by whoever may accept for the client:
    # the owners (ann, olga) and the legal representatives (lars, lena) of each organization.
    pytest.param(SENT_TO_ACTOR, "", [
        ("ClientInvitation", "accept", "deny", "allow", 2, [
            ("ann", "accept", "ClientInvitation:agency/(someone else)"),
            ("olga", "accept", "ClientInvitation:shop/(someone else)")]),
        ("ClientInvitation", "accept", "deny", "allow", 2, [
            ("lars", "accept", "ClientInvitation:shop/(someone else)"),
            ("lena", "accept", "ClientInvitation:agency/(someone else)")]),
    ], id="invitation-to-someone-else"),
    # The client's managers unassign the partner's people: olga and lars, on the one connection.
    pytest.param(UNASSIGN_RULE, UNASSIGN_RULE + '  "unassign" if "revoke_partner" on "client";\n', [
        ("Connection", "unassign", "deny", "allow", 1, [("lars", "unassign", "Connection:agency/shop")]),
        ("Connection", "unassign", "deny", "allow", 1, [("olga", "unassign", "Connection:agency/shop")]),
    ], id="connection-unassign"),
])
def test_issue18_item18_a_change_on_a_target_gives_exactly_its_effect(tmp_path, capsys, target_world, old, new,
                                                                       expected):
    """issue 18 item 18: the diff covers the targets of mutations (Member, ClientInvitation,
    Connection), not only Organization and Project: each change flips exactly its decisions."""
    changed = policy_with(tmp_path, old, new)
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                                  "--world", str(target_world))
    assert (code, err) == (1, "")
    assert sorted(effect(report)) == sorted(expected)
    for group in report["groups"]:
        assert group["example"] == group["triples"][0]
        assert any(line.startswith("the target: ") for line in group["situation"])
        assert group["explain"]["base"][0].startswith("denied: user ")
        assert group["explain"]["new"][0].startswith("allowed: user ")
        assert any(line.startswith("by the rule ") for line in group["explain"]["new"])


def test_issue18_item18_the_diff_covers_every_type_the_policy_decides():
    """Every resource type the policy declares is diffed: the check plane's and the targets'."""
    policy = Policy(POLICY_DIR)
    declared = set(policy.permissions)
    assert declared == set(policydiff.resource_types(policy, policy)) | set(policydiff.TARGET_TYPES)


def target_ref(user_id: str, resource: str):
    """The reference the services build for a triple of the diff (see policydiff, the targets)."""
    kind, _, rest = resource.partition(":")
    rest, _, role = rest.partition(" to ")
    first, _, second = rest.partition("/")
    if kind == "Member":
        return MemberRef(first, "" if second.startswith("(") else second, role)
    if kind == "ClientInvitation":
        return InvitationRef(first, second == "link", second == user_id)
    return ConnectionRef(first, second)


def test_issue18_item18_the_target_situations_are_the_servers(tmp_path):
    """For every triple of every target situation the diff decides, the Subject (target facts
    included) is the one the server builds for that mutation; and every (user with a fact,
    membership) pair and every (user with a fact, connection) pair is there once."""
    with EphemeralApp(POLICY_DIR, read_yaml_text(tmp_path, RICH_WORLD)) as app:
        index: FactIndex = app.index
        seen: dict[str, set] = defaultdict(set)
        for subject, resource_type, actions, cells in policydiff.target_situations(
                index, policydiff.situations(index)):
            for organization_id, found in cells().items():
                for cell in found:
                    for user_id, _, resource in cell.triples("x"):
                        ref = target_ref(user_id, resource)
                        assert app.authorizer.target_subject(user_id, ref) == (organization_id, subject), resource
                        key = (resource_type, actions and tuple(sorted(actions)), user_id, resource)
                        assert key not in seen[resource_type], key
                        seen[resource_type].add(key)
        pairs = [(user_id, organization_id) for organization_id in index.organizations
                 for user_id in index.candidate_users(organization_id)]
        members = {(user_id, f"Member:{organization_id}/{member}") for user_id, organization_id in pairs
                   for member in index.members.get(organization_id, ())}
        assert {(u, r) for t, a, u, r in seen["Member"] if a is None} == members
        connections = {(user_id, f"Connection:{partner_id}/{organization_id}") for user_id, organization_id in pairs
                       for partner_id in index.partners.get(organization_id, {})}
        assert {(u, r) for *_, u, r in seen["Connection"]} == connections
        assert len(connections) > 10 and len(members) > 30


MANAGERS_GRANT = ('has_permission(user: User, "grant", grant: RoleGrant) if\n'
                  '  has_role(user, "legal_representative", grant.resource.organization) and\n')
ROLE_WORLD = TARGET_WORLD.replace("  users: [olga,", "  users: [vic, olga,") + """\
  resource_roles:
    - {resource: "Project:site", user: vic, role: viewer}
"""


@pytest.mark.parametrize(("old", "new", "expected"), [
    # Only owners give roles: lars (an active legal representative) no longer gives any role on the
    # site to anyone of the shop, himself included; paused lia could not anyway (R7), and ann's agency
    # gives none (its people are not tagged).
    pytest.param(MANAGERS_GRANT, MANAGERS_GRANT.replace('"legal_representative"', '"owner"'), {
        ("lars", "grant", f"RoleGrant:Project/site/{grantee}/{role}")
        for grantee in ("olga", "lars", "lia", "cole", "kim") for role in ("viewer", "editor")},
        id="owners-only"),
    # Anyone may be given a role by a manager: the grantee's membership no longer counts, so users with
    # no fact about the shop (lena, ann, vic, who holds a role there only) and anyone else become
    # grantees of olga and lars.
    pytest.param(MANAGERS_GRANT + '  membership in grant.grantee.memberships and\n'
                 '  membership.organization_id = grant.resource.organization.id;\n',
                 MANAGERS_GRANT.removesuffix(" and\n") + ";\n", {
                     (manager, "grant", f"RoleGrant:Project/site/{grantee}/{role}")
                     for manager in ("olga", "lars") for grantee in ("lena", "ann", "vic", "(anyone else)")
                     for role in ("viewer", "editor")}, id="to-anyone"),
])
def test_issue20_a_change_on_who_gives_roles_gives_exactly_its_effect(tmp_path, capsys, old, new, expected):
    """issue 20: the diff covers RoleGrant (who may give or take back which role on which resource
    to whom), as the other targets: each change flips exactly its decisions (R2, R4, R7)."""
    world = tmp_path / "roles.yaml"
    world.write_text(ROLE_WORLD)
    changed = policy_with(tmp_path, old, new)
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                                  "--world", str(world))
    assert (code, err) == (1, "")
    found = {tuple(t.values()) for group in report["groups"] for t in group["triples"]}
    assert found == {(u, a, r) for u, a, r in expected}
    for group in report["groups"]:
        assert group["resource_type"] == "RoleGrant"
        assert sum(1 for _ in group["triples"]) == group["count"]
        assert any(line.startswith("the target: the role ") for line in group["situation"])
        assert group["explain"]["base" if group["before"] == "allow" else "new"][0].startswith("allowed: ")


def test_issue20_the_grant_situations_are_the_servers(tmp_path):
    """For every triple of every RoleGrant situation the diff decides, the Subject (the grantee's
    facts and the actor's roles on the chain included) is the one the server builds for that
    grant; and every (user with a fact, resource, grantee with a fact, role) is there once."""
    world = read_yaml_text(tmp_path, RICH_WORLD.replace("  members:\n", """\
  resource_roles:
    - {resource: "Project:a", user: x2, role: editor}
    - {resource: "Project:a", user: ghost, role: viewer}
  members:
""").replace("  users: [", "  users: [ghost, "))
    with EphemeralApp(POLICY_DIR, world) as app:
        index: FactIndex = app.index
        policy = app.authorizer.policy
        holders = policydiff._role_holders(index)
        roles = policydiff._declared_roles(policy, policy)
        seen = set()
        found = policydiff.grant_situations(index, policydiff.situations(index), roles, holders)
        for subject, cells in found.items():
            for organization_id, grants in cells.items():
                for cell in grants:
                    for user_id, _, resource in cell.triples("x"):
                        resource_type, resource_id, grantee, role = resource.removeprefix("RoleGrant:").split("/")
                        assert (user_id, resource) not in seen, resource
                        seen.add((user_id, resource))
                        if grantee == policydiff.ANYONE_ELSE:
                            grantee = "nobody-at-all"
                        ref = RoleGrantRef(resource_type, resource_id, grantee, role)
                        assert app.authorizer.target_subject(user_id, ref) == (organization_id, subject), resource
        assert ("ghost", "RoleGrant:Project/a/ghost/viewer") in seen  # a role is their only fact
        expected = set()
        for organization_id in index.organizations:
            users = index.candidate_users(organization_id)
            for project in index.resources_of("Project", organization_id):
                chain = (("Project", project),)
                for user_id in users | index.candidate_users(organization_id, chain):
                    for grantee in users:
                        for role in ("viewer", "editor"):
                            expected.add((user_id, f"RoleGrant:Project/{project}/{grantee}/{role}"))
        assert expected <= seen and len(expected) > 100


REACH_CHANGES = {
    "project-only": (PUBLISH_RULE, ""),
    "partner-consent": (APPROVAL_RULE, ""),
    "organization-permission": ('  "pause_member" if "legal_representative";\n', '  "pause_member" if "colleague";\n'),
    "who-links": ('  "link" if "owner";\n', '  "link" if "colleague";\n'),
}


@pytest.mark.parametrize("change", sorted(REACH_CHANGES))
def test_issue18_item18_skipping_the_targets_a_change_cannot_reach_changes_nothing(tmp_path, monkeypatch, change):
    """The diff does not decide a target type that no changed rule can reach (a Project's rule
    cannot change who pauses whom); deciding every type anyway gives the same groups."""
    old, new = REACH_CHANGES[change]
    changed = policy_with(tmp_path, old, new)
    world = tmp_path / "world.yaml"
    paused = "    - {organization: client, user: lia, role: legal_representative, paused: true}\n"
    world.write_text(RICH_WORLD.replace("  users: [", "  users: [lia, ")
                     .replace("  members:\n", "  members:\n" + paused))

    def groups() -> list[tuple]:
        result = policydiff.run(str(POLICY_DIR), changed, None, str(world))
        return [(g.resource_type, g.action, g.before, g.after, g.count, sorted(result.triples(g)))
                for g in result.groups]

    skipping = groups()
    monkeypatch.setattr(policydiff, "_reaches", lambda base, new, target_type: True)
    assert groups() == skipping
    if change == "project-only":
        assert {g[0] for g in skipping} == {"Project"}
    if change == "organization-permission":
        assert {g[0] for g in skipping} & set(policydiff.TARGET_TYPES)
    if change == "who-links":  # a permission on the organization that the link's rule asks
        assert "OrganizationLink" in {g[0] for g in skipping}


# -- linking two master accounts (issue 22) -------------------------------------------------------

# TARGET_WORLD, where olga (the shop's owner) is also a colleague of agency, its partner.
LINK_WORLD = TARGET_WORLD.replace("  connections:\n", "    - {organization: agency, user: olga, role: colleague}\n"
                                  "  connections:\n")
LINK_RULE = ('  has_permission(user, "link", link.organization) and\n'
             '  has_permission(user, "link", link.other);\n')


@pytest.mark.parametrize(("old", "new", "expected"), [
    # "link" on the organization only: ann (agency's owner) links it to any account she is not a
    # member of (here the shop), and olga links the shop to agency, where she is a colleague. Two
    # situations: the other account without a fact, and with a colleague's membership.
    pytest.param(LINK_RULE, '  has_permission(user, "link", link.organization);\n', [
        ("OrganizationLink", "create", "deny", "allow", 1, [("ann", "create", "OrganizationLink:agency/(any other)")]),
        ("OrganizationLink", "create", "deny", "allow", 1, [("olga", "create", "OrganizationLink:shop/agency")]),
    ], id="the-organization-only"),
    # "link" on the other account only: olga links agency (where she is a colleague) to the shop
    # she owns, and ann links the shop (her fact there: its partner's owner) to agency.
    pytest.param(LINK_RULE, '  has_permission(user, "link", link.other);\n', [
        ("OrganizationLink", "create", "deny", "allow", 1, [("ann", "create", "OrganizationLink:shop/agency")]),
        ("OrganizationLink", "create", "deny", "allow", 1, [("olga", "create", "OrganizationLink:agency/shop")]),
    ], id="the-other-only"),
])
def test_issue22_a_change_on_who_links_accounts_gives_exactly_its_effect(tmp_path, capsys, old, new, expected):
    """issue 22: the diff covers OrganizationLink (who may link two master accounts), as the
    other targets: each change flips exactly its decisions, named as `policy test` names them."""
    world = tmp_path / "links.yaml"
    world.write_text(LINK_WORLD)
    changed = policy_with(tmp_path, old, new)
    code, report, err = diff_json(capsys, "--base", str(POLICY_DIR), "--policy-dir", str(changed),
                                  "--world", str(world))
    assert (code, err) == (1, "")
    assert sorted(effect(report)) == sorted(expected)
    for group in report["groups"]:
        assert group["example"] == group["triples"][0]
        assert group["situation"][-1].startswith("the target: a link of the organization with ")
        assert group["explain"]["base"][0].startswith("denied: user ")
        assert any(line.startswith("by the rule ") for line in group["explain"]["new"])


@pytest.mark.parametrize("world", [RICH_WORLD, LINK_WORLD], ids=["rich", "a-member-of-every-account"])
def test_issue22_the_link_situations_are_the_servers(tmp_path, world):
    """For every triple of every link situation the diff decides, the Subject is the one the server
    builds for LinkOrganizations (the other account named, or each account the user is not a
    member of for `(any other)`); and every (user with a fact, organization, other organization)
    is there once (a member of every account has no `(any other)`)."""
    with EphemeralApp(POLICY_DIR, read_yaml_text(tmp_path, world)) as app:
        index: FactIndex = app.index
        seen = set()
        for subject, cells in policydiff.link_situations(index, policydiff.situations(index)).items():
            for organization_id, found in cells.items():
                for cell in found:
                    for user_id, _, resource in cell.triples("create"):
                        home, other = resource.removeprefix("OrganizationLink:").split("/")
                        assert home == organization_id
                        others = [other] if other != policydiff.ANY_OTHER else [
                            o for o in index.organizations if o != home and index.member(user_id, o) is None]
                        assert others, resource
                        for other_id in others:
                            assert (user_id, home, other_id) not in seen, resource
                            seen.add((user_id, home, other_id))
                            ref = LinkRef(home, other_id)
                            assert app.authorizer.target_subject(user_id, ref) == (organization_id, subject), resource
        expected = {(user_id, home, other) for home in index.organizations for user_id in index.candidate_users(home)
                    for other in index.organizations if other != home}
        assert seen == expected and len(expected) > (50 if world == RICH_WORLD else 8)


# -- resource types the policy declares (issue 20) -------------------------------------------------

PLATFORM = ROOT / "examples" / "platform" / "platform.polar"
# carol is a client member of acme, an editor of one post; bob a colleague. A page holds two posts.
PLATFORM_WORLD = """\
world:
  users: [alice, bob, carol]
  organizations:
    acme: {owner: alice}
  members:
    - {organization: acme, user: bob, role: colleague}
    - {organization: acme, user: carol, role: client}
  resources:
    - {type: Page, id: home, organization: acme}
    - {type: Post, id: hello, parent: "Page:home"}
    - {type: Post, id: bye, parent: "Page:home"}
  resource_roles:
    - {resource: "Post:hello", user: carol, role: editor}
"""
EDITOR_RULE = '  "edit" if "editor";\n'
CLIENT_READS_PAGES = '  "read" if "client" on "organization";\n'


def platform_policy(tmp_path: Path, name: str, old: str = "", new: str = "") -> Path:
    """The shipped policy with the platform example's types beside it, optionally with one edit of those."""
    directory = tmp_path / name
    directory.mkdir()
    for path in [*POLICY_DIR.glob("*.polar"), PLATFORM]:
        shutil.copy(path, directory)
    text = PLATFORM.read_text()
    assert not old or text.count(old) == 1, old
    (directory / PLATFORM.name).write_text(text.replace(old, new) if old else text)
    return directory


@pytest.mark.parametrize(("old", "expected"), [
    # The editor role no longer edits: carol loses edit on the one post she edits.
    pytest.param(EDITOR_RULE, [("Post", "edit", "allow", "deny", 1, [("carol", "edit", "Post:hello")])],
                 id="resource-role"),
    # Client members no longer read pages: carol loses read on the page and, through it, on its posts
    # (the post she edits is another situation: she holds a role on it).
    pytest.param(CLIENT_READS_PAGES, [
        ("Page", "read", "allow", "deny", 1, [("carol", "read", "Page:home")]),
        ("Post", "read", "allow", "deny", 1, [("carol", "read", "Post:bye")]),
        ("Post", "read", "allow", "deny", 1, [("carol", "read", "Post:hello")]),
    ], id="through-the-parent"),
])
def test_issue20_the_diff_covers_the_types_the_policy_declares(tmp_path, capsys, old, expected):
    """issue 20: `policy diff` decides every resource type the policy declares, nested resources through
    their parents and the roles users hold on one resource included."""
    world = tmp_path / "world.yaml"
    world.write_text(PLATFORM_WORLD)
    base = platform_policy(tmp_path, "base")
    changed = platform_policy(tmp_path, "changed", old)
    code, report, err = diff_json(capsys, "--base", str(base), "--policy-dir", str(changed), "--world", str(world))
    assert (code, err) == (1, "")
    assert sorted(effect(report)) == sorted(expected)
    for group in report["groups"]:
        assert group["explain"]["base"][0].startswith("allowed: ")
        assert group["explain"]["new"][0].startswith("denied: ")
