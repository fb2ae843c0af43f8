"""Inbound events: stored and deduplicated on (source, event_id) before they are answered."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import InboundRecord
from storage.outbox import insert_ignoring_conflicts
from storage.types import InboundStatus


async def record(
    session: AsyncSession,
    *,
    source: str,
    event_id: str,
    payload: Mapping[str, Any],
    now: dt.datetime,
) -> int | None:
    """Store an event; its row id, or None if (source, event_id) was already stored."""
    new_id: int | None = await session.scalar(
        insert_ignoring_conflicts(session, InboundRecord)
        .values(
            source=source,
            event_id=event_id,
            payload=dict(payload),
            status=InboundStatus.RECEIVED,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(InboundRecord.id)
    )
    return new_id


async def finish(
    session: AsyncSession,
    source: str,
    event_id: str,
    *,
    status: InboundStatus,
    now: dt.datetime,
    error: str | None = None,
    note: str | None = None,
) -> None:
    """Record how processing ended (and a short note of what it did)."""
    await session.execute(
        update(InboundRecord)
        .where(InboundRecord.source == source, InboundRecord.event_id == event_id)
        .values(
            status=status,
            processed_at=now,
            error=error[:2000] if error else None,
            note=note[:32] if note else None,
        )
    )


async def count_notes(session: AsyncSession, note: str, *, since: dt.datetime | None = None) -> int:
    """How many events ended with a note (e.g. unbound_chat: attempts to use unbound groups)."""
    query = select(func.count()).select_from(InboundRecord).where(InboundRecord.note == note)
    if since is not None:
        query = query.where(InboundRecord.received_at >= since)
    return int(await session.scalar(query) or 0)


async def unprocessed(session: AsyncSession, *, limit: int = 100) -> list[InboundRecord]:
    """Events stored but never processed (e.g. the process died after the 2xx)."""
    return list(
        (
            await session.scalars(
                select(InboundRecord)
                .where(InboundRecord.status == InboundStatus.RECEIVED)
                .order_by(InboundRecord.id)
                .limit(limit)
            )
        ).all()
    )
