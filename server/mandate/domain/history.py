"""Answers about the past: the check plane at a kept revision (access history).

`History.authorizer_at` gives an `Authorizer` over the facts and the policy in force at a past
revision, so Check, Explain, ListActions, ListResources, ListActors and AccessReview answer about
the past through the same code as about the present. The facts come from the history tables
(mandate.store.history) into a fact index that stays at that revision; the policy from the text
stored when it served. Both are kept for the next question about the same revision.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from mandate import errors, tracing
from mandate.clock import as_text
from mandate.domain.authorization import Authorizer
from mandate.domain.expiry import Lifetimes
from mandate.index import FactIndex
from mandate.policy import Policy
from mandate.store import history
from mandate.store.db import Store, utc_now

# Fact indexes of past revisions kept for the next question (an audit asks many about one time).
KEPT_INDEXES = 4


class _AlreadyServing(Exception):
    pass


class History:
    def __init__(self, store: Store, live: Authorizer, lifetimes: Lifetimes):
        self.store = store
        self.live = live
        self.lifetimes = lifetimes
        self._lock = threading.Lock()  # one past index is built at a time
        self._indexes: OrderedDict[int, FactIndex] = OrderedDict()
        self._policies: dict[str, Policy] = {}

    # -- recording -------------------------------------------------------------------------

    def record_policy(self, policy: Policy) -> None:
        """`policy` is about to serve (at start, and before a reload swaps it in): unless it is
        the policy serving already, record it as a change with its own revision and event
        (`policy.served`), so every revision has exactly one policy. Replicas starting together
        take revisions one at a time, so one of them records it."""
        with self.store.read() as session:
            if history.last_policy(session) == policy.version:
                return
        sources = {source.path.name: source.text for source in policy.sources}
        try:
            with self.store.write() as tx:
                if history.last_policy(tx.session) == policy.version:  # another replica was first
                    raise _AlreadyServing
                history.record_policy(tx.session, policy.version, sources, tx.revision, utc_now())
                tx.emit("policy.served", policy_version=policy.version)
        except _AlreadyServing:
            pass

    def forget_expired(self) -> None:
        """Retention: let go of the versions that ended before `history_retention` ago."""
        retention = self.lifetimes.history_retention
        if retention is None:
            return
        moment = as_text(self.lifetimes.clock.now() - retention)
        with self.store.read() as session:
            revision = history.revision_at(session, moment)
            if revision <= history.horizon(session):
                return
        with self.store.bookkeeping() as session:
            history.forget_before(session, revision)
        with self._lock:
            for kept in [r for r in self._indexes if r < revision]:
                del self._indexes[kept]

    # -- answering -------------------------------------------------------------------------

    def authorizer_at(self, at_revision: int | None, as_of: str | None,
                      around: tuple[str, str, str] | None = None) -> Authorizer:
        """The check plane as it was at `at_revision`, or at the last revision committed at or
        before `as_of` (normalized RFC 3339). FAILED_PRECONDITION REVISION_UNAVAILABLE when that
        revision is older than the history keeps, or newer than the store.

        With `around` (user id, resource type, resource id), the request is one decision about
        them: unless the whole index of that revision is at hand, only its facts are read."""
        if as_of is not None and as_of > utc_now():
            raise errors.RevisionUnavailable("as_of: lies in the future; the history answers about the past")
        with tracing.span("mandate.history.find_revision"), self.store.read() as session:
            revision = at_revision if as_of is None else history.revision_at(session, as_of)
            kept_from = history.horizon(session)
            newest = self.store.current_revision()
            field = "as_of" if as_of is not None else "at_revision"
            if revision > newest:
                raise errors.RevisionUnavailable(f"{field}: revision {revision} is newer than the store's ({newest})")
            if revision < kept_from:
                raise errors.RevisionUnavailable(
                    f"{field}: the history starts at revision {kept_from} (older revisions were never recorded, "
                    "or passed the history retention)")
            served = history.policy_at(session, revision)
        if served is None:
            raise errors.RevisionUnavailable(f"{field}: no policy was recorded as serving at revision {revision}")
        return Authorizer(self.store, self._index_at(revision, around), self._policy(served))

    def _index_at(self, revision: int, around: tuple[str, str, str] | None) -> FactIndex:
        if around is not None:
            with self._lock:
                whole = self._indexes.get(revision)
            return whole if whole is not None else FactIndex.at(self.store, revision, around)
        with self._lock:
            index = self._indexes.get(revision)
            if index is None:
                index = self._indexes[revision] = FactIndex.at(self.store, revision)
                while len(self._indexes) > KEPT_INDEXES:
                    self._indexes.popitem(last=False)
            self._indexes.move_to_end(revision)
            return index

    def _policy(self, served: history.ServedPolicy) -> Policy:
        if served.version == self.live.policy.version:
            return self.live.policy
        policy = self._policies.get(served.version)
        if policy is None:
            with tracing.span("mandate.history.load_policy"), \
                    tempfile.TemporaryDirectory(prefix="mandate-policy-") as directory:
                for name, text in served.sources.items():
                    (Path(directory) / Path(name).name).write_text(text, encoding="utf-8")
                policy = Policy(directory)
            self._policies[served.version] = policy
        return policy
