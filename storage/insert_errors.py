"""Which insert errors are worth retrying: ClickHouse away or overloaded (retry the same batch
later), or rows that ClickHouse will never take (set the offending records aside)."""

from __future__ import annotations

import re
import struct

from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

PERMANENT_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        44,  # ILLEGAL_COLUMN
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    }
)
"""ClickHouse error codes that say the rows themselves are wrong: inserting them again fails again."""

_CODE = re.compile(r"\bCode:\s*(\d+)")


def is_permanent(exc: BaseException) -> bool:
    """True if inserting the same rows again cannot succeed.

    Client-side conversion errors (a value that does not fit its column: clickhouse-connect's
    ``DataError``, or Python's own) and ClickHouse's data errors are permanent. Everything else —
    connection refused, timeouts, too many parts, memory or disk limits, an unknown error — is
    retried: wrongly retrying costs a delay, wrongly giving up would lose data.
    """
    if isinstance(exc, OperationalError):
        return False
    if isinstance(exc, DataError | TypeError | ValueError | OverflowError | struct.error):
        return True
    if isinstance(exc, DatabaseError | RuntimeError):  # chDB's own errors are RuntimeErrors
        code = getattr(exc, "code", None)
        if code is None:
            match = _CODE.search(str(exc))
            code = int(match.group(1)) if match else None
        return code in PERMANENT_CODES
    return False
