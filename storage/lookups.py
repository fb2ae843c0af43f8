"""Small named reads that the surfaces above storage need (notices, assignments, counts)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Assignment, Job, Notice, NoticeMessage, OutboxMessage, Outcome, Person
from storage.types import AssignmentState, NoticeSource, NoticeState


async def get_notice(session: AsyncSession, notice_id: int) -> Notice | None:
    """One notice by id."""
    return await session.get(Notice, notice_id)


async def open_notices(session: AsyncSession) -> list[Notice]:
    """The open notices, the nearest deadline first (those without one last)."""
    return list(
        (
            await session.scalars(
                select(Notice)
                .where(Notice.state == NoticeState.OPEN)
                .order_by(Notice.deadline.is_(None), Notice.deadline, Notice.id)
            )
        ).all()
    )


async def portal_notice(session: AsyncSession, external_id: str) -> tuple[int, str | None] | None:
    """A portal notice's id and payload digest, by the portal's external id."""
    row = (
        await session.execute(
            select(Notice.id, Notice.payload_digest).where(
                Notice.source == NoticeSource.EGOV, Notice.external_id == external_id
            )
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def notice_of_message(session: AsyncSession, platform: str, message_id: str) -> int | None:
    """The notice a platform message (a group post or a personal card) was about."""
    return await session.scalar(
        select(NoticeMessage.notice_id)
        .where(NoticeMessage.platform == platform, NoticeMessage.message_id == message_id)
        .limit(1)
    )


async def assignees(session: AsyncSession, notice_id: int) -> list[tuple[int, str]]:
    """Each assignment of a notice: (assignment id, person id)."""
    rows = await session.execute(
        select(Assignment.id, Assignment.person_id).where(Assignment.notice_id == notice_id)
    )
    return [(int(a), str(p)) for a, p in rows.all()]


async def assigned_count(session: AsyncSession, notice_id: int) -> int:
    """How many people a notice was assigned to."""
    return int(
        await session.scalar(
            select(func.count()).select_from(Assignment).where(Assignment.notice_id == notice_id)
        )
        or 0
    )


async def assignment_of(session: AsyncSession, notice_id: int, person_id: str) -> Assignment | None:
    """One person's assignment for a notice."""
    return (
        await session.execute(
            select(Assignment).where(
                Assignment.notice_id == notice_id, Assignment.person_id == person_id
            )
        )
    ).scalar_one_or_none()


async def assignment_with_context(
    session: AsyncSession, assignment_id: int
) -> tuple[Assignment, Notice, Person] | None:
    """An assignment with its notice and its person (what an ack link opens)."""
    row = (
        await session.execute(
            select(Assignment, Notice, Person)
            .join(Notice, Notice.id == Assignment.notice_id)
            .join(Person, Person.id == Assignment.person_id)
            .where(Assignment.id == assignment_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


async def outstanding_count(session: AsyncSession, notice_id: int) -> int:
    """How many of a notice's assignments still owe something."""
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.notice_id == notice_id, Assignment.outstanding.is_(True))
        )
        or 0
    )


async def all_acknowledged_by(session: AsyncSession, notice_id: int, at: dt.datetime) -> bool:
    """Whether everyone not excused had acknowledged the notice by `at`."""
    waiting = await session.scalar(
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.notice_id == notice_id,
            Assignment.state != AssignmentState.EXCUSED,
            (Assignment.acknowledged_at.is_(None)) | (Assignment.acknowledged_at > at),
        )
    )
    return not waiting


async def state_counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Rows by state, for /healthz and /metrics: outbox messages, jobs and notices."""
    counts: dict[str, dict[str, int]] = {}
    for name, column in (
        ("outbox_messages", OutboxMessage.state),
        ("jobs", Job.state),
        ("notices", Notice.state),
    ):
        rows = (await session.execute(select(column, func.count()).group_by(column))).all()
        counts[name] = {state.value: int(n) for state, n in rows}
    return counts


async def period_counts(
    session: AsyncSession, start: dt.datetime, end: dt.datetime
) -> tuple[int, int, int]:
    """Notices created in [start, end): how many, how many without a 文号, and their outcomes."""
    in_period = (Notice.created_at >= start) & (Notice.created_at < end)
    notices = await session.scalar(select(func.count()).select_from(Notice).where(in_period))
    without_doc = await session.scalar(
        select(func.count())
        .select_from(Notice)
        .where(in_period, (Notice.doc_number.is_(None)) | (Notice.doc_number == ""))
    )
    outcomes = await session.scalar(
        select(func.count())
        .select_from(Outcome)
        .join(Assignment, Assignment.id == Outcome.assignment_id)
        .join(Notice, Notice.id == Assignment.notice_id)
        .where(in_period)
    )
    return int(notices or 0), int(without_doc or 0), int(outcomes or 0)
