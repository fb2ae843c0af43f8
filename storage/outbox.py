"""The transactional outbox: enqueue in the cause's transaction, claim, record the result.

Per-target order: only the oldest pending row of a target can be claimed, so a target's
messages leave in the order they were written, whatever the number of workers.
Claims are leases: a worker that dies leaves its rows to be claimed again when the lease
expires (at most the in-flight rows can then be sent twice; see docs/scaling.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, Unpack

from sqlalchemy import and_, case, exists, func, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage import audit
from storage import db as db_module
from storage.db import Database
from storage.errors import InvalidValue
from storage.lease import Leases
from storage.models import NoticeMessage, OutboxMessage
from storage.types import OutboxState, UTCDateTime

WAKE_CHANNEL = db_module.WAKE_CHANNEL

LEASES = Leases(
    OutboxMessage,
    OutboxMessage.state,
    OutboxState.PENDING,
    OutboxMessage.claimed_by,
    OutboxMessage.claimed_until,
)


@dataclass(frozen=True)
class Target:
    """Where a message goes: platform, kind (chat, person, url) and address."""

    platform: str
    kind: str
    address: str

    @property
    def key(self) -> str:
        """The per-target ordering and rate-limit key."""
        return f"{self.platform}:{self.kind}:{self.address}"


def insert_ignoring_conflicts(
    session: AsyncSession, table: type[Any]
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can do nothing on a unique conflict, in the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def notify_wake(session: AsyncSession, what: str) -> None:
    """Wake the delivery or scheduler loops when this commits: in-process, and on
    PostgreSQL in every worker (NOTIFY is delivered at commit, and not at all on rollback).
    One NOTIFY per topic and transaction is enough."""
    await Database.notify(session, what)


async def add(
    session: AsyncSession,
    *,
    target: Target,
    payload: Mapping[str, Any],
    idempotency_key: str,
    now: dt.datetime,
    purpose: str = "message",
    notice_id: int | None = None,
    person_id: str | None = None,
    edit_of_id: int | None = None,
    not_before: dt.datetime | None = None,
) -> int | None:
    """Write a message to send, in the caller's transaction; the new row's id, or None when
    the key was already used (the first message stands)."""
    if not idempotency_key or len(idempotency_key) > 200:
        raise InvalidValue("idempotency_key", "must be 1 to 200 characters", why="key_length")
    new_id: int | None = await session.scalar(
        insert_ignoring_conflicts(session, OutboxMessage)
        .values(
            idempotency_key=idempotency_key,
            platform=target.platform,
            target_kind=target.kind,
            target=target.address,
            target_key=target.key,
            payload=dict(payload),
            purpose=purpose,
            notice_id=notice_id,
            person_id=person_id,
            edit_of_id=edit_of_id,
            state=OutboxState.PENDING,
            attempts=0,
            next_attempt_at=max(now, not_before) if not_before else now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(OutboxMessage.id)
    )
    if new_id is not None:
        await notify_wake(session, "outbox")
    return new_id


class NewMessage(TypedDict):
    """What add() and enqueue() take: a message to a target, unique by its idempotency key."""

    target: Target
    payload: Mapping[str, Any]
    idempotency_key: str
    now: dt.datetime
    purpose: NotRequired[str]
    notice_id: NotRequired[int | None]
    person_id: NotRequired[str | None]
    edit_of_id: NotRequired[int | None]
    not_before: NotRequired[dt.datetime | None]


async def enqueue(session: AsyncSession, **message: Unpack[NewMessage]) -> OutboxMessage:
    """Write a message to send (see add); the row (the first one, for a repeated key)."""
    await add(session, **message)
    return (
        await session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.idempotency_key == message["idempotency_key"])
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


def _head_of_line() -> Any:
    """No older row of the same target is pending (only a target's oldest row can leave)."""
    earlier = aliased(OutboxMessage)
    return ~exists().where(
        earlier.target_key == OutboxMessage.target_key,
        earlier.state == OutboxState.PENDING,
        earlier.id < OutboxMessage.id,
    )


async def claim_due(
    session: AsyncSession,
    *,
    worker: str,
    now: dt.datetime,
    lease: dt.timedelta,
    limit: int,
) -> list[OutboxMessage]:
    """Lease up to `limit` due rows, each the oldest pending row of its target."""
    due = and_(OutboxMessage.next_attempt_at <= now, _head_of_line())
    order = (OutboxMessage.next_attempt_at, OutboxMessage.id)
    rows = await LEASES.claim(
        session, due=due, order_by=order, worker=worker, now=now, lease=lease, limit=limit
    )
    await session.flush()
    return rows


async def next_due_at(session: AsyncSession) -> dt.datetime | None:
    """When the next row becomes claimable: the earliest head-of-line row's due time."""
    ready_at = case(
        (OutboxMessage.claimed_until > OutboxMessage.next_attempt_at, OutboxMessage.claimed_until),
        else_=OutboxMessage.next_attempt_at,
    )
    stmt = select(type_coerce(func.min(ready_at), UTCDateTime())).where(
        OutboxMessage.state == OutboxState.PENDING, _head_of_line()
    )
    value: dt.datetime | None = await session.scalar(stmt)
    return value


async def mark_sent(
    session: AsyncSession,
    message_id: int,
    *,
    worker: str,
    platform_message_id: str,
    now: dt.datetime,
) -> bool:
    """Record a successful send; False if the lease was lost (another worker owns it now)."""
    if (row := await LEASES.owned(session, message_id, worker)) is None:
        return False
    row.state = OutboxState.SENT
    row.platform_message_id = platform_message_id
    row.sent_at = now
    row.attempts += 1
    row.last_error = None
    row.claimed_until = None  # claimed_by stays: it records which worker sent the row
    if row.notice_id is not None and row.edit_of_id is None:
        # Remember which platform message belongs to which notice, so that a reply to it or a
        # quote of it (in the group or in a DM) can be resolved to the notice.
        await session.execute(
            insert_ignoring_conflicts(session, NoticeMessage)
            .values(
                notice_id=row.notice_id,
                platform=row.platform,
                chat_id=row.target,
                message_id=platform_message_id,
                person_id=row.person_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["platform", "chat_id", "message_id"])
        )
    return True


async def defer(session: AsyncSession, message_id: int, *, worker: str, until: dt.datetime) -> bool:
    """Put a claimed row back until a rate-limit window opens (not counted as an attempt)."""
    if (row := await LEASES.owned(session, message_id, worker)) is None:
        return False
    row.next_attempt_at = until
    LEASES.release(row)
    return True


async def mark_failed(
    session: AsyncSession,
    message_id: int,
    *,
    worker: str,
    error: str,
    now: dt.datetime,
    retry_at: dt.datetime | None,
) -> OutboxState | None:
    """Record a failed attempt: retry at retry_at, or dead-letter it when retry_at is None."""
    if (row := await LEASES.owned(session, message_id, worker)) is None:
        return None
    row.attempts += 1
    row.last_error = error[:2000]
    LEASES.release(row)
    if retry_at is None:
        row.state = OutboxState.DEAD
        await audit.append(
            session,
            actor=f"worker:{worker}",
            action="outbox.dead",
            entity="outbox",
            entity_id=row.id,
            data={"attempts": row.attempts, "error": row.last_error, "target": row.target_key},
            now=now,
        )
    else:
        row.next_attempt_at = retry_at
    return row.state


async def retry_dead(
    session: AsyncSession, message_id: int, *, actor: str, now: dt.datetime
) -> OutboxMessage:
    """Send a dead letter again: back to pending, attempts reset, due now."""
    row = await session.get(OutboxMessage, message_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise InvalidValue("id", f"no outbox message {message_id}", why="no_outbox", id=message_id)
    if row.state is not OutboxState.DEAD:
        raise InvalidValue(
            "id",
            f"outbox message {message_id} is {row.state.value}, not dead",
            why="not_dead",
            id=message_id,
            outbox_state=row.state.value,
        )
    row.state = OutboxState.PENDING
    row.attempts = 0
    row.next_attempt_at = now
    LEASES.release(row)
    await audit.append(
        session,
        actor=actor,
        action="outbox.retry",
        entity="outbox",
        entity_id=row.id,
        data={"target": row.target_key, "last_error": row.last_error},
        now=now,
    )
    await notify_wake(session, "outbox")
    return row


async def original_message_id(
    session: AsyncSession, row: OutboxMessage
) -> tuple[OutboxState, str | None]:
    """For an edit: the state and platform message id of the message it edits."""
    if row.edit_of_id is None:
        raise InvalidValue("edit_of_id", "this row is not an edit", why="not_an_edit")
    original = await session.get(OutboxMessage, row.edit_of_id)
    if original is None:
        return OutboxState.DEAD, None
    return original.state, original.platform_message_id


async def counts(session: AsyncSession) -> dict[str, int]:
    """Rows per state."""
    result = {s.value: 0 for s in OutboxState}
    for state, n in (
        await session.execute(
            select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
        )
    ).all():
        result[state.value] = int(n)
    return result


async def list_messages(
    session: AsyncSession, *, state: OutboxState | None = None, limit: int = 50
) -> list[OutboxMessage]:
    """Rows, newest first, optionally of one state."""
    stmt = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(OutboxMessage.state == state)
    return list((await session.scalars(stmt)).all())


async def release_claims(session: AsyncSession, *, worker: str) -> int:
    """Give back every lease a worker holds (graceful shutdown)."""
    return await LEASES.release_all(session, worker=worker)


async def by_key(session: AsyncSession, idempotency_key: str) -> OutboxMessage | None:
    """The message written with this key, if any."""
    return (
        await session.execute(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == idempotency_key)
        )
    ).scalar_one_or_none()


async def coalesce_edit(
    session: AsyncSession,
    original: OutboxMessage,
    payload: Mapping[str, Any],
    *,
    key_prefix: str,
    now: dt.datetime,
    purpose: str,
    notice_id: int | None = None,
) -> OutboxMessage:
    """An edit of `original` with this content. While an earlier edit still waits to be sent
    (pending, unclaimed), its content is replaced instead: a burst of changes costs one edit.
    A new edit's key is `key_prefix` and the count of edits so far, plus one."""
    waiting = (
        await session.execute(
            select(OutboxMessage)
            .where(
                OutboxMessage.edit_of_id == original.id,
                OutboxMessage.state == OutboxState.PENDING,
                OutboxMessage.claimed_by.is_(None),
            )
            .order_by(OutboxMessage.id.desc())
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).scalar_one_or_none()
    if waiting is not None:
        waiting.payload = dict(payload)
        return waiting
    edits = await session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.edit_of_id == original.id)
    )
    return await enqueue(
        session,
        target=Target(original.platform, original.target_kind, original.target),
        payload=payload,
        idempotency_key=f"{key_prefix}{int(edits or 0) + 1}",
        now=now,
        purpose=purpose,
        notice_id=notice_id,
        edit_of_id=original.id,
    )


async def count_for_person(
    session: AsyncSession, person_id: str, *, purpose: str, since: dt.datetime
) -> int:
    """How many messages of one purpose were written for a person since a moment."""
    return int(
        await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.person_id == person_id,
                OutboxMessage.purpose == purpose,
                OutboxMessage.created_at >= since,
            )
        )
        or 0
    )
