"""The application: the store, the fact index, the policy and the domain services, wired once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mandate import errors
from mandate.admin.service import Admin
from mandate.checks.history import History
from mandate.directory.service import Directory
from mandate.engine import policytrial
from mandate.engine.authorizer import Authorizer
from mandate.engine.index import FactIndex
from mandate.engine.policy import Policy, PolicyError
from mandate.events.service import Events
from mandate.membership.service import Memberships
from mandate.partner.service import Partners
from mandate.runtime.config import DatabaseSettings
from mandate.runtime.requests import RequestIds
from mandate.shared.expiry import Expiries, Lifetimes
from mandate.store.db import Store
from mandate.store.follow import ChangeFeed

log = logging.getLogger(__name__)

# How often the fact index looks for changes written by other processes when no notification
# woke it (PostgreSQL notifies at once; SQLite has only this timer). It is also how often a lost
# database is tried again, so writes resume within about this long of its return.
POLL_SECONDS = 0.5


class App:
    def __init__(self, database_url: str, policy_dir, policy: Policy | None = None,
                 database: DatabaseSettings | None = None, *, lifetimes: Lifetimes | None = None,
                 index: FactIndex | None = None):
        # The clock and the invitation lifetime; tests pass a ManualClock and move it.
        self.lifetimes = lifetimes or Lifetimes()
        self.store = Store(database_url, database or DatabaseSettings.from_env())
        self.policy_dir = Path(policy_dir)
        # `index`: one loaded before this process started (see mandate.runtime.server.preload),
        # caught up from its revision below.
        if index is None:
            index = FactIndex(self.store, self.lifetimes.clock)
        else:
            index.adopt(self.store, self.lifetimes.clock)
        self.index = index
        self.authorizer = Authorizer(self.store, self.index, policy or Policy(policy_dir))
        self.store.on_commit(self._caught_up_to)
        self.index.catch_up()
        self.directory = Directory(self.store, self.authorizer, self.lifetimes)
        self.memberships = Memberships(self.store, self.authorizer, self.lifetimes)
        self.partners = Partners(self.store, self.authorizer, self.lifetimes)
        self.events = Events(self.store)
        self.expiries = Expiries(self.store, self.lifetimes)
        self.requests = RequestIds(self.store, self.lifetimes)
        self.history = History(self.store, self.authorizer, self.lifetimes)
        self.admin = Admin(self.store, self.lifetimes, self.history, lambda: self.authorizer.policy)
        self.history.record_policy(self.authorizer.policy)
        self.expiries.chores.append(self.history.forget_expired)
        self._stop = threading.Event()
        self._reloading = threading.RLock()  # re-entrant: a signal handler may interrupt a reload
        self._feed = ChangeFeed(self.store, self._stop)
        self._follower: threading.Thread | None = None

    def _caught_up_to(self, revision: int) -> None:
        if self.index.revision < revision:
            written = self.store.written_at(revision)
            if written is None or not self.index.apply_written(revision, written):
                self.index.catch_up()

    def database_available(self) -> bool:
        """Whether the database answered the last time a call or the follower asked (cheap:
        no round trip). While False, mutations fail at once with DATABASE_UNAVAILABLE and
        checks answer from the fact index, at the revision it has."""
        return self.store.available

    def on_database_availability(self, callback) -> None:
        """Call `callback(available: bool)` whenever the database is lost or found again (health)."""
        self.store.on_availability(callback)

    def start_polling(self) -> None:
        """Follow writes by other processes (replicas, the CLI) in the background: woken by
        PostgreSQL's notifications, else every POLL_SECONDS. The same loop notices a lost
        database and its return."""
        if self._follower is None:
            self._follower = threading.Thread(target=self._follow, name="index-follow", daemon=True)
            self._follower.start()

    def _follow(self) -> None:
        announced = self.index.revision
        while not self._stop.is_set():
            try:
                notified = self._feed.wait(POLL_SECONDS)
                if self._stop.is_set():
                    break
                if notified is not None and (notified <= self.index.revision or (
                        self.store.made_here(notified, POLL_SECONDS) and notified <= self.index.revision)):
                    continue  # this process's own writes, applied as they committed: nothing to read
                revision = self.index.catch_up()
                self.store.mark_available()
                if revision > announced:
                    announced = revision
                    self.store.announce(revision)  # wakes Watch streams for other processes' writes
            except errors.DatabaseUnavailable:
                self._stop.wait(POLL_SECONDS)
            except Exception as error:  # noqa: BLE001 - the follower never dies
                if _is_connection_error(error):
                    self.store.mark_unavailable()
                else:
                    log.exception("following the store failed; trying again")
                self._stop.wait(POLL_SECONDS)
        self._feed.close()

    def start_expiring(self) -> None:
        """Write what ends by itself (invitations, access) within a second of its time, from one
        replica at a time (mandate.shared.expiry)."""
        threading.Thread(target=self.expiries.run, args=(self._stop,), name="expiry", daemon=True).start()

    def reload_policy(self) -> Policy:
        """Build and validate the new policy, try it (mandate.engine.policytrial: a sample of real
        decisions and its own tests, refused on any run-time error), then swap it in at once; on
        any error the old one stays and the error is a PolicyError. Reloads (SIGHUP, the watcher)
        run one at a time."""
        with self._reloading:
            try:
                policy = Policy(self.policy_dir)
                failures = policytrial.problems(policy, self.index)
                if failures:
                    raise PolicyError(f"policy {policy.version} fails at run time: " + "; ".join(failures), failures)
                # Recorded before it serves, so the history names every policy that answered.
                self.history.record_policy(policy)
            except PolicyError:
                raise
            except errors.DomainError as error:
                raise PolicyError(f"policy {policy.version} not served: the history cannot record it "
                                  f"({error.message}); the policy before it keeps serving") from error
            except Exception as error:  # noqa: BLE001 - a reload must never take the server down
                raise PolicyError(f"policy reload failed: {type(error).__name__}: {error}") from error
            self.authorizer.swap_policy(policy)
            return policy

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=2 * POLL_SECONDS + 5)
        self.store.engine.dispose()


def _is_connection_error(error: Exception) -> bool:
    """The listening connection's errors come straight from the driver, not through the store."""
    if isinstance(error, OSError):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(error, psycopg.OperationalError)
