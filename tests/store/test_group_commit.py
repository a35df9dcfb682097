"""Group commit (mandate.store.db): writers that arrive together share one transaction, and each
keeps its own revision, reply and all-or-nothing outcome. Each test holds a group open (its first
member waits inside its transaction) until the other writers queued behind it, then lets it run:
the refusals and conflicts happen inside one group. Waits are bounded; no test asserts timings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mandate.errors import DomainError
from mandate.runtime.app import App
from mandate.store import db, models
from sqlalchemy import exc, select

from tests.conftest import POLICY_DIR

WAIT = 30.0


def wait_queued(store: db.Store, count: int) -> None:
    """Wait (bounded) until `count` writers wait for their turn in the store's open group."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        group = store._open_group
        if group is not None and len(group.waiting) >= count:
            return
        time.sleep(0.005)
    raise AssertionError(f"{count} writers never queued in the group")


class HeldGroup:
    """The first member of a group, held inside its transaction until `release`."""

    def __init__(self, store: db.Store, refusal: DomainError | None = None):
        self.store = store
        self.refusal = refusal  # raised by the held member once released
        self.opened = threading.Event()
        self.released = threading.Event()
        self.outcome: list[object] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with db.grouping(db.JOIN), self.store.write() as tx:
                self.opened.set()
                assert self.released.wait(WAIT)
                if self.refusal is not None:
                    raise self.refusal
            self.outcome.append(tx.revision)  # committed
        except BaseException as error:  # noqa: BLE001 - the test reads it
            self.outcome.append(error)
        finally:
            self.opened.set()

    def __enter__(self):
        # Writes that will likely overlap join the held group too (they would lead groups of their own).
        self.store.group_hints = False
        self.thread.start()
        assert self.opened.wait(WAIT)
        return self

    def queued(self, count: int) -> None:
        """Wait (bounded) until `count` writers wait for their turn in the held group."""
        wait_queued(self.store, count)

    def __exit__(self, *_):
        self.released.set()
        self.thread.join(WAIT)
        self.store.group_hints = True


def in_one_group(app, *calls) -> list[str]:
    """Run the calls as members of one group behind a held first member: "ok" or the refusal's reason."""

    def run(call):
        try:
            call()
            return "ok"
        except DomainError as error:
            return error.reason

    with HeldGroup(app.store) as held, ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        held.queued(len(calls))
        held.released.set()
        results = [future.result(WAIT) for future in futures]
    assert isinstance(held.outcome[0], int)
    return results


def test_a_refusal_inside_a_group_changes_nothing_and_fails_no_other_member(app, world):
    owners = [world.user("owner") for _ in range(3)]
    organizations = [world.organization(owner) for owner in owners]
    stranger = world.user("stranger")
    before = dict(app.store.group_counts)
    results = in_one_group(
        app,
        lambda: app.memberships.invite_member(owners[0], organizations[0], "first@example.com", "colleague"),
        lambda: app.memberships.invite_member(stranger, organizations[1], "refused@example.com", "colleague"),
        lambda: app.memberships.invite_member(owners[2], organizations[2], "third@example.com", "colleague"),
    )
    assert results == ["ok", "NOT_ALLOWED", "ok"]
    assert app.store.group_counts["kept"] >= before["kept"] + 2  # the held member and at least one invitation
    assert app.store.group_counts["regrouped"] > before["regrouped"]  # the refusal was decided again, alone
    assert app.memberships.list_invitations(owners[1], organizations[1], "", "pending", 100, "") == []
    for owner, organization in ((owners[0], organizations[0]), (owners[2], organizations[2])):
        assert len(app.memberships.list_invitations(owner, organization, "", "pending", 100, "")) == 1


def test_a_refused_first_member_rolls_back_alone_and_the_group_goes_on(app, world):
    owners = [world.user("owner") for _ in range(2)]
    organizations = [world.organization(owner) for owner in owners]
    with app.store.read() as session:
        start = session.execute(select(models.RevisionCounter.value)).scalar_one()
    refusal = DomainError("refused by the test", "TEST_REFUSAL")
    with HeldGroup(app.store, refusal) as held, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(app.memberships.invite_member, owner, organization, "after@example.com", "colleague")
                   for owner, organization in zip(owners, organizations, strict=True)]
        held.queued(2)
        held.released.set()
        for future in futures:
            future.result(WAIT)
    assert held.outcome == [refusal]
    with app.store.read() as session:
        revisions = session.execute(select(models.Event.revision).where(models.Event.revision > start)).scalars().all()
        counter = session.execute(select(models.RevisionCounter.value)).scalar_one()
    assert sorted(set(revisions)) == [start + 1, start + 2] and counter == start + 2  # no revision left unused
    for owner, organization in zip(owners, organizations, strict=True):
        assert len(app.memberships.list_invitations(owner, organization, "", "pending", 100, "")) == 1


def test_each_member_keeps_its_own_revision_and_event_time(app, world):
    owners = [world.user("owner") for _ in range(3)]
    organizations = [world.organization(owner) for owner in owners]
    with app.store.read() as session:
        start = session.execute(select(models.RevisionCounter.value)).scalar_one()
    results = in_one_group(app, *(lambda o=o, g=g: app.memberships.invite_member(o, g, f"{g}@example.com", "colleague")
                                  for o, g in zip(owners, organizations, strict=True)))
    assert results == ["ok"] * 3
    with app.store.read() as session:
        events = session.execute(select(models.Event.revision, models.Event.occurred_at)
                                 .where(models.Event.revision > start).order_by(models.Event.revision)).all()
        counter = session.execute(select(models.RevisionCounter.value)).scalar_one()
    revisions = sorted({revision for revision, _ in events})
    # The held first member took start + 1 (it changed nothing); the three invitations one each after it.
    assert revisions == list(range(start + 2, start + 5)) and counter == start + 4
    times = [min(t for r, t in events if r == revision) for revision in revisions]
    assert times == sorted(times) and len(set(times)) == 3  # as_of: times rise with revisions
    assert app.index.revision == counter


def test_r5_seat_limit_is_exact_inside_a_group(app, world):
    owner = world.user("owner")
    organization = world.organization(owner, seat_limit=2)  # the owner and one more
    results = in_one_group(app, *(lambda n=n: app.memberships.invite_member(owner, organization, f"seat{n}@example.com",
                                                                            "colleague") for n in range(3)))
    assert sorted(results) == ["SEAT_LIMIT_REACHED"] * 2 + ["ok"]
    assert len(app.memberships.list_invitations(owner, organization, "", "pending", 100, "")) == 1


def test_r11_one_link_accepted_twice_inside_a_group_connects_once(app, world):
    partner_owner = world.user("partner-owner")
    partner = world.organization(partner_owner)
    contenders = []
    for _ in range(3):
        owner = world.user("contender")
        contenders.append((owner, world.organization(owner)))
    link = app.partners.create_invite_link(partner_owner, partner, "Kunde", "", "EUR", ["read"])
    results = in_one_group(app, *(lambda owner=owner, organization=organization:
                                  app.partners.accept_client_invitation(owner, "", link.token, organization, ["read"],
                                                                        "client")
                                  for owner, organization in contenders))
    assert sorted(results) == ["INVITATION_NOT_PENDING"] * 2 + ["ok"]
    connected = app.partners.list_clients(partner_owner, partner, "", "", 100, "")
    assert len([c for c in connected if c.client_id in {o for _, o in contenders}]) == 1


def test_r7_a_later_member_never_decides_on_facts_an_earlier_member_changed(app, world):
    """The fact index holds only committed facts: a legal representative made a colleague by the first member of a
    group cannot pause a colleague in the second (R23 decided on the committed state)."""
    owner = world.user("owner")
    organization = world.organization(owner)
    admin = world.member(organization, "legal_representative")
    colleague = world.member(organization, "colleague")
    results = in_one_group(app,
                           lambda: app.memberships.set_member_role(owner, organization, admin, "colleague"),
                           lambda: app.memberships.pause_member(admin, organization, colleague))
    assert results == ["ok", "NOT_ALLOWED"]


def test_a_database_error_inside_a_group_rolls_the_whole_group_back_and_every_other_member_runs_again(app, world):
    owner = world.user("owner")
    organization = world.organization(owner)

    def broken():
        with db.grouping(db.JOIN), app.store.write(owner) as tx:
            tx.emit("test.broken", organization_id=organization)
            raise exc.OperationalError("SELECT 1", {}, Exception("the connection broke"))

    with HeldGroup(app.store) as held, ThreadPoolExecutor(2) as pool:
        invited = pool.submit(app.memberships.invite_member, owner, organization, "kept@example.com", "colleague")
        held.queued(1)
        failing = pool.submit(broken)
        held.queued(2)
        held.released.set()
        invited.result(WAIT)
        with pytest.raises(Exception):  # noqa: B017 - the broken write's own error, whatever it maps to
            failing.result(WAIT)
    assert isinstance(held.outcome[0], db.Regroup)  # the held first member is not kept: it may run again
    # The invitation ran again on its own (@retried) and is there once.
    assert len(app.memberships.list_invitations(owner, organization, "", "pending", 100, "")) == 1


# A process that is killed (SIGKILL) in the middle of a group commit, after every member ran and
# before the commit: it prints each reply it got, and what it did, to its parent.
CRASHING = """
import os, signal, sys
from concurrent.futures import ThreadPoolExecutor
from mandate.runtime.app import App
from mandate.store import db
from tests.conftest import POLICY_DIR
from tests.factories import World
from tests.store.test_group_commit import HeldGroup

app = App(sys.argv[1], POLICY_DIR)
world = World(app)
owners = [world.user("owner") for _ in range(3)]
organizations = [world.organization(owner) for owner in owners]
print("organizations", *organizations, flush=True)
end = db.Store._end

def killed_before_commit(store, group):
    if len(group.kept) > 1:
        print("killed with", len(group.kept), "members", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    end(store, group)

db.Store._end = killed_before_commit

def invite(owner, organization):
    app.memberships.invite_member(owner, organization, "late@example.com", "colleague")
    print("acknowledged", organization, flush=True)

with HeldGroup(app.store) as held, ThreadPoolExecutor(3) as pool:
    for owner, organization in zip(owners, organizations):
        pool.submit(invite, owner, organization)
    held.queued(3)
    held.released.set()
"""


def test_a_kill_in_the_middle_of_a_group_loses_no_acknowledged_write(database_url):
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-c", CRASHING, database_url], cwd=root, capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, PYTHONPATH=str(root)))
    lines = child.stdout.splitlines()
    assert child.returncode == -9, child.stderr[-3000:]
    assert any(line.startswith("killed with") for line in lines), child.stdout
    organizations = next(line.split()[1:] for line in lines if line.startswith("organizations"))
    assert not any(line.startswith("acknowledged") for line in lines)  # nobody answered before the commit
    survivor = App(database_url, POLICY_DIR)
    try:
        with survivor.store.read() as session:
            counter = session.execute(select(models.RevisionCounter.value)).scalar_one()
            newest_event = session.execute(select(models.Event.revision).order_by(
                models.Event.revision.desc()).limit(1)).scalar_one()
            late = session.execute(select(models.Invitation).where(
                models.Invitation.organization_id.in_(organizations))).scalars().all()
        assert late == [] and counter == newest_event  # the whole group is gone, and only it
        for organization in organizations:  # the store takes writes again
            owner = survivor.directory.get_organization(organization).owner_id
            survivor.memberships.invite_member(owner, organization, "again@example.com", "colleague")
    finally:
        survivor.close()
