"""The public Python client of Mandate.

    from mandate.client import MandateClient

    with MandateClient("mandate.internal:50051", token, tls_ca="ca.pem") as mandate:
        if mandate.check("alice", "edit", "Project:spring-campaign"):
            ...
        mandate.list_resources("alice", "read", "Project")        # ['spring-campaign', ...]
        mandate.explain("bob", "edit", "Project:spring-campaign").reasons

One channel carries every call. The typed helpers (`check`, `batch_check`, `list_resources`,
`explain`) cover the check plane; every RPC of the contract is also there as a stub
(`mandate.authorization`, `.directory`, `.membership`, `.partner`, `.events`, and `.admin` for
callers with `admin = true`), taking the
request messages of `mandate.v1`.

- The token goes on every call as `authorization: Bearer <token>`.
- TLS: `tls_ca` (the CA that signed the server's certificate; without it, `tls=True` trusts the
  system's roots), and `tls_cert` with `tls_key` for a client certificate.
- Every unary call without a deadline of its own gets `timeout` seconds (default 10);
  `EventService.Watch` streams get none.
- Reads (the whole AuthorizationService, and the `List*`, `Export*` and `Watch` calls of the
  other services) are retried on `UNAVAILABLE`, up to `retries` more times with exponential
  backoff, inside the same deadline. Writes are never retried: a write that may have happened
  is for the caller to retry (with its `request_id`).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mandate.v1 import (
    admin_pb2_grpc,
    authorization_pb2,
    authorization_pb2_grpc,
    common_pb2,
    directory_pb2,
    directory_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
)

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
MAX_RETRIES = 4  # gRPC caps a call at five attempts
READ_PREFIXES = ("List", "Export", "Watch")

# An actor is a user id ("alice") or "User:alice"; a resource is "Type:id", a (type, id) pair or an ObjectRef.
Ref = str | tuple[str, str] | common_pb2.ObjectRef


@dataclass(frozen=True)
class Decision:
    """The answer to a check; true when allowed, so `if mandate.check(...)` reads as it should."""

    allowed: bool
    revision: str
    policy_version: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Explanation:
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    revision: str = ""
    policy_version: str = ""

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Review:
    """An access review: every page of it, all at one revision."""

    entries: list  # authorization_pb2.AccessEntry
    revision: str
    policy_version: str


def read_methods() -> list[tuple[str, str]]:
    """(service, method) of every read in the contract, from the generated descriptors, so a
    new RPC is classified by its name without a list to keep up to date."""
    reads = []
    for module in (authorization_pb2, directory_pb2, membership_pb2, partner_pb2, events_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if service.name == "AuthorizationService" or method.name.startswith(READ_PREFIXES):
                    reads.append((service.full_name, method.name))
    return reads


def service_config(retries: int) -> str:
    """The channel's service config: the retry policy of the reads."""
    if retries == 0:
        return json.dumps({})
    return json.dumps({"methodConfig": [{
        "name": [{"service": service, "method": method} for service, method in read_methods()],
        "retryPolicy": {"maxAttempts": retries + 1, "initialBackoff": "0.1s", "maxBackoff": "2s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }]})


class _ClientCallDetails(
    collections.namedtuple("_ClientCallDetails", ("method", "timeout", "metadata", "credentials",
                                                  "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _CallDefaults(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor):
    """Adds the bearer token to every call, and the default deadline to unary calls without one."""

    def __init__(self, token: str | None, timeout: float | None):
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout

    def _details(self, details, timeout):
        metadata = tuple(details.metadata or ()) + self._metadata
        return _ClientCallDetails(details.method, timeout, metadata, details.credentials,
                                  details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        timeout = self._timeout if client_call_details.timeout is None else client_call_details.timeout
        return continuation(self._details(client_call_details, timeout), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, client_call_details.timeout), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details, client_call_details.timeout), request_iterator)


def object_ref(value: Ref, default_type: str | None, what: str) -> common_pb2.ObjectRef:
    if isinstance(value, common_pb2.ObjectRef):
        return value
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(part, str) for part in value):
        return common_pb2.ObjectRef(type=value[0], id=value[1])
    if not isinstance(value, str):
        raise TypeError(f"{what}: expected 'Type:id', a (type, id) pair or an ObjectRef, not {value!r}")
    kind, separator, ident = value.partition(":")
    if not separator:
        if default_type is None:
            raise ValueError(f"{what}: {value!r} names no type; write it as 'Type:id', e.g. 'Project:{value}'")
        kind, ident = default_type, value
    return common_pb2.ObjectRef(type=kind, id=ident)


def _read_file(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


class MandateClient:
    """A connection to one Mandate server; see the module's documentation."""

    def __init__(self, target: str, token: str | None = None, *, tls: bool = False,
                 tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, options: Iterable[tuple[str, object]] = ()):
        if not isinstance(target, str) or not target.strip():
            raise ValueError("target: expected host:port")
        if token is not None and (not isinstance(token, str) or not token or token != token.strip()
                                  or any(c in token for c in "\r\n")):
            raise ValueError("token: expected a non-empty string without surrounding spaces or line breaks")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key: a client certificate needs both")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout: expected a number of seconds above 0, or None for no default deadline")
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"retries: expected 0 to {MAX_RETRIES}")
        self.target = target
        self.timeout = timeout
        channel_options = [("grpc.service_config", service_config(retries)), *options]
        if tls or tls_ca is not None or tls_cert is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=_read_file(tls_ca),
                                                       private_key=_read_file(tls_key),
                                                       certificate_chain=_read_file(tls_cert))
            self.raw_channel = grpc.secure_channel(target, credentials, options=channel_options)
        else:
            self.raw_channel = grpc.insecure_channel(target, options=channel_options)
        self.channel = grpc.intercept_channel(self.raw_channel, _CallDefaults(token, timeout))
        self.authorization = authorization_pb2_grpc.AuthorizationServiceStub(self.channel)
        self.directory = directory_pb2_grpc.DirectoryServiceStub(self.channel)
        self.membership = membership_pb2_grpc.MembershipServiceStub(self.channel)
        self.partner = partner_pb2_grpc.PartnerServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)  # admin callers only

    # The check plane, typed. `at_least_revision` waits for data at least that new (a revision
    # a write returned); `at_revision` and `as_of` ask about the past, where the server has history.

    def check(self, actor: Ref, action: str, resource: Ref, *, at_least_revision: str = "", at_revision: str = "",
              as_of: str = "", timeout: float | None = None) -> Decision:
        reply = self.authorization.Check(
            self._check_request(actor, action, resource, at_least_revision, at_revision, as_of), timeout=timeout)
        return Decision(reply.allowed, reply.revision, reply.policy_version)

    def batch_check(self, checks: Iterable[tuple[Ref, str, Ref]], *, at_least_revision: str = "",
                    at_revision: str = "", as_of: str = "", timeout: float | None = None) -> list[Decision]:
        """Up to 1000 (actor, action, resource) checks in one call; the answers in the same order."""
        request = authorization_pb2.BatchCheckRequest(checks=[
            self._check_request(actor, action, resource, at_least_revision, at_revision, as_of)
            for actor, action, resource in checks])
        reply = self.authorization.BatchCheck(request, timeout=timeout)
        return [Decision(result.allowed, result.revision, result.policy_version) for result in reply.results]

    def list_resources(self, actor: Ref, action: str, resource_type: str, *, at_least_revision: str = "",
                       at_revision: str = "", as_of: str = "", page_size: int = 0,
                       timeout: float | None = None) -> list[str]:
        """The ids of every resource of the type the actor may take the action on (all pages)."""
        ids: list[str] = []
        page_token = ""
        while True:
            request = authorization_pb2.ListResourcesRequest(
                actor=object_ref(actor, "User", "actor"), action=action, resource_type=resource_type,
                page_size=page_size, page_token=page_token,
                **_history(at_least_revision, at_revision, as_of))
            reply = self.authorization.ListResources(request, timeout=timeout)
            ids.extend(reply.resource_ids)
            page_token = reply.next_page_token
            if not page_token:
                return ids

    def explain(self, actor: Ref, action: str, resource: Ref, *, at_least_revision: str = "", at_revision: str = "",
                as_of: str = "", timeout: float | None = None) -> Explanation:
        reply = self.authorization.Explain(
            self._check_request(actor, action, resource, at_least_revision, at_revision, as_of), timeout=timeout)
        return Explanation(reply.allowed, list(reply.reasons), reply.revision, reply.policy_version)

    def access_review(self, organization_id: str, *, at_revision: str = "", as_of: str = "", page_size: int = 1000,
                      timeout: float | None = None) -> Review:
        """Every page of the organization's access review. The pages after the first ask about the
        first page's revision, so the whole review describes one moment even while it changes."""
        entries: list = []
        page_token = ""
        request = authorization_pb2.AccessReviewRequest(organization_id=organization_id, page_size=page_size,
                                                        **_history("", at_revision, as_of))
        while True:
            request.page_token = page_token
            reply = self.authorization.AccessReview(request, timeout=timeout)
            entries.extend(reply.entries)
            page_token = reply.next_page_token
            if not page_token:
                return Review(entries, reply.revision, reply.policy_version)
            request.ClearField("as_of")
            request.at_revision = reply.revision

    @staticmethod
    def _check_request(actor, action, resource, at_least_revision, at_revision, as_of):
        return authorization_pb2.CheckRequest(actor=object_ref(actor, "User", "actor"), action=action,
                                              resource=object_ref(resource, None, "resource"),
                                              **_history(at_least_revision, at_revision, as_of))

    def close(self) -> None:
        self.raw_channel.close()

    def __enter__(self) -> MandateClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _history(at_least_revision: str, at_revision: str, as_of: str) -> dict[str, str]:
    """Only the fields given: the helpers then work with stubs from before the history fields."""
    fields = {"at_least_revision": at_least_revision, "at_revision": at_revision, "as_of": as_of}
    return {name: value for name, value in fields.items() if value}
