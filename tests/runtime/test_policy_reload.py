"""Safe policy reload (SIGHUP and --watch-policy) and refusing to start on a bad policy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from mandate.client import MandateClient
from mandate.v1 import authorization_pb2, common_pb2

from tests.support import SHARED, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "reload-test-token"






@pytest.fixture
def policy_dir(tmp_path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    for path in (ROOT / "policies").glob("*.polar"):
        shutil.copy(path, directory)
    return directory


def start(tmp_path, policy_dir, *extra):
    port = free_port()
    env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_POLICY_DIR": str(policy_dir),
           "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db"}
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "mandate.cli", "serve", "--listen", f"127.0.0.1:{port}",
                                *extra], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    return process, MandateClient(f"127.0.0.1:{port}", TOKEN)


def version(client) -> str:
    try:
        return client.authorization.Check(authorization_pb2.CheckRequest(
            actor=common_pb2.ObjectRef(type="User", id="nobody"), action="read",
            resource=common_pb2.ObjectRef(type="Project", id="nothing")), timeout=1).policy_version
    except grpc.RpcError:
        return ""


def stop(process, client) -> None:
    client.close()
    process.terminate()
    process.wait(timeout=30)


def test_sighup_swaps_a_valid_policy_and_refuses_a_broken_one(tmp_path, policy_dir):
    process, client = start(tmp_path, policy_dir)
    try:
        assert wait_until(lambda: version(client)), (tmp_path / "server.log").read_text()
        first = version(client)
        policy = policy_dir / SHARED
        policy.write_text(policy.read_text() + "\n# a reviewed change\n")
        process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: version(client) not in ("", first)), "the new policy was not swapped in"
        second = version(client)

        policy.write_text(policy.read_text() + "\nthis is not polar(\n")
        process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in (tmp_path / "server.log").read_text())
        assert version(client) == second  # the old policy keeps serving
    finally:
        stop(process, client)


def test_watch_policy_reloads_on_change(tmp_path, policy_dir):
    process, client = start(tmp_path, policy_dir, "--watch-policy")
    try:
        assert wait_until(lambda: version(client)), (tmp_path / "server.log").read_text()
        first = version(client)
        policy = policy_dir / SHARED
        policy.write_text(policy.read_text() + "\n# watched change\n")
        assert wait_until(lambda: version(client) not in ("", first))
    finally:
        stop(process, client)


def test_server_refuses_to_start_on_a_broken_policy_with_the_line(tmp_path, policy_dir):
    policy = policy_dir / SHARED
    policy.write_text(policy.read_text() + "\nallow(x, y, z) if x.\n")
    env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_POLICY_DIR": str(policy_dir),
           "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db"}
    result = subprocess.run([sys.executable, "-m", "mandate.cli", "serve", "--listen", f"127.0.0.1:{free_port()}"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "line" in result.stderr


def test_server_refuses_to_start_with_a_short_api_token(tmp_path, policy_dir):
    env = {**os.environ, "MANDATE_API_TOKENS": "short", "MANDATE_POLICY_DIR": str(policy_dir),
           "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db"}
    result = subprocess.run([sys.executable, "-m", "mandate.cli", "serve", "--listen", f"127.0.0.1:{free_port()}"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "at least 16 characters" in result.stderr
    assert "short" not in result.stderr  # the token itself is never echoed
