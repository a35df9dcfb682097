"""R6, R7 through gRPC: an organization always keeps an owner who can act.

Two holes found by probing the server: a paused member made owner could never be resumed
(MEMBER_IS_OWNER, forever), and the last-owner guard counted paused owners, so the only active
owner could demote or remove themself, after which nobody could invite, resume or remove anyone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mandate.store import models
from mandate.v1 import authorization_pb2, common_pb2, membership_pb2
from sqlalchemy import select

from tests.support import reason_of


def member_request(actor_id: str, organization_id: str, user_id: str) -> membership_pb2.MemberRequest:
    return membership_pb2.MemberRequest(actor_id=actor_id, organization_id=organization_id, user_id=user_id)


def set_role(client, actor_id: str, organization_id: str, user_id: str, role: str) -> common_pb2.Membership:
    return client.membership.SetMemberRole(membership_pb2.SetMemberRoleRequest(
        actor_id=actor_id, organization_id=organization_id, user_id=user_id, role=role))


def remove(client, actor_id: str, organization_id: str, user_id: str):
    return client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
        actor_id=actor_id, organization_id=organization_id, user_id=user_id))


def may_manage(client, world, user_id: str, organization_id: str) -> bool:
    """The check plane's answer, at the store's newest revision: may this user manage people?"""
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user_id), action="resume_member",
        resource=common_pb2.ObjectRef(type="Organization", id=organization_id),
        at_least_revision=str(world.app.store.current_revision()))).allowed


def refused(call, request, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    assert reason_of(caught.value) == reason


def active_owners(world, organization_id: str) -> set[str]:
    with world.app.store.read() as session:
        return set(session.execute(select(models.Membership.user_id).where(
            models.Membership.organization_id == organization_id, models.Membership.role == models.Role.OWNER,
            models.Membership.status == models.MemberStatus.ACTIVE)).scalars())


def test_a_paused_member_made_owner_can_be_resumed_r7(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    member = world.member(organization, "colleague")
    client.membership.PauseMember(member_request(owner, organization, member))
    made_owner = set_role(client, owner, organization, member, "owner")
    assert (made_owner.role, made_owner.status) == ("owner", "paused")
    assert not may_manage(client, world, member, organization)  # R7: paused, whatever the role
    resumed = client.membership.ResumeMember(member_request(owner, organization, member))
    assert (resumed.role, resumed.status) == ("owner", "active")
    assert may_manage(client, world, member, organization)
    # Owners are still not paused (R7 pauses colleagues): the policy's decision.
    with pytest.raises(grpc.RpcError) as caught:
        client.membership.PauseMember(member_request(owner, organization, member))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_last_active_owner_cannot_leave_r6(client, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    paused = world.member(organization, "colleague")
    client.membership.PauseMember(member_request(owner, organization, paused))
    set_role(client, owner, organization, paused, "owner")  # a second owner, but paused: cannot act
    before = world.app.store.current_revision()
    for role in ("legal_representative", "colleague", "client"):
        refused(client.membership.SetMemberRole, membership_pb2.SetMemberRoleRequest(
            actor_id=owner, organization_id=organization, user_id=owner, role=role), "LAST_OWNER")
    refused(client.membership.RemoveMember, membership_pb2.RemoveMemberRequest(
        actor_id=owner, organization_id=organization, user_id=owner), "LAST_OWNER")
    assert world.app.store.current_revision() == before
    assert active_owners(world, organization) == {owner}
    # Once the other owner can act, the first may step down.
    client.membership.ResumeMember(member_request(owner, organization, paused))
    set_role(client, owner, organization, owner, "colleague")
    assert active_owners(world, organization) == {paused}
    assert may_manage(client, world, paused, organization)


ROLES = ("owner", "owner", "legal_representative", "colleague", "client")
# Mostly the owners act: they are the ones whose leaving is at stake.
ACTORS = st.sampled_from((0, 0, 0, 1, 2, 3))
STEPS = st.lists(st.tuples(st.sampled_from(("pause", "resume", "set_role", "set_role", "remove", "invite")),
                           ACTORS, st.integers(0, 3), st.sampled_from(ROLES)),
                 min_size=1, max_size=10)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_the_last_active_owner_cannot_leave_r6_any_sequence_keeps_an_owner_who_can_act(client, world, steps):
    """Whoever does whatever to whom: after every step some owner is active and may manage people."""
    organization = world.organization()
    owner = world.owner_of(organization)
    # The shape the hole needed: one active owner, and one paused (a paused member made owner).
    paused_owner = world.member(organization, "colleague")
    world.app.memberships.pause_member(owner, organization, paused_owner)
    world.app.memberships.set_member_role(owner, organization, paused_owner, "owner")
    people = [owner, paused_owner, world.member(organization, "colleague"),
              world.member(organization, "legal_representative")]
    for step, by, to, role in steps:
        actor, target = people[by], people[to]
        try:
            if step in ("pause", "resume"):
                getattr(client.membership, f"{step.title()}Member")(member_request(actor, organization, target))
            elif step == "set_role":
                set_role(client, actor, organization, target, role)
            elif step == "remove":
                remove(client, actor, organization, target)
            else:
                client.membership.InviteMember(membership_pb2.InviteMemberRequest(
                    actor_id=actor, organization_id=organization, email=world.email(target), role=role))
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
                                    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS), error.details()
        owners = active_owners(world, organization)
        assert owners, f"no active owner after {step} by {by} of {to}"
        assert all(may_manage(client, world, owner, organization) for owner in owners)


def test_the_last_active_owner_cannot_leave_r6_two_owners_leaving_at_once(client, world):
    """The guard is checked in the write transaction: of two owners who step down together,
    exactly one does."""
    barrier = threading.Barrier(2)

    def step_down(organization_id: str, user_id: str):
        barrier.wait(timeout=20)
        try:
            return set_role(client, user_id, organization_id, user_id, "colleague")
        except grpc.RpcError as error:
            return error

    for _ in range(3):
        organization = world.organization()
        owners = [world.owner_of(organization), world.member(organization, "owner")]
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(step_down, [organization] * 2, owners))
        refusals = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        assert len(refusals) == 1, outcomes
        assert reason_of(refusals[0]) == "LAST_OWNER"
        assert len(active_owners(world, organization)) == 1
