"""From a neutral inbound event to a handled command: scope, sender, parse, route, reply.

One event is one transaction: the state change, its audit events and every outbox row it
causes (tally edit, replies) commit together. A refusal rolls everything back and answers in a
second, separate transaction, so a refused command changes nothing but the reply.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from dataclasses import replace

from bot.core.clock import Clock
from bot.core.context import BotContext
from bot.core.intake import Handled
from bot.core.platform import (
    ButtonAction,
    Capabilities,
    InboundEvent,
    InboundMessage,
    Reaction,
)
from bot.core.render import ACK_VALUE_PREFIX
from handlers import ROUTER
from handlers.commands import Command, Intent
from handlers.context import HandlerContext, Incoming
from handlers.parse import parse
from handlers.refusals import Refusal, domain_message
from handlers.router import Router
from storage import directory, lookups
from storage.db import Conflict, Database, Session
from storage.domain import Actor
from storage.errors import DomainError, NotAllowed
from storage.models import Person
from storage.types import Channel, InboundStatus

log = logging.getLogger("workbot.chat")

ACK_REACTIONS = frozenset({"✅", "✔️", "✔", "☑️", "👌", "👍"})


IGNORED_UNBOUND = Handled(InboundStatus.IGNORED, "unbound_chat")
IGNORED_UNKNOWN_DM = Handled(InboundStatus.IGNORED, "unknown_dm")
IGNORED_CHATTER = Handled(InboundStatus.IGNORED, "chatter")


def command_of(event: InboundEvent, bot_names: tuple[str, ...]) -> Command:
    """What an event asks for, before anything is looked up."""
    if isinstance(event, InboundMessage):
        command = parse(event.text.replace("\x00", ""), bot_names=bot_names)
        if (event.mentions_bot or event.is_direct) and not command.addressed:
            command = _addressed(command)
        return command
    if isinstance(event, ButtonAction):
        value = event.value.strip()
        if value.startswith(ACK_VALUE_PREFIX) and value[len(ACK_VALUE_PREFIX) :].isdigit():
            return Command(
                Intent.ACK, addressed=True, notice_id=int(value[len(ACK_VALUE_PREFIX) :])
            )
        return Command(Intent.NONE)
    if event.key.strip() in ACK_REACTIONS:
        return Command(Intent.ACK)
    return Command(Intent.NONE)


def _addressed(command: Command) -> Command:
    return replace(command, addressed=True)


class _Refused(Exception):
    """Leaves the event's transaction by rolling it back; the reply is written afterwards."""

    def __init__(self, reply: str | DomainError, note: str) -> None:
        super().__init__(note)
        self.reply = reply  # a domain error is worded afterwards, with the people's names
        self.note = note


def channel_of(event: InboundEvent) -> Channel:
    """The ack channel an event arrived through."""
    if isinstance(event, ButtonAction):
        return Channel.BUTTON
    if isinstance(event, Reaction):
        return Channel.REACTION
    return Channel.DM if event.is_direct else Channel.GROUP


class Dispatcher:
    """Runs inbound events through the command language, one transaction each."""

    def __init__(
        self,
        db: Database,
        bot: BotContext,
        capabilities: Mapping[str, Capabilities],
        *,
        clock: Clock,
        router: Router = ROUTER,
    ) -> None:
        self.db = db
        self.bot = bot
        self.capabilities = capabilities
        self.clock = clock
        self.router = router
        self.names = tuple(bot.config.bot.names)

    def in_scope(self, event: InboundEvent) -> bool:
        """The bound group, or a private chat with the bot; anything else is ignored."""
        if isinstance(event, InboundMessage) and event.is_direct:
            return True
        group = self.bot.group
        if isinstance(event, ButtonAction) and event.platform == group.platform:
            return True  # a click on one of the bot's own cards, wherever it was shown
        return event.platform == group.platform and event.chat_id == group.address

    async def handle(self, event: InboundEvent) -> Handled:
        """Process one event; never raises for bad input (that becomes a reply or a note)."""
        if not self.in_scope(event):
            log.info("ignored a %s event from unbound chat %r", event.platform, event.chat_id)
            return IGNORED_UNBOUND
        command = command_of(event, self.names)
        for attempt in (1, 2):
            try:
                return await self._handle(event, command)
            except Conflict:
                # Two first messages from the same unknown sender raced to register them.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _handle(self, event: InboundEvent, command: Command) -> Handled:
        now = self.clock()
        direct = isinstance(event, InboundMessage) and event.is_direct
        try:
            async with self.db.transaction() as session:
                person = await self._sender(session, event, direct, now)
                if person is None:
                    log.info("ignored a direct message from unknown %s user", event.platform)
                    return IGNORED_UNKNOWN_DM
                if command.intent is Intent.NONE and not command.addressed:
                    return IGNORED_CHATTER
                ctx = await self._context(session, event, command, person, now)
                if isinstance(event, Reaction) and ctx.incoming.reply_notice_id is None:
                    return Handled(InboundStatus.IGNORED, "reaction")
                try:
                    note = await self._route(ctx)
                except Refusal as exc:
                    raise _Refused(ctx.t(exc.key, **exc.params), "refused") from exc
                except DomainError as exc:
                    raise _Refused(exc, "refused") from exc
                except Exception as exc:
                    ref = secrets.token_hex(4)
                    log.exception(
                        "unexpected error %s handling %s event %s",
                        ref,
                        event.platform,
                        event.event_id,
                    )
                    raise _Refused(ctx.t("chat.unexpected", ref=ref), f"error:{ref}") from exc
                return Handled(InboundStatus.PROCESSED, note)
        except _Refused as refused:
            async with self.db.transaction() as session:
                person = await self._sender(session, event, direct, now)
                if person is not None:
                    ctx = await self._context(session, event, command, person, now)
                    reply = refused.reply
                    if isinstance(reply, DomainError):
                        names = await directory.names(session)
                        reply = domain_message(ctx.t, reply, names=names, me=person.id)
                    await ctx.reply(reply)
            failed = refused.note.startswith("error:")
            return Handled(
                InboundStatus.FAILED if failed else InboundStatus.PROCESSED, refused.note
            )

    async def _route(self, ctx: HandlerContext) -> str:
        command = ctx.command
        if command.intent in (Intent.UNKNOWN, Intent.NONE):
            word = command.word or "?"
            if command.intent is Intent.UNKNOWN and not word.startswith("/"):
                word = f"/{word}"
            await ctx.reply(ctx.t("chat.unknown_command", word=word))
            return "hint"
        route = self.router.get(command.intent)
        if route is None:
            await ctx.reply(ctx.t("chat.unknown_command", word=command.word or "?"))
            return "hint"
        if route.roles is not None and not ctx.actor.has(*route.roles):
            raise NotAllowed(route.action, "|".join(sorted(r.value for r in route.roles)))
        await route.handler(ctx)
        return command.intent.value

    async def _sender(
        self, session: Session, event: InboundEvent, direct: bool, now: dt.datetime
    ) -> Person | None:
        uid = event.sender.platform_user_id
        person = await directory.person_for(session, event.platform, uid)
        if person is not None or direct:
            return person
        return await directory.register_sender(
            session,
            platform=event.platform,
            platform_user_id=uid,
            display_name=event.sender.display_name,
            now=now,
        )

    async def _context(
        self,
        session: Session,
        event: InboundEvent,
        command: Command,
        person: Person,
        now: dt.datetime,
    ) -> HandlerContext:
        referenced: str | None = None
        message_ref: str | None = None
        card_token: str | None = None
        direct = False
        if isinstance(event, InboundMessage):
            referenced, message_ref, direct = event.reply_to, event.message_id, event.is_direct
        elif isinstance(event, ButtonAction):
            message_ref = event.message_id
            card_token = event.card_token
        else:
            referenced = event.message_id
        reply_notice_id = None
        if referenced:
            reply_notice_id = await lookups.notice_of_message(session, event.platform, referenced)
        incoming = Incoming(
            platform=event.platform,
            event_id=event.event_id,
            chat_id=event.chat_id,
            sender_uid=event.sender.platform_user_id,
            channel=channel_of(event),
            is_direct=direct,
            message_ref=message_ref,
            reply_notice_id=reply_notice_id,
            card_token=card_token,
        )
        return HandlerContext(
            session=session,
            bot=self.bot,
            capabilities=self.capabilities.get(event.platform, Capabilities()),
            person=person,
            actor=Actor.of(person),
            incoming=incoming,
            command=command,
            now=now,
        )
