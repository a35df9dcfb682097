"""The `mandate` command as a shell user runs it: check and explain against a running server
(exit 0 allowed, 1 denied, 2 error), and migrate on a fresh database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mandate.app import App

from tests.conftest import POLICY_DIR, TOKEN

ENTRY_POINT = Path(sys.executable).parent / "mandate"


def mandate(*args: str, cwd: Path, token: str = TOKEN, **env: str) -> subprocess.CompletedProcess:
    command = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "mandate.cli"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    environment.update(MANDATE_TOKEN=token, MANDATE_TOKEN_FILE=str(cwd / "no-token-file"),
                       MANDATE_LOG_LEVEL="WARNING", **env)
    return subprocess.run([*command, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def agency(world):
    organization = world.organization()
    colleague = world.member(organization, "colleague")
    project = world.project(organization)
    return organization, colleague, project


def test_check_prints_allowed_and_exits_0(server_address, agency, tmp_path):
    organization, colleague, project = agency
    result = mandate("check", colleague, "edit", f"Project:{project}", "--server", server_address, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "allowed"), result.stderr
    # A bare resource id is a Project; the actor may be written User:ID.
    result = mandate("check", f"User:{colleague}", "read", project, "--server", server_address, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "allowed"), result.stderr
    result = mandate("check", colleague, "view", f"Organization:{organization}", "--server", server_address,
                     cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "allowed"), result.stderr


def test_check_prints_denied_and_exits_1(server_address, agency, tmp_path):
    organization, colleague, project = agency
    result = mandate("check", colleague, "delete", f"Project:{project}", "--server", server_address, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (1, "denied"), result.stderr
    # R24: an unknown resource is a deny, not an error.
    result = mandate("check", colleague, "read", "Project:no-such-project", "--server", server_address,
                     cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (1, "denied"), result.stderr


def test_check_errors_exit_2_with_the_status(server_address, agency, tmp_path):
    _, colleague, project = agency
    result = mandate("check", colleague, "read", f"Project:{project}", "--server", server_address, cwd=tmp_path,
                     token="wrong-token")
    assert result.returncode == 2
    assert "UNAUTHENTICATED" in result.stderr and result.stdout == ""
    result = mandate("check", colleague, "READ", f"Project:{project}", "--server", server_address, cwd=tmp_path)
    assert result.returncode == 2
    assert "INVALID_ARGUMENT" in result.stderr and "action" in result.stderr


def test_explain_prints_the_reasons(server_address, agency, tmp_path):
    _, colleague, project = agency
    result = mandate("explain", colleague, "publish", f"Project:{project}", "--server", server_address,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "allowed"
    reasons = [line for line in lines[1:] if line.startswith("  - ")]
    assert reasons and len(reasons) == len(lines) - 1
    assert any("colleague" in line and "R2" in line for line in reasons)


def test_explain_a_deny_says_what_is_missing(server_address, agency, world, tmp_path):
    organization, colleague, project = agency
    world.app.memberships.pause_member(world.owner_of(organization), organization, colleague)
    result = mandate("explain", colleague, "read", f"Project:{project}", "--server", server_address, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "denied"
    assert any(line.startswith("  - ") and "paused" in line for line in lines[1:])


def test_migrate_creates_a_working_database(tmp_path):
    path = tmp_path / "nested" / "fresh.db"
    url = f"sqlite:///{path}"
    result = mandate("migrate", "--database-url", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"alembic_version", "revision_counter", "users", "organizations", "memberships", "invitations",
                "events"} <= tables
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()
    # Migrating again is a no-op, and the database serves the application.
    assert mandate("migrate", "--database-url", url, cwd=tmp_path).returncode == 0
    app = App(url, POLICY_DIR)
    try:
        user, _ = app.directory.register_user("first@example.com", "First")
        organization = app.directory.create_organization(user.id, "First", "EUR", None)
        assert app.authorizer.check("User", user.id, "invite_member", "Organization", organization.id)
    finally:
        app.close()


def test_migrate_reads_the_database_url_from_the_environment(tmp_path):
    path = tmp_path / "from-env.db"
    result = mandate("migrate", cwd=tmp_path, MANDATE_DATABASE_URL=f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()


@pytest.mark.parametrize("engine", ["sqlite"])  # the command's behaviour; the store is not under test
def test_call_sends_a_mutation_with_a_request_id_of_its_own(server_address, agency, world, tmp_path):
    from mandate.store import models
    from sqlalchemy import select

    organization, _, _ = agency
    owner = world.owner_of(organization)
    request = f'{{"actor_id": "{owner}", "organization_id": "{organization}", "email": "cli@example.com", ' \
              '"role": "colleague"}'
    result = mandate("call", "MembershipService.InviteMember", request, "--server", server_address, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with world.app.store.read() as session:
        records = session.execute(select(models.RequestRecord.request_id, models.RequestRecord.method)).all()
    assert len(records) == 1 and len(records[0][0]) == 32 and records[0][1] == "MembershipService.InviteMember"


def test_check_and_explain_as_of_answer_from_the_history(server_address, agency, world, tmp_path):
    """Issue 10: `--as-of` asks about the past; the colleague removed since could edit then."""
    import datetime

    organization, colleague, project = agency
    then = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    world.app.memberships.remove_member(world.owner_of(organization), organization, colleague)
    result = mandate("check", colleague, "edit", f"Project:{project}", "--server", server_address, cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (1, "denied"), result.stderr
    for command in ("check", "explain"):
        result = mandate(command, colleague, "edit", f"Project:{project}", "--as-of", then, "--server",
                         server_address, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("allowed"), result.stderr
    result = mandate("check", colleague, "edit", f"Project:{project}", "--as-of", "last week", "--server",
                     server_address, cwd=tmp_path)
    assert result.returncode == 2 and "as_of" in result.stderr
