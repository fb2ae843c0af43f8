"""A loopback fake of the JSON webhook API (bot/platforms/webhook.py), checked like a real one.

``async with FakeWebhook(token="t") as fake:`` serves ``fake.url`` on 127.0.0.1 and:

- answers 401 without ``Authorization: Bearer <token>``, 400 for a body that is not JSON
  of the documented shape or a missing ``Idempotency-Key``, 404 for an edit of an unknown
  message;
- deduplicates by ``Idempotency-Key`` (per hook URL): a repeated key gets the first
  message id, is not recorded again, and is counted in ``duplicates_by_key``;
- records every accepted send and edit in arrival order (``received``), and the raw
  requests with their answers (``requests``, ``requests_by_status``);
- can be switched to misbehave: ``fail_next``, ``respond_next``, ``lose_responses``,
  ``outage``, ``rate_limit`` (a sliding window per hook URL, 429 + Retry-After beyond it),
  ``permanent`` failures for given targets, and a per-request ``delay``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from .loopback import LoopbackServer, RawRequest, SlidingWindows

Kind = Literal["send", "edit"]
FIELDS = frozenset({"target_kind", "target", "text", "card", "mentions", "reply_to"})
TARGET_KINDS = frozenset({"chat", "person", "url"})


@dataclass(frozen=True)
class Received:
    """One accepted send or edit, in arrival order."""

    kind: Kind
    hook: str
    message_id: str
    target_kind: str
    target: str
    key: str
    body: dict[str, Any]
    at: float

    @property
    def text(self) -> str:
        """The message text."""
        return str(self.body["text"])


@dataclass
class _Scripted:
    status: int
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Outage:
    status: int
    until_count: int | None
    retry_after: str | None


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}, **extra}, status=status, headers=headers
    )


def _card_problem(card: object) -> str | None:
    if card is None:
        return None
    if not isinstance(card, dict) or set(card) != {"title", "body", "status", "buttons"}:
        return "card must be null or {title, body, status, buttons}"
    if not all(isinstance(card[k], str) for k in ("title", "body", "status")):
        return "card title, body and status must be strings"
    buttons = card["buttons"]
    if not isinstance(buttons, list):
        return "card.buttons must be a list"
    for button in buttons:
        if not isinstance(button, dict) or set(button) != {"label", "value", "url"}:
            return "each button must be {label, value, url}"
        if not isinstance(button["label"], str) or not isinstance(button["value"], str):
            return "button label and value must be strings"
        if button["url"] is not None and not isinstance(button["url"], str):
            return "button url must be null or a string"
    return None


def shape_problem(body: object) -> str | None:
    """Why a request body is not a valid webhook message (None when it is)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if set(body) != FIELDS:
        return f"expected exactly the fields {sorted(FIELDS)}, got {sorted(body)}"
    if body["target_kind"] not in TARGET_KINDS:
        return f"target_kind must be one of {sorted(TARGET_KINDS)}"
    if not isinstance(body["target"], str) or not body["target"]:
        return "target must be a non-empty string"
    if not isinstance(body["text"], str):
        return "text must be a string"
    mentions = body["mentions"]
    if not isinstance(mentions, list) or not all(isinstance(m, str) for m in mentions):
        return "mentions must be a list of strings"
    if body["reply_to"] is not None and not isinstance(body["reply_to"], str):
        return "reply_to must be null or a string"
    return _card_problem(body["card"])


class FakeWebhook(LoopbackServer):
    """The webhook API on 127.0.0.1, with switchable failures and a sliding-window limit."""

    def __init__(self, *, token: str, delay: float = 0.0) -> None:
        super().__init__()
        self.token = token
        self.delay = delay
        self.received: list[Received] = []
        self.requests_by_status: Counter[int] = Counter()
        self.duplicates_by_key: Counter[str] = Counter()
        self.rejections = 0
        self.current: dict[str, dict[str, Any]] = {}
        self._results: dict[tuple[str, str], str] = {}
        self._owner: dict[str, str] = {}
        self._scripted: deque[_Scripted] = deque()
        self._lose = 0
        self._lose_status = 504
        self._outage: _Outage | None = None
        self._permanent: dict[str, tuple[int, str]] = {}
        self._limit: SlidingWindows | None = None
        self._next_id = 1
        self._changed = asyncio.Event()

    # -- serving -----------------------------------------------------------------------

    def _routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/hooks/{hook}/messages", self._send)
        router.add_put("/hooks/{hook}/messages/{message_id}", self._edit)

    @property
    def url(self) -> str:
        """The base URL of the default hook ("main")."""
        return self.hook_url("main")

    def hook_url(self, hook: str) -> str:
        """The base URL of a named hook; each hook has its own keys and rate window."""
        return f"{self.base_url}/hooks/{hook}"

    # -- behaviours --------------------------------------------------------------------

    def respond_next(
        self,
        status: int,
        body: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next valid request with this (None: a JSON error), without acting on it."""
        self._scripted.append(_Scripted(status, body, dict(headers or {})))

    def fail_next(
        self, n: int = 1, status: int = 503, *, retry_after: float | str | None = None
    ) -> None:
        """Answer the next n valid requests with `status` (and Retry-After if given)."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        for _ in range(n):
            self.respond_next(status, None, headers)

    def lose_responses(self, n: int = 1, status: int = 504) -> None:
        """Accept the next n messages, then answer `status` as if the reply was lost."""
        self._lose += n
        self._lose_status = status

    def outage(
        self,
        status: int = 503,
        *,
        until_count: int | None = None,
        retry_after: float | str | None = None,
    ) -> None:
        """Fail every valid request until `until_count` requests have arrived in all
        (counting every request since the fake started), or until recover()."""
        shown = None if retry_after is None else str(retry_after)
        self._outage = _Outage(status, until_count, shown)

    def recover(self) -> None:
        """End the outage and drop every scripted answer and lost response still queued."""
        self._outage = None
        self._scripted.clear()
        self._lose = 0

    def rate_limit(self, count: int, per_seconds: float) -> None:
        """Allow at most `count` requests in any `per_seconds` window, per hook URL."""
        self._limit = SlidingWindows(count, per_seconds)

    def permanent(self, *targets: str, status: int = 400, message: str = "unknown target") -> None:
        """Answer every request to these targets with `status`."""
        for target in targets:
            self._permanent[target] = (status, message)

    def clear_permanent(self, *targets: str) -> None:
        """Accept these targets again (all of them when none are named)."""
        for target in targets or tuple(self._permanent):
            self._permanent.pop(target, None)

    # -- observations ------------------------------------------------------------------

    @property
    def sends(self) -> list[Received]:
        """Accepted sends, in arrival order."""
        return [r for r in self.received if r.kind == "send"]

    @property
    def edits(self) -> list[Received]:
        """Accepted edits, in arrival order."""
        return [r for r in self.received if r.kind == "edit"]

    def texts(self, target: str | None = None) -> list[str]:
        """Texts of the accepted sends (optionally to one target), in arrival order."""
        return [r.text for r in self.sends if target is None or r.target == target]

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until predicate() holds (checked after every request); TimeoutError if not."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- the API -----------------------------------------------------------------------

    def _answered(self, raw: RawRequest, response: web.StreamResponse | None) -> RawRequest:
        self.requests_by_status[raw.status] += 1
        self._changed.set()
        return raw

    async def _check(self, request: web.Request) -> tuple[dict[str, Any], str] | web.Response:
        """Authenticate and validate a request: (body, key), or the error to answer."""
        if self.delay:
            await asyncio.sleep(self.delay)
        expected = f"Bearer {self.token}".encode()
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "unauthorized", "a valid bearer token is required")
        if request.content_type != "application/json":
            return _error(400, "bad_content_type", "Content-Type must be application/json")
        key = request.headers.get("Idempotency-Key", "")
        if not key or len(key) > 200:
            return _error(400, "bad_idempotency_key", "Idempotency-Key must be 1-200 chars")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "bad_json", "the body is not valid JSON")
        problem = shape_problem(body)
        if problem is not None:
            return _error(400, "bad_body", problem)
        assert isinstance(body, dict)
        return body, key

    def _misbehave(self, hook: str, target: str) -> web.Response | None:
        """The answer a switched-on behaviour forces on this request, if any."""
        if self._limit is not None:
            wait = self._limit.admit(hook, self.clock())
            if wait is not None:
                self.rejections += 1
                return _error(
                    429,
                    "rate_limited",
                    f"at most {self._limit.count} requests per {self._limit.per_seconds} s",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    retry_after_ms=max(1, math.ceil(wait * 1000)),
                )
        if self._outage is not None:
            outage = self._outage
            if outage.until_count is None or len(self.requests) < outage.until_count:
                headers = {} if outage.retry_after is None else {"Retry-After": outage.retry_after}
                return _error(outage.status, "unavailable", "outage", headers=headers)
            self._outage = None
        if self._scripted:
            scripted = self._scripted.popleft()
            if scripted.body is None:
                return _error(
                    scripted.status, "scripted", "scripted failure", headers=scripted.headers
                )
            if isinstance(scripted.body, bytes):
                return web.Response(
                    body=scripted.body or None, status=scripted.status, headers=scripted.headers
                )
            return web.json_response(
                scripted.body, status=scripted.status, headers=scripted.headers
            )
        if target in self._permanent:
            status, message = self._permanent[target]
            return _error(status, "rejected", message)
        return None

    def _accept(
        self, kind: Kind, hook: str, message_id: str, key: str, body: dict[str, Any]
    ) -> web.Response:
        self._results[(hook, key)] = message_id
        self.current[message_id] = body
        self.received.append(
            Received(
                kind,
                hook,
                message_id,
                body["target_kind"],
                body["target"],
                key,
                body,
                self.clock(),
            )
        )
        if self._lose:
            self._lose -= 1
            return _error(self._lose_status, "gateway_timeout", "the upstream reply was lost")
        return web.json_response({"message_id": message_id}, status=201 if kind == "send" else 200)

    def _duplicate(self, hook: str, key: str) -> web.Response | None:
        first = self._results.get((hook, key))
        if first is None:
            return None
        self.duplicates_by_key[key] += 1
        return web.json_response({"message_id": first}, status=200)

    async def _admit(self, request: web.Request) -> tuple[str, dict[str, Any], str] | web.Response:
        """A send or edit that is new and valid: (hook, body, key), or the answer it gets."""
        hook = request.match_info["hook"]
        checked = await self._check(request)
        if isinstance(checked, web.Response):
            return checked
        body, key = checked
        forced = self._misbehave(hook, body["target"])
        if forced is not None:
            return forced
        duplicate = self._duplicate(hook, key)
        if duplicate is not None:
            return duplicate
        return hook, body, key

    async def _send(self, request: web.Request) -> web.Response:
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        hook, body, key = admitted
        message_id = f"wh-{self._next_id}"
        self._next_id += 1
        self._owner[message_id] = hook
        return self._accept("send", hook, message_id, key, body)

    async def _edit(self, request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        hook, body, key = admitted
        if self._owner.get(message_id) != hook:
            return _error(404, "unknown_message", f"no message {message_id!r}")
        return self._accept("edit", hook, message_id, key, body)
