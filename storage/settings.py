"""Values the bot generates once and keeps, such as the ack-link signing secret."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import BotSetting
from storage.outbox import insert_ignoring_conflicts


async def get_or_create(session: AsyncSession, key: str, make: Callable[[], str]) -> str:
    """The stored value, or a new one from `make` (the first worker to commit wins)."""
    await session.execute(
        insert_ignoring_conflicts(session, BotSetting)
        .values(key=key, value=make())
        .on_conflict_do_nothing(index_elements=["key"])
    )
    value = await session.scalar(select(BotSetting.value).where(BotSetting.key == key))
    assert value is not None
    return value


async def locked(session: AsyncSession, key: str) -> BotSetting | None:
    """The setting's row, locked for this transaction (one worker at a time on PostgreSQL)."""
    return (
        await session.execute(select(BotSetting).where(BotSetting.key == key).with_for_update())
    ).scalar_one_or_none()


async def get(session: AsyncSession, key: str) -> str | None:
    """A stored value, or None."""
    value: str | None = await session.scalar(select(BotSetting.value).where(BotSetting.key == key))
    return value


async def put(session: AsyncSession, key: str, value: str) -> None:
    """Store a value (insert or replace, safe against a concurrent writer)."""
    await session.execute(
        insert_ignoring_conflicts(session, BotSetting)
        .values(key=key, value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value})
    )
