"""Status callbacks to the e-gov portal, derived from the audit trail.

Every state change, whatever channel it came through (a group reply, a button, an ack link,
the CLI, a phone ack), writes an audit event in its own transaction. The feed follows the
trail from a stored cursor and turns the events about portal notices into outbox rows for the
"egov" callback adapter, moving the cursor in the same transaction: each event becomes exactly
one delivery (its idempotency key is derived from the audit sequence number), nothing is
skipped after a crash, and the outbox retries with backoff until the portal answers 2xx.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import BotContext
from bot.platforms.base import TargetKind
from bot.wakeable import WakeableLoop
from storage import audit, outbox, settings
from storage.db import Database
from storage.models import Assignment, AuditEvent, BotSetting, Notice, Person
from storage.outbox import Target
from storage.types import UTC, AssignmentState, NoticeSource, NoticeState

log = logging.getLogger("workbot.egov")

PLATFORM = "egov"
PURPOSE = "egov_callback"
CURSOR = "egov_callback_seq"
BATCH = 200

ASSIGNMENT_EVENTS = {
    "assignment.acknowledge": "assignment.acknowledged",
    "assignment.progress": "assignment.progress",
    "assignment.done": "assignment.done",
}
NOTICE_END = {"notice.close", "notice.cancel"}


def delivery_id(key: str) -> str:
    """A stable, unique id for one delivery (the same key always gives the same id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"workbot:{key}"))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def enqueue_event(
    session: AsyncSession,
    ctx: BotContext,
    *,
    key: str,
    event: str,
    notice: Notice,
    person: Person | None,
    at: dt.datetime,
    data: Mapping[str, Any],
    now: dt.datetime,
) -> None:
    """Write one callback to the outbox (a repeated key is ignored)."""
    body = {
        "delivery_id": delivery_id(key),
        "event": event,
        "notice_id": notice.id,
        "external_id": notice.external_id,
        "person": None
        if person is None
        else {"id": person.id, "name": person.name, "department": person.department},
        "at": _iso(at),
        "data": dict(data),
    }
    await outbox.add(
        session,
        target=Target(PLATFORM, TargetKind.URL.value, ctx.config.egov.callback_url),
        payload={"text": event, "event": body},
        idempotency_key=f"egov:{key}"[:200],
        now=now,
        purpose=PURPOSE,
        notice_id=notice.id,
    )


def _assignment_data(action: str, data: Mapping[str, Any]) -> dict[str, Any]:
    keep = {
        "assignment.acknowledge": ("channel", "late"),
        "assignment.progress": ("percent", "text", "channel"),
        "assignment.done": ("measures", "results", "metrics", "channel"),
    }[action]
    return {k: data.get(k) for k in keep} | {"state": data.get("to")}


async def _all_acknowledged(session: AsyncSession, notice_id: int, at: dt.datetime) -> bool:
    """Everyone not excused had acknowledged by `at` (the feed may run behind the changes,
    so it judges each event as of its own time, not by the state now)."""
    waiting = await session.scalar(
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.notice_id == notice_id,
            Assignment.state != AssignmentState.EXCUSED,
            (Assignment.acknowledged_at.is_(None)) | (Assignment.acknowledged_at > at),
        )
    )
    return not waiting


async def translate(
    session: AsyncSession, ctx: BotContext, event: AuditEvent, now: dt.datetime
) -> int:
    """The callbacks one audit event causes; returns how many were enqueued."""
    data = event.data
    notice_id = data.get("notice_id") if event.entity == "assignment" else None
    if event.entity == "notice":
        notice_id = int(event.entity_id)
    if notice_id is None:
        return 0
    notice = await session.get(Notice, int(notice_id))
    if notice is None or notice.source is not NoticeSource.EGOV:
        return 0
    sent = 0
    if event.entity == "notice" and event.action in NOTICE_END:
        await enqueue_event(
            session,
            ctx,
            key=f"{event.seq}:notice.closed",
            event="notice.closed",
            notice=notice,
            person=None,
            at=event.ts,
            data={"state": data.get("to"), "reason": data.get("reason", "")},
            now=now,
        )
        return 1
    name = ASSIGNMENT_EVENTS.get(event.action)
    if name is None:
        return 0
    person = await session.get(Person, str(data.get("person_id")))
    acked = event.action == "assignment.acknowledge" or bool(data.get("implied_ack"))
    if event.action != "assignment.acknowledge" and data.get("implied_ack"):
        await enqueue_event(
            session,
            ctx,
            key=f"{event.seq}:assignment.acknowledged",
            event="assignment.acknowledged",
            notice=notice,
            person=person,
            at=event.ts,
            data={"channel": data.get("channel"), "late": data.get("late"), "implied": True},
            now=now,
        )
        sent += 1
    await enqueue_event(
        session,
        ctx,
        key=f"{event.seq}:{name}",
        event=name,
        notice=notice,
        person=person,
        at=event.ts,
        data=_assignment_data(event.action, data),
        now=now,
    )
    sent += 1
    if acked and await _all_acknowledged(session, notice.id, event.ts):
        await enqueue_event(
            session,
            ctx,
            key=f"notice:{notice.id}:all_acknowledged",  # once per notice
            event="notice.all_acknowledged",
            notice=notice,
            person=None,
            at=event.ts,
            data={},
            now=now,
        )
        sent += 1
    return sent


async def start_cursor(session: AsyncSession) -> None:
    """Before the first start with callbacks on, follow from here: the past is not replayed.
    (Run at start-up, before any request is served, so no new event can slip past.)"""
    last = await audit.last_seq(session)
    await settings.get_or_create(session, CURSOR, lambda: str(last))


async def follow(session: AsyncSession, ctx: BotContext, now: dt.datetime) -> int:
    """One step of the feed: the events after the cursor become callbacks; returns how many
    audit events were read (BATCH means there may be more)."""
    row = await settings.locked(session, CURSOR)
    if row is None:
        await start_cursor(session)
        return 0
    events = await audit.events_after(session, int(row.value), limit=BATCH)
    for event in events:
        await translate(session, ctx, event, now)
    if events:
        row.value = str(events[-1].seq)
    return len(events)


class CallbackFeed(WakeableLoop):
    """Follows the audit trail and writes the portal's callbacks to the outbox."""

    def __init__(self, db: Database, ctx: BotContext, *, clock: Any, max_idle: float) -> None:
        super().__init__(name="egov-callbacks", clock=clock, max_idle=max_idle, log=log)
        self.db = db
        self.ctx = ctx

    async def one_pass(self) -> float:
        """Translate what is new; go again at once while a full batch was read."""
        async with self.db.read() as session:
            cursor = await session.get(BotSetting, CURSOR)
            if cursor is not None and int(cursor.value) >= await audit.last_seq(session):
                return self.max_idle  # nothing new: no write transaction at all
        async with self.db.transaction() as session:
            read = await follow(session, self.ctx, self.clock())
        return 0.0 if read >= BATCH else self.max_idle


async def notice_overdue(
    session: AsyncSession, ctx: BotContext, notice_id: int, now: dt.datetime
) -> bool:
    """At a portal notice's deadline: tell the portal if anyone still owes it something."""
    notice = await session.get(Notice, notice_id)
    if (
        notice is None
        or notice.source is not NoticeSource.EGOV
        or notice.state is not NoticeState.OPEN
        or not ctx.config.egov.callback_url
    ):
        return False
    outstanding = int(
        await session.scalar(
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.notice_id == notice_id, Assignment.outstanding.is_(True))
        )
        or 0
    )
    if outstanding == 0:
        return False
    await enqueue_event(
        session,
        ctx,
        key=f"notice:{notice_id}:overdue",
        event="notice.overdue",
        notice=notice,
        person=None,
        at=notice.deadline or now,
        data={"outstanding": outstanding},
        now=now,
    )
    return True
