"""Group commit: one transaction per drained batch, and one bad item fails only itself."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.group_commit import GroupCommit, WriterClosed
from storage.db import Database


async def test_a_burst_is_written_in_few_batches_and_each_caller_gets_its_result(
    db: Database,
) -> None:
    batches: list[list[int]] = []

    async def write(session: AsyncSession, items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 10 for i in items]

    writer: GroupCommit[int, int] = GroupCommit(db, write)
    writer.start()
    results = await asyncio.gather(*(writer.submit(i) for i in range(100)))
    await writer.stop()

    assert results == [i * 10 for i in range(100)]
    assert sum(len(b) for b in batches) == 100
    assert len(batches) < 10  # drained together, not one transaction each
    with pytest.raises(WriterClosed):
        await writer.submit(1)


async def test_one_bad_item_fails_alone(db: Database) -> None:
    async def write(session: AsyncSession, items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("cannot store 'bad'")
        return [item.upper() for item in items]

    writer: GroupCommit[str, str] = GroupCommit(db, write)
    writer.start()
    outcomes = await asyncio.gather(
        *(writer.submit(item) for item in ("a", "b", "bad", "c")), return_exceptions=True
    )
    await writer.stop()

    assert outcomes[:2] == ["A", "B"] and outcomes[3] == "C"
    assert isinstance(outcomes[2], ValueError)
