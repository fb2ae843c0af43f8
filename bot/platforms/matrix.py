"""Matrix (client-server API): the official work room, DMs, reactions and m.replace edits.

- Sending is `PUT /rooms/{room}/send/m.room.message/{txnId}` with the outbox idempotency key
  as the txnId, so a retry after a crash never doubles a message (the server deduplicates).
- The tally is an `m.replace` edit of the notice event, never a new message.
- Private messages go to a direct room with the person, created on first use and remembered
  in the bot's `m.direct` account data (on the server, so every worker and restart finds it).
- Inbound comes from a `/sync` long-poll. Each event is handed to the core (stored and
  deduplicated by event id) before the new `next_batch` is saved, so a restart resumes where
  it stopped and never processes an event twice. The bot joins the configured room when
  invited, ignores its own events, and treats other rooms as unbound, except its DM rooms.
- A 429 honours `retry_after_ms`.

The adapter never touches storage: the core's Host gives it the intake for events and a
state store for `next_batch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import ConfigDict, Field

from bot.core.configtypes import BaseUrl, ConfigSection, Duration, EnvName, missing_variables
from bot.core.platform import (
    BasePlatform,
    BuildContext,
    Capabilities,
    Delivery,
    Host,
    InboundEvent,
    InboundMessage,
    Intake,
    OutboundMessage,
    PermanentError,
    PlatformSpec,
    RateLimit,
    Reaction,
    RetryLater,
    Sender,
    SendResult,
    StateStore,
    StorageUnavailable,
    TargetKind,
)

log = logging.getLogger("workbot.matrix")

_TXN = re.compile(r"[^A-Za-z0-9._~-]")
_REPLY_FALLBACK = re.compile(r"\A(?:>[^\n]*\n)+\n?")
NEXT_BATCH = "matrix:next_batch"  # the sync position, in the host's state store


class MatrixConfig(ConfigSection):
    """[platforms.matrix]: the homeserver, the bot's user and its access token's variable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    homeserver: BaseUrl
    user_id: str = Field(pattern=r"^@[^:\s]+:\S+$")
    access_token_env: EnvName = "MATRIX_TOKEN"  # noqa: S105 - a variable's name, not a secret
    sync_timeout: Duration = timedelta(seconds=30)

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """The access token must be set."""
        return missing_variables(environ, {"access_token_env": self.access_token_env})


@dataclass(frozen=True)
class MatrixError(Exception):
    """A client-server API error."""

    status: int
    errcode: str
    error: str

    def __str__(self) -> str:
        return f"Matrix {self.status} {self.errcode}: {self.error}"


def txn_id(key: str) -> str:
    """A transaction id from an outbox key: stable, URL-safe, at most 64 characters."""
    clean = _TXN.sub("_", key)
    if len(clean) <= 64 and clean == key:
        return clean
    return clean[:40] + "-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def mentions_of(message: OutboundMessage) -> dict[str, Any]:
    """The message's intentional mentions (m.mentions): only the Matrix users the bot itself
    names, never @room. Their presence also turns off the older rules that notify on words
    in the body, so a title reading "@room" or someone's name notifies nobody."""
    return {"user_ids": [m for m in message.mentions if m.startswith("@") and ":" in m]}


def message_content(message: OutboundMessage) -> dict[str, Any]:
    """The m.room.message content for a neutral message (a card becomes text). The body is
    plain text: no formatted_body is sent, so nothing people wrote is read as HTML."""
    body = message.text
    if message.card is not None:
        lines = [message.card.title]
        lines += [line for line in (message.card.body, message.card.status) if line]
        links = [f"{b.label}: {b.url}" for b in message.card.buttons if b.url]
        body = "\n".join(lines + links)
    content: dict[str, Any] = {
        "msgtype": "m.text",
        "body": body,
        "m.mentions": mentions_of(message),
    }
    if message.reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": message.reply_to}}
    return content


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def strip_reply_fallback(body: str) -> str:
    """A reply's body without the quoted "> <@user> …" lines older clients prepend."""
    return _REPLY_FALLBACK.sub("", body)


CAPABILITIES = Capabilities(
    edit=True, reactions=True, dm=True, receives_all_messages=True, idempotent_send=True
)


class MatrixPlatform(BasePlatform):
    """The work room on a Matrix homeserver, and DMs with its people."""

    name = "matrix"
    capabilities = CAPABILITIES

    def __init__(self, config: MatrixConfig, access_token: str, *, room_id: str) -> None:
        super().__init__()
        self.config = config
        self.room_id = room_id
        self._token = access_token
        self._session: aiohttp.ClientSession | None = None
        self._direct: dict[str, list[str]] | None = None  # m.direct: user -> rooms
        self._direct_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()  # set after each completed sync (tests wait on it)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self._token}"}
            )
        return self._session

    async def _api(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        wait: float = 30,
    ) -> dict[str, Any]:
        """One call; 429 and 5xx become RetryLater, other errors MatrixError."""
        url = f"{self.config.homeserver}/_matrix/client/v3{path}"
        try:
            async with self._client().request(
                method,
                url,
                json=body,
                params=dict(params or {}),
                timeout=aiohttp.ClientTimeout(total=wait),
            ) as response:
                data = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RetryLater(f"Matrix request failed: {exc!r}") from exc
        if not isinstance(data, dict):
            data = {}
        if status == 429:
            retry_ms = data.get("retry_after_ms")
            seconds = float(retry_ms) / 1000 if isinstance(retry_ms, int | float) else None
            raise RetryLater("Matrix 429 M_LIMIT_EXCEEDED", seconds, rate_limited=True)
        if status >= 500:
            raise RetryLater(f"Matrix {status}")
        if status >= 400:
            raise MatrixError(status, str(data.get("errcode", "")), str(data.get("error", "")))
        return data

    async def _send_event(
        self, room: str, event_type: str, content: Mapping[str, Any], key: str
    ) -> str:
        path = f"/rooms/{quote(room, safe='')}/send/{event_type}/{quote(txn_id(key), safe='')}"
        try:
            data = await self._api("PUT", path, body=dict(content))
        except MatrixError as exc:
            raise PermanentError(str(exc)) from exc
        event_id = data.get("event_id")
        if not isinstance(event_id, str):
            raise RetryLater("Matrix send answered without an event_id")
        return event_id

    async def send(self, delivery: Delivery) -> SendResult:
        """Send to the room or a person's DM room; the txnId makes a retry harmless."""
        if delivery.target_kind is TargetKind.CHAT:
            room = delivery.target
        elif delivery.target_kind is TargetKind.PERSON:
            room = await self.direct_room(delivery.target)
        else:
            raise PermanentError(f"Matrix cannot send to a {delivery.target_kind.value}")
        content = message_content(delivery.message)
        event_id = await self._send_event(room, "m.room.message", content, delivery.idempotency_key)
        return SendResult(event_id)

    async def edit(self, delivery: Delivery) -> SendResult:
        """An m.replace edit of an earlier event (the tally), never a new visible message."""
        if delivery.edit_of is None:
            raise PermanentError("nothing to edit")
        room = delivery.target
        if delivery.target_kind is TargetKind.PERSON:
            room = await self.direct_room(delivery.target)
        new = message_content(delivery.message)
        new.pop("m.relates_to", None)
        content = {
            "msgtype": "m.text",
            "body": f"* {new['body']}",
            "m.mentions": {},  # an edit notifies nobody anew
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": delivery.edit_of},
        }
        event_id = await self._send_event(room, "m.room.message", content, delivery.idempotency_key)
        return SendResult(event_id)

    async def _load_direct(self) -> dict[str, list[str]]:
        if self._direct is None:
            path = f"/user/{quote(self.config.user_id, safe='')}/account_data/m.direct"
            try:
                data = await self._api("GET", path)
            except MatrixError as exc:
                if exc.status != 404:
                    raise PermanentError(str(exc)) from exc
                data = {}
            self._direct = {
                user: [r for r in rooms if isinstance(r, str)]
                for user, rooms in data.items()
                if isinstance(rooms, list)
            }
        return self._direct

    async def direct_room(self, user_id: str) -> str:
        """The DM room with a person: the remembered one, or a new one (then remembered)."""
        async with self._direct_lock:
            direct = await self._load_direct()
            if direct.get(user_id):
                return direct[user_id][0]
            try:
                created = await self._api(
                    "POST",
                    "/createRoom",
                    body={"is_direct": True, "invite": [user_id], "preset": "trusted_private_chat"},
                )
            except MatrixError as exc:
                raise PermanentError(f"cannot open a DM with {user_id}: {exc}") from exc
            room = str(created["room_id"])
            direct[user_id] = [room]
            path = f"/user/{quote(self.config.user_id, safe='')}/account_data/m.direct"
            await self._api("PUT", path, body=direct)
            return room

    def is_direct_room(self, room: str) -> bool:
        """Whether a room is one of the bot's DM rooms."""
        return any(room in rooms for rooms in (self._direct or {}).values())

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """Homeservers publish no fixed limit; a 429 says how long to wait."""
        return []

    # -- inbound -----------------------------------------------------------------------------

    def events_of(self, sync: Mapping[str, Any]) -> list[InboundEvent]:
        """The neutral events in one sync response (our own events left out)."""
        events: list[InboundEvent] = []
        for item in (sync.get("account_data") or {}).get("events", []):
            if item.get("type") == "m.direct" and isinstance(item.get("content"), dict):
                self._direct = {
                    u: [r for r in rooms if isinstance(r, str)]
                    for u, rooms in item["content"].items()
                    if isinstance(rooms, list)
                }
        joined = ((sync.get("rooms") or {}).get("join")) or {}
        for room, data in joined.items():
            for event in ((data or {}).get("timeline") or {}).get("events", []):
                converted = self._event(room, event)
                if converted is not None:
                    events.append(converted)
        return events

    def _event(self, room: str, event: Mapping[str, Any]) -> InboundEvent | None:
        sender = event.get("sender")
        event_id = event.get("event_id")
        content = event.get("content")
        if not isinstance(sender, str) or not isinstance(event_id, str):
            return None
        if sender == self.config.user_id or not isinstance(content, dict):
            return None
        relates = _mapping(content.get("m.relates_to"))
        if event.get("type") == "m.reaction":
            if relates.get("rel_type") != "m.annotation" or not relates.get("event_id"):
                return None
            return Reaction(
                platform="matrix",
                event_id=event_id,
                chat_id=room,
                sender=Sender(sender),
                key=str(relates.get("key", "")),
                message_id=str(relates["event_id"]),
            )
        if event.get("type") != "m.room.message" or relates.get("rel_type") == "m.replace":
            return None  # edits of people's messages are not new commands
        if content.get("msgtype") not in ("m.text", "m.emote"):
            return None
        in_reply = relates.get("m.in_reply_to")
        reply_to = in_reply.get("event_id") if isinstance(in_reply, dict) else None
        body = str(content.get("body", ""))
        if reply_to:
            body = strip_reply_fallback(body)
        user_ids = _mapping(content.get("m.mentions")).get("user_ids")
        if not isinstance(user_ids, list):
            user_ids = []
        return InboundMessage(
            platform="matrix",
            event_id=event_id,
            chat_id=room,
            sender=Sender(sender),
            text=body,
            is_direct=room != self.room_id and self.is_direct_room(room),
            message_id=event_id,
            reply_to=str(reply_to) if reply_to else None,
            mentions_bot=self.config.user_id in user_ids,
        )

    async def _join_invites(self, sync: Mapping[str, Any]) -> None:
        invited = ((sync.get("rooms") or {}).get("invite")) or {}
        for room in invited:
            if room == self.room_id:
                try:
                    await self._api("POST", f"/join/{quote(room, safe='')}", body={})
                    log.info("joined the work room %s", room)
                except (MatrixError, RetryLater) as exc:
                    log.warning("could not join %s: %s", room, exc)

    async def sync_forever(self, intake: Intake, state: StateStore) -> None:
        """The /sync long-poll: each event accepted (stored) before next_batch is saved."""
        since = await state.get(NEXT_BATCH)
        if since is None:
            # First start: take the current position, not the room's history.
            first = await self._sync_once(None, timeout_ms=0)
            await self._join_invites(first)
            self.events_of({"account_data": first.get("account_data")})
            since = str(first["next_batch"])
            await state.put(NEXT_BATCH, since)
            self.synced.set()
        backoff = 1.0
        while True:
            try:
                sync = await self._sync_once(
                    since, timeout_ms=int(self.config.sync_timeout.total_seconds() * 1000)
                )
            except (RetryLater, MatrixError) as exc:
                wait = getattr(exc, "retry_after", None) or backoff
                log.warning("sync failed (%s); retrying in %.0f s", exc, wait)
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, 60.0)
                continue
            await self._join_invites(sync)
            try:
                for event in self.events_of(sync):
                    await intake.accept(event)  # committed (or a known repeat) before we go on
                await state.put(NEXT_BATCH, str(sync["next_batch"]))
            except StorageUnavailable as exc:
                # Not stored: the same batch is fetched again (its events deduplicated).
                log.warning("cannot store the sync (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            since = str(sync["next_batch"])
            self.synced.set()

    async def _sync_once(self, since: str | None, *, timeout_ms: int) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if since:
            params["since"] = since
        return await self._api("GET", "/sync", params=params, wait=timeout_ms / 1000 + 30)

    async def start(self, host: Host) -> None:
        """Run the sync loop in the background until stop()."""
        await super().start(host)
        self._task = asyncio.create_task(
            self.sync_forever(host.intake, host.state), name="workbot-matrix-sync"
        )

    async def stop(self) -> None:
        """Stop syncing (an event being stored finishes first: it is awaited, not lost)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await super().stop()

    async def close(self) -> None:
        """Stop syncing and close the HTTP session."""
        await self.stop()
        if self._session is not None:
            await self._session.close()


def build(ctx: BuildContext[MatrixConfig]) -> MatrixPlatform:
    """The adapter for a validated [platforms.matrix] table; it joins the group's room when
    the group is bound to Matrix."""
    return MatrixPlatform(
        ctx.settings,
        ctx.environ[ctx.settings.access_token_env],
        room_id=ctx.group_chat_id or "",
    )


SPEC = PlatformSpec(
    adapter=MatrixPlatform, config_model=MatrixConfig, build=build, directory_column="matrix"
)
