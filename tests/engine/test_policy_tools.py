"""The reviewer tools keep the policy honest: the shipped policy tests pass, every rule of the
policy is needed by some test (mutation run), the committed access matrix is current, and the
CLI reports failures, broken policies and malformed worlds clearly (R23, R24)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mandate.engine import policytest, policytools
from mandate.engine.policy import Policy

from tests.support import edit_policy

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "policies"
TEST_DIR = POLICY_DIR / "tests"

SMALL_WORLD = """\
world:
  users: [alice, bob]
  organizations:
    acme: {owner: alice, currency: EUR}
  members:
    - {organization: acme, user: bob, role: colleague}
  projects:
    - {id: spring, organization: acme}
"""


def mandate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `mandate` command, run from a neutral directory so that no default path helps."""
    return subprocess.run([sys.executable, "-m", "mandate.cli", *args], capture_output=True, text=True,
                          cwd=ROOT / "tests", env={**os.environ, **(env or {})}, timeout=300)


def failures(outcomes: list[policytest.Outcome]) -> str:
    lines = []
    for outcome in outcomes:
        if not outcome.passed:
            lines += [f"FAIL {outcome.title}", f"     answer: {outcome.answer}"]
            lines += [f"     explain: {reason}" for reason in outcome.reasons]
    return "\n".join(lines)


@pytest.fixture
def policy_copy(tmp_path) -> Path:
    """A copy of the shipped policy files, to break."""
    directory = tmp_path / "policies"
    directory.mkdir()
    for path in POLICY_DIR.glob("*.polar"):
        shutil.copy(path, directory)
    return directory


# -- the shipped suite -----------------------------------------------------------------------


def test_r23_shipped_policy_tests_pass():
    outcomes = policytest.run([str(TEST_DIR)], Policy(POLICY_DIR))
    assert len(outcomes) > 100, "policies/tests/ should hold the shipped policy tests"
    assert all(o.passed for o in outcomes), failures(outcomes)


def test_r23_shipped_policy_tests_name_every_policy_rule():
    """Every rule the policy files name is named by some expectation of the shipped tests."""
    text = "\n".join(path.read_text() for path in POLICY_DIR.glob("*.polar"))
    named_in_policy = set(re.findall(r"(?<!\.)\bR\d+\b(?!\.\.)", text))  # not the range "R1..R24"
    named_in_tests = {o.rule for o in policytest.run([str(TEST_DIR)], Policy(POLICY_DIR))}
    assert named_in_policy - named_in_tests == set()


def test_r23_every_rule_deletion_is_caught_by_a_test():
    mutants = policytools.mutation_run(POLICY_DIR, [str(TEST_DIR)], kinds=(policytools.DELETED,))
    expected = sum(len(policytools.rules(path)) for path in POLICY_DIR.glob("*.polar"))
    assert len(mutants) == expected > 0
    survivors = [f"{m.rule.file.name}:{m.rule.line}: {m.rule.text}" for m in mutants if not m.killed]
    assert survivors == [], "no policy test notices the deletion of these rules:\n" + "\n".join(survivors)


# -- mutants of every kind (issue 18 item 19) ---------------------------------------------------------

EQUIVALENTS = POLICY_DIR / policytools.EQUIVALENTS_FILE


def all_mutants() -> list[policytools.Mutant]:
    original = Policy(POLICY_DIR)
    return [m for path in sorted(POLICY_DIR.glob("*.polar")) for m in policytools.mutants_of(path, original)]


def test_issue18_item19_the_mutants_of_each_kind():
    """issue 18 item 19: besides deleting a rule, the mutation run drops a condition, swaps a
    role for another, leaves a value out of a list and copies a rule to another action; each
    mutant is the policy with exactly that change, and names itself uniquely."""
    mutants = all_mutants()
    by_kind = {kind: [m for m in mutants if m.kind == kind] for kind in policytools.KINDS}
    assert all(by_kind.values()), {kind: len(found) for kind, found in by_kind.items()}
    assert len({m.key for m in mutants}) == len(mutants)
    changes = {(m.kind, m.change) for m in mutants}
    assert (policytools.DROPPED, "drop `assignment.partner_id = connection.partner.id`") in changes
    assert (policytools.SWAPPED, '"owner" -> "legal_representative"') in changes
    assert (policytools.LEFT_OUT, 'leave "client" out of ["colleague", "client"]') in changes
    assert (policytools.COPIED, 'copy to "unassign"') in changes
    original = (POLICY_DIR / "member.polar").read_text()
    resume = next(m for m in by_kind[policytools.LEFT_OUT]
                  if m.change == 'leave "client" out of ["colleague", "client"]' and '"resume"' in m.rule.text)
    assert resume.text == original.replace(
        'has_permission(user: User, "resume", member: Member) if\n  member.role in ["colleague", "client"]',
        'has_permission(user: User, "resume", member: Member) if\n  member.role in ["colleague"]')
    # A copy the policy grants already is equivalent by construction, with the rule that grants it.
    copy = next(m for m in by_kind[policytools.COPIED]
                if m.rule.text == '"list_partners" if "legal_representative";' and m.change == 'copy to "view"')
    assert copy.equivalent.startswith('"view" is granted already to whoever holds "colleague" (organization.polar:')
    # A copy to an action the role does not hold is a mutant to run.
    assert not next(m for m in by_kind[policytools.COPIED]
                    if m.rule.text == '"view" if "client";' and m.change == 'copy to "link"').equivalent


def test_issue18_item19_the_known_survivors_are_caught():
    """issue 18 item 19: the mutants the issue found surviving every policy test are caught now:
    Connection actions given to the client's side, switch for a legal representative instead of
    an owner, a paused client member no longer resumed. (An assignment made by another partner
    cannot count: facts.partner_paths decides each partner path with its own assignment only,
    so that mutant is listed equivalent, with that reason.)"""
    known = {
        (policytools.COPIED, '"revoke" if "revoke_partner" on "client";', 'copy to "unassign"'),
        (policytools.COPIED, '"accept_disconnect" if "respond_disconnect" on "client";', 'copy to "unassign"'),
        (policytools.SWAPPED, policytools._words(
            'has_permission(user: User, "switch", org: Organization) if has_role(user, "owner", org) and '
            'linked in org.linked_organizations and has_role(user, "owner", linked);'),
         '"owner" -> "legal_representative"'),
        (policytools.LEFT_OUT, policytools._words(
            'has_permission(user: User, "resume", member: Member) if member.role in ["colleague", "client"] and '
            'member.is_actor = false and has_permission(user, "resume_member", member.organization);'),
         'leave "client" out of ["colleague", "client"]'),
    }
    mutants = policytools.mutation_run(POLICY_DIR, [str(TEST_DIR)], select=lambda m: m.key in known)
    assert {m.key for m in mutants} == known
    assert [m.describe() for m in mutants if not m.killed] == []
    listed = policytools.read_equivalents(EQUIVALENTS)
    assert any(change == "drop `assignment.partner_id = connection.partner.id`" for _, _, change in listed)


def test_issue18_item19_the_equivalents_list_is_current():
    """Every entry of policies/equivalent-mutants.yaml names a mutant of today's policy, with a
    reason; none of them is equivalent by construction already."""
    listed = policytools.read_equivalents(EQUIVALENTS)
    mutants = {m.key: m for m in all_mutants()}
    assert listed and all(why for why in listed.values())
    stale = [key for key in listed if key not in mutants]
    assert stale == [], "no such mutant of the policies/ files (update equivalent-mutants.yaml):\n" + \
        "\n".join(map(str, stale))
    assert [key for key in listed if mutants[key].equivalent] == []


# Every mutant of today's policy (1,108: 520 killed, 532 equivalent by construction, 56 listed)
# takes about 63 s of one core, over the minute a test may take; the suite runs a fixed subset
# (every MUTANT_STRIDE-th, all kinds mixed: about 12 s), and `mandate policy mutate` runs them all.
MUTANT_STRIDE = 8


def test_issue18_item19_every_mutant_is_caught_or_listed_equivalent():
    """issue 18 item 19: each mutant (of the subset run here) is caught by a policy test, or is
    equivalent: by construction, or listed with its reason, and then truly not caught."""
    listed = policytools.read_equivalents(EQUIVALENTS)
    mutants = policytools.mutation_run(POLICY_DIR, [str(TEST_DIR)], equivalents=listed, every=MUTANT_STRIDE)
    assert {m.kind for m in mutants} == set(policytools.KINDS)
    survivors = [m.describe() for m in mutants if m.survived]
    assert survivors == [], "no policy test catches these mutants (add a test, or list them in " \
        "policies/equivalent-mutants.yaml with the reason they decide as the policy does):\n" + "\n".join(survivors)
    wrongly_listed = [m.describe() for m in mutants if m.killed and m.key in listed]
    assert wrongly_listed == [], "listed as equivalent, but a test catches them:\n" + "\n".join(wrongly_listed)


def test_issue18_item19_policy_mutate_reports_the_counts_per_kind(tmp_path):
    """The command prints made, killed, equivalent and survived per kind, lists each survivor,
    and exits 1 when any survives."""
    result = mandate("policy", "mutate", "--policy-dir", str(POLICY_DIR), "--kind", "value left out",
                     str(TEST_DIR))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3].split() == ["kind", "made", "killed", "equivalent", "survived"]
    assert lines[-2].split()[:3] == ["value", "left", "out"] and lines[-2].split()[-1] == "0"
    assert lines[-1].split()[0] == "all"
    # With one test file only, some mutants survive: each is listed, and the exit code says so.
    result = mandate("policy", "mutate", "--policy-dir", str(POLICY_DIR), "--kind", "value left out",
                     str(TEST_DIR / "r02_roles.yaml"))
    assert result.returncode == 1
    survivors = [line for line in result.stdout.splitlines() if line.startswith("SURVIVED")]
    assert survivors and all("value left out at " in line and ".polar:" in line for line in survivors)
    assert result.stdout.splitlines()[-1].split()[-1] == str(len(survivors))
    # A malformed list of equivalents, an unknown kind: usage errors.
    bad = tmp_path / "equivalents.yaml"
    bad.write_text("- {kind: rule copied, rule: x}\n")
    for args in (["--equivalents", str(bad)], ["--kind", "rule renamed"]):
        result = mandate("policy", "mutate", "--policy-dir", str(POLICY_DIR), *args)
        assert result.returncode == 2 and result.stderr.startswith("mandate: "), result.stderr


def test_issue18_item18_letting_legal_representatives_resume_legal_representatives_fails_a_test(policy_copy):
    """issue 18 item 18: the policy's own tests cover the targets: a change that lets legal
    representatives resume paused legal representatives (R7) fails one of them."""
    old = ('has_permission(user: User, "resume", member: Member) if\n'
           '  member.role in ["colleague", "client"] and')
    edit_policy(policy_copy, old, old.replace('"client"]', '"client", "legal_representative"]'))
    failed = [o.title for o in policytest.run([str(TEST_DIR)], Policy(policy_copy)) if not o.passed]
    assert failed and all("(R7): deny" in title and "resume Member:" in title for title in failed), failed


def test_access_matrix_is_current():
    committed = (ROOT / "docs" / "access-matrix.md").read_text()
    assert committed == policytools.matrix_markdown(Policy(POLICY_DIR)), (
        "docs/access-matrix.md is out of date with policies/; regenerate it with "
        "`.venv/bin/mandate policy matrix > docs/access-matrix.md` and review the difference")


def test_issue20_the_matrix_shows_every_type_the_policy_declares(tmp_path):
    """issue 20: the matrix decides every resource type the policy declares, with its permissions as
    actions: a nested type under its parent, and each role of a type held on a resource of it."""
    directory = tmp_path / "platform"
    directory.mkdir()
    for path in [*POLICY_DIR.glob("*.polar"), ROOT / "examples" / "platform" / "platform.polar"]:
        shutil.copy(path, directory)
    markdown = policytools.matrix_markdown(Policy(directory))
    for heading in ("## Invoice (shop-invoice, in the client's organization)",
                    "## Page (shop-page, in the client's organization)",
                    "## Post (shop-page-post, under Page shop-page)",
                    "## Project (shop-site, in the client's organization)"):
        assert heading in markdown, heading
    post = markdown.split("## Post ")[1].split("## ")[0]
    # kim, a client member (persona 5), reads a post through its page, edits only the one she is an editor of.
    kim = 4
    cells = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:] for line in post.splitlines()
             if line.startswith("| ") and not line.startswith("| action")}
    assert cells["read"][kim] == "✓" and cells["edit"][kim] == "·"
    assert cells["edit, holding editor on it"][kim] == "✓"
    # paula, a paused colleague (persona 4), gets nothing from the role (the policy says so).
    assert cells["edit, holding editor on it"][3] == "·"
    csv = policytools.matrix_csv(Policy(directory)).splitlines()
    assert csv[0] == "persona,resource_type,resource,role_held,action,allowed"
    assert '"client member (role client)",Post,Post:shop-page-post-editor,editor,edit,true' in csv


# -- mandate policy test ---------------------------------------------------------------------


def test_policy_test_writes_junit_and_exits_1_when_an_expectation_fails(tmp_path):
    test_file = tmp_path / "failing.yaml"
    test_file.write_text(SMALL_WORLD + """\
expect:
  - allow: bob edit Project:spring
    rule: R2
  - allow: bob delete Project:spring
    rule: R2
  - list_actors: delete Project:spring
    equals: [alice]
""")
    junit = tmp_path / "report.xml"
    result = mandate("policy", "test", "--policy-dir", str(POLICY_DIR), "--junit", str(junit), str(test_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout and "(R2): allow bob delete Project:spring" in result.stdout
    assert "answer: denied" in result.stdout
    assert "explain: denied: user bob delete on Project spring" in result.stdout
    assert "2 passed, 1 failed" in result.stdout

    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    assert (suites[0].get("tests"), suites[0].get("failures")) == ("3", "1")
    cases = suites[0].findall("testcase")
    assert [case.get("name") for case in cases] == [
        "#1 allow bob edit Project:spring", "#2 allow bob delete Project:spring",
        "#3 list_actors delete Project:spring == ['alice']"]
    assert [case.find("failure") is not None for case in cases] == [False, True, False]
    failure = cases[1].find("failure")
    assert failure.get("message") == "answer: denied"
    assert "were legal_representative of organization acme, not colleague" in failure.text


def test_policy_test_exits_0_when_all_pass_and_honours_mandate_policy_dir(tmp_path, policy_copy):
    test_file = tmp_path / "passing.yaml"
    test_file.write_text(SMALL_WORLD + "expect:\n  - {allow: bob edit Project:spring, rule: R2}\n")
    junit = tmp_path / "report.xml"
    result = mandate("policy", "test", "--junit", str(junit), str(test_file),
                     env={"MANDATE_POLICY_DIR": str(policy_copy)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"

    # The environment chooses the policy: a policy that denies it makes the same file fail.
    edit_policy(policy_copy, '"edit" if "colleague" on "organization";', "")
    result = mandate("policy", "test", str(test_file), env={"MANDATE_POLICY_DIR": str(policy_copy)})
    assert result.returncode == 1, result.stdout + result.stderr


def test_policy_test_of_a_missing_path_is_a_usage_error(tmp_path):
    result = mandate("policy", "test", "--policy-dir", str(POLICY_DIR), str(tmp_path / "nothing.yaml"))
    assert result.returncode == 2
    assert "no such test file or directory" in result.stderr


# -- mandate policy check --------------------------------------------------------------------


def test_policy_check_accepts_the_shipped_policy(policy_copy):
    result = mandate("policy", "check", "--policy-dir", str(policy_copy))
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout


@pytest.mark.parametrize(("edits", "message"), [
    pytest.param([('"view" if "client";', '"view" if "client"')], "policy does not load", id="syntax-error"),
    pytest.param([("connection_grants(connection: Connection, action: String) if",
                   "connection_grants(connection: Conection, action: String) if")],
                 "unknown type 'Conection' (never matches)", id="unknown-specializer"),
    pytest.param([('"accept_client_invitation", "list_partners", "update_granted_scopes"',
                   '"accept_client_invitation", "update_granted_scopes"'),
                  ('  "list_partners" if "legal_representative";\n', "")],
                 "Organization does not declare the permission 'list_partners' the service asks about",
                 id="missing-service-action"),
])
def test_r24_policy_check_refuses_a_broken_policy(policy_copy, edits, message):
    for old, new in edits:
        edit_policy(policy_copy, old, new)
    result = mandate("policy", "check", "--policy-dir", str(policy_copy))
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    # The other policy commands refuse it the same way.
    assert mandate("policy", "test", "--policy-dir", str(policy_copy), str(TEST_DIR)).returncode == 1


# -- malformed worlds and test files ---------------------------------------------------------

MALFORMED = [
    pytest.param("world:\n  users: [alice\nexpect:\n  - {allow: alice view Organization:acme}\n",
                 "not valid YAML", id="invalid-yaml"),
    pytest.param("- just a list\n", "must be a mapping with a 'world' key", id="not-a-mapping"),
    pytest.param("world:\n  people: [alice]\nexpect:\n  - {deny: alice view Organization:acme}\n",
                 "world: unknown key 'people'", id="unknown-world-key"),
    pytest.param(SMALL_WORLD, "expect: must be a non-empty list", id="no-expectations"),
    pytest.param("world:\n  organizations: {acme: {currency: EUR}}\nexpect:\n  - {deny: a view Organization:acme}\n",
                 "organization acme: owner: is required", id="organization-without-owner"),
    pytest.param("world:\n  organizations: {acme: {owner: alice}}\n  members: [bob]\n"
                 "expect:\n  - {deny: bob view Organization:acme}\n",
                 "members[0]: must be a mapping", id="member-not-a-mapping"),
    pytest.param("world:\n  organizations: {acme: {owner: alice}}\n"
                 "  members: [{organization: acme, user: bob, role: boss}]\n"
                 "expect:\n  - {deny: bob view Organization:acme}\n",
                 "member acme/bob: role: must be one of", id="unknown-role"),
    pytest.param("world:\n  organizations: {acme: {owner: alice}}\n"
                 "  members: [{organization: nowhere, user: alice}]\n"
                 "expect:\n  - {deny: alice view Organization:acme}\n",
                 "member nowhere/alice: organization: no organization 'nowhere'", id="unknown-organization"),
    pytest.param("world:\n  organizations: {acme: {owner: alice}}\n"
                 "  connections: [{partner: agency, client: acme, granted: [read]}]\n"
                 "expect:\n  - {deny: alice view Organization:acme}\n",
                 "connection agency->acme: partner: no organization 'agency'", id="connection-to-unknown-partner"),
    pytest.param("world:\n  organizations: {acme: {owner: alice}, agency: {owner: ann}}\n"
                 "  connections: [{partner: agency, client: acme, granted: [read, own]}]\n"
                 "expect:\n  - {deny: alice view Organization:acme}\n",
                 "connection agency->acme: granted: unknown scope 'own'", id="unknown-scope"),
    pytest.param("world:\n  organizations: {acme: {owner: alice}, agency: {owner: ann}}\n"
                 "  connections: [{partner: agency, client: acme, granted: [read], status: disconected}]\n"
                 "expect:\n  - {deny: ann read Project:x}\n",
                 "connection agency->acme: status: must be one of", id="misspelt-connection-status"),
    pytest.param("world:\n  links: [[acme]]\nexpect:\n  - {deny: a view Organization:acme}\n",
                 "link acme: organizations: must be a pair", id="link-not-a-pair"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_world_reports_a_clear_error(tmp_path, text, message):
    test_file = tmp_path / "malformed.yaml"
    test_file.write_text(text)
    outcomes = policytest.run([str(test_file)], Policy(POLICY_DIR))
    assert len(outcomes) == 1
    assert not outcomes[0].passed
    assert outcomes[0].text == "load the world"
    assert message in outcomes[0].answer

    result = mandate("policy", "test", "--policy-dir", str(POLICY_DIR), str(test_file))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"FAIL {test_file} #0: load the world" in result.stdout
    assert message in result.stdout


@pytest.mark.parametrize(("expectation", "message"), [
    pytest.param("allow bob read Project:spring", "give exactly one of", id="not-a-mapping"),
    pytest.param("{permit: bob read Project:spring}", "give exactly one of", id="unknown-kind"),
    pytest.param("{allow: bob read Project:spring, deny: bob read Project:spring}", "give exactly one of",
                 id="two-kinds"),
    pytest.param("{allow: bob read spring}", "'spring' is not Type:id", id="no-type"),
    pytest.param("{allow: bob Project:spring}", "expected 'ACTOR ACTION Type:id'", id="missing-word"),
    pytest.param("{list_resources: bob read Project, equal: [spring]}", "unknown keys ['equal']",
                 id="misspelt-equals"),
    pytest.param("{list_actors: read Project:spring}", "needs 'equals: [...]'", id="list-without-equals"),
    pytest.param("{allow: bob read Project:spring, because: R2}", "unknown keys ['because']",
                 id="unknown-key"),
])
def test_malformed_expectation_fails_with_a_clear_error(tmp_path, expectation, message):
    test_file = tmp_path / "malformed.yaml"
    test_file.write_text(SMALL_WORLD + f"expect:\n  - {expectation}\n  - {{allow: bob read Project:spring}}\n")
    outcomes = policytest.run([str(test_file)], Policy(POLICY_DIR))
    assert [o.passed for o in outcomes] == [False, True]
    assert outcomes[0].answer.startswith("error: ")
    assert message in outcomes[0].answer
