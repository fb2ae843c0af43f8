"""What the fake platform servers share: an aiohttp server on a loopback port, request
recording and sliding-window rate limits.

A subclass builds its routes in ``_routes``, may add middlewares inside the recording one
(``_middlewares``) and add to or count each recorded request (``_answered``). ``async with
Fake(...) as fake:`` starts it on an ephemeral port of 127.0.0.1 and stops it on the way out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request as it arrived, with how it was answered."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    status: int
    at: float
    errcode: int | None = None  # the platform's error code in the answer (WeCom), if any


class SlidingWindows:
    """At most ``count`` events in any ``per_seconds`` window, counted separately per key."""

    def __init__(self, count: int, per_seconds: float) -> None:
        self.count = count
        self.per_seconds = per_seconds
        self._windows: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float) -> float | None:
        """Count an event at `now` and return None, or (over the limit, not counted) the
        seconds until the window has room again."""
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - self.per_seconds:
            window.popleft()
        if len(window) >= self.count:
            return window[0] + self.per_seconds - now
        window.append(now)
        return None


class LoopbackServer:
    """An aiohttp application served on 127.0.0.1 for the length of an ``async with``."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock: Callable[[], float] = clock
        self.requests: list[RawRequest] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- what a fake fills in --------------------------------------------------------------

    def _routes(self, router: web.UrlDispatcher) -> None:
        """Add the fake's routes."""
        raise NotImplementedError

    def _middlewares(self) -> list[Middleware]:
        """Middlewares that run inside the recording one (none by default)."""
        return []

    def _answered(self, raw: RawRequest, response: web.StreamResponse | None) -> RawRequest:
        """What to record of an answered request (`response` is None when a handler raised);
        a fake may add to it or count it."""
        return raw

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        app = web.Application(middlewares=[self._log, *self._middlewares()])
        self._routes(app.router)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self._port}"

    @web.middleware
    async def _log(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        arrived = self.clock()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            headers, query = dict(request.headers), dict(request.query)
            raw = RawRequest(request.method, request.path, headers, query, body, status, arrived)
            self.requests.append(self._answered(raw, response))
