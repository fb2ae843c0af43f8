"""The outcome report's read query (docs/cli.md, "report"): the structured records behind a report.

A period selects outcomes by when they were *reported* (``Outcome.created_at``), not by when
their notice was issued: a report for December holds what was done and reported in December,
even for a notice issued in November. Only the record that stands is reported:

- the latest outcome of each assignment (an earlier one that the office returned is
  superseded), and only while the assignment is done or verified (a returned assignment's
  outcome is not a result yet);
- outcomes of cancelled notices are left out; open and closed notices are both reported.

Rows come grouped per notice, in notice id order, and within a notice in the order they were
reported. No state changes here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.domain import Metric
from storage.models import Assignment, Notice, Outcome, Person
from storage.types import FINISHED_STATES, AssignmentState, NoticeKind, NoticeState


@dataclass(frozen=True)
class OutcomeRow:
    """One reported outcome with its notice and its assignee: one row of a report export."""

    outcome_id: int
    notice_id: int
    title: str
    doc_number: str | None
    kind: NoticeKind
    issuer_department: str | None
    notice_created_at: dt.datetime
    deadline: dt.datetime | None
    assignment_id: int
    person_id: str
    person_name: str
    department: str
    state: AssignmentState
    late: bool
    measures: tuple[str, ...]
    results: str
    metrics: tuple[Metric, ...]
    reported_at: dt.datetime


def _metrics(raw: Iterable[Any]) -> tuple[Metric, ...]:
    """The stored metric dicts as typed values (anything without a number is skipped)."""
    found: list[Metric] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        found.append(Metric(str(item.get("name") or ""), float(value), str(item.get("unit") or "")))
    return tuple(found)


async def outcome_rows(
    session: AsyncSession, start: dt.datetime, end: dt.datetime
) -> list[OutcomeRow]:
    """The outcomes reported in [start, end): grouped per notice (by id), then as reported."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the report period needs timezone-aware bounds")
    newer = aliased(Outcome)
    latest = (
        select(func.max(newer.id))
        .where(newer.assignment_id == Outcome.assignment_id)
        .correlate(Outcome)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            select(
                Outcome.id,
                Notice.id,
                Notice.title,
                Notice.doc_number,
                Notice.kind,
                Notice.issuer_department,
                Notice.created_at,
                Notice.deadline,
                Assignment.id,
                Person.id,
                Person.name,
                Person.department,
                Assignment.state,
                Assignment.late,
                Outcome.measures,
                Outcome.results,
                Outcome.metrics,
                Outcome.created_at,
            )
            .join(Assignment, Assignment.id == Outcome.assignment_id)
            .join(Notice, Notice.id == Assignment.notice_id)
            .join(Person, Person.id == Assignment.person_id)
            .where(
                Outcome.created_at >= start,
                Outcome.created_at < end,
                Outcome.id == latest,
                Assignment.state.in_(FINISHED_STATES),
                Notice.state != NoticeState.CANCELLED,
            )
            .order_by(Notice.id, Outcome.created_at, Outcome.id)
        )
    ).all()
    return [
        OutcomeRow(
            outcome_id=oid,
            notice_id=nid,
            title=title,
            doc_number=doc_number,
            kind=kind,
            issuer_department=issuer_department,
            notice_created_at=created_at,
            deadline=deadline,
            assignment_id=aid,
            person_id=pid,
            person_name=name,
            department=department,
            state=state,
            late=late,
            measures=tuple(str(m) for m in measures or ()),
            results=results or "",
            metrics=_metrics(metrics or ()),
            reported_at=reported_at,
        )
        for (
            oid,
            nid,
            title,
            doc_number,
            kind,
            issuer_department,
            created_at,
            deadline,
            aid,
            pid,
            name,
            department,
            state,
            late,
            measures,
            results,
            metrics,
            reported_at,
        ) in rows
    ]
