"""Mutations that are safe to retry: the caller's `request_id`.

A calling service may send any mutation with a `request_id`, its own key for that request.
The first call runs the mutation and records its outcome (the reply, or the refusal) in the
same transaction, under (caller, request_id); a retry within 24 hours gets that outcome back and
changes nothing, whether the first reply was lost or never sent. Keys belong to the calling
service: the same key on another RPC, or with other fields, is refused (REQUEST_ID_REUSED).

Racing retries produce one change: writers take the revision counter one at a time, and the
record's primary key refuses a second insert of the same key even so; the loser answers with
the winner's outcome. Refusals that say nothing about the request itself are not recorded
(invalid fields, deadlines, an unavailable or busy server), so their retry runs again.

One exception: the token of an invitation link is never stored, so the retry of a
CreateInviteLink returns the invitation without it (the caller can cancel the link and create
another).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from mandate import errors
from mandate.clock import as_text
from mandate.names import Reason
from mandate.shared.common import calling_service
from mandate.shared.expiry import REQUEST_RETENTION, Lifetimes
from mandate.shared.retrying import retried
from mandate.store import models
from mandate.store.db import Store

Reply = TypeVar("Reply")  # the transport's reply: the domain only runs, keeps and replays it

# Refusals whose retry should run again: nothing about the request was decided.
NOT_RECORDED = (errors.InvalidArgument, errors.DeadlineExceeded, errors.Unavailable, errors.DatabaseUnavailable,
                errors.Unauthenticated,
                errors.TooManyStreams)


class Reused(errors.InvalidArgument):
    def __init__(self, problem: str):
        super().__init__("request_id", problem, Reason.REQUEST_ID_REUSED)


class _Recorded(Exception):
    def __init__(self, record: models.RequestRecord):
        self.record = record


class _Unchanged(Exception):
    def __init__(self, record: models.RequestRecord):
        self.record = record


class RequestIds:
    def __init__(self, store: Store, lifetimes: Lifetimes):
        self.store = store
        self.lifetimes = lifetimes

    @retried
    def once(self, request_id: str, method: str, fingerprint: str, run: Callable[[], Reply],
             keep: Callable[[Reply], bytes], replay: Callable[[bytes], Reply]) -> Reply:
        """`run()` (the mutation, returning its reply) once per caller and `request_id`. The
        transport says what the reply is: `keep(reply)` is the bytes a retry gets back, through
        `replay(bytes)`; `fingerprint` is what makes two requests of `method` the same."""
        caller = calling_service()
        with self.store.read() as session:
            record = self._find(session, caller, request_id)
        if record is not None:
            return self._replay(record, method, fingerprint, replay)
        try:
            with self.store.write(caller=caller) as tx:
                record = self._find(tx.session, caller, request_id)
                if record is not None:  # a racing retry committed while this one waited
                    raise _Recorded(record)
                tx.session.execute(delete(models.RequestRecord).where(  # an expired record of the same key
                    models.RequestRecord.caller == caller, models.RequestRecord.request_id == request_id))
                reply = run()
                record = models.RequestRecord(
                    caller=caller, request_id=request_id, method=method, fingerprint=fingerprint,
                    created_at=self.lifetimes.now(), response=keep(reply))
                if not tx.events:  # the mutation changed nothing: no revision (recorded below)
                    raise _Unchanged(record)
                tx.session.add(record)
                tx.session.flush()
        except _Unchanged as nothing:
            self._record_outside(nothing.record)
        except _Recorded as recorded:
            return self._replay(recorded.record, method, fingerprint, replay)
        except IntegrityError:
            return self._replay(self._committed(caller, request_id), method, fingerprint, replay)
        except errors.DomainError as refusal:
            if isinstance(refusal, NOT_RECORDED):
                raise
            self._record_refusal(caller, request_id, method, fingerprint, refusal)
            raise
        return reply

    def _committed(self, caller: str, request_id: str) -> models.RequestRecord:
        with self.store.read() as session:
            record = self._find(session, caller, request_id)
        if record is None:  # the conflict was not about the key: unexpected
            raise errors.Unavailable("the request conflicted with another change; retry")
        return record

    def _find(self, session, caller: str, request_id: str) -> models.RequestRecord | None:
        record = session.get(models.RequestRecord, (caller, request_id), populate_existing=True)
        cutoff = as_text(self.lifetimes.clock.now() - REQUEST_RETENTION)
        if record is None or record.created_at < cutoff:
            return None
        session.expunge(record)
        return record

    def _record_refusal(self, caller, request_id, method, fingerprint, refusal: errors.DomainError) -> None:
        self._record_outside(models.RequestRecord(
            caller=caller, request_id=request_id, method=method, fingerprint=fingerprint,
            created_at=self.lifetimes.now(), error_code=refusal.code.name, error_reason=refusal.reason,
            error_message=refusal.message))

    def _record_outside(self, record: models.RequestRecord) -> None:
        """Keep the outcome of a request that changed nothing (a refusal, or a no-op) without
        taking a revision."""
        try:
            with self.store.bookkeeping() as session:
                session.execute(delete(models.RequestRecord).where(
                    models.RequestRecord.caller == record.caller,
                    models.RequestRecord.request_id == record.request_id))
                session.add(record)
        except IntegrityError:
            pass  # a racing retry recorded its outcome first; a later retry gets that one

    @staticmethod
    def _replay(record: models.RequestRecord, method: str, fingerprint: str, replay: Callable[[bytes], Reply]):
        if record.method != method:
            raise Reused(f"this request_id was used for {record.method} (keys are per request)")
        if record.fingerprint != fingerprint:
            raise Reused(f"this request_id was used for a {method} with other fields")
        if record.error_code:
            refusal = errors.DomainError(record.error_message or "", record.error_reason)
            refusal.code = errors.Status[record.error_code]
            raise refusal
        return replay(record.response or b"")



