"""A generic outbound JSON webhook platform, for in-house systems, bridges and HTTP tests.

Wire protocol (also in docs/platforms/webhook.md):

- A send is ``POST {url}/messages``; an edit is ``PUT {url}/messages/{message_id}`` with the
  id percent-encoded as one path segment.
- Headers: ``Authorization: Bearer <token>``, ``Idempotency-Key: <outbox idempotency key>``
  and ``Content-Type: application/json``. The receiver must answer a repeated key with the
  result of the first request, without acting twice.
- Body: ``{"target_kind", "target", "text", "card", "mentions", "reply_to"}``, where
  target_kind is ``chat``, ``person`` or ``url``, card is null or
  ``{"title", "body", "status", "buttons": [{"label", "value", "url"}]}``, mentions is a
  list of strings and reply_to is null or a message id.
- Success is 200 or 201 (any 2xx) with ``{"message_id": "<id>"}`` (1 to 200 characters);
  a 2xx without one is a protocol violation and a permanent error. Redirects are not
  followed (permanent error).
- 429: retry later, after the longest of ``Retry-After`` (seconds or an HTTP date) and a
  JSON ``retry_after`` (seconds) or ``retry_after_ms``; it is marked as rate-limited.
- 408, 5xx, timeouts and connection errors: retry later (honouring ``Retry-After`` when
  given). Any other 4xx: a permanent error carrying the status and the error text.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import ConfigDict, Field, field_validator

from bot.core import jsonbody
from bot.core.configtypes import BaseUrl, ConfigSection, Duration, EnvName, missing_variables
from bot.core.platform import (
    BasePlatform,
    BuildContext,
    Capabilities,
    Delivery,
    PermanentError,
    PlatformSpec,
    RateLimit,
    RetryLater,
    SendResult,
)

MAX_URL_LENGTH = 200
MAX_MESSAGE_ID = 200
_MAX_BODY = 64 * 1024
_MAX_ERROR_TEXT = 300


class WebhookConfig(ConfigSection):
    """The [platforms.webhook] table: where to POST, the token's variable, the published limit."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    url: BaseUrl
    token_env: EnvName = "WORKBOT_WEBHOOK_TOKEN"  # noqa: S105 - a variable's name, not a secret
    rate_count: int = Field(default=20, ge=1)
    rate_per_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _short_url(cls, value: str) -> str:
        if len(value) > MAX_URL_LENGTH:
            raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
        return value

    def environment_problems(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """Report a missing or empty bearer-token variable."""
        return missing_variables(environ, {"token_env": self.token_env})

    def token(self, environ: Mapping[str, str]) -> str:
        """The bearer token from the environment (check environment_problems first)."""
        return environ[self.token_env]


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date (vs `now`)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _json_seconds(value: object, scale: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value) * scale
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _retry_after(header: str | None, date: str | None, body: object) -> float | None:
    """The longest wait a response asks for: Retry-After (vs its Date) and the JSON body."""
    now = dt.datetime.now(dt.UTC)
    if date:
        try:
            server_now = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            pass
        else:
            now = server_now if server_now.tzinfo else server_now.replace(tzinfo=dt.UTC)
    waits = [parse_retry_after(header, now=now)]
    if isinstance(body, dict):
        waits.append(_json_seconds(body.get("retry_after"), 1.0))
        waits.append(_json_seconds(body.get("retry_after_ms"), 0.001))
    found = [w for w in waits if w is not None]
    return max(found) if found else None


def _error_text(body: object, raw: bytes) -> str:
    """The receiver's error message: {"error": {"message"}}, {"error": "..."}, or the text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            parts = [str(error[k]) for k in ("code", "message") if error.get(k)]
            if parts:
                return ": ".join(parts)[:_MAX_ERROR_TEXT]
        if isinstance(error, str) and error:
            return error[:_MAX_ERROR_TEXT]
        message = body.get("message")
        if isinstance(message, str) and message:
            return message[:_MAX_ERROR_TEXT]
    return raw.decode("utf-8", "replace").strip()[:_MAX_ERROR_TEXT]


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_BODY:
            break
    return b"".join(chunks)[:_MAX_BODY]


CAPABILITIES = Capabilities(buttons=True, edit=True, dm=True, idempotent_send=True)


class WebhookPlatform(BasePlatform):
    """Sends and edits messages through an in-house JSON webhook (see the module docstring)."""

    name = "webhook"
    capabilities = CAPABILITIES

    def __init__(
        self,
        config: WebhookConfig,
        token: str,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not token:
            raise ValueError("the webhook token must not be empty")
        super().__init__()
        self.config = config
        self._token = token
        self._session = session
        self._owns_session = session is None
        self._limit = RateLimit(
            key=f"webhook:{config.url}",
            count=config.rate_count,
            per_seconds=config.rate_per_seconds,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def send(self, delivery: Delivery) -> SendResult:
        """POST the message to {url}/messages."""
        return await self._request("POST", f"{self.config.url}/messages", delivery)

    async def edit(self, delivery: Delivery) -> SendResult:
        """PUT the new content to {url}/messages/{delivery.edit_of}."""
        if not delivery.edit_of:
            raise PermanentError("an edit needs the id of the message it replaces")
        path = quote(delivery.edit_of, safe="")
        return await self._request("PUT", f"{self.config.url}/messages/{path}", delivery)

    def rate_limits(self, delivery: Delivery) -> list[RateLimit]:
        """One limit for every delivery: rate_count per rate_per_seconds for this URL."""
        return [self._limit]

    async def close(self) -> None:
        """Close the HTTP session if this platform created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _body(self, delivery: Delivery) -> dict[str, Any]:
        payload = delivery.message.to_payload()
        return {
            "target_kind": delivery.target_kind.value,
            "target": delivery.target,
            "text": payload["text"],
            "card": payload["card"],
            "mentions": payload["mentions"],
            "reply_to": payload["reply_to"],
        }

    async def _request(self, method: str, url: str, delivery: Delivery) -> SendResult:
        what = f"webhook {method} #{delivery.outbox_id}"
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Idempotency-Key": delivery.idempotency_key,
            "Content-Type": "application/json",
        }
        data = json.dumps(self._body(delivery), ensure_ascii=False).encode()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout.total_seconds())
        try:
            async with self._client().request(
                method, url, data=data, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                raw = await _read_body(response)
                status = response.status
                retry_header = response.headers.get("Retry-After")
                date_header = response.headers.get("Date")
        except TimeoutError:
            raise RetryLater(f"{what}: timed out") from None
        except aiohttp.ClientError as exc:
            raise RetryLater(f"{what}: {type(exc).__name__}: {exc}") from None
        duplicate: str | None = None
        try:
            body: object = jsonbody.loads(raw) if raw else None
        except jsonbody.DuplicateKey as exc:
            body, duplicate = None, exc.key
        except ValueError:
            body = None
        if 200 <= status < 300 and duplicate is not None:
            raise PermanentError(
                f"{what}: HTTP {status} with the key {duplicate!r} twice in one object "
                "(protocol violation)"
            )
        if 200 <= status < 300:
            message_id = body.get("message_id") if isinstance(body, dict) else None
            if isinstance(message_id, int) and not isinstance(message_id, bool):
                message_id = str(message_id)
            if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID:
                raise PermanentError(
                    f"{what}: HTTP {status} without a message_id of 1 to {MAX_MESSAGE_ID} "
                    "characters (protocol violation)"
                )
            return SendResult(message_id)
        error = f"{what}: HTTP {status}: {_error_text(body, raw)}"
        if status == 429:
            raise RetryLater(
                error, _retry_after(retry_header, date_header, body), rate_limited=True
            )
        if status == 408 or status >= 500:
            raise RetryLater(error, _retry_after(retry_header, date_header, body))
        raise PermanentError(error)


def build(ctx: BuildContext[WebhookConfig]) -> WebhookPlatform:
    """The adapter for a validated [platforms.webhook] table and its token."""
    return WebhookPlatform(ctx.settings, ctx.settings.token(ctx.environ))


SPEC = PlatformSpec(adapter=WebhookPlatform, config_model=WebhookConfig, build=build)
