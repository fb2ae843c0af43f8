"""What a handler is given: the parsed command, the sender, the session, and a reply writer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from bot.core.context import BotContext
from bot.core.i18n import Translator
from bot.core.platform import Capabilities, OutboundMessage, TargetKind
from handlers.commands import Command
from storage import outbox
from storage.db import Session
from storage.domain import Actor
from storage.models import Person
from storage.outbox import Target
from storage.types import Channel

PURPOSE_REPLY = "reply"


@dataclass(frozen=True)
class Incoming:
    """Where an event came from, in neutral terms."""

    platform: str
    event_id: str
    chat_id: str
    sender_uid: str
    channel: Channel
    is_direct: bool = False
    message_ref: str | None = None  # the platform id of the message itself
    reply_notice_id: int | None = None  # the notice of the bot message it replies to or quotes
    card_token: str | None = None  # a clicked personal card's one-time update code


@dataclass
class HandlerContext:
    """One handled event: everything a handler may use, and the only way it replies."""

    session: Session
    bot: BotContext
    capabilities: Capabilities
    person: Person
    actor: Actor
    incoming: Incoming
    command: Command
    now: dt.datetime
    sent: list[str] = field(default_factory=list)

    @property
    def t(self) -> Translator:
        """The bot's translator."""
        return self.bot.t

    @property
    def private(self) -> bool:
        """Whether replies reach the sender privately (names may only travel that way)."""
        return self.incoming.is_direct or self.capabilities.dm

    def private_target(self) -> Target:
        """The sender's private chat with the bot on the platform the event came from."""
        return Target(self.incoming.platform, TargetKind.PERSON.value, self.incoming.sender_uid)

    async def reply(
        self, text: str, *, message: OutboundMessage | None = None, notice_id: int | None = None
    ) -> None:
        """Answer the sender: privately where the platform can, else as a reply in the group."""
        body = message or OutboundMessage(text=text)
        if self.private:
            target = self.private_target()
        else:
            target = Target(self.incoming.platform, TargetKind.CHAT.value, self.incoming.chat_id)
            body = OutboundMessage(
                text=body.text,
                card=body.card,
                mentions=(self.incoming.sender_uid,),
                reply_to=self.incoming.message_ref,
            )
        await self._enqueue(target, body, notice_id)

    async def _enqueue(
        self, target: Target, message: OutboundMessage, notice_id: int | None
    ) -> None:
        # The key is derived from the inbound event, so processing it again after a crash
        # cannot send the same answer twice.
        key = f"reply:{self.incoming.platform}:{self.incoming.event_id}:{len(self.sent) + 1}"
        await outbox.add(
            self.session,
            target=target,
            payload=message.to_payload(),
            idempotency_key=key[:200],
            now=self.now,
            purpose=PURPOSE_REPLY,
            notice_id=notice_id,
            person_id=self.person.id,
        )
        self.sent.append(message.text)
