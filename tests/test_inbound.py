"""Inbound events are stored before they are answered, and a duplicate is not processed again."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from bot.core.intake import InboundGate
from storage import inbound
from storage.db import Database
from storage.models import InboundRecord
from storage.types import InboundStatus

from conftest import T0


class Recorder:
    """A processor that records what it was given and can be told to fail."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def __call__(self, source: str, payload: Mapping[str, Any]) -> InboundStatus:
        self.seen.append((source, dict(payload)))
        if self.fail:
            raise RuntimeError("handler bug")
        return InboundStatus.PROCESSED


async def stored(db: Database) -> list[tuple[str, str, InboundStatus]]:
    """(source, event_id, status) of every stored event."""
    async with db.read() as s:
        rows = await s.execute(
            select(InboundRecord.source, InboundRecord.event_id, InboundRecord.status).order_by(
                InboundRecord.id
            )
        )
        return [(a, b, c) for a, b, c in rows.all()]


async def test_a_duplicate_delivery_is_stored_once_and_processed_once(db: Database) -> None:
    seen = Recorder()
    gate = InboundGate(db, seen, clock=lambda: T0)
    assert await gate.accept("wecom", "msg-1", {"text": "收到"}) is True
    assert await gate.accept("wecom", "msg-1", {"text": "收到"}) is False
    assert await gate.accept("dingtalk", "msg-1", {"text": "收到"}) is True  # other source
    await gate.drain()
    assert seen.seen == [("wecom", {"text": "收到"}), ("dingtalk", {"text": "收到"})]
    assert await stored(db) == [
        ("wecom", "msg-1", InboundStatus.PROCESSED),
        ("dingtalk", "msg-1", InboundStatus.PROCESSED),
    ]


async def test_concurrent_duplicates_store_exactly_one(db: Database) -> None:
    seen = Recorder()
    gate = InboundGate(db, seen, clock=lambda: T0)
    results = await asyncio.gather(*(gate.accept("feishu", "ev-9", {"n": i}) for i in range(8)))
    await gate.drain()
    assert sorted(results) == [False] * 7 + [True]
    assert len(seen.seen) == 1
    async with db.read() as s:
        assert await s.scalar(select(func.count()).select_from(InboundRecord)) == 1


async def test_a_failed_processing_is_recorded_not_lost(db: Database) -> None:
    seen = Recorder()
    seen.fail = True
    gate = InboundGate(db, seen, clock=lambda: T0)
    assert await gate.accept("onebot", "7", {"raw": "x"})
    await gate.drain()
    assert await stored(db) == [("onebot", "7", InboundStatus.FAILED)]


async def test_events_stored_but_never_processed_are_recovered(db: Database) -> None:
    # The process died after answering 2xx and before processing: the row is still there.
    async with db.transaction() as s:
        await inbound.record(s, source="telegram", event_id="u1", payload={"t": 1}, now=T0)
    seen = Recorder()
    gate = InboundGate(db, seen, clock=lambda: T0)
    assert await gate.recover() == 1
    assert seen.seen == [("telegram", {"t": 1})]
    assert await stored(db) == [("telegram", "u1", InboundStatus.PROCESSED)]
    assert await gate.recover() == 0
