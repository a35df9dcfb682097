"""No client can starve the others (issue 8, item 3; issue 9, holes 1 and 6), against a real
server on a free port: open streams hold no thread, are capped per caller and in total,
malformed requests are INVALID_ARGUMENT, and deadlines are honoured."""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import sqlite3
import threading
from contextlib import ExitStack, contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import authorization_pb2, common_pb2, directory_pb2, events_pb2, membership_pb2

from tests.conftest import POLICY_DIR, TOKEN
from tests.support import error_info, wait_until

SECOND_TOKEN = "second-test-token-not-secret"
STALL_TIMEOUT = 10  # seconds a Check may take before we call the server stalled (old server: forever)


@contextmanager
def running(app, **settings):
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR,
                    api_tokens=[TOKEN, SECOND_TOKEN], **settings)
    server, port = build_server(app, config)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def people(world):
    organization = world.organization()
    owner = world.owner_of(organization)
    colleague = world.member(organization, "colleague")
    return owner, organization, colleague, world.project(organization)


def check(client: MandateClient, user: str, project: str, **options) -> bool:
    return client.authorization.Check(authorization_pb2.CheckRequest(
        actor=common_pb2.ObjectRef(type="User", id=user), action="read",
        resource=common_pb2.ObjectRef(type="Project", id=project)), **options).allowed


class OpenStreams:
    """Streams kept open by the test; each has delivered its first message."""

    def __init__(self):
        self.calls = []
        self.requests: list[queue.Queue] = []

    def health_watch(self, channel) -> None:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(call).status == health_pb2.HealthCheckResponse.SERVING
        self.calls.append(call)

    def reflection(self, channel) -> None:
        requests: queue.Queue = queue.Queue()
        requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter(requests.get, None), timeout=60)
        assert next(call).list_services_response.service
        self.calls.append(call)
        self.requests.append(requests)

    def watch(self, client: MandateClient, metadata=()) -> grpc.Call:
        call = client.events.Watch(events_pb2.WatchRequest(), timeout=60, metadata=metadata)
        next(call)  # the world's first event: the stream is open
        self.calls.append(call)
        return call

    def close(self) -> None:
        for requests in self.requests:
            requests.put(None)
        for call in self.calls:
            call.cancel()


@pytest.fixture
def streams():
    opened = OpenStreams()
    yield opened
    opened.close()


def test_unauthenticated_streams_stall_the_server(app, people, streams):
    """Hole: 16 health Watch streams, or 16 reflection streams, with no token, stalled every call."""
    _, _, colleague, project = people
    with running(app) as address, ExitStack() as stack:
        channel = stack.enter_context(grpc.insecure_channel(address))
        for _ in range(20):
            streams.health_watch(channel)
        for _ in range(20):
            streams.reflection(channel)
        client = stack.enter_context(MandateClient(address, TOKEN))
        assert check(client, colleague, project, timeout=STALL_TIMEOUT)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=STALL_TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_watch_streams_do_not_stall_checks(app, people, streams):
    """Issue 8: with 20 open Watch streams a Check waited 28 s. Now every stream also sees a
    change made while they are all open."""
    owner, organization, colleague, project = people
    with running(app) as address, MandateClient(address, TOKEN) as client:
        watches = [streams.watch(client) for _ in range(25)]
        assert check(client, colleague, project, timeout=STALL_TIMEOUT)
        paused = client.membership.PauseMember(membership_pb2.MemberRequest(
            actor_id=owner, organization_id=organization, user_id=colleague), timeout=STALL_TIMEOUT)
        assert not check(client, colleague, project, timeout=STALL_TIMEOUT)
        for watch in watches:
            assert any(event.type == EventType.MEMBER_PAUSED and event.revision == paused.revision for event in watch)


def refused_stream(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    return caught.value


def test_stream_cap_refuses_with_too_many_streams(app, people, streams):
    with running(app, max_streams_per_caller=3, max_streams=5) as address, ExitStack() as stack:
        first = stack.enter_context(MandateClient(address, TOKEN))
        second = stack.enter_context(MandateClient(address, SECOND_TOKEN))
        anonymous = stack.enter_context(grpc.insecure_channel(address))
        for _ in range(3):
            streams.watch(first)
        # A fourth stream for the same caller is refused; another caller still gets streams.
        error = refused_stream(first.events.Watch(events_pb2.WatchRequest(), timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "TOO_MANY_STREAMS"
        streams.watch(second)
        streams.health_watch(anonymous)  # health streams count too, per peer when unauthenticated
        # Five open in all: the server's limit refuses anyone, health and reflection included.
        error = refused_stream(health_pb2_grpc.HealthStub(anonymous).Watch(health_pb2.HealthCheckRequest(),
                                                                           timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "TOO_MANY_STREAMS"
        # Unary calls are not streams: they still work.
        assert not first.authorization.Check(authorization_pb2.CheckRequest(
            actor=common_pb2.ObjectRef(type="User", id="usr_nobody"), action="read",
            resource=common_pb2.ObjectRef(type="Project", id="nothing")), timeout=10).allowed
        # A closed stream frees its place.
        streams.calls.pop(0).cancel()

        def reopened() -> bool:
            try:
                streams.watch(first)
                return True
            except grpc.RpcError as refused:
                assert error_info(refused).reason == "TOO_MANY_STREAMS"
                return False

        assert wait_until(reopened, 10)


def raw_call(address: str, method: str, body: bytes, metadata=(("authorization", f"Bearer {TOKEN}"),)):
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(method)(body, metadata=metadata, timeout=10)
    return caught.value


# A string field (2 in CheckRequest and MemberRequest, 1 in WatchRequest) holding bytes that are not UTF-8.
INVALID_UTF8 = bytes([0x12, 2, 0xFF, 0xFE])
MALFORMED = {
    "truncated": (bytes([0x0A, 50, 0x0A]),) * 2,
    "bad wire type": (bytes([0x0F, 0x01]),) * 2,
    "invalid utf-8": (INVALID_UTF8, bytes([0x0A, 2, 0xFF, 0xFE])),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_protobuf_gets_invalid_argument(app, case):
    """Hole: a malformed body, or invalid UTF-8 in a string, was INTERNAL with no ErrorInfo."""
    with running(app) as address:
        for method in ("/mandate.v1.AuthorizationService/Check", "/mandate.v1.MembershipService/PauseMember"):
            error = raw_call(address, method, MALFORMED[case][0])
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            info = error_info(error)
            assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == "request"
        with grpc.insecure_channel(address) as channel:
            stream = channel.unary_stream("/mandate.v1.EventService/Watch")(
                MALFORMED[case][1], metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
            error = refused_stream(stream)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(error).reason == "INVALID_ARGUMENT"


def test_malformed_request_without_a_token_is_unauthenticated(app):
    """The token is checked before the body is read."""
    with running(app) as address:
        error = raw_call(address, "/mandate.v1.AuthorizationService/Check", INVALID_UTF8, metadata=())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# -- deadlines -------------------------------------------------------------------------------------


@contextmanager
def write_lock_held(app):
    """Another process's writer: holds the database's write lock (on PostgreSQL, the revision
    counter's row, which every writer takes first)."""
    if app.store.postgres:
        import psycopg

        with psycopg.connect(app.store.url.replace("postgresql+psycopg://", "postgresql://")) as connection:
            connection.execute("SELECT value FROM revision_counter FOR UPDATE")
            try:
                yield
            finally:
                connection.rollback()
        return
    connection = sqlite3.connect(app.store.url.split("///", 1)[1], isolation_level=None, timeout=30)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def revision(app) -> int:
    return app.store.current_revision()


def register(client: MandateClient, email: str):
    return client.directory.RegisterUser(directory_pb2.RegisterUserRequest(email=email, display_name="X"),
                                         timeout=30)


def test_a_mutation_waiting_past_its_deadline_is_not_committed(app, people):
    owner, organization, colleague, project = people
    pause = membership_pb2.MemberRequest(actor_id=owner, organization_id=organization, user_id=colleague)
    before = revision(app)
    with running(app) as address, MandateClient(address, TOKEN) as client:
        with write_lock_held(app):
            with pytest.raises(grpc.RpcError) as caught:
                client.membership.PauseMember(pause, timeout=0.5)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Writers are serialized: once this one commits, the pause has finished, one way or the other.
        after = int(register(client, "later@example.com").revision)
        assert after == before + 1, "the abandoned pause took a revision"
        assert check(client, colleague, project), "the abandoned pause was committed"


def test_a_call_whose_deadline_passed_in_the_queue_is_not_started(app, people):
    owner, organization, colleague, project = people
    pause = membership_pb2.MemberRequest(actor_id=owner, organization_id=organization, user_id=colleague)
    before = revision(app)
    with running(app, workers=1) as address, MandateClient(address, TOKEN) as client:
        with write_lock_held(app):
            blocked = client.directory.RegisterUser.future(directory_pb2.RegisterUserRequest(
                email="first@example.com", display_name="First"), timeout=60)
            # The only worker is taken by the blocked registration: the pause waits in the queue.
            with pytest.raises(grpc.RpcError) as caught:
                client.membership.PauseMember(pause, timeout=0.5)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert int(blocked.result().revision) == before + 1
        assert int(register(client, "third@example.com").revision) == before + 2
        assert check(client, colleague, project)


# -- draining --------------------------------------------------------------------------------------


def test_drain_finishes_calls_in_flight_and_ends_streams(app, people, streams):
    owner, organization, colleague, project = people
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, api_tokens=[TOKEN])
    server, port = build_server(app, config)
    server.start()
    address = f"127.0.0.1:{port}"
    with MandateClient(address, TOKEN) as client, grpc.insecure_channel(address) as channel:
        watch = streams.watch(client)
        health_watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(health_watch).status == health_pb2.HealthCheckResponse.SERVING
        with write_lock_held(app):
            in_flight = client.membership.PauseMember.future(membership_pb2.MemberRequest(
                actor_id=owner, organization_id=organization, user_id=colleague), timeout=60)
            # In flight: the call holds the store's writer queue, waiting for the database's lock.
            assert wait_until(app.store._writer.locked, 30), "the call never reached the store"
            stopping = threading.Thread(target=server.stop, kwargs={"grace": 30})
            stopping.start()
            assert next(health_watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as ended:
                for _ in watch:
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert stopping.is_alive(), "the drain did not wait for the call in flight"
        assert in_flight.result().status == "paused"  # finished within the grace period
        stopping.join(30)
        assert not stopping.is_alive()
        with pytest.raises(grpc.RpcError) as refused:
            check(client, colleague, project, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_cancelling_watch_is_no_error(app, people, caplog):
    """issue 18 item 21: a client that cancels Watch, in any state of the stream (before its
    first event, in the middle of a backlog, caught up and waiting, at its deadline), is a routine
    disconnect: the request line says CANCELLED, and nothing is logged as an error."""
    owner, organization, _, _ = people
    for number in range(30):
        app.memberships.invite_member(owner, organization, f"backlog-{number}@example.com", "colleague")
    caplog.set_level(logging.INFO)
    with running(app) as address, MandateClient(address, TOKEN) as client:
        def watch(since: str = "0", timeout: float = 60):
            return client.events.Watch(events_pb2.WatchRequest(since_revision=since), timeout=timeout)

        watch().cancel()  # before its first event (the server may not even see this one)
        call = watch()
        next(call)  # in the middle of the backlog
        call.cancel()
        call = watch(str(app.store.current_revision() - 1))
        next(call)  # caught up: waiting for the next change
        call.cancel()
        with pytest.raises(grpc.RpcError) as ended:
            for _ in watch(str(app.store.current_revision()), timeout=0.3):
                pass
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        health = health_pb2_grpc.HealthStub(client.raw_channel).Watch(health_pb2.HealthCheckRequest())
        next(health)
        health.cancel()

        def ended_streams() -> int:
            return sum("EventService/Watch" in r.getMessage() for r in caplog.records if r.name == "mandate.request")

        assert wait_until(lambda: ended_streams() >= 3, 10), [r.getMessage() for r in caplog.records]
        gc.collect()  # an unread failure of a cancelled step is reported when it is collected
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert {r.getMessage().split()[1] for r in caplog.records
            if r.name == "mandate.request" and "Watch" in r.getMessage()} <= {"CANCELLED", "DEADLINE_EXCEEDED"}


def test_a_stream_step_failing_as_its_call_is_cancelled_is_no_asyncio_error(caplog):
    """issue 18 item 21: the race behind a cancelled Watch that logged an asyncio ERROR: the
    stream's step fails in the very moment the client cancels the call, so nobody reads its
    failure, and asyncio reports "Task exception was never retrieved" when it is collected."""
    from concurrent.futures import ThreadPoolExecutor

    from mandate.runtime.callers import Callers
    from mandate.runtime.interceptors import Plumbing, StreamLimits

    async def race() -> None:
        plumbing = Plumbing(Callers([TOKEN], None), StreamLimits(1, 1), ThreadPoolExecutor(1))
        plumbing.start()

        async def step():
            await asyncio.sleep(0)
            raise ConnectionResetError("the step failed as the client went away")

        call = asyncio.ensure_future(plumbing.draining.until(step()))
        await asyncio.sleep(0)  # the call waits on its step
        await asyncio.sleep(0)  # the step fails; the call is woken, but has not run yet
        call.cancel()  # the client cancels in that moment
        with pytest.raises(asyncio.CancelledError):
            await call
        del call
        gc.collect()
        await asyncio.sleep(0)

    caplog.set_level(logging.DEBUG, logger="asyncio")
    asyncio.run(race())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
