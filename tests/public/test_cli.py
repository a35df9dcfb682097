"""The `mandate` command as a shell user runs it: check and explain against a running server
(exit 0 allowed, 1 denied, 2 error), and migrate on a fresh database; every client command
against `mandate serve --ephemeral`, the caller's token from where the user keeps it (never
written by a client), and saved contexts."""

from __future__ import annotations

import json
import os
import queue
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mandate.cli import EXPORT_COLUMNS
from mandate.runtime.app import App

from tests.conftest import POLICY_DIR, TOKEN

ENTRY_POINT = Path(sys.executable).parent / "mandate"


def mandate(*args: str, cwd: Path, token: str | None = TOKEN, **env: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, with no setting of ours but `env` (and MANDATE_TOKEN unless
    `token` is None); its own configuration directory (saved contexts) is under `cwd`."""
    command = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "mandate.cli"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    environment.update({"XDG_CONFIG_HOME": str(cwd / "config"), "MANDATE_LOG_LEVEL": "WARNING", **env})
    if token is not None:
        environment["MANDATE_TOKEN"] = token
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


# -- the caller's credentials (issue 18, items 12 and 13) ----------------------------------------

CLIENT_COMMANDS = (("check", "emma", "read", "Project:shop-site"), ("explain", "emma", "read", "Project:shop-site"),
                   ("call", "AuthorizationService.Check", "{}"))


@pytest.mark.parametrize("command", CLIENT_COMMANDS, ids=lambda c: c[0])
def test_a_client_command_without_a_token_writes_none_and_says_where_one_goes(command, tmp_path):
    """Issue 18 item 12: no token anywhere: exit 2 with an error naming MANDATE_TOKEN and
    --token-file, and nothing written: no var/api-token, no directory for MANDATE_TOKEN_FILE."""
    result = mandate(*command, "--server", "127.0.0.1:9", cwd=tmp_path, token=None)
    assert result.returncode == 2 and result.stdout == ""
    assert "MANDATE_TOKEN" in result.stderr and "--token-file" in result.stderr, result.stderr
    missing = tmp_path / "secrets" / "nested" / "token"
    result = mandate(*command, "--server", "127.0.0.1:9", cwd=tmp_path, token=None, MANDATE_TOKEN_FILE=str(missing))
    assert result.returncode == 2 and f"MANDATE_TOKEN_FILE: no token file at {missing}" in result.stderr
    result = mandate(*command, "--server", "127.0.0.1:9", "--token-file", str(missing), cwd=tmp_path, token=None)
    assert result.returncode == 2 and f"--token-file: no token file at {missing}" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_the_token_comes_from_the_flag_the_environment_or_the_checkouts_server(server_address, agency, tmp_path):
    """Issue 18 item 12 and issue 23 item 4: --token-file, MANDATE_TOKEN_FILE and MANDATE_TOKEN;
    in a checkout where `mandate serve` keeps var/api-token, that file, read and left as it was."""
    _, colleague, project = agency
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    ask = ("check", colleague, "edit", f"Project:{project}", "--server", server_address)
    for flags, env in ((("--token-file", str(token_file)), {}), ((), {"MANDATE_TOKEN_FILE": str(token_file)}),
                       (("--token-file", str(token_file)), {"MANDATE_TOKEN": "a-wrong-token-is-overridden"})):
        result = mandate(*ask, *flags, cwd=tmp_path, token=None, **env)
        assert (result.returncode, result.stdout.strip()) == (0, "allowed"), (flags, env, result.stderr)
    checkout = tmp_path / "checkout"
    (checkout / "var").mkdir(parents=True)
    (checkout / "var" / "api-token").write_text(TOKEN + "\n")
    result = mandate(*ask, cwd=checkout, token=None)
    assert (result.returncode, result.stdout.strip()) == (0, "allowed"), result.stderr
    assert (checkout / "var" / "api-token").read_text() == TOKEN + "\n"
    token_file.write_text("\n")
    result = mandate(*ask, "--token-file", str(token_file), cwd=tmp_path, token=None)
    assert result.returncode == 2 and "does not hold a token" in result.stderr and TOKEN not in result.stderr


@pytest.mark.parametrize("engine", ["sqlite"])  # the transport and the command; the store is not under test
def test_a_caller_known_only_by_its_client_certificate_uses_the_cli(app, world, tmp_path):
    """Issue 18 item 12: mTLS, a callers file naming the caller by its certificate subject, and no
    token anywhere: the client commands work."""
    from mandate.runtime.config import Config
    from mandate.runtime.server import build_server

    organization = world.organization()
    colleague = world.member(organization, "colleague")
    project = world.project(organization)
    callers = tmp_path / "callers.toml"
    callers.write_text('[callers.billing]\nclient_cert_subject = "CN=billing"\n')
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN],
                    callers_file=callers, tls_cert=TLS / "server.pem", tls_key=TLS / "server.key",
                    tls_client_ca=TLS / "ca.pem")
    server, port = build_server(app, config)
    server.start()
    try:
        certificate = ("--ca", str(TLS / "ca.pem"), "--cert", str(TLS / "client.pem"), "--key", str(TLS / "client.key"))
        result = mandate("check", colleague, "edit", f"Project:{project}", "--server", f"localhost:{port}",
                         *certificate, cwd=tmp_path, token=None)
        assert (result.returncode, result.stdout.strip()) == (0, "allowed"), result.stderr
        result = mandate("list-resources", colleague, "edit", "Project", "--server", f"localhost:{port}", *certificate,
                         cwd=tmp_path, token=None)
        assert (result.returncode, result.stdout.split()) == (0, [project]), result.stderr
    finally:
        server.stop(grace=None)


# -- every client command against `mandate serve --ephemeral` (issue 23 item 4) -------------------

WORLD = Path(__file__).resolve().parents[2] / "examples" / "world.yaml"
TLS = Path(__file__).resolve().parents[1] / "tls"


class Ephemeral:
    def __init__(self, address: str, token: str, cwd: Path):
        self.address, self.token, self.cwd = address, token, cwd

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """A client command against this server, its token in MANDATE_TOKEN, from a directory of its own."""
        return mandate(*args, "--server", self.address, cwd=self.cwd, token=env.pop("MANDATE_TOKEN", self.token),
                       **env)

    def json(self, *args: str):
        result = self.run(*args, "--json")
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def ephemeral(tmp_path_factory):
    """`mandate serve --ephemeral --world examples/world.yaml`, started as a user would, without
    MANDATE_API_TOKENS: it prints the token to use and writes nothing (issue 18 item 13)."""
    from tests.support import free_port

    served = tmp_path_factory.mktemp("served")
    port = free_port()
    command = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "mandate.cli"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    with open(served / "server.log", "w") as log:  # outside the working directory, which must stay empty
        server = subprocess.Popen([*command, "serve", "--ephemeral", "--world", str(WORLD), "--grace", "0",
                                   "--listen", f"127.0.0.1:{port}"], cwd=served, env=environment,
                                  stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    try:
        try:
            first = lines.get(timeout=120)
        except queue.Empty:
            first = ""
        assert first.startswith("MANDATE_TOKEN="), (first, (served / "server.log").read_text())
        yield Ephemeral(f"127.0.0.1:{port}", first.strip().partition("=")[2], tmp_path_factory.mktemp("client"))
        assert [path.name for path in served.iterdir()] == ["server.log"]  # no var/api-token, no database
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ephemeral_prints_its_token_and_writes_nothing(ephemeral):
    """Issue 18 item 13: without MANDATE_API_TOKENS, the printed token is the one that works, and
    the server's working directory holds nothing but the log this test sends there."""
    assert len(ephemeral.token) >= 32
    assert ephemeral.run("check", "emma", "edit", "Project:shop-site").stdout.strip() == "allowed"
    refused = ephemeral.run("check", "emma", "edit", "Project:shop-site", MANDATE_TOKEN="not-the-printed-token")
    assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr


def test_check_explain_and_the_lists_as_text_and_json(ephemeral):
    """Issue 23 item 4: check, explain, list-actions, list-resources and list-actors; --json."""
    assert ephemeral.json("check", "emma", "edit", "Project:shop-site")["allowed"] is True
    denied = ephemeral.json("explain", "nora", "read", "Project:shop-site")
    assert denied["allowed"] is False and denied["reasons"] and denied["revision"] and denied["policy_version"]
    assert ephemeral.run("list-actions", "emma", "Project:shop-site").stdout.split() == ["edit", "read"]
    assert ephemeral.json("list-actions", "emma", "Project:shop-site")["actions"] == ["edit", "read"]
    assert ephemeral.run("list-resources", "emma", "read", "Project").stdout.split() == ["shop-site"]
    listed = ephemeral.json("list-resources", "emma", "read", "Project")
    assert listed["resource_ids"] == ["shop-site"] and listed["revision"]
    assert ephemeral.run("list-actors", "edit", "Project:shop-site").stdout.split() == ["ann", "emma", "olga"]
    assert ephemeral.json("list-actors", "view", "Organization:shop")["user_ids"] == ["olga"]


def test_history_flags_reach_the_server_on_every_client_command(ephemeral):
    """Issue 23 item 4: --at-least-revision, --at-revision and --as-of. A revoke's revision: at
    least that new, the employee is out; at the revision before, still in. A request without
    such a field is refused by the command, naming the flag."""
    def grant(*scopes: str) -> subprocess.CompletedProcess:
        return ephemeral.run("call", "PartnerService.UpdateGrantedScopes", json.dumps(
            {"actor_id": "olga", "partner_id": "agency", "client_id": "shop", "granted_scopes": scopes}))

    revoked = grant("read")
    assert revoked.returncode == 0, revoked.stderr
    try:
        check_history_flags(ephemeral, revoked)
    finally:
        assert grant("read", "edit").returncode == 0  # as the world had it, for the other tests


def check_history_flags(ephemeral: Ephemeral, revoked: subprocess.CompletedProcess) -> None:
    revision = json.loads(revoked.stdout)["revision"]
    before = str(int(revision) - 1)
    assert ephemeral.json("check", "emma", "edit", "Project:shop-site", "--at-least-revision", revision) == {
        "allowed": False, "revision": revision, "policy_version": ephemeral.json(
            "check", "emma", "read", "Project:shop-site")["policy_version"]}
    assert ephemeral.json("check", "emma", "edit", "Project:shop-site", "--at-revision", before)["allowed"] is True
    assert ephemeral.json("explain", "emma", "edit", "Project:shop-site", "--at-revision", before)["allowed"] is True
    assert ephemeral.json("list-actions", "emma", "shop-site", "--at-revision", before)["actions"] == ["edit", "read"]
    assert ephemeral.json("list-resources", "emma", "edit", "Project", "--at-revision", before)["resource_ids"] == [
        "shop-site"]
    assert "emma" in ephemeral.json("list-actors", "edit", "shop-site", "--at-revision", before)["user_ids"]
    assert "emma" not in ephemeral.json("list-actors", "edit", "shop-site", "--at-least-revision", revision)[
        "user_ids"]
    called = ephemeral.run("call", "AuthorizationService.Check", '{"actor": {"type": "User", "id": "emma"}, '
                           '"action": "edit", "resource": {"type": "Project", "id": "shop-site"}}',
                           "--at-revision", before, "--field", "allowed")
    assert called.stdout.strip() == "True", called.stderr
    review = ephemeral.json("access-review", "shop", "--at-revision", before)
    assert review["revision"] == before and any(e["user_id"] == "emma" for e in review["entries"])
    assert ephemeral.json("access-review", "shop", "--at-least-revision", revision)["revision"] == revision
    too_new = ephemeral.run("access-review", "shop", "--at-least-revision", str(int(revision) + 1000))
    assert too_new.returncode == 2 and "--at-least-revision" in too_new.stderr
    future = ephemeral.run("check", "emma", "edit", "shop-site", "--as-of", "2999-01-01T00:00:00Z")
    assert future.returncode == 2 and "as_of" in future.stderr
    for refused in (("export-clients", "ann", "agency", "--as-of", "2026-01-01T00:00:00Z"),
                    ("call", "MembershipService.ListMembers", "{}", "--at-least-revision", revision)):
        result = ephemeral.run(*refused)
        assert result.returncode == 2 and refused[-2] in result.stderr and "has no field" in result.stderr


def test_call_lists_every_rpc_and_speaks_json(ephemeral):
    """Issue 23 item 4: `mandate call --list` names every RPC of the contract's .proto files."""
    protos = Path(__file__).resolve().parents[2] / "protos" / "mandate" / "v1"
    declared = {f"{service}.{rpc}" for text in (p.read_text() for p in protos.glob("*.proto"))
                for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S)
                for rpc in re.findall(r"rpc (\w+)\(", body)}
    listed = ephemeral.run("call", "--list")
    assert {line.split("(")[0] for line in listed.stdout.splitlines()} == declared
    assert "AuthorizationService.Check(CheckRequest) returns CheckResponse" in listed.stdout.splitlines()
    assert "EventService.Watch(WatchRequest) returns stream Event" in listed.stdout.splitlines()
    rows = ephemeral.json("call", "--list")
    assert {row["method"] for row in rows} == declared
    members = ephemeral.json("call", "MembershipService.ListMembers",
                             '{"actor_id": "ann", "organization_id": "agency"}', "--field", "members")
    assert {member["user_id"] for member in members} == {"ann", "emma"}
    missing = ephemeral.run("call")
    assert missing.returncode == 2 and "--list" in missing.stderr


def test_export_clients_and_access_review_as_json(ephemeral, tmp_path):
    """Issue 23 item 4: --json on export-clients and access-review."""
    clients = ephemeral.json("export-clients", "ann", "agency")
    assert [row["client"] for row in clients] == ["shop"] and set(clients[0]) == set(EXPORT_COLUMNS)
    review = ephemeral.json("access-review", "shop")
    assert {entry["user_id"] for entry in review["entries"]} >= {"olga", "ann"}


def test_saved_contexts_choose_the_server_and_the_token_file(ephemeral, tmp_path):
    """Issue 23 item 4: `context set NAME --address --token-file --tls-ca`, `context use`, `list`,
    `remove`; a context holds paths, never a token; flags and the environment win over it."""
    config = tmp_path / "config"
    token_file = tmp_path / "token"
    token_file.write_text(ephemeral.token + "\n")

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return mandate(*args, cwd=tmp_path, token=None, XDG_CONFIG_HOME=str(config), **env)

    assert run("check", "emma", "read", "shop-site").returncode == 2  # no context, no token
    assert "no contexts saved" in run("context", "list").stderr
    saved = run("context", "set", "test", "--address", ephemeral.address, "--token-file", str(token_file))
    assert saved.returncode == 0 and "in use" in saved.stdout, saved.stderr
    assert run("context", "set", "tls", "--address", "localhost:1", "--tls-ca", str(TLS / "ca.pem")).returncode == 0
    contexts = (config / "mandate" / "contexts.toml").read_text()
    assert ephemeral.token not in contexts and str(token_file) in contexts
    assert run("check", "emma", "read", "shop-site").stdout.strip() == "allowed"
    assert json.loads(run("context", "list", "--json").stdout) == {"current": "test", "contexts": {
        "test": {"address": ephemeral.address, "token_file": str(token_file), "tls_ca": "", "tls_cert": "",
                 "tls_key": ""},
        "tls": {"address": "localhost:1", "token_file": "", "tls_ca": str(TLS / "ca.pem"), "tls_cert": "",
                "tls_key": ""}}}
    assert run("context", "use", "tls").returncode == 0
    assert run("context", "list").stdout.splitlines()[1].startswith("* tls")
    refused = run("check", "emma", "read", "shop-site")  # a context without a token file: no token
    assert refused.returncode == 2 and "MANDATE_TOKEN" in refused.stderr
    assert run("check", "emma", "read", "shop-site", "--context", "test").stdout.strip() == "allowed"
    assert run("check", "emma", "read", "shop-site", MANDATE_CONTEXT="test").stdout.strip() == "allowed"
    # The flags and the environment win over the context's settings, each on its own.
    assert "UNAUTHENTICATED" in run("check", "emma", "read", "shop-site", "--context", "test",
                                    MANDATE_TOKEN="not-the-token").stderr
    assert "UNAVAILABLE" in run("check", "emma", "read", "shop-site", "--context", "test", "--server",
                                "127.0.0.1:9").stderr
    unknown = run("context", "use", "nowhere")
    assert unknown.returncode == 2 and "no context 'nowhere'" in unknown.stderr
    assert run("context", "remove", "tls").returncode == 0
    assert json.loads(run("context", "list", "--json").stdout)["current"] == ""
    missing = run("context", "set", "broken", "--address", "localhost:1", "--token-file", str(tmp_path / "none"))
    assert missing.returncode == 2 and "--token-file" in missing.stderr
