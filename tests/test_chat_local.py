"""The chat core end to end through the local group's API, on the real app (SQLite and PG)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.app import create_app
from bot.appkeys import BOT, CHAT, ROOM
from bot.config import validate_config
from bot.core import feed
from bot.core.i18n import Translator
from bot.core.render import AudienceView, audience_line
from storage import domain, settings
from storage.db import Database
from storage.models import (
    Assignment,
    AuditEvent,
    InboundRecord,
    LocalMessage,
    Notice,
    OutboxMessage,
    Outcome,
    Person,
    Reply,
)
from storage.types import AssignmentState, Channel, NoticeState, OutboxState, ReplyKind

from support import (
    PEOPLE_CSV,
    actor_of,
    assignees,
    assignment,
    make_notice,
    seed_people,
    snapshot,
)

NOTICE_TEXT = """通知 关于报送作业管理自查情况的通知
请各科室于12月10日前报送自查报告。
截止：2030-12-10 17:00
对象：@基础教育科 @督导科
要求：成效
文号：宜教办发[2019]41号"""

NAMES = ("张三", "李四", "王五", "赵六", "钱七")


@dataclass
class Room:
    """The local group, driven over HTTP like the page drives it."""

    client: TestClient[Any, Any]
    db: Database

    async def post(self, sender: str, text: str, **extra: Any) -> int:
        resp = await self.client.post(
            "/local/v1/messages", json={"sender": sender, "text": text, **extra}
        )
        assert resp.status in (200, 201), await resp.text()
        return int((await resp.json())["id"])

    async def click(self, sender: str, message_id: int, action: str) -> dict[str, Any]:
        resp = await self.client.post(
            "/local/v1/actions",
            json={"sender": sender, "message_id": message_id, "action": action},
        )
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def messages(self, reader: str | None = None) -> list[dict[str, Any]]:
        """The room as `reader` sees it (the group and their DMs), or the group alone."""
        params = {"after": "0", "limit": "500", **({"for": reader} if reader else {})}
        resp = await self.client.get("/local/v1/messages", params=params)
        assert resp.status == 200
        found: list[dict[str, Any]] = (await resp.json())["messages"]
        return found

    async def settle(self) -> None:
        """Wait until every inbound event is processed, the audit feed has followed every
        change (tally edits), and every due message is delivered."""
        app = self.client.app
        assert app is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await app[CHAT].drain()
            async with self.db.read() as s:  # the feed first: it writes the tally edits
                cursor = int(await settings.get(s, feed.CURSOR) or 0)
                unfollowed = await s.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(AuditEvent.seq > cursor, AuditEvent.action.in_(feed.TALLY_ACTIONS))
                )
                received = await s.scalar(
                    select(func.count())
                    .select_from(InboundRecord)
                    .where(InboundRecord.status == "received")
                )
                pending = await s.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(
                        OutboxMessage.state == OutboxState.PENDING,
                        OutboxMessage.next_attempt_at <= dt.datetime.now(dt.UTC),
                    )
                )
            if not received and not pending and not unfollowed:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the room did not settle")

    async def group_posts(self) -> list[dict[str, Any]]:
        """The bot's messages in the group itself (not DMs)."""
        return [m for m in await self.messages() if m["sender"] == "bot" and m["to"] is None]

    async def dms(self, person: str) -> list[str]:
        return [m["text"] for m in await self.messages(person) if m["to"] == person]

    async def card_of(self, notice_id: int) -> dict[str, Any]:
        for m in await self.group_posts():
            if m["card"] and f"#{notice_id}" in m["card"]["title"]:
                return m
        raise AssertionError(f"no card for #{notice_id}")


def app_config(db: Database, **bot: Any) -> Any:
    url = db.url.render_as_string(hide_password=False)
    raw = {"database": {"url": url}, "bot": {"public_url": "http://127.0.0.1:8080", **bot}}
    return validate_config(raw, "<test>", {})


@pytest.fixture
async def room(db: Database, tmp_path: Path) -> AsyncIterator[Room]:
    await seed_people(db, dt.datetime.now(dt.UTC))
    app = create_app(app_config(db), {})
    async with TestClient(TestServer(app)) as client:
        yield Room(client, db)


async def post_notice(room: Room, text: str = NOTICE_TEXT) -> int:
    await room.post("p003", text)
    await room.settle()
    async with room.db.read() as s:
        newest = await s.scalar(select(func.max(Notice.id)))
    assert newest is not None
    return int(newest)


async def test_office_notice_then_acks_by_reply_button_and_link_add_no_group_noise(
    room: Room,
) -> None:
    notice_id = await post_notice(room)
    async with room.db.read() as s:
        notice = await s.get(Notice, notice_id)
        assert notice is not None
        assert notice.title == "关于报送作业管理自查情况的通知"
        assert notice.body == "请各科室于12月10日前报送自查报告。"
        assert notice.doc_number == "宜教办发[2019]41号"
        assert notice.requires.value == "outcome"
        assert notice.deadline == dt.datetime(2030, 12, 10, 9, 0, tzinfo=dt.UTC)
        assert notice.source.value == "chat"
        assigned = await assignees(s, notice_id)
    assert assigned == ["p001", "p002", "p004", "p005"]
    card = await room.card_of(notice_id)
    assert card["card"]["status"] == "已确认 0/4，已完成 0/4"
    assert [b["value"] for b in card["card"]["buttons"]] == [f"ack:{notice_id}"]
    posts_before = len(await room.group_posts())
    assert any("已发布" in text for text in await room.dms("p003"))

    # 1. a reply to the notice card
    await room.post("p001", "收到", reply_to=card["id"])
    # 2. the card's button
    assert (await room.click("p002", card["id"], f"ack:{notice_id}"))["status"] == "processed"
    # 3. a signed ack link: GET shows a page and changes nothing, POST records it
    a4 = await assignment(room.db, notice_id, "p004")
    app = room.client.app
    assert app is not None
    links = app[BOT].links
    assert links is not None
    link = links.url(a4.id, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    path = link.removeprefix("http://127.0.0.1:8080")
    page = await room.client.get(path)
    assert page.status == 200
    assert "关于报送作业管理自查情况的通知" in await page.text()
    assert (await assignment(room.db, notice_id, "p004")).state is AssignmentState.PENDING
    confirmed = await room.client.post(path)
    assert confirmed.status == 200
    assert "已确认收到" in await confirmed.text()
    await room.settle()

    states = {p: await assignment(room.db, notice_id, p) for p in ("p001", "p002", "p004")}
    assert {p: (a.state, a.ack_channel) for p, a in states.items()} == {
        "p001": (AssignmentState.ACKNOWLEDGED, Channel.GROUP),
        "p002": (AssignmentState.ACKNOWLEDGED, Channel.BUTTON),
        "p004": (AssignmentState.ACKNOWLEDGED, Channel.LINK),
    }
    # The acks edited the card in place: same message, new tally, no new group message.
    assert len(await room.group_posts()) == posts_before
    card = await room.card_of(notice_id)
    assert card["card"]["status"] == "已确认 3/4，已完成 0/4"
    assert card["edited_at"] is not None
    # A plain ack gets no reply at all: the tally is the answer.
    for person in ("p001", "p002", "p004"):
        assert await room.dms(person) == []
    # The same ack again changes nothing.
    await room.post("p001", "收到", reply_to=card["id"])
    await room.settle()
    assert len(await room.group_posts()) == posts_before
    assert await room.dms("p001") == []

    # Progress and the outcome become structured records.
    await room.post("p001", f"进度 #{notice_id} 60% 已完成初稿")
    await room.post(
        "p001",
        f"完成 #{notice_id}\n措施：1. 组织自查 2. 召开专题会议\n成效：发文数量减少30%以上",
    )
    await room.settle()
    async with room.db.read() as s:
        a1 = await s.get(Assignment, states["p001"].id)
        assert a1 is not None and a1.state is AssignmentState.DONE
        progress = (
            await s.scalars(
                select(Reply).where(Reply.assignment_id == a1.id, Reply.kind == ReplyKind.PROGRESS)
            )
        ).all()
        assert [(r.percent, r.text) for r in progress] == [(60, "已完成初稿")]
        outcome = (await s.scalars(select(Outcome).where(Outcome.assignment_id == a1.id))).one()
    assert outcome.measures == ["组织自查", "召开专题会议"]
    assert outcome.results == "发文数量减少30%以上"
    assert [(m["value"], m["unit"]) for m in outcome.metrics] == [(30.0, "%")]
    assert (await room.card_of(notice_id))["card"]["status"] == "已确认 3/4，已完成 1/4"
    assert len(await room.group_posts()) == posts_before

    # Nobody is ever named in the group.
    for post in await room.group_posts():
        for name in NAMES:
            assert name not in post["text"], (name, post["text"])


async def test_staff_cannot_post_remind_or_cancel_and_nothing_changes(room: Room) -> None:
    notice_id = await post_notice(room)
    before = await snapshot(room.db)
    posts_before = len(await room.group_posts())

    await room.post("p004", "通知 我也发个通知\n对象：全体")
    await room.post("p004", f"催办 #{notice_id}")
    await room.post("p004", f"撤回 #{notice_id}")
    await room.settle()

    assert await snapshot(room.db) == before
    assert len(await room.group_posts()) == posts_before
    refusals = await room.dms("p004")
    assert len(refusals) == 3
    assert all("没有权限" in text and "办公室" in text for text in refusals)
    async with room.db.read() as s:
        reminders = await s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.purpose == "reminder")
        )
        notice = await s.get(Notice, notice_id)
    assert reminders == 0
    assert notice is not None and notice.state is NoticeState.OPEN


async def test_pending_lists_exactly_the_senders_open_items(room: Room) -> None:
    first = await post_notice(room)
    second = await post_notice(room, "任务 填报统计表\n对象：@李四\n截止：2030-12-01")
    third = await post_notice(room, "通知 只给督导科\n对象：@督导科")
    await room.post("p001", f"完成 #{first}\n成效：已完成")
    await room.settle()

    await room.post("p002", "待办")
    await room.post("p001", "我的待办")
    await room.settle()

    (answer,) = await room.dms("p002")
    assert f"#{first}" in answer and f"#{second}" in answer and f"#{third}" not in answer
    assert "待办（2 项）" in answer
    done_note, answer = await room.dms("p001")
    assert "办理结果" in done_note
    assert answer == "您没有待办事项。"
    # The group saw none of it.
    assert all("待办" not in p["text"] for p in await room.group_posts())


async def test_office_pending_and_status_carry_names_by_dm_only(room: Room) -> None:
    notice_id = await post_notice(room)
    await room.post("p001", f"收到 #{notice_id}")
    await room.post("p003", f"待办 #{notice_id}")
    await room.post("p003", f"查询 #{notice_id}")
    await room.post("p004", f"查询 #{notice_id}")
    await room.settle()

    office = await room.dms("p003")
    pending_answer, status_answer = office[-2:]
    assert "尚有 4 人未完成" in pending_answer
    assert "钱七" in pending_answer and "张三" in pending_answer
    assert "已确认 1" in status_answer and "钱七" in status_answer
    (staff_status,) = await room.dms("p004")
    assert "已确认 1" in staff_status
    assert not any(name in staff_status for name in NAMES)
    # A staff member asking for everyone's names is refused.
    await room.post("p004", "待办 全部")
    await room.settle()
    assert "没有权限" in (await room.dms("p004"))[-1]


async def test_negations_questions_and_chatter_do_not_ack(room: Room) -> None:
    notice_id = await post_notice(room)
    card = await room.card_of(notice_id)
    for text in ("没收到", "还没收到", "收到了吗？", "我收到了别的通知，这个还没看", "大家好"):
        await room.post("p005", text, reply_to=card["id"])
    await room.settle()

    assert (await assignment(room.db, notice_id, "p005")).state is AssignmentState.PENDING
    # 没收到 and 还没收到: the notice is sent again, privately, with its 收到 button.
    resent = [m for m in await room.messages("p005") if m["to"] == "p005"]
    assert len(resent) == 2
    assert all(m["card"] and m["card"]["buttons"] for m in resent)
    # Replying 收到 to the private copy acknowledges.
    await room.post("p005", "收到", reply_to=resent[0]["id"])
    await room.settle()
    a5 = await assignment(room.db, notice_id, "p005")
    assert a5.state is AssignmentState.ACKNOWLEDGED


async def test_an_ack_from_a_non_assignee_gets_a_private_explanation(room: Room) -> None:
    notice_id = await post_notice(room, "通知 只给张三\n对象：@张三")
    card = await room.card_of(notice_id)
    before = await snapshot(room.db)

    await room.post("p004", "收到", reply_to=card["id"])
    await room.settle()

    assert await snapshot(room.db) == before
    (explanation,) = await room.dms("p004")
    assert explanation == f"您不是 #{notice_id} 的办理对象。"


async def test_a_guessed_ack_names_the_notice_and_the_others_left(room: Room) -> None:
    older = await post_notice(room, "通知 旧通知\n对象：@张三")
    newer = await post_notice(room, "通知 新通知\n对象：@张三")

    await room.post("p001", "收到")
    await room.settle()

    assert (await assignment(room.db, newer, "p001")).state is AssignmentState.ACKNOWLEDGED
    assert (await assignment(room.db, older, "p001")).state is AssignmentState.PENDING
    (note,) = await room.dms("p001")
    assert f"#{newer}" in note and f"#{older}" in note


async def test_unknown_senders_are_registered_as_staff(room: Room) -> None:
    await room.post("x900", "大家好", name="新同事")
    await room.settle()
    async with room.db.read() as s:
        person = await s.get(Person, "x900")
    assert person is not None
    assert (person.name, person.roles, person.auto_registered) == ("新同事", ["staff"], True)


async def test_chatter_is_stored_but_not_processed(room: Room) -> None:
    message_id = await room.post("p001", "今天食堂吃什么")
    await room.settle()
    assert any(m["id"] == message_id for m in await room.messages())
    async with room.db.read() as s:
        events = await s.scalar(select(func.count()).select_from(InboundRecord))
    assert events == 0
    assert await room.dms("p001") == []


async def test_help_is_generated_per_role(room: Room) -> None:
    await room.post("p001", "帮助")
    await room.post("p003", "/help")
    await room.settle()
    (staff,) = await room.dms("p001")
    (office,) = await room.dms("p003")
    assert "收到" in staff and "催办" not in staff
    assert "催办" in office and "通知 标题" in office


async def test_unknown_command_gets_a_hint(room: Room) -> None:
    await room.post("p001", "/frobnicate 12")
    await room.settle()
    (hint,) = await room.dms("p001")
    assert "/frobnicate" in hint and "帮助" in hint


async def test_close_edits_the_card_and_drops_reminders(room: Room) -> None:
    notice_id = await post_notice(room)
    posts_before = len(await room.group_posts())
    await room.post("p003", f"办结 #{notice_id}")
    await room.settle()
    card = await room.card_of(notice_id)
    assert card["card"]["status"].startswith("已办结")
    assert card["card"]["buttons"] == []
    assert len(await room.group_posts()) == posts_before


async def test_a_repeated_client_id_is_stored_once(room: Room) -> None:
    first = await room.client.post(
        "/local/v1/messages", json={"sender": "p001", "text": "hello", "client_id": "c-1"}
    )
    again = await room.client.post(
        "/local/v1/messages", json={"sender": "p001", "text": "hello", "client_id": "c-1"}
    )
    assert (first.status, again.status) == (201, 200)
    assert (await first.json()) == (await again.json())
    assert len([m for m in await room.messages() if m["text"] == "hello"]) == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"Content-Type": "text/plain"}, b'{"sender":"p001","text":"x"}', 415, None),
        ({"Content-Type": "application/json"}, b"{not json", 400, "invalid_json"),
        (  # two texts: which one was posted? (issue 13, item 10)
            {"Content-Type": "application/json"},
            b'{"sender":"p001","text":"hello","text":"\xe9\x80\x9a\xe7\x9f\xa5 x"}',
            400,
            "duplicate_key",
        ),
        (
            {"Content-Type": "application/json"},
            b'{"sender":"p001","text":"x","sender":"p003"}',
            400,
            "duplicate_key",
        ),
        ({"Content-Type": "application/json"}, b'{"sender":"p001"}', 400, "invalid_body"),
        (
            {"Content-Type": "application/json"},
            b'{"sender":"p001","text":"a\\u0000b"}',  # PostgreSQL cannot store NUL
            400,
            "invalid_body",
        ),
        ({"Content-Type": "application/json"}, b'{"sender":"a b","text":"x"}', 400, None),
        ({"Content-Type": "application/json"}, b"[]", 400, None),
        ({"Content-Type": "application/json"}, b"x" * (1_048_576 + 10), 413, None),
    ],
)
async def test_bad_posts_are_refused_with_a_json_error(
    room: Room, headers: dict[str, str], body: bytes, status: int, code: str | None
) -> None:
    resp = await room.client.post("/local/v1/messages", data=io.BytesIO(body), headers=headers)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if code == "invalid_body":
        assert [f["field"] for f in error["fields"]] == ["text"]
    for message in [error["message"], *(f["message"] for f in error.get("fields", []))]:
        assert only_chinese(message), message  # the room's language, one per message
    assert await room.messages() == []


def only_chinese(message: str) -> bool:
    """Chinese, with no English phrase in it (names of fields and formats may stay)."""
    return bool(re.search(r"[\u4e00-\u9fff]", message)) and not re.search(
        r"[A-Za-z]{2,} [A-Za-z]{2,}", message
    )


async def test_an_action_on_an_unknown_message_is_refused(room: Room) -> None:
    resp = await room.client.post(
        "/local/v1/actions", json={"sender": "p001", "message_id": 999, "action": "ack"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "unknown_message"


async def test_the_stream_shows_new_messages_and_edits(room: Room) -> None:
    notice_id = await post_notice(room)
    card = await room.card_of(notice_id)
    async with room.client.get("/local/v1/stream") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        said = await room.post("p001", "收到", reply_to=card["id"])
        seen: list[str] = []
        deadline = time.monotonic() + 10

        def saw(kind: str, predicate: Callable[[str], bool]) -> bool:
            return any(block.startswith(f"event: {kind}\n") and predicate(block) for block in seen)

        buffer = ""
        while time.monotonic() < deadline and not (
            saw("message", lambda b: f'"id": {said},' in b)
            and saw("edit", lambda b: f'"id": {card["id"]},' in b and "1/4" in b)
        ):
            chunk = await asyncio.wait_for(stream.content.readany(), timeout=10)
            buffer += chunk.decode()
            *blocks, buffer = buffer.split("\n\n")
            seen.extend(blocks)
        assert saw("message", lambda b: f'"id": {said},' in b)
        assert saw("edit", lambda b: f'"id": {card["id"]},' in b and "1/4" in b)


async def test_messages_from_other_chats_are_ignored_and_counted(room: Room) -> None:
    from bot.core.platform import InboundMessage, Sender

    app = room.client.app
    assert app is not None
    chat = app[CHAT]
    before = await snapshot(room.db)
    for i in range(3):
        await chat.accept(
            InboundMessage(
                platform="local",
                event_id=f"other-{i}",
                chat_id="some-other-group",
                sender=Sender("p001"),
                text="收到",
            )
        )
    await room.settle()
    assert await snapshot(room.db) == before
    async with room.db.read() as s:
        stored = select(InboundRecord.note).where(InboundRecord.event_id.like("other-%"))
        notes = (await s.scalars(stored)).all()
    assert notes == ["unbound_chat"] * 3
    metrics = await (await room.client.get("/metrics")).text()
    assert 'workbot_chat_events_total{outcome="unbound_chat"} 3' in metrics
    assert app[ROOM] is not None


async def test_commands_stored_before_a_crash_are_processed_at_the_next_start(
    db: Database,
) -> None:
    from bot.core.intake import event_to_payload
    from bot.core.platform import InboundMessage, Sender
    from storage import inbound

    now = dt.datetime.now(dt.UTC)
    await seed_people(db, now)
    event = InboundMessage(
        platform="local",
        event_id="msg:41",
        chat_id="main",
        sender=Sender("p001"),
        text="待办",
        message_id="41",
    )
    async with db.transaction() as s:  # answered 201, then the process died
        await inbound.record(
            s, source="local", event_id="msg:41", payload=event_to_payload(event), now=now
        )
    app = create_app(app_config(db), {})
    async with TestClient(TestServer(app)) as client:
        room = Room(client, db)
        await room.settle()
        assert await room.dms("p001") == ["您没有待办事项。"]
        async with db.read() as s:
            row = (await s.scalars(select(InboundRecord))).one()
        assert (row.status.value, row.note) == ("processed", "pending")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("通知 缺少对象\n截止：2030-12-10", "请写明对象"),
        ("通知 对象不存在\n对象：@不存在科", "不存在科"),
        ("通知 截止看不懂\n对象：全体\n截止：某一天", "无法识别截止时间"),
        ("通知 截止已过\n对象：全体\n截止：2019-12-10 17:00", "已经过去"),
        ("通知 要求不对\n对象：全体\n要求：马上", "要求"),
    ],
)
async def test_a_malformed_notice_is_refused_and_nothing_is_posted(
    room: Room, text: str, expected: str
) -> None:
    before = await snapshot(room.db)
    await room.post("p003", text)
    await room.settle()
    assert await snapshot(room.db) == before
    assert await room.group_posts() == []
    (answer,) = await room.dms("p003")
    assert expected in answer


async def test_office_remind_phone_ack_and_excuse_name_nobody_in_the_group(room: Room) -> None:
    notice_id = await post_notice(room)
    await room.post("p003", f"电话确认 #{notice_id} 张三")
    await room.post("p003", f"请假 #{notice_id} 钱七 下村")
    await room.post("p003", f"催办 #{notice_id}")
    await room.settle()
    assert (await assignment(room.db, notice_id, "p001")).ack_channel is Channel.PHONE
    assert (await assignment(room.db, notice_id, "p005")).state is AssignmentState.EXCUSED
    async with room.db.read() as s:
        reminded = (
            await s.scalars(
                select(OutboxMessage.person_id).where(OutboxMessage.purpose == "reminder")
            )
        ).all()
    # Everyone who still owes the outcome is reminded privately; the excused 钱七 is not.
    assert sorted(p for p in reminded if p) == ["p001", "p002", "p004"]
    answer = (await room.dms("p003"))[-1]
    assert "3 人" in answer
    assert not any(name in answer for name in NAMES)
    for post in await room.group_posts():
        assert not any(name in post["text"] for name in NAMES)


async def test_ack_links_refuse_forged_expired_and_closed(room: Room) -> None:
    notice_id = await post_notice(room)
    app = room.client.app
    assert app is not None
    links = app[BOT].links
    assert links is not None
    a1 = await assignment(room.db, notice_id, "p001")
    good = links.token(a1.id, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    forged = good[:-1] + ("A" if good[-1] != "A" else "B")
    expired = links.token(a1.id, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    before = await snapshot(room.db)
    for token, code in ((forged, "invalid_token"), (expired, "token_expired"), ("x", None)):
        for method in ("GET", "POST"):
            resp = await room.client.request(method, f"/a/{token}")
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == (code or "invalid_token")
    browser = await room.client.get(f"/a/{forged}", headers={"Accept": "text/html"})
    assert browser.status == 401 and "链接无效" in await browser.text()
    assert await snapshot(room.db) == before
    await room.post("p003", f"撤回 #{notice_id}")
    await room.settle()
    resp = await room.client.post(f"/a/{good}")
    assert resp.status == 409
    assert (await assignment(room.db, notice_id, "p001")).state is AssignmentState.PENDING


async def test_the_office_report_command_sends_a_summary_and_a_signed_download(
    room: Room,
) -> None:
    import docx  # python-docx

    notice_id = await post_notice(room)
    await room.post(
        "p001", f"完成 #{notice_id}\n措施：1. 组织自查 2. 召开专题会议\n成效：发文数量减少30%以上"
    )
    await room.post("p004", "报告")  # staff: refused
    await room.post("p003", "报告")
    await room.settle()

    assert "没有权限" in (await room.dms("p004"))[-1]
    answer = (await room.dms("p003"))[-1]
    assert "收到办理结果 1 份" in answer
    url = answer.rsplit("：", 1)[1].strip()
    path = url.removeprefix("http://127.0.0.1:8080")
    assert path.startswith("/r/")
    resp = await room.client.get(path)
    assert resp.status == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    document = docx.Document(io.BytesIO(await resp.read()))
    text = "\n".join(p.text for p in document.paragraphs)
    assert "针对“关于报送作业管理自查情况的通知”问题" in text
    assert "组织自查" in text and "发文数量减少30%以上" in text
    markdown = await room.client.get(path, params={"format": "md"})
    assert "采取的措施" in await markdown.text()
    forged = path[:-1] + ("A" if path[-1] != "A" else "B")
    assert (await room.client.get(forged)).status == 401


async def test_a_change_from_any_surface_moves_the_tally_without_asking(room: Room) -> None:
    """The tally follows the state: a change written straight through a domain operation (as
    any new surface, or another process, would) edits the card in place; nobody calls a
    refresh."""
    notice_id = await post_notice(room)
    posts_before = len(await room.group_posts())
    office = await actor_of(room.db, "p003")
    async with room.db.transaction() as s:
        await domain.phone_ack(s, notice_id, "p001", actor=office, now=dt.datetime.now(dt.UTC))
    await room.settle()
    card = await room.card_of(notice_id)
    assert card["card"]["status"] == "已确认 1/4，已完成 0/4"
    assert card["edited_at"] is not None
    assert len(await room.group_posts()) == posts_before


async def test_a_burst_of_acks_leaves_at_most_one_pending_edit(db: Database) -> None:
    """Four acks in four transactions, then the feed: one tally edit, carrying the last count."""
    await seed_people(db, dt.datetime.now(dt.UTC))
    app = create_app(app_config(db), {}, workers=False)  # no sender: the edit stays pending
    async with TestClient(TestServer(app)) as client:
        room = Room(client, db)
        await room.post("p003", NOTICE_TEXT)
        await room.client.app[CHAT].drain()
        async with db.read() as s:
            notice_id = int(await s.scalar(select(func.max(Notice.id))) or 0)
        async with db.transaction() as s:  # what serve does at start-up
            await feed.start_cursor(s)
        now = dt.datetime.now(dt.UTC)
        for person in ("p001", "p002", "p004", "p005"):
            actor = await actor_of(db, person)
            async with db.transaction() as s:
                await domain.acknowledge(
                    s, notice_id, person, channel=Channel.GROUP, actor=actor, now=now
                )
        ctx = room.client.app[BOT]
        audit_feed = feed.AuditFeed(db, ctx, clock=lambda: now, max_idle=60.0, callbacks=False)
        for _ in range(3):  # running it again finds nothing new and adds nothing
            await audit_feed.one_pass()
        async with db.read() as s:
            edits = (
                await s.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.notice_id == notice_id, OutboxMessage.purpose == "tally"
                    )
                )
            ).all()
        assert len(edits) == 1
        assert edits[0].state is OutboxState.PENDING
        assert edits[0].payload["card"]["status"] == "已确认 4/4，已完成 0/4"


async def test_a_refused_value_is_explained_in_one_language(room: Room) -> None:
    """Issue 13, item 10: the reason used to be the English sentence of the domain error
    inside a Chinese reply (截止时间 不正确：is already past)."""
    before = len(await room.messages())
    await room.post("p003", f"通知 {'长' * 501}\n对象：@张三")
    await room.settle()
    answer = (await room.dms("p003"))[-1]
    assert answer == "标题 不正确：超过 500 个字符"
    assert not re.search("[A-Za-z]", answer)
    async with room.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Notice)) == 0
    assert len([m for m in await room.messages() if m["sender"] == "bot"]) <= before + 1


# --- private messages stay private (issue 13, item 6) ---------------------------------------


async def office_asks_privately_who_has_not_answered(room: Room) -> tuple[int, int]:
    """The office DMs the bot `待办 #N`; the bot answers with the names, privately."""
    notice_id = await post_notice(room)
    asked = await room.post("p003", f"待办 #{notice_id}", to="bot")
    await room.settle()
    return notice_id, asked


async def test_a_dm_is_listed_only_for_its_recipient(room: Room) -> None:
    """Attack: GET /local/v1/messages without for= (or for= someone else) read the office's
    DMs, names included. Now a DM is listed only for its recipient and its sender."""
    _, asked = await office_asks_privately_who_has_not_answered(room)
    office = [m for m in await room.messages("p003") if m["to"] is not None]
    # the bot's answer, with the names the office asked for
    answer = next(m for m in office if m["to"] == "p003" and "张三" in m["text"])
    assert asked in [m["id"] for m in office if m["sender"] == "p003" and m["to"] == "bot"]

    for reader in (None, "p001", "p004", "x999"):
        seen = await room.messages(reader)
        assert [m for m in seen if m["to"] is not None] == [], reader
        assert not [m for m in seen if m["id"] in (asked, answer["id"])], reader
        assert not [m for m in seen if "张三" in m["text"] and m["to"] is not None], reader
    group = await room.messages()
    assert group and all(m["to"] is None for m in group)


@pytest.mark.parametrize("reader", ["bot", "a b", "p003\u202e", "x" * 65])
async def test_reading_for_the_bot_or_a_malformed_id_is_refused(room: Room, reader: str) -> None:
    """`for=bot` would be every DM (the bot is a party to each): refused, like a malformed id,
    on the listing and on the stream alike."""
    await office_asks_privately_who_has_not_answered(room)
    for path in ("/local/v1/messages", "/local/v1/stream"):
        resp = await room.client.get(path, params={"for": reader})
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_query"
        assert "for" in error["message"]


class Frames:
    """One event stream, read frame by frame."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.buffer = ""
        self.messages: list[dict[str, Any]] = []

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Read until a message that satisfies the predicate has arrived."""
        deadline = time.monotonic() + 10
        while not any(predicate(m) for m in self.messages):
            assert time.monotonic() < deadline, self.messages
            chunk = await asyncio.wait_for(self.response.content.readany(), timeout=10)
            self.buffer += chunk.decode()
            *blocks, self.buffer = self.buffer.split("\n\n")
            for block in blocks:
                data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
                if data:
                    self.messages.append(json.loads(data[0]))


async def test_the_stream_pushes_a_dm_only_to_its_reader(room: Room) -> None:
    """Attack: /local/v1/stream pushed everyone's DMs to every subscriber. Now a DM goes only
    to a stream opened for its recipient (or its sender)."""
    notice_id = await post_notice(room)
    async with (
        room.client.get("/local/v1/stream") as anyone,
        room.client.get("/local/v1/stream", params={"for": "p001"}) as staff,
        room.client.get("/local/v1/stream", params={"for": "p003"}) as office,
    ):
        streams = {"anyone": Frames(anyone), "staff": Frames(staff), "office": Frames(office)}
        asked = await room.post("p003", f"待办 #{notice_id}", to="bot")
        await room.settle()
        await streams["office"].until(lambda m: m["id"] == asked)
        await streams["office"].until(lambda m: m["to"] == "p003" and "张三" in m["text"])
        marker = await room.post("p002", "大家好")  # a group message, after the DMs
        for frames in streams.values():
            await frames.until(lambda m: m["id"] == marker)
    for name in ("anyone", "staff"):
        seen = streams[name].messages
        assert [m for m in seen if m["to"] is not None] == [], name
    office_dms = [m["to"] for m in streams["office"].messages if m["to"] is not None]
    assert office_dms == ["bot", "p003"]  # the office's question, and the answer with names


# --- names that impersonate (issue 13, item 7) -----------------------------------------------


async def room_rows(room: Room) -> tuple[Any, ...]:
    """Everything a refused post must leave alone: the domain rows, the room, the inbound events."""
    async with room.db.read() as s:
        posts = await s.scalar(select(func.count()).select_from(LocalMessage))
        events = await s.scalar(select(func.count()).select_from(InboundRecord))
    return await snapshot(room.db), posts, events


async def refused_post(room: Room, body: dict[str, Any], code: str) -> dict[str, Any]:
    """Post; assert a 400 with this code and that nothing at all was stored."""
    before = await room_rows(room)
    resp = await room.client.post("/local/v1/messages", json=body)
    assert resp.status == 400, await resp.text()
    error: dict[str, Any] = (await resp.json())["error"]
    assert error["code"] == code
    await room.settle()
    assert await room_rows(room) == before
    return error


@pytest.mark.parametrize(
    "name",
    ["王五", "王 五", " 王五\u3000", "ｗａｎｇ", "WANG", "p001"],
    ids=["same", "spaced", "padded", "full-width", "upper-case", "someones-id"],
)
async def test_a_new_sender_cannot_take_a_name_the_directory_has(room: Room, name: str) -> None:
    """Attack: {"sender": "evil1", "name": "王五"} registered a second 王五 beside the office's,
    and the room showed the newcomer's posts under that name. Refused with 400 name_taken,
    whether the name is written alike, spaced, full-width, in other case, or is someone's id."""
    await seed_people(room.db, dt.datetime.now(dt.UTC), PEOPLE_CSV + b"p006,Wang,,staff,,\n")
    for to in (None, "bot"):
        body = {"sender": "evil1", "name": name, "text": "通知 冒名\n对象：全体", "to": to}
        error = await refused_post(room, body, "name_taken")
        assert error["message"].startswith("名录中已有名为")
        assert [f["field"] for f in error["fields"]] == ["name"]
    async with room.db.read() as s:
        assert await s.get(Person, "evil1") is None
    assert await room.messages() == []


async def test_a_known_sender_keeps_their_name_and_a_new_name_is_welcome(room: Room) -> None:
    await room.post("p003", "大家好", name="张三")  # a known sender's `name` is not used
    await room.post("x900", "大家好", name="王五五")  # a name of its own
    await room.settle()
    async with room.db.read() as s:
        office, newcomer = await s.get(Person, "p003"), await s.get(Person, "x900")
    assert office is not None and office.name == "王五"
    assert newcomer is not None and newcomer.name == "王五五"
    listed = await (await room.client.get("/local/v1/directory")).json()
    names = {p["id"]: p["name"] for p in listed["people"]}
    assert (names["p003"], names["x900"]) == ("王五", "王五五")
    shown = {m["sender"]: m["sender_name"] for m in await room.messages()}
    assert shown == {"p003": "王五", "x900": "王五五"}


HIDDEN = ["\u202e", "\u200b", "\u200d", "\u2066", "\u061c", "\ufeff", "\u00ad", "\u3164"]


@pytest.mark.parametrize("char", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
async def test_a_name_that_hides_or_reorders_text_is_refused(room: Room, char: str) -> None:
    """Attack: a name such as "\u202e五王" or "王\u200b五" (reads as 王五 but is not) was
    accepted. Refused with 400 unsafe_characters naming the character, from anyone."""
    for sender in ("evil2", "p001"):
        body = {"sender": sender, "name": f"王{char}五", "text": "大家好"}
        error = await refused_post(room, body, "unsafe_characters")
        assert f"U+{ord(char):04X}" in error["message"]
        assert [f["field"] for f in error["fields"]] == ["name"]
    async with room.db.read() as s:
        assert await s.get(Person, "evil2") is None


@pytest.mark.parametrize("sender", ["bot", "p003\u202e", "\u200bp003", "p0\u200d03"])
async def test_a_sender_id_that_is_the_bots_or_hides_characters_is_refused(
    room: Room, sender: str
) -> None:
    for path, body in (
        ("/local/v1/messages", {"sender": sender, "text": "收到"}),
        ("/local/v1/actions", {"sender": sender, "message_id": 1, "action": "ack"}),
    ):
        before = await room_rows(room)
        resp = await room.client.post(path, json=body)
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert (error["code"], [f["field"] for f in error["fields"]]) == (
            "invalid_body",
            ["sender"],
        )
        assert await room_rows(room) == before


# Directory ids as whole words: "p001" inside "p0010" or "ap001" is not one.
DIRECTORY_ID = re.compile(r"(?<![A-Za-z0-9_])p00[1-8](?![0-9])")


async def test_a_refusal_about_someone_else_names_them_not_their_id(room: Room) -> None:
    notice_id = await post_notice(room, "通知 只给张三\n对象：@张三")
    before = await snapshot(room.db)

    await room.post("p003", f"电话确认 #{notice_id} 赵六")
    await room.settle()

    assert await snapshot(room.db) == before
    replies = [m["text"] for m in await room.messages("p003") if m["sender"] == "bot"]
    assert replies[-1] == f"赵六 不是 #{notice_id} 的办理对象。"


async def test_a_chat_session_never_shows_a_directory_id(room: Room) -> None:
    everyone = await post_notice(room, NOTICE_TEXT)
    only_zhang = await post_notice(room, "通知 只给张三\n对象：@张三")
    card = await room.card_of(everyone)
    await room.post("p001", "收到", reply_to=card["id"])
    await room.click("p002", card["id"], f"ack:{everyone}")
    await room.post("p004", f"收到 #{only_zhang}")  # not an assignee
    await room.post("p004", f"完成 #{only_zhang}")
    await room.post("p003", f"电话确认 #{only_zhang} 赵六")  # not an assignee
    await room.post("p003", f"电话确认 #{everyone} 无名氏")  # not in the directory
    await room.post("p003", f"请假 #{everyone} 钱七 出差")
    await room.post("p003", "通知 发给生人\n对象：@无名氏")
    for sender in ("p001", "p003", "p004", "p005"):
        await room.post(sender, "待办", to="bot")
        await room.post(sender, f"@机器人 查询 #{everyone}")
    await room.settle()

    seen: list[str] = []
    for reader in ("p001", "p002", "p003", "p004", "p005"):
        for m in await room.messages(reader):
            if m["sender"] == "bot":
                seen.append(m["text"])
                if m["card"]:
                    seen.extend(m["card"][part] for part in ("title", "body", "status"))
    assert any("不是" in text for text in seen)  # the refusals were really shown
    assert any("赵六" in text for text in seen)
    leaks = [text for text in seen if DIRECTORY_ID.search(text)]
    assert leaks == []


@pytest.mark.parametrize(
    ("audience", "line"),
    [
        ("对象：全体", "对象：全体"),
        ("对象：@基础教育科 @督导科", "对象：基础教育科、督导科"),
        ("对象：@张三", "对象：张三"),
        ("对象：@督导科 @张三", "对象：督导科、张三"),
        ("对象：@基础教育科 @督导科 @王五 @张三", "对象：基础教育科等，共 5 人"),
    ],
)
async def test_the_card_says_who_it_is_for(room: Room, audience: str, line: str) -> None:
    notice_id = await post_notice(room, f"通知 对象测试\n截止：2030-12-10 17:00\n{audience}")
    card = (await room.card_of(notice_id))["card"]
    lines = card["body"].splitlines()
    assert line in lines
    assert lines.index(line) + 1 == lines.index("截止：2030-12-10 17:00")
    # The line stays when the tally is edited in place.
    await room.click("p001", (await room.card_of(notice_id))["id"], f"ack:{notice_id}")
    await room.settle()
    assert line in (await room.card_of(notice_id))["card"]["body"].splitlines()


def test_a_long_audience_of_departments_is_summed_up_in_one_short_line() -> None:
    departments = ("基础教育科", "督导科", "办公室", "财务科")
    zh, en = Translator("zh-CN"), Translator("en")
    assert audience_line(zh, AudienceView(departments=departments), 40) == (
        "对象：基础教育科等 4 个科室，共 40 人"
    )
    assert audience_line(en, AudienceView(departments=departments), 40) == (
        "For: 基础教育科 and others (4 departments), 40 people"
    )
    assert audience_line(en, AudienceView(everyone=True), 40) == "For: everyone"
    assert audience_line(zh, AudienceView(departments=departments[:3]), 40) == (
        "对象：基础教育科、督导科、办公室"
    )


async def test_the_offices_pending_lists_its_open_notices_with_their_counts(room: Room) -> None:
    first = await post_notice(room)  # 成效, for 张三 李四 赵六 钱七, due 2030-12-10 17:00
    second = await post_notice(
        room, "通知 只给张三和王五\n对象：@张三 @王五\n截止：2030-12-01 17:00"
    )
    closed = await post_notice(room, "通知 已经办结的\n对象：全体")
    await room.post("p003", f"办结 #{closed}")
    for person in ("p001", "p002", "p004"):
        await room.post(person, f"收到 #{first}")
    await room.post("p004", f"完成 #{first}\n成效：已完成自查报告")
    await room.settle()
    staff_before = await room.dms("p001")

    await room.post("p003", "待办")
    await room.post("p001", "待办")
    await room.settle()

    answer = (await room.dms("p003"))[-1]
    assert answer.splitlines() == [
        "办公室发出的进行中通知（2 条，截止最近的在前）：",
        f"#{second}《只给张三和王五》 · 截止 2030-12-01 17:00 · 已确认 0/2",
        f"#{first}《关于报送作业管理自查情况的通知》 · 截止 2030-12-10 17:00"
        " · 已确认 3/4 · 已完成 1/4",
        f"查看一条通知的人员名单，发送：查询 #{second}",
        "您的待办（1 项）：",
        f"#{second}《只给张三和王五》 截止 2030-12-01 17:00 · 待确认",
    ]
    assert f"#{closed}" not in answer
    # A staff member's 待办 is their own items, as before.
    staff = (await room.dms("p001"))[len(staff_before) :]
    assert staff == [
        f"您的待办（2 项）：\n#{second}《只给张三和王五》 截止 2030-12-01 17:00 · 待确认\n"
        f"#{first}《关于报送作业管理自查情况的通知》 截止 2030-12-10 17:00 · 已确认"
    ]
    # The group saw none of it.
    assert all("办公室发出" not in p["text"] for p in await room.group_posts())

    # The command the answer shows works typed exactly as shown.
    command = answer.splitlines()[3].split("：", 1)[1]
    await room.post("p003", command)
    await room.settle()
    names = (await room.dms("p003"))[-1]
    assert names.startswith(f"#{second}《只给张三和王五》")
    assert "尚未完成的 2 人（仅发给您）：" in names and "张三" in names and "王五" in names


async def test_the_offices_pending_is_capped_and_names_the_rest(room: Room) -> None:
    now = dt.datetime.now(dt.UTC)
    ids = [
        await make_notice(room.db, now, title=f"第{i}号", deadline=now + dt.timedelta(days=i))
        for i in range(1, 13)
    ]
    await room.post("p003", "待办")
    await room.settle()
    lines = (await room.dms("p003"))[-1].splitlines()
    assert lines[0] == "办公室发出的进行中通知（12 条，截止最近的在前）："
    assert [line.split("《")[0] for line in lines[1:11]] == [f"#{i}" for i in ids[:10]]
    assert lines[11] == f"……另有 2 条截止较晚的未列出：#{ids[10]} #{ids[11]}"
    assert lines[12] == f"查看一条通知的人员名单，发送：查询 #{ids[0]}"


async def test_help_shows_the_status_command_as_it_can_be_typed(room: Room) -> None:
    await room.post("p003", "帮助")
    await room.settle()
    (empty,) = await room.dms("p003")
    assert "查询 #编号 — 一条通知的办理情况；私聊发送时附未完成人员名单" in empty
    assert "例如发送" not in empty  # no notice yet: no example that would not work

    notice_id = await post_notice(room)
    await room.post("p003", "帮助")
    await room.post("p001", "帮助")
    await room.settle()
    office = (await room.dms("p003"))[-1]
    assert "待办 — 办公室发出的进行中通知及计数" in office
    (shown,) = [line for line in office.splitlines() if "例如发送：" in line]
    command = shown.split("：", 1)[1]
    assert command == f"查询 #{notice_id}"
    staff = (await room.dms("p001"))[-1]
    assert f"例如发送：查询 #{notice_id}" in staff
    assert "办公室发出" not in staff

    await room.post("p003", command)
    await room.settle()
    answer = (await room.dms("p003"))[-1]
    assert answer.startswith(f"#{notice_id}《关于报送作业管理自查情况的通知》")
    assert "尚未完成的 4 人（仅发给您）：" in answer and "钱七" in answer
