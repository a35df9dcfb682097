"""Domain errors: each carries its status code and the reason clients match on (api.md).
One interceptor (api/interceptors.py) turns them into a status plus google.rpc.ErrorInfo."""

from __future__ import annotations

import grpc

from mandate.names import Reason


class DomainError(Exception):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = Reason.FAILED_PRECONDITION

    def __init__(self, message: str, reason: str | None = None, **metadata: str):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = metadata


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = Reason.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str, reason: str | None = None):
        super().__init__(f"{field}: {problem}", reason, field=field)
        self.field = field


class UnknownScope(InvalidArgument):
    reason = Reason.UNKNOWN_SCOPE


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = Reason.NOT_FOUND


class PermissionDenied(DomainError):
    """R23: the policy did not allow the acting user this mutation."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = Reason.NOT_ALLOWED


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = Reason.ALREADY_EXISTS


class AlreadyMember(AlreadyExists):
    reason = Reason.ALREADY_MEMBER


class PartnerRecordConflict(AlreadyExists):
    reason = Reason.PARTNER_RECORD_CONFLICT


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
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
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = Reason.SEAT_LIMIT_REACHED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = Reason.UNAUTHENTICATED


class TooManyStreams(DomainError):
    """A caller, or the server as a whole, has as many open streams as it may hold."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = Reason.TOO_MANY_STREAMS


class DeadlineExceeded(DomainError):
    """The caller's deadline passed before the work was done; nothing was changed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = Reason.DEADLINE_EXCEEDED


class Unavailable(DomainError):
    """The server is starting or draining: try another replica, or again shortly."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = Reason.UNAVAILABLE


class DatabaseUnavailable(DomainError):
    """The store cannot be reached (or is overloaded): nothing was changed; retry."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = Reason.DATABASE_UNAVAILABLE


class TooManyRequests(DomainError):
    """A caller has as many requests in flight as it may; waiting `retry_seconds` helps."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = Reason.TOO_MANY_REQUESTS
    retry_seconds = 0.1


class ReadOnlyCaller(PermissionDenied):
    """A read-only caller (callers file) asked for a change."""

    reason = Reason.READ_ONLY_CALLER


class AdminOnly(PermissionDenied):
    """AdminService, called by a caller without `admin = true` in the callers file."""

    reason = Reason.ADMIN_ONLY
