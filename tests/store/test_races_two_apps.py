"""Races between two applications on one database (two servers, in effect): each keeps its own
store object, writer queue and fact index, so only the database transaction can keep the rules
(R5 seats, R11 single-use links, R18 assignment against removal). Requests start together from
threads (a barrier releases them at once); the tests assert outcomes, never timings."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from mandate.errors import DomainError
from mandate.runtime.app import App

from tests.conftest import POLICY_DIR

ROUNDS = 3


@pytest.fixture
def second(app):
    """A second application on the same database."""
    other = App(app.store.url, POLICY_DIR)
    yield other
    other.close()


def race(*calls) -> list[str]:
    """Run the calls at once; "ok" or the refusal's reason for each."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait(timeout=30)
        try:
            call()
            return "ok"
        except DomainError as error:
            return error.reason

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_r5_two_apps_inviting_at_once_never_overfill(app, second, world):
    owner = world.user("owner")
    organization = world.organization(owner, seat_limit=3)  # the owner and two more
    apps = (app, second)
    results = race(*(lambda n=n: apps[n % 2].memberships.invite_member(owner, organization, f"racer{n}@example.com",
                                                                        "colleague") for n in range(6)))
    assert sorted(results) == ["SEAT_LIMIT_REACHED"] * 4 + ["ok"] * 2
    for each in apps:
        each.index.catch_up()
        pending = each.memberships.list_invitations(owner, organization, "", "pending", 100, "")
        assert len(pending) == 2


def test_r11_two_apps_accepting_one_link_exactly_one_wins(app, second, world):
    partner_owner = world.user("partner-owner")
    partner = world.organization(partner_owner)
    for _ in range(ROUNDS):
        contenders = []
        for _ in range(4):
            owner = world.user("contender")
            contenders.append((owner, world.organization(owner)))
        second.index.catch_up()
        link = app.partners.create_invite_link(partner_owner, partner, "Kunde", "", "EUR", ["read"])
        apps = (app, second)
        results = race(*(lambda each=apps[n % 2], owner=owner, organization=organization, token=link.token:
                         each.partners.accept_client_invitation(owner, "", token, organization, ["read"], "client")
                         for n, (owner, organization) in enumerate(contenders)))
        assert sorted(results) == ["INVITATION_NOT_PENDING"] * 3 + ["ok"]
        connected = app.partners.list_clients(partner_owner, partner, "", "", 100, "")
        assert len([c for c in connected if c.client_id in {o for _, o in contenders}]) == 1


def test_r18_assignment_on_one_app_racing_removal_on_the_other_never_leaves_access(app, second, world):
    partner_owner = world.user("partner-owner")
    partner = world.organization(partner_owner)
    client_owner = world.user("client-owner")
    client_org = world.organization(client_owner)
    project = world.project(client_org)
    world.connect(partner, client_org, employee_approval="partner")  # the assignment alone gives access
    for _ in range(ROUNDS):
        employee = world.member(partner, "colleague", partner_employee=True)
        second.index.catch_up()
        assigned, removed = race(
            lambda employee=employee: app.partners.assign_client(partner_owner, partner, client_org, employee),
            lambda employee=employee: second.memberships.remove_member(partner_owner, partner, employee),
        )
        assert removed == "ok"
        assert assigned in ("ok", "MEMBER_NOT_FOUND")
        for each in (app, second):
            each.index.catch_up()
            assert not each.authorizer.check("User", employee, "read", "Project", project)
        with pytest.raises(DomainError) as caught:
            second.partners.unassign_client(partner_owner, partner, client_org, employee)
        assert caught.value.reason == "ASSIGNMENT_NOT_FOUND"  # no assignment outlived the removal


def test_r5_refusals_inside_groups_on_two_apps_keep_the_seat_limit_exact(app, second, world):
    """One app holds a group open with three invitations queued behind it; the other app's three
    invitations form a group waiting for the database's lock. Released, the two groups race for
    the organization's seats: the refusals happen inside the groups."""
    from tests.store.test_group_commit import HeldGroup, wait_queued

    owner = world.user("owner")
    organization = world.organization(owner, seat_limit=3)  # the owner and two more
    second.index.catch_up()
    second.store.group_hints = False  # the same owner's invitations queue in one group (HeldGroup does it for app)
    results: list[str] = []

    def invite(each, n):
        try:
            each.memberships.invite_member(owner, organization, f"grouped{n}@example.com", "colleague")
            results.append("ok")
        except DomainError as error:
            results.append(error.reason)

    with HeldGroup(app.store) as held, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(invite, app, n) for n in range(3)]
        held.queued(3)
        futures += [pool.submit(invite, second, n) for n in range(3, 6)]
        wait_queued(second.store, 2)  # the second app's group: its first waits for the database's lock
        held.released.set()
        for future in futures:
            future.result(60)
    assert sorted(results) == ["SEAT_LIMIT_REACHED"] * 4 + ["ok"] * 2
    for each in (app, second):
        each.index.catch_up()
        assert len(each.memberships.list_invitations(owner, organization, "", "pending", 100, "")) == 2
