"""The application: the store, the fact index, the policy and the domain services, wired once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mandate.domain.authorization import Authorizer
from mandate.domain.directory import Directory
from mandate.domain.events import Events
from mandate.domain.membership import Memberships
from mandate.domain.partner import Partners
from mandate.index import FactIndex
from mandate.policy import Policy
from mandate.store.db import Store

log = logging.getLogger(__name__)

# How often the fact index looks for changes written by other processes.
POLL_SECONDS = 0.5


class App:
    def __init__(self, database_url: str, policy_dir, policy: Policy | None = None):
        self.store = Store(database_url)
        self.policy_dir = Path(policy_dir)
        self.index = FactIndex(self.store)
        self.authorizer = Authorizer(self.store, self.index, policy or Policy(policy_dir))
        self.store.on_commit(lambda _revision: self.index.catch_up())
        self.index.catch_up()
        self.directory = Directory(self.store, self.authorizer)
        self.memberships = Memberships(self.store, self.authorizer)
        self.partners = Partners(self.store, self.authorizer)
        self.events = Events(self.store)
        self._stop = threading.Event()

    def start_polling(self) -> None:
        """Catch up on writes by other processes (another server, the CLI) in the background."""
        def poll():
            while not self._stop.wait(POLL_SECONDS):
                try:
                    self.index.catch_up()
                except Exception:  # keep polling; checks that need a newer revision catch up themselves
                    log.exception("fact index catch-up failed")

        threading.Thread(target=poll, name="index-poll", daemon=True).start()

    def reload_policy(self) -> Policy:
        """Build and validate the new policy, then swap it in at once; on error the old one stays."""
        policy = Policy(self.policy_dir)
        self.authorizer.swap_policy(policy)
        return policy

    def close(self) -> None:
        self._stop.set()
        self.store.engine.dispose()
