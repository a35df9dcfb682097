"""mandate.client.MandateClient, the public Python client: typed helpers against a real server,
the default deadline, retries of reads (never writes) on UNAVAILABLE, and its arguments."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from mandate.client import Decision, MandateClient, read_methods
from mandate.v1 import authorization_pb2, common_pb2, membership_pb2

from tests.conftest import TOKEN


@pytest.fixture
def agency(world):
    organization = world.organization()
    colleague = world.member(organization, "colleague")
    paused = world.member(organization, "colleague")
    world.app.memberships.pause_member(world.owner_of(organization), organization, paused)
    projects = sorted(world.project(organization) for _ in range(3))
    return organization, colleague, paused, projects


def test_check_and_batch_check_answer_typed_decisions(client, agency):
    _, colleague, paused, projects = agency
    decision = client.check(colleague, "edit", f"Project:{projects[0]}")
    assert isinstance(decision, Decision) and decision.allowed and decision
    assert decision.revision and decision.policy_version
    assert not client.check(f"User:{paused}", "edit", ("Project", projects[0]))
    assert not client.check(colleague, "edit", common_pb2.ObjectRef(type="Project", id="nowhere"))
    answers = client.batch_check([(colleague, "read", f"Project:{projects[1]}"),
                                  (paused, "read", f"Project:{projects[1]}"),
                                  (colleague, "read", "Project:nowhere")])
    assert [a.allowed for a in answers] == [True, False, False]


def test_list_resources_follows_every_page(client, agency):
    _, colleague, paused, projects = agency
    assert sorted(client.list_resources(colleague, "read", "Project", page_size=1)) == projects
    assert client.list_resources(paused, "read", "Project") == []


def test_explain_gives_reasons(client, agency):
    _, colleague, paused, projects = agency
    allowed = client.explain(colleague, "edit", f"Project:{projects[0]}")
    denied = client.explain(paused, "edit", f"Project:{projects[0]}")
    assert allowed.allowed and allowed.reasons
    assert not denied.allowed and denied.reasons
    assert allowed.policy_version == client.check(colleague, "edit", f"Project:{projects[0]}").policy_version


def test_at_least_revision_reaches_the_server(client, agency):
    _, colleague, _, projects = agency
    newest = client.check(colleague, "read", f"Project:{projects[0]}").revision
    assert client.check(colleague, "read", f"Project:{projects[0]}", at_least_revision=newest).allowed


def test_a_malformed_request_is_the_servers_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as raised:
        client.check("", "read", "Project:p1")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("resource", ["p1", 42, ("Project",), None])
def test_a_resource_must_name_its_type(client, resource):
    with pytest.raises((ValueError, TypeError), match="resource"):
        client.check("alice", "read", resource)


@pytest.mark.parametrize("arguments, field", [
    ({"target": ""}, "target"),
    ({"token": ""}, "token"),
    ({"token": "a-token-with-a-line-break\n"}, "token"),
    ({"tls_cert": "cert.pem"}, "tls_cert and tls_key"),
    ({"timeout": 0}, "timeout"),
    ({"retries": 5}, "retries"),
    ({"retries": -1}, "retries"),
    ({"retries": True}, "retries"),
])
def test_bad_arguments_are_refused_by_name(arguments, field):
    with pytest.raises(ValueError, match=field):
        MandateClient(**{"target": "127.0.0.1:1", "token": TOKEN, **arguments})


def test_a_missing_certificate_file_is_an_error_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError):
        MandateClient("127.0.0.1:1", TOKEN, tls_ca=tmp_path / "no-such-ca.pem")


def test_every_read_and_no_write_is_retried():
    reads = set(read_methods())
    service = "mandate.v1.AuthorizationService"
    checks = ("Check", "BatchCheck", "ListActions", "ListResources", "ListActors", "Explain")
    assert {(service, m) for m in checks} <= reads
    assert {("mandate.v1.MembershipService", "ListMembers"), ("mandate.v1.PartnerService", "ExportClients"),
            ("mandate.v1.EventService", "ListEvents"), ("mandate.v1.EventService", "Watch")} <= reads
    assert not {(s, m) for s, m in reads if s != service and not m.startswith(("List", "Export", "Watch"))}
    assert ("mandate.v1.MembershipService", "PauseMember") not in reads


class Unavailable(grpc.GenericRpcHandler):
    """A server that is down for every call: it counts the attempts that reach it."""

    def __init__(self):
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def service(self, handler_call_details):
        with self._lock:
            self.attempts[handler_call_details.method] = self.attempts.get(handler_call_details.method, 0) + 1
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: context.abort(grpc.StatusCode.UNAVAILABLE, "down for maintenance"))


@pytest.fixture
def unavailable():
    handler = Unavailable()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield handler, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_reads_are_retried_on_unavailable_and_writes_are_not(unavailable):
    handler, address = unavailable
    with MandateClient(address, TOKEN, retries=2) as client:
        with pytest.raises(grpc.RpcError) as read:
            client.check("alice", "read", "Project:p1")
        with pytest.raises(grpc.RpcError) as write:
            client.membership.PauseMember(membership_pb2.MemberRequest(actor_id="alice", organization_id="o",
                                                                       user_id="bob"))
    assert read.value.code() == write.value.code() == grpc.StatusCode.UNAVAILABLE
    assert handler.attempts == {"/mandate.v1.AuthorizationService/Check": 3,
                                "/mandate.v1.MembershipService/PauseMember": 1}


def test_retries_can_be_turned_off(unavailable):
    handler, address = unavailable
    with MandateClient(address, TOKEN, retries=0) as client, pytest.raises(grpc.RpcError):
        client.authorization.Check(authorization_pb2.CheckRequest())
    assert handler.attempts == {"/mandate.v1.AuthorizationService/Check": 1}


def test_unary_calls_get_the_default_deadline():
    """A server that never answers: the call ends at the client's deadline, not never."""
    release = threading.Event()

    def never_answers(request, context):
        release.wait(30)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[
        grpc.method_handlers_generic_handler("mandate.v1.AuthorizationService", {
            "Check": grpc.unary_unary_rpc_method_handler(never_answers)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with MandateClient(f"127.0.0.1:{port}", TOKEN, timeout=0.2) as client, pytest.raises(grpc.RpcError) as raised:
            client.check("alice", "read", "Project:p1")
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()
        server.stop(grace=None)


TLS = Path(__file__).resolve().parents[1] / "tls"


@pytest.fixture
def tls_server():
    """A server that speaks only TLS, wants a client certificate signed by the test CA, and
    answers Check with whether the caller showed both that certificate and the token."""

    def check(request, context):
        subject = context.auth_context().get("x509_common_name", [b""])[0]
        token = dict(context.invocation_metadata()).get("authorization")
        return authorization_pb2.CheckResponse(allowed=subject == b"billing" and token == f"Bearer {TOKEN}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[
        grpc.method_handlers_generic_handler("mandate.v1.AuthorizationService", {
            "Check": grpc.unary_unary_rpc_method_handler(
                check, request_deserializer=authorization_pb2.CheckRequest.FromString,
                response_serializer=authorization_pb2.CheckResponse.SerializeToString)})])
    credentials = grpc.ssl_server_credentials([((TLS / "server.key").read_bytes(), (TLS / "server.pem").read_bytes())],
                                              root_certificates=(TLS / "ca.pem").read_bytes(),
                                              require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"localhost:{port}"
    server.stop(grace=None)


def test_tls_with_a_client_certificate_and_the_token(tls_server):
    with MandateClient(tls_server, TOKEN, tls_ca=TLS / "ca.pem", tls_cert=TLS / "client.pem",
                       tls_key=TLS / "client.key") as client:
        assert client.check("alice", "read", "Project:p1").allowed


def test_tls_without_the_client_certificate_is_refused(tls_server):
    with MandateClient(tls_server, TOKEN, tls_ca=TLS / "ca.pem", retries=0, timeout=30) as client:
        with pytest.raises(grpc.RpcError) as raised:
            client.check("alice", "read", "Project:p1")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_to_a_tls_server_is_refused(tls_server):
    with MandateClient(tls_server, TOKEN, retries=0, timeout=30) as client, pytest.raises(grpc.RpcError) as raised:
        client.check("alice", "read", "Project:p1")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
