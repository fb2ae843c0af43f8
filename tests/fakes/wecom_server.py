"""A loopback fake of the WeCom (企业微信) server API that workbot uses, checked like the real one.

``async with FakeWecom(corp_id="ww…", corp_secret="s", agent_id=1000002, robot_key="k") as fake:``
serves ``fake.api_base`` (``http://127.0.0.1:PORT``) with:

- ``GET /cgi-bin/gettoken``: access tokens that live 7200 s on ``fake.clock`` (a repeated call
  within their life returns the same token, as WeCom documents), ``expire_tokens`` (→ 42001)
  and ``invalidate_tokens`` (→ 40014);
- ``POST /cgi-bin/message/send``: text, markdown and template cards from the self-built app,
  with WeCom's byte limits, ``task_id`` rules, ``invaliduser`` and a ``response_code`` for
  interactive cards;
- ``POST /cgi-bin/message/update_template_card``: each response code once, within 72 h;
- ``POST /cgi-bin/webhook/send``: the group robot, 20 messages per sliding minute per key.

Like WeCom, every answer is HTTP 200 with the outcome in ``errcode`` (0 = OK) and an errmsg
carrying a hint. ``click`` and ``text_message`` give the decrypted fields WeCom would post to the
app's callback URL (encrypting and posting them is the test's business); ``to_xml`` renders them.
Misbehaviour: ``fail_next`` (an errcode) and ``http_error_next`` (an HTTP status).

Error codes follow WeCom's global error code list where it names the case; the ones it does not
name are constants below (``RESPONSE_CODE_REFUSED``), so a test can refer to them by name.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .loopback import LoopbackServer, RawRequest, SlidingWindows

# -- error codes (WeCom's global list, https://developer.work.weixin.qq.com/document/path/90313) --
OK = 0
BUSY = -1  # 系统繁忙
INVALID_SECRET = 40001  # 不合法的secret参数
INVALID_MSGTYPE = 40008  # 不合法的msgtype参数
INVALID_CORPID = 40013  # 不合法的CorpID
INVALID_TOKEN = 40014  # 不合法的access_token
INVALID_AGENTID = 40056  # 不合法的agentid
INVALID_PARAMETER = 40058  # 不合法的参数 (also the robot's "content exceed max length")
MISSING_TOKEN = 41001  # 缺少access_token参数
MISSING_CORPID = 41002  # 缺少corpid参数
MISSING_SECRET = 41004  # 缺少secret参数
MISSING_AGENTID = 41011  # 缺少agentid参数
TOKEN_EXPIRED = 42001  # access_token已过期
INVALID_TASK_ID = 42014  # 任务卡片消息的task_id不合法 (empty, too long, or already used)
INVALID_BUTTON_KEY = 42018  # 按钮key值不合法
MISSING_BUTTON_KEY = 42019  # 缺少按钮key值
MISSING_BUTTON_NAME = 42020  # 缺少按钮名称
EMPTY_CONTENT = 44004  # 文本消息content参数为空
CONTENT_TOO_LONG = 45002  # 消息内容大小超过限制
RATE_LIMITED = 45009  # 接口调用超过限制
NO_VALID_RECIPIENT = 81013  # UserID、部门ID、标签ID全部非法或无权限
NO_RECIPIENT = 82001  # 指定的成员/部门/标签全部为空
INVALID_WEBHOOK = 93000  # invalid webhook url
# WeCom documents no code for a used or expired response_code; this fake answers the generic
# "invalid parameter" (40098, sometimes guessed, is officially 成员尚未实名认证).
RESPONSE_CODE_REFUSED = INVALID_PARAMETER

# -- limits --------------------------------------------------------------------------------------
TOKEN_LIFETIME = 7200  # seconds
RESPONSE_CODE_LIFETIME = 72 * 3600.0  # seconds
APP_TEXT_MAX_BYTES = 2048  # message/send text.content
APP_MARKDOWN_MAX_BYTES = 2048  # message/send markdown.content (the robot allows 4096)
ROBOT_TEXT_MAX_BYTES = 2048  # webhook/send text.content
ROBOT_MARKDOWN_MAX_BYTES = 4096  # webhook/send markdown.content
ROBOT_PER_WINDOW = 20  # messages per robot key ...
ROBOT_WINDOW = 60.0  # ... per this many seconds (sliding)
TASK_ID_MAX_BYTES = 128
BUTTON_KEY_MAX_BYTES = 1024
MAX_BUTTONS = 6
MAX_USERS = 1000

APP_MSGTYPES = frozenset({"text", "markdown", "template_card"})
ROBOT_MSGTYPES = frozenset({"text", "markdown", "template_card"})
APP_CARD_TYPES = frozenset(
    {"text_notice", "news_notice", "button_interaction", "vote_interaction", "multiple_interaction"}
)
ROBOT_CARD_TYPES = frozenset({"text_notice", "news_notice"})
INTERACTIVE_CARD_TYPES = frozenset(
    {"button_interaction", "vote_interaction", "multiple_interaction"}
)
_TASK_ID = re.compile(r"[A-Za-z0-9_\-@]+")

ERRMSGS: dict[int, str] = {
    OK: "ok",
    BUSY: "system busy",
    INVALID_SECRET: "invalid credential",
    INVALID_MSGTYPE: "invalid message type",
    INVALID_CORPID: "invalid corpid",
    INVALID_TOKEN: "invalid access_token",
    INVALID_AGENTID: "invalid agentid",
    INVALID_PARAMETER: "invalid Request Parameter",
    MISSING_TOKEN: "access_token missing",
    MISSING_CORPID: "corpid missing",
    MISSING_SECRET: "corpsecret missing",
    MISSING_AGENTID: "agentid missing",
    TOKEN_EXPIRED: "access_token expired",
    INVALID_TASK_ID: "taskid has existed or empty or exceed max len",
    INVALID_BUTTON_KEY: "button key is invalid",
    MISSING_BUTTON_KEY: "button key missing",
    MISSING_BUTTON_NAME: "button name missing",
    EMPTY_CONTENT: "empty content",
    CONTENT_TOO_LONG: "content size out of limit",
    RATE_LIMITED: "api freq out of limit",
    NO_VALID_RECIPIENT: "all touser/toparty/totag invalid or no privilege",
    NO_RECIPIENT: "touser, toparty and totag are all empty",
    INVALID_WEBHOOK: "invalid webhook url",
}

# -- what WeCom's markdown interprets ------------------------------------------------
# The documented subset (群机器人配置说明, "markdown类型"): headings "# " to "###### ", **bold**,
# [text](url) links, `code`, "> " quotes, <font color="info|comment|warning"> and <@userid>
# mentions; app text messages render <a href="…"> links. WeCom has no escape character.
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]*)\)")
_MD_MENTION = re.compile(r"<@([^>\s]+)>")
_MD_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_MD_BOLD = re.compile(r"\*\*(.+?)\*\*")
_MD_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]", re.MULTILINE)
_MD_QUOTE = re.compile(r"^[ \t]*>", re.MULTILINE)
_MD_ENTITY = re.compile(r"&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z]+);")


@dataclass(frozen=True)
class Rendered:
    """What a WeCom client makes of a markdown (or app text) content: its live syntax."""

    links: list[tuple[str, str]]
    mentions: list[str]
    tags: list[str]
    bold: list[str]
    headings: int
    quotes: int
    entities: list[str]


def rendered(content: str) -> Rendered:
    """The documented syntax found in a content, as a WeCom client would act on it."""
    return Rendered(
        links=_MD_LINK.findall(content),
        mentions=_MD_MENTION.findall(content),
        tags=_MD_TAG.findall(content),
        bold=_MD_BOLD.findall(content),
        headings=len(_MD_HEADING.findall(content)),
        quotes=len(_MD_QUOTE.findall(content)),
        entities=_MD_ENTITY.findall(content),
    )


# Callback fields WeCom sends as XML numbers rather than CDATA text.
_NUMERIC_FIELDS = frozenset({"CreateTime", "MsgId", "AgentID"})


def utf8_len(text: str) -> int:
    """Length of text in UTF-8 bytes (WeCom's limits are in bytes)."""
    return len(text.encode("utf-8"))


def to_xml(fields: Mapping[str, str]) -> str:
    """The plaintext callback XML WeCom encrypts: text in CDATA, CreateTime/MsgId/AgentID bare."""
    parts = ["<xml>"]
    for name, value in fields.items():
        if name in _NUMERIC_FIELDS:
            parts.append(f"<{name}>{escape(value)}</{name}>")
        else:
            safe = value.replace("]]>", "]]]]><![CDATA[>")
            parts.append(f"<{name}><![CDATA[{safe}]]></{name}>")
    parts.append("</xml>")
    return "".join(parts)


class ManualClock:
    """Seconds since the epoch that move only when told to (assign to ``fake.clock``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by some seconds."""
        self.now += seconds


@dataclass(frozen=True)
class Sent:
    """One accepted message: from the app (message/send) or the group robot (webhook/send)."""

    kind: Literal["app", "robot"]
    msgtype: str
    body: dict[str, Any]
    at: float
    touser: list[str] = field(default_factory=list)
    invaliduser: list[str] = field(default_factory=list)
    msgid: str = ""
    response_code: str | None = None
    key: str = ""

    @property
    def content(self) -> str:
        """The text or markdown content ("" for cards)."""
        part = self.body.get(self.msgtype)
        if isinstance(part, dict) and isinstance(part.get("content"), str):
            return str(part["content"])
        return ""

    @property
    def card(self) -> dict[str, Any]:
        """The template card ({} for text and markdown)."""
        card = self.body.get("template_card")
        return card if isinstance(card, dict) else {}

    @property
    def task_id(self) -> str:
        """The template card's task_id ("" when there is none)."""
        return str(self.card.get("task_id", ""))


@dataclass(frozen=True)
class CardUpdate:
    """One accepted update_template_card call."""

    task_id: str
    response_code: str
    clicked_by: str | None
    userids: list[str]
    atall: bool
    replace_name: str | None
    template_card: dict[str, Any] | None
    invaliduser: list[str]
    body: dict[str, Any]
    at: float


@dataclass
class _Token:
    expires_at: float
    expired: bool = False


@dataclass
class _Card:
    task_id: str
    msgid: str
    recipients: list[str]
    keys: list[str]
    replaced: dict[str, str] = field(default_factory=dict)


@dataclass
class _Code:
    task_id: str
    userid: str | None
    issued_at: float
    used: bool = False


@dataclass
class _Scripted:
    suffix: str
    remaining: int
    errcode: int = 0
    errmsg: str | None = None
    status: int | None = None


class _Refusal(Exception):
    """A request WeCom would refuse: its errcode and errmsg."""

    def __init__(self, errcode: int, detail: str | None = None) -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail


def _hinted(errcode: int, detail: str | None) -> str:
    """An errmsg as WeCom words it: the reason, then a hint and where to look it up."""
    if errcode == OK:
        return "ok"
    reason = detail or ERRMSGS.get(errcode, "error")
    hint = secrets.token_hex(12)
    return (
        f"{reason}, hint: [{hint}], from ip: 127.0.0.1, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    )


def _answer(errcode: int, detail: str | None = None, **extra: Any) -> web.Response:
    errmsg = _hinted(errcode, detail)
    return web.json_response(
        {"errcode": errcode, "errmsg": errmsg, **extra},
        headers={
            "Error-Code": str(errcode),
            "Error-Msg": errmsg.encode("ascii", "backslashreplace").decode("ascii"),
        },
    )


def _text_of(part: object, name: str, limit: int, too_long: int) -> str:
    """The `content` of a text/markdown part, checked against WeCom's byte limit."""
    if not isinstance(part, dict):
        raise _Refusal(INVALID_PARAMETER, f"{name} must be an object")
    content = part.get("content")
    if not isinstance(content, str):
        raise _Refusal(EMPTY_CONTENT, f"{name}.content missing")
    if not content:
        raise _Refusal(EMPTY_CONTENT, f"{name}.content is empty")
    if utf8_len(content) > limit:
        raise _Refusal(too_long, f"{name}.content exceed max length {limit}")
    return content


def _title_of(card: Mapping[str, Any]) -> str:
    main = card.get("main_title")
    if main is None:
        return ""
    if not isinstance(main, dict):
        raise _Refusal(INVALID_PARAMETER, "template_card.main_title must be an object")
    title = main.get("title", "")
    if not isinstance(title, str):
        raise _Refusal(INVALID_PARAMETER, "template_card.main_title.title must be a string")
    return title


def _check_card_action(card: Mapping[str, Any]) -> None:
    action = card.get("card_action")
    if not isinstance(action, dict) or action.get("type") not in (0, 1, 2):
        raise _Refusal(INVALID_PARAMETER, "template_card.card_action is required")
    if action.get("type") == 1 and not action.get("url"):
        raise _Refusal(INVALID_PARAMETER, "template_card.card_action.url is required")
    if action.get("type") == 2 and not action.get("appid"):
        raise _Refusal(INVALID_PARAMETER, "template_card.card_action.appid is required")


def _button_keys(card: Mapping[str, Any]) -> list[str]:
    """Check a button_interaction card's button_list; the callback keys, in order."""
    buttons = card.get("button_list")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_BUTTONS:
        raise _Refusal(
            INVALID_PARAMETER, f"template_card.button_list must hold 1 to {MAX_BUTTONS} buttons"
        )
    keys: list[str] = []
    for button in buttons:
        if not isinstance(button, dict):
            raise _Refusal(INVALID_PARAMETER, "each button must be an object")
        text = button.get("text")
        if not isinstance(text, str) or not text:
            raise _Refusal(MISSING_BUTTON_NAME, "button_list.text missing")
        style = button.get("style", 1)
        if not isinstance(style, int) or isinstance(style, bool):
            raise _Refusal(INVALID_PARAMETER, "button_list.style must be an integer")
        kind = button.get("type", 0)
        if kind == 1:
            url = button.get("url")
            if not isinstance(url, str) or not url:
                raise _Refusal(INVALID_PARAMETER, "button_list.url is required when type is 1")
            continue
        if kind != 0:
            raise _Refusal(INVALID_PARAMETER, "button_list.type must be 0 or 1")
        key = button.get("key")
        if not isinstance(key, str) or not key:
            raise _Refusal(MISSING_BUTTON_KEY, "button_list.key missing")
        if utf8_len(key) > BUTTON_KEY_MAX_BYTES:
            raise _Refusal(
                INVALID_BUTTON_KEY, f"button_list.key exceed max length {BUTTON_KEY_MAX_BYTES}"
            )
        if key in keys:
            raise _Refusal(INVALID_BUTTON_KEY, f"button_list.key {key!r} is repeated")
        keys.append(key)
    return keys


class FakeWecom(LoopbackServer):
    """The WeCom server API on 127.0.0.1: tokens, app messages, card updates and the robot."""

    def __init__(
        self,
        *,
        corp_id: str,
        corp_secret: str,
        agent_id: int,
        robot_key: str,
        users: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.corp_id = corp_id
        self.corp_secret = corp_secret
        self.agent_id = agent_id
        self.robot_keys: set[str] = {robot_key}
        self.users: set[str] | None = None if users is None else set(users)
        self.token_requests = 0
        self.sent: list[Sent] = []
        self.robot_sent: list[Sent] = []
        self.card_updates: list[CardUpdate] = []
        self.errcodes: Counter[int] = Counter()
        self._tokens: dict[str, _Token] = {}
        self._cards: dict[str, _Card] = {}
        self._codes: dict[str, _Code] = {}
        self._robot_windows = SlidingWindows(ROBOT_PER_WINDOW, ROBOT_WINDOW)
        self._scripted: list[_Scripted] = []
        self._issued: set[str] = set()

    # -- serving -----------------------------------------------------------------------------

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/gettoken", self._gettoken)
        router.add_post("/cgi-bin/message/send", self._with_token(self._accept_app))
        router.add_post(
            "/cgi-bin/message/update_template_card", self._with_token(self._accept_update)
        )
        router.add_post("/cgi-bin/webhook/send", self._webhook_send)

    def _middlewares(self) -> list[Middleware]:
        return [self._misbehave]

    @property
    def api_base(self) -> str:
        """Where the API is served, like https://qyapi.weixin.qq.com (no trailing slash)."""
        return self.base_url

    @property
    def webhook_url(self) -> str:
        """The group robot's full webhook URL (with the first robot key)."""
        return f"{self.api_base}/cgi-bin/webhook/send?key={sorted(self.robot_keys)[0]}"

    # -- behaviours --------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Make every token issued so far expired: using one answers 42001."""
        for token in self._tokens.values():
            token.expired = True

    def invalidate_tokens(self) -> None:
        """Forget every token issued so far: using one answers 40014."""
        self._tokens.clear()

    def fail_next(
        self, path_suffix: str, errcode: int, times: int = 1, *, errmsg: str | None = None
    ) -> None:
        """Answer the next `times` calls whose path ends with path_suffix with this errcode."""
        self._scripted.append(_Scripted(path_suffix, times, errcode=errcode, errmsg=errmsg))

    def http_error_next(self, path_suffix: str, status: int, times: int = 1) -> None:
        """Answer the next `times` calls whose path ends with path_suffix with an HTTP error."""
        self._scripted.append(_Scripted(path_suffix, times, status=status))

    def add_robot(self, key: str) -> None:
        """Accept another robot key (each key has its own rate window)."""
        self.robot_keys.add(key)

    # -- what WeCom would post to the app's callback URL ----------------------------------------

    def click(self, userid: str, task_id: str, key: str, *, check: bool = True) -> dict[str, str]:
        """A click on a sent card's button: a fresh one-time response code, the callback fields."""
        # With `check`, the card must have been sent to `userid`, carry the callback button `key`
        # and not have been updated for that user yet (KeyError or ValueError otherwise).
        if check:
            card = self._cards.get(task_id)
            if card is None:
                raise KeyError(f"no button_interaction card with task_id {task_id!r}")
            if "@all" not in card.recipients and userid not in card.recipients:
                raise ValueError(f"card {task_id!r} was not sent to {userid!r}")
            if key not in card.keys:
                raise ValueError(f"card {task_id!r} has no callback button {key!r}")
            if userid in card.replaced:
                raise ValueError(f"{userid!r}'s card {task_id!r} was already updated")
        code = self._issue_code(task_id, userid)
        return {
            "ToUserName": self.corp_id,
            "FromUserName": userid,
            "CreateTime": str(int(self.clock())),
            "MsgType": "event",
            "Event": "template_card_event",
            "EventKey": key,
            "TaskId": task_id,
            "CardType": "button_interaction",
            "ResponseCode": code,
            "AgentID": str(self.agent_id),
        }

    def text_message(self, userid: str, content: str) -> dict[str, str]:
        """The callback fields of a 1:1 text message from `userid` to the app."""
        msg_id = str(secrets.randbits(63) | (1 << 62))
        while msg_id in self._issued:
            msg_id = str(secrets.randbits(63) | (1 << 62))
        self._issued.add(msg_id)
        return {
            "ToUserName": self.corp_id,
            "FromUserName": userid,
            "CreateTime": str(int(self.clock())),
            "MsgType": "text",
            "Content": content,
            "MsgId": msg_id,
            "AgentID": str(self.agent_id),
        }

    # -- observations --------------------------------------------------------------------------

    def texts(self, touser: str | None = None) -> list[str]:
        """Contents of the app's text and markdown messages (optionally to one user)."""
        return [
            s.content
            for s in self.sent
            if s.msgtype != "template_card" and (touser is None or touser in s.touser)
        ]

    def cards(self, touser: str | None = None) -> list[Sent]:
        """The app's template cards (optionally those sent to one user), in arrival order."""
        return [
            s
            for s in self.sent
            if s.msgtype == "template_card" and (touser is None or touser in s.touser)
        ]

    def button_state(self, task_id: str, userid: str) -> str | None:
        """What replaced the card's buttons for this user, or None while they are clickable."""
        card = self._cards.get(task_id)
        return None if card is None else card.replaced.get(userid)

    def valid_tokens(self) -> list[str]:
        """The tokens that would be accepted right now."""
        now = self.clock()
        return [t for t, s in self._tokens.items() if not s.expired and now < s.expires_at]

    # -- plumbing ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        value = secrets.token_urlsafe(24)
        while value in self._issued:
            value = secrets.token_urlsafe(24)
        self._issued.add(value)
        return value

    def _issue_code(self, task_id: str, userid: str | None) -> str:
        code = self._new_id()
        self._codes[code] = _Code(task_id, userid, self.clock())
        return code

    def _answered(self, raw: RawRequest, response: web.StreamResponse | None) -> RawRequest:
        if not isinstance(response, web.Response) or response.content_type != "application/json":
            return raw
        assert response.text is not None
        errcode = int(json.loads(response.text).get("errcode", 0))
        self.errcodes[errcode] += 1
        return dataclasses.replace(raw, errcode=errcode)

    @web.middleware
    async def _misbehave(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        for scripted in self._scripted:
            if scripted.remaining > 0 and request.path.endswith(scripted.suffix):
                scripted.remaining -= 1
                if scripted.status is not None:
                    return web.Response(
                        status=scripted.status,
                        text=f"<html><body>{scripted.status}</body></html>",
                        content_type="text/html",
                    )
                return _answer(scripted.errcode, scripted.errmsg)
        self._scripted = [s for s in self._scripted if s.remaining > 0]
        return await handler(request)

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise _Refusal(INVALID_PARAMETER, "Warning: wrong json format.") from None
        if not isinstance(body, dict):
            raise _Refusal(INVALID_PARAMETER, "Warning: wrong json format.")
        return body

    def _with_token(
        self, accept: Callable[[dict[str, Any]], web.Response]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler for a call made with an access token and a JSON body: `accept` answers
        the body once the token holds, and a refusal is answered as WeCom does."""

        async def handler(request: web.Request) -> web.Response:
            try:
                self._check_token(request)
                return accept(await self._json_body(request))
            except _Refusal as refusal:
                return _answer(refusal.errcode, refusal.detail)

        return handler

    def _check_token(self, request: web.Request) -> None:
        token = request.query.get("access_token", "")
        if not token:
            raise _Refusal(MISSING_TOKEN)
        state = self._tokens.get(token)
        if state is None:
            raise _Refusal(INVALID_TOKEN)
        if state.expired or self.clock() >= state.expires_at:
            raise _Refusal(TOKEN_EXPIRED)

    def _check_agent(self, body: Mapping[str, Any]) -> None:
        if "agentid" not in body:
            raise _Refusal(MISSING_AGENTID)
        agentid = body["agentid"]
        if isinstance(agentid, bool) or not isinstance(agentid, int | str):
            raise _Refusal(INVALID_AGENTID)
        if str(agentid) != str(self.agent_id):
            raise _Refusal(INVALID_AGENTID)

    # -- gettoken ----------------------------------------------------------------------------

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        corpid = request.query.get("corpid", "")
        secret = request.query.get("corpsecret", "")
        if not corpid:
            return _answer(MISSING_CORPID)
        if not secret:
            return _answer(MISSING_SECRET)
        if corpid != self.corp_id:
            return _answer(INVALID_CORPID)
        if secret != self.corp_secret:
            return _answer(INVALID_SECRET)
        now = self.clock()
        for token, state in self._tokens.items():
            if not state.expired and now < state.expires_at:
                return _answer(OK, access_token=token, expires_in=int(state.expires_at - now))
        token = secrets.token_urlsafe(48)
        self._tokens[token] = _Token(now + TOKEN_LIFETIME)
        return _answer(OK, access_token=token, expires_in=TOKEN_LIFETIME)

    # -- message/send --------------------------------------------------------------------------

    def _recipients(self, body: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """The users addressed by touser, and those of them WeCom does not know."""
        touser = body.get("touser", "")
        if not isinstance(touser, str):
            raise _Refusal(INVALID_PARAMETER, "touser must be a string like a|b")
        users = [u for u in touser.split("|") if u]
        others = any(isinstance(body.get(k), str) and body.get(k) for k in ("toparty", "totag"))
        if not users and not others:
            raise _Refusal(NO_RECIPIENT)
        if len(users) > MAX_USERS:
            raise _Refusal(INVALID_PARAMETER, f"touser holds more than {MAX_USERS} users")
        if "@all" in users or self.users is None:
            return users, []
        invalid = [u for u in users if u not in self.users]
        if invalid and len(invalid) == len(users) and not others:
            raise _Refusal(NO_VALID_RECIPIENT)
        return users, invalid

    def _accept_app(self, body: dict[str, Any]) -> web.Response:
        msgtype = body.get("msgtype")
        if msgtype not in APP_MSGTYPES:
            raise _Refusal(INVALID_MSGTYPE)
        self._check_agent(body)
        users, invalid = self._recipients(body)
        card_keys: list[str] | None = None
        if msgtype == "text":
            _text_of(body.get("text"), "text", APP_TEXT_MAX_BYTES, CONTENT_TOO_LONG)
        elif msgtype == "markdown":
            _text_of(body.get("markdown"), "markdown", APP_MARKDOWN_MAX_BYTES, CONTENT_TOO_LONG)
        else:
            card_keys = self._check_app_card(body.get("template_card"))
        msgid = self._new_id()
        card = body.get("template_card") if msgtype == "template_card" else None
        response_code: str | None = None
        if isinstance(card, dict) and card.get("task_id"):
            task_id = str(card["task_id"])
            valid = [u for u in users if u not in invalid]
            self._cards[task_id] = _Card(task_id, msgid, valid, card_keys or [])
            if card.get("card_type") in INTERACTIVE_CARD_TYPES:
                response_code = self._issue_code(task_id, None)
        self.sent.append(
            Sent(
                "app",
                str(msgtype),
                body,
                self.clock(),
                touser=users,
                invaliduser=invalid,
                msgid=msgid,
                response_code=response_code,
            )
        )
        extra: dict[str, Any] = {"msgid": msgid}
        if invalid:
            extra["invaliduser"] = "|".join(invalid)
        if response_code is not None:
            extra["response_code"] = response_code
        return _answer(OK, **extra)

    def _check_app_card(self, card: object) -> list[str]:
        """Check an app template card; the callback button keys of a button_interaction card."""
        if not isinstance(card, dict):
            raise _Refusal(INVALID_PARAMETER, "template_card is required")
        card_type = card.get("card_type")
        if card_type not in APP_CARD_TYPES:
            raise _Refusal(INVALID_PARAMETER, f"template_card.card_type {card_type!r} is invalid")
        title = _title_of(card)
        needs_task = card_type in INTERACTIVE_CARD_TYPES or "action_menu" in card
        task_id = card.get("task_id")
        if needs_task or task_id is not None:
            self._check_task_id(task_id)
        if card_type == "button_interaction":
            if not title:
                raise _Refusal(INVALID_PARAMETER, "template_card.main_title.title is required")
            return _button_keys(card)
        if card_type == "text_notice" and not title and not card.get("sub_title_text"):
            raise _Refusal(
                INVALID_PARAMETER, "template_card.main_title.title or sub_title_text is required"
            )
        if card_type in ("text_notice", "news_notice"):
            _check_card_action(card)
        return []

    def _check_task_id(self, task_id: object) -> None:
        if not isinstance(task_id, str) or not task_id:
            raise _Refusal(INVALID_TASK_ID, "task_id is empty")
        if utf8_len(task_id) > TASK_ID_MAX_BYTES:
            raise _Refusal(INVALID_TASK_ID, f"task_id exceed max len {TASK_ID_MAX_BYTES}")
        if not _TASK_ID.fullmatch(task_id):
            raise _Refusal(INVALID_TASK_ID, "task_id may hold only A-Z a-z 0-9 _ - @")
        if task_id in self._cards:
            raise _Refusal(INVALID_TASK_ID, f"task_id {task_id} has existed")

    # -- message/update_template_card ------------------------------------------------------------

    def _accept_update(self, body: dict[str, Any]) -> web.Response:
        self._check_agent(body)
        code = body.get("response_code")
        if not isinstance(code, str) or not code:
            raise _Refusal(INVALID_PARAMETER, "response_code missing")
        replace_name: str | None = None
        new_card: dict[str, Any] | None = None
        if "button" in body:
            button = body["button"]
            name = button.get("replace_name") if isinstance(button, dict) else None
            if not isinstance(name, str) or not name:
                raise _Refusal(MISSING_BUTTON_NAME, "button.replace_name missing")
            replace_name = name
        elif isinstance(body.get("template_card"), dict):
            new_card = body["template_card"]
            if new_card.get("card_type") not in APP_CARD_TYPES:
                raise _Refusal(INVALID_PARAMETER, "template_card.card_type is invalid")
        else:
            raise _Refusal(INVALID_PARAMETER, "button or template_card is required")
        userids = body.get("userids", [])
        if not isinstance(userids, list) or not all(isinstance(u, str) for u in userids):
            raise _Refusal(INVALID_PARAMETER, "userids must be a list of strings")
        if len(userids) > MAX_USERS:
            raise _Refusal(INVALID_PARAMETER, f"userids holds more than {MAX_USERS} users")
        atall = body.get("atall", 0)
        if atall not in (0, 1):
            raise _Refusal(INVALID_PARAMETER, "atall must be 0 or 1")
        if not userids and not atall and not body.get("partyids") and not body.get("tagids"):
            raise _Refusal(NO_RECIPIENT)
        issued = self._codes.get(code)
        if issued is None:
            raise _Refusal(RESPONSE_CODE_REFUSED, "invalid response_code")
        if issued.used:
            raise _Refusal(RESPONSE_CODE_REFUSED, "response_code has been used")
        if self.clock() - issued.issued_at >= RESPONSE_CODE_LIFETIME:
            raise _Refusal(RESPONSE_CODE_REFUSED, "response_code expired")
        card = self._cards.get(issued.task_id)
        invalid: list[str] = []
        if card is None:  # a code from click(check=False) for a card this fake never sent
            targets = list(userids)
        elif atall:
            targets = list(card.recipients)
        else:
            everyone = "@all" in card.recipients
            targets = [u for u in userids if everyone or u in card.recipients]
            invalid = [u for u in userids if u not in targets]
        issued.used = True
        if card is not None:
            for userid in targets:
                card.replaced[userid] = replace_name or "(new card)"
        self.card_updates.append(
            CardUpdate(
                task_id=issued.task_id,
                response_code=code,
                clicked_by=issued.userid,
                userids=targets,
                atall=bool(atall),
                replace_name=replace_name,
                template_card=new_card,
                invaliduser=invalid,
                body=body,
                at=self.clock(),
            )
        )
        return _answer(OK, invaliduser=invalid)

    # -- webhook/send (the group robot) ------------------------------------------------------------

    async def _webhook_send(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        try:
            if key not in self.robot_keys:
                raise _Refusal(INVALID_WEBHOOK)
            body = await self._json_body(request)
            self._check_robot(body)
            now = self.clock()
            if self._robot_windows.admit(key, now) is not None:
                raise _Refusal(RATE_LIMITED)
        except _Refusal as refusal:
            return _answer(refusal.errcode, refusal.detail)
        self.robot_sent.append(Sent("robot", str(body["msgtype"]), body, now, key=key))
        return _answer(OK)

    def _check_robot(self, body: Mapping[str, Any]) -> None:
        msgtype = body.get("msgtype")
        if msgtype not in ROBOT_MSGTYPES:
            raise _Refusal(INVALID_MSGTYPE)
        if msgtype == "text":
            text = body.get("text")
            _text_of(text, "text", ROBOT_TEXT_MAX_BYTES, INVALID_PARAMETER)
            assert isinstance(text, dict)
            for name in ("mentioned_list", "mentioned_mobile_list"):
                mentions = text.get(name, [])
                if not isinstance(mentions, list) or not all(isinstance(m, str) for m in mentions):
                    raise _Refusal(INVALID_PARAMETER, f"text.{name} must be a list of strings")
        elif msgtype == "markdown":
            _text_of(body.get("markdown"), "markdown", ROBOT_MARKDOWN_MAX_BYTES, INVALID_PARAMETER)
        else:
            card = body.get("template_card")
            if not isinstance(card, dict):
                raise _Refusal(INVALID_PARAMETER, "template_card is required")
            if card.get("card_type") not in ROBOT_CARD_TYPES:
                raise _Refusal(
                    INVALID_PARAMETER, "the robot sends only text_notice and news_notice cards"
                )
            title = _title_of(card)
            if card["card_type"] == "text_notice" and not title and not card.get("sub_title_text"):
                raise _Refusal(
                    INVALID_PARAMETER,
                    "template_card.main_title.title or sub_title_text is required",
                )
            if card["card_type"] == "news_notice" and not title:
                raise _Refusal(INVALID_PARAMETER, "template_card.main_title.title is required")
            _check_card_action(card)
