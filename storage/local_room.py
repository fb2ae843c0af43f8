"""The built-in local group's room: people's posts, the bot's posts and DMs, and edits.

Posts arrive in batches from the group-commit writer: a batch is one INSERT … RETURNING for
the room rows plus one for the inbound events of the posts that need processing, committed
(and fsync'd) once for the whole batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, or_, select, tuple_
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import InboundRecord, LocalMessage
from storage.outbox import insert_ignoring_conflicts
from storage.types import InboundStatus

BOT_SENDER = "bot"


@dataclass(slots=True)
class Post:
    """A person's message to the room (or, with direct, to the bot)."""

    sender: str
    text: str
    reply_to: int | None = None
    client_id: str | None = None
    direct: bool = False
    actionable: bool = True  # False: chatter from a known person, stored but not processed


@dataclass(slots=True)
class Stored:
    """Where a post ended up: its id, and whether it was a repeat of an earlier client id."""

    id: int
    duplicate: bool = False


InboundPayload = Callable[[int, Post], Mapping[str, Any]]


async def append_posts(
    session: AsyncSession, posts: Sequence[Post], *, now: dt.datetime, inbound: InboundPayload
) -> list[Stored]:
    """Store a batch of posts, and an inbound event for each one that needs processing."""
    results: list[Stored | None] = [None] * len(posts)
    existing: dict[tuple[str, str], int] = {}
    keyed = [(p.sender, p.client_id) for p in posts if p.client_id]
    if keyed:
        rows = await session.execute(
            select(LocalMessage.sender, LocalMessage.client_id, LocalMessage.id).where(
                tuple_(LocalMessage.sender, LocalMessage.client_id).in_(keyed)
            )
        )
        existing = {(s, c): i for s, c, i in rows.all() if c is not None}
    fresh: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    for index, post in enumerate(posts):
        key = (post.sender, post.client_id) if post.client_id else None
        if key is not None and key in existing:
            results[index] = Stored(existing[key], duplicate=True)
        elif key is not None and key in seen:
            continue  # the same client id twice in one batch: resolved to the first below
        else:
            if key is not None:
                seen[key] = index
            fresh.append(index)
    if fresh:
        ids = (
            await session.scalars(
                insert(LocalMessage).returning(LocalMessage.id, sort_by_parameter_order=True),
                [
                    {
                        "sender": posts[i].sender,
                        "to": BOT_SENDER if posts[i].direct else None,
                        "text": posts[i].text,
                        "card": None,
                        "reply_to": posts[i].reply_to,
                        "client_id": posts[i].client_id,
                        "ts": now,
                    }
                    for i in fresh
                ],
            )
        ).all()
        events = []
        for index, new_id in zip(fresh, ids, strict=True):
            results[index] = Stored(new_id)
            if posts[index].actionable:
                events.append(
                    {
                        "source": "local",
                        "event_id": f"msg:{new_id}",
                        "payload": dict(inbound(new_id, posts[index])),
                        "status": InboundStatus.RECEIVED,
                        "received_at": now,
                    }
                )
        if events:
            await session.execute(insert(InboundRecord), events)
    for index, post in enumerate(posts):
        if results[index] is None and post.client_id:
            first = results[seen[(post.sender, post.client_id)]]
            assert first is not None
            results[index] = Stored(first.id, duplicate=True)
    return [r for r in results if r is not None]


async def append_bot_message(
    session: AsyncSession,
    *,
    key: str,
    to: str | None,
    text: str,
    card: Mapping[str, Any] | None,
    reply_to: int | None,
    now: dt.datetime,
) -> tuple[LocalMessage, bool]:
    """Post as the bot; a repeated idempotency key returns the first message (created False)."""
    new_id = await session.scalar(
        insert_ignoring_conflicts(session, LocalMessage)
        .values(
            sender=BOT_SENDER,
            to=to,
            text=text,
            card=dict(card) if card is not None else None,
            reply_to=reply_to,
            idempotency_key=key,
            ts=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(LocalMessage.id)
    )
    if new_id is None:
        row = (
            await session.execute(select(LocalMessage).where(LocalMessage.idempotency_key == key))
        ).scalar_one()
        return row, False
    created = await session.get(LocalMessage, new_id)
    assert created is not None
    return created, True


async def edit_message(
    session: AsyncSession,
    message_id: int,
    *,
    text: str,
    card: Mapping[str, Any] | None,
    now: dt.datetime,
) -> LocalMessage | None:
    """Replace a bot message's content in place; None if there is no such bot message."""
    row = await session.get(LocalMessage, message_id, with_for_update=True)
    if row is None or row.sender != BOT_SENDER:
        return None
    row.text = text
    row.card = dict(card) if card is not None else None
    row.edited_at = now
    return row


async def list_messages(
    session: AsyncSession, *, after: int, limit: int, for_person: str | None = None
) -> list[LocalMessage]:
    """Messages after an id, oldest first: the group's, and with for_person also the DMs to
    or from that person (never anyone else's DMs)."""
    query = select(LocalMessage).where(LocalMessage.id > after)
    if for_person is None or for_person == BOT_SENDER:
        query = query.where(LocalMessage.to.is_(None))
    else:
        query = query.where(
            or_(
                LocalMessage.to.is_(None),
                LocalMessage.to == for_person,
                LocalMessage.sender == for_person,
            )
        )
    return list((await session.scalars(query.order_by(LocalMessage.id).limit(limit))).all())


async def get_message(session: AsyncSession, message_id: int) -> LocalMessage | None:
    """One message by id."""
    return await session.get(LocalMessage, message_id)


_SQLITE = sqlite_dialect.dialect()
_EVENT_COLUMNS = ("source", "event_id", "payload", "status", "received_at")


def _processors(table: Table, names: Sequence[str]) -> list[Callable[[Any], Any] | None]:
    """SQLAlchemy's own bind processors, so rows written here read back exactly alike."""
    return [table.c[name].type.bind_processor(_SQLITE) for name in names]


def _bind(
    processors: Sequence[Callable[[Any], Any] | None], values: Sequence[Any]
) -> tuple[Any, ...]:
    return tuple(v if p is None else p(v) for p, v in zip(processors, values, strict=True))


class SqliteAppender:
    """Appends batches of posts through one plain sqlite3 connection, from one thread.

    This is the SQLite fast path of the group-commit writer: a batch is one BEGIN IMMEDIATE,
    two executemany() calls and one COMMIT (one fsync), with no ORM or driver round-trips per
    row. Ids are assigned inside the write lock (max(id) + 1 …), so they are the ones SQLite
    would have chosen; everything else is bound with SQLAlchemy's own processors.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        (self._ts,) = _processors(LocalMessage.__table__, ("ts",))  # type: ignore[arg-type]
        self._event = _processors(InboundRecord.__table__, _EVENT_COLUMNS)  # type: ignore[arg-type]
        self._insert_post = (
            'INSERT INTO local_message (id, sender, "to", text, reply_to, client_id, ts) '
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._insert_event = (
            "INSERT INTO inbound_event (source, event_id, payload, status, received_at) "
            "VALUES (?, ?, ?, ?, ?)"
        )

    def append(
        self, posts: Sequence[Post], *, now: dt.datetime, inbound: InboundPayload
    ) -> list[Stored]:
        """Store a batch (same contract as append_posts); runs in the writer's thread."""
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = self._append(conn, posts, now, inbound)
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) can leave the transaction open.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError:
            # Locked, full or failing: start the next batch on a fresh connection.
            self.close()
            raise
        return results

    def _append(
        self,
        conn: sqlite3.Connection,
        posts: Sequence[Post],
        now: dt.datetime,
        inbound: InboundPayload,
    ) -> list[Stored]:
        existing: dict[tuple[str, str], int] = {}
        keyed = [(p.sender, p.client_id) for p in posts if p.client_id]
        if keyed:
            for sender, client_id in set(keyed):
                row = conn.execute(
                    "SELECT id FROM local_message WHERE sender = ? AND client_id = ?",
                    (sender, client_id),
                ).fetchone()
                if row is not None:
                    existing[(sender, str(client_id))] = int(row[0])
        (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM local_message").fetchone()
        ts = now if self._ts is None else self._ts(now)  # one timestamp for the whole batch
        results: list[Stored] = []
        rows: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for post in posts:
            key = (post.sender, post.client_id) if post.client_id else None
            if key is not None and key in existing:
                results.append(Stored(existing[key], duplicate=True))
                continue
            last += 1
            if key is not None:
                existing[key] = last
            results.append(Stored(last))
            # Text and integer columns need no conversion on SQLite; the timestamp is bound once.
            rows.append(
                (
                    last,
                    post.sender,
                    BOT_SENDER if post.direct else None,
                    post.text,
                    post.reply_to,
                    post.client_id,
                    ts,
                )
            )
            if post.actionable:
                events.append(
                    _bind(
                        self._event,
                        (
                            "local",
                            f"msg:{last}",
                            dict(inbound(last, post)),
                            InboundStatus.RECEIVED,
                            now,
                        ),
                    )
                )
        conn.executemany(self._insert_post, rows)
        if events:
            conn.executemany(self._insert_event, events)
        return results

    def close(self) -> None:
        """Close the connection (from the writer's thread)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
