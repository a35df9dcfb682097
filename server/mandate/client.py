"""A small Python client: one channel, every service stub, the bearer token on every call."""

from __future__ import annotations

import collections

import grpc

from mandate.v1 import (
    authorization_pb2_grpc,
    directory_pb2_grpc,
    events_pb2_grpc,
    membership_pb2_grpc,
    partner_pb2_grpc,
)


class _ClientCallDetails(
    collections.namedtuple("_ClientCallDetails", ("method", "timeout", "metadata", "credentials",
                                                  "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, token: str):
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _details(self, details):
        metadata = tuple(details.metadata or ()) + self._metadata
        return _ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                  details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


class MandateClient:
    """`client.authorization.Check(...)`, `client.membership.InviteMember(...)`, ..."""

    def __init__(self, target: str, token: str):
        self.target = target
        self.raw_channel = grpc.insecure_channel(target)
        self.channel = grpc.intercept_channel(self.raw_channel, _BearerToken(token))
        self.authorization = authorization_pb2_grpc.AuthorizationServiceStub(self.channel)
        self.directory = directory_pb2_grpc.DirectoryServiceStub(self.channel)
        self.membership = membership_pb2_grpc.MembershipServiceStub(self.channel)
        self.partner = partner_pb2_grpc.PartnerServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)

    def close(self) -> None:
        self.raw_channel.close()

    def __enter__(self) -> MandateClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
