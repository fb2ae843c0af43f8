"""What the office (办公室) does in chat: 通知/任务, 催办, 电话确认, 请假, 办结, 撤回 and 报告."""

from __future__ import annotations

import calendar
import datetime as dt
import re

from bot.core import report_format as reports
from bot.core.notices import publish_notice, remind_pending
from bot.core.render import when
from handlers.commands import Intent
from handlers.context import HandlerContext
from handlers.parse import parse_deadline
from handlers.refusals import Refusal
from handlers.resolve import find_person, required_notice
from handlers.router import Router
from storage import directory, domain, lookups
from storage.errors import NoticeClosed
from storage.types import NoticeKind, NoticeSource, NoticeState, Requires, Role

router = Router()

OFFICE = (Role.OFFICE,)
REPORT_LINK_TTL = dt.timedelta(days=7)


async def _audience(ctx: HandlerContext, names: tuple[str, ...], everyone: bool) -> domain.Audience:
    """对象: each @name is a department, a person's name, or a directory id."""
    if everyone:
        return domain.Audience(all=True)
    if not names:
        raise Refusal("chat.notice_no_audience")
    departments: list[str] = []
    people: list[str] = []
    unknown: list[str] = []
    known_departments = await directory.departments(ctx.session)
    for name in names:
        if name in known_departments:
            departments.append(name)
            continue
        matches = [p.id for p in await directory.people_named(ctx.session, name)]
        if len(matches) == 1:
            people.append(matches[0])
        elif matches:
            raise Refusal("chat.person_ambiguous", person=name, ids=", ".join(sorted(matches)))
        else:
            unknown.append(name)
    if unknown:
        raise Refusal("chat.notice_unknown_audience", names=ctx.t("list.separator").join(unknown))
    return domain.Audience(departments=tuple(departments), people=tuple(people))


@router.command(Intent.NOTICE, roles=OFFICE, usage="help.notice")
async def notice(ctx: HandlerContext) -> None:
    """通知 / 任务: create a formal notice from the multi-line form and post it to the group."""
    fields = ctx.command.notice
    if fields is None or not fields.title:
        raise Refusal("chat.notice_usage")
    if fields.problems:
        raise Refusal(
            "chat.notice_problems",
            keys=ctx.t("list.separator").join(ctx.t(f"notice_key.{k}") for k in fields.problems),
        )
    deadline = None
    if fields.deadline:
        deadline = parse_deadline(fields.deadline, now=ctx.now, tz=ctx.bot.tz)
        if deadline is None:
            raise Refusal("chat.notice_bad_deadline", value=fields.deadline)
        if deadline <= ctx.now:
            raise Refusal("chat.notice_past_deadline", value=fields.deadline)
    audience = await _audience(ctx, fields.audience, fields.audience_all)
    draft = domain.NoticeDraft(
        title=fields.title,
        body=fields.body,
        audience=audience,
        kind=NoticeKind.TASK if fields.kind == "task" else NoticeKind.NOTICE,
        requires=Requires(fields.requires) if fields.requires else Requires.ACK,
        deadline=deadline,
        doc_number=fields.doc_number,
        plan_ref=fields.plan_ref,
        source=NoticeSource.CHAT,
        issuer_department=ctx.person.department or None,
        issuer_name=ctx.person.name,
    )
    created = await publish_notice(ctx.session, ctx.bot, draft, actor=ctx.actor, now=ctx.now)
    assigned = await lookups.assigned_count(ctx.session, created.id)
    await ctx.reply(
        ctx.t(
            "chat.notice_posted",
            id=created.id,
            title=created.title,
            count=int(assigned or 0),
            deadline=when(ctx.t, ctx.bot.tz, created.deadline),
        )
    )


@router.command(Intent.REMIND, roles=OFFICE, usage="help.remind")
async def remind(ctx: HandlerContext) -> None:
    """催办 #12: a private reminder to each person still pending; the answer is a count only."""
    target = await required_notice(ctx, "催办 #12")
    if target.state is not NoticeState.OPEN:
        raise NoticeClosed(target.id, target.state.value)
    not_before = None
    if not ctx.bot.calendar.is_working_time(ctx.now):
        not_before = ctx.bot.calendar.next_working_time(ctx.now)
    count = await remind_pending(
        ctx.session,
        ctx.bot,
        target,
        key=f"manual-remind:{target.id}:{ctx.incoming.event_id}",
        now=ctx.now,
        not_before=not_before,
    )
    key = "chat.reminded" if count else "chat.reminded_none"
    if count and not_before is not None:
        key = "chat.reminded_later"
    await ctx.reply(
        ctx.t(
            key,
            id=target.id,
            title=target.title,
            count=count,
            at=when(ctx.t, ctx.bot.tz, not_before),
        )
    )


@router.command(Intent.PHONE_ACK, roles=OFFICE, usage="help.phone_ack")
async def phone_ack(ctx: HandlerContext) -> None:
    """电话确认 #12 张三: record an acknowledgment given by phone."""
    target = await required_notice(ctx, "电话确认 #12 张三")
    person = await find_person(ctx, ctx.command.person)
    await domain.phone_ack(
        ctx.session, target.id, person.id, actor=ctx.actor, now=ctx.now, note=ctx.command.text
    )
    await ctx.reply(ctx.t("chat.phone_acked", id=target.id, title=target.title, name=person.name))


@router.command(Intent.EXCUSE, roles=(Role.OFFICE, Role.HEAD), usage="help.excuse")
async def excuse(ctx: HandlerContext) -> None:
    """请假 #12 张三 下村: excuse someone; their reminders stop."""
    target = await required_notice(ctx, "请假 #12 张三 事由")
    person = await find_person(ctx, ctx.command.person)
    if not ctx.command.text:
        raise Refusal("chat.excuse_reason")
    await domain.excuse(
        ctx.session, target.id, person.id, reason=ctx.command.text, actor=ctx.actor, now=ctx.now
    )
    await ctx.reply(ctx.t("chat.excused", id=target.id, title=target.title, name=person.name))


async def _finish(ctx: HandlerContext, example: str, reply_key: str) -> None:
    """办结 / 撤回: end the notice, edit its card (已办结 / 已撤回, no button) in place."""
    target = await required_notice(ctx, example)
    end = domain.close_notice if ctx.command.intent is Intent.CLOSE else domain.cancel_notice
    await end(ctx.session, target.id, actor=ctx.actor, now=ctx.now, reason=ctx.command.text)
    await ctx.reply(ctx.t(reply_key, id=target.id, title=target.title))


@router.command(Intent.CLOSE, roles=OFFICE, usage="help.close")
async def close(ctx: HandlerContext) -> None:
    """办结 #12: close the notice; its reminders are dropped."""
    await _finish(ctx, "办结 #12", "chat.closed")


@router.command(Intent.CANCEL, roles=OFFICE, usage="help.cancel")
async def cancel(ctx: HandlerContext) -> None:
    """撤回 #12: cancel the notice; its reminders are dropped."""
    await _finish(ctx, "撤回 #12", "chat.cancelled")


_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_RANGE = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})\s*(?:\.\.|~|至|到)\s*(\d{4}-\d{1,2}-\d{1,2})$")


def report_period(text: str | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """报告 2019-11 (a month) or 2019-11-01..2019-11-30 (inclusive); this month by default.
    The first day and the day after the last; a Refusal for anything else, and for a day
    outside the days a report may cover (reports.EARLIEST_DAY..LATEST_DAY)."""
    if not text:
        first = today.replace(day=1)
        last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    else:
        text = text.strip()
        found = _RANGE.match(text)
        month = _MONTH.match(text)
        if found:
            try:
                first = dt.date.fromisoformat(_pad(found.group(1)))
                last = dt.date.fromisoformat(_pad(found.group(2)))
            except ValueError:
                raise Refusal("chat.report_usage") from None
        elif month is not None and 1 <= int(month.group(2)) <= 12:
            year, number = int(month.group(1)), int(month.group(2))
            if not reports.EARLIEST_DAY.year <= year <= reports.LATEST_DAY.year:
                raise _out_of_range()
            first = dt.date(year, number, 1)
            last = first.replace(day=calendar.monthrange(year, number)[1])
        else:
            raise Refusal("chat.report_usage")
        if first > last:
            raise Refusal("chat.report_usage")
    try:
        reports.check_day(first)
        reports.check_day(last)
    except reports.PeriodOutOfRange:
        raise _out_of_range() from None
    return first, last + dt.timedelta(days=1)


def _out_of_range() -> Refusal:
    return Refusal(
        "chat.report_out_of_range",
        earliest=reports.EARLIEST_DAY.isoformat(),
        latest=reports.LATEST_DAY.isoformat(),
    )


def _pad(day: str) -> str:
    y, m, d = day.split("-")
    return f"{int(y):04d}-{int(m):02d}-{int(d):02d}"


@router.command(Intent.REPORT, roles=OFFICE, usage="help.report")
async def report(ctx: HandlerContext) -> None:
    """报告 2019-11: a summary of the period's formal work (the full report is `workbot report`)."""
    first, end = report_period(ctx.command.period, ctx.now.astimezone(ctx.bot.tz).date())
    tz = ctx.bot.tz
    start_at = dt.datetime.combine(first, dt.time(0), tzinfo=tz)
    end_at = dt.datetime.combine(end, dt.time(0), tzinfo=tz)
    notices, without_doc, outcomes = await lookups.period_counts(ctx.session, start_at, end_at)
    last = end - dt.timedelta(days=1)
    lines = [
        ctx.t(
            "chat.report_summary",
            first=first.isoformat(),
            last=last.isoformat(),
            notices=notices,
            without_doc=without_doc,
            outcomes=outcomes,
        )
    ]
    links = ctx.bot.report_links
    if links is not None:
        # No platform here can send a file: a signed, expiring link to the full report.
        url = links.url(first, last, ctx.now + REPORT_LINK_TTL)
        lines.append(ctx.t("chat.report_link", url=url, days=REPORT_LINK_TTL.days))
    await ctx.reply("\n".join(lines))
