"""The built-in local group: the embedded default platform, its JSON API, event stream and page.

The local group is a real chat room kept in workbot's own database (bot/core/durable_room.py):
people post through `POST /local/v1/messages` (durable before the 201), the bot posts and
edits through the platform contract, and the page follows along over server-sent events. It
is a development and demo surface with no authentication: it is meant for the loopback
interface only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from bot.core import jsonbody
from bot.core.config_sections import CoreConfig
from bot.core.configtypes import ConfigSection
from bot.core.field_errors import field_problems
from bot.core.i18n import Translator
from bot.core.platform import (
    FULL_CAPABILITIES,
    BasePlatform,
    BuildContext,
    Delivery,
    Host,
    PermanentError,
    PlatformSpec,
    SendResult,
    TargetKind,
)
from bot.core.room import POST_ACTION, POST_MESSAGE, Refused, RoomBackend, RoomHub, reader_of

log = logging.getLogger("workbot.local")

STATIC = Path(__file__).with_name("local_static")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
    ),
}


@dataclass(frozen=True)
class StaticFile:
    """One file of the page, held in memory: its bytes, type and strong ETag."""

    body: bytes
    content_type: str
    etag: str  # the opaque tag, without quotes

    def response(self, request: web.Request, headers: dict[str, str] | None = None) -> web.Response:
        """200 with the bytes, or 304 when the client's If-None-Match names this version.
        Clients revalidate every time (no-cache): a restarted server may serve other bytes."""
        common = {
            "ETag": f'"{self.etag}"',
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        }
        tags = request.if_none_match or ()
        if any(tag.value in (self.etag, "*") for tag in tags):
            return web.Response(status=304, headers=common)
        return web.Response(
            body=self.body, content_type=self.content_type, charset="utf-8", headers=common
        )


def load_static(directory: Path) -> dict[str, StaticFile]:
    """Every file of the page's directory, read once: a reinstall that moves or removes the
    package's files while the server runs cannot break the page it serves."""
    files: dict[str, StaticFile] = {}
    for path in sorted(directory.iterdir()):
        kind = CONTENT_TYPES.get(path.suffix)
        if kind is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = hashlib.sha256(body).hexdigest()[:32]
        files[path.name] = StaticFile(body, kind, etag)
    if "index.html" not in files:
        raise RuntimeError(f"the local group's page is missing from {directory}")
    return files


class LocalConfig(ConfigSection):
    """[platforms.local]: the built-in local group (on when the group is bound to it)."""

    enabled: bool = False


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def check_config(config: CoreConfig, settings: LocalConfig) -> list[tuple[tuple[str, ...], str]]:
    """The local group has no authentication: it runs only as the embedded default, and only
    on a loopback address (anyone who can reach it can post as anyone, the office included)."""
    problems: list[tuple[tuple[str, ...], str]] = []
    bound = config.group.platform == "local"
    if settings.enabled and not bound:
        problems.append(
            (
                ("platforms", "local", "enabled"),
                "the local group has no authentication and cannot run beside the group on "
                f"{config.group.platform!r} (anyone reaching the port could act as the office "
                "there): leave it off",
            )
        )
    if bound and config.server.host not in LOOPBACK:
        problems.append(
            (
                ("server", "host"),
                f"the local group has no authentication: serve it on a loopback address "
                f"(127.0.0.1, ::1 or localhost), not {config.server.host!r}",
            )
        )
    return problems


def _host_name(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:8080" → "::1")."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


async def _json_body(
    request: web.Request, adapter: TypeAdapter[Any], language: str
) -> Any | web.Response:
    """The validated body, or the error response (415, 413, 400 with fields; 400
    duplicate_key for an object naming a key twice)."""
    if request.content_type != "application/json":
        return _error(415, "unsupported_media_type", Translator(language)("local.not_json"))
    raw = await request.read()
    try:
        jsonbody.check_unique_keys(raw)
    except jsonbody.DuplicateKey as exc:
        message = Translator(language)("http.duplicate_key", key=exc.key)
        return _error(400, "duplicate_key", message)
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return _error(400, "invalid_json", Translator(language)("local.invalid_json"))
        t = Translator(language)
        return _error(400, "invalid_body", t("local.invalid_body"), fields=field_problems(exc, t))


class LocalRoutes:
    """The HTTP surface of the local group: page, JSON API and event stream."""

    language: str
    t: Translator
    hub: RoomHub

    @property
    def backend(self) -> RoomBackend:
        """The room (defined by the platform)."""
        raise NotImplementedError

    public_host: str
    static: dict[str, StaticFile]

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        """The page, its static files, the JSON API and the event stream; any other GET under
        /local/ is a plain 404 page."""
        guarded = self.same_host
        return (
            web.get("/local", self.redirect),
            web.get("/local/", guarded(self.page)),
            web.get("/local/static/{name}", self.static_file),
            web.get("/local/v1/directory", guarded(self.directory)),
            web.get("/local/v1/messages", guarded(self.list_messages)),
            web.post("/local/v1/messages", guarded(self.post_message)),
            web.post("/local/v1/actions", guarded(self.post_action)),
            web.get("/local/v1/stream", guarded(self.stream)),
            web.get("/local/{tail:.*}", self.not_found),
        )

    def same_host(self, handler: Handler) -> Handler:
        """Refuse a request whose Host is neither a loopback name nor the configured public
        URL's host: a page on another site whose name now resolves here (DNS rebinding)
        must not read or post in the room."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            host = _host_name(request.headers.get("Host", "")).lower()
            if host not in LOOPBACK and host != self.public_host:
                return _error(400, "bad_host", self.t("local.bad_host"))
            return await handler(request)

        return guarded

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        """/local → /local/."""
        raise web.HTTPFound("/local/")

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The chat room page (plain HTML and JS, no build step), from memory."""
        return self.static["index.html"].response(request, PAGE_HEADERS)

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        """/local/static/NAME: the page's script and style sheet, from memory."""
        file = self.static.get(request.match_info["name"])
        if file is None:
            return await self.not_found(request)
        return file.response(request)

    async def not_found(self, request: web.Request) -> web.Response:
        """A plain 404 page in the bot's language (a browser shows it, never downloads it);
        under /local/v1/ the API's JSON error instead, as its clients expect."""
        if request.path.startswith("/local/v1/"):
            return _error(404, "not_found", self.t("http.status_404"))
        title = html.escape(self.t("local.page_not_found_title"))
        text = html.escape(self.t("local.page_not_found"))
        lang = html.escape(self.language)
        body = (
            f'<!doctype html>\n<html lang="{lang}">\n<head><meta charset="utf-8">'
            f"<title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{text}</p>\n"
            f'<p><a href="/local/">/local/</a></p></body>\n</html>\n'
        )
        return web.Response(
            status=404,
            text=body,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
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

    def reader(self, request: web.Request) -> str | web.Response | None:
        """Whom a read is for (`for=`): the group's messages and that person's DMs. Without
        it, only the group's messages."""
        try:
            return reader_of(request.query.get("for"))
        except ValueError:
            return _error(400, "invalid_query", self.t("local.invalid_for"))

    async def list_messages(self, request: web.Request) -> web.Response:
        """GET /local/v1/messages?after=&limit=[&for=person]."""
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "invalid_query", self.t("local.bad_paging"))
        if after < 0 or not 1 <= limit <= 500:
            return _error(400, "invalid_query", self.t("local.bad_paging"))
        reader = self.reader(request)
        if isinstance(reader, web.Response):
            return reader
        messages = await self.backend.messages(after=after, limit=limit, for_person=reader)
        return web.json_response({"messages": messages})

    async def post_message(self, request: web.Request) -> web.Response:
        """POST /local/v1/messages: 201 once the post is durable (200 for a repeated client_id);
        400 for a name that hides or reorders text, or that a new sender cannot take."""
        body = await _json_body(request, POST_MESSAGE, self.language)
        if isinstance(body, web.Response):
            return body
        try:
            message_id, duplicate = await self.backend.post(body)
        except Refused as exc:
            message = self.t(exc.message, **exc.params)
            return _error(400, exc.code, message, fields=[{"field": exc.field, "message": message}])
        return web.json_response({"id": message_id}, status=200 if duplicate else 201)

    async def post_action(self, request: web.Request) -> web.Response:
        """POST /local/v1/actions: a button click, recorded and processed."""
        body = await _json_body(request, POST_ACTION, self.language)
        if isinstance(body, web.Response):
            return body
        status = await self.backend.act(body)
        if status == "unknown_message":
            return _error(
                400, "unknown_message", self.t("local.unknown_message", id=body.message_id)
            )
        return web.json_response({"status": status})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `message` for a new message, `edit` for an edited one (a DM
        only to a stream opened `for=` its recipient or sender)."""
        reader = self.reader(request)
        if isinstance(reader, web.Response):
            return reader
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self.hub.subscribe(reader)
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


class LocalPlatform(LocalRoutes, BasePlatform):
    """Every capability, no rate limit: the reference behaviour for the zero-noise rules.

    The room itself (storage and processing) is the core's, handed over in `Host.room`."""

    name = "local"
    capabilities = FULL_CAPABILITIES
    serves_room = True

    def __init__(self, *, language: str, public_url: str = "http://127.0.0.1:8080") -> None:
        super().__init__()
        self.language = language
        self.t = Translator(language)
        self.public_host = (urlsplit(public_url).hostname or "").lower()
        self.static = load_static(STATIC)
        self._room: RoomBackend | None = None
        self.hub = RoomHub()

    async def start(self, host: Host) -> None:
        """Serve the core's room."""
        await super().start(host)
        room = host.room
        if room is None:
            raise RuntimeError("the local platform needs the core's room (Host.room)")
        self._room = room
        self.hub = room.hub

    async def stop(self) -> None:
        """End the page's event streams and stop serving the room."""
        self.hub.close()
        self._room = None
        await super().stop()

    @property
    def backend(self) -> RoomBackend:
        """The room (attached at start, once the database is open)."""
        if self._room is None:
            raise web.HTTPServiceUnavailable(reason="starting")
        return self._room

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


def build(ctx: BuildContext[LocalConfig]) -> LocalPlatform:
    """The local group's adapter (its room comes from the core at start)."""
    return LocalPlatform(language=ctx.language, public_url=ctx.public_url)


SPEC = PlatformSpec(
    adapter=LocalPlatform,
    config_model=LocalConfig,
    build=build,
    directory_column="local",
    default=LocalConfig(),
    enabled=lambda settings: settings.enabled,
    checks=check_config,
)
