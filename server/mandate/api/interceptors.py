"""The one place where requests are authenticated, parsed, run, limited, and where errors
become statuses.

Every method handler is wrapped once, when the services are registered (`Plumbing.wrap`):

- Callers are known by name (`mandate.callers`): by a bearer token, a client certificate, or
  both; the caller of the request is in `callers.current` while it is served, in the worker
  thread too. Health checking and reflection are open to anyone. A read-only caller gets
  PERMISSION_DENIED, reason READ_ONLY_CALLER, for every method that is not known to change
  nothing (`changes_nothing`), and no `email` field in any reply (`convert.clear_emails`). A
  caller limited to some organizations is held to them (`api/scope.py`) before the request runs.
  AdminService answers only callers with `admin = true` (others: PERMISSION_DENIED, reason
  ADMIN_ONLY).
- Each caller has a limit of requests in flight (past it: RESOURCE_EXHAUSTED, reason
  TOO_MANY_REQUESTS, with a google.rpc.RetryInfo) and a share of the worker threads, so one
  busy caller does not slow the others.
- The request is parsed here, not by gRPC: a malformed body or invalid UTF-8 is
  INVALID_ARGUMENT with an ErrorInfo, like any other bad request.
- Blocking work (SQL, mutations, big batches) runs in a bounded pool of worker threads, so the
  event loop is never held by a call. A call whose deadline passed while it waited for a worker
  is not started, and the store commits nothing once the deadline has passed (`deadlines`).
  Methods listed as inline (a `Check` answered from memory) run on the event loop itself.
- Streams (ours, health `Watch`, reflection, and the client stream of AdminService.Import)
  are counted per caller and in total; past either
  limit a new stream is RESOURCE_EXHAUSTED, reason TOO_MANY_STREAMS. While the server drains,
  open streams end with UNAVAILABLE, so their callers reconnect to another replica. A reload of
  the callers file ends the streams whose caller lost the right to them (`callers_reloaded`).
- Domain errors become their status code with a google.rpc.ErrorInfo carrying the reason.
  Anything unexpected becomes INTERNAL with an incident id; the details go to the server log
  only. A check that fails this way is an error, never an allow (R24).
- Every call ends with one log line (logger `mandate.request`: method, caller, actor, status
  code, reason, duration, revision, incident id) and its metrics (`mandate.metrics`), and, while
  tracing is on (`mandate.tracing`), one server span.

The AuthZEN endpoints (`mandate.api.http`) use the same pieces: `identify` and `admit` for the
caller, `run` for the workers, `failure` for errors, and the Observer for the line and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
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
from sqlalchemy.exc import DBAPIError

from mandate import callers, deadlines, metrics, tracing
from mandate.api.convert import clear_emails
from mandate.api.scope import check_request
from mandate.callers import Caller, Callers, peer_subject
from mandate.errors import (
    AdminOnly,
    DatabaseUnavailable,
    DomainError,
    InvalidArgument,
    ReadOnlyCaller,
    Status,
    TooManyRequests,
    TooManyStreams,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("mandate.rpc")
request_log = logging.getLogger("mandate.request")

DOMAIN = "mandate.v1"
# Standard services any caller may use without a token: probes and schema discovery.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
DEFAULT_STREAMS_PER_CALLER = 100
DEFAULT_STREAMS = 1000
DEFAULT_REQUESTS_PER_CALLER = 200
# Services and method names that change nothing: a read-only caller may call them.
READ_SERVICES = ("mandate.v1.AuthorizationService", "mandate.v1.EventService", "authzen")
READ_PREFIXES = ("Get", "List", "Export")
CHECK = "/mandate.v1.AuthorizationService/Check"
ADMIN = "/mandate.v1.AdminService/"  # only callers with `admin = true` (callers file)
CHECK_PLANE = "/mandate.v1.AuthorizationService/"
DECISIONS = (CHECK, "/mandate.v1.AuthorizationService/BatchCheck")
AUTHZEN = "/authzen/"  # the AuthZEN calls' method names (mandate.api.http): the check plane too
# Codes that make a server span an error: the server failed, not the request (OpenTelemetry's rule).
SERVER_FAILURES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
MAX_LOGGED = 200  # characters of a request's value on its log line


# The one table from a domain error's status to the gRPC code that carries it.
GRPC_CODES = {status: grpc.StatusCode[status.name] for status in Status}


def error_status(code: grpc.StatusCode, reason: str, message: str, metadata: dict | None = None,
                 retry_seconds: float | None = None):
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    details = [any_pb2.Any()]
    details[0].Pack(info)
    if retry_seconds is not None:  # google.rpc.RetryInfo: waiting this long helps
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(int(retry_seconds * 1000))
        details.append(any_pb2.Any())
        details[1].Pack(retry)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=f"{reason}: {message}",
                                                  details=details))


def require_admin(method: str, caller: Caller) -> None:
    """AdminService (import, export, erasure) answers only callers with `admin = true`."""
    if method.startswith(ADMIN) and not caller.admin:
        raise AdminOnly(f"caller {caller.name} may not call AdminService (callers file: admin = true)")


def changes_nothing(method: str) -> bool:
    """Methods a read-only caller may call. Anything not known to change nothing is a mutation
    (fail closed): a new RPC is writable only by writers until it is listed here."""
    service, _, name = method.strip("/").partition("/")
    return method.startswith(OPEN_PREFIXES) or service in READ_SERVICES or name.startswith(READ_PREFIXES)


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


class RequestLimits:
    """Requests in flight per caller, and the share of the worker pool one caller may hold.

    Past `per_caller` requests in flight, a caller's next request is RESOURCE_EXHAUSTED, reason
    TOO_MANY_REQUESTS, with a RetryInfo. Of the worker threads, one caller holds at most
    `workers_per_caller` at a time; its other requests wait on the event loop (holding no
    thread), so the remaining workers stay free for every other caller. Event loop only."""

    def __init__(self, per_caller: int = DEFAULT_REQUESTS_PER_CALLER, workers_per_caller: int = 8):
        self.per_caller = per_caller
        self.workers_per_caller = workers_per_caller
        self.in_flight: dict[str, int] = {}
        self._workers: dict[str, asyncio.Semaphore] = {}

    def enter(self, caller: str) -> None:
        held = self.in_flight.get(caller, 0)
        if held >= self.per_caller:
            raise TooManyRequests(f"caller {caller} has its limit of {self.per_caller} requests in flight; "
                                  "retry after one finishes")
        self.in_flight[caller] = held + 1

    def leave(self, caller: str) -> None:
        left = self.in_flight[caller] - 1
        if left:
            self.in_flight[caller] = left
        else:
            del self.in_flight[caller]

    def workers(self, caller: str) -> asyncio.Semaphore:
        semaphore = self._workers.get(caller)
        if semaphore is None:  # one per known caller name: bounded by the callers configured
            semaphore = self._workers[caller] = asyncio.Semaphore(self.workers_per_caller)
        return semaphore


class Outcome:
    """What the request line and the metrics say about one call."""

    __slots__ = ("kind", "method", "started", "caller", "request", "reply", "code", "reason", "incident",
                 "request_id", "decided", "span", "span_token")

    def __init__(self, kind: str, method: str):
        self.kind = kind
        self.method = method
        self.started = time.perf_counter()
        self.caller = ""
        self.request = None
        self.reply = None
        self.code = grpc.StatusCode.OK
        self.reason = ""
        self.incident = ""
        self.request_id = ""  # the caller's X-Request-ID (AuthZEN)
        self.decided = None  # (resource type, action, allowed) of each decision, when not a gRPC Check
        self.span = self.span_token = None  # the call's server span, while tracing is on

    def trace(self, carrier, *, current: bool = True) -> None:
        """Open the call's server span (tracing is on), continuing the caller's trace."""
        service, _, name = self.method.strip("/").partition("/")
        system = "http" if self.kind == "http" else "grpc"
        self.span, self.span_token = tracing.start_call(
            self.method, carrier, {"rpc.system": system, "rpc.service": service, "rpc.method": name},
            current=current)


class Plumbing:
    """Wraps method handlers: authentication, parsing, where the work runs, limits, errors,
    and the request's log line and metrics."""

    def __init__(self, callers: Callers, limits: StreamLimits, workers: Executor,
                 inline: dict[str, Callable] | None = None, requests: RequestLimits | None = None,
                 observer: Observer | None = None):
        self.callers = callers
        self.limits = limits
        self.requests = requests or RequestLimits()
        self.workers = workers
        self.observer = observer or Observer()
        # method -> predicate(request): True when the call is pure in-memory work to run inline.
        self.inline = inline or {}
        self.draining: asyncio.Future | None = None  # made on the loop by start()
        self.streams: set[OpenStream] = set()  # open streams of known callers (event loop only)

    def start(self) -> None:
        """Call on the event loop before serving."""
        self.draining = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        """End every open stream (UNAVAILABLE) and every stream opened from now on."""
        if self.draining is not None and not self.draining.done():
            self.draining.set_result(None)

    def callers_reloaded(self) -> None:
        """After the callers file was reloaded: end every open stream whose caller lost the right
        to it. UNAUTHENTICATED when its credentials name no caller now; PERMISSION_DENIED,
        OUTSIDE_CALLER_SCOPE, when it names an organization outside the caller's scope now;
        UNAVAILABLE when the caller now sees less than when the stream opened (reconnecting
        opens it with the rights the caller has now)."""
        for stream in list(self.streams):
            if not stream.ended.done():
                error = self._lost(stream)
                if error is not None:
                    log.info("%s of caller %s ended: %s", stream.method, stream.caller.name, error.reason)
                    stream.ended.set_result(error)

    def _lost(self, stream: OpenStream) -> DomainError | None:
        try:
            caller = self.identify(stream.context, quiet=True)
            check_request(stream.method, stream.request, caller)
        except DomainError as error:
            return error
        if callers.narrowed(stream.caller, caller):
            return Unavailable("the callers file changed this caller's rights; reconnect")
        return None

    async def run(self, context, function, *args):
        """Run blocking `function(*args)` in the worker pool, under the caller's deadline (None:
        no gRPC call, no deadline), with the caller in `callers.current`; one caller holds at
        most its share of the workers."""
        caller = callers.current.get()
        async with self.requests.workers(caller.name if caller else ""):
            remaining = context.time_remaining() if context is not None else None
            deadline = None if remaining is None else time.monotonic() + remaining
            work = contextvars.copy_context()
            cancelled = threading.Event()  # the caller went away: the work stops at its next look
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self.workers, functools.partial(work.run, deadlines.run_within, deadline, function, *args,
                                                    cancelled=cancelled))
            except asyncio.CancelledError:
                cancelled.set()
                raise

    def identify(self, context, quiet: bool = False) -> Caller:
        """The caller of the request, or Unauthenticated. A refused client certificate has its
        subject logged (a subject is no secret; the operator needs it to name the caller)."""
        subject = peer_subject(context.auth_context()) if self.callers.wants_subject else None
        try:
            return self.callers.identify(context.invocation_metadata(), subject)
        except Unauthenticated:
            presented = subject or peer_subject(context.auth_context())
            if presented and not quiet:
                log.warning("refused the credentials of %s, which presented the client certificate subject %s",
                            peer_host(context.peer()), ",".join(presented),
                            extra={"fields": {"subject": ",".join(presented)}})
            raise

    def admit(self, caller: Caller, writes: bool) -> None:
        """A known caller's request may start: a read-only caller changes nothing, and each caller
        has its limit of requests in flight (`leave` when it ends)."""
        if writes and caller.read_only:
            raise ReadOnlyCaller(f"caller {caller.name} is read-only; it may not change anything")
        self.requests.enter(caller.name)

    # -- wrapping ------------------------------------------------------------------------------

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler), response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler, handler.unary_stream, parse=handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(method, handler), response_serializer=handler.response_serializer)
        if handler.stream_stream and method.startswith(OPEN_PREFIXES):  # reflection
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler, handler.stream_stream, parse=None),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        # Anything else under a protected service would skip authentication: refuse to serve it.
        raise RuntimeError(f"{method}: streaming kind not supported by the plumbing")

    def _unary(self, method: str, handler):
        inner, parse = handler.unary_unary, handler.request_deserializer
        needs_caller = not method.startswith(OPEN_PREFIXES)
        writes = not changes_nothing(method)
        inline = self.inline.get(method)
        requests, observer, run, is_async = self.requests, self.observer, self.run, inspect.iscoroutinefunction(inner)

        async def call(raw, context):
            outcome = Outcome("unary", method)
            caller = token = None
            if tracing.tracer is not None and needs_caller:
                outcome.trace(context.invocation_metadata())
            try:
                if needs_caller:
                    caller = self.identify(context)
                    outcome.caller = caller.name
                    token = callers.current.set(caller)
                    require_admin(method, caller)
                    self.admit(caller, writes)
                try:
                    request = outcome.request = parse_request(method, parse, raw)
                    check_request(method, request, caller)
                    if is_async:  # grpc's own async servicers (health)
                        reply = await inner(request, context)
                    elif inline is not None and inline(request):
                        reply = inner(request, context)
                    else:
                        reply = await run(context, inner, request, context)
                finally:
                    if caller is not None:
                        requests.leave(caller.name)
                if caller is not None and caller.read_only:
                    clear_emails(reply)
                outcome.reply = reply
                return reply
            except AbortError:
                outcome.code = _aborted_code(context)
                raise
            except asyncio.CancelledError:
                outcome.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:  # noqa: BLE001 - every error is turned into a status here
                await context.abort_with_status(failure(outcome, error))
            finally:
                if token is not None:
                    callers.current.reset(token)
                observer.finished(outcome)

        return call

    def _stream(self, method: str, handler, inner, parse):
        """A stream holds no thread: `inner` must be async (an async generator, or a coroutine
        that writes with context.write, as grpc's health Watch does)."""
        if not (inspect.isasyncgenfunction(inner) or inspect.iscoroutinefunction(inner)):
            raise RuntimeError(f"{method}: a streaming handler must be async so that it holds no thread")
        needs_caller = not method.startswith(OPEN_PREFIXES)
        plumbing, observer = self, self.observer
        kind = "server_stream" if parse is not None else "bidi_stream"

        def caller_of(context) -> tuple[str, Caller | None]:
            if needs_caller:
                caller = plumbing.identify(context)
                return caller.name, caller
            try:
                caller = plumbing.identify(context, quiet=True)
                return caller.name, caller
            except Unauthenticated:
                return "peer:" + peer_host(context.peer()), None

        if inspect.iscoroutinefunction(inner):
            async def written(request, context):
                outcome = Outcome(kind, method)
                if tracing.tracer is not None and needs_caller:
                    outcome.trace(context.invocation_metadata(), current=False)
                try:
                    outcome.caller, _ = caller_of(context)
                    with plumbing.limits.hold(outcome.caller):
                        request = parse_request(method, parse, request)
                        await plumbing._until_drained(inner(request, context))
                except AbortError:
                    outcome.code = _aborted_code(context)
                    raise
                except asyncio.CancelledError:
                    outcome.code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as error:  # noqa: BLE001
                    await context.abort_with_status(failure(outcome, error))
                finally:
                    observer.finished(outcome)

            return written

        async def relayed(request, context):
            outcome = Outcome(kind, method)
            token = stream = None
            if tracing.tracer is not None and needs_caller:
                outcome.trace(context.invocation_metadata(), current=False)
            try:
                outcome.caller, caller = caller_of(context)
                if caller is not None:
                    token = callers.current.set(caller)
                    require_admin(method, caller)
                with plumbing.limits.hold(outcome.caller):
                    if parse is not None:
                        request = outcome.request = parse_request(method, parse, request)
                        if needs_caller:
                            check_request(method, request, caller)
                    if needs_caller:
                        stream = OpenStream(context, method, request, caller)
                        plumbing.streams.add(stream)
                    responses = inner(request, context)
                    try:
                        while True:
                            try:
                                response = await plumbing._until_drained(responses.__anext__(), stream)
                            except StopAsyncIteration:
                                return
                            if caller is not None and caller.read_only:
                                clear_emails(response)
                            yield response
                    finally:
                        await responses.aclose()
            except AbortError:
                outcome.code = _aborted_code(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                outcome.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:  # noqa: BLE001
                await context.abort_with_status(failure(outcome, error))
            finally:
                plumbing.streams.discard(stream)
                if token is not None:
                    with contextlib.suppress(ValueError):  # a generator closed from another context
                        callers.current.reset(token)
                observer.finished(outcome)

        return relayed

    def _client_stream(self, method: str, handler):
        """A client stream (AdminService.Import): `inner` is a coroutine that reads the parsed
        requests as an async iterator; it holds no thread while the requests arrive."""
        inner, parse = handler.stream_unary, handler.request_deserializer
        if not inspect.iscoroutinefunction(inner):
            raise RuntimeError(f"{method}: a client-streaming handler must be async so that it holds no thread")
        plumbing, observer = self, self.observer
        writes = not changes_nothing(method)

        async def call(raw_requests, context):
            outcome = Outcome("client_stream", method)
            token = None
            try:
                caller = plumbing.identify(context)
                outcome.caller = caller.name
                token = callers.current.set(caller)
                if writes and caller.read_only:
                    raise ReadOnlyCaller(f"caller {caller.name} is read-only; it may not change anything")
                require_admin(method, caller)
                check_request(method, None, caller)  # never a limited caller's (api/scope.py)

                async def parsed():
                    async for raw in raw_requests:
                        yield parse_request(method, parse, raw)

                with plumbing.limits.hold(outcome.caller):
                    reply = await plumbing._until_drained(inner(parsed(), context))
                outcome.reply = reply
                return reply
            except AbortError:
                outcome.code = _aborted_code(context)
                raise
            except asyncio.CancelledError:
                outcome.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:  # noqa: BLE001
                await context.abort_with_status(failure(outcome, error))
            finally:
                if token is not None:
                    callers.current.reset(token)
                observer.finished(outcome)

        return call

    async def _until_drained(self, awaitable, stream: OpenStream | None = None):
        """Await `awaitable`, unless the server starts draining first, or `stream` is ended (its
        caller lost the right to it): then raise why, and nothing more is delivered."""
        draining = self.draining
        ended = stream.ended if stream is not None else None
        stops = [future for future in (draining, ended) if future is not None]
        if not stops:
            return await awaitable
        if (ended is not None and ended.done()) or (draining is not None and draining.done()):
            with contextlib.suppress(Exception):
                awaitable.close()  # never started
        if ended is not None and ended.done():
            raise ended.result()
        if draining is not None and draining.done():
            raise Unavailable("the server is draining; reconnect to another replica")
        step = asyncio.ensure_future(awaitable)
        # A call the client cancels (a routine disconnect) may leave the step's outcome unread: it
        # failed in the same moment, or it is still stopping. Read it whenever it comes, so that
        # asyncio never reports it as an error ("exception was never retrieved").
        step.add_done_callback(_outcome_read)
        try:
            await asyncio.wait((step, *stops), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not step.done():  # draining, ended, or this call was cancelled: stop the step first
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
        if ended is not None and ended.done():
            raise ended.result()
        if step.cancelled():
            raise Unavailable("the server is draining; reconnect to another replica")
        return step.result()


def _outcome_read(step: asyncio.Future) -> None:
    if not step.cancelled():
        step.exception()


class OpenStream:
    """A stream of a known caller: what it was opened with, rechecked when the callers change."""

    def __init__(self, context, method: str, request, caller: Caller):
        self.context = context
        self.method = method
        self.request = request
        self.caller = caller
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()  # set to the error that ends it


def _aborted_code(context) -> grpc.StatusCode:
    try:
        return context.code() or grpc.StatusCode.UNKNOWN
    except Exception:  # noqa: BLE001 - older grpc: the code is not readable
        return grpc.StatusCode.UNKNOWN


def failure(outcome: Outcome, error: Exception):
    """The status for `error`, noted on `outcome` (see `as_domain_error`)."""
    error = as_domain_error(outcome, error)
    return error_status(GRPC_CODES[error.code], error.reason, error.message, error.metadata,
                        getattr(error, "retry_seconds", None))


class Internal(DomainError):
    code = Status.INTERNAL
    reason = "INTERNAL"


def as_domain_error(outcome: Outcome, error: Exception) -> DomainError:
    """What the caller is told of `error`, noted on `outcome`. Domain errors stay as they are;
    anything else is INTERNAL with an incident id, its details in the server log only."""
    if isinstance(error, DomainError):
        outcome.code, outcome.reason = GRPC_CODES[error.code], error.reason
        if isinstance(error, DatabaseUnavailable):
            metrics.database_errors.inc()
        return error
    if isinstance(error, DBAPIError):
        metrics.database_errors.inc()
    outcome.code, outcome.reason = grpc.StatusCode.INTERNAL, "INTERNAL"
    outcome.incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", outcome.method, outcome.incident, exc_info=error,
              extra={"fields": {"caller": outcome.caller, "incident": outcome.incident}})
    return Internal(f"internal error; incident {outcome.incident} is in the server log")


def actor_of(request) -> str:
    """The acting user of a request, for its log line (bounded: a rejected value may be long)."""
    actor_id = getattr(request, "actor_id", None)
    if actor_id is None:
        actor = getattr(request, "actor", None)
        actor_id = f"{actor.type}:{actor.id}" if actor is not None and actor.id else ""
    return actor_id[:MAX_LOGGED]


class Observer:
    """The request's log line (logger mandate.request; health, reflection and answered checks
    at DEBUG) and its metrics. Decisions are counted by resource type, action and result once
    `decisions` is set. With `counting` False (no metrics endpoint: nobody reads them), a call
    updates no metric."""

    def __init__(self, counting: bool = True):
        self.counting = counting
        self.decisions: metrics.Decisions | None = None
        self._handled: dict = {}  # (method, code) -> (handled, handling, started) children
        self._quiet: dict = {}  # method -> whether its answered calls log at DEBUG only

    def finished(self, outcome: Outcome) -> None:
        seconds = time.perf_counter() - outcome.started
        method, code = outcome.method, outcome.code
        if self.counting:
            self._count(outcome, seconds)
        if outcome.span is not None:
            tracing.end_call(outcome.span, outcome.span_token, code.name, code in SERVER_FAILURES, {
                "rpc.grpc.status_code": code.value[0], "mandate.caller": outcome.caller,
                "mandate.reason": outcome.reason, "mandate.incident": outcome.incident,
                "mandate.revision": getattr(outcome.reply, "revision", "") if outcome.reply is not None else ""})
        # Answered checks are the hot path: their lines cost as much as the check, so they are
        # DEBUG; every change, list, event read, refusal and error is INFO.
        quiet = self._quiet.get(method)
        if quiet is None:
            quiet = self._quiet[method] = (method.startswith(OPEN_PREFIXES), method.startswith((CHECK_PLANE, AUTHZEN)))
        level = logging.DEBUG if quiet[0] or (quiet[1] and code is grpc.StatusCode.OK) else logging.INFO
        if not request_log.isEnabledFor(level):
            return
        request = outcome.request
        fields = {"method": method, "caller": outcome.caller, "actor": actor_of(request) if request else "",
                  "code": code.name, "reason": outcome.reason, "duration_ms": round(seconds * 1000, 3),
                  "revision": getattr(outcome.reply, "revision", "") if outcome.reply is not None else "",
                  "incident": outcome.incident}
        if outcome.request_id:
            fields["request_id"] = outcome.request_id[:MAX_LOGGED]
        extras = "".join(f" {key}={fields[key]}" for key in ("reason", "revision", "incident", "request_id")
                         if fields.get(key))
        request_log.log(level, "%s %s caller=%s actor=%s %.1f ms%s", method, code.name, fields["caller"],
                        fields["actor"] or "-", fields["duration_ms"], extras, extra={"fields": fields})

    def _count(self, outcome: Outcome, seconds: float) -> None:
        method = outcome.method
        children = self._handled.get((method, outcome.code))
        if children is None:
            service, _, name = method.strip("/").partition("/")
            children = self._handled[(method, outcome.code)] = (
                metrics.handled.labels(outcome.kind, service, name, outcome.code.name),
                metrics.handling.labels(outcome.kind, service, name),
                metrics.started.labels(outcome.kind, service, name))
        handled, handling, started = children
        handled.inc()
        handling.observe(seconds)
        started.inc()
        if outcome.reason:
            metrics.refusals.labels(outcome.reason).inc()
        elif self.decisions is not None and outcome.decided:
            self.decisions.count_many(outcome.decided)
        elif self.decisions is not None and outcome.reply is not None and method in DECISIONS:
            self._count_decisions(method, outcome)

    def _count_decisions(self, method: str, outcome: Outcome) -> None:
        request, reply = outcome.request, outcome.reply
        if method == CHECK:
            self.decisions.count(request.resource.type, request.action, reply.allowed)
        else:
            self.decisions.count_many((c.resource.type, c.action, r.allowed)
                                      for c, r in zip(request.checks, reply.results, strict=False))


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
    """Abort the call with the status for `error` (outside the wrapped handlers)."""
    await context.abort_with_status(failure(Outcome("unary", method), error))
