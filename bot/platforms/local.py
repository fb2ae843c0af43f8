"""The built-in local group: the embedded default platform (no external service needed).

This first version keeps the room's bot messages in memory and edits them in place; the
chat room page, its JSON API and the event stream arrive with the chat core.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from bot.configtypes import ConfigSection
from bot.platforms.base import (
    Capabilities,
    Delivery,
    OutboundMessage,
    PermanentError,
    RateLimit,
    SendResult,
    TargetKind,
)


class LocalConfig(ConfigSection):
    """[platforms.local]: serve the local group even when the bound group is elsewhere."""

    enabled: bool = False


@dataclass
class LocalMessage:
    """One bot message in the local room (a DM when `to` is set)."""

    id: str
    chat_id: str
    to: str | None
    message: OutboundMessage
    sent_at: dt.datetime
    edited_at: dt.datetime | None = None


@dataclass
class LocalPlatform:
    """Every capability, no rate limit: the reference behaviour for the zero-noise rules."""

    name: str = "local"
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(
            buttons=True,
            edit=True,
            reactions=True,
            dm=True,
            receives_all_messages=True,
            idempotent_send=True,
        )
    )
    messages: dict[str, LocalMessage] = field(default_factory=dict)
    _by_key: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def send(self, delivery: Delivery) -> SendResult:
        """Post to the room (or a DM); a repeated idempotency key returns the same message."""
        if delivery.idempotency_key in self._by_key:
            return SendResult(self._by_key[delivery.idempotency_key])
        message_id = str(next(self._ids))
        to = delivery.target if delivery.target_kind is TargetKind.PERSON else None
        chat = delivery.target if delivery.target_kind is TargetKind.CHAT else "dm"
        self.messages[message_id] = LocalMessage(
            message_id, chat, to, delivery.message, dt.datetime.now(dt.UTC)
        )
        self._by_key[delivery.idempotency_key] = message_id
        return SendResult(message_id)

    async def edit(self, delivery: Delivery) -> SendResult:
        """Replace a message's content in place."""
        if delivery.edit_of is None or delivery.edit_of not in self.messages:
            raise PermanentError(f"no local message {delivery.edit_of!r} to edit")
        existing = self.messages[delivery.edit_of]
        existing.message = delivery.message
        existing.edited_at = dt.datetime.now(dt.UTC)
        return SendResult(existing.id)

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """The local room has no limits."""
        return []

    async def close(self) -> None:
        """Nothing to release."""
