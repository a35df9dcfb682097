"""Data in and out (issue 21): the world format, AdminService Import, Export and ErasePerson,
through gRPC against the real store, on both engines."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.app import App
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.store import models
from mandate.v1 import admin_pb2, common_pb2, directory_pb2, membership_pb2
from sqlalchemy import func, inspect, select, text

from tests.conftest import PG_TEMPLATE, POLICY_DIR, ROOT, TOKEN
from tests.support import FOLDERS_POLAR, reason_of

ADMIN = "admin-token-not-secret"
OTHER = "other-token-not-secret"
_second = itertools.count(1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CALLERS = f"""
[callers.operator]
token_sha256 = "{digest(ADMIN)}"
admin = true

[callers.billing]
token_sha256 = "{digest(OTHER)}"
"""


@contextmanager
def serving(app: App, callers_file: Path):
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN],
                    callers_file=callers_file)
    server, port = build_server(app, config)
    server.start()
    try:
        with MandateClient(f"127.0.0.1:{port}", ADMIN) as client:
            yield client, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def callers_file(tmp_path) -> Path:
    path = tmp_path / "callers.toml"
    path.write_text(CALLERS)
    return path


@pytest.fixture
def admin(app, callers_file):
    with serving(app, callers_file) as (client, _):
        yield client


@pytest.fixture
def other_app(engine, request, tmp_path):
    """A second, empty (migrated) database on the same engine, with its application."""
    if engine == "sqlite":
        path = tmp_path / "other.db"
        shutil.copy(request.getfixturevalue("template_db"), path)
        url, drop = f"sqlite:///{path}", None
    else:
        server = request.getfixturevalue("postgres")
        name = f"data_other_{next(_second)}"
        url, drop = server.create_database(name, template=PG_TEMPLATE), (server, name)
    application = App(url, POLICY_DIR)
    yield application
    application.close()
    if drop:
        drop[0].drop_database(drop[1])


@pytest.fixture
def platform_policy(tmp_path) -> Path:
    """The shipped policy with the platform example's types (Page, Post, Invoice) and folders (a
    type with both relations)."""
    policy_dir = tmp_path / "platform-policies"
    policy_dir.mkdir()
    for path in [*POLICY_DIR.glob("*.polar"), ROOT / "examples" / "platform" / "platform.polar"]:
        shutil.copy(path, policy_dir)
    (policy_dir / "folders.polar").write_text(FOLDERS_POLAR)
    return policy_dir


def on_policy(app: App, policy_dir: Path) -> None:
    """The application serves the policy of that directory from now on (a reload)."""
    app.policy_dir = policy_dir
    app.reload_policy()


def records_request(records: list[dict], on_conflict: str = "") -> list[admin_pb2.ImportRequest]:
    lines = [admin_pb2.WorldRecord(json=json.dumps(r), line=number) for number, r in enumerate(records, 1)]
    return [admin_pb2.ImportRequest(on_conflict=on_conflict, records=lines[:2]),
            admin_pb2.ImportRequest(records=lines[2:])]


def do_import(client, records: list[dict], on_conflict: str = ""):
    return client.admin.Import(iter(records_request(records, on_conflict)))


def do_export(client, **when) -> tuple[str, list[str]]:
    chunks = list(client.admin.Export(admin_pb2.ExportRequest(**when)))
    return chunks[0].revision, [line for chunk in chunks for line in chunk.records]


def rich_world(world, app) -> dict:
    """A world with every kind of fact, made through the domain services."""
    agency = world.organization(seat_limit=10, name="Agency")
    shop = world.organization(name="Shop")
    shop_usd = world.organization(world.owner_of(shop), currency="USD", name="Shop USD")
    bakery = world.organization(name="Bakery")
    lena = world.member(agency, "legal_representative")
    emma = world.member(agency, "colleague", partner_employee=True)
    eric = world.member(agency, "colleague", partner_employee=True)
    carl = world.member(agency, "colleague")
    gone = world.member(agency, "colleague")
    owner = world.owner_of(agency)
    app.memberships.pause_member(owner, agency, carl)
    app.memberships.set_member_role(owner, agency, lena, "legal_representative", "2099-01-01T00:00:00.000000Z")
    app.memberships.remove_member(owner, agency, gone)
    world.connect(agency, shop, scopes=("read", "edit", "publish"), granted=("read", "edit"))
    world.connect(agency, bakery, scopes=("read",), employee_approval="partner")
    app.partners.request_disconnect(owner, agency, bakery)
    world.assign(agency, shop, emma)
    world.assign(agency, shop, eric, approve=False)
    app.partners.assign_client(owner, agency, bakery, emma)
    app.partners.unassign_client(owner, agency, bakery, emma)
    app.directory.link_organizations(world.owner_of(shop), shop, shop_usd)
    site = world.project(shop, "shop-site")
    old = world.project(agency, "old-site")
    app.directory.delete_resource(owner, "Project", old)
    app.memberships.invite_member(owner, agency, "pending-person@example.com", "colleague",
                                  "2099-06-01T00:00:00.000000Z")
    app.partners.invite_client(owner, agency, "client-to-be@example.com", "Client To Be", "C-7", "EUR", ["read"])
    app.partners.create_invite_link(owner, agency, "Link Customer", "C-8", "EUR", ["read", "edit"])
    shop_owner = world.owner_of(shop)
    viewer = world.member(shop, "client")
    app.directory.grant_resource_role(shop_owner, "Project", site, viewer, "viewer", "2099-02-01T00:00:00.000000Z")
    app.directory.grant_resource_role(shop_owner, "Project", site, viewer, "editor")
    app.directory.revoke_resource_role(shop_owner, "Project", site, viewer, "editor")  # revoked: no fact
    return {"agency": agency, "shop": shop, "shop_usd": shop_usd, "bakery": bakery, "emma": emma, "eric": eric,
            "carl": carl, "lena": lena, "gone": gone, "site": site, "owner": owner,
            "viewer": viewer}


def decisions(app: App) -> dict:
    """Every decision about every user on every organization and project."""
    policy = app.authorizer.policy
    with app.store.read() as session:
        users = session.execute(select(models.User.id)).scalars().all()
        orgs = session.execute(select(models.Organization.id)).scalars().all()
        projects = session.execute(select(models.Resource.id)).scalars().all()
    targets = [("Organization", o) for o in orgs] + [("Project", p) for p in projects]
    return {(u, a, t, i): app.authorizer.check("User", u, a, t, i)
            for u in users for t, i in targets for a in policy.permissions[t]}


def test_round_trip_of_a_world_with_every_kind_of_fact_is_exact(app, world, admin, other_app, callers_file,
                                                                platform_policy):
    """issue 21 items 1 and 3: an export imported into an empty database gives the same
    decisions and the same export (every kind of fact: users, organizations, members with role,
    status, tag and end, pending invitations and links as hashes, connections, assignments,
    linked accounts, resources; issue 20: a nested resource and a role on one resource)."""
    facts = rich_world(world, app)
    on_policy(app, platform_policy)
    on_policy(other_app, platform_policy)
    # A resource nested two levels deep, and a role on the nested one; a parent may come after its child.
    do_import(admin, [{"kind": "resource", "type": "Post", "id": "hello", "parent": "Page:home"},
                      {"kind": "resource", "type": "Page", "id": "home", "organization": facts["shop"]},
                      {"kind": "resource_role", "resource": "Post:hello", "user": facts["carl"], "role": "editor"}])
    revision, exported = do_export(admin)
    kinds = {json.loads(line)["kind"] for line in exported}
    assert kinds == {"user", "organization", "member", "member_invitation", "client_invitation", "connection",
                     "assignment", "link", "resource", "resource_role"}
    records = [json.loads(line) for line in exported]
    assert {"kind": "resource", "type": "Post", "id": "hello", "parent": "Page:home", "deleted": False} in records
    assert {"kind": "resource_role", "resource": f"Project:{facts['site']}", "user": facts["viewer"],
            "role": "viewer", "access_expires_at": "2099-02-01T00:00:00.000000Z"} in records
    assert [r["role"] for r in records if r["kind"] == "resource_role"] == ["editor", "viewer"]
    assert not any('"token"' in line for line in exported)
    with serving(other_app, callers_file) as (other, _):
        summary = do_import(other, [json.loads(line) for line in exported])
        assert summary.records == len(exported)
        _, again = do_export(other)
        other_app.index.catch_up()
        app.index.catch_up()
        assert again == exported
        assert decisions(other_app) == decisions(app)
        # One revision, one event with the counts; the history holds every fact at that revision.
        with other_app.store.read() as session:
            imported = session.execute(
                select(models.Event).where(models.Event.type == EventType.WORLD_IMPORTED)).scalar_one()
            assert str(imported.revision) == summary.revision
            assert imported.attributes["records"] == str(len(exported))
            users = session.execute(select(models.User.id)).scalars().all()
            kept = session.execute(select(models.HISTORY[models.User].c.id).where(
                models.HISTORY[models.User].c.revision == int(summary.revision))).scalars().all()
            assert sorted(kept) == sorted(users)
            roles = models.HISTORY[models.ResourceRole]
            assert session.execute(select(func.count()).select_from(roles).where(
                roles.c.revision == int(summary.revision))).scalar_one() == 2
            nested = session.execute(select(models.Resource).where(models.Resource.id == "hello")).scalar_one()
            assert (nested.parent_type, nested.parent_id, nested.organization_id) == ("Page", "home", facts["shop"])
        _, past = do_export(other, at_revision=summary.revision)
        assert past == [line for line in exported if '_invitation"' not in line]


def test_an_import_failing_halfway_leaves_nothing(app, world, admin):
    """issue 21 item 2: all or nothing. The seat limit (R5) is checked once every record is
    written; the refusal names the organization's line, and nothing of the import remains."""
    world.organization()
    before_revision, before = do_export(admin)
    records = [{"kind": "user", "id": f"u{n}", "email": f"u{n}@example.com", "display_name": f"U {n}"}
               for n in range(4)]
    records += [{"kind": "organization", "id": "small", "owner": "u0", "currency": "EUR", "seat_limit": 2}]
    records += [{"kind": "member", "organization": "small", "user": f"u{n}"} for n in (1, 2, 3)]
    with pytest.raises(grpc.RpcError) as refused:
        do_import(admin, records)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(refused.value) == "SEAT_LIMIT_REACHED"
    assert "line 5" in refused.value.details() and "R5" in refused.value.details()
    assert do_export(admin) == (before_revision, before)
    with app.store.read() as session:
        assert session.get(models.User, "u1") is None
        assert not session.execute(select(models.Event).where(models.Event.type == EventType.WORLD_IMPORTED)).first()


@pytest.mark.parametrize(("records", "reason", "line"), [
    ([{"kind": "user", "id": "a"}, {"kind": "member", "organization": "nowhere", "user": "a"}],
     "ORGANIZATION_NOT_FOUND", 2),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "member", "organization": "o", "user": "a", "role": "boss"}], "INVALID_ARGUMENT", 3),
    ([{"kind": "user", "id": "a"}, {"kind": "user", "id": "b"}, {"kind": "organization", "id": "p", "owner": "a"},
      {"kind": "organization", "id": "c", "owner": "b"},
      {"kind": "connection", "partner": "p", "client": "c", "currency": "USD"}], "CURRENCY_MISMATCH", 5),
    ([{"kind": "user", "id": "a"}, {"kind": "user", "id": "b"}, {"kind": "organization", "id": "p", "owner": "a"},
      {"kind": "organization", "id": "c", "owner": "b"},
      {"kind": "connection", "partner": "p", "client": "c", "granted": ["read", "fly"]}], "UNKNOWN_SCOPE", 5),
    ([{"kind": "user", "id": "a"}, {"kind": "user", "id": "e"}, {"kind": "organization", "id": "p", "owner": "a"},
      {"kind": "organization", "id": "q", "owner": "a"}, {"kind": "organization", "id": "c", "owner": "a"},
      {"kind": "member", "organization": "p", "user": "e", "partner_employee": True},
      {"kind": "member", "organization": "q", "user": "e", "partner_employee": True},
      {"kind": "connection", "partner": "p", "client": "c"}, {"kind": "connection", "partner": "q", "client": "c"},
      {"kind": "assignment", "partner": "p", "client": "c", "user": "e"},
      {"kind": "assignment", "partner": "q", "client": "c", "user": "e"}], "PARTNER_RECORD_CONFLICT", 10),
    ([{"kind": "user", "id": "a"}, {"kind": "user", "id": "e"}, {"kind": "organization", "id": "p", "owner": "a"},
      {"kind": "organization", "id": "c", "owner": "a"}, {"kind": "member", "organization": "p", "user": "e"},
      {"kind": "connection", "partner": "p", "client": "c"},
      {"kind": "assignment", "partner": "p", "client": "c", "user": "e"}], "NOT_PARTNER_EMPLOYEE", 7),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "member", "organization": "o", "user": "a", "role": "colleague"}], "LAST_OWNER", 3),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "client_invitation", "id": "i", "partner": "o", "invited_by": "a", "token": "usable",
       "expires_at": "2099-01-01T00:00:00Z"}], "INVALID_ARGUMENT", 3),
    # issue 20: a nested resource's parent exists and makes no cycle; a role is on a resource that exists.
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Post", "id": "p", "parent": "Page:nowhere"}], "PARENT_NOT_FOUND", 3),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Folder", "id": "x", "parent": "Folder:y"},
      {"kind": "resource", "type": "Folder", "id": "y", "parent": "Folder:x"}], "PARENT_CYCLE", 4),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Page", "id": "p", "organization": "o", "parent": "Page:q"}],
     "INVALID_ARGUMENT", 3),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource_role", "resource": "Post:nowhere", "user": "a", "role": "editor"}], "RESOURCE_NOT_FOUND", 3),
    # issue 20: types and roles are the policy's (here the shipped one, the platform example and folders).
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Invoice", "id": "i", "organization": "o"},
      {"kind": "resource", "type": "Ledger", "id": "l", "organization": "o"}], "UNKNOWN_RESOURCE_TYPE", 4),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Post", "id": "p", "parent": "Ledger:l"}], "UNKNOWN_RESOURCE_TYPE", 3),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Page", "id": "p", "organization": "o"},
      {"kind": "resource_role", "resource": "Ledger:l", "user": "a", "role": "editor"}], "UNKNOWN_RESOURCE_TYPE", 4),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Page", "id": "p", "organization": "o"},
      {"kind": "resource_role", "resource": "Page:p", "user": "a", "role": "editor"}], "UNKNOWN_ROLE", 4),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Project", "id": "s", "organization": "o"},
      {"kind": "resource_role", "resource": "Project:s", "user": "a", "role": "owner"}], "UNKNOWN_ROLE", 4),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Post", "id": "p", "organization": "o"}], "INVALID_ARGUMENT", 3),
    ([{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
      {"kind": "resource", "type": "Page", "id": "p", "organization": "o"},
      {"kind": "resource", "type": "Invoice", "id": "i", "parent": "Page:p"}], "INVALID_ARGUMENT", 4),
])
def test_an_import_is_checked_by_the_rules_of_the_rpcs(app, admin, platform_policy, records, reason, line):
    """issue 21 item 2: references, roles, R13 currency, scopes, R19 one partner record per
    person and client, R15 tagged employees, R6 an active owner, no usable link token; issue 20:
    resource types, parents and roles the policy declares. Each refusal names the record's line,
    and nothing is written."""
    on_policy(app, platform_policy)
    revision = app.store.current_revision()
    with pytest.raises(grpc.RpcError) as refused:
        do_import(admin, records)
    assert reason_of(refused.value) == reason, refused.value.details()
    assert f"line {line}:" in refused.value.details()
    assert app.store.current_revision() == revision


@pytest.mark.parametrize(("record", "field", "reason"), [
    ({"kind": "resource", "type": "Ledger", "id": "l", "organization": "o"}, "type", "UNKNOWN_RESOURCE_TYPE"),
    ({"kind": "resource_role", "resource": "Ledger:l", "user": "a", "role": "viewer"}, "resource",
     "UNKNOWN_RESOURCE_TYPE"),
    ({"kind": "resource_role", "resource": "Project:s", "user": "a", "role": "admin"}, "role", "UNKNOWN_ROLE"),
])
def test_r2_r23_an_import_names_the_record_and_field_of_an_undeclared_type_or_role(app, admin, record, field, reason):
    """issue 20: an import (Import RPC, `mandate import`) refuses a resource type the loaded policy
    does not declare, and a role its type does not declare, naming the record and the field;
    nothing changes. A test world (mandate.runtime.world) is refused the same way."""
    from mandate.admin.worldfile import Record
    from mandate.runtime.world import WorldError, load_world

    records = [{"kind": "user", "id": "a"}, {"kind": "organization", "id": "o", "owner": "a"},
               {"kind": "resource", "type": "Project", "id": "s", "organization": "o"}, record]
    revision, exported = do_export(admin)
    with pytest.raises(grpc.RpcError) as refused:
        do_import(admin, records)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(refused.value) == reason
    assert f"{reason}: line 4: {record['kind']} " in refused.value.details()
    assert f": {field}: " in refused.value.details()
    assert do_export(admin) == (revision, exported)
    with pytest.raises(WorldError) as world_refused:
        load_world(app.store, [Record(number, r["kind"], {k: v for k, v in r.items() if k != "kind"})
                               for number, r in enumerate(records, 1)], app.authorizer.policy)
    assert f"line 4: {record['kind']} " in str(world_refused.value) and f": {field}: " in str(world_refused.value)
    assert do_export(admin) == (revision, exported)


def test_conflicts_fail_skip_and_touch(app, world, admin):
    """issue 21 item 2: an existing record is IMPORT_CONFLICT (fail), kept (skip) or replaced
    (touch); the replaced version stays in the history."""
    first = do_import(admin, [{"kind": "user", "id": "ann", "email": "ann@example.com", "display_name": "Ann"}])
    again = [{"kind": "user", "id": "bob", "email": "bob@example.com", "display_name": "Bob"},
             {"kind": "user", "id": "ann", "email": "ann@example.com", "display_name": "Ann Renamed"}]
    with pytest.raises(grpc.RpcError) as refused:
        do_import(admin, again)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(refused.value) == "IMPORT_CONFLICT"
    assert "line 2: user ann" in refused.value.details()
    skipped = do_import(admin, again, "skip")
    assert (skipped.records, skipped.skipped) == (1, 1)
    with app.store.read() as session:
        assert session.get(models.User, "ann").display_name == "Ann"
        assert session.get(models.User, "bob") is not None
    touched = do_import(admin, [again[1]], "touch")
    assert touched.records == 1
    with app.store.read() as session:
        assert session.get(models.User, "ann").display_name == "Ann Renamed"
    _, past = do_export(admin, at_revision=first.revision)
    assert [json.loads(line)["display_name"] for line in past if '"ann"' in line] == ["Ann"]


def test_export_at_a_past_revision_and_time(app, world, admin):
    """issue 21 item 3: an export at a revision (or at a time) gives the facts then, read from
    the history."""
    facts = rich_world(world, app)
    revision, then = do_export(admin)
    app.memberships.remove_member(facts["owner"], facts["agency"], facts["emma"])
    world.organization(name="Later")
    _, now = do_export(admin)
    assert now != then
    _, past = do_export(admin, at_revision=revision)
    assert past == [line for line in then if '_invitation"' not in line]
    with app.store.read() as session:
        moment = session.execute(select(models.Event.occurred_at).where(
            models.Event.revision == int(revision))).scalars().first()
    _, as_of = do_export(admin, as_of=moment)
    assert as_of == past
    with pytest.raises(grpc.RpcError) as refused:
        do_export(admin, at_revision=str(int(revision) + 1000))
    assert reason_of(refused.value) == "REVISION_UNAVAILABLE"


def text_columns_holding(app: App, needles: list[str]) -> list[str]:
    """Every (table, column) of every table whose text (or bytes) holds one of the needles."""
    found = []
    with app.store.read() as session:
        for name in inspect(session.bind).get_table_names():
            table = models.Base.metadata.tables.get(name)
            columns = [c.name for c in table.columns] if table is not None else \
                [c["name"] for c in inspect(session.bind).get_columns(name)]
            for row in session.execute(text(f'SELECT * FROM "{name}"')).mappings():
                for column in columns:
                    value = row[column]
                    blob = value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False) \
                        if not isinstance(value, str) else value
                    blob = blob if isinstance(blob, bytes) else blob.encode()
                    if any(n.encode() in blob or json.dumps(n)[1:-1].encode() in blob for n in needles):
                        found.append(f"{name}.{column}")
    return found


def test_erasure_leaves_no_email_or_name_in_any_table(app, world, admin, engine):
    """issue 21 item 5: the person's email and display name leave every table (live facts,
    history, invitations, events, request records); their memberships end as a removal ends
    them (R6, R18: the assignment is withdrawn); their id stays; the erasure is an event naming
    nobody. On SQLite the bytes also leave the database file and its write-ahead log."""
    facts = rich_world(world, app)
    email, name = "zelda.erasable@example.com", "Zelda Quixotic"
    owner = facts["owner"]
    app.memberships.invite_member(world.owner_of(facts["shop"]), facts["shop"], email, "colleague")  # pending
    zelda = admin.directory.RegisterUser(directory_pb2.RegisterUserRequest(
        email=email, display_name=name, request_id="sign-up-zelda")).id
    app.memberships.invite_member(owner, facts["agency"], email, "colleague")
    app.memberships.tag_partner_employee(owner, facts["agency"], zelda, True)
    world.assign(facts["agency"], facts["shop"], zelda)
    app.partners.invite_client(owner, facts["agency"], email, "Zelda's shop", "", "EUR", ["read"])
    with pytest.raises(grpc.RpcError) as refused:  # the request record of a refusal names the email
        admin.membership.InviteMember(membership_pb2.InviteMemberRequest(
            actor_id=owner, organization_id=facts["agency"], email=email, role="colleague", request_id="again"))
    assert reason_of(refused.value) == "ALREADY_MEMBER"
    assert world.allowed(zelda, "read", "Project", facts["site"])
    assert text_columns_holding(app, [email, name])

    reply = admin.admin.ErasePerson(admin_pb2.ErasePersonRequest(user_id=zelda, request_id="erase-zelda"))
    assert text_columns_holding(app, [email, name]) == []
    app.index.catch_up()
    assert not world.allowed(zelda, "read", "Project", facts["site"])
    with app.store.read() as session:
        assert session.get(models.User, zelda) is not None  # the id stays
        statuses = session.execute(select(models.Membership.status).where(
            models.Membership.user_id == zelda)).scalars().all()
        assert set(statuses) == {"removed"}
        assigned = session.execute(select(models.Assignment.assigned).where(
            models.Assignment.user_id == zelda)).scalars().all()
        assert assigned == [False]
        erased = session.execute(select(models.Event).where(models.Event.type == EventType.PERSON_ERASED)).scalar_one()
        assert str(erased.revision) == reply.revision and erased.attributes == {"user_id": zelda}
    if engine == "sqlite":
        path = Path(app.store.url.split("///", 1)[1])
        for part in (path, path.with_name(path.name + "-wal")):
            if part.exists():
                data = part.read_bytes()
                assert email.encode() not in data and name.encode() not in data, part.name


def test_erasing_the_last_active_owner_is_refused_naming_the_organization(app, world, admin):
    """issue 21 item 5, R6: the last active owner of an organization cannot be erased; the
    refusal names the organization, and nothing changes."""
    organization = world.organization()
    owner = world.owner_of(organization)
    revision = app.store.current_revision()
    with pytest.raises(grpc.RpcError) as refused:
        admin.admin.ErasePerson(admin_pb2.ErasePersonRequest(user_id=owner))
    assert reason_of(refused.value) == "LAST_OWNER"
    assert organization in refused.value.details()
    assert app.store.current_revision() == revision


def test_only_admin_callers_may_call_the_admin_service(app, world, callers_file):
    """issue 21 item 6: a caller without `admin = true` (a named caller, or an env token) gets
    PERMISSION_DENIED, ADMIN_ONLY, on every AdminService RPC, and nothing changes."""
    user = world.user()
    with serving(app, callers_file) as (_, address):
        for token in (OTHER, TOKEN):
            with MandateClient(address, token) as client:
                calls = [lambda c=client: do_import(c, [{"kind": "user", "id": "x"}]),
                         lambda c=client: do_export(c),
                         lambda c=client: c.admin.ErasePerson(admin_pb2.ErasePersonRequest(user_id=user))]
                for call in calls:
                    with pytest.raises(grpc.RpcError) as refused:
                        call()
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert reason_of(refused.value) == "ADMIN_ONLY"
    with app.store.read() as session:
        assert session.get(models.User, "x") is None
        assert session.get(models.User, user).email.endswith("@example.com")



def test_the_commands_import_export_and_erase(app, world, callers_file, other_app, tmp_path, monkeypatch, capsys):
    """issue 21 items 1 to 5 from the shell: `mandate import` (JSON Lines, with its rate),
    `mandate export` as YAML that imports into an empty store to the same export,
    `--on-conflict`, and `mandate erase-person`."""
    from mandate.cli import main

    def mandate(*args: str, token: str, **_) -> subprocess.CompletedProcess:
        """The command in process (a subprocess per command costs seconds here)."""
        monkeypatch.setenv("MANDATE_TOKEN", token)
        monkeypatch.setenv("MANDATE_LOG_LEVEL", "WARNING")
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    facts = rich_world(world, app)
    source = tmp_path / "more.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [
        {"kind": "user", "id": "imp-ann", "email": "imp-ann@example.com", "display_name": "Imported Ann"},
        {"kind": "organization", "id": "imp-org", "owner": "imp-ann", "currency": "EUR", "seat_limit": 3},
        {"kind": "resource", "type": "Project", "id": "imp-site", "organization": "imp-org"}]) + "\n")
    with serving(app, callers_file) as (_, address), serving(other_app, callers_file) as (_, other_address):
        done = mandate("import", str(source), "--server", address, cwd=tmp_path, token=ADMIN)
        assert done.returncode == 0, done.stderr
        assert "imported 3 records at revision" in done.stderr and "records/s" in done.stderr
        again = mandate("import", str(source), "--server", address, cwd=tmp_path, token=ADMIN)
        assert again.returncode == 1 and "IMPORT_CONFLICT" in again.stderr and "line 1" in again.stderr
        skipped = mandate("import", str(source), "--on-conflict", "skip", "--server", address, cwd=tmp_path,
                          token=ADMIN)
        assert skipped.returncode == 0 and "3 existed already" in skipped.stderr, skipped.stderr
        exported = mandate("export", "-o", str(tmp_path / "world.yaml"), "--server", address, cwd=tmp_path,
                           token=ADMIN)
        assert exported.returncode == 0, exported.stderr
        jsonl = mandate("export", "--format", "jsonl", "--server", address, cwd=tmp_path, token=ADMIN).stdout
        restored = mandate("import", str(tmp_path / "world.yaml"), "--server", other_address, cwd=tmp_path,
                           token=ADMIN)
        assert restored.returncode == 0, restored.stderr
        assert mandate("export", "--format", "jsonl", "--server", other_address, cwd=tmp_path,
                       token=ADMIN).stdout == jsonl
        refused = mandate("erase-person", facts["owner"], "--server", address, cwd=tmp_path, token=ADMIN)
        assert refused.returncode == 1 and "LAST_OWNER" in refused.stderr and facts["agency"] in refused.stderr
        erased = mandate("erase-person", facts["emma"], "--server", address, cwd=tmp_path, token=ADMIN)
        assert erased.returncode == 0 and erased.stdout.startswith(f"erased {facts['emma']} at revision")
        denied = mandate("export", "--server", address, cwd=tmp_path, token=OTHER)
        assert denied.returncode == 1 and "ADMIN_ONLY" in denied.stderr


def test_the_callers_file_admin_key(tmp_path):
    """issue 21 item 6: `admin = true` marks the callers that may call AdminService; anything
    but a boolean is refused, and an admin caller is never limited to some organizations."""
    from mandate.runtime.callers import CallersError, read_callers_file

    path = tmp_path / "callers.toml"
    path.write_text(CALLERS)
    assert {c.name: c.admin for c in read_callers_file(path)} == {"operator": True, "billing": False}
    for wrong, problem in (('admin = "yes"', "admin must be true or false"),
                           ('admin = true\norganizations = ["org_1"]', "do not go together")):
        path.write_text(f'[callers.x]\ntoken_sha256 = "{digest(ADMIN)}"\n{wrong}\n')
        with pytest.raises(CallersError, match=problem):
            read_callers_file(path)


def test_a_replica_serves_an_import_as_any_write(app, admin):
    """issue 21 item 2: replicas catch up on an import as on any write (another application on
    the same database, following it as `mandate serve` does)."""
    from tests.support import wait_until

    replica = App(app.store.url, POLICY_DIR)
    replica.start_polling()
    try:
        summary = do_import(admin, [
            {"kind": "user", "id": "rep-ann"}, {"kind": "user", "id": "rep-bob"},
            {"kind": "organization", "id": "rep-org", "owner": "rep-ann"},
            {"kind": "member", "organization": "rep-org", "user": "rep-bob", "role": "colleague"},
            {"kind": "resource", "type": "Project", "id": "rep-site", "organization": "rep-org"}])
        assert wait_until(lambda: replica.index.revision >= int(summary.revision), 20)
        assert replica.authorizer.check("User", "rep-bob", "edit", "Project", "rep-site")
        assert not replica.authorizer.check("User", "rep-ann", "edit", "Project", "nowhere")
    finally:
        replica.close()


def test_r6_r18_erasure_ends_every_role_the_person_holds_on_one_resource(app, world, admin):
    """issue 20, R6, R18: erasing a person ends their roles on single resources, those that came
    with a membership and those a world file gave without one, each with a cascaded
    `resource.role_revoked` event under the resource's organization; the history keeps them."""
    shop = world.organization(name="Shop")
    owner = world.owner_of(shop)
    site = world.project(shop, "erase-site")
    member = world.member(shop, "client")
    app.directory.grant_resource_role(owner, "Project", site, member, "editor")
    outsider = world.user()  # no membership anywhere: only the role of a world file
    do_import(admin, [{"kind": "resource_role", "resource": f"Project:{site}", "user": outsider, "role": "editor"}])
    app.index.catch_up()
    assert world.allowed(member, "edit", "Project", site)
    listed = admin.directory.ListResourceRoles(directory_pb2.ListResourceRolesRequest(
        actor_id=owner, resource=common_pb2.ObjectRef(type="Project", id=site)))
    assert sorted(r.user_id for r in listed.roles) == sorted([member, outsider])
    before = app.store.current_revision()

    for person in (member, outsider):
        reply = admin.admin.ErasePerson(admin_pb2.ErasePersonRequest(user_id=person))
        app.index.catch_up()
        assert not world.allowed(person, "edit", "Project", site)
        assert not world.allowed(person, "read", "Project", site)
        with app.store.read() as session:
            live = session.execute(select(models.ResourceRole).where(
                models.ResourceRole.user_id == person, models.ResourceRole.granted.is_(True))).scalars().all()
            assert live == []
            revoked = session.execute(select(models.Event).where(
                models.Event.type == "resource.role_revoked", models.Event.revision == int(reply.revision)
            )).scalars().all()
            assert [(e.cause, e.organization_id, e.attributes["user_id"], e.attributes["role"]) for e in revoked] == [
                ("cascade", shop, person, "editor")]
    listed = admin.directory.ListResourceRoles(directory_pb2.ListResourceRolesRequest(
        actor_id=owner, resource=common_pb2.ObjectRef(type="Project", id=site)))
    assert list(listed.roles) == []
    # The history keeps the roles as they were, under the person's id alone.
    assert app.history.authorizer_at(before, None).check("User", member, "edit", "Project", site)
