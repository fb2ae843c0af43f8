"""The built-in local group's durable room: posts group-committed, the bot's posts and edits
idempotent by outbox key, actionable posts handed to the chat intake (the RoomBackend the
local adapter serves)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bot.core.clock import Clock
from bot.core.group_commit import GroupCommit, ThreadedGroupCommit
from bot.core.intake import ChatIntake, event_to_payload
from bot.core.platform import ButtonAction, InboundMessage, Sender
from bot.core.room import PostAction, PostMessage, Refused, RoomHub, message_json
from storage import directory, local_room, readable
from storage.db import Database, Session
from storage.models import LocalMessage


class LocalRoom:
    """The local group's storage and processing (the RoomBackend the local platform serves)."""

    def __init__(
        self,
        db: Database,
        hub: RoomHub,
        *,
        chat_id: str,
        bot_names: Sequence[str],
        clock: Clock,
        actionable: Callable[[str], bool],
    ) -> None:
        self.db = db
        self.intake: ChatIntake | None = None  # attached once the chat core exists
        self.actionable = actionable
        self.hub = hub
        self.chat_id = chat_id
        self.bot_names = tuple(bot_names)
        self.clock = clock
        self.names: dict[str, str] = {}  # person id -> name, for the page (a cache)
        self.writer: GroupCommit[local_room.Post, local_room.Stored]
        if db.is_sqlite:
            appender = local_room.SqliteAppender(db.sqlite_connection)
            self.writer = ThreadedGroupCommit(
                db,
                lambda posts: appender.append(posts, now=clock(), inbound=self._inbound_payload),
                close=appender.close,
                committed=self._committed,
            )
        else:
            self.writer = GroupCommit(db, self._write, committed=self._committed)

    async def start(self) -> None:
        """Load the name cache and start the writer."""
        await self._load_names()
        self.writer.start()

    async def stop(self) -> None:
        """Write what is queued and stop."""
        await self.writer.stop()

    async def _load_names(self) -> None:
        async with self.db.read() as session:
            self.names = await directory.names(session)

    def _inbound_payload(self, message_id: int, post: local_room.Post) -> dict[str, Any]:
        event = InboundMessage(
            platform="local",
            event_id=f"msg:{message_id}",
            chat_id=self.chat_id,
            sender=Sender(post.sender, self.names.get(post.sender, "")),
            text=post.text,
            is_direct=post.direct,
            message_id=str(message_id),
            reply_to=str(post.reply_to) if post.reply_to is not None else None,
        )
        return event_to_payload(event)

    async def _write(
        self, session: Session, posts: list[local_room.Post]
    ) -> list[local_room.Stored]:
        return await local_room.append_posts(
            session, posts, now=self.clock(), inbound=self._inbound_payload
        )

    def _committed(self, posts: list[local_room.Post], stored: Sequence[local_room.Stored]) -> None:
        now = self.clock()
        watched = self.hub.subscribers > 0
        for post, result in zip(posts, stored, strict=True):
            if result.duplicate:
                continue
            if post.actionable and self.intake is not None:
                self.intake.spawn(
                    "local", f"msg:{result.id}", self._inbound_payload(result.id, post)
                )
            if not watched:
                continue
            self.hub.publish(
                "message",
                message_json(
                    id=result.id,
                    sender=post.sender,
                    sender_name=self.names.get(post.sender, post.sender),
                    text=post.text,
                    card=None,
                    reply_to=post.reply_to,
                    to="bot" if post.direct else None,
                    ts=now,
                    edited_at=None,
                ),
            )

    async def post(self, body: PostMessage) -> tuple[int, bool]:
        """Store a post durably (group commit); chatter from known people is not processed.

        Refused before anything is stored: a `name` with a character that hides or reorders
        text, and a new sender whose name (or, without one, id) reads as a name or an id the
        directory already has."""
        try:
            name = readable.clean(body.name) if body.name is not None else ""
        except readable.UnsafeText as exc:
            raise Refused(
                "unsafe_characters",
                "name",
                "local.unsafe_name",
                char=exc.code_point,
                char_name=exc.char_name,
            ) from None
        known = body.sender in self.names
        if not known:
            await self._load_names()  # someone imported since the cache was filled is known
            known = body.sender in self.names
        if not known:
            shown = name or body.sender
            if readable.taken(shown, [*self.names.values(), *self.names]):
                raise Refused("name_taken", "name", "local.name_taken", name=shown)
            if name:
                self.names.setdefault(body.sender, name)
        # Chatter from known people is stored in the room but not processed.
        actionable = not known or body.to is not None or self.actionable(body.text)
        stored = await self.writer.submit(
            local_room.Post(
                sender=body.sender,
                text=body.text,
                reply_to=body.reply_to,
                client_id=body.client_id,
                direct=body.to == "bot",
                actionable=actionable,
            )
        )
        if not known:
            await self._load_names()
        return stored.id, stored.duplicate

    async def act(self, body: PostAction) -> str:
        """A button click on a room message: stored, then processed before answering."""
        async with self.db.read() as session:
            message = await local_room.get_message(session, body.message_id)
        if message is None:
            return "unknown_message"
        value = body.action
        if value == "ack":
            buttons = (message.card or {}).get("buttons", [])
            value = next(
                (str(b["value"]) for b in buttons if str(b.get("value", "")).startswith("ack:")),
                value,
            )
        event = ButtonAction(
            platform="local",
            event_id=f"action:{uuid.uuid4().hex}",
            chat_id=self.chat_id,
            sender=Sender(body.sender, self.names.get(body.sender, "")),
            value=value,
            message_id=str(body.message_id),
        )
        if self.intake is None:
            return "unavailable"
        done = await self.intake.accept_and_wait(event)
        return "processed" if done else "accepted"

    async def messages(
        self, *, after: int, limit: int, for_person: str | None
    ) -> list[dict[str, Any]]:
        """Room messages after an id, with sender names."""
        async with self.db.read() as session:
            rows = await local_room.list_messages(
                session, after=after, limit=limit, for_person=for_person
            )
        return [self._json(row) for row in rows]

    def _json(self, row: LocalMessage) -> dict[str, Any]:
        return message_json(
            id=row.id,
            sender=row.sender,
            sender_name="workbot"
            if row.sender == "bot"
            else self.names.get(row.sender, row.sender),
            text=row.text,
            card=row.card,
            reply_to=row.reply_to,
            to=row.to,
            ts=row.ts,
            edited_at=row.edited_at,
        )

    async def directory(self) -> list[dict[str, Any]]:
        """Everyone in the directory, for the page's "who are you" picker."""
        async with self.db.read() as session:
            people = await directory.list_people(session)
        self.names = {p.id: p.name for p in people}
        return [
            {"id": p.id, "name": p.name, "department": p.department, "roles": list(p.roles)}
            for p in people
        ]

    async def bot_post(
        self, *, key: str, to: str | None, payload: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Post as the bot (idempotent by the outbox key)."""
        reply_to = payload.get("reply_to")
        async with self.db.transaction() as session:
            row, created = await local_room.append_bot_message(
                session,
                key=key,
                to=to,
                text=str(payload.get("text", "")),
                card=payload.get("card"),
                reply_to=int(reply_to)
                if isinstance(reply_to, str) and reply_to.isdigit()
                else None,
                now=self.clock(),
            )
            return self._json(row), created

    async def bot_edit(self, message_id: int, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        """Edit a bot message in place."""
        async with self.db.transaction() as session:
            row = await local_room.edit_message(
                session,
                message_id,
                text=str(payload.get("text", "")),
                card=payload.get("card"),
                now=self.clock(),
            )
            return self._json(row) if row is not None else None
