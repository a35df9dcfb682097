"""The one place where errors become statuses, and where a call that ends in an error is
settled (`settle`). Domain errors become their status code with a google.rpc.ErrorInfo carrying
the reason (and a google.rpc.RetryInfo when waiting helps). Anything unexpected becomes
INTERNAL with an incident id; the details go to the server log only. A check that fails this
way is an error, never an allow (R24)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc.aio import AbortError
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError

from mandate.errors import DatabaseUnavailable, DomainError, Status
from mandate.names import Reason
from mandate.runtime import metrics
from mandate.runtime.observe import Outcome

log = logging.getLogger("mandate.rpc")

DOMAIN = "mandate.v1"

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


class Internal(DomainError):
    code = Status.INTERNAL
    reason = Reason.INTERNAL


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
    outcome.code, outcome.reason = grpc.StatusCode.INTERNAL, Reason.INTERNAL.value
    outcome.incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s)", outcome.method, outcome.incident, exc_info=error,
              extra={"fields": {"caller": outcome.caller, "incident": outcome.incident}})
    return Internal(f"internal error; incident {outcome.incident} is in the server log")


def failure(outcome: Outcome, error: Exception):
    """The gRPC status for `error`, noted on `outcome` (see `as_domain_error`)."""
    error = as_domain_error(outcome, error)
    return error_status(GRPC_CODES[error.code], error.reason, error.message, error.metadata,
                        getattr(error, "retry_seconds", None))


async def settle(context, outcome: Outcome, error: BaseException) -> None:
    """Note how a wrapped gRPC call that raised `error` ends, and end it: every wrapper calls this
    from `except BaseException` and then re-raises. Already aborted (by the handler, or here):
    the code it was aborted with. Cancelled, or a stream closed by its client: CANCELLED. Any
    other error: the call is aborted with its status (this raises AbortError)."""
    if isinstance(error, AbortError):
        outcome.code = aborted_code(context)
    elif isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        outcome.code = grpc.StatusCode.CANCELLED
    elif isinstance(error, Exception):
        await context.abort_with_status(failure(outcome, error))


def aborted_code(context) -> grpc.StatusCode:
    try:
        return context.code() or grpc.StatusCode.UNKNOWN
    except Exception:  # noqa: BLE001 - older grpc: the code is not readable
        return grpc.StatusCode.UNKNOWN


async def abort(context, method: str, error: Exception):
    """Abort the call with the status for `error` (outside the wrapped handlers)."""
    await context.abort_with_status(failure(Outcome("unary", method), error))
