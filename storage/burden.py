"""Burden figures for a period (docs/cli.md, "burden"): read-only, nothing here changes state.

The anti-formalism complaints made measurable: too many notices, notices without a 文号,
next-day reporting demands, demands per person, reminders, feedback, attempts to use the
bot in other (unbound) groups and inspections outside the annual plan. Every figure is
given overall and per issuing department (``Notice.issuer_department``; a missing one is
the empty string, which only a renderer turns into a label).

Which rows a period [since, until) covers:

- notices, and everything measured on their assignments (demands, ack latency,
  completion, overdue), by ``Notice.created_at``: the cohort of notices issued in the period;
- reminders, by ``OutboxMessage.created_at`` (purpose ``reminder``), and feedback, by
  ``Reply.created_at`` (kind ``feedback``): what happened in the period, credited to the
  department that issued the notice concerned;
- unbound-group attempts, by ``InboundRecord.received_at`` (note ``unbound_chat``): these
  name no notice, so they are only an overall figure.

docs/cli.md (``workbot burden``) defines every figure for users; keep the two in step.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import Assignment, InboundRecord, Notice, OutboxMessage, Reply
from storage.queries import is_overdue
from storage.types import (
    OUTSTANDING_STATES,
    AssignmentState,
    FeedbackKind,
    NoticeKind,
    NoticeState,
    ReplyKind,
    Requires,
)

REMINDER_PURPOSE = "reminder"  # bot.core.notices.PURPOSE_REMINDER (storage may not import bot)
UNBOUND_NOTE = "unbound_chat"  # handlers.dispatch.IGNORED_UNBOUND's note
UNSPECIFIED = ""  # the department key of notices that name no issuing department

WEEK = dt.timedelta(days=7)
DAY = dt.timedelta(days=1)
# Edges of the lead-time distribution (deadline minus issue): under 1 day, 1-3, 3-7, 7+.
LEAD_TIME_EDGES = (DAY, 3 * DAY, 7 * DAY)


def median(values: Iterable[float]) -> float | None:
    """The median (the mean of the two middle values for an even count); None when empty."""
    data = list(values)
    return float(statistics.median(data)) if data else None


def p90(values: Iterable[float]) -> float | None:
    """The 90th percentile by nearest rank: the smallest value that at least 90 % of the
    values do not exceed, so always an observed value; None when empty."""
    data = sorted(values)
    if not data:
        return None
    return float(data[math.ceil(0.9 * len(data)) - 1])


@dataclass(frozen=True)
class AckLatency:
    """Seconds from a notice's issue to each assignee's first acknowledgment."""

    count: int
    median: float | None
    p90: float | None


@dataclass(frozen=True)
class LeadTimes:
    """How long notices gave to answer (deadline minus issue), by bucket."""

    under_1d: int = 0
    from_1d_to_3d: int = 0
    from_3d_to_7d: int = 0
    from_7d: int = 0
    no_deadline: int = 0


@dataclass(frozen=True)
class Demands:
    """Assignments per person per week: the mean over the people who had any, and the max."""

    people: int
    mean: float | None
    max: float | None


@dataclass(frozen=True)
class FeedbackCounts:
    """Feedback replies by kind."""

    deadline: int = 0
    duplicate: int = 0
    unclear: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        """All feedback replies."""
        return self.deadline + self.duplicate + self.unclear + self.other


@dataclass(frozen=True)
class Figures:
    """The burden figures of one scope: everything, or one issuing department."""

    notices: int
    without_doc_number: int
    short_lead_time: int
    next_day_deadline: int
    lead_times: LeadTimes
    inspections_without_plan: int
    assignments: int
    excused: int
    eligible: int
    completed: int
    overdue: int
    ack_latency: AckLatency
    demands_per_person: Demands
    reminders_sent: int
    reminders_max_per_person: int
    feedback: FeedbackCounts

    @property
    def without_doc_number_share(self) -> float | None:
        """The share of notices without a 文号 (0..1); None without notices."""
        return self.without_doc_number / self.notices if self.notices else None

    @property
    def completion_rate(self) -> float | None:
        """Completed ÷ eligible assignments (0..1); None when none is eligible."""
        return self.completed / self.eligible if self.eligible else None

    @property
    def overdue_rate(self) -> float | None:
        """Overdue ÷ eligible assignments (0..1); None when none is eligible."""
        return self.overdue / self.eligible if self.eligible else None


@dataclass(frozen=True)
class BurdenReport:
    """The burden figures of [since, until), overall and per issuing department."""

    since: dt.datetime
    until: dt.datetime
    now: dt.datetime
    min_lead_time: dt.timedelta
    weeks: float
    overall: Figures
    unbound_group_attempts: int
    # Most notices first, then by name; the unspecified department ("") comes last.
    by_department: dict[str, Figures] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready document: the overall figures at the top level, plus by_department."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "generated_at": self.now.isoformat(),
            "min_lead_time_seconds": self.min_lead_time.total_seconds(),
            "weeks": self.weeks,
            **figures_dict(self.overall),
            "unbound_group_attempts": self.unbound_group_attempts,
            "by_department": {
                dept: figures_dict(figures) for dept, figures in self.by_department.items()
            },
        }


def figures_dict(f: Figures) -> dict[str, Any]:
    """One scope's figures as JSON-ready values (durations in seconds, shares 0..1)."""
    return {
        "notices": f.notices,
        "without_doc_number": f.without_doc_number,
        "without_doc_number_share": f.without_doc_number_share,
        "short_lead_time": f.short_lead_time,
        "next_day_deadline": f.next_day_deadline,
        "lead_time": {
            "under_1d": f.lead_times.under_1d,
            "1d_to_3d": f.lead_times.from_1d_to_3d,
            "3d_to_7d": f.lead_times.from_3d_to_7d,
            "7d_or_more": f.lead_times.from_7d,
            "no_deadline": f.lead_times.no_deadline,
        },
        "inspections_without_plan": f.inspections_without_plan,
        "assignments": f.assignments,
        "excused": f.excused,
        "eligible_assignments": f.eligible,
        "completed": f.completed,
        "completion_rate": f.completion_rate,
        "overdue": f.overdue,
        "overdue_rate": f.overdue_rate,
        "ack_latency": {
            "median": f.ack_latency.median,
            "p90": f.ack_latency.p90,
            "count": f.ack_latency.count,
        },
        "demands_per_person": {
            "mean": f.demands_per_person.mean,
            "max": f.demands_per_person.max,
            "people": f.demands_per_person.people,
            "per_week": True,
        },
        "reminders_sent": f.reminders_sent,
        "reminders_max_per_person": f.reminders_max_per_person,
        "feedback": {
            "deadline": f.feedback.deadline,
            "duplicate": f.feedback.duplicate,
            "unclear": f.feedback.unclear,
            "other": f.feedback.other,
        },
    }


@dataclass
class _Tally:
    """The running counts of one scope while the rows are read."""

    notices: int = 0
    without_doc_number: int = 0
    short_lead_time: int = 0
    next_day_deadline: int = 0
    lead: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0])
    inspections_without_plan: int = 0
    assignments: int = 0
    excused: int = 0
    eligible: int = 0
    completed: int = 0
    overdue: int = 0
    latencies: list[float] = field(default_factory=list)
    demands: Counter[str] = field(default_factory=Counter)
    reminders: int = 0
    reminded: Counter[str] = field(default_factory=Counter)
    feedback: Counter[FeedbackKind] = field(default_factory=Counter)

    def freeze(self, weeks: float) -> Figures:
        per_week = [n / weeks for n in self.demands.values()]
        return Figures(
            notices=self.notices,
            without_doc_number=self.without_doc_number,
            short_lead_time=self.short_lead_time,
            next_day_deadline=self.next_day_deadline,
            lead_times=LeadTimes(*self.lead),
            inspections_without_plan=self.inspections_without_plan,
            assignments=self.assignments,
            excused=self.excused,
            eligible=self.eligible,
            completed=self.completed,
            overdue=self.overdue,
            ack_latency=AckLatency(
                len(self.latencies), median(self.latencies), p90(self.latencies)
            ),
            demands_per_person=Demands(
                people=len(per_week),
                mean=sum(per_week) / len(per_week) if per_week else None,
                max=max(per_week) if per_week else None,
            ),
            reminders_sent=self.reminders,
            reminders_max_per_person=max(self.reminded.values(), default=0),
            feedback=FeedbackCounts(
                deadline=self.feedback[FeedbackKind.DEADLINE],
                duplicate=self.feedback[FeedbackKind.DUPLICATE],
                unclear=self.feedback[FeedbackKind.UNCLEAR],
                other=self.feedback[FeedbackKind.OTHER],
            ),
        )


@dataclass(frozen=True)
class _NoticeRow:
    department: str
    kind: NoticeKind
    state: NoticeState
    requires: Requires
    created_at: dt.datetime
    deadline: dt.datetime | None


def _lead_bucket(lead: dt.timedelta) -> int:
    for index, edge in enumerate(LEAD_TIME_EDGES):
        if lead < edge:
            return index
    return len(LEAD_TIME_EDGES)


def _aware(value: dt.datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must carry a timezone")


async def burden(
    session: AsyncSession,
    *,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
    min_lead_time: dt.timedelta,
    tz: dt.tzinfo,
) -> BurdenReport:
    """The burden figures of [since, until) (aware datetimes), overall and per department.

    ``now`` decides what is overdue; ``min_lead_time`` (schedule.min_lead_time) which lead
    times are short; ``tz`` (bot.timezone) which calendar day a deadline falls on.
    """
    _aware(since, "since")
    _aware(until, "until")
    _aware(now, "now")
    if until <= since:
        raise ValueError("until must be after since")
    weeks = max(1.0, (until - since) / WEEK)
    overall = _Tally()
    tallies: dict[str, _Tally] = {}

    def scopes(department: str) -> tuple[_Tally, _Tally]:
        tally = tallies.get(department)
        if tally is None:
            tally = tallies[department] = _Tally()
        return overall, tally

    issued = (Notice.created_at >= since) & (Notice.created_at < until)
    department = func.coalesce(Notice.issuer_department, UNSPECIFIED)

    # Notices: a few columns per notice; the lead-time arithmetic is done here.
    notices: dict[int, _NoticeRow] = {}
    notice_rows = await session.execute(
        select(
            Notice.id,
            department,
            Notice.kind,
            Notice.state,
            Notice.requires,
            Notice.doc_number,
            Notice.plan_ref,
            Notice.created_at,
            Notice.deadline,
        ).where(issued)
    )
    for nid, dept, kind, state, requires, doc_number, plan_ref, created, deadline in notice_rows:
        notices[nid] = _NoticeRow(dept, kind, state, requires, created, deadline)
        for t in scopes(dept):
            t.notices += 1
            if not doc_number:
                t.without_doc_number += 1
            if kind is NoticeKind.INSPECTION and not plan_ref:
                t.inspections_without_plan += 1
            if deadline is None:
                t.lead[-1] += 1
                continue
            lead = deadline - created
            t.lead[_lead_bucket(lead)] += 1
            if lead < min_lead_time:
                t.short_lead_time += 1
            if (deadline.astimezone(tz).date() - created.astimezone(tz).date()).days <= 1:
                t.next_day_deadline += 1

    if notices:
        # Assignments: counted per (notice, state) in SQL, judged per notice here, so that
        # "overdue" is exactly storage.queries.is_overdue and "complete" follows requires.
        state_rows = await session.execute(
            select(Assignment.notice_id, Assignment.state, func.count())
            .join(Notice, Notice.id == Assignment.notice_id)
            .where(issued)
            .group_by(Assignment.notice_id, Assignment.state)
        )
        for nid, a_state, count in state_rows:
            n = notices.get(nid)
            if n is None:  # issued after the notices were read (no snapshot: see snapshot_burden)
                continue
            for t in scopes(n.department):
                t.assignments += count
                if a_state is AssignmentState.EXCUSED:
                    t.excused += count
                    continue
                if n.state is NoticeState.CANCELLED:
                    continue
                t.eligible += count
                if a_state not in OUTSTANDING_STATES[n.requires]:
                    t.completed += count
                if is_overdue(n.deadline, a_state, now, requires=n.requires, notice_state=n.state):
                    t.overdue += count

        demand_rows = await session.execute(
            select(department, Assignment.person_id, func.count())
            .join(Notice, Notice.id == Assignment.notice_id)
            .where(issued)
            .group_by(department, Assignment.person_id)
        )
        for dept, person_id, count in demand_rows:
            for t in scopes(dept):
                t.demands[person_id] += count

        ack_rows = await session.execute(
            select(Assignment.notice_id, Assignment.acknowledged_at)
            .join(Notice, Notice.id == Assignment.notice_id)
            .where(issued, Assignment.acknowledged_at.is_not(None))
        )
        for nid, acked_at in ack_rows:
            n = notices.get(nid)
            if n is None or acked_at is None:
                continue
            latency = (acked_at - n.created_at).total_seconds()
            for t in scopes(n.department):
                t.latencies.append(latency)

    # Reminders sent in the period, whichever notice they were about.
    reminder_rows = await session.execute(
        select(department, OutboxMessage.person_id, func.count())
        .select_from(OutboxMessage)
        .outerjoin(Notice, Notice.id == OutboxMessage.notice_id)
        .where(
            OutboxMessage.purpose == REMINDER_PURPOSE,
            OutboxMessage.created_at >= since,
            OutboxMessage.created_at < until,
        )
        .group_by(department, OutboxMessage.person_id)
    )
    for dept, reminded_id, count in reminder_rows:
        for t in scopes(dept):
            t.reminders += count
            if reminded_id is not None:
                t.reminded[reminded_id] += count

    # Feedback given in the period, whichever notice it was about.
    feedback_rows = await session.execute(
        select(department, Reply.feedback_kind, func.count())
        .select_from(Reply)
        .join(Assignment, Assignment.id == Reply.assignment_id)
        .join(Notice, Notice.id == Assignment.notice_id)
        .where(
            Reply.kind == ReplyKind.FEEDBACK, Reply.created_at >= since, Reply.created_at < until
        )
        .group_by(department, Reply.feedback_kind)
    )
    for dept, feedback_kind, count in feedback_rows:
        for t in scopes(dept):
            t.feedback[feedback_kind or FeedbackKind.OTHER] += count

    unbound = int(
        await session.scalar(
            select(func.count())
            .select_from(InboundRecord)
            .where(
                InboundRecord.note == UNBOUND_NOTE,
                InboundRecord.received_at >= since,
                InboundRecord.received_at < until,
            )
        )
        or 0
    )

    order = sorted(tallies, key=lambda d: (d == UNSPECIFIED, -tallies[d].notices, d))
    return BurdenReport(
        since=since,
        until=until,
        now=now,
        min_lead_time=min_lead_time,
        weeks=weeks,
        overall=overall.freeze(weeks),
        unbound_group_attempts=unbound,
        by_department={d: tallies[d].freeze(weeks) for d in order},
    )


class BurdenArgs(TypedDict):
    """The keyword arguments of burden() (see there), which snapshot_burden() passes on."""

    since: dt.datetime
    until: dt.datetime
    now: dt.datetime
    min_lead_time: dt.timedelta
    tz: dt.tzinfo


async def snapshot_burden(db: Database, **args: Unpack[BurdenArgs]) -> BurdenReport:
    """burden() in a read session of its own that is one snapshot on every backend.

    A SQLite read transaction is one snapshot already; PostgreSQL's default (read committed)
    gives each statement its own, so the session asks for repeatable read instead.
    """
    async with db.read(snapshot=True) as session:
        return await burden(session, **args)
