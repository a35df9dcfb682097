"""Invariants under random sequences of mutations (hypothesis stateful testing).

A state machine drives the domain services of a fresh App (on its own freshly migrated SQLite
file) through random invitations, sign-ups, pauses, removals, role changes, tags, connections,
assignments, approvals, disconnects and scope changes, by the right people and by the wrong ones.
A refused mutation (a DomainError) must change nothing: the store revision stays the same.

After every step the answers of the check plane are compared with an expectation computed
independently, straight from the store rows (mandate.store.models), never from the fact index:

- R6, R7: a paused or removed member is never allowed any Project action through that organization;
- R5: members plus pending member invitations never exceed the seat limit;
- R15 to R18, R20: a partner employee (not an owner or legal representative of the partner) reaches a
  client project only while every R16 condition holds;
- and the whole answer (R2, R12, R14, R16, R20) equals the expectation, for Check and for the lists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from mandate.errors import DomainError
from mandate.runtime.app import App
from mandate.store import models
from sqlalchemy import func, select

from tests.conftest import POLICY_DIR

ACTIONS = ("read", "edit", "publish", "approve", "delete")
ROLE_ACTIONS = {  # R2, what the rules say each role may do on its own organization's projects
    "owner": set(ACTIONS),
    "legal_representative": set(ACTIONS),
    "colleague": {"read", "edit", "publish"},
    "client": {"read", "approve"},
}
MANAGERS = ("owner", "legal_representative")
LIVE = ("active", "disconnect_requested")
RAM_DISK = "/dev/shm"  # R14: access continues until the client accepts

# Organizations (all in EUR): name -> seat limit (0: unlimited); small limits so R5 is reached often.
ORGANIZATIONS = {"P1": 3, "P2": 0, "C1": 3, "C2": 0}
PARTNERS = ("P1", "P2")
CLIENTS = ("C1", "C2", "P2")  # P2 may also be a client of P1
REGISTERED = ("u0", "u1", "u2", "u3")
UNREGISTERED = ("n0", "n1")  # sign up during the run (R4: pending invitations complete then)
PEOPLE = REGISTERED + UNREGISTERED

organizations = st.sampled_from(tuple(ORGANIZATIONS))
partners = st.sampled_from(PARTNERS)
clients = st.sampled_from(CLIENTS)
people = st.sampled_from(PEOPLE)
roles = st.sampled_from(("colleague", "colleague", "legal_representative", "client", "owner"))
scopes = st.frozensets(st.sampled_from(ACTIONS))
# Who acts: mostly the owner of the organization that decides, sometimes anyone (mostly refused, R23).
actors = st.sampled_from(("owner",) * 12 + PEOPLE + ("owner_P1", "owner_C1"))


def email(person: str) -> str:
    return f"{person}@example.com"


@dataclass(frozen=True)
class Rows:
    """The rows that decide about access, read straight from the store."""

    memberships: dict[tuple[str, str], models.Membership]  # (organization, user) -> row
    connections: list[models.Connection]
    assignments: dict[tuple[str, str, str], models.Assignment]  # (partner, client, user) -> row
    projects: dict[str, str]  # live project id -> organization


class Mandate(RuleBasedStateMachine):
    template: str = ""  # a migrated database file, copied for every run

    def __init__(self):
        super().__init__()
        # Many short-lived databases: on a RAM disk when there is one (commits fsync), else in /tmp.
        ram_disk = RAM_DISK if os.path.isdir(RAM_DISK) else None
        self.directory = tempfile.mkdtemp(prefix="mandate-invariants-", dir=ram_disk)
        path = f"{self.directory}/mandate.db"
        shutil.copy(self.template, path)
        self.app = App(f"sqlite:///{path}", POLICY_DIR)
        self.users: dict[str, str] = {}  # person -> user id, once registered
        self.owners: dict[str, str] = {}  # organization name -> its creator
        self.orgs: dict[str, str] = {}  # organization name -> id
        self._observed = None
        self._listed = None
        for person in REGISTERED:
            self.users[person] = self.app.directory.register_user(email(person), person)[0].id
        for name, seat_limit in ORGANIZATIONS.items():
            owner = self.app.directory.register_user(email(f"owner_{name}"), f"Owner {name}")[0].id
            self.users[f"owner_{name}"] = owner
            self.owners[name] = owner
            self.orgs[name] = self.app.directory.create_organization(owner, name, "EUR", seat_limit).id
            for number in (1, 2):
                self.app.directory.put_resource(owner, "Project", f"{name}-project-{number}", self.orgs[name])
        self.starting_world()

    def starting_world(self) -> None:
        """Random steps rarely build a partner program from nothing: start from one where every path
        to access exists once, so that the steps mostly take it apart and put it back together."""
        app, orgs, users, owners = self.app, self.orgs, self.users, self.owners
        for organization, person, role in (("P1", "u0", "colleague"), ("P1", "u1", "legal_representative"),
                                           ("P2", "u3", "colleague"), ("C1", "u2", "colleague"),
                                           ("C2", "u2", "client"), ("P2", "u0", "colleague")):
            app.memberships.invite_member(owners[organization], orgs[organization], email(person), role)
        for organization, person in (("P1", "u0"), ("P2", "u3"), ("P2", "u0")):
            app.memberships.tag_partner_employee(owners[organization], orgs[organization], users[person], True)
        for partner, client, granted, approval in (("P1", "C1", ["read", "edit"], "client"),
                                                   ("P2", "C2", ["read", "publish", "delete"], "partner"),
                                                   ("P2", "C1", ["approve"], "client")):
            link = app.partners.create_invite_link(owners[partner], orgs[partner], "Customer", "", "EUR", granted)
            app.partners.accept_client_invitation(owners[client], "", link.token, orgs[client], granted, approval)
        app.partners.assign_client(owners["P1"], orgs["P1"], orgs["C1"], users["u0"])
        app.partners.approve_partner_employee(owners["C1"], orgs["C1"], orgs["P1"], users["u0"])
        app.partners.assign_client(owners["P2"], orgs["P2"], orgs["C2"], users["u3"])
        app.partners.assign_client(owners["P2"], orgs["P2"], orgs["C2"], users["u0"])

    def teardown(self):
        self.app.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------------

    def actor(self, by: str, organization: str) -> str | None:
        """The acting user: the owner of `organization`, or a named person (None: not signed up)."""
        return self.owners[organization] if by == "owner" else self.users.get(by)

    @contextlib.contextmanager
    def refusal_changes_nothing(self, what: str):
        """A mutation refused with a DomainError must leave the store exactly as it was."""
        before = self.app.store.current_revision()
        try:
            yield
        except DomainError:
            assert self.app.store.current_revision() == before, f"refused {what} changed the store"

    def attempt(self, call, *args) -> None:
        if None in args:
            return  # someone who has not signed up cannot act or be acted on
        with self.refusal_changes_nothing(call.__name__):
            call(*args)

    # -- rules: people ---------------------------------------------------------------------------------

    @rule(organization=organizations, person=people, role=roles, by=actors)
    def invite(self, organization, person, role, by):
        self.attempt(self.app.memberships.invite_member, self.actor(by, organization), self.orgs[organization],
                     email(person), role)

    @rule(person=st.sampled_from(UNREGISTERED))
    def register(self, person):
        if person in self.users:
            return
        user, _ = self.app.directory.register_user(email(person), person)
        self.users[person] = user.id

    @rule(organization=organizations, person=people, by=actors)
    def pause(self, organization, person, by):
        self.attempt(self.app.memberships.pause_member, self.actor(by, organization), self.orgs[organization],
                     self.users.get(person))

    @rule(organization=organizations, person=people, by=actors)
    def resume(self, organization, person, by):
        self.attempt(self.app.memberships.resume_member, self.actor(by, organization), self.orgs[organization],
                     self.users.get(person))

    @rule(organization=organizations, person=people, by=actors)
    def remove(self, organization, person, by):
        self.attempt(self.app.memberships.remove_member, self.actor(by, organization), self.orgs[organization],
                     self.users.get(person))

    @rule(organization=organizations, person=people, role=roles, by=actors)
    def set_role(self, organization, person, role, by):
        self.attempt(self.app.memberships.set_member_role, self.actor(by, organization), self.orgs[organization],
                     self.users.get(person), role)

    @rule(organization=partners, person=people, tagged=st.booleans(), by=actors)
    def tag(self, organization, person, tagged, by):
        self.attempt(self.app.memberships.tag_partner_employee, self.actor(by, organization),
                     self.orgs[organization], self.users.get(person), tagged)

    # -- rules: the partner program ----------------------------------------------------------------------

    @rule(partner=partners, client=clients, requested=scopes, granted=st.none() | scopes,
          approval=st.sampled_from(("client", "partner")), by=actors)
    def connect(self, partner, client, requested, granted, approval, by):
        actor = self.actor(by, partner)
        if actor is None:
            return
        link = None
        with self.refusal_changes_nothing("create_invite_link"):
            link = self.app.partners.create_invite_link(actor, self.orgs[partner], "Customer", "", "EUR",
                                                        sorted(requested))
        if link is None:
            return
        with self.refusal_changes_nothing("accept_client_invitation"):
            # granted None: the client grants what was requested (R12)
            self.app.partners.accept_client_invitation(self.owners[client], "", link.token, self.orgs[client],
                                                       sorted(requested if granted is None else granted), approval)

    @rule(partner=partners, client=clients, person=people, by=actors)
    def assign(self, partner, client, person, by):
        self.attempt(self.app.partners.assign_client, self.actor(by, partner), self.orgs[partner],
                     self.orgs[client], self.users.get(person))

    @rule(partner=partners, client=clients, person=people, by=actors)
    def unassign(self, partner, client, person, by):
        self.attempt(self.app.partners.unassign_client, self.actor(by, partner), self.orgs[partner],
                     self.orgs[client], self.users.get(person))

    @rule(partner=partners, client=clients, person=people, by=actors)
    def approve(self, partner, client, person, by):
        self.attempt(self.app.partners.approve_partner_employee, self.actor(by, client), self.orgs[client],
                     self.orgs[partner], self.users.get(person))

    @rule(partner=partners, client=clients, person=people, by=actors)
    def revoke_approval(self, partner, client, person, by):
        self.attempt(self.app.partners.revoke_partner_employee, self.actor(by, client), self.orgs[client],
                     self.orgs[partner], self.users.get(person))

    @rule(partner=partners, client=clients, by=actors)
    def request_disconnect(self, partner, client, by):
        self.attempt(self.app.partners.request_disconnect, self.actor(by, partner), self.orgs[partner],
                     self.orgs[client])

    @rule(partner=partners, client=clients, accept=st.booleans(), by=actors)
    def respond_disconnect(self, partner, client, accept, by):
        call = self.app.partners.accept_disconnect if accept else self.app.partners.decline_disconnect
        self.attempt(call, self.actor(by, client), self.orgs[partner], self.orgs[client])

    @rule(partner=partners, client=clients, by=actors)
    def revoke_partner(self, partner, client, by):
        self.attempt(self.app.partners.revoke_partner, self.actor(by, client), self.orgs[partner],
                     self.orgs[client])

    @rule(partner=partners, client=clients, granted=scopes, by=actors)
    def update_scopes(self, partner, client, granted, by):
        self.attempt(self.app.partners.update_granted_scopes, self.actor(by, client), self.orgs[partner],
                     self.orgs[client], sorted(granted))

    # -- the expectation, from the store rows ----------------------------------------------------------

    def rows(self) -> Rows:
        with self.app.store.read() as session:
            memberships = {(m.organization_id, m.user_id): m
                           for m in session.execute(select(models.Membership)).scalars()}
            connections = list(session.execute(select(models.Connection)).scalars())
            assignments = {(a.partner_id, a.client_id, a.user_id): a
                           for a in session.execute(select(models.Assignment)).scalars()}
            projects = dict(session.execute(select(models.Resource.id, models.Resource.organization_id).where(
                models.Resource.type == "Project", models.Resource.deleted.is_(False))).all())
        return Rows(memberships, connections, assignments, projects)

    @staticmethod
    def own_access(rows: Rows, user: str, organization: str) -> set[str]:
        """R2, R6, R7: what the user's own, active membership in the organization allows."""
        membership = rows.memberships.get((organization, user))
        if membership is None or membership.status != "active":
            return set()
        return set(ROLE_ACTIONS[membership.role])

    @staticmethod
    def manager_access(rows: Rows, user: str, organization: str, excluding: str = "") -> set[str]:
        """R12, R14, R20: an active owner or legal representative of a live partner gets what was granted
        (through any partner but `excluding`)."""
        allowed: set[str] = set()
        for connection in rows.connections:
            if connection.partner_id == excluding:
                continue
            membership = rows.memberships.get((connection.partner_id, user))
            if (connection.client_id == organization and connection.status in LIVE and membership is not None
                    and membership.status == "active" and membership.role in MANAGERS):
                allowed |= set(connection.granted_scopes)
        return allowed

    @staticmethod
    def employee_access(rows: Rows, user: str, organization: str, excluding: str = "") -> set[str]:
        """R15 to R18: a partner employee gets what was granted only while every R16 condition holds
        (through any partner but `excluding`)."""
        allowed: set[str] = set()
        for connection in rows.connections:
            if connection.client_id != organization or connection.status not in LIVE \
                    or connection.partner_id == excluding:
                continue
            membership = rows.memberships.get((connection.partner_id, user))
            assignment = rows.assignments.get((connection.partner_id, organization, user))
            if (membership is not None and membership.status == "active" and membership.role == "colleague"
                    and membership.partner_employee and assignment is not None and assignment.assigned
                    and (assignment.client_approved or connection.employee_approval == "partner")):
                allowed |= set(connection.granted_scopes)
        return allowed

    def observed(self) -> tuple[Rows, dict[tuple[str, str], set[str]]]:
        """The store rows, and (user, project) -> the Project actions Check allows; read once per step."""
        revision = self.app.store.current_revision()
        if self._observed is None or self._observed[0] != revision or self._observed[1] != len(self.users):
            rows = self.rows()
            check = self.app.authorizer.check
            decided = {(user, project): {a for a in ACTIONS if check("User", user, a, "Project", project)}
                       for user in self.users.values() for project in rows.projects}
            self._observed = (revision, len(self.users), rows, decided)
        return self._observed[2], self._observed[3]

    # -- invariants (hypothesis runs them in name order: the rule-specific ones first) ---------------------

    @invariant()
    def r6_r7_paused_or_removed_member_has_no_access_through_that_organization(self):
        rows, decided = self.observed()
        for (organization, user), membership in rows.memberships.items():
            if membership.status == "active":
                continue
            # Whatever the user still reaches in this organization must come through a partner.
            through_partners = self.manager_access(rows, user, organization) | \
                self.employee_access(rows, user, organization)
            for project, owner_org in rows.projects.items():
                if owner_org == organization:
                    extra = decided[user, project] - through_partners
                    assert not extra, f"{membership.status} member {user} may {extra} on {project}"
            # And nothing through it: a paused or removed partner member reaches none of its clients.
            for connection in rows.connections:
                if connection.partner_id != organization:
                    continue
                client = connection.client_id
                other_paths = (self.own_access(rows, user, client)
                               | self.manager_access(rows, user, client, excluding=organization)
                               | self.employee_access(rows, user, client, excluding=organization))
                for project, owner_org in rows.projects.items():
                    if owner_org == client:
                        extra = decided[user, project] - other_paths
                        assert not extra, f"{membership.status} partner member {user} may {extra} on {project}"

    @invariant()
    def r5_members_and_pending_invitations_never_exceed_the_seat_limit(self):
        with self.app.store.read() as session:
            for organization in session.execute(select(models.Organization)).scalars():
                members = session.execute(select(func.count()).select_from(models.Membership).where(
                    models.Membership.organization_id == organization.id,
                    models.Membership.status != "removed")).scalar_one()
                pending = session.execute(select(func.count()).select_from(models.Invitation).where(
                    models.Invitation.organization_id == organization.id,
                    models.Invitation.kind == "member", models.Invitation.status == "pending")).scalar_one()
                if organization.seat_limit:
                    assert members + pending <= organization.seat_limit, (organization.name, members, pending)

    @invariant()
    def r16_partner_employee_reaches_a_client_only_with_every_condition(self):
        rows, decided = self.observed()
        for (user, project), allowed in decided.items():
            organization = rows.projects[project]
            beyond = allowed - self.own_access(rows, user, organization) - self.manager_access(rows, user, organization)
            unexplained = beyond - self.employee_access(rows, user, organization)
            assert not unexplained, f"user {user} may {unexplained} on {project} without every R16 condition"

    @invariant()
    def whole_answer_of_check_and_lists_equals_the_expectation_from_the_store(self):
        rows, decided = self.observed()
        if self._listed == self._observed[:2]:
            return  # nothing changed since the lists were last compared (the step was refused)
        self._listed = self._observed[:2]
        for (user, project), allowed in decided.items():
            organization = rows.projects[project]
            expected = (self.own_access(rows, user, organization) | self.manager_access(rows, user, organization)
                        | self.employee_access(rows, user, organization))
            assert allowed == expected, f"user {user} on {project}: Check allows {allowed}, rows say {expected}"
        authorizer = self.app.authorizer
        for action in ACTIONS:
            can = defaultdict(set)
            for (user, project), allowed in decided.items():
                if action in allowed:
                    can[user].add(project)
            for user in self.users.values():
                listed, token = authorizer.list_resources(user, action, "Project", 1000, "")
                assert not token and listed == sorted(can[user]), (user, action, listed, sorted(can[user]))
            for project in rows.projects:
                listed, token = authorizer.list_actors(action, "Project", project, 1000, "")
                expected = sorted(u for u in self.users.values() if action in decided[u, project])
                assert not token and listed == expected, (project, action, listed, expected)


def test_invariants_hold_under_random_mutations(template_db):
    Mandate.template = str(template_db)
    run_state_machine_as_test(Mandate, settings=settings(
        max_examples=20, stateful_step_count=30, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow],
    ))
