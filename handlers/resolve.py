"""Which notice a message is about (docs/chat.md): an explicit id, a replied-to bot message, or
the sender's most recent open assignment that still needs this step."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.context import HandlerContext
from handlers.refusals import Refusal
from storage import directory, lookups, queries
from storage.errors import UnknownNotice
from storage.models import Notice, Person
from storage.queries import PendingItem
from storage.types import AssignmentState


@dataclass(frozen=True)
class Resolved:
    """The notice acted on, and (when it was guessed) the other items that remain."""

    notice: Notice
    others: tuple[PendingItem, ...] = ()
    guessed: bool = False


def explicit_id(ctx: HandlerContext) -> int | None:
    """The id the message names, or the notice of the bot message it replies to."""
    if ctx.command.notice_id is not None:
        return ctx.command.notice_id
    return ctx.incoming.reply_notice_id


async def notice_by_id(ctx: HandlerContext, notice_id: int) -> Notice:
    """The notice, or UnknownNotice."""
    notice = await lookups.get_notice(ctx.session, notice_id)
    if notice is None:
        raise UnknownNotice(notice_id)
    return notice


async def required_notice(ctx: HandlerContext, example: str) -> Notice:
    """The notice named by id or reply; a refusal with an example when there is none."""
    notice_id = explicit_id(ctx)
    if notice_id is None:
        raise Refusal("chat.need_id", example=example)
    return await notice_by_id(ctx, notice_id)


async def resolve_for(ctx: HandlerContext, *, ack_step: bool) -> Resolved | None:
    """The notice this step is about; None when nothing is named and nothing is pending."""
    notice_id = explicit_id(ctx)
    if notice_id is not None:
        return Resolved(await notice_by_id(ctx, notice_id))
    items = await queries.pending_for(ctx.session, ctx.person.id, ctx.now)
    if ack_step:
        items = [i for i in items if i.state is AssignmentState.PENDING]
    if not items:
        return None
    items.sort(key=lambda i: (i.created_at, i.notice_id), reverse=True)
    first, *rest = items
    return Resolved(await notice_by_id(ctx, first.notice_id), tuple(rest), guessed=True)


async def find_person(ctx: HandlerContext, ref: str | None) -> Person:
    """A directory person by id or by (unique) name."""
    if not ref:
        raise Refusal("chat.need_person")
    person = await directory.get_person(ctx.session, ref)
    if person is not None:
        return person
    matches = [p for p in await directory.people_named(ctx.session, ref) if p.name == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise Refusal("chat.person_not_found", person=ref)
    raise Refusal("chat.person_ambiguous", person=ref, ids=", ".join(sorted(p.id for p in matches)))
