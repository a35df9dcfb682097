"""The caller's deadline, carried to the worker thread that does the call's blocking work.

The server sets it before a handler runs in the worker pool; the store asks it just before
committing, so a mutation whose caller has given up is rolled back instead of committed. Long
answers (lists, reviews, Explain, batches, building the facts of the past) ask it as they go,
so their work stops soon after the deadline passes or the caller cancels the call."""

from __future__ import annotations

import contextvars
import threading
import time

from mandate.errors import DeadlineExceeded

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("mandate_deadline", default=None)
_cancelled: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("mandate_cancelled", default=None)


def run_within(deadline: float | None, function, *args, cancelled: threading.Event | None = None):
    """Run `function(*args)` with `deadline` (a time.monotonic() value, or None) in force,
    unless it has already passed. `cancelled` is set when the caller cancels the call."""
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded("the deadline passed while the call waited for a worker; it was not started")
    token = _deadline.set(deadline)
    stop = _cancelled.set(cancelled)
    try:
        return function(*args)
    finally:
        _cancelled.reset(stop)
        _deadline.reset(token)


def check(what: str = "the change was not committed") -> None:
    """Raise DeadlineExceeded if the current call's deadline has passed, or its caller cancelled it."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"the deadline passed; {what}")
    cancelled = _cancelled.get()
    if cancelled is not None and cancelled.is_set():
        raise DeadlineExceeded(f"the caller cancelled the call; {what}")
