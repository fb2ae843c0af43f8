"""Durable scheduled jobs: schedule idempotently by key, claim with a lease, complete."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, Unpack

from sqlalchemy import func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from storage.lease import Leases
from storage.models import Job
from storage.outbox import insert_ignoring_conflicts, notify_wake
from storage.types import JobState, UTCDateTime

# A new job due this soon wakes the scheduler at once; later ones are found by its next
# regular look (the scheduler never sleeps longer than this), so a burst of notices with
# far-off reminders does not cost a scheduler pass each.
WAKE_HORIZON = dt.timedelta(seconds=60)

LEASES = Leases(Job, Job.state, JobState.SCHEDULED, Job.claimed_by, Job.lease_until)


class NewJob(TypedDict):
    """What add() and schedule() take: a job of a kind, due at a time, unique by its key."""

    kind: str
    key: str
    due_at: dt.datetime
    payload: Mapping[str, Any]
    now: dt.datetime
    notice_id: NotRequired[int | None]


async def add(
    session: AsyncSession,
    *,
    kind: str,
    key: str,
    due_at: dt.datetime,
    payload: Mapping[str, Any],
    now: dt.datetime,
    notice_id: int | None = None,
) -> int | None:
    """Schedule a job once per key; the new row's id, or None if the key already existed.

    Safe against concurrent callers in other transactions: the insert does nothing on a
    key conflict.
    """
    new_id: int | None = await session.scalar(
        insert_ignoring_conflicts(session, Job)
        .values(
            kind=kind,
            key=key,
            due_at=due_at,
            payload=dict(payload),
            notice_id=notice_id,
            state=JobState.SCHEDULED,
            attempts=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(Job.id)
    )
    if new_id is not None and due_at <= now + WAKE_HORIZON:
        await notify_wake(session, "jobs")
    return new_id


async def schedule(session: AsyncSession, **job: Unpack[NewJob]) -> Job:
    """Schedule a job once per key (as add() does); the job (the first one, for a repeated key)."""
    await add(session, **job)
    return (
        await session.execute(
            select(Job).where(Job.key == job["key"]).execution_options(populate_existing=True)
        )
    ).scalar_one()


async def claim_due(
    session: AsyncSession, *, worker: str, now: dt.datetime, lease: dt.timedelta, limit: int
) -> list[Job]:
    """Lease up to `limit` due jobs, oldest due first (SKIP LOCKED on PostgreSQL)."""
    due = Job.due_at <= now
    jobs = await LEASES.claim(
        session,
        due=due,
        order_by=(Job.due_at, Job.id),
        worker=worker,
        now=now,
        lease=lease,
        limit=limit,
    )
    for job in jobs:
        job.attempts += 1
    await session.flush()
    return jobs


async def complete(session: AsyncSession, job_id: int, *, worker: str, now: dt.datetime) -> bool:
    """Mark a claimed job done, in the transaction that did its work."""
    if (job := await LEASES.owned(session, job_id, worker)) is None:
        return False
    job.state = JobState.DONE
    job.done_at = now
    job.lease_until = None
    job.last_error = None
    return True


async def fail(
    session: AsyncSession, job_id: int, *, worker: str, error: str, retry_at: dt.datetime
) -> bool:
    """Record a failed run and when to try again."""
    if (job := await LEASES.owned(session, job_id, worker)) is None:
        return False
    job.last_error = error[:2000]
    job.due_at = retry_at
    LEASES.release(job)
    return True


async def next_due_at(session: AsyncSession, *, now: dt.datetime) -> dt.datetime | None:
    """When a scheduled job next becomes claimable (None when none is scheduled).

    Two index range scans on (state, due_at), never a scan of the whole table: the jobs
    already due (claimable now, or leased until some moment) and the first job due later.
    """
    scheduled = Job.state == JobState.SCHEDULED
    claimable = await session.scalar(
        select(Job.id)
        .where(scheduled, Job.due_at <= now, or_(Job.lease_until.is_(None), Job.lease_until <= now))
        .limit(1)
    )
    if claimable is not None:
        return now
    lease_ends: dt.datetime | None = await session.scalar(
        select(type_coerce(func.min(Job.lease_until), UTCDateTime())).where(
            scheduled, Job.due_at <= now
        )
    )
    upcoming: dt.datetime | None = await session.scalar(
        select(type_coerce(func.min(Job.due_at), UTCDateTime())).where(scheduled, Job.due_at > now)
    )
    moments = [m for m in (lease_ends, upcoming) if m is not None]
    return min(moments) if moments else None


async def release_claims(session: AsyncSession, *, worker: str) -> int:
    """Give back every lease a worker holds (graceful shutdown)."""
    return await LEASES.release_all(session, worker=worker)


async def fresh(session: AsyncSession, job_id: int) -> Job | None:
    """A job as it is in the database now (not as an earlier read of this session saw it)."""
    return await session.get(Job, job_id, populate_existing=True)
