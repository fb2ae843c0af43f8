"""A background loop that sleeps until its next due moment or until it is woken; never polls."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from bot.core.clock import Clock
from bot.core.outage import Outage
from storage.db import DatabaseUnavailable


class WakeableLoop:
    """Runs passes until cancelled; each pass says how long the loop may sleep afterwards."""

    def __init__(self, *, name: str, clock: Clock, max_idle: float, log: logging.Logger) -> None:
        self.name = name
        self.clock = clock
        self.max_idle = max_idle
        self._log = log
        self._wake = asyncio.Event()
        self._stopping = False
        self.outage = Outage(log, name)

    def wake(self) -> None:
        """New work was committed: end the current sleep now."""
        self._wake.set()

    @property
    def woken(self) -> bool:
        """Whether new work was committed since this pass began."""
        return self._wake.is_set()

    def stop(self) -> None:
        """Finish the pass under way (never cut a transaction short), then return from run()."""
        self._stopping = True
        self._wake.set()

    async def one_pass(self) -> float:
        """Do one pass of work; return the seconds until there may be more."""
        raise NotImplementedError

    def delay_until(self, due: dt.datetime | None) -> float:
        """Seconds from now until `due`, capped at max_idle (max_idle when nothing is due)."""
        if due is None:
            return self.max_idle
        return min(self.max_idle, max(0.0, (due - self.clock()).total_seconds()))

    async def run(self) -> None:
        """Run passes until stopped or cancelled. While the database is unavailable a pass is
        retried after a growing pause, with one warning when the outage begins and one when
        it ends; any other error is logged with its traceback and retried after 5 s."""
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.one_pass()
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:
                delay = self.outage.failed(exc)
            except Exception:
                self._log.exception("%s pass failed; retrying in 5 s", self.name)
                delay = 5.0
            else:
                self.outage.answered()
            if delay > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
