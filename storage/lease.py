"""Leases: how the job table and the outbox hand due rows to workers.

A worker claims due rows for a while (the lease) and records each row's result only while it
still holds the row; a worker that dies leaves its rows to be claimed again when their leases
end. On PostgreSQL, SKIP LOCKED lets workers claim side by side without waiting for each other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from storage.models import Base

Row = TypeVar("Row", bound=Base)


@dataclass(frozen=True)
class Leases(Generic[Row]):
    """The leasing of one table's rows: rows whose `state` is `open` can be claimed, the
    worker's name goes to `claimed_by` and the end of its lease to `until`."""

    model: type[Row]
    state: InstrumentedAttribute[Any]
    open: Enum
    claimed_by: InstrumentedAttribute[str | None]
    until: InstrumentedAttribute[dt.datetime | None]

    async def claim(
        self,
        session: AsyncSession,
        *,
        due: ColumnElement[bool],
        order_by: Sequence[Any],
        worker: str,
        now: dt.datetime,
        lease: dt.timedelta,
        limit: int,
    ) -> list[Row]:
        """Lease up to `limit` open rows that are `due`, in that order, passing over rows
        whose lease has not ended. The caller flushes (with any change of its own)."""
        stmt = (
            select(self.model)
            .where(self.state == self.open, due, or_(self.until.is_(None), self.until < now))
            .order_by(*order_by)
            .limit(limit)
            .with_for_update(skip_locked=True, of=self.model)
        )
        rows = list((await session.execute(stmt)).scalars().all())
        for row in rows:
            setattr(row, self.claimed_by.key, worker)
            setattr(row, self.until.key, now + lease)
        return rows

    async def owned(self, session: AsyncSession, row_id: int, worker: str) -> Row | None:
        """The row, locked, while it is open and `worker` holds it; None otherwise (the lease
        was lost to another worker, or the row is finished)."""
        row = await session.get(self.model, row_id, with_for_update=True, populate_existing=True)
        if row is None or getattr(row, self.state.key) is not self.open:
            return None
        return row if getattr(row, self.claimed_by.key) == worker else None

    def release(self, row: Row) -> None:
        """Give a row back: any worker can claim it again (once it is due)."""
        setattr(row, self.claimed_by.key, None)
        setattr(row, self.until.key, None)

    async def release_all(self, session: AsyncSession, *, worker: str) -> int:
        """Give back every lease a worker holds (graceful shutdown); how many."""
        result = await session.execute(
            update(self.model)
            .where(self.claimed_by == worker, self.state == self.open)
            .values({self.claimed_by: None, self.until: None})
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
