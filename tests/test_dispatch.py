"""The dispatcher picks its behaviour from the platform's capabilities, and never loses an error."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import validate_config
from bot.core.context import BotContext
from bot.core.notices import publish_notice
from bot.core.platform import ButtonAction, Capabilities, InboundMessage, Reaction, Sender
from handlers.commands import Intent
from handlers.context import HandlerContext
from handlers.dispatch import Dispatcher
from handlers.router import Router
from storage.db import Database
from storage.domain import Actor, Audience, NoticeDraft
from storage.models import NoticeMessage, OutboxMessage
from storage.types import AssignmentState, Channel, InboundStatus

from support import assignment, seed_people

NOW = dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC)
NAMES = ("张三", "李四", "王五", "赵六", "钱七")


def bot_context(**caps: bool) -> BotContext:
    base = BotContext.from_config(validate_config({}, "<test>", {}))
    return dataclasses.replace(base, group_capabilities=Capabilities(**caps))


def dispatcher(db: Database, **caps: bool) -> Dispatcher:
    ctx = bot_context(**caps)
    return Dispatcher(db, ctx, {"local": ctx.group_capabilities}, clock=lambda: NOW)


async def notice_for_all(db: Database, ctx: BotContext) -> int:
    draft = NoticeDraft(title="关于报送自查报告的通知", audience=Audience(all=True))
    async with db.transaction() as s:
        notice = await publish_notice(s, ctx, draft, actor=Actor.system("cli"), now=NOW)
        s.add(
            NoticeMessage(
                notice_id=notice.id,
                platform="local",
                chat_id="main",
                message_id="m-1",
                created_at=NOW,
            )
        )
        return notice.id


def said(person: str, text: str, n: int, **kw: Any) -> InboundMessage:
    return InboundMessage(
        platform="local",
        event_id=f"e{n}",
        chat_id="main",
        sender=Sender(person),
        text=text,
        message_id=f"u{n}",
        **kw,
    )


async def outbox(db: Database) -> list[OutboxMessage]:
    async with db.read() as s:
        return list((await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def test_without_edits_an_ack_posts_nothing_in_the_group_and_confirms_privately(
    db: Database,
) -> None:
    await seed_people(db, NOW)
    d = dispatcher(db, dm=True)
    notice_id = await notice_for_all(db, d.bot)
    before = len(await outbox(db))

    handled = await d.handle(said("p001", "收到", 1, reply_to="m-1"))

    assert handled.status is InboundStatus.PROCESSED
    new = (await outbox(db))[before:]
    assert [(m.purpose, m.target_kind, m.target) for m in new] == [("reply", "person", "p001")]
    assert f"#{notice_id}" in new[0].payload["text"]


async def test_without_dms_names_never_reach_the_group(db: Database) -> None:
    await seed_people(db, NOW)
    d = dispatcher(db, edit=True)
    notice_id = await notice_for_all(db, d.bot)
    before = len(await outbox(db))

    await d.handle(said("p003", "待办 全部", 1))
    await d.handle(said("p003", f"待办 #{notice_id}", 2))
    await d.handle(said("p003", f"查询 #{notice_id}", 3))

    new = (await outbox(db))[before:]
    assert [(m.target_kind, m.payload["reply_to"]) for m in new] == [
        ("chat", "u1"),
        ("chat", "u2"),
        ("chat", "u3"),
    ]
    for message in new:
        assert not any(name in message.payload["text"] for name in NAMES), message.payload
    assert "私聊" in new[0].payload["text"]
    assert "已确认 0" in new[2].payload["text"]


async def test_a_check_mark_reaction_on_the_notice_acks_and_elsewhere_is_ignored(
    db: Database,
) -> None:
    await seed_people(db, NOW)
    d = dispatcher(db, edit=True, reactions=True, dm=True)
    notice_id = await notice_for_all(db, d.bot)

    def react(n: int, key: str, on: str) -> Reaction:
        return Reaction("local", f"r{n}", "main", Sender("p001"), key, on)

    assert (await d.handle(react(1, "👍", "somewhere-else"))).note == "reaction"
    assert (await d.handle(react(2, "😂", "m-1"))).note == "chatter"
    assert (await d.handle(react(3, "✅", "m-1"))).note == "ack"
    a = await assignment(db, notice_id, "p001")
    assert (a.state, a.ack_channel) == (AssignmentState.ACKNOWLEDGED, Channel.REACTION)


async def test_a_button_from_a_non_assignee_is_explained_privately(db: Database) -> None:
    await seed_people(db, NOW)
    d = dispatcher(db, edit=True, buttons=True, dm=True)
    draft = NoticeDraft(title="只给张三", audience=Audience(people=("p001",)))
    async with db.transaction() as s:
        notice = await publish_notice(s, d.bot, draft, actor=Actor.system("cli"), now=NOW)
    before = len(await outbox(db))

    click = ButtonAction("local", "b1", "main", Sender("p004"), f"ack:{notice.id}")
    handled = await d.handle(click)

    assert handled.note == "refused"
    (reply,) = (await outbox(db))[before:]
    assert (reply.target_kind, reply.target) == ("person", "p004")
    assert "不是" in reply.payload["text"]


async def test_an_unexpected_error_is_answered_with_a_reference_that_is_logged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await seed_people(db, NOW)
    broken = Router()

    @broken.command(Intent.HELP)
    async def explode(ctx: HandlerContext) -> None:
        raise RuntimeError("the disk is on fire")

    ctx = bot_context(dm=True)
    d = Dispatcher(db, ctx, {"local": ctx.group_capabilities}, clock=lambda: NOW, router=broken)
    with caplog.at_level(logging.ERROR, logger="workbot.chat"):
        handled = await d.handle(said("p001", "帮助", 1))

    assert handled.status is InboundStatus.FAILED
    (reply,) = await outbox(db)
    found = re.search(r"参考编号 ([0-9a-f]{8})", reply.payload["text"])
    assert found is not None
    (record,) = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert record.exc_info is not None and "the disk is on fire" in str(record.exc_info[1])
    assert handled.note == f"error:{found.group(1)}"


async def test_a_dm_from_an_unknown_account_is_ignored(db: Database) -> None:
    d = dispatcher(db, dm=True)
    handled = await d.handle(
        InboundMessage("local", "e1", "dm", Sender("stranger"), "待办", is_direct=True)
    )
    assert handled.note == "unknown_dm"
    assert await outbox(db) == []
