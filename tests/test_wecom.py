"""WeCom end to end: the real app against a loopback fake of the WeCom API, callbacks encrypted."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.app import create_app
from bot.appkeys import BOT, DATABASE
from bot.config import validate_config
from bot.core.notices import publish_notice
from bot.core.platform import Card, OutboundMessage
from bot.platforms.wecom import INERT, inert_app_text, inert_markdown, robot_markdown
from bot.platforms.wecom_crypto import WecomCipher, build_xml, signature
from storage.db import Database
from storage.domain import Actor, Audience, NoticeDraft
from storage.models import Assignment, InboundRecord, OutboxMessage
from storage.types import AssignmentState, Channel, OutboxState
from tests.fakes.wecom_server import FakeWecom, rendered

from support import assignment, seed_people, snapshot

# Tencent's official callback sample (vector 1 of WeCom's crypto, docs/platforms/wecom.md).
CORP_ID = "ww1436e0e65a779aee"
TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
AGENT_ID = 1000002
ENVIRON = {
    "WECOM_SECRET": "app-secret",
    "WECOM_TOKEN": TOKEN,
    "WECOM_AES_KEY": AES_KEY,
    "WECOM_ROBOT_KEY": "robot-key",
}


@dataclass
class Wecom:
    """The app under test, its client, and the fake WeCom."""

    client: TestClient[Any, Any]
    fake: FakeWecom
    db: Database
    cipher: WecomCipher

    def callback_query(self, encrypted: str, *, ts: str = "1700000000", nonce: str = "n1") -> str:
        sig = signature(TOKEN, ts, nonce, encrypted)
        return f"msg_signature={sig}&timestamp={ts}&nonce={nonce}"

    async def deliver(self, fields: dict[str, Any], *, encrypted: str | None = None) -> Any:
        """POST one callback the way WeCom does: encrypted, signed, wrapped in XML."""
        encrypted = encrypted or self.cipher.encrypt(build_xml(fields).decode())
        body = build_xml({"ToUserName": CORP_ID, "Encrypt": encrypted, "AgentID": AGENT_ID})
        return await self.client.post(
            f"/callbacks/wecom?{self.callback_query(encrypted)}",
            data=body,
            headers={"Content-Type": "text/xml"},
        )


async def wait_for(predicate: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def wait_db(db: Database, query: Any, expected: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        async with db.read() as s:
            if (await s.execute(query)).scalar() == expected:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{query} never became {expected!r}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def wecom(db: Database) -> AsyncIterator[Wecom]:
    await seed_people(db, dt.datetime.now(dt.UTC))
    async with FakeWecom(
        corp_id=CORP_ID, corp_secret="app-secret", agent_id=AGENT_ID, robot_key="robot-key"
    ) as fake:
        raw = {
            "database": {"url": db.url.render_as_string(hide_password=False)},
            "group": {"platform": "wecom", "chat_id": "robot"},
            "platforms": {
                "wecom": {
                    "corp_id": CORP_ID,
                    "agent_id": AGENT_ID,
                    "api_base": fake.api_base,
                    "rate_limited_retry": "1s",
                }
            },
            "delivery": {"backoff_base": "1s", "backoff_cap": "2s"},
        }
        app = create_app(validate_config(raw, "<test>", ENVIRON), ENVIRON)
        async with TestClient(TestServer(app)) as client:
            yield Wecom(client, fake, app[DATABASE], WecomCipher(AES_KEY, CORP_ID))


async def publish(
    w: Wecom,
    people: tuple[str, ...],
    *,
    title: str = "关于报送作业管理自查情况的通知",
    body: str = "请于12月10日前报送自查报告。",
) -> int:
    app = w.client.app
    assert app is not None
    draft = NoticeDraft(
        title=title,
        body=body,
        audience=Audience(people=people),
        deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=7),
    )
    async with w.db.transaction() as s:
        notice = await publish_notice(
            s, app[BOT], draft, actor=Actor.system("cli"), now=dt.datetime.now(dt.UTC)
        )
        return notice.id


async def test_url_verification_answers_the_decrypted_echostr(wecom: Wecom) -> None:
    # Vector 1's GET, exactly as WeCom sends it (echostr URL-encoded, with + / =).
    echostr = (
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
    )
    query = (
        "msg_signature=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb&timestamp=1476416373"
        f"&nonce=47744683&echostr={quote(echostr, safe='')}"
    )
    resp = await wecom.client.get(f"/callbacks/wecom?{query}")
    assert resp.status == 200
    assert await resp.text() == "1288432023552776189"

    forged = query.replace("012bc692", "112bc692")
    assert (await wecom.client.get(f"/callbacks/wecom?{forged}")).status == 401


async def test_the_official_sample_message_is_stored_and_a_stranger_is_ignored(
    wecom: Wecom,
) -> None:
    encrypted = (
        "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3Ny"
        "eTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqf"
        "de0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2p"
        "FrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg8"
        "4EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
    )
    body = build_xml({"ToUserName": CORP_ID, "Encrypt": encrypted, "AgentID": AGENT_ID})
    query = (
        "msg_signature=0c3914025cb4b4d68103f6bfc8db550f79dcf48e"
        "&timestamp=1476422779&nonce=1597212914"
    )
    resp = await wecom.client.post(f"/callbacks/wecom?{query}", data=body)
    assert resp.status == 200 and await resp.text() == "success"
    await wait_db(
        wecom.db,
        select(InboundRecord.note).where(InboundRecord.event_id == "1456453720"),
        "unknown_dm",
    )


@pytest.mark.parametrize("fault", ["signature", "ciphertext", "xml_bomb", "not_xml"])
async def test_a_tampered_or_malformed_callback_is_refused_and_stores_nothing(
    wecom: Wecom, fault: str
) -> None:
    before = await snapshot(wecom.db)
    fields = wecom.fake.text_message("zhangsan", "待办")
    good = wecom.cipher.encrypt(build_xml(fields).decode())
    if fault == "signature":
        body = build_xml({"ToUserName": CORP_ID, "Encrypt": good, "AgentID": AGENT_ID})
        query = wecom.callback_query(good).replace("msg_signature=", "msg_signature=0")
        resp = await wecom.client.post(f"/callbacks/wecom?{query}", data=body)
        assert resp.status == 401
    elif fault == "ciphertext":
        bad = good[:40] + ("A" if good[40] != "A" else "B") + good[41:]
        resp = await wecom.deliver(fields, encrypted=bad)  # signed correctly over the bad text
        assert resp.status == 400
    elif fault == "xml_bomb":
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
            b"<xml><Encrypt>&lol3;</Encrypt></xml>"
        )
        started = time.monotonic()
        resp = await wecom.client.post(f"/callbacks/wecom?{wecom.callback_query('x')}", data=bomb)
        assert resp.status == 400 and time.monotonic() - started < 1
    else:
        resp = await wecom.client.post(f"/callbacks/wecom?{wecom.callback_query('x')}", data=b"{}")
        assert resp.status == 400
    assert "error" in await resp.json()
    async with wecom.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(InboundRecord)) == 0
    assert await snapshot(wecom.db) == before


async def test_the_full_flow_robot_cards_chat_ack_click_and_a_repeated_callback(
    wecom: Wecom,
) -> None:
    fake = wecom.fake
    fake.fail_next("/cgi-bin/webhook/send", 45009)  # the robot is rate limited at first
    notice_id = await publish(wecom, ("p001", "p002"))

    # The group sees the notice through the robot, after one retry.
    await wait_for(lambda: len(fake.robot_sent) == 1 and len(fake.cards()) == 2)
    (post,) = fake.robot_sent
    assert f"#{notice_id}" in post.content and "关于报送作业管理自查情况的通知" in post.content
    # The card says who it is for; no other line names anyone (the tally is counts only).
    assert "对象：张三、李四" in post.content.splitlines()
    rest = post.content.replace("对象：张三、李四", "")
    assert "张三" not in rest and "李四" not in rest
    # The fake has the post; the sender records it a moment later.
    post_row = OutboxMessage.idempotency_key == f"notice:{notice_id}:post"
    await wait_db(wecom.db, select(OutboxMessage.state).where(post_row), OutboxState.SENT)
    async with wecom.db.read() as s:
        row = (await s.scalars(select(OutboxMessage).where(post_row))).one()
    assert (row.state.value, row.attempts) == ("sent", 2)

    # Each assignee has a personal card with a 收到 button; task ids are unique.
    cards = {c.touser[0]: c for c in fake.cards()}
    assert set(cards) == {"zhangsan", "lisi"}
    assert len({c.task_id for c in cards.values()}) == 2
    assert cards["zhangsan"].card["button_list"][0]["key"] == f"ack:{notice_id}"
    assert "对象：张三、李四" in cards["zhangsan"].card["sub_title_text"].splitlines()

    # 李四 acknowledges in the app chat.
    assert (await wecom.deliver(fake.text_message("lisi", f"收到 #{notice_id}"))).status == 200
    await wait_db(
        wecom.db,
        select(Assignment.state).where(
            Assignment.notice_id == notice_id, Assignment.person_id == "p002"
        ),
        AssignmentState.ACKNOWLEDGED,
    )
    assert (await assignment(wecom.db, notice_id, "p002")).ack_channel is Channel.DM

    # 张三 clicks his card: acknowledged, and that card now says 已确认.
    click = fake.click("zhangsan", cards["zhangsan"].task_id, f"ack:{notice_id}")
    first = wecom.cipher.encrypt(build_xml(click).decode())
    assert (await wecom.deliver(click, encrypted=first)).status == 200
    await wait_for(lambda: len(fake.card_updates) == 1)
    (update,) = fake.card_updates
    assert update.userids == ["zhangsan"] and update.replace_name == "已确认"
    assert fake.button_state(cards["zhangsan"].task_id, "zhangsan") == "已确认"
    a1 = await assignment(wecom.db, notice_id, "p001")
    assert (a1.state, a1.ack_channel) == (AssignmentState.ACKNOWLEDGED, Channel.BUTTON)

    # WeCom retries the same callback: answered, stored once, processed once.
    assert (await wecom.deliver(click, encrypted=first)).status == 200
    await asyncio.sleep(0.5)
    assert len(fake.card_updates) == 1
    async with wecom.db.read() as s:
        clicks = await s.scalar(
            select(func.count())
            .select_from(InboundRecord)
            .where(InboundRecord.event_id.like("zhangsan:%"))
        )
    assert clicks == 1

    # The acks added nothing to the group.
    assert len(fake.robot_sent) == 1


async def test_an_expired_token_is_refreshed_and_the_call_retried_once(wecom: Wecom) -> None:
    fake = wecom.fake
    await publish(wecom, ("p001",))
    await wait_for(lambda: len(fake.cards()) == 1)
    assert fake.token_requests == 1  # cached across calls

    fake.expire_tokens()
    await publish(wecom, ("p002",))
    await wait_for(lambda: len(fake.cards()) == 2)
    assert fake.token_requests == 2
    assert fake.errcodes[42001] == 1


async def test_a_long_notice_is_split_cleanly_for_the_robot(wecom: Wecom) -> None:
    app = wecom.client.app
    assert app is not None
    body = "\n".join(f"第{i}条：请各校于本周内完成作业管理自查并报送自查报告。" for i in range(120))
    draft = NoticeDraft(title="长通知", body=body, audience=Audience(people=("p001",)))
    async with wecom.db.transaction() as s:
        await publish_notice(
            s, app[BOT], draft, actor=Actor.system("cli"), now=dt.datetime.now(dt.UTC)
        )
    await wait_for(lambda: len(wecom.fake.robot_sent) >= 2)
    await asyncio.sleep(0.3)
    pieces = [p.content for p in wecom.fake.robot_sent]
    assert all(len(p.encode()) <= 4096 for p in pieces)
    joined = "\n".join(pieces)
    for i in (0, 59, 119):  # every line arrives whole, in order
        assert f"第{i}条：请各校于本周内完成作业管理自查并报送自查报告。" in joined
    assert joined.index("第0条") < joined.index("第119条")


# -- what people wrote is shown, never interpreted (issue 13, item 8) ---------------------------

# Text built from WeCom's syntax characters, so that hypothesis tries their combinations.
SYNTAX_TEXT = st.lists(
    st.sampled_from([*'<>@&#;[]()*_`!: \n\tax/="', "font", "all", "lt", "登记", "http://e.x"]),
    max_size=40,
).map("".join) | st.text(max_size=60)

HOSTILE_TITLE = "[登记链接](http://evil.example/login) <@all>"
HOSTILE_BODY = (
    '<font color="warning">紧急</font> **加急**\n# 省厅通知\n> 请点击 [这里](http://evil.example)'
    " &lt;@zhangsan&gt;"
)


def visible(content: str) -> str:
    """What a reader sees: the zero-width spaces are invisible."""
    return content.replace(INERT, "")


@given(SYNTAX_TEXT)
def test_inert_markdown_leaves_no_syntax_and_reads_as_written(text: str) -> None:
    escaped = inert_markdown(text)
    live = rendered(escaped)
    assert live.links == [] and live.mentions == [] and live.tags == []
    assert live.bold == [] and live.entities == []
    assert live.headings == 0 and live.quotes == 0
    assert visible(escaped) == visible(text)


@given(SYNTAX_TEXT)
def test_inert_app_text_leaves_no_tag_and_reads_as_written(text: str) -> None:
    escaped = inert_app_text(text)
    assert rendered(escaped).tags == [] and rendered(escaped).mentions == []
    assert visible(escaped) == visible(text)


@given(SYNTAX_TEXT.filter(bool), SYNTAX_TEXT, SYNTAX_TEXT)
def test_only_the_bots_bold_title_renders_in_a_robot_post(
    title: str, body: str, status: str
) -> None:
    content = robot_markdown(OutboundMessage(text="", card=Card(title, body, status)))
    live = rendered(content)
    assert live.links == [] and live.mentions == [] and live.tags == [] and live.entities == []
    assert live.headings == 0 and live.quotes == 0
    one_line = " ".join(title.split("\n"))
    assert live.bold == [inert_markdown(one_line)]
    assert visible(content).startswith(f"**{visible(one_line)}**")


async def test_a_hostile_title_reaches_the_group_as_text_not_as_a_link_or_mention(
    wecom: Wecom,
) -> None:
    fake = wecom.fake
    notice_id = await publish(wecom, ("p001",), title=HOSTILE_TITLE, body=HOSTILE_BODY)
    await wait_for(lambda: len(fake.robot_sent) == 1 and len(fake.cards()) == 1)
    (post,) = fake.robot_sent
    assert post.msgtype == "markdown"
    live = rendered(post.content)
    assert live.links == [] and live.mentions == [] and live.tags == [] and live.entities == []
    assert live.headings == 0 and live.quotes == 0
    (bold,) = live.bold  # the bot's own title line, and nothing the sender wrote
    assert HOSTILE_TITLE in visible(bold) and f"#{notice_id}" in bold
    # Every character the sender wrote is there to read.
    for line in (HOSTILE_TITLE, *HOSTILE_BODY.splitlines()):
        assert line in visible(post.content)

    # In a private app text (待办 lists the title), no tag or mention forms either.
    await wecom.deliver(fake.text_message("zhangsan", "待办"))
    await wait_for(lambda: any(HOSTILE_TITLE in visible(t) for t in fake.texts("zhangsan")))
    (answer,) = [t for t in fake.texts("zhangsan") if HOSTILE_TITLE in visible(t)]
    assert rendered(answer).tags == [] and rendered(answer).mentions == []


async def test_a_link_tag_in_a_title_is_not_live_in_app_text(wecom: Wecom) -> None:
    fake = wecom.fake
    title = '<a href="http://evil.example/login">点此确认</a>'
    await publish(wecom, ("p001",), title=title)
    await wait_for(lambda: len(fake.cards()) == 1)
    await wecom.deliver(fake.text_message("zhangsan", "待办"))
    await wait_for(lambda: any("点此确认" in t for t in fake.texts("zhangsan")))
    (answer,) = [t for t in fake.texts("zhangsan") if "点此确认" in t]
    assert rendered(answer).tags == []
    assert title in visible(answer)
