"""What assignees say: 收到, 没收到, 进度, 完成 and 反馈."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.core import render
from bot.core.notices import PURPOSE_CARD_UPDATE, audience_names, view_of
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


Step = Callable[[HandlerContext, Resolved], Awaitable[None]]


def step(
    intent: Intent, *, usage: str, ack_step: bool = False, say_which: bool = True
) -> Callable[[Step], Step]:
    """Register an assignee's step: the notice is resolved first (nothing happens when there
    is none), and when it was guessed the sender is told which it was."""

    def register(handler: Step) -> Step:
        @router.command(intent, usage=usage)
        async def run(ctx: HandlerContext) -> None:
            resolved = await _resolve(ctx, ack_step=ack_step)
            if resolved is None:
                return
            await handler(ctx, resolved)
            if say_which:
                await _say_which(ctx, resolved)

        return handler

    return register


def said(ctx: HandlerContext) -> dict[str, Any]:
    """Who said it, how and when: the arguments every assignee operation records."""
    return {
        "channel": ctx.incoming.channel,
        "actor": ctx.actor,
        "now": ctx.now,
        "message_ref": ctx.incoming.message_ref,
    }


async def recorded(ctx: HandlerContext, key: str, resolved: Resolved, **extra: object) -> None:
    """The private confirmation of a recorded step, naming the notice."""
    notice = resolved.notice
    await ctx.reply(ctx.t(key, id=notice.id, title=notice.title, **extra))


@step(Intent.ACK, usage="help.ack", ack_step=True)
async def ack(ctx: HandlerContext, resolved: Resolved) -> None:
    """收到: acknowledge; the tally edit in place is the only visible answer."""
    change = await domain.acknowledge(
        ctx.session, resolved.notice.id, ctx.person.id, text=ctx.command.text, **said(ctx)
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
        await recorded(ctx, "chat.ack_recorded", resolved)


@step(Intent.NOT_ACK, usage="", say_which=False)
async def not_ack(ctx: HandlerContext, resolved: Resolved) -> None:
    """没收到: send the notice again, privately, to the person who missed it."""
    notice = resolved.notice
    if notice.state is not NoticeState.OPEN:
        return
    tally = (await queries.tallies(ctx.session, [notice.id])).get(notice.id)
    names = await audience_names(ctx.session, notice)
    card = render.notice_post(ctx.t, ctx.bot.tz, view_of(notice, tally, names))
    await ctx.reply(card.text, message=card, notice_id=notice.id)


@step(Intent.PROGRESS, usage="help.progress")
async def progress(ctx: HandlerContext, resolved: Resolved) -> None:
    """进度: record a progress report (the first one also acknowledges)."""
    percent = ctx.command.percent
    await domain.report_progress(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        text=ctx.command.text,
        percent=percent,
        **said(ctx),
    )
    shown = "" if percent is None else f" {percent}%"
    await recorded(ctx, "chat.progress_recorded", resolved, percent=shown)


@step(Intent.DONE, usage="help.done")
async def done(ctx: HandlerContext, resolved: Resolved) -> None:
    """完成: record the outcome (措施 / 成效 / metrics); the assignment becomes done."""
    command = ctx.command
    await domain.record_outcome(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        measures=command.measures,
        results=command.results,
        metrics=[domain.Metric(m.name, m.value, m.unit) for m in command.metrics],
        text=command.text,
        **said(ctx),
    )
    await recorded(ctx, "chat.done_recorded", resolved, measures=len(command.measures))


@step(Intent.FEEDBACK, usage="help.feedback", say_which=False)
async def feedback(ctx: HandlerContext, resolved: Resolved) -> None:
    """反馈: deadline too tight, a duplicate demand, unclear: counted in the burden report."""
    category = ctx.command.feedback
    kind = FeedbackKind(category.value) if category is not None else FeedbackKind.OTHER
    await domain.feedback(
        ctx.session,
        resolved.notice.id,
        ctx.person.id,
        kind=kind,
        text=ctx.command.text,
        **said(ctx),
    )
    await recorded(ctx, "chat.feedback_recorded", resolved, kind=ctx.t(f"feedback.{kind.value}"))
