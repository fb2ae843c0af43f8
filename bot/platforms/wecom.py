"""WeCom (企业微信): the group robot for the group, the self-built app for people.

- The bound group sees each notice through the group robot webhook (send-only, 20/min,
  text ≤ 2048 bytes, markdown ≤ 4096 bytes). It cannot be edited, so there is no live tally
  in the group; each assignee gets a personal `button_interaction` card from the app instead,
  and a click updates that card to 已确认 (`update_template_card`, one-time response code).
- People talk to the app 1:1 (收到 #12, 进度 #12 …, 待办); its callback at /callbacks/wecom is
  signed (SHA1) and encrypted (AES-256-CBC, PKCS#7 with 32-byte blocks), see wecom_crypto.
- Access tokens are cached and refreshed before they expire; 40014/42001 refresh and retry once.
  45009 (rate limited) and -1 (busy) are retried later through the outbox.

The adapter never touches storage: inbound events go to the core's intake (given at start),
which stores and deduplicates them before WeCom gets its answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from pydantic import ConfigDict, Field

from bot.core.configtypes import BaseUrl, ConfigSection, Duration, EnvName, missing_variables
from bot.core.platform import (
    BasePlatform,
    BuildContext,
    ButtonAction,
    Capabilities,
    Delivery,
    Host,
    InboundEvent,
    InboundMessage,
    OutboundMessage,
    PermanentError,
    PlatformSpec,
    RateLimit,
    RetryLater,
    Sender,
    SendResult,
    TargetKind,
)
from bot.platforms.wecom_crypto import WecomCipher, WecomCryptoError, parse_xml, verify_signature

log = logging.getLogger("workbot.wecom")

TEXT_LIMIT = 2048  # bytes, robot and app text
MARKDOWN_LIMIT = 4096  # bytes, robot markdown
ROBOT_PER_MINUTE = 20
TOKEN_MARGIN = 300.0  # refresh this many seconds before the token expires
TOKEN_ERRORS = frozenset({40014, 42001})
RETRY_ERRORS = {45009: 60.0, -1: 5.0, 45033: 5.0}  # errcode -> seconds to wait (45009: config)
CALLBACK_MAX_BYTES = 64 * 1024
_TASK_ID = re.compile(r"[^A-Za-z0-9_\-@]")


class WecomConfig(ConfigSection):
    """[platforms.wecom]: the corp, the self-built app and the group robot."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    corp_id: str = Field(min_length=1, max_length=64)
    agent_id: int = Field(ge=1)
    secret_env: EnvName = "WECOM_SECRET"  # noqa: S105 - a variable's name, not a secret
    token_env: EnvName = "WECOM_TOKEN"  # noqa: S105 - a variable's name, not a secret
    encoding_aes_key_env: EnvName = "WECOM_AES_KEY"
    robot_key_env: EnvName = "WECOM_ROBOT_KEY"
    api_base: BaseUrl = "https://qyapi.weixin.qq.com"
    rate_limited_retry: Duration = timedelta(seconds=60)

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """Every secret must be set; the EncodingAESKey must be a valid 43-character key."""
        keys = ("secret_env", "token_env", "encoding_aes_key_env", "robot_key_env")
        problems = missing_variables(environ, {key: getattr(self, key) for key in keys})
        aes = environ.get(self.encoding_aes_key_env)
        if aes:
            try:
                WecomCipher(aes, self.corp_id)
            except ValueError:
                problems.append(
                    (
                        "encoding_aes_key_env",
                        f"environment variable {self.encoding_aes_key_env} is not a valid "
                        "EncodingAESKey (43 characters of base64)",
                    )
                )
        return problems

    def secrets(self, environ: Mapping[str, str]) -> WecomSecrets:
        """The secrets from the environment (check environment_problems first)."""
        return WecomSecrets(
            secret=environ[self.secret_env],
            token=environ[self.token_env],
            aes_key=environ[self.encoding_aes_key_env],
            robot_key=environ[self.robot_key_env],
        )


@dataclass(frozen=True)
class WecomSecrets:
    """What the environment holds for WeCom."""

    secret: str
    token: str
    aes_key: str
    robot_key: str

    def __repr__(self) -> str:
        return "WecomSecrets(***)"


def utf8_len(text: str) -> int:
    """Length in UTF-8 bytes (WeCom's limits are in bytes)."""
    return len(text.encode())


def fit(text: str, limit: int) -> str:
    """The longest prefix of text within `limit` UTF-8 bytes (never a broken character)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore")


def split_for(text: str, limit: int) -> list[str]:
    """Split text into pieces of at most `limit` bytes, at line ends where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while utf8_len(line) > limit:  # one line longer than a piece: cut it
            head = fit(line, limit - utf8_len(current)) if current else fit(line, limit)
            if not head:
                pieces.append(current)
                current = ""
                continue
            pieces.append(current + head)
            current = ""
            line = line[len(head) :]
        if utf8_len(current + line) > limit:
            pieces.append(current)
            current = line
        else:
            current += line
    if current or not pieces:
        pieces.append(current)
    return [p.rstrip("\n") for p in pieces if p.strip()] or [""]


def task_id_of(delivery: Delivery) -> str:
    """The card's task id: the one the core chose (unique per assignment), else derived."""
    chosen = delivery.message.card_ref or ""
    if chosen:
        return _TASK_ID.sub("_", chosen)[:128]
    return "wb-" + hashlib.sha256(delivery.idempotency_key.encode()).hexdigest()[:40]


def app_card(delivery: Delivery, agent_id: int) -> dict[str, Any]:
    """A personal `button_interaction` template card for one person."""
    message = delivery.message
    card = message.card
    assert card is not None
    buttons = []
    for button in card.buttons[:6]:
        entry: dict[str, Any] = {"text": fit(button.label, 30), "style": 1}
        if button.url:
            entry |= {"type": 1, "url": button.url}
        else:
            entry["key"] = fit(button.value, 1024)
        buttons.append(entry)
    body = "\n".join(part for part in (card.body, card.status) if part)
    return {
        "touser": delivery.target,
        "msgtype": "template_card",
        "agentid": agent_id,
        "template_card": {
            "card_type": "button_interaction",
            "main_title": {"title": fit(card.title, 120)},
            "sub_title_text": fit(body, 1000),
            "task_id": task_id_of(delivery),
            "button_list": buttons,
        },
    }


# WeCom's robot markdown (and its app text) has no escape character, so what people wrote is
# made inert by a zero-width space (U+200B) placed inside each piece of syntax that WeCom
# interprets: after "<" (mentions <@userid>, <font color>, <a href> in app text), after "&"
# (entities), after "]" (links [text](url) and images), after "*" (bold **…**), and before a
# line's first "#" or ">" (headings, quotes). The space is invisible, so the text reads as
# written; removing every U+200B gives it back.
INERT = "\u200b"
_INLINE_SYNTAX = re.compile(r"([<&\]*])")
_LINE_SYNTAX = re.compile(r"^([ \t]*)(?=[#>])", re.MULTILINE)


def inert_markdown(text: str) -> str:
    """Text that WeCom's robot markdown shows as written: no link, mention, tag, heading,
    quote or bold can form from it (see INERT)."""
    return _LINE_SYNTAX.sub(r"\1" + INERT, _INLINE_SYNTAX.sub(r"\1" + INERT, text))


def inert_app_text(text: str) -> str:
    """Text for an app text message, which renders <a href> tags: no tag can form from it."""
    return text.replace("<", "<" + INERT)


def robot_markdown(message: OutboundMessage) -> str:
    """A group post as robot markdown: the card's title in bold, then its text. Every text in
    the message is plain (people wrote parts of it), so only the bold is markup."""
    if message.card is None:
        return inert_markdown(message.text)
    title = " ".join(message.card.title.split("\n"))
    lines = [f"**{inert_markdown(title)}**"]
    lines += [inert_markdown(line) for line in (message.card.body, message.card.status) if line]
    return "\n".join(lines)


class WecomCallbacks:
    """GET (URL verification) and POST (messages and events) at /callbacks/wecom."""

    config: WecomConfig
    host: Host | None
    _callback_token: str
    _cipher: WecomCipher

    def routes(self) -> Sequence[web.RouteDef]:
        """The app's callback URL."""
        return (
            web.get("/callbacks/wecom", self.verify_url),
            web.post("/callbacks/wecom", self.receive),
        )

    def _refuse(self, request: web.Request, status: int, code: str, message: str) -> web.Response:
        log.warning("WeCom callback refused: %s %s (%s)", status, code, message)
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    def _decrypt(self, request: web.Request, encrypted: str) -> str | web.Response:
        q = raw_query(request)
        try:
            verify_signature(
                self._callback_token,
                q.get("timestamp", ""),
                q.get("nonce", ""),
                encrypted,
                q.get("msg_signature", ""),
            )
        except WecomCryptoError as exc:
            return self._refuse(request, 401, exc.code, "the signature does not match")
        try:
            return self._cipher.decrypt(encrypted)
        except WecomCryptoError as exc:
            return self._refuse(request, 400, exc.code, "the message cannot be decrypted")

    async def verify_url(self, request: web.Request) -> web.StreamResponse:
        """URL verification: answer the decrypted echostr as plain text."""
        echostr = raw_query(request).get("echostr", "")
        if not echostr:
            return self._refuse(request, 400, "missing_echostr", "echostr is required")
        plain = self._decrypt(request, echostr)
        if isinstance(plain, web.Response):
            return plain
        return web.Response(text=plain, content_type="text/plain")

    async def receive(self, request: web.Request) -> web.StreamResponse:
        """A message or event: verified, decrypted, stored (deduplicated), then answered."""
        if self.host is None:
            raise web.HTTPServiceUnavailable(reason="starting")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, "too_large", "the body is too large")
        try:
            outer = parse_xml(raw, max_bytes=CALLBACK_MAX_BYTES)
        except WecomCryptoError as exc:
            return self._refuse(request, 400, exc.code, "the body is not a WeCom XML document")
        encrypted = outer.get("Encrypt", "")
        if not encrypted:
            return self._refuse(request, 400, "missing_field", "Encrypt is missing")
        plain = self._decrypt(request, encrypted)
        if isinstance(plain, web.Response):
            return plain
        try:
            fields = parse_xml(plain.encode(), max_bytes=CALLBACK_MAX_BYTES)
        except WecomCryptoError as exc:
            return self._refuse(request, 400, exc.code, "the decrypted message is not XML")
        event = event_of(fields, self.config.agent_id)
        if event is not None:
            await self.host.intake.accept(event)  # committed before WeCom answers; repeats dropped
        return web.Response(text="success", content_type="text/plain")


CAPABILITIES = Capabilities(buttons=True, dm=True, personal_cards=True)


class WecomPlatform(WecomCallbacks, BasePlatform):
    """Robot for the group, app messages and personal cards for people; the app's callback."""

    name = "wecom"
    capabilities = CAPABILITIES

    def __init__(
        self,
        config: WecomConfig,
        secrets: WecomSecrets,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.config = config
        self._callback_token = secrets.token
        self._cipher = WecomCipher(secrets.aes_key, config.corp_id)
        self._secrets = secrets
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def _call(
        self, method: str, path: str, *, params: Mapping[str, str], body: Any = None
    ) -> dict[str, Any]:
        """One API call; WeCom answers HTTP 200 and puts the error in errcode."""
        url = f"{self.config.api_base}{path}"
        try:
            async with self._client().request(
                method, url, params=dict(params), json=body, allow_redirects=False
            ) as response:
                if response.status >= 500 or response.status == 429:
                    raise RetryLater(f"WeCom HTTP {response.status}")
                if response.status != 200:
                    raise PermanentError(f"WeCom HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RetryLater(f"WeCom request failed: {exc!r}") from exc
        if not isinstance(data, dict):
            raise RetryLater("WeCom answered something other than a JSON object")
        return data

    async def access_token(self, *, refresh: bool = False) -> str:
        """The app's access token, cached until shortly before it expires."""
        async with self._token_lock:
            if not refresh and self._token and self._clock() < self._token_until:
                return self._token
            data = await self._call(
                "GET",
                "/cgi-bin/gettoken",
                params={"corpid": self.config.corp_id, "corpsecret": self._secrets.secret},
            )
            if data.get("errcode", 0) != 0 or not data.get("access_token"):
                self._fail(data, "gettoken")
            self._token = str(data["access_token"])
            lifetime = float(data.get("expires_in", 7200))
            self._token_until = self._clock() + max(60.0, lifetime - TOKEN_MARGIN)
            return self._token

    async def _app_call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """An app API call with the access token; on 40014/42001 refresh once and retry."""
        token = await self.access_token()
        data = await self._call("POST", path, params={"access_token": token}, body=body)
        if data.get("errcode") in TOKEN_ERRORS:
            token = await self.access_token(refresh=True)
            data = await self._call("POST", path, params={"access_token": token}, body=body)
        if data.get("errcode", 0) != 0:
            self._fail(data, path)
        return data

    def _fail(self, data: Mapping[str, Any], what: str) -> None:
        code = data.get("errcode")
        message = f"WeCom {what}: errcode {code} {str(data.get('errmsg', ''))[:200]}"
        if code == 45009:
            wait = self.config.rate_limited_retry.total_seconds()
            raise RetryLater(message, wait, rate_limited=True)
        if isinstance(code, int) and code in RETRY_ERRORS:
            raise RetryLater(message, RETRY_ERRORS[code])
        if code in TOKEN_ERRORS:
            raise RetryLater(message, 1.0)
        raise PermanentError(message)

    async def _robot(self, body: Mapping[str, Any]) -> None:
        data = await self._call(
            "POST",
            "/cgi-bin/webhook/send",
            params={"key": self._secrets.robot_key},
            body=body,
        )
        if data.get("errcode", 0) != 0:
            self._fail(data, "robot")

    async def send(self, delivery: Delivery) -> SendResult:
        """Post to the group (robot), update a clicked card, or message one person (app)."""
        if delivery.target_kind is TargetKind.CHAT:
            return await self._send_group(delivery)
        if delivery.target_kind is not TargetKind.PERSON:
            raise PermanentError(f"WeCom cannot send to a {delivery.target_kind.value}")
        update = delivery.message.card_update
        if update is not None:
            await self._app_call(
                "/cgi-bin/message/update_template_card",
                {
                    "userids": [delivery.target],
                    "agentid": self.config.agent_id,
                    "response_code": update.token,
                    "button": {"replace_name": fit(update.label, 60)},
                },
            )
            return SendResult(f"card:{update.card_ref}")
        message = delivery.message
        if message.card is not None and message.card.buttons:
            data = await self._app_call(
                "/cgi-bin/message/send", app_card(delivery, self.config.agent_id)
            )
        else:
            data = await self._app_call(
                "/cgi-bin/message/send",
                {
                    "touser": delivery.target,
                    "msgtype": "text",
                    "agentid": self.config.agent_id,
                    "text": {"content": fit(inert_app_text(message.text), TEXT_LIMIT)},
                },
            )
        invalid = str(data.get("invaliduser") or "")
        if invalid and delivery.target in invalid.split("|"):
            raise PermanentError(f"WeCom: unknown user {delivery.target!r}")
        return SendResult(str(data.get("msgid") or f"app:{delivery.outbox_id}"))

    async def _send_group(self, delivery: Delivery) -> SendResult:
        """The robot: markdown within 4096 bytes, split at line ends when longer."""
        content = robot_markdown(delivery.message)
        for piece in split_for(content, MARKDOWN_LIMIT):
            await self._robot({"msgtype": "markdown", "markdown": {"content": piece}})
        return SendResult(f"robot:{delivery.outbox_id}")

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """The robot's published 20 messages per minute; app messages have a daily quota."""
        if delivery.target_kind is TargetKind.CHAT:
            key = hashlib.sha256(self._secrets.robot_key.encode()).hexdigest()[:16]
            return [RateLimit(f"wecom:robot:{key}", ROBOT_PER_MINUTE, 60.0)]
        return []

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


def event_of(fields: Mapping[str, str], agent_id: int) -> InboundEvent | None:
    """The neutral event for a decrypted callback, or None for events workbot ignores."""
    sender = Sender(fields.get("FromUserName", ""))
    if not sender.platform_user_id:
        return None
    kind = fields.get("MsgType", "")
    if kind == "text":
        msg_id = fields.get("MsgId") or f"{sender.platform_user_id}:{fields.get('CreateTime', '')}"
        return InboundMessage(
            platform="wecom",
            event_id=msg_id,
            chat_id=f"app:{agent_id}",
            sender=sender,
            text=fields.get("Content", ""),
            is_direct=True,
            message_id=fields.get("MsgId") or None,
        )
    if kind == "event" and fields.get("Event") == "template_card_event":
        event_id = ":".join(
            (sender.platform_user_id, fields.get("CreateTime", ""), "template_card_event")
        )
        return ButtonAction(
            platform="wecom",
            event_id=event_id,
            chat_id=f"app:{agent_id}",
            sender=sender,
            value=fields.get("EventKey", ""),
            message_id=fields.get("TaskId") or None,
            card_token=fields.get("ResponseCode") or None,
        )
    return None


def raw_query(request: web.Request) -> dict[str, str]:
    """The query parameters, percent-decoded only: a "+" in echostr stays a "+" (form-style
    decoding would turn it into a space and break the signature and the base64)."""
    params: dict[str, str] = {}
    for part in request.query_string.split("&"):
        name, _, value = part.partition("=")
        if name:
            params.setdefault(unquote(name), unquote(value))
    return params


def build(ctx: BuildContext[WecomConfig]) -> WecomPlatform:
    """The adapter for a validated [platforms.wecom] table and its secrets."""
    return WecomPlatform(ctx.settings, ctx.settings.secrets(ctx.environ))


SPEC = PlatformSpec(
    adapter=WecomPlatform, config_model=WecomConfig, build=build, directory_column="wecom"
)
