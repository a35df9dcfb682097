"""The caller's deadline, carried to the worker thread that does the call's blocking work.

The server sets it before a handler runs in the worker pool; the store asks it just before
committing, so a mutation whose caller has given up is rolled back instead of committed."""

from __future__ import annotations

import contextvars
import time

from mandate.errors import DeadlineExceeded

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("mandate_deadline", default=None)


def run_within(deadline: float | None, function, *args):
    """Run `function(*args)` with `deadline` (a time.monotonic() value, or None) in force,
    unless it has already passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded("the deadline passed while the call waited for a worker; it was not started")
    token = _deadline.set(deadline)
    try:
        return function(*args)
    finally:
        _deadline.reset(token)


def check(what: str = "the change was not committed") -> None:
    """Raise DeadlineExceeded if the current call's deadline has passed."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"the deadline passed; {what}")
