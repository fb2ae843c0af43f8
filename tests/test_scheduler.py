"""Reminders, escalation and the digest, with a controllable clock (no sleeps)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.config import validate_config
from bot.core.context import BotContext
from bot.core.notices import publish_notice, refresh_tally
from bot.platforms.registry import capabilities_of
from bot.scheduler import tasks
from bot.scheduler.runner import Scheduler
from storage import jobs, outbox
from storage.db import Database
from storage.domain import Actor, Audience, NoticeDraft, acknowledge
from storage.models import Job, OutboxMessage
from storage.types import Channel, JobState, Requires

from support import CLI, seed_people

TZ = ZoneInfo("Asia/Shanghai")
NAMES = ["张三", "李四", "王五", "赵六", "钱七"]


def at(text: str) -> dt.datetime:
    """A Beijing-time instant."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def context(**schedule: object) -> BotContext:
    """A bot context with the given [schedule] settings."""
    raw = {"schedule": {"remind_before": ["1d", "2h"], **schedule}}
    config = validate_config(raw, "<test>", {})
    return BotContext.from_config(config, capabilities_of(config.group.platform))


async def publish(
    db: Database, ctx: BotContext, now: dt.datetime, deadline: dt.datetime, **kw: object
) -> int:
    """Publish a notice for everybody with the given deadline."""
    draft = NoticeDraft(
        title=str(kw.get("title", "关于报送自查报告的通知")),
        body="请按时报送。",
        audience=Audience(all=True),
        deadline=deadline,
        requires=Requires.ACK,
    )
    async with db.transaction() as s:
        return (await publish_notice(s, ctx, draft, actor=CLI, now=now)).id


async def job_times(db: Database, kind: str) -> list[dt.datetime]:
    """Due times of scheduled jobs of one kind, in Beijing time."""
    async with db.read() as s:
        rows = await s.scalars(
            select(Job)
            .where(Job.kind == kind, Job.state == JobState.SCHEDULED)
            .order_by(Job.due_at)
        )
        return [j.due_at.astimezone(TZ) for j in rows]


async def sent_rows(db: Database, purpose: str) -> list[OutboxMessage]:
    """Outbox rows of one purpose, oldest first."""
    async with db.read() as s:
        return list(
            (
                await s.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.purpose == purpose)
                    .order_by(OutboxMessage.id)
                )
            ).all()
        )


async def test_publishing_posts_to_the_group_and_plans_jobs(db: Database) -> None:
    ctx = context()
    now = at("2026-09-18T10:00")  # a Friday
    await seed_people(db, now)
    nid = await publish(db, ctx, now, at("2026-09-21T10:00"))
    posts = await sent_rows(db, "notice")
    assert [(p.target_key, p.notice_id) for p in posts] == [("local:chat:main", nid)]
    card = posts[0].payload["card"]
    assert card["status"] == "已确认 0/5"
    assert card["buttons"][0]["value"] == f"ack:{nid}"
    # 1d before is Sunday 09-20, an adjusted working day; 2h before (Mon 08:00) is before
    # working hours, so it moves back to the last working minute of that Sunday.
    assert await job_times(db, "remind") == [at("2026-09-20T10:00"), at("2026-09-20T17:29")]
    assert await job_times(db, "escalate") == [at("2026-09-22T10:00")]


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [
        # National Day 2026-10-01..07: both reminders fall back to Wednesday 09-30, once.
        ("2026-10-08T10:00", ["2026-09-30T17:29"]),
        # Sunday 10-11 is a rest day; Saturday 10-10 is an adjusted working day.
        ("2026-10-12T10:00", ["2026-10-10T17:29"]),
        # Ordinary weekday evening: 1d before is 18:00 (after hours) -> 17:29 that day.
        ("2026-11-05T18:00", ["2026-11-04T17:29", "2026-11-05T16:00"]),
    ],
)
async def test_reminders_skip_nights_weekends_and_holidays(
    db: Database, deadline: str, expected: list[str]
) -> None:
    ctx = context()
    await seed_people(db, at("2026-09-18T10:00"))
    await publish(db, ctx, at("2026-09-28T09:00"), at(deadline))
    assert await job_times(db, "remind") == [at(e) for e in expected]


async def test_reminders_go_privately_to_pending_people_only(db: Database) -> None:
    ctx = context()
    clock = Clock(at("2026-09-18T10:00"))
    await seed_people(db, clock.now)
    nid = await publish(db, ctx, clock.now, at("2026-09-21T10:00"))
    async with db.transaction() as s:
        for pid in ("p001", "p002"):
            me = Actor(id=pid, roles=frozenset(), person_id=pid)
            await acknowledge(s, nid, pid, channel=Channel.GROUP, actor=me, now=clock.now)
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock)
    clock.now = at("2026-09-20T10:00")
    runs = await scheduler.run_once()
    assert [r.result for r in runs] == ["done"]
    reminders = await sent_rows(db, "reminder")
    assert sorted(r.person_id or "" for r in reminders) == ["p003", "p004", "p005"]
    assert all(r.target_kind == "person" for r in reminders)
    assert all(f"#{nid}" in r.payload["text"] for r in reminders)
    # Nothing went to the group.
    assert [p.purpose for p in await sent_rows(db, "notice")] == ["notice"]


async def test_a_late_job_waits_for_working_hours(db: Database) -> None:
    ctx = context()
    clock = Clock(at("2026-09-18T10:00"))
    await seed_people(db, clock.now)
    await publish(db, ctx, clock.now, at("2026-09-21T10:00"))
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock)
    clock.now = at("2026-09-20T22:30")  # the bot was down; both reminders are now due
    runs = await scheduler.run_once()
    assert {r.result for r in runs} == {"rescheduled"}
    assert await sent_rows(db, "reminder") == []
    assert await job_times(db, "remind") == [at("2026-09-21T08:30")] * 2
    clock.now = at("2026-09-21T08:30")
    runs = await scheduler.run_once()
    assert [r.result for r in runs] == ["done", "done"]
    # Both reminders are due for the same people; the daily budget (3) allows both.
    assert len(await sent_rows(db, "reminder")) == 10


async def test_the_daily_budget_holds(db: Database) -> None:
    ctx = context(reminders_per_person_per_day=1)
    clock = Clock(at("2026-11-02T09:00"))  # a Monday
    await seed_people(db, clock.now)
    for i in range(3):
        await publish(db, ctx, clock.now, at("2026-11-04T12:00"), title=f"通知 {i}")
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock)
    clock.now = at("2026-11-03T12:00")  # all three "1d before" reminders are due
    await scheduler.run_once()
    per_person: dict[str, int] = {}
    for r in await sent_rows(db, "reminder"):
        per_person[r.person_id or ""] = per_person.get(r.person_id or "", 0) + 1
    assert per_person == {p: 1 for p in ("p001", "p002", "p003", "p004", "p005")}
    # The next day the budget is fresh again.
    clock.now = at("2026-11-04T10:00")
    await scheduler.run_once()
    assert len(await sent_rows(db, "reminder")) == 10


async def test_escalation_names_go_to_the_head_only(db: Database) -> None:
    ctx = context()
    clock = Clock(at("2026-11-02T09:00"))
    await seed_people(db, clock.now)
    nid = await publish(db, ctx, clock.now, at("2026-11-03T12:00"))
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock)
    clock.now = at("2026-11-04T12:00")
    await scheduler.run_once()
    notes = await sent_rows(db, "escalation")
    by_head = {n.person_id: n.payload["text"] for n in notes}
    # p002 heads 基础教育科 (张三, 李四); p005 heads 督导科 (赵六, 钱七); 办公室 has no head,
    # so the office (p003) hears about its own department.
    assert set(by_head) == {"p002", "p005", "p003"}
    assert "张三" in by_head["p002"] and "赵六" not in by_head["p002"]
    assert "赵六" in by_head["p005"] and "张三" not in by_head["p005"]
    assert all(n.target_kind == "person" and n.notice_id == nid for n in notes)


async def test_the_digest_is_one_group_message_that_names_nobody(db: Database) -> None:
    ctx = context()
    clock = Clock(at("2026-09-30T18:00"))  # the evening before the National Day holiday
    await seed_people(db, clock.now)
    first = await publish(db, ctx, clock.now, at("2026-10-09T17:00"), title="作业管理自查")
    second = await publish(db, ctx, clock.now, at("2026-10-20T17:00"), title="减负统计报表")
    async with db.transaction() as s:
        job = await tasks.ensure_digest(s, ctx, now=clock.now)
    assert job.due_at == at("2026-10-08T09:00")  # the first working day after the holiday
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock)
    clock.now = at("2026-10-08T09:00")
    await scheduler.run_once()
    digests = await sent_rows(db, "digest")
    assert len(digests) == 1
    assert digests[0].target_key == "local:chat:main"
    text = digests[0].payload["text"]
    assert f"#{first}" in text and f"#{second}" in text
    assert text.index(f"#{first}") < text.index(f"#{second}")
    assert "已确认 0/5" in text
    assert not any(name in text for name in NAMES)
    # The next digest is planned for the next working day: Friday 10-09, then Saturday 10-10
    # (an adjusted working day).
    assert await job_times(db, "digest") == [at("2026-10-09T09:00")]
    clock.now = at("2026-10-09T09:00")
    await scheduler.run_once()
    assert await job_times(db, "digest") == [at("2026-10-10T09:00")]


async def test_no_open_items_means_no_digest(db: Database) -> None:
    ctx = context()
    clock = Clock(at("2026-11-02T08:00"))
    async with db.transaction() as s:
        await tasks.ensure_digest(s, ctx, now=clock.now)
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock)
    clock.now = at("2026-11-02T09:00")
    assert [r.result for r in await scheduler.run_once()] == ["done"]
    assert await sent_rows(db, "digest") == []


async def test_a_year_the_calendar_does_not_know_never_crashes(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(extra_holidays=["2027-01-01"])
    clock = Clock(at("2026-12-30T10:00"))
    await seed_people(db, clock.now)
    await publish(db, ctx, clock.now, at("2027-01-04T10:00"))  # Monday
    # 1d before is Sunday 01-03 -> back over the weekend and the New Year holiday.
    assert await job_times(db, "remind") == [at("2026-12-31T17:29")]
    async with db.transaction() as s:
        job = await tasks.ensure_digest(s, ctx, now=at("2026-12-31T10:00"))
    assert job.due_at == at("2027-01-04T09:00")
    assert any("2027" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


async def test_scheduler_sleeps_until_the_next_job(db: Database) -> None:
    ctx = context()
    clock = Clock(at("2026-11-02T09:00"))
    scheduler = Scheduler(db, tasks.handlers(ctx), worker="w1", clock=clock, max_idle=3600)
    assert await scheduler.idle_delay() == 3600
    async with db.transaction() as s:
        await jobs.schedule(
            s, kind="digest", key="digest:x", due_at=clock.now + dt.timedelta(seconds=90),
            payload={"date": "2026-11-02"}, now=clock.now,
        )  # fmt: skip
    assert await scheduler.idle_delay() == 90
    clock.now += dt.timedelta(seconds=100)
    assert await scheduler.idle_delay() == 0


async def test_tally_edits_coalesce(db: Database) -> None:
    ctx = context()
    now = at("2026-11-02T09:00")
    await seed_people(db, now)
    nid = await publish(db, ctx, now, at("2026-11-09T17:00"))
    for pid in ("p001", "p002", "p003"):
        async with db.transaction() as s:
            me = Actor(id=pid, roles=frozenset(), person_id=pid)
            await acknowledge(s, nid, pid, channel=Channel.GROUP, actor=me, now=now)
            await refresh_tally(s, ctx, nid, now=now)
    edits = await sent_rows(db, "tally")
    assert len(edits) == 1
    assert edits[0].payload["card"]["status"] == "已确认 3/5"
    post = (await sent_rows(db, "notice"))[0]
    assert edits[0].edit_of_id == post.id
    # While the post itself is in flight, later acks still fold into the waiting edit.
    async with db.transaction() as s:
        claimed = await outbox.claim_due(
            s, worker="w", now=now, lease=dt.timedelta(minutes=1), limit=10
        )
        assert [c.id for c in claimed] == [post.id]
    async with db.transaction() as s:
        me = Actor(id="p004", roles=frozenset(), person_id="p004")
        await acknowledge(s, nid, "p004", channel=Channel.DM, actor=me, now=now)
        await refresh_tally(s, ctx, nid, now=now)
    edits = await sent_rows(db, "tally")
    assert [e.payload["card"]["status"] for e in edits] == ["已确认 4/5"]
