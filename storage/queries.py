"""Read queries: pending items, notice status and listings (no state changes here)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import Select, Text, bindparam, case, cast, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from storage.errors import UnknownNotice
from storage.models import Assignment, Notice, Outcome, Person, PersonIdentity
from storage.types import (
    FINISHED_STATES,
    UTC,
    AssignmentState,
    Channel,
    NoticeKind,
    NoticeSource,
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


# Decoding the assignees' JSON: enum members by value, and datetimes as UTCDateTime reads them.
_STATES = {state.value: state for state in AssignmentState}
_CHANNELS: dict[str | None, Channel | None] = {channel.value: channel for channel in Channel}
_CHANNELS[None] = None


def _utc(value: str) -> dt.datetime:
    """A datetime from the JSON text, as UTCDateTime reads it: aware, in UTC."""
    stamp = dt.datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        # SQLite's naive UTC. Parsing it with the offset is ~8x faster than replace(tzinfo=).
        return dt.datetime.fromisoformat(value + "+00:00")
    return stamp if stamp.tzinfo is UTC else stamp.astimezone(UTC)


def _status_statement(dialect: str) -> Select[Any]:
    """One row: the notice header, and its assignees as one JSON array of arrays.

    The database builds the JSON (json_group_array on SQLite, json_agg on PostgreSQL) and one
    json.loads reads it, so 300 assignees cost no per-row driver and SQLAlchemy work, and the
    header and the assignees come in one statement. Each assignee is one array:
    person id, name, department, state, acknowledged_at, channel, late, progress text,
    progress percent, excuse reason, measures, results, metrics, reported_at (the last four
    are null unless the assignment is finished and has an outcome).
    """
    notice = Notice.__table__.c
    assignment = Assignment.__table__.c
    person = Person.__table__.c
    outcome = Outcome.__table__.c
    older = Outcome.__table__.alias("older_outcome").c
    sqlite = dialect == "sqlite"

    def embedded(json_column: ColumnElement[Any]) -> ColumnElement[Any]:
        # SQLite keeps JSON as text: json() makes json_array embed it as JSON, not a string.
        # Python's json writes NaN and Infinity, which SQLite's JSON functions refuse: such a
        # value is embedded as a string, and status() decodes it as SQLAlchemy would.
        if not sqlite:
            return json_column
        return case((func.json_valid(json_column), func.json(json_column)), else_=json_column)

    element = (func.json_array if sqlite else func.json_build_array)(
        person.id,
        person.name,
        person.department,
        assignment.state,
        assignment.acknowledged_at,
        assignment.ack_channel,
        assignment.late,
        assignment.progress_text,
        assignment.progress_percent,
        assignment.excuse_reason,
        embedded(outcome.measures),
        outcome.results,
        embedded(outcome.metrics),
        outcome.created_at,
    )
    # In the document's order. SQLite before 3.44 has no ORDER BY inside an aggregate:
    # status() sorts its list instead.
    rows = (
        func.json_group_array(element)
        if sqlite
        else func.json_agg(aggregate_order_by(element, person.department, person.name, person.id))
    )
    assignees = (
        select(cast(rows, Text))
        .select_from(Assignment.__table__)
        .join(Person.__table__, person.id == assignment.person_id)
        .outerjoin(
            Outcome.__table__,
            # A finished assignment's latest outcome (done, returned and done again leaves
            # several, and the newest counts): one index lookup, for finished ones only.
            outcome.id
            == case(
                (
                    assignment.state.in_(FINISHED_STATES),
                    select(func.max(older.id))
                    .where(older.assignment_id == assignment.id)
                    .scalar_subquery(),
                )
            ),
        )
        .where(assignment.notice_id == notice.id)
        .scalar_subquery()
    )
    # Only the header columns: the body (up to 20k chars) and the audience are not needed.
    return select(
        notice.id,
        notice.title,
        notice.kind,
        notice.state,
        notice.requires,
        notice.source,
        notice.external_id,
        notice.doc_number,
        notice.deadline,
        notice.created_at,
        assignees.label("assignees"),
    ).where(notice.id == bindparam("notice_id"))


# Built once per dialect; a notice id is the only parameter.
_STATUS = {dialect: _status_statement(dialect) for dialect in ("sqlite", "postgresql")}


async def status(session: AsyncSession, notice_id: int, now: dt.datetime) -> NoticeStatus:
    """The status document of one notice, with every assignee's state."""
    dialect = session.get_bind().dialect.name
    notice = (await session.execute(_STATUS[dialect], {"notice_id": notice_id})).one_or_none()
    if notice is None:
        raise UnknownNotice(notice_id)
    # json_agg gives NULL for no rows (json_group_array gives []).
    items: list[list[Any]] = json.loads(notice.assignees or "[]")
    if dialect == "sqlite":
        # By department, name, id. Python compares str by code point, which is the order of
        # their UTF-8 bytes, that is SQLite's BINARY collation (what its ORDER BY would use).
        items.sort(key=itemgetter(2, 1, 0))
    # Whether an assignee is overdue depends only on its state here: decide it per state.
    overdue = {
        s: is_overdue(notice.deadline, s, now, requires=notice.requires, notice_state=notice.state)
        for s in AssignmentState
    }
    assignees: list[AssigneeStatus] = []
    for (
        pid,
        name,
        dept,
        state_value,
        acked_at,
        channel,
        late,
        ptext,
        pct,
        excuse,
        measures,
        results,
        metrics,
        reported_at,
    ) in items:
        a_state = _STATES[state_value]
        assignees.append(
            AssigneeStatus(
                pid,
                name,
                dept,
                a_state,
                None if acked_at is None else _utc(acked_at),
                _CHANNELS[channel],
                bool(late),
                overdue[a_state],
                ptext,
                pct,
                excuse,
                None
                if reported_at is None
                else OutcomeView(
                    measures if type(measures) is list else json.loads(measures),
                    results,
                    metrics if type(metrics) is list else json.loads(metrics),
                    _utc(reported_at),
                ),
            )
        )
    by_state = Counter(a.state for a in assignees)
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
        counts={
            "assigned": len(assignees),
            "pending": by_state[S.PENDING],
            # Everyone who ever acknowledged, whatever their state now.
            "acknowledged": sum(1 for a in assignees if a.acknowledged_at is not None),
            "in_progress": by_state[S.IN_PROGRESS] + by_state[S.RETURNED],
            "done": by_state[S.DONE] + by_state[S.VERIFIED],
            "verified": by_state[S.VERIFIED],
            "excused": by_state[S.EXCUSED],
            "overdue": sum(1 for a in assignees if a.overdue),
        },
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


@dataclass(frozen=True)
class OfficeNotices:
    """The open notices the office issued, the most urgent first, and how many there are."""

    notices: list[NoticeSummary]
    total: int


async def office_open_notices(session: AsyncSession, *, limit: int) -> OfficeNotices:
    """The open notices the office issued (by chat, the CLI or the API, not the portal's),
    the nearest deadline first (none last), each with its tally: one statement.

    The page is picked first (with the total as a window count), and only its notices'
    assignments are counted, through the assignment (notice_id, person_id) index.
    """
    page = (
        select(
            Notice.id,
            Notice.title,
            Notice.kind,
            Notice.state,
            Notice.requires,
            Notice.deadline,
            Notice.created_at,
            func.count().over().label("total"),
        )
        .where(Notice.state == NoticeState.OPEN, Notice.source != NoticeSource.EGOV)
        .order_by(Notice.deadline.is_(None), Notice.deadline, Notice.id)
        .limit(limit)
        .subquery("page")
    )
    done_states = [s.value for s in FINISHED_STATES]
    rows = (
        await session.execute(
            select(
                page.c.id,
                page.c.title,
                page.c.kind,
                page.c.state,
                page.c.requires,
                page.c.deadline,
                page.c.created_at,
                page.c.total,
                func.count(Assignment.id),
                func.count(Assignment.acknowledged_at),
                func.coalesce(func.sum(case((Assignment.state.in_(done_states), 1), else_=0)), 0),
                func.coalesce(func.sum(case((Assignment.outstanding.is_(True), 1), else_=0)), 0),
            )
            .select_from(page)
            .outerjoin(Assignment, Assignment.notice_id == page.c.id)
            .group_by(*page.c)
            .order_by(page.c.deadline.is_(None), page.c.deadline, page.c.id)
        )
    ).all()
    notices = [
        NoticeSummary(
            id=nid,
            title=title,
            kind=kind,
            state=state,
            requires=requires,
            deadline=deadline,
            created_at=created,
            assigned=int(assigned),
            acknowledged=int(acked),
            done=int(done),
            outstanding=int(outstanding),
        )
        for (
            nid,
            title,
            kind,
            state,
            requires,
            deadline,
            created,
            _total,
            assigned,
            acked,
            done,
            outstanding,
        ) in rows
    ]
    return OfficeNotices(notices, int(rows[0][7]) if rows else 0)
