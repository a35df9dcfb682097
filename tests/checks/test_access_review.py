"""AccessReview and `mandate access-review` (issue 10, part 2), through gRPC against the real
store: the review agrees with ListActors for every action on every resource, names each path in
plain words, says when and by whom each path took its current form, pages in a stable order,
refuses bad requests with the field or reason, and hides emails from read-only callers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.runtime.validate import encode_page_token
from mandate.v1 import authorization_pb2, common_pb2, events_pb2

from tests.conftest import POLICY_DIR, TOKEN
from tests.public.test_cli import mandate
from tests.support import error_info, reason_of

DELEGATION = "assigned (the client trusts the partner's delegation)"


@dataclass
class Acme:
    """A client organization with every kind of person around it."""

    acme: str
    usd: str  # Acme's owner's second master account, linked to Acme (R13)
    owner: str
    legal: str
    colleague: str
    paused: str
    client_member: str
    removed: str
    projects: tuple[str, str]
    agency: str  # partner, granted read and edit, approves each employee
    agency_owner: str
    agency_legal: str
    approved: str  # assigned by Agency and approved
    unapproved: str
    unassigned: str
    studio: str  # partner, granted read, the client trusts its delegation
    studio_owner: str
    delegated: str
    both: str  # legal representative of Agency and assigned employee of Studio: two partner paths
    idle_owner: str  # partner granted nothing (R12)
    former_owner: str  # partner revoked (R14)
    elsewhere: str  # a project of another organization


@pytest.fixture
def acme(world) -> Acme:
    app = world.app
    acme = world.organization(name="Acme")
    owner = world.owner_of(acme)
    legal = world.member(acme, "legal_representative")
    colleague = world.member(acme, "colleague")
    paused = world.member(acme, "colleague")
    app.memberships.pause_member(owner, acme, paused)
    client_member = world.member(acme, "client")
    removed = world.member(acme, "colleague")
    app.memberships.remove_member(owner, acme, removed)
    projects = (world.project(acme, "acme-site"), world.project(acme, "acme-shop"))

    agency = world.organization(name="Agency")
    agency_legal = world.member(agency, "legal_representative")
    approved = world.member(agency, "colleague", partner_employee=True)
    unapproved = world.member(agency, "colleague", partner_employee=True)
    unassigned = world.member(agency, "colleague", partner_employee=True)
    world.connect(agency, acme, scopes=("read", "edit"))
    world.assign(agency, acme, approved)
    world.assign(agency, acme, unapproved, approve=False)

    studio = world.organization(name="Studio")
    delegated = world.member(studio, "colleague", partner_employee=True)
    both = world.member(agency, "legal_representative")
    world.member(studio, "colleague", user_id=both, partner_employee=True)
    world.connect(studio, acme, scopes=("read", "publish"), granted=("read",), employee_approval="partner")
    world.assign(studio, acme, delegated, approve=False)
    world.assign(studio, acme, both, approve=False)  # R19: one partner record per person and client

    idle = world.organization(name="Idle")
    world.connect(idle, acme, scopes=("read",), granted=())
    former = world.organization(name="Former")
    world.connect(former, acme, scopes=("read",))
    app.partners.revoke_partner(owner, former, acme)

    usd = world.organization(owner, name="Acme USD", currency="USD")
    app.directory.link_organizations(owner, acme, usd)
    elsewhere = world.project(agency, "agency-own")
    return Acme(acme, usd, owner, legal, colleague, paused, client_member, removed, projects, agency,
                world.owner_of(agency), agency_legal, approved, unapproved, unassigned, studio,
                world.owner_of(studio), delegated, both, world.owner_of(idle), world.owner_of(former), elsewhere)


def review(client, organization_id: str, page_size: int = 1000) -> list:
    entries, token = [], ""
    while True:
        reply = client.authorization.AccessReview(authorization_pb2.AccessReviewRequest(
            organization_id=organization_id, page_size=page_size, page_token=token))
        entries += reply.entries
        token = reply.next_page_token
        if not token:
            return entries


def list_actors(client, action: str, resource: tuple[str, str]) -> set[str]:
    found, token = set(), ""
    while True:
        reply = client.authorization.ListActors(authorization_pb2.ListActorsRequest(
            action=action, resource=common_pb2.ObjectRef(type=resource[0], id=resource[1]), page_size=1000,
            page_token=token))
        found |= set(reply.user_ids)
        token = reply.next_page_token
        if not token:
            return found


def by_person(entries) -> dict[tuple[str, str, str], object]:
    return {(e.user_id, e.resource.type, e.resource.id): e for e in entries}


def paths(entry) -> set[str]:
    return set(entry.path.split("; "))


def event_at(client, revision: str) -> events_pb2.Event:
    reply = client.events.ListEvents(events_pb2.ListEventsRequest(since_revision=str(int(revision) - 1),
                                                                  page_size=1000))
    return next(e for e in reply.events if e.revision == revision)


# -- agreement with ListActors -------------------------------------------------------------------


def test_the_review_agrees_with_list_actors_for_every_action_on_every_resource(client, world, acme):
    entries = review(client, acme.acme)
    policy = world.app.authorizer.policy
    resources = [("Organization", acme.acme), *(("Project", p) for p in acme.projects)]
    assert {(e.resource.type, e.resource.id) for e in entries} == set(resources)
    compared = 0
    for resource_type, resource_id in resources:
        for action in policy.permissions[resource_type]:
            reviewed = {e.user_id for e in entries
                        if (e.resource.type, e.resource.id) == (resource_type, resource_id) and action in e.actions}
            assert reviewed == list_actors(client, action, (resource_type, resource_id)), (action, resource_id)
            compared += bool(reviewed)
    assert compared > 20, "the world grants too little to prove agreement"
    # Every entry grants something, with sorted actions, and no person appears twice per resource.
    assert all(e.actions and list(e.actions) == sorted(e.actions) for e in entries)
    assert len(by_person(entries)) == len(entries)
    assert acme.elsewhere not in {e.resource.id for e in entries}


def test_r6_r7_r12_r14_r16_people_without_access_are_not_listed(client, acme):
    listed = {e.user_id for e in review(client, acme.acme)}
    for nobody in (acme.paused, acme.removed, acme.unapproved, acme.unassigned, acme.idle_owner, acme.former_owner):
        assert nobody not in listed
    for somebody in (acme.owner, acme.legal, acme.colleague, acme.client_member, acme.agency_owner,
                     acme.agency_legal, acme.approved, acme.studio_owner, acme.delegated, acme.both):
        assert somebody in listed


# -- paths ----------------------------------------------------------------------------------------


def test_r2_a_role_in_the_organization_is_the_path(client, acme):
    entries = by_person(review(client, acme.acme))
    project = ("Project", acme.projects[0])
    assert entries[(acme.colleague, *project)].path == "colleague of Acme"
    assert list(entries[(acme.colleague, *project)].actions) == ["edit", "publish", "read"]
    assert entries[(acme.colleague, "Organization", acme.acme)].path == "colleague of Acme"
    assert entries[(acme.legal, *project)].path == "legal_representative of Acme"
    assert entries[(acme.client_member, *project)].path == "client of Acme"
    assert list(entries[(acme.client_member, *project)].actions) == ["approve", "read"]
    assert entries[(acme.owner, *project)].path == "owner of Acme"


def test_r13_the_linked_master_account_is_a_path_of_its_own(client, acme):
    entries = by_person(review(client, acme.acme))
    organization = entries[(acme.owner, "Organization", acme.acme)]
    assert paths(organization) == {"owner of Acme", "owner of Acme and owner of linked account Acme USD"}
    assert "switch" in organization.actions and "link" in organization.actions


def test_r9_r12_a_partners_legal_representative_reaches_through_the_connection_and_its_scopes(client, acme):
    entries = by_person(review(client, acme.acme))
    for project in acme.projects:
        legal = entries[(acme.agency_legal, "Project", project)]
        assert legal.path == "legal_representative of partner Agency via connection (read, edit)"
        assert list(legal.actions) == ["edit", "read"]
        assert entries[(acme.agency_owner, "Project", project)].path == \
            "owner of partner Agency via connection (read, edit)"
        assert entries[(acme.studio_owner, "Project", project)].path == "owner of partner Studio via connection (read)"
    # A partner's people reach the client's projects, never the client organization itself.
    assert (acme.agency_legal, "Organization", acme.acme) not in entries


def test_r15_r16_r17_partner_employees_are_listed_per_partner_with_their_approval(client, acme):
    entries = by_person(review(client, acme.acme))
    project = ("Project", acme.projects[0])
    approved = entries[(acme.approved, *project)]
    assert approved.path == "partner employee of Agency, assigned and approved"
    assert list(approved.actions) == ["edit", "read"]
    both = entries[(acme.both, *project)]
    assert paths(both) == {"legal_representative of partner Agency via connection (read, edit)",
                           f"partner employee of Studio, {DELEGATION}"}
    assert list(both.actions) == ["edit", "read"]  # the union of what the two paths grant
    delegated = entries[(acme.delegated, *project)]
    assert delegated.path == f"partner employee of Studio, {DELEGATION}"
    assert list(delegated.actions) == ["read"]


# -- granted_revision, granted_at, granted_by --------------------------------------------------


def test_r7_granted_names_the_resume_that_gave_a_paused_colleague_their_access_back(client, world, acme):
    resumed = world.app.memberships.resume_member(acme.legal, acme.acme, acme.paused)
    entry = by_person(review(client, acme.acme))[(acme.paused, "Project", acme.projects[0])]
    assert entry.path == "colleague of Acme"
    assert entry.granted_revision == str(resumed.membership.revision)
    assert entry.granted_by == acme.legal
    event = event_at(client, entry.granted_revision)
    assert event.type == EventType.MEMBER_RESUMED and entry.granted_at == event.occurred_at


def test_r12_granted_names_the_client_who_widened_the_scopes(client, world, acme):
    before = by_person(review(client, acme.acme))[(acme.agency_legal, "Project", acme.projects[0])]
    assert before.granted_by == acme.owner  # the client's owner accepted the connection
    widened = world.app.partners.update_granted_scopes(acme.legal, acme.agency, acme.acme, ["read", "edit", "publish"])
    after = by_person(review(client, acme.acme))[(acme.agency_legal, "Project", acme.projects[0])]
    assert after.path == "legal_representative of partner Agency via connection (read, edit, publish)"
    assert after.granted_revision == str(widened.revision) and after.granted_by == acme.legal
    assert int(after.granted_revision) > int(before.granted_revision)
    assert after.granted_at == event_at(client, after.granted_revision).occurred_at


def test_r16_granted_is_the_newest_change_among_the_paths_of_the_entry(client, world, acme):
    entries = by_person(review(client, acme.acme))
    entry = entries[(acme.both, "Project", acme.projects[0])]
    # The newest row behind the two paths is Studio's assignment, made by Studio's owner.
    assert entry.granted_by == acme.studio_owner
    assert event_at(client, entry.granted_revision).type == EventType.PARTNER_EMPLOYEE_ASSIGNED
    # The owner's own membership dates from the organization's creation, by the owner.
    owner = entries[(acme.owner, "Project", acme.projects[0])]
    assert owner.granted_by == acme.owner
    assert event_at(client, owner.granted_revision).type == EventType.ORGANIZATION_CREATED


# -- paging and refusals ---------------------------------------------------------------------------


def test_the_review_pages_in_user_then_resource_order(client, acme):
    whole = [(e.user_id, e.resource.type, e.resource.id) for e in review(client, acme.acme)]
    assert whole == sorted(whole) and len(whole) > 10
    for size in (1, 2, 7):
        paged = [(e.user_id, e.resource.type, e.resource.id) for e in review(client, acme.acme, page_size=size)]
        assert paged == whole, size
    first = client.authorization.AccessReview(authorization_pb2.AccessReviewRequest(organization_id=acme.acme,
                                                                                   page_size=3))
    assert len(first.entries) == 3 and first.next_page_token
    assert first.revision == str(client.check(acme.owner, "view", f"Organization:{acme.acme}").revision)
    assert first.policy_version
    last = client.authorization.AccessReview(authorization_pb2.AccessReviewRequest(organization_id=acme.acme))
    assert len(last.entries) == len(whole) and last.next_page_token == ""


@pytest.mark.parametrize("engine", ["sqlite"])
@pytest.mark.parametrize(("fields", "code", "reason", "field"), [
    ({"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "page_size"),
    ({"page_size": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "page_size"),
    ({"organization_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "organization_id"),
    ({"organization_id": "has space"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "organization_id"),
    ({"organization_id": "org_nope"}, grpc.StatusCode.NOT_FOUND, "ORGANIZATION_NOT_FOUND", None),
    ({"page_token": "not a token"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "page_token"),
    ({"page_token": encode_page_token("one-part")}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
     "page_token"),
    ({"at_revision": "x1"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "at_revision"),
    ({"at_revision": "1", "as_of": "2026-01-01T00:00:00Z"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
     "as_of"),
    ({"at_revision": "999999"}, grpc.StatusCode.FAILED_PRECONDITION, "REVISION_UNAVAILABLE", None),
    ({"as_of": "2000-01-01T00:00:00Z"}, grpc.StatusCode.FAILED_PRECONDITION, "REVISION_UNAVAILABLE", None),
    ({"as_of": "yesterday"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "as_of"),
])
def test_bad_requests_are_refused_with_their_field_or_reason(client, world, fields, code, reason, field):
    organization = world.organization(name="Acme")
    request = authorization_pb2.AccessReviewRequest(**{"organization_id": organization, **fields})
    with pytest.raises(grpc.RpcError) as refused:
        client.authorization.AccessReview(request)
    assert refused.value.code() == code, refused.value.details()
    assert reason_of(refused.value) == reason
    if field:
        assert error_info(refused.value).metadata["field"] == field


READER = "reviewer-token-not-secret"


@contextmanager
def read_only_server(app, tmp_path):
    callers_file = tmp_path / "callers.toml"
    callers_file.write_text(f'[callers.audit]\ntoken_sha256 = "{hashlib.sha256(READER.encode()).hexdigest()}"\n'
                            "read_only = true\n")
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN],
                    callers_file=callers_file)
    server, port = build_server(app, config)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_read_only_caller_may_review_but_sees_no_emails(world, acme, tmp_path):
    with read_only_server(world.app, tmp_path) as address:
        with MandateClient(address, READER, retries=0) as reader, MandateClient(address, TOKEN) as writer:
            hidden, shown = review(reader, acme.acme), review(writer, acme.acme)
    assert shown and all("@" in e.email for e in shown)
    assert all(e.email == "" for e in hidden)
    assert [(e.user_id, e.resource.id, e.path, list(e.actions)) for e in hidden] == \
        [(e.user_id, e.resource.id, e.path, list(e.actions)) for e in shown]


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite"])
def test_the_access_review_command_prints_the_review_as_md_csv_and_json(server_address, client, acme, tmp_path):
    entries = review(client, acme.acme)
    as_json = mandate("access-review", acme.acme, "--format", "json", "--server", server_address, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["organization_id"] == acme.acme and document["policy_version"]
    assert [(row["user_id"], row["resource"], row["path"], row["actions"]) for row in document["entries"]] == \
        [(e.user_id, f"{e.resource.type}:{e.resource.id}", e.path, list(e.actions)) for e in entries]

    as_csv = mandate("access-review", acme.acme, "--format", "csv", "--server", server_address, cwd=tmp_path)
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(row["user_id"], row["resource"], row["path"], row["actions"], row["granted_by"]) for row in rows] == \
        [(e.user_id, f"{e.resource.type}:{e.resource.id}", e.path, " ".join(e.actions), e.granted_by)
         for e in entries]

    as_md = mandate("access-review", acme.acme, "--server", server_address, cwd=tmp_path)  # md is the default
    assert as_md.returncode == 0, as_md.stderr
    lines = as_md.stdout.splitlines()
    assert lines[0] == f"# Access review of organization {acme.acme}"
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| user_id | email | resource | actions | path |")
    assert len(table) == 1 + len(entries)
    assert any(f"| Project:{acme.projects[0]} | edit read | legal_representative of partner Agency via connection "
               "(read, edit) |" in line for line in table)


@pytest.mark.parametrize("engine", ["sqlite"])
def test_the_access_review_command_passes_as_of_and_reports_refusals(server_address, world, tmp_path):
    organization = world.organization(name="Acme")
    result = mandate("access-review", organization, "--as-of", "2000-01-01T00:00:00Z", "--server", server_address,
                     cwd=tmp_path)
    assert result.returncode == 2 and "REVISION_UNAVAILABLE" in result.stderr
    result = mandate("access-review", "org_nope", "--server", server_address, cwd=tmp_path)
    assert result.returncode == 2 and "ORGANIZATION_NOT_FOUND" in result.stderr


def test_the_client_reads_every_page_at_the_revision_of_the_first(client, world, acme):
    """mandate.client.access_review: a change between two pages does not mix two moments."""
    whole = review(client, acme.acme)
    pages = []
    original = client.authorization.AccessReview

    def then_change(request, **kwargs):  # a colleague joins while the review is being read
        reply = original(request, **kwargs)
        if not pages:
            world.member(acme.acme, "colleague")
        pages.append(reply.revision)
        return reply

    client.authorization.AccessReview = then_change
    try:
        read = client.access_review(acme.acme, page_size=2)
    finally:
        client.authorization.AccessReview = original
    assert [e.SerializeToString() for e in read.entries] == [e.SerializeToString() for e in whole]
    assert len(set(pages)) == 1 and read.revision == pages[0] and len(pages) > 1
