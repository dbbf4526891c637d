"""Small pure helpers for the IMAP engine: the ``date-time`` of APPEND and the flags the store
can keep.
"""

from __future__ import annotations

import calendar
import re

from mailgw.store.interfaces import SYSTEM_FLAGS

#: The system flags a message can carry permanently (keywords come on top: ``\\*``).
PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

#: Characters that cannot be in a keyword (RFC 3501 atom-specials and ']').
_NOT_IN_ATOM = frozenset('(){ %*"\\]')

_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}

_MONTHS = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}

_DATE_TIME = re.compile(
    rb"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)


def is_keyword(flag: str) -> bool:
    """Is ``flag`` a keyword the store can keep (an IMAP atom, not a system flag)?"""
    return (
        0 < len(flag) <= 100
        and not flag.startswith("\\")
        and all(32 < ord(c) < 127 and c not in _NOT_IN_ATOM for c in flag)
    )


def storable_flags(flags) -> frozenset:
    """Return the flags among ``flags`` (str) that can be stored, system flags in their
    canonical spelling; ``\\Recent``, unknown system flags and malformed keywords are dropped."""
    kept = set()
    for flag in flags:
        if flag.lower() in _BY_LOWER:
            kept.add(_BY_LOWER[flag.lower()])
        elif is_keyword(flag):
            kept.add(flag)
    return frozenset(kept)


def parse_date_time(raw: bytes) -> float:
    """Parse an IMAP ``date-time`` (``17-Jul-1996 02:44:25 -0700``) to a POSIX timestamp.

    Raise ValueError if it is malformed."""
    match = _DATE_TIME.match(raw)
    if match is None:
        raise ValueError("malformed date-time")
    day, month, year, hour, minute, second, sign, zh, zm = match.groups()
    month_number = _MONTHS.get(month.decode("ascii").lower())
    if month_number is None:
        raise ValueError("unknown month")
    fields = (int(year), month_number, int(day), int(hour), int(minute), int(second))
    if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
        raise ValueError("date-time out of range")
    offset = (int(zh) * 60 + int(zm)) * 60 * (1 if sign == b"+" else -1)
    return float(calendar.timegm(fields + (0, 0, 0)) - offset)
