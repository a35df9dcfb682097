"""Serialization failures and deadlocks never reach callers: a domain service's public method
marked `@retried` runs again, whole, when the database aborted its transaction to keep writers
serializable. Nothing of an aborted attempt was written, so running it again is safe. Its writes
may share a group commit (mandate.store.db); one not kept in its group runs again at once, first
of a new group, and alone if that fails too."""

from __future__ import annotations

import functools
import inspect
import logging
import random
import time

from mandate import errors
from mandate.store.db import ALONE, JOIN, LEAD, Conflict, Regroup, grouping, in_write

log = logging.getLogger("mandate.app")

# A transaction the database aborted (serialization failure, deadlock) runs again this often at most.
ATTEMPTS = 8


def retried(method):
    """Run `method` again when the database aborts its transaction; after ATTEMPTS aborts,
    DATABASE_UNAVAILABLE. Inside a request's transaction (`in_write`), the conflict goes up: that
    whole request runs again instead."""

    # The ids a call names (its parameters named `*_id`: the actor, the organizations, the
    # people): the ids its write will likely name, the hint of its group commit (`grouping`).
    parameters = list(inspect.signature(method).parameters)[1:]
    named = frozenset(n for n in parameters if n.endswith("_id"))
    positions = tuple(i for i, n in enumerate(parameters) if n in named)

    @functools.wraps(method)
    def call(service, *args, **kwargs):
        mode = JOIN  # its write may share a group commit
        hint = frozenset(a for a in (*(args[i] for i in positions if i < len(args)),
                                     *(v for k, v in kwargs.items() if k in named)) if isinstance(a, str) and a)
        attempt = 0
        while True:
            try:
                with grouping(mode, hint):
                    return method(service, *args, **kwargs)
            except Conflict as conflict:
                if in_write():  # joined a request's transaction: that whole request runs again
                    raise
                if isinstance(conflict, Regroup) and mode != ALONE:
                    # Not kept in its group (nothing of it was written): it runs again at once, first
                    # of a new group (deciding on the committed state), and alone if that fails too.
                    mode = LEAD if mode == JOIN else ALONE
                    continue
                attempt += 1
                if attempt == ATTEMPTS:
                    raise errors.DatabaseUnavailable(
                        "the database aborted this change repeatedly under contention; retry") from conflict
                log.info("%s: transaction aborted by the database (%s); running it again", method.__name__, conflict)
                time.sleep(random.uniform(0, 0.005 * 2 ** attempt))

    return call
