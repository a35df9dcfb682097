"""Time, read in one place, so that tests can move it instead of waiting for it.

Access that ends by itself is ended by a change the service writes (mandate.shared.expiry), so
the facts the policy sees stay free of time. The writers read the clock: to stamp an
invitation's `expires_at`, to refuse an invitation that has lapsed, and to find what is due to
expire; the fact index reads it only to take away, until that change comes, a fact whose end
has passed (mandate.engine.index).

Timestamps are stored as fixed-width RFC 3339 strings in UTC (`2026-11-26T08:00:00.000000Z`),
so they compare as text in SQL on every engine.
"""

from __future__ import annotations

import datetime
import re
import threading
import time

UTC = datetime.UTC
_DURATION = re.compile(r"^([0-9]{1,9})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def as_text(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse(text: str) -> datetime.datetime:
    """An RFC 3339 time with an offset (`Z` or `+02:00`); ValueError otherwise."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                        r"([Zz]|[+-][0-9]{2}:[0-9]{2})", text):
        raise ValueError("not an RFC 3339 time with a time zone")
    head, _, rest = text.partition(".")
    if rest:  # Python reads at most 6 fractional digits
        digits = re.match(r"[0-9]+", rest).group()
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    moment = datetime.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    return moment.astimezone(UTC)


def parse_duration(text: str) -> datetime.timedelta:
    """`90s`, `30m`, `12h`, `14d`: a positive number and a unit; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration such as 30m, 12h or 14d")
    return datetime.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


class SystemClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(UTC)

    def now_text(self) -> str:
        return as_text(self.now())

    def seconds(self) -> float:
        """The time as seconds since the epoch: cheap enough to ask on every decision."""
        return time.time()


class ManualClock(SystemClock):
    """A clock that moves only when told (tests, `mandate.testing`)."""

    def __init__(self, start: datetime.datetime | None = None):
        self._now = start or datetime.datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime.datetime:
        with self._lock:
            return self._now

    def seconds(self) -> float:
        return self.now().timestamp()

    def advance(self, **delta: float) -> datetime.datetime:
        with self._lock:
            self._now += datetime.timedelta(**delta)
            return self._now
