"""Questions anyone may ask: 待办, 查询 and 帮助 (names only ever go to the office, privately)."""

from __future__ import annotations

from bot.core.render import when
from handlers.commands import Intent
from handlers.context import HandlerContext
from handlers.refusals import Refusal
from handlers.resolve import required_notice
from handlers.router import Router
from storage import queries
from storage.types import Requires, Role

router = Router()

LIST_LIMIT = 20  # items per answer: a chat answer is not a report
OFFICE_LIMIT = 10  # the office's own notices listed by 待办, the most urgent first
MORE_IDS = 20  # ids of the notices left off that the answer still names


async def office_lines(ctx: HandlerContext) -> list[str]:
    """The office's open notices with their counts, and how to see one notice's people."""
    found = await queries.office_open_notices(ctx.session, limit=OFFICE_LIMIT + MORE_IDS)
    if not found.notices:
        return [ctx.t("chat.office_none")]
    shown = found.notices[:OFFICE_LIMIT]
    lines = [ctx.t("chat.office_header", count=found.total)]
    for n in shown:
        overdue = n.deadline is not None and n.deadline < ctx.now
        lines.append(
            ctx.t(
                "chat.office_item" if n.requires is Requires.ACK else "chat.office_item_done",
                id=n.id,
                title=n.title,
                deadline=when(ctx.t, ctx.bot.tz, n.deadline),
                acknowledged=n.acknowledged,
                done=n.done,
                assigned=n.assigned,
                overdue=ctx.t("chat.overdue_mark") if overdue else "",
            )
        )
    if found.total > len(shown):
        ids = " ".join(f"#{n.id}" for n in found.notices[OFFICE_LIMIT:])
        if found.total > len(found.notices):
            ids += " …"
        lines.append(ctx.t("chat.office_more", count=found.total - len(shown), ids=ids))
    lines.append(ctx.t("chat.office_see_one", command=ctx.t("chat.status_command", id=shown[0].id)))
    return lines


def _is_office(ctx: HandlerContext) -> bool:
    return ctx.actor.has(Role.OFFICE)


async def _pending_names(ctx: HandlerContext, notice_id: int) -> list[str]:
    people = await queries.pending_for_notice(ctx.session, notice_id)
    return [
        ctx.t(
            "chat.pending_person",
            name=p.name,
            department=p.department or ctx.t("none"),
            state=ctx.t(f"state.{p.state.value}"),
        )
        for p in people
    ]


@router.command(Intent.PENDING, usage="help.pending")
async def pending(ctx: HandlerContext) -> None:
    """待办: the sender's open items (the office: also the open notices it issued, with their
    counts); 待办 全部 / 待办 #12: who has not answered (office)."""
    command = ctx.command
    if command.everyone or command.notice_id is not None:
        ctx.actor.require("pending_all", Role.OFFICE)
        if not ctx.private:
            raise Refusal("chat.names_need_dm")  # a group message never carries names
        if command.notice_id is not None:
            notice = await required_notice(ctx, "待办 #12")
            names = await _pending_names(ctx, notice.id)
            header = ctx.t(
                "chat.pending_notice", id=notice.id, title=notice.title, count=len(names)
            )
            await ctx.reply("\n".join([header, *names[: LIST_LIMIT * 5]]))
            return
        lines = [ctx.t("chat.pending_all_header")]
        for summary in await queries.list_notices(ctx.session, open_only=True, limit=LIST_LIMIT):
            if summary.outstanding == 0:
                continue
            names = await _pending_names(ctx, summary.id)
            lines.append(
                ctx.t("chat.pending_notice", id=summary.id, title=summary.title, count=len(names))
            )
            lines.extend(f"  {n}" for n in names)
        if len(lines) == 1:
            lines.append(ctx.t("chat.pending_none_all"))
        await ctx.reply("\n".join(lines))
        return
    items = await queries.pending_for(ctx.session, ctx.person.id, ctx.now)
    # The office also follows what it issued; its own items, if any, come after.
    lines = await office_lines(ctx) if _is_office(ctx) else []
    if not items:
        await ctx.reply("\n".join(lines or [ctx.t("chat.pending_none")]))
        return
    lines.append(ctx.t("chat.pending_header", count=len(items)))
    for item in items[:LIST_LIMIT]:
        lines.append(
            ctx.t(
                "chat.pending_item",
                id=item.notice_id,
                title=item.title,
                deadline=when(ctx.t, ctx.bot.tz, item.deadline),
                state=ctx.t(f"state.{item.state.value}"),
                overdue=ctx.t("chat.overdue_mark") if item.overdue else "",
            )
        )
    if len(items) > LIST_LIMIT:
        lines.append(ctx.t("chat.more", count=len(items) - LIST_LIMIT))
    await ctx.reply("\n".join(lines))


@router.command(Intent.STATUS, usage="help.status")
async def status(ctx: HandlerContext) -> None:
    """查询 #12: counts per state and the deadline; the office also gets the names."""
    notice = await required_notice(ctx, "查询 #12")
    doc = await queries.status(ctx.session, notice.id, ctx.now)
    c = doc.counts
    lines = [
        ctx.t(
            "chat.status",
            id=doc.id,
            title=doc.title,
            state_label=ctx.t(f"notice_state.{doc.state.value}"),
            deadline=when(ctx.t, ctx.bot.tz, doc.deadline),
        ),
        ctx.t(
            "chat.status_counts",
            assigned=c["assigned"],
            acknowledged=c["acknowledged"],
            in_progress=c["in_progress"],
            done=c["done"],
            excused=c["excused"],
            overdue=c["overdue"],
        ),
    ]
    if _is_office(ctx) and ctx.private:
        names = await _pending_names(ctx, notice.id)
        if names:
            lines.append(ctx.t("chat.status_names", count=len(names)))
            lines.extend(f"  {n}" for n in names)
    await ctx.reply("\n".join(lines))
