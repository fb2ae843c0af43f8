"""Matrix against a real Synapse: the room, replies, ✅ reactions, m.replace tallies, DMs, and
restarts that neither double a message nor process an event twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from synapse import MatrixUser, SynapseServer, register

from bot.app import create_app
from bot.appkeys import BOT, DATABASE
from bot.config import validate_config
from bot.core.notices import publish_notice
from bot.platforms.registry import directory_columns
from storage.db import Database
from storage.directory import parse_people_csv, upsert_people
from storage.domain import Actor, Audience, NoticeDraft
from storage.models import InboundRecord, OutboxMessage
from storage.types import AssignmentState, Channel, OutboxState

from support import assignment

pytestmark = pytest.mark.matrix


@dataclass
class Room:
    """A work room on Synapse with the bot, two staff and the office."""

    server: SynapseServer
    bot: MatrixUser
    alice: MatrixUser
    bob: MatrixUser
    office: MatrixUser
    room_id: str

    def csv(self) -> bytes:
        return (
            "id,name,department,roles,matrix\n"
            f"p001,张三,基础教育科,staff,{self.alice.user_id}\n"
            f"p002,李四,基础教育科,staff,{self.bob.user_id}\n"
            f"p003,王五,办公室,office,{self.office.user_id}\n"
        ).encode()

    def config(self, db_url: str, **extra: Any) -> dict[str, Any]:
        return {
            "database": {"url": db_url},
            "group": {"platform": "matrix", "chat_id": self.room_id},
            "platforms": {
                "matrix": {
                    "homeserver": self.server.base_url,
                    "user_id": self.bot.user_id,
                    "sync_timeout": "5s",
                }
            },
            "delivery": {"backoff_base": "1s", "backoff_cap": "2s"},
            **extra,
        }

    @property
    def environ(self) -> dict[str, str]:
        return {"MATRIX_TOKEN": self.bot.access_token}

    async def bot_messages(self) -> list[dict[str, Any]]:
        """The bot's visible messages in the room: edits (m.replace) are not new messages."""
        return [
            e
            for e in await self.office.messages(self.room_id)
            if e["sender"] == self.bot.user_id
            and e["type"] == "m.room.message"
            and (e["content"].get("m.relates_to") or {}).get("rel_type") != "m.replace"
        ]

    async def edits(self) -> list[dict[str, Any]]:
        return [
            e
            for e in await self.office.messages(self.room_id)
            if e["sender"] == self.bot.user_id
            and (e["content"].get("m.relates_to") or {}).get("rel_type") == "m.replace"
        ]


async def eventually(check: Any, seconds: float = 30) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


@pytest.fixture
async def room(synapse: SynapseServer) -> Room:
    bot = await register(synapse, "workbot")
    alice = await register(synapse, "alice")
    bob = await register(synapse, "bob")
    office = await register(synapse, "office")
    room_id = await office.create_room(name="正式工作群", invite=[alice.user_id, bob.user_id])
    await alice.join(room_id)
    await bob.join(room_id)
    await office.invite(room_id, bot.user_id)  # the bot joins by itself once it syncs
    return Room(synapse, bot, alice, bob, office, room_id)


@pytest.fixture
async def app_client(room: Room, db: Database) -> AsyncIterator[TestClient[Any, Any]]:
    async with db.transaction() as s:
        await upsert_people(
            s,
            parse_people_csv(room.csv(), directory_columns()),
            actor=Actor.system("cli"),
            now=dt.datetime.now(dt.UTC),
        )
    url = db.url.render_as_string(hide_password=False)
    config = validate_config(room.config(url), "<test>", room.environ)
    async with TestClient(TestServer(create_app(config, room.environ))) as client:

        async def joined() -> bool:
            return room.bot.user_id in await room.office.joined_members(room.room_id)

        await eventually(joined)
        yield client


async def publish(
    client: TestClient[Any, Any], title: str = "关于报送作业管理自查情况的通知"
) -> int:
    app = client.app
    assert app is not None
    draft = NoticeDraft(
        title=title,
        body="请于12月10日前报送自查报告。",
        audience=Audience(people=("p001", "p002")),
        deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=7),
    )
    async with app[DATABASE].transaction() as s:
        notice = await publish_notice(
            s, app[BOT], draft, actor=Actor.system("cli"), now=dt.datetime.now(dt.UTC)
        )
        return notice.id


async def state_of(db: Database, notice_id: int, person: str) -> tuple[AssignmentState, Any]:
    a = await assignment(db, notice_id, person)
    return a.state, a.ack_channel


async def test_a_notice_appears_and_acks_by_reply_and_reaction_edit_its_tally(
    room: Room, app_client: TestClient[Any, Any], db: Database
) -> None:
    notice_id = await publish(app_client)

    async def notice_posted() -> list[dict[str, Any]]:
        return [m for m in await room.bot_messages() if f"#{notice_id}" in m["content"]["body"]]

    (post,) = await eventually(notice_posted)
    assert "关于报送作业管理自查情况的通知" in post["content"]["body"]
    assert "已确认 0/2" in post["content"]["body"]

    # A reply 收到 and a ✅ reaction both acknowledge.
    await room.alice.send_text(room.room_id, "收到", reply_to=post["event_id"])
    await room.bob.react(room.room_id, post["event_id"], "✅")

    async def both_acked() -> bool:
        a = await state_of(db, notice_id, "p001")
        b = await state_of(db, notice_id, "p002")
        return a == (AssignmentState.ACKNOWLEDGED, Channel.GROUP) and b == (
            AssignmentState.ACKNOWLEDGED,
            Channel.REACTION,
        )

    await eventually(both_acked)

    # The tally is an m.replace edit of the notice event; no new bot message appeared.
    async def tally_edited() -> list[dict[str, Any]]:
        return [
            e
            for e in await room.edits()
            if e["content"]["m.relates_to"]["event_id"] == post["event_id"]
            and "已确认 2/2" in e["content"]["m.new_content"]["body"]
        ]

    await eventually(tally_edited)
    assert len(await room.bot_messages()) == 1
    # The card says who it is for (in Matrix's text as on every platform); no other line names
    # anyone: who acknowledged is never shown, the tally is counts only.
    for message in await room.bot_messages():
        lines = message["content"]["body"].splitlines()
        assert "对象：张三、李四" in lines
        assert not [line for line in lines if "张三" in line and line != "对象：张三、李四"]


async def test_a_title_naming_people_or_the_room_notifies_nobody(
    room: Room, app_client: TestClient[Any, Any]
) -> None:
    """The attack (issue 13, item 8): a title that names a member and @room, and carries an
    HTML link. Matrix clients ping for a name in a plain body unless the event says whom it
    mentions; the bot says: nobody. The body stays plain text, no formatted_body."""
    # The control: a message naming alice (her display name is her localpart) without
    # m.mentions pings her.
    alice = room.alice.user_id[1:].split(":")[0]
    control = await room.office.send_text(room.room_id, f"{alice} 看一下")
    await eventually(lambda: _highlighted(room, control), seconds=10)
    title = f'请 {alice} 和 @room 立即 <a href="http://evil.example">登记</a>'
    notice_id = await publish(app_client, title)

    async def posted() -> list[dict[str, Any]]:
        return [m for m in await room.bot_messages() if f"#{notice_id}" in m["content"]["body"]]

    (post,) = await eventually(posted)
    assert title in post["content"]["body"]
    assert "formatted_body" not in post["content"] and "format" not in post["content"]
    for user in (room.alice, room.bob):
        assert post["event_id"] not in [e["event_id"] for e in await user.highlights()]
    assert post["content"]["m.mentions"] == {"user_ids": []}


async def _highlighted(room: Room, event_id: str) -> bool:
    return event_id in [e["event_id"] for e in await room.alice.highlights()]


async def test_a_dm_goes_to_a_direct_room_that_is_remembered(
    room: Room, app_client: TestClient[Any, Any], db: Database
) -> None:
    await room.alice.send_text(room.room_id, "待办")

    async def direct_rooms() -> dict[str, Any] | None:
        data = await room.bot.account_data("m.direct")
        return data if data and data.get(room.alice.user_id) else None

    direct = await eventually(direct_rooms)
    (dm_room,) = direct[room.alice.user_id]
    assert dm_room != room.room_id
    await room.alice.join(dm_room)

    async def answers() -> list[str]:
        return [
            e["content"]["body"]
            for e in await room.alice.messages(dm_room)
            if e["sender"] == room.bot.user_id and e["type"] == "m.room.message"
        ]

    assert await eventually(answers) == ["您没有待办事项。"]
    # A second answer reuses the room.
    await room.alice.send_text(dm_room, "帮助")

    async def two_answers() -> bool:
        return len(await answers()) == 2

    await eventually(two_answers)
    assert (await room.bot.account_data("m.direct") or {})[room.alice.user_id] == [dm_room]
    # Nothing was said in the group.
    assert await room.bot_messages() == []


# -- real `workbot serve` processes -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """A `workbot serve` subprocess on the room's config."""

    def __init__(self, workdir: Path, room: Room) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {**os.environ, **room.environ}
        self.env.pop("WORKBOT_CONFIG", None)
        db = workdir / "wb.db"
        cfg = room.config(f"sqlite+aiosqlite:///{db}")
        lines = [
            "[server]",
            f"port = {self.port}",
            "[database]",
            f'url = "{cfg["database"]["url"]}"',
            "[group]",
            'platform = "matrix"',
            f'chat_id = "{room.room_id}"',
            "[platforms.matrix]",
            f'homeserver = "{room.server.base_url}"',
            f'user_id = "{room.bot.user_id}"',
            'sync_timeout = "5s"',
        ]
        self.config = workdir / "config.toml"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        (workdir / "people.csv").write_bytes(room.csv())
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "serve.log"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bot", "-c", str(self.config), *args],
            env=self.env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "-c", str(self.config), "serve"],
                env=self.env,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=1
                ) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(self.log.read_text(errors="replace")[-3000:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def serve(room: Room, tmp_path: Path) -> Any:
    s = Serve(tmp_path, room)
    s.cli("migrate")
    s.cli("people", "import", str(tmp_path / "people.csv"))
    yield s
    if s.proc is not None:
        s.kill(signal.SIGTERM)


async def test_sigkill_right_after_a_notice_then_restart_posts_it_exactly_once(
    room: Room, serve: Serve
) -> None:
    serve.start()

    async def joined() -> bool:
        return room.bot.user_id in await room.office.joined_members(room.room_id)

    await eventually(joined)
    serve.cli("notice", "create", "--title", "断电测试通知", "--to", "person:p001", "person:p002")
    serve.kill(signal.SIGKILL)
    serve.start()

    async def posted() -> list[dict[str, Any]]:
        return [m for m in await room.bot_messages() if "断电测试通知" in m["content"]["body"]]

    await eventually(posted)
    await asyncio.sleep(2)  # any second copy would have arrived by now
    assert len(await posted()) == 1


async def test_after_a_restart_no_event_is_processed_twice(room: Room, serve: Serve) -> None:
    serve.start()

    async def joined() -> bool:
        return room.bot.user_id in await room.office.joined_members(room.room_id)

    await eventually(joined)
    await room.alice.send_text(room.room_id, "待办")
    db = Database(f"sqlite+aiosqlite:///{serve.workdir / 'wb.db'}")
    try:

        async def handled() -> bool:
            """The event is processed and its private answer sent: a kill now tests only
            whether the restart processes the event again (a kill during the send is the
            outbox's lease window, covered by the SIGKILL test above and the outbox tests)."""
            async with db.read() as s:
                processed = await s.scalar(
                    select(func.count())
                    .select_from(InboundRecord)
                    .where(InboundRecord.status == "processed")
                )
                sent = await s.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.state == OutboxState.SENT)
                )
            return bool(processed and sent)

        await eventually(handled)
        serve.kill(signal.SIGKILL)
        serve.start()
        await room.bob.send_text(room.room_id, "大家好")  # new traffic after the restart
        await asyncio.sleep(3)
        async with db.read() as s:
            rows = (await s.execute(select(InboundRecord.event_id, InboundRecord.status))).all()
        ids = [event_id for event_id, _ in rows]
        assert len(ids) == len(set(ids))
        direct = await room.bot.account_data("m.direct") or {}
        (dm_room,) = direct[room.alice.user_id]
        replies = [
            e
            for e in await room.bot.messages(dm_room)
            if e["sender"] == room.bot.user_id and e["type"] == "m.room.message"
        ]
        assert len(replies) == 1
    finally:
        await db.dispose()


async def test_a_resend_with_the_same_outbox_key_is_not_doubled(room: Room) -> None:
    from bot.core.platform import Delivery, OutboundMessage, TargetKind
    from bot.platforms.matrix import MatrixConfig, MatrixPlatform

    config = MatrixConfig(homeserver=room.server.base_url, user_id=room.bot.user_id)
    platform = MatrixPlatform(config, room.bot.access_token, room_id=room.room_id)
    try:
        await room.bot.join(room.room_id)
        delivery = Delivery(
            outbox_id=1,
            idempotency_key="notice:1:post",
            target_kind=TargetKind.CHAT,
            target=room.room_id,
            message=OutboundMessage(text="通知 #1《重发测试》"),
        )
        first = await platform.send(delivery)
        again = await platform.send(delivery)  # e.g. the process died before recording it
        assert first.message_id == again.message_id
        assert [m["content"]["body"] for m in await room.bot_messages()] == ["通知 #1《重发测试》"]
    finally:
        await platform.close()


async def test_a_429_is_retried_later_after_retry_after_ms(
    synapse: SynapseServer, tmp_path: Path
) -> None:
    from bot.core.platform import Delivery, OutboundMessage, RetryLater, TargetKind
    from bot.platforms.matrix import MatrixConfig, MatrixPlatform

    limited = SynapseServer(
        synapse.python, extra_config={"rc_message": {"per_second": 0.1, "burst_count": 2}}
    )
    limited.start(tmp_path / "limited")
    try:
        bot = await register(limited, "workbot")
        room_id = await bot.create_room()
        config = MatrixConfig(homeserver=limited.base_url, user_id=bot.user_id)
        platform = MatrixPlatform(config, bot.access_token, room_id=room_id)
        try:
            with pytest.raises(RetryLater) as caught:
                for i in range(10):
                    await platform.send(
                        Delivery(
                            outbox_id=i,
                            idempotency_key=f"k{i}",
                            target_kind=TargetKind.CHAT,
                            target=room_id,
                            message=OutboundMessage(text=f"{i}"),
                        )
                    )
            assert caught.value.rate_limited
            assert caught.value.retry_after is not None and caught.value.retry_after > 0
        finally:
            await platform.close()
    finally:
        limited.stop()
