"""Database outages as expected faults: one warning when a part of the bot loses the
database, one when it has it back, and a growing pause between tries meanwhile."""

from __future__ import annotations

import logging
import time

from storage.db import DatabaseUnavailable


class Outage:
    """One component's view of the database's outages (a loop, the HTTP side, the intake).

    `failed` logs one warning for the first failure of an outage and nothing for the
    others; `answered` logs one warning when the database is back (a warning too, so that
    a log kept at WARNING shows when each outage ended). `pause` is the time to wait before
    the next try: `first`, doubling up to `longest`."""

    def __init__(
        self, log: logging.Logger, component: str, *, first: float = 0.5, longest: float = 10.0
    ) -> None:
        self.log = log
        self.component = component
        self.first = first
        self.longest = longest
        self._since: float | None = None
        self._pause = first
        self.count = 0  # outages seen (for tests and metrics)

    @property
    def down(self) -> bool:
        """Whether the last try failed for an outage."""
        return self._since is not None

    def failed(self, exc: DatabaseUnavailable) -> float:
        """Note a failure; returns the seconds to wait before trying again."""
        if self._since is None:
            self._since = time.monotonic()
            self._pause = self.first
            self.count += 1
            self.log.warning(
                "%s: the database is unavailable (%s); retrying until it is back",
                self.component,
                exc.reason,
            )
            return self._pause
        self._pause = min(self.longest, self._pause * 2)
        return self._pause

    def answered(self) -> None:
        """Note a success: the end of an outage, if there was one."""
        if self._since is None:
            return
        lasted = time.monotonic() - self._since
        self._since = None
        self.log.warning("%s: the database is back after %.1f s", self.component, lasted)
