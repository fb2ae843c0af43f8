"""Inbound events: stored and deduplicated before the platform is answered, processed after.

A callback handler calls `accept()`; only once it returns (the event is committed) does the
handler answer 2xx. A duplicate delivery (the platform retried) is answered 2xx too and is
not processed again. Processing runs after the answer, and events whose processing never
finished (the process died) are picked up again by `recover()` at start-up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from storage import inbound
from storage.db import Database
from storage.types import InboundStatus

log = logging.getLogger("workbot.inbound")

Processor = Callable[[str, Mapping[str, Any]], Awaitable[InboundStatus]]
Clock = Callable[[], dt.datetime]


class InboundGate:
    """Durable, deduplicated intake of platform events."""

    def __init__(self, db: Database, process: Processor, *, clock: Clock) -> None:
        self.db = db
        self.process = process
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    async def accept(self, source: str, event_id: str, payload: Mapping[str, Any]) -> bool:
        """Store the event (committed when this returns); False if it was a duplicate."""
        async with self.db.transaction() as session:
            row_id = await inbound.record(
                session, source=source, event_id=event_id, payload=payload, now=self.clock()
            )
        if row_id is None:
            log.info("duplicate %s event %s: already stored, not processed again", source, event_id)
            return False
        task = asyncio.create_task(self._run(row_id, source, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, row_id: int, source: str, payload: Mapping[str, Any]) -> None:
        try:
            status = await self.process(source, payload)
            error = None
        except Exception as exc:
            log.exception("processing %s event (row %s) failed", source, row_id)
            status, error = InboundStatus.FAILED, repr(exc)
        async with self.db.transaction() as session:
            await inbound.finish(session, row_id, status=status, now=self.clock(), error=error)

    async def recover(self) -> int:
        """Process events that were stored but never finished; returns how many."""
        async with self.db.read() as session:
            pending = [
                (e.id, e.source, dict(e.payload)) for e in await inbound.unprocessed(session)
            ]
        for row_id, source, payload in pending:
            await self._run(row_id, source, payload)
        return len(pending)

    async def drain(self) -> None:
        """Wait for the processing started so far (tests and graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
