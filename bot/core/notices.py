"""Publishing formal notices: the domain operation plus its group post and its jobs, atomically.

Everything here runs inside the caller's transaction, so a notice, the outbox row that posts
it and the jobs that will remind about it are committed together or not at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from bot.core import render
from bot.core.context import BotContext
from bot.core.platform import OutboundMessage, TargetKind
from storage import directory, jobs, lookups, outbox, queries
from storage.db import Session
from storage.domain import Actor, NoticeDraft, create_notice
from storage.models import Notice, OutboxMessage
from storage.outbox import Target
from storage.types import AssignmentState, NoticeSource

JOB_REMIND = "remind"
JOB_ESCALATE = "escalate"
JOB_DIGEST = "digest"
JOB_OVERDUE = "overdue"

PURPOSE_NOTICE = "notice"
PURPOSE_TALLY = "tally"
PURPOSE_REMINDER = "reminder"
PURPOSE_ESCALATION = "escalation"
PURPOSE_DIGEST = "digest"
PURPOSE_CARD = "card"
PURPOSE_CARD_UPDATE = "card_update"


def view_of(
    notice: Notice, tally: queries.Tally | None, names: Mapping[str, str] | None = None
) -> render.NoticeView:
    """The render view of a notice with its counts; with ``names`` (directory id to name of
    the people the audience names, from audience_names), also who the notice is for."""
    tally = tally or queries.Tally(0, 0, 0, 0)
    audience = None
    if names is not None:
        stored = notice.audience or {}
        audience = render.AudienceView(
            everyone=bool(stored.get("all")),
            departments=tuple(str(d) for d in stored.get("departments") or ()),
            people=tuple(names[p] for p in stored.get("people") or () if p in names),
        )
    return render.NoticeView(
        id=notice.id,
        kind=notice.kind,
        title=notice.title,
        body=notice.body,
        requires=notice.requires,
        deadline=notice.deadline,
        doc_number=notice.doc_number,
        state=notice.state,
        assigned=tally.assigned,
        acknowledged=tally.acknowledged,
        done=tally.done,
        audience=audience,
    )


async def audience_names(session: Session, notice: Notice) -> dict[str, str]:
    """The names of the people a notice's audience names individually (ids no longer in the
    directory are left out: the card never shows an id)."""
    found: dict[str, str] = {}
    for person_id in (notice.audience or {}).get("people") or ():
        person = await directory.get_person(session, str(person_id))
        if person is not None:
            found[person.id] = person.name
    return found


async def publish_notice(
    session: Session,
    ctx: BotContext,
    draft: NoticeDraft,
    *,
    actor: Actor,
    now: dt.datetime,
) -> Notice:
    """Create the notice, post it to the group (via the outbox) and plan its reminders."""
    notice = await create_notice(session, draft, actor=actor, now=now)
    tally = (await queries.tallies(session, [notice.id]))[notice.id]
    message = render.notice_post(
        ctx.t, ctx.tz, view_of(notice, tally, await audience_names(session, notice))
    )
    await outbox.add(
        session,
        target=ctx.group,
        payload=message.to_payload(),
        idempotency_key=f"notice:{notice.id}:post",
        now=now,
        purpose=PURPOSE_NOTICE,
        notice_id=notice.id,
    )
    if ctx.group_capabilities.personal_cards:
        await send_personal_cards(session, ctx, notice, message, now=now)
    await plan_jobs(session, ctx, notice, now=now)
    return notice


async def send_personal_cards(
    session: Session,
    ctx: BotContext,
    notice: Notice,
    message: OutboundMessage,
    *,
    now: dt.datetime,
) -> int:
    """Each assignee's own copy of the notice card, privately, with a task id unique to the
    assignment (the platform calls back with it when the 收到 button is clicked)."""
    sent = 0
    for assignment_id, person_id in await lookups.assignees(session, notice.id):
        target = await dm_target(session, ctx, person_id)
        if target is None:
            continue
        card = dataclasses.replace(message, card_ref=f"wb-{notice.id}-{assignment_id}")
        await _queue_private(
            session,
            target,
            card,
            key=f"notice:{notice.id}:card:{person_id}",
            purpose=PURPOSE_CARD,
            notice=notice,
            person_id=person_id,
            now=now,
        )
        sent += 1
    return sent


async def plan_jobs(session: Session, ctx: BotContext, notice: Notice, *, now: dt.datetime) -> None:
    """Schedule the notice's reminders and its escalation, each at a working time."""
    if notice.deadline is None:
        return
    planned: set[dt.datetime] = set()
    for offset in ctx.config.schedule.remind_before:
        due = notice.deadline - offset
        if not ctx.calendar.is_working_time(due):
            # Move earlier, so that the reminder still comes before the deadline.
            earlier = ctx.calendar.previous_working_time(due)
            if earlier is None:
                continue
            due = earlier
        if due <= now or due in planned:
            continue  # past, or two offsets moved onto the same minute: remind once
        planned.add(due)
        seconds = int(offset.total_seconds())
        await jobs.add(
            session,
            kind=JOB_REMIND,
            key=f"remind:{notice.id}:{seconds}",
            due_at=due,
            payload={"notice_id": notice.id, "offset": seconds},
            now=now,
            notice_id=notice.id,
        )
    if notice.source is NoticeSource.EGOV:
        # The portal hears about an overdue notice at its deadline, working day or not.
        await jobs.add(
            session,
            kind=JOB_OVERDUE,
            key=f"overdue:{notice.id}",
            due_at=notice.deadline,
            payload={"notice_id": notice.id},
            now=now,
            notice_id=notice.id,
        )
    escalate_at = ctx.calendar.next_working_time(
        notice.deadline + ctx.config.schedule.escalate_after
    )
    await jobs.add(
        session,
        kind=JOB_ESCALATE,
        key=f"escalate:{notice.id}",
        due_at=escalate_at,
        payload={"notice_id": notice.id},
        now=now,
        notice_id=notice.id,
    )


async def refresh_tally(
    session: Session, ctx: BotContext, notice_id: int, *, now: dt.datetime
) -> OutboxMessage | None:
    """Edit the notice's group post in place with its new counts (the audit feed calls this
    for every notice whose assignments changed, whatever surface changed them).

    Edits coalesce: while an earlier tally edit is still waiting to be sent, its payload is
    replaced instead of queueing another, so a burst of acks costs one edit, not one each.
    On a platform that cannot edit, nothing is posted: a new message per ack is exactly the
    flood the bot must not become.
    """
    if not ctx.group_capabilities.edit:
        return None
    post = await outbox.by_key(session, f"notice:{notice_id}:post")
    notice = await lookups.get_notice(session, notice_id)
    if post is None or notice is None:
        return None
    tally = (await queries.tallies(session, [notice_id])).get(notice_id)
    payload = render.notice_post(
        ctx.t, ctx.tz, view_of(notice, tally, await audience_names(session, notice))
    ).to_payload()
    return await outbox.coalesce_edit(
        session,
        post,
        payload,
        key_prefix=f"notice:{notice_id}:tally:",
        now=now,
        purpose=PURPOSE_TALLY,
        notice_id=notice_id,
    )


async def dm_target(session: Session, ctx: BotContext, person_id: str) -> Target | None:
    """A person's private chat on the group's platform, or None if they have no account there."""
    platform = ctx.group.platform
    uid = await directory.platform_user_id(session, person_id, platform)
    if uid is None and platform == "local":
        uid = person_id  # the built-in local group addresses people by directory id
    if uid is None:
        return None
    return Target(platform, TargetKind.PERSON.value, uid)


async def _queue_private(
    session: Session,
    target: Target,
    message: OutboundMessage,
    *,
    key: str,
    purpose: str,
    notice: Notice,
    person_id: str,
    now: dt.datetime,
    not_before: dt.datetime | None = None,
) -> None:
    """Queue a private message about a notice to one person (its idempotency key cut to the
    outbox's 200 characters)."""
    await outbox.add(
        session,
        target=target,
        payload=message.to_payload(),
        idempotency_key=key[:200],
        now=now,
        purpose=purpose,
        notice_id=notice.id,
        person_id=person_id,
        not_before=not_before,
    )


def local_day_start(ctx: BotContext, now: dt.datetime) -> dt.datetime:
    """Midnight of the bot's local day containing now."""
    local = now.astimezone(ctx.tz)
    return dt.datetime.combine(local.date(), dt.time(0), tzinfo=ctx.tz)


async def reminders_today(
    session: Session, ctx: BotContext, person_id: str, now: dt.datetime
) -> int:
    """How many reminders the person has been sent today (the budget counts every one)."""
    return await outbox.count_for_person(
        session, person_id, purpose=PURPOSE_REMINDER, since=local_day_start(ctx, now)
    )


async def remind_pending(
    session: Session,
    ctx: BotContext,
    notice: Notice,
    *,
    key: str,
    now: dt.datetime,
    not_before: dt.datetime | None = None,
) -> int:
    """Remind, privately, each person who still owes the notice something, within each
    person's daily budget; returns how many were reminded (never who, to the caller's group)."""
    tally = (await queries.tallies(session, [notice.id])).get(notice.id)
    view = view_of(notice, tally)
    overdue = notice.deadline is not None and now > notice.deadline
    budget = ctx.config.schedule.reminders_per_person_per_day
    sent = 0
    for person in await queries.pending_for_notice(session, notice.id):
        if await reminders_today(session, ctx, person.person_id, now) >= budget:
            continue
        target = await dm_target(session, ctx, person.person_id)
        if target is None:
            continue
        link = await ack_link(session, ctx, notice, person.person_id, now=now)
        message = render.reminder(ctx.t, ctx.tz, view, overdue=overdue, link=link)
        await _queue_private(
            session,
            target,
            message,
            key=f"{key}:{person.person_id}",
            purpose=PURPOSE_REMINDER,
            notice=notice,
            person_id=person.person_id,
            now=now,
            not_before=not_before,
        )
        sent += 1
    return sent


async def ack_link(
    session: Session, ctx: BotContext, notice: Notice, person_id: str, *, now: dt.datetime
) -> str | None:
    """A signed ack link for the person's assignment, where the group's platform has no
    buttons and the assignment still awaits its 收到; otherwise None."""
    if ctx.links is None or ctx.group_capabilities.buttons:
        return None
    assignment = await lookups.assignment_of(session, notice.id, person_id)
    if assignment is None or assignment.state is not AssignmentState.PENDING:
        return None
    return ctx.links.url(assignment.id, now + ctx.config.bot.ack_link_ttl)
