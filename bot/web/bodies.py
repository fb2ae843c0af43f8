"""Slow request bodies: a deadline for each body, and a cap per client address.

aiohttp closes a connection whose request head is late (its keep-alive timer, see
`server.header_timeout`), but it waits for a body as long as the client keeps sending. A
client sending one byte every few seconds would hold a connection, and a handler, without
end; and many such connections from one address would use up the server's sockets.

So once the head is in, a body that is still arriving gets a deadline: when it passes, the
body's stream fails with `BodyTimeout`, which the app answers 408 and closes. And one
client address may have only `per_client` bodies arriving at once: a further one is
refused at once (`TooManySlowBodies`, answered 429) instead of being read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(TimeoutError):
    """A request body did not arrive within its deadline (answered 408).

    A TimeoutError, so that aiohttp's own reading of an unread body after the answer (its
    "lingering close") stops quietly on it and closes the connection."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")
        self.seconds = seconds


class TooManySlowBodies(Exception):
    """A client address already has its share of bodies arriving (answered 429)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} request bodies from this address are still arriving")
        self.limit = limit


class _Abandoned(TimeoutError):
    """Set on the stream of a refused body: aiohttp then stops reading it after the answer
    (a TimeoutError ends its lingering close quietly) and closes the connection."""


class SlowBodies:
    """Counts, per client address, the requests whose bodies are still arriving."""

    def __init__(self, *, timeout: float, per_client: int) -> None:
        self.timeout = timeout
        self.per_client = per_client
        self.arriving: Counter[str] = Counter()

    def watch(self, request: web.Request) -> None:
        """Give a request whose body is still arriving its deadline and count it against its
        address until the body is in or the deadline passes (TooManySlowBodies over the cap)."""
        body = request.content
        client = request.remote or ""
        if self.arriving[client] >= self.per_client:
            body.set_exception(_Abandoned("refused: too many slow bodies"))
            raise TooManySlowBodies(self.per_client)
        self.arriving[client] += 1
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.arriving[client] -= 1
                if self.arriving[client] <= 0:
                    del self.arriving[client]
                deadline.cancel()

        def expire() -> None:
            if not body.is_eof():
                body.set_exception(BodyTimeout(self.timeout))
            release()

        deadline = asyncio.get_running_loop().call_later(self.timeout, expire)
        body.on_eof(release)

    @property
    def middleware(self) -> Middleware:
        """The aiohttp middleware that applies this to every request."""

        @web.middleware
        async def slow_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not request.content.is_eof():
                self.watch(request)
            return await handler(request)

        return slow_bodies
