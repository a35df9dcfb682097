"""What is said about each call: one log line (logger `mandate.request`: method, caller, actor,
status code, reason, duration, revision, incident id), its metrics (`mandate.runtime.metrics`), and,
while tracing is on (`mandate.tracing`), one server span."""

from __future__ import annotations

import logging
import time

import grpc

from mandate import tracing
from mandate.runtime import metrics
from mandate.runtime.auth import OPEN_PREFIXES

request_log = logging.getLogger("mandate.request")

CHECK = "/mandate.v1.AuthorizationService/Check"
CHECK_PLANE = "/mandate.v1.AuthorizationService/"
DECISIONS = (CHECK, "/mandate.v1.AuthorizationService/BatchCheck")
AUTHZEN = "/authzen/"  # the AuthZEN calls' method names (mandate.checks.http): the check plane too
# Codes that make a server span an error: the server failed, not the request (OpenTelemetry's rule).
SERVER_FAILURES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
MAX_LOGGED = 200  # characters of a request's value on its log line


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
