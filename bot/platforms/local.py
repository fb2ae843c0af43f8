"""The built-in local group: the embedded default platform, its JSON API, event stream and page.

The local group is a real chat room kept in workbot's own database: people post through
`POST /local/v1/messages` (durable before the 201), the bot posts and edits through the
`Platform` protocol, and the page follows along over server-sent events. It is a development
and demo surface with no authentication: it is meant for the loopback interface only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bot.configtypes import ConfigSection
from bot.platforms.base import (
    Capabilities,
    Delivery,
    PermanentError,
    RateLimit,
    SendResult,
    TargetKind,
)

log = logging.getLogger("workbot.local")

STATIC = Path(__file__).with_name("local_static")
PersonId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class LocalConfig(ConfigSection):
    """[platforms.local]: serve the local group even when the bound group is elsewhere."""

    enabled: bool = False


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


Plain = Annotated[str, AfterValidator(_no_nul)]


class PostMessage(BaseModel):
    """POST /local/v1/messages: a person says something in the room (or, to "bot", privately)."""

    model_config = ConfigDict(extra="forbid")

    sender: PersonId
    text: Annotated[Plain, Field(min_length=1, max_length=10_000)]
    reply_to: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    to: Literal["bot"] | None = None
    client_id: Annotated[Plain, Field(min_length=1, max_length=64)] | None = None
    name: Annotated[Plain, Field(max_length=100)] | None = None


class PostAction(BaseModel):
    """POST /local/v1/actions: a person clicks a card button."""

    model_config = ConfigDict(extra="forbid")

    sender: PersonId
    message_id: Annotated[int, Field(ge=1, le=2**31 - 1)]
    action: Annotated[Plain, Field(min_length=1, max_length=200)]


POST_MESSAGE = TypeAdapter(PostMessage)
POST_ACTION = TypeAdapter(PostAction)


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

    async def post(self, body: PostMessage) -> tuple[int, bool]:
        """Store a person's post durably; its id, and whether it repeated a client id."""
        ...

    async def act(self, body: PostAction) -> str:
        """Record and process a button click; a status word."""
        ...

    async def messages(
        self, *, after: int, limit: int, for_person: str | None
    ) -> list[dict[str, Any]]:
        """Room messages after an id."""
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


class RoomHub:
    """Fans room events out to the page's event streams (this process's subscribers)."""

    def __init__(self, *, backlog: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._backlog = backlog

    def publish(self, kind: str, message: Mapping[str, Any]) -> None:
        """Send one event to every subscriber; one that has fallen far behind is dropped."""
        if not self._subscribers:
            return
        frame = f"event: {kind}\ndata: {json.dumps(message, ensure_ascii=False)}\n\n"
        for queue in list(self._subscribers):
            if queue.qsize() >= self._backlog:
                self._subscribers.discard(queue)
                queue.put_nowait(None)  # the page reconnects and re-reads the room
            else:
                queue.put_nowait(frame)

    def subscribe(self) -> asyncio.Queue[str | None]:
        """A new subscriber's queue."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(queue)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        self._subscribers.clear()

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)


class LocalPlatform:
    """Every capability, no rate limit: the reference behaviour for the zero-noise rules."""

    name = "local"
    capabilities = Capabilities(
        buttons=True,
        edit=True,
        reactions=True,
        dm=True,
        receives_all_messages=True,
        idempotent_send=True,
    )

    def __init__(self, backend: RoomBackend, hub: RoomHub) -> None:
        self.backend = backend
        self.hub = hub

    async def send(self, delivery: Delivery) -> SendResult:
        """Post to the room, or privately to one person; a repeated key is not posted twice."""
        to = delivery.target if delivery.target_kind is TargetKind.PERSON else None
        message, created = await self.backend.bot_post(
            key=delivery.idempotency_key, to=to, payload=delivery.message.to_payload()
        )
        if created:
            self.hub.publish("message", message)
        return SendResult(str(message["id"]))

    async def edit(self, delivery: Delivery) -> SendResult:
        """Replace a message's content in place (same id, edited_at set)."""
        if delivery.edit_of is None or not delivery.edit_of.isdigit():
            raise PermanentError(f"no local message {delivery.edit_of!r} to edit")
        message = await self.backend.bot_edit(int(delivery.edit_of), delivery.message.to_payload())
        if message is None:
            raise PermanentError(f"no local message {delivery.edit_of!r} to edit")
        self.hub.publish("edit", message)
        return SendResult(str(message["id"]))

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """The local room has no limits."""
        return []

    async def close(self) -> None:
        """Nothing to release."""


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


async def _json_body(request: web.Request, adapter: TypeAdapter[Any]) -> Any | web.Response:
    """The validated body, or the error response (415, 413, 400 with fields)."""
    if request.content_type != "application/json":
        return _error(415, "unsupported_media_type", "the body must be application/json")
    raw = await request.read()
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return _error(400, "invalid_json", "the body is not valid JSON")
        return _error(
            400, "invalid_body", "the body does not match the schema", fields=_fields(exc)
        )


class LocalRoutes:
    """The HTTP surface of the local group: page, JSON API and event stream."""

    def __init__(self, hub: RoomHub, *, language: str) -> None:
        self.hub = hub
        self.language = language
        self._backend: RoomBackend | None = None

    @property
    def backend(self) -> RoomBackend:
        """The room's backend (attached at start-up, once the database is open)."""
        if self._backend is None:
            raise web.HTTPServiceUnavailable(reason="starting")
        return self._backend

    def attach(self, backend: RoomBackend | None) -> None:
        """Attach (or, at shutdown, detach) the backend."""
        self._backend = backend

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Register the routes."""
        router.add_get("/local", self.redirect)
        router.add_get("/local/", self.page)
        router.add_static("/local/static", STATIC, append_version=False)
        router.add_get("/local/v1/directory", self.directory)
        router.add_get("/local/v1/messages", self.list_messages)
        router.add_post("/local/v1/messages", self.post_message)
        router.add_post("/local/v1/actions", self.post_action)
        router.add_get("/local/v1/stream", self.stream)

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        """/local → /local/."""
        raise web.HTTPFound("/local/")

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The chat room page (plain HTML and JS, no build step)."""
        return web.FileResponse(
            STATIC / "index.html",
            headers={
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": (
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
                ),
            },
        )

    async def directory(self, request: web.Request) -> web.Response:
        """Who one can be on the page, and the bot's language."""
        return web.json_response(
            {
                "language": self.language,
                "bot": {"name": "workbot"},
                "people": await self.backend.directory(),
            }
        )

    async def list_messages(self, request: web.Request) -> web.Response:
        """GET /local/v1/messages?after=&limit=[&for=person]."""
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "invalid_query", "after and limit must be integers")
        if after < 0 or not 1 <= limit <= 500:
            return _error(400, "invalid_query", "after must be >= 0 and limit 1 to 500")
        messages = await self.backend.messages(
            after=after, limit=limit, for_person=request.query.get("for") or None
        )
        return web.json_response({"messages": messages})

    async def post_message(self, request: web.Request) -> web.Response:
        """POST /local/v1/messages: 201 once the post is durable (200 for a repeated client_id)."""
        body = await _json_body(request, POST_MESSAGE)
        if isinstance(body, web.Response):
            return body
        message_id, duplicate = await self.backend.post(body)
        return web.json_response({"id": message_id}, status=200 if duplicate else 201)

    async def post_action(self, request: web.Request) -> web.Response:
        """POST /local/v1/actions: a button click, recorded and processed."""
        body = await _json_body(request, POST_ACTION)
        if isinstance(body, web.Response):
            return body
        status = await self.backend.act(body)
        if status == "unknown_message":
            return _error(400, "unknown_message", f"no message {body.message_id}")
        return web.json_response({"status": status})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `message` for a new message, `edit` for an edited one."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self.hub.subscribe()
        try:
            await response.write(b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    frame = ": keep-alive\n\n"
                if frame is None:
                    break
                await response.write(frame.encode())
        except ConnectionResetError:
            pass
        finally:
            self.hub.unsubscribe(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


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
