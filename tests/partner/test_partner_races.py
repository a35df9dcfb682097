"""Tier 3: partner-program rules that must hold when requests race (R11, R14, R18), through gRPC.

Each race starts its requests together from threads (a barrier releases them at once) against
the real server, whose worker threads run them concurrently. Whatever order the store puts them
in, the outcome must be one the rules allow; the tests assert the outcome, never a timing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from mandate.v1 import authorization_pb2, common_pb2, membership_pb2, partner_pb2

from tests.support import reason_of

ROUNDS = 4




def race(*calls) -> list:
    """Run the calls at once; each result is the reply or the grpc.RpcError it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def outcome(result) -> str:
    """"ok", or the failed call's status code and reason."""
    if isinstance(result, grpc.RpcError):
        return f"{result.code().name} {reason_of(result)}"
    return "ok"


def can(client, user: str, action: str, project: str) -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type="Project", id=project))).allowed


def projects_of(client, user: str) -> list[str]:
    return list(client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action="read", resource_type="Project")).resource_ids)


def connections(client, actor: str, partner: str) -> list[common_pb2.Connection]:
    return list(client.partner.ListClients(partner_pb2.ListClientsRequest(
        actor_id=actor, partner_id=partner, page_size=1000)).connections)


def assignment(actor: str, partner: str, client_org: str, user: str) -> partner_pb2.AssignmentRequest:
    return partner_pb2.AssignmentRequest(actor_id=actor, partner_id=partner, client_id=client_org, user_id=user)


def test_r11_clients_racing_for_one_link_exactly_one_wins(client, world):
    partner_owner = world.user("partner-owner")
    partner = world.organization(partner_owner)
    contenders = []
    for _ in range(6):
        owner = world.user("contender")
        contenders.append((owner, world.organization(owner)))

    winners = []
    for _ in range(ROUNDS):
        link = client.partner.CreateInviteLink(partner_pb2.CreateInviteLinkRequest(
            actor_id=partner_owner, partner_id=partner, customer_name="Kunde", currency="EUR",
            requested_scopes=["read"]))
        open_contenders = [c for c in contenders if c[1] not in {w.client_id for w in winners}]
        results = race(*(
            lambda owner=owner, organization=organization, token=link.token: client.partner.AcceptClientInvitation(
                partner_pb2.AcceptClientInvitationRequest(actor_id=owner, token=token, client_id=organization))
            for owner, organization in open_contenders
        ))

        won = [r for r in results if not isinstance(r, grpc.RpcError)]
        assert len(won) == 1, [outcome(r) for r in results]
        assert sorted(outcome(r) for r in results if r is not won[0]) == [
            "FAILED_PRECONDITION INVITATION_NOT_PENDING"] * (len(results) - 1)
        winners.append(won[0])

    listed = connections(client, partner_owner, partner)
    assert sorted(c.client_id for c in listed) == sorted(w.client_id for w in winners)
    assert len({w.client_id for w in winners}) == ROUNDS


def test_r18_assignment_racing_removal_never_leaves_access(client, world):
    partner_owner = world.user("partner-owner")
    partner = world.organization(partner_owner)
    delegating_owner, approving_owner = world.user("delegating"), world.user("approving")
    delegating, approving = world.organization(delegating_owner), world.organization(approving_owner)
    delegating_project, approving_project = world.project(delegating), world.project(approving)
    world.connect(partner, delegating, employee_approval="partner")  # assignment alone gives access
    world.connect(partner, approving)

    for _ in range(ROUNDS):
        employee = world.member(partner, "colleague", partner_employee=True)
        world.assign(partner, approving, employee, approve=False)
        results = race(
            lambda employee=employee: client.partner.AssignClient(
                assignment(partner_owner, partner, delegating, employee)),
            lambda employee=employee: client.partner.ApprovePartnerEmployee(
                assignment(approving_owner, partner, approving, employee)),
            lambda employee=employee: client.membership.RemoveMember(membership_pb2.RemoveMemberRequest(
                actor_id=partner_owner, organization_id=partner, user_id=employee)),
        )
        assigned, approved, removed = (outcome(r) for r in results)

        assert removed == "ok"
        assert assigned in ("ok", "NOT_FOUND MEMBER_NOT_FOUND")
        assert approved in ("ok", "NOT_FOUND ASSIGNMENT_NOT_FOUND")
        assert not can(client, employee, "read", delegating_project)
        assert not can(client, employee, "read", approving_project)
        assert projects_of(client, employee) == []
        # No assignment survived: there is nothing left for the client to approve.
        for client_org, owner in ((delegating, delegating_owner), (approving, approving_owner)):
            try:
                client.partner.ApprovePartnerEmployee(assignment(owner, partner, client_org, employee))
            except grpc.RpcError as error:
                assert outcome(error) == "NOT_FOUND ASSIGNMENT_NOT_FOUND"
            else:
                raise AssertionError("an assignment outlived the employee's removal")


def test_r14_revocation_racing_assignment_never_leaves_access(client, world):
    partner_owner = world.user("partner-owner")
    partner = world.organization(partner_owner)
    for _ in range(ROUNDS):
        client_owner = world.user("client-owner")
        client_org = world.organization(client_owner)
        project = world.project(client_org)
        world.connect(partner, client_org, employee_approval="partner")
        employee = world.member(partner, "colleague", partner_employee=True)
        results = race(
            lambda employee=employee, client_org=client_org: client.partner.AssignClient(
                assignment(partner_owner, partner, client_org, employee)),
            lambda client_owner=client_owner, client_org=client_org: client.partner.RevokePartner(
                partner_pb2.ConnectionRequest(actor_id=client_owner, partner_id=partner, client_id=client_org)),
        )
        assigned, revoked = (outcome(r) for r in results)
        assert revoked == "ok"
        assert assigned in ("ok", "NOT_FOUND CONNECTION_NOT_FOUND")
        assert not can(client, employee, "read", project)
        assert not can(client, partner_owner, "read", project)
