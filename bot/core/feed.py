"""What follows from the audit trail: the group's tally, and the portal's status callbacks.

Every state change, whatever channel it came through (a group reply, a button, an ack link,
the CLI, a phone ack, the portal), writes an audit event in its own transaction. The feed
follows the trail from a stored cursor, moving the cursor in the same transaction as what it
writes:

- the tally: each notice whose assignments changed gets one tally edit of its group post
  (coalesced with an edit still waiting), so no surface can forget to refresh it;
- the portal's callbacks: the events about portal notices become outbox rows for the "egov"
  callback adapter. Each event becomes exactly one delivery (its idempotency key is derived
  from the audit sequence number), nothing is skipped after a crash, and the outbox retries
  with backoff until the portal answers 2xx.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from bot.core import notices
from bot.core.clock import Clock
from bot.core.context import BotContext
from bot.core.loop import WakeableLoop
from bot.core.platform import OutboundMessage, TargetKind
from storage import audit, directory, lookups, outbox, settings
from storage.db import Database, Session
from storage.models import AuditEvent, Notice, Person
from storage.outbox import Target
from storage.types import UTC, NoticeSource, NoticeState

log = logging.getLogger("workbot.egov")

PLATFORM = "egov"
PURPOSE = "egov_callback"
CURSOR = "audit_feed_seq"
LEGACY_CURSOR = "egov_callback_seq"  # the cursor of the portal-only feed before 0.2
BATCH = 200

ASSIGNMENT_EVENTS = {
    "assignment.acknowledge": "assignment.acknowledged",
    "assignment.progress": "assignment.progress",
    "assignment.done": "assignment.done",
}
NOTICE_END = {"notice.close", "notice.cancel"}
CHECKPOINT_EVENT = "audit.checkpoint"


def delivery_id(key: str) -> str:
    """A stable, unique id for one delivery (the same key always gives the same id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"workbot:{key}"))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def enqueue_event(
    session: Session,
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
        payload=OutboundMessage(text=event, document=body).to_payload(),
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


async def translate(session: Session, ctx: BotContext, event: AuditEvent, now: dt.datetime) -> int:
    """The callbacks one audit event causes; returns how many were enqueued."""
    data = event.data
    notice_id = notice_of(event)
    if notice_id is None:
        return 0
    notice = await lookups.get_notice(session, notice_id)
    if notice is None or notice.source is not NoticeSource.EGOV:
        return 0

    async def callback(
        name: str, person: Person | None, body: Mapping[str, Any], *, key: str = ""
    ) -> None:
        """One callback as of the event, keyed by its sequence number unless `key` is given."""
        await enqueue_event(
            session,
            ctx,
            key=key or f"{event.seq}:{name}",
            event=name,
            notice=notice,
            person=person,
            at=event.ts,
            data=body,
            now=now,
        )

    if event.entity == "notice" and event.action in NOTICE_END:
        await callback(
            "notice.closed", None, {"state": data.get("to"), "reason": data.get("reason", "")}
        )
        return 1
    name = ASSIGNMENT_EVENTS.get(event.action)
    if name is None:
        return 0
    person = await directory.get_person(session, str(data.get("person_id")))
    acked = event.action == "assignment.acknowledge" or bool(data.get("implied_ack"))
    sent = 0
    if event.action != "assignment.acknowledge" and data.get("implied_ack"):
        implied = {"channel": data.get("channel"), "late": data.get("late"), "implied": True}
        await callback("assignment.acknowledged", person, implied)
        sent += 1
    await callback(name, person, _assignment_data(event.action, data))
    sent += 1
    # The feed may run behind the changes: judge each event as of its own time.
    if acked and await lookups.all_acknowledged_by(session, notice.id, event.ts):
        once = f"notice:{notice.id}:all_acknowledged"  # once per notice
        await callback("notice.all_acknowledged", None, {}, key=once)
        sent += 1
    return sent


TALLY_ACTIONS = frozenset(
    {
        "assignment.acknowledge",
        "assignment.progress",
        "assignment.done",
        "assignment.excuse",
        "assignment.return",
        "assignment.verify",
        *NOTICE_END,
    }
)


# What wakes the feed: the topics of the actions it follows, and "audit" (anything may have
# changed: another process committed on SQLite, seen through PRAGMA data_version).
WAKE_TOPICS = frozenset(
    {"audit", *(audit.topic(action) for action in TALLY_ACTIONS | ASSIGNMENT_EVENTS.keys())}
)


def notice_of(event: AuditEvent) -> int | None:
    """The notice an audit event is about, if any."""
    if event.entity == "notice":
        return int(event.entity_id)
    if event.entity == "assignment":
        value = event.data.get("notice_id")
        return int(value) if value is not None else None
    return None


def wants(event: AuditEvent, *, callbacks: bool) -> bool:
    """Whether the feed has anything to do for this event."""
    if event.action in TALLY_ACTIONS:
        return True
    return callbacks and event.action in ASSIGNMENT_EVENTS


async def start_cursor(session: Session) -> None:
    """Before the first start, follow from here: the past is not replayed. A database that
    followed only the portal's callbacks before goes on from where that feed stopped.
    (Run at start-up, before any request is served, so no new event can slip past.)"""
    earlier = await settings.get(session, LEGACY_CURSOR)
    start = earlier if earlier is not None else str(await audit.last_seq(session))
    await settings.get_or_create(session, CURSOR, lambda: start)


async def follow(session: Session, ctx: BotContext, now: dt.datetime, *, callbacks: bool) -> int:
    """One step of the feed: the events after the cursor become tally edits (one per notice,
    coalesced) and, when callbacks are on, the portal's callbacks; returns how many audit
    events were read (BATCH means there may be more)."""
    row = await settings.locked(session, CURSOR)
    if row is None:
        await start_cursor(session)
        return 0
    events = await audit.events_after(session, int(row.value), limit=BATCH)
    stale: dict[int, None] = {}
    for event in events:
        if callbacks:
            await translate(session, ctx, event, now)
        if event.action in TALLY_ACTIONS:
            notice_id = notice_of(event)
            if notice_id is not None:
                stale[notice_id] = None
    for notice_id in stale:
        await notices.refresh_tally(session, ctx, notice_id, now=now)
    if events:
        row.value = str(events[-1].seq)
    return len(events)


class AuditFeed(WakeableLoop):
    """Follows the audit trail: every state change refreshes its notice's tally in the group
    (whatever surface made it: chat, button, ack link, CLI, portal) and, when the portal's
    callbacks are on, becomes their outbox rows."""

    def __init__(
        self, db: Database, ctx: BotContext, *, clock: Clock, max_idle: float, callbacks: bool
    ) -> None:
        super().__init__(name="audit-feed", clock=clock, max_idle=max_idle, log=log)
        self.db = db
        self.ctx = ctx
        self.callbacks = callbacks
        self._seen = 0  # events up to here were read and needed nothing (not yet persisted)

    async def one_pass(self) -> float:
        """Act on what is new; go again at once while a full batch was read. Events that
        need nothing only move an in-memory mark: no write transaction for them."""
        async with self.db.read() as session:
            cursor = max(self._seen, int(await settings.get(session, CURSOR) or 0))
            if cursor >= await audit.last_seq(session):
                return self.max_idle
            events = await audit.events_after(session, cursor, limit=BATCH)
        if not any(wants(event, callbacks=self.callbacks) for event in events):
            if events:
                self._seen = events[-1].seq
            return 0.0 if len(events) >= BATCH else self.max_idle
        async with self.db.transaction() as session:
            read = await follow(session, self.ctx, self.clock(), callbacks=self.callbacks)
        self._seen = 0
        return 0.0 if read >= BATCH else self.max_idle


async def notice_overdue(
    session: Session, ctx: BotContext, notice_id: int, now: dt.datetime
) -> bool:
    """At a portal notice's deadline: tell the portal if anyone still owes it something."""
    notice = await lookups.get_notice(session, notice_id)
    if (
        notice is None
        or notice.source is not NoticeSource.EGOV
        or notice.state is not NoticeState.OPEN
        or not ctx.config.egov.callback_url
    ):
        return False
    outstanding = await lookups.outstanding_count(session, notice_id)
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


async def audit_checkpoint(
    session: Session, ctx: BotContext, *, day: dt.date, now: dt.datetime
) -> bool:
    """The day's `audit.checkpoint` callback: the chain's newest row number and hash, kept by
    the portal outside workbot's database, so that `workbot audit verify --checkpoint
    SEQ:HASH` can later prove the chain up to that row unchanged. At most one per day (its
    outbox key names the day); none while the callbacks are off or the chain is empty."""
    if not ctx.config.egov.callback_url:
        return False
    tip = await audit.head(session)
    if tip.seq == 0:
        return False
    key = f"{CHECKPOINT_EVENT}:{day.isoformat()}"
    body = {
        "delivery_id": delivery_id(key),
        "event": CHECKPOINT_EVENT,
        "notice_id": None,
        "external_id": None,
        "person": None,
        "at": _iso(now),
        "data": {
            "date": day.isoformat(),
            "seq": tip.seq,
            "hash": tip.hash,
            "scheme": audit.SCHEME_KEYED if tip.keyed else audit.SCHEME_PLAIN,
            "checkpoint": f"{tip.seq}:{tip.hash}",
        },
    }
    new = await outbox.add(
        session,
        target=Target(PLATFORM, TargetKind.URL.value, ctx.config.egov.callback_url),
        payload=OutboundMessage(text=CHECKPOINT_EVENT, document=body).to_payload(),
        idempotency_key=f"egov:{key}",
        now=now,
        purpose=PURPOSE,
    )
    return new is not None
