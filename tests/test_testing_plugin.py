"""The worked example of docs/testing-with-mandate.md, run for real: another service's test
using the `mandate_client` fixture of the mandate.testing plugin, and the ephemeral server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from mandate.client import MandateClient
from mandate.v1 import authorization_pb2, common_pb2

from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
WORLD = ROOT / "examples" / "world.yaml"
POLICIES = ROOT / "policies"


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
    try:
        grpc.channel_ready_future(client.raw_channel).result(timeout=0.5)
        return True
    except grpc.FutureTimeoutError:
        return False



