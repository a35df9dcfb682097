"""Blocking work (SQL, mutations, big batches) runs in a bounded pool of worker threads, so the
event loop is never held by a call. A call whose deadline passed while it waited for a worker
is not started, and the store commits nothing once the deadline has passed (`deadlines`). One
caller holds at most its share of the workers (`RequestLimits.workers`)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from concurrent.futures import Executor

from mandate import deadlines
from mandate.runtime import callers
from mandate.runtime.limits import RequestLimits


class WorkerPool:
    def __init__(self, executor: Executor, requests: RequestLimits):
        self.executor = executor
        self.requests = requests

    async def run(self, context, function, *args):
        """Run blocking `function(*args)` in the worker pool, under the caller's deadline (None:
        no gRPC call, no deadline), with the caller in `callers.current`; one caller holds at
        most its share of the workers."""
        caller = callers.current.get()
        async with self.requests.workers(caller.name if caller else ""):
            remaining = context.time_remaining() if context is not None else None
            deadline = None if remaining is None else time.monotonic() + remaining
            work = contextvars.copy_context()
            cancelled = threading.Event()  # the caller went away: the work stops at its next look
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self.executor, functools.partial(work.run, deadlines.run_within, deadline, function, *args,
                                                     cancelled=cancelled))
            except asyncio.CancelledError:
                cancelled.set()
                raise
