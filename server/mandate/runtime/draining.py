"""Ending calls from outside: while the server drains, open streams end with UNAVAILABLE (so
their callers reconnect to another replica) and nothing new starts; a stream whose caller lost
the right to it (a reload of the callers file) is ended with why."""

from __future__ import annotations

import asyncio
import contextlib

from mandate.errors import Unavailable
from mandate.runtime.callers import Caller


class OpenStream:
    """A stream of a known caller: what it was opened with, rechecked when the callers change."""

    def __init__(self, context, method: str, request, caller: Caller):
        self.context = context
        self.method = method
        self.request = request
        self.caller = caller
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()  # set to the error that ends it


class Drain:
    """Whether the server drains, and the open streams of known callers (event loop only)."""

    def __init__(self):
        self._signal: asyncio.Future | None = None  # made on the loop by start()
        self.streams: set[OpenStream] = set()

    def start(self) -> None:
        """Call on the event loop before serving."""
        self._signal = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        """End every open stream (UNAVAILABLE) and every stream opened from now on."""
        if self._signal is not None and not self._signal.done():
            self._signal.set_result(None)

    async def until(self, awaitable, stream: OpenStream | None = None):
        """Await `awaitable`, unless the server starts draining first, or `stream` is ended (its
        caller lost the right to it): then raise why, and nothing more is delivered."""
        draining = self._signal
        ended = stream.ended if stream is not None else None
        stops = [future for future in (draining, ended) if future is not None]
        if not stops:
            return await awaitable
        if (ended is not None and ended.done()) or (draining is not None and draining.done()):
            with contextlib.suppress(Exception):
                awaitable.close()  # never started
        if ended is not None and ended.done():
            raise ended.result()
        if draining is not None and draining.done():
            raise Unavailable("the server is draining; reconnect to another replica")
        step = asyncio.ensure_future(awaitable)
        # A call the client cancels (a routine disconnect) may leave the step's outcome unread: it
        # failed in the same moment, or it is still stopping. Read it whenever it comes, so that
        # asyncio never reports it as an error ("exception was never retrieved").
        step.add_done_callback(_outcome_read)
        try:
            await asyncio.wait((step, *stops), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not step.done():  # draining, ended, or this call was cancelled: stop the step first
                step.cancel()
                with contextlib.suppress(BaseException):
                    await step
        if ended is not None and ended.done():
            raise ended.result()
        if step.cancelled():
            raise Unavailable("the server is draining; reconnect to another replica")
        return step.result()


def _outcome_read(step: asyncio.Future) -> None:
    if not step.cancelled():
        step.exception()
