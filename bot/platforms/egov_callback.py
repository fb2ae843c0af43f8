"""The e-gov portal's status callbacks as an outbound adapter: signed POSTs to callback_url.

Each outbox row of platform "egov" carries one event as its message's JSON `document`; it
is POSTed as JSON, signed like the portal's own requests (bot/core/portal_signing.py), so
the delivery, its retries with backoff and its survival across restarts are the outbox's.
2xx: delivered. 408, 429, 5xx, timeouts and connection errors: retry later (Retry-After is
honoured). Any other status: a permanent error (a dead letter, visible in /healthz).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.core import portal_signing as signing
from bot.core.platform import (
    BasePlatform,
    Capabilities,
    Delivery,
    PermanentError,
    RetryLater,
    SendResult,
)

TIMEOUT = aiohttp.ClientTimeout(total=10)


def _path_with_query(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class EgovCallbackPlatform(BasePlatform):
    """Send-only: each delivery is one signed POST of one event to the portal."""

    name = "egov"
    capabilities = Capabilities(idempotent_send=True)

    def __init__(self, secret: str, *, clock: Any = time.time) -> None:
        super().__init__()
        self._secret = secret
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        return self._session

    async def send(self, delivery: Delivery) -> SendResult:
        """POST the event, signed; the receiver deduplicates on its delivery_id."""
        event = delivery.message.document
        if event is None:
            raise PermanentError("an e-gov callback row without an event")
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        url = delivery.target
        headers = signing.headers(
            self._secret, "POST", _path_with_query(url), body, now=self._clock()
        )
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = str(event.get("delivery_id", delivery.idempotency_key))
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                text = (await response.text(errors="replace"))[:300]
                retry_after = _retry_after(response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"callback POST failed: {exc!r}") from exc
        if 200 <= status < 300:
            return SendResult(str(event.get("delivery_id", delivery.idempotency_key)))
        if status == 429:
            raise RetryLater(f"callback receiver: 429 {text}", retry_after, rate_limited=True)
        if status == 408 or status >= 500:
            raise RetryLater(f"callback receiver: {status} {text}", retry_after)
        raise PermanentError(f"callback receiver: {status} {text}")

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
