"""Hole "decision cost grows with the square of shared partners" (issue 9): a user in N partner
organizations of one client. The policy decides path by path, so a Check asks oso about the
distinct partner paths only (not about N memberships joined with N connections), and the
answers stay those of the rules. No timing is asserted: the work is counted."""

from __future__ import annotations

import pytest
from mandate.engine.facts import partner_paths
from mandate.v1 import authorization_pb2 as pb
from mandate.v1 import common_pb2

PARTNERS = 8


@pytest.fixture
def engine() -> str:
    """Policy work, not the store's: SQLite only (the engines run every store test)."""
    return "sqlite"


@pytest.fixture
def shared(world):
    """A client with a project; one user, a tagged colleague in PARTNERS partners of it; only
    the last partner assigned them (R19: one partner record per client and person)."""
    client = world.organization(name="Client")
    project = world.project(client)
    user = world.user("shared")
    partners = []
    for n in range(PARTNERS):
        partner = world.organization(name=f"Partner {n}")
        world.member(partner, "colleague", user, partner_employee=True)
        world.connect(partner, client, scopes=("read", "edit"))
        partners.append(partner)
    world.assign(partners[-1], client, user)
    return user, client, project, partners


def counting(policy):
    calls = []
    original = policy._oso.is_allowed

    def is_allowed(*args):
        calls.append(args)
        return original(*args)

    policy._oso.is_allowed = is_allowed
    return calls


def test_decision_cost_grows_with_the_square_of_shared_partners(client, world, shared):
    user, organization, project, _ = shared
    subject = world.app.index.subject(user, organization)
    assert len(subject.connections) == PARTNERS
    assert len(partner_paths(subject)) == 2  # assigned by one partner, not by the others
    calls = counting(world.app.authorizer.policy)
    assert client.check(user, "edit", f"Project:{project}").allowed  # through the one that assigned them
    assert not client.check(user, "publish", f"Project:{project}").allowed  # not granted by any
    assert len(calls) <= 2 * 2  # each decision: one oso query per distinct path, at most


def test_no_path_alone_grants_what_the_whole_would_not(world, shared):
    """Unassigned, the user reaches nothing through any partner (R16), however many they share."""
    user, organization, project, partners = shared
    world.app.partners.unassign_client(world.owner_of(partners[-1]), partners[-1], organization, user)
    assert not world.allowed(user, "read", "Project", project)
    assert world.allowed(world.owner_of(partners[0]), "read", "Project", project)  # R20: the partner's owner


def explain_queries(client, app, user: str, action: str, project: str, monkeypatch) -> tuple[bool, list, list]:
    """An Explain through gRPC: whether it allows, its reasons, and the partner paths of every
    subject oso was asked about (the policy's own query and each rule variant's)."""
    from oso import Oso

    asked = []
    original = Oso.is_allowed

    def is_allowed(oso, actor, action, resource):
        home = getattr(resource, "organization", resource)
        asked.append(len(getattr(home, "partner_connections", ())))
        return original(oso, actor, action, resource)

    monkeypatch.setattr(Oso, "is_allowed", is_allowed)
    try:
        reply = client.authorization.Explain(pb.CheckRequest(
            actor=common_pb2.ObjectRef(type="User", id=user), action=action,
            resource=common_pb2.ObjectRef(type="Project", id=project)), timeout=120)
    finally:
        monkeypatch.setattr(Oso, "is_allowed", original)
    return reply.allowed, list(reply.reasons), asked


def test_explain_goes_path_by_path_allow_and_deny(client, world, shared, monkeypatch):
    """issue 18 item 3: Explain asks the policy path by path, like Check: every subject it asks
    about holds at most one partner path, and twice the shared partners cost no more queries
    (it joined every path with every other, for each change: seconds at 40 partners)."""
    user, organization, project, partners = shared
    before = {action: explain_queries(client, world.app, user, action, project, monkeypatch)
              for action in ("edit", "publish")}
    assert before["edit"][0] and not before["publish"][0]
    for n in range(PARTNERS):  # as many partners again, in the same situation
        partner = world.organization(name=f"Partner {PARTNERS + n}")
        world.member(partner, "colleague", user, partner_employee=True)
        world.connect(partner, organization, scopes=("read", "edit"))
    for action, (allowed, _, asked) in before.items():
        again, _, more_asked = explain_queries(client, world.app, user, action, project, monkeypatch)
        assert again == allowed
        assert max(asked + more_asked) <= 1, "the policy was asked about several partner paths at once"
        assert len(more_asked) <= len(asked), (action, len(asked), len(more_asked))
    # A deny names each partner's own change: the grant of the scope by the one that assigned them.
    _, reasons, _ = explain_queries(client, world.app, user, "publish", project, monkeypatch)
    granted = [r for r in reasons if "granted 'publish' to partner" in r]
    assert len(granted) == 1 and partners[-1] in granted[0], reasons
