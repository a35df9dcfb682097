"""The AuthZEN endpoints over HTTP (`--authzen-listen ADDR`): aiohttp, on the gRPC server's own
event loop, in the same process.

    POST /access/v1/evaluation          POST /access/v1/search/subject
    POST /access/v1/evaluations         POST /access/v1/search/resource
    GET  /.well-known/authzen-configuration   POST /access/v1/search/action

What a call goes through is the gRPC plumbing's (`mandate.runtime.interceptors`): the caller is
known by the same bearer token (`Authorization: Bearer`) or client certificate (the same TLS
settings: HTTPS with --tls-cert, mTLS with --tls-client-ca), is admitted under the same limits
(requests in flight per caller, share of the workers), and every call ends with the same
request line, metrics (method `/authzen/evaluation`, ...) and span. An evaluation answered from
memory runs on the event loop, like a gRPC Check; everything else runs in the worker pool. The
answers come from `mandate.checks.authzen`.

HTTP statuses: 200 with the AuthZEN answer (a deny is a 200 too); 400 with the field it is about
(`{"status", "reason", "message", "field"}`) for a bad request or a body that is not JSON; 415 for
a Content-Type that is not JSON; 401 (no or a wrong token); 403; 404 and 405; 413 past
--max-message-bytes; 429 past the caller's limit (with Retry-After); 503 while the server starts
or drains, or the store is needed and away; 500 with an incident id. `X-Request-ID` is echoed.

The metadata document is open to everyone, like gRPC health and reflection; it lists the
endpoints under the base URL the caller used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

import grpc
from aiohttp import web

from mandate import tracing
from mandate.checks.authzen import AuthZen
from mandate.errors import InvalidArgument, Status, Unavailable
from mandate.runtime import callers
from mandate.runtime.callers import subject_rdns
from mandate.runtime.interceptors import Plumbing
from mandate.runtime.observe import Outcome
from mandate.runtime.scope import check_request
from mandate.runtime.statuses import as_domain_error

log = logging.getLogger("mandate.authzen")

BASE = "/access/v1"
ENDPOINTS = {  # path -> (metadata parameter, method name for the line, metrics and spans, AuthZen method)
    f"{BASE}/evaluation": ("access_evaluation_endpoint", "/authzen/evaluation", "evaluation"),
    f"{BASE}/evaluations": ("access_evaluations_endpoint", "/authzen/evaluations", "evaluations"),
    f"{BASE}/search/subject": ("search_subject_endpoint", "/authzen/search/subject", "search_subject"),
    f"{BASE}/search/resource": ("search_resource_endpoint", "/authzen/search/resource", "search_resource"),
    f"{BASE}/search/action": ("search_action_endpoint", "/authzen/search/action", "search_action"),
}
# The gRPC method each AuthZEN call is answered by: a caller limited to some organizations is held
# to them as for that method (runtime/scope.py), then by the method itself (the resource's organization).
GRPC_METHODS = {"evaluation": "/mandate.v1.AuthorizationService/Check",
                "evaluations": "/mandate.v1.AuthorizationService/Check",
                "search_subject": "/mandate.v1.AuthorizationService/ListActors",
                "search_resource": "/mandate.v1.AuthorizationService/ListResources",
                "search_action": "/mandate.v1.AuthorizationService/ListActions"}
WELL_KNOWN = "/.well-known/authzen-configuration"
HTTP_STATUS = {
    Status.INVALID_ARGUMENT: 400, Status.FAILED_PRECONDITION: 400, Status.UNAUTHENTICATED: 401,
    Status.PERMISSION_DENIED: 403, Status.NOT_FOUND: 404, Status.ALREADY_EXISTS: 409,
    Status.RESOURCE_EXHAUSTED: 429, Status.CANCELLED: 499, Status.UNAVAILABLE: 503, Status.DEADLINE_EXCEEDED: 504,
    Status.INTERNAL: 500,
}
# HTTP errors aiohttp raises before a handler runs, as the status codes of the request line.
FROM_HTTP = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
             413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT}
# OpenSSL's long attribute names (Python's getpeercert) -> the short ones of RFC 4514 subjects.
SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
               "stateOrProvinceName": "ST", "localityName": "L", "streetAddress": "STREET",
               "domainComponent": "DC", "userId": "UID"}


class AuthZenServer:
    """The AuthZEN HTTP endpoints of one MandateServer. Until `ready`, every call is 503."""

    def __init__(self, plumbing: Plumbing, *, max_body_bytes: int, ssl_context=None):
        self.plumbing = plumbing
        self.ssl_context = ssl_context
        self.authzen: AuthZen | None = None
        self.draining = False
        self.port = 0
        application = web.Application(client_max_size=max_body_bytes, middlewares=[self._http_errors])
        for path, (_, method, name) in ENDPOINTS.items():
            application.router.add_post(path, self._endpoint(method, name))
        application.router.add_get(WELL_KNOWN, self._configuration)
        self._runner: web.AppRunner | None = None
        self._application = application

    def ready(self, authzen: AuthZen) -> None:
        self.authzen = authzen

    async def start(self, address: str, *, reuse_port: bool = False, grace: float = 10.0) -> int:
        """Listen on host:port (port 0: any free port); returns the port."""
        host, _, port = address.rpartition(":")
        self._runner = web.AppRunner(self._application, access_log=None, handle_signals=False,
                                     shutdown_timeout=grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or None, int(port), ssl_context=self.ssl_context,
                           reuse_port=reuse_port or None)
        await site.start()
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else int(port)
        return self.port

    async def stop(self) -> None:
        """No new connections; calls in flight get the grace period, then the rest is closed."""
        self.draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- calls -------------------------------------------------------------------------------

    def _endpoint(self, method: str, name: str):
        plumbing = self.plumbing

        async def handle(request: web.Request) -> web.Response:
            outcome = Outcome("http", method)
            outcome.request_id = request.headers.get("X-Request-ID", "")
            if tracing.tracer is not None:
                outcome.trace(request.headers)
            caller = token = response = None
            try:
                authzen = self.authzen
                if authzen is None:
                    raise Unavailable("the server is starting: it is loading the policy and the fact index")
                if self.draining:
                    raise Unavailable("the server is draining; reconnect to another replica")
                caller = plumbing.callers.identify(bearer(request), self._subject(request))
                outcome.caller = caller.name
                token = callers.current.set(caller)
                plumbing.admit(caller, writes=False)
                try:
                    check_request(GRPC_METHODS[name], None, caller)
                    body = await read_json(request)
                    work = getattr(authzen, name)
                    if name == "evaluation" and authzen.answered_from_memory(body):
                        answer = work(body)
                    else:
                        answer = await plumbing.run(None, work, body)
                finally:
                    plumbing.requests.leave(caller.name)
                outcome.request, outcome.reply, outcome.decided = answer.request, answer.reply, answer.decided
                response = self._reply(request, 200, answer.body)
            except asyncio.CancelledError:
                outcome.code = grpc.StatusCode.CANCELLED
                raise
            except web.HTTPException as error:  # aiohttp's: the body was too large
                response = self._http_error(request, error, outcome)
            except Exception as error:  # noqa: BLE001 - every error becomes an HTTP status here
                response = self._error(request, as_domain_error(outcome, error))
            finally:
                if token is not None:
                    callers.current.reset(token)
                if outcome.span is not None and response is not None:
                    outcome.span.set_attribute("http.response.status_code", response.status)
                plumbing.observer.finished(outcome)
            return response

        return handle

    async def _configuration(self, request: web.Request) -> web.Response:
        """The PDP metadata document (open): the endpoints under the base URL the caller used."""
        outcome = Outcome("http", "/authzen/configuration")
        try:
            base = f"{request.scheme}://{request.host}"
            document = {"policy_decision_point": base}
            document.update({parameter: base + path for path, (parameter, _, _) in ENDPOINTS.items()})
            return self._reply(request, 200, document)
        finally:
            self.plumbing.observer.finished(outcome)

    def _subject(self, request: web.Request) -> tuple[str, ...] | None:
        """The verified client certificate's subject (mTLS), when some caller is known by one."""
        if not self.plumbing.callers.wants_subject or request.transport is None:
            return None
        ssl_object = request.transport.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        return certificate_subject(certificate) if certificate else None

    # -- answers -----------------------------------------------------------------------------

    def _reply(self, request: web.Request, status: int, body: dict, headers: dict | None = None) -> web.Response:
        headers = dict(headers or {})
        request_id = request.headers.get("X-Request-ID")
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        return web.Response(status=status, body=json.dumps(body, separators=(",", ":")).encode(),
                            content_type="application/json", headers=headers)

    def _error(self, request: web.Request, error) -> web.Response:
        status = getattr(error, "http_status", None) or HTTP_STATUS.get(error.code, 500)
        body = {"status": status, "reason": error.reason, "message": error.message}
        field = getattr(error, "field", None) or error.metadata.get("field")
        if field:
            body["field"] = field
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="mandate"'
        retry = getattr(error, "retry_seconds", None)
        if status in (429, 503):
            headers["Retry-After"] = str(max(1, math.ceil(retry or 1)))
        return self._reply(request, status, body, headers)

    @web.middleware
    async def _http_errors(self, request: web.Request, handler):
        """aiohttp's own refusals (no such path, wrong method, body too large) as JSON too."""
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            outcome = Outcome("http", "/authzen/other")
            try:
                return self._http_error(request, error, outcome)
            finally:
                self.plumbing.observer.finished(outcome)

    def _http_error(self, request: web.Request, error: web.HTTPException, outcome: Outcome) -> web.Response:
        outcome.code = FROM_HTTP.get(error.status, grpc.StatusCode.UNKNOWN)
        outcome.reason = "HTTP_" + str(error.status)
        headers = {key: value for key, value in error.headers.items() if key.lower() == "allow"}
        return self._reply(request, error.status, {"status": error.status, "reason": outcome.reason,
                                                   "message": error.reason}, headers)


class NotJson(InvalidArgument):
    http_status = 415


async def read_json(request: web.Request):
    content_type = request.headers.get("Content-Type", "")
    if content_type and request.content_type not in ("application/json",) \
            and not request.content_type.endswith("+json"):
        raise NotJson("Content-Type", "must be application/json")
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidArgument("request", "is not a JSON document") from None


def bearer(request: web.Request) -> list[tuple[str, str]]:
    """The Authorization header as the gRPC metadata callers.identify reads."""
    value = request.headers.get("Authorization")
    return [("authorization", value)] if value is not None else []


def certificate_subject(certificate: dict) -> tuple[str, ...] | None:
    """A verified peer certificate's subject (Python's getpeercert form), as the comparable RDNs
    of `callers.subject_rdns`, most specific first (RFC 4514 order, as gRPC gives it)."""
    rdns = []
    for rdn in reversed(certificate.get("subject", ())):
        rdns.append("+".join(f"{SHORT_NAMES.get(kind, kind)}={escape(value)}" for kind, value in rdn))
    if not rdns:
        return None
    try:
        return subject_rdns(",".join(rdns))
    except ValueError:
        return None


def escape(value: str) -> str:
    """An attribute value escaped as RFC 4514 says."""
    escaped = "".join("\\" + char if char in ',+"\\<>;' else char for char in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped
