"""Status callbacks to the portal: signed, retried with backoff, delivered once per event."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, text

from bot.app import create_app
from bot.appkeys import DATABASE
from bot.config import validate_config
from bot.core import portal_signing as signing
from storage import audit, domain
from storage.db import Database
from storage.models import Job, OutboxMessage, Person
from storage.types import Channel, OutboxState

from support import rewrite_chain, seed_people, workbot_cli

SECRET = "portal-shared-secret"
ENVIRON = {"WORKBOT_EGOV_SECRET": SECRET}


@dataclass
class FakePortal:
    """The portal's callback receiver: checks signatures like the portal would."""

    fail_first: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            signing.verify_request(SECRET, request, body, now=time.time(), max_skew=300)
        except signing.SignatureError as exc:
            self.refused.append(exc.code)
            return web.json_response({"error": exc.code}, status=401)
        event = json.loads(body)
        self.attempts.append(event)
        if len(self.attempts) <= self.fail_first:
            return web.json_response({"error": "busy"}, status=500)
        if all(e["delivery_id"] != event["delivery_id"] for e in self.accepted):
            self.accepted.append(event)
        return web.json_response({"ok": True})


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    fake = FakePortal()
    app = web.Application()
    app.router.add_post("/callbacks/workbot", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/callbacks/workbot?tenant=yc"))
    yield fake
    await server.close()


def config(db: Database, callback_url: str) -> Any:
    raw = {
        "database": {"url": db.url.render_as_string(hide_password=False)},
        "egov": {"callback_url": callback_url},
        "delivery": {"backoff_base": "1s", "backoff_cap": "2s"},
    }
    return validate_config(raw, "<test>", ENVIRON)


@asynccontextmanager
async def serving(
    db: Database, portal: FakePortal
) -> AsyncIterator[tuple[web.Application, TestClient[Any, Any]]]:
    """The app over the seeded directory, calling back to `portal`, and a client of it."""
    await seed_people(db, dt.datetime.now(dt.UTC))
    app = create_app(config(db, portal.url), ENVIRON)
    async with TestClient(TestServer(app)) as client:
        yield app, client


async def post_notice(client: TestClient[Any, Any], external_id: str, **extra: Any) -> int:
    body = json.dumps(
        {
            "external_id": external_id,
            "title": "关于报送作业管理自查情况的通知",
            "issuer": {"department": "办公室"},
            "requires": "outcome",
            "deadline": "2030-12-10T17:00:00+08:00",
            "audience": {"people": ["p001", "p002"]},
            **extra,
        },
        ensure_ascii=False,
    ).encode()
    headers = signing.headers(SECRET, "POST", "/egov/v1/notices", body, now=time.time())
    headers["Content-Type"] = "application/json"
    resp = await client.post("/egov/v1/notices", data=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def wait_for(predicate: Any, seconds: float = 20, what: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time: {what() if what else ''}")
        await asyncio.sleep(0.05)


async def act(db: Database, notice_id: int, person_id: str, what: str) -> None:
    now = dt.datetime.now(dt.UTC)
    async with db.transaction() as s:
        person = await s.get(Person, person_id)
        assert person is not None
        actor = domain.Actor.of(person)
        if what == "ack":
            await domain.acknowledge(
                s, notice_id, person_id, channel=Channel.GROUP, actor=actor, now=now
            )
        elif what == "progress":
            await domain.report_progress(
                s,
                notice_id,
                person_id,
                text="已完成初稿",
                percent=60,
                channel=Channel.DM,
                actor=actor,
                now=now,
            )
        else:
            await domain.record_outcome(
                s,
                notice_id,
                person_id,
                measures=["组织自查"],
                results="发文数量减少30%",
                channel=Channel.GROUP,
                actor=actor,
                now=now,
            )


async def test_an_event_survives_two_receiver_errors_and_arrives_once_signed(
    db: Database, portal: FakePortal
) -> None:
    portal.fail_first = 2
    async with serving(db, portal) as (app, client):
        notice_id = await post_notice(client, "portal-2019-1234")
        await act(app[DATABASE], notice_id, "p001", "ack")
        await wait_for(lambda: len(portal.accepted) >= 1)

    (event,) = portal.accepted
    assert len(portal.attempts) == 3  # 500, 500, then 200
    assert [e["delivery_id"] for e in portal.attempts] == [event["delivery_id"]] * 3
    assert portal.refused == []
    assert event["event"] == "assignment.acknowledged"
    assert event["notice_id"] == notice_id
    assert event["external_id"] == "portal-2019-1234"
    assert event["person"] == {"id": "p001", "name": "张三", "department": "基础教育科"}
    assert event["data"]["channel"] == "group"
    assert dt.datetime.fromisoformat(event["at"]).tzinfo is not None
    async with db.read() as s:
        rows = (
            await s.scalars(select(OutboxMessage).where(OutboxMessage.platform == "egov"))
        ).all()
    assert [(r.state, r.attempts) for r in rows] == [(OutboxState.SENT, 3)]


async def test_the_whole_life_of_a_portal_notice_is_reported(
    db: Database, portal: FakePortal
) -> None:
    async with serving(db, portal) as (app, client):
        notice_id = await post_notice(client, "portal-2019-2000")
        same = app[DATABASE]  # the app's own handle: its commits wake the app's loops
        await act(same, notice_id, "p001", "ack")
        await act(same, notice_id, "p002", "progress")  # implies p002's ack: all acknowledged
        await act(same, notice_id, "p001", "done")
        async with same.transaction() as s:
            await domain.close_notice(
                s, notice_id, actor=domain.Actor.system("cli"), now=dt.datetime.now(dt.UTC)
            )
        await wait_for(lambda: len(portal.accepted) >= 6, what=lambda: portal.accepted)
        await asyncio.sleep(0.2)

    got = [(e["event"], (e["person"] or {}).get("id")) for e in portal.accepted]
    assert got == [
        ("assignment.acknowledged", "p001"),
        ("assignment.acknowledged", "p002"),
        ("assignment.progress", "p002"),
        ("notice.all_acknowledged", None),
        ("assignment.done", "p001"),
        ("notice.closed", None),
    ]
    progress = portal.accepted[2]["data"]
    assert (progress["percent"], progress["text"]) == (60, "已完成初稿")
    done = portal.accepted[4]["data"]
    assert (done["measures"], done["results"]) == (["组织自查"], "发文数量减少30%")
    assert portal.accepted[5]["data"]["state"] == "closed"
    assert len({e["delivery_id"] for e in portal.accepted}) == 6


async def test_notices_from_other_sources_send_no_callbacks(
    db: Database, portal: FakePortal
) -> None:
    from support import make_notice

    async with serving(db, portal) as (app, _):
        notice_id = await make_notice(app[DATABASE], dt.datetime.now(dt.UTC))
        await act(app[DATABASE], notice_id, "p001", "ack")
        await asyncio.sleep(0.5)
    assert portal.attempts == []


async def test_an_overdue_portal_notice_is_reported_at_its_deadline(
    db: Database, portal: FakePortal
) -> None:
    from bot.appkeys import BOT
    from bot.core.feed import notice_overdue

    async with serving(db, portal) as (app, client):
        notice_id = await post_notice(client, "portal-2019-3000")
        async with db.read() as s:
            job = (await s.scalars(select(Job).where(Job.key == f"overdue:{notice_id}"))).one()
        assert job.due_at == dt.datetime(2030, 12, 10, 9, 0, tzinfo=dt.UTC)
        async with app[DATABASE].transaction() as s:
            assert await notice_overdue(s, app[BOT], notice_id, dt.datetime.now(dt.UTC))
        async with app[DATABASE].transaction() as s:  # at most once
            await notice_overdue(s, app[BOT], notice_id, dt.datetime.now(dt.UTC))
        await wait_for(lambda: len(portal.accepted) >= 1)
        await asyncio.sleep(0.3)
    (event,) = portal.accepted
    assert event["event"] == "notice.overdue"
    assert event["data"] == {"outstanding": 2}


async def test_the_daily_audit_checkpoint_is_sent_signed_once_and_proves_the_chain(
    db: Database, portal: FakePortal, tmp_path: Path
) -> None:
    from bot.appkeys import BOT, SCHEDULER
    from bot.scheduler import tasks

    async with serving(db, portal) as (app, client):
        await post_notice(client, "portal-2019-4000")
        async with db.read() as s:
            (job,) = (await s.scalars(select(Job).where(Job.kind == "audit_checkpoint"))).all()
        local = job.due_at.astimezone(ZoneInfo("Asia/Shanghai"))
        assert (local.hour, local.minute) == (0, 10)  # [audit] checkpoint_at
        assert job.key == f"audit_checkpoint:{local.date().isoformat()}"
        async with db.transaction() as s:  # a second worker starting: still one job a day
            again = await tasks.ensure_checkpoint(s, app[BOT], now=dt.datetime.now(dt.UTC))
        assert again.id == job.id

        async with db.engine.begin() as conn:  # the night comes
            await conn.execute(
                text("UPDATE job SET due_at = :now WHERE id = :id"),
                {"now": dt.datetime.now(dt.UTC), "id": job.id},
            )
        app[SCHEDULER].wake()
        await wait_for(lambda: any(e["event"] == "audit.checkpoint" for e in portal.accepted))
        async with db.transaction() as s:  # run again by another worker: not sent twice
            late = await s.get(Job, job.id)
            assert late is not None
            await tasks.checkpoint(app[BOT], s, late, dt.datetime.now(dt.UTC))
        await asyncio.sleep(0.5)
        async with db.read() as s:
            days = (await s.scalars(select(Job.key).where(Job.kind == "audit_checkpoint"))).all()
    (event,) = [e for e in portal.accepted if e["event"] == "audit.checkpoint"]
    assert portal.refused == []  # signed as every callback is
    async with db.read() as s:
        tip = await audit.head(s)
    assert event["data"] == {
        "date": local.date().isoformat(),
        "seq": tip.seq,
        "hash": tip.hash,
        "scheme": "sha256",
        "checkpoint": f"{tip.seq}:{tip.hash}",
    }
    assert (event["notice_id"], event["person"]) == (None, None)
    next_day = (local.date() + dt.timedelta(days=1)).isoformat()
    assert sorted(days) == [job.key, f"audit_checkpoint:{next_day}"]

    # The operator checks the chain against the portal's copy: it holds ...
    checkpoint = event["data"]["checkpoint"]
    code, out, _ = await workbot_cli(db, tmp_path, "audit", "verify", "--checkpoint", checkpoint)
    assert code == 0
    assert f"Checkpoint {tip.seq}: the chain up to row {tip.seq} is unchanged" in out
    # ... until someone rewrites a row before it and recomputes every plain hash and the
    # head: the chain alone cannot tell (it is not keyed), the checkpoint can.
    async with db.engine.begin() as conn:
        rows = (await conn.execute(text("SELECT seq FROM audit_event ORDER BY seq"))).all()
    await rewrite_chain(db, 1, {"forged": True})
    code, out, err = await workbot_cli(db, tmp_path, "audit", "verify")
    assert code == 0 and f"Audit chain intact: {len(rows)} rows verified." in out
    code, out, err = await workbot_cli(db, tmp_path, "audit", "verify", "--checkpoint", checkpoint)
    assert code == 2
    assert f"--checkpoint {checkpoint}: row {tip.seq} now has the hash " in err
