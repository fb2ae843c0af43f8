"""The append-only, hash-chained audit trail and its verification."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database
from storage.models import AuditEvent, AuditHead
from storage.types import UTC

GENESIS = "0" * 64
HEAD_ID = 1


def jsonable(value: Any) -> Any:
    """Turn a value into plain JSON data (datetimes as UTC ISO strings, enums as values)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def canonical(
    *,
    seq: int,
    ts: dt.datetime,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    data: Mapping[str, Any],
) -> bytes:
    """The canonical JSON bytes of an audit row (everything but its hashes)."""
    doc = {
        "seq": seq,
        "ts": jsonable(ts),
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "data": jsonable(data),
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def chain_hash(prev_hash: str, payload: bytes) -> str:
    """sha256 over the previous hash followed by the row's canonical JSON."""
    return hashlib.sha256(prev_hash.encode("ascii") + payload).hexdigest()


def _row_hash(prev_hash: str, row: AuditEvent) -> str:
    """The hash a row must carry: chained to the previous hash over its canonical JSON."""
    payload = canonical(
        seq=row.seq,
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        entity=row.entity,
        entity_id=row.entity_id,
        data=row.data,
    )
    return chain_hash(prev_hash, payload)


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | int,
    data: Mapping[str, Any],
    now: dt.datetime,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction (locks the chain head)."""
    head = (
        await session.execute(
            select(AuditHead)
            .where(AuditHead.id == HEAD_ID)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    event = AuditEvent(
        seq=head.seq + 1,
        ts=now,
        actor=actor,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        data=jsonable(data),
        prev_hash=head.hash,
    )
    event.hash = _row_hash(head.hash, event)
    session.add(event)
    head.seq = event.seq
    head.hash = event.hash
    await session.flush()
    # Feeds that follow the trail look again after the commit: in this process, and on
    # PostgreSQL in every worker (the CLI is another process). The topic names the action,
    # so a feed is woken only by what it follows (a new notice wakes none of them).
    await Database.notify(session, topic(action))
    return event


def topic(action: str) -> str:
    """The wake-up topic an audit event of this action raises after its commit."""
    return f"audit.{action}"


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking the audit chain."""

    checked: int
    seq: int | None = None  # the first bad row
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain is intact (no problem was found)."""
        return self.problem is None


async def verify(session: AsyncSession) -> VerifyResult:
    """Walk the chain in order and report the first altered, missing or reordered row (in a
    `db.read(snapshot=True)` session: the chain is streamed, and must not move meanwhile)."""
    expected_seq = 1
    prev = GENESIS
    checked = 0
    result = await session.stream_scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=2000)
    )
    async for row in result:
        if row.seq != expected_seq:
            return VerifyResult(
                checked, expected_seq, f"row {expected_seq} is missing (next is {row.seq})"
            )
        if row.prev_hash != prev:
            return VerifyResult(checked, row.seq, f"row {row.seq} does not link to its predecessor")
        if _row_hash(prev, row) != row.hash:
            return VerifyResult(checked, row.seq, f"row {row.seq} was altered")
        prev = row.hash
        expected_seq += 1
        checked += 1
    head = (await session.execute(select(AuditHead).where(AuditHead.id == HEAD_ID))).scalar_one()
    if head.seq != checked or head.hash != prev:
        return VerifyResult(
            checked,
            head.seq,
            f"the chain ends at row {checked} but its head records row {head.seq}"
            " (rows were deleted from the end)",
        )
    return VerifyResult(checked)


async def events_after(session: AsyncSession, seq: int, *, limit: int = 200) -> list[AuditEvent]:
    """The events after a sequence number, in order (for feeds that follow the trail)."""
    return list(
        (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq).limit(limit)
            )
        ).all()
    )


async def last_seq(session: AsyncSession) -> int:
    """The sequence number of the newest event (0 when there is none)."""
    head = await session.get(AuditHead, HEAD_ID)
    return int(head.seq) if head is not None else 0
