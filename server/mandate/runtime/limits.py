"""How much one caller, and the server, may hold at once: open streams, and requests in flight
with their share of the worker threads. Both are used on the event loop only, so they need no
lock."""

from __future__ import annotations

import asyncio
import contextlib

from mandate.errors import TooManyRequests, TooManyStreams
from mandate.runtime.config import DEFAULT_REQUESTS_PER_CALLER, DEFAULT_STREAMS, DEFAULT_STREAMS_PER_CALLER


class StreamLimits:
    """Open streams per caller and in total: past either, a new stream is RESOURCE_EXHAUSTED,
    reason TOO_MANY_STREAMS."""

    def __init__(self, per_caller: int = DEFAULT_STREAMS_PER_CALLER, total: int = DEFAULT_STREAMS):
        self.per_caller = per_caller
        self.total = total
        self.open: dict[str, int] = {}
        self.open_total = 0

    @contextlib.contextmanager
    def hold(self, caller: str):
        if self.open_total >= self.total:
            raise TooManyStreams(f"the server holds its limit of {self.total} open streams; retry later")
        if self.open.get(caller, 0) >= self.per_caller:
            raise TooManyStreams(f"caller {caller} holds its limit of {self.per_caller} open streams; "
                                 "close one first")
        self.open[caller] = self.open.get(caller, 0) + 1
        self.open_total += 1
        try:
            yield
        finally:
            self.open_total -= 1
            left = self.open[caller] - 1
            if left:
                self.open[caller] = left
            else:
                del self.open[caller]


class RequestLimits:
    """Requests in flight per caller, and the share of the worker pool one caller may hold.

    Past `per_caller` requests in flight, a caller's next request is RESOURCE_EXHAUSTED, reason
    TOO_MANY_REQUESTS, with a RetryInfo. Of the worker threads, one caller holds at most
    `workers_per_caller` at a time; its other requests wait on the event loop (holding no
    thread), so the remaining workers stay free for every other caller."""

    def __init__(self, per_caller: int = DEFAULT_REQUESTS_PER_CALLER, workers_per_caller: int = 8):
        self.per_caller = per_caller
        self.workers_per_caller = workers_per_caller
        self.in_flight: dict[str, int] = {}
        self._workers: dict[str, asyncio.Semaphore] = {}

    def enter(self, caller: str) -> None:
        held = self.in_flight.get(caller, 0)
        if held >= self.per_caller:
            raise TooManyRequests(f"caller {caller} has its limit of {self.per_caller} requests in flight; "
                                  "retry after one finishes")
        self.in_flight[caller] = held + 1

    def leave(self, caller: str) -> None:
        left = self.in_flight[caller] - 1
        if left:
            self.in_flight[caller] = left
        else:
            del self.in_flight[caller]

    def workers(self, caller: str) -> asyncio.Semaphore:
        semaphore = self._workers.get(caller)
        if semaphore is None:  # one per known caller name: bounded by the callers configured
            semaphore = self._workers[caller] = asyncio.Semaphore(self.workers_per_caller)
        return semaphore
