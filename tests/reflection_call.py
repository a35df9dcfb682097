"""A grpcurl in a few lines: call an RPC of a running server knowing only its name, through
server reflection, with a JSON request, and print the services and the JSON reply.

tests/public/test_package.py runs it with the Python of a virtualenv that has mandate installed from
the wheel, and it imports no mandate module: only what any gRPC client in Python has.

    python reflection_call.py HOST:PORT TOKEN mandate.v1.AuthorizationService/Check '{"action": "read", ...}'
"""

from __future__ import annotations

import json
import sys
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def main(target: str, token: str, method_path: str, request_json: str) -> int:
    service_name, _, method_name = method_path.partition("/")
    with grpc.insecure_channel(target) as channel:
        wait_serving(channel, service_name, seconds=60)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        method = descriptor_pool.DescriptorPool(database).FindServiceByName(service_name).methods_by_name[method_name]
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(f"/{service_name}/{method_name}", request_serializer=request_class.SerializeToString,
                                   response_deserializer=reply_class.FromString)
        reply = call(json_format.Parse(request_json, request_class()),
                     metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    reply_json = json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)
    print(json.dumps({"services": services, "reply": reply_json}))
    return 0


def wait_serving(channel: grpc.Channel, service: str, seconds: float) -> None:
    """Until the server's health check says the service is SERVING (a server may listen before
    it has loaded its policy and data)."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + seconds
    while True:
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1, wait_for_ready=True)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} was not SERVING within {seconds} s")
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
