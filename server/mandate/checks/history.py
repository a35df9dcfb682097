"""Answers about the past: the check plane at a kept revision (access history).

`History.authorizer_at` gives an `Authorizer` over the facts and the policy in force at a past
revision, so Check, Explain, ListActions, ListResources, ListActors and AccessReview answer about
the past through the same code as about the present. The facts come from the history tables
(mandate.store.history) into a fact index that stays at that revision; the policy from the text
stored when it served. Both are kept for the next question about the same revision, the indexes
within a memory budget (`memory_budget`).

Questions about the past run in worker threads, never on the event loop, and never hold up the
present: the lock here only guards the kept indexes (a few dictionary operations); a whole
index is built outside it, one build at a time, each waited for within the caller's deadline.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from mandate import deadlines, errors, tracing
from mandate.clock import as_text
from mandate.engine.authorizer import Authorizer
from mandate.engine.index import FactIndex
from mandate.engine.policy import Policy
from mandate.names import EventType
from mandate.shared.common import calling_service
from mandate.shared.expiry import Lifetimes
from mandate.store import history
from mandate.store.db import Store, utc_now

# Fact indexes of past revisions are kept for the next question (an audit asks many about one
# time) while their estimated size stays within this budget (MANDATE_HISTORY_MEMORY).
DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024
# What one fact row costs in a fact index, about: an index of the past built alone on the bench's
# large dataset took 239 bytes per row (its ids and values are shared with the live index when
# there is one, so it costs less then).
BYTES_PER_ROW = 250
# Distinct past revisions or times one request may ask about (a BatchCheck's items each may name
# their own): past it, RESOURCE_EXHAUSTED, reason TOO_MANY_REVISIONS.
MAX_PAST_TIMES = 8
# How often the interpreter switches threads while a build of the past runs (see _handing_over).
BUILD_SWITCH_SECONDS = 0.0005
# How often a wait for another call's build looks at the caller's deadline and cancellation.
WAIT_SECONDS = 0.05


_builds = [0, 0.0]  # builds of the past running in this process, and the switch interval before them
_builds_lock = threading.Lock()


@contextlib.contextmanager
def _handing_over():
    """While a build of the past runs (pure Python for seconds on a large store), the interpreter
    hands its lock to another thread every BUILD_SWITCH_SECONDS instead of every 5 ms: the event
    loop that answers present checks then waits that long for it at most. The last build to end
    (several applications may share a process) puts the interval back."""
    with _builds_lock:
        if _builds[0] == 0:
            _builds[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(_builds[1], BUILD_SWITCH_SECONDS))
        _builds[0] += 1
    try:
        yield
    finally:
        with _builds_lock:
            _builds[0] -= 1
            if _builds[0] == 0:
                sys.setswitchinterval(_builds[1])


class _AlreadyServing(Exception):
    pass


class History:
    def __init__(self, store: Store, live: Authorizer, lifetimes: Lifetimes):
        self.store = store
        self.live = live
        self.lifetimes = lifetimes
        self.memory_budget = DEFAULT_MEMORY_BUDGET
        self._lock = threading.Lock()  # guards the kept indexes and policies: held for look-ups only
        self._building = threading.Lock()  # one whole index of the past is built at a time
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
            with self.store.write(caller=calling_service()) as tx:
                if history.last_policy(tx.session) == policy.version:  # another replica was first
                    raise _AlreadyServing
                history.record_policy(tx.session, policy.version, sources, tx.revision, utc_now())
                tx.emit(EventType.POLICY_SERVED, policy_version=policy.version)
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
        with tracing.span("mandate.history.find_revision"):
            revision = at_revision if as_of is None else self.revision_as_of(as_of)
        field = "as_of" if as_of is not None else "at_revision"
        with self.store.read() as session:
            kept_revision(self.store, session, revision, field)
            served = history.policy_at(session, revision)
        if served is None:
            raise errors.RevisionUnavailable(f"{field}: no policy was recorded as serving at revision {revision}")
        return Authorizer(self.store, self._index_at(revision, around), self._policy(served))

    def revision_as_of(self, moment: str) -> int:
        """The last revision committed at or before `moment`; the same answer whenever and on
        whichever replica it is asked. Revisions are stamped under the revision lock with the
        store's clock, each later than the one before (Store.write): so a moment before the
        newest stamp is settled, and for a later one the write in flight, if any, is waited
        for first (every write after it is stamped later than now). A moment later than the
        store's clock is refused: it would be answered differently later."""
        with self.store.read() as session:
            newest = history.newest_time(session)
            if newest is not None and moment < newest:
                return history.revision_at(session, moment)
        with self.store.settled() as session:
            if moment > self.store.now(session):
                raise errors.RevisionUnavailable("as_of: lies in the future; the history answers about the past")
            return history.revision_at(session, moment)

    def _index_at(self, revision: int, around: tuple[str, str, str] | None) -> FactIndex:
        with self._lock:
            whole = self._indexes.get(revision)
            if whole is not None:
                self._indexes.move_to_end(revision)
                return whole
        if around is not None:
            return FactIndex.at(self.store, revision, around)
        self._wait_for(self._building)
        try:
            with self._lock:  # built while this call waited
                whole = self._indexes.get(revision)
            if whole is None:
                with _handing_over():
                    whole = FactIndex.at(self.store, revision)
                self._keep(whole)
            return whole
        finally:
            self._building.release()

    def _keep(self, index: FactIndex) -> None:
        """Keep `index` for the next question, dropping the least recently asked ones while the
        kept indexes pass the memory budget (one larger than the whole budget is not kept)."""
        size = index.rows * BYTES_PER_ROW
        if size > self.memory_budget:
            return
        with self._lock:
            self._indexes[index.revision] = index
            while sum(kept.rows for kept in self._indexes.values()) * BYTES_PER_ROW > self.memory_budget:
                self._indexes.popitem(last=False)

    @staticmethod
    def _wait_for(lock: threading.Lock) -> None:
        """Take `lock`, waiting no longer than the caller's deadline (or until it cancels)."""
        while not lock.acquire(timeout=WAIT_SECONDS):
            deadlines.check("the answer about the past was not started")

    def kept_bytes(self) -> int:
        """The estimated size of the past indexes kept."""
        with self._lock:
            return sum(kept.rows for kept in self._indexes.values()) * BYTES_PER_ROW

    def _policy(self, served: history.ServedPolicy) -> Policy:
        if served.version == self.live.policy.version:
            return self.live.policy
        with self._lock:
            policy = self._policies.get(served.version)
        if policy is None:
            with tracing.span("mandate.history.load_policy"), \
                    tempfile.TemporaryDirectory(prefix="mandate-policy-") as directory:
                for name, text in served.sources.items():
                    (Path(directory) / Path(name).name).write_text(text, encoding="utf-8")
                policy = Policy(directory)
            with self._lock:
                policy = self._policies.setdefault(served.version, policy)
        return policy


def kept_revision(store: Store, session, revision: int, field: str) -> int:
    """`revision`, if the history holds it (read in `session`); FAILED_PRECONDITION
    REVISION_UNAVAILABLE, naming `field`, when it is older than the history keeps or newer than
    the store."""
    kept_from = history.horizon(session)
    newest = store.current_revision()
    if revision > newest:
        raise errors.RevisionUnavailable(f"{field}: revision {revision} is newer than the store's ({newest})")
    if revision < kept_from:
        raise errors.RevisionUnavailable(
            f"{field}: the history starts at revision {kept_from} (older revisions were never recorded, "
            "or passed the history retention)")
    return revision
