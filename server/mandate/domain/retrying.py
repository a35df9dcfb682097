"""Serialization failures and deadlocks never reach callers: a domain service's public method
marked `@retried` runs again, whole, when the database aborted its transaction to keep writers
serializable. Nothing of an aborted attempt was written, so running it again is safe."""

from __future__ import annotations

import functools
import logging
import random
import time

from mandate import errors
from mandate.store.db import Conflict, in_write

log = logging.getLogger("mandate.app")

# A transaction the database aborted (serialization failure, deadlock) runs again this often at most.
ATTEMPTS = 8


def retried(method):
    """Run `method` again when the database aborts its transaction; after ATTEMPTS aborts,
    DATABASE_UNAVAILABLE. Inside a request's transaction (`in_write`), the conflict goes up: that
    whole request runs again instead."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return method(*args, **kwargs)
            except Conflict as conflict:
                if in_write():  # joined a request's transaction: that whole request runs again
                    raise
                if attempt == ATTEMPTS:
                    raise errors.DatabaseUnavailable(
                        "the database aborted this change repeatedly under contention; retry") from conflict
                log.info("%s: transaction aborted by the database (%s); running it again", method.__name__, conflict)
                time.sleep(random.uniform(0, 0.005 * 2 ** attempt))

    return call
