"""OpenTelemetry traces (issue 23, item 2): `mandate serve` with the standard OTEL_* variables
sends its spans over OTLP to a receiver inside the test (a gRPC TraceService of the
opentelemetry-proto package). A gRPC call and an AuthZEN call that carry a W3C `traceparent`
continue the caller's trace; the server span names the method, the caller, the status code and the
revision, a write's store span is its child, and no span holds an email."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from concurrent import futures

import grpc
import pytest
from mandate import tracing
from mandate.client import MandateClient
from mandate.v1 import directory_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import POLICY_DIR, TOKEN
from tests.support import free_port, wait_until

TRACE_GRPC, TRACE_HTTP = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_GRPC, PARENT_HTTP = "b7ad6b7169203331", "00f067aa0ba902b7"
EMAIL = "traced-person@example.com"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps every span with its resource's attributes."""

    def __init__(self):
        self.spans = []
        self.raw = []
        self.service_names = set()
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            self.raw.append(request.SerializeToString())
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self.service_names.add(attribute.value.string_value)
                for scope in resource_spans.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list:
        with self.lock:
            return [s for s in self.spans if s.trace_id.hex() == trace_id]


def attributes(span) -> dict:
    found = {}
    for attribute in span.attributes:
        value = attribute.value
        found[attribute.key] = getattr(value, value.WhichOneof("value"))
    return found


@pytest.fixture
def receiver():
    receiving = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiving, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiving, port
    server.stop(None)


def test_spans_arrive_at_an_otlp_receiver_with_the_callers_trace_id(receiver, database_url, tmp_path):
    """issue 23 item 2: one server span per RPC and per AuthZEN call, in the trace the caller's
    traceparent names, with method, caller, status code and revision; the store's write is a child
    span; nothing personal in any span."""
    receiving, receiver_port = receiver
    listen, authzen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_DATABASE_URL": database_url,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_SERVICE_NAME": "mandate-under-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mandate.cli", "serve", "--listen", listen,
                                    "--authzen-listen", authzen, "--policy-dir", str(POLICY_DIR)],
                                   env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: "mandate serving" in log_path.read_text() or process.poll() is not None, 60), \
            log_path.read_text()
        with MandateClient(listen, TOKEN) as client:
            traceparent = f"00-{TRACE_GRPC}-{PARENT_GRPC}-01"
            registered = client.directory.RegisterUser(
                directory_pb2.RegisterUserRequest(email=EMAIL, display_name="Traced Person"),
                metadata=(("traceparent", traceparent),))
        request = urllib.request.Request(
            f"http://{authzen}/access/v1/evaluation", method="POST",
            data=json.dumps({"subject": {"type": "user", "id": registered.id}, "action": {"name": "read"},
                             "resource": {"type": "project", "id": "p1"}}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}",
                     "traceparent": f"00-{TRACE_HTTP}-{PARENT_HTTP}-01"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read())["decision"] is False

        def arrived() -> bool:
            names = {s.name for s in receiving.of_trace(TRACE_GRPC)}
            return "mandate.store.write" in names and bool(receiving.of_trace(TRACE_HTTP))

        assert wait_until(arrived, 30), [s.name for s in receiving.spans]
    finally:
        process.terminate()
        process.wait(timeout=30)

    rpc = next(s for s in receiving.of_trace(TRACE_GRPC) if s.name == "/mandate.v1.DirectoryService/RegisterUser")
    assert rpc.parent_span_id.hex() == PARENT_GRPC
    assert rpc.kind == rpc.SPAN_KIND_SERVER
    seen = attributes(rpc)
    assert seen["rpc.system"] == "grpc" and seen["rpc.method"] == "RegisterUser"
    assert seen["mandate.caller"] == "env-0" and seen["rpc.grpc.status_code"] == 0
    write = next(s for s in receiving.of_trace(TRACE_GRPC) if s.name == "mandate.store.write")
    assert write.parent_span_id == rpc.span_id
    assert attributes(write)["mandate.revision"].isdigit()
    call = next(s for s in receiving.of_trace(TRACE_HTTP) if s.name == "/authzen/evaluation")
    assert call.parent_span_id.hex() == PARENT_HTTP
    seen = attributes(call)
    assert seen["rpc.system"] == "http" and seen["mandate.caller"] == "env-0"
    assert seen["rpc.grpc.status_code"] == 0 and seen["mandate.revision"].isdigit()
    assert seen["http.response.status_code"] == 200
    assert receiving.service_names == {"mandate-under-test"}
    everything = b"".join(receiving.raw)
    assert EMAIL.encode() not in everything and registered.id.encode() not in everything


def test_tracing_is_off_without_the_otel_variables():
    """issue 23 item 2: no endpoint, no tracing (and nothing on the hot path: no tracer)."""
    assert tracing.tracer is None
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    assert tracing.span("anything") is tracing.span("anything else")  # one shared no-op
