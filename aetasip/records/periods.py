"""
Periods of call records, in UTC: calendar quarters (C{2026Q1}: from
1 January 00:00 to 1 April 00:00), times given on a command line, and
times written in CSV files (ISO 8601, whole seconds, C{Z}).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import attrs

_QUARTER = re.compile(r"([0-9]{4})-?Q([1-4])", re.IGNORECASE)


class InvalidPeriod(ValueError):
    """A quarter or a time that cannot be read."""


@attrs.frozen(order=True)
class Quarter:
    """A calendar quarter, in UTC."""

    year: int
    number: int

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"

    @classmethod
    def parse(cls, text: str) -> Quarter:
        """
        C{2026Q1} (or C{2026-Q1}, C{2026q1}).

        @raise InvalidPeriod: for anything else.
        """
        found = _QUARTER.fullmatch(text.strip()) if isinstance(text, str) else None
        if found is None or not 1970 <= int(found.group(1)) <= 9998:
            raise InvalidPeriod(f"invalid quarter {text!r}: expected YEARQN, such as 2026Q3")
        return cls(int(found.group(1)), int(found.group(2)))

    @classmethod
    def containing(cls, timestamp: float) -> Quarter:
        moment = datetime.fromtimestamp(timestamp, UTC)
        return cls(moment.year, (moment.month - 1) // 3 + 1)

    @property
    def start(self) -> float:
        """POSIX time of its first instant."""
        return datetime(self.year, 3 * self.number - 2, 1, tzinfo=UTC).timestamp()

    @property
    def end(self) -> float:
        """POSIX time of the first instant after it (the next quarter's start)."""
        return self.next().start

    def next(self) -> Quarter:
        return Quarter(self.year + 1, 1) if self.number == 4 else Quarter(self.year, self.number + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - 1, 4) if self.number == 1 else Quarter(self.year, self.number - 1)


def parseTime(text: str) -> float:
    """
    A time given on a command line: an ISO 8601 date (C{2026-03-31}: its
    first instant) or date and time (C{2026-03-31T23:30:00}, C{…Z} or
    with an offset); without an offset it is UTC.

    @return: POSIX seconds.
    @raise InvalidPeriod: for anything else.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError, TypeError):
        raise InvalidPeriod(
            f"invalid time {text!r}: expected an ISO 8601 date or date and time, such as 2026-03-31 or "
            "2026-03-31T23:30:00Z (UTC unless an offset is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def isoSeconds(timestamp: float | None) -> str:
    """C{timestamp} as UTC ISO 8601 to the second (C{2026-03-31T23:59:30Z}); "" for C{None}."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(int(timestamp // 1), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
