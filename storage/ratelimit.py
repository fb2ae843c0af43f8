"""Sliding-window rate limits shared by every worker through one locked row per key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import RateWindow
from storage.outbox import insert_ignoring_conflicts


async def _locked_window(session: AsyncSession, key: str, now: dt.datetime) -> RateWindow:
    row = await session.get(RateWindow, key, with_for_update=True, populate_existing=True)
    if row is not None:
        return row
    await session.execute(
        insert_ignoring_conflicts(session, RateWindow)
        .values(key=key, sends=[], updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    row = await session.get(RateWindow, key, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


async def lock_windows(session: AsyncSession, keys: Iterable[str], *, now: dt.datetime) -> None:
    """Lock (creating them if needed) the windows of these keys for this transaction.

    Call it before reading the clock for acquire(): time spent waiting for another worker's
    lock must not make a slot look older than the send it allows. Keys are locked in sorted
    order, so two workers taking several limits cannot deadlock.
    """
    for key in sorted(set(keys)):
        await _locked_window(session, key, now)


async def acquire(
    session: AsyncSession,
    *,
    key: str,
    count: int,
    per_seconds: float,
    now: dt.datetime,
    margin: float = 0.0,
) -> float:
    """Take one slot under "count per per_seconds" now, or say how many seconds to wait.

    A slot taken is recorded in the caller's transaction (commit it before sending). The
    window is `per_seconds + margin`, so clock and network jitter between us and the
    platform's own counter cannot push a send over its limit.
    """
    if count <= 0 or per_seconds <= 0:
        return 0.0
    row = await _locked_window(session, key, now)
    t = now.timestamp()
    window = per_seconds + margin
    recent = sorted(float(x) for x in row.sends if float(x) > t - window)
    if len(recent) < count:
        recent.append(t)
        row.sends = recent
        row.updated_at = now
        return 0.0
    row.sends = recent
    row.updated_at = now
    return max(recent[-count] + window - t, 0.001)


async def settle(
    session: AsyncSession, *, keys: Iterable[str], taken_at: dt.datetime, at: dt.datetime
) -> None:
    """Move the slot taken at `taken_at` under each key to `at`, when the platform answered.

    A slot is recorded when it is granted, before the request leaves; the platform counts
    the request when it arrives, which can be much later (a wait for a connection, a loaded
    machine). Counting the send from the answer instead keeps every later window opening
    after the platform's own, whatever that delay was.
    """
    taken, answered = taken_at.timestamp(), at.timestamp()
    if answered <= taken:
        return
    for key in sorted(set(keys)):
        row = await session.get(RateWindow, key, with_for_update=True, populate_existing=True)
        if row is None:
            continue
        sends = [float(x) for x in row.sends]
        if taken in sends:
            sends.remove(taken)
        sends.append(answered)
        row.sends = sorted(sends)
        row.updated_at = at
