"""The scheduled jobs: private reminders, private escalation, the daily group digest, and
the daily audit checkpoint sent to the portal."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from functools import partial

from bot.core import feed as egov_callbacks
from bot.core import render
from bot.core.context import BotContext
from bot.core.notices import (
    JOB_DIGEST,
    JOB_ESCALATE,
    JOB_OVERDUE,
    JOB_REMIND,
    PURPOSE_DIGEST,
    PURPOSE_ESCALATION,
    dm_target,
    remind_pending,
    view_of,
)
from bot.scheduler.runner import JobHandler, Reschedule
from storage import directory, jobs, lookups, outbox, queries
from storage.db import Session
from storage.models import Job, Notice
from storage.types import NoticeState, Role

JOB_CHECKPOINT = "audit_checkpoint"


def handlers(ctx: BotContext) -> dict[str, JobHandler]:
    """The job handlers, bound to the bot's context."""
    return {
        JOB_REMIND: partial(remind, ctx),
        JOB_ESCALATE: partial(escalate, ctx),
        JOB_DIGEST: partial(digest, ctx),
        JOB_OVERDUE: partial(overdue, ctx),
        JOB_CHECKPOINT: partial(checkpoint, ctx),
    }


async def overdue(ctx: BotContext, session: Session, job: Job, now: dt.datetime) -> None:
    """A portal notice's deadline passed: the portal's notice.overdue callback, if owed."""
    await egov_callbacks.notice_overdue(session, ctx, int(job.payload["notice_id"]), now)


def _working_now(ctx: BotContext, now: dt.datetime) -> None:
    """Private messages go out in working time only; otherwise run again when it starts."""
    if not ctx.calendar.is_working_time(now):
        raise Reschedule(ctx.calendar.next_working_time(now))


async def _open_notice(session: Session, job: Job) -> Notice | None:
    notice = await lookups.get_notice(session, int(job.payload["notice_id"]))
    if notice is None or notice.state is not NoticeState.OPEN:
        return None
    return notice


async def remind(ctx: BotContext, session: Session, job: Job, now: dt.datetime) -> None:
    """Remind, privately, each person who still owes the notice something, within budget."""
    _working_now(ctx, now)
    notice = await _open_notice(session, job)
    if notice is None:
        return
    await remind_pending(session, ctx, notice, key=job.key, now=now)


async def escalate(ctx: BotContext, session: Session, job: Job, now: dt.datetime) -> None:
    """Tell each department's head, privately, who in the department is overdue."""
    _working_now(ctx, now)
    notice = await _open_notice(session, job)
    if notice is None:
        return
    status = await queries.status(session, notice.id, now)
    overdue_by_dept: dict[str, list[str]] = defaultdict(list)
    for a in status.assignees:
        if a.overdue:
            overdue_by_dept[a.department].append(a.name)
    if not overdue_by_dept:
        return
    people = await directory.list_people(session)
    office = [p.id for p in people if Role.OFFICE.value in p.roles]
    tally = (await queries.tallies(session, [notice.id])).get(notice.id)
    view = view_of(notice, tally)
    for dept, names in sorted(overdue_by_dept.items()):
        heads = [p.id for p in people if p.department == dept and Role.HEAD.value in p.roles]
        payload = render.escalation(ctx.t, ctx.tz, view, names).to_payload()
        for head in heads or office:
            target = await dm_target(session, ctx, head)
            if target is None:
                continue
            await outbox.add(
                session,
                target=target,
                payload=payload,
                idempotency_key=f"{job.key}:{dept}:{head}",
                now=now,
                purpose=PURPOSE_ESCALATION,
                notice_id=notice.id,
                person_id=head,
            )


async def ensure_digest(session: Session, ctx: BotContext, *, now: dt.datetime) -> Job:
    """Make sure the next working day's digest is scheduled (idempotent per day)."""
    at = ctx.calendar.next_at_time_on_workday(now, ctx.config.schedule.digest_time)
    day = at.astimezone(ctx.tz).date()
    return await jobs.schedule(
        session,
        kind=JOB_DIGEST,
        key=f"digest:{day.isoformat()}",
        due_at=at,
        payload={"date": day.isoformat()},
        now=now,
    )


async def digest(ctx: BotContext, session: Session, job: Job, now: dt.datetime) -> None:
    """Post one index of the open formal items to the group: ids, titles, deadlines, counts."""
    day = dt.date.fromisoformat(str(job.payload["date"]))
    await ensure_digest(session, ctx, now=max(now, job.due_at))
    if now.astimezone(ctx.tz).date() != day or not ctx.calendar.is_workday(day):
        return  # a stale digest (the bot was down all day) is skipped, not posted late
    notices = await lookups.open_notices(session)
    counts = await queries.tallies(session, [n.id for n in notices])
    items = [
        view_of(n, counts.get(n.id))
        for n in notices
        if counts.get(n.id) is not None and counts[n.id].outstanding > 0
    ]
    if not items:
        return  # nothing open: no message at all
    await outbox.add(
        session,
        target=ctx.group,
        payload=render.digest(ctx.t, ctx.tz, day, items).to_payload(),
        idempotency_key=f"digest:{day.isoformat()}",
        now=now,
        purpose=PURPOSE_DIGEST,
    )


async def ensure_checkpoint(session: Session, ctx: BotContext, *, now: dt.datetime) -> Job:
    """Make sure the next audit checkpoint is scheduled, at `[audit] checkpoint_at` every day
    (one job per day, whichever worker schedules it first)."""
    at = ctx.calendar.next_at_time(now, ctx.config.audit.checkpoint_time)
    day = at.astimezone(ctx.tz).date()
    return await jobs.schedule(
        session,
        kind=JOB_CHECKPOINT,
        key=f"audit_checkpoint:{day.isoformat()}",
        due_at=at,
        payload={"date": day.isoformat()},
        now=now,
    )


async def checkpoint(ctx: BotContext, session: Session, job: Job, now: dt.datetime) -> None:
    """Send the day's audit checkpoint to the portal and schedule the next day's (nothing,
    and no next one, once the callbacks are off). A late run, after the bot was down,
    still sends it: a late checkpoint proves as much as a timely one."""
    if not ctx.config.egov.callback_url:
        return
    day = dt.date.fromisoformat(str(job.payload["date"]))
    planned = dt.datetime.combine(day, ctx.config.audit.checkpoint_time, tzinfo=ctx.tz)
    await ensure_checkpoint(session, ctx, now=max(now, job.due_at, planned))
    await egov_callbacks.audit_checkpoint(session, ctx, day=day, now=now)
