"""Store tier, on every engine: several App instances on one database behave as one service.

Each App stands for a replica (its own fact index, its own connections). Racing mutations go
through different instances; the rules must hold exactly as they do through one. Every test
here runs on SQLite and on PostgreSQL (the `engine` fixture in conftest.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from mandate import errors
from mandate.clock import SystemClock
from mandate.membership.service import seats_taken
from mandate.runtime.app import App
from mandate.store import models

from tests.conftest import POLICY_DIR
from tests.factories import World
from tests.support import wait_until

RACERS = 6


@pytest.fixture
def replicas(app, database_url):
    """`app` and two more instances on the same database."""
    others = [App(database_url, POLICY_DIR) for _ in range(2)]
    yield [app, *others]
    for other in others:
        other.close()


def race(*calls) -> list:
    """Run the calls at once; each result is the return value or the exception raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_seat_limit_holds_when_invitations_race_through_different_instances(replicas, world):
    owner = world.user("owner")
    organization = world.organization(owner, seat_limit=3)  # the owner takes one seat
    emails = [f"racer{n}-{organization}@example.com" for n in range(RACERS)]
    results = race(*(
        lambda n=n: replicas[n % len(replicas)].memberships.invite_member(owner, organization, emails[n], "colleague")
        for n in range(RACERS)))
    accepted = [r for r in results if isinstance(r, models.Invitation)]
    refused = [r for r in results if not isinstance(r, models.Invitation)]
    assert len(accepted) == 2
    assert all(isinstance(r, errors.SeatLimitReached) for r in refused), refused
    with replicas[0].store.read() as session:
        assert seats_taken(SimpleNamespace(execute=session.execute), organization, SystemClock().now_text()) == 3


def test_an_invitation_link_is_used_once_when_accepted_through_different_instances(replicas, world):
    partner = world.organization(name="Agency")
    clients = [world.organization(name=f"Client {n}") for n in range(RACERS)]
    link = replicas[0].partners.create_invite_link(world.owner_of(partner), partner, "Customer", "", "EUR",
                                                   ["read"])
    results = race(*(
        lambda n=n: replicas[n % len(replicas)].partners.accept_client_invitation(
            world.owner_of(clients[n]), "", link.token, clients[n], ["read"], "client")
        for n in range(RACERS)))
    accepted = [r for r in results if not isinstance(r, Exception)]
    assert len(accepted) == 1
    assert all(isinstance(r, errors.InvitationNotPending) for r in results if isinstance(r, Exception)), results


def test_two_owners_removing_each_other_through_different_instances_leave_one(replicas, world):
    first = world.user("first")
    organization = world.organization(first)
    second = world.member(organization, "owner")
    results = race(
        lambda: replicas[1].memberships.remove_member(first, organization, second),
        lambda: replicas[2].memberships.remove_member(second, organization, first),
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1, results
    assert isinstance(failures[0], errors.LastOwner | errors.PermissionDenied | errors.NotFound), failures
    replicas[0].index.catch_up()
    owners = [u for u in (first, second)
              if replicas[0].index.memberships.get(u, {}).get(organization, None) is not None]
    assert len(owners) == 1


def test_a_member_removed_through_one_instance_cannot_act_through_another(replicas, world):
    owner = world.user("owner")
    organization = world.organization(owner)
    colleague = world.member(organization, "legal_representative")
    stale = replicas[2]
    stale.index.catch_up()  # knows the colleague as a legal representative, and follows nothing
    invited = replicas[2].memberships.invite_member(colleague, organization, "allowed@example.com", "colleague")
    assert invited.status == models.InvitationStatus.PENDING

    replicas[1].memberships.remove_member(owner, organization, colleague)
    with pytest.raises(errors.PermissionDenied):
        stale.memberships.invite_member(colleague, organization, "refused@example.com", "colleague")


def test_read_your_writes_through_another_instance(replicas, world):
    owner = world.user("owner")
    organization = world.organization(owner)
    reader = replicas[1]
    reader.index.catch_up()
    for number in range(20):
        project = f"ryw-{number}"
        revision = replicas[number % 3].directory.put_resource(owner, "Project", project, organization)
        other = replicas[(number + 1) % 3]
        assert other.authorizer.at_least(revision) >= revision
        assert other.authorizer.check("User", owner, "read", "Project", project)


def test_a_following_instance_sees_other_instances_writes_without_being_asked(replicas, world):
    follower = replicas[1]
    follower.start_polling()
    owner = world.user("owner")
    organization = world.organization(owner)
    revision = replicas[2].directory.put_resource(owner, "Project", "followed", organization)
    assert wait_until(lambda: follower.index.revision >= revision)
    assert follower.authorizer.check("User", owner, "read", "Project", "followed")
    assert follower.database_available()


def test_watch_wakes_for_another_instances_commit(replicas, world):
    follower = replicas[1]
    follower.start_polling()
    woke = threading.Event()
    follower.store.on_commit(lambda _revision: woke.set())
    World(replicas[2]).user("late")
    assert woke.wait(20)


def test_catching_up_never_sees_half_a_transaction(replicas):
    """Each transaction writes an organization and its owner's membership together; a reader
    catching up while they commit must never know the organization without its owner."""
    from mandate.runtime.world import load_world

    writer, reader = replicas[1], replicas[2]
    done = threading.Event()
    torn = []

    def read() -> None:
        while not done.is_set():
            reader.index.catch_up()
            with reader.index._applying:
                torn.extend(o for o in reader.index.organizations
                            if o.startswith("snap-") and not reader.index.members.get(o))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for number in range(40):
            load_world(writer.store, {"organizations": {f"snap-{number}": {"owner": f"snap-owner-{number}"}}})
    finally:
        done.set()
        thread.join()
    assert torn == []
    reader.index.catch_up()
    assert {f"snap-{n}" for n in range(40)} <= reader.index.organizations
