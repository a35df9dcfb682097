"""The one place where requests are authenticated, parsed, run, limited, and where errors
become statuses.

Every method handler is wrapped once, when the services are registered (`Plumbing.wrap`):

- Callers present a bearer token; health checking and reflection are open to anyone.
- The request is parsed here, not by gRPC: a malformed body or invalid UTF-8 is
  INVALID_ARGUMENT with an ErrorInfo, like any other bad request.
- Blocking work (SQL, mutations, big batches) runs in a bounded pool of worker threads, so the
  event loop is never held by a call. A call whose deadline passed while it waited for a worker
  is not started, and the store commits nothing once the deadline has passed (`deadlines`).
  Methods listed as inline (a `Check` answered from memory) run on the event loop itself.
- Streams (ours, health `Watch`, reflection) are counted per caller and in total; past either
  limit a new stream is RESOURCE_EXHAUSTED, reason TOO_MANY_STREAMS. While the server drains,
  open streams end with UNAVAILABLE, so their callers reconnect to another replica.
- Domain errors become their status code with a google.rpc.ErrorInfo carrying the reason.
  Anything unexpected becomes INTERNAL with an incident id; the details go to the server log
  only. A check that fails this way is an error, never an allow (R24).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc.aio import AbortError
from grpc_status import rpc_status

from mandate import deadlines
from mandate.errors import DomainError, InvalidArgument, TooManyStreams, Unauthenticated, Unavailable

log = logging.getLogger("mandate.rpc")

DOMAIN = "mandate.v1"
# Standard services any caller may use without a token: probes and schema discovery.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
DEFAULT_STREAMS_PER_CALLER = 100
DEFAULT_STREAMS = 1000


def error_status(code: grpc.StatusCode, reason: str, message: str, metadata: dict | None = None):
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=f"{reason}: {message}",
                                                  details=[detail]))


class Authentication:
    """Callers known by token. Tokens from MANDATE_API_TOKENS are named env-0, env-1, ..."""

    def __init__(self, tokens: list[str]):
        # Keep digests only, and compare digests in constant time.
        self._callers = [(f"env-{n}", hashlib.sha256(t.encode()).digest()) for n, t in enumerate(tokens)]

    def caller(self, metadata) -> str:
        """The name of the caller that presented the token, or Unauthenticated."""
        presented = ""
        for key, value in metadata or ():
            if key == "authorization":
                presented = value
        scheme, _, token = presented.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        digest = hashlib.sha256(token.strip().encode()).digest()
        name = None
        for candidate, known in self._callers:  # no early exit: the time taken says nothing
            if hmac.compare_digest(digest, known):
                name = candidate
        if name is None:
            raise Unauthenticated("the bearer token is not valid")
        return name

    def check(self, metadata) -> None:
        self.caller(metadata)


class StreamLimits:
    """Open streams per caller and in total. Used on the event loop only, so it needs no lock."""

    def __init__(self, per_caller: int = DEFAULT_STREAMS_PER_CALLER, total: int = DEFAULT_STREAMS):
        self.per_caller = per_caller
        self.total = total
        self.open: dict[str, int] = {}
        self.open_total = 0

    @contextlib.contextmanager
    def hold(self, caller: str):
        if self.open_total >= self.total:
            raise TooManyStreams(f"the server holds its limit of {self.total} open streams; retry later")
        if self.open.get(caller, 0) >= self.per_caller:
            raise TooManyStreams(f"caller {caller} holds its limit of {self.per_caller} open streams; "
                                 "close one first")
        self.open[caller] = self.open.get(caller, 0) + 1
        self.open_total += 1
        try:
            yield
        finally:
            self.open_total -= 1
            left = self.open[caller] - 1
            if left:
                self.open[caller] = left
            else:
                del self.open[caller]


class Plumbing:
    """Wraps method handlers: authentication, parsing, where the work runs, limits, errors."""

    def __init__(self, authentication: Authentication, limits: StreamLimits, workers: Executor,
                 inline: dict[str, Callable] | None = None):
        self.authentication = authentication
        self.limits = limits
        self.workers = workers
        # method -> predicate(request): True when the call is pure in-memory work to run inline.
        self.inline = inline or {}
        self.draining: asyncio.Future | None = None  # made on the loop by start()

    def start(self) -> None:
        """Call on the event loop before serving."""
        self.draining = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        """End every open stream (UNAVAILABLE) and every stream opened from now on."""
        if self.draining is not None and not self.draining.done():
            self.draining.set_result(None)

    async def run(self, context, function, *args):
        """Run blocking `function(*args)` in the worker pool, under the caller's deadline."""
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        return await asyncio.get_running_loop().run_in_executor(
            self.workers, deadlines.run_within, deadline, function, *args)

    # -- wrapping ------------------------------------------------------------------------------

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler), response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler, handler.unary_stream, parse=handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.stream_stream and method.startswith(OPEN_PREFIXES):  # reflection
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler, handler.stream_stream, parse=None),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        # Anything else under a protected service would skip authentication: refuse to serve it.
        raise RuntimeError(f"{method}: streaming kind not supported by the plumbing")

    def _unary(self, method: str, handler):
        inner, parse = handler.unary_unary, handler.request_deserializer
        needs_token = not method.startswith(OPEN_PREFIXES)
        authentication = self.authentication
        if inspect.iscoroutinefunction(inner):  # grpc's own async servicers (health)
            async def call_async(raw, context):
                try:
                    if needs_token:
                        authentication.caller(context.invocation_metadata())
                    return await inner(parse_request(method, parse, raw), context)
                except AbortError:
                    raise
                except Exception as error:  # noqa: BLE001 - every error is turned into a status here
                    await abort(context, method, error)

            return call_async
        inline = self.inline.get(method)
        run = self.run

        async def call(raw, context):
            try:
                if needs_token:
                    authentication.caller(context.invocation_metadata())
                request = parse_request(method, parse, raw)
                if inline is not None and inline(request):
                    return inner(request, context)
                return await run(context, inner, request, context)
            except Exception as error:  # noqa: BLE001
                await abort(context, method, error)

        return call

    def _stream(self, method: str, handler, inner, parse):
        """A stream holds no thread: `inner` must be async (an async generator, or a coroutine
        that writes with context.write, as grpc's health Watch does)."""
        if not (inspect.isasyncgenfunction(inner) or inspect.iscoroutinefunction(inner)):
            raise RuntimeError(f"{method}: a streaming handler must be async so that it holds no thread")
        needs_token = not method.startswith(OPEN_PREFIXES)
        plumbing = self

        def caller_of(context) -> str:
            metadata = context.invocation_metadata()
            if needs_token:
                return plumbing.authentication.caller(metadata)
            try:
                return plumbing.authentication.caller(metadata)
            except Unauthenticated:
                return "peer:" + peer_host(context.peer())

        if inspect.iscoroutinefunction(inner):
            async def written(request, context):
                try:
                    with plumbing.limits.hold(caller_of(context)):
                        request = parse_request(method, parse, request)
                        await plumbing._until_drained(inner(request, context))
                except AbortError:
                    raise
                except Exception as error:  # noqa: BLE001
                    await abort(context, method, error)

            return written

        async def relayed(request, context):
            try:
                with plumbing.limits.hold(caller_of(context)):
                    if parse is not None:
                        request = parse_request(method, parse, request)
                    responses = inner(request, context)
                    try:
                        while True:
                            try:
                                response = await plumbing._until_drained(responses.__anext__())
                            except StopAsyncIteration:
                                return
                            yield response
                    finally:
                        await responses.aclose()
            except AbortError:
                raise
            except Exception as error:  # noqa: BLE001
                await abort(context, method, error)

        return relayed

    async def _until_drained(self, awaitable):
        """Await `awaitable`, unless the server starts draining first."""
        draining = self.draining
        if draining is None:
            return await awaitable
        if draining.done():
            raise Unavailable("the server is draining; reconnect to another replica")
        step = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait((step, draining), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not step.done():  # draining, or this call was cancelled: stop the step first
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
        if step.cancelled():
            raise Unavailable("the server is draining; reconnect to another replica")
        return step.result()


def parse_request(method: str, parse, raw):
    if parse is None:
        return raw
    try:
        return parse(raw)
    except DecodeError:
        raise InvalidArgument("request", f"is not a valid {method.rsplit('/', 1)[-1]} request "
                                         "(malformed protobuf, or a string that is not UTF-8)") from None


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:53211' -> '10.0.0.7'; 'ipv6:[::1]:53211' -> '[::1]'; 'unix:...' as is."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return address.rsplit(":", 1)[0]
    return peer


async def abort(context, method: str, error: Exception):
    if isinstance(error, DomainError):
        log.info("%s refused: %s %s", method, error.reason, error.message)
        await context.abort_with_status(error_status(error.code, error.reason, error.message, error.metadata))
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", method, incident, exc_info=error)
    await context.abort_with_status(error_status(grpc.StatusCode.INTERNAL, "INTERNAL",
                                                 f"internal error; incident {incident} is in the server log"))
