"""Where every gRPC method handler is wrapped, once, when the services are registered
(`Plumbing.wrap`). Each concern it applies lives in its own module:

- `runtime/auth.py`: who the caller is (a bearer token, a client certificate, or both), open
  services, read-only callers (READ_ONLY_CALLER) and AdminService (ADMIN_ONLY). The caller of
  the request is in `callers.current` while it is served, in the worker thread too. A
  read-only caller gets no `email` field in any reply (`convert.clear_emails`). A caller limited
  to some organizations is held to them (`runtime/scope.py`) before the request runs.
- `runtime/limits.py`: requests in flight per caller (TOO_MANY_REQUESTS, with a RetryInfo), each
  caller's share of the worker threads, and open streams per caller and in total
  (TOO_MANY_STREAMS). Streams are ours, health `Watch`, reflection, and the client stream of
  AdminService.Import.
- `runtime/parsing.py`: the request is parsed here, not by gRPC (a malformed body is
  INVALID_ARGUMENT).
- `runtime/pool.py`: blocking work runs in the bounded worker pool under the caller's deadline.
  Methods listed as inline (a `Check` answered from memory) run on the event loop itself.
- `runtime/draining.py`: while the server drains, open streams end with UNAVAILABLE; a reload of
  the callers file ends the streams whose caller lost the right to them (`callers_reloaded`).
- `runtime/statuses.py`: errors become statuses, and `settle` is the one place a failed call ends.
- `runtime/observe.py`: the call's log line, metrics and server span.

The AuthZEN endpoints (`mandate.checks.http`) use the same pieces: `callers.identify` and `admit`
for the caller, `run` for the workers, `statuses.as_domain_error` for errors, and the Observer
for the line and metrics.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import Executor

import grpc

from mandate import tracing
from mandate.errors import DomainError, Unauthenticated, Unavailable
from mandate.runtime import callers
from mandate.runtime.auth import (
    OPEN_PREFIXES,
    changes_nothing,
    identify,
    peer_host,
    require_admin,
    require_writer,
)
from mandate.runtime.callers import Caller, Callers
from mandate.runtime.convert import clear_emails
from mandate.runtime.draining import Drain, OpenStream
from mandate.runtime.limits import RequestLimits, StreamLimits
from mandate.runtime.observe import Observer, Outcome
from mandate.runtime.parsing import parse_request
from mandate.runtime.pool import WorkerPool
from mandate.runtime.scope import check_request
from mandate.runtime.statuses import settle

log = logging.getLogger("mandate.rpc")


class Plumbing:
    """Wraps method handlers with the pieces above, in one order: caller, admission, limits,
    parsing, scope, where the work runs, draining, errors, and the request's line and metrics."""

    def __init__(self, callers: Callers, limits: StreamLimits, workers: Executor,
                 inline: dict[str, Callable] | None = None, requests: RequestLimits | None = None,
                 observer: Observer | None = None):
        self.callers = callers
        self.limits = limits
        self.requests = requests or RequestLimits()
        self.pool = WorkerPool(workers, self.requests)
        self.run = self.pool.run  # what servicers are given to run blocking work
        self.observer = observer or Observer()
        # method -> predicate(request): True when the call is pure in-memory work to run inline.
        self.inline = inline or {}
        self.draining = Drain()

    def start(self) -> None:
        """Call on the event loop before serving."""
        self.draining.start()

    def callers_reloaded(self) -> None:
        """After the callers file was reloaded: end every open stream whose caller lost the right
        to it. UNAUTHENTICATED when its credentials name no caller now; PERMISSION_DENIED,
        OUTSIDE_CALLER_SCOPE, when it names an organization outside the caller's scope now;
        UNAVAILABLE when the caller now sees less than when the stream opened (reconnecting
        opens it with the rights the caller has now)."""
        for stream in list(self.draining.streams):
            if not stream.ended.done():
                error = self._lost(stream)
                if error is not None:
                    log.info("%s of caller %s ended: %s", stream.method, stream.caller.name, error.reason)
                    stream.ended.set_result(error)

    def _lost(self, stream: OpenStream) -> DomainError | None:
        try:
            caller = identify(self.callers, stream.context, quiet=True)
            check_request(stream.method, stream.request, caller)
        except DomainError as error:
            return error
        if callers.narrowed(stream.caller, caller):
            return Unavailable("the callers file changed this caller's rights; reconnect")
        return None

    def admit(self, caller: Caller, writes: bool) -> None:
        """A known caller's request may start: a read-only caller changes nothing, and each caller
        has its limit of requests in flight (`requests.leave` when it ends)."""
        require_writer(caller, writes)
        self.requests.enter(caller.name)

    # -- wrapping ------------------------------------------------------------------------------

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler), response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, parse=handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(method, handler), response_serializer=handler.response_serializer)
        if handler.stream_stream and method.startswith(OPEN_PREFIXES):  # reflection
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream, parse=None),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        # Anything else under a protected service would skip authentication: refuse to serve it.
        raise RuntimeError(f"{method}: streaming kind not supported by the plumbing")

    def _unary(self, method: str, handler):
        inner, parse = handler.unary_unary, handler.request_deserializer
        needs_caller = not method.startswith(OPEN_PREFIXES)
        writes = not changes_nothing(method)
        inline = self.inline.get(method)
        known = self.callers
        requests, observer, run, is_async = self.requests, self.observer, self.run, inspect.iscoroutinefunction(inner)

        async def call(raw, context):
            outcome = Outcome("unary", method)
            caller = token = None
            if tracing.tracer is not None and needs_caller:
                outcome.trace(context.invocation_metadata())
            try:
                if needs_caller:
                    caller = identify(known, context)
                    outcome.caller = caller.name
                    token = callers.current.set(caller)
                    require_admin(method, caller)
                    require_writer(caller, writes)
                    requests.enter(caller.name)
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
            except BaseException as error:
                await settle(context, outcome, error)
                raise
            finally:
                if token is not None:
                    callers.current.reset(token)
                observer.finished(outcome)

        return call

    def _stream(self, method: str, inner, parse):
        """A stream holds no thread: `inner` must be async (an async generator, or a coroutine
        that writes with context.write, as grpc's health Watch does)."""
        if not (inspect.isasyncgenfunction(inner) or inspect.iscoroutinefunction(inner)):
            raise RuntimeError(f"{method}: a streaming handler must be async so that it holds no thread")
        needs_caller = not method.startswith(OPEN_PREFIXES)
        known, limits, drain, observer = self.callers, self.limits, self.draining, self.observer
        kind = "server_stream" if parse is not None else "bidi_stream"
        writes_itself = inspect.iscoroutinefunction(inner)

        def caller_of(context) -> tuple[str, Caller | None]:
            if needs_caller:
                caller = identify(known, context)
                return caller.name, caller
            try:
                caller = identify(known, context, quiet=True)
                return caller.name, caller
            except Unauthenticated:
                return "peer:" + peer_host(context.peer()), None

        if writes_itself:
            async def written(request, context):
                outcome = Outcome(kind, method)
                if tracing.tracer is not None and needs_caller:
                    outcome.trace(context.invocation_metadata(), current=False)
                try:
                    outcome.caller, _ = caller_of(context)
                    with limits.hold(outcome.caller):
                        request = parse_request(method, parse, request)
                        await drain.until(inner(request, context))
                except BaseException as error:
                    await settle(context, outcome, error)
                    raise
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
                with limits.hold(outcome.caller):
                    if parse is not None:
                        request = outcome.request = parse_request(method, parse, request)
                        if needs_caller:
                            check_request(method, request, caller)
                    if needs_caller:
                        stream = OpenStream(context, method, request, caller)
                        drain.streams.add(stream)
                    responses = inner(request, context)
                    try:
                        while True:
                            try:
                                response = await drain.until(responses.__anext__(), stream)
                            except StopAsyncIteration:
                                return
                            if caller is not None and caller.read_only:
                                clear_emails(response)
                            yield response
                    finally:
                        await responses.aclose()
            except BaseException as error:
                await settle(context, outcome, error)
                raise
            finally:
                drain.streams.discard(stream)
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
        known, limits, drain, observer = self.callers, self.limits, self.draining, self.observer
        writes = not changes_nothing(method)

        async def call(raw_requests, context):
            outcome = Outcome("client_stream", method)
            token = None
            try:
                caller = identify(known, context)
                outcome.caller = caller.name
                token = callers.current.set(caller)
                require_writer(caller, writes)
                require_admin(method, caller)
                check_request(method, None, caller)  # never a limited caller's (runtime/scope.py)

                async def parsed():
                    async for raw in raw_requests:
                        yield parse_request(method, parse, raw)

                with limits.hold(outcome.caller):
                    reply = await drain.until(inner(parsed(), context))
                outcome.reply = reply
                return reply
            except BaseException as error:
                await settle(context, outcome, error)
                raise
            finally:
                if token is not None:
                    callers.current.reset(token)
                observer.finished(outcome)

        return call
