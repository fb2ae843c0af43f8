"""What assignees say: 收到, 没收到, 进度, 完成 and 反馈."""

from __future__ import annotations

from bot.core import render
from bot.core.notices import PURPOSE_CARD_UPDATE, view_of
from bot.core.platform import CardUpdate, OutboundMessage
from handlers.commands import Intent
from handlers.context import HandlerContext
from handlers.resolve import Resolved, resolve_for
from handlers.router import Router
from storage import domain, outbox, queries
from storage.types import FeedbackKind, NoticeState

router = Router()


def _listing(ctx: HandlerContext, resolved: Resolved) -> str:
    """The other items still open, as '#3《…》、#5《…》'."""
    return ctx.t("list.separator").join(
        ctx.t("chat.notice_ref", id=i.notice_id, title=i.title) for i in resolved.others
    )


async def _say_which(ctx: HandlerContext, resolved: Resolved) -> None:
    """When the notice was guessed and others remain, say which was taken (docs/chat.md)."""
    if resolved.guessed and resolved.others:
        await ctx.reply(
            ctx.t(
                "chat.acted_on",
                id=resolved.notice.id,
                title=resolved.notice.title,
                count=len(resolved.others),
                others=_listing(ctx, resolved),
            )
        )


async def _resolve(ctx: HandlerContext, *, ack_step: bool = False) -> Resolved | None:
    """The notice this step is about; when there is none, say so, but only to someone who
    addressed the bot (a bare 收到 in the group may well be meant for a colleague)."""
    resolved = await resolve_for(ctx, ack_step=ack_step)
    if resolved is None:
        key = "chat.nothing_to_ack" if ack_step else "chat.nothing_pending"
        if ctx.command.addressed or ctx.incoming.is_direct or ctx.command.intent is not Intent.ACK:
            await ctx.reply(ctx.t(key))
    return resolved


async def confirm_card(ctx: HandlerContext, token: str) -> None:
    """Turn the clicked personal card's button into 已确认 (a one-time code from the click)."""
    key = f"card-update:{ctx.incoming.platform}:{ctx.incoming.event_id}"
    label = ctx.t("notice.button_acked")
    message = OutboundMessage(
        text=label,
        card_update=CardUpdate(token=token, card_ref=ctx.incoming.message_ref or "", label=label),
    )
    await outbox.add(
        ctx.session,
        target=ctx.private_target(),
        payload=message.to_payload(),
        idempotency_key=key[:200],
        now=ctx.now,
        purpose=PURPOSE_CARD_UPDATE,
        person_id=ctx.person.id,
    )


@router.command(Intent.ACK, usage="help.ack")
async def ack(ctx: HandlerContext) -> None:
    """收到: acknowledge; the tally edit in place is the only visible answer."""
    resolved = await _resolve(ctx, ack_step=True)
    if resolved is None:
        return
    change = await domain.acknowledge(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        channel=ctx.incoming.channel,
        actor=ctx.actor,
        now=ctx.now,
        text=ctx.command.text,
        message_ref=ctx.incoming.message_ref,
    )
    if ctx.incoming.card_token:
        # The clicked personal card now reads 已确认: that is the answer.
        await confirm_card(ctx, ctx.incoming.card_token)
    elif (
        change.changed
        and not ctx.bot.group_capabilities.edit
        and ctx.private
        and not resolved.others
    ):
        # No tally to edit in the group: the sender hears it privately instead.
        await ctx.reply(
            ctx.t("chat.ack_recorded", id=resolved.notice.id, title=resolved.notice.title)
        )
    await _say_which(ctx, resolved)


@router.command(Intent.NOT_ACK, usage="")
async def not_ack(ctx: HandlerContext) -> None:
    """没收到: send the notice again, privately, to the person who missed it."""
    resolved = await _resolve(ctx)
    if resolved is None:
        return
    notice = resolved.notice
    if notice.state is not NoticeState.OPEN:
        return
    tally = (await queries.tallies(ctx.session, [notice.id])).get(notice.id)
    card = render.notice_post(ctx.t, ctx.bot.tz, view_of(notice, tally))
    await ctx.reply(card.text, message=card, notice_id=notice.id)


@router.command(Intent.PROGRESS, usage="help.progress")
async def progress(ctx: HandlerContext) -> None:
    """进度: record a progress report (the first one also acknowledges)."""
    resolved = await _resolve(ctx)
    if resolved is None:
        return
    await domain.report_progress(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        text=ctx.command.text,
        percent=ctx.command.percent,
        channel=ctx.incoming.channel,
        actor=ctx.actor,
        now=ctx.now,
        message_ref=ctx.incoming.message_ref,
    )
    percent = "" if ctx.command.percent is None else f" {ctx.command.percent}%"
    await ctx.reply(
        ctx.t(
            "chat.progress_recorded",
            id=resolved.notice.id,
            title=resolved.notice.title,
            percent=percent,
        )
    )
    await _say_which(ctx, resolved)


@router.command(Intent.DONE, usage="help.done")
async def done(ctx: HandlerContext) -> None:
    """完成: record the outcome (措施 / 成效 / metrics); the assignment becomes done."""
    resolved = await _resolve(ctx)
    if resolved is None:
        return
    command = ctx.command
    await domain.record_outcome(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        measures=command.measures,
        results=command.results,
        metrics=[domain.Metric(m.name, m.value, m.unit) for m in command.metrics],
        channel=ctx.incoming.channel,
        actor=ctx.actor,
        now=ctx.now,
        text=command.text,
        message_ref=ctx.incoming.message_ref,
    )
    await ctx.reply(
        ctx.t(
            "chat.done_recorded",
            id=resolved.notice.id,
            title=resolved.notice.title,
            measures=len(command.measures),
        )
    )
    await _say_which(ctx, resolved)


@router.command(Intent.FEEDBACK, usage="help.feedback")
async def feedback(ctx: HandlerContext) -> None:
    """反馈: deadline too tight, a duplicate demand, unclear: counted in the burden report."""
    resolved = await _resolve(ctx)
    if resolved is None:
        return
    category = ctx.command.feedback
    kind = FeedbackKind(category.value) if category is not None else FeedbackKind.OTHER
    await domain.feedback(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        kind=kind,
        text=ctx.command.text,
        channel=ctx.incoming.channel,
        actor=ctx.actor,
        now=ctx.now,
        message_ref=ctx.incoming.message_ref,
    )
    await ctx.reply(
        ctx.t(
            "chat.feedback_recorded",
            id=resolved.notice.id,
            title=resolved.notice.title,
            kind=ctx.t(f"feedback.{kind.value}"),
        )
    )
