"""OpenTelemetry traces, configured by the standard OTEL_* environment variables; off unless asked.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and
neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none). Spans then go to that OTLP endpoint
in batches, over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, the default) or HTTP
(`http/protobuf`). The exporter reads its own variables (headers, certificate, timeout,
compression), the SDK its own (OTEL_SERVICE_NAME, default `mandate`; OTEL_RESOURCE_ATTRIBUTES;
OTEL_TRACES_SAMPLER; OTEL_BSP_*), and OTEL_PROPAGATORS picks how a caller's context is read (W3C
`traceparent`, the default).

What is traced:
- one server span per call: every Mandate RPC (health checking and reflection excepted) and every
  AuthZEN call, named after the method, with the method, the calling service, the status code, the
  ErrorInfo reason and the revision of the answer. Never a user id, an email or a request body. A
  caller's W3C `traceparent` (gRPC metadata, HTTP header) makes it a child of the caller's span;
- child spans for the store (each read and write transaction), the fact index catching up, and the
  history's slow paths (a past revision's facts or policy read from the store).

When tracing is off, `tracer` is None: the plumbing tests it once per call and does nothing else,
and `span()` hands back one shared no-op context manager.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("mandate.tracing")

tracer = None  # an opentelemetry Tracer while tracing is on
_provider = None
_OFF = contextlib.nullcontext(None)


def wanted(env=None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def setup(env=None) -> bool:
    """Start tracing if the environment asks for it (once per process). True when it is on."""
    global tracer, _provider
    env = os.environ if env is None else env
    if tracer is not None or not wanted(env):
        return tracer is not None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol[:20]!r} is not grpc or http/protobuf")
    resource = Resource.create({SERVICE_NAME: "mandate", "service.version": package_version()})
    if env.get("OTEL_SERVICE_NAME"):  # Resource.create reads it too; it wins over the default above
        resource = resource.merge(Resource.create({SERVICE_NAME: env["OTEL_SERVICE_NAME"]}))
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = _provider.get_tracer("mandate", package_version())
    log.info("tracing on: OTLP over %s (pid %d)", protocol, os.getpid())
    return True


def shutdown() -> None:
    """Send the spans still waiting, then stop tracing."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def span(name: str, **attributes):
    """A child span of the current one, as a context manager yielding the span (None when off).
    An exception marks it as an error with the exception's type only (messages may name people)."""
    if tracer is None:
        return _OFF
    return _span(name, attributes)


@contextlib.contextmanager
def _span(name: str, attributes: dict):
    from opentelemetry.trace import Status, StatusCode

    with tracer.start_as_current_span(name, attributes=attributes or None, record_exception=False,
                                      set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as error:
            current.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


def start_call(method: str, carrier, attributes: dict, *, current: bool = True):
    """The server span of one call, continuing the trace of `carrier` (gRPC metadata pairs or HTTP
    headers) when it holds a `traceparent`. With `current`, it is the current span until
    `end_call` (the store's spans of the call, in its worker thread too, become its children).
    Returns (span, token for `end_call`)."""
    from opentelemetry import context, propagate, trace

    if not hasattr(carrier, "get"):  # gRPC metadata: (key, value) pairs
        carrier = {key: value for key, value in carrier or () if isinstance(value, str)}
    parent = propagate.extract(carrier)
    started = tracer.start_span(method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)
    return started, context.attach(trace.set_span_in_context(started, parent)) if current else None


def end_call(started, token, code: str, failed: bool, attributes: dict) -> None:
    """End the span of `start_call`; `failed`: the server failed (not the caller's request)."""
    from opentelemetry import context
    from opentelemetry.trace import Status, StatusCode

    for key, value in attributes.items():
        if value not in (None, ""):
            started.set_attribute(key, value)
    if failed:
        started.set_status(Status(StatusCode.ERROR, code))
    started.end()
    if token is not None:
        context.detach(token)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mandate")
    except PackageNotFoundError:
        return "unknown"
