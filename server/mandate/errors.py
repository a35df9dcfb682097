"""Domain errors: each carries its status and the reason clients match on.

The domain knows nothing of the transport: a status here is one of the standard families every
RPC framework shares, named as gRPC names them. One table in the transport
(`runtime/statuses.py`, `GRPC_CODES`) turns each into its gRPC code, with the reason in a
google.rpc.ErrorInfo."""

from __future__ import annotations

import enum

from mandate.names import Reason


class Status(enum.Enum):
    """The status families a refusal belongs to (the names are gRPC's, and HTTP maps them too)."""

    INVALID_ARGUMENT = enum.auto()
    NOT_FOUND = enum.auto()
    ALREADY_EXISTS = enum.auto()
    PERMISSION_DENIED = enum.auto()
    FAILED_PRECONDITION = enum.auto()
    RESOURCE_EXHAUSTED = enum.auto()
    UNAUTHENTICATED = enum.auto()
    DEADLINE_EXCEEDED = enum.auto()
    UNAVAILABLE = enum.auto()
    CANCELLED = enum.auto()
    INTERNAL = enum.auto()


class DomainError(Exception):
    code = Status.FAILED_PRECONDITION
    reason = Reason.FAILED_PRECONDITION

    def __init__(self, message: str, reason: str | None = None, **metadata: str):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = metadata


class InvalidArgument(DomainError):
    code = Status.INVALID_ARGUMENT
    reason = Reason.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str, reason: str | None = None):
        super().__init__(f"{field}: {problem}", reason, field=field)
        self.field = field


class UnknownScope(InvalidArgument):
    reason = Reason.UNKNOWN_SCOPE


class NotFound(DomainError):
    code = Status.NOT_FOUND
    reason = Reason.NOT_FOUND


class PermissionDenied(DomainError):
    """R23: the policy did not allow the acting user this mutation."""

    code = Status.PERMISSION_DENIED
    reason = Reason.NOT_ALLOWED


class AlreadyExists(DomainError):
    code = Status.ALREADY_EXISTS
    reason = Reason.ALREADY_EXISTS


class AlreadyMember(AlreadyExists):
    reason = Reason.ALREADY_MEMBER


class PartnerRecordConflict(AlreadyExists):
    reason = Reason.PARTNER_RECORD_CONFLICT


class FailedPrecondition(DomainError):
    code = Status.FAILED_PRECONDITION
    reason = Reason.FAILED_PRECONDITION


class InvitationNotPending(FailedPrecondition):
    reason = Reason.INVITATION_NOT_PENDING


class LastOwner(FailedPrecondition):
    reason = Reason.LAST_OWNER


class CurrencyMismatch(FailedPrecondition):
    reason = Reason.CURRENCY_MISMATCH


class NotPartnerEmployee(FailedPrecondition):
    reason = Reason.NOT_PARTNER_EMPLOYEE


class RevisionUnavailable(FailedPrecondition):
    reason = Reason.REVISION_UNAVAILABLE


class SeatLimitReached(DomainError):
    code = Status.RESOURCE_EXHAUSTED
    reason = Reason.SEAT_LIMIT_REACHED


class Unauthenticated(DomainError):
    code = Status.UNAUTHENTICATED
    reason = Reason.UNAUTHENTICATED


class TooManyStreams(DomainError):
    """A caller, or the server as a whole, has as many open streams as it may hold."""

    code = Status.RESOURCE_EXHAUSTED
    reason = Reason.TOO_MANY_STREAMS


class DeadlineExceeded(DomainError):
    """The caller's deadline passed before the work was done; nothing was changed."""

    code = Status.DEADLINE_EXCEEDED
    reason = Reason.DEADLINE_EXCEEDED


class Unavailable(DomainError):
    """The server is starting or draining: try another replica, or again shortly."""

    code = Status.UNAVAILABLE
    reason = Reason.UNAVAILABLE


class DatabaseUnavailable(DomainError):
    """The store cannot be reached (or is overloaded): nothing was changed; retry."""

    code = Status.UNAVAILABLE
    reason = Reason.DATABASE_UNAVAILABLE


class TooManyRequests(DomainError):
    """A caller has as many requests in flight as it may; waiting `retry_seconds` helps."""

    code = Status.RESOURCE_EXHAUSTED
    reason = Reason.TOO_MANY_REQUESTS
    retry_seconds = 0.1


class TooManyRevisions(DomainError):
    """One request names more distinct past revisions or times than the server answers at once."""

    code = Status.RESOURCE_EXHAUSTED
    reason = Reason.TOO_MANY_REVISIONS

    def __init__(self, field: str, limit: int):
        super().__init__(f"{field}: one request may name at most {limit} distinct past revisions or times "
                         "(at_revision, as_of); split it", field=field)
        self.field = field


class ReadOnlyCaller(PermissionDenied):
    """A read-only caller (callers file) asked for a change."""

    reason = Reason.READ_ONLY_CALLER


class AdminOnly(PermissionDenied):
    """AdminService, called by a caller without `admin = true` in the callers file."""

    reason = Reason.ADMIN_ONLY


class OutsideCallerScope(PermissionDenied):
    """A caller limited to some organizations (callers file: organizations) named another one,
    or something that belongs to none of them."""

    reason = Reason.OUTSIDE_CALLER_SCOPE
