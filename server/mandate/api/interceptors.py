"""The one place where requests are authenticated and errors become statuses.

Domain errors become their status code with a google.rpc.ErrorInfo carrying the reason.
Anything unexpected becomes INTERNAL with an incident id; the details go to the server log
only. A check that fails this way is an error, never an allow (R24)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from mandate.errors import DomainError, Unauthenticated

log = logging.getLogger("mandate.rpc")

DOMAIN = "mandate.v1"
# Standard services any caller may use without a token: probes and schema discovery.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def error_status(code: grpc.StatusCode, reason: str, message: str, metadata: dict | None = None):
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=f"{reason}: {message}",
                                                  details=[detail]))


class Authentication:
    def __init__(self, tokens: list[str]):
        # Keep digests only, and compare digests in constant time.
        self._digests = [hashlib.sha256(t.encode()).digest() for t in tokens]

    def check(self, metadata) -> None:
        presented = ""
        for key, value in metadata or ():
            if key == "authorization":
                presented = value
        scheme, _, token = presented.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        digest = hashlib.sha256(token.strip().encode()).digest()
        if not any(hmac.compare_digest(digest, known) for known in self._digests):
            raise Unauthenticated("the bearer token is not valid")


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, authentication: Authentication):
        self.authentication = authentication

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        needs_token = not method.startswith(OPEN_PREFIXES)
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary:
            inner = handler.unary_unary

            def unary(request, context):
                try:
                    if needs_token:
                        self.authentication.check(metadata)
                    return inner(request, context)
                except Exception as error:  # noqa: BLE001 - every error is turned into a status here
                    abort(context, method, error)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            def stream(request, context):
                try:
                    if needs_token:
                        self.authentication.check(metadata)
                    yield from inner_stream(request, context)
                except Exception as error:  # noqa: BLE001
                    abort(context, method, error)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if needs_token:
            # Only unary and server-streaming RPCs are wrapped above: anything else under a
            # protected service would skip authentication, so it is refused outright.
            raise RuntimeError(f"{method}: streaming kind not supported by the interceptor")
        return handler


def abort(context: grpc.ServicerContext, method: str, error: Exception):
    if isinstance(error, DomainError):
        log.info("%s refused: %s %s", method, error.reason, error.message)
        context.abort_with_status(error_status(error.code, error.reason, error.message, error.metadata))
    incident = uuid.uuid4().hex[:12]
    log.exception("%s failed (incident %s)", method, incident)
    context.abort_with_status(error_status(grpc.StatusCode.INTERNAL, "INTERNAL",
                                           f"internal error; incident {incident} is in the server log"))
