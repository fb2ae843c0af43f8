"""Concurrent units of work: the outcome must equal some serial order of them."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import func, select

from storage import audit
from storage.db import Database
from storage.domain import Actor, acknowledge, close_notice
from storage.errors import NoticeClosed
from storage.models import Assignment, AuditEvent, Notice, Reply
from storage.types import Channel

from conftest import T0
from support import CLI, make_notice, seed_people


async def test_acks_racing_a_close_never_land_after_it(db: Database) -> None:
    await seed_people(db, T0)
    people = ["p001", "p002", "p003", "p004", "p005"]
    for round_ in range(40):
        notice_id = await make_notice(db, T0, title=f"race {round_}")
        now = T0 + dt.timedelta(minutes=round_)

        async def ack(pid: str, notice_id: int = notice_id, now: dt.datetime = now) -> str:
            actor = Actor(id=pid, roles=frozenset(), person_id=pid)
            try:
                async with db.transaction() as s:
                    await acknowledge(
                        s, notice_id, pid, channel=Channel.GROUP, actor=actor, now=now
                    )
            except NoticeClosed:
                return "refused"
            return "acked"

        async def close(notice_id: int = notice_id, now: dt.datetime = now) -> str:
            async with db.transaction() as s:
                await close_notice(s, notice_id, actor=CLI, now=now)
            return "closed"

        tasks = [ack(p) for p in people[: 2 + round_ % 4]]
        tasks.insert(round_ % len(tasks), close())
        results = await asyncio.gather(*tasks)
        async with db.read() as s:
            notice = await s.get(Notice, notice_id)
            assert notice is not None and notice.closed_at is not None
            acked = await s.scalar(
                select(func.count())
                .select_from(Assignment)
                .where(Assignment.notice_id == notice_id, Assignment.acknowledged_at.is_not(None))
            )
            outstanding = await s.scalar(
                select(func.count())
                .select_from(Assignment)
                .where(Assignment.notice_id == notice_id, Assignment.outstanding.is_(True))
            )
            replies = await s.scalar(
                select(func.count())
                .select_from(Reply)
                .join(Assignment, Assignment.id == Reply.assignment_id)
                .where(Assignment.notice_id == notice_id)
            )
            events = (
                await s.execute(
                    select(AuditEvent.action, AuditEvent.entity_id, AuditEvent.data).order_by(
                        AuditEvent.seq
                    )
                )
            ).all()
        mine = [
            action
            for action, entity_id, data in events
            if data.get("notice_id") == notice_id
            or (action == "notice.close" and entity_id == str(notice_id))
        ]
        # In the chain's (commit) order, no ack of this notice follows its close.
        close_at = max(i for i, a in enumerate(mine) if a == "notice.close")
        assert "assignment.acknowledge" not in mine[close_at + 1 :]
        assert results.count("closed") == 1
        assert acked == replies == results.count("acked")
        assert outstanding == 0
    async with db.read(snapshot=True) as s:
        assert (await audit.verify(s)).ok
