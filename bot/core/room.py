"""The built-in local group's room, as its adapter and its API see it: the API documents,
the backend protocol, and the live event hub (nothing here touches storage; the durable room
is bot/core/durable_room.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

PersonId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
BOT = "bot"  # the bot's sender id in the room, and the `to` of a person's DM to the bot


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


Plain = Annotated[str, AfterValidator(_no_nul)]


def _not_the_bot(value: str) -> str:
    if value == BOT:
        raise ValueError("is the bot's id")
    return value


SenderId = Annotated[PersonId, AfterValidator(_not_the_bot)]


class Refused(Exception):
    """A post the room refuses although it matches the schema: a stable code, the field, and
    the catalog message with its parameters."""

    def __init__(self, code: str, field: str, message: str, **params: str) -> None:
        super().__init__(code)
        self.code = code
        self.field = field
        self.message = message
        self.params = params


class PostMessage(BaseModel):
    """POST /local/v1/messages: a person says something in the room (or, to "bot", privately)."""

    model_config = ConfigDict(extra="forbid")

    sender: SenderId
    text: Annotated[Plain, Field(min_length=1, max_length=10_000)]
    reply_to: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    to: Literal["bot"] | None = None
    client_id: Annotated[Plain, Field(min_length=1, max_length=64)] | None = None
    name: Annotated[Plain, Field(max_length=100)] | None = None


class PostAction(BaseModel):
    """POST /local/v1/actions: a person clicks a card button."""

    model_config = ConfigDict(extra="forbid")

    sender: SenderId
    message_id: Annotated[int, Field(ge=1, le=2**31 - 1)]
    action: Annotated[Plain, Field(min_length=1, max_length=200)]


POST_MESSAGE = TypeAdapter(PostMessage)
POST_ACTION = TypeAdapter(PostAction)
_PERSON_ID: TypeAdapter[str] = TypeAdapter(PersonId)


def reader_of(value: str | None) -> str | None:
    """The person a read is for (`for=`), None when absent; ValueError when it is not a
    person id, or is the bot's (the bot is a party to every DM)."""
    if not value:
        return None
    _PERSON_ID.validate_python(value)  # a ValidationError is a ValueError
    if value == BOT:
        raise ValueError("the bot is not a reader")
    return value


# The answers' shapes. The handlers build their JSON directly (message_json, directory);
# these models document it for /openapi.json, and tests/test_openapi.py checks that the live
# answers validate against them and carry exactly their fields.


class MessageCreated(BaseModel):
    """POST /local/v1/messages: 201 for a new post, 200 for a repeated client_id (same id)."""

    id: int


class ActionResult(BaseModel):
    """POST /local/v1/actions: `processed` once the click is stored and processed, `accepted`
    if it is stored but still being processed, `unavailable` while the chat core is down."""

    status: Literal["processed", "accepted", "unavailable"]


class ButtonDoc(BaseModel):
    """A card button: its label, the value a click sends back (POST /local/v1/actions), and
    for a link button the URL it opens."""

    label: str
    value: str
    url: str | None = None


class CardDoc(BaseModel):
    """A bot message's card: title, body lines, a status line (the tally) and buttons."""

    title: str
    body: str
    status: str
    buttons: list[ButtonDoc]


class LocalMessageDoc(BaseModel):
    """One room message, as GET /local/v1/messages and the event stream show it.

    The bot's posts have sender "bot". `to` is the person a bot DM is for, or "bot" for a
    person's DM to the bot, and null for the group. An edit keeps the id and sets `edited_at`.
    """

    id: int
    sender: str
    sender_name: str
    text: str
    card: CardDoc | None
    reply_to: int | None
    to: str | None
    ts: dt.datetime
    edited_at: dt.datetime | None


class MessagesDoc(BaseModel):
    """GET /local/v1/messages: the messages after an id, oldest first."""

    messages: list[LocalMessageDoc]


class PersonDoc(BaseModel):
    """One person one can be on the page."""

    id: str
    name: str
    department: str
    roles: list[str]


class BotDoc(BaseModel):
    """How the bot shows itself on the page."""

    name: str


class DirectoryDoc(BaseModel):
    """GET /local/v1/directory: the people, ordered by department and id, and the bot's
    language."""

    language: str
    bot: BotDoc
    people: list[PersonDoc]


class RoomBackend(Protocol):
    """What the room's API and the platform need from the core (storage and processing)."""

    hub: RoomHub  # the live event streams of this process

    async def post(self, body: PostMessage) -> tuple[int, bool]:
        """Store a person's post durably; its id, and whether it repeated a client id.
        Refused (nothing stored) for a `name` that hides or reorders text, or, from a new
        sender, reads as a name the directory already has."""
        ...

    async def act(self, body: PostAction) -> str:
        """Record and process a button click; a status word."""
        ...

    async def messages(
        self, *, after: int, limit: int, for_person: str | None
    ) -> list[dict[str, Any]]:
        """Room messages after an id: the group's, and for_person's DMs (to or from them)."""
        ...

    async def directory(self) -> list[dict[str, Any]]:
        """The people one can pick on the page."""
        ...

    async def bot_post(
        self, *, key: str, to: str | None, payload: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Post as the bot (idempotent by key); the message and whether it is new."""
        ...

    async def bot_edit(self, message_id: int, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """Edit a bot message in place; None if there is none with that id."""
        ...


def readers(message: Mapping[str, Any]) -> frozenset[str] | None:
    """Who may read a room message: None for a group message (everyone), else the DM's
    recipient and sender (never the bot's id, which no reader can be)."""
    to = message.get("to")
    if to is None:
        return None
    return frozenset({str(to), str(message.get("sender", ""))} - {BOT, ""})


class RoomHub:
    """Fans room events out to the page's event streams (this process's subscribers).

    A subscriber names who it reads for (or nobody): it gets every group message, and a DM
    only when it reads for the DM's recipient or sender."""

    def __init__(self, *, backlog: int = 1000) -> None:
        self._subscribers: dict[asyncio.Queue[str | None], str | None] = {}
        self._backlog = backlog

    def publish(self, kind: str, message: Mapping[str, Any]) -> None:
        """Send one event to every subscriber that may read it; one that has fallen far
        behind is dropped."""
        if not self._subscribers:
            return
        allowed = readers(message)
        frame = f"event: {kind}\ndata: {json.dumps(message, ensure_ascii=False)}\n\n"
        for queue, reader in list(self._subscribers.items()):
            if allowed is not None and reader not in allowed:
                continue
            if queue.qsize() >= self._backlog:
                self._subscribers.pop(queue, None)
                queue.put_nowait(None)  # the page reconnects and re-reads the room
            else:
                queue.put_nowait(frame)

    def subscribe(self, reader: str | None = None) -> asyncio.Queue[str | None]:
        """A new subscriber's queue: the group's events, and the DMs to or from `reader`."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._subscribers[queue] = reader
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        """Forget a subscriber."""
        self._subscribers.pop(queue, None)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)


def message_json(
    *,
    id: int,
    sender: str,
    sender_name: str,
    text: str,
    card: Mapping[str, Any] | None,
    reply_to: int | None,
    to: str | None,
    ts: dt.datetime,
    edited_at: dt.datetime | None,
) -> dict[str, Any]:
    """One room message as the API and the stream show it."""
    return {
        "id": id,
        "sender": sender,
        "sender_name": sender_name,
        "text": text,
        "card": dict(card) if card is not None else None,
        "reply_to": reply_to,
        "to": to,
        "ts": ts.isoformat(),
        "edited_at": edited_at.isoformat() if edited_at is not None else None,
    }
