"""The server's life (issue 8, items 2 and 4): health before it is ready and while the database
is away, and `mandate serve --processes N` as real processes on SQLite: one port, read your
writes on every process, SIGHUP reloads every process, a dead process is replaced, SIGTERM
drains them all."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mandate.client import MandateClient
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2

from tests.conftest import POLICY_DIR, TOKEN
from tests.support import error_info, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
MUTATION_SERVICES = ("", "mandate.v1.DirectoryService", "mandate.v1.MembershipService", "mandate.v1.PartnerService")


def health_of(address: str, service: str = "") -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=5).status
        except grpc.RpcError:
            return None


def nobody_check(client: MandateClient, **fields) -> authorization_pb2.CheckResponse:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=fields.pop("user", "usr_nobody")), action="view",
        resource=common_pb2.ObjectRef(type="Organization", id=fields.pop("organization", "org_nothing")), **fields),
        timeout=10)


def test_not_serving_until_the_database_answers(tmp_path, template_db):
    """The server listens at once; until it has loaded the policy and the fact index from a
    database that answers, health is NOT_SERVING and Mandate's methods are UNAVAILABLE."""
    database = tmp_path / "mandate.db"
    database.write_bytes(b"this is not a database" * 100)
    config = Config(listen="127.0.0.1:0", database_url=f"sqlite:///{database}", policy_dir=POLICY_DIR,
                    api_tokens=[TOKEN])
    server, port = build_server(None, config)
    address = f"127.0.0.1:{port}"
    starting = threading.Thread(target=server.start)
    starting.start()
    try:
        assert wait_until(lambda: health_of(address) == NOT_SERVING)
        assert health_of(address, "mandate.v1.AuthorizationService") == NOT_SERVING
        with MandateClient(address, TOKEN) as client:
            with pytest.raises(grpc.RpcError) as caught:
                nobody_check(client)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(caught.value).reason == "UNAVAILABLE"
            shutil.copy(template_db, database)  # the database answers now
            starting.join(60)
            assert not starting.is_alive()
            assert health_of(address) == SERVING
            assert not nobody_check(client).allowed
    finally:
        starting.join(60)
        server.stop(grace=None)
        if server.app is not None:
            server.app.close()


def test_database_unavailable_keeps_the_check_plane_serving(app, world):
    organization = world.organization()
    owner = world.owner_of(organization)
    database = {"up": True}
    app.database_available = lambda: database["up"]  # the store's view of the database (issue 8a)
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN])
    server, port = build_server(app, config)
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        assert all(health_of(address, name) == SERVING for name in MUTATION_SERVICES)
        database["up"] = False
        assert wait_until(lambda: all(health_of(address, name) == NOT_SERVING for name in MUTATION_SERVICES))
        assert health_of(address, "mandate.v1.AuthorizationService") == SERVING
        with MandateClient(address, TOKEN) as client:
            assert nobody_check(client, user=owner, organization=organization).allowed  # from memory
        database["up"] = True
        assert wait_until(lambda: all(health_of(address, name) == SERVING for name in MUTATION_SERVICES))
    finally:
        server.stop(grace=None)


# -- several processes ----------------------------------------------------------------------------


class Fleet:
    """`mandate serve --processes N` on a free port, its log in a file."""

    def __init__(self, tmp_path: Path, processes: int, policy_dir: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = tmp_path / "fleet.log"
        env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db",
               "MANDATE_PROCESSES": str(processes), "MANDATE_GRACE_SECONDS": "20"}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mandate.cli", "serve", "--listen", self.address, "--policy-dir",
                 str(policy_dir)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def pids(self, pattern: str) -> set[str]:
        return set(re.findall(pattern + r".*\(pid (\d+)\)", self.log()))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    for path in POLICY_DIR.glob("*.polar"):
        shutil.copy(path, directory)
    return directory


def test_processes_share_a_port_reload_together_are_replaced_and_drain_together(tmp_path, policy_dir):
    fleet = Fleet(tmp_path, 2, policy_dir)
    try:
        assert wait_until(lambda: len(fleet.pids("mandate serving")) == 2 or fleet.process.poll() is not None, 90), \
            fleet.log()
        assert len(fleet.pids("mandate serving")) == 2, fleet.log()
        assert health_of(fleet.address) == SERVING
        # Read your writes on every process: each new channel may land on either one.
        with MandateClient(fleet.address, TOKEN) as writer:
            owner = writer.directory.RegisterUser(directory_pb2.RegisterUserRequest(
                email="owner@example.com", display_name="Owner"), timeout=10).id
            organization = writer.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
                actor_id=owner, name="Acme", currency="EUR"), timeout=10)
        old_version = ""
        for _ in range(8):
            with MandateClient(fleet.address, TOKEN) as reader:
                reply = nobody_check(reader, user=owner, organization=organization.id,
                                     at_least_revision=organization.revision)
                assert reply.allowed
                old_version = reply.policy_version
        # SIGHUP to the parent: every process reloads the changed policy.
        policy = next(policy_dir.glob("*.polar"))
        policy.write_text(policy.read_text() + "\n# changed for the reload test\n")
        fleet.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(fleet.pids("policy reloaded")) == 2, 60), fleet.log()
        new_version = re.findall(r"policy reloaded: version (\w+)", fleet.log())[0]
        assert new_version != old_version
        for _ in range(8):
            with MandateClient(fleet.address, TOKEN) as reader:
                assert nobody_check(reader).policy_version == new_version
        # A process that dies is replaced; the port keeps answering meanwhile. The replacement,
        # forked from the parent's index and policy of before the reload, serves the policy reloaded.
        first = fleet.pids("mandate serving")
        killed = sorted(first)[0]
        os.kill(int(killed), signal.SIGKILL)
        assert wait_until(lambda: len(fleet.pids("mandate serving")) == 3, 90), fleet.log()
        for _ in range(8):
            with MandateClient(fleet.address, TOKEN) as reader:
                reply = nobody_check(reader, user=owner, organization=organization.id)
                assert reply.allowed
                assert reply.policy_version == new_version
        # SIGTERM to the parent drains every process, and the parent exits cleanly.
        assert fleet.stop() == 0, fleet.log()
        assert fleet.pids(r"stopped") == fleet.pids("mandate serving") - {killed}, fleet.log()
    finally:
        fleet.stop()


def test_processes_stop_when_a_process_cannot_start(tmp_path, policy_dir):
    (policy_dir / "broken.polar").write_text("allow(actor, action, resource) if\n")
    fleet = Fleet(tmp_path, 2, policy_dir)
    try:
        assert fleet.process.wait(timeout=90) == 1, fleet.log()
        assert "refusing to start" in fleet.log()
    finally:
        fleet.stop()


def running(pid: str) -> bool:
    """Whether the process runs (a zombie waiting for a new parent to reap it has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_processes_drain_and_stop_when_their_parent_is_killed(tmp_path, policy_dir):
    """kill -9 of the supervising process leaves no server behind holding the port."""
    fleet = Fleet(tmp_path, 2, policy_dir)
    try:
        assert wait_until(lambda: len(fleet.pids("mandate serving")) == 2 or fleet.process.poll() is not None, 90), \
            fleet.log()
        children = fleet.pids("mandate serving")
        assert len(children) == 2, fleet.log()
        fleet.process.kill()
        fleet.process.wait()
        assert wait_until(lambda: not any(running(pid) for pid in children), 60), fleet.log()
        assert "the supervising process is gone" in fleet.log()
    finally:
        fleet.stop()
