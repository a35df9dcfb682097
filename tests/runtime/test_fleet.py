"""Fault tests on PostgreSQL with three real `mandate serve` replicas (issue 8, item 5).

The PostgreSQL server here is this module's own (other tests share another one), so it can be
stopped and restarted under load. Every wait is bounded; no test asserts a time. Load loops are
bounded in count and in time, and only ever talk to 127.0.0.1."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mandate.client import MandateClient
from mandate.store.localpg import LocalPostgres
from mandate.store.migrate import upgrade
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2
from sqlalchemy import create_engine, text

from tests.support import free_port, reason_of, wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fleet-test-token-not-secret"
REPLICAS = 3
CALLERS = 4
TEMPLATE = "fleet_template"
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def postgres():
    server = LocalPostgres()
    try:
        server.start()
        server.create_database(TEMPLATE)
        upgrade(server.url(TEMPLATE))
        yield server
    finally:
        server.close()


class Replica:
    def __init__(self, number: int, database_url: str, directory: Path):
        self.number = number
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_DATABASE_URL": database_url,
               "MANDATE_POLICY_DIR": str(ROOT / "policies"), "MANDATE_LOG_LEVEL": "WARNING"}
        self.log_path = directory / f"replica-{number}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mandate.cli", "serve", "--listen", self.address],
                env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
        self.client = MandateClient(self.address, TOKEN)
        self.health = health_pb2_grpc.HealthStub(self.client.raw_channel)

    def status(self, service: str = "") -> str:
        try:
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as error:
            return error.code().name

    def serving(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"replica {self.number} exited: {self.log_path.read_text()[-3000:]}")
        return self.status() == "SERVING"

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def replicas(postgres, tmp_path_factory):
    """Three replicas for the whole module (starting them is the slow part). The tests leave
    them as they found them, except the last, which kills one."""
    name = "fleet"
    url = postgres.create_database(name, template=TEMPLATE)
    directory = tmp_path_factory.mktemp("fleet")
    started = [Replica(n, url, directory) for n in range(REPLICAS)]
    try:
        for replica in started:
            assert wait_until(replica.serving, 120), f"replica {replica.number} never served"
        yield started, url
    finally:
        for replica in started:
            replica.terminate()
        for replica in started:
            replica.stop()
        postgres.drop_database(name)


@pytest.fixture
def fleet(replicas) -> Fleet:
    """The replicas, with a new owner, organization and outsider for this test."""
    started, url = replicas
    fleet = Fleet(started, url, tag=f"t{next(_databases)}")
    fleet.setup()
    return fleet


@dataclass
class Fleet:
    replicas: list[Replica]
    url: str
    tag: str
    owner: str = ""
    organization: str = ""
    outsider: str = ""

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.process.poll() is None]

    def setup(self) -> None:
        directory = self.replicas[0].client.directory
        self.owner = directory.RegisterUser(directory_pb2.RegisterUserRequest(
            email=f"owner-{self.tag}@example.com", display_name="Owner")).id
        self.organization = directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
            actor_id=self.owner, name="Acme", currency="EUR")).id
        self.outsider = directory.RegisterUser(directory_pb2.RegisterUserRequest(
            email=f"outsider-{self.tag}@example.com", display_name="Outsider")).id

    def put(self, replica: Replica, project: str, actor: str | None = None) -> int:
        project = f"{self.tag}-{project}"
        reply = replica.client.directory.PutResource(directory_pb2.PutResourceRequest(
            actor_id=actor or self.owner, resource=common_pb2.ObjectRef(type="Project", id=project),
            organization_id=self.organization), timeout=10)
        return int(reply.revision)

    def can_read(self, replica: Replica, project: str, revision: int | None = None) -> bool:
        request = authorization_pb2.CheckRequest(
            actor=common_pb2.ObjectRef(type="User", id=self.owner), action="read",
            resource=common_pb2.ObjectRef(type="Project", id=f"{self.tag}-{project}"),
            at_least_revision=str(revision) if revision else "")
        return replica.client.authorization.Check(request, timeout=10).allowed

    def stored_projects(self) -> set[str]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                ids = connection.execute(text("SELECT id FROM resources WHERE type = 'Project'")).scalars()
                return {i.removeprefix(f"{self.tag}-") for i in ids if i.startswith(f"{self.tag}-")}
        finally:
            engine.dispose()


@dataclass
class Load:
    """Writers and checkers on random replicas until stopped. A write that fails is retried on
    another replica with the same id, as a client behind a load balancer does."""

    fleet: Fleet
    seconds: float = 60.0
    acknowledged: dict[str, int] = field(default_factory=dict)
    refused_writes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "WRITE|CHECK CODE REASON"
    checks: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _numbers: itertools.count = field(default_factory=itertools.count)

    def start(self, writers: int = 3, checkers: int = 2) -> Load:
        for n in range(writers):
            self._threads.append(threading.Thread(target=self._write, args=(n,), daemon=True))
        for _ in range(checkers):
            self._threads.append(threading.Thread(target=self._check, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads)

    def _running(self, started: float) -> bool:
        return not self._stop.is_set() and time.monotonic() - started < self.seconds

    def _failed(self, kind: str, error: grpc.RpcError) -> None:
        try:
            reason = reason_of(error)
        except AssertionError:
            reason = "-"  # a transport error (the replica is gone): no ErrorInfo
        self.failures.append(f"{kind} {error.code().name} {reason}")

    def _write(self, number: int) -> None:
        started = time.monotonic()
        rng = random.Random(number)
        while self._running(started):
            project = f"load-{number}-{next(self._numbers)}"
            if rng.random() < 0.1:  # a write that must be refused, and leave no trace
                try:
                    self.fleet.put(rng.choice(self.fleet.live()), f"refused-{project}", actor=self.fleet.outsider)
                    self.failures.append("WRITE accepted a write the policy refuses")
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                        self.refused_writes.append(f"refused-{project}")
                    else:
                        self._failed("WRITE", error)
                continue
            while self._running(started):
                try:
                    self.acknowledged[project] = self.fleet.put(rng.choice(self.fleet.live()), project)
                    break
                except grpc.RpcError as error:
                    self._failed("WRITE", error)
                    self._stop.wait(0.05)

    def _check(self) -> None:
        started = time.monotonic()
        while self._running(started):
            replica = random.choice(self.fleet.live())
            try:
                self.fleet.can_read(replica, "load-0-0")
                self.checks += 1
            except grpc.RpcError as error:
                if replica.process.poll() is None:
                    self._failed("CHECK", error)


def test_read_your_writes_across_replicas_a_thousand_times(fleet):
    stale = []

    def run(caller: int) -> None:
        rng = random.Random(caller)
        for number in range(caller, 1000, CALLERS):
            project = f"ryw-{number}"
            revision = fleet.put(rng.choice(fleet.replicas), project)
            if not fleet.can_read(rng.choice(fleet.replicas), project, revision):
                stale.append((number, revision))

    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(run, range(CALLERS)))  # list(): a failed call fails the test
    assert stale == []


def test_replicas_converge_without_a_revision_token(fleet):
    revision = fleet.put(fleet.replicas[0], "converged")
    for replica in fleet.replicas[1:]:
        assert wait_until(lambda r=replica: fleet.can_read(r, "converged"), 20)
    assert revision > 0


def test_restarting_postgres_under_load(fleet, postgres):
    load = Load(fleet).start()
    assert wait_until(lambda: len(load.acknowledged) >= 30, 30)
    before = dict(load.acknowledged)
    postgres.stop("immediate")  # as in a crash: every connection drops at once
    try:
        assert wait_until(lambda: all(r.status("") == "NOT_SERVING" for r in fleet.replicas), 20)
        for replica in fleet.replicas:
            assert replica.status("mandate.v1.AuthorizationService") == "SERVING"
            assert replica.status("mandate.v1.MembershipService") == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as refused:
                fleet.put(replica, f"while-down-{replica.number}")
            assert (refused.value.code(), reason_of(refused.value)) == (
                grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
            assert fleet.can_read(replica, next(iter(before)))  # checks answer from memory
    finally:
        postgres.start()
    for replica in fleet.replicas:  # every replica takes writes again by itself
        assert wait_until(lambda r=replica: r.serving(), 30)
        assert wait_until(lambda r=replica: _writes(fleet, r), 30)
    count = len(load.acknowledged)
    assert wait_until(lambda: len(load.acknowledged) > count + 10, 30)
    load.stop()

    # Writes fail cleanly while the database is away; checks never fail.
    unexpected = [f for f in load.failures if f != "WRITE UNAVAILABLE DATABASE_UNAVAILABLE"]
    assert unexpected == [], unexpected[:10]
    stored = fleet.stored_projects()
    assert set(load.acknowledged) <= stored
    assert not stored & set(load.refused_writes)
    newest = max(load.acknowledged.values())
    for replica in fleet.replicas:
        assert all(fleet.can_read(replica, p, newest) for p in list(load.acknowledged)[-20:])


def _writes(fleet: Fleet, replica: Replica) -> bool:
    try:
        fleet.put(replica, f"recovered-{replica.number}")
        return True
    except grpc.RpcError:
        return False


def test_killing_a_replica_under_load_loses_no_acknowledged_write(fleet):
    load = Load(fleet).start()
    assert wait_until(lambda: len(load.acknowledged) >= 30, 30)
    victim = fleet.replicas[1]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=30)
    count = len(load.acknowledged)
    assert wait_until(lambda: len(load.acknowledged) > count + 30, 30)
    load.stop()

    # Calls in flight on the killed replica fail as the transport fails; nothing else fails.
    unexpected = [f for f in load.failures if f.split()[1] != "UNAVAILABLE"]
    assert unexpected == [], unexpected[:10]
    stored = fleet.stored_projects()
    assert set(load.acknowledged) <= stored
    assert not stored & set(load.refused_writes)
    newest = max(load.acknowledged.values())
    survivors = fleet.live()
    assert len(survivors) == REPLICAS - 1
    for replica in survivors:
        assert all(fleet.can_read(replica, p, newest) for p in load.acknowledged)
