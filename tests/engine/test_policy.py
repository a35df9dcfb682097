"""Tier 1: the policy alone, persona by persona.

Each test hands `Policy("policies")` a `Subject` built by hand (the facts the fact index would
compute for one user and one organization) and asks what the policy allows. Nothing here touches
the store: these tests prove what the files of `policies/` say, rule by rule (R2, R7, R8, R12,
R13, R14, R16, R20, R23, R24)."""

from __future__ import annotations

import pytest
from mandate.engine.facts import AssignmentFact, ConnectionFact, MembershipFact, Subject
from mandate.engine.policy import Policy
from polar.exceptions import PolarRuntimeError

from tests.conftest import POLICY_DIR
from tests.support import copy_policy

PROJECT_ACTIONS = ("read", "edit", "publish", "approve", "delete")  # the scopes a client grants
ALL_SCOPES = frozenset(PROJECT_ACTIONS)
# R23: moving a project out of its organization: for whoever may unregister projects there.
MANAGERS_PROJECT = set(PROJECT_ACTIONS) | {"move"}
# Organization permissions only an owner holds (R2, R13); "switch" also needs a linked account (R13).
OWNER_ONLY = {"link", "switch"}
# R2, R23: what a colleague may do on the organization; everything else is managing people or clients.
COLLEAGUE_ORGANIZATION = {"view", "list_members", "put_resource"}
PEOPLE_AND_CLIENTS = {"invite_member", "cancel_invitation", "list_invitations", "remove_member", "pause_member",
                      "resume_member", "set_member_role", "tag_partner_employee", "add_client", "list_clients",
                      "export_clients", "assign_client", "request_disconnect", "accept_client_invitation",
                      "list_partners", "update_granted_scopes", "respond_disconnect", "revoke_partner",
                      "approve_partner_employee", "delete_resource"}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(POLICY_DIR)


def organization_permissions(policy: Policy) -> set[str]:
    return set(policy.permissions["Organization"])


def home(role: str, status: str = "active") -> Subject:
    """A member of the resource's own organization."""
    return Subject(memberships=(MembershipFact("o", role, status, False),))


def through_partner(role: str = "legal_representative", *, status: str = "active", tagged: bool = False,
                    connection: str = "active", granted=ALL_SCOPES, approval: str = "client",
                    assigned: bool = False, approved: bool = False) -> Subject:
    """A member of a partner ("p0") of the resource's organization, seen from the client's side."""
    return Subject(
        memberships=(MembershipFact("p0", role, status, tagged),),
        connections=(ConnectionFact("p0", connection, frozenset(granted), approval),),
        assignments=(AssignmentFact("p0", approved),) if assigned else (),
    )


def allowed_projects(policy: Policy, subject: Subject) -> set[str]:
    """The Project actions the policy allows, asked one by one with is_allowed."""
    return {action for action in policy.permissions["Project"] if policy.is_allowed(subject, "Project", action)}


def allowed_organization(policy: Policy, subject: Subject) -> set[str]:
    return {action for action in organization_permissions(policy)
            if policy.is_allowed(subject, "Organization", action)}


# -- R2: roles inside one organization -----------------------------------------------------------


def test_r2_owner_may_do_everything(policy):
    """Everything but switching, which needs a linked account (R13, below)."""
    subject = home("owner")
    assert allowed_projects(policy, subject) == MANAGERS_PROJECT
    assert allowed_organization(policy, subject) == organization_permissions(policy) - {"switch"}


def test_r2_r8_legal_representative_may_do_everything_but_owner_matters(policy):
    subject = home("legal_representative")
    assert allowed_projects(policy, subject) == MANAGERS_PROJECT
    assert allowed_organization(policy, subject) == organization_permissions(policy) - OWNER_ONLY


def test_r2_colleague_works_on_projects_and_sees_members(policy):
    subject = home("colleague")
    assert allowed_projects(policy, subject) == {"read", "edit", "publish"}
    assert allowed_organization(policy, subject) == COLLEAGUE_ORGANIZATION


def test_r2_client_member_reads_and_approves_only(policy):
    subject = home("client")
    assert allowed_projects(policy, subject) == {"read", "approve"}
    assert allowed_organization(policy, subject) == {"view"}


@pytest.mark.parametrize("role", ["owner", "legal_representative", "colleague", "client"])
def test_r2_actions_agrees_with_is_allowed(policy, role):
    """`Policy.actions` (used by ListActions) answers the same as asking every action."""
    subject = home(role)
    assert policy.actions(subject, "Project") == allowed_projects(policy, subject)
    assert policy.actions(subject, "Organization") == allowed_organization(policy, subject)


def test_r2_unknown_action_is_denied(policy):
    assert not policy.is_allowed(home("owner"), "Project", "launch_missiles")
    assert not policy.is_allowed(home("owner"), "Organization", "launch_missiles")


# -- R23: who manages people and clients -----------------------------------------------------------


@pytest.mark.parametrize("action", sorted(PEOPLE_AND_CLIENTS | OWNER_ONLY))
def test_r23_colleague_cannot_manage_people_or_clients(policy, action):
    assert not policy.is_allowed(home("colleague"), "Organization", action)
    assert not policy.is_allowed(home("client"), "Organization", action)


@pytest.mark.parametrize("action", ["invite_member", "remove_member", "pause_member", "resume_member",
                                    "set_member_role", "tag_partner_employee", "add_client", "assign_client"])
def test_r8_r23_legal_representative_and_owner_manage_people_and_clients(policy, action):
    assert policy.is_allowed(home("legal_representative"), "Organization", action)
    assert policy.is_allowed(home("owner"), "Organization", action)


@pytest.mark.parametrize("action", ["link"])
@pytest.mark.parametrize("role", ["legal_representative", "colleague", "client"])
def test_r13_only_owner_links(policy, role, action):
    assert policy.is_allowed(home("owner"), "Organization", action)
    assert not policy.is_allowed(home(role), "Organization", action)


# -- R6, R7: removed and paused members --------------------------------------------------------------


@pytest.mark.parametrize("role", ["legal_representative", "colleague", "client"])
def test_r7_paused_colleague_denied_everything(policy, role):
    subject = home(role, status="paused")
    assert allowed_projects(policy, subject) == set()
    assert allowed_organization(policy, subject) == set()
    assert policy.actions(subject, "Project") == frozenset()
    assert policy.actions(subject, "Organization") == frozenset()


def test_r7_resume_restores_exactly_the_access(policy):
    assert allowed_projects(policy, home("colleague", "paused")) == set()
    assert allowed_projects(policy, home("colleague")) == {"read", "edit", "publish"}


def test_r6_removed_member_has_nothing(policy):
    """A removed member has no membership fact at all: the index drops it (R3, R6)."""
    subject = Subject()
    assert allowed_projects(policy, subject) == set()
    assert allowed_organization(policy, subject) == set()


def test_r6_membership_elsewhere_gives_nothing_here(policy):
    """A membership in an organization that is neither partner nor linked grants nothing here."""
    subject = Subject(memberships=(MembershipFact("x", "owner", "active", False),))
    assert allowed_projects(policy, subject) == set()
    assert allowed_organization(policy, subject) == set()


# -- R9, R12, R14, R20: owners and legal representatives of a partner -----------------------------------


@pytest.mark.parametrize("role", ["owner", "legal_representative"])
def test_r20_partner_managers_reach_client_projects_within_granted_scopes(policy, role):
    subject = through_partner(role, granted={"read", "edit"})
    assert allowed_projects(policy, subject) == {"read", "edit"}


@pytest.mark.parametrize("granted", [set(), {"read"}, {"approve", "delete"}, set(ALL_SCOPES)])
def test_r12_partner_works_within_what_the_client_granted(policy, granted):
    assert allowed_projects(policy, through_partner("owner", granted=granted)) == granted


@pytest.mark.parametrize("role", ["owner", "legal_representative"])
def test_r20_partner_managers_get_no_organization_rights_on_the_client(policy, role):
    """Reaching the client's projects does not make the partner a manager of the client's people."""
    assert allowed_organization(policy, through_partner(role)) == set()


@pytest.mark.parametrize("role", ["owner", "legal_representative"])
def test_r14_partner_keeps_access_while_disconnect_requested(policy, role):
    subject = through_partner(role, connection="disconnect_requested", granted={"read", "publish"})
    assert allowed_projects(policy, subject) == {"read", "publish"}


@pytest.mark.parametrize("role", ["owner", "legal_representative"])
def test_r14_partner_loses_access_when_disconnected(policy, role):
    assert allowed_projects(policy, through_partner(role, connection="disconnected")) == set()


def test_r7_paused_partner_legal_representative_reaches_no_client(policy):
    assert allowed_projects(policy, through_partner("legal_representative", status="paused")) == set()


@pytest.mark.parametrize("role", ["colleague", "client"])
def test_r20_untagged_partner_members_reach_no_client(policy, role):
    """Only managers and approved, assigned partner employees reach a client (R15, R20)."""
    subject = through_partner(role, assigned=True, approved=True)
    assert allowed_projects(policy, subject) == set()


def test_r20_partner_client_member_tagged_reaches_no_client(policy):
    """The tag on a `client` member (which the service refuses to set) would still not suffice:
    the policy wants a colleague of the partner."""
    subject = through_partner("client", tagged=True, assigned=True, approved=True)
    assert allowed_projects(policy, subject) == set()


# -- R15 to R18: partner employees -----------------------------------------------------------------------

EMPLOYEE = dict(role="colleague", tagged=True, status="active", connection="active", granted={"read", "edit"},
                approval="client", assigned=True, approved=True)


def test_r16_partner_employee_with_every_condition_is_allowed(policy):
    assert allowed_projects(policy, through_partner(**EMPLOYEE)) == {"read", "edit"}


def test_r16_partner_employee_allowed_under_partner_delegation_without_approval(policy):
    subject = through_partner(**{**EMPLOYEE, "approval": "partner", "approved": False})
    assert allowed_projects(policy, subject) == {"read", "edit"}


def test_r14_r16_partner_employee_keeps_access_while_disconnect_requested(policy):
    subject = through_partner(**{**EMPLOYEE, "connection": "disconnect_requested"})
    assert allowed_projects(policy, subject) == {"read", "edit"}


MISSING = {
    "not_tagged": {"tagged": False},
    "paused": {"status": "paused"},
    "not_assigned": {"assigned": False},
    "not_assigned_under_partner_delegation": {"assigned": False, "approval": "partner"},
    "not_approved": {"approved": False},
    "no_scope_granted": {"granted": set()},
    "disconnected": {"connection": "disconnected"},
}


@pytest.mark.parametrize("missing", sorted(MISSING))
def test_r16_partner_employee_denied_when_any_condition_is_missing(policy, missing):
    subject = through_partner(**{**EMPLOYEE, **MISSING[missing]})
    assert allowed_projects(policy, subject) == set()
    assert policy.actions(subject, "Project") == frozenset()


@pytest.mark.parametrize("action", ["publish", "approve", "delete"])
def test_r16_partner_employee_denied_an_action_the_scopes_do_not_cover(policy, action):
    assert not policy.is_allowed(through_partner(**EMPLOYEE), "Project", action)


def test_r16_assignment_under_another_partner_does_not_count(policy):
    """Assigned and approved by partner p1, but a member only of partner p0: nothing."""
    subject = Subject(
        memberships=(MembershipFact("p0", "colleague", "active", True),),
        connections=(ConnectionFact("p0", "active", ALL_SCOPES, "client"),
                     ConnectionFact("p1", "active", ALL_SCOPES, "client")),
        assignments=(AssignmentFact("p1", True),),
    )
    assert allowed_projects(policy, subject) == set()


def test_r16_partner_employee_gets_no_organization_rights_on_the_client(policy):
    assert allowed_organization(policy, through_partner(**EMPLOYEE)) == set()


def test_r20_best_of_two_partners(policy):
    """A person reaching a client through two partners gets what either path grants."""
    subject = Subject(
        memberships=(MembershipFact("p0", "owner", "active", False),
                     MembershipFact("p1", "colleague", "active", True)),
        connections=(ConnectionFact("p0", "active", frozenset({"read"}), "client"),
                     ConnectionFact("p1", "active", frozenset({"edit", "publish"}), "partner")),
        assignments=(AssignmentFact("p1", False),),
    )
    assert allowed_projects(policy, subject) == {"read", "edit", "publish"}


def test_r2_r20_own_membership_and_partner_path_combine(policy):
    """A client member of the organization who is also a partner manager: both paths count."""
    subject = Subject(
        memberships=(MembershipFact("o", "client", "active", False),
                     MembershipFact("p0", "legal_representative", "active", False)),
        connections=(ConnectionFact("p0", "active", frozenset({"edit"}), "client"),),
    )
    assert allowed_projects(policy, subject) == {"read", "approve", "edit"}
    assert allowed_organization(policy, subject) == {"view"}


# -- R13: linked master accounts ------------------------------------------------------------------------


def linked(home_role: str | None, linked_role: str = "owner", linked_status: str = "active") -> Subject:
    """A user of the organization ("o", if `home_role`) who is also a member of "l0", linked to it."""
    memberships = (MembershipFact("o", home_role, "active", False),) if home_role else ()
    return Subject(memberships=memberships + (MembershipFact("l0", linked_role, linked_status, False),),
                   linked=("l0",))


def test_r13_owner_of_both_linked_accounts_may_switch(policy):
    assert policy.is_allowed(linked("owner"), "Organization", "switch")


def test_r13_linked_account_owner_may_switch_and_nothing_else(policy):
    """Owning a linked account adds the switch and nothing else, here or on the projects."""
    for role in ("owner", "legal_representative", "colleague", "client", None):
        without_link = home(role) if role else Subject()
        gained_organization = allowed_organization(policy, linked(role)) - allowed_organization(policy, without_link)
        assert gained_organization == ({"switch"} if role == "owner" else set()), role
        assert allowed_projects(policy, linked(role)) == allowed_projects(policy, without_link), role


def test_r13_linked_account_owner_without_membership_here_gets_nothing(policy):
    """Switching is into an account one owns: owning only the other account gives nothing here."""
    subject = linked(None)
    assert allowed_organization(policy, subject) == set()
    assert allowed_projects(policy, subject) == set()


@pytest.mark.parametrize("role", ["legal_representative", "colleague", "client"])
def test_r13_non_owner_of_the_linked_account_may_not_switch(policy, role):
    assert not policy.is_allowed(linked("owner", linked_role=role), "Organization", "switch")


def test_r7_r13_paused_in_the_linked_account_may_not_switch(policy):
    """The service never pauses an owner; should the facts say so, the policy still denies."""
    assert not policy.is_allowed(linked("owner", linked_status="paused"), "Organization", "switch")


def test_r13_membership_in_unlinked_organization_may_not_switch(policy):
    """Owning "l0" counts only when "l0" is among the organization's linked accounts."""
    subject = Subject(memberships=(MembershipFact("o", "owner", "active", False),
                                   MembershipFact("l0", "owner", "active", False)))
    assert not policy.is_allowed(subject, "Organization", "switch")


# -- R24: fail closed ---------------------------------------------------------------------------------------


@pytest.fixture
def broken_policy(tmp_path) -> Policy:
    """The real policy plus one rule that reads an attribute the facts do not have. It passes the
    load-time checks (they never reach "publish"), and fails when a decision reaches the rule."""
    directory = tmp_path / "policies"
    directory.mkdir()
    copy_policy(directory)
    (directory / "zz_broken.polar").write_text(
        "# a fact read from the wrong object: only shows at run time, once a member reaches it\n"
        "has_permission(user: User, \"publish\", project: Project) if\n"
        "  membership in user.memberships and membership.role = \"client\" and\n"
        "  project.organization.status = \"active\";\n"
    )
    return Policy(directory)


def test_r24_policy_runtime_error_fails_closed(broken_policy):
    """The error propagates (the caller turns it into an error reply), it is never an allow; and it
    is not remembered as an answer: asking again fails again."""
    subject = home("client")  # the client may not publish, so the engine must try every rule
    for _ in range(2):
        with pytest.raises(PolarRuntimeError):
            broken_policy.is_allowed(subject, "Project", "publish")
    # Decisions that never reach the broken rule are unaffected.
    assert broken_policy.is_allowed(subject, "Project", "read")
    assert not broken_policy.is_allowed(subject, "Project", "edit")

