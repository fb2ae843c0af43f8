"""The WeCom fake over real HTTP: tokens, app messages, cards and their updates, the robot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fakes.wecom_server import (
    APP_MARKDOWN_MAX_BYTES,
    APP_TEXT_MAX_BYTES,
    CONTENT_TOO_LONG,
    EMPTY_CONTENT,
    INVALID_AGENTID,
    INVALID_BUTTON_KEY,
    INVALID_CORPID,
    INVALID_MSGTYPE,
    INVALID_PARAMETER,
    INVALID_SECRET,
    INVALID_TASK_ID,
    INVALID_TOKEN,
    INVALID_WEBHOOK,
    MISSING_AGENTID,
    MISSING_BUTTON_KEY,
    MISSING_BUTTON_NAME,
    MISSING_CORPID,
    MISSING_SECRET,
    MISSING_TOKEN,
    NO_RECIPIENT,
    NO_VALID_RECIPIENT,
    RATE_LIMITED,
    RESPONSE_CODE_REFUSED,
    ROBOT_MARKDOWN_MAX_BYTES,
    ROBOT_TEXT_MAX_BYTES,
    TOKEN_EXPIRED,
    FakeWecom,
    ManualClock,
    to_xml,
    utf8_len,
)

CORP = "ww1436e0e65a779aee"
SECRET = "app-secret"
AGENT = 1000002
KEY = "robot-key-1"
HOURS_72 = 72 * 3600


@pytest.fixture
def clock() -> ManualClock:
    """Fake time for the fake."""
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeWecom]:
    """A running fake that knows three users."""
    async with FakeWecom(
        corp_id=CORP,
        corp_secret=SECRET,
        agent_id=AGENT,
        robot_key=KEY,
        users={"zhangsan", "lisi", "wangwu"},
        clock=clock,
    ) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client."""
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    """GET, expecting WeCom's HTTP 200 with a JSON object."""
    async with http.get(url, params=params) as response:
        assert response.status == 200
        data = await response.json()
    assert isinstance(data, dict)
    assert isinstance(data["errmsg"], str)
    return data


async def post(http: aiohttp.ClientSession, url: str, body: Any, **params: str) -> dict[str, Any]:
    """POST JSON, expecting WeCom's HTTP 200 with a JSON object."""
    async with http.post(url, params=params, json=body) as response:
        assert response.status == 200
        assert response.headers["Error-Code"] == str((await response.json())["errcode"])
        data = await response.json()
    assert isinstance(data, dict)
    return data


async def token(fake: FakeWecom, http: aiohttp.ClientSession) -> str:
    """A valid access token."""
    data = await get(http, f"{fake.api_base}/cgi-bin/gettoken", corpid=CORP, corpsecret=SECRET)
    assert data["errcode"] == 0
    return str(data["access_token"])


async def send(
    fake: FakeWecom, http: aiohttp.ClientSession, body: dict[str, Any], tok: str | None = None
) -> dict[str, Any]:
    """message/send with a valid token (unless one is given)."""
    tok = tok if tok is not None else await token(fake, http)
    return await post(http, f"{fake.api_base}/cgi-bin/message/send", body, access_token=tok)


async def update(
    fake: FakeWecom, http: aiohttp.ClientSession, body: dict[str, Any]
) -> dict[str, Any]:
    """message/update_template_card with a valid token."""
    tok = await token(fake, http)
    url = f"{fake.api_base}/cgi-bin/message/update_template_card"
    return await post(http, url, body, access_token=tok)


async def robot(
    fake: FakeWecom, http: aiohttp.ClientSession, body: dict[str, Any], key: str = KEY
) -> dict[str, Any]:
    """webhook/send."""
    return await post(http, f"{fake.api_base}/cgi-bin/webhook/send", body, key=key)


def text(content: str, touser: str = "zhangsan") -> dict[str, Any]:
    """An app text message."""
    return {"touser": touser, "msgtype": "text", "agentid": AGENT, "text": {"content": content}}


def markdown(content: str, touser: str = "zhangsan") -> dict[str, Any]:
    """An app markdown message."""
    return {
        "touser": touser,
        "msgtype": "markdown",
        "agentid": AGENT,
        "markdown": {"content": content},
    }


def card(task_id: str, touser: str = "zhangsan", **changes: Any) -> dict[str, Any]:
    """An app button_interaction card with two callback buttons and one link."""
    template: dict[str, Any] = {
        "card_type": "button_interaction",
        "main_title": {"title": "通知 #12：周五前提交材料"},
        "sub_title_text": "请确认收到",
        "task_id": task_id,
        "button_list": [
            {"text": "收到", "style": 1, "key": "ack:12"},
            {"text": "有疑问", "style": 2, "key": "ask:12"},
            {"text": "详情", "type": 1, "url": "https://example.org/n/12"},
        ],
    }
    template.update(changes)
    return {
        "touser": touser,
        "msgtype": "template_card",
        "agentid": AGENT,
        "template_card": template,
    }


def envelope(user: str, msg_type: str, clock: ManualClock) -> dict[str, str]:
    """The fields every callback from the fake starts with: to our corp, from `user`, now."""
    return {
        "ToUserName": CORP,
        "FromUserName": user,
        "CreateTime": str(int(clock())),
        "MsgType": msg_type,
    }


def chinese(n_bytes: int) -> str:
    """Text of exactly n_bytes UTF-8 bytes, mostly three-byte Chinese characters."""
    body = "通" * (n_bytes // 3)
    return body + "a" * (n_bytes - utf8_len(body))


# -- access tokens -----------------------------------------------------------------------------


async def test_gettoken_issues_a_token_and_repeats_it_within_its_life(
    fake: FakeWecom, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{fake.api_base}/cgi-bin/gettoken"
    first = await get(http, url, corpid=CORP, corpsecret=SECRET)
    assert first["errcode"] == 0 and first["errmsg"] == "ok"
    assert first["expires_in"] == 7200 and len(first["access_token"]) >= 32
    clock.advance(1000)
    again = await get(http, url, corpid=CORP, corpsecret=SECRET)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == 6200
    assert fake.token_requests == 2
    assert fake.valid_tokens() == [first["access_token"]]


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"corpid": CORP, "corpsecret": "wrong"}, INVALID_SECRET),
        ({"corpid": "ww0000000000000000", "corpsecret": SECRET}, INVALID_CORPID),
        ({"corpsecret": SECRET}, MISSING_CORPID),
        ({"corpid": CORP}, MISSING_SECRET),
    ],
)
async def test_gettoken_refuses_wrong_credentials(
    fake: FakeWecom, http: aiohttp.ClientSession, params: dict[str, str], errcode: int
) -> None:
    data = await get(http, f"{fake.api_base}/cgi-bin/gettoken", **params)
    assert data["errcode"] == errcode
    assert "access_token" not in data
    assert f"query?e={errcode}" in data["errmsg"]
    assert fake.token_requests == 1
    assert fake.valid_tokens() == []


async def test_token_errors_on_message_send(
    fake: FakeWecom, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{fake.api_base}/cgi-bin/message/send"
    missing = await post(http, url, text("hi"))
    assert missing["errcode"] == MISSING_TOKEN
    bogus = await post(http, url, text("hi"), access_token="not-a-token")
    assert bogus["errcode"] == INVALID_TOKEN

    first = await token(fake, http)
    assert (await send(fake, http, text("hi"), first))["errcode"] == 0
    fake.expire_tokens()
    assert (await send(fake, http, text("hi"), first))["errcode"] == TOKEN_EXPIRED
    second = await token(fake, http)
    assert second != first
    assert (await send(fake, http, text("hi"), second))["errcode"] == 0

    fake.invalidate_tokens()
    assert (await send(fake, http, text("hi"), second))["errcode"] == INVALID_TOKEN
    third = await token(fake, http)
    clock.advance(7199)
    assert (await send(fake, http, text("hi"), third))["errcode"] == 0
    clock.advance(1)
    assert (await send(fake, http, text("hi"), third))["errcode"] == TOKEN_EXPIRED
    assert await token(fake, http) not in (first, second, third)
    assert len(fake.sent) == 3
    assert fake.token_requests == 4


# -- app messages ------------------------------------------------------------------------------


async def test_app_text_limit_is_2048_utf8_bytes(
    fake: FakeWecom, http: aiohttp.ClientSession
) -> None:
    at_limit = chinese(APP_TEXT_MAX_BYTES)
    assert APP_TEXT_MAX_BYTES == 2048 and len(at_limit) < 700
    ok = await send(fake, http, text(at_limit, "zhangsan|lisi"))
    assert ok["errcode"] == 0 and ok["msgid"]
    assert "invaliduser" not in ok and "response_code" not in ok
    over = await send(fake, http, text(at_limit + "通"))
    assert over["errcode"] == CONTENT_TOO_LONG
    one_over = await send(fake, http, text(at_limit + "a"))
    assert one_over["errcode"] == CONTENT_TOO_LONG
    empty = await send(fake, http, text(""))
    assert empty["errcode"] == EMPTY_CONTENT

    [record] = fake.sent
    assert record.kind == "app" and record.msgtype == "text"
    assert record.touser == ["zhangsan", "lisi"]
    assert record.content == at_limit and record.msgid == ok["msgid"]
    assert fake.texts("lisi") == [at_limit]


async def test_app_markdown_limit_is_2048_utf8_bytes(
    fake: FakeWecom, http: aiohttp.ClientSession
) -> None:
    at_limit = "**通知**\n" + chinese(APP_MARKDOWN_MAX_BYTES - utf8_len("**通知**\n"))
    assert utf8_len(at_limit) == 2048
    assert (await send(fake, http, markdown(at_limit)))["errcode"] == 0
    assert (await send(fake, http, markdown(at_limit + "。")))["errcode"] == CONTENT_TOO_LONG
    assert [s.content for s in fake.sent] == [at_limit]


async def test_app_send_shape_errors(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    wrong_agent = text("hi") | {"agentid": 1000003}
    assert (await send(fake, http, wrong_agent))["errcode"] == INVALID_AGENTID
    no_agent = {k: v for k, v in text("hi").items() if k != "agentid"}
    assert (await send(fake, http, no_agent))["errcode"] == MISSING_AGENTID
    assert (await send(fake, http, text("hi") | {"agentid": str(AGENT)}))["errcode"] == 0
    image = {"touser": "zhangsan", "msgtype": "image", "agentid": AGENT, "image": {}}
    assert (await send(fake, http, image))["errcode"] == INVALID_MSGTYPE
    assert (await send(fake, http, text("hi", touser="")))["errcode"] == NO_RECIPIENT
    tok = await token(fake, http)
    url = f"{fake.api_base}/cgi-bin/message/send?access_token={tok}"
    async with http.post(url, data=b"{not json") as response:
        bad = await response.json()
    assert response.status == 200
    assert bad["errcode"] == INVALID_PARAMETER and "wrong json format" in bad["errmsg"]
    assert len(fake.sent) == 1


async def test_unknown_users_are_reported_not_refused(
    fake: FakeWecom, http: aiohttp.ClientSession
) -> None:
    partly = await send(fake, http, text("hi", touser="zhangsan|ghost|nobody"))
    assert partly["errcode"] == 0
    assert partly["invaliduser"] == "ghost|nobody"
    assert fake.sent[-1].invaliduser == ["ghost", "nobody"]
    only_unknown = await send(fake, http, text("hi", touser="ghost"))
    assert only_unknown["errcode"] == NO_VALID_RECIPIENT
    everyone = await send(fake, http, text("hi", touser="@all"))
    assert everyone["errcode"] == 0 and "invaliduser" not in everyone
    fake.users = None  # every user known
    assert "invaliduser" not in await send(fake, http, text("hi", touser="ghost"))
    assert len(fake.sent) == 3


# -- template cards ----------------------------------------------------------------------------


async def test_button_card_is_accepted_with_a_response_code(
    fake: FakeWecom, http: aiohttp.ClientSession
) -> None:
    first = await send(fake, http, card("n12-zhangsan"))
    assert first["errcode"] == 0
    assert first["msgid"] and first["response_code"]
    second = await send(fake, http, card("n12-lisi@x_1", touser="lisi"))
    assert second["msgid"] != first["msgid"]
    assert second["response_code"] != first["response_code"]
    [mine] = fake.cards("zhangsan")
    assert mine.task_id == "n12-zhangsan" and mine.response_code == first["response_code"]
    assert mine.card["button_list"][0]["key"] == "ack:12"
    assert fake.button_state("n12-zhangsan", "zhangsan") is None


async def test_duplicate_task_id_is_refused(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    assert (await send(fake, http, card("n12-a")))["errcode"] == 0
    again = await send(fake, http, card("n12-a", touser="lisi"))
    assert again["errcode"] == INVALID_TASK_ID
    assert "existed" in again["errmsg"]
    assert len(fake.sent) == 1


@pytest.mark.parametrize(
    ("changes", "errcode"),
    [
        ({"task_id": ""}, INVALID_TASK_ID),
        ({"task_id": "a" * 129}, INVALID_TASK_ID),
        ({"task_id": "n12 zhangsan"}, INVALID_TASK_ID),
        ({"task_id": "通知12"}, INVALID_TASK_ID),
        ({"main_title": {"title": ""}}, INVALID_PARAMETER),
        ({"main_title": {"desc": "no title"}}, INVALID_PARAMETER),
        ({"card_type": "fancy"}, INVALID_PARAMETER),
        ({"button_list": []}, INVALID_PARAMETER),
        ({"button_list": [{"text": f"b{i}", "key": f"k{i}"} for i in range(7)]}, INVALID_PARAMETER),
        ({"button_list": [{"key": "k"}]}, MISSING_BUTTON_NAME),
        ({"button_list": [{"text": "收到"}]}, MISSING_BUTTON_KEY),
        ({"button_list": [{"text": "收到", "key": "k" * 1025}]}, INVALID_BUTTON_KEY),
        (
            {"button_list": [{"text": "a", "key": "k"}, {"text": "b", "key": "k"}]},
            INVALID_BUTTON_KEY,
        ),
        ({"button_list": [{"text": "链接", "type": 1}]}, INVALID_PARAMETER),
    ],
)
async def test_button_card_validation(
    fake: FakeWecom, http: aiohttp.ClientSession, changes: dict[str, Any], errcode: int
) -> None:
    bad = card("n12-x")
    bad["template_card"].update(changes)
    data = await send(fake, http, bad)
    assert data["errcode"] == errcode
    assert fake.sent == []
    assert (await send(fake, http, card("n12-x")))["errcode"] == 0  # the task_id is still free


async def test_button_card_edges_are_accepted(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    six = [{"text": f"选项{i}", "key": f"k{i}"} for i in range(6)]
    long_key = [{"text": "收到", "key": "键" * 341 + "k"}]  # 1024 bytes
    assert utf8_len(long_key[0]["key"]) == 1024
    assert (await send(fake, http, card("a" * 128, button_list=six)))["errcode"] == 0
    assert (await send(fake, http, card("b-_@9", button_list=long_key)))["errcode"] == 0


# -- card updates ------------------------------------------------------------------------------


async def test_click_code_updates_the_card_once(
    fake: FakeWecom, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    await send(fake, http, card("n12-zhangsan"))
    clock.advance(30)
    fields = fake.click("zhangsan", "n12-zhangsan", "ack:12")
    assert fields == {
        **envelope("zhangsan", "event", clock),
        "Event": "template_card_event",
        "EventKey": "ack:12",
        "TaskId": "n12-zhangsan",
        "CardType": "button_interaction",
        "ResponseCode": fields["ResponseCode"],
        "AgentID": str(AGENT),
    }
    body = {
        "userids": ["zhangsan"],
        "agentid": AGENT,
        "response_code": fields["ResponseCode"],
        "button": {"replace_name": "已确认"},
    }
    done = await update(fake, http, body)
    assert done["errcode"] == 0 and done["invaliduser"] == []
    again = await update(fake, http, body)
    assert again["errcode"] == RESPONSE_CODE_REFUSED and "used" in again["errmsg"]

    [change] = fake.card_updates
    assert change.task_id == "n12-zhangsan" and change.clicked_by == "zhangsan"
    assert change.userids == ["zhangsan"] and change.replace_name == "已确认"
    assert fake.button_state("n12-zhangsan", "zhangsan") == "已确认"
    with pytest.raises(ValueError, match="already updated"):
        fake.click("zhangsan", "n12-zhangsan", "ack:12")


async def test_response_code_expires_after_72_hours(
    fake: FakeWecom, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    await send(fake, http, card("n12-all", touser="zhangsan|lisi"))
    early = fake.click("zhangsan", "n12-all", "ack:12")["ResponseCode"]
    late = fake.click("lisi", "n12-all", "ask:12")["ResponseCode"]

    def body(code: str, user: str) -> dict[str, Any]:
        return {
            "userids": [user],
            "agentid": AGENT,
            "response_code": code,
            "button": {"replace_name": "已处理"},
        }

    clock.advance(HOURS_72 - 1)
    assert (await update(fake, http, body(early, "zhangsan")))["errcode"] == 0
    clock.advance(2)
    expired = await update(fake, http, body(late, "lisi"))
    assert expired["errcode"] == RESPONSE_CODE_REFUSED and "expired" in expired["errmsg"]
    assert [u.userids for u in fake.card_updates] == [["zhangsan"]]
    assert fake.button_state("n12-all", "lisi") is None


async def test_update_template_card_refusals(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    sent = await send(fake, http, card("n12-zhangsan"))
    code = fake.click("zhangsan", "n12-zhangsan", "ack:12")["ResponseCode"]
    base = {
        "userids": ["zhangsan"],
        "agentid": AGENT,
        "response_code": code,
        "button": {"replace_name": "已确认"},
    }
    assert (await update(fake, http, base | {"agentid": 1}))["errcode"] == INVALID_AGENTID
    assert (await update(fake, http, base | {"button": {}}))["errcode"] == MISSING_BUTTON_NAME
    assert (await update(fake, http, base | {"userids": []}))["errcode"] == NO_RECIPIENT
    unknown = await update(fake, http, base | {"response_code": "made-up"})
    assert unknown["errcode"] == RESPONSE_CODE_REFUSED
    assert fake.card_updates == []  # refusals spend nothing: the code still works
    # the code the send answered is another one-time code for the same card
    by_send = await update(
        fake, http, base | {"response_code": sent["response_code"], "atall": 1, "userids": []}
    )
    assert by_send["errcode"] == 0
    assert fake.card_updates[-1].atall and fake.card_updates[-1].userids == ["zhangsan"]
    outsider = await update(fake, http, base | {"userids": ["zhangsan", "lisi"]})
    assert outsider["errcode"] == 0 and outsider["invaliduser"] == ["lisi"]
    assert fake.card_updates[-1].clicked_by == "zhangsan"


async def test_click_is_checked_against_sent_cards(
    fake: FakeWecom, http: aiohttp.ClientSession
) -> None:
    await send(fake, http, card("n12-zhangsan"))
    with pytest.raises(KeyError):
        fake.click("zhangsan", "n99", "ack:12")
    with pytest.raises(ValueError, match="not sent"):
        fake.click("lisi", "n12-zhangsan", "ack:12")
    with pytest.raises(ValueError, match="no callback button"):
        fake.click("zhangsan", "n12-zhangsan", "https://example.org/n/12")
    loose = fake.click("ghost", "n99", "x", check=False)
    assert loose["TaskId"] == "n99" and loose["ResponseCode"]


async def test_text_message_fields_and_xml(fake: FakeWecom, clock: ManualClock) -> None:
    first = fake.text_message("ChenJiaShun", "收到 #12")
    second = fake.text_message("ChenJiaShun", "收到 #12")
    assert first == {
        **envelope("ChenJiaShun", "text", clock),
        "Content": "收到 #12",
        "MsgId": first["MsgId"],
        "AgentID": str(AGENT),
    }
    assert first["MsgId"].isdigit() and first["MsgId"] != second["MsgId"]
    xml = to_xml(first)
    assert xml.startswith("<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>")
    assert f"<CreateTime>{first['CreateTime']}</CreateTime>" in xml
    assert "<Content><![CDATA[收到 #12]]></Content>" in xml
    assert xml.endswith(f"<AgentID>{AGENT}</AgentID></xml>")
    assert "<![CDATA[a]]]]><![CDATA[>b]]>" in to_xml({"Content": "a]]>b"})


# -- the group robot ---------------------------------------------------------------------------


async def test_robot_text_markdown_and_card(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    text_body = {
        "msgtype": "text",
        "text": {
            "content": "通知 #12 已发布",
            "mentioned_list": ["zhangsan", "@all"],
            "mentioned_mobile_list": ["13800001111"],
        },
    }
    assert await robot(fake, http, text_body) == {"errcode": 0, "errmsg": "ok"}
    md = {"msgtype": "markdown", "markdown": {"content": "**通知 #12**\n<@zhangsan> 请查收"}}
    assert (await robot(fake, http, md))["errcode"] == 0
    notice = {
        "msgtype": "template_card",
        "template_card": {
            "card_type": "text_notice",
            "main_title": {"title": "通知 #12"},
            "card_action": {"type": 1, "url": "https://example.org/n/12"},
        },
    }
    assert (await robot(fake, http, notice))["errcode"] == 0
    assert [s.msgtype for s in fake.robot_sent] == ["text", "markdown", "template_card"]
    assert all(s.kind == "robot" and s.key == KEY for s in fake.robot_sent)
    assert fake.robot_sent[1].content.startswith("**通知 #12**")
    assert fake.sent == []

    clickable = {"msgtype": "template_card", "template_card": card("r1")["template_card"]}
    assert (await robot(fake, http, clickable))["errcode"] == INVALID_PARAMETER
    no_action = {"msgtype": "template_card", "template_card": {"card_type": "text_notice"}}
    assert (await robot(fake, http, no_action))["errcode"] == INVALID_PARAMETER
    bad_mentions = {"msgtype": "text", "text": {"content": "x", "mentioned_list": "zhangsan"}}
    assert (await robot(fake, http, bad_mentions))["errcode"] == INVALID_PARAMETER
    assert len(fake.robot_sent) == 3


async def test_robot_limits_are_utf8_bytes(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    def md(content: str) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"content": content}}

    def tx(content: str) -> dict[str, Any]:
        return {"msgtype": "text", "text": {"content": content}}

    assert ROBOT_MARKDOWN_MAX_BYTES == 4096 and ROBOT_TEXT_MAX_BYTES == 2048
    assert (await robot(fake, http, md(chinese(4096))))["errcode"] == 0
    over = await robot(fake, http, md(chinese(4096) + "a"))
    assert over["errcode"] == INVALID_PARAMETER
    assert over["errmsg"].startswith("markdown.content exceed max length 4096")
    assert (await robot(fake, http, tx(chinese(2048))))["errcode"] == 0
    assert (await robot(fake, http, tx(chinese(2049))))["errcode"] == INVALID_PARAMETER
    assert (await robot(fake, http, tx("")))["errcode"] == EMPTY_CONTENT
    assert (await robot(fake, http, {"msgtype": "voice"}))["errcode"] == INVALID_MSGTYPE
    assert len(fake.robot_sent) == 2


async def test_robot_wrong_key(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    body = {"msgtype": "text", "text": {"content": "hi"}}
    assert (await robot(fake, http, body, key="other"))["errcode"] == INVALID_WEBHOOK
    assert (await robot(fake, http, body, key=""))["errcode"] == INVALID_WEBHOOK
    fake.add_robot("other")
    assert (await robot(fake, http, body, key="other"))["errcode"] == 0
    async with http.post(fake.webhook_url, json=body) as response:
        assert (await response.json())["errcode"] == 0


async def test_robot_allows_20_per_sliding_minute(
    fake: FakeWecom, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    body = {"msgtype": "text", "text": {"content": "hi"}}
    for i in range(20):
        assert (await robot(fake, http, body))["errcode"] == 0, i
        clock.advance(1)  # the 20 span t0 .. t0+19
    assert (await robot(fake, http, body))["errcode"] == RATE_LIMITED  # the 21st, at t0+20
    fake.add_robot("second")
    assert (await robot(fake, http, body, key="second"))["errcode"] == 0  # its own window
    clock.advance(39.5)  # t0+59.5: the first is still inside the minute
    assert (await robot(fake, http, body))["errcode"] == RATE_LIMITED
    clock.advance(0.5)  # t0+60: the first has left the window, one slot is free
    assert (await robot(fake, http, body))["errcode"] == 0
    assert (await robot(fake, http, body))["errcode"] == RATE_LIMITED
    clock.advance(60)
    for _ in range(20):
        assert (await robot(fake, http, body))["errcode"] == 0
    assert len([s for s in fake.robot_sent if s.key == KEY]) == 41
    assert fake.errcodes[RATE_LIMITED] == 3


# -- misbehaviour ------------------------------------------------------------------------------


async def test_fail_next_answers_errcodes(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    body = {"msgtype": "text", "text": {"content": "hi"}}
    fake.fail_next("webhook/send", RATE_LIMITED)
    assert (await robot(fake, http, body))["errcode"] == RATE_LIMITED
    assert (await robot(fake, http, body))["errcode"] == 0

    fake.fail_next("message/send", INVALID_TOKEN, times=2)
    fake.fail_next("message/send", -1, errmsg="system busy")
    tok = await token(fake, http)
    assert (await send(fake, http, text("a"), tok))["errcode"] == INVALID_TOKEN
    assert (await send(fake, http, text("a"), tok))["errcode"] == INVALID_TOKEN
    busy = await send(fake, http, text("a"), tok)
    assert busy["errcode"] == -1 and busy["errmsg"].startswith("system busy")
    assert (await send(fake, http, text("a"), tok))["errcode"] == 0

    fake.fail_next("gettoken", -1)
    busy_token = await get(
        http, f"{fake.api_base}/cgi-bin/gettoken", corpid=CORP, corpsecret=SECRET
    )
    assert busy_token["errcode"] == -1 and "access_token" not in busy_token
    fake.fail_next("webhook/send", INVALID_WEBHOOK)
    assert (await robot(fake, http, body))["errcode"] == INVALID_WEBHOOK
    assert len(fake.robot_sent) == 1 and len(fake.sent) == 1
    assert [r.errcode for r in fake.requests if r.path.endswith("webhook/send")] == [
        RATE_LIMITED,
        0,
        INVALID_WEBHOOK,
    ]


async def test_http_error_next(fake: FakeWecom, http: aiohttp.ClientSession) -> None:
    fake.http_error_next("message/send", 502, times=2)
    tok = await token(fake, http)
    url = f"{fake.api_base}/cgi-bin/message/send"
    for _ in range(2):
        async with http.post(url, params={"access_token": tok}, json=text("a")) as response:
            assert response.status == 502
            assert response.content_type == "text/html"
    assert (await send(fake, http, text("a"), tok))["errcode"] == 0
    assert [r.status for r in fake.requests if r.path.endswith("message/send")] == [502, 502, 200]
