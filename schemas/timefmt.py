"""RFC 3339 <-> epoch milliseconds, the two time spellings the contracts accept.

Everything inside driftline works on integer epoch milliseconds (cheap to compare, bucket and
store in numpy arrays); RFC 3339 strings exist only at the edges, for humans and for producers
whose clocks hand out strings. Millisecond precision is the contract: finer fractions are
truncated (floored), never rounded, so a timestamp can never move into the next window.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

#: RFC 3339 ``date-time`` (section 5.6): date, ``T`` (or space, or ``t``), time, optional fraction,
#: and a mandatory offset. Stricter than ``datetime.fromisoformat``, which also takes naive times,
#: bare dates and the compact ISO 8601 forms that other languages' RFC 3339 parsers reject.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def ms_to_rfc3339(ms: int) -> str:
    """Format epoch milliseconds as ``2026-11-24T21:03:54.123Z``.

    Always UTC with exactly three fraction digits, so the strings sort lexically in time order
    and alert ids derived from them are stable across hosts and time zones.

    >>> ms_to_rfc3339(1795554234123)
    '2026-11-24T21:03:54.123Z'
    >>> ms_to_rfc3339(0)
    '1970-01-01T00:00:00.000Z'
    """
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def rfc3339_to_ms(s: str) -> int:
    """Parse an RFC 3339 date-time (``Z`` or ``+hh:mm`` offset, any fraction) to epoch ms.

    Raises ``ValueError`` for anything that is not RFC 3339 with an explicit offset: a naive
    time is ambiguous, and guessing the zone would silently shift events between windows.

    >>> rfc3339_to_ms("2026-11-24T21:03:54.123Z")
    1795554234123
    >>> rfc3339_to_ms("2026-11-24T23:03:54.1239+02:00")
    1795554234123
    """
    if not _RFC3339.fullmatch(s):
        raise ValueError("timestamp is not an RFC 3339 date-time with an offset")
    try:
        dt = datetime.fromisoformat(s.upper().replace(" ", "T"))
    except ValueError:
        # Re-raised without the parser's message, which quotes the input: rejection details
        # must never echo payload values.
        raise ValueError("timestamp is not a valid RFC 3339 date-time") from None
    return (dt - _EPOCH) // _ONE_MS
