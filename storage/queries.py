"""Read queries: pending items, notice status and listings (no state changes here)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import UnknownNotice
from storage.models import Assignment, Notice, Outcome, Person, PersonIdentity
from storage.types import (
    FINISHED_STATES,
    AssignmentState,
    Channel,
    NoticeKind,
    NoticeState,
    Requires,
    is_outstanding,
)

S = AssignmentState


def is_overdue(
    deadline: dt.datetime | None,
    state: AssignmentState,
    now: dt.datetime,
    *,
    requires: Requires,
    notice_state: NoticeState = NoticeState.OPEN,
) -> bool:
    """Overdue is derived: the deadline has passed and the assignment still owes its notice."""
    # "Owes" follows requires: an acknowledged assignment of an ack-only notice is complete,
    # and nothing is owed to a closed or cancelled notice.
    return deadline is not None and now > deadline and is_outstanding(notice_state, requires, state)


@dataclass(frozen=True)
class PendingItem:
    """One open item a person still owes something on."""

    notice_id: int
    title: str
    kind: NoticeKind
    requires: Requires
    deadline: dt.datetime | None
    state: AssignmentState
    overdue: bool
    created_at: dt.datetime


async def pending_for(session: AsyncSession, person_id: str, now: dt.datetime) -> list[PendingItem]:
    """A person's outstanding items, soonest deadline first (no deadline last), then newest."""
    rows = (
        await session.execute(
            select(
                Notice.id,
                Notice.title,
                Notice.kind,
                Notice.requires,
                Notice.deadline,
                Assignment.state,
                Notice.created_at,
            )
            .join(Notice, Notice.id == Assignment.notice_id)
            .where(Assignment.person_id == person_id, Assignment.outstanding.is_(True))
        )
    ).all()
    items = [
        PendingItem(
            notice_id=nid,
            title=title,
            kind=kind,
            requires=requires,
            deadline=deadline,
            state=state,
            overdue=is_overdue(deadline, state, now, requires=requires),
            created_at=created,
        )
        for nid, title, kind, requires, deadline, state, created in rows
    ]
    items.sort(key=lambda i: (i.deadline is None, i.deadline or now, -i.notice_id))
    return items


@dataclass(frozen=True)
class PendingPerson:
    """Someone who still owes a notice something (names go to the office only)."""

    person_id: str
    name: str
    department: str
    state: AssignmentState


async def pending_for_notice(session: AsyncSession, notice_id: int) -> list[PendingPerson]:
    """Who still owes this notice something, by department then name."""
    if (await session.get(Notice, notice_id)) is None:
        raise UnknownNotice(notice_id)
    rows = (
        await session.execute(
            select(Person.id, Person.name, Person.department, Assignment.state)
            .join(Person, Person.id == Assignment.person_id)
            .where(Assignment.notice_id == notice_id, Assignment.outstanding.is_(True))
            .order_by(Person.department, Person.name, Person.id)
        )
    ).all()
    return [PendingPerson(pid, name, dept, state) for pid, name, dept, state in rows]


class OutcomeView(NamedTuple):
    """The latest outcome an assignee reported."""

    measures: list[str]
    results: str
    metrics: list[dict[str, Any]]
    reported_at: dt.datetime


# NamedTuples, not frozen dataclasses: a status document builds hundreds of these, and a
# tuple is built about 2.5x faster (see docs/performance.md).
class AssigneeStatus(NamedTuple):
    """One assignee's state in a notice's status document."""

    person_id: str
    name: str
    department: str
    state: AssignmentState
    acknowledged_at: dt.datetime | None
    channel: Channel | None
    late: bool
    overdue: bool
    last_progress: str | None
    progress_percent: int | None
    excuse_reason: str | None
    outcome: OutcomeView | None


@dataclass(frozen=True)
class NoticeStatus:
    """Everything the office (or the portal) needs to know about one notice."""

    id: int
    title: str
    kind: NoticeKind
    state: NoticeState
    requires: Requires
    source: str
    external_id: str | None
    doc_number: str | None
    deadline: dt.datetime | None
    created_at: dt.datetime
    counts: dict[str, int]
    assignees: list[AssigneeStatus] = field(default_factory=list)


def _counts(states: list[tuple[AssignmentState, bool, bool]]) -> dict[str, int]:
    """Counts per state; ``acknowledged`` counts everyone who ever acknowledged."""
    by_state = Counter(state for state, _, _ in states)
    return {
        "assigned": len(states),
        "pending": by_state[S.PENDING],
        "acknowledged": sum(1 for _, acked, _ in states if acked),
        "in_progress": by_state[S.IN_PROGRESS] + by_state[S.RETURNED],
        "done": by_state[S.DONE] + by_state[S.VERIFIED],
        "verified": by_state[S.VERIFIED],
        "excused": by_state[S.EXCUSED],
        "overdue": sum(1 for _, _, overdue in states if overdue),
    }


async def status(session: AsyncSession, notice_id: int, now: dt.datetime) -> NoticeStatus:
    """The status document of one notice, with every assignee's state."""
    # Only the header columns: the body (up to 20k chars) and the audience are not needed.
    notice = (
        await session.execute(
            select(
                Notice.id,
                Notice.title,
                Notice.kind,
                Notice.state,
                Notice.requires,
                Notice.source,
                Notice.external_id,
                Notice.doc_number,
                Notice.deadline,
                Notice.created_at,
            ).where(Notice.id == notice_id)
        )
    ).one_or_none()
    if notice is None:
        raise UnknownNotice(notice_id)
    # One statement for the assignees and their outcomes: a finished assignment is joined to
    # its outcome rows (oldest first, so the last row of an assignment carries the latest).
    rows = (
        await session.execute(
            select(
                Assignment.id,
                Person.id,
                Person.name,
                Person.department,
                Assignment.state,
                Assignment.acknowledged_at,
                Assignment.ack_channel,
                Assignment.late,
                Assignment.progress_text,
                Assignment.progress_percent,
                Assignment.excuse_reason,
                Outcome.id,
                Outcome.measures,
                Outcome.results,
                Outcome.metrics,
                Outcome.created_at,
            )
            .join(Person, Person.id == Assignment.person_id)
            .outerjoin(
                Outcome,
                and_(
                    Outcome.assignment_id == Assignment.id,
                    Assignment.state.in_(FINISHED_STATES),
                ),
            )
            .where(Assignment.notice_id == notice_id)
            .order_by(Person.department, Person.name, Person.id, Outcome.id)
        )
    ).all()
    assignees: list[AssigneeStatus] = []
    previous: int | None = None
    for (
        aid,
        pid,
        name,
        dept,
        state,
        acked_at,
        channel,
        late,
        ptext,
        pct,
        excuse,
        outcome_id,
        measures,
        results,
        metrics,
        reported_at,
    ) in rows:
        assignee = AssigneeStatus(
            person_id=pid,
            name=name,
            department=dept,
            state=state,
            acknowledged_at=acked_at,
            channel=channel,
            late=late,
            overdue=is_overdue(
                notice.deadline, state, now, requires=notice.requires, notice_state=notice.state
            ),
            last_progress=ptext,
            progress_percent=pct,
            excuse_reason=excuse,
            outcome=None
            if outcome_id is None
            else OutcomeView(list(measures), results, list(metrics), reported_at),
        )
        if aid == previous:
            assignees[-1] = assignee
        else:
            assignees.append(assignee)
        previous = aid
    counts = _counts([(a.state, a.acknowledged_at is not None, a.overdue) for a in assignees])
    return NoticeStatus(
        id=notice.id,
        title=notice.title,
        kind=notice.kind,
        state=notice.state,
        requires=notice.requires,
        source=notice.source.value,
        external_id=notice.external_id,
        doc_number=notice.doc_number,
        deadline=notice.deadline,
        created_at=notice.created_at,
        counts=counts,
        assignees=assignees,
    )


@dataclass(frozen=True)
class NoticeSummary:
    """One line of a notice listing, with its tally."""

    id: int
    title: str
    kind: NoticeKind
    state: NoticeState
    requires: Requires
    deadline: dt.datetime | None
    created_at: dt.datetime
    assigned: int
    acknowledged: int
    done: int
    outstanding: int


async def list_notices(
    session: AsyncSession, *, open_only: bool = False, limit: int = 50, before_id: int | None = None
) -> list[NoticeSummary]:
    """Notices, newest first, each with its tally (paged by id)."""
    page = select(Notice.id).order_by(Notice.id.desc()).limit(limit)
    if open_only:
        page = page.where(Notice.state == NoticeState.OPEN)
    if before_id is not None:
        page = page.where(Notice.id < before_id)
    ids = list((await session.scalars(page)).all())
    if not ids:
        return []
    counts = await tallies(session, ids)
    empty = Tally(0, 0, 0, 0)
    notices = (
        await session.scalars(select(Notice).where(Notice.id.in_(ids)).order_by(Notice.id.desc()))
    ).all()
    return [
        NoticeSummary(
            id=n.id,
            title=n.title,
            kind=n.kind,
            state=n.state,
            requires=n.requires,
            deadline=n.deadline,
            created_at=n.created_at,
            assigned=counts.get(n.id, empty).assigned,
            acknowledged=counts.get(n.id, empty).acknowledged,
            done=counts.get(n.id, empty).done,
            outstanding=counts.get(n.id, empty).outstanding,
        )
        for n in notices
    ]


@dataclass(frozen=True)
class PersonView:
    """A directory entry with its platform ids."""

    id: str
    name: str
    department: str
    roles: list[str]
    phone: str | None
    platform_ids: dict[str, str]


async def list_people(session: AsyncSession) -> list[PersonView]:
    """The whole directory, by department then name."""
    people = (
        await session.scalars(select(Person).order_by(Person.department, Person.name, Person.id))
    ).all()
    idents: dict[str, dict[str, str]] = {}
    for ident in (await session.scalars(select(PersonIdentity))).all():
        idents.setdefault(ident.person_id, {})[ident.platform] = ident.platform_user_id
    return [
        PersonView(p.id, p.name, p.department, list(p.roles), p.phone, idents.get(p.id, {}))
        for p in people
    ]


@dataclass(frozen=True)
class Tally:
    """A notice's counts for its in-place tally and the digest (never names)."""

    assigned: int
    acknowledged: int
    done: int
    outstanding: int


async def tallies(session: AsyncSession, notice_ids: list[int]) -> dict[int, Tally]:
    """Counts per notice, for a handful of notices at once."""
    if not notice_ids:
        return {}
    done_states = [s.value for s in FINISHED_STATES]
    rows = (
        await session.execute(
            select(
                Assignment.notice_id,
                func.count(),
                func.count(Assignment.acknowledged_at),
                func.sum(case((Assignment.state.in_(done_states), 1), else_=0)),
                func.sum(case((Assignment.outstanding.is_(True), 1), else_=0)),
            )
            .where(Assignment.notice_id.in_(notice_ids))
            .group_by(Assignment.notice_id)
        )
    ).all()
    return {
        nid: Tally(int(assigned), int(acked), int(done or 0), int(outstanding or 0))
        for nid, assigned, acked, done, outstanding in rows
    }
