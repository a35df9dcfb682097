"""The mandate.testing plugin and the ephemeral server, in this checkout: another service's test
using the `mandate_client` fixture, a plugin that imports nothing until a fixture is used and
fails only the tests that use it, and the worked example of docs/testing-with-mandate.md,
which tests/public/test_package.py runs against the installed wheel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from mandate.client import MandateClient
from mandate.v1 import authorization_pb2, common_pb2

from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "examples" / "world.yaml"
POLICIES = ROOT / "policies"
OUTSIDE_PROJECT = ROOT / "examples" / "outside-project"


@pytest.fixture
def mandate_world():
    return WORLD


def can(client, user, action, project):
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action=action,
        resource=common_pb2.ObjectRef(type="Project", id=project))).allowed


def test_r16_assigned_partner_employee_edits_until_client_revokes(mandate_client):
    assert can(mandate_client, "emma", "edit", "shop-site")
    assert not can(mandate_client, "emma", "delete", "shop-site")  # R12: not granted
    assert not can(mandate_client, "nora", "read", "shop-site")
    mandate_client.partner.RevokePartnerEmployee(_assignment("olga", "agency", "shop", "emma"))
    assert not can(mandate_client, "emma", "edit", "shop-site")  # R17


def _assignment(actor, partner, client, user):
    from mandate.v1 import partner_pb2

    return partner_pb2.AssignmentRequest(actor_id=actor, partner_id=partner, client_id=client, user_id=user)


def test_ephemeral_server_serves_a_world_and_forgets_it(tmp_path):
    port = free_port()
    env = {**os.environ, "MANDATE_API_TOKENS": "example-token-0123456789", "MANDATE_POLICY_DIR": str(POLICIES)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mandate.cli", "serve", "--ephemeral", "--world", str(WORLD),
         "--listen", f"127.0.0.1:{port}"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with MandateClient(f"127.0.0.1:{port}", "example-token-0123456789") as client:
            assert wait_until(lambda: process.poll() is not None or _ready(client)), "server did not start"
            assert process.poll() is None, process.stdout.read().decode()
            assert can(client, "emma", "read", "shop-site")
            assert not can(client, "nora", "read", "shop-site")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not (tmp_path / "var").exists()  # nothing written where it ran


def test_world_requires_ephemeral(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mandate.cli", "serve", "--world", str(WORLD)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--ephemeral" in result.stderr


def _ready(client) -> bool:
    """Health says the check plane is SERVING (a server may listen before it has loaded)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service="mandate.v1.AuthorizationService")
    try:
        reply = health_pb2_grpc.HealthStub(client.raw_channel).Check(request, timeout=1, wait_for_ready=True)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_plugin_imports_nothing_until_a_fixture_is_used():
    heavy = ("grpc", "google", "oso", "sqlalchemy", "alembic", "yaml", "mandate.v1", "mandate.client",
             "mandate.runtime.server", "mandate.runtime.world", "mandate.runtime.config")
    probe = (f"import sys, mandate.testing; print(sorted(m for m in sys.modules if m.startswith({heavy!r})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_fixture_that_cannot_start_fails_only_its_tests(tmp_path):
    project = shutil.copytree(OUTSIDE_PROJECT, tmp_path / "their-service")
    shutil.copy(WORLD, project / "world.yaml")
    nowhere = tmp_path / "nowhere"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MANDATE_", "PYTEST"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=project,
                            env={**env, "MANDATE_POLICY_DIR": str(nowhere)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "1 passed, 2 errors" in result.stdout, result.stdout
    assert (f"mandate: the test server could not start: PolicyError: no .polar files in {nowhere}\n"
            "(the policy does not load; check MANDATE_POLICY_DIR") in result.stdout


def test_the_docs_show_the_outside_project_as_it_is():
    docs = (ROOT / "docs" / "testing-with-mandate.md").read_text()
    shown = dict(re.findall(r"\*\*(\w+\.py)\*\*\n\n```python\n(.*?)```", docs, re.S))
    assert shown.keys() == {"conftest.py", "test_shop_access.py"}
    for name, text in shown.items():
        assert text == (OUTSIDE_PROJECT / name).read_text(), f"docs/testing-with-mandate.md shows an old {name}"


def test_r14_access_ends_by_itself_on_the_plugin_server_as_on_mandate_serve(mandate_client):
    """The plugin's server runs the sweeper: a connection given an end disconnects then."""
    import datetime

    from mandate.v1 import partner_pb2

    ends = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    mandate_client.partner.UpdateGrantedScopes(partner_pb2.UpdateGrantedScopesRequest(
        actor_id="olga", partner_id="agency", client_id="shop", granted_scopes=["read", "edit"],
        access_expires_at=ends.isoformat().replace("+00:00", "Z")))
    assert can(mandate_client, "emma", "edit", "shop-site")
    assert wait_until(lambda: not can(mandate_client, "emma", "read", "shop-site"), 30)
