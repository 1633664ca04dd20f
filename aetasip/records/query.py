"""
The filters of a call-record query as an operator gives them (a number or
a group, a period as times or a quarter, answered calls only, a limit),
checked and turned into a L{RecordQuery}: one reading for C{aetasip-admin
cdr} and the admin API's C{/records}.
"""

from __future__ import annotations

from aetasip.records.periods import InvalidPeriod, Quarter, parseTime
from aetasip.store import InvalidValue, checkNumber, checkPrefix
from aetasip.store.callrecords import RecordQuery

# Call records a page of the admin API's /records holds unless its limit
# says otherwise, and at most.
RECORD_PAGE = 100
MAX_RECORD_PAGE = 1000


class InvalidQuery(ValueError):
    """Filters that contradict each other or cannot be read; the message says which."""


def recordQuery(
    number: str | None = None,
    group: str | None = None,
    start: str | None = None,
    end: str | None = None,
    quarter: str | None = None,
    answeredOnly: bool = False,
    limit: str | int | None = None,
    offset: str | int | None = None,
) -> RecordQuery:
    """
    @param start, end: ISO 8601 times (UTC unless an offset is given).
    @param quarter: a calendar quarter such as C{2026Q3}, instead of C{start} and C{end}.
    @param limit: at most this many records (a whole number from 1), the oldest first.
    @param offset: after skipping this many (a whole number from 0): a page.
    @raise InvalidQuery: for a bad or contradictory filter.
    """
    if number is not None and group is not None:
        raise InvalidQuery("give a number or a group, not both")
    if quarter is not None and (start is not None or end is not None):
        raise InvalidQuery("give a quarter or a period (from, to), not both")
    try:
        if number is not None:
            checkNumber(number)
        if group is not None:
            checkPrefix(group)
    except InvalidValue as e:
        raise InvalidQuery(str(e)) from None
    begin: float | None
    finish: float | None
    try:
        if quarter is not None:
            period = Quarter.parse(quarter)
            begin, finish = period.start, period.end
        else:
            begin = None if start is None else parseTime(start)
            finish = None if end is None else parseTime(end)
    except InvalidPeriod as e:
        raise InvalidQuery(str(e)) from None
    if begin is not None and finish is not None and begin >= finish:
        raise InvalidQuery("the start of the period must be before its end")
    count = None if limit is None else _wholeNumber("limit", limit, 1)
    skip = 0 if offset is None else _wholeNumber("offset", offset, 0)
    return RecordQuery(
        number=number, group=group, start=begin, end=finish, answeredOnly=answeredOnly, offset=skip, limit=count
    )


def _wholeNumber(name: str, value: str | int, lowest: int) -> int:
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or not text.isascii() or len(text) > 18 or int(text) < lowest:
        raise InvalidQuery(f"invalid {name} {value!r}: expected a whole number from {lowest}")
    return int(text)
