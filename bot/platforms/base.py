"""The Platform protocol and the platform-neutral event and message types."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class TargetKind(StrEnum):
    """Where an outbound message goes: the bound group, a person's DM, or an HTTP endpoint."""

    CHAT = "chat"
    PERSON = "person"
    URL = "url"


@dataclass(frozen=True)
class Capabilities:
    """What a platform can do; the core picks its zero-noise behaviour from these."""

    buttons: bool = False
    edit: bool = False
    reactions: bool = False
    dm: bool = False
    receives_all_messages: bool = False
    idempotent_send: bool = False
    # The group cannot carry a live tally (send-only robots): each assignee gets a personal
    # card with a 收到 button instead, updated in place when clicked (WeCom).
    personal_cards: bool = False


@dataclass(frozen=True)
class Sender:
    """Who sent an inbound event, in platform terms (mapped to a Person by the core)."""

    platform_user_id: str
    display_name: str = ""


@dataclass(frozen=True)
class InboundMessage:
    """A text message in the group or a DM to the bot."""

    platform: str
    event_id: str
    chat_id: str
    sender: Sender
    text: str
    is_direct: bool = False
    message_id: str | None = None
    reply_to: str | None = None
    mentions: tuple[str, ...] = ()
    mentions_bot: bool = False
    at: dt.datetime | None = None


@dataclass(frozen=True)
class ButtonAction:
    """A click on a card button (its value identifies the assignment and the action)."""

    platform: str
    event_id: str
    chat_id: str
    sender: Sender
    value: str
    message_id: str | None = None
    response_code: str | None = None
    at: dt.datetime | None = None


@dataclass(frozen=True)
class Reaction:
    """An emoji reaction to a message (e.g. ✅ on Matrix)."""

    platform: str
    event_id: str
    chat_id: str
    sender: Sender
    key: str
    message_id: str
    at: dt.datetime | None = None


InboundEvent = InboundMessage | ButtonAction | Reaction


@dataclass(frozen=True)
class Button:
    """A card button: its label and the opaque value sent back on click."""

    label: str
    value: str
    url: str | None = None


@dataclass(frozen=True)
class Card:
    """A structured card: title, body lines, optional status line and buttons."""

    title: str
    body: str = ""
    status: str = ""
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True)
class OutboundMessage:
    """What to send: text, optionally a card, mentions; to the group or a person."""

    text: str
    card: Card | None = None
    mentions: tuple[str, ...] = ()
    reply_to: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """The neutral JSON payload stored in the outbox."""
        card = None
        if self.card is not None:
            card = {
                "title": self.card.title,
                "body": self.card.body,
                "status": self.card.status,
                "buttons": [
                    {"label": b.label, "value": b.value, "url": b.url} for b in self.card.buttons
                ],
            }
        return {
            "text": self.text,
            "card": card,
            "mentions": list(self.mentions),
            "reply_to": self.reply_to,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OutboundMessage:
        """Rebuild a message from its outbox payload."""
        raw = payload.get("card")
        card = None
        if raw:
            card = Card(
                title=str(raw.get("title", "")),
                body=str(raw.get("body", "")),
                status=str(raw.get("status", "")),
                buttons=tuple(
                    Button(str(b["label"]), str(b["value"]), b.get("url"))
                    for b in raw.get("buttons", ())
                ),
            )
        return cls(
            text=str(payload.get("text", "")),
            card=card,
            mentions=tuple(payload.get("mentions", ())),
            reply_to=payload.get("reply_to"),
        )


@dataclass(frozen=True)
class Delivery:
    """One outbox row handed to a platform: where, what, and how to be idempotent."""

    outbox_id: int
    idempotency_key: str
    target_kind: TargetKind
    target: str
    message: OutboundMessage
    edit_of: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)  # the outbox row's raw payload


@dataclass(frozen=True)
class SendResult:
    """The platform's id for the message that was sent (or edited)."""

    message_id: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RateLimit:
    """A published limit: at most `count` sends per `per_seconds` for one key."""

    key: str
    count: int
    per_seconds: float


class PlatformError(Exception):
    """A send failed."""


class RetryLater(PlatformError):
    """A transient failure (5xx, timeout, rate limit): try again, after retry_after if given."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, rate_limited: bool = False
    ):
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class PermanentError(PlatformError):
    """A failure that retrying will not fix (bad token, unknown chat): dead-letter it."""


@runtime_checkable
class Platform(Protocol):
    """What every adapter implements; it never touches storage."""

    name: str
    capabilities: Capabilities

    async def send(self, delivery: Delivery) -> SendResult:
        """Send a new message; raise RetryLater or PermanentError on failure."""
        ...

    async def edit(self, delivery: Delivery) -> SendResult:
        """Replace the content of delivery.edit_of (a platform message id)."""
        ...

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """The published limits that this delivery counts against."""
        ...

    async def close(self) -> None:
        """Release HTTP sessions and other resources."""
        ...
