"""Lists agree with Check, on every actor, action and resource of a fixture world.

oso 0.27's data filtering is known to return wrong rows silently in some
policies; whatever ListResources and ListActors use, the only proof that they are right is to compare
them with Check everywhere. The world below covers every way to reach (or lose) a resource: each
role, paused and removed members, partner managers and employees (assigned or not, approved or
not, under client approval or partner delegation, untagged, removed), connections active,
disconnect_requested and revoked, a client with two partners, linked accounts, and a deleted
project. Everything goes through gRPC against a real server; lists are read with a small page
size, following next_page_token to the end (R2, R6, R7, R12 to R20, R23)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from mandate.names import ProjectAction
from mandate.store import models
from mandate.v1 import authorization_pb2, common_pb2
from sqlalchemy import select

PROJECT_ACTIONS = tuple(ProjectAction)  # the scopes, and moving a project
PAGE_SIZE = 2
BATCH = 1000


@dataclass
class Fixture:
    users: dict[str, str] = field(default_factory=dict)  # name -> id
    organizations: dict[str, str] = field(default_factory=dict)  # name -> id
    projects: dict[str, str] = field(default_factory=dict)  # name -> id (the deleted one too)


def build_world(world) -> Fixture:
    app = world.app
    memberships, partners = app.memberships, app.partners
    f = Fixture()
    u, o, p = f.users, f.organizations, f.projects

    def organization(name: str, owner: str, currency: str = "EUR") -> str:
        u[f"{name}_owner"] = owner
        o[name] = world.organization(owner, currency=currency, name=name)
        for number in (1, 2):
            p[f"{name}_project{number}"] = world.project(o[name], f"{name}-project-{number}")
        return o[name]

    # Two partners (agencies) with their people.
    agency_a = organization("agency_a", world.user("agency_a_owner"))
    agency_b = organization("agency_b", world.user("agency_b_owner"))
    u["a_rep"] = world.member(agency_a, "legal_representative")
    u["a_colleague"] = world.member(agency_a, "colleague")
    for name in ("a_approved", "a_unapproved", "a_delegated", "a_paused", "a_revoked", "a_untagged_later",
                 "a_removed_later", "a_two_clients", "a_unassigned"):
        u[name] = world.member(agency_a, "colleague", partner_employee=True)
    u["b_employee"] = world.member(agency_b, "colleague", partner_employee=True)
    u["b_revoked_employee"] = world.member(agency_b, "colleague", partner_employee=True)

    # Clients, with different grants and approval modes.
    client_1 = organization("client_1", world.user("client_1_owner"))
    client_2 = organization("client_2", world.user("client_2_owner"))
    client_3 = organization("client_3", world.user("client_3_owner"))
    client_4 = organization("client_4", world.user("client_4_owner"))
    world.connect(agency_a, client_1, scopes=("read", "edit", "publish"), granted=("read", "edit"))
    world.connect(agency_a, client_2, scopes=("read", "publish", "approve"), employee_approval="partner")
    world.connect(agency_b, client_3, scopes=("read", "edit", "delete"))
    world.connect(agency_a, client_3, scopes=("read",))
    world.connect(agency_b, client_4, scopes=("read", "approve"))

    # Members of the clients.
    u["c1_rep"] = world.member(client_1, "legal_representative")
    u["c1_colleague"] = world.member(client_1, "colleague")
    u["c1_client"] = world.member(client_1, "client")
    u["c1_paused"] = world.member(client_1, "colleague")
    memberships.pause_member(u["client_1_owner"], client_1, u["c1_paused"])
    u["c1_removed"] = world.member(client_1, "colleague")
    memberships.remove_member(u["client_1_owner"], client_1, u["c1_removed"])
    world.member(client_2, "client", u["c1_colleague"])  # one person in two organizations
    memberships.invite_member(u["client_2_owner"], client_2, "not-yet-registered@example.com", "colleague")

    # Partner employees in every state (R15 to R19).
    world.assign(agency_a, client_1, u["a_approved"])
    world.assign(agency_a, client_1, u["a_unapproved"], approve=False)
    world.assign(agency_a, client_2, u["a_delegated"], approve=False)
    world.assign(agency_a, client_1, u["a_paused"])
    memberships.pause_member(u["agency_a_owner"], agency_a, u["a_paused"])
    world.assign(agency_a, client_1, u["a_untagged_later"])
    memberships.tag_partner_employee(u["agency_a_owner"], agency_a, u["a_untagged_later"], False)
    world.assign(agency_a, client_1, u["a_removed_later"])
    memberships.remove_member(u["agency_a_owner"], agency_a, u["a_removed_later"])
    world.assign(agency_a, client_1, u["a_two_clients"])
    world.assign(agency_a, client_3, u["a_two_clients"])
    world.assign(agency_b, client_3, u["b_employee"])
    world.assign(agency_b, client_4, u["b_revoked_employee"])
    world.assign(agency_a, client_1, u["a_revoked"])
    partners.revoke_partner_employee(u["client_1_owner"], client_1, agency_a, u["a_revoked"])

    # R14: agency_b asked to leave client_3 (access continues); client_4 revoked agency_b at once.
    partners.request_disconnect(u["agency_b_owner"], agency_b, client_3)
    partners.revoke_partner(u["client_4_owner"], agency_b, client_4)
    # R12: client_3 narrows what agency_a may do later on.
    partners.update_granted_scopes(u["client_3_owner"], agency_a, client_3, ["read", "approve"])

    # R13: one owner, two linked master accounts in two currencies; a colleague in one of them.
    multi = u["multi_owner"] = world.user("multi_owner")
    linked_eur = organization("linked_eur", multi)
    linked_usd = organization("linked_usd", multi, currency="USD")
    app.directory.link_organizations(multi, linked_eur, linked_usd)
    u["linked_colleague"] = world.member(linked_eur, "colleague")

    # A deleted project, and an outsider with no facts at all.
    p["client_1_deleted"] = world.project(client_1, "client-1-deleted")
    app.directory.delete_resource(u["client_1_owner"], "Project", p["client_1_deleted"])
    u["outsider"] = world.user("outsider")
    return f


@pytest.fixture
def fixture_world(world) -> Fixture:
    return build_world(world)


def ref(type_: str, id_: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(type=type_, id=id_)


def checks(client, requests: list[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], bool]:
    """Check every (user, action, resource type, resource id), through BatchCheck."""
    answers = {}
    for start in range(0, len(requests), BATCH):
        chunk = requests[start:start + BATCH]
        reply = client.authorization.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[
            authorization_pb2.CheckRequest(actor=ref("User", user), action=action, resource=ref(type_, id_))
            for user, action, type_, id_ in chunk]))
        assert len(reply.results) == len(chunk)
        answers.update({key: result.allowed for key, result in zip(chunk, reply.results, strict=True)})
    return answers


def paged(call, request_for, field_name: str) -> list[str]:
    """Every id of a paged list, following next_page_token; no id twice, pages never over-full."""
    found, token = [], ""
    for _ in range(1000):
        reply = call(request_for(token))
        ids = list(getattr(reply, field_name))
        assert len(ids) <= PAGE_SIZE
        found += ids
        token = reply.next_page_token
        if not token:
            assert len(found) == len(set(found)), f"an id listed twice: {found}"
            return found
    raise AssertionError("next_page_token never ended")


def list_resources(client, user: str, action: str, resource_type: str) -> list[str]:
    return paged(client.authorization.ListResources, lambda token: authorization_pb2.ListResourcesRequest(
        actor=ref("User", user), action=action, resource_type=resource_type, page_size=PAGE_SIZE,
        page_token=token), "resource_ids")


def list_actors(client, action: str, resource_type: str, resource_id: str) -> list[str]:
    return paged(client.authorization.ListActors, lambda token: authorization_pb2.ListActorsRequest(
        action=action, resource=ref(resource_type, resource_id), page_size=PAGE_SIZE, page_token=token), "user_ids")


def every_id(app, table) -> list[str]:
    with app.store.read() as session:
        return sorted(session.execute(select(table.id)).scalars())


def test_lists_agree_with_check_on_every_actor_action_and_resource(app, client, fixture_world):
    users = every_id(app, models.User)
    assert set(fixture_world.users.values()) <= set(users)
    resources = {
        "Project": sorted(fixture_world.projects.values()),
        "Organization": every_id(app, models.Organization),
    }
    actions = {"Project": PROJECT_ACTIONS, "Organization": tuple(app.authorizer.policy.permissions["Organization"])}
    assert set(app.authorizer.policy.permissions["Project"]) == set(PROJECT_ACTIONS)

    requests = [(user, action, type_, id_) for type_ in resources for action in actions[type_]
                for user, id_ in itertools.product(users, resources[type_])]
    allowed = checks(client, requests)

    mismatches = []
    for type_, type_actions in actions.items():
        for user, action in itertools.product(users, type_actions):
            expected = sorted(id_ for id_ in resources[type_] if allowed[user, action, type_, id_])
            listed = list_resources(client, user, action, type_)
            if listed != expected:  # the list is in id order, so compare as lists
                mismatches.append(f"ListResources({user}, {action}, {type_}) = {listed}, Check allows {expected}")
        for action, id_ in itertools.product(type_actions, resources[type_]):
            expected = sorted(user for user in users if allowed[user, action, type_, id_])
            listed = list_actors(client, action, type_, id_)
            if listed != expected:
                mismatches.append(f"ListActors({action}, {type_} {id_}) = {listed}, Check allows {expected}")
    names = {id_: name for name, id_ in {**fixture_world.users, **fixture_world.organizations}.items()}
    assert not mismatches, "\n".join(mismatches) + f"\nwho is who: {names}"

    # The comparison is only a proof if the world exercises every path: spot-check the answers
    # the rules demand, so a world where everything is denied cannot pass.
    u, o, p = fixture_world.users, fixture_world.organizations, fixture_world.projects

    def can(user: str, action: str, project: str) -> bool:
        return allowed[u[user], action, "Project", p[project]]

    def may(user: str, action: str, organization: str) -> bool:
        return allowed[u[user], action, "Organization", o[organization]]

    assert can("client_1_owner", "delete", "client_1_project1")  # R2
    assert can("c1_colleague", "publish", "client_1_project1") and not can("c1_colleague", "delete",
                                                                          "client_1_project1")
    assert can("c1_colleague", "approve", "client_2_project1")  # R2: a client member elsewhere
    assert not can("c1_colleague", "edit", "client_2_project1")
    assert can("c1_client", "approve", "client_1_project1") and not can("c1_client", "edit", "client_1_project1")
    assert not any(can(name, action, "client_1_project1") for name in ("c1_paused", "c1_removed")
                   for action in PROJECT_ACTIONS)  # R6, R7
    assert not can("client_1_owner", "read", "client_1_deleted")
    assert can("a_rep", "edit", "client_1_project1") and not can("a_rep", "publish", "client_1_project1")  # R12
    assert can("a_approved", "edit", "client_1_project2")  # R16
    assert not can("a_approved", "read", "client_2_project1")  # R16: not assigned there
    assert can("a_delegated", "publish", "client_2_project1")  # R16: delegation needs no approval
    assert not any(can(name, "read", "client_1_project1") for name in (
        "a_unapproved", "a_revoked", "a_paused", "a_untagged_later", "a_removed_later", "a_unassigned",
        "a_colleague"))
    assert can("a_two_clients", "approve", "client_3_project1") and not can("a_two_clients", "edit",
                                                                            "client_3_project1")
    assert can("b_employee", "delete", "client_3_project1")  # R14: disconnect requested, access continues
    assert can("agency_b_owner", "edit", "client_3_project1")
    assert not can("agency_b_owner", "read", "client_4_project1")  # R14: revoked
    assert not can("b_revoked_employee", "read", "client_4_project1")
    assert may("multi_owner", "switch", "linked_usd") and not may("linked_colleague", "switch", "linked_usd")
    assert not can("linked_colleague", "read", "linked_usd_project1")  # R13: a link is not a membership
    assert may("a_rep", "add_client", "agency_a") and not may("a_colleague", "add_client", "agency_a")  # R8
    assert not may("a_rep", "view", "client_1")  # R20: projects only, not the client's people
    assert not any(allowed[u["outsider"], action, type_, id_] for (user, action, type_, id_) in requests
                   if user == u["outsider"])
