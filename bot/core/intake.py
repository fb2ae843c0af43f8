"""Inbound events: stored and deduplicated before the platform is answered, processed after.

A callback handler calls `accept()`; only once it returns (the event is committed) does the
handler answer 2xx. A duplicate delivery (the platform retried) is answered 2xx too and is
not processed again. Processing runs after the answer, and events whose processing never
finished (the process died) are picked up again by `recover()` at start-up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.core.clock import Clock
from bot.core.outage import Outage
from bot.core.platform import (
    ButtonAction,
    InboundEvent,
    InboundMessage,
    Reaction,
    Sender,
    StorageUnavailable,
)
from storage import inbound
from storage.db import Database, DatabaseUnavailable
from storage.types import InboundStatus

log = logging.getLogger("workbot.inbound")

Result = InboundStatus | tuple[InboundStatus, str | None]
Processor = Callable[[str, Mapping[str, Any]], Awaitable[Result]]


class InboundGate:
    """Durable, deduplicated intake of platform events."""

    def __init__(self, db: Database, process: Processor, *, clock: Clock) -> None:
        self.db = db
        self.process = process
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        # Events whose processing a database outage interrupted: stored, still "received",
        # processed again once the database answers (by the retrying task).
        self._stalled: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._retrying: asyncio.Task[None] | None = None
        self._pause = 0.0
        self.outage = Outage(log, "inbound processing")

    async def accept(self, source: str, event_id: str, payload: Mapping[str, Any]) -> bool:
        """Store the event (committed when this returns); False if it was a duplicate."""
        async with self.db.transaction() as session:
            row_id = await inbound.record(
                session, source=source, event_id=event_id, payload=payload, now=self.clock()
            )
        if row_id is None:
            log.info("duplicate %s event %s: already stored, not processed again", source, event_id)
            return False
        self.spawn(source, event_id, payload)
        return True

    async def accept_and_wait(self, source: str, event_id: str, payload: Mapping[str, Any]) -> bool:
        """Store the event and process it before returning; False if it was a duplicate."""
        async with self.db.transaction() as session:
            row_id = await inbound.record(
                session, source=source, event_id=event_id, payload=payload, now=self.clock()
            )
        if row_id is None:
            return False
        await self._run(source, event_id, payload)
        return True

    def spawn(self, source: str, event_id: str, payload: Mapping[str, Any]) -> None:
        """Process an event that is already stored, in the background."""
        task = asyncio.create_task(self._run(source, event_id, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, source: str, event_id: str, payload: Mapping[str, Any]) -> None:
        note: str | None = None
        try:
            result = await self.process(source, payload)
            status, note = result if isinstance(result, tuple) else (result, None)
            error = None
        except DatabaseUnavailable as exc:
            self._stall(source, event_id, payload, exc)
            return
        except Exception as exc:
            log.exception("processing %s event %s failed", source, event_id)
            status, error = InboundStatus.FAILED, repr(exc)
        try:
            async with self.db.transaction() as session:
                await inbound.finish(
                    session,
                    source,
                    event_id,
                    status=status,
                    now=self.clock(),
                    error=error,
                    note=note,
                )
        except DatabaseUnavailable as exc:
            self._stall(source, event_id, payload, exc)
            return
        except Exception:  # it stays "received" and is processed again by recover()
            log.exception("could not record the end of %s event %s", source, event_id)
            return
        self.outage.answered()

    def _stall(
        self, source: str, event_id: str, payload: Mapping[str, Any], exc: DatabaseUnavailable
    ) -> None:
        """Keep an event whose processing an outage interrupted, and process it again once
        the database answers (it stays "received", so a restart would too)."""
        self._pause = self.outage.failed(exc)
        self._stalled[(source, event_id)] = payload
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry())

    async def _retry(self) -> None:
        """Process the stalled events again, pausing longer after each failed try."""
        while self._stalled:
            await asyncio.sleep(self._pause)
            stalled, self._stalled = self._stalled, {}
            for (source, event_id), payload in stalled.items():
                await self._run(source, event_id, payload)

    async def recover(self) -> int:
        """Process events that were stored but never finished; returns how many."""
        done: set[tuple[str, str]] = set()
        while True:
            async with self.db.read() as session:
                pending = [
                    (e.source, e.event_id, dict(e.payload))
                    for e in await inbound.unprocessed(session)
                    if (e.source, e.event_id) not in done
                ]
            if not pending:
                return len(done)
            for source, event_id, payload in pending:
                done.add((source, event_id))
                await self._run(source, event_id, payload)

    async def drain(self) -> None:
        """Wait for the processing started so far (tests and graceful shutdown). Events an
        outage stalled are not waited for: they stay "received", for recover() at the next
        start."""
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass(frozen=True)
class Handled:
    """How an event ended, and a short note of why (kept on the inbound row, and counted)."""

    status: InboundStatus
    note: str


_KINDS: dict[str, type[InboundMessage] | type[ButtonAction] | type[Reaction]] = {
    "message": InboundMessage,
    "button": ButtonAction,
    "reaction": Reaction,
}


def event_to_payload(event: InboundEvent) -> dict[str, Any]:
    """A neutral event as the JSON stored in the inbound table."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(event, cls))
    data = dataclasses.asdict(event)
    if data.get("at") is not None:
        data["at"] = data["at"].isoformat()
    if "mentions" in data:
        data["mentions"] = list(data["mentions"])
    return {"kind": kind, **data}


def event_from_payload(payload: Mapping[str, Any]) -> InboundEvent:
    """The neutral event back from its stored JSON."""
    data = dict(payload)
    cls = _KINDS[str(data.pop("kind"))]
    data["sender"] = Sender(**data["sender"])
    if data.get("at"):
        data["at"] = dt.datetime.fromisoformat(data["at"])
    if "mentions" in data:
        data["mentions"] = tuple(data["mentions"])
    if cls is ButtonAction and "response_code" in data:  # stored before the neutral name
        data["card_token"] = data.pop("response_code")
    event: InboundEvent = cls(**data)
    return event


class ChatIntake:
    """The one intake of every platform's events (the `Intake` adapters are given): each is
    stored and deduplicated, then processed one at a time, in arrival order."""

    def __init__(
        self,
        db: Database,
        process: Callable[[InboundEvent], Awaitable[Handled]],
        *,
        clock: Clock,
        notes: Counter[str] | None = None,
    ) -> None:
        self.handle = process
        self.gate = InboundGate(db, self._process, clock=clock)
        self.notes: Counter[str] = notes if notes is not None else Counter()
        self._lock = asyncio.Lock()

    async def _process(
        self, source: str, payload: Mapping[str, Any]
    ) -> tuple[InboundStatus, str | None]:
        event = event_from_payload(payload)
        async with self._lock:  # in order: a 收到 is handled before the 进度 typed after it
            handled = await self.handle(event)
        self.notes[handled.note] += 1
        return handled.status, handled.note

    async def accept(self, event: InboundEvent) -> bool:
        """Store a platform event (committed on return) and process it afterwards
        (StorageUnavailable, not stored, while the database is unavailable)."""
        try:
            return await self.gate.accept(event.platform, event.event_id, event_to_payload(event))
        except DatabaseUnavailable as exc:
            raise StorageUnavailable(exc.reason) from exc

    async def accept_and_wait(self, event: InboundEvent) -> bool:
        """Store a platform event and process it before returning."""
        try:
            return await self.gate.accept_and_wait(
                event.platform, event.event_id, event_to_payload(event)
            )
        except DatabaseUnavailable as exc:
            raise StorageUnavailable(exc.reason) from exc

    def spawn(self, source: str, event_id: str, payload: Mapping[str, Any]) -> None:
        """Process an event that was stored by someone else (the local room's group commit)."""
        self.gate.spawn(source, event_id, payload)

    async def recover(self) -> int:
        """Process what the last run stored but did not finish."""
        return await self.gate.recover()

    async def drain(self) -> None:
        """Wait for the processing started so far."""
        await self.gate.drain()
