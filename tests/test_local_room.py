"""The local room's two write paths (SQLAlchemy, and the SQLite fast path) store alike."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.app import create_app
from bot.config import validate_config
from storage import local_room
from storage.db import Database
from storage.models import InboundRecord, LocalMessage
from storage.types import InboundStatus

NOW = dt.datetime(2026, 11, 27, 9, 30, 15, 123456, tzinfo=dt.UTC)


def payload(message_id: int, post: local_room.Post) -> dict[str, Any]:
    return {"id": message_id, "text": post.text, "list": [1, "二"]}


POSTS = [
    local_room.Post("p001", "收到", reply_to=3),
    local_room.Post("p002", "今天食堂吃什么", actionable=False),
    local_room.Post("p003", "hi", client_id="c-1", direct=True),
    local_room.Post("p003", "hi again", client_id="c-1"),
]


async def stored(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async with db.read() as s:
        messages = [
            (m.sender, m.to, m.text, m.reply_to, m.client_id, m.ts, m.card)
            for m in (await s.scalars(select(LocalMessage).order_by(LocalMessage.id))).all()
        ]
        events = [
            (e.source, e.payload, e.status, e.received_at, e.note)
            for e in (await s.scalars(select(InboundRecord).order_by(InboundRecord.id))).all()
        ]
    return messages, events


async def test_the_fast_path_writes_what_sqlalchemy_would(tmp_path: Any) -> None:
    from storage.migrate import upgrade

    results = []
    for name in ("orm", "fast"):
        db = Database(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        await upgrade(db)
        if name == "orm":
            async with db.transaction() as s:
                first = await local_room.append_posts(s, POSTS, now=NOW, inbound=payload)
            async with db.transaction() as s:
                again = await local_room.append_posts(s, POSTS[2:], now=NOW, inbound=payload)
        else:
            appender = local_room.SqliteAppender(db.sqlite_connection)
            first = appender.append(POSTS, now=NOW, inbound=payload)
            again = appender.append(POSTS[2:], now=NOW, inbound=payload)
            appender.close()
        results.append((first, again, await stored(db)))
        await db.dispose()
    (orm_first, orm_again, orm_rows), (fast_first, fast_again, fast_rows) = results
    assert orm_first == fast_first
    assert [(r.id, r.duplicate) for r in fast_first] == [
        (1, False),
        (2, False),
        (3, False),
        (3, True),
    ]
    assert orm_again == fast_again == [local_room.Stored(3, True), local_room.Stored(3, True)]
    assert orm_rows == fast_rows
    messages, events = fast_rows
    assert messages[0][5] == NOW
    assert [e[1]["id"] for e in events] == [1, 3]
    assert {e[2] for e in events} == {InboundStatus.RECEIVED}


async def test_the_room_answers_only_on_its_own_address(tmp_path: Path) -> None:
    """DNS rebinding: a request naming another host gets 400 and reads or posts nothing."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'room.db'}"
    config = validate_config({"database": {"url": url}}, "<test>", {})
    async with TestClient(TestServer(create_app(config, {}, workers=False))) as client:
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
            read = await client.get("/local/v1/messages", headers={"Host": host})
            assert read.status == 400
            assert (await read.json())["error"]["code"] == "bad_host"
            posted = await client.post(
                "/local/v1/messages",
                json={"sender": "p003", "to": "bot", "text": "待办 全部"},
                headers={"Host": host},
            )
            assert posted.status == 400
        for host in ("127.0.0.1:8080", "localhost", "[::1]:8080"):
            assert (await client.get("/local/v1/messages", headers={"Host": host})).status == 200
        everything = await client.get("/local/v1/messages", headers={"Host": "127.0.0.1"})
        assert (await everything.json())["messages"] == []  # the refused post left nothing
