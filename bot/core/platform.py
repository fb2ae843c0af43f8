"""The Platform protocol and the platform-neutral event and message types."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from aiohttp import web

from bot.core.config_sections import CoreConfig
from bot.core.configtypes import ConfigSection
from bot.core.room import RoomBackend


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


FULL_CAPABILITIES = Capabilities(
    buttons=True,
    edit=True,
    reactions=True,
    dm=True,
    receives_all_messages=True,
    idempotent_send=True,
)
"""Everything a group can do: the local group's set, the reference for the zero-noise rules
(personal_cards is not among them: it is the way round a group that cannot carry a tally)."""


@dataclass(frozen=True)
class Sender:
    """Who sent an inbound event, in platform terms (mapped to a Person by the core)."""

    platform_user_id: str
    display_name: str = ""


@dataclass(frozen=True)
class InboundCommon:
    """What every inbound event has: its platform, its id there, its chat, and its sender."""

    platform: str
    event_id: str
    chat_id: str
    sender: Sender


@dataclass(frozen=True)
class InboundMessage(InboundCommon):
    """A text message in the group or a DM to the bot."""

    text: str
    is_direct: bool = False
    message_id: str | None = None
    reply_to: str | None = None
    mentions: tuple[str, ...] = ()
    mentions_bot: bool = False
    at: dt.datetime | None = None


@dataclass(frozen=True)
class ButtonAction(InboundCommon):
    """A click on a card button (its value identifies the assignment and the action)."""

    value: str
    message_id: str | None = None
    card_token: str | None = None  # a one-time code for updating the clicked card (WeCom)
    at: dt.datetime | None = None


@dataclass(frozen=True)
class Reaction(InboundCommon):
    """An emoji reaction to a message (e.g. ✅ on Matrix)."""

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
class CardUpdate:
    """Replace the clicked card's buttons with one label, for the person who clicked.

    `token` is the one-time code the platform gave with the click (ButtonAction.card_token)
    and `card_ref` the reference of the card that was clicked (OutboundMessage.card_ref)."""

    token: str
    card_ref: str
    label: str


@dataclass(frozen=True)
class OutboundMessage:
    """What to send: text, optionally a card, mentions; to the group or a person.

    `card_ref` names a personal card so that a click on it can be traced back (WeCom's
    task_id); `card_update` answers a click by updating the clicked card in place;
    `document` is the JSON body for a URL target (the portal's status callbacks)."""

    text: str
    card: Card | None = None
    mentions: tuple[str, ...] = ()
    reply_to: str | None = None
    card_ref: str | None = None
    card_update: CardUpdate | None = None
    document: Mapping[str, Any] | None = None

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
        payload: dict[str, Any] = {
            "text": self.text,
            "card": card,
            "mentions": list(self.mentions),
            "reply_to": self.reply_to,
        }
        if self.card_ref is not None:
            payload["card_ref"] = self.card_ref
        if self.card_update is not None:
            payload["card_update"] = dataclasses.asdict(self.card_update)
        if self.document is not None:
            payload["document"] = dict(self.document)
        return payload

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
        # Rows written before the neutral names (still pending at an upgrade) carried WeCom's
        # raw keys: "task_id", "update_card" {response_code, task_id, replace_name}, "event".
        update = payload.get("card_update")
        legacy = payload.get("update_card")
        if not isinstance(update, Mapping) and isinstance(legacy, Mapping):
            update = {
                "token": legacy.get("response_code", ""),
                "card_ref": legacy.get("task_id", ""),
                "label": legacy.get("replace_name", ""),
            }
        document = payload.get("document", payload.get("event"))
        return cls(
            text=str(payload.get("text", "")),
            card=card,
            mentions=tuple(payload.get("mentions", ())),
            reply_to=payload.get("reply_to"),
            card_ref=payload.get("card_ref", payload.get("task_id")),
            card_update=CardUpdate(
                str(update["token"]), str(update["card_ref"]), str(update["label"])
            )
            if isinstance(update, Mapping)
            else None,
            document=document if isinstance(document, Mapping) else None,
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


class StorageUnavailable(RetryLater):
    """The core cannot store now (its database is unavailable): nothing was kept; try again
    later. The app answers it 503 on HTTP; an adapter's own loop backs off and retries."""


class PermanentError(PlatformError):
    """A failure that retrying will not fix (bad token, unknown chat): dead-letter it."""


class Intake(Protocol):
    """Where an adapter hands every inbound event: stored and deduplicated on return, then
    processed in order by the chat core. An adapter answers its platform only after this."""

    async def accept(self, event: InboundEvent) -> bool:
        """Store the event (committed on return); False when it was a repeat."""
        ...

    async def accept_and_wait(self, event: InboundEvent) -> bool:
        """Store the event and wait until it has been processed (False: still queued)."""
        ...


class StateStore(Protocol):
    """Small durable values an adapter keeps between runs (a sync position, a room id)."""

    async def get(self, key: str) -> str | None:
        """The stored value, or None."""
        ...

    async def put(self, key: str, value: str) -> None:
        """Store a value (committed on return)."""
        ...


@dataclass(frozen=True)
class Host:
    """What the core gives a running adapter: the intake for its events, a store for its own
    state, and (only for the built-in local group) the durable room it serves."""

    intake: Intake
    state: StateStore
    room: RoomBackend | None = None


@runtime_checkable
class Platform(Protocol):
    """The two-way contract every adapter implements; it never touches storage.

    What it serves (`routes`, registered when the app is built), what it runs (`start` hands
    it the Host and starts any receive loop; `stop` ends them), and what it sends (`send`,
    `edit`, `rate_limits`). `close` releases its HTTP sessions once delivery has stopped."""

    name: str
    capabilities: Capabilities
    serves_room: bool  # it serves the core's durable room (Host.room): the local group

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """The HTTP routes the platform calls (callbacks), served by workbot's app."""
        ...

    async def start(self, host: Host) -> None:
        """Attach to the core and start receiving (long poll, WebSocket, stream)."""
        ...

    async def stop(self) -> None:
        """Stop receiving; events already accepted are the core's."""
        ...

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


class BasePlatform:
    """Defaults for the parts of the contract an adapter may not need: no routes, nothing
    to run, no edits, no published limits, nothing to close. Inbound adapters keep the Host
    given at start in `self.host` (None until started and after stop)."""

    name: str = ""
    capabilities: Capabilities = Capabilities()
    serves_room: bool = False

    def __init__(self) -> None:
        self.host: Host | None = None

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """No callback routes."""
        return ()

    async def start(self, host: Host) -> None:
        """Keep the host; nothing to run."""
        self.host = host

    async def stop(self) -> None:
        """Forget the host."""
        self.host = None

    async def edit(self, delivery: Delivery) -> SendResult:
        """A platform without edits: the core knows (edit is not a capability)."""
        raise PermanentError(f"{self.name} cannot edit messages")

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """No published limits."""
        return []

    async def close(self) -> None:
        """Nothing to release."""


SectionT = TypeVar("SectionT", bound=ConfigSection)


@dataclass(frozen=True)
class BuildContext(Generic[SectionT]):
    """What an adapter is built from: its own config table, the environment (secrets), the
    group's chat id when the group is bound to this platform, and the bot's language."""

    settings: SectionT
    environ: Mapping[str, str]
    group_chat_id: str | None
    language: str
    public_url: str


@dataclass(frozen=True)
class PlatformSpec(Generic[SectionT]):
    """One platform in the platform list: everything the rest of workbot needs to know.

    `adapter` is its class, whose `name` and `capabilities` are the platform's (known before
    it is built); `config_model` validates its `[platforms.<name>]` table; `default` is the
    table's value when the file has none (None: the platform is off unless configured);
    `directory_column` is its column in the people CSV (people's user ids there); `build`
    makes the adapter."""

    adapter: type[BasePlatform]
    config_model: type[SectionT]
    build: Callable[[BuildContext[SectionT]], Platform]
    directory_column: str | None = None
    default: SectionT | None = None
    enabled: Callable[[SectionT], bool] = lambda _settings: True
    # Problems of the whole configuration that concern this platform: (key path, reason).
    checks: Callable[[CoreConfig, SectionT], list[tuple[tuple[str, ...], str]]] = (
        lambda _config, _settings: []
    )

    @property
    def name(self) -> str:
        """The platform's name (its config table, group.platform, the outbox rows)."""
        return self.adapter.name

    @property
    def capabilities(self) -> Capabilities:
        """What the platform can do."""
        return self.adapter.capabilities

    @property
    def doc(self) -> str:
        """Its page in the documentation."""
        return f"docs/platforms/{self.name}.md"

    def settings_of(self, platforms: object) -> SectionT | None:
        """This platform's validated table from a config's `platforms` section."""
        value = getattr(platforms, self.name, None)
        return value if isinstance(value, self.config_model) else None
