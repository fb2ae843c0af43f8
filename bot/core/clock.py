"""The clock every service is given (tests pass their own): aware UTC datetimes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The wall clock (aware, UTC)."""
    return dt.datetime.now(dt.UTC)
