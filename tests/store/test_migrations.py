"""The Alembic chain: the newest schema is exactly the models, and upgrading a database written
at an older revision keeps its data (and fills what the new revision adds)."""

from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from mandate.runtime.app import App
from mandate.store.db import make_engine
from mandate.store.migrate import alembic_config, upgrade
from mandate.store.models import Base
from sqlalchemy import text

from tests.conftest import POLICY_DIR


def test_the_newest_schema_is_the_models(empty_database_url):
    url = empty_database_url
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


ROWS_AT_0001 = [
    "INSERT INTO users VALUES ('usr_a', 'a@example.com', 'A', '2026-01-01T00:00:00Z', 1)",
    "INSERT INTO users VALUES ('usr_b', 'b@example.com', 'B', '2026-01-01T00:00:00Z', 2)",
    "INSERT INTO organizations VALUES ('org_p', 'Partner', 'EUR', 5, 'usr_a', '2026-01-01T00:00:00Z', 3)",
    "INSERT INTO organizations VALUES ('org_c', 'Client', 'EUR', 5, 'usr_b', '2026-01-01T00:00:00Z', 4)",
    "INSERT INTO memberships VALUES ('org_p', 'usr_a', 'owner', 'active', false, 3)",
    "INSERT INTO memberships VALUES ('org_c', 'usr_b', 'owner', 'active', false, 4)",
    "UPDATE revision_counter SET value = 5",
]
EVENTS_AT_0001 = [  # (revision, type, attributes)
    (1, "user.registered", {"user_id": "usr_a"}),
    (3, "organization.created", {"organization_id": "org_p", "owner_id": "usr_a"}),
    (4, "organization.created", {"organization_id": "org_c", "owner_id": "usr_b"}),
    (5, "client.connected", {"partner_id": "org_p", "client_id": "org_c", "granted_scopes": "read"}),
]


def written_at(url: str, schema: str, statements) -> None:
    """Bring the database to the schema revision `schema`, then run `statements` (SQL text, or
    (SQL, parameters)) in one transaction: the data an older release wrote."""
    command.upgrade(alembic_config(url), schema)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                sql, parameters = statement if isinstance(statement, tuple) else (statement, {})
                connection.execute(text(sql), parameters)
    finally:
        engine.dispose()


def test_r22_upgrading_from_0001_keeps_the_data_and_files_old_events_under_their_organizations(
        empty_database_url):
    url = empty_database_url
    written_at(url, "0001", [*ROWS_AT_0001, *(
        ("INSERT INTO events (revision, type, actor_id, attributes, occurred_at) "
         "VALUES (:revision, :type, 'usr_a', :attributes, '2026-01-01T00:00:00Z')",
         {"revision": revision, "type": kind, "attributes": json.dumps(attributes)})
        for revision, kind, attributes in EVENTS_AT_0001)])

    upgrade(url)

    app = App(url, POLICY_DIR)
    try:
        # The first start records the policy it serves as a change of its own (access history).
        assert app.store.current_revision() == 6
        assert app.authorizer.check("User", "usr_a", "invite_member", "Organization", "org_p")
        everything = app.events.list_events(0, 0, 100)
        assert [(e.revision, e.type, e.attributes) for e in everything][:-1] == EVENTS_AT_0001
        assert (everything[-1].revision, everything[-1].type) == (6, "policy.served")
        assert all(e.caller == "" and e.cause == "" for e in everything)
        assert [e.type for e in app.events.list_events(0, 0, 100, "org_p")] == ["organization.created",
                                                                                 "client.connected"]
        assert [e.type for e in app.events.list_events(0, 0, 100, "org_c")] == ["organization.created",
                                                                                 "client.connected"]
        # The upgraded store takes new writes, and their events are filed too.
        app.memberships.invite_member("usr_a", "org_p", "new@example.com", "colleague")
        assert app.store.current_revision() == 7
        assert [e.type for e in app.events.list_events(5, 0, 100, "org_p")] == ["member.invited"]
    finally:
        app.close()
    # And the revision can be undone and redone.
    command.downgrade(alembic_config(url), "0001")
    upgrade(url)


def test_r5_upgrading_from_0002_keeps_the_data_and_gives_invitations_an_expiry(empty_database_url):
    """0003: pending invitations get 14 days from the upgrade, the others from their creation."""
    url = empty_database_url
    written_at(url, "0002", [*ROWS_AT_0001, *(
        "INSERT INTO invitations (id, kind, organization_id, email, role, status, invited_by, "
        "customer_name, customer_number, currency, requested_scopes, created_at, revision) VALUES "
        f"('{ident}', 'member', 'org_p', '{ident}@example.com', 'colleague', '{status}', 'usr_a', "
        "'', '', '', '[]', '2020-01-01T00:00:00.000000Z', 5)"
        for ident, status in (("inv_p", "pending"), ("inv_f", "finished")))])

    upgrade(url)

    app = App(url, POLICY_DIR)
    try:
        assert app.store.current_revision() == 6  # 5, and the policy recorded at the first start
        assert app.authorizer.check("User", "usr_a", "invite_member", "Organization", "org_p")
        invitations = {i.id: i for i in app.memberships.list_invitations("usr_a", "org_p", "", "", 10, "")}
        assert invitations["inv_f"].expires_at == "2020-01-15T00:00:00.000000Z"
        assert invitations["inv_p"].expires_at > app.lifetimes.now()  # still acceptable
        assert app.expiries.apply_due() is None
        members = app.memberships.list_members("usr_a", "org_p", 10, "")
        assert [(m.membership.user_id, m.membership.access_expires_at) for m in members] == [("usr_a", None)]
    finally:
        app.close()
    command.downgrade(alembic_config(url), "0002")
    upgrade(url)


def test_r2_upgrading_from_0003_keeps_the_data_and_starts_the_history_at_the_upgrade(empty_database_url):
    """0004: the current rows become the first versions; the history answers from the first start on
    (which records the policy it serves)."""
    from mandate.errors import RevisionUnavailable

    url = empty_database_url
    written_at(url, "0002", ROWS_AT_0001)
    written_at(url, "0003", ["INSERT INTO memberships (organization_id, user_id, role, status, partner_employee, "
                             "revision) VALUES ('org_p', 'usr_b', 'colleague', 'active', false, 5)"])

    upgrade(url)

    app = App(url, POLICY_DIR)
    try:
        # The first start records its policy (revision 6): the history answers from there on.
        assert app.store.current_revision() == 6
        assert app.authorizer.check("User", "usr_b", "list_members", "Organization", "org_p")
        app.memberships.remove_member("usr_a", "org_p", "usr_b")
        assert not app.authorizer.check("User", "usr_b", "list_members", "Organization", "org_p")
        at_start = app.history.authorizer_at(6, None)
        assert at_start.check("User", "usr_b", "list_members", "Organization", "org_p")
        assert at_start.check("User", "usr_a", "invite_member", "Organization", "org_p")
        for before in (4, 5):  # before the history (4), and before any policy was recorded (5)
            try:
                app.history.authorizer_at(before, None)
                raise AssertionError(f"revision {before} is not in the history")
            except RevisionUnavailable:
                pass
    finally:
        app.close()
    command.downgrade(alembic_config(url), "0003")
    upgrade(url)


def test_r2_upgrading_from_0004_keeps_resources_top_level_and_adds_roles_on_one_resource(empty_database_url):
    """issue 20: 0005 gives resources a parent (none for every resource written before) and adds the
    roles on one resource, with their history; the data of 0004 is intact and keeps deciding."""
    url = empty_database_url
    written_at(url, "0002", ROWS_AT_0001)
    written_at(url, "0004", [
        "INSERT INTO memberships (organization_id, user_id, role, status, partner_employee, revision) "
        "VALUES ('org_p', 'usr_b', 'client', 'active', false, 5)",
        "INSERT INTO memberships_history (organization_id, user_id, role, status, partner_employee, revision) "
        "VALUES ('org_p', 'usr_b', 'client', 'active', false, 5)",
        "INSERT INTO resources (type, id, organization_id, deleted, revision) VALUES ('Project', 'site', 'org_p', "
        "false, 5)",
        "INSERT INTO resources_history (type, id, organization_id, deleted, revision) VALUES ('Project', 'site', "
        "'org_p', false, 5)"])

    upgrade(url)

    app = App(url, POLICY_DIR)
    try:
        assert app.authorizer.check("User", "usr_a", "delete", "Project", "site")
        assert not app.authorizer.check("User", "usr_b", "edit", "Project", "site")
        assert app.index.chain("Project", "site") == (("Project", "site"),)
        app.directory.grant_resource_role("usr_a", "Project", "site", "usr_b", "editor")
        app.index.catch_up()
        assert app.authorizer.check("User", "usr_b", "edit", "Project", "site")
        revision = app.store.current_revision()
        app.directory.revoke_resource_role("usr_a", "Project", "site", "usr_b", "editor")
        app.index.catch_up()
        assert not app.authorizer.check("User", "usr_b", "edit", "Project", "site")
        assert app.history.authorizer_at(revision, None).check("User", "usr_b", "edit", "Project", "site")
    finally:
        app.close()
    command.downgrade(alembic_config(url), "0004")
    upgrade(url)
